/**
 * Reading the metrics the collector keeps (./metric_store.ts writes them): a server's latest
 * sample (for alert rules and /metrics), an app's requests over a window (for rules), and chart
 * series in fixed buckets for a {@link Range} (the API serves them as JSON). Raw rows (the last
 * 48 h) and 5-minute rows (older) never overlap, so every query reads both. Requests are
 * attributed to the release serving then: the version of the app's latest successful (or
 * rolled-back-to) deployment at or before the minute.
 * @module
 */
import type { FleetStore } from "./store.ts";

export type Range = "1h" | "24h" | "7d" | "30d";

/** Each range's span and bucket. */
export const RANGES: Record<Range, { ms: number; stepMs: number }> = {
  "1h": { ms: 3_600_000, stepMs: 60_000 },
  "24h": { ms: 86_400_000, stepMs: 600_000 },
  "7d": { ms: 7 * 86_400_000, stepMs: 3_600_000 },
  "30d": { ms: 30 * 86_400_000, stepMs: 4 * 3_600_000 },
};

/** Whether `value` names a range. */
export function isRange(value: unknown): value is Range {
  return typeof value === "string" && Object.hasOwn(RANGES, value);
}

/** The latest sample of a server. */
export interface ServerLatest {
  /** Epoch ms of the sample. */
  ts: number;
  /** Server-wide metric name (./server_metrics.ts) → value. */
  values: Record<string, number>;
  /** disk.* per mount point. */
  filesystems: { mount: string; values: Record<string, number> }[];
  /** What could not be read, e.g. "no /proc on this host". */
  missing?: string;
}

/** The server-wide columns of server_samples and their metric names. */
export const SERVER_COLUMNS = {
  cpu: "cpu.percent",
  load1: "load.1",
  load5: "load.5",
  load15: "load.15",
  load_per_core: "load.per_core",
  memory: "memory.used_percent",
  swap: "swap.used_percent",
  net_rx: "net.rx_bytes_per_s",
  net_tx: "net.tx_bytes_per_s",
  uptime: "uptime.seconds",
} as const;

type SampleRow = Record<keyof typeof SERVER_COLUMNS, number | null> & { ts: number; missing: string | null };

/** The latest sample of `server`; undefined when none. */
export function latestServerMetrics(store: FleetStore, server: string): ServerLatest | undefined {
  const row = store.sql(
    `SELECT * FROM (SELECT * FROM server_samples WHERE server = ? ORDER BY ts DESC LIMIT 1)
     UNION ALL SELECT * FROM (SELECT * FROM server_samples_5m WHERE server = ? ORDER BY ts DESC LIMIT 1)
     ORDER BY ts DESC LIMIT 1`,
  ).get(server, server) as SampleRow | undefined;
  if (!row) return undefined;
  const values: Record<string, number> = {};
  for (const [column, name] of Object.entries(SERVER_COLUMNS)) {
    const value = row[column as keyof typeof SERVER_COLUMNS];
    if (typeof value === "number" && Number.isFinite(value)) values[name] = value;
  }
  const table = rawHas(store, "fs_samples", server, row.ts) ? "fs_samples" : "fs_samples_5m";
  const disks = store.sql(`SELECT mount, used, inodes FROM ${table} WHERE server = ? AND ts = ? ORDER BY mount`)
    .all(server, row.ts) as { mount: string; used: number | null; inodes: number | null }[];
  const filesystems = disks.map((d) => {
    const v: Record<string, number> = {};
    if (d.used !== null) v["disk.used_percent"] = d.used;
    if (d.inodes !== null) v["disk.inodes_used_percent"] = d.inodes;
    return { mount: d.mount, values: v };
  });
  return { ts: row.ts, values, filesystems, ...(row.missing ? { missing: row.missing } : {}) };
}

function rawHas(store: FleetStore, table: string, server: string, ts: number): boolean {
  return store.sql(`SELECT 1 FROM ${table} WHERE server = ? AND ts = ? LIMIT 1`).get(server, ts) !== undefined;
}

