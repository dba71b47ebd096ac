/**
 * What a pull of a server takes: the remote listing (a constant command line) and its parsing,
 * the plan of which files to pull within the limits of ./limits.ts ({@link planPull}), and the
 * batches that keep the mirror within them whatever the listing says ({@link nextBatch}). Pure:
 * ./ssh_source.ts runs it.
 * @module
 */
import { CERTIFICATES_FILE } from "../proxy/cert_state.ts";
import {
  MAX_APPS,
  MAX_CERTIFICATES_FILE_BYTES,
  MAX_LOG_FILE_BYTES,
  MAX_LOG_FILES,
  MAX_MIRROR_BYTES,
  MAX_STATUS_BYTES,
  SAFE_NAME,
  size,
} from "./limits.ts";
import { METRICS_SCRIPT } from "./server_metrics.ts";

/** Log files the collector reads: `<app>/<name>.log`, and `<name>.log.1` for rotation. */
export const LOG_FILE = /^[^/]+\/[^/]+\.log(\.1)?$/;

/**
 * The remote listing: `S`/`L` (status or log file), inode, size and path of each app's status.json,
 * the proxy's certificates.json and each log file; a constant command line, for GNU and busybox
 * (`stat -c`). A missing directory lists nothing; a failing find or stat fails the pull.
 */
export const LISTING =
  "{ [ ! -d /opt/deployments ] || (cd /opt/deployments && find . -mindepth 2 -maxdepth 2 -type f " +
  "\\( -name status.json -o -path ./.tls/certificates.json \\) -exec stat -c 'S %i %s %n' {} +); } && " +
  "{ [ ! -d /var/log/deployments ] || (cd /var/log/deployments && find . -mindepth 2 -maxdepth 2 -type f " +
  "\\( -name '*.log' -o -name '*.log.1' \\) -exec stat -c 'L %i %s %n' {} +); }";

/**
 * {@link LISTING}, then (when it worked) the server's metrics ({@link METRICS_SCRIPT}, after a
 * `#metrics` line, bounded, never failing): what a pull's first listing runs, so metrics cost no
 * extra connection or command. Constant too.
 */
export const LISTING_WITH_METRICS = `{ ${LISTING}; } && { ${METRICS_SCRIPT}; }`;

/** One file of the remote listing. */
export interface ListedFile {
  kind: "status" | "log";
  ino: number;
  size: number;
  /** `<app>/status.json`, `.tls/certificates.json` or `<app>/<name>.log[.1]`. */
  rel: string;
}

/** The remote listing's files; lines that are not one (or name no file the collector takes) are left out. */
export function parseListing(output: string): ListedFile[] {
  const files: ListedFile[] = [];
  for (const line of output.split("\n")) {
    const match = /^([SL]) (\d+) (\d+) (?:\.\/)?(.+)$/.exec(line.trim());
    if (!match) continue;
    const [, kind, ino, bytes, rel] = match;
    files.push({ kind: kind === "S" ? "status" : "log", ino: Number(ino), size: Number(bytes), rel });
  }
  return files;
}

/** What a pull takes of a server's listing, within the limits (./limits.ts), and what it refused. */
export interface PullPlan {
  /** Paths under /opt/deployments: `<app>/status.json`, `.tls/certificates.json`. */
  status: string[];
  /** Paths under /var/log/deployments. */
  logs: string[];
  /** What was refused, one line each. */
  limits: string[];
}

export const STATUS_FILE = /^([^/]+)\/status\.json$/;

/**
 * Which files to pull: status.json files up to {@link MAX_STATUS_BYTES} (at most {@link MAX_APPS}),
 * certificates.json up to its own limit, and log files up to {@link MAX_LOG_FILE_BYTES} each
 * (at most {@link MAX_LOG_FILES}), deploy.log first, while they fit in {@link MAX_MIRROR_BYTES}.
 * Only plain names ({@link SAFE_NAME}) are taken.
 */
