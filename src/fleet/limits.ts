/**
 * What one server may cost the fleet monitor: every size the collector enforces, in one place.
 * A server is hostile input (a compromised one writes what it likes into its status.json and
 * logs): whatever it sends, the laptop's mirror, database and API answers stay bounded, and the
 * other servers' cycles go on on time. A server that hits a limit is marked (`limits` in the API
 * and `fleet list`, each naming what was refused or cut) and alerted (`over_limit`).
 * @module
 */
import { MAX_CERTIFICATES_BYTES } from "../proxy/cert_state.ts";

/** An app's status.json: a bigger one is refused (the app drops out of the overview until it shrinks). */
export const MAX_STATUS_BYTES = 64 << 10;
/** The proxy's `.tls/certificates.json` (its own limit, shared with the proxy). */
export const MAX_CERTIFICATES_FILE_BYTES = MAX_CERTIFICATES_BYTES;
/** Apps (status.json files) per server; beyond, in name order, they are not pulled. */
export const MAX_APPS = 200;
/** Log files (`*.log`, `*.log.1`) per server; beyond, in name order, they are not pulled. */
export const MAX_LOG_FILES = 64;
/**
 * A log file the mirror may hold (rsync `--max-size`, and RLIMIT_FSIZE on the local rsync where
 * `prlimit` exists): a bigger one is not pulled until it is rotated.
 */
export const MAX_LOG_FILE_BYTES = 64 << 20;
/**
 * All of a server's log files in the mirror: the files that do not fit (deploy.log first) are not
 * pulled. It holds whatever the server's listing says: each rsync may write at most this much
 * (its files × their RLIMIT_FSIZE), and the real sizes are measured after it.
 */
export const MAX_MIRROR_BYTES = 256 << 20;
/**
 * New bytes of one log file ingested per cycle: beyond, the newest this many are kept and a
 * `[fleet] gap` line says how much was skipped.
 */
export const MAX_NEW_BYTES_PER_FILE = 8 << 20;
/** New log bytes of one server ingested per cycle: the files past it wait for the next cycle. */
export const MAX_NEW_BYTES_PER_SERVER = 32 << 20;
/**
 * New log lines of one server read per cycle, blank ones included: a file stops at the end of the
 * 16 KiB chunk where they run out (up to 8,192 lines more) and goes on next cycle from that line
 * (its backlog bounded by {@link MAX_NEW_BYTES_PER_FILE}). A stored line costs ~6–10 µs here
 * (SQLite and its full-text index): without it, 32 MiB of 2-byte lines would hold the collector
 * for minutes each cycle; with it, about a second.
 */
export const MAX_NEW_LINES_PER_SERVER = 100_000;

/**
 * Processes of one app kept from its status.json's `processes` (web instances and workers): the
 * rest are counted (`omitted`) but not stored, and the server is marked.
 */
export const MAX_PROCESSES = 100;
/**
 * Cron jobs of one app whose last run is kept (from its cron.log): past it, the jobs that ran
 * least recently are forgotten, and the server is marked.
 */
export const MAX_CRON_JOBS = 50;

/** A server's file listing (one line per file): more fails the pull. */
export const MAX_LISTING_BYTES = 1 << 20;

/** The longest value stored (and so returned by the API) of each kind of field, in characters. */
export const FIELD = {
  /** Names and short values: app, status, version, type, strategy, commit, dates, release, step. */
  short: 200,
  /** A pull's error, a certificate's last error, a deployment's message. */
  message: 2000,
  /** status.json's `lastDeploy`, as JSON: longer is replaced by `{"cut": <length>}`. */
  lastDeploy: 4096,
  /** A certificate's names, as a JSON array. */
  names: 4096,
  /** A log line (longer ones are cut and marked `…[cut]`). */
  line: 16 << 10,
  /** The limit messages of a pull, each. */
  limit: 300,
  /** Limit messages kept per pull. */
  limits: 20,
} as const;

/** App directories and log file names the collector takes: plain names (anything else is skipped). */
export const SAFE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** `text` cut to `max` characters (marked `…[cut]`), or null when it is not a string. */
export function capText(text: unknown, max: number): string | null {
  if (typeof text !== "string") return null;
  return text.length > max ? text.slice(0, Math.max(0, max - 6)) + "…[cut]" : text;
}

/** A pull's limit lines, at most {@link FIELD}.limits of them (then `and N more`), each cut to {@link FIELD}.limit. */
export function capLimits(lines: readonly string[]): string[] {
  const kept = lines.slice(0, FIELD.limits).map((line) => capText(line, FIELD.limit)!);
  if (lines.length > FIELD.limits) kept.push(`and ${lines.length - FIELD.limits} more`);
  return kept;
}

/** `12.3 MiB`, `64 KiB`, `512 B`. */
export function size(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1 << 20) return `${+(bytes / 1024).toFixed(1)} KiB`;
  if (bytes < 1 << 30) return `${+(bytes / (1 << 20)).toFixed(1)} MiB`;
  return `${+(bytes / (1 << 30)).toFixed(1)} GiB`;
}