/** An app's requests over [since, now] (minutes from metrics.log): p95 weighted by requests. */
export function appRequestWindow(
  store: FleetStore,
  server: string,
  app: string,
  since: number,
): { requests: number; errors5xx: number; p95Ms: number | null } {
  const row = store.sql(
    `SELECT SUM(requests) AS requests, SUM(errors) AS errors,
       SUM(p95 * requests) / NULLIF(SUM(CASE WHEN p95 IS NULL THEN 0 ELSE requests END), 0) AS p95
     FROM (SELECT requests, errors, p95 FROM request_minutes WHERE server = :server AND app = :app AND ts >= :since
       UNION ALL SELECT requests, errors, p95 FROM request_minutes_5m
       WHERE server = :server AND app = :app AND ts >= :since)`,
  ).get({ server, app, since }) as { requests: number | null; errors: number | null; p95: number | null };
  return { requests: row.requests ?? 0, errors5xx: row.errors ?? 0, p95Ms: row.p95 ?? null };
}

/** A server's chart data. */
export interface ServerSeries {
  server: string;
  range: Range;
  from: number;
  to: number;
  stepMs: number;
  /** Bucket starts, epoch ms, ascending. */
  ts: number[];
  /** Percent; null = no sample in that bucket. */
  cpu: (number | null)[];
  memory: (number | null)[];
  swap: (number | null)[];
  /** load.1 */
  load: (number | null)[];
  /** Bytes/s. */
  netRx: (number | null)[];
  netTx: (number | null)[];
  /** Percent, per mount point. */
  disks: { mount: string; used: (number | null)[]; inodes: (number | null)[] }[];
  missing?: string;
}

/** An app's chart data. */
export interface AppSeries {
  server: string;
  app: string;
  range: Range;
  from: number;
  to: number;
  stepMs: number;
  ts: number[];
  /** Requests per minute (average over the bucket; the last one, under way, over the time it has run). */
  requests: (number | null)[];
  /** 0-1. */
  errorRate: (number | null)[];
  /** ms. */
  p50: (number | null)[];
  p95: (number | null)[];
  /** From the deployments table, in range. */
  deploys: { ts: number; version: string | null; outcome: string }[];
}

/** One app's sparkline in the overview. */
export interface Sparkline {
  server: string;
  app: string;
  requests: (number | null)[];
  errorRate: (number | null)[];
}

/** The buckets of `range` ending at `now`: the first starts at a multiple of the step. */
export function buckets(range: Range, now: number): { from: number; to: number; stepMs: number; ts: number[] } {
  return bucketsOf(RANGES[range].ms, RANGES[range].stepMs, now);
}

function bucketsOf(ms: number, stepMs: number, now: number) {
  const from = Math.floor((now - ms) / stepMs) * stepMs + stepMs;
  const ts: number[] = [];
  for (let t = from; t <= now; t += stepMs) ts.push(t);
  return { from, to: now, stepMs, ts };
}

/** Bucket rows `{b, …}` (b = bucket index) into arrays of `count` (null where no row), per column. */
function fill<K extends string>(
  rows: readonly Record<string, unknown>[],
  count: number,
  columns: readonly K[],
): Record<K, (number | null)[]> {
  const out = Object.fromEntries(columns.map((c) => [c, new Array(count).fill(null)])) as Record<
    K,
    (number | null)[]
  >;
  for (const row of rows) {
    const b = row.b as number;
    if (!(b >= 0 && b < count)) continue;
    for (const c of columns) {
      const value = row[c];
      out[c][b] = typeof value === "number" && Number.isFinite(value) ? round(value) : null;
    }
  }
  return out;
}

/** Chart values keep 4 significant decimals (smaller JSON). */
function round(value: number): number {
  return Math.round(value * 1e4) / 1e4;
}