export function planPull(listing: readonly ListedFile[]): PullPlan {
  const plan: PullPlan = { status: [], logs: [], limits: [] };
  const odd: string[] = [];
  const statuses: ListedFile[] = [];
  for (const file of listing.filter((f) => f.kind === "status").sort((a, b) => a.rel.localeCompare(b.rel))) {
    if (file.rel === CERTIFICATES_FILE) {
      if (file.size <= MAX_CERTIFICATES_FILE_BYTES) plan.status.push(file.rel);
      else plan.limits.push(`${file.rel} is ${size(file.size)}, over ${size(MAX_CERTIFICATES_FILE_BYTES)}: refused`);
      continue;
    }
    const app = STATUS_FILE.exec(file.rel)?.[1];
    if (app === undefined || !SAFE_NAME.test(app)) odd.push(file.rel);
    else if (file.size > MAX_STATUS_BYTES) {
      plan.limits.push(`${app}/status.json is ${size(file.size)}, over the ${size(MAX_STATUS_BYTES)} allowed: refused`);
    } else statuses.push(file);
  }
  if (statuses.length > MAX_APPS) {
    plan.limits.push(`${statuses.length} apps, over the ${MAX_APPS} allowed: ${statuses.length - MAX_APPS} not pulled`);
  }
  plan.status.push(...statuses.slice(0, MAX_APPS).map((f) => f.rel));

  const logs = listing.filter((f) => {
    if (f.kind !== "log") return false;
    const [app, name, ...rest] = f.rel.split("/");
    const plain = !rest.length && SAFE_NAME.test(app) && SAFE_NAME.test(name ?? "") && LOG_FILE.test(f.rel);
    if (!plain) odd.push(f.rel);
    return plain;
  });
  const priority = (rel: string) => /\/deploy\.log(\.1)?$/.test(rel) ? 0 : 1;
  logs.sort((a, b) => priority(a.rel) - priority(b.rel) || a.rel.localeCompare(b.rel));
  let total = 0;
  const left: ListedFile[] = [];
  for (const file of logs) {
    if (file.size > MAX_LOG_FILE_BYTES) {
      plan.limits.push(
        `${file.rel} is ${size(file.size)}, over the ${size(MAX_LOG_FILE_BYTES)} a log file may have: not pulled ` +
          "(rotate it)",
      );
    } else if (plan.logs.length >= MAX_LOG_FILES || total + file.size > MAX_MIRROR_BYTES) left.push(file);
    else {
      plan.logs.push(file.rel);
      total += file.size;
    }
  }
  if (left.length) {
    plan.limits.push(
      `${left.length} log file(s) (${size(left.reduce((n, f) => n + f.size, 0))}) not pulled: a server may have ` +
        `${MAX_LOG_FILES} files, ${size(MAX_MIRROR_BYTES)} in all, in the mirror`,
    );
  }
  if (odd.length) {
    plan.limits.push(`${odd.length} file(s) with names that are not plain skipped, e.g. ${JSON.stringify(odd[0])}`);
  }
  return plan;
}

/** Room left for a listed file to grow between the listing and its transfer. */
const GROWTH = 1 << 20;

/** One rsync of a pull: the first `count` files of the pending ones, each at most `maxSize` bytes. */
export interface Batch {
  count: number;
  maxSize: number;
}

/**
 * The next transfer of `pending` (listed files, smallest first), such that whatever the server
 * sends (rsync's `--max-size` trusts it; RLIMIT_FSIZE and the measurement after do not) the
 * mirror's files of this kind stay within `budget`: `count` × `maxSize` ≤ the budget left
 * by the files in `mirrored` (real sizes, rel → bytes) outside the batch, and `maxSize` ≤ `cap`.
 * The listed size of each file plus some growth fits its `maxSize`; undefined when not even the
 * smallest fits (the server's files are bigger than its listing said).
 */
export function nextBatch(
  pending: readonly ListedFile[],
  cap: number,
  budget: number,
  mirrored: ReadonlyMap<string, number>,
): Batch | undefined {
  const used = [...mirrored.values()].reduce((a, b) => a + b, 0);
  let inBatch = 0;
  let best: Batch | undefined;
  for (let count = 1; count <= pending.length; count++) {
    const file = pending[count - 1];
    inBatch += mirrored.get(file.rel) ?? 0;
    const left = budget - used + inBatch;
    const need = Math.min(cap, left, file.size + Math.max(GROWTH, file.size >> 2));
    if (file.size > left || file.size > cap || count * need > left) break;
    best = { count, maxSize: Math.min(cap, Math.floor(left / count)) };
  }
  return best;
}
