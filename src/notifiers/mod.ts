/**
 * The notification target types, by name: one file per type, one line here. A name in
 * {@link TARGET_TYPES} without a notifier fails `deno check`; the `type` of `notify:` and
 * `alerts:` targets comes from here.
 * @module
 */
import { discord } from "./discord.ts";
import type { Notifier } from "./notifier.ts";
import { slack } from "./slack.ts";
import { webhook } from "./webhook.ts";

export type { Notifier } from "./notifier.ts";

/** The target types. */
export const TARGET_TYPES = ["webhook", "slack", "discord"] as const;

/** A target type. */
export type TargetType = typeof TARGET_TYPES[number];

/** Every target type's notifier. */
export const NOTIFIERS: Readonly<Record<TargetType, Notifier>> = { webhook, slack, discord };
