/**
 * Notifications: deploy outcomes (from the server, `notify:` in config.yml) and fleet alerts
 * (from the laptop, `alerts:` in the fleet config) to a plain webhook, Slack or Discord, each in
 * its native payload. Delivery is bounded by a timeout and never throws: a receiver that hangs or
 * fails costs at most the timeout and is only reported. URLs (which carry their secret) are shown
 * redacted everywhere.
 * @module
 */
import { z } from "zod";

/** Events of a deploy. */
export const DEPLOY_EVENTS = ["success", "failed", "rolled_back", "cancelled"] as const;
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
] as const;

/** The longest a notification may take. */
export const NOTIFY_TIMEOUT_MS = 5_000;

/** A `notify:`/`alerts:` target; `events` defaults to all of them. */
export function targetSchema<const E extends readonly [string, ...string[]]>(events: E) {
  return z.strictObject({
    type: z.enum(["webhook", "slack", "discord"], { error: "must be one of webhook, slack, discord" }),
    url: z.url({ protocol: /^https?$/, error: "must be an http(s) URL" }),
    events: z.array(z.enum(events, { error: `must be one of ${events.join(", ")}` })).min(1).optional(),
  });
}

/** A notification target. */
export interface Target {
  type: "webhook" | "slack" | "discord";
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

const facts = (notice: Notice) =>
  Object.entries(notice.fields).filter((entry): entry is [string, string] => entry[1] !== undefined && entry[1] !== "");

/** The request body of `notice` for a target of `type`. */
export function payload(type: Target["type"], notice: Notice): unknown {
  if (type === "slack") {
    const line = facts(notice).map(([key, value]) => `*${key}:* ${value}`).join("  ");
    const detail = notice.text ? escapeSlack(notice.text.slice(0, 2800)) : undefined;
    return {
      text: `${notice.ok ? "✅" : "❌"} ${escapeSlack(notice.title)}`,
      blocks: [
        {
          type: "section",
          text: { type: "mrkdwn", text: `${notice.ok ? "✅" : "❌"} *${escapeSlack(notice.title)}*` },
        },
        ...(line ? [{ type: "section", text: { type: "mrkdwn", text: escapeSlack(line) } }] : []),
        ...(detail ? [{ type: "section", text: { type: "mrkdwn", text: "```" + detail + "```" } }] : []),
        { type: "context", elements: [{ type: "mrkdwn", text: `deploy-paradigm · ${notice.event} · ${notice.at}` }] },
      ],
    };
  }
  if (type === "discord") {
    return {
      username: "deploy-paradigm",
      embeds: [{
        title: notice.title.slice(0, 256),
        description: notice.text?.slice(0, 4000),
        color: notice.ok ? 0x2e7d32 : 0xc62828,
        fields: facts(notice).map(([name, value]) => ({ name, value: value.slice(0, 1024), inline: true })),
        timestamp: notice.at,
        footer: { text: `deploy-paradigm · ${notice.event}` },
      }],
      allowed_mentions: { parse: [] },
    };
  }
  return {
    event: notice.event,
    ok: notice.ok,
    title: notice.title,
    text: notice.text,
    at: notice.at,
    ...notice.fields,
  };
}

/** Slack's mrkdwn control characters as entities (a value can't make a link or a mention). */
function escapeSlack(text: string): string {
  return text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
}

/** Sends `notice` to every target that wants its event, at once; each bounded by `timeoutMs`. */
export async function notifyAll(
  targets: readonly Target[],
  notice: Notice,
  timeoutMs = NOTIFY_TIMEOUT_MS,
): Promise<Delivery[]> {
  const wanted = targets.filter((t) => !t.events || t.events.includes(notice.event));
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
    const why = timedOut
      ? `no answer within ${timeoutMs} ms`
      : (error instanceof Error ? error.message : String(error));
    // The error may quote the URL: never print it whole.
    return { target: label, ok: false, detail: why.replaceAll(target.url, redactUrl(target.url)) };
  }
}
