/**
 * An app's canary as its status.json last said it (`canary`: the deploy engine's CanaryStatus,
 * written at each step and left with its final state until the next deploy), kept in `apps.canary`
 * and shown in the API's app views. A server is hostile input (see ./limits.ts): only the known
 * keys are kept, strings are cut to the field limits, numbers must be finite and in their range
 * (else null), lists are bounded, and an unknown state reads `unknown`. The same check runs on the
 * way in ({@link canaryJson}) and on the way out ({@link canaryView}), so a row written by anything
 * else reads the same.
 * @module
 */
import { capText, FIELD } from "./limits.ts";

/** The states of a canary: still running, or how it ended. */
export const CANARY_STATES = ["running", "promoted", "reverted", "aborted"] as const;
/** Steps (percentages) kept of a canary's `steps`. */
export const MAX_CANARY_STEPS = 20;

/** One side of the last interval judged: the new release's or the old one's. */
export interface CanarySideView {
  requests: number | null;
  /** 5xx responses over requests, 0 to 1. */
  errorRate: number | null;
  p95Ms: number | null;
}

/** An app's canary as the API gives it (every field checked). */
export interface CanaryView {
  state: (typeof CANARY_STATES)[number] | "unknown";
  release: string | null;
  version: string | null;
  /** The share of requests sent to the new release, 0 to 100. */
  percent: number | null;
  /** The step running (1-based) of `steps`. */
  step: number | null;
  steps: number[];
  since: string | null;
  at: string | null;
  /**
   * What the current step has seen, new release against old, and `share`: the new release's part of
   * those requests (0 to 1; far from `percent` when few clients send them); absent before the first judgement.
   */
  figures?: { new: CanarySideView; old: CanarySideView; share?: number; step?: number };
  /** When the current step began. */
  stepSince?: string;
  /** Why it was reverted, aborted or promoted early. */
  reason?: string;
}

const isRecord = (value: unknown): value is Record<string, unknown> =>
  value !== null && typeof value === "object" && !Array.isArray(value);

/** A finite number from `min` to `max`, else null. */
const within = (value: unknown, min: number, max: number): number | null =>
  typeof value === "number" && Number.isFinite(value) && value >= min && value <= max ? value : null;

/** A whole number ≥ 0, else null. */
const whole = (value: unknown): number | null =>
  Number.isSafeInteger(value) && (value as number) >= 0 ? value as number : null;

function side(value: unknown): CanarySideView | null {
  if (!isRecord(value)) return null;
  return {
    requests: whole(value.requests),
    errorRate: within(value.errorRate, 0, 1),
    p95Ms: within(value.p95Ms, 0, 86_400_000),
  };
}

/**
 * status.json's `canary` checked (see the module doc); null when it is not an object (no canary,
 * or nothing usable).
 */
export function checkCanary(value: unknown): CanaryView | null {
  if (!isRecord(value)) return null;
  const state = CANARY_STATES.find((known) => known === value.state) ?? "unknown";
  const steps = Array.isArray(value.steps)
    ? value.steps.slice(0, MAX_CANARY_STEPS).map((p) => within(p, 0, 100)).filter((p) => p !== null)
    : [];
  const view: CanaryView = {
    state,
    release: capText(value.release, FIELD.short),
    version: capText(value.version, FIELD.short),
    percent: within(value.percent, 0, 100),
    step: whole(value.step) !== null && (value.step as number) <= 10_000 ? value.step as number : null,
    steps,
    since: capText(value.since, FIELD.short),
    at: capText(value.at, FIELD.short),
  };
  const figures = isRecord(value.figures) ? [side(value.figures.new), side(value.figures.old)] : [];
  if (figures[0] && figures[1]) {
    const { share: shareValue, step: stepValue } = value.figures as Record<string, unknown>;
    const share = within(shareValue, 0, 1);
    const step = whole(stepValue) !== null && (stepValue as number) <= MAX_CANARY_STEPS ? stepValue as number : null;
    view.figures = {
      new: figures[0],
      old: figures[1],
      ...(share === null ? {} : { share }),
      ...(step === null ? {} : { step }),
    };
  }
  const stepSince = capText(value.stepSince, FIELD.short);
  if (stepSince !== null) view.stepSince = stepSince;
  const reason = capText(value.reason, FIELD.message);
  if (reason !== null) view.reason = reason;
  return view;
}

/** status.json's `canary` as stored in `apps.canary`: checked JSON, or null without one. */
export function canaryJson(value: unknown): string | null {
  const view = checkCanary(value);
  return view === null ? null : JSON.stringify(view);
}

/** A stored canary as an app view's field: `{canary}`, or `{}` without one (or when it is not valid JSON). */
export function canaryView(text: string | null): { canary?: CanaryView } {
  if (text === null) return {};
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return {};
  }
  const view = checkCanary(value);
  return view === null ? {} : { canary: view };
}
