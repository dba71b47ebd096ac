/**
 * Slack incoming webhooks: Block Kit sections in mrkdwn, every value escaped (the context's event
 * and time too: a fleet alert's may come from a server).
 * @module
 */
import { facts, type Notifier } from "./notifier.ts";

/** The slack target type. */
export const slack: Notifier = {
  payload(notice) {
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
        {
          type: "context",
          elements: [{ type: "mrkdwn", text: escapeSlack(`deploy-paradigm · ${notice.event} · ${notice.at}`) }],
        },
      ],
    };
  },
};

/** Slack's mrkdwn control characters as entities (a value can't make a link or a mention). */
function escapeSlack(text: string): string {
  return text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
}
