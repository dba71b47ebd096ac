/**
 * A deploy's first stage: read and validate everything (deploy.yml, config.yml, `.env`, the start
 * command) before anything changes on disk. Bad input throws a usage error (exit 2).
 * @module
 */
import { loadServerConfig } from "../config/server_config.ts";
import { resolve } from "node:path";
import { toArgv } from "../config/argv.ts";
import { bindsPort, internalPorts, refuseTakenDomains, refuseTakenPorts } from "../config/domains.ts";
import { parseConfig, positionIn } from "../config/load.ts";
import { type DeployFile, deployFileSchema, type ServerConfig } from "../config/schema.ts";
import { DEPLOYERS, READS } from "../deployers/mod.ts";
import { ConfigError, UsageError } from "../errors.ts";
import { readTextOrUndefined } from "../fsutil.ts";
import { readCommit } from "../git.ts";
import { imageOf } from "../managers/docker.ts";
import { type AppPaths, appPaths } from "../paths.ts";
import { buildPlan, type RepoFacts, startArgv } from "./app_type.ts";
import { readDeployDotenv } from "./dotenv.ts";
import type { Prefetch } from "./prefetch.ts";
import { type ProcessTypes, processTypes } from "./processes.ts";
import { PROXIED } from "./strategies/names.ts";
import { type FrontDoor, frontDoor } from "./outcome.ts";
import { nameClash } from "./workers.ts";
import type { ReleaseMeta } from "./releases.ts";
import { userOf } from "./runtime.ts";

/** Everything known before anything changes on disk. */
export interface Deployment {
  gitDir: string;
  commit: string;
  short: string;
  deploy: DeployFile;
  config: ServerConfig;
  paths: AppPaths;
  facts: RepoFacts;
  /** The start command; undefined for a static app that runs no process, and for a docker app. */
  argv?: string[];
  /** The web process count and the workers (deploy.yml `processes`, or the Procfile). */
  processes: ProcessTypes;
  /** It runs a process or a container (not static files only). */
  runs: boolean;
  /** The values of `.env.<env>`, and that file's path. */
  secrets: Record<string, string>;
  /** Keys of `.env.<env>` marked public: shown as they are (every other value is redacted). */
  public: Set<string>;
  envSource?: string;
  prefetch?: Prefetch;
  /** proxy.yml's shared ports and ACME, for an app with domains (its URL). */
  front?: FrontDoor;
}

