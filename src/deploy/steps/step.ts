/**
 * A deploy is a list of steps ({@link Step}), walked in order by {@link walk}: for real through
 * the journal (each step a line of progress and an event in deploy.log), or in a dry run, where
 * the same list is walked but each step's {@link Step.dry} runs instead of its `run`: it says
 * what the step would do, and the commands it passes to `ctx.runner` (the DryRunner then) are
 * printed, not run. Every step must write its `dry` (the type requires it), so a dry run has
 * every step of the deploy. That a step's `dry` tells what its `run` does is up to the step (the
 * dry-run tests of tests/unit/pipeline_test.ts pin what a dry run prints).
 * @module
 */
import type { Activated } from "../strategies/mod.ts";
import type { DeployContext } from "../context.ts";
import type { ReleaseMeta } from "../releases.ts";

/** The release a deploy makes, and what it learns on the way. */
export interface Release {
  /** Its id (`<new>` in a dry run). */
  id: string;
  dir: string;
  meta: ReleaseMeta;
  /** The release that served before, and its metadata. */
  previous?: string;
  previousMeta?: ReleaseMeta;
  /** Moved to the commit once the release serves (compare-and-swap from `old`). */
  branch?: { ref: string; old: string };
  /** Set by the switch step. */
  active?: Activated;
}

/** One step of a deploy. */
export interface Step {
  /** Its name in the journal (deploy.log's `event`), and the step a failure names. */
  name: string;
  /** Whether this deploy has the step (default: yes). */
  when?(ctx: DeployContext, release: Release): boolean | Promise<boolean>;
  /** Does it; returns the message of its `✓` line. */
  run(ctx: DeployContext, release: Release): Promise<string | void>;
  /**
   * Says what {@link run} would do (a dry run), changing nothing: prints, passes commands to the
   * DryRunner (`ctx.runner`), asks read-only questions (`ctx.inspect`). Required: a dry run never
   * falls back to {@link run}.
   */
  dry(ctx: DeployContext, release: Release): Promise<void> | void;
  /** Printed as `▸ name announce` before it starts. */
  announce?(ctx: DeployContext, release: Release): string;
  /** Its parts are journal steps of their own (or it changes nothing worth a line): not wrapped in one. */
  unjournaled?: boolean;
  /** Once the deploy stands: a failure is only reported, with this line. */
  tolerate?: string;
}

/** Runs `steps` for `release`: through the journal, or (`ctx.dry`) as descriptions. Throws the first failure. */
export async function walk(ctx: DeployContext, release: Release, steps: readonly Step[]): Promise<void> {
  for (const step of steps) {
    if (step.tolerate === undefined || ctx.dry) await take(ctx, release, step);
    else await take(ctx, release, step).catch(() => ctx.journal.say(step.tolerate!));
  }
}

/** One step: whether the deploy has it ({@link Step.when}), then its run (or its dry run). */
async function take(ctx: DeployContext, release: Release, step: Step): Promise<void> {
  const wanted = async () => !step.when || await step.when(ctx, release);
  if (ctx.dry) {
    if (await wanted()) await step.dry(ctx, release);
    return;
  }
  // A `when` that throws is the step's failure (its ✗ line and event), tolerated as its run would be.
  if (!(await wanted().catch((error) => ctx.journal.step(step.name, () => Promise.reject(error))))) return;
  if (step.unjournaled) await step.run(ctx, release);
  else await ctx.journal.step(step.name, () => step.run(ctx, release), (m) => m ?? "", step.announce?.(ctx, release));
}
