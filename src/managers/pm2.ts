/**
 * PM2: one process named after the app, described by an ecosystem JSON file (mode 0600: it
 * holds the .env values). The app's own process (the restart strategy) is replaced by one
 * `pm2 start <file>`: for a process that exists, the daemon stops it and starts it again with the
 * file's arguments, environment and options (restartProcessId), all in the daemon, so it finishes
 * even if we die during it. That keeps the program pm2 was first given, every variable (it adds
 * and changes them, never removes one) and a uid: so a changed program, a variable gone, a user
 * dropped, or what we cannot tell takes `pm2 delete` + `pm2 start`, as a slot always does (it
 * serves nothing before its switch). For the app's own process that pair is one command
 * ({@link PM2_REPLACE}) that goes on if we die during it: a SIGKILL between the two calls would
 * leave nothing serving.
 * @module
 */
import { join, resolve } from "node:path";
import { exists, narrowMode, readTextOrUndefined } from "../fsutil.ts";
import { deploymentsRoot, systemdDir } from "../paths.ts";
import type {
  AppProcess,
  Boot,
  ProcessManager,
  ProcessState,
  Running,
  ServiceSpec,
  SlotInstance,
  WorkerId,
} from "./manager.ts";
import { baseEnv, type Cmd, findInPath, lockFile, type Plan, type Runner } from "../runner.ts";
import { unitQuote, unitWrite } from "./systemd.ts";
import { homeOf } from "../users.ts";

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
export const pm2: ProcessManager<"pm2"> = {
  name: "pm2",
  restart(p: AppProcess, running?: Running | null): Plan {
    const name = processName(p.app, p.slot, p.worker);
    const env = { ...p.secrets, ...p.env };
    const kept = running?.kept;
    const own = !p.slot && !p.worker;
    // An app with a user of its own starts under `setpriv --no-new-privs` (as builds and hooks do, and systemd units
    // with their sandbox): no set-user-ID program makes it another user (a set-user-ID copy of python a build left);
    // and without the channel to pm2's root daemon (CONFINED).
    const [script, ...args] = p.user ? [setpriv(), ...CONFINED, ...p.argv] : p.argv;
    // (pm2 keeps the program it was first given: one started otherwise, by a version before, is replaced)
    const inPlace = own && (running === null ||
      (kept !== undefined && kept.program === script && kept.variables.every((key) => key in env) &&
        (p.user !== undefined || !kept.user)));
    const app = {
      name,
      script,
      args,
      cwd: p.cwd,
      interpreter: "none",
      env,
      // Only `env` reaches the app: every variable of the pm2 client's own environment starts with "" (pm2 7 ignores `true`).
      filter_env: [""],
      out_file: p.accessLog,
      error_file: p.errorLog,
      merge_logs: true,
      time: true,
      autorestart: true,
      // A worker gets its stopTimeout to finish the job in hand after SIGTERM (the daemon's
      // PM2_KILL_SIGNAL, which every pm2 command of ours sets: see PM2_UMASK).
      kill_timeout: p.worker ? p.worker.stopTimeoutMs : 5000,
      // The daemon (root) starts the app as its user; it opens the log files itself.
      ...(p.user ? { uid: p.user.name, gid: p.user.group } : {}),
    };
    return {
      files: [{ path: file(p.stateDir, name), content: JSON.stringify({ apps: [app] }, null, 2) + "\n", mode: 0o600 }],
      commands: [
        ...(inPlace
          ? [pm2Cmd(["start", file(p.stateDir, name)])]
          : p.slot
          ? [pm2Cmd(["delete", name], true), pm2Cmd(["start", file(p.stateDir, name)])]
          : [replaceCmd(name, file(p.stateDir, name), p.worker ? WORKER_STOP_LIMIT : 0)]),
        pm2Cmd(["save"]), // so that `pm2 resurrect` (PM2_BOOT_UNIT) brings it back after a reboot
      ],
      ...workerLock(p.root, p.worker),
    };
  },
  async running(runner: Runner, app: string, root: string): Promise<Running | null | undefined> {
    const list = await jlist(runner, root);
    if (list) {
      const found = list.find((p) => p?.name === app);
      if (!found) return null;
      const pid = Number(found.pid) || 0;
      const { pm_exec_path: program, env = {}, uid } = found.pm2_env ?? {};
      if (typeof program !== "string") return { pid };
      // Its variables, less those pm2 adds by itself (`filter_env` keeps the pm2 client's own out).
      const variables = Object.keys(env).filter((key) => !key.startsWith("PM2_") && key !== "unique_id" && key !== app);
      return { pid, kept: { program, variables, user: uid !== undefined && uid !== null } };
    }
    return undefined;
  },
  nameOf: processName,
  async states(runner: Runner, root: string, names: string[]): Promise<Map<string, ProcessState>> {
    const list = await jlist(runner, root);
    if (!list) throw new Error("pm2 jlist failed");
    const states = new Map<string, ProcessState>();
    for (const p of list) {
      if (!names.includes(p?.name)) continue;
      const restarts = Number(p.pm2_env?.restart_time) || 0;
      states.set(p.name, { pid: Number(p.pid) || 0, state: String(p.pm2_env?.status ?? "unknown"), restarts });
    }
    return states;
  },
  stop(app: string, root: string, stateDir: string, slot?: SlotInstance, worker?: WorkerId): Plan {
    const name = processName(app, slot, worker);
    return {
      files: [],
      // A worker's stop waits for its kill_timeout (its stopTimeout, recorded when it started).
      commands: [
        { ...pm2Cmd(["delete", name], true), ...(worker ? { timeoutMs: WORKER_STOP_LIMIT } : {}) },
        pm2Cmd(["save"]),
      ],
      ...workerLock(root, worker),
      remove: [file(stateDir, name)],
    };
  },
  installService(service: ServiceSpec): Plan {
    const path = serviceFile(service.name, service.root);
    const [script, ...args] = service.argv;
    // cwd: pm2 would take its client's (a deploy's: the bare repo of the app that pushed), and hold it.
    // exp_backoff_restart_delay: pm2 gives up on a process that exits 16 times within its first 16 s
    // (`errored`, for good); a proxy that cannot listen yet at boot (its address not up) would stay
    // down, every app with it. Waiting 0.1 s, then 1.5 times longer each time (up to 15 s), it
    // never exits that often, and is back 0.1 s after a crash.
    const app = {
      name: service.name,
      script,
      args,
      cwd: "/",
      interpreter: "none",
      env: service.env,
      exp_backoff_restart_delay: 100,
    };
    return {
      files: [{ path, content: JSON.stringify({ apps: [app] }, null, 2) + "\n", mode: 0o600 }],
      commands: [pm2Cmd([service.restart ? "startOrRestart" : "start", path]), pm2Cmd(["save"])], // dump.pm2 0600
      lock: pm2Lock(service.root),
    };
  },
  startServiceCommand: (name, root) => `pm2 start ${serviceFile(name, root)}`,
  async serviceArgv(name: string, root: string): Promise<string[] | undefined> {
    try {
      const app = JSON.parse(await Deno.readTextFile(serviceFile(name, root))).apps?.[0];
      const argv = [app?.script, ...(Array.isArray(app?.args) ? app.args : [])];
      return argv.every((arg) => typeof arg === "string") ? argv : undefined;
    } catch {
      return undefined; // none installed, or not one we wrote
    }
  },
  tidy: narrowPm2Home,
  async atBoot(root: string, again: boolean): Promise<Boot | string | undefined> {
    if (resolve(root) !== "/") return undefined; // under DEPLOY_PARADIGM_PREFIX (tests, the demo): nothing real
    const env = baseEnv();
    // setup's PM2_HOME (the operator's), else the server's; a deploy's is the server's, whatever the push had.
    const home = again ? pm2Home(env) : serverPm2Home();
    if (!(await exists("/run/systemd/system"))) {
      return `! nothing starts pm2 at boot here (no systemd): have \`PM2_HOME=${home} PM2_KILL_SIGNAL=SIGTERM ` +
        "pm2 resurrect` run at boot (under umask 077), or the apps under pm2 stay down after a reboot";
    }
    const unit = join(systemdDir(root), PM2_BOOT_UNIT);
    const write = again || !(await exists(unit));
    // No daemon runs: the unit starts it, so that its shutdown is the unit's (`pm2 kill`, which keeps the dump).
    const pid = await daemonPid(home);
    const start = pid === undefined;
    if (!write && !start) return undefined;
    const pm2 = findInPath("pm2", env.PATH);
    if (!pm2) return undefined; // no pm2 to start (its commands say so)
    const plan = pm2BootPlan(root, { pm2, home, path: env.PATH ?? "/usr/local/bin:/usr/bin:/bin" }, { write, start });
    const said = write ? `${unit}: pm2 and its processes start at boot` : `pm2 started by ${PM2_BOOT_UNIT}`;
    const outside = pid !== undefined &&
      !(await readTextOrUndefined(`/proc/${pid}/cgroup`))?.includes(`/${PM2_BOOT_UNIT}`);
    return {
      plan,
      said: write && start ? `${said} (pm2 started by it)` : said,
      ...(outside ? { warning: outsideWarning } : {}),
    };
  },
  logsCommand: (name: string) => `pm2 logs ${name}`,
};

