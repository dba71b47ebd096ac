/**
 * The blue-green strategy: the new release starts in the idle slot and is health-checked there,
 * before it gets any traffic; then the proxy's route moves to it at once, the old slot drains,
 * the new one is watched while the old one stays warm, and only then the old one stops. Any
 * failure before the switch leaves traffic where it was; a failure in the watch window moves it
 * straight back (the activation reverts itself). Used by deploys and by `rollback`. Before the
 * switch, a deploy's gates run against the healthy new slot (../gates.ts), and with `canary:` the
 * new slot first gets a growing share of the traffic, judged at each step (../canary.ts); a
 * failure takes the canary down (canary.json removed, the new slot drained and stopped).
 * @module
 */
import { join } from "node:path";
import { symlinkAtomic } from "../../fsutil.ts";
import { proxyComingUp, proxyStartCommand, type Slot } from "../../managers/mod.ts";
import { removeCanary } from "../../proxy/canary_file.ts";
import { ProxyNotRunning } from "../../proxy/client.ts";
import { portsTarget, readRoute, ROUTE_FILE, type RouteTarget, targetPorts, writeRoute } from "../../proxy/routes.ts";
import { describeCanary, removeSplit, runCanaryPhase, settleCanary, settlePromoted } from "../canary.ts";
import type { SwitchContext } from "../context.ts";
import { checkStaticFiles, type HealthResult, startAndCheck, staticRoot, watchHealth } from "../health.ts";
import { currentRelease, markServed, readReleaseMeta, runsProcess, setBad } from "../releases.ts";
import { releaseProcess } from "../runtime.ts";
import { routedHealth } from "../outcome.ts";
import { readStatus } from "../status.ts";
import {
  ensureSlots,
  instancePorts,
  linkSlot,
  moveSlot,
  otherSlot,
  portFree,
  routedSlot,
  slotInstance,
  slotInstances,
  slotOfPort,
  unlinkInstances,
} from "../slots.ts";
import {
  type Activated,
  type Activation,
  ActivationFailed,
  asStep,
  dryProcess,
  type SwitchStrategy,
} from "./strategy.ts";
import { restart } from "./restart.ts";

export const blueGreen: SwitchStrategy = {
  name: "blue-green",

  /** The proxy runs (checked before a deploy builds anything). */
  async preflight(ctx) {
    // A proxy its manager is bringing up (back at boot, after a crash) is waited for, up to 15 s.
    const until = Date.now() + PROXY_COMING_UP_MS;
    for (;;) {
      try {
        await ctx.proxy({ op: "status" });
        return;
      } catch (error) {
        if (!(error instanceof ProxyNotRunning)) throw error;
        if (Date.now() < until && await proxyComingUp(ctx.root, ctx.runner)) {
          await new Promise((resolve) => setTimeout(resolve, 250));
          continue;
        }
        throw await notRunning(ctx.root, error);
      }
    }
  },

  activate: activateBlueGreen,

  /**
   * After a killed deploy: a canary it left (canary.json) ends (see {@link endLeftCanary}); the
   * release the proxy routes to serves from its slot (see {@link routedHealth}).
   */
  async recover(ctx) {
    await endLeftCanary(ctx, "the deploy was interrupted", false); // its `interrupted` event says it
    return async () => routedHealth(await routedSlot(ctx.paths, ctx.config.slots));
  },

  async describe(ctx, meta) {
    const { plan, print, runner, manager } = ctx;
    const { paths, config, deploy } = plan;
    const route = await readRoute(paths.dir);
    const first = targetPorts(route)[0];
    const serving = first === config.slots?.blue ? "blue" : "green";
    const idle: Slot = first !== undefined ? (serving === "blue" ? "green" : "blue") : "blue";
    const slot = { slot: idle, port: config.slots?.[idle] ?? 0 };
    if (plan.runs) {
      print(
        config.slots
          ? `would start the release in the idle ${idle} slot (port ${slot.port}):`
          : "would start the release in the blue slot (this first deploy chooses the slots' ports):",
      );
      await runner.apply(manager.restart((await dryProcess(ctx, meta, slot))!));
      if ((meta.instances ?? 1) > 1) print(`would start ${meta.instances} web instances there, each on its own port`);
      print(`would check http://127.0.0.1:<slot port>${deploy.healthCheck!.path} before it gets any traffic`);
    } else print(`would check the static files; the proxy would serve ${meta.root ?? "the release"}`);
    if (deploy.canary && plan.runs) print(describeCanary(deploy.canary, route !== undefined));
    print(`would point the proxy on port ${config.port} at it, then ${paths.current} → releases/<new>`);
    const old = targetPorts(route).length;
    print(
      `would drain the old slot${old > 1 ? ` (its ${old} web instances)` : ""} (up to ${
        config.drainTimeout / 1000
      }s), watch ${deploy.watch / 1000}s, stop it`,
    );
  },
};

