/**
 * The process managers, by name: one file per manager, one line here. A name in
 * {@link MANAGER_NAMES} without an implementation (or with another's) fails `deno check`;
 * config.yml's `manager` and `setup --manager` come from here.
 * @module
 */
import { withDocker } from "./docker.ts";
import type { ProcessManager } from "./manager.ts";
import { pm2 } from "./pm2.ts";
import { systemd } from "./systemd.ts";
import { PROXY_SERVICE } from "../proxy/routes.ts";
import type { Runner } from "../runner.ts";

export type {
  AppProcess,
  ProcessManager,
  ProcessState,
  Running,
  ServiceSpec,
  Slot,
  SlotInstance,
  WorkerId,
} from "./manager.ts";

/** The process managers a server can use; the first that runs on a machine is `setup`'s default. */
export const MANAGER_NAMES = ["systemd", "pm2"] as const;

/** A process manager's name. */
export type Manager = typeof MANAGER_NAMES[number];

/** Every process manager, under its own name. */
export const MANAGERS: { readonly [Name in Manager]: ProcessManager<Name> } = { systemd, pm2 };

/** A service's states on its way up: started, or to be started again after it exited (it may answer in a moment). */
const COMING_UP: ReadonlySet<string> = new Set(["online", "launching", "waiting restart", "active", "activating"]);

/**
 * Whether the proxy's installed service runs or is on its way up, as its manager says, though it
 * may not answer yet: pm2 brought back at boot (a deploy's step boot starts its daemon), a restart
 * after a crash or an upgrade.
 */
export async function proxyComingUp(root: string, runner: Runner): Promise<boolean> {
  for (const name of MANAGER_NAMES) {
    const manager = MANAGERS[name];
    if (!(await manager.serviceArgv?.(PROXY_SERVICE, root))) continue;
    const states = await manager.states?.(runner, root, [PROXY_SERVICE]).catch(() => undefined);
    if (COMING_UP.has(states?.get(PROXY_SERVICE)?.state ?? "")) return true;
  }
  return false;
}

/**
 * How to start the proxy (`deploy-paradigm-proxy`) under `root` as it is installed here: the
 * command of the manager that has its service (setup installed it), else setup, which installs it.
 */
export async function proxyStartCommand(root: string): Promise<string> {
  for (const name of MANAGER_NAMES) {
    if (await MANAGERS[name].serviceArgv?.(PROXY_SERVICE, root)) {
      return MANAGERS[name].startServiceCommand(PROXY_SERVICE, root);
    }
  }
  return "deploy-paradigm setup <app>";
}

/**
 * The manager called `name` in config.yml; with `docker`, one that also starts and removes the
 * containers of a docker app (see docker.ts): for an app whose release, or the one it replaces,
 * is a docker release.
 */
export function managerNamed(name: Manager, docker = false): ProcessManager {
  const manager: ProcessManager = MANAGERS[name];
  return docker ? withDocker(manager) : manager;
}
