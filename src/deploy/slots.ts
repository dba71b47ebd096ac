/**
 * Blue-green slots: two internal ports per app, chosen once (by setup, or by the first deploy)
 * and recorded in config.yml, never colliding with any app's ports.
 * @module
 */
import { join } from "node:path";
import { portClaims } from "../config/domains.ts";
import { readLinkOrUndefined, symlinkAtomic, writeFileAtomic } from "../fsutil.ts";
import type { Slot, SlotInstance } from "../managers/mod.ts";
import { type AppPaths, deploymentsRoot } from "../paths.ts";
import { readRoute, targetPorts } from "../proxy/routes.ts";
import { documentText, parseDocument } from "../yaml.ts";
import { acquireLock } from "./lock.ts";
import { readReleaseMeta } from "./releases.ts";

/** The ports of an app's two slots. */
export type SlotPorts = Record<Slot, number>;

/** The other slot. */
export function otherSlot(slot: Slot): Slot {
  return slot === "blue" ? "green" : "blue";
}

/** The slot whose port is `port`, if any. */
export function slotOfPort(slots: SlotPorts, port: number | undefined): Slot | undefined {
  return port === slots.blue ? "blue" : port === slots.green ? "green" : undefined;
}

/** The slot the proxy routes to, its port, and the release it runs (see {@link routedSlot}). */
export interface RoutedSlot {
  slot?: Slot;
  slotPort?: number;
  release?: string;
}

/**
 * What the proxy routes to now (route.json, whatever status.json says): the slot whose port is its
 * target's first (a slot's own port is its first instance's) by `slots` (config.yml's), that port,
 * and the release the slot's link points at when it has metadata. Empty when route.json cannot be
 * read or names no slot's port (static files, nothing routed yet).
 */
export async function routedSlot(paths: AppPaths, slots: SlotPorts | undefined): Promise<RoutedSlot> {
  const route = await readRoute(paths.dir).catch(() => undefined);
  const port = targetPorts(route)[0];
  const slot = slots ? slotOfPort(slots, port) : undefined;
  if (!slot) return {};
  const release = await slotRelease(paths, slot);
  const known = release !== undefined && await readReleaseMeta(paths, release).catch(() => undefined) !== undefined;
  return { slot, slotPort: port, ...(known ? { release } : {}) };
}

/** Web instance `instance` (from 1) of a slot: the slot itself, then `blue-2`, `blue-3`, … */
export function slotInstance(slot: Slot, instance: number): SlotInstance {
  return instance === 1 ? slot : `${slot}-${instance}`;
}

/** The link `slots/<slot>` (or `slots/<slot>-<n>` of instance n) → the release a slot runs. */
export function slotDir(paths: AppPaths, slot: SlotInstance): string {
  return join(paths.dir, "slots", slot);
}

/** The id of the release a slot's link points at (`releases/<id>`), if it has one. */
export async function slotRelease(paths: AppPaths, slot: SlotInstance): Promise<string | undefined> {
  return (await readLinkOrUndefined(slotDir(paths, slot)))?.split("/").pop();
}

/**
 * Points a slot's link (or an instance's) at a release (atomically). `slots/` is 0751: the app's
 * user passes through it to its release (a slot's working directory), nobody lists it.
 */
export async function linkSlot(paths: AppPaths, slot: SlotInstance, release: string): Promise<void> {
  await Deno.mkdir(join(paths.dir, "slots"), { recursive: true, mode: 0o751 });
  await symlinkAtomic(`../releases/${release}`, slotDir(paths, slot));
}

/**
 * The web instances a slot has links for (`slots/<slot>`, `slots/<slot>-2`, …): what a deploy
 * started there, even one killed half-way, whatever its release says. At least 1.
 */
export async function slotInstances(paths: AppPaths, slot: Slot): Promise<number> {
  let most = 1;
  for (const name of await slotLinks(paths)) {
    const n = name === slot ? 1 : Number(new RegExp(`^${slot}-(\\d+)$`).exec(name)?.[1] ?? 0);
    if (n > most) most = n;
  }
  return most;
}

