/**
 * A push refused before anything changed (an invalid deploy.yml, config.yml or `.env`, a missing
 * Dockerfile…: a usage error of prepare.ts) is still an outcome: a `refused` event in deploy.log,
 * status.json's `lastDeploy` (what serves is left as it was) and the `notify:` targets.
 * @module
 */
import { basename, resolve } from "node:path";
import { NAME_PATTERN } from "../config/names.ts";
import { loadServerConfig } from "../config/server_config.ts";
import type { UsageError } from "../errors.ts";
import { exists } from "../fsutil.ts";
import { readCommit } from "../git.ts";
import { appPaths } from "../paths.ts";
import { type Effects, isoNow } from "./context.ts";
import { readDeployDotenv, secretsOf } from "./dotenv.ts";
import { Journal } from "./journal.ts";
import { tryLock } from "./lock.ts";
import { notifyOutcome } from "./notify_outcome.ts";
import { lastDeploy } from "./outcome.ts";
import { readStatus, writeStatus } from "./status.ts";

/**
 * Records `error`, which refused the deploy of `commit` in `gitDir`, for the app whose repository
 * `gitDir` is (`/var/repos/<app>.git`). Nothing is recorded for a repository that is no set-up
 * app's, or a commit that is not there. Never throws: the refusal itself is what the pusher sees.
 */
export async function recordRefusal(
  options: { gitDir: string; commit: string },
  effects: Effects,
  error: UsageError,
): Promise<void> {
  try {
    const gitDir = resolve(options.gitDir);
    const app = basename(gitDir).replace(/\.git$/, "");
    if (!NAME_PATTERN.test(app)) return;
    const paths = appPaths(app, effects.root);
    if (await real(paths.repo) !== await real(gitDir) || !await exists(paths.config)) return;
    const commit = await readCommit(gitDir, options.commit, []).then((read) => read.sha, () => undefined);
    if (!commit) return;
    const config = await loadServerConfig(paths).catch(() => undefined);
    await Deno.mkdir(paths.logDir, { recursive: true });
    const journal = new Journal(paths.deployLog, app, commit, effects.print, undefined, effects.clock);
    journal.redact(config?.notify.map((target) => target.url) ?? []);
    if (config) journal.redact(await envSecrets(paths.envFile(config.env)));
    const message = error.message;
    await journal.record("refused", { ok: false, message });
    const last = lastDeploy("refused", "", commit, isoNow(effects.clock), 0);
    last.message = journal.clean(message);
    await saveRefusal(journal, paths.status, paths.lock, last);
    if (!config) {
      journal.say(
        `! ${paths.config} does not load, so its notify: targets cannot be read: this refusal is not notified`,
      );
      return;
    }
    await notifyOutcome(journal, config, app, last);
  } catch (failure) {
    effects.print(`! this refusal could not be recorded: ${(failure as Error).message}`);
  }
}

/** status.json's lastDeploy says refused; what serves stays as it is. Left alone while a deploy holds the lock. */
async function saveRefusal(
  journal: Journal,
  statusPath: string,
  lockPath: string,
  last: ReturnType<typeof lastDeploy>,
): Promise<void> {
  const before = await readStatus(statusPath).catch(() => undefined);
  if (!before) return; // never deployed (or unreadable): no status to add it to
  const lock = await tryLock(lockPath);
  if (!lock) return; // a deploy under way writes status.json: its outcome is the last
  try {
    const now = await readStatus(statusPath);
    if (now) await writeStatus(statusPath, { ...now, lastDeploy: last });
  } catch (error) {
    journal.say(`! cannot write ${statusPath}: ${(error as Error).message}`);
  } finally {
    lock.release();
  }
}

/** The values of `.env.<env>` to redact, when it can be read. */
async function envSecrets(path: string): Promise<string[]> {
  try {
    const dotenv = readDeployDotenv(await Deno.readTextFile(path), path);
    return secretsOf(dotenv.values, dotenv.public);
  } catch {
    return [];
  }
}

async function real(path: string): Promise<string> {
  return await Deno.realPath(path).catch(() => resolve(path));
}
