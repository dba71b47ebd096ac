/**
 * What each app type means (see src/deployers/): how a release is built and how the app starts
 * when deploy.yml has no `command`. Pure functions of the commit's files, so plans are testable
 * without spawning.
 * @module
 */
import { toArgv } from "../config/argv.ts";
import type { DeployFile } from "../config/schema.ts";
import { DEPLOYERS, type RepoFacts } from "../deployers/mod.ts";
import type { Cmd } from "../runner.ts";

export type { RepoFacts };

/**
 * The build commands for release `release.id` (of `release.commit`) in `releaseDir`: deploy.yml's
 * `build`, or else the type's own; then what the type always builds (a docker app's image).
 */
export function buildPlan(
  deploy: DeployFile,
  facts: RepoFacts,
  releaseDir: string,
  release: { id: string; commit: string } = { id: "new", commit: "" },
): Cmd[] {
  const deployer = DEPLOYERS[deploy.type];
  const inRelease = (argv: string[]): Cmd => ({ argv, cwd: releaseDir });
  const after = deployer.afterBuild?.(deploy, facts, { dir: releaseDir, ...release }) ?? []; // refuses first
  const own = deploy.build ? [inRelease(toArgv(deploy.build))] : deployer.build?.(facts, inRelease) ?? [];
  return [...own, ...after];
}

/** The argv that starts the app, or undefined for a type with nothing to run (static) or its own (docker). */
export function startArgv(deploy: DeployFile, facts: RepoFacts): string[] | undefined {
  if (deploy.command) return toArgv(deploy.command);
  return DEPLOYERS[deploy.type].start?.(facts);
}
