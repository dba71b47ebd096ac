/**
 * How a release runs: the environment of builds, hooks and the app, and the program of its
 * start command. The app's values name `current`, so they are the same for every release.
 * @module
 */
import { join } from "node:path";
import type { ServerConfig } from "../config/schema.ts";
import { deployerOf, DEPLOYERS } from "../deployers/mod.ts";
import { exists, readTextOrUndefined } from "../fsutil.ts";
import { parseDotenv, snapshotSecrets } from "./dotenv.ts";
import { DEFAULT_CONTAINER_PORT, followerEnv } from "../managers/docker.ts";
import type { AppProcess, SlotInstance } from "../managers/mod.ts";
import { processName } from "../managers/pm2.ts";
import { type AppPaths, selfCommand } from "../paths.ts";
import { baseEnv, findInPath } from "../runner.ts";
import type { ReleaseMeta } from "./releases.ts";
import { slotDir } from "./slots.ts";
import { type AppUser, appUser, asUser } from "../users.ts";
import type { Cmd } from "../runner.ts";

/**
 * Variables of the deploying environment an app may rely on; everything else is left out. Besides
 * the locale, the ones that say where builds download from (proxies, certificate authorities,
 * package indexes): configuration, not secrets (credentials belong in the app's .env).
 */
export const INHERITED = [
  "HOME",
  "USER",
  "LOGNAME",
  "LANG",
  "LC_ALL",
  "TZ",
  ...["HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"].flatMap((key) => [key, key.toLowerCase()]),
  "NODE_EXTRA_CA_CERTS",
  "SSL_CERT_FILE",
  "SSL_CERT_DIR",
  "PIP_INDEX_URL",
  "PIP_EXTRA_INDEX_URL",
  "PIP_CERT",
  "npm_config_registry",
];

/** The directories of a release with its own tools, of every app type: `venv/bin`, `node_modules/.bin`. */
export const TOOL_DIRS: readonly string[] = [...new Set(Object.values(DEPLOYERS).flatMap((d) => d.pathDirs ?? []))];

/** PATH with a release's own tools first ({@link TOOL_DIRS}). */
export function pathWith(dir: string): string {
  return [...TOOL_DIRS.map((tools) => join(dir, tools)), baseEnv().PATH ?? "/usr/bin:/bin"].join(":");
}

/** The variables of {@link INHERITED} the deploying environment has. */
export function inherited(env: Record<string, string> = baseEnv()): Record<string, string> {
  return Object.fromEntries(Object.entries(env).filter(([key]) => INHERITED.includes(key)));
}

/**
 * The whole environment of builds and hooks, which run in the release directory: an allow-list
 * ({@link INHERITED}; asUser sets the app user's HOME, USER and LOGNAME), never the deploying
 * user's other variables (an operator's tokens). The release's venv/bin and node_modules/.bin
 * come first in PATH only for an app user: a command run as root never searches the commit's files.
 */
export function toolEnv(releaseDir: string, config: ServerConfig, user: AppUser | undefined): Record<string, string> {
  const root = user === undefined && Deno.uid() === 0;
  return {
    ...inherited(),
    PATH: root ? baseEnv().PATH ?? "/usr/bin:/bin" : pathWith(releaseDir),
    PORT: String(config.port),
    DEPLOY_ENV: config.env,
  };
}

/** The user app `paths.app` runs and runs its hooks as (see users.ts); none: the deploying user. */
export function userOf(paths: AppPaths, config: ServerConfig): AppUser | undefined {
  return appUser(paths, config.user);
}

/**
 * A build command or hook of the app: as its user, with only `env` (see {@link toolEnv}), in a
 * session whose leftovers are killed when it ends, the tail of its output kept. Only the docker
 * build the deploy creates itself (`engine`, see buildPlan) stays the deploying user's: it talks
 * to the engine, and runs the build in a container anyway. Whatever its program is called,
 * nothing else is exempt.
 */
export function asApp(cmd: Cmd, user: AppUser | undefined, env: Record<string, string>): Cmd {
  return cmd.engine ? cmd : asUser({ ...cmd, env, clearEnv: true, reap: true, keepLines: KEPT_LINES }, user);
}

/**
 * The lines of a build's or hook's output kept for its result (each goes to the push as it
 * comes): a build that prints without end must not fill the deploy's memory, or the deploy dies
 * before it kills what the build left running.
 */
const KEPT_LINES = 200;

/** The app's non-secret environment (the .env values are added by the process manager). */
export function appEnv(current: string, config: ServerConfig, type: string, user?: AppUser): Record<string, string> {
  return {
    ...inherited(),
    ...(user ? { HOME: user.home, USER: user.name, LOGNAME: user.name } : {}),
    PORT: String(config.port),
    PATH: pathWith(current),
    DEPLOY_ENV: config.env,
    ...deployerOf(type)?.env,
  };
}

