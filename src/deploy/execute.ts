/**
 * `execute <git-dir> <commit>`: the deploy itself, as called by the post-receive hook.
 *
 * Validate everything first (nothing changes on a bad config), take the app's lock, extract the
 * commit into a new release, build, install `.env`, run preDeploy, switch `current` atomically,
 * restart through the process manager, health-check, and either keep the release or switch back.
 * @module
 */
import { join, resolve } from "node:path";
import { parseConfig } from "../config/load.ts";
import { type DeployFile, deployFileSchema, type ServerConfig, serverConfigSchema } from "../config/schema.ts";
import { toArgv } from "../config/argv.ts";
import { UsageError } from "../errors.ts";
import { exists, readTextOrUndefined, symlinkAtomic } from "../fsutil.ts";
import { extractCommit, readAtCommit, refTip, resolveCommit, topLevelFiles } from "../git.ts";
import { type AppProcess, managerNamed } from "../managers/mod.ts";
import { type AppPaths, appPaths, prefix } from "../paths.ts";
import { baseEnv, displayArgv, DryRunner, ProcessRunner, type Runner } from "../runner.ts";
import { buildPlan, type RepoFacts, startArgv } from "./app_type.ts";
import { parseDotenv, serializeDotenv } from "./dotenv.ts";
import { checkHealth, type HealthResult } from "./health.ts";
import { Journal, StepFailed } from "./journal.ts";
import { acquireLock } from "./lock.ts";
import { discardPrefetch, type Prefetch } from "./prefetch.ts";
import {
  cleanupReleases,
  currentRelease,
  newReleaseId,
  readReleaseMeta,
  type ReleaseMeta,
  writeReleaseMeta,
} from "./releases.ts";
import { type AppStatus, type LastDeploy, readStatus, writeStatus } from "./status.ts";

/** Arguments of `execute`. */
export interface ExecuteOptions {
  gitDir: string;
  commit: string;
  /**
   * The pushed branch (`refs/heads/main`) and its value before the push (`old`, zeros for a new
   * branch). When given, the branch must still be at `old` once the lock is held, and is moved
   * to the commit only after a healthy deploy, under the lock.
   */
  ref?: string;
  old?: string;
  /** Print the plan, change nothing. */
  dryRun?: boolean;
  /** An extraction of the commit already under way (see prefetch.ts). */
  prefetch?: Prefetch;
  /** Where progress lines go (stdout by default). */
  print?: (line: string) => void;
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
  argv?: string[];
  print: (line: string) => void;
  prefetch?: Prefetch;
}

/** Runs a deploy. Throws a usage error (before changing anything) for bad input. */
export async function execute(options: ExecuteOptions): Promise<ExecuteResult> {
  try {
    return await executeChecked(options);
  } finally {
    await discardPrefetch(options.prefetch); // a no-op once the deploy renamed it into place
  }
}

async function executeChecked(options: ExecuteOptions): Promise<ExecuteResult> {
  const print = options.print ?? ((line: string) => console.log(line));
  const gitDir = resolve(options.gitDir);
  const commit = await resolveCommit(gitDir, options.commit);
  const raw = await readAtCommit(gitDir, commit, "deploy.yml");
  if (!raw) {
    throw new UsageError(`commit ${commit.slice(0, 7)} has no deploy.yml at the top of the repository`, {
      suggestion: "run `deploy-paradigm init` in the project, commit deploy.yml and push again",
    });
  }
  const staged = options.prefetch?.commit === commit ? options.prefetch : undefined;
  const plan = await prepare(gitDir, commit, new TextDecoder().decode(raw), print, staged);
  if (options.dryRun) return dryRun(plan);

  const lock = await acquireLock(plan.paths.lock, { pid: Deno.pid, commit }, (holder) =>
    print(
      `deploy-paradigm: waiting for another deploy of ${plan.deploy.name}` +
        (holder ? ` (pid ${holder.pid}, commit ${holder.commit.slice(0, 7)}, since ${holder.since})` : ""),
    ));
  try {
    const { ref, old = "" } = options;
    if (ref !== undefined) {
      const tip = await refTip(gitDir, ref);
      if ((tip ?? "") !== old.replace(/^0+$/, "")) {
        const reason = `${ref.replace("refs/heads/", "")} moved to ${tip?.slice(0, 7)} while this push waited; ` +
          `fetch, merge and push again`;
        print(`✗ ${reason}`);
        return { ok: false, reason };
      }
    }
    const result = await deployLocked(plan);
    if (result.ok && ref !== undefined) {
      await new ProcessRunner(print).run({ argv: ["git", "--git-dir", gitDir, "update-ref", ref, commit, old] });
    }
    return result;
  } finally {
    lock.release();
  }
}

