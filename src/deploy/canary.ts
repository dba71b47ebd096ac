/**
 * The canary (deploy.yml `canary:`), run by the blue-green activation once the new slot is
 * healthy and something served before ({@link runCanaryPhase}, with the gates): for each step,
 * the gates, then canary.json with the step's percent (../proxy/canary_file.ts) and a proxy
 * reload, checked at once (the proxy must report this split: else nothing took traffic and the
 * deploy fails as not switched); every `interval` the proxy's `canary` statistics, diffed against
 * the step's start, go to the judge (./canary_judge.ts): the step passes, waits for more requests,
 * or the canary reverts. One line per judgement in the push, `canary` events in deploy.log, and
 * status.json's `canary` (written at each step and judgement; a step starts without figures).
 *
 * The proxy's control socket may be away for a moment (a proxy restart): each call is retried for
 * {@link PROXY_PATIENCE_MS} before the canary fails. `deploy-paradigm canary <app> promote|abort`
 * writes a decision file (./canary_decision.ts); the loop reads (and removes) it every second.
 * Cancellation (Ctrl-C of the push) aborts the loop too. A failure takes the canary down
 * (canary.json removed, reload, drain, stop) and fails the deploy at step `canary` (or `gate`).
 * @module
 */
import type { CanarySpec } from "../config/release_keys.ts";
import type { Slot } from "../managers/mod.ts";
import { readCanary, removeCanary, writeCanary } from "../proxy/canary_file.ts";
import { type CanaryStats, diffSide, emptySide } from "../proxy/canary_stats.ts";
import { type RouteTarget, targetPorts } from "../proxy/routes.ts";
import { type Decision, takeDecision } from "./canary_decision.ts";
import { figuresText, judge, percentText, splitProblem } from "./canary_judge.ts";
import { isoNow, type SwitchContext } from "./context.ts";
import { StepFailed } from "./journal.ts";
import { markServed } from "./releases.ts";
import { type CanaryStatus, readStatus, writeStatus } from "./status.ts";
import { ActivationFailed, asStep } from "./strategies/strategy.ts";

/** How often the loop looks for a decision (and a cancellation) while it waits. */
const POLL_MS = 1000;
/** How long the proxy's control socket may not answer (a restart) before the canary fails. */
export const PROXY_PATIENCE_MS = 10_000;
const PROXY_RETRY_MS = 500;

/** A canary to run. */
export interface CanaryRun {
  policy: CanarySpec;
  /** The new release's target and slot, its id and short sha. */
  target: RouteTarget;
  slot: string;
  release: string;
  version: string;
  /** Runs the gates before a step (`before` names it); throws when one fails. */
  gate?: (before: string) => Promise<void>;
}

/** Thrown by {@link runCanary} when the canary ends without a promotion: why, in one line. */
export class CanaryReverted extends Error {}

/**
 * Thrown by {@link runCanary} when the proxy did not apply a step's canary.json: the proxy's
 * trouble, not the release's (not marked bad); at the first step nothing took traffic.
 */
export class CanaryNotApplied extends Error {
  constructor(message: string, readonly first: boolean) {
    super(message);
  }
}

/** Updates status.json's `canary` (a no-op before the first deploy's status.json). */
async function saveCanary(ctx: SwitchContext, canary: CanaryStatus): Promise<void> {
  const status = await readStatus(ctx.paths.status).catch(() => undefined);
  if (status) {
    await writeStatus(ctx.paths.status, { ...status, canary }).catch((error) =>
      ctx.journal.say(`! cannot write ${ctx.paths.status}: ${(error as Error).message}`)
    );
  }
}

/**
 * Ends status.json's canary of `release` (any, when undefined) as `state`, when it still runs (or
 * was promoted but the switch after it failed): for the activation, when it takes a canary down.
 * Returns whether it did.
 */
export async function settleCanary(
  ctx: SwitchContext,
  release: string | undefined,
  state: "reverted" | "aborted",
  reason: string,
): Promise<boolean> {
  const canary = (await readStatus(ctx.paths.status).catch(() => undefined))?.canary;
  if (!canary || (release !== undefined && canary.release !== release) || canary.state === state) return false;
  if (canary.state !== "running" && canary.state !== "promoted") return false;
  await saveCanary(ctx, { ...canary, state, reason, at: isoNow(ctx.clock) });
  return true;
}

