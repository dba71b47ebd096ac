/**
 * An app's process types: `web` (behind the proxy and the health check) and the others
 * (workers: no port), from deploy.yml `processes` (or `command`), else from a `Procfile` in the
 * repository (as Heroku, Dokku and Piku read it). Pure: the texts come from the commit.
 * @module
 */
import { splitCommand, toArgv } from "../config/argv.ts";
import type { DeployFile } from "../config/schema.ts";
import { MAX_INSTANCES, PROCESS_NAME } from "../config/release_keys.ts";
import { ConfigError, UsageError } from "../errors.ts";

/** A worker process type of a release: `instances` processes of `argv`, none of them behind the proxy. */
export interface WorkerSpec {
  type: string;
  /** The command before path resolution. */
  argv: string[];
  instances: number;
  /** How long a stopping instance may take after SIGTERM before SIGKILL. */
  stopTimeoutMs: number;
}

/** What runs for a release besides its build: the web command (if given) and count, and the workers. */
export interface ProcessTypes {
  /** The web command deploy.yml or the Procfile gives (none: the app type's default, if any). */
  web?: string[];
  /** Web processes (each on its own port, balanced by the proxy). */
  instances: number;
  workers: WorkerSpec[];
}

/** The default time a worker gets after SIGTERM. */
export const DEFAULT_STOP_TIMEOUT_MS = 30_000;

/** One Procfile line's problem: where on the line, what, and how to fix it (unless `what` says so). */
interface LineProblem {
  column: number;
  what: string;
  suggestion?: string;
}

/**
 * A Procfile's process types, in file order: `name: command` lines (blank lines and `#` comments
 * skipped). Commands follow deploy.yml's rule (no shell). Throws a UsageError naming
 * `where:line:column` for a line that breaks it; with several such lines, a ConfigError listing each.
 */
export function parseProcfile(text: string, where: string): Map<string, string[]> {
  const types = new Map<string, string[]>();
  const problems: (LineProblem & { line: number })[] = [];
  for (const [i, line] of text.split(/\r?\n/).entries()) {
    if (!line.trim() || line.trimStart().startsWith("#")) continue;
    const read = procfileLine(line, types);
    if ("what" in read) problems.push({ ...read, line: i + 1 });
    else types.set(read.name, read.argv);
  }
  const at = (problem: LineProblem & { line: number }) => `${where}:${problem.line}:${problem.column}: ${problem.what}`;
  if (problems.length === 1) throw new UsageError(at(problems[0]), { suggestion: problems[0].suggestion });
  if (problems.length) {
    throw new ConfigError(
      `Cannot read ${where} (${problems.length} problems):`,
      problems.map((problem) => at(problem) + (problem.suggestion ? `: ${problem.suggestion}` : "")),
    );
  }
  return types;
}

/** One non-empty Procfile line: its process (`types`: those of the lines above), or its problem. */
function procfileLine(line: string, types: Map<string, string[]>): { name: string; argv: string[] } | LineProblem {
  const match = /^([^:\s]*)\s*:\s*(.*)$/.exec(line);
  if (!match) {
    return { column: 1, what: "expected `name: command`", suggestion: "write each process as `web: gunicorn app:app`" };
  }
  const [, name, command] = match;
  if (!PROCESS_NAME.test(name)) {
    return {
      column: 1,
      what: `${JSON.stringify(name)} is not a process name`,
      suggestion: "use lowercase letters, digits and -, starting with a letter (up to 30), e.g. `worker`",
    };
  }
  if (name === "blue" || name === "green") {
    return {
      column: 1,
      what: `the process ${name} is named after a blue-green slot`,
      suggestion: "call it something else than blue or green",
    };
  }
  if (name === "release") {
    return {
      column: 1,
      what: "a release process runs once per deploy on Heroku; here it would run for ever",
      suggestion: [
        "make it deploy.yml's hooks.preDeploy (runs in the new release before the switch) and remove it",
        "from the Procfile",
      ].join(" "),
    };
  }
  if (types.has(name)) {
    return { column: 1, what: `the process ${name} is listed twice`, suggestion: "list each process once" };
  }
  const argv = splitCommand(command);
  if ("error" in argv) {
    return {
      column: line.length - command.length + 1,
      what: `the command of ${name} ${argv.error}`, // which says how to fix it
    };
  }
  return { name, argv };
}

/**
 * The process types of a release: deploy.yml's `processes` (and `command`, which is web), or, when
 * it has no `processes`, the commit's Procfile (`procfile`: its text). A Procfile's web command
 * yields to deploy.yml's `command`.
 */
export function processTypes(deploy: DeployFile, procfile?: string, where = "Procfile"): ProcessTypes {
  const explicit = deploy.command === undefined ? undefined : toArgv(deploy.command);
  if (deploy.processes) {
    const { web, ...others } = deploy.processes;
    return {
      web: explicit ?? (web?.command === undefined ? undefined : toArgv(web.command)),
      instances: web?.instances ?? 1,
      workers: Object.entries(others).map(([type, spec]) => ({
        type,
        argv: toArgv(spec.command!),
        instances: spec.instances,
        stopTimeoutMs: spec.stopTimeout,
      })),
    };
  }
  const listed = procfile === undefined ? new Map<string, string[]>() : parseProcfile(procfile, where);
  if (deploy.type === "docker" && [...listed.keys()].some((type) => type !== "web")) {
    throw new UsageError(`${where}: docker apps run one web container (no other processes yet)`, {
      suggestion: "remove the Procfile's other processes, or give deploy.yml `processes: { web: … }`",
    });
  }
  return {
    web: explicit ?? (deploy.type === "docker" ? undefined : listed.get("web")),
    instances: 1,
    workers: [...listed].filter(([type]) => type !== "web").map(([type, argv]) => ({
      type,
      argv,
      instances: 1,
      stopTimeoutMs: DEFAULT_STOP_TIMEOUT_MS,
    })),
  };
}

/** Every worker instance of `workers`, as `{ type, instance }` (instances count from 1). */
export function workerInstances(workers: readonly Pick<WorkerSpec, "type" | "instances">[]) {
  return workers.flatMap(({ type, instances }) =>
    Array.from({ length: Math.min(instances, MAX_INSTANCES) }, (_, i) => ({ type, instance: i + 1 }))
  );
}
