/**
 * A server's metrics sample from what the metrics script printed (./server_metrics.ts parses it):
 * the values by metric name, per filesystem, and the counters for the next sample. CPU % and
 * network bytes/s come from the deltas against the previous raw counters (none on the first
 * sample, after a reboot, a counter reset or too long a gap).
 * @module
 */
import type { Counters, DiskMetric, RawMetrics, ServerMetric } from "./server_metrics.ts";

/** A sample: server-wide values by metric name, per filesystem, and the counters for the next one. */
export interface Sample {
  values: Partial<Record<ServerMetric, number>>;
  filesystems: { mount: string; values: Partial<Record<DiskMetric, number>> }[];
  missing?: string;
  counters: Counters;
}

/** The previous sample's counters and when they were read. */
export interface Previous {
  ts: number;
  counters: Counters;
}

/** Rates above this many bytes/s (1 TB/s) are not real. */
const MAX_RATE = 1e12;

/** The longest time between two samples that still gives rates (longer: an average over hours). */
export const MAX_DELTA_GAP_MS = 10 * 60_000;

/**
 * The sample of `raw`, read at `ts`: CPU % and network bytes/s from the deltas against `previous`
 * (none on the first sample, when the time did not move forward or moved more than `maxGapMs`
 * (the collector passes 3 intervals, at least {@link MAX_DELTA_GAP_MS}), after a reboot (uptime
 * went back) or when a counter went back (reset or wrap): that cycle has no value).
 */
export function sampleOf(raw: RawMetrics, ts: number, previous?: Previous, maxGapMs = MAX_DELTA_GAP_MS): Sample {
  const values: Sample["values"] = {};
  const c = raw.counters;
  const p = previous?.counters;
  const seconds = previous && ts - previous.ts <= maxGapMs ? (ts - previous.ts) / 1000 : 0;
  const rebooted = c.uptime !== undefined && p?.uptime !== undefined && c.uptime < p.uptime;
  const delta = (now?: number, before?: number) =>
    now !== undefined && before !== undefined && !rebooted && now >= before ? now - before : undefined;
  if (p && seconds > 0) {
    const [busy, total] = [delta(c.cpuBusy, p.cpuBusy), delta(c.cpuTotal, p.cpuTotal)];
    if (busy !== undefined && total !== undefined && total > 0) {
      values["cpu.percent"] = Math.min(100, Math.max(0, busy / total * 100));
    }
    const [rx, tx] = [delta(c.netRx, p.netRx), delta(c.netTx, p.netTx)];
    if (rx !== undefined && rx / seconds <= MAX_RATE) values["net.rx_bytes_per_s"] = rx / seconds;
    if (tx !== undefined && tx / seconds <= MAX_RATE) values["net.tx_bytes_per_s"] = tx / seconds;
  }
  if (raw.load) {
    [values["load.1"], values["load.5"], values["load.15"]] = raw.load;
    if (raw.cpus) values["load.per_core"] = raw.load[0] / raw.cpus;
  }
  if (raw.memory) values["memory.used_percent"] = (raw.memory.total - raw.memory.available) / raw.memory.total * 100;
  if (raw.swap) {
    values["swap.used_percent"] = raw.swap.total > 0 ? (raw.swap.total - raw.swap.free) / raw.swap.total * 100 : 0;
  }
  if (c.uptime !== undefined) values["uptime.seconds"] = c.uptime;
  const filesystems = raw.filesystems.map((fs) => ({
    mount: fs.mount,
    values: {
      ...(fs.used !== undefined ? { "disk.used_percent": fs.used } : {}),
      ...(fs.inodes !== undefined ? { "disk.inodes_used_percent": fs.inodes } : {}),
    },
  }));
  return { values, filesystems, ...(raw.missing.length ? { missing: raw.missing.join("; ") } : {}), counters: c };
}