/** A promoted canary whose release then failed (switch, watch, branch): reverted, or aborted when cancelled. */
export function settlePromoted(ctx: SwitchContext, release: string, error: unknown): Promise<boolean> {
  const why = error instanceof Error ? error.message : String(error);
  return ctx.journal.cancellation?.cancelled
    ? settleCanary(ctx, release, "aborted", `cancelled after it passed (${ctx.journal.cancellation.why})`)
    : settleCanary(ctx, release, "reverted", `reverted after it passed: ${why}`);
}

/** `proxy(request)`, retried every 500 ms for {@link PROXY_PATIENCE_MS} while the control socket does not answer. */
async function patientProxy(ctx: SwitchContext, request: object): Promise<Record<string, unknown>> {
  const sleep = ctx.sleep ?? ((ms: number) => timer(ms, ctx.journal.cancellation?.signal));
  const until = ctx.clock.elapsed() + PROXY_PATIENCE_MS;
  for (;;) {
    try {
      return await ctx.proxy(request);
    } catch (error) {
      if (ctx.clock.elapsed() >= until || ctx.journal.cancellation?.cancelled) {
        throw new Error(
          `the proxy did not answer for ${PROXY_PATIENCE_MS / 1000}s: ${(error as Error).message}`,
        );
      }
      await sleep(PROXY_RETRY_MS);
    }
  }
}

/**
 * Takes down a canary's split (canary.json there): the file goes and the proxy reloads. Returns the
 * ports of the canary's target, to drain, or undefined when there was none. For a failed canary,
 * and (through blue-green's recover) one a killed deploy left.
 */
export async function removeSplit(ctx: SwitchContext): Promise<number[] | undefined> {
  const split = await readCanary(ctx.paths.dir).catch(() => ({ target: undefined }));
  if (!split) return undefined;
  await removeCanary(ctx.paths.dir);
  await patientProxy(ctx, { op: "reload" }).catch(() => {});
  return targetPorts(split.target);
}

