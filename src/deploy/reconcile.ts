/**
 * Crash safety: a marker file says a deploy is under way (under the lock). Finding one means the
 * last deploy was killed (SIGKILL, a power cut): it is recorded as interrupted, and status.json
 * and `current` are brought back in line with what serves, before this deploy starts.
 * @module
 */
import { join } from "node:path";
import { managerNamed } from "../managers/mod.ts";
import { readTextOrUndefined, symlinkAtomic, writeFileAtomic } from "../fsutil.ts";
import { type DeployContext, isoNow } from "./context.ts";
import { interruptedStatus, interruptionMessage, saveStatus } from "./outcome.ts";
import { currentRelease, markServed, readReleaseMeta } from "./releases.ts";
import { routedSlot } from "./slots.ts";
import { readStatus } from "./status.ts";
import { strategyOf } from "./strategies/mod.ts";

/** The marker of a deploy under way, in the app's directory. */
const MARKER = ".deploying";

/** Runs `deploy` with the marker in place; first reconciles after a killed deploy whose marker is found. */
export async function withDeployMarker<T>(ctx: DeployContext, deploy: () => Promise<T>): Promise<T> {
  const marker = join(ctx.paths.dir, MARKER);
  const found = await readTextOrUndefined(marker);
  if (found !== undefined) await reconcile(ctx, found);
  const since = isoNow(ctx.clock);
  await writeFileAtomic(marker, JSON.stringify({ commit: ctx.plan.commit, pid: Deno.pid, since }) + "\n");
  try {
    return await deploy();
  } finally {
    await Deno.remove(marker).catch(() => {});
  }
}

/** After a killed deploy: `current` follows what the proxy serves; status.json says what serves. */
async function reconcile(ctx: DeployContext, found: string): Promise<void> {
  const { paths, config, journal } = ctx;
  let killed: { commit?: string; pid?: number; since?: string } = {};
  try {
    killed = JSON.parse(found);
  } catch { /* a marker cut short: the kill came while it was written */ }
  const routed = (await routedSlot(paths, config.slots)).release;
  if (routed) {
    // Health-checked before its switch: it serves, so it is no longer pending.
    if (routed !== await currentRelease(paths)) await symlinkAtomic(`releases/${routed}`, paths.current);
    await markServed(paths, routed);
  }
  const manager = managerNamed(config.manager, ctx.plan.deploy.type === "docker");
  const health = await strategyOf(config).recover?.({ ...ctx, manager }, killed.commit);
  const current = await currentRelease(paths);
  const meta = current ? await readReleaseMeta(paths, current) : undefined;
  const message = interruptionMessage(killed, current, meta);
  journal.say(`! ${message}; this deploy cleans up what it left`);
  await journal.record("interrupted", { ok: false, message });
  const status = await readStatus(paths.status);
  if (!status) return;
  await saveStatus(
    ctx,
    interruptedStatus(status, {
      current,
      meta,
      // Asked only when status.json named another release.
      health: meta && status.release !== current && health ? await health(current, meta) : {},
      killedCommit: killed.commit,
      message,
      at: isoNow(ctx.clock),
    }),
  );
}
