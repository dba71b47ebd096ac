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
  downsample,
  RAW_MS,
  requestMinuteOf,
  storeRequestMinutes,
  storeServerSample,
} from "../../src/fleet/metric_store.ts";
import {
  appReleaseWindows,
  appRequestWindow,
  appSeries,
  buckets,
  latestServerMetrics,
  overviewSparklines,
  RANGES,
  serverSeries,
} from "../../src/fleet/series.ts";
import { parseMetrics } from "../../src/fleet/server_metrics.ts";
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
    storeRequestMinutes(store, "a", "web", [{ ts: T0, requests: 10, errors: 1, other: 9, p50: 5, p95: 10 }]);
    storeRequestMinutes(store, "a", "web", [{ ts: T0 + 60_000, requests: 30, errors: 0, other: 30, p50: 1, p95: 2 }]);
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
    assertEquals(appRequestWindow(store, "a", "web", T0), { requests: 40, errors5xx: 1, p95Ms: 4 });
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
    assertEquals(count(store, "request_hours"), 0, "the hourly sums go with them");
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
    assertEquals(result.lines, 13, "every line is searchable as before");
    await ingestFile(store, "a", file, undefined, now);
    assertEquals(count(store, "request_minutes"), 10, "one row per minute, once; bad lines skipped");
    const minutes = store.sql("SELECT ts, requests, errors, other FROM request_minutes ORDER BY ts").all();
    assertEquals({ ...minutes[0] }, { ts: T0 + 60_000, requests: 20, errors: 0, other: 20 });
    assertEquals({ ...minutes[9] }, { ts: T0 + 600_000, requests: 20, errors: 10, other: 10 });

    const window = appRequestWindow(store, "a", "shop", T0);
    assertEquals([window.requests, window.errors5xx], [200, 50]);
    assert(window.p95Ms !== null && window.p95Ms > 1, String(window.p95Ms));

    // Two deployments: v1 before the traffic, v2 at minute 5 (the minute of the line ts 00:06 on); a failed one between.
    const deploy = (at: number, outcome: string, version: string, offset: number) =>
      store.sql(
        "INSERT INTO deployments (server, app, at, outcome, version, file_id, offset) VALUES ('a', 'shop', ?, ?, ?, 0, ?)",
      ).run(new Date(at).toISOString(), outcome, version, offset);
    deploy(T0 - 3_600_000, "success", "v1", 1);
    deploy(T0 + 240_000, "failed", "broken", 2);
    deploy(T0 + 360_000, "success", "v2", 3);
    const releases = appReleaseWindows(store, "a", "shop", T0);
    assertEquals(releases.map((r) => [r.version, r.requests, r.errors5xx, r.errorRate]), [
      ["v1", 100, 0, 0],
      ["v2", 100, 50, 0.5],
    ]);
    const series = appSeries(store, "a", "shop", "1h", now);
    assertEquals(series.ts.length, 60);
    const shown = series.ts.map((ts, i) => [ts, series.requests[i], series.errorRate[i]]).filter(([, r]) => r !== null);
    assertEquals(shown.length, 10);
    assertEquals(shown[0], [T0 + 60_000, 20, 0]);
    assertEquals(shown[9], [T0 + 600_000, 20, 0.5]);
    assertEquals(series.deploys.map((d) => [d.version, d.outcome]), [["broken", "failed"], ["v2", "success"]]);
    store.sql("INSERT INTO apps (server, app, fetched_at) VALUES ('a', 'shop', 0), ('a', 'idle', 0)").run();
    const sparks = overviewSparklines(store, "1h", now);
    assertEquals(sparks.map((s) => [s.app, s.requests.filter((r) => r !== null).length]), [["idle", 0], ["shop", 10]]);
    assertEquals(sparks[1].errorRate.at(-1), 0.5);
    // Over a day: hourly sums; the hour under way counts the 11 minutes it has run.
    const day = overviewSparklines(store, "24h", now).find((s) => s.app === "shop")!;
    assertEquals(day.requests.length, 24);
    assertEquals([day.requests.at(-1), day.errorRate.at(-1)], [Math.round(200 / 11 * 1e4) / 1e4, 0.25]);
    assertEquals(day.requests.slice(0, -1).every((r) => r === null), true);
  } finally {
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("series: hostile metrics.log lines are refused, counts kept sane", () => {
  const at = (text: string) => requestMinuteOf({ offset: 0, ts: T0, text }, T0);
  assertEquals(at('{"ts":"2026-12-01T00:00:30Z","requests":5,"status":{"5xx":2,"2xx":3},"p50_ms":1,"p95_ms":2}'), {
    ts: T0,
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
      "[1,2]",
      "null",
    ]
  ) assertEquals(at(bad), undefined, bad);
  const odd = at('{"ts":"2026-12-01T00:00:00Z","requests":5,"status":{"5xx":-3,"4xx":1e99},"p50_ms":-1,"p95_ms":1e99}');
  assertEquals(odd, { ts: T0, requests: 5, errors: 0, other: 0, p50: null, p95: null });
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
