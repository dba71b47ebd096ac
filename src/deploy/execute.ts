/**
 * `execute <git-dir> <commit>`: the deploy itself, as run by the git hook.
 *
 * 1. Validate everything first (deploy.yml, config.yml, .env, the start command): bad input
 *    changes nothing and exits 2.
 * 2. Under the app's lock, prepare the new release: extract, build, resolve the program, install
 *    `.env`, run preDeploy. A failure here switches nothing.
 * 3. Switch `current`, restart, health-check and move the branch. A failure here switches back to
 *    the previous release and waits until it is healthy again.
 * 4. The deploy stands: postDeploy, cleanup and status. Their failures are reported, never rolled back.
 * @module
 */
import { join, resolve } from "node:path";
import { refuseTakenDomains } from "../config/domains.ts";
import { parseConfig } from "../config/load.ts";
import { type DeployFile, deployFileSchema, type ServerConfig, serverConfigSchema, SLOTS } from "../config/schema.ts";
import { readRoute, ROUTE_FILE } from "../proxy/routes.ts";
import { toArgv } from "../config/argv.ts";
import { UsageError } from "../errors.ts";
import { exists, readLinkOrUndefined, readTextOrUndefined, symlinkAtomic, writeFileAtomic } from "../fsutil.ts";
import { extractCommit, readCommit, refTip, updateRef } from "../git.ts";
import {
  DOCKER_NAME_RULE,
  dockerNameOk,
  imageOf,
  pruneImages,
  requireDockerfile,
  requireEngine,
} from "../managers/docker.ts";
import { managerNamed, type ProcessManager, type Slot } from "../managers/mod.ts";
import { type AppPaths, appPaths, prefix } from "../paths.ts";
import { type Cmd, type CmdResult, displayArgv, DryRunner, ProcessRunner, type Runner } from "../runner.ts";
import { buildPlan, type RepoFacts, startArgv } from "./app_type.ts";
import { readDotenv, refuseShortSecrets, secretsOf, serializeDockerEnv, serializeDotenv } from "./dotenv.ts";
import { checkHealth, type HealthResult } from "./health.ts";
import { Journal, StepFailed } from "./journal.ts";
import { notifyOutcome } from "./notify_outcome.ts";
import { Cancellation } from "./cancel.ts";
import { acquireLock } from "./lock.ts";
import { discardPrefetch, type Prefetch } from "./prefetch.ts";
import {
  cleanupReleases,
  currentRelease,
  listReleases,
  markBad,
  markServed,
  newReleaseId,
  readReleaseMeta,
  type ReleaseMeta,
  writeReleaseMeta,
} from "./releases.ts";
import {
  asApp,
  envSnapshot,
  processFor,
  releaseProcess,
  resolveProgram,
  secretValues,
  toolEnv,
  userOf,
} from "./runtime.ts";
import { handOver, killLeftovers, ownAppDirs, sealCmds, shareWithApp, uptime } from "../users.ts";
import { activateBlueGreen, ActivationFailed, requireProxy } from "./bluegreen.ts";
import { type InPlace, restartInPlace, runningRelease } from "./restart.ts";
import { type AppStatus, type LastDeploy, readStatus, writeStatus } from "./status.ts";

/** Builds may take long, but never forever: a stuck build must not hold the lock. */
const BUILD_TIMEOUT = 30 * 60_000;
/** preDeploy and postDeploy hooks. */
const HOOK_TIMEOUT = 15 * 60_000;

/** Arguments of `execute`. */
export interface ExecuteOptions {
  gitDir: string;
  commit: string;
  /**
   * The pushed branch (`refs/heads/main`) and its value before the push (`old`, zeros for a new
   * branch). When given, the branch must still be at `old` once the lock is held, and is moved
   * to the commit after the health check, under the lock; if that fails, the deploy is rolled back.
   */
  ref?: string;
  old?: string;
  /** Print the plan, change nothing. */
  dryRun?: boolean;
  /** Where progress lines go (stdout by default). */
  print?: (line: string) => void;
  /** An extraction of the commit already under way (see prefetch.ts). */
  prefetch?: Prefetch;
  /** Cancels the deploy (default: SIGINT, SIGTERM and SIGHUP do). */
  cancellation?: Cancellation;
}

/** How `execute` ended. */
export interface ExecuteResult {
  ok: boolean;
  /** One line for git's push report when not ok. */
  reason?: string;
}

/** Everything known before anything changes on disk. */
interface Deployment {
  gitDir: string;
  commit: string;
  short: string;
  deploy: DeployFile;
  config: ServerConfig;
  paths: AppPaths;
  facts: RepoFacts;
  /** The start command; undefined for a static app that runs no process, and for a docker app. */
  argv?: string[];
  /** It runs a process or a container (not static files only). */
  runs: boolean;
  /** The values of `.env.<env>`, and that file's path. */
  secrets: Record<string, string>;
  /** Keys of `.env.<env>` marked public: shown as they are (every other value is redacted). */
  public: Set<string>;
  envSource?: string;
  print: (line: string) => void;
  prefetch?: Prefetch;
  cancellation: Cancellation;
}

