import type { CommandSpec } from "../cli.ts";
import { rootOnly } from "./root_only.ts";

/** Aborts `stop` on SIGTERM, SIGINT or SIGHUP while `fn` runs. */
async function untilSignal<T>(fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const stop = new AbortController();
  const signals = ["SIGTERM", "SIGINT", "SIGHUP"] as const;
  const listeners = signals.map((signal) => [signal, () => stop.abort(signal)] as const);
  for (const [signal, listener] of listeners) Deno.addSignalListener(signal, listener);
  try {
    return await fn(stop.signal);
  } finally {
    for (const [signal, listener] of listeners) Deno.removeSignalListener(signal, listener);
  }
}

/** `cron-run <app> <job>`: what the timers and the scheduler start. */
export const cronRunCommand: CommandSpec = {
  name: "cron-run",
  summary: "Run one cron job of an app's serving release now (its timer or the cron scheduler starts it)",
  args: [
    { name: "app", description: "The app" },
    { name: "job", description: "The job's name (deploy.yml cron:)" },
  ],
  async run({ args }) {
    const { runJob } = await import("../cron/run.ts");
    try {
      const run = await untilSignal((signal) => runJob(args[0], args[1], { signal }));
      return run.outcome === "ok" || run.outcome === "skipped" ? 0 : 1;
    } catch (error) {
      throw rootOnly(error, `cron-run ${args[0]} ${args[1]}`);
    }
  },
};

/** `cron-scheduler`: the PM2 service that starts the cron jobs of pm2 apps. */
export const cronSchedulerCommand: CommandSpec = {
  name: "cron-scheduler",
  summary: "Start the cron jobs of pm2 apps every minute (runs as the pm2 service deploy-paradigm-cron)",
  async run() {
    const { runScheduler } = await import("../cron/scheduler.ts");
    await untilSignal((signal) => runScheduler({ signal }));
    return 0;
  },
};

/** `cron <app> [--json]`. */
export const cronCommand: CommandSpec = {
  name: "cron",
  summary: "List an app's cron jobs: schedule, next run, last run (see cron.log for every run)",
  args: [{ name: "app", description: "The app" }],
  options: [{ name: "json", description: "Print JSON instead of a table" }],
  async run({ args, opts }) {
    const { showJobs } = await import("../cron/list.ts");
    try {
      return await showJobs(args[0], opts.json === true);
    } catch (error) {
      throw rootOnly(error, `cron ${args[0]}`);
    }
  },
};
