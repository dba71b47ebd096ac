/**
 * The dashboard's words for an app's processes and its cron runs (dashboard/format.js), as the
 * overview and the server page show them; hostile values (outcomes named like Object's own
 * properties) stay plain labels.
 */
import { assertEquals } from "../helpers/assert.ts";
import { cronOutcomeLabel, outcomeLabel, processSummary } from "../../dashboard/format.js";
import { attentionItems } from "../../dashboard/fleet.js";

const group = (type: string, count: number, up: number, restarts = 0, down: string[] = []) => ({
  type,
  count,
  up,
  restarts,
  down,
});

Deno.test("dashboard processes: every process running is one green line; restarts counted", () => {
  assertEquals(processSummary(null), null);
  assertEquals(processSummary({ total: 0, omitted: 0, up: 0, down: 0, restarts: 0, groups: [] }), null);
  assertEquals(
    processSummary({
      total: 4,
      omitted: 0,
      up: 4,
      down: 0,
      restarts: 1,
      groups: [group("web", 2, 2, 1), group("worker", 2, 2)],
    }),
    { text: "web ×2, worker ×2 online · 1 restart", bad: false, title: "4 of 4 running (online, active or running)" },
  );
});

Deno.test("dashboard processes: one not running makes it red and says which and how", () => {
  assertEquals(
    processSummary({
      total: 3,
      omitted: 0,
      up: 2,
      down: 1,
      restarts: 17,
      groups: [group("web", 1, 1), group("worker", 2, 1, 17, ["errored"])],
    }),
    {
      text: "web ×1 online, worker ×2: 1 errored · 17 restarts",
      bad: true,
      title: "2 of 3 running (online, active or running)",
    },
  );
  assertEquals(
    processSummary({ total: 500, omitted: 400, up: 100, down: 0, restarts: 0, groups: [group("w", 100, 100)] })!.text,
    "w ×100 online · 400 more not kept",
  );
});

Deno.test("dashboard processes: cron outcomes, failed and timeout red; odd outcomes are their own label", () => {
  assertEquals(cronOutcomeLabel("ok"), ["ok", "ok"]);
  assertEquals(cronOutcomeLabel("failed"), ["failed", "bad"]);
  assertEquals(cronOutcomeLabel("timeout"), ["timeout", "bad"]);
  assertEquals(cronOutcomeLabel("skipped"), ["skipped", "warn"]);
  for (const odd of ["constructor", "toString", "__proto__", "<b>x</b>"]) {
    assertEquals(cronOutcomeLabel(odd), [odd, "neutral"]);
    assertEquals(outcomeLabel(odd), [odd, "neutral"]);
  }
});

Deno.test("dashboard processes: an app with a process not running needs attention, which and how said", () => {
  const app = (name: string, processes: unknown) => ({ app: name, state: "fresh", certificate: null, processes });
  const servers = [{
    name: "s1",
    state: "fresh",
    apps: [
      app("calm", { total: 1, omitted: 0, up: 1, down: 0, restarts: 0, groups: [group("web", 1, 1)] }),
      app("old", null),
      app("shop", {
        total: 5,
        omitted: 0,
        up: 2,
        down: 3,
        restarts: 0,
        groups: [group("web", 1, 1), group("worker", 4, 1, 0, ["errored", "stopped"])],
      }),
    ],
  }];
  assertEquals(attentionItems(servers), [{
    kind: "unhealthy",
    parts: [
      { href: "#/server/s1?app=shop", text: "s1 / shop" },
      " 3 processes not running",
      { muted: [" · worker 3 of 4 errored/stopped"] },
    ],
  }]);
});