/** Runs a deploy. Throws a usage error, before changing anything, for bad input. */
export async function execute(options: ExecuteOptions): Promise<ExecuteResult> {
  const own = options.cancellation === undefined && !options.dryRun ? new Cancellation().watchSignals() : undefined;
  try {
    return await executeValidated({ ...options, cancellation: options.cancellation ?? own ?? new Cancellation() });
  } finally {
    own?.dispose();
    await discardPrefetch(options.prefetch); // a no-op once the deploy renamed it into place
  }
}

async function executeValidated(options: ExecuteOptions): Promise<ExecuteResult> {
  const print = options.print ?? ((line: string) => console.log(line));
  const plan = await prepare(options, print);
  if (options.dryRun) return await dryRun(plan);
  const { deploy, paths, commit } = plan;
  await Deno.mkdir(paths.logDir, { recursive: true });
  const user = userOf(paths, plan.config);
  if (user) await ownAppDirs(paths, user); // the ownership model (users.ts), also for servers set up before it
  const journal = new Journal(paths.deployLog, deploy.name, commit, print, plan.cancellation);
  journal.redact([...secretsOf(plan.secrets, plan.public), ...plan.config.notify.map((target) => target.url)]);
  const lock = await acquireLock(paths.lock, { pid: Deno.pid, commit }, (holder) =>
    print(
      `deploy-paradigm: waiting for another deploy of ${deploy.name}` +
        (holder ? ` (pid ${holder.pid}, commit ${holder.commit.slice(0, 7)}, since ${holder.since})` : ""),
    ));
  try {
    if (plan.cancellation.cancelled) {
      const reason = `cancelled before it started (${plan.cancellation.why})`;
      journal.say(`✗ ${reason}`);
      await journal.record("cancelled", { ok: false, message: reason });
      return { ok: false, reason };
    }
    const { ref, old = "" } = options;
    if (ref !== undefined) {
      const tip = await refTip(plan.gitDir, ref);
      if ((tip ?? "") !== old.replace(/^0+$/, "")) {
        const reason = `${ref.replace("refs/heads/", "")} moved to ${tip?.slice(0, 7)} while this push waited; ` +
          `fetch, merge and push again`;
        print(`✗ ${reason}`);
        await journal.record("refused", { ok: false, message: reason });
        return { ok: false, reason };
      }
    }
    const result = await withDeployMarker(
      plan,
      journal,
      () => deployLocked(plan, journal, ref === undefined ? undefined : { ref, old }),
    );
    lock.release();
    // Told once the deploy is over and recorded, outside the lock: a slow receiver holds nothing.
    const last = (await readStatus(plan.paths.status).catch(() => undefined))?.lastDeploy;
    if (last && last.commit === commit) await notifyOutcome(journal, plan.config, deploy.name, last);
    return result;
  } catch (error) {
    throw journal.cleanError(error); // printed by the hook: a command's last lines may hold a secret
  } finally {
    lock.release();
  }
}

/** Reads and validates the commit and the server's config. Throws a usage error; changes nothing. */
async function prepare(options: ExecuteOptions, print: Deployment["print"]): Promise<Deployment> {
  const gitDir = resolve(options.gitDir);
  const read = await readCommit(gitDir, options.commit, ["deploy.yml", "package.json"]);
  const commit = read.sha;
  const short = commit.slice(0, 7);
  const raw = read.blobs.get("deploy.yml");
  if (!raw) {
    throw new UsageError(`commit ${short} has no deploy.yml at the top of the repository`, {
      suggestion: "run `deploy-paradigm init` in the project, commit deploy.yml and push again",
    });
  }
  const deploy = parseConfig(new TextDecoder().decode(raw), deployFileSchema, "deploy.yml", `commit ${short}`);
  const paths = appPaths(deploy.name);
  const configText = await readTextOrUndefined(paths.config);
  if (configText === undefined) {
    throw new UsageError(`app "${deploy.name}" is not set up on this server: ${paths.config} does not exist`, {
      suggestion: `run \`deploy-paradigm setup ${deploy.name}\` on this server first ` +
        `(or write ${paths.config} with port, manager and env)`,
    });
  }
  const config = parseConfig(configText, serverConfigSchema, paths.config);
  userOf(paths, config); // a `user:` that names nobody, a default user setup has not created: exit 2 now
  await refuseTakenDomains(deploy.name, config.domains, { where: paths.config });
  if (await realPath(gitDir) !== await realPath(paths.repo)) {
    throw new UsageError(
      `deploy.yml names the app "${deploy.name}", whose repository is ${paths.repo}, not ${gitDir}`,
      { suggestion: `each repository deploys the app it is named after: fix "name" in deploy.yml` },
    );
  }
  const facts: RepoFacts = { files: read.files };
  const pkg = read.blobs.get("package.json");
  if (deploy.type === "node" && pkg) {
    try {
      facts.packageJson = JSON.parse(new TextDecoder().decode(pkg));
    } catch (error) {
      throw new UsageError(`package.json in commit ${short} is not valid JSON: ${(error as Error).message}`);
    }
  }
  buildPlan(deploy, facts, "."); // refuses unsupported types before any change
  const envSource = paths.envFile(config.env);
  const envText = await readTextOrUndefined(envSource);
  const dotenv = envText === undefined ? undefined : readDotenv(envText, envSource);
  if (dotenv) refuseShortSecrets(dotenv, envSource);
  const secrets = dotenv?.values ?? {};
  const multiline = Object.keys(secrets).filter((key) => secrets[key].includes("\n"));
  if (deploy.type === "docker" && !dockerNameOk(deploy.name)) {
    throw new UsageError(`deploy.yml: "${deploy.name}" cannot name a docker image and container`, {
      suggestion: DOCKER_NAME_RULE,
    });
  }
  if (deploy.type === "docker" && multiline.length) {
    throw new UsageError(
      `${envSource}: ${multiline.join(", ")} ${multiline.length === 1 ? "holds" : "hold"} a newline, ` +
        "which docker's --env-file cannot pass",
      {
        suggestion: "put such values in a file the app reads, or encode them (base64) on one line",
      },
    );
  }
  const argv = deploy.type === "docker" ? undefined : startArgv(deploy, facts);
  return {
    gitDir,
    commit,
    short,
    deploy,
    config,
    paths,
    facts,
    argv,
    runs: argv !== undefined || deploy.type === "docker",
    secrets,
    public: dotenv?.public ?? new Set(),
    envSource: envText === undefined ? undefined : envSource,
    print,
    prefetch: options.prefetch?.commit === commit ? options.prefetch : undefined,
    cancellation: options.cancellation ?? new Cancellation(),
  };
}

