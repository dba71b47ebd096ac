/**
 * Gates (deploy.yml `gates:`): checks a new release must pass before traffic moves to it. Each
 * runs like hooks.preDeploy (steps/release.ts: argv without a shell, as the app's user, in the
 * release, with its `.env` values, confined, with a timeout, cancelled with the deploy), with
 * `DEPLOY_URL=http://127.0.0.1:<port>` naming the new slot's first instance, its output capped
 * at {@link GATE_OUTPUT_LIMIT} (more kills it: a failed gate). Blue-green runs them once the new
 * slot is healthy, before the switch and before each canary step; their output goes to the push.
 * A failing gate is a failed deploy at step `gate`; a cancelled deploy starts none. `rollback`
 * runs no gates (it goes back to a release that served).
 *
 * What a gate leaves running: the new slot runs from the release's directory, so unlike
 * preDeploy, processes are not killed for being in it; only orphans of the app's own user (in
 * this deploy's cgroup, started since the gate began) are killed. As root or a shared user, a
 * daemon a gate starts runs on.
 * @module
 */
import { toArgv } from "../config/argv.ts";
import { displayArgv } from "../runner.ts";
import type { DeployContext } from "./context.ts";
import { appCommand, runConfined } from "./steps/release.ts";

/** Most bytes of output a gate may print before it is killed. */
export const GATE_OUTPUT_LIMIT = 1024 * 1024;

/** The release a gate runs in. */
export interface GateRelease {
  id: string;
  dir: string;
}

/** The gates' commands for `url`. */
function gateCommands(ctx: DeployContext, release: GateRelease, url: string) {
  return (ctx.plan.deploy.gates ?? []).map((gate) => {
    const argv = toArgv(gate.command);
    const limits = { timeoutMs: gate.timeout, cancel: ctx.cancellation.signal };
    const cmd = { ...appCommand(ctx, release, argv, limits, { DEPLOY_URL: url }), maxOutputBytes: GATE_OUTPUT_LIMIT };
    return { argv, cmd };
  });
}

/**
 * Runs every gate against `url`, in order, each as a journal step `gate`; the first failure throws
 * (a StepFailed of step `gate`). `before` says what it guards ("the switch", "canary step 2/3").
 */
export async function runGates(ctx: DeployContext, release: GateRelease, url: string, before: string): Promise<void> {
  for (const { argv, cmd } of gateCommands(ctx, release, url)) {
    await ctx.journal.step(
      "gate",
      () => runConfined(ctx, cmd), // not by the release's directory: the new slot runs from it
      () => `${displayArgv(argv)} passed`,
      `${displayArgv(argv)} against ${url}, before ${before}`,
    );
  }
}

/** What {@link runGates} would run (a dry run: the DryRunner prints each command). */
export async function describeGates(ctx: DeployContext, release: GateRelease, canary: boolean): Promise<void> {
  const gates = gateCommands(ctx, release, "http://127.0.0.1:<new slot port>");
  if (!gates.length) return;
  ctx.print(
    `would run ${gates.length} gate${gates.length === 1 ? "" : "s"} against the healthy new slot ` +
      `(DEPLOY_URL=http://127.0.0.1:<new slot port>) before the switch${
        canary ? " and before each canary step" : ""
      }; ` +
      "a failing gate fails the deploy, nothing switched:",
  );
  for (const { cmd } of gates) await ctx.runner.run(cmd);
}
