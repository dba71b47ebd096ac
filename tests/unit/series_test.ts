/**
 * Metrics in the fleet database (src/fleet/metric_store.ts) and their queries
 * (src/fleet/series.ts): samples stored with deltas against the counters kept in the database,
 * bucketed series, downsampling past 48 h into 5-minute rows that the same queries read,
 * retention, request minutes from a real proxy's metrics.log lines through the ingestion,
 * request windows and the release each minute is attributed to.
 */
import { join } from "node:path";
import { assert, assertEquals } from "../helpers/assert.ts";
import { ingestFile } from "../../src/fleet/ingest.ts";
import {
  capRequestRows,
  downsample,
  MAX_MOUNTS_PER_DAY,
  MAX_REQUEST_ROWS,
  RAW_MS,
  requestMinuteOf,
  storedSinceCheck,
  storeRequestMinutes,
  storeServerSample,
} from "../../src/fleet/metric_store.ts";
import {
  appRequestWindow,
  appSeries,
  buckets,
  MAX_CHART_MOUNTS,
  MAX_OLD_MOUNTS,
  overviewSparklines,
  RANGES,
  serverSeries,
} from "../../src/fleet/series.ts";
import { latestServerMetrics } from "../../src/fleet/server_latest.ts";
import { parseMetrics, type RawMetrics } from "../../src/fleet/server_metrics.ts";
import { FleetStore } from "../../src/fleet/store.ts";
import { metricsLogLines } from "../helpers/metrics_log.ts";
import { dbGrowth } from "../../bench/fleet.ts";

const T0 = Date.UTC(2026, 11, 1, 0, 0, 0);

/** The script's output with `busy` and `idle` CPU ticks, `rx` bytes received and / at `used` %. */
function output(busy: number, idle: number, rx: number, used: number): string {
  return `M stat\ncpu  ${busy} 0 0 ${idle} 0 0 0 0\n4\nM loadavg\n2.00 1.00 0.50 1/1 1\n` +
    `M meminfo\nMemTotal: 1000 kB\nMemAvailable: 400 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n` +
    `M netdev\n eth0: ${rx} 0 0 0 0 0 0 0 ${rx * 2} 0\nM uptime\n100.0 1.0\n` +
    `M df\n/dev/sda1 100 ${used} ${100 - used} ${used}% /\nM dfi\n/dev/sda1 100 10 90 10% /\n`;
}

Deno.test("series: samples with CPU and network from the stored counters, bucketed per minute", async () => {
  const store = await FleetStore.open(":memory:");
  try {
    assertEquals(latestServerMetrics(store, "a"), undefined);
    // Every 30 s for an hour: CPU 25 % busy, 3000 bytes/s received, disk filling 1 % a minute from 10 %.
    for (let i = 0; i <= 120; i++) {
      const raw = parseMetrics(output(i * 750, i * 2250, i * 90_000, 10 + Math.floor(i / 2)));
      storeServerSample(store, "a", raw, T0 + i * 30_000);
    }
    const now = T0 + 120 * 30_000;
    const latest = latestServerMetrics(store, "a")!;
    assertEquals(latest.ts, now);
    assertEquals(latest.values, {
      "cpu.percent": 25,
      "load.1": 2,
      "load.5": 1,
      "load.15": 0.5,
      "load.per_core": 0.5,
      "memory.used_percent": 60,
      "swap.used_percent": 0,
      "net.rx_bytes_per_s": 3000,
      "net.tx_bytes_per_s": 6000,
      "uptime.seconds": 100,
    });
    assertEquals(latest.filesystems, [{
      mount: "/",
      values: { "disk.used_percent": 70, "disk.inodes_used_percent": 10 },
    }]);
    const series = serverSeries(store, "a", "1h", now);
    assertEquals(series.stepMs, 60_000);
    assertEquals(series.ts.length, 60);
    assertEquals(series.ts[59], now, "the last bucket starts now");
    assertEquals(series.ts[1] - series.ts[0], 60_000);
    assertEquals(series.cpu.every((v) => v === 25), true, JSON.stringify(series.cpu));
    assertEquals(series.netRx.every((v) => v === 3000), true);
    assertEquals(series.memory[0], 60);
    // bucket k of [T0 + 1 min, …]: samples i = 2k+2, 2k+3 → used 10 + k + 1 both
    assertEquals(series.disks.map((d) => d.mount), ["/"]);
    assertEquals(series.disks[0].used.slice(0, 3), [11, 12, 13]);
    assertEquals(series.disks[0].used[59], 70, "the last bucket holds the sample at now");
    const day = serverSeries(store, "a", "24h", now);
    assertEquals([day.stepMs, day.ts.length], [600_000, 144]);
    assertEquals(day.cpu.filter((v) => v !== null).length, 7, "an hour of 10-minute buckets (and the one at now)");
    assertEquals(day.cpu[0], null);
    assertEquals(serverSeries(store, "other", "1h", now).cpu.every((v) => v === null), true);
  } finally {
    store.close();
  }
});