/** Reads and validates the commit and the server's config. Throws a usage error; changes nothing. */
export async function prepare(
  options: { gitDir: string; commit: string; prefetch?: Prefetch },
  root: string,
): Promise<Deployment> {
  const gitDir = resolve(options.gitDir);
  const read = await readCommit(gitDir, options.commit, ["deploy.yml", "Procfile", ...READS]);
  const commit = read.sha;
  const short = commit.slice(0, 7);
  const raw = read.blobs.get("deploy.yml");
  if (!raw) {
    throw new UsageError(`commit ${short} has no deploy.yml at the top of the repository`, {
      suggestion: "run `deploy-paradigm init` in the project, commit deploy.yml and push again",
    });
  }
  const deployText = new TextDecoder().decode(raw);
  const deploy = parseConfig(deployText, deployFileSchema, "deploy.yml", `commit ${short}`);
  /** `deploy.yml:line:column` of a key (`deploy.yml` when it is not in the file). */
  const at = (...path: string[]) => positionIn(deployText, "deploy.yml", path);
  const paths = appPaths(deploy.name, root);
  if (await realPath(gitDir) !== await realPath(paths.repo)) {
    throw new UsageError(
      `deploy.yml names the app "${deploy.name}", whose repository is ${paths.repo}, not ${gitDir}`,
      {
        suggestion: `each repository deploys the app it is named after: fix "name" in deploy.yml (for a new ` +
          `app: \`deploy-paradigm setup ${deploy.name}\` on this server, then push to its repository)`,
      },
    );
  }
  const config = await loadServerConfig(paths);
  userOf(paths, config); // a `user:` that names nobody, a default user setup has not created: exit 2 now
  await refuseTakenDomains(deploy.name, config.domains, { root, where: paths.config });
  const internal = internalPorts(config).map(([key, port]) => ({
    port,
    where: `${paths.config} ${key}`,
    fix: `a port belongs to one app: remove ${key.split(".")[0]}: from config.yml, and the deploy chooses free ones`,
  }));
  const own = bindsPort(config) ? [{ port: config.port, where: paths.config }] : [];
  await refuseTakenPorts(deploy.name, [...own, ...internal], { root, serving: true });

  const reads = DEPLOYERS[deploy.type].reads;
  const texts = new Map(
    (reads?.files ?? []).flatMap((file) => {
      const blob = read.blobs.get(file);
      return blob ? [[file, new TextDecoder().decode(blob)] as const] : [];
    }),
  );
  const facts: RepoFacts = { files: read.files, ...reads?.facts(texts, `commit ${short}`) };
  try {
    buildPlan(deploy, facts, "."); // refuses unsupported types, a missing Dockerfile, before any change
  } catch (error) {
    // What the commit lacks is what a key of deploy.yml names (docker: `dockerfile:`, by default Dockerfile).
    if (!(error instanceof UsageError) || deploy.type !== "docker") throw error;
    throw new UsageError(`${at("dockerfile")}: ${error.message}`, { suggestion: error.suggestion });
  }
  const envSource = paths.envFile(config.env);
  const envText = await readTextOrUndefined(envSource);
  const dotenv = envText === undefined ? undefined : readDeployDotenv(envText, envSource);
  const secrets = dotenv?.values ?? {};
  const multiline = Object.keys(secrets).filter((key) => secrets[key].includes("\n"));
  // What deploy.yml asks of this server that it cannot do: every problem at once (one error).
  const refusals = new Refusals();
  const nameRule = DEPLOYERS[deploy.type].nameRule; // docker: the name must name an image and a container
  if (nameRule && !nameRule.ok(deploy.name)) {
    refusals.add(`deploy.yml: "${deploy.name}" cannot name ${nameRule.names}`, nameRule.rule);
  }
  if (deploy.type === "docker") {
    for (const key of multiline) {
      refusals.add(
        `${
          valuePosition(envText ?? "", key, envSource)
        }: ${key} holds a newline, which docker's --env-file cannot pass`,
        "put such values in a file the app reads, or encode them (base64) on one line",
      );
    }
  }
  const procfile = read.blobs.get("Procfile");
  const processes = processTypes(
    deploy,
    procfile && new TextDecoder().decode(procfile),
    `Procfile (commit ${short})`,
  );
  if (processes.instances > 1 && !PROXIED[config.strategy]) {
    refusals.add(
      `${at("processes", "web", "instances")}: processes.web.instances is ${processes.instances}, but ` +
        `${paths.config} has strategy: ${config.strategy}`,
      "several web processes need the proxy in front of them: set strategy: blue-green in config.yml",
    );
  }
  const clash = await nameClash(root, deploy.name, processes.workers.map((w) => w.type));
  if (clash) {
    refusals.add(
      `${at("processes")}: ${clash}`,
      "rename the process type (or the other app): process and unit names must stay apart",
    );
  }
  const argv = deploy.type === "docker" ? undefined : processes.web ?? startArgv(deploy, facts);
  if (processes.workers.length && argv === undefined && deploy.type !== "docker") {
    refusals.add(
      `${at("processes")}: ${deploy.type} apps without a web command run no processes, so no workers`,
      "give the app a command (its web process), or remove the other processes",
    );
  }
  const rollout = [deploy.gates?.length ? "`gates`" : "", deploy.canary ? "`canary`" : ""].filter(Boolean)
    .join(" and ");
  const runs = argv !== undefined || deploy.type === "docker";
  if (rollout && (config.strategy !== "blue-green" || !runs || !deploy.healthCheck)) {
    refusals.add(
      `${at(deploy.gates?.length ? "gates" : "canary")}: ${rollout} ${rollout.includes(" and ") ? "need" : "needs"} ` +
        "the blue-green " +
        `strategy and an app process with a healthCheck, but ` +
        (config.strategy !== "blue-green"
          ? `${paths.config} has strategy: ${config.strategy}`
          : !runs
          ? "this app serves static files only"
          : "deploy.yml has no healthCheck"),
      config.strategy !== "blue-green"
        ? "set strategy: blue-green in config.yml (the proxy moves the traffic), or remove the key from deploy.yml"
        : `remove ${rollout} from deploy.yml, or give the app a command and a healthCheck`,
    );
  }
  refusals.check();
  return {
    gitDir,
    commit,
    short,
    deploy,
    config,
    paths,
    facts,
    argv,
    processes,
    runs,
    secrets,
    public: dotenv?.public ?? new Set(),
    envSource: envText === undefined ? undefined : envSource,
    prefetch: options.prefetch?.commit === commit ? options.prefetch : undefined,
    ...(config.domains.length && PROXIED[config.strategy] ? { front: await frontDoor(root) } : {}),
  };
}

/** Problems that stop a deploy before anything changes, each with its fix: thrown together by {@link check}. */
class Refusals {
  readonly #list: { problem: string; fix: string }[] = [];

  add(problem: string, fix: string): void {
    this.#list.push({ problem, fix });
  }

  /** Throws one {@link UsageError}: the problem and its fix as a hint, or a {@link ConfigError} of each with its fix. */
  check(): void {
    const list = this.#list;
    if (list.length === 1) throw new UsageError(list[0].problem, { suggestion: list[0].fix });
    if (list.length > 1) {
      throw new ConfigError(
        `${list.length} problems stop this deploy:`,
        list.map(({ problem, fix }) => `${problem}\n    fix: ${fix}`),
        { suggestion: "fix each of them, then push again" },
      );
    }
  }
}

/**
 * `file:line:column` of the value of `key` in a `.env` text (its last assignment, the one that
 * counts), as the other `.env` problems are given; the file alone when it cannot be found.
 */
function valuePosition(text: string, key: string, file: string): string {
  const lines = text.split("\n");
  const escaped = key.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const assignment = new RegExp(`^(\\s*(?:export\\s+)?${escaped}\\s*=\\s*)`);
  for (let i = lines.length - 1; i >= 0; i--) {
    const found = assignment.exec(lines[i]);
    if (found) return `${file}:${i + 1}:${found[1].length + 1}`;
  }
  return file;
}

async function realPath(path: string): Promise<string> {
  return await Deno.realPath(path).catch(() => resolve(path));
}

/** What release `id` of this deploy needs to run again (rollback reads it back); pending until it serves. */
export function releaseMeta(plan: Deployment, id: string, createdAt: string): ReleaseMeta {
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
    ...(deploy.root === undefined ? {} : { root: deploy.root }),
    ...(plan.processes.instances > 1 ? { instances: plan.processes.instances } : {}),
    ...(plan.processes.workers.length ? { workers: plan.processes.workers } : {}),
    ...(deploy.cron.length
      ? {
        cron: deploy.cron.map(({ name, schedule, command, timeout }) => ({
          name,
          schedule,
          argv: toArgv(command),
          timeoutMs: timeout,
        })),
      }
      : {}),
    createdAt,
    branch: deploy.branch,
    pending: true,
  };
}
