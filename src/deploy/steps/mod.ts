/**
 * The steps of a deploy, in order. Until the switch a failure switches nothing; the switch is the
 * strategy's (strategies/); after it the deploy stands, and failures are only reported.
 * @module
 */
import { updateRef } from "../../git.ts";
import { strategyOf } from "../strategies/mod.ts";
import { describeGates, runGates } from "../gates.ts";
import { build, cleanup, command, docker, env, fetch, meta, postDeploy, preDeploy, sealOnly } from "./release.ts";
import type { Step } from "./step.ts";
import { StepFailed } from "../journal.ts";
import { cron } from "./cron.ts";
import { hasWorkers, runningWorkers, syncWorkers, workerProcess, workersGone } from "../workers.ts";
import { MANAGERS } from "../../managers/mod.ts";
import type { Boot } from "../../managers/manager.ts";
import { Cancelled } from "../cancel.ts";
import type { DeployContext } from "../context.ts";

export { type Release, type Step, walk } from "./step.ts";

/**
 * What the switch will need, checked before anything is built: the proxy, for blue-green. Not
 * journaled (no line when it answers); a failure is said on its own line and is step "proxy"'s.
 */
const preflight: Step = {
  name: "proxy",
  unjournaled: true,
  async run(ctx) {
    try {
      await strategyOf(ctx.config).preflight(ctx);
    } catch (error) {
      ctx.journal.say(`✗ ${error instanceof Error ? error.message : String(error)}`);
      throw new StepFailed("proxy", error);
    }
  },
  dry: () => {},
};

/** The strategy brings the release into service; the branch moves once it serves. */
const activate: Step = {
  name: "switch",
  unjournaled: true,
  async run(ctx, release) {
    const { branch } = release;
    release.active = await strategyOf(ctx.config).activate(ctx, {
      meta: release.meta,
      secrets: ctx.plan.secrets,
      replaced: release.previousMeta,
      watchMs: ctx.plan.deploy.watch,
      commit: branch &&
        (() =>
          ctx.journal.step(
            "branch",
            () => updateRef(ctx.plan.gitDir, branch.ref, ctx.plan.commit, branch.old),
            () => `${branch.ref.replace("refs/heads/", "")} → ${ctx.plan.short}`,
          )),
      gate: ctx.plan.deploy.gates?.length ? (url, before) => runGates(ctx, release, url, before) : undefined,
      canary: ctx.plan.deploy.canary,
    });
  },
  async dry(ctx, release) {
    await strategyOf(ctx.config).describe(ctx, release.meta);
    await describeGates(ctx, release, ctx.plan.deploy.canary !== undefined);
  },
};

/** What is left of another strategy goes. */
const settle: Step = {
  name: "settle",
  unjournaled: true,
  tolerate: "! the blue and green slots of an earlier blue-green setup stay",
  run: (ctx) => strategyOf(ctx.config).settle?.(ctx) ?? Promise.resolve(),
  dry: () => {},
};

/** The release's workers replace the old ones, now that it serves (see ../workers.ts). */
const workers: Step = {
  name: "workers",
  when: (ctx, release) => hasWorkers(ctx.paths.dir, release.meta),
  tolerate: "! not every worker started; the deploy stands (see the lines above)",
  run: (ctx, release) => syncWorkers(ctx, release.meta, ctx.plan.secrets),
  async dry(ctx, release) {
    for (const spec of release.meta.workers ?? []) {
      for (let instance = 1; instance <= spec.instances; instance++) {
        const process = await workerProcess(ctx, release.meta, spec, instance, ctx.plan.secrets, false);
        await ctx.runner.apply(ctx.manager.restart(process));
      }
    }
    const running = await runningWorkers(ctx.paths.dir);
    const before = running.map((w) => `${w.type} ×${w.instances}`).join(", ");
    const gone = workersGone(running, release.meta.workers ?? [])
      .map((w) => ctx.manager.nameOf(ctx.paths.app, undefined, w)).join(", ");
    ctx.print(
      `would restart the workers (each old one: SIGTERM, its stopTimeout, SIGKILL)${
        before ? `; running now: ${before}` : ""
      }${gone ? `; would stop ${gone}` : ""}`,
    );
  },
};

/** What brings the app's manager back at boot, when the server has none yet (see ProcessManager.atBoot). */
async function atBoot(ctx: DeployContext): Promise<Boot | undefined> {
  const boot = await MANAGERS[ctx.config.manager].atBoot?.(ctx.root, false);
  return typeof boot === "object" ? boot : undefined;
}

/** What the deploy says when step boot fails: the deploy goes on. */
const BOOT_FAILED = "! nothing may start the process manager at boot (see the line above); the deploy goes on";

/**
 * On a server set up before setup installed it, the unit that brings pm2 back at boot (as a
 * deploy creates a missing build user): without it, the apps under pm2 stay down after a reboot.
 * First, so that a daemon it starts (none ran) is the one the deploy's pm2 commands use. The
 * manager is asked once; the step has its line (and its event) only when there is something to
 * do. It does not start once the deploy is cancelled, which then ends there (a failure of its
 * own is only reported).
 */
const boot: Step = {
  name: "boot",
  unjournaled: true,
  async run(ctx) {
    try {
      const found = await atBoot(ctx).catch((error) => ctx.journal.step("boot", () => Promise.reject(error)));
      if (!found) return;
      await ctx.journal.step("boot", async () => {
        await ctx.runner.apply(found.plan);
        if (found.warning) ctx.journal.say(found.warning);
        return found.said;
      }, (said) => said);
    } catch (error) {
      if (error instanceof StepFailed && error.error instanceof Cancelled) throw error;
      ctx.journal.say(BOOT_FAILED);
    }
  },
  async dry(ctx) {
    const found = await atBoot(ctx);
    if (!found) return;
    ctx.print(`would run (boot): ${found.said}`);
    await ctx.runner.apply(found.plan);
  },
};

/** Everything before the switch: a failure here switches nothing. */
const PREPARE: readonly Step[] = [boot, preflight, docker, fetch, build, sealOnly, meta, command, env, preDeploy];

/** The switch. */
const SWITCH: readonly Step[] = [activate];

/** Once the deploy stands: reported when they fail, never rolled back. */
const STAND: readonly Step[] = [settle, workers, cron, postDeploy, cleanup];

/** A whole deploy. */
export const DEPLOY: readonly Step[] = [...PREPARE, ...SWITCH, ...STAND];
