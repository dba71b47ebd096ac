/**
 * Reading the metrics the collector keeps (./metric_store.ts writes them): an app's requests over
 * a window (for rules), and chart series in fixed buckets for a {@link Range} (the API serves
 * them as JSON). Raw rows (the last 48 h) and 5-minute rows (older) never overlap, so every query
 * reads both, weighting each row by the raw rows it stands for. Request rows are keyed by the end
 * of their window (a minute, or 5 minutes once averaged): a row counts in the bucket of `ts - 1`.
 * An app's series carries its figures per release: a window is attributed to the release serving
 * at its end, the version of the app's latest successful deployment (or explicit rollback) at or
 * before it; a deploy that failed and was rolled back automatically changes nothing. A server's
 * latest sample (for alert rules and /metrics): ./server_latest.ts.
 * @module
 */
import { latestServerMetrics } from "./server_latest.ts";
import { LINE_AHEAD_MS } from "./server_time.ts";
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

/**
 * An app's requests over [since, now] (the windows from metrics.log that end after `since`, and
 * by `now` + {@link LINE_AHEAD_MS}, the allowance the log rules give a server's clock: a minute
 * dated later, up to a day ahead as requestMinuteOf takes it, would sit in every window until its
 * time came): p95 weighted by requests.
 */
export function appRequestWindow(
  store: FleetStore,
  server: string,
  app: string,
  since: number,
  now: number,
): { requests: number; errors5xx: number; p95Ms: number | null } {
  const row = store.sql(
    `SELECT SUM(requests) AS requests, SUM(errors) AS errors,
       SUM(p95 * requests) / NULLIF(SUM(CASE WHEN p95 IS NULL THEN 0 ELSE requests END), 0) AS p95
     FROM (${REQUEST_ROWS.replaceAll("%", "server = :server AND app = :app")})`,
  ).get({ server, app, from: since, to: now + LINE_AHEAD_MS }) as {
    requests: number | null;
    errors: number | null;
    p95: number | null;
  };
  return { requests: row.requests ?? 0, errors5xx: row.errors ?? 0, p95Ms: row.p95 ?? null };
}

/** A server's chart data. */
export interface ServerSeries extends Span {
  server: string;
  range: Range;
  /** Percent; null = no sample in that bucket. */
  cpu: (number | null)[];
  memory: (number | null)[];
  swap: (number | null)[];
  /** load.1 */
  load: (number | null)[];
  /** Bytes/s. */
  netRx: (number | null)[];
  netTx: (number | null)[];
  /** Percent, per mount point: the {@link MAX_CHART_MOUNTS} fullest, by name. */
  disks: { mount: string; used: (number | null)[]; inodes: (number | null)[] }[];
  /** How many mounts of the range were left out of `disks` (less full). */
  moreMounts?: number;
  missing?: string;
}

/** An app's chart data. */
export interface AppSeries extends Span {
  server: string;
  app: string;
  range: Range;
  /** Requests per minute (average over the bucket; the last one, under way, over the time it has run). */
  requests: (number | null)[];
  /** 0-1. */
  errorRate: (number | null)[];
  /** ms. */
  p50: (number | null)[];
  p95: (number | null)[];
  /** From the deployments table, in range. */
  deploys: { ts: number; version: string | null; outcome: string }[];
  /** Per release that served in the range (its part of it), newest last; see {@link ReleaseFigures}. */
  releases: ReleaseFigures[];
}

/** A release's figures over the part of a range it served. */
export interface ReleaseFigures {
  /** Null: before any known deployment, or the deployment named none. */
  version: string | null;
  /** Epoch ms: when it began serving (or the range's start), and when it stopped (or the range's end). */
  from: number;
  to: number;
  requests: number;
  /** 5xx share, 0-1; null without requests. */
  errorRate: number | null;
  /** ms, weighted by requests; null without any. */
  p95: number | null;
}

/** One app's sparkline in the overview. */
export interface Sparkline {
  server: string;
  app: string;
  requests: (number | null)[];
  errorRate: (number | null)[];
}

/** A chart's buckets: [from, to], bucket starts `ts` (epoch ms, ascending) `stepMs` apart. */
export interface Span {
  from: number;
  to: number;
  stepMs: number;
  ts: number[];
}

/** The buckets of `range` ending at `now`: the first starts at a multiple of the step. */
export function buckets(range: Range, now: number): Span {
  return bucketsOf(RANGES[range].ms, RANGES[range].stepMs, now);
}

