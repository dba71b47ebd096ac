/**
 * The canary's judge, pure: given what the proxy counted for both sides over a step (the new
 * release's and the old one's, ../proxy/canary_stats.ts), says whether the step passes, must
 * wait for more requests, or reverts, with the figures and a sentence naming them.
 *
 * - Errors: the new side's 5xx rate may exceed the old side's by at most `maxErrorRate`.
 * - Latency: the new side's p95 may be at most `maxLatencyRatio` × the old side's, where a p95
 *   below {@link LATENCY_FLOOR_MS} counts as that floor: 3 ms against 1 ms is scheduling noise on
 *   a busy server, not a slower release; 60 ms against 20 ms is. With fewer than `minRequests` on
 *   the old side there is nothing reliable to compare latency with: only errors are judged.
 * - Traffic: fewer than `minRequests` on the new side waits, up to `maxWait` from the step's start,
 *   then `onLowTraffic` decides (promote: the step passes; revert). Errors revert before that only
 *   when even the requests expected by the interval's end (at least `minRequests`) could not absorb
 *   them, and there are at least {@link EARLY_REVERT_ERRORS}: one unlucky 5xx is no verdict.
 * - Split: the share of requests the new side got (new ÷ both) is in the figures; far from the
 *   step's percent with enough requests, the line says why (few clients: a CDN or a load balancer).
 * @module
 */
import type { CanarySpec } from "../config/release_keys.ts";
import { quantileMs, type SideStats } from "../proxy/canary_stats.ts";
import type { CanarySide, CanaryStatus } from "./status.ts";

/** p95 latencies below this count as this much (see the module's doc). */
export const LATENCY_FLOOR_MS = 20;

/** Fewest 5xx on the new side that revert a step before it has `minRequests`. */
export const EARLY_REVERT_ERRORS = 5;

/** One side's figures (status.json `canary.figures`). */
export type Side = CanarySide;

/** The new release's figures and the old one's, since the step began; `share`: new ÷ both (0-1, null without requests). */
export interface Figures {
  new: Side;
  old: Side;
  share: number | null;
}

/** What the judge says of a step. */
export interface Verdict {
  /** `pass`: on to the next step (or promote); `wait`: judge again after another interval; `revert`. */
  action: "pass" | "wait" | "revert";
  figures: Figures;
  /** One line: the figures and why. */
  reason: string;
  /** A pass without a judgement: too few requests by maxWait, and onLowTraffic is promote. */
  unjudged?: boolean;
}

/** The parts of deploy.yml `canary:` the judge uses. */
export type Policy = Pick<
  CanarySpec,
  "interval" | "maxErrorRate" | "maxLatencyRatio" | "minRequests" | "maxWait" | "onLowTraffic"
>;

/** A side's counts as figures. */
export function sideFigures(side: SideStats): Side {
  return {
    requests: side.requests,
    errorRate: side.requests > 0 ? side.errors / side.requests : 0,
    p95Ms: quantileMs(side.histogram, 0.95),
  };
}

/** `0.0123` as `1.2%`. */
export function percentText(rate: number): string {
  return `${Number((rate * 100).toFixed(rate < 0.001 && rate > 0 ? 2 : 1))}%`;
}

const ms = (value: number | null) => value === null ? "-" : `${Number(value.toFixed(value < 10 ? 1 : 0))} ms`;

/**
 * The figures in one line: `new 120 req, 5xx 0%, p95 12 ms; old 2280 req, 5xx 0.1%, p95 11 ms;
 * split 5% new`.
 */
export function figuresText(
  { new: n, old: o, share }: Pick<Figures, "new" | "old"> & { share?: number | null },
): string {
  const side = (name: string, s: Side) =>
    `${name} ${s.requests} req, 5xx ${percentText(s.errorRate)}, p95 ${ms(s.p95Ms)}`;
  return `${side("new", n)}; ${side("old", o)}` + (share != null ? `; split ${percentText(share)} new` : "");
}

/** new ÷ (new + old) requests, null without any. */
export function shareOf(n: Side, o: Side): number | null {
  const all = n.requests + o.requests;
  return all > 0 ? n.requests / all : null;
}

/**
 * Why the observed split is far from the step's `percent` (below half of it, or more than half way
 * to 100 %), with at least `minRequests` requests in all; undefined when it is not.
 */
