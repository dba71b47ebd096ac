/**
 * Issue 16, part 5 on the fleet side: each app's processes (from its status.json) and the last run
 * of each cron job (from its cron.log as it is ingested), stored within the limits whatever a
 * (compromised) server sends, and served by the API: counts on /api/fleet, each process and cron
 * job on /api/servers/:name.
 */
import { join } from "node:path";
import { databaseAt, withStore } from "../helpers/fleet_store.ts";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { notTimes } from "../helpers/server_times.ts";
import { createFleetHandler } from "../../src/fleet/api.ts";
import { Collector } from "../../src/fleet/collector.ts";
import { fleetConfigSchema, fleetPaths } from "../../src/fleet/config.ts";
import { FleetEvents } from "../../src/fleet/events.ts";
import { cronRunOf, ingestFile } from "../../src/fleet/ingest.ts";
import { FIELD, MAX_CRON_JOBS, MAX_PROCESSES } from "../../src/fleet/limits.ts";
import { MIGRATIONS } from "../../src/fleet/migrations.ts";
import { searchLogs } from "../../src/fleet/log_queries.ts";
import { LocalSource, type Source } from "../../src/fleet/source.ts";
import { FleetStore, processesJson } from "../../src/fleet/store.ts";
import type { AppDetail, AppView, FreshnessView } from "../../src/fleet/views.ts";

const NOW = Date.parse("2026-12-03T12:00:00Z");
const VIEW: FreshnessView = { now: NOW, intervalMs: 60_000, holding: false, gapMs: 0 };
const HTML = `<img src=x onerror="window.__xss=1">`;

/** A cron.log line as ../cron/log.ts writes it. */
const run = (job: string, outcome: string, extra: Record<string, unknown> = {}) =>
  JSON.stringify({
    job,
    release: "20261203-110000-000",
    start: "2026-12-03T11:59:00.000Z",
    end: "2026-12-03T11:59:01.250Z",
    exitCode: outcome === "ok" ? 0 : 1,
    durationMs: 1250,
    outcome,
    pid: 4242,
    ...extra,
  });

function api(store: FleetStore) {
  const handler = createFleetHandler({
    store,
    events: new FleetEvents(),
    view: () => VIEW,
    collectorStats: () => ({ cycles: 1, lastCycleMs: 1, errors: 0 }),
    servers: () => [{ name: "s1" }],
    log: () => {},
  });
  return async (path: string) => {
    const response = await handler(new Request(`http://127.0.0.1:8750${path}`));
    assertEquals(response.status, 200, path);
    return await response.json();
  };
}

Deno.test("processesJson: a list kept within the limits, every field type-checked; no list → null", () => {
  assertEquals(processesJson(undefined), null);
  assertEquals(processesJson({ web: 1 }), null, "not a list");
  assertEquals(processesJson("web"), null);
  const huge = Array.from({ length: 5000 }, (_, i) => ({
    type: "worker",
    instance: i + 1,
    name: `shop-worker-${i + 1}`,
    pid: 1000 + i,
    state: "online",
    restarts: 0,
  }));
  const stored = JSON.parse(processesJson(huge)!);
  assertEquals(stored.total, 5000);
  assertEquals(stored.list.length, MAX_PROCESSES);
  const odd = JSON.parse(
    processesJson([
      null,
      "web",
      [1, 2],
      { type: 7, instance: 1.5, name: { html: HTML }, pid: "12", state: ["online"], restarts: -3 },
      { type: "x".repeat(10_000), instance: 2, name: HTML, pid: 77, state: "y".repeat(10_000), restarts: 4 },
    ])!,
  );
  assertEquals(odd.total, 5, "entries that are not objects are counted, not kept");
  assertEquals(odd.list[0], { type: "?", instance: null, name: null, pid: null, state: "unknown", restarts: null });
  assertEquals(odd.list[1].type.length, FIELD.short);
  assertMatch(odd.list[1].type, /…\[cut\]$/);
  assertEquals(odd.list[1].state.length, FIELD.short);
  assertEquals(odd.list[1].name, HTML, "text stays text: the dashboard never parses it");
});