/** How long a deploy waits for a proxy its manager is bringing up (see {@link proxyComingUp}). */
const PROXY_COMING_UP_MS = 15_000;

/** The proxy is not running: with the command that starts it here, in the push's own words (a hint line would not reach it). */
async function notRunning(root: string, error: ProxyNotRunning): Promise<ProxyNotRunning> {
  const start = await proxyStartCommand(root);
  return new ProxyNotRunning(`${error.message}: start it with \`${start}\``, {
    suggestion: start.startsWith("deploy-paradigm setup") ? "setup installs the proxy as a service" : undefined,
    cause: error,
  });
}

/** Brings `activation.meta` into service through the idle slot. Throws {@link ActivationFailed}. */
async function activateBlueGreen(ctx: SwitchContext, activation: Activation): Promise<Activated> {
  const { root, paths, config, manager, runner, journal, proxy } = ctx;
  const { meta } = activation;
  const app = paths.app;
  const releaseDir = paths.release(meta.id);
  let slots = await ensureSlots(paths, root, config.slots);
  const route = await readRoute(paths.dir);
  const serving = route !== undefined;
  const oldPorts = targetPorts(route);
  const oldPort = oldPorts[0];
  const oldSlot = slotOfPort(slots, oldPort);
  const oldRelease = await currentRelease(paths);
  const idle = oldSlot ? otherSlot(oldSlot) : "blue";
  await endLeftCanary(ctx, "ended before a new activation (a killed deploy left it)"); // rollback after a kill
  const failed = (error: unknown, step: string, switched: boolean) =>
    new ActivationFailed(asStep(error, step), switched, serving, true);
  const stopInstances = (slot: Slot, count?: number) => stopSlotInstances(ctx, slot, count);
  const stopSlot = (slot: Slot, why: string, count?: number) =>
    journal.step("stop", () => stopInstances(slot, count), () => why).catch(() => {});
  const drain = (ports: number[], whose: string) =>
    journal.step(
      "drain",
      async () => {
        try {
          const replies = await Promise.all(
            ports.map((port) => proxy({ op: "drain", port, timeoutMs: config.drainTimeout })),
          );
          const cut = replies.reduce((sum, reply) => sum + (reply.drained ? 0 : Number(reply.inFlight) || 0), 0);
          return { drained: replies.every((reply) => reply.drained), inFlight: cut };
        } catch (error) {
          // No proxy, no request in flight through it: nothing to wait for (a switch that failed for that).
          if (error instanceof ProxyNotRunning) return { drained: true, down: true };
          throw error;
        }
      },
      (reply: Record<string, unknown>) =>
        reply.down
          ? `the proxy is not running: nothing in flight to ${whose}`
          : reply.drained
          ? `requests in flight to ${whose} finished`
          : `drain timeout: ${reply.inFlight} cut`,
    ).catch(() => {});
  /** The route file and `current` first (the truth on disk), then the proxy is told (it also re-reads every 2 s). */
  const pointAt = async (to: RouteTarget | undefined, release: string | undefined) => {
    if (to) await writeRoute(paths.dir, to);
    else await Deno.remove(join(paths.dir, ROUTE_FILE)).catch(() => {});
    await removeCanary(paths.dir); // a canary's split ends with it: route.json says it all
    if (release) await symlinkAtomic(`releases/${release}`, paths.current);
    else await Deno.remove(paths.current).catch(() => {});
  };
  /** Traffic back where it was (`error`: why, for a canary that had passed: it is reverted now). */
  const back = async (error?: unknown) => {
    await pointAt(route, oldRelease).catch(() => {});
    await proxy({ op: "reload" }).catch(() => {});
    if (canary) await settlePromoted(ctx, meta.id, error).catch(() => {});
  };
  /** The new slot drained and stopped. */
  const retire = async () => {
    await drain(ports, `the ${idle} slot`);
    await stopSlot(idle, `the ${idle} slot is stopped`, instances);
  };
  const undo = async (stopIdle: boolean, error?: unknown) => {
    await back(error);
    if (stopIdle) await retire();
  };

  // 1. Start the new release in the idle slot (each of its web instances) and check it there, before it gets any traffic.
  let health: HealthResult | undefined;
  let target: RouteTarget;
  const runs = runsProcess(meta);
  const instances = meta.instances ?? 1;
  let ports = [slots[idle]];
  if (runs && meta.healthCheck) {
    try {
      // The idle slot takes no traffic: stop whatever of ours may be left there (a killed deploy's)...
      const stale = Math.max(instances, await slotInstances(paths, idle));
      if (!portFree(slots[idle]) || stale > 1) await stopInstances(idle, stale).catch(() => {});
      if (!portFree(slots[idle])) {
        // ...and if the port is still taken, it is not ours: a health check there would ask someone else.
        const taken = slots[idle];
        slots = await moveSlot(paths, root, slots, idle);
        journal.say(
          `! port ${taken} of the ${idle} slot is taken by another process: the slot moves to ${slots[idle]}`,
        );
      }
      ports = await instancePorts(paths, root, slots, idle, instances);
      for (const [i, port] of ports.entries()) {
        const name = slotInstance(idle, i + 1);
        await linkSlot(paths, name, meta.id);
        const process = await releaseProcess(paths, config, meta, activation.secrets, { slot: name, port });
        health = await startAndCheck(
          journal,
          runner,
          manager,
          process!,
          `http://127.0.0.1:${port}${meta.healthCheck.path}`,
          meta.healthCheck,
          meta.image
            // The container is docker's; the process manager runs its log follower.
            ? `docker started ${meta.image} in the ${idle} slot (port ${port}); ${manager.name} follows its logs`
            : `${manager.name} started the ${idle} slot${instances > 1 ? ` instance ${i + 1}/${instances}` : ""} ` +
              `(port ${port})`,
        );
      }
    } catch (error) {
      await stopSlot(idle, `the ${idle} slot is stopped; it never took traffic`, instances);
      throw failed(error, "start", false);
    }
    target = portsTarget(ports);
  } else {
    health = await checkStaticFiles(journal, releaseDir, meta, "static files in place; the proxy serves them")
      .catch((error) => {
        throw failed(error, "health", false);
      });
    target = { dir: staticRoot(releaseDir, meta) };
  }

  // 1b. Before any traffic moves to it: the canary (when something served before), and the gates.
  const gate = runs && activation.gate
    ? (before: string) => activation.gate!(`http://127.0.0.1:${ports[0]}`, before)
    : undefined;
  const canary = runs && serving ? activation.canary : undefined;
  if (runs && activation.canary && !serving) {
    journal.say("  canary: none for this first deploy (nothing served before): it takes all traffic at once");
  }
  if (gate || canary) {
    await runCanaryPhase(ctx, {
      canary: canary &&
        { policy: canary, target, slot: idle, release: meta.id, version: meta.commit.slice(0, 7) },
      gate,
      idle,
      ports,
      oldSlot,
      serving,
      drain,
      stopIdle: (why) => stopSlot(idle, why, instances),
    });
  }

  // 2. Switch: the proxy routes the next request to the new target, and must say it listens.
  let switchMs = 0;
  let stoppedOld = false;
  try {
    await journal.step("switch", async () => {
      // Moving from the restart strategy: the old process holds the public port the proxy needs.
      const old = oldRelease ? await readReleaseMeta(paths, oldRelease).catch(() => undefined) : undefined;
      if (!serving && old && runsProcess(old)) {
        stoppedOld = true;
        await runner.apply(manager.stop(app, root, paths.dir));
      }
      const started = ctx.clock.elapsed();
      await pointAt(target, meta.id);
      await proxy({ op: "reload" });
      switchMs = ctx.clock.elapsed() - started;
      await markServed(paths, meta.id);
      await expectRouted(ctx, app, target);
    }, () => `traffic → ${"dir" in target ? "static files" : `${idle} slot`} in ${switchMs.toFixed(1)} ms`);
  } catch (error) {
    await undo(runs, error);
    // The restart strategy's process it stopped starts again (its own command, `.env` and health check),
    // to the end even if the deploy was cancelled (as failed() and rollback do).
    if (stoppedOld) journal.cancellation = undefined;
    const back = stoppedOld ? await restart.revert!(ctx, { to: oldRelease, from: meta.id, runs: true }) : undefined;
    throw new ActivationFailed(asStep(error, "switch"), false, serving, true, back);
  }

  // 3. Drain the old slot: requests in flight finish; it gets no new ones.
  if (oldPort !== undefined) await drain(oldPorts, "the old slot");

  // 4. Watch the new release while the old slot stays warm; then commit (move the branch).
  const revert = async (error: unknown, step: string): Promise<never> => {
    // The revert's line, then the drain and stop of the slot it left, in the order they happen.
    await journal.step(
      "revert",
      () => back(error),
      () => serving ? `traffic back to ${oldSlot ? `the ${oldSlot} slot` : "the release before"}` : "no release serves",
    )
      .catch(() => {});
    if (runs) await retire();
    throw failed(error, step, true);
  };
  let watch: "passed" | "off" = "off";
  // With nothing served before there is nothing to switch back to: no watch window.
  if (runs && meta.healthCheck && activation.watchMs > 0 && serving) {
    const urls = ports.map((port) => `http://127.0.0.1:${port}${meta.healthCheck!.path}`);
    try {
      await journal.step("watch", async () => {
        const problems = await Promise.all(
          urls.map((url) => watchHealth(url, meta.healthCheck!, activation.watchMs, journal.cancellation?.signal)),
        );
        const i = problems.findIndex((problem) => problem !== undefined);
        if (i >= 0) throw new Error(`failed in the watch window: ${urls[i]} ${problems[i]}`);
      }, () => `healthy for ${activation.watchMs / 1000}s while the old slot stayed warm`);
      watch = "passed";
    } catch (error) {
      await revert(error, "watch");
    }
  }
  try {
    await activation.commit?.();
  } catch (error) {
    await revert(error, "branch");
  }

  // 5. The release stands: stop what served before. Nothing here may undo the deploy.
  if (oldSlot) await stopSlot(oldSlot, `the ${oldSlot} slot is stopped`);
  return {
    health: health!,
    status: { slot: runs ? idle : undefined, slotPort: runs ? slots[idle] : undefined, watch, switchMs },
  };
}

