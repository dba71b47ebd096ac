/**
 * An app's canary from its status.json (hostile input) to the fleet API: the check
 * (src/fleet/canary_status.ts: known keys only, bounded strings, numbers finite and in range, a
 * bounded list of steps), what upsertApp stores in `apps.canary`, and the `canary` of the app views
 * in /api/fleet and /api/servers/:name (absent without one).
 */
import { assert, assertEquals } from "../helpers/assert.ts";
import { withStore } from "../helpers/fleet_store.ts";
import { createFleetHandler } from "../../src/fleet/api.ts";
import { canaryJson, canaryView, checkCanary, MAX_CANARY_STEPS } from "../../src/fleet/canary_status.ts";
import { FleetEvents } from "../../src/fleet/events.ts";
import { FIELD } from "../../src/fleet/limits.ts";

/** A canary as the deploy engine writes it (contract B's CanaryStatus). */
const RUNNING = {
  state: "running",
  release: "20261203-100000-000",
  version: "c0ffee1",
  percent: 25,
  step: 2,
  steps: [5, 25, 50],
  since: "2026-12-03T10:00:00.000Z",
  at: "2026-12-03T10:02:00.000Z",
  figures: {
    new: { requests: 120, errorRate: 0.0083, p95Ms: 41.5 },
    old: { requests: 360, errorRate: 0, p95Ms: null },
  },
};

Deno.test("canary: a good status is kept as written", () => {
  assertEquals(checkCanary(RUNNING), RUNNING);
  const reverted = { ...RUNNING, state: "reverted", reason: "error rate 10.0 % > 1 %" };
  assertEquals(checkCanary(reverted), reverted);
  assertEquals(JSON.parse(canaryJson(RUNNING)!), RUNNING);
  assertEquals(canaryView(canaryJson(RUNNING)), { canary: RUNNING });
});

Deno.test("canary: hostile values are cut, refused or dropped; unknown keys are not kept", () => {
  for (const value of [undefined, null, "running", 42, [RUNNING], true]) {
    assertEquals(checkCanary(value), null, JSON.stringify(value));
    assertEquals(canaryJson(value), null);
  }
  const huge = "x".repeat(1_000_000);
  const markup = `<img src=x onerror="alert(1)">`;
  const hostile = {
    state: "<script>alert(1)</script>",
    release: huge,
    version: markup,
    percent: NaN,
    step: -1,
    steps: [5, -5, 101, NaN, "25", null, Infinity, 50, ...Array(1000).fill(1)],
    since: 12,
    at: { toString: "x" },
    figures: { new: { requests: -3, errorRate: 7, p95Ms: -1, extra: huge }, old: { requests: 1.5, errorRate: NaN } },
    reason: huge,
    __proto__: { polluted: true },
    constructor: "x",
    extra: huge,
  };
  const checked = checkCanary(JSON.parse(JSON.stringify(hostile)))!;
  assertEquals(Object.keys(checked).sort(), [
    "at",
    "figures",
    "percent",
    "reason",
    "release",
    "since",
    "state",
    "step",
    "steps",
    "version",
  ]);
  assertEquals(checked.state, "unknown");
  assertEquals(checked.release!.length, FIELD.short);
  assertEquals(checked.release!.endsWith("…[cut]"), true);
  assertEquals(checked.version, markup, "markup is kept as text: the dashboard shows it as text");
  assertEquals([checked.percent, checked.step, checked.since, checked.at], [null, null, null, null]);
  assertEquals(checked.steps.slice(0, 3), [5, 50, 1]);
  assertEquals(checked.steps.length <= MAX_CANARY_STEPS, true);
  assertEquals(checked.figures, {
    new: { requests: null, errorRate: null, p95Ms: null },
    old: { requests: null, errorRate: null, p95Ms: null },
  });
  assertEquals(checked.reason!.length, FIELD.message);
  assertEquals(canaryJson(hostile)!.length < 4000, true, "what is stored stays small");
  // Figures without both sides are left out; a step absurdly high is refused.
  assertEquals(checkCanary({ ...RUNNING, figures: { new: RUNNING.figures.new } })!.figures, undefined);
  assertEquals(checkCanary({ ...RUNNING, figures: [1, 2] })!.figures, undefined);
  // The observed split: a share from 0 to 1 kept, anything else dropped.
  assertEquals(checkCanary({ ...RUNNING, figures: { ...RUNNING.figures, share: 0.24 } })!.figures?.share, 0.24);
  // The step the figures are of, and when the current step began: kept when sane.
  const later = checkCanary({
    ...RUNNING,
    stepSince: "2026-12-03T10:01:00.000Z",
    figures: { ...RUNNING.figures, step: 1 },
  })!;
  assertEquals([later.stepSince, later.figures?.step], ["2026-12-03T10:01:00.000Z", 1]);
  for (const step of [0.5, -1, 21, "1"]) {
    assertEquals(checkCanary({ ...RUNNING, figures: { ...RUNNING.figures, step } })!.figures?.step, undefined);
  }
  assert(checkCanary({ ...RUNNING, stepSince: "x".repeat(10_000) })!.stepSince!.length <= 201); // cut, with its mark
  for (const share of [1.5, -0.1, NaN, "0.2", null]) {
    assertEquals(checkCanary({ ...RUNNING, figures: { ...RUNNING.figures, share } })!.figures?.share, undefined);
  }
  assertEquals(checkCanary({ ...RUNNING, step: 1e12 })!.step, null);
  assertEquals(checkCanary({ ...RUNNING, percent: 100.5 })!.percent, null);
  assertEquals(checkCanary({ ...RUNNING, percent: 0.5 })!.percent, 0.5);
  assertEquals(checkCanary({ ...RUNNING, reason: 5 })!.reason, undefined);
  // A stored value that is not valid JSON, or not an object, reads as no canary.
  assertEquals(canaryView("{not json"), {});
  assertEquals(canaryView("[1]"), {});
  assertEquals(canaryView(null), {});
});

