/**
 * Rollouts in the fleet database's read side (src/fleet/rollouts.ts) and the API's rollout routes
 * (/api/rollouts, /api/rollouts/:id) through the pure handler, over a real fleet database with rows
 * written by `deploy-paradigm rollout`'s own record (src/rollout/record.ts): order, filters,
 * limits, the shapes served, the refusals (bad id or limit 400, unknown id 404) and the token rule.
 */
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { withStore } from "../helpers/fleet_store.ts";
import { createFleetHandler } from "../../src/fleet/api.ts";
import { FleetEvents } from "../../src/fleet/events.ts";
import { listRollouts, rolloutById } from "../../src/fleet/rollouts.ts";
import { RolloutRecord } from "../../src/rollout/record.ts";
import type { FleetStore } from "../../src/fleet/store.ts";

const T0 = Date.parse("2026-12-03T10:00:00Z");
const iso = (ms: number) => new Date(ms).toISOString();

/** web: a good rollout to three servers, then a failed one rolled back; api: one running. */
function fill(store: FleetStore): { good: number; bad: number; running: number } {
  const good = RolloutRecord.start(store, {
    app: "web",
    ref: "main",
    commit: "c0ffee1234567890",
    startedAt: T0,
    options: { servers: ["a", "b", "c"], parallel: 2, onFailure: "rollback" },
    // Listed out of order: read back by wave, then start.
    servers: [{ name: "c", wave: 2, versionBefore: null }, { name: "b", wave: 2, versionBefore: null }, {
      name: "a",
      wave: 1,
      versionBefore: "1.0.0",
    }],
  });
  good.server("a", { outcome: "success", startedAt: T0, durationMs: 32_000, versionAfter: "c0ffee1" });
  good.server("c", { outcome: "success", startedAt: T0 + 40_000, durationMs: 30_000, versionAfter: "c0ffee1" });
  good.server("b", { outcome: "success", startedAt: T0 + 35_000, durationMs: 31_000, versionAfter: "c0ffee1" });
  good.finish("success", T0 + 90_000);
  const bad = RolloutRecord.start(store, {
    app: "web",
    ref: "v2",
    commit: "badc0de000",
    startedAt: T0 + 3_600_000,
    options: {},
    servers: ["a", "b", "c"].map((name, i) => ({ name, wave: i ? 2 : 1, versionBefore: null })),
  });
  bad.server("a", { outcome: "rolled_back", startedAt: T0 + 3_600_000, durationMs: 20_000 });
  bad.server("b", { outcome: "failed", startedAt: T0 + 3_630_000, message: "health: 500" });
  bad.server("c", { outcome: "skipped" });
  bad.finish("rolled_back", T0 + 3_700_000, "b: health check failed");
  // Options that are not a JSON object (written by something else) read as none.
  store.sql("UPDATE rollouts SET options = 'not json' WHERE id = ?").run(bad.id);
  const running = RolloutRecord.start(store, {
    app: "api",
    ref: "main",
    commit: "abc",
    startedAt: T0 + 7_200_000,
    options: {},
    servers: [{ name: "a", wave: 1, versionBefore: null }],
  });
  running.server("a", { outcome: "deploying", startedAt: T0 + 7_200_000 });
  return { good: good.id, bad: bad.id, running: running.id };
}

Deno.test("rollouts: listed newest first with their servers by wave, filtered by app, limited", async () => {
  await withStore("dp-rollouts-", (store) => {
    assertEquals(listRollouts(store), []);
    const { good, bad, running } = fill(store);
    assertEquals(listRollouts(store).map((r) => r.id), [running, bad, good]);
    assertEquals(listRollouts(store, { app: "web" }).map((r) => r.id), [bad, good]);
    assertEquals(listRollouts(store, { app: "nope" }), []);
    assertEquals(listRollouts(store, { limit: 1 }).map((r) => r.id), [running]);
    const first = listRollouts(store, { app: "web", limit: 5 })[1];
    assertEquals(first, {
      id: good,
      app: "web",
      ref: "main",
      commit: "c0ffee1234567890",
      startedAt: iso(T0),
      finishedAt: iso(T0 + 90_000),
      outcome: "success",
      message: null,
      options: { servers: ["a", "b", "c"], parallel: 2, onFailure: "rollback" },
      servers: [
        {
          server: "a",
          wave: 1,
          outcome: "success",
          startedAt: iso(T0),
          durationMs: 32_000,
          versionBefore: "1.0.0",
          versionAfter: "c0ffee1",
          message: null,
        },
        {
          server: "b",
          wave: 2,
          outcome: "success",
          startedAt: iso(T0 + 35_000),
          durationMs: 31_000,
          versionBefore: null,
          versionAfter: "c0ffee1",
          message: null,
        },
        {
          server: "c",
          wave: 2,
          outcome: "success",
          startedAt: iso(T0 + 40_000),
          durationMs: 30_000,
          versionBefore: null,
          versionAfter: "c0ffee1",
          message: null,
        },
      ],
    });
    assertEquals(rolloutById(store, good), first);
    const rolledBack = rolloutById(store, bad)!;
    assertEquals(rolledBack.options, {}, "options that are not a JSON object read as none");
    assertEquals(rolledBack.servers.map((s) => `${s.server}:${s.outcome}`), ["a:rolled_back", "b:failed", "c:skipped"]);
    assertEquals(rolledBack.servers[2].startedAt, null);
    assertEquals(rolloutById(store, running)!.finishedAt, null);
    assertEquals(rolloutById(store, 999), undefined);
    store.sql("UPDATE rollouts SET outcome = 'success', finished_at = ? WHERE id = ?").run(T0 + 7_260_000, running);
    assertEquals(rolloutById(store, running)!.outcome, "success");
  });
});

