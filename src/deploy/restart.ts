/**
 * The restart strategy's switch, shared by deploys, their roll-backs and `rollback`: `current`
 * moves to the release, then the process manager replaces the app's process with the release's
 * in one operation that it finishes even if we die during it (systemd's restart job runs in
 * PID 1, pm2's restart in its daemon; pm2's delete + start, when a restart would keep some of the
 * old definition, in one command of its own session that outlives us: see pm2.ts), then the
 * health check.
 *
 * `current` moves first because the unit and the pm2 process run in `current`: from the switch
 * on, whatever starts the app (this restart, a crash, a reboot) starts the new release, and until
 * the restart the old process goes on serving. A deploy killed in between leaves the old process
 * serving and `current` ahead of it; the next deploy finds which release runs and moves `current`
 * back ({@link runningRelease}).
 * @module
 */
import { basename, dirname } from "node:path";
import type { ServerConfig } from "../config/schema.ts";
import { symlinkAtomic } from "../fsutil.ts";
import type { ProcessManager } from "../managers/mod.ts";
import { type AppPaths, prefix } from "../paths.ts";
import { displayArgv, type Runner } from "../runner.ts";
import { checkStaticFiles } from "./bluegreen.ts";
import { type HealthResult, startAndCheck } from "./health.ts";
import type { Journal } from "./journal.ts";
import { markServed, type ReleaseMeta, runsProcess } from "./releases.ts";
import { releaseProcess } from "./runtime.ts";

/** What a restart in place works with. */
export interface InPlace {
  paths: AppPaths;
  config: ServerConfig;
  journal: Journal;
  runner: Runner;
  manager: ProcessManager;
}

/**
 * Switches `current` to `meta`'s release (recorded as step `switchStep`) and restarts the app
 * there with `secrets`; throws when it is not healthy. A static release runs no process: its
 * files are checked, and the process of `replaced` (the release before), if it ran one, is stopped.
 */
export async function restartInPlace(
  ctx: InPlace,
  meta: ReleaseMeta,
  secrets: Record<string, string>,
  replaced: ReleaseMeta | undefined,
  switchStep: "switch" | "rollback" = "switch",
): Promise<HealthResult> {
  const { paths, config, journal, runner, manager } = ctx;
  await journal.step(switchStep, async () => {
    await symlinkAtomic(`releases/${meta.id}`, paths.current);
    await markServed(paths, meta.id);
  }, () => `current → releases/${meta.id}`);
  const process = await releaseProcess(paths, config, meta, secrets);
  if (!process) {
    if (replaced && runsProcess(replaced)) {
      await journal.step(
        "stop",
        () => runner.apply(manager.stop(paths.app, prefix(), paths.dir)),
        () => `${manager.name} stopped the process of the release before`,
      );
    }
    return await checkStaticFiles(journal, paths.release(meta.id), meta, "static files in place; no process to start");
  }
  // What runs now decides how pm2 replaces it (see pm2.ts); systemd's restart is one job anyway.
  const running = await manager.running?.(runner, paths.app, prefix());
  return await startAndCheck(
    journal,
    runner,
    { ...manager, restart: (p) => manager.restart(p, running) },
    process,
    `http://127.0.0.1:${config.port}${meta.healthCheck!.path}`,
    meta.healthCheck!,
    `${manager.name} started ${meta.image ? `the container of ${meta.image}` : displayArgv(meta.argv!)}`,
  );
}

/**
 * The release the app's process runs now, from its working directory (the release `current`
 * named when it started); undefined when nothing runs or the manager or /proc cannot tell.
 */
export async function runningRelease(ctx: Omit<InPlace, "config" | "journal">): Promise<string | undefined> {
  const { paths, runner, manager } = ctx;
  const running = await manager.running?.(runner, paths.app, prefix()).catch(() => undefined);
  if (!running?.pid) return undefined;
  const cwd = await Deno.readLink(`/proc/${running.pid}/cwd`).catch(() => undefined);
  const releases = await Deno.realPath(paths.releases).catch(() => paths.releases);
  return cwd && dirname(cwd) === releases ? basename(cwd) : undefined;
}