Deno.test("canary: stored from status.json and served in /api/fleet and /api/servers/:name", async () => {
  await withStore("dp-canary-", async (store) => {
    const now = Date.now();
    store.recordContact("alpha", "alpha.example", { at: now, ok: true, durationMs: 5, bytes: 0 });
    const base = { type: "node", status: "running", healthy: true, version: "1.0.0" };
    store.upsertApp("alpha", "web", { ...base, canary: { ...RUNNING, extra: "x".repeat(100_000) } }, now);
    store.upsertApp("alpha", "api", base, now);
    const stored = store.sql("SELECT app, canary FROM apps ORDER BY app").all() as { app: string; canary: string }[];
    assertEquals(stored.map((row) => [row.app, row.canary === null ? null : JSON.parse(row.canary)]), [
      ["api", null],
      ["web", RUNNING],
    ]);
    const handler = createFleetHandler({
      store,
      events: new FleetEvents(),
      view: () => ({ now, intervalMs: 60_000, holding: false, gapMs: 0 }),
      collectorStats: () => ({ cycles: 1, lastCycleMs: 5, errors: 0 }),
      servers: () => [{ name: "alpha" }],
      log: () => {},
    });
    const get = async (path: string) => await (await handler(new Request(`http://127.0.0.1:8750${path}`))).json();
    const fleet = await get("/api/fleet");
    const apps = fleet.servers[0].apps as { app: string; canary?: unknown }[];
    assertEquals(apps.map((a) => [a.app, a.canary]), [["api", undefined], ["web", RUNNING]]);
    assertEquals("canary" in apps[0], false, "absent, not null, without a canary");
    const detail = await get("/api/servers/alpha");
    assertEquals(detail.apps.find((a: { app: string }) => a.app === "web").canary, RUNNING);
    // The next status.json without a canary clears it.
    store.upsertApp("alpha", "web", base, now + 1000);
    assertEquals(
      (await get("/api/servers/alpha")).apps.find((a: { app: string }) => a.app === "web").canary,
      undefined,
    );
  });
});