async function realPath(path: string): Promise<string> {
  return await Deno.realPath(path).catch(() => resolve(path));
}

/** Prints what a deploy would do, step by step. */
async function dryRun(plan: Deployment): Promise<ExecuteResult> {
  const { paths, config, deploy, print } = plan;
  const release = paths.release("<new>");
  const runner = new DryRunner(print);
  print(`deploy-paradigm: dry run of ${deploy.name} ${plan.short}; nothing is changed`);
  if (deploy.type === "docker") print(`docker engine ${await requireEngine(new ProcessRunner())} answers`);
  print(`would extract ${plan.short} into ${release}`);
  const user = userOf(paths, config);
  const env = toolEnv(release, config, user);
  for (const cmd of buildPlan(deploy, plan.facts, release, { id: "<new>", commit: plan.commit })) {
    await runner.run(asApp(cmd, user, env));
  }
  print(
    plan.envSource
      ? `would copy ${plan.envSource} to ${release}/.env (0600, ${Object.keys(plan.secrets).length} values)`
      : `no ${paths.envFile(config.env)}: the app would get PORT only`,
  );
  if (deploy.hooks?.preDeploy) {
    await runner.run(asApp({ argv: toArgv(deploy.hooks.preDeploy), cwd: release }, user, env));
  }
  const manager = managerNamed(config.manager, deploy.type === "docker");
  const meta = releaseMeta(plan, "<new>");
  if (config.strategy === "blue-green") {
    const route = await readRoute(paths.dir);
    const serving = route && "port" in route && route.port === config.slots?.blue ? "blue" : "green";
    const idle: Slot = route && "port" in route ? (serving === "blue" ? "green" : "blue") : "blue";
    const slot = { slot: idle, port: config.slots?.[idle] ?? 0 };
    if (plan.runs) {
      print(
        config.slots
          ? `would start the release in the idle ${idle} slot (port ${slot.port}):`
          : "would start the release in the blue slot (this first deploy chooses the slots' ports):",
      );
      await runner.apply(manager.restart((await dryProcess(plan, meta, slot))!));
      print(`would check http://127.0.0.1:<slot port>${deploy.healthCheck!.path} before it gets any traffic`);
    } else print("would check the static files; the proxy would serve them");
    print(`would point the proxy on port ${config.port} at it, then ${paths.current} → releases/<new>`);
    print(`would drain the old slot (up to ${config.drainTimeout / 1000}s), watch ${deploy.watch / 1000}s, stop it`);
  } else {
    print(`would switch ${paths.current} → releases/<new>`);
    if (plan.runs) {
      await runner.apply(manager.restart((await dryProcess(plan, meta))!));
      print(`would check http://127.0.0.1:${config.port}${deploy.healthCheck!.path}, else switch back`);
    } else print("would check the static files; no process to start");
  }
  if (deploy.hooks?.postDeploy) {
    await runner.run(asApp({ argv: toArgv(deploy.hooks.postDeploy), cwd: release }, user, env));
  }
  print(`would keep the newest ${deploy.keepReleases} releases`);
  return { ok: true };
}

