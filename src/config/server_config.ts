/**
 * An app's config.yml on this server, as every command that acts on a set-up app reads it: a
 * usage error with the fix when the app is not set up here.
 * @module
 */
import { DeployParadigmError, UsageError } from "../errors.ts";
import { readTextOrUndefined } from "../fsutil.ts";
import type { AppPaths } from "../paths.ts";
import { parseConfig } from "./load.ts";
import { type ServerConfig, serverConfigSchema } from "./schema.ts";

/** The usage error (exit 2) for an app whose config.yml does not exist. */
export function notSetUp(paths: AppPaths): UsageError {
  return new UsageError(`app "${paths.app}" is not set up on this server: ${paths.config} does not exist`, {
    suggestion: `run \`deploy-paradigm setup ${paths.app}\` on this server first ` +
      `(or write ${paths.config} with port, manager and env)`,
  });
}

/** The app's config.yml, validated (every problem with its position); {@link notSetUp} when it is missing. */
export async function loadServerConfig(paths: AppPaths): Promise<ServerConfig> {
  let text: string | undefined;
  try {
    text = await readTextOrUndefined(paths.config);
  } catch (error) {
    // A directory, no permission: named, with the file, not a stack trace.
    throw new DeployParadigmError(`cannot read ${paths.config}: ${(error as Error).message}`, { cause: error });
  }
  if (text === undefined) throw notSetUp(paths);
  return parseConfig(text, serverConfigSchema, paths.config);
}
