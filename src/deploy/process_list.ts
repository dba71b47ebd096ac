/**
 * Every process of an app that should run now, with its state as the process manager reports it:
 * the web process (under blue-green each instance of the serving slot, from route.json), and each
 * worker instance (workers.json). For `status` (live) and status.json (as of its writing).
 * @module
 */
import type { ServerConfig } from "../config/schema.ts";
import type { ProcessManager, Slot, SlotInstance, WorkerId } from "../managers/mod.ts";
import { currentRelease, readReleaseMeta, runsProcess } from "./releases.ts";
import type { AppPaths } from "../paths.ts";
import { readRoute, targetPorts } from "../proxy/routes.ts";
import type { Runner } from "../runner.ts";
import { containerState } from "../managers/docker.ts";
import { processName } from "../managers/pm2.ts";
import { workerInstances } from "./processes.ts";
import { slotInstance, slotOfPort } from "./slots.ts";
import { PROXIED } from "./strategies/names.ts";
import { runningWorkers } from "./workers.ts";

/** The words for a process that runs: pm2's, systemd's, and the docker engine's for a container. */
export const RUNNING_STATES: ReadonlySet<string> = new Set(["online", "active", "running"]);

/** One process of an app (status.json `processes`). */
export interface ProcessInfo {
  /** `web`, or the worker's process type. */
  type: string;
  /** From 1. */
  instance: number;
  /** The manager's name for it: pm2 process, or systemd unit without `.service`. */
  name: string;
  /** 0 when it does not run. */
  pid: number;
  /** The manager's word (online, stopped, errored; active, inactive, failed), or `missing` when it does not know it. */
  state: string;
  restarts: number;
}

/** The processes that should run for the app, by the manager's names. */
export async function expectedProcesses(
  paths: AppPaths,
  config: ServerConfig,
  manager: ProcessManager,
  servingSlot?: Slot,
): Promise<Omit<ProcessInfo, "pid" | "state" | "restarts">[]> {
  const app = paths.app;
  const web: { instance: number; slot?: SlotInstance }[] = [];
  if (PROXIED[config.strategy]) {
    const route = await readRoute(paths.dir).catch(() => undefined);
    const ports = targetPorts(route);
    // The slot status.json names (config.yml's slots may be newer than `config`: a first deploy chooses them).
    const slot = servingSlot ?? (config.slots ? slotOfPort(config.slots, ports[0]) : undefined);
    if (slot) ports.forEach((_, i) => web.push({ instance: i + 1, slot: slotInstance(slot, i + 1) }));
  } else {
    // Under restart the app's own process, unless the serving release runs none (static files).
    const release = await currentRelease(paths).catch(() => undefined);
    const meta = release ? await readReleaseMeta(paths, release).catch(() => undefined) : undefined;
    if (meta && runsProcess(meta)) web.push({ instance: 1 });
  }
  const workers: WorkerId[] = workerInstances(await runningWorkers(paths.dir));
  return [
    ...web.map(({ instance, slot }) => ({ type: "web", instance, name: manager.nameOf(app, slot) })),
    ...workers.map((worker) => ({ ...worker, name: manager.nameOf(app, undefined, worker) })),
  ];
}

/**
 * {@link expectedProcesses} with their states; undefined when the manager cannot say (no `states`,
 * or it failed). A process the manager does not know is `missing`.
 */
export async function listProcesses(
  paths: AppPaths,
  config: ServerConfig,
  manager: ProcessManager,
  runner: Runner,
  servingSlot?: Slot,
): Promise<ProcessInfo[] | undefined> {
  if (!manager.states) return undefined;
  try {
    const expected = await expectedProcesses(paths, config, manager, servingSlot);
    const states = await manager.states(runner, paths.root, expected.map((p) => p.name));
    return expected.map((p) => ({ ...p, ...(states.get(p.name) ?? { pid: 0, state: "missing", restarts: 0 }) }));
  } catch {
    return undefined;
  }
}

/**
 * A docker app's processes with its web one as the engine reports its container (`<app>-<slot>`,
 * `<app>` under restart): the manager runs only the container's log follower, whose state says
 * nothing of whether the app runs. The follower's stays when the engine cannot be asked.
 */
export async function withContainer(
  processes: ProcessInfo[],
  app: string,
  runner: Runner,
  slot?: Slot,
): Promise<ProcessInfo[]> {
  const name = processName(app, slot);
  try {
    const state = await containerState(runner, name);
    return processes.map((p) => p.type === "web" ? { ...p, name, ...state } : p);
  } catch {
    return processes;
  }
}