interface RunContext {
  plan: Deployment;
  runner: Runner;
  journal: Journal;
  /** The server's manager; for docker apps (or from one), with containers. */
  manager: ProcessManager;
}

/** What a release of this deploy needs to run again (rollback reads it back). */
function releaseMeta(plan: Deployment, id: string): ReleaseMeta {
  const { deploy, commit } = plan;
  return {
    id,
    commit,
    type: deploy.type,
    argv: plan.argv,
    ...(deploy.type === "docker"
      ? {
        image: imageOf(deploy.name, id),
        containerPort: deploy.containerPort,
        containerCommand: deploy.command ? toArgv(deploy.command) : undefined,
      }
      : {}),
    healthCheck: deploy.healthCheck,
    createdAt: new Date().toISOString(),
    pending: true,
  };
}

/** The process a dry run shows (the program unresolved: the release does not exist). */
async function dryProcess(plan: Deployment, meta: ReleaseMeta, slot?: { slot: Slot; port: number }) {
  if (meta.image) {
    const process = await releaseProcess(plan.paths, plan.config, meta, plan.secrets, slot);
    const envFile = plan.envSource ? join(plan.paths.release(meta.id), ".env") : undefined;
    return { ...process!, container: { ...process!.container!, envFile } };
  }
  return processFor(plan.paths, plan.config, meta.type, meta.argv!, plan.secrets, slot);
}

/**
 * Runs `deploy` with a marker file that says a deploy is under way (under the lock). Finding one
 * means the last deploy was killed (SIGKILL, a power cut): it is recorded as interrupted, and
 * status.json and `current` are brought back in line with what serves, before this one starts.
 */
async function withDeployMarker<T>(plan: Deployment, journal: Journal, deploy: () => Promise<T>): Promise<T> {
  const marker = join(plan.paths.dir, ".deploying");
  const found = await readTextOrUndefined(marker);
  if (found !== undefined) await reconcile(plan, journal, found);
  await writeFileAtomic(marker, JSON.stringify({ commit: plan.commit, pid: Deno.pid, since: now() }) + "\n");
  try {
    return await deploy();
  } finally {
    await Deno.remove(marker).catch(() => {});
  }
}

/** After a killed deploy: `current` follows what the proxy serves; status.json says what serves. */
async function reconcile(plan: Deployment, journal: Journal, found: string): Promise<void> {
  const { paths } = plan;
  let killed: { commit?: string; pid?: number; since?: string } = {};
  try {
    killed = JSON.parse(found);
  } catch { /* a marker cut short: the kill came while it was written */ }
  const route = await readRoute(paths.dir).catch(() => undefined);
  const slots = plan.config.slots;
  const servingSlot = route && "port" in route && slots
    ? (Object.keys(slots) as Slot[]).find((slot) => slots[slot] === route.port)
    : undefined;
  const inSlot = servingSlot ? await readLinkOrUndefined(join(paths.dir, "slots", servingSlot)) : undefined;
  const routed = inSlot?.split("/").pop();
  if (routed && await readReleaseMeta(paths, routed)) {
    // Health-checked before its switch: it serves, so it is no longer pending.
    if (routed !== await currentRelease(paths)) await symlinkAtomic(`releases/${routed}`, paths.current);
    await markServed(paths, routed);
  }
  const runs = plan.config.strategy === "restart" ? await followProcess(plan, killed.commit) : undefined;
  const current = await currentRelease(paths);
  const meta = current ? await readReleaseMeta(paths, current) : undefined;
  const message = `the deploy of ${killed.commit?.slice(0, 7) ?? "an unknown commit"} (pid ${killed.pid ?? "?"}, ` +
    `since ${killed.since ?? "?"}) was interrupted; ` +
    (meta ? `release ${current} (${meta.commit.slice(0, 7)}) serves` : "no release serves");
  journal.say(`! ${message}; this deploy cleans up what it left`);
  await journal.record("interrupted", { ok: false, message });
  const status = await readStatus(paths.status);
  if (!status) return;
  const version = meta?.commit.slice(0, 7);
  await saveStatus(journal, paths.status, {
    ...status,
    ...(meta && status.release !== current
      ? {
        release: current,
        commit: meta.commit,
        version,
        previous: status.release,
        // Under restart, the killed deploy restarted it before its health check: asked once now.
        ...(plan.config.strategy === "restart" ? await answering(runs === current ? meta : undefined, plan) : {}),
      }
      : {}),
    lastDeploy: {
      outcome: "cancelled",
      release: current ?? "",
      commit: killed.commit ?? meta?.commit ?? "",
      version: killed.commit?.slice(0, 7) ?? version ?? "",
      at: now(),
      duration: 0,
      step: "interrupted",
      message,
    },
  });
}

/**
 * Under restart, after a killed deploy: `current` follows the release the app's process runs (a
 * deploy killed between its switch and its restart leaves the release before running). The
 * killed deploy's release, if it never ran, is pending again: cleanup removes it. Returns the
 * release that runs, when the process manager can tell.
 */
