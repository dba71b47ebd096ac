/**
 * systemd: a `<app>.service` unit whose WorkingDirectory is `current` and whose secrets come
 * from `current/.env` through EnvironmentFile, so the unit does not change between releases.
 * @module
 */
import { dirname, join } from "node:path";
import { serializeDotenv } from "../deploy/dotenv.ts";
import { exists } from "../fsutil.ts";
import { systemdDir } from "../paths.ts";
import type {
  AppProcess,
  ProcessManager,
  ProcessState,
  Running,
  ServiceSpec,
  SlotInstance,
  WorkerId,
} from "./manager.ts";
import type { Cmd, FileWrite, Plan, Runner } from "../runner.ts";

/**
 * A unit file (or drop-in) as a plan writes it: 0644, not writeFileAtomic's 0640. PID 1 warns at
 * every daemon-reload of a unit others cannot read ("is marked world-inaccessible"), and hiding it
 * hides nothing: any user may read a unit's settings through `systemctl show`.
 */
export function unitWrite(path: string, content: string): FileWrite {
  return { path, content, mode: 0o644 };
}

/**
 * Quotes one word for a unit file: systemd's own quoting, with `%` specifiers escaped, and `$`
 * too in command lines (`exec`), where systemd would expand variables. `Environment=` does not.
 */
