/**
 * Release directories: ids, the `current` link, per-release metadata, and cleanup.
 * @module
 */
import { join } from "node:path";
import { DeployParadigmError } from "../errors.ts";
import { type AppPaths, deploymentsRoot } from "../paths.ts";
import { STAGING_PREFIX } from "./prefetch.ts";
import { exists, readJsonObject, readLinkOrUndefined, type Shape, writeFileAtomic } from "../fsutil.ts";
import type { HealthCheck } from "../config/schema.ts";
import type { WorkerSpec } from "./processes.ts";
import type { CronJob } from "../cron/job.ts";

const ID = /^\d{8}-\d{6}-\d{3}$/;

/** Written into each release: what it takes to run it again (rollback). */
export interface ReleaseMeta {
  id: string;
  commit: string;
  type: string;
  /** The start command before path resolution; undefined for static and docker apps. */
  argv?: string[];
  /** A docker app's image, its container port, and deploy.yml's command (instead of the image's CMD). */
  image?: string;
  containerPort?: number;
  /** Static apps: the directory of the release the proxy serves (deploy.yml `root:`; default the release). */
  root?: string;
  containerCommand?: string[];
  healthCheck?: HealthCheck;
  /** Web processes when more than one (each on its own port in its slot, balanced by the proxy). */
  instances?: number;
  /** Its worker process types (started once it serves; see deploy/workers.ts). */
  workers?: WorkerSpec[];
  /** Its scheduled jobs (run by timers or our scheduler while it serves; see src/cron/). */
  cron?: CronJob[];
  createdAt: string;
  /** The deploy branch its deploy.yml names: going back to it makes it the deploy branch again (absent in older releases). */
  branch?: string;
  /** Took traffic, then was rolled back from: `rollback` skips it. */
  bad?: boolean;
  /** Built but never served (yet): a deploy killed before its switch leaves it; cleanup removes it. */
  pending?: boolean;
}

/** Marks a release as serving (no longer pending). */
export async function markServed(paths: AppPaths, id: string): Promise<void> {
  const meta = await readReleaseMeta(paths, id);
  if (meta?.pending) {
    const { pending: _, ...served } = meta;
    await writeReleaseMeta(paths, served);
  }
}

/** Whether a release can be gone back to: complete, served, not rolled back from. */
export async function usableRelease(paths: AppPaths, id: string): Promise<boolean> {
  const meta = await readReleaseMeta(paths, id).catch(() => undefined);
  return meta !== undefined && !meta.bad && !meta.pending;
}

/** Whether a release runs a process or a container (a static one runs nothing). */
export function runsProcess(meta: ReleaseMeta): boolean {
  return meta.argv !== undefined || meta.image !== undefined;
}

/**
 * Marks a release bad (rolled back from: `rollback` skips it) or, with false, good again (gone back
 * to by name). A bad one took traffic (a canary's share at least): it is no longer pending.
 */
export async function setBad(paths: AppPaths, id: string, bad: boolean): Promise<void> {
  const meta = await readReleaseMeta(paths, id);
  if (!meta || ((meta.bad === true) === bad && !(bad && meta.pending))) return;
  const { bad: _, ...rest } = meta;
  if (!bad) return await writeReleaseMeta(paths, rest);
  const { pending: __, ...served } = rest;
  await writeReleaseMeta(paths, { ...served, bad });
}

/** File name of the metadata inside a release. */
export const RELEASE_META = ".deploy-paradigm.json";

/** Release id of time `ms`: `YYYYMMDD-HHMMSS-mmm` in UTC, sortable as text. */
export function releaseIdAt(ms: number): string {
  const iso = new Date(ms).toISOString(); // 2026-11-29T05:00:33.123Z
  return `${iso.slice(0, 10).replaceAll("-", "")}-${iso.slice(11, 19).replaceAll(":", "")}-${iso.slice(20, 23)}`;
}

/** Existing release ids, oldest first. */
export async function listReleases(paths: AppPaths): Promise<string[]> {
  const ids: string[] = [];
  try {
    for await (const entry of Deno.readDir(paths.releases)) {
      if (entry.isDirectory && ID.test(entry.name)) ids.push(entry.name);
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  return ids.sort();
}

/** A new id, later than every existing one, even for two deploys in the same millisecond. Call under the lock. */
export async function newReleaseId(paths: AppPaths, now = Date.now()): Promise<string> {
  const last = (await listReleases(paths)).at(-1);
  const m = last && /^(\d{4})(\d\d)(\d\d)-(\d\d)(\d\d)(\d\d)-(\d{3})$/.exec(last);
  // After the newest one, in one step (a release from a clock once set years ahead must not mean a loop of years).
  const after = m ? Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6], +m[7]) + 1 : -Infinity;
  const ms = Math.max(now, after);
  const id = releaseIdAt(Number.isFinite(ms) ? ms : now);
  if (last !== undefined && id <= last) {
    throw new DeployParadigmError(`${join(paths.releases, last)} is not a valid release time`, {
      suggestion: "move that directory out of releases/ (release ids are the UTC time they were made)",
    });
  }
  return id;
}

