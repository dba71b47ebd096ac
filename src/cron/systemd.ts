/**
 * Cron jobs under systemd: per job a `<app>-cron-<job>.timer` (the schedule as `OnCalendar=`
 * lines, see schedule.ts) that starts `<app>-cron-<job>.service` (Type=oneshot: `deploy-paradigm
 * cron-run <app> <job>`, which takes the job's lock, runs it as the app's user and records it).
 *
 * `Persistent=false`: a run missed while the server was off is not made up at boot, as cron does
 * not, and as the PM2 scheduler cannot (it is not running then either): the same jobs run under
 * both managers. `AccuracySec=1s`: on the minute, not within systemd's default minute.
 *
 * Units are found again by the line {@link MARK} they start with (never by a name pattern: the
 * app `web-cron-x` is not a job of `web`).
 * @module
 */
import { join } from "node:path";
import { unitQuote, unitWrite } from "../managers/systemd.ts";
import { selfCommand, systemdDir } from "../paths.ts";
import type { Cmd, Plan } from "../runner.ts";
import { type CronJob, KILL_GRACE_MS } from "./job.ts";
import { isScheduleError, onCalendar, parseSchedule } from "./schedule.ts";

/** The first line of every cron unit, naming its app and job. */
export const MARK = "# deploy-paradigm cron job";

/** `<app>-cron-<job>`: the unit name without its suffix. */
export function cronUnit(app: string, job: string): string {
  return `${app}-cron-${job}`;
}

function header(app: string, job: CronJob): string {
  return `${MARK} ${app} ${job.name}: written by each deploy, changes are overwritten.`;
}

/** The service of a job: one run of `deploy-paradigm cron-run <app> <job>`. */
export function cronService(app: string, job: CronJob, env: Record<string, string>, self = selfCommand()): string {
  // cron-run kills the job at its timeout (SIGTERM, then SIGKILL): systemd only steps in if that fails.
  const limit = Math.ceil((job.timeoutMs + KILL_GRACE_MS) / 1000) + 60;
  return [
    header(app, job),
    "[Unit]",
    `Description=deploy-paradigm cron job ${job.name} of ${app}`,
    "After=network.target",
    "",
    "[Service]",
    "Type=oneshot",
    `ExecStart=${[self, "cron-run", app, job.name].map((word) => unitQuote(word)).join(" ")}`,
    ...Object.entries(env).map(([k, v]) => `Environment=${unitQuote(`${k}=${v}`, false)}`),
    `TimeoutStartSec=${limit}`,
    "",
  ].join("\n");
}

/** The timer of a job: its schedule as OnCalendar= lines. */
export function cronTimer(app: string, job: CronJob): string {
  const schedule = parseSchedule(job.schedule);
  if (isScheduleError(schedule)) {
    throw new Error(`cron job ${job.name}: schedule "${job.schedule}": ${schedule.error}`);
  }
  return [
    header(app, job),
    "[Unit]",
    `Description=deploy-paradigm cron job ${job.name} of ${app} (${job.schedule.replaceAll("%", "%%")})`,
    "",
    "[Timer]",
    ...onCalendar(schedule).map((line) => `OnCalendar=${line}`),
    "AccuracySec=1s",
    "Persistent=false",
    `Unit=${cronUnit(app, job.name)}.service`,
    "",
    "[Install]",
    "WantedBy=timers.target",
    "",
  ].join("\n");
}

/** The units of one job as they are on disk. */
export interface JobUnits {
  service?: string;
  timer?: string;
}

/** The cron units of `app` in the systemd directory under `root`, by job (found by their first line). */
export async function installedUnits(app: string, root: string): Promise<Map<string, JobUnits>> {
  const dir = systemdDir(root);
  const jobs = new Map<string, JobUnits>();
  try {
    for await (const entry of Deno.readDir(dir)) {
      const kind = /\.(service|timer)$/.exec(entry.name)?.[1] as keyof JobUnits | undefined;
      if (!entry.name.startsWith(`${app}-cron-`) || !kind) continue;
      const content = await Deno.readTextFile(join(dir, entry.name)).catch(() => "");
      const [, owner, job] = /^# deploy-paradigm cron job (\S+) (\S+):/.exec(content.split("\n")[0]) ?? [];
      if (owner !== app || !job || entry.name !== `${cronUnit(app, job)}.${kind}`) continue;
      jobs.set(job, { ...jobs.get(job), [kind]: content });
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  return jobs;
}

/** The jobs of `app` whose units are there ({@link installedUnits}), sorted. */
export async function installedJobs(app: string, root: string): Promise<string[]> {
  return [...(await installedUnits(app, root)).keys()].sort();
}

function systemctl(args: string[]): Cmd {
  return { argv: ["systemctl", ...args], timeoutMs: 60_000 };
}

/**
 * What makes the server's timers of `app` the `jobs`. First the units of jobs no longer there go
 * (their timer disabled and stopped; a run of them going on is left to finish). Then the units of
 * new and changed jobs are written; every job's timer is enabled and started (where it is not
 * already), and a changed one restarted, so that its new schedule counts now. An unchanged timer
 * is left alone (a restart at the moment it is due could skip that run). `installed`: what is on
 * disk ({@link installedUnits}).
 */
export function timerPlans(
  app: string,
  jobs: readonly CronJob[],
  installed: ReadonlyMap<string, JobUnits>,
  root: string,
  env: Record<string, string>,
  self = selfCommand(),
): Plan[] {
  const dir = systemdDir(root);
  const gone = [...installed.keys()].filter((name) => !jobs.some((job) => job.name === name)).sort();
  const plans: Plan[] = [];
  if (gone.length) {
    plans.push({
      files: [],
      commands: gone.map((name) => ({
        ...systemctl(["disable", "--now", "--quiet", `${cronUnit(app, name)}.timer`]),
        allowFailure: true,
      })),
      remove: gone.flatMap((name) => [".timer", ".service"].map((suffix) => join(dir, cronUnit(app, name) + suffix))),
    });
  }
  const units = jobs.map((job) => ({
    job,
    service: cronService(app, job, env, self),
    timer: cronTimer(app, job),
    before: installed.get(job.name),
  }));
  const changed = units.filter((u) => u.before?.service !== u.service || u.before?.timer !== u.timer);
  const timer = (name: string) => `${cronUnit(app, name)}.timer`;
  const restart = changed.filter((u) => u.before?.timer !== undefined).map((u) => timer(u.job.name));
  if (changed.length || gone.length || units.length) {
    plans.push({
      files: changed.flatMap(({ job, service, timer }) => [
        unitWrite(join(dir, `${cronUnit(app, job.name)}.service`), service),
        unitWrite(join(dir, `${cronUnit(app, job.name)}.timer`), timer),
      ]),
      commands: [
        ...(changed.length || gone.length ? [systemctl(["daemon-reload"])] : []),
        ...(units.length ? [systemctl(["enable", "--now", "--quiet", ...units.map((u) => timer(u.job.name))])] : []),
        ...(restart.length ? [systemctl(["restart", ...restart])] : []),
      ],
    });
  }
  return plans;
}
