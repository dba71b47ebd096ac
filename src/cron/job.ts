/**
 * A scheduled job of an app (deploy.yml `cron:`), as a release records it in its metadata: the
 * LEAD's schema turns each `cron:` entry into one {@link CronJob}; everything under src/cron/
 * works from these.
 * @module
 */

/** One scheduled job of a release. */
export interface CronJob {
  /** Its name: {@link JOB_NAME}, unique within the app; it names the units, the lock and the output log. */
  name: string;
  /** The 5-field cron schedule or a macro (@daily…), as written; see schedule.ts. */
  schedule: string;
  /** The command, resolved for the release like the web command (argv[0] absolute, or resolved at run time). */
  argv: string[];
  /** The longest a run may take: then its process group gets SIGTERM, and SIGKILL 3 s later. */
  timeoutMs: number;
}

/** After SIGTERM at a job's timeout, SIGKILL follows this much later (ProcessRunner's cancel). */
export const KILL_GRACE_MS = 3000;

/** A job's name: a lowercase letter, then lowercase letters, digits and `-`. */
export const JOB_NAME = /^[a-z][a-z0-9-]*$/;

/** The longest job name (unit names are `<app>-cron-<name>.timer`). */
export const JOB_NAME_MAX = 40;

/** What is wrong with `name` as a job name, in words; undefined when it is fine. */
export function jobNameProblem(name: string): string | undefined {
  if (!JOB_NAME.test(name)) {
    return "must start with a lowercase letter and hold only lowercase letters, digits and -, e.g. nightly-report";
  }
  if (name.length > JOB_NAME_MAX) return `must be at most ${JOB_NAME_MAX} characters (it has ${name.length})`;
  return undefined;
}

/** The cron jobs of a release's metadata (none for a release made before `cron:` existed). */
export function jobsOf(meta: { cron?: CronJob[] } | undefined): CronJob[] {
  return meta?.cron ?? [];
}