async function followProcess(plan: Deployment, killedCommit: string | undefined): Promise<string | undefined> {
  const { paths } = plan;
  const manager = managerNamed(plan.config.manager, plan.deploy.type === "docker");
  const runs = await runningRelease({ paths, runner: new ProcessRunner(), manager });
  const switched = await currentRelease(paths);
  if (!runs || runs === switched || !(await readReleaseMeta(paths, runs))) return runs;
  await symlinkAtomic(`releases/${runs}`, paths.current);
  const meta = switched ? await readReleaseMeta(paths, switched) : undefined;
  if (meta && switched! > runs && meta.commit === killedCommit) {
    await writeReleaseMeta(paths, { ...meta, pending: true });
  }
  return runs;
}

/** Whether the release of `meta` answers its health check once (no `meta`: unknown, so no). */
async function answering(meta: ReleaseMeta | undefined, plan: Deployment) {
  const check = meta?.healthCheck;
  const url = `http://127.0.0.1:${plan.config.port}${check?.path}`;
  const healthy = check !== undefined &&
    (await checkHealth(url, { ...check, successes: 1, window: Math.min(check.window, 5000) })).healthy;
  return { healthy, status: healthy ? "running" as const : "failed" as const, lastHealthCheck: now() };
}

/** The deploy proper, under the app's lock. */
async function deployLocked(
  plan: Deployment,
  journal: Journal,
  branch: { ref: string; old: string } | undefined,
): Promise<ExecuteResult> {
  const { deploy, config, paths, commit, short } = plan;
  const started = performance.now();
  const before = await readStatus(paths.status);
  const previous = await currentRelease(paths);
  const previousMeta = previous ? await readReleaseMeta(paths, previous) : undefined;
  await Deno.mkdir(paths.releases, { recursive: true });
  const id = await newReleaseId(paths);
  const releaseDir = paths.release(id);
  journal.release = id;
  const runner = new ProcessRunner((line) => journal.output(line));
  const docker = deploy.type === "docker" || previousMeta?.type === "docker";
  const ctx: RunContext = { plan, runner, journal, manager: managerNamed(config.manager, docker) };
  const where = plan.runs ? `${config.manager}, port ${config.port}` : "static files";
  journal.say(`deploy-paradigm: deploying ${deploy.name} ${short} as release ${id} (${where})`);
  await journal.record("begin", { message: `${deploy.type} app, ${where}` });
  const meta = releaseMeta(plan, id);
  const fail = (error: unknown, switched: boolean) => failed(ctx, error, { id, started, before, previous, switched });

  // Prepare the release. A failure here switches nothing.
  try {
    if (config.strategy === "blue-green") await requireProxy(prefix()); // before building anything
    if (deploy.type === "docker") {
      await journal.step("docker", () => requireEngine(runner), (version) => `docker engine ${version}`);
    }
    await journal.step("fetch", () => fetchRelease(plan, id), () => `${short} extracted into releases/${id}`);
    const build = buildPlan(deploy, plan.facts, releaseDir, { id, commit });
    // The build runs as the app's user in a release it owns; then the release is sealed (users.ts),
    // and only then the engine (root's) builds the image, from a Dockerfile checked in the sealed release.
    const user = userOf(paths, config);
    const seal = async () => {
      if (user) { for (const cmd of sealCmds(releaseDir, user)) await runner.run(cmd); }
    };
    if (build.length) {
      await journal.step(
        "build",
        async () => {
          if (user) await runner.run(handOver(releaseDir, user));
          const env = toolEnv(releaseDir, config, user);
          const run = async (cmd: Cmd) => {
            journal.output(`$ ${displayArgv(cmd.argv)}`);
            const limits = { timeoutMs: BUILD_TIMEOUT, cancel: plan.cancellation.signal };
            await runConfined(ctx, asApp({ ...cmd, ...limits }, user, env), releaseDir);
          };
          for (const cmd of build.filter((cmd) => !cmd.engine)) await run(cmd);
          await seal();
          for (const cmd of build.filter((cmd) => cmd.engine)) {
            await requireDockerfile(releaseDir, deploy.dockerfile ?? "Dockerfile");
            await run(cmd);
          }
        },
        undefined,
        "",
      );
    } else await seal();
    await writeReleaseMeta(paths, meta); // after the build: not part of a docker build's context
    if (plan.argv) {
      await journal.step(
        "command",
        () => resolveProgram(plan.argv![0], releaseDir, paths.current),
        (p) => `${displayArgv(plan.argv!)} (${p})`,
      );
    }
    await journal.step("env", () => installEnv(plan, releaseDir), (message) => message);
    await runHook(ctx, "preDeploy", releaseDir, id);
  } catch (error) {
    return await fail(error, false);
  }

  // Blue-green: start in the idle slot, check, switch the proxy, drain, watch, move the branch.
  let health: HealthResult;
  let extra: Partial<AppStatus> = { strategy: config.strategy };
  const moveBranch = branch &&
    (() =>
      journal.step(
        "branch",
        () => updateRef(plan.gitDir, branch.ref, commit, branch.old),
        () => `${branch.ref.replace("refs/heads/", "")} → ${short}`,
      ));
  if (config.strategy === "blue-green") {
    try {
      const active = await activateBlueGreen({
        app: deploy.name,
        root: prefix(),
        paths,
        config,
        manager: ctx.manager,
        runner,
        journal,
        meta,
        secrets: plan.secrets,
        watchMs: deploy.watch,
        commit: moveBranch,
      });
      health = active.health;
      extra = { ...extra, slot: active.slot, slotPort: active.port, watch: active.watch, switchMs: active.switchMs };
    } catch (error) {
      if (!(error instanceof ActivationFailed)) return await fail(error, false);
      return await failed(ctx, error.failure, { id, started, before, previous, switched: error.switched }, error);
    }
  } else {
    // Restart: switch, restart, check, and move the branch. A failure here switches back.
    try {
      health = await restartInPlace(inPlace(ctx), meta, plan.secrets, previousMeta);
      await moveBranch?.();
    } catch (error) {
      return await fail(error, (await currentRelease(paths)) === id);
    }
    extra = { ...extra, slot: undefined, slotPort: undefined, watch: undefined, switchMs: undefined };
    await retireSlots(ctx).catch(() => journal.say("! the blue and green slots of an earlier blue-green setup stay"));
  }

  // The deploy stands. What follows is reported when it fails, never rolled back.
  await runHook(ctx, "postDeploy", releaseDir, id).catch(() =>
    journal.say("! postDeploy failed; the deploy stands (postDeploy failures are only reported)")
  );
  await journal.step(
    "cleanup",
    async () => {
      // Images of docker releases go with them, also once the app is no docker app any more.
      const images = docker || await hasDockerRelease(paths);
      const removed = await cleanupReleases(paths, deploy.keepReleases, [id, previous]);
      return [...removed, ...(images ? await pruneImages(runner, deploy.name, await listReleases(paths)) : [])];
    },
    (removed) => (removed.length ? `removed ${removed.join(", ")}` : "nothing to remove"),
  ).catch(() => journal.say("! cleanup failed; old releases stay until the next deploy"));
  const duration = Math.round(performance.now() - started);
  await saveStatus(journal, paths.status, {
    ...statusBase(plan),
    status: "running",
    version: short,
    commit,
    release: id,
    previous,
    deployed: new Date().toISOString(),
    lastHealthCheck: health.checkedAt,
    healthy: true,
    branch: deploy.branch,
    ...extra,
    lastDeploy: { outcome: "success", release: id, commit, version: short, at: now(), duration },
  });
  await journal.record("success", { ok: true, duration, message: `${short} serves as release ${id}` });
  const at = plan.runs ? `: ${url(plan)}` : "";
  journal.say(`✓ deployed ${deploy.name} ${short} (release ${id}) in ${(duration / 1000).toFixed(1)}s${at}`);
  return { ok: true };
}

