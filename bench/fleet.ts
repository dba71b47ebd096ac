/**
 * Fleet monitor benchmarks (part of `deno task bench`), each against a baseline measured in the
 * same run:
 *
 * 1. Ingest: 1 M log lines from a file through the collector's ingestion (ledger, line split,
 *    SQLite + FTS5 in batches) against plain SQLite inserts of the same lines. Target ≥ 100 k lines/s.
 * 2. Search: the newest 50 matches over 5 M lines through the API handler, p50/p95, against
 *    `grep -F -w word | tail -n 50` over the same file. Target p95 ≤ 20 ms and ≥ 10× faster than grep.
 * 3. Cycle: 10 fake hosts (network namespaces + sshd, needs root) × 3 apps pulled over ssh/rsync
 *    with nothing new (target ≤ 2 s), against one `ssh host true` to every host at once over the
 *    same master connections; then the bytes received in the cycle after 100 KB of new lines; and
 *    the cycle with server metrics (read in the same listing command) against one without them
 *    (the collector's internal `metrics: false`). Target ≤ 1.1×.
 * 4. Metrics storage: a day of one server's samples (every 30 s, 5 filesystems) and 10 apps' request
 *    minutes in a fresh database, raw (kept 48 h) and downsampled to 5-minute rows (kept for the
 *    retention), and what a server costs at steady state.
 * @module
 */
import { DatabaseSync } from "node:sqlite";
import { join } from "node:path";
import { createFleetHandler } from "../src/fleet/api.ts";
import { benchCharts } from "./charts.ts";
import { FleetEvents } from "../src/fleet/events.ts";
import { Collector } from "../src/fleet/collector.ts";
import { fleetConfigSchema, fleetPaths } from "../src/fleet/config.ts";
import { ingestFile } from "../src/fleet/ingest.ts";
import { downsample, RAW_MS, storeRequestMinutes, storeServerSample } from "../src/fleet/metric_store.ts";
import { parseMetrics } from "../src/fleet/server_metrics.ts";
import { controlPath } from "../src/fleet/ssh_source.ts";
import { FleetStore } from "../src/fleet/store.ts";
import { FakeVps } from "../tests/helpers/vps.ts";

const WORDS = ["GET", "POST", "/api/orders", "/health", "200", "201", "404", "500", "user", "cache", "hit", "miss"];
/** Words of known frequency in the generated lines: one line in `every` holds it. */
const MARKERS = [{ word: "zebracorn", every: 100_000 }, { word: "timeout", every: 1_000 }, {
  word: "checkout",
  every: 10,
}];

/** Line `i` of the generated log: PM2-style timestamp, a request, sometimes a marker word. */
function line(i: number): string {
  const marker = MARKERS.filter((m) => i % m.every === 0).map((m) => m.word).join(" ");
  const t = new Date(Date.UTC(2026, 10, 29, 0, 0, 0) + i * 10).toISOString().slice(0, 19);
  return `${t}: ${WORDS[i % 12]} ${WORDS[(i * 7) % 12]} ${WORDS[(i * 5) % 12]} id=${i} took=${i % 997}ms ${marker}`
    .trimEnd();
}

/** Writes lines [from, to) to `path` (appending). */
async function writeLines(path: string, from: number, to: number): Promise<void> {
  using file = await Deno.open(path, { create: true, append: true });
  const encoder = new TextEncoder();
  for (let start = from; start < to; start += 100_000) {
    const chunk: string[] = [];
    for (let i = start; i < Math.min(to, start + 100_000); i++) chunk.push(line(i));
    await file.write(encoder.encode(chunk.join("\n") + "\n"));
  }
}

const rate = (lines: number, ms: number) => `${Math.round(lines / ms * 1000).toLocaleString("en")} lines/s`;

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
}

async function benchIngest(tmp: string, log: string): Promise<void> {
  const count = 1_000_000;
  console.log(`\n4a. Fleet ingest: ${count.toLocaleString("en")} lines`);
  await writeLines(log, 0, count);

  // Baseline: plain inserts of the same lines (already split, in memory), 10 k per transaction.
  const text = (await Deno.readTextFile(log)).split("\n").filter(Boolean);
  const plainDb = new DatabaseSync(join(tmp, "plain.db"));
  plainDb.exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;");
  plainDb.exec("CREATE TABLE lines (id INTEGER PRIMARY KEY, text TEXT NOT NULL)");
  const insert = plainDb.prepare("INSERT INTO lines (text) VALUES (?)");
  let started = performance.now();
  for (let i = 0; i < text.length; i += 10_000) {
    plainDb.exec("BEGIN");
    for (const t of text.slice(i, i + 10_000)) insert.run(t);
    plainDb.exec("COMMIT");
  }
  const plainMs = performance.now() - started;
  plainDb.close();

  // The product: the collector's ingestion of the file, FTS included.
  const store = await FleetStore.open(join(tmp, "ingest.db"));
  started = performance.now();
  const result = await ingestFile(store, "bench", { rel: "web/access.log", path: log, ino: null }, undefined);
  const ingestMs = performance.now() - started;
  store.close();
  console.log(`   ingest (file → lines + FTS5):      ${rate(result.lines, ingestMs)}  (${result.lines} lines)`);
  console.log(`   plain SQLite insert (no index):    ${rate(text.length, plainMs)}`);
  const perSecond = result.lines / ingestMs * 1000;
  console.log(
    `   ratio ingest / plain:              ${(plainMs / ingestMs).toFixed(2)}×  — target ≥ 100,000 lines/s: ` +
      (perSecond >= 100_000 ? "met" : "not met"),
  );
}

