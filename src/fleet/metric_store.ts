/**
 * Keeping metrics in the fleet database (tables of migration 6, ./migrations.ts): a server's
 * samples ({@link storeServerSample}, with the raw counters the next sample's deltas need kept per
 * server, so one `fleet collect --once` per process works too, and the mount points it showed,
 * at most {@link MAX_MOUNTS_PER_DAY} new ones a day), an app's request minutes from the proxy's
 * metrics.log ({@link requestMinuteOf}, {@link storeRequestMinutes}: keyed by the exact end of
 * their window, so a line read again replaces its row and a partial window (the proxy stopped)
 * adds to its minute), and their downsampling ({@link downsample}): rows older than 48 h become
 * 5-minute averages (request counts summed, latencies weighted by requests), kept for the
 * retention period, as are the request counts summed per 1, 4 and 12 hours (the overview's
 * sparklines, {@link ROLLUP_STEPS}) as minutes come. ./series.ts reads them.
 * @module
 */
import { jsonObjectOf } from "./json_line.ts";
import { capText, FIELD } from "./limits.ts";
import type { RawMetrics } from "./server_metrics.ts";
import { type Previous, type Sample, sampleOf } from "./server_sample.ts";
import { SERVER_COLUMNS } from "./server_latest.ts";
import { zonedTime } from "./server_time.ts";
import type { FileLedger, FleetStore, LogLine } from "./store.ts";

/** How long raw rows are kept before they are averaged into 5-minute rows. */
export const RAW_MS = 48 * 3_600_000;
/** The downsampled rows' bucket. */
export const BUCKET_MS = 5 * 60_000;
/** New mount points a server may show in a day (more: not kept; a chart shows what is kept). */
export const MAX_MOUNTS_PER_DAY = 128;
const DAY_MS = 86_400_000;

/**
 * Computes `server`'s sample of `raw` read at `ts` against its previous counters (no rates after a
 * gap over `maxGapMs`), and stores both.
 */
export function storeServerSample(
  store: FleetStore,
  server: string,
  raw: RawMetrics,
  ts: number,
  maxGapMs?: number,
): Sample {
  const before = store.sql(
    `SELECT ts, cpu_busy AS cpuBusy, cpu_total AS cpuTotal, net_rx AS netRx, net_tx AS netTx, uptime
     FROM server_counters WHERE server = ?`,
  ).get(server) as (Record<string, number | null> & { ts: number }) | undefined;
  const previous: Previous | undefined = before && {
    ts: before.ts,
    counters: Object.fromEntries(Object.entries(before).filter(([k, v]) => k !== "ts" && v !== null)),
  };
  const sample = sampleOf(raw, ts, previous, maxGapMs);
  const columns = Object.keys(SERVER_COLUMNS);
  const values = Object.fromEntries(
    Object.entries(SERVER_COLUMNS).map(([column, name]) => [column, sample.values[name] ?? null]),
  );
  store.transaction(() => {
    const filesystems = keptMounts(store, server, sample.filesystems, ts);
    if (filesystems.length < sample.filesystems.length) {
      const over = `${sample.filesystems.length - filesystems.length} new mount point(s) over the ` +
        `${MAX_MOUNTS_PER_DAY} a server may show in a day: not kept`;
      sample.missing = sample.missing ? `${sample.missing}; ${over}` : over;
    }
    store.sql(
      `INSERT OR REPLACE INTO server_samples (server, ts, ${columns.join(", ")}, missing)
       VALUES (:server, :ts, ${columns.map((c) => `:${c}`).join(", ")}, :missing)`,
    ).run({ server, ts, ...values, missing: capText(sample.missing, FIELD.message) });
    const fs = store.sql("INSERT OR REPLACE INTO fs_samples (server, ts, mount, used, inodes) VALUES (?, ?, ?, ?, ?)");
    for (const f of filesystems) {
      fs.run(
        server,
        ts,
        capText(f.mount, FIELD.short)!,
        f.values["disk.used_percent"] ?? null,
        f.values["disk.inodes_used_percent"] ?? null,
      );
    }
    const c = sample.counters;
    store.sql(
      `INSERT OR REPLACE INTO server_counters (server, ts, cpu_busy, cpu_total, net_rx, net_tx, uptime)
       VALUES (?, ?, ?, ?, ?, ?, ?)`,
    ).run(server, ts, c.cpuBusy ?? null, c.cpuTotal ?? null, c.netRx ?? null, c.netTx ?? null, c.uptime ?? null);
  });
  return sample;
}

