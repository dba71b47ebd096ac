/**
 * Extraction started before anything else: `git archive | tar -x` of the pushed commit runs
 * while the deploy engine loads its modules and validates the config, into a staging dir on the
 * deployments filesystem, which the deploy then renames into place as its release. On a big
 * repository this hides start-up entirely; on a bad config the staging dir is removed again.
 * This module is light on purpose: it is loaded before the engine.
 * @module
 */
import { join } from "node:path";
import { extractCommit } from "../git.ts";
import { deploymentsRoot, prefix } from "../paths.ts";

/** An extraction in flight. */
export interface Prefetch {
  commit: string;
  /** The staging directory, on the same filesystem as the releases. */
  dir: string;
  /** Settles when the extraction ends; rejects when it failed. */
  done: Promise<void>;
}

/** Name prefix of staging dirs in /opt/deployments, removed by cleanup when a deploy was killed. */
export const STAGING_PREFIX = ".incoming-";

/**
 * Starts extracting `commit` (a full sha) of `gitDir`. Returns undefined when that cannot help:
 * a commit given by name (it could move before it is resolved), or no deployments dir yet.
 * `root`: the server root (default: the prefix, as the commands' effects).
 */
export function prefetchCommit(gitDir: string, commit: string, root = prefix()): Prefetch | undefined {
  if (!/^([0-9a-f]{40}|[0-9a-f]{64})$/.test(commit)) return undefined;
  const dir = join(deploymentsRoot(root), `${STAGING_PREFIX}${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`);
  // 0700: no other user opens it (and keeps the directory open after it is renamed into the app's).
  const done = Deno.mkdir(dir, { mode: 0o700 }).then(() => extractCommit(gitDir, commit, dir));
  done.catch(() => {}); // observed by the deploy; never an unhandled rejection
  return { commit, dir, done };
}

/** Waits for a prefetch to end and removes its staging dir (the deploy did not use it). */
export async function discardPrefetch(prefetch: Prefetch | undefined): Promise<void> {
  if (!prefetch) return;
  await prefetch.done.catch(() => {});
  await Deno.remove(prefetch.dir, { recursive: true }).catch(() => {});
}