async function benchSearch(tmp: string, log: string): Promise<void> {
  const total = 5_000_000;
  console.log(`\n4b. Fleet search: newest 50 matches over ${total.toLocaleString("en")} lines`);
  await writeLines(log, 1_000_000, total);
  const store = await FleetStore.open(join(tmp, "search.db"));
  const started = performance.now();
  const { lines } = await ingestFile(store, "bench", { rel: "web/access.log", path: log, ino: null }, undefined);
  console.log(
    `   (ingested ${lines.toLocaleString("en")} lines in ${((performance.now() - started) / 1000).toFixed(1)} s)`,
  );
  const handler = createFleetHandler({
    store,
    view: () => ({ now: Date.now(), intervalMs: 30_000, holding: false, gapMs: 0 }),
    collectorStats: () => ({ cycles: 0, errors: 0, lastCycleMs: 0 }),
    servers: () => [{ name: "bench" }],
    events: new FleetEvents(),
  });
  const queries = [...MARKERS.map((m) => m.word), "GET", "orders AND hit"];
  const times: number[] = [];
  for (let round = 0; round < 20; round++) {
    for (const q of queries) {
      const t0 = performance.now();
      const response = await handler(new Request(`http://127.0.0.1:3333/api/search?q=${encodeURIComponent(q)}`));
      const body = await response.json();
      times.push(performance.now() - t0);
      if (response.status !== 200 || !body.results.length) throw new Error(`search ${q}: ${JSON.stringify(body)}`);
    }
  }
  store.close();
  const grepTimes: number[] = [];
  for (const q of ["zebracorn", "timeout", "checkout"]) {
    for (let run = 0; run < 3; run++) {
      const t0 = performance.now();
      const out = await new Deno.Command("sh", {
        args: ["-c", 'grep -F -w -- "$1" "$2" | tail -n 50', "sh", q, log],
        stdout: "piped",
      }).output();
      grepTimes.push(performance.now() - t0);
      if (!out.success) throw new Error(`grep ${q} failed`);
    }
  }
  const p50 = percentile(times, 0.5);
  const p95 = percentile(times, 0.95);
  const grep = percentile(grepTimes, 0.5);
  console.log(`   search (API handler): p50 ${p50.toFixed(2)} ms, p95 ${p95.toFixed(2)} ms (${times.length} searches)`);
  console.log(`   grep -F -w | tail -n 50: median ${grep.toFixed(0)} ms (${grepTimes.length} runs)`);
  console.log(
    `   ratio grep / search p95:           ${(grep / p95).toFixed(0)}×  — targets p95 ≤ 20 ms: ` +
      `${p95 <= 20 ? "met" : "not met"}; ≥ 10× faster than grep: ${grep / p95 >= 10 ? "met" : "not met"}`,
  );
}

