/**
 * The end of a failed deploy: traffic back where it was (unless the strategy already put it
 * back), the release removed (or kept and marked bad when it took traffic), the outcome recorded.
 * @module
 */
import { pruneImages } from "../managers/docker.ts";
import { type DeployContext, isoNow } from "./context.ts";
import { StepFailed } from "./journal.ts";
import { ProxyNotRunning } from "../proxy/client.ts";
import { appUrl, failedStatus, lastDeploy, saveStatus } from "./outcome.ts";
import { currentRelease, listReleases, setBad } from "./releases.ts";
import type { AppStatus } from "./status.ts";
import type { Release } from "./steps/mod.ts";
import { ActivationFailed, strategyOf } from "./strategies/mod.ts";

/** How `execute` ended. */
export interface ExecuteResult {
  ok: boolean;
  /** One line for git's push report when not ok. */
  reason?: string;
}

/** Ends a deploy that failed with `error` (a step's, or the activation's). */
export async function failed(
  ctx: DeployContext,
  error: unknown,
  release: Release,
  f: { started: number; before: AppStatus | undefined },
): Promise<ExecuteResult> {
  const { plan, journal, paths } = ctx;
  const { deploy, short } = plan;
  const activation = error instanceof ActivationFailed ? error : undefined;
  const cause = activation?.failure ?? error;
  const failure = cause instanceof StepFailed ? cause : new StepFailed("deploy", cause);
  const switched = activation?.switched === true;
  const cancelled = ctx.cancellation.cancelled;
  journal.cancellation = undefined; // what follows puts things back: it runs to the end
  if (!(cause instanceof StepFailed)) journal.say(`✗ ${failure.message}`);
  journal.say(
    cancelled
      ? `✗ deploy of ${deploy.name} ${short} cancelled at step "${failure.step}" (${ctx.cancellation.why})`
      : `✗ deploy of ${deploy.name} ${short} failed at step "${failure.step}"`,
  );
  const last = lastDeploy(
    cancelled ? "cancelled" : switched ? "rolled_back" : "failed",
    release.id,
    plan.commit,
    isoNow(ctx.clock),
    Math.round(ctx.clock.elapsed() - f.started),
    { step: failure.step, message: journal.clean(failure.message) },
  );
  // With the proxy down, the release behind it runs but nothing serves its URL: said so, not "serves".
  const proxyDown = failure.error instanceof ProxyNotRunning;
  if (!switched) {
    const still = proxyDown ? "still runs behind the proxy" : "still serves";
    journal.say(
      `  nothing was switched: ${f.before?.version ? `${f.before.version} ${still}` : "no release serves"}`,
    );
  }
  let back: Partial<AppStatus> | undefined;
  if (switched && !activation!.reverted) {
    if (release.previous) journal.release = release.previous; // the events of switching back name it
    back = await strategyOf(ctx.config).revert?.(ctx, { to: release.previous, from: release.id, runs: plan.runs })
      .catch((e) => {
        journal.say(`✗ rollback failed: ${e instanceof Error ? e.message : e}`);
        return undefined;
      });
  }
  const status = failedStatus(plan, f.before, last, {
    switched,
    reverted: activation?.reverted === true,
    serving: activation?.serving === true,
    back: back ?? activation?.back,
    watchFailed: failure.step === "watch",
  });
  if (switched && activation!.reverted && activation!.serving) {
    const before = f.before?.version ?? "the release before";
    journal.say(
      failure.step === "canary" || failure.step === "gate" // a gate after the switch: between canary steps
        ? `↺ reverted: all traffic back on ${before} (it served every client outside the canary throughout)`
        : `↺ rolled back: ${before} serves again`,
    );
  }
  journal.release = release.id;
  // It took traffic: kept for inspection and skipped by rollback; so is a cancelled one that still serves.
  const stillServes = (await currentRelease(paths)) === release.id;
  if (switched && activation!.reverted && (!cancelled || stillServes)) await setBad(paths, release.id, true);
  else if (!stillServes) { // never the release `current` names, whatever the failure says of the switch
    await Deno.remove(release.dir, { recursive: true }).catch(() => {});
    if (deploy.type === "docker") {
      await pruneImages(ctx.runner, deploy.name, await listReleases(paths)).catch(() => {}); // its image too
    }
  }
  await journal.record(last.outcome, {
    ok: false,
    duration: last.duration,
    message: `${failure.step}: ${failure.message}`,
  });
  await saveStatus(ctx, status);
  journal.say(
    proxyDown
      ? `✗ ${deploy.name} ${short} was not deployed; the proxy is down: nothing serves ${
        appUrl(ctx.config, plan.front)
      } until it starts${status.healthy && status.version ? ` (${status.version} runs behind it)` : ""}`
      : status.healthy && status.version
      ? `✗ ${deploy.name} ${short} was not deployed; ${status.version} serves at ${appUrl(ctx.config, plan.front)}`
      : `✗ ${deploy.name} ${short} was not deployed; nothing healthy serves ${appUrl(ctx.config, plan.front)}`,
  );
  return {
    ok: false,
    reason: `deploy ${cancelled ? "cancelled" : "failed"} at ${failure.step}` +
      (switched ? (status.healthy ? "; rolled back" : "; nothing healthy serves") : ""),
  };
}
