/**
 * The keys of `deploy.yml` (./schema.ts) that describe what runs and how a release is let in:
 * `processes` (web instances and workers), `cron` (scheduled jobs), `gates` (checks before traffic
 * moves) and `canary` (a share of traffic first, judged by the proxy's figures).
 * @module
 */
import { z } from "zod";
import { jobNameProblem } from "../cron/job.ts";
import { isScheduleError, parseSchedule } from "../cron/schedule.ts";
import { command, duration } from "./fields.ts";

/** A process type's name in deploy.yml `processes` (and a Procfile): `web`, `worker`, `mail-queue`. */
export const PROCESS_NAME = /^[a-z][a-z0-9-]{0,29}$/;
/** Most instances of one process type on one server. */
export const MAX_INSTANCES = 16;

const processObject = z.strictObject({
  command: command.optional().meta({ description: "How to start it (web: the type's default when left out)." }),
  instances: z.int({ error: `must be a whole number from 1 to ${MAX_INSTANCES}` })
    .min(1, `must be from 1 to ${MAX_INSTANCES}`).max(MAX_INSTANCES, `must be from 1 to ${MAX_INSTANCES}`).default(1)
    .meta({ description: "How many processes run (web: behind the proxy, each on its own port). Default 1." }),
  stopTimeout: duration("30s", 3_600_000, 1000).meta({
    description: "How long a stopping process may take after SIGTERM (its job in hand) before SIGKILL. Default 30s.",
  }),
}, { error: "must be a command, or a mapping { command, instances, stopTimeout }" });

/** One process type: a command alone, or `{ command, instances, stopTimeout }`. */
export const processSpec = z.preprocess(
  (value) => typeof value === "string" || Array.isArray(value) ? { command: value } : value,
  processObject,
);

/** A normalized process type of deploy.yml. */
export type ProcessSpec = z.output<typeof processObject>;

/** Most cron jobs of one app. */
export const MAX_CRON_JOBS = 50;

/** One scheduled job (deploy.yml `cron:`), run in the serving release: see src/cron/. */
export const cronJob = z.strictObject({
  name: z.string().superRefine((name, ctx) => {
    const problem = jobNameProblem(name);
    if (problem) ctx.addIssue({ code: "custom", message: problem });
  }).meta({ description: "Names its units, lock and log: lowercase letters, digits and -, e.g. nightly-report." }),
  schedule: z.string().superRefine((text, ctx) => {
    const parsed = parseSchedule(text);
    if (isScheduleError(parsed)) {
      for (const problem of [parsed, ...parsed.others ?? []]) {
        ctx.addIssue({ code: "custom", message: problem.error, params: { column: problem.column } });
      }
    }
  }).meta({
    description: 'A 5-field cron schedule in the server\'s time ("*/5 * * * *", "0 3 * * 1-5") or @daily etc.',
  }),
  command: command.meta({ description: "What runs, in the serving release, as the app's user with its .env." }),
  timeout: duration("1h", 24 * 3_600_000, 1000).meta({
    description: "A run still going after this is stopped (SIGTERM, then SIGKILL). Default 1h, at most 24h.",
  }),
}, { error: "must be a job: { name, schedule, command, timeout }" });

/** A job of deploy.yml `cron:`, validated. */
export type CronJobSpec = z.output<typeof cronJob>;

/** A gate's `{ command, timeout }`; `command` is required (said with an example when left out). */
const gateObject = z.strictObject({
  command: command.optional().transform((value, ctx) => {
    if (value === undefined) {
      ctx.issues.push({ code: "custom", input: value, message: "is required, e.g. command: ./scripts/smoke.sh" });
      return z.NEVER;
    }
    return value;
  }).meta({ description: "The check, run in the new release with DEPLOY_URL set (required)." }),
  timeout: duration("2m", 3_600_000, 1000).meta({
    description: 'Longest run: a duration such as "30s" or "2m". Default 2m, at most 1h.',
  }),
}, { error: "must be a command, or a mapping { command, timeout }" }).meta({ required: ["command"] });