async function withApi(
  token: string | undefined,
  fn: (get: (path: string, headers?: HeadersInit) => Promise<Response>, ids: ReturnType<typeof fill>) => Promise<void>,
): Promise<void> {
  await withStore("dp-api-rollouts-", async (store) => {
    const ids = fill(store);
    const handler = createFleetHandler({
      store,
      events: new FleetEvents(),
      view: () => ({ now: Date.now(), intervalMs: 60_000, holding: false, gapMs: 0 }),
      collectorStats: () => ({ cycles: 1, lastCycleMs: 5, errors: 0 }),
      servers: () => [],
      token,
      log: () => {},
    });
    await fn((path, headers) => handler(new Request(`http://127.0.0.1:8750${path}`, { headers })), ids);
  });
}

Deno.test("fleet API rollouts: the list (app, limit) and one rollout", async () => {
  await withApi(undefined, async (get, { good, bad, running }) => {
    const all = await get("/api/rollouts");
    assertEquals(all.status, 200);
    assertEquals(all.headers.get("content-type"), "application/json; charset=utf-8");
    assertEquals((await all.json()).rollouts.map((r: { id: number }) => r.id), [running, bad, good]);
    const web = await (await get("/api/rollouts?app=web&limit=1")).json();
    assertEquals(web.rollouts.map((r: { id: number }) => r.id), [bad]);
    assertEquals((await (await get("/api/rollouts?app=")).json()).rollouts.length, 3, "an empty app is no filter");
    const one = await get(`/api/rollouts/${good}`);
    assertEquals(one.status, 200);
    const body = await one.json();
    assertEquals([body.id, body.app, body.outcome, body.servers.length], [good, "web", "success", 3]);
    assertEquals(body.servers[0].versionBefore, "1.0.0");
  });
});

Deno.test("fleet API rollouts: a bad id or limit is 400, an unknown id 404, with a JSON error", async () => {
  await withApi(undefined, async (get) => {
    for (
      const [path, status, pattern] of [
        ["/api/rollouts/abc", 400, /invalid rollout id "abc": a positive integer/],
        ["/api/rollouts/0", 400, /invalid rollout id "0"/],
        ["/api/rollouts/-1", 400, /invalid rollout id "-1"/],
        ["/api/rollouts/1.5", 400, /invalid rollout id/],
        ["/api/rollouts/99999999999999999999", 400, /invalid rollout id/],
        ["/api/rollouts?limit=0", 400, /parameter limit must be an integer from 1 to 200, not "0"/],
        ["/api/rollouts?limit=201", 400, /parameter limit must be an integer from 1 to 200/],
        ["/api/rollouts?limit=x", 400, /parameter limit/],
        [`/api/rollouts?app=${"x".repeat(300)}`, 400, /parameter app is 300 characters long/],
        ["/api/rollouts/999", 404, /no rollout 999 in the fleet database/],
        ["/api/rollouts/1/servers", 404, /no such endpoint/],
      ] as const
    ) {
      const response = await get(path);
      assertEquals(response.status, status, path);
      const body = await response.json();
      assertMatch(body.error, pattern, path);
    }
  });
});

Deno.test("fleet API rollouts: behind a token like every API route", async () => {
  await withApi("s3cret-token", async (get, { good }) => {
    for (const path of ["/api/rollouts", `/api/rollouts/${good}`]) {
      const refused = await get(path);
      assertEquals(refused.status, 401, path);
      assert(refused.headers.get("www-authenticate")?.startsWith("Bearer"));
      await refused.body?.cancel();
      assertEquals((await get(`${path}?token=s3cret-token`)).status, 401, "?token= is for the event stream only");
      assertEquals((await get(path, { authorization: "Bearer wrong" })).status, 401);
      const ok = await get(path, { authorization: "Bearer s3cret-token" });
      assertEquals(ok.status, 200, path);
      await ok.body?.cancel();
    }
  });
});
