/**
 * The blue-green switch: the new release starts in the idle slot and is health-checked there,
 * before it gets any traffic; then the proxy's route moves to it at once, the old slot drains,
 * the new one is watched while the old one stays warm, and only then the old one stops. Any
 * failure before the switch leaves traffic where it was; a failure in the watch window moves it
 * straight back. Used by deploys and by `rollback`.
 * @module
 */
import { join } from "node:path";
import type { ServerConfig } from "../config/schema.ts";
import { exists, symlinkAtomic } from "../fsutil.ts";
import type { ProcessManager, Slot } from "../managers/mod.ts";
import type { AppPaths } from "../paths.ts";
import { control } from "../proxy/client.ts";
import { readRoute, ROUTE_FILE, type RouteTarget, writeRoute } from "../proxy/routes.ts";
import type { Runner } from "../runner.ts";
import { type HealthResult, startAndCheck, watchHealth } from "./health.ts";
import { type Journal, StepFailed } from "./journal.ts";
import { currentRelease, markServed, readReleaseMeta, type ReleaseMeta, runsProcess } from "./releases.ts";
import { releaseProcess } from "./runtime.ts";
import { ensureSlots, linkSlot, moveSlot, otherSlot, portFree, slotOfPort } from "./slots.ts";

/** What a blue-green activation needs. */
export interface BlueGreenInput {
  app: string;
  /** The server root (DEPLOY_PARADIGM_PREFIX). */
  root: string;
  paths: AppPaths;
  config: ServerConfig;
  manager: ProcessManager;
  runner: Runner;
  journal: Journal;
  /** The release to bring into service. */
  meta: ReleaseMeta;
  /** Its `.env` values. */
  secrets: Record<string, string>;
  /** Milliseconds of watch window (0: none). */
  watchMs: number;
  /** Runs once the release serves and passed its watch window; a throw switches back. */
  commit?: () => Promise<void>;
}

/** A release in service. */
export interface Activated {
  health: HealthResult;
  /** The slot and port that take traffic; none for a static release. */
  slot?: Slot;
  port?: number;
  /** Milliseconds from "healthy" to "the proxy routes to it". */
  switchMs: number;
  watch: "passed" | "off";
}

/** A failed activation, after traffic was left or put back where it was. */
export class ActivationFailed extends Error {
  constructor(
    readonly failure: StepFailed,
    /** Traffic had moved to the new release (and was moved back). */
    readonly switched: boolean,
    /** Something healthy serves now. */
    readonly serving: boolean,
  ) {
    super(failure.message);
  }
}

function asStep(error: unknown, step: string): StepFailed {
  return error instanceof StepFailed ? error : new StepFailed(step, error);
}

/** Checks that the proxy runs (before a deploy builds anything). */
export async function requireProxy(root: string): Promise<void> {
  await control(root, { op: "status" });
}

/** The static check: the file for the health path exists in the release. */
export async function checkStaticFiles(journal: Journal, releaseDir: string, meta: ReleaseMeta, note: string) {
  return await journal.step("health", async () => {
    const path = meta.healthCheck?.path ?? "/";
    const file = join(releaseDir, path.endsWith("/") ? `${path}index.html` : path);
    if (!(await exists(file))) throw new Error(`the static app has no file for ${path} (looked for ${file})`);
    return { healthy: true, attempts: 1, successes: 1, checkedAt: new Date().toISOString() };
  }, () => note);
}

