/**
 * A push refused before anything changed (an invalid deploy.yml, config.yml or `.env`, a missing
 * Dockerfile…: a usage error of prepare.ts) is still an outcome the `notify:` targets hear of (a CI
 * push refused is not silent). Nothing is written: bad input changes nothing on disk (deploy.log
 * and status.json keep describing the last deploy that ran).
 * @module
 */
import { basename, resolve } from "node:path";
import { NAME_PATTERN } from "../config/names.ts";
import { MAX_CONFIG_BYTES } from "../config/load.ts";
import { loadServerConfig } from "../config/server_config.ts";
import type { UsageError } from "../errors.ts";
import { exists } from "../fsutil.ts";
import { readCommit } from "../git.ts";
import { appPaths } from "../paths.ts";
import { isMap, isScalar, parseDocument } from "../yaml.ts";
import { type Effects, isoNow } from "./context.ts";
import { snapshotSecrets } from "./dotenv.ts";
import { Journal } from "./journal.ts";
import { notifyOutcome } from "./notify_outcome.ts";
import { lastDeploy } from "./outcome.ts";

/**
 * Notifies `error`, which refused the deploy of `commit` in `gitDir`, for the app whose repository
 * `gitDir` is (`/var/repos/<app>.git`). Nothing for a repository that is no set-up app's, or a
 * commit that is not there. Never throws: the refusal itself is what the pusher sees.
 */
export async function notifyRefusal(
  options: { gitDir: string; commit: string },
  effects: Effects,
  error: UsageError,
): Promise<void> {
  try {
    const gitDir = resolve(options.gitDir);
    const read = await readCommit(gitDir, options.commit, ["deploy.yml"]).catch(() => undefined);
    if (!read) return;
    const commit = read.sha;
    // The app is the one deploy.yml names when it can be read that far, else the repository's own:
    // either way one whose repository this is, and set up (its config.yml is there).
    const named = nameIn(read.blobs.get("deploy.yml"));
    let paths;
    for (const app of new Set([named, basename(gitDir).replace(/\.git$/, "")])) {
      if (app === undefined || !NAME_PATTERN.test(app)) continue;
      const candidate = appPaths(app, effects.root);
      if (await real(candidate.repo) === await real(gitDir) && await exists(candidate.config)) {
        paths = candidate;
        break;
      }
    }
    if (!paths) return;
    const app = paths.app;
    const config = await loadServerConfig(paths).catch(() => undefined);
    if (!config) {
      effects.print(
        `! ${paths.config} does not load, so its notify: targets cannot be read: this refusal is not notified`,
      );
      return;
    }
    const journal = new Journal(paths.deployLog, app, commit, effects.print, undefined, effects.clock);
    journal.redact(config.notify.map((target) => target.url));
    journal.redact(await envSecrets(paths.envFile(config.env)));
    const last = lastDeploy("refused", "", commit, isoNow(effects.clock), 0);
    // The notification carries the start of a long list of problems (the push shows them all).
    const clean = journal.clean(error.message);
    last.message = clean.length > 1000 ? `${clean.slice(0, 999)}…` : clean;
    await notifyOutcome(journal, config, app, last, { record: false });
  } catch (failure) {
    effects.print(`! this refusal could not be notified: ${(failure as Error).message}`);
  }
}

/**
 * The `name` of a deploy.yml, however wrong the rest of it is; undefined when it cannot be read.
 * Read from the document's top mapping as parsed, never turned into values (a hostile file's
 * nested keys or aliases would take exponential time: see config/load.ts).
 */
function nameIn(bytes: Uint8Array | undefined): string | undefined {
  if (!bytes || bytes.length > MAX_CONFIG_BYTES) return undefined; // what parseConfig refuses to read is not read here either
  try {
    const doc = parseDocument(new TextDecoder().decode(bytes));
    if (!isMap(doc.contents)) return undefined;
    const pair = doc.contents.items.find((item) => isScalar(item.key) && item.key.value === "name");
    return pair && isScalar(pair.value) && typeof pair.value.value === "string" ? pair.value.value : undefined;
  } catch {
    return undefined;
  }
}

/** The values of `.env.<env>` to redact, when it can be read (its short secrets too: they may be why it is refused). */
async function envSecrets(path: string): Promise<string[]> {
  try {
    return snapshotSecrets(await Deno.readTextFile(path), path, false);
  } catch {
    return [];
  }
}

async function real(path: string): Promise<string> {
  return await Deno.realPath(path).catch(() => resolve(path));
}
