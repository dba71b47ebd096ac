/**
 * A canary's figures per side (stable, canary): requests ended, 5xx answers and a latency
 * histogram. Pure, shared by the proxy (which counts, ./canary.ts) and the deploy engine (which
 * compares two readings of the control op `{"op": "canary", "app"}` with {@link diffSide} and
 * judges the interval between them).
 *
 * The histogram's buckets are {@link CANARY_BUCKETS_MS}: log-spaced upper bounds less than 5 %
 * apart from 0.5 ms to 60 s, then +Inf, so a quantile read from it ({@link quantileMs}) is the
 * true one or up to 5 % more.
 * @module
 */

/** The smallest and largest finite bucket bounds, in milliseconds. */
const LOWEST_MS = 0.5;
const HIGHEST_MS = 60_000;
/** Finite buckets after the first: the ratio between neighbours is (120000)^(1/240) ≈ 1.0499. */
const STEPS = 240;

/**
 * Latency bucket upper bounds in milliseconds, ascending: 0.5 ms to 60 s, each less than 5 %
 * above the one before, then `Infinity` for anything longer. A duration d counts in the first
 * bucket whose bound is ≥ d.
 */
export const CANARY_BUCKETS_MS: readonly number[] = Object.freeze([
  ...Array.from(
    { length: STEPS + 1 },
    (_, i) => Number((LOWEST_MS * Math.pow(HIGHEST_MS / LOWEST_MS, i / STEPS)).toPrecision(6)),
  ),
  Infinity,
]);

/** One side of a canary (the stable release's or the canary's) as counted by the proxy. */
export interface SideStats {
  /** The slot this side's requests go to (blue, green). */
  slot: string;
  /** Requests answered (counted when the answer's head came) or failed (when they ended). */
  requests: number;
  /** Of those, the answers with a 5xx status (the proxy's own 502/504 included). */
  errors: number;
  /**
   * Counts of durations to the answer's head per bucket of {@link CANARY_BUCKETS_MS} (same
   * length); WebSockets (101) are not in it: their handshake is no request's latency.
   */
  histogram: number[];
}

/** A canary's figures since the proxy loaded its canary.json (kept through percent changes). */
export interface CanaryStats {
  /** The share of clients sent to the canary now, in percent. */
  percent: number;
  /** canary.json's `since`. */
  since: string;
  stable: SideStats;
  canary: SideStats;
}

/** A side with nothing counted yet. */
export function emptySide(slot: string): SideStats {
  return { slot, requests: 0, errors: 0, histogram: new Array(CANARY_BUCKETS_MS.length).fill(0) };
}

/** The index in {@link CANARY_BUCKETS_MS} of the bucket a duration of `ms` counts in. */
export function bucketIndex(ms: number): number {
  if (!(ms > LOWEST_MS)) return 0; // NaN and negative durations too
  let low = 1, high = CANARY_BUCKETS_MS.length - 1;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (CANARY_BUCKETS_MS[middle] >= ms) high = middle;
    else low = middle + 1;
  }
  return low;
}

/**
 * Counts one request answered with `status` (0: no answer) after `ms` milliseconds in `side`;
 * a WebSocket (101) in its requests but not in its histogram.
 */
export function countRequest(side: SideStats, ms: number, status: number): void {
  side.requests++;
  if (status >= 500) side.errors++;
  if (status !== 101) side.histogram[bucketIndex(ms)]++;
}

/**
 * What `later` counted after `earlier` (two readings of the same side). When `later` is not a
 * continuation of `earlier` (another slot, or a count went down: the proxy restarted or loaded a
 * new canary in between), `later` itself: everything it counted is new.
 */
export function diffSide(later: SideStats, earlier: SideStats): SideStats {
  const continues = later.slot === earlier.slot && later.requests >= earlier.requests &&
    later.errors >= earlier.errors && later.histogram.length === earlier.histogram.length &&
    later.histogram.every((count, i) => count >= earlier.histogram[i]);
  if (!continues) return { ...later, histogram: [...later.histogram] };
  return {
    slot: later.slot,
    requests: later.requests - earlier.requests,
    errors: later.errors - earlier.errors,
    histogram: later.histogram.map((count, i) => count - earlier.histogram[i]),
  };
}

/**
 * The `q` quantile (0 to 1; 0.95 for p95) of the durations counted in `histogram`, in
 * milliseconds: the upper bound of the bucket it falls in (the true value or up to 5 % more; 60 s
 * for anything longer). Null when the histogram is empty.
 */
export function quantileMs(histogram: readonly number[], q: number): number | null {
  if (!(q >= 0 && q <= 1)) throw new RangeError(`a quantile is from 0 to 1 (got ${q})`);
  let total = 0;
  for (const count of histogram) total += count;
  if (total <= 0) return null;
  const rank = Math.max(1, Math.ceil(q * total));
  let seen = 0;
  for (let i = 0; i < histogram.length; i++) {
    seen += histogram[i];
    if (seen >= rank) return Math.min(CANARY_BUCKETS_MS[Math.min(i, CANARY_BUCKETS_MS.length - 1)], HIGHEST_MS);
  }
  return HIGHEST_MS;
}