/** Runs the canary to its end: returns when it is promoted; throws {@link CanaryReverted} (or a gate's error) otherwise. */
export async function runCanary(ctx: SwitchContext, run: CanaryRun): Promise<void> {
  const { paths, journal, clock } = ctx;
  const { policy, slot } = run;
  const app = paths.app;
  const cancellation = journal.cancellation;
  const sleep = ctx.sleep ?? ((ms: number) => timer(ms, cancellation?.signal));
  const since = isoNow(clock);
  const steps = policy.steps;
  let status: CanaryStatus = {
    state: "running",
    release: run.release,
    version: run.version,
    percent: steps[0],
    step: 1,
    steps,
    since,
    at: since,
  };
  const update = (patch: Partial<CanaryStatus>) => saveCanary(ctx, status = { ...status, ...patch, at: isoNow(clock) });
  const end = async (state: "promoted" | "reverted" | "aborted", reason: string) => {
    await update({ state, reason, ...(state === "promoted" ? { percent: 100 } : {}) });
    await journal.record("canary", { ok: state === "promoted", message: reason });
  };
  let refused: string | undefined; // why the proxy refuses canary.json, when it does
  const stats = async (): Promise<CanaryStats | null> => {
    const reply = await patientProxy(ctx, { op: "canary", app });
    refused = typeof reply.problem === "string" ? reply.problem.slice(0, 2000) : undefined;
    return (reply.stats ?? null) as CanaryStats | null;
  };
  const noCanary = () =>
    refused ? `the proxy refuses the canary: ${refused}` : "the proxy reports no canary for the app (see its log)";
  await takeDecision(paths.dir); // one left from before is no decision about this canary
  const seconds = policy.interval / 1000;
  let unjudged = 0; // steps passed without enough requests to judge
  for (const [i, percent] of steps.entries()) {
    const label = `canary step ${i + 1}/${steps.length} (${percent}%)`;
    await run.gate?.(label);
    await writeCanary(paths.dir, { target: run.target, slot, percent, since });
    await patientProxy(ctx, { op: "reload" });
    // Applied at once, or nothing moved: the proxy reports this very split.
    const start = await stats();
    if (!start || start.since !== since || start.percent !== percent || start.canary.slot !== slot) {
      const seen = start
        ? `it reports ${start.percent}% to the ${start.canary.slot} slot since ${start.since}`
        : noCanary();
      throw new CanaryNotApplied(`the proxy did not apply ${label}: ${seen}`, i === 0);
    }
    if (i === 0) await markServed(paths, run.release); // it takes a share of the traffic: no longer pending
    const message = `step ${i + 1}/${steps.length}: ${percent}% of clients → the new release (${slot} slot), ` +
      `judged after ${seconds}s`;
    journal.say(`▸ canary     ${message}`);
    await journal.record("canary", { message });
    await update({ percent, step: i + 1, stepSince: isoNow(clock) }); // the last figures stay, named by their step
    const started = clock.elapsed();
    for (;;) {
      const decision = await wait(policy.interval);
      if (decision === "promote") {
        journal.say(`✓ canary     promoted by hand at ${percent}% (\`canary ${app} promote\`)`);
        return await end("promoted", `promoted by hand at ${percent}%`);
      }
      if (decision === "abort" || cancellation?.cancelled) {
        const why = decision === "abort"
          ? `aborted by hand at ${percent}% (\`canary ${app} abort\`)`
          : `cancelled at ${percent}% (${cancellation!.why})`;
        journal.say(`✗ canary     ${why}`);
        await end("aborted", why);
        throw new CanaryReverted(why);
      }
      const now = await stats();
      if (!now) throw new CanaryReverted(noCanary());
      const counted = {
        canary: diffSide(now.canary, start.canary ?? emptySide(now.canary.slot)),
        stable: diffSide(now.stable, start.stable ?? emptySide(now.stable.slot)),
      };
      const verdict = judge(policy, counted, clock.elapsed() - started);
      const split = splitProblem(verdict.figures, percent, policy.minRequests);
      const line = verdict.unjudged
        ? unjudgedText(verdict.figures.new.requests, clock.elapsed() - started, i === steps.length - 1)
        : `${percent}% ${verdict.action === "pass" ? "passed" : verdict.action === "wait" ? "waits" : "fails"}: ` +
          verdict.reason + (split ? `; ${split}` : "") + (verdict.action === "wait" ? waitHint(ctx.paths.app) : "");
      if (verdict.unjudged) unjudged++;
      journal.say(`${verdict.action === "revert" ? "✗" : verdict.action === "wait" ? "…" : "✓"} canary     ${line}`);
      await update({ figures: { ...verdict.figures, step: i + 1 } });
      if (verdict.action === "revert") {
        await end("reverted", `reverted at ${percent}%: ${verdict.reason}`);
        throw new CanaryReverted(`reverted at ${percent}%: ${verdict.reason}`);
      }
      await journal.record("canary", { ok: true, message: line });
      if (verdict.action === "pass") break;
    }
  }
  if (unjudged > 0) {
    const promoted = `promoted after ${steps.length} step${steps.length === 1 ? "" : "s"} (${steps.join("%, ")}%), ` +
      `${unjudged} of them without enough requests to judge (onLowTraffic: promote)`;
    journal.say(`✓ canary     ${promoted}`);
    return await end("promoted", promoted);
  }
  journal.say(`✓ canary     every step passed (${figuresText(status.figures!)}): promoting`);
  await end("promoted", `every step passed (${steps.join("%, ")}%)`);

  /** A step passed for want of requests (onLowTraffic: promote), in a line. */
  function unjudgedText(requests: number, waitedMs: number, last: boolean): string {
    const waited = Math.round(waitedMs / 1000);
    return `${last ? "promoted" : "passed"} without a judgement at ${status.percent}% (low traffic: ${requests} of ` +
      `${policy.minRequests} requests in ${waited}s; onLowTraffic: promote)`;
  }

  /** Waits `ms`, looking every second for a decision by hand or a cancellation; returns the decision. */
  async function wait(ms: number): Promise<Decision | undefined> {
    const until = clock.elapsed() + ms;
    for (let left = ms; left > 0; left = until - clock.elapsed()) {
      if (cancellation?.cancelled) return undefined;
      const decision = await takeDecision(paths.dir);
      if (decision) return decision;
      await sleep(Math.min(POLL_MS, left));
    }
    return undefined;
  }
}

