/**
 * Cron jobs under PM2: one scheduler process per server, `deploy-paradigm cron-scheduler`, run by
 * PM2 as the service `deploy-paradigm-cron` (installed by the first deploy with cron jobs, see
 * sync.ts). At the start of every minute (local time) it reads, for every app whose config.yml
 * says `manager: pm2`, the serving release's cron jobs, and starts `deploy-paradigm cron-run
 * <app> <job>` for each job due that minute; cron-run does the rest (lock, user, timeout, logs).
 *
 * It holds no state: a deploy that changes the jobs (or removes one) takes effect the next minute,
 * without telling the scheduler. A minute in which it was not running (stopped, restarted, the
 * server off) is not made up: its runs are missed, as with cron and our systemd timers
 * (`Persistent=false`).
 *
 * One scheduler per server: it holds an exclusive lock ({@link schedulerLockPath}) while it runs,
 * and a second one refuses to start (each would start every job, so every job would run twice).
 * @module
 */
import { join } from "node:path";
import { NAME_PATTERN } from "../config/names.ts";
import { acquireLock, type HeldLock } from "../deploy/lock.ts";
import { currentRelease, readReleaseMeta } from "../deploy/releases.ts";
import { DeployParadigmError } from "../errors.ts";
import { readTextOrUndefined } from "../fsutil.ts";
import { appPaths, deploymentsRoot, prefix, selfCommand } from "../paths.ts";
import { baseEnv } from "../runner.ts";
import { parseDocument } from "../yaml.ts";
import { jobsOf } from "./job.ts";
import { isScheduleError, matches, parseSchedule } from "./schedule.ts";

/** The scheduler's service name (a PM2 process). */
export const SCHEDULER_SERVICE = "deploy-paradigm-cron";

/** The lock a running scheduler holds (an flock, freed by the kernel when it ends), under the apps' root. */
export function schedulerLockPath(root: string): string {
  return join(deploymentsRoot(root), ".cron-scheduler.lock");
}

/** Takes the server's scheduler lock (the file 0600, naming its pid); refuses when another scheduler holds it. */
async function schedulerLock(root: string): Promise<HeldLock> {
  const path = schedulerLockPath(root);
  await Deno.mkdir(deploymentsRoot(root), { recursive: true });
  return await acquireLock(path, { pid: Deno.pid, commit: "cron scheduler" }, (holder) => {
    throw new DeployParadigmError(
      `another cron scheduler is running on this server${holder ? ` (pid ${holder.pid})` : ""}: it holds ${path}`,
      {
        suggestion: `one scheduler per server (pm2 runs it as ${SCHEDULER_SERVICE}): it already starts every ` +
          "job; stop it first to run this one",
      },
    );
  });
}

/** One job due. */
export interface Due {
  app: string;
  job: string;
}

/** The apps of the server under `root` whose config.yml names `manager`. */
async function appsManagedBy(root: string, manager: string): Promise<string[]> {
  const apps: string[] = [];
  try {
    for await (const entry of Deno.readDir(deploymentsRoot(root))) {
      if (!entry.isDirectory || !NAME_PATTERN.test(entry.name)) continue;
      const text = await readTextOrUndefined(appPaths(entry.name, root).config).catch(() => undefined);
      if (text === undefined) continue;
      try {
        const config = parseDocument(text).toJS() as { manager?: unknown } | null;
        if (config?.manager === manager) apps.push(entry.name);
      } catch { /* a broken config.yml: its deploys say so */ }
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  return apps.sort();
}

/** The jobs of pm2 apps under `root` due in the (local) minute of `at`; `warn` hears about bad schedules. */
export async function dueJobs(root: string, at: Date, warn: (line: string) => void = () => {}): Promise<Due[]> {
  const due: Due[] = [];
  for (const app of await appsManagedBy(root, "pm2")) {
    const paths = appPaths(app, root);
    const release = await currentRelease(paths).catch(() => undefined);
    if (!release) continue;
    const meta = await readReleaseMeta(paths, release).catch(() => undefined);
    for (const job of jobsOf(meta)) {
      const schedule = parseSchedule(job.schedule);
      if (isScheduleError(schedule)) {
        warn(`${app}/${job.name}: schedule "${job.schedule}": ${schedule.error}`);
        continue;
      }
      if (matches(schedule, at)) due.push({ app, job: job.name });
    }
  }
  return due;
}

/** The start of the local minute of `ms`. */
function minuteOf(ms: number): number {
  const at = new Date(ms);
  at.setSeconds(0, 0);
  return at.getTime();
}

/**
 * Runs until `signal` aborts: at each minute, starts `cron-run` for the jobs due (not waiting for
 * them; their output goes to ours). Each minute is handled once, however early or late the timer
 * fires; minutes it slept through are skipped.
 */
export async function runScheduler(
  options: { root?: string; signal?: AbortSignal; print?: (line: string) => void } = {},
): Promise<void> {
  const root = options.root ?? prefix();
  const print = options.print ?? ((line: string) => console.log(line));
  const self = selfCommand();
  const lock = await schedulerLock(root);
  try {
    await everyMinute(root, self, print, options.signal);
  } finally {
    lock.release();
  }
}

/** The scheduler's loop (see {@link runScheduler}), under its lock. */
async function everyMinute(
  root: string,
  self: string,
  print: (line: string) => void,
  signal?: AbortSignal,
): Promise<void> {
  let done = minuteOf(Date.now()); // a run of this minute may already have happened: the next minute first
  print(
    `deploy-paradigm cron scheduler: pid ${Deno.pid}, apps under ${deploymentsRoot(root)}, first tick at ` +
      new Date(done + 60_000).toISOString(),
  );
  while (!signal?.aborted) {
    const wait = done + 60_000 - Date.now() + 50;
    if (wait > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, wait);
        signal?.addEventListener("abort", () => {
          clearTimeout(timer);
          resolve();
        }, { once: true });
      });
      continue;
    }
    const minute = minuteOf(Date.now());
    if (minute <= done) continue; // the clock went back
    done = minute;
    let due: Due[];
    try {
      due = await dueJobs(root, new Date(minute), print);
    } catch (error) {
      print(`! could not read the cron jobs: ${error instanceof Error ? error.message : error}`);
      continue;
    }
    for (const { app, job } of due) start(self, app, job, root, print);
  }
}

/** Starts `cron-run <app> <job>`, its output to ours; never waits for it. */
function start(self: string, app: string, job: string, root: string, print: (line: string) => void): void {
  try {
    const child = new Deno.Command(self, {
      args: ["cron-run", app, job],
      env: { ...baseEnv(), ...(root !== "/" ? { DEPLOY_PARADIGM_PREFIX: root } : {}) },
      stdin: "null",
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();
    child.status.then((status) => {
      if (status.code !== 0 && status.code !== 1) print(`! cron-run ${app} ${job} exited with ${status.code}`);
    });
  } catch (error) {
    print(`! could not start cron-run ${app} ${job}: ${error instanceof Error ? error.message : error}`);
  }
}
