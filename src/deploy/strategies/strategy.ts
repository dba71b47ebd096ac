/**
 * A switch strategy: how a release that is built and ready takes over from the one that serves
 * (restart in place, or blue-green through the proxy), how it is put back when that fails, and
 * what a dry run says it would do. One module per strategy, in the registry of mod.ts; used by
 * deploys (execute.ts) and by `rollback` alike.
 * @module
 */
import { join } from "node:path";
import type { CanarySpec } from "../../config/release_keys.ts";
import type { Slot } from "../../managers/mod.ts";
import type { DeployContext, SwitchContext } from "../context.ts";
import type { HealthResult } from "../health.ts";
import { StepFailed } from "../journal.ts";
import type { ReleaseMeta } from "../releases.ts";
import { processFor, releaseProcess } from "../runtime.ts";
import type { AppStatus } from "../status.ts";
import type { Strategy } from "./names.ts";

export type { Strategy };

/** A release to bring into service. */
export interface Activation {
  meta: ReleaseMeta;
  /** Its `.env` values. */
  secrets: Record<string, string>;
  /** The release that served before, if any. */
  replaced?: ReleaseMeta;
  /** Milliseconds of watch window (0: none), where the strategy has one. */
  watchMs: number;
  /** Runs once the release serves (and passed its watch window); a throw fails the activation. */
  commit?: () => Promise<void>;
  /**
   * Runs the deploy's gates (../gates.ts) against `url` (the new release, healthy, before it gets
   * traffic), before `before` ("the switch", a canary step); a throw fails the activation.
   */
  gate?: (url: string, before: string) => Promise<void>;
  /** deploy.yml `canary:`, for a strategy that can split traffic (blue-green). */
  canary?: CanarySpec;
}

/** A release in service. */
export interface Activated {
  health: HealthResult;
  /** The strategy's fields of status.json (slot, watch, …). */
  status: Partial<AppStatus>;
}

/** A failed activation. */
export class ActivationFailed extends Error {
  constructor(
    readonly failure: StepFailed,
    /** Traffic had moved to the new release. */
    readonly switched: boolean,
    /** Something healthy serves now. */
    readonly serving: boolean,
    /** The strategy has already put traffic back where it was (else: see {@link SwitchStrategy.revert}). */
    readonly reverted: boolean,
    /** What serves after the strategy put back in place what it had stopped (see {@link SwitchStrategy.revert}). */
    readonly back?: Partial<AppStatus>,
  ) {
    super(failure.message);
  }
}

/** `error` as the failure of `step`, unless it is one already. */
export function asStep(error: unknown, step: string): StepFailed {
  return error instanceof StepFailed ? error : new StepFailed(step, error);
}

/** Where a failed activation goes back to. */
export interface Revert {
  /** The release that served before (none: the app is stopped). */
  to: string | undefined;
  /** The release that failed. */
  from: string;
  /** The release that failed runs a process (not static files only): with nowhere to go back to, it is stopped. */
  runs: boolean;
  /**
   * The journal step that switches back: "rollback" (default: a deploy switching back) or
   * "switch" (`rollback`, whose own switch failed, restoring the release it started from).
   */
  step?: "switch" | "rollback";
  /** Print nothing of its own: the caller says how it ended. */
  quiet?: boolean;
}

/** One way of switching releases. */
export interface SwitchStrategy {
  readonly name: Strategy;
  /** Checks what the switch will need, before anything is built (or a rollback starts anything). */
  preflight(ctx: Pick<SwitchContext, "root" | "proxy" | "runner">): Promise<void>;
  /** Brings a release into service. Throws {@link ActivationFailed}. */
  activate(ctx: SwitchContext, activation: Activation): Promise<Activated>;
  /**
   * Puts back the release before, after an activation that switched and did not revert itself;
   * returns what serves then (undefined: nothing). Its events carry the journal's release as the
   * caller set it.
   */
  revert?(ctx: SwitchContext, revert: Revert): Promise<Partial<AppStatus> | undefined>;
  /** After a deploy that stands: what is left of the other strategy goes. */
  settle?(ctx: SwitchContext): Promise<void>;
  /**
   * After a killed deploy (under the lock): brings `current` in line with what runs, and returns
   * the health fields of status.json for the release that serves then.
   */
  recover?(
    ctx: SwitchContext,
    killedCommit: string | undefined,
  ): Promise<(current: string | undefined, meta: ReleaseMeta | undefined) => Promise<Partial<AppStatus>>>;
  /** What {@link activate} would do with `meta` (a release that does not exist yet), for a dry run. */
  describe(ctx: DeployContext, meta: ReleaseMeta): Promise<void>;
}

/** The process a dry run shows (the program unresolved: the release does not exist). */
export async function dryProcess(ctx: DeployContext, meta: ReleaseMeta, slot?: { slot: Slot; port: number }) {
  const { plan } = ctx;
  if (meta.image) {
    const process = await releaseProcess(plan.paths, plan.config, meta, plan.secrets, slot);
    const envFile = plan.envSource ? join(plan.paths.release(meta.id), ".env") : undefined;
    return { ...process!, container: { ...process!.container!, envFile } };
  }
  return processFor(plan.paths, plan.config, meta.type, meta.argv!, plan.secrets, slot);
}
