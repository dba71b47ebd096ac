/**
 * A plain webhook: the notice as a flat JSON object.
 * @module
 */
import type { Notifier } from "./notifier.ts";

/** The webhook target type. */
export const webhook: Notifier = {
  payload: (notice) => ({
    event: notice.event,
    ok: notice.ok,
    title: notice.title,
    text: notice.text,
    at: notice.at,
    ...notice.fields,
  }),
};
