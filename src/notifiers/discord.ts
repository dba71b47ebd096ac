/**
 * Discord webhooks: one embed, mentions disabled.
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
      timestamp: notice.at,
      footer: { text: `deploy-paradigm · ${notice.event}` },
    }],
    allowed_mentions: { parse: [] },
  }),
};