export function unitQuote(word: string, exec = true): string {
  const quoted = word.replace(/[\\"]/g, (c) => `\\${c}`).replaceAll("%", "%%");
  return `"${exec ? quoted.replaceAll("$", "$$$$") : quoted}"`;
}

/**
 * The `[Service]` lines that confine an app: its user (`User=`/`Group=`, when it has one; see
 * users.ts) and a sandbox in which Node and Python apps still run. Everything is read-only but
 * the app's home (`ReadWritePaths=`); its logs are opened by systemd itself (`append:`) before
 * the sandbox is set up. No capabilities, unless the app listens on a port below 1024 itself
 * (`strategy: restart`): then only CAP_NET_BIND_SERVICE. No `MemoryDenyWriteExecute=` (V8's JIT
 * needs it) and no `ProcSubset=pid` (Node reads /proc/cpuinfo and /proc/stat). A container's log
 * follower (no `user`) is deploy-paradigm itself talking to the engine: it is not confined.
 * With `binds`, also what it may bind (see {@link socketBind}); a slot's template has none: each
 * instance's drop-in has its own port's ({@link execDropIn}).
 */
export function sandbox(p: AppProcess, binds = true): string[] {
  if (!p.user) return [];
  const port = Number(p.env.PORT);
  const caps = port > 0 && port < 1024 ? "CAP_NET_BIND_SERVICE" : "";
  return [
    `User=${p.user.name}`,
    `Group=${p.user.group}`,
    `ReadWritePaths=-${escapePercent(p.user.home)}`,
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes",
    "ProtectClock=yes",
    "ProtectHostname=yes",
    "ProtectProc=invisible",
    "RestrictSUIDSGID=yes",
    "RestrictRealtime=yes",
    "RestrictNamespaces=yes",
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
    "LockPersonality=yes",
    "RemoveIPC=yes",
    "SystemCallArchitectures=native",
    "SystemCallFilter=@system-service",
    "SystemCallErrorNumber=EPERM",
    `CapabilityBoundingSet=${caps}`,
    `AmbientCapabilities=${caps}`,
    ...(binds ? socketBind(p) : []),
  ];
}

/**
 * What an app's process may bind (systemd ≥ 249 built with its BPF framework, on cgroup v2; an
 * older or other systemd ignores these lines): TCP only on its own `PORT` (a worker has none:
 * no TCP port at all), so that a compromised app cannot take another app's port the moment its
 * owner lets go of it (a restart, a crash). UDP stays allowed (a UDP client's send binds a port:
 * Node's dgram, DNS clients). Outgoing TCP connections bind nothing. Nothing without a user.
 */
export function socketBind(p: AppProcess): string[] {
  if (!p.user) return [];
  const port = Number(p.env.PORT);
  return [
    "SocketBindAllow=udp",
    ...(Number.isInteger(port) && port > 0 && port < 65536 ? [`SocketBindAllow=tcp:${port}`] : []),
    "SocketBindDeny=any",
  ];
}

/** The unit file of an app. */
export function unitFile(p: AppProcess): string {
  return appUnit(p, `deploy-paradigm app ${p.app}`, p.env);
}

/**
 * A unit running `p` in its directory with its environment (`extra`: more `Environment=` words, and
 * `[Service]` lines before the restart policy), its logs and its sandbox.
 */
function appUnit(
  p: AppProcess,
  description: string,
  env: Record<string, string>,
  extra: { environment?: string; service?: string[] } = {},
): string {
  const words = Object.entries(env).map(([k, v]) => unitQuote(`${k}=${v}`, false));
  return [
    "# Written by deploy-paradigm. Changes are overwritten by the next deploy.",
    "[Unit]",
    `Description=${description}`,
    "After=network.target",
    "",
    "[Service]",
    "Type=simple",
    `WorkingDirectory=${escapePercent(p.cwd)}`,
    ...(p.envFile ? [`EnvironmentFile=-${escapePercent(p.envFile)}`] : []),
    `Environment=${[...words, ...(extra.environment ? [extra.environment] : [])].join(" ")}`,
    `ExecStart=${p.argv.map((word) => unitQuote(word)).join(" ")}`,
    ...(extra.service ?? []),
    "Restart=on-failure",
    "RestartSec=1",
    `StandardOutput=append:${escapePercent(p.accessLog)}`,
    `StandardError=append:${escapePercent(p.errorLog)}`,
    UMASK,
    ...sandbox(p),
    "",
    "[Install]",
    "WantedBy=multi-user.target",
    "",
  ].join("\n");
}

/**
 * Every app unit's, with or without a user (a container's log follower, `user: root`): systemd
 * creates the `append:` logs 0666 & ~UMask, so they are 0600 from creation, as every log of the app
 * (PM2's processes run under umask 077 too); the process inherits it.
 */
const UMASK = "UMask=0077";

/** `%` doubled, for paths written into a unit file unquoted. */
function escapePercent(text: string): string {
  return text.replaceAll("%", "%%");
}

/**
 * The template unit `<app>@.service` of a blue-green app: one instance per slot (`%i`), running
 * in `slots/%i` (the slot's link to its release), with the slot's PORT from `slot-%i.env`. Its
 * command is not here but in each instance's drop-in ({@link execDropIn}): the two slots run
 * different releases, whose commands may differ.
 */
export function templateUnit(p: AppProcess): string {
  const mark = "\u0001";
  const slotDir = p.cwd;
  return [
    "# Written by deploy-paradigm. Changes are overwritten by the next deploy.",
    "[Unit]",
    `Description=deploy-paradigm app ${p.app}, slot %i`,
    "After=network.target",
    "",
    "[Service]",
    "Type=simple",
    `WorkingDirectory=${mark}`,
    `EnvironmentFile=-${mark}/.env`,
    `EnvironmentFile=${escapePercent(p.stateDir)}/slot-%i.env`,
    "Restart=on-failure",
    "RestartSec=1",
    `StandardOutput=append:${escapePercent(p.accessLog)}`,
    `StandardError=append:${escapePercent(p.errorLog)}`,
    UMASK,
    // Each slot's port is its own (slot-%i.env), above 1024; what it may bind is in its drop-in.
    ...sandbox({ ...p, env: {} }, false),
    "",
    "[Install]",
    "WantedBy=multi-user.target",
    "",
  ].join("\n").replaceAll(mark, `${escapePercent(dirname(slotDir))}/%i`);
}

/**
 * An instance's drop-in `<app>@<slot>.service.d/exec.conf`: the command of the release in that
 * slot, and the one port it may bind (its own: {@link socketBind}); for a container's log
 * follower (no `envFile`), without the app's `.env`.
 */
export function execDropIn(p: AppProcess): string {
  return [
    "# Written by deploy-paradigm: the command of the release in this slot.",
    "[Service]",
    ...(p.envFile ? [] : ["EnvironmentFile=", `EnvironmentFile=${escapePercent(p.stateDir)}/slot-${p.slot}.env`]),
    "ExecStart=",
    `ExecStart=${p.argv.map((word) => unitQuote(word)).join(" ")}`,
    ...socketBind(p),
    "",
  ].join("\n");
}

/**
 * The template unit `<app>-<type>@.service` of a worker process type: instance `%i` is its number
 * (INSTANCE=%i), in `current` with the release's `.env`; SIGTERM on stop, then its stopTimeout
 * (TimeoutStopSec=) before SIGKILL. The command is the release's: the template is rewritten and
 * each instance restarted by the deploy that changes it.
 */
export function workerTemplate(p: AppProcess): string {
  const { INSTANCE: _, ...shared } = p.env; // the template serves every instance: INSTANCE=%i
  return appUnit(p, `deploy-paradigm app ${p.app}, ${p.worker!.type} %i`, shared, {
    environment: '"INSTANCE=%i"',
    service: ["KillSignal=SIGTERM", `TimeoutStopSec=${Math.ceil(p.worker!.stopTimeoutMs / 1000)}s`],
  });
}

/** A worker instance's unit: `<app>-<type>@<n>.service`. */
export function workerUnit(app: string, worker: WorkerId): string {
  return `${unitName(app, undefined, worker)}.service`;
}

/** The unit (without `.service`) of the app, of a slot (`<app>@<slot>`), or of a worker instance (`<app>-<type>@<n>`). */
export function unitName(app: string, slot?: SlotInstance, worker?: WorkerId): string {
  return worker ? `${app}-${worker.type}@${worker.instance}` : slot ? `${app}@${slot}` : app;
}

/** The systemd strategy. */
export const systemd: ProcessManager<"systemd"> = {
  name: "systemd",
  restart(p: AppProcess): Plan {
    if (p.worker) {
      // The restart stops the old instance (SIGTERM, TimeoutStopSec) and starts the new one, in PID 1.
      const template = join(systemdDir(p.root), `${p.app}-${p.worker.type}@.service`);
      return {
        files: [unitWrite(template, workerTemplate(p))],
        // The old instance's stop may take its own stopTimeout (up to an hour), not the new one's.
        commands: restartCmds(workerUnit(p.app, p.worker), 60 * 60_000),
      };
    }
    if (p.slot) {
      const instance = `${p.app}@${p.slot}.service`;
      return {
        files: [
          unitWrite(join(systemdDir(p.root), `${p.app}@.service`), templateUnit(p)),
          unitWrite(join(systemdDir(p.root), `${instance}.d`, "exec.conf"), execDropIn(p)),
          {
            path: join(p.stateDir, `slot-${p.slot}.env`),
            content: serializeDotenv(p.env, "written by deploy-paradigm"),
          },
        ],
        commands: restartCmds(instance),
      };
    }
    // The restart is one job of PID 1's: it stops and starts the unit even if we die while it runs.
    // Until then the process started before keeps serving (daemon-reload does not touch it).
    const unit = `${p.app}.service`;
    return {
      files: [unitWrite(join(systemdDir(p.root), unit), unitFile(p))],
      commands: restartCmds(unit),
    };
  },
  async running(runner: Runner, app: string): Promise<Running | undefined> {
    const shown = await runner.run({
      ...systemctl(["show", "--property=MainPID", "--value", `${app}.service`]),
      quiet: true,
      allowFailure: true,
    });
    const pid = Number(shown.output.trim());
    return shown.code === 0 && Number.isInteger(pid) ? { pid } : undefined;
  },
  nameOf: unitName,
  async states(runner: Runner, _root: string, names: string[]): Promise<Map<string, ProcessState>> {
    const states = new Map<string, ProcessState>();
    if (!names.length) return states;
    const shown = await runner.run({
      ...systemctl([
        "show",
        "--property=Id,MainPID,ActiveState,NRestarts,LoadState",
        ...names.map((n) => `${n}.service`),
      ]),
      quiet: true,
      allowFailure: true,
    });
    if (shown.code !== 0) throw new Error(`systemctl show failed: ${shown.output.trim()}`);
    // One block of `Key=value` lines per unit, in no promised order (and the blank lines between
    // them may not reach us): a key seen again starts the next unit's block.
    const blocks: Record<string, string>[] = [{}];
    for (const line of shown.output.split("\n")) {
      const eq = line.indexOf("=");
      if (eq <= 0) continue;
      const key = line.slice(0, eq);
      if (key in blocks.at(-1)!) blocks.push({});
      blocks.at(-1)![key] = line.slice(eq + 1).trim();
    }
    for (const fields of blocks) {
      const name = fields.Id?.replace(/\.service$/, "");
      if (!name || !names.includes(name) || fields.LoadState === "not-found") continue;
      states.set(name, {
        pid: Number(fields.MainPID) || 0,
        state: fields.ActiveState ?? "unknown",
        restarts: Number(fields.NRestarts) || 0,
      });
    }
    return states;
  },
  stop(app: string, root: string, _stateDir: string, slot?: SlotInstance, worker?: WorkerId): Plan {
    if (worker) {
      // The template stays while other instances of the type may use it (a later deploy rewrites it).
      const unit = workerUnit(app, worker);
      return {
        files: [],
        commands: [{ ...systemctl(["disable", "--now", "--quiet", unit], WORKER_STOP_LIMIT), allowFailure: true }],
      };
    }
    const unit = `${unitName(app, slot)}.service`;
    return {
      files: [],
      commands: [{ ...systemctl(["disable", "--now", "--quiet", unit]), allowFailure: true }],
      remove: slot ? [] : [join(systemdDir(root), unit)],
    };
  },
  installService(service: ServiceSpec): Plan {
    const unit = `${service.name}.service`;
    return {
      files: [unitWrite(join(systemdDir(service.root), unit), serviceUnit(service))],
      commands: [
        setupCtl(["daemon-reload"]),
        setupCtl(["enable", "--now", unit]),
        ...(service.restart ? [setupCtl(["restart", unit])] : []),
      ],
    };
  },
  slotTemplate(p: AppProcess): Plan {
    return {
      files: [unitWrite(join(systemdDir(p.root), `${p.app}@.service`), templateUnit(p))],
      commands: [setupCtl(["daemon-reload"])],
    };
  },
  startServiceCommand: (name) => `systemctl start ${name}`,
  async serviceArgv(name: string, root: string): Promise<string[] | undefined> {
    const unit = await Deno.readTextFile(join(systemdDir(root), `${name}.service`)).catch(() => undefined);
    const line = unit && /^ExecStart=(.*)$/m.exec(unit)?.[1];
    if (!line) return undefined;
    // As serviceUnit quotes them: each argument in double quotes, \ and " escaped.
    return [...line.matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((m) => m[1].replace(/\\(.)/g, "$1"));
  },
  /** Under DEPLOY_PARADIGM_PREFIX systemd cannot see our units: no. */
  async runsHere(): Promise<boolean> {
    return !Deno.env.get("DEPLOY_PARADIGM_PREFIX") && await exists("/run/systemd/system");
  },
  logsCommand: (name: string) => `journalctl -u ${name}`,
};

/**
 * The unit of a service of deploy-paradigm's own (see {@link ServiceSpec}). It starts once the
 * network is up (the proxy's --proxy-host address may come from DHCP after network.target), and
 * is never given up on: by default systemd stops restarting a unit after 5 starts in 10 s, and a
 * proxy that cannot listen yet at boot (its address not there, its port still held) would stay
 * down for good, every app with it; here it tries again twice a second until it can.
 */
export function serviceUnit(service: ServiceSpec): string {
  return [
    "# Written by deploy-paradigm setup.",
    "[Unit]",
    `Description=${service.description}`,
    "Wants=network-online.target",
    "After=network-online.target",
    "StartLimitIntervalSec=0",
    "",
    "[Service]",
    `ExecStart=${service.argv.map((a) => `"${a.replace(/[\\"]/g, (c) => `\\${c}`)}"`).join(" ")}`,
    ...Object.entries(service.env).map(([k, v]) => `Environment="${k}=${v}"`),
    "Restart=always",
    "RestartSec=500ms",
    "",
    "[Install]",
    "WantedBy=multi-user.target",
    "",
  ].join("\n");
}

/** `systemctl …`: 2 minutes for a deploy's (a unit's stop may wait for its TimeoutStopSec), 1 for setup's. */
function systemctl(args: string[], timeoutMs = 120_000): Cmd {
  return { argv: ["systemctl", ...args], timeoutMs };
}

/** A systemctl command of `setup`'s. */
function setupCtl(args: string[]): Cmd {
  return systemctl(args, 60_000);
}

/** A worker's stop may take its stopTimeout: the longest deploy.yml allows, plus systemd's own time. */
const WORKER_STOP_LIMIT = 60 * 60_000 + 120_000;

/**
 * Reloads, enables and restarts `unit` (whose stop may take `stopMs`), then asks whether it is
 * active (a unit that died at once fails the plan).
 */
function restartCmds(unit: string, stopMs = 0): Cmd[] {
  return [
    systemctl(["daemon-reload"]),
    systemctl(["enable", "--quiet", unit]),
    systemctl(["restart", unit], 120_000 + stopMs),
    { ...systemctl(["is-active", unit]), quiet: true },
  ];
}