/** Validates deploy.yml, config.yml and the plans. Throws a usage error before anything changes. */
async function prepare(
  gitDir: string,
  commit: string,
  text: string,
  print: Deployment["print"],
  prefetch: Prefetch | undefined,
): Promise<Deployment> {
  const short = commit.slice(0, 7);
  const deploy = parseConfig(text, deployFileSchema, `deploy.yml (commit ${short})`);
  const paths = appPaths(deploy.name);
  const configText = await readTextOrUndefined(paths.config);
  if (configText === undefined) {
    throw new UsageError(`app "${deploy.name}" is not set up on this server: ${paths.config} does not exist`, {
      suggestion: `run \`deploy-paradigm setup ${deploy.name}\` on this server first`,
    });
  }
  const config = parseConfig(configText, serverConfigSchema, paths.config);
  const files = await topLevelFiles(gitDir, commit);
  const facts: RepoFacts = { files };
  if (deploy.type === "node" && files.has("package.json")) {
    const pkg = await readAtCommit(gitDir, commit, "package.json");
    try {
      facts.packageJson = JSON.parse(new TextDecoder().decode(pkg));
    } catch (error) {
      throw new UsageError(`package.json in commit ${short} is not valid JSON: ${(error as Error).message}`);
    }
  }
  buildPlan(deploy, facts, "."); // validates the type now rather than after the extraction
  return { gitDir, commit, short, deploy, config, paths, facts, argv: startArgv(deploy, facts), print, prefetch };
}

function dryRun(plan: Deployment): ExecuteResult {
  const runner = new DryRunner(plan.print);
  const release = plan.paths.release("<new>");
  plan.print(`deploy-paradigm: dry run of ${plan.deploy.name} ${plan.short}; nothing is changed`);
  for (const cmd of buildPlan(plan.deploy, plan.facts, release)) runner.run(cmd);
  if (plan.argv) {
    plan.print(`would start with ${plan.config.manager}: ${displayArgv(plan.argv)}`);
    plan.print(`would check http://127.0.0.1:${plan.config.port}${plan.deploy.healthCheck!.path}`);
  }
  return { ok: true };
}

