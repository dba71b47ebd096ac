/**
 * The times a server writes (deploy.log's `time`, metrics.log's `ts`, a log line's own timestamp):
 * hostile input, like the rest of what it sends. A time is taken only when it is one (an ISO 8601
 * instant with its zone, for the JSON lines) and plausible: from 2000 on (before: a clock never set,
 * or made up) and not far past the fleet's own clock (a line dated 9999 would outlive retention and
 * sit in every rule's window). Otherwise the caller takes the time it pulled the line (a
 * metrics.log line is dropped).
 * @module
 */

/** The earliest time a server may claim. */
export const EARLIEST = Date.UTC(2000, 0, 1);
/** How far past the fleet's clock a deploy event or a request minute may be dated (clocks differ). */
export const RECORD_AHEAD_MS = 86_400_000;
/**
 * How far past the fleet's clock a log line may be dated: small, because a line dated later stays
 * in the log rules' windows (./rule_inputs.ts counts lines up to this far past the cycle) and makes
 * their first line's search walk every line stored since it.
 */
export const LINE_AHEAD_MS = 60_000;

/** An ISO time with its zone (`Z` or an offset): without one, Date.parse would read the fleet's local time. */
const ZONED = /^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d{1,9})?)?(Z|[+-]\d\d:?\d\d)$/;

/** Whether `ms` is a time a server may claim at `now`: from {@link EARLIEST} on, at most `ahead` ms past `now`. */
export function plausibleTime(ms: number, now: number, ahead: number = RECORD_AHEAD_MS): boolean {
  return ms >= EARLIEST && ms <= now + ahead;
}

/**
 * `value` in ms when it is an ISO 8601 instant with its zone, plausible at `now` (at most
 * {@link RECORD_AHEAD_MS} past it), else undefined.
 */
export function zonedTime(value: unknown, now: number): number | undefined {
  const ms = typeof value === "string" && ZONED.test(value) ? Date.parse(value) : NaN;
  return plausibleTime(ms, now) ? ms : undefined;
}