/**
 * The filesystems of a sample whose mount points may be kept: those seen in the last day (their
 * last sight moved), and new ones while fewer than {@link MAX_MOUNTS_PER_DAY} were.
 */
function keptMounts(store: FleetStore, server: string, filesystems: Sample["filesystems"], ts: number) {
  const seen = store.sql("UPDATE fs_mounts SET last_ts = MAX(last_ts, ?) WHERE server = ? AND mount = ?");
  const add = store.sql("INSERT INTO fs_mounts (server, mount, last_ts) VALUES (?, ?, ?)");
  let recent: number | undefined;
  return filesystems.filter((f) => {
    const mount = capText(f.mount, FIELD.short)!;
    if (Number(seen.run(ts, server, mount).changes)) return true;
    recent ??= (store.sql("SELECT COUNT(*) AS n FROM fs_mounts WHERE server = ? AND last_ts >= ?")
      .get(server, ts - DAY_MS) as { n: number }).n;
    if (recent >= MAX_MOUNTS_PER_DAY) return false;
    add.run(server, mount, ts);
    recent++;
    return true;
  });
}

/** One window (normally a minute) of an app's requests, from a line of its metrics.log. */
export interface RequestMinute {
  /** The window's end, epoch ms (the line's `ts`): its minute is the one of `ts - 1`. */
  ts: number;
  requests: number;
  /** 5xx responses. */
  errors: number;
  /** Responses of any other status. */
  other: number;
  p50: number | null;
  p95: number | null;
}

/** Counts above this are not real (a billion requests a minute). */
const MAX_COUNT = 1e9;
/** Latencies above this many ms (a day) are not real. */
const MAX_MS = 86_400_000;

const count = (value: unknown) =>
  typeof value === "number" && Number.isFinite(value) && value >= 0 && value <= MAX_COUNT
    ? Math.round(value)
    : undefined;
const ms = (value: unknown) =>
  typeof value === "number" && Number.isFinite(value) && value >= 0 && value <= MAX_MS ? value : null;

/**
 * The request window of a metrics.log line (../proxy/metrics.ts's takeMinute: `{ts, app, requests,
 * status: {"2xx": n, "5xx": n…}, p50_ms, p95_ms…}`, `ts` the window's end), or undefined when it
 * is not one. Hostile input: `ts` must be an ISO time with its zone, after 2000 and at most a day
 * after `now` (./server_time.ts); counts whole, ≥ 0 and sane, 5xx at most the requests and the other statuses at most
 * the rest; latencies finite (else null).
 */
export function requestMinuteOf(line: LogLine, now: number): RequestMinute | undefined {
  const r = jsonObjectOf(line.text);
  if (!r) return undefined;
  const ts = zonedTime(r.ts, now);
  if (ts === undefined) return undefined;
  const requests = count(r.requests);
  if (requests === undefined) return undefined;
  let errors = 0;
  let other = 0;
  if (r.status !== null && typeof r.status === "object" && !Array.isArray(r.status)) {
    for (const [cls, n] of Object.entries(r.status as Record<string, unknown>).slice(0, 16)) {
      const c = count(n) ?? 0;
      if (cls === "5xx") errors += c;
      else other += c;
    }
  }
  errors = Math.min(errors, requests);
  return {
    ts,
    requests,
    errors,
    other: Math.min(other, requests - errors),
    p50: ms(r.p50_ms),
    p95: ms(r.p95_ms),
  };
}

/** The rollups' steps: sums of requests and 5xx per 1, 4 and 12 hours (the sparklines of 24 h, 7 d and 30 d). */
export const ROLLUP_STEPS = [3_600_000, 4 * 3_600_000, 12 * 3_600_000] as const;

/**
 * Stores an app's request windows, keyed by their end: a window seen again (the same line ingested
 * twice, or read again after a crash) replaces its row and counts once; a window whose 5-minute
 * bucket was averaged already (a line older than 48 h read again) is dropped. The rollups get the
 * difference each row made. With `ledger`, it is saved in the same transaction.
 */