Deno.test("series: past 48 h raw rows become 5-minute averages, read by the same queries; retention removes them", async () => {
  const store = await FleetStore.open(":memory:");
  try {
    // 3 days, a sample every 30 s; CPU alternates 0 % and 100 %: 50 % in every 5 minutes.
    let busy = 0;
    let idle = 0;
    const days = 3;
    for (let i = 0; i <= days * 2880; i++) {
      if (i % 2) busy += 60;
      else idle += 60;
      storeServerSample(store, "a", parseMetrics(output(busy, idle, i * 60, 50)), T0 + i * 30_000);
    }
    // Two windows (keyed by their end) of the bucket [T0, T0 + 5 min).
    const minutes = [
      { ts: T0 + 60_000, requests: 10, errors: 1, other: 9, p50: 5, p95: 10 },
      { ts: T0 + 120_000, requests: 30, errors: 0, other: 30, p50: 1, p95: 2 },
    ];
    storeRequestMinutes(store, "a", "web", minutes.slice(0, 1));
    storeRequestMinutes(store, "a", "web", minutes.slice(1));
    const now = T0 + days * 86_400_000;
    const rawBefore = count(store, "server_samples");
    const written = downsample(store, now, 30);
    assert(written > 0);
    assertEquals(downsample(store, now + 1000, 30), 0, "at most once per 5-minute bucket");
    const cutoff = Math.floor((now - RAW_MS) / 300_000) * 300_000;
    assertEquals((store.sql("SELECT MIN(ts) AS t FROM server_samples").get() as { t: number }).t, cutoff);
    const fiveMinute = count(store, "server_samples_5m");
    assertEquals(fiveMinute, (cutoff - T0) / 300_000);
    assertEquals(count(store, "server_samples") + fiveMinute * 10, rawBefore);
    const row = store.sql("SELECT cpu, n FROM server_samples_5m WHERE ts = ?").get(T0 + 300_000) as {
      cpu: number;
      n: number;
    };
    assertEquals([row.cpu, row.n], [50, 10]);
    assertEquals(count(store, "fs_samples_5m"), fiveMinute);
    // The request minutes: summed, p95 weighted by requests: (10·10 + 30·2) / 40 = 4.
    const minute = store.sql("SELECT requests, errors, other, p95, n FROM request_minutes_5m").get();
    assertEquals({ ...minute }, { requests: 40, errors: 1, other: 39, p95: 4, n: 2 });
    assertEquals(appRequestWindow(store, "a", "web", T0, now), { requests: 40, errors5xx: 1, p95Ms: 4 });
    // The same lines read again (older than 48 h, their bucket averaged): they count once.
    storeRequestMinutes(store, "a", "web", minutes);
    assertEquals(count(store, "request_minutes"), 0, "dropped: their bucket was averaged");
    downsample(store, now + 300_000, 30);
    assertEquals(appRequestWindow(store, "a", "web", T0, now).requests, 40);
    const rollups = store.sql("SELECT step, ts, requests, errors FROM request_rollups ORDER BY step").all();
    assertEquals(rollups.map((r) => ({ ...r })), [
      { step: 3_600_000, ts: T0, requests: 40, errors: 1 },
      { step: 4 * 3_600_000, ts: T0, requests: 40, errors: 1 },
      { step: 12 * 3_600_000, ts: T0, requests: 40, errors: 1 },
    ]);
    // A week's chart reads both: hour buckets of 5-minute rows, then of raw ones.
    const week = serverSeries(store, "a", "7d", now);
    assertEquals(week.stepMs, 3_600_000);
    const values = week.cpu.filter((v) => v !== null);
    assertEquals(values.length, days * 24 + 1);
    assert(values.slice(0, -1).every((v) => Math.abs(v! - 50) < 1), JSON.stringify(values));
    assertEquals(values.at(-1), 0, "the bucket at now holds one sample, an idle one");
    assertEquals(week.disks[0].used.filter((v) => v !== null).every((v) => v === 50), true);
    // A raw row that comes late for an averaged bucket is merged into it, weighted.
    storeServerSample(store, "late", parseMetrics(output(0, 60, 0, 10)), T0);
    downsample(store, now + 300_000, 30);
    storeServerSample(store, "late", parseMetrics(output(0, 60, 0, 40)), T0 + 60_000);
    downsample(store, now + 600_000, 30);
    const merged = store.sql("SELECT used, n FROM fs_samples_5m WHERE server = 'late'").get();
    assertEquals({ ...merged }, { used: 25, n: 2 });
    // Retention: 5-minute rows older than `days` go.
    downsample(store, now + 86_400_000, 3);
    const oldest = (store.sql("SELECT MIN(ts) AS t FROM server_samples_5m").get() as { t: number }).t;
    assertEquals(oldest, now + 86_400_000 - 3 * 86_400_000);
    assertEquals(count(store, "request_minutes_5m"), 0);
    assertEquals(count(store, "request_rollups"), 0, "the rollups go with them");
  } finally {
    store.close();
  }
});

