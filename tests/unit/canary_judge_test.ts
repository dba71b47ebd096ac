/**
 * The canary's judge (src/deploy/canary_judge.ts), pure. deploy.yml's `canary:` and `gates:`:
 * tests/unit/config_test.ts.
 * @module
 */
import { assertEquals, assertMatch } from "../helpers/assert.ts";
import {
  figuresText,
  judge,
  LATENCY_FLOOR_MS,
  percentText,
  type Policy,
  splitProblem,
} from "../../src/deploy/canary_judge.ts";
import { bucketIndex, emptySide, type SideStats } from "../../src/proxy/canary_stats.ts";

const POLICY: Policy = {
  interval: 10_000,
  maxErrorRate: 0.01,
  maxLatencyRatio: 1.5,
  minRequests: 50,
  maxWait: 60_000,
  onLowTraffic: "revert",
};

/** A side with `requests` answered in `ms` each, `errors` of them 5xx. */
function side(slot: string, requests: number, errors = 0, ms = 10): SideStats {
  const s = emptySide(slot);
  s.requests = requests;
  s.errors = errors;
  s.histogram[bucketIndex(ms)] += requests;
  return s;
}

const run = (canary: SideStats, stable: SideStats, elapsed = 10_000, policy = POLICY) =>
  judge(policy, { canary, stable }, elapsed);

Deno.test("judge: equal sides pass, with the figures", () => {
  const v = run(side("green", 100), side("blue", 1000));
  assertEquals(v.action, "pass");
  assertEquals(v.figures, {
    new: { requests: 100, errorRate: 0, p95Ms: v.figures.new.p95Ms },
    old: { requests: 1000, errorRate: 0, p95Ms: v.figures.old.p95Ms },
    share: 100 / 1100,
  });
  assertEquals(v.figures.new.p95Ms! >= 10 && v.figures.new.p95Ms! <= 10.5, true);
});

Deno.test("judge: the new side's 5xx rate may exceed the old one's by maxErrorRate, not more", () => {
  assertEquals(run(side("green", 100, 1), side("blue", 1000)).action, "pass"); // 1 % above: at the limit
  assertEquals(run(side("green", 100, 2), side("blue", 1000)).action, "revert"); // 2 %
  assertEquals(run(side("green", 100, 6), side("blue", 1000, 50)).action, "pass"); // 6 % against 5 %
  const v = run(side("green", 100, 10), side("blue", 1000, 1));
  assertEquals(v.action, "revert");
  assertMatch(v.reason, /^5xx rate 10% on the new release against 0.1% on the old: more than maxErrorRate 1% above/);
  assertMatch(v.reason, /\(new 100 req, 5xx 10%, p95 10 ms; old 1000 req, 5xx 0.1%, p95 10 ms; split 9.1% new\)$/);
  // maxErrorRate 0: any error more than the old side's rate reverts.
  assertEquals(run(side("green", 100, 1), side("blue", 1000), 10_000, { ...POLICY, maxErrorRate: 0 }).action, "revert");
});

Deno.test("judge: p95 latency above maxLatencyRatio × the old one reverts", () => {
  assertEquals(run(side("green", 100, 0, 44), side("blue", 1000, 0, 30)).action, "pass");
  const v = run(side("green", 100, 0, 90), side("blue", 1000, 0, 30));
  assertEquals(v.action, "revert");
  assertMatch(
    v.reason,
    /^p95 latency \d+ ms on the new release against \d+ ms on the old: more than maxLatencyRatio 1.5×/,
  );
});

Deno.test("judge: latencies under the floor are noise: 3 ms against 1 ms passes, the floor × ratio does not", () => {
  assertEquals(run(side("green", 100, 0, 3), side("blue", 1000, 0, 1)).action, "pass");
  assertEquals(run(side("green", 100, 0, LATENCY_FLOOR_MS * 1.4), side("blue", 1000, 0, 0.5)).action, "pass");
  assertEquals(run(side("green", 100, 0, LATENCY_FLOOR_MS * 1.6), side("blue", 1000, 0, 0.5)).action, "revert");
});

