/**
 * Keeping metrics in the fleet database (tables of migration 6, ./migrations.ts): a server's
 * samples ({@link storeServerSample}, with the raw counters the next sample's deltas need kept per
 * server, so one `fleet collect --once` per process works too), an app's request minutes from the
 * proxy's metrics.log ({@link requestMinuteOf}, {@link storeRequestMinutes}), and their
 * downsampling ({@link downsample}): rows older than 48 h become 5-minute averages (request
 * counts summed, latencies weighted by requests), kept for the retention period, as are the
 * request counts summed per hour (for the overview's sparklines). ./series.ts reads them.
 * @module
 */
import { capText, FIELD } from "./limits.ts";
import { type Previous, type RawMetrics, type Sample, sampleOf } from "./server_metrics.ts";
import { SERVER_COLUMNS } from "./series.ts";
import type { FleetStore, LogLine } from "./store.ts";

/** How long raw rows are kept before they are averaged into 5-minute rows. */
export const RAW_MS = 48 * 3_600_000;
/** The downsampled rows' bucket. */
export const BUCKET_MS = 5 * 60_000;

/** Computes `server`'s sample of `raw` read at `ts` against its previous counters, and stores both. */
export function storeServerSample(store: FleetStore, server: string, raw: RawMetrics, ts: number): Sample {
  const before = store.sql(
    `SELECT ts, cpu_busy AS cpuBusy, cpu_total AS cpuTotal, net_rx AS netRx, net_tx AS netTx, uptime
     FROM server_counters WHERE server = ?`,
  ).get(server) as (Record<string, number | null> & { ts: number }) | undefined;
  const previous: Previous | undefined = before && {
    ts: before.ts,
    counters: Object.fromEntries(Object.entries(before).filter(([k, v]) => k !== "ts" && v !== null)),
  };
  const sample = sampleOf(raw, ts, previous);
  const columns = Object.keys(SERVER_COLUMNS);
  const values = Object.fromEntries(
    Object.entries(SERVER_COLUMNS).map(([column, name]) => [column, sample.values[name] ?? null]),
  );
  store.transaction(() => {
    store.sql(
      `INSERT OR REPLACE INTO server_samples (server, ts, ${columns.join(", ")}, missing)
       VALUES (:server, :ts, ${columns.map((c) => `:${c}`).join(", ")}, :missing)`,
    ).run({ server, ts, ...values, missing: capText(sample.missing, FIELD.message) });
    const fs = store.sql("INSERT OR REPLACE INTO fs_samples (server, ts, mount, used, inodes) VALUES (?, ?, ?, ?, ?)");
    for (const f of sample.filesystems) {
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

/** One minute of an app's requests, from a line of its metrics.log. */
export interface RequestMinute {
  /** The minute's start, epoch ms. */
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
 * The request minute of a metrics.log line (../proxy/metrics.ts's takeMinute: `{ts, app, requests,
 * status: {"2xx": n, "5xx": n…}, p50_ms, p95_ms…}`), or undefined when it is not one. Hostile
 * input: the minute must be a date within a day of `now` or after 2000; counts whole, ≥ 0 and
 * sane; latencies finite (else null).
 */
export function requestMinuteOf(line: LogLine, now: number): RequestMinute | undefined {
  if (!line.text.startsWith("{")) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(line.text);
  } catch {
    return undefined;
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) return undefined;
  const r = value as Record<string, unknown>;
  const ts = typeof r.ts === "string" && r.ts.length <= 40 ? Date.parse(r.ts) : NaN;
  if (!(ts >= Date.UTC(2000, 0, 1) && ts <= now + 86_400_000)) return undefined;
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
  return {
    ts: Math.floor(ts / 60_000) * 60_000,
    requests,
    errors: Math.min(errors, MAX_COUNT),
    other: Math.min(other, MAX_COUNT),
    p50: ms(r.p50_ms),
    p95: ms(r.p95_ms),
  };
}

/**
 * Stores an app's request minutes (a minute seen again replaces its row: the same line ingested
 * twice, or read again after a crash, counts once).
 */
export function storeRequestMinutes(store: FleetStore, server: string, app: string, minutes: RequestMinute[]): void {
  if (!minutes.length) return;
  const insert = store.sql(
    `INSERT OR REPLACE INTO request_minutes (server, app, ts, requests, errors, other, p50, p95)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
  );
  // Each hour touched is summed again from its minutes (and 5-minute rows): a minute stored twice counts once.
  const hour = store.sql(
    `INSERT OR REPLACE INTO request_hours (server, ts, app, requests, errors)
     SELECT :server, :hour, :app, COALESCE(SUM(requests), 0), COALESCE(SUM(errors), 0) FROM (
       SELECT requests, errors FROM request_minutes
       WHERE server = :server AND ts >= :hour AND ts < :hour + ${HOUR_MS} AND app = :app
       UNION ALL SELECT requests, errors FROM request_minutes_5m
       WHERE server = :server AND ts >= :hour AND ts < :hour + ${HOUR_MS} AND app = :app)`,
  );
  store.transaction(() => {
    for (const m of minutes) insert.run(server, app, m.ts, m.requests, m.errors, m.other, m.p50, m.p95);
    for (const h of new Set(minutes.map((m) => Math.floor(m.ts / HOUR_MS) * HOUR_MS))) {
      hour.run({ server, app, hour: h });
    }
  });
}

const HOUR_MS = 3_600_000;

/** The tables downsampled: their key columns, and how each value column is combined. */
const TABLES: { raw: string; keys: string[]; avg: string[]; sum: string[]; weighted: string[] }[] = [
  { raw: "server_samples", keys: ["server"], avg: Object.keys(SERVER_COLUMNS), sum: [], weighted: [] },
  { raw: "fs_samples", keys: ["server", "mount"], avg: ["used", "inodes"], sum: [], weighted: [] },
  {
    raw: "request_minutes",
    keys: ["server", "app"],
    avg: [],
    sum: ["requests", "errors", "other"],
    weighted: ["p50", "p95"],
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
  return `INSERT INTO ${t.raw}_5m (${keys}, ts, ${columns.join(", ")}${missing ? ", missing" : ""}, n)
    SELECT ${keys}, (ts / ${BUCKET_MS}) * ${BUCKET_MS} AS bucket, ${select.join(", ")}
      ${missing ? ", MAX(missing)" : ""}, COUNT(*)
    FROM ${t.raw} WHERE server = :server AND ts < :cutoff GROUP BY ${keys}, bucket
    ON CONFLICT DO UPDATE SET ${sets.join(", ")}`;
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
        store.sql(`DELETE FROM ${t.raw} WHERE server = :server AND ts < :cutoff`).run({ server, cutoff });
      }
    }
    for (const table of [...TABLES.map((t) => `${t.raw}_5m`), "request_hours"]) {
      for (const server of serversIn(store, table)) {
        store.sql(`DELETE FROM ${table} WHERE server = :server AND ts < :oldest`).run({ server, oldest });
      }
    }
  });
  done.set(store, cutoff);
  return written;
}
