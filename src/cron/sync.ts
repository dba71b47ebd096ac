/**
 * Makes the server run the cron jobs of the release that serves: after a deploy's switch (the
 * `cron` step, steps/cron.ts) and after a rollback (for the release gone back to).
 *
 * - systemd: the app's timers become the release's jobs (systemd.ts): new and changed ones are
 *   written, enabled and restarted; those of jobs no longer there are disabled and removed.
 * - pm2: the scheduler (scheduler.ts) reads the serving release's jobs every minute, so a changed
 *   or removed job needs nothing; this only makes sure the scheduler runs when there are jobs.
 * @module
 */
import type { ServerConfig } from "../config/schema.ts";
import type { ServiceSpec } from "../managers/manager.ts";
import { pm2 } from "../managers/pm2.ts";
import type { AppPaths } from "../paths.ts";
import { selfCommand } from "../paths.ts";
import type { Runner } from "../runner.ts";
import { type CronJob, jobsOf } from "./job.ts";
import { SCHEDULER_SERVICE } from "./scheduler.ts";
import { installedJobs, installedUnits, timerPlans } from "./systemd.ts";

/** What syncing needs: a deploy's or a rollback's context has it all (SwitchContext). */
export interface CronSyncContext {
  root: string;
  paths: AppPaths;
  config: ServerConfig;
  /** Runs the changes (a DryRunner in a dry run). */
  runner: Runner;
  /** Answers questions for real, also in a dry run (is the scheduler running?). */
  inspect: Runner;
  /** The deploy-paradigm executable the units and the scheduler run (default: {@link selfCommand}). */
  self?: string;
}

/** The environment of the units and the scheduler: the server root, when it is not `/` (tests, the demo). */
function serviceEnv(root: string): Record<string, string> {
  return root === "/" ? {} : { DEPLOY_PARADIGM_PREFIX: root };
}

/** The PM2 scheduler as a service of ours. */
export function schedulerService(root: string, self = selfCommand()): ServiceSpec {
  return {
    name: SCHEDULER_SERVICE,
    description: "deploy-paradigm cron scheduler (runs the cron jobs of pm2 apps)",
    argv: [self, "cron-scheduler"],
    env: serviceEnv(root),
    root,
  };
}

/**
 * Whether there is anything to do or say for release `meta`: it or the release it replaces
 * (`replaced`) has jobs, or (systemd) timers of the app are there.
 */
export async function hasCron(
  ctx: Pick<CronSyncContext, "root" | "paths" | "config">,
  meta: { cron?: CronJob[] } | undefined,
  replaced?: { cron?: CronJob[] },
) {
  if (jobsOf(meta).length || jobsOf(replaced).length) return true;
  return ctx.config.manager === "systemd" && (await installedJobs(ctx.paths.app, ctx.root)).length > 0;
}

/**
 * Makes the server run the jobs of release `meta` (see the module); returns a line saying what it
 * did, and (pm2) which jobs of `replaced`, the release it replaces, no longer run.
 */
export async function syncCron(
  ctx: CronSyncContext,
  meta: { cron?: CronJob[] } | undefined,
  replaced?: { cron?: CronJob[] },
): Promise<string> {
  const jobs = jobsOf(meta);
  const names = jobs.map((job) => `${job.name} (${job.schedule})`).join(", ");
  if (ctx.config.manager === "systemd") {
    const installed = await installedUnits(ctx.paths.app, ctx.root);
    for (const plan of timerPlans(ctx.paths.app, jobs, installed, ctx.root, serviceEnv(ctx.root), ctx.self)) {
      await ctx.runner.apply(plan);
    }
    const gone = [...installed.keys()].filter((name) => !jobs.some((job) => job.name === name)).sort();
    return [
      jobs.length ? `timers of ${names}` : "no cron jobs",
      ...(gone.length ? [`removed the timers of ${gone.join(", ")}`] : []),
    ].join("; ");
  }
  const dropped = jobsOf(replaced).map((job) => job.name).filter((name) => !jobs.some((job) => job.name === name));
  const gone = dropped.length ? `; the scheduler no longer runs ${dropped.sort().join(", ")}` : "";
  if (!jobs.length) return `no cron jobs${gone}`;
  const running = await pm2.running!(ctx.inspect, SCHEDULER_SERVICE, ctx.root);
  if (running && running.pid > 0) return `${names}; the scheduler (pm2 ${SCHEDULER_SERVICE}) runs them${gone}`;
  await ctx.runner.apply(pm2.installService({ ...schedulerService(ctx.root, ctx.self), restart: running !== null }));
  return `${names}; started the scheduler (pm2 ${SCHEDULER_SERVICE})${gone}`;
}
