/**
 * What cron runs leave: one JSON line per run in `/var/log/deployments/<app>/cron.log` (every
 * job's, in the order they end; a skipped run too), and each job's output, every run of it
 * appended between a `--- start` and an `--- end` line, in `cron-<job>.log` next to it. Each file,
 * once past 10 MiB, is renamed to `<name>.1` (the one before goes) and started again. Both are
 * created 0600, as the app's access.log and error.log are: a job's output may hold its secrets.
 * @module
 */
import { join } from "node:path";
import type { AppPaths } from "../paths.ts";
import { readAtMost } from "../fsutil.ts";
import { lockFile } from "../runner.ts";

/** How a run ended. */
export type CronOutcome = "ok" | "failed" | "timeout" | "skipped";

/** One line of cron.log. */
export interface CronRun {
  job: string;
  /** The release it ran in (the serving one when it started). */
  release?: string;
  /** ISO 8601. */
  start: string;
  end: string;
  /** The job's exit code; null when it did not run (skipped) or was killed at its timeout. */
  exitCode: number | null;
  durationMs: number;
  outcome: CronOutcome;
  /** Why it was skipped or could not start. */
  reason?: string;
  /** The pid that ran it (for a skip: the one still running). */
  pid?: number;
}

/** `cron.log` of an app. */
export function cronLogPath(paths: AppPaths): string {
  return join(paths.logDir, "cron.log");
}

/** The output log of one job: `cron-<job>.log`. */
export function outputLogPath(paths: AppPaths, job: string): string {
  return join(paths.logDir, `cron-${job}.log`);
}

/**
 * Appends `line` and a newline in one write (O_APPEND), after a newline if the file does not end
 * with one (a torn line, or a job's output without its last newline). Callers hold a lock: the
 * log's, or the job's for its output. A file it creates is `mode` (root's only by default: see the module).
 */
export async function appendText(path: string, line: string, mode = 0o600): Promise<void> {
  using file = await Deno.open(path, { read: true, append: true, create: true, mode });
  const size = (await file.stat()).size;
  let torn = false;
  if (size > 0) {
    const last = new Uint8Array(1);
    await file.seek(size - 1, Deno.SeekMode.Start);
    torn = (await file.read(last)) === 1 && last[0] !== 10;
  }
  const bytes = new TextEncoder().encode(`${torn ? "\n" : ""}${line}${line.endsWith("\n") ? "" : "\n"}`);
  for (let done = 0; done < bytes.length;) done += await file.write(bytes.subarray(done));
}

/** A log bigger than this is renamed to `<name>.1` (replacing the one before) before the next line. */
export const MAX_LOG_BYTES = 10 * 1024 * 1024;

/** Renames `path` to `path.1` when it is bigger than `max` bytes. Call it where no one else rotates it at once. */
export async function rotate(path: string, max = MAX_LOG_BYTES): Promise<void> {
  const size = (await Deno.stat(path).catch(() => undefined))?.size ?? 0;
  if (size > max) await Deno.rename(path, `${path}.1`);
}

/** Records a run in cron.log (rotated under a lock: runs of several jobs end at once). */
export async function recordRun(paths: AppPaths, run: CronRun, max = MAX_LOG_BYTES): Promise<void> {
  await Deno.mkdir(paths.logDir, { recursive: true });
  const lock = await lockFile(join(paths.dir, ".cron", "log.lock"));
  try {
    await rotate(cronLogPath(paths), max);
    await appendText(cronLogPath(paths), JSON.stringify(run));
  } finally {
    lock.close();
  }
}

/** The runs recorded in the last `bytes` of cron.log, oldest first (a torn or foreign line is skipped). */
export async function readRuns(paths: AppPaths, bytes = 256 * 1024): Promise<CronRun[]> {
  let text: string;
  try {
    using file = await Deno.open(cronLogPath(paths));
    const size = (await file.stat()).size;
    await file.seek(Math.max(0, size - bytes), Deno.SeekMode.Start);
    text = new TextDecoder().decode(await readAtMost(file, bytes));
    if (size > bytes) text = text.slice(text.indexOf("\n") + 1);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    throw error;
  }
  const runs: CronRun[] = [];
  for (const line of text.split("\n")) {
    try {
      const run = JSON.parse(line);
      if (typeof run?.job === "string" && typeof run.outcome === "string") runs.push(run);
    } catch { /* a torn line */ }
  }
  return runs;
}

/** The last recorded run of each job (for status and the fleet). */
export async function lastRuns(paths: AppPaths): Promise<Record<string, CronRun>> {
  return Object.fromEntries((await readRuns(paths)).map((run) => [run.job, run]));
}