/** Whether any release of the app is a docker one. */
async function hasDockerRelease(paths: AppPaths): Promise<boolean> {
  for (const id of await listReleases(paths)) {
    if ((await readReleaseMeta(paths, id).catch(() => undefined))?.image) return true;
  }
  return false;
}

/**
 * After a healthy restart-strategy deploy of an app that was blue-green before: stop both slots
 * and remove the route and the slot links, so nothing of the old setup lingers (or returns at boot).
 */
async function retireSlots(ctx: RunContext): Promise<void> {
  const { plan, runner, journal, manager } = ctx;
  const { paths } = plan;
  if (!(await exists(join(paths.dir, ROUTE_FILE))) && !(await exists(join(paths.dir, "slots")))) return;
  await journal.step("retire", async () => {
    for (const slot of SLOTS) await runner.apply(manager.stop(plan.deploy.name, prefix(), paths.dir, slot));
    await Deno.remove(join(paths.dir, ROUTE_FILE)).catch(() => {});
    await Deno.remove(join(paths.dir, "slots"), { recursive: true }).catch(() => {});
  }, () => "the blue and green slots of the blue-green setup are stopped");
}

/** Moves the prefetched tree into place, or extracts the commit now. */
async function fetchRelease(plan: Deployment, id: string): Promise<void> {
  const releaseDir = plan.paths.release(id);
  if (plan.prefetch && await plan.prefetch.done.then(() => true, () => false)) {
    try {
      return await Deno.rename(plan.prefetch.dir, releaseDir);
    } catch { /* on another filesystem, say: extract again */ }
  }
  const partial = join(plan.paths.releases, `.${id}.partial`);
  await Deno.mkdir(partial);
  try {
    await extractCommit(plan.gitDir, plan.commit, partial);
    await Deno.rename(partial, releaseDir);
  } catch (error) {
    await Deno.remove(partial, { recursive: true }).catch(() => {});
    throw error;
  }
}