/** One check before traffic moves to a new release (deploy.yml `gates:`): a command alone, or `{ command, timeout }`. */
export const gateSpec = z.preprocess(
  (value) => typeof value === "string" || Array.isArray(value) ? { command: value } : value,
  gateObject,
).meta({ alsoAccepts: [{ type: "string" }, { type: "array", items: { type: "string", minLength: 1 }, minItems: 1 }] });

/** A normalized gate. */
export type GateSpec = z.output<typeof gateObject>;

/** `1%` or `0.01`: a share of requests, as a fraction; a bare number only below 1 (`1` meant as 1 % is 100 %). */
const errorShare = z.union([z.string(), z.number()], { error: 'must be a share such as "1%" or 0.01' }).default("1%")
  .transform((value, ctx) => {
    const fail = (message: string) => {
      ctx.issues.push({ code: "custom", input: value, message: `${message} (got ${JSON.stringify(value)})` });
      return z.NEVER;
    };
    if (typeof value === "number") {
      return value >= 0 && value < 1 ? value : fail('must be a share below 1 such as "1%" or 0.01');
    }
    const percent = /^(\d+(?:\.\d+)?)\s*%$/.exec(value.trim());
    const rate = percent ? Number(percent[1]) / 100 : NaN;
    return rate >= 0 && rate <= 1 ? rate : fail('must be a share from "0%" to "100%" such as "1%", or 0.01');
  });

export const canaryObject = z.strictObject({
  steps: z.array(
    z.number({ error: "must be a percentage from 1 to 99" }).min(1, "must be from 1 to 99").max(
      99,
      "must be from 1 to 99",
    ),
    { error: "must be a list of percentages, e.g. [5, 25, 50]" },
  ).min(1, "must list at least one percentage, e.g. [5, 25, 50] (got [])").max(10, "must list at most 10 steps")
    .superRefine((steps, ctx) => {
      for (let i = 1; i < steps.length; i++) {
        if (steps[i] <= steps[i - 1]) {
          ctx.addIssue({
            code: "custom",
            path: [i],
            message: `must be above steps.${i - 1} (${steps[i - 1]}): steps go up`,
          });
        }
      }
    }).default([5, 25, 50]).meta({ description: "The percentages of requests the new release gets, one step each." }),
  interval: duration("1m", 3_600_000, 1000).meta({
    description: 'How long each step lasts before it is judged: a duration such as "30s" or "2m". Default 1m.',
  }),
  maxErrorRate: errorShare.meta({
    description: 'How much more 5xx the new release may answer than the old (default "1%").',
  }),
  maxLatencyRatio: z.number({ error: "must be a number above 1, e.g. 1.5" }).gt(1, "must be above 1, e.g. 1.5")
    .max(100, "must be at most 100").default(1.5)
    .meta({ description: "The new release's p95 latency may be at most this times the old one's (default 1.5)." }),
  minRequests: z.int({ error: "must be a whole number from 1 to 1000000" }).min(1, "must be from 1 to 1000000")
    .max(1_000_000, "must be from 1 to 1000000").default(50)
    .meta({ description: "Requests the new release must have answered in a step before it is judged (default 50)." }),
  maxWait: duration("10m", 24 * 3_600_000, 1000)
    .meta({
      description: "How long a step waits for minRequests before onLowTraffic decides: a duration such as " +
        '"5m". Default 10m, at least interval.',
    }),
  onLowTraffic: z.enum(["promote", "revert"], { error: "must be promote or revert" }).default("revert")
    .meta({ description: "What a step without minRequests does after maxWait: passes (promote) or reverts." }),
}, {
  error:
    "must be true, or a mapping { steps, interval, maxErrorRate, maxLatencyRatio, minRequests, maxWait, onLowTraffic }",
})
  .superRefine((canary, ctx) => {
    if (canary.maxWait < canary.interval) {
      ctx.addIssue({
        code: "custom",
        path: ["maxWait"],
        message: "must be at least interval (a step lasts one interval)",
      });
    }
  });

/** A normalized canary (deploy.yml `canary:`). */
export type CanarySpec = z.output<typeof canaryObject>;