/** A server's CPU, memory, swap, load, network and disks over `range`. */
export function serverSeries(store: FleetStore, server: string, range: Range, now: number): ServerSeries {
  const span = buckets(range, now);
  const params = { server, from: span.from, to: now + 1, step: span.stepMs };
  const union = (columns: string, table: string) =>
    `SELECT ${columns} FROM ${table} WHERE server = :server AND ts >= :from AND ts < :to
     UNION ALL SELECT ${columns} FROM ${table}_5m WHERE server = :server AND ts >= :from AND ts < :to`;
  const rows = store.sql(
    `SELECT CAST((ts - :from) / :step AS INTEGER) AS b, AVG(cpu) AS cpu, AVG(memory) AS memory, AVG(swap) AS swap,
       AVG(load1) AS load, AVG(net_rx) AS netRx, AVG(net_tx) AS netTx
     FROM (${union("ts, cpu, memory, swap, load1, net_rx, net_tx", "server_samples")}) GROUP BY b`,
  ).all(params);
  const series = fill(rows, span.ts.length, ["cpu", "memory", "swap", "load", "netRx", "netTx"] as const);
  const diskRows = store.sql(
    `SELECT mount, CAST((ts - :from) / :step AS INTEGER) AS b, AVG(used) AS used, AVG(inodes) AS inodes
     FROM (${union("ts, mount, used, inodes", "fs_samples")}) GROUP BY mount, b ORDER BY mount`,
  ).all(params) as { mount: string }[];
  const byMount = groupBy(diskRows, (row) => row.mount);
  const disks = [...byMount].map(([mount, list]) => ({
    mount,
    ...fill(list, span.ts.length, ["used", "inodes"] as const),
  }));
  const missing = latestServerMetrics(store, server)?.missing;
  return { server, range, ...span, ...series, disks, ...(missing ? { missing } : {}) };
}

/** SQL of an app's request rows (raw and 5-minute) in [:from, :to). */
const REQUEST_ROWS =
  `SELECT server, app, ts, requests, errors, p50, p95 FROM request_minutes WHERE ts >= :from AND ts < :to AND %
   UNION ALL SELECT server, app, ts, requests, errors, p50, p95 FROM request_minutes_5m
   WHERE ts >= :from AND ts < :to AND %`;

/**
 * Requests per minute in a bucket: over its length, or for the last one (under way) over the time
 * it has run, up to the end of the minute at `:to`.
 */
const PER_MINUTE =
  "SUM(requests) * 60000.0 / MIN(:step, :to + 59999 - (:from + CAST((MIN(ts) - :from) / :step AS INTEGER) * :step))";

/** Per bucket: requests per minute, the 5xx share, p50/p95 weighted by requests. */
const REQUEST_BUCKET = `CAST((ts - :from) / :step AS INTEGER) AS b,
  ${PER_MINUTE} AS requests,
  SUM(errors) * 1.0 / NULLIF(SUM(requests), 0) AS errorRate,
  SUM(p50 * requests) / NULLIF(SUM(CASE WHEN p50 IS NULL THEN 0 ELSE requests END), 0) AS p50,
  SUM(p95 * requests) / NULLIF(SUM(CASE WHEN p95 IS NULL THEN 0 ELSE requests END), 0) AS p95`;

/** An app's requests, error rate and latency over `range`, with its deployments. */
export function appSeries(store: FleetStore, server: string, app: string, range: Range, now: number): AppSeries {
  const span = buckets(range, now);
  const where = "server = :server AND app = :app";
  const rows = store.sql(`SELECT ${REQUEST_BUCKET} FROM (${REQUEST_ROWS.replaceAll("%", where)}) GROUP BY b`)
    .all({ server, app, from: span.from, to: now + 1, step: span.stepMs });
  const series = fill(rows, span.ts.length, ["requests", "errorRate", "p50", "p95"] as const);
  const deploys = deployments(store, server, app)
    .filter((d) => d.ts >= span.from && d.ts <= now)
    .map(({ ts, version, outcome }) => ({ ts, version, outcome }));
  return { server, app, range, ...span, ...series, deploys };
}

/** Deployments of an app shown or attributed at most. */
const MAX_DEPLOYS = 1000;

/** An app's deployments (the newest {@link MAX_DEPLOYS}), oldest first, with their time as epoch ms. */
function deployments(store: FleetStore, server: string, app: string) {
  const rows = store.sql(
    `SELECT at, version, outcome FROM deployments WHERE server = ? AND app = ? ORDER BY id DESC LIMIT ${MAX_DEPLOYS}`,
  ).all(server, app) as { at: string; version: string | null; outcome: string }[];
  return rows.map((row) => ({ ...row, ts: Date.parse(row.at) }))
    .filter((row) => Number.isFinite(row.ts))
    .sort((a, b) => a.ts - b.ts);
}

