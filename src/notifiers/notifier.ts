/**
 * A notification target type (see mod.ts for the registry): the request body it takes.
 * @module
 */
import type { Notice } from "../notify.ts";

/** One target type. */
export interface Notifier {
  /** The JSON request body of `notice`, in the target's native form. */
  payload(notice: Notice): unknown;
}

/** The notice's fields that have a value, as [key, value] pairs. */
export function facts(notice: Notice): [string, string][] {
  return Object.entries(notice.fields).filter((entry): entry is [string, string] =>
    entry[1] !== undefined && entry[1] !== ""
  );
}
