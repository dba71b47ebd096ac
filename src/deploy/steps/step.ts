/**
 * A deploy is a list of steps ({@link Step}), walked in order by {@link walk}: for real through
 * the journal (each step a line of progress and an event in deploy.log), or in a dry run, where
 * the same list runs with the DryRunner and every step that would touch the disk, the proxy or a
 * process says what it would do instead. So a dry run cannot drift from the deploy.
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
  /** Says what {@link run} would do (a dry run); default: {@link run} itself, whose commands the DryRunner prints. */
  dry?(ctx: DeployContext, release: Release): Promise<void> | void;
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
    if (step.when && !(await step.when(ctx, release))) continue;
    if (ctx.dry) {
      await (step.dry ?? step.run)(ctx, release);
      continue;
    }
    const run = step.unjournaled
      ? step.run(ctx, release)
      : ctx.journal.step(step.name, () => step.run(ctx, release), (m) => m ?? "", step.announce?.(ctx, release));
    if (step.tolerate === undefined) await run;
    else await run.catch(() => ctx.journal.say(step.tolerate!));
  }
}