export function splitProblem(figures: Figures, percent: number, minRequests: number): string | undefined {
  const { share } = figures;
  if (share === null || figures.new.requests + figures.old.requests < minRequests) return undefined;
  const observed = share * 100;
  if (observed >= percent / 2 && observed <= percent + (100 - percent) / 2) return undefined;
  return `the new release got ${percentText(share)} of the requests, not ${percent}%: the requests come from ` +
    "few clients (a CDN or load balancer?): the split cannot work as asked";
}

/**
 * Judges a step: `canary` and `stable` are what each side counted since the step began,
 * `elapsedMs` how long it has run.
 */
export function judge(policy: Policy, counted: { canary: SideStats; stable: SideStats }, elapsedMs: number): Verdict {
  const n = sideFigures(counted.canary);
  const o = sideFigures(counted.stable);
  const figures: Figures = { new: n, old: o, share: shareOf(n, o) };
  const verdict = (action: Verdict["action"], why: string): Verdict => ({
    action,
    figures,
    reason: `${why} (${figuresText(figures)})`,
  });
  const allowed = o.errorRate + policy.maxErrorRate;
  const errorsTooMany = (rate: number) =>
    verdict(
      "revert",
      `5xx rate ${percentText(rate)} on the new release against ${percentText(o.errorRate)} on the old: ` +
        `more than maxErrorRate ${percentText(policy.maxErrorRate)} above`,
    );
  if (n.requests < policy.minRequests) {
    // The requests expected by the interval's end at the rate so far, at least minRequests: if even
    // that many could not absorb the errors, waiting for them changes nothing.
    const errors = counted.canary.errors;
    const expected = Math.max(policy.minRequests, Math.ceil(n.requests / Math.max(elapsedMs, 1) * policy.interval));
    const absorbed = allowed * expected;
    if (errors >= EARLY_REVERT_ERRORS && errors > absorbed) {
      return verdict(
        "revert",
        `${errors} errors in ${n.requests} requests on the new release: more than the ${
          Math.floor(absorbed)
        } that ${expected} requests may have at ${percentText(o.errorRate)} (the old release's 5xx rate) + ` +
          `maxErrorRate ${percentText(policy.maxErrorRate)}`,
      );
    }
    if (elapsedMs < policy.maxWait) {
      return verdict("wait", `${n.requests} of ${policy.minRequests} requests on the new release: waiting`);
    }
    const low = `only ${n.requests} of ${policy.minRequests} requests on the new release in ` +
      `${Math.round(elapsedMs / 1000)}s (maxWait)`;
    return policy.onLowTraffic === "promote"
      ? { ...verdict("pass", `${low}: onLowTraffic is promote`), unjudged: true }
      : verdict("revert", `${low}: onLowTraffic is revert`);
  }
  if (n.errorRate > allowed) return errorsTooMany(n.errorRate);
  const compared = o.requests >= policy.minRequests;
  if (compared && n.p95Ms !== null && o.p95Ms !== null) {
    const limit = Math.max(o.p95Ms, LATENCY_FLOOR_MS) * policy.maxLatencyRatio;
    if (n.p95Ms > limit) {
      return verdict(
        "revert",
        `p95 latency ${ms(n.p95Ms)} on the new release against ${ms(o.p95Ms)} on the old: ` +
          `more than maxLatencyRatio ${policy.maxLatencyRatio}× (limit ${ms(limit)})`,
      );
    }
  }
  return verdict(
    "pass",
    compared
      ? "within the limits"
      : "no errors above the limit (not enough requests on the old release to compare latency)",
  );
}

/**
 * status.json's canary in one line, for `status`: `canary of abc1234: 25%, step 2/3 since
 * 2026-12-03T15:00:00Z (new …)`, how it ended, or (`left`: no deploy runs it) what to do.
 */
export function canaryStatusText(app: string, canary: CanaryStatus, left: boolean): string {
  const head = `canary of ${canary.version}`;
  if (canary.state === "running" && left) {
    return `${head} left by a killed deploy at ${canary.percent}%: run \`deploy-paradigm canary ${app} abort\``;
  }
  if (canary.state !== "running") return `${head}: ${canary.state}${canary.reason ? ` (${canary.reason})` : ""}`;
  const of = canary.figures?.step !== undefined && canary.figures.step !== canary.step
    ? `figures of step ${canary.figures.step}: `
    : "";
  return `${head}: ${canary.percent}%, step ${canary.step}/${canary.steps.length} ` +
    `since ${canary.stepSince ?? canary.since}` + (canary.figures ? ` (${of}${figuresText(canary.figures)})` : "");
}