async function benchCycle(tmp: string): Promise<void> {
  const count = 10;
  console.log(`\n4c. Fleet cycle: ${count} fake hosts × 3 apps over ssh + rsync`);
  if (Deno.uid() !== 0) {
    console.log("   skipped: the fake hosts need root (network namespaces)");
    return;
  }
  const hosts: FakeVps[] = [];
  const home = join(tmp, "fleet-home");
  const paths = fleetPaths(home);
  let store: FleetStore | undefined;
  let collector: Collector | undefined;
  try {
    for (const vps of await Promise.all(Array.from({ length: count }, () => FakeVps.create()))) hosts.push(vps);
    await Deno.mkdir(home, { recursive: true });
    let knownHosts = "";
    for (const vps of hosts) knownHosts += await Deno.readTextFile(join(vps.dir, "known_hosts"));
    await Deno.writeTextFile(paths.knownHosts, knownHosts);
    for (const [i, vps] of hosts.entries()) {
      for (const app of ["api", "web", "worker"]) {
        await Deno.mkdir(join(vps.deployments, app), { recursive: true });
        await Deno.writeTextFile(
          join(vps.deployments, app, "status.json"),
          JSON.stringify({ name: app, status: "running", healthy: true, version: "abc1234" }),
        );
        await Deno.mkdir(join(vps.logs, app), { recursive: true });
        for (const file of ["access.log", "error.log"]) {
          await writeLines(join(vps.logs, app, file), i * 1000, i * 1000 + 500);
        }
      }
    }
    const config = fleetConfigSchema.parse({
      servers: hosts.map((vps, i) => ({
        name: `h${i}`,
        host: vps.address,
        identityFile: join(vps.dir, "client_key"),
      })),
      concurrency: count,
    });
    store = await FleetStore.open(paths.db);
    collector = new Collector(store, config, paths);
    const first = await collector.cycle();
    const failed = first.servers.filter((s) => !s.ok);
    if (failed.length) throw new Error(`first cycle: ${failed.map((s) => `${s.server}: ${s.error}`).join("; ")}`);
    const idle: number[] = [];
    const baseline: number[] = [];
    for (let run = 0; run < 5; run++) {
      idle.push((await collector.cycle()).durationMs);
      const t0 = performance.now();
      await Promise.all(hosts.map((_, i) =>
        new Deno.Command("ssh", {
          args: [...sshFor(collector!, i), "true"],
          stdout: "null",
          stderr: "null",
        }).output()
      ));
      baseline.push(performance.now() - t0);
    }
    // The same cycles without server metrics (same hosts, same master connections), interleaved.
    const bare = new Collector(store, config, paths, Date.now, { metrics: false });
    const withMetrics: number[] = [];
    const without: number[] = [];
    for (let run = 0; run < 7; run++) {
      withMetrics.push((await collector.cycle()).durationMs);
      without.push((await bare.cycle()).durationMs);
    }
    await bare.close();
    const cycleMs = percentile(idle, 0.5);
    const sshMs = percentile(baseline, 0.5);
    console.log(`   cycle, nothing new:                ${cycleMs.toFixed(0)} ms (median of ${idle.length})`);
    console.log(`   ssh true to all hosts at once:     ${sshMs.toFixed(0)} ms (same master connections)`);
    console.log(
      `   ratio cycle / ssh round trip:      ${(cycleMs / sshMs).toFixed(1)}×  — target cycle ≤ 2 s: ` +
        (cycleMs <= 2000 ? "met" : "not met"),
    );
    const [metricsMs, bareMs] = [percentile(withMetrics, 0.5), percentile(without, 0.5)];
    console.log(`   cycle with server metrics:         ${metricsMs.toFixed(0)} ms (median of ${withMetrics.length})`);
    console.log(`   cycle without server metrics:      ${bareMs.toFixed(0)} ms (median of ${without.length})`);
    console.log(
      `   ratio with / without metrics:      ${(metricsMs / bareMs).toFixed(2)}×  — target ≤ 1.1×: ` +
        (metricsMs <= 1.1 * bareMs ? "met" : "not met"),
    );
    // 100 KB of new lines, spread over the hosts' access logs.
    const lineBytes = line(123_456).length + 1;
    const perHost = Math.round(100 * 1024 / lineBytes / count);
    for (const [i, vps] of hosts.entries()) {
      await writeLines(join(vps.logs, "web", "access.log"), 900_000 + i * perHost, 900_000 + (i + 1) * perHost);
    }
    const written = perHost * count * lineBytes;
    const grown = await collector.cycle();
    const bytes = grown.servers.reduce((n, s) => n + s.bytes, 0);
    const lines = grown.servers.reduce((n, s) => n + s.lines, 0);
    console.log(
      `   after ${(written / 1024).toFixed(0)} KB of new lines: ${(bytes / 1024).toFixed(0)} KB received ` +
        `(${(bytes / written).toFixed(2)}× what was written; ${lines} lines ingested; whole files would be ` +
        `${(hosts.length * 6 * 500 * lineBytes / 1024).toFixed(0)} KB)`,
    );
  } finally {
    await collector?.close();
    store?.close();
    await Promise.all(hosts.map((vps) => vps.close()));
  }
}

