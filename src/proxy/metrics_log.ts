/**
 * The proxy's metrics log: every wall-clock minute, one JSON line per app (what
 * {@link ProxyMetrics.takeMinute} counted) appended to `/var/log/deployments/<app>/metrics.log`,
 * which the fleet pulls like any other `*.log`.
 * @module
 */
import { dirname, join } from "node:path";
import { NAME_PATTERN } from "../config/names.ts";
import { appPaths } from "../paths.ts";
import type { ProxyMetrics } from "./metrics.ts";

/** Options of {@link startMetricsLog}. */
export interface MetricsLogOptions {
  /** The server root (the prefix): lines go to `<root>/var/log/deployments/<app>/metrics.log`. */
  root: string;
  metrics: ProxyMetrics;
  /** The window, aligned to multiples of it since the epoch; default one minute. */
  intervalMs?: number;
  /** Receives a line for each problem writing the files. */
  log?: (line: string) => void;
  /** The wall clock, epoch ms. */
  now?: () => number;
}

/**
 * Every wall-clock minute (or `intervalMs`), appends {@link ProxyMetrics.takeMinute}'s lines to each
 * app's `metrics.log` (created 0600, root's; a symlink there is refused). Problems go to `log`, never
 * thrown. `stop()` writes the partial window, stamped with the time it ends, and waits for the writes.
 */
export function startMetricsLog(opts: MetricsLogOptions): { stop(): Promise<void> } {
  const interval = opts.intervalMs ?? 60_000;
  const now = opts.now ?? Date.now;
  const log = opts.log ?? (() => {});
  let timer: ReturnType<typeof setTimeout> | undefined;
  let writing = Promise.resolve();
  let stopped = false;
  const flush = (end: number) => {
    const lines = opts.metrics.takeMinute(end);
    writing = writing.then(() => appendLines(opts.root, lines, log));
  };
  const schedule = (after: number) => {
    const next = (Math.floor(after / interval) + 1) * interval;
    const id = setTimeout(() => {
      // A timer that fired late (a machine asleep) ends one window at the last boundary passed.
      const end = Math.max(next, Math.floor(now() / interval) * interval);
      flush(end);
      schedule(end);
    }, Math.max(0, next - now()));
    Deno.unrefTimer(id);
    timer = id;
  };
  schedule(now());
  return {
    stop: async () => {
      if (!stopped) {
        stopped = true;
        clearTimeout(timer);
        flush(now());
      }
      await writing;
    },
  };
}

/** Appends each line to its app's metrics.log; apps that are not app names (`-`) are skipped. */
async function appendLines(root: string, lines: Array<Record<string, unknown>>, log: (line: string) => void) {
  for (const line of lines) {
    const app = String(line.app);
    if (!NAME_PATTERN.test(app)) continue;
    const path = join(appPaths(app, root).logDir, "metrics.log");
    try {
      await appendLine(path, JSON.stringify(line) + "\n");
    } catch (error) {
      log(`metrics: cannot append to ${path}: ${error instanceof Error ? error.message : error}`);
    }
  }
}

/**
 * Appends `text` with O_APPEND: a new file is created root's 0600, as every log of the app (the
 * fleet pulls it as root, as it pulls them); an existing one must be a plain file, not a link.
 */
async function appendLine(path: string, text: string): Promise<void> {
  await Deno.mkdir(dirname(path), { recursive: true });
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { append: true, createNew: true, mode: 0o600 });
  } catch (error) {
    if (!(error instanceof Deno.errors.AlreadyExists)) throw error;
    const before = await Deno.lstat(path);
    if (!before.isFile) throw new Error("it is not a plain file (a symlink?)");
    file = await Deno.open(path, { append: true });
    const after = await file.stat();
    if (after.ino !== before.ino || after.dev !== before.dev) {
      file.close();
      throw new Error("it was replaced while being opened");
    }
  }
  try {
    const bytes = new TextEncoder().encode(text);
    for (let written = 0; written < bytes.length;) written += await file.write(bytes.subarray(written));
  } finally {
    file.close();
  }
}
