/**
 * `init`: writes a commented deploy.yml for the project in the current directory.
 * @module
 */
import { basename, dirname, join, relative, resolve } from "node:path";
import template from "../templates/deploy.yml" with { type: "text" };
import { type DeployFile, NAME_PATTERN } from "./config/schema.ts";
import { reservedName } from "./config/names.ts";
import { type RepoFacts, startArgv } from "./deploy/app_type.ts";
import { parseProcfile } from "./deploy/processes.ts";
import { APP_TYPES, type AppType, DEPLOYERS, DETECTION } from "./deployers/mod.ts";
import { UsageError } from "./errors.ts";
import { ifExists } from "./fsutil.ts";
import { displayArgv } from "./runner.ts";
import { SCHEMA_URL } from "./version.ts";

/**
 * App-type detectors, in order: the first whose file exists wins. From the deployers, in
 * {@link DETECTION} order: every type's `detect` files, then every type's `detectLast` ones.
 */
export const DETECTORS: readonly { type: AppType; files: readonly string[] }[] = [
  ...DETECTION.map((type) => ({ type, files: DEPLOYERS[type].detect })),
  ...DETECTION.flatMap((type) => DEPLOYERS[type].detectLast ? [{ type, files: DEPLOYERS[type].detectLast! }] : []),
];

/** The type of a project with these top-level files, if any detector matches. */
export function detectType(files: Set<string>): AppType | undefined {
  return DETECTORS.find((d) => d.files.some((f) => files.has(f)))?.type;
}

/** An app name derived from a folder name. */
export function nameFromFolder(folder: string): string {
  const name = folder.toLowerCase().replace(/[^a-z0-9-]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 63);
  return NAME_PATTERN.test(name) && !reservedName(name) ? name : "app";
}

/** Options of `init`. */
export interface InitOptions {
  dir: string;
  name?: string;
  type?: string;
  force?: boolean;
}

/** The template's optional keys of a type that builds and runs processes (a deployer's `init.optional` replaces them). */
const OPTIONAL_BUILD = [
  "# build: npm run build               # replaces the type's build step",
  "# processes:                         # more than one process (instead of command:)",
  "#   web: { command: python app.py, instances: 2 }        # behind the proxy, each on its own port",
  "#   worker: { command: python worker.py, stopTimeout: 60s } # restarted after each switch (SIGTERM)",
];

/** The template's optional keys of every type. */
const OPTIONAL_COMMON = [
  "# hooks:",
  "#   preDeploy: ./scripts/migrate.sh  # runs in the new release before the switch; failure aborts",
  "#   postDeploy: ./scripts/notify.sh  # runs after a healthy deploy; failure is only reported",
  "# keepReleases: 3                    # releases kept for rollback",
  "# branch: main                       # pushes to other branches deploy nothing",
];

/** The deploy.yml text for a project. */
export function renderDeployYml(
  name: string,
  type: AppType,
  facts: RepoFacts,
  containerPort = 8000,
  procfile?: ReadonlyMap<string, string[]>,
): string {
  const { init } = DEPLOYERS[type];
  let command: string;
  const web = type === "docker" ? undefined : procfile?.get("web");
  if (web) command = `# command: (the Procfile's web process: ${displayArgv(web)})`;
  else {
    try {
      const argv = startArgv({ name, type } as DeployFile, facts);
      command = argv ? `command: ${displayArgv(argv)}` : init.command(containerPort);
    } catch {
      command = init.command(containerPort);
    }
  }
  const listed = [...procfile?.keys() ?? []];
  const processes = listed.length
    ? `# Processes: the Procfile's (${listed.join(", ")}), as long as deploy.yml has no processes:.\n`
    : "";
  const values: Record<string, string> = {
    __SCHEMA_URL__: SCHEMA_URL,
    __NAME__: name,
    __TYPES__: APP_TYPES.join(" | "),
    __TYPE__: type,
    __HEALTH__: init.health,
    __COMMAND__: command,
    __PROCESSES__: processes,
    __OPTIONAL__: [...init.optional ?? OPTIONAL_BUILD, ...OPTIONAL_COMMON].join("\n"),
  };
  return template.replace(/__[A-Z_]+__/g, (key) => values[key] ?? key);
}

/**
 * Refuses a directory below the top of a git work tree: a deploy reads deploy.yml (and detects the
 * type from the files) at the top of the repository, so one written below it would be ignored.
 */
