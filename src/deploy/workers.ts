/**
 * Worker processes (deploy.yml `processes` other than web, or a Procfile's): once a release serves
 * (after its switch and watch window), each of its worker instances is restarted in `current`:
 * the old one gets SIGTERM and its stopTimeout to finish the job in hand, then SIGKILL, then the
 * new release's starts. Instances the release no longer has are stopped. A deploy that fails
 * before it serves never gets here, so the running workers are never touched by it; `rollback`
 * calls {@link syncWorkers} for the release it goes back to.
 *
 * Instances restart one at a time, not all at once beside the new ones: a worker's job is never
 * run by two releases at once, and no more than `instances` of a type ever run.
 *
 * What runs is recorded in `<appDir>/workers.json` (`[{ "type", "instances" }]`), so a later
 * deploy stops what an earlier one started even when the release in between is gone.
 * @module
 */
import { join } from "node:path";
import { NAME_PATTERN } from "../config/names.ts";
import { readTextOrUndefined, writeFileAtomic } from "../fsutil.ts";
import { deploymentsRoot } from "../paths.ts";
import type { AppProcess, WorkerId } from "../managers/mod.ts";
import { displayArgv } from "../runner.ts";
import type { SwitchContext } from "./context.ts";
import { workerInstances, type WorkerSpec } from "./processes.ts";
import type { ReleaseMeta } from "./releases.ts";
import { processFor, resolveProgram } from "./runtime.ts";
import { RUNNING_STATES } from "./process_list.ts";

/** The file that records the worker types running now. */
const WORKERS_FILE = "workers.json";

type Recorded = Pick<WorkerSpec, "type" | "instances">[];

/** The worker types running now, as the last sync recorded them ([] when none). */
export async function runningWorkers(appDir: string): Promise<Recorded> {
  const text = await readTextOrUndefined(join(appDir, WORKERS_FILE));
  if (text === undefined) return [];
  try {
    const value = JSON.parse(text);
    return Array.isArray(value)
      ? value.filter((w) => typeof w?.type === "string" && Number.isInteger(w?.instances))
      : [];
  } catch {
    return [];
  }
}

/** What every app's own names may start with, whatever its deploy.yml: its blue-green slots and its cron timers. */
const OWN_KINDS = ["blue", "green", "cron"];

/**
 * Another app on the server whose process or unit names the processes of `app` would take:
 * worker instances are `<app>-<type>-<n>` (pm2) and `<app>-<type>@…` (systemd), web slots
 * `<app>-blue` and `<app>-blue-<n>`, cron timers `<app>-cron-<job>`, which an app named
 * `<app>-<type>`, `<app>-<type>-1`, `<app>-green` or `<app>-blue-2` has too. Also, the other way
 * round, an app whose workers, slots or timers would take `app`'s names. Returns a line saying
 * which, or undefined.
 */
export async function nameClash(root: string, app: string, types: readonly string[]): Promise<string | undefined> {
  const prefixes = (owner: string, kinds: readonly string[]) =>
    [...kinds, ...OWN_KINDS].map((kind) => `${owner}-${kind}`);
  const takes = (name: string, prefix: string) => name === prefix || name.startsWith(`${prefix}-`);
  const ours = prefixes(app, types);
  const base = deploymentsRoot(root);
  const others: string[] = [];
  try {
    for await (const entry of Deno.readDir(base)) {
      if (entry.isDirectory && entry.name !== app && NAME_PATTERN.test(entry.name)) others.push(entry.name);
    }
  } catch { /* no apps yet */ }
  for (const other of others.sort()) {
    const taken = ours.find((prefix) => takes(other, prefix));
    if (taken) return `the app "${other}" has names that ${app}'s processes (${taken}…) would take`;
    const theirs = prefixes(other, (await runningWorkers(join(base, other))).map((w) => w.type));
    const took = theirs.find((prefix) => takes(app, prefix));
    if (took) return `the app "${other}" runs processes named ${took}…, which ${app}'s own names would take`;
  }
  return undefined;
}

/** Whether a sync has anything to do: the release has workers, or some run. */
export async function hasWorkers(appDir: string, meta: ReleaseMeta): Promise<boolean> {
  return (meta.workers?.length ?? 0) > 0 || (await runningWorkers(appDir)).length > 0;
}