Deno.test("judge: with fewer than minRequests on the old side only errors are judged", () => {
  const v = run(side("green", 100, 0, 500), emptySide("blue"));
  assertEquals(v.action, "pass");
  assertMatch(v.reason, /not enough requests on the old release to compare latency/);
  assertEquals(run(side("green", 100, 0, 500), side("blue", 49, 0, 10)).action, "pass");
  assertEquals(run(side("green", 100, 0, 500), side("blue", 50, 0, 10)).action, "revert");
  assertEquals(v.figures.old, { requests: 0, errorRate: 0, p95Ms: null });
  assertEquals(run(side("green", 100, 5), emptySide("blue")).action, "revert");
});

Deno.test("judge: fewer than minRequests waits, then onLowTraffic decides after maxWait", () => {
  const few = side("green", 10);
  assertEquals(run(few, side("blue", 1000), 59_000).action, "wait");
  const revert = run(few, side("blue", 1000), 60_000);
  assertEquals(revert.action, "revert");
  assertMatch(revert.reason, /^only 10 of 50 requests on the new release in 60s \(maxWait\): onLowTraffic is revert/);
  const promote = run(few, side("blue", 1000), 60_000, { ...POLICY, onLowTraffic: "promote" });
  assertEquals(promote.action, "pass");
  assertEquals(run(emptySide("green"), emptySide("blue"), 0).action, "wait");
});

Deno.test("judge: before minRequests, only errors the interval's expected requests cannot absorb revert", () => {
  // 1 or 2 errors in 10 requests: one unlucky 5xx is no verdict; wait for more requests.
  assertEquals(run(side("green", 10, 1), side("blue", 1000)).action, "wait");
  assertEquals(run(side("green", 10, 4), side("blue", 1000)).action, "wait");
  // 5 errors in 10 requests, at most 50 expected by the interval's end (allowed 1 % of 50 = 0.5): revert now.
  const v = run(side("green", 10, 5), side("blue", 1000));
  assertEquals(v.action, "revert");
  assertMatch(v.reason, /^5 errors in 10 requests on the new release: more than the 0 that 50 requests may have/);
  // At a rate that brings 4000 requests by the interval's end, 5 errors are within 1 % + the old 0.1 %: wait.
  assertEquals(run(side("green", 40, 5), side("blue", 1000, 1), 100).action, "wait");
  // With the old side at 20 %, 5 errors in 10 can be absorbed by 50 requests: wait.
  assertEquals(run(side("green", 10, 5), side("blue", 1000, 200)).action, "wait");
});

Deno.test("judge: the observed split is in the figures; far from the percent it says why", () => {
  const v = run(side("green", 100), side("blue", 0));
  assertEquals(v.figures.share, 1);
  assertMatch(figuresText(v.figures), /; split 100% new$/);
  assertMatch(splitProblem(v.figures, 5, 50)!, /got 100% of the requests, not 5%: the requests come from few clients/);
  assertEquals(splitProblem(run(side("green", 60), side("blue", 1000)).figures, 5, 50), undefined);
  assertMatch(splitProblem(run(side("green", 0), side("blue", 1000)).figures, 25, 50)!, /got 0% of the requests/);
  assertEquals(splitProblem(run(side("green", 0), side("blue", 40)).figures, 25, 50), undefined); // too few
});

Deno.test("judge: texts", () => {
  assertEquals([percentText(0), percentText(0.01), percentText(0.1234), percentText(0.0004), percentText(1)], [
    "0%",
    "1%",
    "12.3%",
    "0.04%",
    "100%",
  ]);
  assertEquals(
    figuresText({
      new: { requests: 3, errorRate: 0, p95Ms: null },
      old: { requests: 9, errorRate: 0.5, p95Ms: 123.4 },
    }),
    "new 3 req, 5xx 0%, p95 -; old 9 req, 5xx 50%, p95 123 ms",
  );
});
