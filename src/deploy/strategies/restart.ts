/**
 * The restart strategy, shared by deploys, their roll-backs and `rollback`: `current` moves to
 * the release, then the process manager replaces the app's process with the release's in one
 * operation that it finishes even if we die during it (systemd's restart job runs in PID 1, pm2's
 * restart in its daemon; pm2's delete + start, when a restart would keep some of the old
 * definition, in one command of its own session that outlives us: see pm2.ts), then the health
 * check.
 *
 * `current` moves first because the unit and the pm2 process run in `current`: from the switch
 * on, whatever starts the app (this restart, a crash, a reboot) starts the new release, and until
 * the restart the old process goes on serving. A deploy killed in between leaves the old process
 * serving and `current` ahead of it; the next deploy finds which release runs and moves `current`
 * back ({@link runningRelease}, {@link restart}.recover).
 * @module
 */
import { basename, dirname, join } from "node:path";
import { SLOTS } from "../../config/schema.ts";
import type { SlotInstance } from "../../managers/mod.ts";
import { slotLinks } from "../slots.ts";
import { exists, symlinkAtomic } from "../../fsutil.ts";
import { ROUTE_FILE } from "../../proxy/routes.ts";
import { displayArgv } from "../../runner.ts";
import { isoNow, type SwitchContext } from "../context.ts";
import { checkHealth, checkStaticFiles, type HealthResult, startAndCheck } from "../health.ts";
import { StepFailed } from "../journal.ts";
import {
  currentRelease,
  markServed,
  readReleaseMeta,
  type ReleaseMeta,
  runsProcess,
  writeReleaseMeta,
} from "../releases.ts";
import { envSnapshot, releaseProcess, secretValues } from "../runtime.ts";
import { ActivationFailed, asStep, dryProcess, type SwitchStrategy } from "./strategy.ts";

/**
 * Switches `current` to `meta`'s release (recorded as step `switchStep`) and restarts the app
 * there with `secrets`; throws when it is not healthy. A static release runs no process: its
 * files are checked, and the process of `replaced` (the release before), if it ran one, is stopped.
 */
async function restartInPlace(
  ctx: SwitchContext,
  meta: ReleaseMeta,
  secrets: Record<string, string>,
  replaced: ReleaseMeta | undefined,
  switchStep: "switch" | "rollback" = "switch",
): Promise<HealthResult> {
  const { paths, config, journal, runner, manager, root } = ctx;
  await journal.step(switchStep, async () => {
    await symlinkAtomic(`releases/${meta.id}`, paths.current);
    await markServed(paths, meta.id);
  }, () => `current → releases/${meta.id}`);
  const process = await releaseProcess(paths, config, meta, secrets);
  if (!process) {
    if (replaced && runsProcess(replaced)) {
      await journal.step(
        "stop",
        () => runner.apply(manager.stop(paths.app, root, paths.dir)),
        () => `${manager.name} stopped the process of the release before`,
      );
    }
    return await checkStaticFiles(journal, paths.release(meta.id), meta, "static files in place; no process to start");
  }
  // What runs now decides how pm2 replaces it (see pm2.ts); systemd's restart is one job anyway.
  const running = await manager.running?.(ctx.inspect, paths.app, root);
  return await startAndCheck(
    journal,
    runner,
    { ...manager, restart: (p) => manager.restart(p, running) },
    process,
    `http://127.0.0.1:${config.port}${meta.healthCheck!.path}`,
    meta.healthCheck!,
    meta.image
      ? `docker started ${meta.image} (port ${config.port}); ${manager.name} follows its logs`
      : `${manager.name} started ${displayArgv(meta.argv!)}`,
  );
}

/**
 * The release the app's process runs now, from its working directory (the release `current`
 * named when it started); undefined when nothing runs or the manager or /proc cannot tell.
 */
async function runningRelease(ctx: SwitchContext): Promise<string | undefined> {
  const { paths, manager } = ctx;
  const running = await manager.running?.(ctx.inspect, paths.app, ctx.root).catch(() => undefined);
  if (!running?.pid) return undefined;
  const cwd = await Deno.readLink(`/proc/${running.pid}/cwd`).catch(() => undefined);
  const releases = await Deno.realPath(paths.releases).catch(() => paths.releases);
  return cwd && dirname(cwd) === releases ? basename(cwd) : undefined;
}