/** The process of one worker instance of `meta`'s release (program resolved through `current`). */
export async function workerProcess(
  ctx: Pick<SwitchContext, "paths" | "config">,
  meta: ReleaseMeta,
  spec: WorkerSpec,
  instance: number,
  secrets: Record<string, string>,
  resolve = true,
): Promise<AppProcess> {
  const { paths, config } = ctx;
  const program = resolve ? await resolveProgram(spec.argv[0], paths.release(meta.id), paths.current) : spec.argv[0];
  const base = processFor(paths, config, meta.type, [program, ...spec.argv.slice(1)], secrets);
  const { PORT: _, ...env } = base.env; // a worker has no port
  return {
    ...base,
    env: { ...env, PROCESS_TYPE: spec.type, INSTANCE: String(instance) },
    worker: { type: spec.type, instance, stopTimeoutMs: spec.stopTimeoutMs },
  };
}

/** The worker instances running (`before`) that `workers` do not have: a sync stops them. */
export function workersGone(before: Recorded, workers: readonly Pick<WorkerSpec, "type" | "instances">[]): WorkerId[] {
  const key = (w: WorkerId) => `${w.type}@${w.instance}`;
  const keep = new Set(workerInstances(workers).map(key));
  return workerInstances(before).filter((w) => !keep.has(key(w)));
}

/**
 * Makes the workers running match `meta`'s: restarts each of its instances, then stops those it
 * does not have. Returns the line for the journal. Throws on the first instance that fails to
 * start (the ones before it run the new release; the record then says what was asked).
 */
export async function syncWorkers(
  ctx: Pick<SwitchContext, "paths" | "config" | "runner" | "manager" | "root" | "journal">,
  meta: ReleaseMeta,
  secrets: Record<string, string>,
): Promise<string> {
  const { paths, runner, manager, root } = ctx;
  const workers = meta.workers ?? [];
  const before = await runningWorkers(paths.dir);
  const wanted = workerInstances(workers);
  const record = async (list: Recorded) =>
    await writeFileAtomic(join(paths.dir, WORKERS_FILE), JSON.stringify(list) + "\n");
  // What is asked is recorded first: a sync killed half-way is redone in full by the next one.
  await record(mergeRecords(before, workers));
  for (const spec of workers) {
    for (let instance = 1; instance <= spec.instances; instance++) {
      await runner.apply(manager.restart(await workerProcess(ctx, meta, spec, instance, secrets)));
    }
  }
  const gone = workersGone(before, workers);
  for (const worker of gone) await runner.apply(manager.stop(paths.app, root, paths.dir, undefined, worker));
  await record(workers.map(({ type, instances }) => ({ type, instances })));
  await expectRunning(ctx, wanted);
  const started = workers.map((w) => `${w.type} ×${w.instances} (${displayArgv(w.argv)})`).join(", ");
  // Named as the manager names them (pm2 `<app>-<type>-<n>`, systemd `<app>-<type>@<n>`).
  const stopped = gone.length ? `; stopped ${gone.map((w) => manager.nameOf(paths.app, undefined, w)).join(", ")}` : "";
  return `${started ? `workers: ${started}` : "no workers"}${stopped}`;
}

/** How long a started worker must keep running to count as started (a crash at start-up shows by then). */
const SETTLE_MS = 1500;

/** Throws when a worker instance does not run {@link SETTLE_MS} after the sync (a crash loop, a bad script). */
async function expectRunning(ctx: Pick<SwitchContext, "paths" | "runner" | "manager">, wanted: WorkerId[]) {
  const { manager, paths } = ctx;
  if (!wanted.length || !manager.states) return;
  await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
  const names = wanted.map((w) => manager.nameOf(paths.app, undefined, w));
  const states = await manager.states(ctx.runner, paths.root, names);
  const down = names.flatMap((name) => {
    const state = states.get(name);
    return state && RUNNING_STATES.has(state.state) && state.restarts === 0
      ? []
      : [`${name} ${state ? `${state.state}, ${state.restarts} restarts` : "missing"}`];
  });
  if (down.length) {
    throw new Error(`not running ${SETTLE_MS / 1000}s after its start: ${down.join("; ")} (see ${paths.errorLog})`);
  }
}

/** Both lists' types, each with the larger count: everything that may run while a sync is under way. */
function mergeRecords(a: Recorded, b: Recorded): Recorded {
  const merged = new Map<string, number>();
  for (const { type, instances } of [...a, ...b]) merged.set(type, Math.max(merged.get(type) ?? 0, instances));
  return [...merged].map(([type, instances]) => ({ type, instances }));
}