/** The ecosystem file of service `name` (the argv it runs). */
function serviceFile(name: string, root: string): string {
  return join(deploymentsRoot(root), `pm2-${name}.json`);
}

/**
 * `pm2 jlist` (under the pm2 lock: it starts the daemon when none runs); undefined when it fails.
 * The list is the line that parses (pm2 may say more when it starts its daemon); it holds every
 * app's environment, so nothing of it is printed.
 */
// deno-lint-ignore no-explicit-any
async function jlist(runner: Runner, root: string): Promise<any[] | undefined> {
  const lock = await lockFile(pm2Lock(root));
  let output: string;
  try {
    const result = await runner.run(pm2Cmd(["jlist"], true));
    if (result.code !== 0) return undefined;
    output = result.output;
  } finally {
    lock.close();
  }
  for (const line of output.split("\n").reverse()) {
    try {
      const list = JSON.parse(line);
      if (Array.isArray(list)) return list;
    } catch { /* not the list */ }
  }
  return undefined;
}

/** The pm2 process: the app, `<app>-<slot>`, or a worker's `<app>-<type>-<n>`. */
export function processName(app: string, slot?: SlotInstance, worker?: WorkerId): string {
  return worker ? `${app}-${worker.type}-${worker.instance}` : slot ? `${app}-${slot}` : app;
}