/** Brings `input.meta` into service through the idle slot. Throws {@link ActivationFailed}. */
export async function activateBlueGreen(input: BlueGreenInput): Promise<Activated> {
  const { app, root, paths, config, manager, runner, journal, meta } = input;
  const releaseDir = paths.release(meta.id);
  let slots = await ensureSlots(paths, root, config.slots);
  const route = await readRoute(paths.dir);
  const serving = route !== undefined;
  const oldPort = route && "port" in route ? route.port : undefined;
  const oldSlot = slotOfPort(slots, oldPort);
  const oldRelease = await currentRelease(paths);
  const idle = oldSlot ? otherSlot(oldSlot) : "blue";
  const stopSlot = (slot: Slot, why: string) =>
    journal.step("stop", () => runner.apply(manager.stop(app, root, paths.dir, slot)), () => why).catch(() => {});
  const drain = (port: number, whose: string) =>
    journal.step(
      "drain",
      () => control(root, { op: "drain", port, timeoutMs: config.drainTimeout }),
      (reply: Record<string, unknown>) =>
        reply.drained ? `requests in flight to ${whose} finished` : `drain timeout: ${reply.inFlight} cut`,
    ).catch(() => {});
  /** The route file and `current` first (the truth on disk), then the proxy is told (it also re-reads every 2 s). */
  const pointAt = async (to: RouteTarget | undefined, release: string | undefined) => {
    if (to) await writeRoute(paths.dir, to);
    else await Deno.remove(join(paths.dir, ROUTE_FILE)).catch(() => {});
    if (release) await symlinkAtomic(`releases/${release}`, paths.current);
    else await Deno.remove(paths.current).catch(() => {});
  };
  const undo = async (stopIdle: boolean) => {
    await pointAt(route, oldRelease).catch(() => {});
    await control(root, { op: "reload" }).catch(() => {});
    if (stopIdle) {
      await drain(slots[idle], `the ${idle} slot`);
      await stopSlot(idle, `the ${idle} slot is stopped`);
    }
  };

  // 1. Start the new release in the idle slot and check it there, before it gets any traffic.
  let health: HealthResult;
  let target: RouteTarget;
  const runs = runsProcess(meta);
  if (runs && meta.healthCheck) {
    try {
      if (!portFree(slots[idle])) {
        // The idle slot takes no traffic: stop whatever of ours may be left there (a killed deploy's)...
        await runner.apply(manager.stop(app, root, paths.dir, idle)).catch(() => {});
      }
      if (!portFree(slots[idle])) {
        // ...and if the port is still taken, it is not ours: a health check there would ask someone else.
        const taken = slots[idle];
        slots = await moveSlot(paths, root, slots, idle);
        journal.say(
          `! port ${taken} of the ${idle} slot is taken by another process: the slot moves to ${slots[idle]}`,
        );
      }
      await linkSlot(paths, idle, meta.id);
      const process = await releaseProcess(paths, config, meta, input.secrets, { slot: idle, port: slots[idle] });
      health = await startAndCheck(
        journal,
        runner,
        manager,
        process!,
        `http://127.0.0.1:${slots[idle]}${meta.healthCheck.path}`,
        meta.healthCheck,
        `${manager.name} started the ${idle} slot (port ${slots[idle]})`,
      );
    } catch (error) {
      await stopSlot(idle, `the ${idle} slot is stopped; it never took traffic`);
      throw new ActivationFailed(asStep(error, "start"), false, serving);
    }
    target = { port: slots[idle] };
  } else {
    health = await checkStaticFiles(journal, releaseDir, meta, "static files in place; the proxy serves them")
      .catch((error) => {
        throw new ActivationFailed(asStep(error, "health"), false, serving);
      });
    target = { dir: releaseDir };
  }

  // 2. Switch: the proxy routes the next request to the new target, and must say it listens.
  let switchMs = 0;
  try {
    await journal.step("switch", async () => {
      // Moving from the restart strategy: the old process holds the public port the proxy needs.
      const old = oldRelease ? await readReleaseMeta(paths, oldRelease).catch(() => undefined) : undefined;
      if (!serving && old && runsProcess(old)) {
        await runner.apply(manager.stop(app, root, paths.dir));
      }
      const started = performance.now();
      await pointAt(target, meta.id);
      await control(root, { op: "reload" });
      switchMs = performance.now() - started;
      await markServed(paths, meta.id);
      await expectRouted(root, app, target);
    }, () => `traffic → ${"port" in target ? `${idle} slot` : "static files"} in ${switchMs.toFixed(1)} ms`);
  } catch (error) {
    await undo(runs);
    throw new ActivationFailed(asStep(error, "switch"), false, serving);
  }

  // 3. Drain the old slot: requests in flight finish; it gets no new ones.
  if (oldPort !== undefined) await drain(oldPort, "the old slot");

  // 4. Watch the new release while the old slot stays warm; then commit (move the branch).
  const revert = async (error: unknown, step: string): Promise<never> => {
    await journal.step(
      "revert",
      () => undo(runs),
      () => serving ? `traffic back to ${oldSlot ? `the ${oldSlot} slot` : "the release before"}` : "no release serves",
    )
      .catch(() => {});
    throw new ActivationFailed(asStep(error, step), true, serving);
  };
  let watch: Activated["watch"] = "off";
  // With nothing served before there is nothing to switch back to: no watch window.
  if (runs && meta.healthCheck && input.watchMs > 0 && serving) {
    const url = `http://127.0.0.1:${slots[idle]}${meta.healthCheck.path}`;
    try {
      await journal.step("watch", async () => {
        const problem = await watchHealth(url, meta.healthCheck!, input.watchMs, journal.cancellation?.signal);
        if (problem) throw new Error(`failed in the watch window: ${url} ${problem}`);
      }, () => `healthy for ${input.watchMs / 1000}s while the old slot stayed warm`);
      watch = "passed";
    } catch (error) {
      await revert(error, "watch");
    }
  }
  try {
    await input.commit?.();
  } catch (error) {
    await revert(error, "branch");
  }

  // 5. The release stands: stop what served before. Nothing here may undo the deploy.
  if (oldSlot) await stopSlot(oldSlot, `the ${oldSlot} slot is stopped`);
  return { health, slot: runs ? idle : undefined, port: runs ? slots[idle] : undefined, switchMs, watch };
}

/** Asks the proxy whether `app` now routes to `target` and listens on its public port (up to 5 s). */
async function expectRouted(root: string, app: string, target: RouteTarget): Promise<void> {
  const deadline = Date.now() + 5_000;
  let seen = "not routed";
  while (Date.now() < deadline) {
    const { routes } = await control(root, { op: "status" }) as { routes?: Record<string, unknown>[] };
    const mine = routes?.find((r) => r.app === app);
    if (mine && JSON.stringify(mine.target) === JSON.stringify(target) && mine.listening === true) return;
    seen = mine ? `target ${JSON.stringify(mine.target)}, listening ${mine.listening}` : "not routed";
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`the proxy does not serve ${app} as asked (${seen}); see its log`);
}
