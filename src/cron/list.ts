/**
 * `cron <app>`: the serving release's cron jobs, each with its next run (server's local time) and
 * its last recorded run (cron.log).
 * @module
 */
import { columns } from "../terminal.ts";
import { requireAppName } from "../config/names.ts";
import { currentRelease, readReleaseMeta } from "../deploy/releases.ts";
import { appPaths } from "../paths.ts";
import { jobsOf } from "./job.ts";
import { type CronRun, lastRuns } from "./log.ts";
import { isScheduleError, nextRun, parseSchedule } from "./schedule.ts";
import { loadServerConfig } from "../config/server_config.ts";

/** One job as `cron <app>` shows it. */
export interface JobRow {
  name: string;
  schedule: string;
  argv: string[];
  timeoutMs: number;
  /** ISO 8601; none for a schedule that does not parse (an older release's). */
  nextRun?: string;
  lastRun?: CronRun;
}

/** The jobs of `app`'s serving release with their next and last runs. */
export async function listJobs(app: string, root?: string, now = new Date()): Promise<JobRow[]> {
  requireAppName(app);
  const paths = appPaths(app, root);
  await loadServerConfig(paths); // the app is set up here
  const release = await currentRelease(paths);
  const meta = release ? await readReleaseMeta(paths, release) : undefined;
  const last = await lastRuns(paths);
  return jobsOf(meta).map((job) => {
    const schedule = parseSchedule(job.schedule);
    return {
      ...job,
      ...(isScheduleError(schedule) ? {} : { nextRun: nextRun(schedule, now).toISOString() }),
      ...(last[job.name] ? { lastRun: last[job.name] } : {}),
    };
  });
}

/** "2026-12-03 15:00" in the server's local time. */
function local(iso: string): string {
  const at = new Date(iso);
  const two = (v: number) => String(v).padStart(2, "0");
  return `${at.getFullYear()}-${two(at.getMonth() + 1)}-${two(at.getDate())} ${two(at.getHours())}:${
    two(at.getMinutes())
  }:${two(at.getSeconds())}`;
}

/** Prints `cron <app>` as a table (or JSON). */
export async function showJobs(app: string, json: boolean, root?: string): Promise<number> {
  const rows = await listJobs(app, root);
  if (json) {
    console.log(JSON.stringify(rows, null, 2));
    return 0;
  }
  if (!rows.length) {
    const serving = await currentRelease(appPaths(app, root));
    console.log(
      serving
        ? `${app} has no cron jobs in its serving release.`
        : `${app} has no serving release yet: no cron jobs run.`,
    );
    return 0;
  }
  const table = [
    ["JOB", "SCHEDULE", "NEXT RUN", "LAST RUN"],
    ...rows.map((row) => [
      row.name,
      row.schedule,
      row.nextRun ? local(row.nextRun).slice(0, 16) : "-",
      row.lastRun
        ? `${row.lastRun.outcome}${row.lastRun.exitCode ? ` (exit ${row.lastRun.exitCode})` : ""} at ${
          local(row.lastRun.start)
        }, ${(row.lastRun.durationMs / 1000).toFixed(1)} s`
        : "never",
    ]),
  ];
  for (const line of columns(table).lines) console.log(line);
  console.log(timesNote());
  return 0;
}

/**
 * The last line of `cron <app>`: the zone its times are in. A TZ that names no zone known here
 * (`TZ=Nonexistent/Zone`) leaves the process without one: its times are then UTC, said so.
 */
export function timesNote(at = new Date()): string {
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  if (zone && zone !== "Etc/Unknown") return `(times: the server's, ${zone})`;
  const offset = -at.getTimezoneOffset();
  const two = (v: number) => String(Math.floor(v)).padStart(2, "0");
  const utc = offset === 0
    ? "UTC"
    : `UTC${offset < 0 ? "-" : "+"}${two(Math.abs(offset) / 60)}:${two(Math.abs(offset) % 60)}`;
  const tz = Deno.env.get("TZ");
  return `(times: ${utc}; ${tz ? `TZ=${tz} names no time zone known here` : "the server's time zone is not known"})`;
}
