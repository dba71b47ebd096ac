/**
 * Every system path the tool touches. All of them live under `DEPLOY_PARADIGM_PREFIX`
 * (default `/`), so tests and the demo run whole "servers" inside a temp dir.
 * @module
 */
import { basename, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** The root every system path is relative to. */
export function prefix(): string {
  const value = Deno.env.get("DEPLOY_PARADIGM_PREFIX");
  return value ? resolve(value) : "/";
}

/**
 * The executable hooks and services must run: DEPLOY_PARADIGM_SELF, or the installed binary, or
 * from source (`deno run main.ts`, where the runtime alone would run nothing) the source launcher.
 */
export function selfCommand(): string {
  const self = Deno.env.get("DEPLOY_PARADIGM_SELF");
  if (self) return self;
  if (basename(Deno.execPath()) !== "deno") return Deno.execPath();
  return fileURLToPath(new URL("../bin/deploy-paradigm", import.meta.url)); // the source launcher
}

/** Paths of one app on this server. */
export interface AppPaths {
  app: string;
  /** The server root these paths are under (see {@link prefix}). */
  root: string;
  /** `/opt/deployments/<app>` */
  dir: string;
  releases: string;
  /** The `current` symlink: always names the release that serves. */
  current: string;
  config: string;
  status: string;
  lock: string;
  logDir: string;
  deployLog: string;
  accessLog: string;
  errorLog: string;
  /** The bare repository `/var/repos/<app>.git`. */
  repo: string;
  release(id: string): string;
  /** The server-side environment file `.env.<env>`. */
  envFile(env: string): string;
}

/** The deployments root, `/opt/deployments` under `root` (default: the prefix). */
export function deploymentsRoot(root = prefix()): string {
  return join(root, "opt", "deployments");
}

/** Where systemd units are written, `/etc/systemd/system` under `root` (default: the prefix). */
export function systemdDir(root = prefix()): string {
  return join(root, "etc", "systemd", "system");
}

/** `/var/log/deployments`: every app's logs. */
export function logsRoot(root = prefix()): string {
  return join(root, "var", "log", "deployments");
}

/** All paths of `app` under `root` (default: the prefix). The name must already be validated. */
export function appPaths(app: string, root = prefix()): AppPaths {
  const dir = join(deploymentsRoot(root), app);
  const logDir = join(logsRoot(root), app);
  const releases = join(dir, "releases");
  return {
    app,
    root,
    dir,
    releases,
    current: join(dir, "current"),
    config: join(dir, "config.yml"),
    status: join(dir, "status.json"),
    lock: join(dir, ".deploy.lock"),
    logDir,
    deployLog: join(logDir, "deploy.log"),
    accessLog: join(logDir, "access.log"),
    errorLog: join(logDir, "error.log"),
    repo: join(root, "var", "repos", `${app}.git`),
    release: (id) => join(releases, id),
    envFile: (env) => join(dir, `.env.${env}`),
  };
}