/** Runs hooks.preDeploy or hooks.postDeploy in the release, with the app's environment. */
async function runHook(ctx: RunContext, name: "preDeploy" | "postDeploy", releaseDir: string, id: string) {
  const { plan, journal } = ctx;
  const command = plan.deploy.hooks?.[name];
  if (!command) return;
  const argv = toArgv(command);
  const user = userOf(plan.paths, plan.config);
  const env = {
    ...plan.secrets,
    ...toolEnv(releaseDir, plan.config, user),
    DEPLOY_APP: plan.deploy.name,
    DEPLOY_RELEASE: id,
    DEPLOY_COMMIT: plan.commit,
  };
  const hook = {
    argv,
    cwd: releaseDir,
    timeoutMs: HOOK_TIMEOUT,
    cancel: name === "preDeploy" ? plan.cancellation.signal : undefined, // postDeploy: the deploy stands
  };
  // After preDeploy the app runs from the release: then no process is a leftover for being in it.
  const inRelease = name === "preDeploy" ? releaseDir : undefined;
  await journal.step(name, () => runConfined(ctx, asApp(hook, user, env), inRelease), undefined, displayArgv(argv));
}

/**
 * Runs a build command or hook (see asApp), then kills what it left behind (see killLeftovers):
 * processes that outlive it, also daemonized ones, neither run on as the app nor hold the release.
 */
async function runConfined(ctx: RunContext, cmd: Cmd, releaseDir?: string): Promise<CmdResult> {
  const since = (uptime() ?? 0.01) - 0.01; // /proc/<pid>/stat counts in hundredths
  try {
    return await ctx.runner.run(cmd);
  } finally {
    if (!cmd.engine) {
      const killed = await killLeftovers(userOf(ctx.plan.paths, ctx.plan.config), releaseDir, since);
      if (killed) ctx.journal.output(`(killed ${killed} process${killed === 1 ? "" : "es"} it left behind)`);
    }
  }
}

/** The restart strategy's context (restart.ts) of a deploy. */
function inPlace(ctx: RunContext): InPlace {
  return {
    paths: ctx.plan.paths,
    config: ctx.plan.config,
    journal: ctx.journal,
    runner: ctx.runner,
    manager: ctx.manager,
  };
}

/** What a failed deploy knows about the state before it. */
interface FailureContext {
  id: string;
  started: number;
  before: AppStatus | undefined;
  previous: string | undefined;
  switched: boolean;
}

/**
 * Ends a failed deploy: switches back when it had switched (unless a blue-green activation
 * already did: `handled`), removes the release (or marks it bad when it took traffic), records it.
 */
async function failed(
  ctx: RunContext,
  error: unknown,
  f: FailureContext,
  handled?: ActivationFailed,
): Promise<ExecuteResult> {
  const { plan, journal } = ctx;
  const { paths, deploy, short, commit } = plan;
  const failure = error instanceof StepFailed ? error : new StepFailed("deploy", error);
  const cancelled = plan.cancellation.cancelled;
  journal.cancellation = undefined; // what follows puts things back: it runs to the end
  if (!(error instanceof StepFailed)) journal.say(`✗ ${failure.message}`);
  journal.say(
    cancelled
      ? `✗ deploy of ${deploy.name} ${short} cancelled at step "${failure.step}" (${plan.cancellation.why})`
      : `✗ deploy of ${deploy.name} ${short} failed at step "${failure.step}"`,
  );
  const last: LastDeploy = {
    outcome: cancelled ? "cancelled" : f.switched ? "rolled_back" : "failed",
    release: f.id,
    commit,
    version: short,
    at: now(),
    duration: Math.round(performance.now() - f.started),
    step: failure.step,
    message: journal.clean(failure.message),
  };
  let status: AppStatus;
  if (!f.switched) {
    journal.say(
      `  nothing was switched: ${f.before?.version ? `${f.before.version} still serves` : "no release serves"}`,
    );
    status = f.before
      ? { ...f.before, lastDeploy: last }
      : { ...statusBase(plan), status: "failed", healthy: false, lastDeploy: last };
  } else if (handled) {
    const watch = failure.step === "watch" ? { watch: "failed" as const } : {};
    status = handled.serving && f.before
      ? { ...f.before, ...watch, status: "rolled_back", lastDeploy: last }
      : { ...statusBase(plan), ...f.before, ...watch, status: "failed", healthy: false, lastDeploy: last };
    if (handled.serving) journal.say(`↺ rolled back: ${f.before?.version ?? "the release before"} serves again`);
  } else {
    const back = await rollBack(ctx, f.previous, f.id).catch((e) => {
      journal.say(`✗ rollback failed: ${e instanceof Error ? e.message : e}`);
      return undefined;
    });
    const healthy = back?.healthy === true;
    status = {
      ...statusBase(plan),
      ...f.before,
      ...back,
      status: healthy ? "rolled_back" : "failed",
      healthy,
      lastDeploy: last,
    };
  }
  journal.release = f.id;
  // It took traffic: kept for inspection and skipped by rollback; so is a cancelled one that still serves.
  const stillServes = (await currentRelease(paths)) === f.id;
  if (handled?.switched && (!cancelled || stillServes)) await markBad(paths, f.id);
  else {
    await Deno.remove(paths.release(f.id), { recursive: true }).catch(() => {});
    if (deploy.type === "docker") {
      await pruneImages(ctx.runner, deploy.name, await listReleases(paths)).catch(() => {}); // its image too
    }
  }
  await journal.record(last.outcome, {
    ok: false,
    duration: last.duration,
    message: `${failure.step}: ${failure.message}`,
  });
  await saveStatus(journal, paths.status, status);
  journal.say(
    status.healthy && status.version
      ? `✗ ${deploy.name} ${short} was not deployed; ${status.version} serves at ${url(plan)}`
      : `✗ ${deploy.name} ${short} was not deployed; nothing healthy serves ${url(plan)}`,
  );
  return {
    ok: false,
    reason: `deploy ${cancelled ? "cancelled" : "failed"} at ${failure.step}` +
      (f.switched ? (status.healthy ? "; rolled back" : "; nothing healthy serves") : ""),
  };
}

