/**
 * Constants of the config files that light modules (the git hook's path) need without loading
 * the schema library.
 * @module
 */
import { UsageError } from "../errors.ts";

/** App names: also used as directory, unit and process names. */
export const NAME_PATTERN = /^[a-z0-9][a-z0-9-]{0,62}$/;

/** Throws a UsageError (exit 2) when `app` is not a valid app name, saying how one is written. */
export function requireAppName(app: string): void {
  if (NAME_PATTERN.test(app)) return;
  throw new UsageError(`"${app}" is not a valid app name`, {
    suggestion: "app names are 1-63 lowercase letters, digits or dashes, starting with a letter or digit",
  });
}

/** The tool's own services (deploy-paradigm-proxy, deploy-paradigm-cron) are named so: no app name starts with it. */
export const RESERVED_NAME = "deploy-paradigm";

/** Why app name `name` is reserved, or undefined when it is not. */
export function reservedName(name: string): string | undefined {
  if (name !== RESERVED_NAME && !name.startsWith(`${RESERVED_NAME}-`)) return undefined;
  return `is reserved: the tool's own services are named ${RESERVED_NAME}-…`;
}

/**
 * Whether `[first, second]` reads as an app and a word swapped (`maintenance on web`): `first` is
 * one of `words`, and `second` is an app set up (its config.yml, at `configOf`) while `first` is
 * not (an app may be named `on`).
 */
export async function swappedWords(
  [first, second]: string[],
  words: readonly string[],
  configOf: (app: string) => string,
): Promise<boolean> {
  if (!words.includes(first) || words.includes(second) || !NAME_PATTERN.test(second ?? "")) return false;
  const setUp = (app: string) => Deno.stat(configOf(app)).then(() => true, () => false);
  return await setUp(second) && !(await setUp(first));
}