/**
 * The absolute path of a start command's program: a path with a slash is inside the release
 * (seen through `current`); a bare name is looked up in the release's {@link TOOL_DIRS}, then in PATH.
 */
export async function resolveProgram(program: string, releaseDir: string, current: string): Promise<string> {
  if (program.startsWith("/")) return program;
  if (program.includes("/")) {
    if (await exists(join(releaseDir, program))) return join(current, program);
    throw new Error(`the command's program ${program} is not in the release`);
  }
  for (const dir of TOOL_DIRS) {
    if (await exists(join(releaseDir, dir, program))) return join(current, dir, program);
  }
  const found = findInPath(program, baseEnv().PATH);
  if (found) return found;
  throw new Error(`cannot find the program "${program}" in the release's ${TOOL_DIRS.join(" or ")}, nor in PATH`);
}

/**
 * The process a manager runs for a release: in `current` (restart strategy) or in a slot's link
 * (blue-green, on the slot's port), with the resolved program and the environment.
 */
export function processFor(
  paths: AppPaths,
  config: ServerConfig,
  type: string,
  argv: string[],
  secrets: Record<string, string>,
  slot?: { slot: SlotInstance; port: number },
): AppProcess {
  const cwd = slot ? slotDir(paths, slot.slot) : paths.current;
  const user = userOf(paths, config);
  return {
    app: paths.app,
    slot: slot?.slot,
    root: paths.root,
    argv,
    cwd,
    env: appEnv(cwd, { ...config, port: slot?.port ?? config.port }, type, user),
    secrets,
    envFile: join(cwd, ".env"),
    accessLog: paths.accessLog,
    errorLog: paths.errorLog,
    stateDir: paths.dir,
    ...(user ? { user } : {}),
  };
}

/**
 * What runs release `meta`, in a slot (blue-green) or in `current` (restart): its process with
 * the program resolved, or for a docker release its container and the container's log follower.
 * Undefined for a static release, which runs nothing.
 */
export async function releaseProcess(
  paths: AppPaths,
  config: ServerConfig,
  meta: ReleaseMeta,
  secrets: Record<string, string>,
  slot?: { slot: SlotInstance; port: number },
): Promise<AppProcess | undefined> {
  if (meta.image) {
    const name = processName(paths.app, slot?.slot);
    const follower = [selfCommand(), "docker-logs", name, "--state", join(paths.dir, `.docker-logs-${name}.json`)];
    const base = processFor(paths, config, meta.type, follower, {}, slot);
    const envFile = join(paths.release(meta.id), ".env");
    const containerPort = meta.containerPort ?? DEFAULT_CONTAINER_PORT;
    return {
      ...base,
      env: followerEnv(),
      envFile: undefined, // the container reads the app's .env, not its follower
      user: undefined, // the follower talks to the engine: the manager's user; the container is the app's
      container: {
        user: base.user,
        image: meta.image,
        containerPort,
        publish: slot ? `127.0.0.1:${slot.port}` : String(config.port),
        command: meta.containerCommand,
        envFile: await exists(envFile) ? envFile : undefined,
        env: { PORT: String(containerPort), DEPLOY_ENV: config.env },
        labels: { app: paths.app, release: meta.id, commit: meta.commit, ...(slot ? { slot: slot.slot } : {}) },
      },
    };
  }
  if (!meta.argv) return undefined;
  const cwd = slot ? slotDir(paths, slot.slot) : paths.current;
  const program = await resolveProgram(meta.argv[0], paths.release(meta.id), cwd);
  return processFor(paths, config, meta.type, [program, ...meta.argv.slice(1)], secrets, slot);
}

/** The values of a release's `.env` snapshot (docker's literal form too): what output must never show. */
export async function secretValues(paths: AppPaths, meta: ReleaseMeta): Promise<string[]> {
  const text = await readTextOrUndefined(join(paths.release(meta.id), ".env")).catch(() => undefined);
  if (text === undefined) return [];
  try {
    return snapshotSecrets(text, `releases/${meta.id}/.env`, meta.image !== undefined);
  } catch {
    return [];
  }
}

/**
 * A release's own snapshot of `.env` (not today's `.env.<env>`), for its process. A docker
 * release's container reads the file itself (`--env-file`): none for the follower.
 */
export async function envSnapshot(paths: AppPaths, meta: ReleaseMeta): Promise<Record<string, string>> {
  if (meta.image) return {};
  const text = await readTextOrUndefined(join(paths.release(meta.id), ".env"));
  return text === undefined ? {} : parseDotenv(text, `releases/${meta.id}/.env`);
}