/**
 * The pm2 lock, except for a worker's plans: a worker's stop may take its stopTimeout (up to an
 * hour), and holding the server-wide lock that long would stop every other app's deploys. The lock
 * is only needed where no daemon may run yet (two clients would both start one); workers are
 * started and stopped after the release's web process was, through the daemon that runs it.
 */
function workerLock(root: string, worker?: WorkerId): { lock?: string } {
  return worker ? {} : { lock: pm2Lock(root) };
}

/** setpriv (util-linux), which an app with a user of its own starts under: where it is, else its name for pm2 to find. */
function setpriv(): string {
  return findInPath("setpriv", baseEnv().PATH) ?? "setpriv";
}

/**
 * setpriv's words before the app's own argv: no set-user-ID or file capability raises what the app may do; and the
 * channel pm2's daemon opens to each process it starts (fd 3, NODE_CHANNEL_FD) is closed before the app runs: on it
 * the app could rename its process in the root daemon (then another app's `pm2 delete` stops it, its own never does)
 * and have the daemon keep whatever it sends (50,000 messages grew it by 324 MiB). Only the shell's fixed script;
 * the argv are its arguments, never parsed by it.
 */
const CONFINED = [
  "--no-new-privs",
  "--",
  "/bin/sh",
  "-c",
  'unset NODE_CHANNEL_FD NODE_CHANNEL_SERIALIZATION_MODE; exec "$@" 3>&-',
  "sh",
];

