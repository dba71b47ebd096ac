/**
 * Notifications: deploy outcomes (from the server, `notify:` in config.yml) and fleet alerts
 * (from the laptop, `alerts:` in the fleet config) to a plain webhook, Slack or Discord, each in
 * its native payload (one file per target type in src/notifiers/). Delivery is bounded by a
 * timeout and never throws: a receiver that hangs or fails costs at most the timeout and is only
 * reported. URLs (which carry their secret) are shown redacted everywhere.
 * @module
 */
import { z } from "zod";
import { NOTIFIERS, TARGET_TYPES, type TargetType } from "./notifiers/mod.ts";

export { TARGET_TYPES, type TargetType };

/** Events of an app on its server (config.yml `notify:`): its deploys, and its cron runs (src/cron/run.ts). */
export const DEPLOY_EVENTS = ["success", "failed", "rolled_back", "cancelled", "refused", "cron_failed"] as const;
/** Events of the fleet monitor. */
export const FLEET_EVENTS = [
  "unhealthy",
  "recovered",
  "unreachable",
  "back",
  "failed",
  "rolled_back",
  "certificate_expiring",
  "certificate_renewed",
  "over_limit",
  "rule_firing",
  "rule_recovered",
] as const;

/** The longest a notification may take. */
export const NOTIFY_TIMEOUT_MS = 5_000;

/** A `notify:`/`alerts:` target; `events` defaults to all of them. */
export function targetSchema<const E extends readonly [string, ...string[]]>(events: E) {
  return z.strictObject({
    type: z.enum(TARGET_TYPES, { error: `must be one of ${TARGET_TYPES.join(", ")}` }),
    url: z.url({ protocol: /^https?$/, error: "must be an http(s) URL" }),
    events: z.array(z.enum(events, { error: `must be one of ${events.join(", ")}` }))
      .min(1, { error: "must name at least one event; leave events out for all of them" }).optional(),
  });
}

/** A notification target. */
export interface Target {
  type: TargetType;
  url: string;
  events?: readonly string[];
}

/** What happened, in words and fields. */
export interface Notice {
  /** The event, e.g. `failed`, `unreachable`. */
  event: string;
  /** Good news (a success, a recovery) or bad. */
  ok: boolean;
  /** One line: what happened. */
  title: string;
  /** Key facts: app, server, version, commit, duration, step… (only those that apply). */
  fields: Record<string, string | undefined>;
  /** The detail, e.g. the failure's message. */
  text?: string;
  at: string;
}

/** What a delivery did. */
export interface Delivery {
  target: string;
  ok: boolean;
  /** `200 in 45 ms`, or why it failed. */
  detail: string;
}

/** `https://hooks.slack.com/…`: a URL without what follows its host (the secret lives there). */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.protocol}//${parsed.host}/…`;
  } catch {
    return "(an invalid URL)";
  }
}

/** The request body of `notice` for a target of `type`. */
export function payload(type: TargetType, notice: Notice): unknown {
  return NOTIFIERS[type].payload(notice);
}

/** Whether `target` takes notices of `event` (its `events`, all without them). */
export function wants(target: Target, event: string): boolean {
  return !target.events || target.events.includes(event);
}

/** Sends `notice` to every target that wants its event, at once; each bounded by `timeoutMs`. */
export async function notifyAll(
  targets: readonly Target[],
  notice: Notice,
  timeoutMs = NOTIFY_TIMEOUT_MS,
): Promise<Delivery[]> {
  const wanted = targets.filter((t) => wants(t, notice.event));
  return await Promise.all(wanted.map((target) => send(target, notice, timeoutMs)));
}

async function send(target: Target, notice: Notice, timeoutMs: number): Promise<Delivery> {
  const label = `${target.type} ${redactUrl(target.url)}`;
  const started = performance.now();
  const ms = () => `${Math.round(performance.now() - started)} ms`;
  try {
    const response = await fetch(target.url, {
      method: "POST",
      headers: { "content-type": "application/json", "user-agent": "deploy-paradigm" },
      body: JSON.stringify(payload(target.type, notice)),
      signal: AbortSignal.timeout(timeoutMs),
      redirect: "manual",
    });
    await response.body?.cancel();
    return { target: label, ok: response.ok, detail: `${response.status} in ${ms()}` };
  } catch (error) {
    const timedOut = error instanceof DOMException && error.name === "TimeoutError";
    const why = timedOut ? `no answer within ${timeoutMs} ms` : failureText(error);
    // The error may quote the URL: never print it whole.
    return { target: label, ok: false, detail: why.replaceAll(target.url, redactUrl(target.url)) };
  }
}

/**
 * A failed request's message with its cause, when it has one (`fetch failed` alone says nothing):
 * `fetch failed: tcp connect error: Connection refused`.
 */
export function failureText(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const cause = error.cause instanceof Error
    ? error.cause.message.replace(/^error sending request for url \([^)]*\): /, "").replace(
      /^client error \(\w+\): /,
      "",
    )
      .replace(/ \(os error \d+\)$/, "")
    : "";
  return cause ? `${error.message}: ${cause}` : error.message;
}
