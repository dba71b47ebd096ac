/**
 * Process managers are strategies that build {@link Plan}s; the runner executes them.
 * @module
 */
import type { Plan, Runner } from "../runner.ts";
import type { ContainerSpec } from "./docker.ts";
import type { AppUser } from "../users.ts";
import type { Manager } from "./mod.ts";

/** A blue-green slot. */
export type Slot = "blue" | "green";

/** A slot's web process: the slot itself (instance 1), or instance n of it, `blue-2`. */
export type SlotInstance = Slot | `${Slot}-${number}`;

/** One instance of a worker process type. */
export interface WorkerId {
  type: string;
  /** From 1. */
  instance: number;
}

/** Everything a process manager needs to run one app. */
export interface AppProcess {
  app: string;
  /**
   * A slot of a blue-green app: the process is `<app>-<slot>` under pm2, the instance
   * `<app>@<slot>` of a template unit under systemd, and `cwd` is the slot's link. Without it, the
   * process is the app itself and `cwd` is `current`.
   */
  slot?: SlotInstance;
  /**
   * Instance `instance` of worker process type `type` (no port, in `current`): `<app>-<type>-<n>`
   * under pm2, `<app>-<type>@<n>` of a template unit under systemd. It gets SIGTERM when stopped
   * and `stopTimeoutMs` to finish before SIGKILL.
   */
  worker?: WorkerId & { stopTimeoutMs: number };
  /** The server's root (`DEPLOY_PARADIGM_PREFIX`, `/` on a real server). */
  root: string;
  /** The start command; argv[0] is an absolute path. */
  argv: string[];
  /** Working directory: the `current` symlink (or the slot's), so a restart picks up the switched release. */
  cwd: string;
  /** Non-secret environment: PORT, PATH and the like. */
  env: Record<string, string>;
  /** Values from the release's `.env`. */
  secrets: Record<string, string>;
  /** The release's `.env` file, as seen through `current`; none for a container's log follower. */
  envFile?: string;
  accessLog: string;
  errorLog: string;
  /** A directory the manager may keep its own files in (mode 0600 for anything holding secrets). */
  stateDir: string;
  /**
   * The user the process runs as (see users.ts); its home is the one place it may write. None:
   * the manager's own user (root on a server, or whoever deploys), e.g. a container's log follower.
   */
  user?: AppUser;
  /**
   * A docker app's container, started before the process (which is then the container's log
   * follower); see docker.ts.
   */
  container?: ContainerSpec;
}

/** One process as its manager reports it. */
export interface ProcessState {
  /** 0 when it does not run. */
  pid: number;
  /** The manager's word: online, stopped, errored (pm2); active, inactive, failed, activating (systemd). */
  state: string;
  /** Restarts by the manager since it was started (a crash loop shows here). */
  restarts: number;
}

/** The app's own process (not a slot's) as its manager runs it now: see {@link ProcessManager.running}. */
export interface Running {
  /** 0 when it is not running (stopped, crashed, between a stop and a start). */
  pid: number;
  /**
   * Where the manager's in-place restart keeps parts of the old definition (pm2): its program,
   * the names of the variables we gave it (a restart adds and changes variables, but removes
   * none), and whether it runs as a user (a restart changes the user but never drops it).
   */
  kept?: { program: string; variables: string[]; user: boolean };
}

/** A long-running service of deploy-paradigm's own, such as the proxy (installed by `setup`). */
export interface ServiceSpec {
  /** The unit or process name, e.g. `deploy-paradigm-proxy`. */
  name: string;
  /** One line saying what it is. */
  description: string;
  /** Its command; argv[0] is an absolute path. */
  argv: string[];
  env: Record<string, string>;
  /** The server's root, as in {@link AppProcess}. */
  root: string;
  /** Restart it if it runs (it runs an older version), instead of only starting it when it does not. */
  restart?: boolean;
}

/** What {@link ProcessManager.atBoot} would do: its plan, what to say once it ran, and a `!` line to add. */
export interface Boot {
  plan: Plan;
  said: string;
  warning?: string;
}

/** A process manager: builds the commands that (re)start and stop an app. */
export interface ProcessManager<Name extends Manager = Manager> {
  readonly name: Name;
  /**
   * Starts the app, replacing a running instance. Without a slot (the restart strategy), in one
   * operation of the manager where it can, which the manager finishes even if we die during it;
   * `running` is what {@link running} found (null: nothing; undefined: not asked, or unknown).
   */
  restart(process: AppProcess, running?: Running | null): Plan;
  /** The app's own process now (not a slot's); null when the manager has none, undefined when it cannot tell. */
  running?(runner: Runner, app: string, root: string): Promise<Running | null | undefined>;
  /** The manager's name of the app's process, a slot's (or a web instance's), or a worker instance's. */
  nameOf(app: string, slot?: SlotInstance, worker?: WorkerId): string;
  /**
   * The state of the processes named `names` (pm2 process names, or systemd unit names without
   * `.service`): those the manager knows, by name. Read-only.
   */
  states?(runner: Runner, root: string, names: string[]): Promise<Map<string, ProcessState>>;
  /**
   * Stops the app (or one slot of it, or one worker instance) and forgets it; `root` and
   * `stateDir` as in {@link AppProcess}. A worker gets SIGTERM and its stop timeout.
   */
  stop(app: string, root: string, stateDir: string, slot?: SlotInstance, worker?: WorkerId): Plan;
  /**
   * Installs `service`, enabled at boot and restarted when it fails, and starts it unless it runs
   * (`service.restart`: restarts it).
   */
  installService(service: ServiceSpec): Plan;
  /** The command line an operator types to start the service `name` that {@link installService} installed under `root`. */
  startServiceCommand(name: string, root: string): string;
  /** The argv {@link installService} gave the service `name` under `root`, as installed; undefined when none is. */
  serviceArgv?(name: string, root: string): Promise<string[] | undefined>;
  /** What `setup` installs once for a blue-green app, whose slots are then started by their deploys. */
  slotTemplate?(p: AppProcess): Plan;
  /** Whether the manager runs on this machine; undefined: wherever it is installed. */
  runsHere?(): Promise<boolean>;
  /**
   * What brings the manager's processes back after a reboot, where the manager does not do it
   * itself (pm2: a systemd unit that resurrects its daemon, and starts it when none runs): the plan
   * that installs it and what to say once it ran, a `!` line saying what to do where it cannot be
   * installed, or nothing to do (installed already, unless `again`: setup writes it anew, a deploy
   * only installs a missing one; nothing real under a `root` other than `/`, i.e. under
   * DEPLOY_PARADIGM_PREFIX).
   */
  atBoot?(root: string, again: boolean): Promise<Boot | string | undefined>;
  /** Fixes what older versions left on the server (`setup`). */
  tidy?(): Promise<void>;
  /** The command that shows a service's logs. */
  logsCommand(name: string): string;
}
