/**
 * The fleet API's chart routes (/api/metrics/server, /app, /overview) through the pure handler
 * over a real fleet database filled with the collector's own functions: the shapes served, the
 * default range, and the refusals (bad range, missing or unknown server and app).
 */
import { assert, assertEquals } from "../helpers/assert.ts";
import { withStore } from "../helpers/fleet_store.ts";
import { createFleetHandler } from "../../src/fleet/api.ts";
import { FleetEvents } from "../../src/fleet/events.ts";
import { storeRequestMinutes, storeServerSample } from "../../src/fleet/metric_store.ts";
import type { FleetStore } from "../../src/fleet/store.ts";

const MINUTE = 60_000;

/** Server alpha with app web: ten minutes of samples and request minutes, ending now. */
function fill(store: FleetStore, now: number): void {
  const start = Math.floor(now / MINUTE) * MINUTE - 10 * MINUTE;
  store.recordContact("alpha", "10.0.0.1", { at: now, ok: true, durationMs: 5, bytes: 0 });
  store.upsertApp("alpha", "web", { type: "node", status: "running", healthy: true, version: "1.0.0" }, now);
  for (let i = 1; i <= 10; i++) {
    storeServerSample(store, "alpha", {
      counters: {},
      load: [0.5, 0.5, 0.5],
      memory: { total: 100, available: 60 },
      filesystems: [{ mount: "/", used: 40 + i }],
      missing: [],
    }, start + i * MINUTE);
  }
  storeRequestMinutes(
    store,
    "alpha",
    "web",
    Array.from({ length: 10 }, (_, i) => ({
      ts: start + (i + 1) * MINUTE,
      requests: 60,
      errors: i >= 5 ? 30 : 0,
      other: 60,
      p50: 10,
      p95: 40,
    })),
  );
}

async function withApi(fn: (get: (path: string) => Promise<Response>) => Promise<void>): Promise<void> {
  await withStore("dp-api-metrics-", async (store) => {
    fill(store, Date.now());
    const handler = createFleetHandler({
      store,
      events: new FleetEvents(),
      view: () => ({ now: Date.now(), intervalMs: MINUTE, holding: false, gapMs: 0 }),
      collectorStats: () => ({ cycles: 1, lastCycleMs: 5, errors: 0 }),
      servers: () => [{ name: "alpha" }],
      log: () => {},
    });
    await fn((path) => handler(new Request(`http://127.0.0.1:8750${path}`)));
  });
}

Deno.test("fleet API metrics: a server's, an app's and the overview's series, over 1h by default", async () => {
  await withApi(async (get) => {
    const server = await (await get("/api/metrics/server?server=alpha")).json();
    assertEquals([server.server, server.range], ["alpha", "1h"]);
    assertEquals(server.disks.map((d: { mount: string }) => d.mount), ["/"]);
    const used = server.disks[0].used.filter((v: number | null) => v !== null);
    assertEquals(used.at(-1), 50);
    assertEquals(server.ts.length, server.cpu.length);
    const app = await (await get("/api/metrics/app?server=alpha&app=web&range=24h")).json();
    assertEquals([app.server, app.app, app.range], ["alpha", "web", "24h"]);
    assert(app.errorRate.some((v: number | null) => v !== null && v > 0), JSON.stringify(app.errorRate));
    assertEquals(app.deploys, []);
    const overview = await (await get("/api/metrics/overview?range=7d")).json();
    assertEquals(overview.range, "7d");
    assertEquals(overview.sparklines.map((s: { server: string; app: string }) => [s.server, s.app]), [[
      "alpha",
      "web",
    ]]);
  });
});

Deno.test("fleet API metrics: a bad range, a missing or unknown server or app get a JSON error", async () => {
  await withApi(async (get) => {
    const refused = async (path: string) => {
      const response = await get(path);
      return [response.status, (await response.json()).error];
    };
    assertEquals(await refused("/api/metrics/overview?range=1y"), [
      400,
      'parameter range must be one of 1h, 24h, 7d, 30d, not "1y"',
    ]);
    assertEquals(await refused("/api/metrics/server"), [400, "missing parameter server"]);
    assertEquals(await refused("/api/metrics/app?server=alpha"), [400, "missing parameter app"]);
    assertEquals(await refused("/api/metrics/server?server=<b>"), [404, 'no server "<b>" in the fleet database']);
    assertEquals(await refused("/api/metrics/app?server=alpha&app=api"), [
      404,
      'no app "api" on server "alpha" in the fleet database',
    ]);
    assertEquals((await refused("/api/metrics/other"))[0], 404);
  });
});
