/**
 * A server's latest metrics sample (./metric_store.ts writes them), for alert rules
 * (./rule_inputs.ts) and /metrics (./metrics.ts), and the server-wide columns of server_samples
 * with their metric names. Raw rows (the last 48 h) and 5-minute rows (older) never overlap: the
 * newest of both is the latest. Chart series and request windows: ./series.ts.
 * @module
 */
import type { FleetStore } from "./store.ts";

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
