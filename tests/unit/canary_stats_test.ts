/**
 * A canary's statistics without the proxy: the latency buckets, counting, quantiles on known
 * histograms and the difference of two readings.
 */
import { assert, assertEquals } from "../helpers/assert.ts";
import {
  bucketIndex,
  CANARY_BUCKETS_MS,
  countRequest,
  diffSide,
  emptySide,
  quantileMs,
  type SideStats,
} from "../../src/proxy/canary_stats.ts";

Deno.test("CANARY_BUCKETS_MS: ascending from 0.5 ms to 60 s, neighbours at most 5 % apart, then +Inf", () => {
  const finite = CANARY_BUCKETS_MS.slice(0, -1);
  assertEquals(finite[0], 0.5);
  assertEquals(finite.at(-1), 60_000);
  assertEquals(CANARY_BUCKETS_MS.at(-1), Infinity);
  for (let i = 1; i < finite.length; i++) {
    assert(finite[i] > finite[i - 1], `bucket ${i} ascends`);
    assert(finite[i] / finite[i - 1] <= 1.05, `bucket ${i} is at most 5 % above the one before`);
  }
  assert(Object.isFrozen(CANARY_BUCKETS_MS));
});

Deno.test("bucketIndex: the first bucket whose bound is at least the duration", () => {
  assertEquals(bucketIndex(0), 0);
  assertEquals(bucketIndex(-3), 0);
  assertEquals(bucketIndex(NaN), 0);
  assertEquals(bucketIndex(0.5), 0);
  assertEquals(bucketIndex(0.51), 1);
  for (const ms of [0.7, 1, 3.3, 30, 250, 999, 1000, 59_999, 60_000]) {
    const i = bucketIndex(ms);
    assert(CANARY_BUCKETS_MS[i] >= ms && CANARY_BUCKETS_MS[i - 1] < ms, `${ms} ms in bucket ${i}`);
  }
  assertEquals(bucketIndex(60_000.1), CANARY_BUCKETS_MS.length - 1);
  assertEquals(bucketIndex(Infinity), CANARY_BUCKETS_MS.length - 1);
});

Deno.test("quantileMs on known histograms: the bucket's upper bound, null when empty", () => {
  const side = emptySide("green");
  assertEquals(quantileMs(side.histogram, 0.95), null);
  for (let i = 0; i < 95; i++) countRequest(side, 2, 200);
  for (let i = 0; i < 5; i++) countRequest(side, 300, 503);
  assertEquals(side.requests, 100);
  assertEquals(side.errors, 5);
  const at = (ms: number) => CANARY_BUCKETS_MS[bucketIndex(ms)];
  assertEquals(quantileMs(side.histogram, 0.5), at(2));
  assertEquals(quantileMs(side.histogram, 0.95), at(2)); // the 95th of 100 is still 2 ms
  assertEquals(quantileMs(side.histogram, 0.96), at(300));
  assertEquals(quantileMs(side.histogram, 1), at(300));
  assertEquals(quantileMs(side.histogram, 0), at(2));
  // Within 5 % above the true value.
  for (const ms of [1.2, 30, 31.7, 800, 12_345]) {
    const one = emptySide("blue");
    countRequest(one, ms, 200);
    const p = quantileMs(one.histogram, 0.95)!;
    assert(p >= ms && p <= ms * 1.05, `${ms} ms read as ${p}`);
  }
  // Past 60 s: read as 60 s (a number, which JSON keeps).
  const slow = emptySide("blue");
  countRequest(slow, 120_000, 0);
  assertEquals(slow.errors, 0);
  assertEquals(quantileMs(slow.histogram, 0.95), 60_000);
  // A hand-made histogram: 10 in bucket 3, 10 in bucket 100.
  const hand = new Array(CANARY_BUCKETS_MS.length).fill(0);
  hand[3] = 10;
  hand[100] = 10;
  assertEquals(quantileMs(hand, 0.5), CANARY_BUCKETS_MS[3]);
  assertEquals(quantileMs(hand, 0.51), CANARY_BUCKETS_MS[100]);
  let thrown = false;
  try {
    quantileMs(hand, 95);
  } catch (error) {
    thrown = error instanceof RangeError;
  }
  assert(thrown, "q outside 0..1 is refused");
});

Deno.test("diffSide: what was counted between two readings; a reset reading counts whole", () => {
  const earlier = emptySide("green");
  countRequest(earlier, 10, 200);
  countRequest(earlier, 10, 500);
  const later: SideStats = structuredClone(earlier);
  countRequest(later, 40, 200);
  countRequest(later, 40, 502);
  countRequest(later, 40, 200);
  const diff = diffSide(later, earlier);
  assertEquals(diff.slot, "green");
  assertEquals(diff.requests, 3);
  assertEquals(diff.errors, 1);
  assertEquals(diff.histogram.reduce((a, b) => a + b, 0), 3);
  assertEquals(diff.histogram[bucketIndex(40)], 3);
  assertEquals(diff.histogram[bucketIndex(10)], 0);
  assertEquals(quantileMs(diff.histogram, 0.95), CANARY_BUCKETS_MS[bucketIndex(40)]);
  // The proxy restarted (counts went down) or the side is another slot: later is all new.
  const restarted = emptySide("green");
  countRequest(restarted, 5, 200);
  assertEquals(diffSide(restarted, later), restarted);
  assert(diffSide(restarted, later).histogram !== restarted.histogram, "a copy");
  const other = structuredClone(later);
  other.slot = "blue";
  assertEquals(diffSide(other, earlier), other);
  assertEquals(diffSide(later, later).requests, 0);
});