/** The deploy proper, under the app's lock. */
async function deployLocked(plan: Deployment): Promise<ExecuteResult> {
  const { deploy, config, paths, commit, short } = plan;
  const started = performance.now();
  const journal = new Journal(paths.deployLog, deploy.name, commit, plan.print);
  const before = await readStatus(paths.status);
  const previous = await currentRelease(paths);
  await Deno.mkdir(paths.releases, { recursive: true });
  const id = await newReleaseId(paths);
  const releaseDir = paths.release(id);
  journal.release = id;
  const runner = new ProcessRunner((line) => journal.output(line));
  const ctx: RunContext = { plan, runner, journal };
  journal.say(
    `deploy-paradigm: deploying ${deploy.name} ${short} as release ${id} (${config.manager}, port ${config.port})`,
  );
  await journal.record("start", { message: `${deploy.type} app, ${config.manager}, port ${config.port}` });

  let switched = false;
  try {
    await journal.step("fetch", async () => {
      if (plan.prefetch && await plan.prefetch.done.then(() => true, () => false)) {
        try {
          return await Deno.rename(plan.prefetch.dir, releaseDir);
        } catch { /* another filesystem, say: extract again */ }
      }
      const partial = join(paths.releases, `.${id}.partial`);
      await Deno.mkdir(partial);
      await extractCommit(plan.gitDir, commit, partial);
      await Deno.rename(partial, releaseDir);
    }, () => `${short} extracted into releases/${id}`);
    const meta: ReleaseMeta = {
      id,
      commit,
      type: deploy.type,
      argv: plan.argv,
      healthCheck: deploy.healthCheck,
      createdAt: new Date().toISOString(),
    };
    await writeReleaseMeta(paths, meta);
    const build = buildPlan(deploy, plan.facts, releaseDir);
    if (build.length) {
      await journal.step(
        "build",
        async () => {
          for (const cmd of build) await runner.run({ ...cmd, env: { ...cmd.env, ...toolEnv(releaseDir, config) } });
        },
        undefined,
        build.map((c) => displayArgv(c.argv)).join(" && "),
      );
    }
    const secrets = await journal.step("env", () => installEnv(paths, config, releaseDir), (s) => s.message);
    const hookEnv = { ...secrets.values, ...toolEnv(releaseDir, config), DEPLOY_RELEASE: id, DEPLOY_COMMIT: commit };
    if (deploy.hooks?.preDeploy) {
      const argv = toArgv(deploy.hooks.preDeploy);
      await journal.step(
        "preDeploy",
        () => runner.run({ argv, cwd: releaseDir, env: hookEnv }),
        undefined,
        displayArgv(argv),
      );
    }
    await journal.step(
      "switch",
      () => symlinkAtomic(`releases/${id}`, paths.current),
      () => `current → releases/${id}`,
    );
    switched = true;
    const health = await startAndCheck(ctx, meta, secrets.values);
    if (deploy.hooks?.postDeploy) {
      const argv = toArgv(deploy.hooks.postDeploy);
      await journal.step(
        "postDeploy",
        () => runner.run({ argv, cwd: releaseDir, env: hookEnv }),
        undefined,
        displayArgv(argv),
      )
        .catch(() => journal.say("! postDeploy failed; the deploy stands (postDeploy failures are only reported)"));
    }
    await journal.step(
      "cleanup",
      () => cleanupReleases(paths, deploy.keepReleases, [id, previous]),
      (removed) => (removed.length ? `removed ${removed.join(", ")}` : "nothing to remove"),
    );
    const duration = Math.round(performance.now() - started);
    const last: LastDeploy = { outcome: "success", release: id, commit, version: short, at: now(), duration };
    await writeStatus(paths.status, {
      ...statusBase(plan),
      status: "running",
      version: short,
      commit,
      release: id,
      previous,
      deployed: last.at,
      lastHealthCheck: health.checkedAt,
      healthy: true,
      lastDeploy: last,
    });
    await journal.record("success", { ok: true, duration, message: `${short} serves as release ${id}` });
    journal.say(`✓ deployed ${deploy.name} ${short} (release ${id}) in ${(duration / 1000).toFixed(1)}s: ${url(plan)}`);
    return { ok: true };
  } catch (error) {
    const failure = error instanceof StepFailed ? error : new StepFailed("deploy", error);
    const duration = Math.round(performance.now() - started);
    const last: LastDeploy = {
      outcome: switched ? "rolled_back" : "failed",
      release: id,
      commit,
      version: short,
      at: now(),
      duration,
      step: failure.step,
      message: failure.message,
    };
    journal.say(`✗ deploy of ${deploy.name} ${short} failed at step "${failure.step}"`);
    const serving = switched ? await rollBack(ctx, previous, before) : before;
    await Deno.remove(releaseDir, { recursive: true }).catch(() => {});
    const status: AppStatus = serving
      ? { ...serving, ...statusBase(plan), status: serving.healthy ? "running" : "failed", lastDeploy: last }
      : { ...statusBase(plan), status: "failed", healthy: false, lastDeploy: last };
    await writeStatus(paths.status, status);
    await journal.record(last.outcome, { ok: false, duration, message: `${failure.step}: ${failure.message}` });
    if (!switched) {
      journal.say(
        `  nothing was switched: ${before?.version ? `${before.version} still serves` : "no release serves"}`,
      );
    }
    return {
      ok: false,
      reason: `deploy failed at ${failure.step}${switched && serving?.healthy ? "; rolled back" : ""}`,
    };
  }
}

