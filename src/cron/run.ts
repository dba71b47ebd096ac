/**
 * `cron-run <app> <job>`: one run of a job of the app's serving release (the release `current`
 * names when the run starts), in that release's directory, as the app's user, with the release's
 * `.env` snapshot and the app's environment (as the web process gets them, see runtime.ts), plus
 * DEPLOY_APP, DEPLOY_RELEASE, DEPLOY_COMMIT and DEPLOY_CRON_JOB.
 *
 * - Never two runs of one job at once: each run holds an flock(2) on
 *   `/opt/deployments/<app>/.cron/<job>.lock` (the kernel frees it when the run dies); a run that
 *   finds it held is skipped, and recorded so.
 * - At its `timeoutMs` the run's process group gets SIGTERM, and SIGKILL 3 s later; when the job
 *   ends, whatever it left in its process group is killed too.
 * - Every run (a skipped one too) is one JSON line in cron.log; its output goes to
 *   `cron-<job>.log` (see log.ts). A failed or timed-out run is sent to config.yml's `notify:`
 *   targets as the event `cron_failed`.
 * @module
 */
import { loadServerConfig } from "../config/server_config.ts";
import { join } from "node:path";
import { requireAppName } from "../config/names.ts";
import type { ServerConfig } from "../config/schema.ts";
import { currentRelease, readReleaseMeta, type ReleaseMeta } from "../deploy/releases.ts";
import { Redactor } from "../deploy/redact.ts";
import { asApp, envSnapshot, processFor, resolveProgram, secretValues } from "../deploy/runtime.ts";
import { didYouMean, UsageError } from "../errors.ts";
import { readTextOrUndefined } from "../fsutil.ts";
import { type AppPaths, appPaths } from "../paths.ts";
import { type Cmd, CommandCancelled, displayArgv, ProcessRunner, programOf } from "../runner.ts";
import { type CronJob, jobNameProblem, jobsOf } from "./job.ts";
import { appendText, type CronRun, outputLogPath, recordRun, rotate } from "./log.ts";

/** The lock of one job. */
export function jobLockPath(paths: AppPaths, job: string): string {
  return join(paths.dir, ".cron", `${job}.lock`);
}

/** What {@link runJob} may be given instead of the real world. */
export interface RunOptions {
  /** The server root (default: the prefix). */
  root?: string;
  /** Where the one-line summary goes (default: stdout). */
  print?: (line: string) => void;
  /** Stops the run as its timeout would (cron-run on SIGTERM): recorded as failed. */
  signal?: AbortSignal;
}