/** The release `current` points at, if any. */
export async function currentRelease(paths: AppPaths): Promise<string | undefined> {
  const target = await readLinkOrUndefined(paths.current);
  return target?.split("/").filter(Boolean).pop();
}

/** The fields of a release's metadata its readers rely on (see {@link Shape}). */
const META_SHAPE: Shape = [
  ["id", "string"],
  ["commit", "string"],
  ["type", "string"],
  ["createdAt", "string"],
  ["argv", "strings?"],
  ["containerCommand", "strings?"],
  ["image", "string?"],
  ["branch", "string?"],
  ["root", "string?"],
  ["containerPort", "number?"],
  ["instances", "number?"],
  ["healthCheck", "object?"],
  ["workers", "array?"],
  ["cron", "array?"],
  ["bad", "boolean?"],
  ["pending", "boolean?"],
];

/** Reads a release's metadata; one that is not JSON, or not of its shape, is an error naming it and the field. */
export async function readReleaseMeta(paths: AppPaths, id: string): Promise<ReleaseMeta | undefined> {
  const remedy = `deploys write this file: restore it from a backup, or remove the release ${paths.release(id)} ` +
    `if no slot serves it`;
  const check = { shape: META_SHAPE, what: "the metadata of a release written by a deploy" };
  return await readJsonObject(join(paths.release(id), RELEASE_META), remedy, check) as ReleaseMeta | undefined;
}

/** Writes a release's metadata. */
export async function writeReleaseMeta(paths: AppPaths, meta: ReleaseMeta): Promise<void> {
  await writeFileAtomic(join(paths.release(meta.id), RELEASE_META), JSON.stringify(meta, null, 2) + "\n", 0o600);
}

/**
 * Deletes releases beyond the newest `keep`, never one in `protect` (current, previous, the one
 * deploying) or in a slot, and what interrupted deploys left: releases never served or never
 * completed, extractions. Releases rolled back from (bad) go first: the newest `keep` that
 * `rollback` can go back to are kept, bad ones only in the room left. Returns what was removed.
 */
export async function cleanupReleases(
  paths: AppPaths,
  keep: number,
  protect: (string | undefined)[],
): Promise<string[]> {
  const ids = await listReleases(paths);
  // Also whatever a blue-green slot still runs (a stop that failed leaves it warm).
  const inSlots = await Promise.all(
    ["blue", "green"].map((slot) => readLinkOrUndefined(join(paths.dir, "slots", slot)).catch(() => undefined)),
  );
  const slotReleases = inSlots.map((target) => target?.split("/").pop());
  const pinned = new Set([...protect, ...slotReleases].filter((p): p is string => !!p));
  const leftovers = new Set<string>();
  const bad = new Set<string>();
  for (const id of ids) {
    if (pinned.has(id)) continue;
    const meta = await readReleaseMeta(paths, id).catch(() => undefined);
    if (!meta || meta.pending) leftovers.add(id);
    else if (meta.bad) bad.add(id);
  }
  // The newest `keep` that rollback can go back to first; rolled-back-from ones only in the room left.
  const complete = ids.filter((id) => !leftovers.has(id));
  const good = complete.filter((id) => !bad.has(id)).slice(-keep);
  const room = keep - good.length;
  const kept = new Set([...good, ...(room > 0 ? complete.filter((id) => bad.has(id)).slice(-room) : []), ...pinned]);
  const removed: string[] = [];
  for (const id of ids) {
    if (kept.has(id)) continue;
    await Deno.remove(paths.release(id), { recursive: true });
    removed.push(id);
  }
  for await (const entry of Deno.readDir(paths.releases)) {
    if (entry.name.startsWith(".") && entry.name.endsWith(".partial")) {
      await Deno.remove(join(paths.releases, entry.name), { recursive: true });
      removed.push(entry.name);
    }
  }
  return [...removed, ...await removeStaleStaging(paths.root)];
}

/**
 * Staging dirs of prefetches whose deploy died: its process is gone (where /proc tells), or, where
 * it does not, the dir is older than a day. A live deploy's dir is never touched, however long it
 * waited for its lock.
 */
async function removeStaleStaging(serverRoot: string): Promise<string[]> {
  const removed: string[] = [];
  const root = deploymentsRoot(serverRoot);
  const procfs = await exists("/proc/self");
  for await (const entry of Deno.readDir(root)) {
    if (!entry.name.startsWith(STAGING_PREFIX)) continue;
    const path = join(root, entry.name);
    const pid = Number(entry.name.slice(STAGING_PREFIX.length).split("-")[0]);
    const info = await Deno.lstat(path).catch(() => undefined);
    const dead = procfs
      ? pid !== Deno.pid && !(await exists(`/proc/${pid}`))
      : info?.mtime && Date.now() - info.mtime.getTime() > 86_400_000;
    if (dead) {
      await Deno.remove(path, { recursive: true }).catch(() => {});
      removed.push(entry.name);
    }
  }
  return removed;
}