export function storeRequestMinutes(
  store: FleetStore,
  server: string,
  app: string,
  minutes: RequestMinute[],
  ledger?: FileLedger,
): void {
  const before = store.sql("SELECT requests, errors FROM request_minutes WHERE server = ? AND ts = ? AND app = ?");
  const averaged = store.sql("SELECT 1 FROM request_minutes_5m WHERE server = ? AND ts = ? AND app = ?");
  const insert = store.sql(
    `INSERT OR REPLACE INTO request_minutes (server, app, ts, requests, errors, other, p50, p95)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
  );
  const rollup = store.sql(
    `INSERT INTO request_rollups (step, ts, server, app, requests, errors) VALUES (?, ?, ?, ?, ?, ?)
     ON CONFLICT DO UPDATE SET requests = requests + excluded.requests, errors = errors + excluded.errors`,
  );
  let since = storedSince.get(store);
  if (!since) storedSince.set(store, since = new Map());
  since.set(server, (since.get(server) ?? 0) + minutes.length);
  store.transaction(() => {
    for (const m of minutes) {
      if (averaged.get(server, bucketEnd(m.ts), app)) continue;
      const old = before.get(server, m.ts, app) as { requests: number; errors: number } | undefined;
      insert.run(server, app, m.ts, m.requests, m.errors, m.other, m.p50, m.p95);
      const [requests, errors] = [m.requests - (old?.requests ?? 0), m.errors - (old?.errors ?? 0)];
      if (!requests && !errors) continue;
      for (const step of ROLLUP_STEPS) {
        rollup.run(step, Math.floor((m.ts - 1) / step) * step, server, app, requests, errors);
      }
    }
    if (ledger) store.saveLedger(ledger);
  });
}

/**
 * Request rows a server may keep, each table (the newest by time): enough for about 50 apps with
 * traffic every minute over 48 h raw and 30 days of 5-minute rows and rollups. App names and times
 * come from the server's metrics.log, so one that makes up new ones would otherwise grow them
 * without end (and the charts' queries with them).
 */
export const MAX_REQUEST_ROWS = { request_minutes: 150_000, request_minutes_5m: 450_000, request_rollups: 60_000 };
/**
 * Request windows a server may store before its caps are checked at once, after its cycle (else
 * at the next 5-minute downsampling, for the servers that stored any).
 */
export const CAP_CHECK_MINUTES = 1_000;

/** Request windows stored per server since its caps were last checked (only those servers are checked). */
const storedSince = new WeakMap<FleetStore, Map<string, number>>();

/** Request windows `server` stored since its caps were last checked. */
export function storedSinceCheck(store: FleetStore, server: string): number {
  return storedSince.get(store)?.get(server) ?? 0;
}

/**
 * Removes `server`'s oldest request rows beyond {@link MAX_REQUEST_ROWS}, each table. Returns how
 * many. Its cost is the rows it walks (up to the caps), so it runs for servers that stored some.
 */
export function capRequestRows(store: FleetStore, server: string): number {
  storedSince.get(store)?.delete(server);
  let removed = 0;
  store.transaction(() => {
    for (const [table, cap] of Object.entries(MAX_REQUEST_ROWS)) {
      const cut = store.sql(`SELECT ts FROM ${table} WHERE server = ? ORDER BY ts DESC LIMIT 1 OFFSET ?`)
        .get(server, cap) as { ts: number } | undefined;
      if (cut) {
        removed += Number(store.sql(`DELETE FROM ${table} WHERE server = ? AND ts <= ?`).run(server, cut.ts).changes);
      }
    }
  });
  return removed;
}

/** The key of the 5-minute row a request window ending at `end` is averaged into: that bucket's end. */
function bucketEnd(end: number): number {
  return Math.floor((end - 1) / BUCKET_MS) * BUCKET_MS + BUCKET_MS;
}

/**
 * The tables downsampled: their key columns, how each value column is combined, and whether `ts`
 * is the end of what a row counts (request windows: their 5-minute rows are keyed by the bucket's
 * end too, so every query reads both alike).
 */
const TABLES: { raw: string; keys: string[]; avg: string[]; sum: string[]; weighted: string[]; end?: true }[] = [
  { raw: "server_samples", keys: ["server"], avg: Object.keys(SERVER_COLUMNS), sum: [], weighted: [] },
  { raw: "fs_samples", keys: ["server", "mount"], avg: ["used", "inodes"], sum: [], weighted: [] },
  {
    raw: "request_minutes",
    keys: ["server", "app"],
    avg: [],
    sum: ["requests", "errors", "other"],
    weighted: ["p50", "p95"],
    end: true,
  },
];

/** The bucket up to which each store was last downsampled (once per bucket is enough). */
const done = new WeakMap<FleetStore, number>();

/** The servers with rows in `table`, one index seek each (its key starts with the server). */
function serversIn(store: FleetStore, table: string): string[] {
  const rows = store.sql(
    `WITH RECURSIVE s(server) AS (
       SELECT MIN(server) FROM ${table}
       UNION ALL SELECT (SELECT MIN(server) FROM ${table} WHERE server > s.server) FROM s WHERE s.server IS NOT NULL
     ) SELECT server FROM s WHERE server IS NOT NULL`,
  ).all() as { server: string }[];
  return rows.map((row) => row.server);
}

/** How a value column of a 5-minute row is merged with a late one (`excluded`). */
function merge(c: string, how: "avg" | "sum" | "weighted"): string {
  if (how === "sum") return `${c} = ${c} + excluded.${c}`;
  const weight = how === "avg" ? "n" : "requests"; // rows averaged, or requests (a null side does not count)
  return `${c} = CASE WHEN ${c} IS NULL THEN excluded.${c} WHEN excluded.${c} IS NULL THEN ${c}
    ELSE (${c} * ${weight} + excluded.${c} * excluded.${weight}) * 1.0 / NULLIF(${weight} + excluded.${weight}, 0) END`;
}

/** The statement that averages a server's raw rows before :cutoff into 5-minute rows of `t`. */
function averageSql(t: typeof TABLES[number]): string {
  const keys = t.keys.join(", ");
  const columns = [...t.avg, ...t.sum, ...t.weighted];
  const select = [
    ...t.avg.map((c) => `AVG(${c})`),
    ...t.sum.map((c) => `SUM(${c})`),
    ...t.weighted.map((c) =>
      `SUM(${c} * requests) * 1.0 / NULLIF(SUM(CASE WHEN ${c} IS NULL THEN 0 ELSE requests END), 0)`
    ),
  ];
  const missing = t.raw === "server_samples";
  // In an upsert's SET, every column reads the row as it was: the weights are the old ones.
  const sets = [
    ...t.avg.map((c) => merge(c, "avg")),
    ...t.sum.map((c) => merge(c, "sum")),
    ...t.weighted.map((c) => merge(c, "weighted")),
    ...missing ? ["missing = excluded.missing"] : [],
    "n = n + excluded.n",
  ];
  const bucket = t.end
    ? `((ts - 1) / ${BUCKET_MS}) * ${BUCKET_MS} + ${BUCKET_MS}`
    : `(ts / ${BUCKET_MS}) * ${BUCKET_MS}`;
  return `INSERT INTO ${t.raw}_5m (${keys}, ts, ${columns.join(", ")}${missing ? ", missing" : ""}, n)
    SELECT ${keys}, ${bucket} AS bucket, ${select.join(", ")}
      ${missing ? ", MAX(missing)" : ""}, COUNT(*)
    FROM ${t.raw} WHERE server = :server AND ${before(t)} GROUP BY ${keys}, bucket
    ON CONFLICT DO UPDATE SET ${sets.join(", ")}`;
}

/** The raw rows of `t` in buckets before :cutoff. */
function before(t: typeof TABLES[number]): string {
  return t.end ? "ts <= :cutoff" : "ts < :cutoff";
}

/**
 * Averages the raw rows of complete 5-minute buckets older than {@link RAW_MS} into the 5-minute
 * tables, removes them, and removes 5-minute rows older than `days`; in one transaction, at most
 * once per 5-minute bucket per store (a call in between does nothing), server by server (each a
 * range of the tables' keys: the work is what is averaged or removed, not the tables' size). A
 * bucket averaged already (raw rows that came late) is merged, weighted by its row count.
 * Returns the 5-minute rows written.
 */
export function downsample(store: FleetStore, now: number, days: number): number {
  const cutoff = Math.floor((now - RAW_MS) / BUCKET_MS) * BUCKET_MS;
  if (done.get(store) === cutoff) return 0;
  let written = 0;
  const oldest = now - days * 86_400_000;
  store.transaction(() => {
    for (const t of TABLES) {
      for (const server of serversIn(store, t.raw)) {
        written += Number(store.sql(averageSql(t)).run({ server, cutoff }).changes);
        store.sql(`DELETE FROM ${t.raw} WHERE server = :server AND ${before(t)}`).run({ server, cutoff });
      }
    }
    for (const table of TABLES.map((t) => `${t.raw}_5m`)) {
      for (const server of serversIn(store, table)) {
        store.sql(`DELETE FROM ${table} WHERE server = :server AND ts < :oldest`).run({ server, oldest });
      }
    }
    for (const step of ROLLUP_STEPS) {
      store.sql("DELETE FROM request_rollups WHERE step = ? AND ts < ?").run(step, oldest - step);
    }
    store.sql("DELETE FROM fs_mounts WHERE last_ts < ?").run(oldest);
  });
  for (const server of [...storedSince.get(store)?.keys() ?? []]) capRequestRows(store, server);
  done.set(store, cutoff);
  return written;
}