Deno.test("cronRunOf: a CronRun line, every field checked; other lines are not runs", () => {
  const line = (text: string) => ({ offset: 7, ts: NOW, text });
  assertEquals(cronRunOf(line(run("nightly", "failed", { reason: "exit 1" })), NOW), {
    offset: 7,
    job: "nightly",
    release: "20261203-110000-000",
    start: "2026-12-03T11:59:00.000Z",
    end: "2026-12-03T11:59:01.250Z",
    exitCode: 1,
    durationMs: 1250,
    outcome: "failed",
    reason: "exit 1",
  });
  for (const text of ["not json", "[]", "null", '{"job":"x"}', '{"outcome":"ok"}', '{"job":5,"outcome":"ok"}']) {
    assertEquals(cronRunOf(line(text), NOW), undefined, text);
  }
  const hostile = cronRunOf(
    line(JSON.stringify({
      job: "j".repeat(5000),
      outcome: "ok",
      exitCode: "0",
      durationMs: -5,
      start: { $gt: 1 },
      reason: "r".repeat(100_000),
      release: 12,
    })),
    NOW,
  )!;
  assertEquals(hostile.job.length, FIELD.short);
  assertEquals([hostile.exitCode, hostile.durationMs, hostile.start, hostile.release], [null, null, null, null]);
  assertEquals(hostile.reason!.length, FIELD.message);
  assertEquals(cronRunOf(line(run("x", "ok", { durationMs: 1e300 })), NOW)!.durationMs, Number.MAX_SAFE_INTEGER);
});

Deno.test("cronRunOf: a start or end that is not an ISO instant with its zone, from 2000 to a day ahead, is dropped", () => {
  const times = (start: unknown, end: unknown) => {
    const stored = cronRunOf({ offset: 0, ts: NOW, text: run("nightly", "ok", { start, end }) }, NOW);
    return [stored?.start, stored?.end, stored?.outcome];
  };
  assertEquals(
    times("2026-12-03T13:59:00+02:00", "2026-12-04T12:00:00Z"),
    ["2026-12-03T11:59:00.000Z", "2026-12-04T12:00:00.000Z", "ok"],
    "in UTC, as ISO; a day ahead: clocks differ",
  );
  // Not taken as the pull's time (a deploy's is: it must have one): the run is kept, when it ran is not known.
  for (const time of notTimes(NOW)) assertEquals(times(time, time), [null, null, "ok"], JSON.stringify(time));
});

Deno.test("ingestFile: a cron run dated 9999 or with a Slack mention for a time is stored without them", async () => {
  await withStore("dp-fleet-processes-", async (store, dir) => {
    const path = join(dir, "cron.log");
    const forged = { start: "9999-12-31T23:59:59Z", end: "<!channel> <https://evil.example/login|Re-authenticate>" };
    await Deno.writeTextFile(path, run("nightly", "failed", forged) + "\n" + run("hourly", "ok") + "\n");
    await ingestFile(store, "s1", { rel: "shop/cron.log", path, ino: 1 }, undefined, NOW);
    assertEquals(
      store.sql("SELECT job, outcome, start_at, end_at FROM cron_runs ORDER BY job").all().map((r) => ({ ...r })),
      [
        { job: "hourly", outcome: "ok", start_at: "2026-12-03T11:59:00.000Z", end_at: "2026-12-03T11:59:01.250Z" },
        { job: "nightly", outcome: "failed", start_at: null, end_at: null },
      ],
    );
  });
});