interface RunContext {
  plan: Deployment;
  runner: Runner;
  journal: Journal;
}

/** Starts `current` through the manager and checks it. Throws when it is not healthy. */
async function startAndCheck(
  ctx: RunContext,
  meta: ReleaseMeta,
  secrets: Record<string, string>,
): Promise<HealthResult> {
  const { plan, runner, journal } = ctx;
  const { config, paths } = plan;
  const releaseDir = paths.release(meta.id);
  if (!meta.argv) {
    return await journal.step("health", async () => {
      const path = meta.healthCheck?.path ?? "/";
      const file = join(releaseDir, path.endsWith("/") ? `${path}index.html` : path);
      if (!(await exists(file))) throw new Error(`static app has no file for ${path} (looked for ${file})`);
      return { healthy: true, attempts: 1, successes: 1, checkedAt: now() };
    }, () => "static files in place; no process to start");
  }
  const manager = managerNamed(config.manager);
  const process: AppProcess = {
    app: plan.deploy.name,
    root: prefix(),
    argv: [await resolveProgram(meta.argv[0], releaseDir, paths.current), ...meta.argv.slice(1)],
    cwd: paths.current,
    env: appEnv(paths.current, config, meta.type),
    secrets,
    envFile: join(paths.current, ".env"),
    accessLog: paths.accessLog,
    errorLog: paths.errorLog,
    stateDir: paths.dir,
  };
  await Deno.mkdir(paths.logDir, { recursive: true });
  await journal.step(
    "start",
    () => runner.apply(manager.restart(process)),
    () => `${manager.name} started ${displayArgv(meta.argv!)}`,
  );
  const check = meta.healthCheck!;
  const target = `http://127.0.0.1:${config.port}${check.path}`;
  return await journal.step(
    "health",
    async () => {
      const result = await checkHealth(target, check);
      if (!result.healthy) {
        throw new Error(
          `${target} did not answer 2xx ${check.successes} times in a row within ${check.window / 1000}s ` +
            `(${result.attempts} attempts; last: ${result.lastProblem})`,
        );
      }
      return result;
    },
    (r) => `${check.successes}/${check.successes} OK from ${target} (${r.attempts} attempts)`,
    target,
  );
}

/** Switches back to `previous` and restarts it; stops the app when there is none. Returns what serves. */
async function rollBack(
  ctx: RunContext,
  previous: string | undefined,
  before: AppStatus | undefined,
): Promise<Partial<AppStatus> & { healthy: boolean } | undefined> {
  const { plan, runner, journal } = ctx;
  const { paths } = plan;
  if (!previous) {
    await journal.step("stop", async () => {
      if (plan.argv) await runner.apply(managerNamed(plan.config.manager).stop(plan.deploy.name, prefix()));
      await Deno.remove(paths.current).catch(() => {});
    }, () => "no previous release to go back to; the app is stopped");
    return undefined;
  }
  const meta = await readReleaseMeta(paths, previous);
  try {
    await journal.step(
      "rollback",
      () => symlinkAtomic(`releases/${previous}`, paths.current),
      () => `current → releases/${previous}`,
    );
    if (!meta) throw new Error(`release ${previous} has no metadata; cannot restart it`);
    const envText = await readTextOrUndefined(join(paths.release(previous), ".env"));
    const secrets = envText === undefined ? {} : parseDotenv(envText, `releases/${previous}/.env`);
    const health = await startAndCheck(ctx, meta, secrets);
    journal.say(`↺ rolled back: release ${previous} (${meta.commit.slice(0, 7)}) serves again`);
    const version = meta.commit.slice(0, 7);
    return {
      ...before,
      version,
      commit: meta.commit,
      release: previous,
      healthy: true,
      lastHealthCheck: health.checkedAt,
    };
  } catch {
    journal.say(`✗ the previous release ${previous} is not healthy either: nothing healthy serves`);
    return { ...before, release: previous, healthy: false, lastHealthCheck: now() };
  }
}