function bucketsOf(ms: number, stepMs: number, now: number): Span {
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

/** Mount points a chart shows besides the latest sample's: the ones seen most recently in the range. */
export const MAX_OLD_MOUNTS = 16;

/**
 * Mount points one chart draws at most: the fullest (highest use of space or inodes in the range). Past a dozen lines
 * a chart cannot be read, and each line keeps its own dash and marker (25 looks).
 */
export const MAX_CHART_MOUNTS = 12;

/** The average of column `c` over raw and 5-minute rows, each weighted by the raw rows it stands for. */
function weighted(c: string, as = c): string {
  return `SUM(${c} * n) * 1.0 / NULLIF(SUM(CASE WHEN ${c} IS NULL THEN 0 ELSE n END), 0) AS ${as}`;
}

/**
 * A server's CPU, memory, swap, load, network and disks over `range`: the disks of its latest
 * sample and the {@link MAX_OLD_MOUNTS} others seen most recently in the range.
 */
export function serverSeries(store: FleetStore, server: string, range: Range, now: number): ServerSeries {
  const span = buckets(range, now);
  const latest = latestServerMetrics(store, server);
  const old = store.sql(
    `SELECT mount FROM fs_mounts WHERE server = ? AND last_ts >= ? AND mount NOT IN (SELECT value FROM json_each(?))
     ORDER BY last_ts DESC, mount LIMIT ${MAX_OLD_MOUNTS}`,
  ).all(server, span.from, JSON.stringify(latest?.filesystems.map((f) => f.mount) ?? [])) as { mount: string }[];
  const mounts = [...latest?.filesystems.map((f) => f.mount) ?? [], ...old.map((row) => row.mount)];
  const params = { server, from: span.from, to: now + 1, step: span.stepMs };
  const union = (columns: string, table: string, where = "") =>
    `SELECT ${columns}, 1 AS n FROM ${table} WHERE server = :server AND ts >= :from AND ts < :to ${where}
     UNION ALL SELECT ${columns}, n FROM ${table}_5m WHERE server = :server AND ts >= :from AND ts < :to ${where}`;
  const rows = store.sql(
    `SELECT CAST((ts - :from) / :step AS INTEGER) AS b, ${weighted("cpu")}, ${weighted("memory")},
       ${weighted("swap")}, ${weighted("load1", "load")}, ${weighted("net_rx", "netRx")}, ${weighted("net_tx", "netTx")}
     FROM (${union("ts, cpu, memory, swap, load1, net_rx, net_tx", "server_samples")}) GROUP BY b`,
  ).all(params);
  const series = fill(rows, span.ts.length, ["cpu", "memory", "swap", "load", "netRx", "netTx"] as const);
  const diskRows = store.sql(
    `SELECT mount, CAST((ts - :from) / :step AS INTEGER) AS b, ${weighted("used")}, ${weighted("inodes")}
     FROM (${union("ts, mount, used, inodes", "fs_samples", "AND mount IN (SELECT value FROM json_each(:mounts))")})
     GROUP BY mount, b`,
  ).all({ ...params, mounts: JSON.stringify(mounts) }) as { mount: string }[];
  const byMount = groupBy(diskRows, (row) => row.mount);
  const all = mounts.map((mount) => ({
    mount,
    ...fill(byMount.get(mount) ?? [], span.ts.length, ["used", "inodes"] as const),
  }));
  // Space or inodes: a mount out of either is full.
  const peak = (d: { used: (number | null)[]; inodes: (number | null)[] }) =>
    Math.max(-1, ...d.used.map((v) => v ?? -1), ...d.inodes.map((v) => v ?? -1));
  const disks = all.sort((a, b) => peak(b) - peak(a) || (a.mount < b.mount ? -1 : 1)).slice(0, MAX_CHART_MOUNTS)
    .sort((a, b) => a.mount < b.mount ? -1 : 1);
  const more = all.length - disks.length;
  const missing = latest?.missing;
  return {
    server,
    range,
    ...span,
    ...series,
    disks,
    ...(more ? { moreMounts: more } : {}),
    ...(missing ? { missing } : {}),
  };
}

/** SQL of request rows (raw and 5-minute) whose window ends in (:from, :to], and `%`. */
const REQUEST_ROWS =
  `SELECT server, app, ts, requests, errors, p50, p95 FROM request_minutes WHERE ts > :from AND ts <= :to AND %
   UNION ALL SELECT server, app, ts, requests, errors, p50, p95 FROM request_minutes_5m
   WHERE ts > :from AND ts <= :to AND %`;

/**
 * Requests per minute in the bucket starting at `start`: over its length, or for the last one
 * (under way) over its whole minutes up to `:to` (those whose windows can have ended).
 */
const perMinute = (requests: string, start: string) =>
  `${requests} * 60000.0 / MIN(:step, MAX(60000, CAST((:to - ${start}) / 60000 AS INTEGER) * 60000))`;

/** Per bucket (of the minute `ts - 1`): requests per minute, the 5xx share, p50/p95 weighted by requests. */
const REQUEST_BUCKET = `CAST((ts - 1 - :from) / :step AS INTEGER) AS b,
  ${perMinute("SUM(requests)", ":from + CAST((MIN(ts) - 1 - :from) / :step AS INTEGER) * :step")} AS requests,
  SUM(errors) * 1.0 / NULLIF(SUM(requests), 0) AS errorRate,
  SUM(p50 * requests) / NULLIF(SUM(CASE WHEN p50 IS NULL THEN 0 ELSE requests END), 0) AS p50,
  SUM(p95 * requests) / NULLIF(SUM(CASE WHEN p95 IS NULL THEN 0 ELSE requests END), 0) AS p95`;

/** An app's requests, error rate and latency over `range`, with its deployments and per-release figures. */
export function appSeries(store: FleetStore, server: string, app: string, range: Range, now: number): AppSeries {
  const span = buckets(range, now);
  const where = "server = :server AND app = :app";
  const params = { server, app, from: span.from, to: now, step: span.stepMs };
  const rows = store.sql(`SELECT ${REQUEST_BUCKET} FROM (${REQUEST_ROWS.replaceAll("%", where)}) GROUP BY b`)
    .all(params);
  const series = fill(rows, span.ts.length, ["requests", "errorRate", "p50", "p95"] as const);
  const all = deployments(store, server, app);
  const deploys = all.filter((d) => d.ts >= span.from && d.ts <= now)
    .map(({ ts, version, outcome }) => ({ ts, version, outcome }));
  const windows = store.sql(REQUEST_ROWS.replaceAll("%", where) + " ORDER BY ts")
    .all({ server, app, from: span.from, to: now }) as RequestRow[];
  return { server, app, range, ...span, ...series, deploys, releases: releases(all, windows, span.from, now) };
}

/** Deployments of an app shown or attributed at most. */
const MAX_DEPLOYS = 1000;

type Deployment = { ts: number; version: string | null; outcome: string; step: string | null };
type RequestRow = { ts: number; requests: number; errors: number; p95: number | null };

/** An app's deployments (the newest {@link MAX_DEPLOYS}), oldest first, with their time as epoch ms. */
function deployments(store: FleetStore, server: string, app: string): Deployment[] {
  const rows = store.sql(
    `SELECT at, version, outcome, step FROM deployments WHERE server = ? AND app = ? ORDER BY id DESC
     LIMIT ${MAX_DEPLOYS}`,
  ).all(server, app) as { at: string; version: string | null; outcome: string; step: string | null }[];
  return rows.map((row) => ({ ...row, ts: Date.parse(row.at) }))
    .filter((row) => Number.isFinite(row.ts))
    .sort((a, b) => a.ts - b.ts);
}

/**
 * Whether a deployment changed the version serving: a success, or an explicit rollback (`rolled_back`
 * without a failing step). A deploy that failed after the switch is written `rolled_back` with its
 * step and the failed release's commit: the version before it serves again.
 */
function changesServing(d: Deployment): boolean {
  return d.outcome === "success" || d.outcome === "rolled_back" && d.step === null;
}

/**
 * The figures of each release that served in [from, to] (`windows`: request rows in it, by their
 * end, ascending): a window goes to the release of the latest serving deployment at or before its end.
 */
function releases(all: readonly Deployment[], windows: readonly RequestRow[], from: number, to: number) {
  const serving = all.filter(changesServing);
  const first = serving.findLastIndex((d) => d.ts <= from);
  const periods = [first >= 0 ? serving[first] : undefined, ...serving.filter((d) => d.ts > from && d.ts <= to)]
    .map((d, i, list) => ({
      version: d?.version ?? null,
      from: Math.max(from, d?.ts ?? from),
      to: list[i + 1]?.ts ?? to,
      requests: 0,
      errors: 0,
      weight: 0,
      sum: 0,
    }));
  let p = 0;
  for (const row of windows) {
    while (p + 1 < periods.length && periods[p + 1].from <= row.ts) p++;
    const period = periods[p];
    period.requests += row.requests;
    period.errors += row.errors;
    if (row.p95 !== null) {
      period.weight += row.requests;
      period.sum += row.p95 * row.requests;
    }
  }
  // The time before the first deployment known, when nothing was served in it, is no release.
  return periods.filter((p) => p.version !== null || p.requests > 0).map((
    { version, from, to, requests, errors, weight, sum },
  ): ReleaseFigures => ({
    version,
    from,
    to,
    requests,
    errorRate: requests ? round(errors / requests) : null,
    p95: weight ? round(sum / weight) : null,
  }));
}

/**
 * The sparklines' steps: per minute over an hour; longer ranges read the rollups of the same step
 * (./metric_store.ts ROLLUP_STEPS: a sparkline is small, 24 to 60 points), one row per bucket.
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
  // Raw minutes: each server's range of the key (the tables' keys start with (server, ts)); rollups: a range of
  // (step, ts), one row per bucket.
  const rows = store.sql(
    range === "1h"
      ? `SELECT server, app, ${REQUEST_BUCKET}
         FROM (${REQUEST_ROWS.replaceAll("%", "server IN (SELECT DISTINCT server FROM apps)")}) GROUP BY server, app, b`
      : `SELECT server, app, (ts - :from) / :step AS b, ${perMinute("requests", "ts")} AS requests,
           errors * 1.0 / NULLIF(requests, 0) AS errorRate
         FROM request_rollups WHERE step = :step AND ts >= :from AND ts <= :to`,
  ).all({ from: span.from, to: now, step: span.stepMs }) as { server: string; app: string }[];
  const byApp = groupBy(rows, (row) => `${row.server}\n${row.app}`);
  return apps.map(({ server, app }) => ({
    server,
    app,
    ...fill(byApp.get(`${server}\n${app}`) ?? [], span.ts.length, ["requests", "errorRate"] as const),
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
