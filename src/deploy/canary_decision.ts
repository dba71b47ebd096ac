/**
 * Deciding a canary by hand (`deploy-paradigm canary <app> promote|abort`): the decision file the
 * running deploy reads (./canary.ts takes it within a second), whether a deploy is alive at all,
 * and the clean-up of a canary a killed deploy left.
 *
 * A deploy is alive when the app's lock is held (a non-blocking try fails: the kernel frees it
 * when its holder dies) or the pid in its marker (`.deploying`, ./reconcile.ts) runs. A SIGKILLed
 * deploy leaves its marker, canary.json and status.json's canary "running": nothing would read a
 * decision file then. `abort` takes the lock and ends that canary as blue-green's `recover` does
 * (canary.json removed, reload, drain, the idle slot stopped, the canary `aborted`); `promote` is
 * refused (nothing health-checks a release a killed deploy left).
 * @module
 */
import { join } from "node:path";
import { UsageError } from "../errors.ts";
import { readTextOrUndefined, writeFileAtomic } from "../fsutil.ts";
import type { AppPaths } from "../paths.ts";
import { CANARY_FILE, readCanary } from "../proxy/canary_file.ts";
import { readStatus } from "./status.ts";

/** The file `canary <app> promote|abort` writes in the app's directory, for the running deploy. */
export const DECISION_FILE = ".canary-decision";

/** A decision by hand. */
export type Decision = "promote" | "abort";

/** Whether a deploy of the app runs now: its lock is held, or its marker's pid runs. */
export async function deployAlive(paths: AppPaths): Promise<boolean> {
  const file = await Deno.open(paths.lock, { read: true, write: true, create: true, mode: 0o600 }).catch(() => null);
  if (file) {
    try {
      if (!await file.tryLock(true)) return true;
      await file.unlock();
    } finally {
      file.close();
    }
  }
  const marker = await readTextOrUndefined(join(paths.dir, ".deploying")).catch(() => undefined);
  if (marker === undefined) return false;
  try {
    const { pid } = JSON.parse(marker);
    return Number.isInteger(pid) && pid > 0 && await Deno.stat(`/proc/${pid}`).then(() => true, () => false);
  } catch {
    return false;
  }
}

/** What the marker of a deploy under way (`.deploying`, ./reconcile.ts) says: its commit, pid and start. */
export interface DeployMarker {
  commit?: string;
  pid?: number;
  since?: string;
}

/**
 * The marker a killed deploy left: its content when `.deploying` is there and no deploy of the
 * app is alive ({@link deployAlive}); undefined otherwise. (The next deploy reconciles after it.)
 */
export async function leftMarker(paths: AppPaths): Promise<DeployMarker | undefined> {
  const text = await readTextOrUndefined(join(paths.dir, ".deploying")).catch(() => undefined);
  if (text === undefined || await deployAlive(paths)) return undefined;
  try {
    const value = JSON.parse(text);
    if (value && typeof value === "object") {
      return {
        ...(typeof value.commit === "string" ? { commit: value.commit } : {}),
        ...(Number.isInteger(value.pid) ? { pid: value.pid } : {}),
        ...(typeof value.since === "string" ? { since: value.since } : {}),
      };
    }
  } catch { /* cut short: the kill came while it was written */ }
  return {};
}

/**
 * What a deploy waiting for the app's lock adds when the holder runs a canary (canary.json is
 * there): that push stays open for the whole canary, and how to end it now. Sync: for the lock's
 * wait callback.
 */
export function canaryWaitNote(paths: AppPaths): string {
  try {
    Deno.statSync(join(paths.dir, CANARY_FILE));
  } catch {
    return "";
  }
  return `; it runs a canary, and its push stays open until the canary ends (every step's interval, longer ` +
    `while it waits for requests): \`deploy-paradigm canary ${paths.app} promote\` or \`abort\` ends it now`;
}

/** What `canary <app> <decision>` finds: a live canary to decide, one a killed deploy left, or none. */
export type Found = "live" | "left" | "none";

/**
 * Whether the app has a canary (canary.json, or status.json's canary running), and whether its
 * deploy is alive (`locked`: the caller holds the app's lock, so none is).
 */
export async function findCanary(paths: AppPaths, locked = false): Promise<Found> {
  const split = await readCanary(paths.dir).catch(() => undefined);
  const running = (await readStatus(paths.status).catch(() => undefined))?.canary?.state === "running";
  if (!split && !running) return "none";
  if (locked) return "left"; // the caller holds the app's lock: no deploy runs
  return await deployAlive(paths) ? (split && running ? "live" : "none") : "left";
}

/**
 * Asks the running deploy of the app to promote or abort its canary; returns what it will do.
 * Refused when no live deploy runs a canary (see the module's doc for one a killed deploy left).
 */
export async function requestDecision(paths: AppPaths, decision: Decision): Promise<string> {
  const app = paths.app;
  const found = await findCanary(paths);
  if (found === "left") {
    throw new UsageError(`the canary of ${app} was left by a deploy that was killed: nothing can promote it`, {
      suggestion: `\`deploy-paradigm canary ${app} abort\` ends it (every request to the old release), then push again`,
    });
  }
  const canary = (await readStatus(paths.status))?.canary;
  if (found === "none" || !canary) {
    throw new UsageError(`no canary of ${app} runs now`, {
      suggestion: `\`canary ${app} ${decision}\` decides a canary while a deploy with \`canary:\` runs; ` +
        `see \`status ${app}\``,
    });
  }
  await writeFileAtomic(join(paths.dir, DECISION_FILE), JSON.stringify({ decision, at: new Date().toISOString() }));
  return `${app}: the deploy of ${canary.version} (canary at ${canary.percent}%, step ${canary.step}/` +
    `${canary.steps.length}) will ${decision === "promote" ? "promote it now" : "abort it and revert"}`;
}

/**
 * After {@link requestDecision}: waits up to `ms` for status.json's canary to leave "running" and
 * says how it ended, or that the deploy has not taken the decision yet.
 */
export async function decisionOutcome(paths: AppPaths, ms = 5000, pollMs = 250): Promise<string> {
  const until = Date.now() + ms;
  for (;;) {
    const canary = (await readStatus(paths.status).catch(() => undefined))?.canary;
    if (canary && canary.state !== "running") {
      return `the canary of ${canary.version} is ${canary.state}: ${canary.reason}`;
    }
    if (Date.now() >= until) {
      const where = canary ? `step ${canary.step}/${canary.steps.length}, ${canary.percent}%` : "no canary step";
      return `the deploy has not taken it yet (it is in ${where}); see \`status ${paths.app}\``;
    }
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
}

/** Takes the decision by hand, if one was made: read once, then removed. */
export async function takeDecision(appDir: string): Promise<Decision | undefined> {
  const path = join(appDir, DECISION_FILE);
  const text = await readTextOrUndefined(path).catch(() => undefined);
  if (text === undefined) return undefined;
  await Deno.remove(path).catch(() => {});
  try {
    const { decision } = JSON.parse(text);
    return decision === "promote" || decision === "abort" ? decision : undefined;
  } catch {
    return undefined;
  }
}