/**
 * A canary a killed deploy left (canary.json) ends, so the stable side takes every request: the
 * file goes, the proxy reloads, the canary's ports drain, the slot that does not serve stops, and
 * status.json's canary is `aborted` with `reason`. For `recover`, an activation (a `rollback`
 * after the kill) and `canary <app> abort` after it. Returns whether there was one.
 */
export async function endLeftCanary(ctx: SwitchContext, reason: string, record = true): Promise<boolean> {
  const { paths, config, journal } = ctx;
  const ports = await removeSplit(ctx);
  if (!ports) return false;
  for (const port of ports) {
    await ctx.proxy({ op: "drain", port, timeoutMs: config.drainTimeout }).catch(() => {});
  }
  const serving = config.slots &&
    slotOfPort(config.slots, targetPorts(await readRoute(paths.dir).catch(() => undefined))[0]);
  const idle = serving ? otherSlot(serving) : undefined;
  if (idle) await stopSlotInstances(ctx, idle).catch(() => {});
  // Its release never passed its canary: bad, as one aborted while its deploy ran.
  const left = (await readStatus(paths.status).catch(() => undefined))?.canary;
  // (`promoted` too: a deploy killed after its last step, before the switch, left the split at the last percent.)
  const ended = left?.state === "running" || left?.state === "promoted";
  const release = ended && left.release !== await currentRelease(paths) ? left.release : undefined;
  const meta = release ? await readReleaseMeta(paths, release).catch(() => undefined) : undefined;
  if (meta) await setBad(paths, meta.id, true);
  await settleCanary(ctx, undefined, "aborted", reason);
  if (record) {
    await journal.record("canary", {
      ok: false,
      message: `the canary${release ? ` of release ${release}` : ""} left by a killed deploy ended: ${reason}` +
        (meta ? "; the release is marked bad" : ""),
      ...(release ? { release, commit: meta?.commit ?? "" } : {}),
    });
  }
  journal.say(
    `! the interrupted deploy's canary ended: every request goes to ${
      serving ? `the ${serving} slot` : "the stable side"
    }` + (idle ? `; the ${idle} slot is stopped` : ""),
  );
  return true;
}