/** A worker's stop may take its stopTimeout: the longest deploy.yml allows, plus pm2's own time. */
const WORKER_STOP_LIMIT = 60 * 60_000 + PM2_TIMEOUT;

/** The process definition (0600: it holds the .env values). */
function file(stateDir: string, name: string): string {
  return join(stateDir, `pm2-${name}.json`);
}

/**
 * A pm2 command, run with umask 077 and PM2_KILL_SIGNAL=SIGTERM (pm2 stops processes with the
 * signal its daemon was started with, SIGINT by default; SIGTERM is what workers and systemd
 * expect): what pm2 creates is 0600 (dirs 0700) from the start, above all
 * `dump.pm2` (`pm2 save`), which holds every app's .env values; so is what the daemon it may start
 * creates (the dump it writes when stopped, its logs and sockets), and the daemon's apps inherit it.
 * The shell only sets the umask: the words are passed as its arguments, never parsed by it.
 */
export function pm2Cmd(args: string[], allowFailure = false): Cmd {
  return {
    argv: ["sh", "-c", PM2_UMASK, "pm2", ...args],
    quiet: true,
    timeoutMs: PM2_TIMEOUT,
    ...(allowFailure ? { allowFailure } : {}),
  };
}

/** `pm2 "$@"` under umask 077 (see {@link pm2Cmd}). */
export const PM2_UMASK = 'umask 077 && export PM2_KILL_SIGNAL=SIGTERM && exec pm2 "$@"';

/**
 * `pm2 delete <name>` then `pm2 start <file>` as one command that finishes even if the deploy is
 * SIGKILLed during it. It runs in its own session (ProcessRunner gives every command with a timeout
 * one, through setsid), so no signal to the deploy's process group or terminal reaches it, and the
 * deploy still waits for it and checks its exit code. The pm2 clients write to a file, not to our
 * pipes: a pm2 client whose output pipe has no reader left dies of EPIPE; the file is printed
 * (SIGPIPE ignored) and removed once both calls are over. The shell only runs this fixed script:
 * the name and the file are its arguments ($1, $2), never parsed by it.
 */
export const PM2_REPLACE = 'umask 077 && export PM2_KILL_SIGNAL=SIGTERM && trap "" PIPE && out=$(mktemp) || exit 1; ' +
  '{ pm2 delete "$1"; pm2 start "$2"; } >"$out" 2>&1; code=$?; cat "$out"; rm -f "$out"; exit $code';

/** The {@link PM2_REPLACE} of process `name` by the definition in `file` (the old one may take `stopMs` to stop). */
function replaceCmd(name: string, file: string, stopMs = 0): Cmd {
  // Two pm2 calls: twice the time one may take.
  return { argv: ["sh", "-c", PM2_REPLACE, "pm2", name, file], quiet: true, timeoutMs: 2 * PM2_TIMEOUT + stopMs };
}

/** pm2's directory (its daemon's socket and pid file, dump.pm2): PM2_HOME, else ~/.pm2, as pm2 decides. */
export function pm2Home(env: Record<string, string | undefined> = Deno.env.toObject()): string {
  return env.PM2_HOME || join(env.HOME || "/root", ".pm2");
}

/**
 * The server's pm2 home: pm2's own for the user we run as (root on a server) when no PM2_HOME is
 * set, `.pm2` in its passwd home; not a push's PM2_HOME or HOME, which are whatever the pusher had.
 */
export function serverPm2Home(): string {
  return join(homeOf(Deno.uid() ?? 0) ?? "/root", ".pm2");
}

/**
 * The systemd unit that brings pm2 back at boot: its daemon, with the processes the last
 * `pm2 save` recorded (every deploy's plan ends with one), by `pm2 resurrect`. Our own, not the
 * one `pm2 startup` writes: the daemon needs the environment our pm2 commands give it (see
 * {@link pm2Cmd}), or it would stop workers with SIGINT and write dump.pm2 readable by all.
 */
export const PM2_BOOT_UNIT = "deploy-paradigm-pm2.service";

/** Where pm2 is, and what our pm2 commands run with: PM2_HOME and PATH (node, for pm2's `#!/usr/bin/env node`). */
export interface Pm2Boot {
  pm2: string;
  home: string;
  path: string;
}