/** The names of the links under `slots/` (slots and their instances). */
export async function slotLinks(paths: AppPaths): Promise<string[]> {
  const names: string[] = [];
  try {
    for await (const entry of Deno.readDir(join(paths.dir, "slots"))) names.push(entry.name);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  return names;
}

/** Removes the links of a slot's instances above `keep` (their processes are stopped). */
export async function unlinkInstances(paths: AppPaths, slot: Slot, keep: number): Promise<void> {
  const most = await slotInstances(paths, slot);
  for (let n = Math.max(keep + 1, 2); n <= most; n++) {
    await Deno.remove(slotDir(paths, slotInstance(slot, n))).catch(() => {});
  }
}

/**
 * The ports of a slot's `count` web instances: the slot's own, then the extra ones recorded in
 * config.yml `instancePorts`; those missing, or taken by a process that is not ours (`free` says
 * no), are chosen now and recorded (server-wide lock).
 */
export async function instancePorts(
  paths: AppPaths,
  root: string,
  slots: SlotPorts,
  slot: Slot,
  count: number,
  free: (port: number) => boolean = portFree,
): Promise<number[]> {
  if (count === 1) return [slots[slot]];
  return await withConfigDocument(paths, root, async (doc, used) => {
    const recorded =
      (doc.get("instancePorts") as { toJSON(): Partial<Record<Slot, number[]>> } | undefined)?.toJSON() ??
        {};
    const extra = [...(recorded[slot] ?? [])].slice(0, count - 1);
    let taken: Set<number> | undefined;
    for (let i = 0; i < count - 1; i++) {
      if (extra[i] !== undefined && free(extra[i])) continue;
      taken ??= await used();
      extra[i] = pickPort(taken);
    }
    if (JSON.stringify(extra) !== JSON.stringify(recorded[slot] ?? [])) {
      doc.set("instancePorts", doc.createNode({ ...recorded, [slot]: extra }));
    }
    return [slots[slot], ...extra];
  });
}

/** Every port that config.yml files on this server name (public ports, slots, instances). */
async function portsInUse(root: string): Promise<Set<number>> {
  return new Set((await portClaims(root)).keys());
}

/** Slot ports come from below Linux's ephemeral range (32768+), where outgoing connections take theirs. */
const SLOT_RANGE = [20000, 32000] as const;

/** True when nothing listens on 127.0.0.1:`port` (we can bind it). */
export function portFree(port: number): boolean {
  try {
    Deno.listen({ hostname: "127.0.0.1", port }).close();
    return true;
  } catch {
    return false;
  }
}

function pickPort(used: Set<number>): number {
  for (let i = 0; i < 500; i++) {
    const port = SLOT_RANGE[0] + Math.floor(Math.random() * (SLOT_RANGE[1] - SLOT_RANGE[0]));
    if (!used.has(port) && portFree(port)) return used.add(port), port;
  }
  throw new Error(`cannot find a free port for a slot in ${SLOT_RANGE.join("-")}`);
}

/** Runs `fn` on config.yml's YAML document under the server-wide slots lock; writes it back if it changed. */
async function withConfigDocument<T>(
  paths: AppPaths,
  root: string,
  fn: (doc: ReturnType<typeof parseDocument>, used: () => Promise<Set<number>>) => Promise<T>,
): Promise<T> {
  const lock = await acquireLock(join(deploymentsRoot(root), ".slots.lock"), { pid: Deno.pid, commit: "" }, () => {});
  try {
    const text = await Deno.readTextFile(paths.config);
    const doc = parseDocument(text);
    const result = await fn(doc, () => portsInUse(root));
    const updated = documentText(doc);
    if (updated !== text) await writeFileAtomic(paths.config, updated, 0o600); // holds notify URLs
    return result;
  } finally {
    lock.release();
  }
}

/**
 * Gives `slot` (which must not take traffic) a new port because its own is taken by a process
 * that is not ours; records it in config.yml. Returns the new ports.
 */
export async function moveSlot(paths: AppPaths, root: string, slots: SlotPorts, slot: Slot): Promise<SlotPorts> {
  return await withConfigDocument(paths, root, async (doc, used) => {
    const moved = { ...slots, [slot]: pickPort(await used()) };
    doc.set("slots", doc.createNode(moved));
    return moved;
  });
}

/**
 * The app's slot ports: from config.yml, or chosen now (free, and used by no app on this
 * server) and written into config.yml, keeping its comments. Server-wide lock, so two first
 * deploys cannot choose the same ports.
 */
export async function ensureSlots(paths: AppPaths, root: string, current?: SlotPorts): Promise<SlotPorts> {
  if (current) return current;
  return await withConfigDocument(paths, root, async (doc, used) => {
    const recorded = doc.get("slots") as { toJSON(): SlotPorts } | undefined;
    if (recorded) return recorded.toJSON();
    const taken = await used();
    const slots = { blue: pickPort(taken), green: pickPort(taken) };
    doc.set("slots", doc.createNode(slots));
    return slots;
  });
}
