/**
 * Discord webhooks: one embed, mentions disabled, its timestamp always an ISO 8601 time.
 * @module
 */
import { facts, type Notifier } from "./notifier.ts";

/** The discord target type. */
export const discord: Notifier = {
  payload: (notice) => ({
    username: "deploy-paradigm",
    embeds: [{
      title: notice.title.slice(0, 256),
      description: notice.text?.slice(0, 4000),
      color: notice.ok ? 0x2e7d32 : 0xc62828,
      fields: facts(notice).map(([name, value]) => ({ name, value: value.slice(0, 1024), inline: true })),
      timestamp: isoTime(notice.at),
      footer: { text: `deploy-paradigm · ${notice.event}` },
    }],
    allowed_mentions: { parse: [] },
  }),
};

/**
 * `at` as the ISO 8601 time Discord's `timestamp` requires (it refuses the whole message
 * otherwise): the time of sending when `at` is not a time.
 */
function isoTime(at: string): string {
  const ms = Date.parse(at);
  const iso = Number.isNaN(ms) ? "" : new Date(ms).toISOString();
  return /^\d{4}-/.test(iso) ? iso : new Date().toISOString();
}