/** Stops every web instance of a slot (instance 1 is the slot itself), as many as `count`, or as its release runs. */
async function stopSlotInstances(ctx: SwitchContext, slot: Slot, count?: number): Promise<void> {
  const { runner, manager, paths, root } = ctx;
  const n = count ?? await slotInstances(paths, slot);
  for (let i = n; i >= 1; i--) await runner.apply(manager.stop(paths.app, root, paths.dir, slotInstance(slot, i)));
  await unlinkInstances(paths, slot, 1);
}

/** Asks the proxy whether `app` now routes to `target` and listens on its public port (up to 5 s). */
async function expectRouted({ proxy, clock }: SwitchContext, app: string, target: RouteTarget): Promise<void> {
  const deadline = clock.elapsed() + 5_000;
  let seen = "not routed";
  while (clock.elapsed() < deadline) {
    const { routes } = await proxy({ op: "status" }) as { routes?: Record<string, unknown>[] };
    const mine = routes?.find((r) => r.app === app);
    if (mine && JSON.stringify(mine.target) === JSON.stringify(target) && mine.listening === true) return;
    seen = !mine ? "not routed" : typeof mine.listenError === "string" && mine.listening !== true
      ? mine.listenError // e.g. the public port is another program's
      : `target ${JSON.stringify(mine.target)}, listening ${mine.listening}`;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`the proxy does not serve ${app} as asked (${seen}); see its log`);
}