/** One release's requests in a window (see {@link appReleaseWindows}). */
export interface ReleaseRequests {
  /** The version serving (null: before any known deployment, or the deployment named none). */
  version: string | null;
  /** When it began serving (epoch ms; null: before the first known deployment). */
  since: number | null;
  requests: number;
  errors5xx: number;
  errorRate: number | null;
  p95Ms: number | null;
}

/**
 * An app's requests over [since, now] split by the release that served them: each minute goes to
 * the version of the latest deployment that succeeded (or rolled back to it) at or before it.
 */
export function appReleaseWindows(store: FleetStore, server: string, app: string, since: number): ReleaseRequests[] {
  const serving = deployments(store, server, app).filter((d) => d.outcome === "success" || d.outcome === "rolled_back");
  const rows = store.sql(REQUEST_ROWS.replaceAll("%", "server = :server AND app = :app") + " ORDER BY ts").all({
    server,
    app,
    from: since,
    to: Number.MAX_SAFE_INTEGER,
  }) as { ts: number; requests: number; errors: number; p95: number | null }[];
  const out: (ReleaseRequests & { weight: number; sum: number })[] = [];
  let d = -1;
  for (const row of rows) {
    while (d + 1 < serving.length && serving[d + 1].ts <= row.ts) d++;
    const version = d >= 0 ? serving[d].version : null;
    const start = d >= 0 ? serving[d].ts : null;
    let last = out[out.length - 1];
    if (!last || last.since !== start) {
      last = { version, since: start, requests: 0, errors5xx: 0, errorRate: null, p95Ms: null, weight: 0, sum: 0 };
      out.push(last);
    }
    last.requests += row.requests;
    last.errors5xx += row.errors;
    if (row.p95 !== null) {
      last.weight += row.requests;
      last.sum += row.p95 * row.requests;
    }
  }
  return out.map(({ weight, sum, ...r }) => ({
    ...r,
    errorRate: r.requests ? r.errors5xx / r.requests : null,
    p95Ms: weight ? sum / weight : null,
  }));
}

/**
 * The sparklines' steps: per minute over an hour; longer ranges read the hourly sums (a sparkline
 * is small: 24 to 60 points), so the overview of 1,000 apps reads at most 720 k rows.
 */
export const SPARKLINE_STEPS: Record<Range, number> = {
  "1h": 60_000,
  "24h": 3_600_000,
  "7d": 4 * 3_600_000,
  "30d": 12 * 3_600_000,
};

/** Sparklines (requests per minute, error rate) of every app the fleet knows, in one query, in {@link SPARKLINE_STEPS}. */
export function overviewSparklines(store: FleetStore, range: Range, now: number): Sparkline[] {
  const span = bucketsOf(RANGES[range].ms, SPARKLINE_STEPS[range], now);
  const apps = store.sql("SELECT server, app FROM apps ORDER BY server, app").all() as {
    server: string;
    app: string;
  }[];
  // Each server's range of the key (the tables' keys start with (server, ts)).
  const servers = "server IN (SELECT DISTINCT server FROM apps)";
  const rows = store.sql(
    range === "1h"
      ? `SELECT server, app, ${REQUEST_BUCKET} FROM (${REQUEST_ROWS.replaceAll("%", servers)}) GROUP BY server, app, b`
      : `SELECT server, app, CAST((ts - :from) / :step AS INTEGER) AS b, ${PER_MINUTE} AS requests,
           SUM(errors) * 1.0 / NULLIF(SUM(requests), 0) AS errorRate
         FROM request_hours WHERE ${servers} AND ts >= :from AND ts < :to GROUP BY server, app, b`,
  ).all({ from: span.from, to: now + 1, step: span.stepMs }) as { server: string; app: string }[];
  const byApp = groupBy(rows, (row) => JSON.stringify([row.server, row.app]));
  return apps.map(({ server, app }) => ({
    server,
    app,
    ...fill(byApp.get(JSON.stringify([server, app])) ?? [], span.ts.length, ["requests", "errorRate"] as const),
  }));
}

function groupBy<T>(rows: readonly T[], key: (row: T) => string): Map<string, T[]> {
  const groups = new Map<string, T[]>();
  for (const row of rows) {
    const k = key(row);
    const list = groups.get(k);
    if (list) list.push(row);
    else groups.set(k, [row]);
  }
  return groups;
}