async function refuseSubdirectory(dir: string): Promise<void> {
  if (await ifExists(Deno.lstat(join(dir, ".git")))) return; // the top of a work tree (.git: a directory or a file)
  for (let at = resolve(dir), up = dirname(at); up !== at; at = up, up = dirname(at)) {
    if (await ifExists(Deno.lstat(join(up, ".git")))) {
      throw new UsageError(
        `${dir} is inside the git repository ${up}, whose deploys read deploy.yml at its top, not ${
          relative(up, resolve(dir))
        }/deploy.yml`,
        {
          suggestion: `run init in ${up} (one app per repository: its Dockerfile, package.json… there too); ` +
            `if ${dir} is a project of its own, \`git init\` there first`,
        },
      );
    }
  }
}

/** Writes deploy.yml into `options.dir`. Returns the path and what was chosen. */
export async function init(
  options: InitOptions,
): Promise<{ path: string; name: string; type: AppType; warnings: string[] }> {
  await refuseSubdirectory(options.dir);
  const path = join(options.dir, "deploy.yml");
  const there = await ifExists(Deno.lstat(path));
  if (there && !there.isFile) {
    // Not even with --force: writing through a link, or over a directory, is never what was meant.
    const kind = there.isDirectory ? "a directory" : there.isSymlink ? "a symbolic link" : "not a regular file";
    throw new UsageError(`${path} is ${kind}${kind.startsWith("not") ? "" : ", not a file"}`, {
      suggestion: "remove or rename it, then run init again",
    });
  }
  if (!options.force && there) {
    throw new UsageError(`${path} already exists`, { suggestion: "use --force to overwrite it" });
  }
  const files = new Set<string>();
  for await (const entry of Deno.readDir(options.dir)) files.add(entry.name);
  const name = options.name ?? nameFromFolder(basename(options.dir));
  if (!NAME_PATTERN.test(name)) {
    throw new UsageError(`--name "${name}" is not a valid app name`, {
      suggestion: "use 1-63 lowercase letters, digits or dashes, starting with a letter or digit",
    });
  }
  const reserved = reservedName(name);
  if (reserved) throw new UsageError(`--name "${name}" ${reserved}`, { suggestion: "choose another name" });
  if (options.type !== undefined && !(APP_TYPES as readonly string[]).includes(options.type)) {
    throw new UsageError(`--type must be one of ${APP_TYPES.join(", ")} (got "${options.type}")`);
  }
  const type = (options.type as AppType | undefined) ?? detectType(files);
  const nameRule = type && DEPLOYERS[type].nameRule;
  if (nameRule && !nameRule.ok(name)) {
    throw new UsageError(`"${name}" cannot name ${nameRule.names}`, { suggestion: `${nameRule.rule}: pass --name` });
  }
  if (!type) {
    // Every file detection looks for, in its order (the types' `detect`, then their `detectLast`).
    const signs = DETECTORS.flatMap((detector) => detector.files);
    throw new UsageError(
      `cannot tell the app type of ${options.dir}: no ${signs.slice(0, -1).join(", ")} or ${signs.at(-1)}`,
      { suggestion: `pass --type ${APP_TYPES.join("|")}` },
    );
  }
  const facts: RepoFacts = { files };
  const reads = DEPLOYERS[type].reads;
  if (reads) {
    const texts = new Map<string, string>();
    for (const file of reads.files.filter((file) => files.has(file))) {
      const text = await Deno.readTextFile(join(options.dir, file)).catch(() => undefined);
      if (text !== undefined) texts.set(file, text);
    }
    try {
      Object.assign(facts, reads.facts(texts, options.dir));
    } catch { /* a file it cannot read (a broken package.json) only loses the command guess */ }
  }
  const containerPort = await DEPLOYERS[type].init.containerPort?.(options.dir);
  const procfileText = files.has("Procfile")
    ? await Deno.readTextFile(join(options.dir, "Procfile")).catch(() => undefined)
    : undefined;
  const procfile = procfileText === undefined ? undefined : parseProcfile(procfileText, join(options.dir, "Procfile"));
  await Deno.writeTextFile(path, renderDeployYml(name, type, facts, containerPort, procfile));
  // A type given with --type may lack what its deploy uses (detection never picks such a type).
  const { detect, init: { withoutDetected } } = DEPLOYERS[type];
  const missing = withoutDetected !== undefined && !detect.some((file) => files.has(file));
  const warnings = missing ? [`${options.dir} has no ${detect.join(" or ")}: ${withoutDetected}`] : [];
  return { path, name, type, warnings };
}