/**
 * {@link PM2_BOOT_UNIT} as pm2's own template (lib/templates/init-scripts/systemd.tpl) has it,
 * forking with the daemon's pid file, but with our environment: PM2_HOME, PM2_KILL_SIGNAL=SIGTERM,
 * umask 077. Stopping it (shutdown) is `pm2 kill`, which stops the processes and keeps the dump.
 */
export function pm2BootUnit(at: Pm2Boot): string {
  const pm2 = unitQuote(at.pm2);
  return [
    "# Written by deploy-paradigm setup: pm2 and the processes it saved, back at boot.",
    "[Unit]",
    "Description=deploy-paradigm: pm2 and its saved processes (pm2 resurrect)",
    "After=network.target",
    "",
    "[Service]",
    "Type=forking",
    `Environment=${
      [`PM2_HOME=${at.home}`, "PM2_KILL_SIGNAL=SIGTERM", `PATH=${at.path}`]
        .map((word) => unitQuote(word, false)).join(" ")
    }`,
    "UMask=0077",
    `PIDFile=${join(at.home, "pm2.pid").replaceAll("%", "%%")}`,
    `ExecStart=${pm2} resurrect`,
    `ExecStop=${pm2} kill`,
    // `pm2 kill` gives each process its kill_timeout (a worker's stopTimeout, at most 1 h) to end its job.
    `TimeoutStopSec=${Math.ceil(WORKER_STOP_LIMIT / 1000)}`,
    "Restart=on-failure",
    "",
    "[Install]",
    "WantedBy=multi-user.target",
    "",
  ].join("\n");
}

/**
 * Writes {@link PM2_BOOT_UNIT} and enables it (`write`), and starts it (`start`: when no pm2
 * daemon runs; one that runs stays, and the unit takes over at the next boot). Under the pm2 lock:
 * the unit's `pm2 resurrect` may start the daemon.
 */
export function pm2BootPlan(root: string, at: Pm2Boot, { write = true, start = false } = {}): Plan {
  const systemctl = (...args: string[]): Cmd => ({ argv: ["systemctl", ...args], timeoutMs: PM2_TIMEOUT });
  return {
    files: write ? [unitWrite(join(systemdDir(root), PM2_BOOT_UNIT), pm2BootUnit(at))] : [],
    commands: [
      ...(write ? [systemctl("daemon-reload"), systemctl("enable", "--quiet", PM2_BOOT_UNIT)] : []),
      ...(start ? [systemctl("start", PM2_BOOT_UNIT)] : []),
    ],
    lock: pm2Lock(root),
  };
}

/** pm2's daemon, when its pid file names a process that is there (not `pm2 ping`, which starts one). */
async function daemonPid(home: string): Promise<number | undefined> {
  const pid = Number((await readTextOrUndefined(join(home, "pm2.pid")))?.trim());
  return Number.isInteger(pid) && pid > 0 && await exists(`/proc/${pid}`) ? pid : undefined;
}

/**
 * A daemon started before the unit (by a deploy) is stopped at shutdown by pm2's own signal
 * handling: SIGTERM reaches it and its apps at once, and it dumps its list as it exits, with an app
 * that exited first as `stopped`, which `pm2 resurrect` leaves stopped.
 */
const outsideWarning = `! pm2's daemon runs outside ${PM2_BOOT_UNIT} until the next boot, and its shutdown may ` +
  `save an app as stopped (pm2 resurrect leaves it down): \`pm2 kill && systemctl start ${PM2_BOOT_UNIT}\` once ` +
  "moves it under the unit (the pm2 apps restart)";

/**
 * For servers set up before pm2 ran under umask 077: takes group and other permissions off
 * PM2_HOME and the dump files already there (pm2 rewrites a file in place, keeping its mode).
 */
export async function narrowPm2Home(): Promise<void> {
  const home = pm2Home();
  for (const path of [home, join(home, "dump.pm2"), join(home, "dump.pm2.bak")]) await narrowMode(path, 0o077);
}
