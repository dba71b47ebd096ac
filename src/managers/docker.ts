/**
 * Docker apps: a release is an image `<app>:<release>`, a slot is a container `<app>-<slot>`
 * (`<app>` under the restart strategy) started with the engine's restart policy `always` (it
 * comes back after a crash, and at boot with the engine), and the server's process manager runs
 * the container's log follower (`deploy-paradigm docker-logs`), which keeps access.log and
 * error.log filled like any app's. Only the docker CLI is used, so
 * `DOCKER_HOST` picks the engine: Docker Engine, or podman's Docker-compatible API.
 * @module
 */
import { join } from "node:path";
import type { DeployFile } from "../config/schema.ts";
import { DeployParadigmError } from "../errors.ts";
import { baseEnv, type Cmd, type Plan, type Runner } from "../runner.ts";
import type { AppProcess, ProcessManager, SlotInstance, WorkerId } from "./manager.ts";
import type { AppUser } from "../users.ts";
import { processName } from "./pm2.ts";

/** The port a container listens on when deploy.yml does not say. */
export const DEFAULT_CONTAINER_PORT = 8000;
/** Seconds `docker stop` waits after the stop signal before it kills. */
const STOP_SECONDS = 10;
const LABEL = "deploy-paradigm";

/** Whether `app` can name a docker image and its containers (2+ characters, no dash at the end or doubled). */
export function dockerNameOk(app: string): boolean {
  return app.length >= 2 && /^[a-z0-9]+(?:[._-][a-z0-9]+)*$/.test(app);
}

/** What to say about an app name docker refuses. */
export const DOCKER_NAME_RULE =
  "docker apps need a name of 2 or more characters, with no dash at the end or two in a row";

/** The image of a release. */
export function imageOf(app: string, release: string): string {
  return `${app}:${release}`;
}

/** Where the docker CLI sends its requests, for messages. */
export function dockerHost(env: Record<string, string> = baseEnv()): string {
  return env.DOCKER_HOST || "the docker CLI's default engine (DOCKER_HOST is not set; see `docker context show`)";
}