/** Runs job `name` of `app` once (or records why not); returns its record in cron.log. */
export async function runJob(app: string, name: string, options: RunOptions = {}): Promise<CronRun> {
  const print = options.print ?? ((line: string) => console.log(line));
  requireAppName(app);
  const problem = jobNameProblem(name);
  if (problem) throw new UsageError(`"${name}" is not a job name: it ${problem}`);
  const paths = appPaths(app, options.root);
  const config = await loadServerConfig(paths);
  const started = performance.now();
  const start = new Date().toISOString();
  const release = await currentRelease(paths);
  const meta = release ? await readReleaseMeta(paths, release) : undefined;
  const job = jobsOf(meta).find((j) => j.name === name);
  const skip = async (reason: string, pid?: number) => {
    const run: CronRun = {
      job: name,
      ...(release ? { release } : {}),
      start,
      end: new Date().toISOString(),
      exitCode: null,
      durationMs: Math.round(performance.now() - started),
      outcome: "skipped",
      reason,
      ...(pid ? { pid } : {}),
    };
    await recordRun(paths, run);
    print(`${app}/${name}: skipped: ${reason}`);
    return run;
  };
  // Nothing to run is a usage error, never recorded as a run: a typo, or an app that serves nothing.
  if (!meta) {
    const where = release ? `${paths.release(release)} has no release metadata` : `${paths.current} does not exist`;
    throw new UsageError(`${app} has no serving release (${where}): its cron job "${name}" cannot run`, {
      suggestion: `deploy ${app} first (git push to ${paths.repo}): the jobs are those of its serving release's ` +
        "deploy.yml `cron:`",
    });
  }
  if (!job) {
    const names = jobsOf(meta).map((j) => j.name);
    const guess = didYouMean(name, names);
    throw new UsageError(`the serving release ${release} of ${app} has no cron job "${name}"`, {
      suggestion: guess ? `did you mean "${guess}"?` : names.length ? `its jobs: ${names.join(", ")}` : "it has none",
    });
  }

  // One run at a time: the lock, or a skip naming the run that holds it.
  const lockPath = jobLockPath(paths, name);
  await Deno.mkdir(join(paths.dir, ".cron"), { recursive: true, mode: 0o700 });
  const lock = await Deno.open(lockPath, { read: true, write: true, create: true, mode: 0o600 });
  try {
    if (!(await lock.tryLock(true))) {
      const holder = await Deno.readTextFile(lockPath).then((t) => JSON.parse(t), () => undefined);
      return await skip(
        `the run started at ${holder?.start ?? "an unknown time"}${holder?.pid ? ` (pid ${holder.pid})` : ""} ` +
          "is still going",
        holder?.pid,
      );
    }
    await lock.truncate(0);
    await lock.write(new TextEncoder().encode(JSON.stringify({ pid: Deno.pid, start, release }) + "\n"));
    let run: CronRun;
    try {
      run = await execute(paths, config, meta, job, start, started, options.signal);
    } catch (error) {
      // It could not be started (no such user, an unreadable .env…): a failure like any other.
      run = {
        job: name,
        release: meta.id,
        start,
        end: new Date().toISOString(),
        exitCode: null,
        durationMs: Math.round(performance.now() - started),
        outcome: "failed",
        reason: error instanceof Error ? error.message.split("\n")[0] : String(error),
        pid: Deno.pid,
      };
    }
    await recordRun(paths, run);
    print(
      `${app}/${name}: ${run.outcome}` +
        (run.outcome === "timeout"
          ? ` (killed after ${job.timeoutMs / 1000} s)`
          : run.exitCode === null
          ? `: ${run.reason}`
          : ` (exit ${run.exitCode})`) +
        ` in ${(run.durationMs / 1000).toFixed(1)} s; output in ${outputLogPath(paths, name)}`,
    );
    lock.close();
    if (run.outcome === "failed" || run.outcome === "timeout") {
      await notifyFailure(paths, config, meta, job, run, print);
    }
    return run;
  } finally {
    try {
      lock.close();
    } catch { /* closed above */ }
  }
}

/** Runs `job` of release `meta` with its output appended to its log; the run's record. */
async function execute(
  paths: AppPaths,
  config: ServerConfig,
  meta: ReleaseMeta,
  job: CronJob,
  start: string,
  started: number,
  stop?: AbortSignal,
): Promise<CronRun> {
  const dir = paths.release(meta.id);
  const output = outputLogPath(paths, job.name);
  await Deno.mkdir(paths.logDir, { recursive: true });
  await rotate(output); // under the job's lock: no other run of it writes there now
  await appendText(output, `--- ${start} start ${job.name} (release ${meta.id}): ${displayArgv(job.argv)}`);
  const done = async (exitCode: number | null, outcome: CronRun["outcome"], reason?: string): Promise<CronRun> => {
    const durationMs = Math.round(performance.now() - started);
    const end = new Date().toISOString();
    await appendText(
      output,
      `--- ${end} end ${job.name}: ${outcome}${exitCode === null ? "" : ` (exit ${exitCode})`}` +
        ` after ${(durationMs / 1000).toFixed(2)} s${reason ? `: ${reason}` : ""}`,
    );
    return {
      job: job.name,
      release: meta.id,
      start,
      end,
      exitCode,
      durationMs,
      outcome,
      ...(reason ? { reason } : {}),
      pid: Deno.pid,
    };
  };
  if (meta.image) {
    // The job would run on the server, not in the app's image: refused until it can run in a container.
    return await done(null, "failed", "cron jobs of docker apps are not supported (they would not run in the image)");
  }
  let program: string;
  try {
    program = await resolveProgram(job.argv[0], dir, dir);
  } catch (error) {
    return await done(127, "failed", error instanceof Error ? error.message : String(error));
  }
  const secrets = await envSnapshot(paths, meta);
  const process = processFor(paths, config, meta.type, [program, ...job.argv.slice(1)], secrets);
  const env = {
    ...secrets,
    ...process.env,
    DEPLOY_APP: paths.app,
    DEPLOY_RELEASE: meta.id,
    DEPLOY_COMMIT: meta.commit,
    DEPLOY_CRON_JOB: job.name,
  };
  const timeout = AbortSignal.timeout(job.timeoutMs);
  const cmd = asApp(
    {
      argv: process.argv,
      cwd: dir,
      cancel: AbortSignal.any([timeout, ...(stop ? [stop] : [])]),
      allowFailure: true,
      quiet: true,
    },
    process.user,
    env,
  );
  try {
    const result = await new ProcessRunner().run(toFile(cmd, output));
    if (result.code === 127 && result.tail.length) await appendText(output, result.tail.join("\n"));
    return await done(result.code, result.code === 0 ? "ok" : "failed");
  } catch (error) {
    if (error instanceof CommandCancelled && !timeout.aborted) {
      return await done(null, "failed", `stopped: ${stop?.reason ?? "cancelled"}`);
    }
    if (error instanceof CommandCancelled) {
      return await done(null, "timeout", `killed after ${job.timeoutMs / 1000} s (its timeout)`);
    }
    throw error;
  }
}

