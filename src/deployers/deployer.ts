/**
 * What an app type is to deploy-paradigm (see mod.ts for the registry): how `init` recognises
 * it, how a release is built and started, what its processes get in PATH and the environment,
 * and what `init` writes for it. Pure functions of the commit's files, so plans are testable
 * without spawning.
 * @module
 */
import type { DeployFile } from "../config/schema.ts";
import { UsageError } from "../errors.ts";
import type { Cmd } from "../runner.ts";

/** What the deployer knows about a commit before extracting it. */
export interface RepoFacts {
  /** Top-level file names. */
  files: Set<string>;
  /** Parsed package.json, for node apps. */
  packageJson?: { scripts?: Record<string, string>; main?: string };
}

/** A release being built: its id and commit, and where it is extracted. */
export interface BuildTarget {
  dir: string;
  id: string;
  commit: string;
}

/** One app type. */
export interface Deployer {
  /**
   * Top-level files that identify the type, for `init`. A project is of the first type in
   * mod.ts's `DETECTION` order that has one of them.
   */
  detect: readonly string[];
  /** Files that identify the type only when no other type's file is there (see mod.ts). */
  detectLast?: readonly string[];
  /**
   * Top-level files the type reads before the release is extracted (its start command may depend
   * on them), and what it learns from their texts (those present); `where` names their source
   * (`commit abc1234`, a directory) for messages. Throws a UsageError for a file it cannot read.
   */
  reads?: {
    files: readonly string[];
    facts(texts: ReadonlyMap<string, string>, where: string): Partial<RepoFacts>;
  };
  /** The type's build commands; deploy.yml's `build` replaces them. */
  build?(facts: RepoFacts, inRelease: (argv: string[]) => Cmd): Cmd[];
  /**
   * Commands that always run after the build (docker: the image). Throws a UsageError when the
   * commit lacks what they need: before any change.
   */
  afterBuild?(deploy: DeployFile, facts: RepoFacts, release: BuildTarget): Cmd[];
  /** The start command when deploy.yml has none; undefined: nothing to run (or the image's own). */
  start?(facts: RepoFacts): string[] | undefined;
  /** Directories of the release that come first in PATH (its own tools). */
  pathDirs?: readonly string[];
  /** Variables the app's processes get. */
  env?: Readonly<Record<string, string>>;
  /** A health check is required (apps that run a server); static files need none. */
  healthCheckRequired: boolean;
  /** Keys of deploy.yml only this type takes. */
  keys?: readonly (keyof DeployFile)[];
  /** A rule the app's name must follow beyond deploy.yml's own (docker: it names an image). */
  nameRule?: {
    ok(name: string): boolean;
    /** What the name names, e.g. "a docker image and container". */
    names: string;
    /** The rule, in words. */
    rule: string;
  };
  /** What `init` writes into deploy.yml. */
  init: {
    /** The (commented) `command` line when no start command can be guessed. */
    command(containerPort: number): string;
    /** The `healthCheck` written. */
    health: string;
    /** The port the project's container listens on, read from the project in `dir`. */
    containerPort?(dir: string): Promise<number | undefined>;
    /** What a deploy misses without any of the type's `detect` files: `init --type` warns with it. */
    withoutDetected?: string;
    /**
     * The commented optional keys proper to the type, one line each (default: `build:` and
     * `processes:`); `init` adds those of every type (hooks, keepReleases, branch).
     */
    optional?: readonly string[];
  };
}

/**
 * The error of a deploy.yml without `command` whose start command cannot be guessed: `what` says
 * why, `example` is a command of the app's type.
 */
export function noCommand(what: string, example: string): UsageError {
  return new UsageError(`deploy.yml has no "command" and ${what}`, {
    suggestion: `add a command to deploy.yml, e.g. command: "${example}"`,
  });
}