Deno.test("ingestFile: cron.log lines are searchable and keep each job's last run, across rotation; bounded", async () => {
  await withStore("dp-fleet-processes-", async (store, dir) => {
    const path = join(dir, "cron.log");
    const file = async () => ({ rel: "shop/cron.log", path, ino: (await Deno.stat(path)).ino ?? null });
    const runs = () =>
      store.sql("SELECT job, outcome, exit_code, duration_ms FROM cron_runs WHERE server = 's1' ORDER BY job").all()
        .map((r) => ({ ...r }));
    await Deno.writeTextFile(
      path,
      [
        run("every-minute", "ok"),
        "a torn line {",
        run("nightly", "ok"),
        run("every-minute", "failed", { durationMs: 30 }),
        run(HTML, "timeout", { exitCode: null }),
        "",
      ].join("\n"),
    );
    const first = await ingestFile(store, "s1", await file(), undefined);
    assertEquals(first.lines, 5, "every non-empty line is a log line, runs or not");
    assertEquals(first.cronForgotten, undefined);
    assertEquals(runs(), [
      { job: HTML, outcome: "timeout", exit_code: null, duration_ms: 1250 },
      { job: "every-minute", outcome: "failed", exit_code: 1, duration_ms: 30 },
      { job: "nightly", outcome: "ok", exit_code: 0, duration_ms: 1250 },
    ]);
    assertEquals(searchLogs(store, { q: "nightly" }).results.length, 1);

    // Rotation: the rest of the old file, then the new one; the newest run of each job wins.
    await Deno.writeTextFile(path, run("nightly", "skipped", { reason: "still running" }) + "\n", { append: true });
    await Deno.rename(path, `${path}.1`);
    await Deno.writeTextFile(path, run("every-minute", "ok", { durationMs: 99 }) + "\n");
    const rotated = await ingestFile(store, "s1", await file(), {
      rel: "shop/cron.log.1",
      path: `${path}.1`,
      ino: (await Deno.stat(`${path}.1`)).ino ?? null,
    });
    assertEquals(rotated.lines, 2);
    assertEquals(runs().slice(1), [
      { job: "every-minute", outcome: "ok", exit_code: 0, duration_ms: 99 },
      { job: "nightly", outcome: "skipped", exit_code: 1, duration_ms: 1250 },
    ]);

    // A server that invents job names: at most MAX_CRON_JOBS per app, the latest kept.
    const many = Array.from({ length: MAX_CRON_JOBS + 30 }, (_, i) => run(`job-${String(i).padStart(3, "0")}`, "ok"));
    await Deno.writeTextFile(path, many.join("\n") + "\n", { append: true });
    const flood = await ingestFile(store, "s1", await file(), undefined);
    assertEquals(flood.cronForgotten, 33, "the 30 oldest invented jobs and the 3 real ones ran before the flood");
    const kept = runs().map((r) => r.job as string);
    assertEquals(kept.length, MAX_CRON_JOBS);
    assertEquals(kept[0], "job-030");
    assertEquals(kept.at(-1), `job-${String(MAX_CRON_JOBS + 29).padStart(3, "0")}`);

    // An app whose status.json is gone takes its cron runs along.
    store.keepApps("s1", []);
    assertEquals(runs(), []);
  });
});

Deno.test("FleetStore: a run from an earlier place in the log never replaces a later one", async () => {
  await withStore("dp-fleet-processes-", (store) => {
    const path = "/var/log/deployments/shop/cron.log";
    const ledger = store.newGeneration("s1", path, null, "head", 4);
    const at = (offset: number, outcome: string) => cronRunOf({ offset, ts: NOW, text: run("nightly", outcome) }, NOW)!;
    store.ingestCronLines(ledger, "shop", "cron.log", [], [at(500, "failed")]);
    store.ingestCronLines(ledger, "shop", "cron.log", [], [at(100, "ok")]);
    const stored = store.sql("SELECT outcome, offset FROM cron_runs").get() as { outcome: string; offset: number };
    assertEquals([stored.outcome, stored.offset], ["failed", 500]);
    return Promise.resolve();
  });
});

