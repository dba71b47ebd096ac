/**
 * The process managers, by name.
 * @module
 */
import type { ProcessManager } from "./manager.ts";
import { pm2 } from "./pm2.ts";
import { systemd } from "./systemd.ts";

export type { AppProcess, ProcessManager, Slot } from "./manager.ts";

/** The manager called `name` in config.yml. */
export function managerNamed(name: ProcessManager["name"]): ProcessManager {
  return name === "pm2" ? pm2 : systemd;
}
