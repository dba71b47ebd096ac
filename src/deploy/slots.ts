/**
 * Blue-green slots: two internal ports per app, chosen once (by setup, or by the first deploy)
 * and recorded in config.yml, never colliding with any app's ports.
 * @module
 */
import { join } from "node:path";
import { readTextOrUndefined, symlinkAtomic, writeFileAtomic } from "../fsutil.ts";
import type { Slot } from "../managers/mod.ts";
import { type AppPaths, deploymentsRoot } from "../paths.ts";
import { parse as parseYaml, parseDocument } from "../yaml.ts";
import { acquireLock } from "./lock.ts";

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

/** The link `slots/<slot>` → the release a slot runs. */
export function slotDir(paths: AppPaths, slot: Slot): string {
  return join(paths.dir, "slots", slot);
}

/** Points a slot's link at a release (atomically). */
export async function linkSlot(paths: AppPaths, slot: Slot, release: string): Promise<void> {
  await Deno.mkdir(join(paths.dir, "slots"), { recursive: true });
  await symlinkAtomic(`../releases/${release}`, slotDir(paths, slot));
}

/** Every port that config.yml files on this server name (public ports and slots). */
async function portsInUse(root: string): Promise<Set<number>> {
  const used = new Set<number>();
  for await (const entry of Deno.readDir(deploymentsRoot(root))) {
    if (!entry.isDirectory) continue;
    const text = await readTextOrUndefined(join(deploymentsRoot(root), entry.name, "config.yml"));
    try {
      const config = text ? parseYaml(text) as { port?: unknown; slots?: Record<string, unknown> } : undefined;
      for (const value of [config?.port, config?.slots?.blue, config?.slots?.green]) {
        if (typeof value === "number") used.add(value);
      }
    } catch { /* an app with a broken config.yml cannot take ports either */ }
  }
  return used;
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
    if (String(doc) !== text) await writeFileAtomic(paths.config, String(doc), 0o600); // holds notify URLs
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