Deno.test("API: /api/fleet counts each app's processes by type; /api/servers/:name lists them and the cron jobs", async () => {
  await withStore("dp-fleet-processes-", async (store, dir) => {
    store.recordContact("s1", "s1.example", { at: NOW - 1000, ok: true, durationMs: 10, bytes: 1 });
    store.upsertApp("s1", "shop", {
      status: "running",
      healthy: true,
      processes: [
        { type: "web", instance: 1, name: "shop-blue-1", pid: 101, state: "online", restarts: 0 },
        { type: "web", instance: 2, name: "shop-blue-2", pid: 102, state: "online", restarts: 1 },
        { type: "worker", instance: 1, name: "shop-worker-1", pid: 201, state: "online", restarts: 2 },
        { type: "worker", instance: 2, name: "shop-worker-2", pid: 0, state: "errored", restarts: 15 },
        { type: HTML, instance: 1, name: HTML, pid: 0, state: HTML, restarts: 0 },
      ],
    }, NOW - 1000);
    store.upsertApp("s1", "calm", {
      status: "running",
      healthy: true,
      processes: [{ type: "web", instance: 1, name: "calm", pid: 5, state: "active", restarts: 0 }],
    }, NOW - 1000);
    store.upsertApp("s1", "boxed", {
      status: "running",
      healthy: true,
      processes: [{ type: "web", instance: 1, name: "boxed-blue", pid: 7, state: "running", restarts: 0 }],
    }, NOW - 1000);
    store.upsertApp("s1", "old", { status: "running", healthy: true }, NOW - 1000);
    store.upsertApp("s1", "junk", { status: "running", healthy: true, processes: { web: 1 } }, NOW - 1000);
    const path = join(dir, "cron.log");
    await Deno.writeTextFile(path, [run("nightly", "failed"), run("report", "ok")].join("\n") + "\n");
    await ingestFile(store, "s1", { rel: "shop/cron.log", path, ino: null }, undefined);

    const get = api(store);
    const fleet = await get("/api/fleet");
    const apps = Object.fromEntries(fleet.servers[0].apps.map((app: AppView) => [app.app, app]));
    assertEquals(apps.shop.processes, {
      total: 5,
      omitted: 0,
      up: 3,
      down: 2,
      restarts: 18,
      groups: [
        { type: "web", count: 2, up: 2, restarts: 1, down: [] },
        { type: HTML, count: 1, up: 0, restarts: 0, down: [HTML] },
        { type: "worker", count: 2, up: 1, restarts: 17, down: ["errored"] },
      ],
    });
    assertEquals(apps.calm.processes.down, 0, "systemd's active counts as running");
    assertEquals(apps.boxed.processes.down, 0, "a docker engine's running (a container) counts as running");
    assertEquals(apps.old.processes, null, "a status.json without processes");
    assertEquals(apps.junk.processes, null, "processes that are not a list");
    assert(!("cron" in apps.shop), "the overview stays small: no cron runs");

    const detail = await get("/api/servers/s1");
    const shop = detail.apps.find((app: AppDetail) => app.app === "shop");
    assertEquals(shop.processes.list.length, 5);
    assertEquals(shop.processes.list[3], {
      type: "worker",
      instance: 2,
      name: "shop-worker-2",
      pid: 0,
      state: "errored",
      restarts: 15,
      up: false,
    });
    assertEquals(shop.processes.list[4].name, HTML);
    assertEquals(shop.cron, [
      {
        job: "nightly",
        release: "20261203-110000-000",
        start: "2026-12-03T11:59:00.000Z",
        end: "2026-12-03T11:59:01.250Z",
        exitCode: 1,
        durationMs: 1250,
        outcome: "failed",
        reason: null,
      },
      {
        job: "report",
        release: "20261203-110000-000",
        start: "2026-12-03T11:59:00.000Z",
        end: "2026-12-03T11:59:01.250Z",
        exitCode: 0,
        durationMs: 1250,
        outcome: "ok",
        reason: null,
      },
    ]);
    assertEquals(detail.apps.find((app: AppDetail) => app.app === "calm").cron, []);
  });
});

Deno.test("Collector: a status.json listing too many processes marks the server; the API stays bounded", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dp-fleet-processes-collector-" });
  const paths = fleetPaths(join(dir, "home"));
  const store = await FleetStore.open(paths.db);
  const collector = new Collector(store, fleetConfigSchema.parse({ servers: [{ name: "s1", host: "local" }] }), paths);
  try {
    const root = join(dir, "server");
    (collector as unknown as { sources: Map<string, Source> }).sources.set("s1", new LocalSource(root));
    await Deno.mkdir(join(root, "opt", "deployments", "shop"), { recursive: true });
    // As many processes as fit in a status.json under its 64 KiB limit.
    const processes = Array.from({ length: 1500 }, () => ({ type: "w", state: "online" }));
    await Deno.writeTextFile(
      join(root, "opt", "deployments", "shop", "status.json"),
      JSON.stringify({ name: "shop", status: "running", healthy: true, processes }),
    );
    const outcome = await collector.pullServer(collector.config.servers[0]);
    assert(outcome.ok, outcome.error ?? "");
    assertEquals(outcome.limits, [
      `shop/status.json lists 1500 processes, over the ${MAX_PROCESSES} kept: the rest are not shown`,
    ]);
    const detail = await api(store)("/api/servers/s1");
    assertEquals(detail.limits, outcome.limits);
    const shop = detail.apps[0].processes;
    assertEquals([shop.total, shop.omitted, shop.list.length], [1500, 1500 - MAX_PROCESSES, MAX_PROCESSES]);
  } finally {
    await collector.close();
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("FleetStore: a version 4 database gains processes and cron runs, its apps kept", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dp-fleet-migrate5-" });
  const path = join(dir, "fleet.db");
  try {
    const db = databaseAt(path, 4);
    db.prepare("INSERT INTO apps (server, app, status, fetched_at) VALUES ('s1', 'shop', 'running', 1)").run();
    db.close();
    const store = await FleetStore.open(path);
    try {
      assertEquals(store.version, MIGRATIONS.length);
      const row = store.sql("SELECT app, processes FROM apps").get() as { app: string; processes: string | null };
      assertEquals([row.app, row.processes], ["shop", null]);
      assertEquals((store.sql("SELECT count(*) AS n FROM cron_runs").get() as { n: number }).n, 0);
    } finally {
      store.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
