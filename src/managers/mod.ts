/**
 * The process managers, by name.
 * @module
 */
import { withDocker } from "./docker.ts";
import type { ProcessManager } from "./manager.ts";
import { pm2 } from "./pm2.ts";
import { systemd } from "./systemd.ts";

export type { AppProcess, ProcessManager, Running, Slot } from "./manager.ts";

/**
 * The manager called `name` in config.yml; with `docker`, one that also starts and removes the
 * containers of a docker app (see docker.ts): for an app whose release, or the one it replaces,
 * is a docker release.
 */
export function managerNamed(name: ProcessManager["name"], docker = false): ProcessManager {
  const manager = name === "pm2" ? pm2 : systemd;
  return docker ? withDocker(manager) : manager;
}
