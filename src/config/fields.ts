/**
 * The building blocks of the config schemas (./schema.ts and its parts): durations, commands (no
 * shell: a string split into words, or an argv list), the health check and ports.
 * @module
 */
import { z } from "zod";
import { splitCommand } from "./argv.ts";

const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Parses `500ms`, `2s`, `1.5m`, `1h`, or a number of seconds, into milliseconds. */
export function parseDuration(value: string | number): number | undefined {
  if (typeof value === "number") return Number.isFinite(value) && value >= 0 ? finite(value * 1000) : undefined;
  const match = DURATION.exec(value.trim());
  return match ? finite(Number(match[1]) * UNIT_MS[match[2]]) : undefined;
}

/** `1e306` seconds or 400 nines of hours are no duration: they overflow to Infinity. */
function finite(ms: number): number | undefined {
  return Number.isFinite(ms) ? ms : undefined;
}

const MUST_BE_DURATION = 'must be a duration like "500ms", "2s", "1m" or "1h" (units: ms, s, m, h)';

/**
 * The longest duration a config may give by default: every one of them ends up in a timer, and
 * `setTimeout` takes at most 2^31-1 ms (about 24.8 days); past that it fires after 1 ms (a busy
 * loop). 596h is the last whole hour under it.
 */
export const MAX_TIMER_MS = 596 * 3_600_000;

/** Duration units, largest first. */
const UNITS: [unit: string, ms: number][] = [["h", 3_600_000], ["m", 60_000], ["s", 1000], ["ms", 1]];

/** `ms` as a duration is written in config: "10ms", "1s", "24h" (in the largest unit it is a whole number of). */
function written(ms: number): string {
  const [unit, size] = UNITS.find(([, size]) => ms % size === 0) ?? ["ms", 1];
  return `${ms / size}${unit}`;
}

/**
 * A duration in config (`"2s"`, or seconds), to milliseconds; `fallback` when absent. At most
 * `maxMs`, which is never more than {@link MAX_TIMER_MS}.
 */
export const duration = (fallback: string, maxMs = MAX_TIMER_MS, minMs = 0) =>
  z.union([z.string(), z.number()], { error: MUST_BE_DURATION }).default(fallback).transform((value, ctx) => {
    const ms = parseDuration(value);
    const max = Math.min(maxMs, MAX_TIMER_MS);
    if (ms === undefined || ms > max || ms < minMs) {
      ctx.issues.push({
        code: "custom",
        input: value,
        message: ms === undefined
          ? `${MUST_BE_DURATION} (got ${JSON.stringify(value)})`
          : ms < minMs
          ? `must be at least ${written(minMs)} (got ${JSON.stringify(value)})`
          : `must be at most ${written(max)}${
            max === MAX_TIMER_MS ? " (about 24 days, the longest a timer waits)" : ""
          } (got ${JSON.stringify(value)})`,
        continue: true,
      });
      return z.NEVER;
    }
    return ms;
  }).meta({ description: `A duration such as "500ms", "30s", "2m", or a number of seconds. Default ${fallback}.` });

/** Control characters in a word would end a line of a unit file, or hide in a terminal. */
// deno-lint-ignore no-control-regex
const CONTROL = /[\x00-\x08\x0b-\x1f\x7f]/;
const NO_CONTROL = "must not hold control characters (such as a carriage return or an escape)";

const commandString = z.string().superRefine((value, ctx) => {
  const argv = splitCommand(value);
  if ("error" in argv) ctx.addIssue({ code: "custom", message: argv.error });
  else if (CONTROL.test(value)) ctx.addIssue({ code: "custom", message: NO_CONTROL });
});

/** A command: a string split into words (no shell), or an argv list. */
export const command = z.union([
  commandString,
  z.array(
    z.string().min(1, "must not be empty").refine((word) => !CONTROL.test(word) && !word.includes("\n"), {
      message: `${NO_CONTROL} or a newline`,
    }),
  ).min(1, "must list at least the program to run"),
], { error: "must be a command: a string, or a list of the program and its arguments" }).meta({
  description: "A command, run without a shell: a string split at whitespace (quotes group words), or an argv list.",
});

const healthPath = z.string().regex(/^\/[^\s]*$/, 'must be a URL path starting with "/", e.g. "/health"');

/** Shortest window, interval and probe timeout of a health check: 0 would probe in a busy loop, or never. */
const HEALTH_MIN_MS = 10;

export const healthObject = z.strictObject({
  path: healthPath,
  window: duration("30s", MAX_TIMER_MS, HEALTH_MIN_MS),
  interval: duration("1s", MAX_TIMER_MS, HEALTH_MIN_MS),
  successes: z.int({ error: "must be a whole number from 1 to 100" }).min(1, "must be from 1 to 100").max(
    100,
    "must be from 1 to 100",
  ).default(3),
  timeout: duration("2s", MAX_TIMER_MS, HEALTH_MIN_MS),
}).superRefine((check, ctx) => {
  // The last of `successes` answers comes (successes - 1) intervals after the first: a window no longer never passes.
  const needed = (check.successes - 1) * check.interval;
  if (typeof check.window === "number" && needed >= check.window) {
    ctx.addIssue({
      code: "custom",
      path: ["window"],
      message: `is too short for ${check.successes} answers ${check.interval / 1000}s apart: make it longer ` +
        `than ${needed / 1000}s, or lower successes or interval (got ${check.window / 1000}s)`,
    });
  }
});

/** The health check: the app is healthy after `successes` consecutive 2xx answers within `window`. */
export const healthCheck = z.union([healthPath, healthObject], {
  error: 'must be a URL path such as "/health", or a mapping { path, window, interval, successes, timeout }',
}).transform((value) => typeof value === "string" ? healthObject.parse({ path: value }) : value).meta({
  description: 'A path such as "/health", or { path, window: 30s, interval: 1s, successes: 3, timeout: 2s }.',
});

/** A TCP port, 1-65535. */
export const port = z.int({ error: "must be a whole number from 1 to 65535" }).min(1, "must be from 1 to 65535").max(
  65535,
  "must be from 1 to 65535",
);