/**
 * Switches back to `previous` and restarts it (its own command, health check and `.env`); with
 * no previous release, stops the app. Returns what serves then. Events name the previous release.
 */
async function rollBack(
  ctx: RunContext,
  previous: string | undefined,
  failedId: string,
): Promise<Partial<AppStatus> | undefined> {
  const { plan, runner, journal } = ctx;
  const { paths } = plan;
  if (!previous) {
    await journal.step("stop", async () => {
      if (plan.runs) await runner.apply(ctx.manager.stop(plan.deploy.name, prefix(), paths.dir));
      await Deno.remove(paths.current).catch(() => {});
    }, () => "no previous release to go back to; the app is stopped");
    return undefined;
  }
  journal.release = previous;
  const meta = await readReleaseMeta(paths, previous);
  try {
    if (!meta) throw new Error(`release ${previous} has no metadata; cannot restart it`);
    const secrets = await envSnapshot(paths, meta);
    journal.redact(await secretValues(paths, meta));
    const failedMeta = await readReleaseMeta(paths, failedId);
    const health = await restartInPlace(inPlace(ctx), meta, secrets, failedMeta, "rollback");
    journal.say(`↺ rolled back: release ${previous} (${meta.commit.slice(0, 7)}) serves again`);
    return {
      version: meta.commit.slice(0, 7),
      commit: meta.commit,
      release: previous,
      healthy: true,
      lastHealthCheck: health.checkedAt,
    };
  } catch {
    // Never left naming the failed release, which goes.
    await symlinkAtomic(`releases/${previous}`, paths.current).catch(() => {});
    journal.say(`✗ the previous release ${previous} is not healthy either: nothing healthy serves`);
    return { release: previous, healthy: false, lastHealthCheck: now() };
  }
}

/**
 * Writes the values of `.env.<env>` into the release as `.env` (0600), in the canonical form
 * that systemd's EnvironmentFile reads exactly as we do.
 */
async function installEnv(plan: Deployment, releaseDir: string): Promise<string> {
  if (!plan.envSource) return `no ${plan.paths.envFile(plan.config.env)}; the app gets PORT only`;
  const file = join(releaseDir, ".env");
  const header = `from ${plan.envSource}, written by deploy-paradigm`;
  const text = plan.deploy.type === "docker"
    ? serializeDockerEnv(plan.secrets, `${header} for docker run --env-file`, plan.public)
    : serializeDotenv(plan.secrets, header, plan.public);
  await Deno.writeTextFile(file, text, { mode: 0o600, createNew: true });
  await Deno.chmod(file, 0o600);
  await shareWithApp(file, userOf(plan.paths, plan.config)); // root:<app group> 0640: its app only
  const count = Object.keys(plan.secrets).length;
  return `.env.${plan.config.env} → .env (0600, ${count} value${count === 1 ? "" : "s"})`;
}

/**
 * Writes status.json; a failure to (a full disk) is reported and does not change how the deploy
 * ended: deploy.log has its outcome already.
 */
async function saveStatus(journal: Journal, path: string, status: AppStatus): Promise<void> {
  try {
    await writeStatus(path, status);
  } catch (error) {
    journal.say(`! cannot write ${path}: ${(error as Error).message}`);
  }
}

function statusBase(plan: Deployment) {
  const { deploy, config } = plan;
  return {
    name: deploy.name,
    type: deploy.type,
    manager: config.manager,
    port: config.port,
    strategy: config.strategy,
    ...(plan.runs || config.strategy === "blue-green" ? { url: url(plan) } : {}),
  };
}

/** Where the app answers: its first domain (through the proxy's shared ports), else its own port. */
function url(plan: Deployment): string {
  const domain = plan.config.strategy === "blue-green"
    ? plan.config.domains.find((d) => !d.startsWith("*."))
    : undefined;
  return domain ? `https://${domain}/` : `http://127.0.0.1:${plan.config.port}/`;
}

function now(): string {
  return new Date().toISOString();
}