/** What the blue-green activation gives {@link runCanaryPhase}. */
export interface CanaryPhase {
  /** The canary to run (undefined: the gates only). */
  canary?: Omit<CanaryRun, "gate">;
  gate?: (before: string) => Promise<void>;
  /** The new slot, its ports and the slot that serves. */
  idle: Slot;
  ports: number[];
  oldSlot?: Slot;
  /** Something served before (so a split could move traffic). */
  serving: boolean;
  drain: (ports: number[], whose: string) => Promise<unknown>;
  stopIdle: (why: string) => Promise<unknown>;
}

/**
 * Before any traffic moves for good: the canary (its gates before each step), then the gates
 * before the switch. A failure takes the canary down and stops the new slot, then throws
 * {@link ActivationFailed}: switched when the proxy had the split, else nothing took traffic.
 */
export async function runCanaryPhase(ctx: SwitchContext, phase: CanaryPhase): Promise<void> {
  const { journal, paths } = ctx;
  const { canary, gate, idle } = phase;
  try {
    if (canary) await runCanary(ctx, { ...canary, gate });
    await gate?.("the switch");
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    const split = canary !== undefined && await readCanary(paths.dir).catch(() => true) !== undefined;
    const notApplied = error instanceof CanaryNotApplied;
    const applied = split && !(notApplied && error.first); // the new slot took traffic
    if (!(error instanceof CanaryReverted) && !(error instanceof StepFailed)) journal.say(`✗ canary     ${reason}`);
    if (split && !applied) await removeSplit(ctx); // the proxy never applied it: nothing to revert or drain
    if (applied) {
      await journal.step(
        "revert",
        () => removeSplit(ctx),
        () => `every request → the ${phase.oldSlot ?? "old"} slot again`,
      ).catch(() => {});
      await phase.drain(phase.ports, `the canary (${idle} slot)`);
    }
    if (canary) {
      const gateFailed = error instanceof StepFailed && error.step === "gate";
      const why = gateFailed ? `a gate failed: ${reason}` : reason;
      const state = journal.cancellation?.cancelled || notApplied ? "aborted" : "reverted";
      // A canary that ended on its own said so (CanaryReverted); a gate or the proxy ends it here.
      if (await settleCanary(ctx, canary.release, state, why) && !(error instanceof CanaryReverted)) {
        await journal.record("canary", { ok: false, message: why });
      }
    }
    await phase.stopIdle(`the ${idle} slot is stopped${applied ? "" : "; it never took traffic"}`);
    // Switched (a revert: the release is marked bad) only when the release's own figures or gates failed it.
    throw new ActivationFailed(asStep(error, "canary"), applied && !notApplied, phase.serving, true);
  }
}

/** The dry run's line about the canary (`route`: what serves now, if anything). */
export function describeCanary(canary: CanarySpec, serving: boolean): string {
  return serving
    ? `canary: would send ${canary.steps.join("%, ")}% of clients to it, ${canary.interval / 1000}s a step, ` +
      `reverting when its 5xx rate is more than ${percentText(canary.maxErrorRate)} above the old slot's or its ` +
      `p95 latency more than ${canary.maxLatencyRatio}× (at least ${canary.minRequests} requests a step, ` +
      `else after ${canary.maxWait / 1000}s: ${canary.onLowTraffic}); the push stays open until it ends`
    : "canary: none for this first deploy (nothing served before): it would take all traffic at once";
}

/** Resolves after `ms`, or at once when `signal` aborts. */
function timer(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(id);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const id = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

/** What a waiting step adds: the way out by hand. */
function waitHint(app: string): string {
  return ` (decide now: \`deploy-paradigm canary ${app} promote\` or \`abort\`)`;
}