function count(store: FleetStore, table: string): number {
  return (store.sql(`SELECT COUNT(*) AS n FROM ${table}`).get() as { n: number }).n;
}

Deno.test("series: a real proxy's metrics.log, ingested, gives request minutes, windows, releases and charts", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dp-series-" });
  const store = await FleetStore.open(join(dir, "fleet.db"));
  try {
    // 10 minutes: 20 requests a minute; from minute 5 (the second release) half answer 500.
    const lines = metricsLogLines("shop", T0, 10, 5);
    assert(lines.every((line) => JSON.parse(line).p95_ms !== undefined), lines[0]);
    lines.splice(3, 0, "not json", '{"ts":"x","requests":5}', '{"ts":"2026-12-01T00:03:00Z","requests":-1}');
    await Deno.mkdir(join(dir, "shop"));
    const path = join(dir, "shop", "metrics.log");
    await Deno.writeTextFile(path, lines.join("\n") + "\n");
    const now = T0 + 10 * 60_000;
    const file = { rel: "shop/metrics.log", path, ino: null };
    const result = await ingestFile(store, "a", file, undefined, now);
    assertEquals(result.lines, 0, "metrics.log lines are request minutes, not log lines");
    assertEquals(count(store, "lines"), 0);
    assertEquals(store.ledger("a", "shop/metrics.log")?.offset, (await Deno.stat(path)).size, "the ledger moved");
    await ingestFile(store, "a", file, undefined, now);
    assertEquals(count(store, "request_minutes"), 10, "one row per minute, once; bad lines skipped");
    const minutes = store.sql("SELECT ts, requests, errors, other FROM request_minutes ORDER BY ts").all();
    assertEquals({ ...minutes[0] }, { ts: T0 + 60_000, requests: 20, errors: 0, other: 20 });
    assertEquals({ ...minutes[9] }, { ts: T0 + 600_000, requests: 20, errors: 10, other: 10 });

    const window = appRequestWindow(store, "a", "shop", T0, now);
    assertEquals([window.requests, window.errors5xx], [200, 50]);
    assert(window.p95Ms !== null && window.p95Ms > 1, String(window.p95Ms));

    // v1 before the traffic, v2 at minute 6 (the lines stamped 00:06 on: the windows ending then); a failed one
    // between; one that failed after the switch and was rolled back automatically (it names the failed
    // release: v1 serves on), and an explicit rollback to v1 at minute 9.
    const deploy = (at: number, outcome: string, version: string, offset: number) =>
      store.sql(
        "INSERT INTO deployments (server, app, at, outcome, version, file_id, offset) VALUES ('a', 'shop', ?, ?, ?, 0, ?)",
      ).run(new Date(at).toISOString(), outcome, version, offset);
    deploy(T0 - 3_600_000, "success", "v1", 1);
    deploy(T0 + 240_000, "failed", "broken", 2);
    store.sql(
      `INSERT INTO deployments (server, app, at, outcome, version, step, file_id, offset)
       VALUES ('a', 'shop', ?, 'rolled_back', 'v3', 'watch', 0, 3)`,
    ).run(new Date(T0 + 300_000).toISOString());
    deploy(T0 + 360_000, "success", "v2", 4);
    deploy(T0 + 540_000, "rolled_back", "v1", 5);
    const series = appSeries(store, "a", "shop", "1h", now);
    assertEquals(series.releases, [
      { version: "v1", from: series.from, to: T0 + 360_000, requests: 100, errorRate: 0, p95: series.releases[0].p95 },
      {
        version: "v2",
        from: T0 + 360_000,
        to: T0 + 540_000,
        requests: 60,
        errorRate: 0.5,
        p95: series.releases[1].p95,
      },
      { version: "v1", from: T0 + 540_000, to: now, requests: 40, errorRate: 0.5, p95: series.releases[2].p95 },
    ]);
    assert(series.releases.every((r) => r.p95! > 0));
    assertEquals(series.ts.length, 60);
    const shown = series.ts.map((ts, i) => [ts, series.requests[i], series.errorRate[i]]).filter(([, r]) => r !== null);
    assertEquals(shown.length, 10);
    assertEquals(shown[0], [T0, 20, 0], "the window ending 00:01 is the minute 00:00");
    assertEquals(shown[9], [T0 + 540_000, 20, 0.5]);
    assertEquals(series.deploys.map((d) => [d.version, d.outcome]), [
      ["broken", "failed"],
      ["v3", "rolled_back"],
      ["v2", "success"],
      ["v1", "rolled_back"],
    ]);
    store.sql("INSERT INTO apps (server, app, fetched_at) VALUES ('a', 'shop', 0), ('a', 'idle', 0)").run();
    const sparks = overviewSparklines(store, "1h", now);
    assertEquals(sparks.map((s) => [s.app, s.requests.filter((r) => r !== null).length]), [["idle", 0], ["shop", 10]]);
    assertEquals([sparks[1].errorRate.at(-2), sparks[1].errorRate.at(-1)], [0.5, null], "minute 00:10 is under way");
    // Over a day, a week, a month: the rollups; the bucket under way counts the 10 whole minutes it has run.
    for (const range of ["24h", "7d", "30d"] as const) {
      const line = overviewSparklines(store, range, now).find((s) => s.app === "shop")!;
      assertEquals([line.requests.at(-1), line.errorRate.at(-1)], [20, 0.25], range);
      assertEquals(line.requests.slice(0, -1).every((r) => r === null), true);
    }
  } finally {
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("series: hostile metrics.log lines are refused, counts kept sane", () => {
  const at = (text: string) => requestMinuteOf({ offset: 0, ts: T0, text }, T0);
  assertEquals(at('{"ts":"2026-12-01T00:00:30Z","requests":5,"status":{"5xx":2,"2xx":3},"p50_ms":1,"p95_ms":2}'), {
    ts: T0 + 30_000,
    requests: 5,
    errors: 2,
    other: 3,
    p50: 1,
    p95: 2,
  });
  for (
    const bad of [
      '{"ts":"2099-01-01T00:00:00Z","requests":5}',
      '{"ts":"1970-01-01T00:00:00Z","requests":5}',
      '{"ts":"2026-12-01T00:00:00Z","requests":1e300}',
      '{"ts":"2026-12-01T00:00:00Z","requests":"5"}',
      '{"ts":"2026-12-01T00:00:00Z"}',
      '{"ts":"2026-12-01T00:00:00","requests":5}', // no zone: it would be read in the fleet's local time
      '{"ts":"2026-12-01 00:00:00Z","requests":5}',
      '{"ts":"Tue, 01 Dec 2026 00:00:00 GMT","requests":5}',
      "[1,2]",
      "null",
    ]
  ) assertEquals(at(bad), undefined, bad);
  const odd = at('{"ts":"2026-12-01T00:00:00Z","requests":5,"status":{"5xx":-3,"4xx":1e99},"p50_ms":-1,"p95_ms":1e99}');
  assertEquals(odd, { ts: T0, requests: 5, errors: 0, other: 0, p50: null, p95: null });
  // More 5xx (or others) than requests: capped, so an error rate is at most 1.
  const over = at('{"ts":"2026-12-01T00:00:00+01:00","requests":1,"status":{"5xx":1000000000,"2xx":7}}');
  assertEquals(over, { ts: T0 - 3_600_000, requests: 1, errors: 1, other: 0, p50: null, p95: null });
  assertEquals(at('{"ts":"2026-12-01T00:00:00Z","requests":4,"status":{"5xx":1,"2xx":9}}')?.other, 3);
});

Deno.test("series: the ranges' buckets", () => {
  for (const [range, { ms, stepMs }] of Object.entries(RANGES)) {
    const { from, ts } = buckets(range as keyof typeof RANGES, T0 + 123_456);
    assertEquals(from % stepMs, 0);
    assertEquals(ts.length, ms / stepMs);
    assert(ts.at(-1)! <= T0 + 123_456 && ts.at(-1)! + stepMs > T0 + 123_456);
  }
});

Deno.test("bench smoke: the DB growth measurement runs (a few servers' hour)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dp-growth-" });
  try {
    const growth = await dbGrowth(dir, { hours: 1 });
    assert(growth.rawBytes > 0 && growth.steadyBytes > 0, JSON.stringify(growth));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("series: a window keyed by its end: the proxy's partial window (stop) adds to its minute, replaces nothing", async () => {
  const store = await FleetStore.open(":memory:");
  try {
    const at = (ms: number) => new Date(T0 + ms).toISOString();
    const line = (ms: number, requests: number, errors: number) =>
      requestMinuteOf({
        offset: 0,
        ts: 0,
        text: JSON.stringify({ ts: at(ms), requests, status: { "2xx": requests - errors, "5xx": errors } }),
      }, T0 + 3_600_000)!;
    // 00:03-00:04 full (600), the proxy stopped at 00:04:40 (400), started again: 00:04:40-00:05 (200).
    const minutes = [line(240_000, 600, 0), line(280_000, 400, 4), line(300_000, 200, 2)];
    storeRequestMinutes(store, "a", "web", minutes);
    storeRequestMinutes(store, "a", "web", minutes); // read again: counts once
    const series = appSeries(store, "a", "web", "1h", T0 + 360_000);
    const shown = series.ts.map((ts, i) => [ts - T0, series.requests[i], series.errorRate[i]])
      .filter(([, r]) => r !== null);
    assertEquals(shown, [[180_000, 600, 0], [240_000, 600, 0.01]]);
    assertEquals(appRequestWindow(store, "a", "web", T0, T0 + 360_000).requests, 1200);
    const hour = store.sql("SELECT requests, errors FROM request_rollups WHERE step = 3600000").get();
    assertEquals({ ...hour }, { requests: 1200, errors: 6 });
  } finally {
    store.close();
  }
});

/** A sample with only memory (used %) and the mounts given (used %). */
function sample(memory: number, mounts: Record<string, number> = {}): RawMetrics {
  return {
    counters: {},
    memory: { total: 100, available: 100 - memory },
    filesystems: Object.entries(mounts).map(([mount, used]) => ({ mount, used })),
    missing: [],
  };
}

Deno.test("series: a bucket across the 48 h line weights 5-minute rows by the samples they stand for", async () => {
  const store = await FleetStore.open(":memory:");
  try {
    // An hour: memory 0 % for its first half, 100 % for the second, a sample every 30 s.
    for (let i = 0; i < 120; i++) storeServerSample(store, "a", sample(i < 60 ? 0 : 100), T0 + i * 30_000);
    // The first half (6 five-minute buckets) is averaged, the second stays raw.
    downsample(store, T0 + 1_800_000 + RAW_MS, 30);
    assertEquals(count(store, "server_samples_5m"), 6);
    assertEquals(count(store, "server_samples"), 60);
    const week = serverSeries(store, "a", "7d", T0 + 3_600_000 + RAW_MS);
    assertEquals(week.memory.filter((v) => v !== null), [50], "not (6·0 + 60·100) / 66");
  } finally {
    store.close();
  }
});

Deno.test("series: a server's chart shows the mounts of its latest sample and the 16 seen last; new ones a day are capped", async () => {
  const store = await FleetStore.open(":memory:");
  try {
    // Every 30 s, 64 new mount points (a compromised server), and / always.
    const mounts = (i: number) => Object.fromEntries(Array.from({ length: 64 }, (_, k) => [`/m${i}-${k}`, 1]));
    for (let i = 0; i < 10; i++) storeServerSample(store, "a", sample(10, { "/": 50, ...mounts(i) }), T0 + i * 30_000);
    assertEquals(count(store, "fs_mounts"), MAX_MOUNTS_PER_DAY, "no more new mount points today");
    const latest = latestServerMetrics(store, "a")!;
    assertEquals(latest.filesystems.map((f) => f.mount), ["/"], "the latest sample's new mounts were not kept");
    assert(
      latest.missing?.includes(`over the ${MAX_MOUNTS_PER_DAY} a server may show in a day`),
      String(latest.missing),
    );
    const series = serverSeries(store, "a", "1h", T0 + 300_000);
    assertEquals(series.disks.length, MAX_CHART_MOUNTS, "the fullest of the latest's and the 16 seen last");
    assertEquals(series.moreMounts, 1 + MAX_OLD_MOUNTS - MAX_CHART_MOUNTS);
    assert(series.disks.some((d) => d.mount === "/"));
    assert(series.disks.every((d) => d.mount === "/" || d.mount.startsWith("/m1-")), "the ones seen last");
    // A day later, new ones are taken again.
    storeServerSample(store, "a", sample(10, { "/": 50, "/new": 5 }), T0 + 86_400_000 + 600_000);
    assertEquals(latestServerMetrics(store, "a")!.filesystems.map((f) => f.mount), ["/", "/new"]);
  } finally {
    store.close();
  }
});

Deno.test("series: a chart draws the 12 fullest mounts of the range (highest use in it), by name, and counts the rest", async () => {
  const store = await FleetStore.open(":memory:");
  try {
    // 20 mounts, /d00 … /d19, /dNN at NN %; /d00 was 99 % full 30 s before (a full disk cleaned: still shown).
    const mounts = (full: boolean) =>
      Object.fromEntries(
        Array.from({ length: 20 }, (_, k) => [`/d${String(k).padStart(2, "0")}`, k || !full ? k : 99]),
      );
    storeServerSample(store, "a", sample(10, mounts(true)), T0);
    storeServerSample(store, "a", sample(10, mounts(false)), T0 + 30_000);
    const series = serverSeries(store, "a", "1h", T0 + 60_000);
    assertEquals(series.disks.map((d) => d.mount), [
      "/d00",
      "/d09",
      ...Array.from({ length: 10 }, (_, k) => `/d${k + 10}`),
    ]);
    assertEquals(series.moreMounts, 8);
    // A mount out of inodes with its space nearly free is full too.
    const raw = sample(10, mounts(false));
    raw.filesystems.push({ mount: "/out-of-inodes", used: 1, inodes: 100 });
    storeServerSample(store, "a", raw, T0 + 45_000);
    const inodes = serverSeries(store, "a", "1h", T0 + 60_000);
    assert(inodes.disks.some((d) => d.mount === "/out-of-inodes"), inodes.disks.map((d) => d.mount).join());
    assertEquals(inodes.moreMounts, 9);
    // Few mounts: all, and no count.
    assertEquals(serverSeries(store, "b", "1h", T0 + 60_000).moreMounts, undefined);
  } finally {
    store.close();
  }
});

Deno.test("series: a server removed from the config loses its metrics; added again, it starts afresh", async () => {
  const store = await FleetStore.open(":memory:");
  try {
    for (const server of ["a", "b"]) {
      storeServerSample(store, server, parseMetrics(output(10, 30, 100, 20)), T0);
      storeRequestMinutes(store, server, "web", [{ ts: T0, requests: 1, errors: 0, other: 1, p50: 1, p95: 1 }]);
    }
    store.keepServers(["b"]);
    const tables = [
      "server_counters",
      "server_samples",
      "fs_samples",
      "fs_mounts",
      "request_minutes",
      "request_rollups",
    ];
    for (const table of tables) {
      const servers = store.sql(`SELECT DISTINCT server FROM ${table}`).all().map((r) => r.server);
      assertEquals(servers, ["b"], table);
    }
    // "a" again: its first sample has no CPU (no deltas against counters from before it was removed).
    storeServerSample(store, "a", parseMetrics(output(20, 40, 200, 20)), T0 + 30_000);
    assertEquals(latestServerMetrics(store, "a")!.values["cpu.percent"], undefined);
  } finally {
    store.close();
  }
});

Deno.test("series: a server that makes up request windows (times, app names) keeps at most MAX_REQUEST_ROWS, its newest; another's stay", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dp-series-cap-" });
  const store = await FleetStore.open(join(dir, "fleet.db"));
  try {
    const now = T0 + 30 * 86_400_000;
    storeRequestMinutes(store, "good", "shop", [{
      ts: now - 60_000,
      requests: 5,
      errors: 0,
      other: 5,
      p50: 1,
      p95: 2,
    }]);
    // A hostile metrics.log: windows a millisecond apart (each its own row), over the last 40 h, under 4 app names.
    const cap = MAX_REQUEST_ROWS.request_minutes;
    const total = cap + 50_000;
    for (const app of ["a1", "a2", "a3", "a4"]) {
      const path = join(dir, `${app}.log`);
      const first = now - 40 * 3_600_000 + ["a1", "a2", "a3", "a4"].indexOf(app) * total / 4;
      const text = Array.from(
        { length: total / 4 },
        (_, i) => JSON.stringify({ ts: new Date(first + i).toISOString(), requests: 1 }) + "\n",
      ).join("");
      await Deno.writeTextFile(path, text);
      await ingestFile(store, "evil", { rel: `${app}/metrics.log`, path, ino: 1 }, undefined, now);
    }
    assertEquals(storedSinceCheck(store, "evil"), total);
    // The 5-minute downsampling checks the servers that stored windows since (only those).
    downsample(store, now, 30);
    assertEquals(storedSinceCheck(store, "evil"), 0);
    const rows = store.sql("SELECT COUNT(*) AS n, MIN(app) AS app FROM request_minutes WHERE server = 'evil'").get();
    assertEquals({ ...rows }, { n: cap, app: "a2" }, "the newest kept: a1's went first");
    const rollups = store.sql("SELECT COUNT(*) AS n FROM request_rollups WHERE server = 'evil'").get() as { n: number };
    assert(rollups.n <= MAX_REQUEST_ROWS.request_rollups, `${rollups.n} rollups`);
    assertEquals(count(store, "request_minutes") - cap, 1, "the good server's row stays");
    assertEquals(capRequestRows(store, "evil"), 0, "at the cap: nothing more");
  } finally {
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
});
