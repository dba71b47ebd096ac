/**
 * systemd: a `<app>.service` unit whose WorkingDirectory is `current` and whose secrets come
 * from `current/.env` through EnvironmentFile, so the unit does not change between releases.
 * @module
 */
import { join } from "node:path";
import { systemdDir } from "../paths.ts";
import type { AppProcess, ProcessManager } from "./manager.ts";
import type { Cmd, Plan } from "../runner.ts";

/**
 * Quotes one word for a unit file: systemd's own quoting, with `%` specifiers escaped, and `$`
 * too in command lines (`exec`), where systemd would expand variables. `Environment=` does not.
 */
export function unitQuote(word: string, exec = true): string {
  const quoted = word.replace(/[\\"]/g, (c) => `\\${c}`).replaceAll("%", "%%");
  return `"${exec ? quoted.replaceAll("$", "$$$$") : quoted}"`;
}

/** The unit file of an app. */
export function unitFile(p: AppProcess): string {
  const env = Object.entries(p.env).map(([k, v]) => unitQuote(`${k}=${v}`, false)).join(" ");
  return [
    "# Written by deploy-paradigm. Changes are overwritten by the next deploy.",
    "[Unit]",
    `Description=deploy-paradigm app ${p.app}`,
    "After=network.target",
    "",
    "[Service]",
    "Type=simple",
    `WorkingDirectory=${p.cwd}`,
    `EnvironmentFile=-${p.envFile}`,
    `Environment=${env}`,
    `ExecStart=${p.argv.map((word) => unitQuote(word)).join(" ")}`,
    "Restart=on-failure",
    "RestartSec=1",
    `StandardOutput=append:${p.accessLog}`,
    `StandardError=append:${p.errorLog}`,
    "",
    "[Install]",
    "WantedBy=multi-user.target",
    "",
  ].join("\n");
}

/** The systemd strategy. */
export const systemd: ProcessManager = {
  name: "systemd",
  restart(p: AppProcess): Plan {
    const unit = `${p.app}.service`;
    return {
      files: [{ path: join(systemdDir(p.root), unit), content: unitFile(p) }],
      commands: [
        systemctl(["daemon-reload"]),
        systemctl(["enable", "--quiet", unit]),
        systemctl(["restart", unit]),
        { ...systemctl(["is-active", unit]), quiet: true },
      ],
    };
  },
  stop(app: string, root: string): Plan {
    const unit = `${app}.service`;
    return {
      files: [],
      commands: [{ ...systemctl(["disable", "--now", "--quiet", unit]), allowFailure: true }],
      remove: [join(systemdDir(root), unit)],
    };
  },
};

function systemctl(args: string[]): Cmd {
  return { argv: ["systemctl", ...args], timeoutMs: 120_000 };
}
