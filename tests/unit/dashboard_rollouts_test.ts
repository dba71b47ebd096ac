/**
 * The dashboard's rollout and canary text (dashboard/rollout_format.js) and the rollouts' routes
 * (routes.js), imported directly: outcome labels, servers done, durations (running or ended),
 * version changes, a canary's label, step, figures and tooltip.
 */
import { assertEquals } from "../helpers/assert.ts";
import {
  canaryFigures,
  canaryLabel,
  canaryStep,
  canaryText,
  msText,
  optionsText,
  percentText,
  rateText,
  rolloutElapsed,
  serversDone,
  shortCommit,
  versionChange,
} from "../../dashboard/rollout_format.js";
import { outcomeLabel } from "../../dashboard/format.js";
import { parseHash, rolloutHref } from "../../dashboard/routes.js";

const T0 = Date.parse("2026-12-03T10:00:00Z");
const iso = (ms: number) => new Date(ms).toISOString();

Deno.test("dashboard rollouts: outcomes, servers done, durations, version changes", () => {
  assertEquals(outcomeLabel("rolled_back"), ["rolled back", "warn"]);
  assertEquals(outcomeLabel("success"), ["success", "ok"]);
  assertEquals(outcomeLabel("deploying"), ["deploying", "warn"]);
  assertEquals(outcomeLabel("<b>new</b>"), ["<b>new</b>", "neutral"], "unknown: its own label");
  assertEquals(outcomeLabel("toString"), ["toString", "neutral"], "not an inherited property");
  const servers = [{ outcome: "success" }, { outcome: "failed" }, { outcome: "success" }];
  assertEquals(serversDone({ servers }), "2 / 3");
  assertEquals(serversDone({}), "0 / 0");
  const ended = { startedAt: iso(T0), finishedAt: iso(T0 + 95_000), outcome: "success" };
  assertEquals(rolloutElapsed(ended, T0 + 999_000), 95_000);
  const running = { startedAt: iso(T0), finishedAt: null, outcome: "running" };
  assertEquals(rolloutElapsed(running, T0 + 10_000), 10_000, "a running rollout: until now");
  assertEquals(rolloutElapsed({ ...running, outcome: "interrupted" }, T0 + 10_000), null, "ended without an end");
  assertEquals(rolloutElapsed({ ...ended, startedAt: "not a time" }), null);
  assertEquals(versionChange("1.0.0", "c0ffee1"), "1.0.0 → c0ffee1");
  assertEquals(versionChange(null, "c0ffee1"), "— → c0ffee1");
  assertEquals(versionChange("1.0.0", "1.0.0"), "1.0.0", "unchanged");
  assertEquals(versionChange("1.0.0", null), "1.0.0");
  assertEquals(versionChange(null, null), "—");
  assertEquals(shortCommit("c0ffee1234567890"), "c0ffee1");
  assertEquals(shortCommit(null), "");
  assertEquals(
    optionsText({ servers: ["a", "b"], parallel: 2, onFailure: "stop", extra: { x: 1 } }),
    'servers: a, b · parallel: 2 · onFailure: stop · extra: {"x":1}',
  );
  assertEquals([optionsText({}), optionsText(null)], ["", ""]);
});

Deno.test("dashboard rollouts: the hash routes of the list and of one rollout", () => {
  const list = parseHash("#/rollouts?app=web");
  assertEquals([list.view, list.nav, list.key, list.params.get("app")], ["rollouts", "rollouts", "rollouts", "web"]);
  const one = parseHash(rolloutHref(12));
  assertEquals([one.view, one.nav, one.key, one.rollout], ["rollout", "rollouts", "rollout:12", 12]);
  for (const bad of ["#/rollouts/0", "#/rollouts/x", "#/rollouts/1/2", "#/rollouts/-3"]) {
    assertEquals(parseHash(bad).view, "overview", bad);
  }
});

Deno.test("dashboard canary: label, step, figures and tooltip", () => {
  const canary = {
    state: "running",
    version: "c0ffee1",
    percent: 25,
    step: 2,
    steps: [5, 25, 50],
    figures: {
      new: { requests: 120, errorRate: 0.00833, p95Ms: 41.52 },
      old: { requests: 360, errorRate: 0, p95Ms: null },
    },
  };
  assertEquals(canaryLabel(canary), "canary 25 %");
  assertEquals(canaryLabel({ ...canary, state: "reverted" }), "canary reverted");
  assertEquals(canaryStep(canary), "step 2 of 3 (5 → 25 → 50 %)");
  assertEquals(canaryStep({ ...canary, steps: [] }), "step 2");
  assertEquals(canaryStep({ ...canary, step: null }), "");
  assertEquals(canaryFigures(canary), [["new", "120", "0.83 %", "41.5 ms"], ["old", "360", "0 %", "—"]]);
  assertEquals(canaryFigures({ ...canary, figures: undefined }), []);
  assertEquals(canaryFigures({ ...canary, figures: { new: canary.figures.new } }), []);
  assertEquals(
    canaryText({ ...canary, state: "reverted", reason: "5xx rate 10 % > 1 %" }),
    "Canary reverted of c0ffee1 · step 2 of 3 (5 → 25 → 50 %) · new: 120 requests, 0.83 % 5xx, p95 41.5 ms · " +
      "old: 360 requests, 0 % 5xx, p95 — · reason: 5xx rate 10 % > 1 %",
  );
  assertEquals(canaryText({ state: "running", percent: 5 }), "Canary running · 5 % of requests");
  assertEquals([percentText(0.5), percentText(NaN), percentText(null)], ["0.5 %", "—", "—"]);
  assertEquals([rateText(0.1), rateText(null)], ["10 %", "—"]);
  assertEquals([msText(999.96), msText(1234), msText(Infinity)], ["1 s", "1.23 s", "—"]);
});