/**
 * `cmd` with its output appended to `file`: a shell opens the file (as root, before the program's
 * user takes over) and execs the program, whose path is resolved here, by root, never through the
 * command's PATH (where the release's own directories come first). Nothing of the output is kept
 * in memory.
 */
function toFile(cmd: Cmd, file: string): Cmd {
  const program = programOf(cmd) ?? cmd.argv[0];
  return {
    ...cmd,
    argv: ["/bin/sh", "-c", 'out=$1; shift; exec "$@" >>"$out" 2>&1', "sh", file, program, ...cmd.argv.slice(1)],
  };
}

/** The last lines of a run's output (between its start and end lines), at most `max`. */
async function outputTail(path: string, start: string, max = 20): Promise<string[]> {
  const text = await readTextOrUndefined(path).catch(() => undefined);
  if (text === undefined) return [];
  const lines = text.split("\n");
  const from = lines.findLastIndex((line) => line.startsWith(`--- ${start} start `));
  return lines.slice(from + 1).filter((line) => line !== "" && !line.startsWith("--- ")).slice(-max);
}

/** A failed or timed-out run to config.yml's `notify:` targets (event `cron_failed`); never throws. */
async function notifyFailure(
  paths: AppPaths,
  config: ServerConfig,
  meta: ReleaseMeta,
  job: CronJob,
  run: CronRun,
  print: (line: string) => void,
): Promise<void> {
  if (!config.notify.length) return;
  try {
    const { notifyAll } = await import("../notify.ts");
    const redactor = new Redactor();
    redactor.add(await secretValues(paths, meta));
    const server = hostname();
    const how = run.outcome === "timeout"
      ? `timed out after ${job.timeoutMs / 1000} s`
      : run.exitCode === null
      ? `failed (${run.reason})`
      : `failed (exit ${run.exitCode})`;
    const tail = await outputTail(outputLogPath(paths, job.name), run.start);
    const deliveries = await notifyAll(config.notify, {
      event: "cron_failed",
      ok: false,
      title: `${paths.app} cron job ${job.name} ${how} on ${server}`,
      text: redactor.clean(tail.join("\n")) || run.reason,
      at: run.end,
      fields: {
        app: paths.app,
        server,
        job: job.name,
        schedule: job.schedule,
        release: meta.id,
        commit: meta.commit,
        exitCode: run.exitCode === null ? undefined : String(run.exitCode),
        duration: `${(run.durationMs / 1000).toFixed(1)} s`,
      },
    });
    for (const delivery of deliveries) {
      print(`${delivery.ok ? "✓" : "!"} notified ${delivery.target}: ${delivery.detail}`);
    }
  } catch (error) {
    print(`! could not notify: ${error instanceof Error ? error.message : error}`);
  }
}

function hostname(): string {
  try {
    return Deno.hostname();
  } catch {
    return "this server";
  }
}