/**
 * Copies the values of `.env.<env>` into the release as `.env` (0600), in the canonical form
 * that systemd's EnvironmentFile reads exactly as we do. Returns the values.
 */
async function installEnv(paths: AppPaths, config: ServerConfig, releaseDir: string) {
  const source = paths.envFile(config.env);
  const text = await readTextOrUndefined(source);
  if (text === undefined) return { values: {}, message: `no ${source}; the app gets PORT only` };
  const values = parseDotenv(text, source);
  const file = join(releaseDir, ".env");
  await Deno.writeTextFile(file, serializeDotenv(values, `from ${source}, written by deploy-paradigm`), {
    mode: 0o600,
    createNew: true,
  });
  await Deno.chmod(file, 0o600);
  const count = Object.keys(values).length;
  return { values, message: `.env.${config.env} → .env (0600, ${count} value${count === 1 ? "" : "s"})` };
}

/** PATH with the release's own tools first. */
function pathWith(dir: string): string {
  return [join(dir, "venv", "bin"), join(dir, "node_modules", ".bin"), baseEnv().PATH ?? "/usr/bin:/bin"].join(":");
}

/** Environment of builds and hooks. */
function toolEnv(releaseDir: string, config: ServerConfig): Record<string, string> {
  return { PATH: pathWith(releaseDir), PORT: String(config.port), DEPLOY_ENV: config.env };
}

/** The app's non-secret environment. It names `current`, so it is the same for every release. */
function appEnv(current: string, config: ServerConfig, type: string): Record<string, string> {
  return {
    PORT: String(config.port),
    PATH: pathWith(current),
    DEPLOY_ENV: config.env,
    ...(type === "python" ? { PYTHONUNBUFFERED: "1" } : {}),
  };
}

/**
 * An absolute path for the program of the start command: relative paths are inside the release,
 * bare names are looked up in the release's venv/bin and node_modules/.bin, then in PATH.
 */
async function resolveProgram(program: string, releaseDir: string, current: string): Promise<string> {
  if (program.startsWith("/")) return program;
  if (program.includes("/")) return join(current, program);
  for (const dir of ["venv/bin", "node_modules/.bin"]) {
    if (await exists(join(releaseDir, dir, program))) return join(current, dir, program);
  }
  for (const dir of (baseEnv().PATH ?? "").split(":").filter(Boolean)) {
    const candidate = join(dir, program);
    try {
      const info = await Deno.stat(candidate);
      if (info.isFile && (info.mode ?? 0) & 0o111) return candidate;
    } catch { /* not here */ }
  }
  throw new Error(`cannot find "${program}" in the release's venv/bin or node_modules/.bin, nor in PATH`);
}

function statusBase(plan: Deployment) {
  return {
    name: plan.deploy.name,
    type: plan.deploy.type,
    manager: plan.config.manager,
    port: plan.config.port,
    url: url(plan),
  };
}

function url(plan: Deployment): string {
  return `http://127.0.0.1:${plan.config.port}/`;
}

function now(): string {
  return new Date().toISOString();
}