/** The variables that choose and reach the engine, passed on to the log follower. */
const ENGINE_ENV = ["DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "HOME"];

/** The environment of a docker app's log follower: PATH and the engine's variables that are set. */
export function followerEnv(env: Record<string, string> = baseEnv()): Record<string, string> {
  const engine = ENGINE_ENV.filter((key) => env[key]).map((key) => [key, env[key]]);
  return { PATH: env.PATH ?? "/usr/bin:/bin", NO_COLOR: "1", ...Object.fromEntries(engine) };
}

function docker(args: string[], options: Partial<Cmd> = {}): Cmd {
  return { argv: ["docker", ...args], quiet: true, timeoutMs: 120_000, ...options };
}

/**
 * `docker build` of a release directory: tagged `<app>:<release>`, labelled with the app, the
 * release and the commit, with deploy.yml's `dockerfile` and `buildArgs`.
 */
export function buildImage(deploy: DeployFile, releaseDir: string, release: string, commit: string): Cmd {
  return docker([
    "build",
    "--tag",
    imageOf(deploy.name, release),
    ...labels({ app: deploy.name, release, commit }),
    "--file",
    join(releaseDir, deploy.dockerfile ?? "Dockerfile"),
    ...Object.entries(deploy.buildArgs ?? {}).flatMap(([key, value]) => ["--build-arg", `${key}=${value}`]),
    releaseDir,
  ], { cwd: releaseDir, quiet: false, timeoutMs: undefined });
}

/**
 * Checks the Dockerfile of a release before the engine, which runs as root, reads it: every
 * component of `dockerfile` below `releaseDir` (lstat, no link followed) a real directory, the
 * last a regular file, no `..`. A committed or built `Dockerfile -> /etc/shadow` would otherwise
 * have the engine read a root-only file, and its first line shown to the pusher as a parse error.
 * Run it once the release is root's (sealed): then nobody else can swap a component.
 */
export async function requireDockerfile(releaseDir: string, dockerfile: string): Promise<void> {
  const refuse = (why: string) =>
    new DeployParadigmError(`the Dockerfile ${dockerfile} of the release ${why}; the image was not built`, {
      suggestion: "commit the Dockerfile as a regular file inside the repository (no symbolic link on its path), " +
        "and let no build step replace it",
    });
  const parts = dockerfile.split("/").filter((part) => part !== "" && part !== ".");
  if (!parts.length || parts.includes("..")) throw refuse("is not a path inside the release");
  let path = releaseDir;
  for (const [i, part] of ["", ...parts].entries()) {
    path = part === "" ? path : join(path, part);
    const last = i === parts.length;
    const info = await Deno.lstat(path).catch(() => undefined);
    if (info === undefined) throw refuse(`does not exist (no ${path})`);
    if (info.isSymlink) throw refuse(`is reached through a symbolic link (${path})`);
    if (last ? !info.isFile : !info.isDirectory) {
      throw refuse(last ? "is not a regular file" : `is reached through ${path}, which is not a directory`);
    }
  }
  // The ignore files the engine reads too: none may be a link either.
  for (const ignore of [".dockerignore", ".containerignore", `${parts.join("/")}.dockerignore`]) {
    const info = await Deno.lstat(join(releaseDir, ignore)).catch(() => undefined);
    if (info && !info.isFile) throw refuse(`comes with ${ignore}, which is not a regular file`);
  }
}

function labels(values: Record<string, string>): string[] {
  return Object.entries(values).flatMap(([key, value]) => ["--label", `${LABEL}.${key}=${value}`]);
}

/**
 * Checks that the docker CLI is installed and its engine answers; throws an error saying which
 * engine (DOCKER_HOST) could not be reached, and how to fix it.
 */
export async function requireEngine(runner: Runner): Promise<string> {
  const result = await runner.run(
    docker(["version", "--format", "{{.Server.Version}}"], { allowFailure: true, timeoutMs: 15_000 }),
  );
  if (result.code === 127) {
    throw new DeployParadigmError("the docker CLI is not installed (no docker in PATH)", {
      suggestion: "install Docker Engine, or the docker CLI with DOCKER_HOST pointing at podman's API socket",
    });
  }
  if (result.code !== 0) {
    const why = result.tail.find((line) => !/^\s*$/.test(line)) ?? `exit code ${result.code}`;
    throw new DeployParadigmError(`docker engine not reachable at ${dockerHost()}: ${why}`, {
      suggestion: "start the engine (systemctl start docker), or set DOCKER_HOST to a running engine's socket",
    });
  }
  return result.output.trim();
}

/** A container's state as the engine reports it now: docker's word (`running`, `exited`, …) or `missing`. */
export interface ContainerState {
  /** 0 when it does not run. */
  pid: number;
  state: string;
  /** How often the engine's restart policy started it again. */
  restarts: number;
}

/**
 * Asks the engine about the container `name` (`docker inspect`): its state, or `missing` when the
 * engine has no such container. Throws an error naming the engine when it cannot be asked.
 */
export async function containerState(runner: Runner, name: string): Promise<ContainerState> {
  const result = await runner.run(docker(
    ["inspect", "--type", "container", "--format", "{{.State.Status}} {{.State.Pid}} {{.RestartCount}}", name],
    { allowFailure: true, timeoutMs: 15_000 },
  ));
  const [state, pid, restarts] = result.output.trim().split(/\s+/);
  if (result.code === 0 && state) return { state, pid: Number(pid) || 0, restarts: Number(restarts) || 0 };
  if (/no such (container|object)/i.test(result.output)) return { state: "missing", pid: 0, restarts: 0 };
  const why = result.code === 127
    ? "the docker CLI is not installed"
    : result.tail.find((line) => !/^\s*$/.test(line)) ?? `exit code ${result.code}`;
  throw new DeployParadigmError(`docker engine not reachable at ${dockerHost()}: ${why}`);
}

/** Checks that a release's image is still there (a rollback never rebuilds, and never pulls). */
export async function requireImage(runner: Runner, image: string, release: string): Promise<void> {
  const result = await runner.run(docker(["image", "inspect", "--format", "{{.Id}}", image], { allowFailure: true }));
  if (result.code !== 0) {
    throw new DeployParadigmError(`the image ${image} of release ${release} is gone (removed by hand?)`, {
      suggestion: "push that commit again to build it anew, or roll back to another release",
    });
  }
}

/**
 * Removes the app's images of releases not in `keep`. An image a container still uses is never
 * removed (docker refuses). Returns the tags removed.
 */
export async function pruneImages(runner: Runner, app: string, keep: readonly string[]): Promise<string[]> {
  const listed = await runner.run(docker([
    "images",
    "--filter",
    `label=${LABEL}.app=${app}`,
    "--format",
    "{{.Repository}}:{{.Tag}}",
  ]));
  const removed: string[] = [];
  for (const image of listed.output.split("\n").map((line) => line.trim())) {
    const [repository, tag] = image.replace(/^(localhost|docker\.io\/library)\//, "").split(":");
    if (repository !== app || !tag || tag === "<none>" || keep.includes(tag)) continue;
    const result = await runner.run(docker(["rmi", image], { allowFailure: true }));
    if (result.code === 0) removed.push(image);
  }
  return removed;
}

/** Where a slot's container is published and what it runs. */
export interface ContainerSpec {
  image: string;
  /** The port the container listens on. */
  containerPort: number;
  /** The host side of `--publish`: `127.0.0.1:<slot port>` (blue-green) or `<port>` (restart). */
  publish: string;
  /** deploy.yml's `command`: the container's command instead of the image's CMD. */
  command?: string[];
  /** The release's env file in docker's format (KEY=value, literal). */
  envFile?: string;
  /** Non-secret environment: PORT (the container's) and DEPLOY_ENV. */
  env: Record<string, string>;
  labels: Record<string, string>;
  /**
   * The app's user: the container runs as its uid:gid (`--user`), whatever the image's USER
   * says. None (`user: root` in config.yml, or no app user): the image's own USER.
   */
  user?: AppUser;
}

/**
 * The `docker run` of a slot (or of the app, under the restart strategy). Always with
 * `no-new-privileges` (setuid programs in the image do not elevate), and as the app's user.
 */
export function runContainer(name: string, spec: ContainerSpec): Cmd {
  return docker([
    "run",
    "--detach",
    "--name",
    name,
    // `always`, not `unless-stopped`: both come back when Docker Engine starts, but podman's boot
    // service (podman-restart.service) starts only `always` containers.
    "--restart",
    "always",
    "--pull",
    "never", // the image was built here: never fetch one of the same name from a registry
    "--security-opt",
    "no-new-privileges",
    ...(spec.user ? ["--user", `${spec.user.uid}:${spec.user.gid}`] : []),
    "--publish",
    `${spec.publish}:${spec.containerPort}`,
    ...(spec.envFile ? ["--env-file", spec.envFile] : []),
    ...Object.entries(spec.env).flatMap(([key, value]) => ["--env", `${key}=${value}`]),
    ...labels(spec.labels),
    spec.image,
    ...(spec.command ?? []),
  ]);
}

/** Stops a container gracefully (its stop signal, then a kill after 10 s) and removes it. */
export function removeContainer(name: string): Cmd[] {
  return [
    docker(["stop", "-t", String(STOP_SECONDS), name], { allowFailure: true }),
    docker(["rm", "--force", name], { allowFailure: true }),
  ];
}

/**
 * The docker strategy around the server's process manager, for an app whose new or old release
 * is a docker one. A (re)start first stops what ran under that name: the process (a follower, or
 * a process app's), then the container (its stop signal, then removal), so the port is free; then
 * a process with a `container` starts it and its log follower, and any other process starts as
 * usual. Stopping stops the container first (the follower catches its last lines), then the process.
 */
export function withDocker(inner: ProcessManager): ProcessManager {
  return {
    name: inner.name,
    restart(p: AppProcess): Plan {
      if (p.worker) return inner.restart(p); // a worker is a process of a non-docker release: no container
      const plan = inner.restart(p);
      const name = processName(p.app, p.slot);
      const before = inner.stop(p.app, p.root, p.stateDir, p.slot).commands;
      const run = p.container ? [runContainer(name, p.container)] : [];
      return { ...plan, commands: [...before, ...removeContainer(name), ...run, ...plan.commands] };
    },
    stop(app: string, root: string, stateDir: string, slot?: SlotInstance, worker?: WorkerId): Plan {
      if (worker) return inner.stop(app, root, stateDir, undefined, worker);
      const plan = inner.stop(app, root, stateDir, slot);
      return { ...plan, commands: [...removeContainer(processName(app, slot)), ...plan.commands] };
    },
    installService: (service) => inner.installService(service),
    startServiceCommand: (name, root) => inner.startServiceCommand(name, root),
    logsCommand: (name) => inner.logsCommand(name),
    nameOf: (app, slot, worker) => inner.nameOf(app, slot, worker),
    ...(inner.states ? { states: (runner, root, names) => inner.states!(runner, root, names) } : {}),
  };
}
