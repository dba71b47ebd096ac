/**
 * PM2: one process named after the app, described by an ecosystem JSON file (mode 0600: it
 * holds the .env values). A restart is `pm2 delete` + `pm2 start`, so a changed command or
 * environment always takes effect.
 * @module
 */
import { join } from "node:path";
import { deploymentsRoot } from "../paths.ts";
import type { AppProcess, ProcessManager, Slot } from "./manager.ts";
import type { Cmd, Plan } from "../runner.ts";

/** No pm2 command takes this long unless the daemon is stuck. */
const PM2_TIMEOUT = 60_000;

/**
 * pm2 commands of all apps on the server run one at a time: two pm2 clients that find no daemon
 * both start one, and one of them then hangs (seen when two apps deployed at once).
 */
function pm2Lock(root: string): string {
  return join(deploymentsRoot(root), ".pm2.lock");
}

/** The PM2 strategy. */
export const pm2: ProcessManager = {
  name: "pm2",
  restart(p: AppProcess): Plan {
    const name = processName(p.app, p.slot);
    const app = {
      name,
      script: p.argv[0],
      args: p.argv.slice(1),
      cwd: p.cwd,
      interpreter: "none",
      env: { ...p.secrets, ...p.env },
      filter_env: true, // nothing of the pm2 daemon's own environment reaches the app
      out_file: p.accessLog,
      error_file: p.errorLog,
      merge_logs: true,
      time: true,
      autorestart: true,
      kill_timeout: 5000,
    };
    return {
      files: [{ path: file(p.stateDir, name), content: JSON.stringify({ apps: [app] }, null, 2) + "\n", mode: 0o600 }],
      commands: [
        pm2Cmd(["delete", name], true),
        pm2Cmd(["start", file(p.stateDir, name)]),
        pm2Cmd(["save"]), // so that `pm2 resurrect` (pm2 startup) brings it back after a reboot
      ],
      lock: pm2Lock(p.root),
    };
  },
  stop(app: string, root: string, stateDir: string, slot?: Slot): Plan {
    const name = processName(app, slot);
    return {
      files: [],
      commands: [pm2Cmd(["delete", name], true), pm2Cmd(["save"])],
      lock: pm2Lock(root),
      remove: [file(stateDir, name)],
    };
  },
};

/** The pm2 process: the app, or `<app>-<slot>`. */
export function processName(app: string, slot?: Slot): string {
  return slot ? `${app}-${slot}` : app;
}

/** The process definition (0600: it holds the .env values). */
function file(stateDir: string, name: string): string {
  return join(stateDir, `pm2-${name}.json`);
}

function pm2Cmd(args: string[], allowFailure = false): Cmd {
  return { argv: ["pm2", ...args], quiet: true, timeoutMs: PM2_TIMEOUT, ...(allowFailure ? { allowFailure } : {}) };
}