export const restart: SwitchStrategy = {
  name: "restart",

  async preflight() {},

  async activate(ctx, { meta, secrets, replaced, commit }) {
    try {
      // Coming from blue-green, the proxy holds the public port until it re-reads config.yml (every
      // 2 s): told now, it lets go, so the app can bind it, and the health check asks the app, not
      // the proxy (which would answer from the old slot).
      if (await exists(join(ctx.paths.dir, ROUTE_FILE))) await ctx.proxy({ op: "reload" }).catch(() => {});
      const health = await restartInPlace(ctx, meta, secrets, replaced);
      await commit?.();
      return { health, status: { slot: undefined, slotPort: undefined, watch: undefined, switchMs: undefined } };
    } catch (error) {
      if (!(error instanceof StepFailed)) ctx.journal.say(`✗ ${error instanceof Error ? error.message : error}`);
      const switched = (await currentRelease(ctx.paths)) === meta.id;
      throw new ActivationFailed(asStep(error, "deploy"), switched, false, false);
    }
  },

  /**
   * Switches back to `to` and restarts it (its own command, health check and `.env`); with no
   * release to go back to, stops the app.
   */
  async revert(ctx, { to, from, runs, step = "rollback", quiet = false }) {
    const { paths, runner, journal, manager } = ctx;
    if (!to) {
      await journal.step("stop", async () => {
        if (runs) await runner.apply(manager.stop(paths.app, ctx.root, paths.dir));
        await Deno.remove(paths.current).catch(() => {});
      }, () => "no previous release to go back to; the app is stopped");
      return undefined;
    }
    try {
      const meta = await readReleaseMeta(paths, to);
      if (!meta) throw new Error(`release ${to} has no metadata; cannot restart it`);
      const secrets = await envSnapshot(paths, meta);
      journal.redact(await secretValues(paths, meta));
      const failedMeta = await readReleaseMeta(paths, from);
      const health = await restartInPlace(ctx, meta, secrets, failedMeta, step);
      if (!quiet) journal.say(`↺ rolled back: release ${to} (${meta.commit.slice(0, 7)}) serves again`);
      return {
        version: meta.commit.slice(0, 7),
        commit: meta.commit,
        release: to,
        healthy: true,
        lastHealthCheck: health.checkedAt,
      };
    } catch {
      // Never left naming the failed release, which goes.
      await symlinkAtomic(`releases/${to}`, paths.current).catch(() => {});
      if (!quiet) journal.say(`✗ the previous release ${to} is not healthy either: nothing healthy serves`);
      return { release: to, healthy: false, lastHealthCheck: isoNow(ctx.clock) };
    }
  },

  /**
   * After a healthy deploy of an app that was blue-green before: stop both slots and remove the
   * route and the slot links, so nothing of the old setup lingers (or returns at boot).
   */
  async settle(ctx) {
    const { paths, runner, journal, manager } = ctx;
    if (!(await exists(join(paths.dir, ROUTE_FILE))) && !(await exists(join(paths.dir, "slots")))) return;
    await journal.step("retire", async () => {
      // Each slot and each of its web instances (`blue-2`, …) that has a link, and the slots themselves.
      const names = new Set<string>([...SLOTS, ...(await slotLinks(paths))]);
      for (const name of names) {
        await runner.apply(manager.stop(paths.app, ctx.root, paths.dir, name as SlotInstance));
      }
      await Deno.remove(join(paths.dir, ROUTE_FILE)).catch(() => {});
      await Deno.remove(join(paths.dir, "slots"), { recursive: true }).catch(() => {});
    }, () => "the blue and green slots of the blue-green setup are stopped");
  },

  /**
   * `current` follows the release the app's process runs (a deploy killed between its switch and
   * its restart leaves the release before running). The killed deploy's release, if it never
   * ran, is pending again: cleanup removes it. The killed deploy restarted the app before its
   * health check: whether it answers is asked once.
   */
  async recover(ctx, killedCommit) {
    const { paths } = ctx;
    const runs = await runningRelease(ctx);
    const switched = await currentRelease(paths);
    if (runs && runs !== switched && (await readReleaseMeta(paths, runs))) {
      await symlinkAtomic(`releases/${runs}`, paths.current);
      const meta = switched ? await readReleaseMeta(paths, switched) : undefined;
      if (meta && switched! > runs && meta.commit === killedCommit) {
        await writeReleaseMeta(paths, { ...meta, pending: true });
      }
    }
    return async (current, meta) => {
      const check = (runs === current ? meta : undefined)?.healthCheck;
      const url = `http://127.0.0.1:${ctx.config.port}${check?.path}`;
      const healthy = check !== undefined &&
        (await checkHealth(url, { ...check, successes: 1, window: Math.min(check.window, 5000) }, undefined, ctx.clock))
          .healthy;
      return { healthy, status: healthy ? "running" : "failed", lastHealthCheck: isoNow(ctx.clock) };
    };
  },

  async describe(ctx, meta) {
    const { plan, print, runner, manager } = ctx;
    print(`would switch ${plan.paths.current} → releases/<new>`);
    if (plan.runs) {
      await runner.apply(manager.restart((await dryProcess(ctx, meta))!));
      print(`would check http://127.0.0.1:${plan.config.port}${plan.deploy.healthCheck!.path}, else switch back`);
    } else print("would check the static files; no process to start");
  },
};
