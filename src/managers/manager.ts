/**
 * Process managers are strategies that build {@link Plan}s; the runner executes them.
 * @module
 */
import type { Plan } from "../runner.ts";
import type { ContainerSpec } from "./docker.ts";

/** A blue-green slot. */
export type Slot = "blue" | "green";

/** Everything a process manager needs to run one app. */
export interface AppProcess {
  app: string;
  /**
   * A slot of a blue-green app: the process is `<app>-<slot>` under pm2, the instance
   * `<app>@<slot>` of a template unit under systemd, and `cwd` is the slot's link. Without it, the
   * process is the app itself and `cwd` is `current`.
   */
  slot?: Slot;
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
   * A docker app's container, started before the process (which is then the container's log
   * follower); see docker.ts.
   */
  container?: ContainerSpec;
}

/** A process manager: builds the commands that (re)start and stop an app. */
export interface ProcessManager {
  readonly name: "pm2" | "systemd";
  /** Starts the app, replacing a running instance. */
  restart(process: AppProcess): Plan;
  /** Stops the app (or one slot of it) and forgets it; `root` and `stateDir` as in {@link AppProcess}. */
  stop(app: string, root: string, stateDir: string, slot?: Slot): Plan;
}