/** What the metrics script prints on a server with `filesystems` filesystems, at sample `i` (30 s apart). */
function metricsOutput(i: number, filesystems: number): string {
  const disks = Array.from({ length: filesystems }, (_, d) => `/dev/sd${d} 1000000 ${300000 + i} 700000 30% /d${d}`);
  return `M stat\ncpu  ${i * 900} 0 ${i * 300} ${i * 4800} ${i * 30} 0 0 0 0 0\n4\n` +
    `M loadavg\n0.${i % 100} 0.50 0.40 1/200 ${i}\nM meminfo\nMemTotal: 4194304 kB\n` +
    `MemAvailable: ${2000000 + (i % 1000) * 100} kB\nSwapTotal: 1048576 kB\nSwapFree: 1000000 kB\n` +
    `M netdev\n  eth0: ${i * 123456} 0 0 0 0 0 0 0 ${i * 65432} 0\nM uptime\n${100000 + i * 30}.00 1.00\n` +
    `M df\n${disks.join("\n")}\nM dfi\n${disks.join("\n")}\n`;
}

/** The database's size, compacted. */
function dbBytes(store: FleetStore): number {
  store.db.exec("VACUUM");
  const pages = store.db.prepare("PRAGMA page_count").get() as { page_count: number };
  const page = store.db.prepare("PRAGMA page_size").get() as { page_size: number };
  return pages.page_count * page.page_size;
}

/**
 * What one server's metrics cost in the database: `hours` (24) of samples every 30 s with 5
 * filesystems and 10 apps' request minutes, stored as the collector stores them, raw and then
 * downsampled; scaled to a day. `steadyBytes`: 48 h of raw rows and `retentionDays` (30) of
 * 5-minute rows.
 */
export async function dbGrowth(
  tmp: string,
  options: { hours?: number; retentionDays?: number } = {},
): Promise<{ rawBytes: number; fiveMinuteBytes: number; steadyBytes: number; retentionDays: number }> {
  const hours = options.hours ?? 24;
  const retentionDays = options.retentionDays ?? 30;
  const path = join(tmp, "growth.db");
  await Deno.remove(path).catch(() => {});
  const store = await FleetStore.open(path);
  try {
    const empty = dbBytes(store);
    const t0 = Date.UTC(2026, 11, 1);
    for (let i = 0; i < hours * 120; i++) {
      storeServerSample(store, "server-1", parseMetrics(metricsOutput(i, 5)), t0 + i * 30_000);
    }
    for (let app = 0; app < 10; app++) {
      storeRequestMinutes(
        store,
        "server-1",
        `app-${app}`,
        Array.from({ length: hours * 60 }, (_, m) => ({
          ts: t0 + m * 60_000,
          requests: 100 + (m % 50),
          errors: m % 7,
          other: 100 + (m % 50) - (m % 7),
          p50: 3.5 + (m % 10) / 10,
          p95: 45.25 + (m % 30),
        })),
      );
    }
    const perDay = 24 / hours;
    const rawBytes = (dbBytes(store) - empty) * perDay;
    downsample(store, t0 + hours * 3_600_000 + RAW_MS + 600_000, 3650);
    const fiveMinuteBytes = (dbBytes(store) - empty) * perDay;
    return { rawBytes, fiveMinuteBytes, steadyBytes: 2 * rawBytes + retentionDays * fiveMinuteBytes, retentionDays };
  } finally {
    store.close();
  }
}

async function benchGrowth(tmp: string): Promise<void> {
  console.log("\n4d. Fleet metrics storage: one server, 5 filesystems, 10 apps, a sample every 30 s");
  const { rawBytes, fiveMinuteBytes, steadyBytes, retentionDays } = await dbGrowth(tmp);
  const kb = (bytes: number) => `${(bytes / 1024).toFixed(0)} KB`;
  console.log(`   raw rows per server per day:       ${kb(rawBytes)} (kept 48 h)`);
  console.log(`   5-minute rows per server per day:  ${kb(fiveMinuteBytes)} (kept ${retentionDays} days)`);
  console.log(
    `   per server at steady state:        ${(steadyBytes / 1024 / 1024).toFixed(1)} MB ` +
      `(2 days raw + ${retentionDays} days of 5-minute rows)`,
  );
}

/** ssh argv (options and host) of host `i` as the collector runs it, over its master connection. */
function sshFor(collector: Collector, i: number): string[] {
  const server = collector.config.servers[i];
  const home = fleetPaths(join(collector.store.path, "..", ".."));
  return [
    ...["-o", "BatchMode=yes", "-o", `ControlPath=${controlPath(home.sockets, server)}`, "-o", "ControlMaster=no"],
    ...["-o", `UserKnownHostsFile=${home.knownHosts}`, "-p", String(server.port), "-l", server.user],
    ...(server.identityFile ? ["-i", server.identityFile] : []),
    server.host,
  ];
}

/** Runs the fleet benchmarks in `tmp`. */
export async function benchFleet(tmp: string): Promise<void> {
  const log = join(tmp, "fleet-access.log");
  await benchIngest(tmp, log);
  await benchSearch(tmp, log);
  await benchCycle(tmp);
  await benchGrowth(tmp);
  await benchCharts(tmp);
}
