/**
 * The health check: healthy after `successes` consecutive 2xx answers within `window`.
 * @module
 */
import { isAbsolute, join, relative, sep } from "node:path";
import type { HealthCheck } from "../config/schema.ts";
import { exists } from "../fsutil.ts";
import type { AppProcess, ProcessManager } from "../managers/mod.ts";
import { heldBy, heldOutside, readListeners } from "../listeners.ts";
import type { Runner } from "../runner.ts";
import { userNameOf } from "../users.ts";
import { Cancelled } from "./cancel.ts";
import { type Clock, isoNow, SYSTEM_CLOCK } from "./context.ts";
import type { Journal } from "./journal.ts";
import type { ReleaseMeta } from "./releases.ts";

/** The verdict of a health check. */
export interface HealthResult {
  healthy: boolean;
  attempts: number;
  /** Consecutive successes at the end. */
  successes: number;
  /** Each distinct problem the attempts met, in the order first met, with how many attempts met it. */
  problems: Record<string, number>;
  checkedAt: string;
}

/**
 * Checks `url` until it has answered 2xx `successes` times in a row, or `window` has passed.
 * Throws {@link Cancelled} when `cancel` aborts. The window is wall time (real probes, real waits);
 * `clock` gives the verdict's time.
 */
export async function checkHealth(
  url: string,
  check: HealthCheck,
  cancel?: AbortSignal,
  clock: Clock = SYSTEM_CLOCK,
): Promise<HealthResult> {
  const deadline = Date.now() + check.window;
  let attempts = 0;
  let successes = 0;
  const problems: Record<string, number> = {};
  const verdict = (healthy: boolean) => ({
    healthy,
    attempts,
    successes,
    problems,
    checkedAt: isoNow(clock),
  });
  while (true) {
    if (cancel?.aborted) throw new Cancelled(String(cancel.reason));
    attempts++;
    const problem = await probe(url, Math.min(check.timeout, Math.max(1, deadline - Date.now())));
    if (problem === undefined) successes++;
    else {
      successes = 0;
      problems[problem] = (problems[problem] ?? 0) + 1;
    }
    if (successes >= check.successes) return verdict(true);
    if (Date.now() + check.interval > deadline) return verdict(false);
    await new Promise((resolve) => setTimeout(resolve, check.interval));
    // A late timer (a busy machine) may wake past the window: no attempt cut down to nothing.
    if (Date.now() >= deadline) return verdict(false);
  }
}

/** Distinct problems named in a failed check's message; more are counted. */
const PROBLEMS_SHOWN = 4;

/**
 * What a failed check met, in the order first met: "connection refused … ×3, answered 500 … ×12",
 * and the 2xx answers in a row it ended with, if any.
 */
export function seenText(result: HealthResult): string {
  const entries = Object.entries(result.problems);
  const parts = entries.slice(0, PROBLEMS_SHOWN).map(([problem, count]) => `${problem} ×${count}`);
  const more = entries.slice(PROBLEMS_SHOWN).reduce((sum, [, count]) => sum + count, 0);
  if (more) parts.push(`${entries.length - PROBLEMS_SHOWN} other problems ×${more}`);
  if (result.successes) parts.push(`then ${result.successes} 2xx in a row`);
  return parts.join(", ");
}

/** One attempt: undefined when healthy, else what went wrong. */
async function probe(url: string, timeout: number): Promise<string | undefined> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(timeout), redirect: "manual" });
    await response.body?.cancel();
    return response.ok ? undefined : `answered ${response.status} ${response.statusText}`.trim();
  } catch (error) {
    if (error instanceof DOMException && error.name === "TimeoutError") return `no answer within ${timeout}ms`;
    const cause = error instanceof Error && error.cause instanceof Error ? `: ${error.cause.message}` : "";
    const message = error instanceof Error ? `${error.message}${cause}` : String(error);
    return /refused/i.test(message) ? "connection refused (nothing listens on the port)" : message;
  }
}

/** Whose process must listen on the port a health check asks: a uid, and its name for messages. */
export interface PortOwner {
  uid: number;
  name: string;
  /**
   * The process started for the port, as its manager names it and its pid (undefined when the
   * manager cannot say): of that uid's listeners there, only its and its descendants' count.
   */
  started?: () => Promise<{ name: string; pid: number } | undefined>;
}

/**
 * Who must hold the port of `process`: its user, or the deploying user (the process manager runs
 * it as that user: root on a server). None for a container: docker's own proxy (root's) or its
 * rules hold a container's port, not the app's uid.
 */
export function portOwner(process: AppProcess): PortOwner | undefined {
  if (process.container) return undefined;
  if (process.user) return { uid: process.user.uid, name: process.user.name };
  const uid = Deno.uid();
  return uid === null ? undefined : { uid, name: userNameOf(uid) ?? `uid ${uid}` };
}

/**
 * Why the answers on `url`'s port are not `owner`'s: a listener of another uid on that port (see
 * ../listeners.ts), in words; undefined when every listener there is the owner's.
 */
export async function portTaken(url: string, owner: PortOwner): Promise<string | undefined> {
  const port = Number(new URL(url).port);
  if (!port) return undefined;
  const listeners = await readListeners();
  const other = heldBy(listeners, port, owner.uid, owner.name, userNameOf);
  if (other) return other;
  const started = await owner.started?.().catch(() => undefined);
  return started?.pid ? await heldOutside(listeners, port, owner.uid, started.pid, started.name) : undefined;
}

/**
 * Checks `target` as a step of the journal. On failure the message says what the checks saw and
 * the last lines the app wrote to `errorLog` since byte `since`. With `owner`, the answers count
 * only if nobody else listens on the port (another user's process would have answered them).
 */
async function healthStep(
  journal: Journal,
  target: string,
  check: HealthCheck,
  errorLog: string,
  since: number,
  name = "health",
  owner?: PortOwner,
): Promise<HealthResult> {
  return await journal.step(
    name,
    async () => {
      const result = await checkHealth(target, check, journal.cancellation?.signal, journal.clock);
      const taken = owner && await portTaken(target, owner);
      if (result.healthy && !taken) return result;
      const appErrors = await linesSince(errorLog, since, 10);
      if (taken) {
        throw new Error(
          `${taken}; what answered ${target} was not the process started for it` +
            (appErrors.length ? `; the app's error.log says:\n${appErrors.map((l) => `    ${l}`).join("\n")}` : ""),
        );
      }
      throw new Error(
        `${target} did not answer 2xx ${check.successes} times in a row within ${check.window / 1000}s ` +
          `(${result.attempts} attempts: ${seenText(result)})` +
          (appErrors.length ? `; the app's error.log says:\n${appErrors.map((l) => `    ${l}`).join("\n")}` : ""),
      );
    },
    (r) => `${check.successes}/${check.successes} OK from ${target} (${r.attempts} attempts)`,
    target,
  );
}

/** The size of a file (0 when absent): where new lines will start. */
async function fileSize(path: string): Promise<number> {
  return await Deno.stat(path).then((info) => info.size, () => 0);
}

/** The last `count` lines written to `path` after byte `offset`. */
async function linesSince(path: string, offset: number, count: number): Promise<string[]> {
  try {
    const bytes = await Deno.readFile(path);
    const text = new TextDecoder().decode(bytes.subarray(bytes.length >= offset ? offset : 0));
    return text.split("\n").filter((line) => line.trim()).slice(-count);
  } catch {
    return [];
  }
}

/**
 * The watch window: probes `url` every `check.interval` for `windowMs`; the first failed probe
 * ends it. Returns undefined when every probe passed, else what failed.
 */
export async function watchHealth(
  url: string,
  check: HealthCheck,
  windowMs: number,
  cancel?: AbortSignal,
): Promise<string | undefined> {
  const end = Date.now() + windowMs;
  while (Date.now() < end) {
    if (cancel?.aborted) return `was not watched to the end: ${cancel.reason}`;
    const problem = await probe(url, check.timeout);
    if (problem !== undefined) return problem;
    await new Promise((resolve) => setTimeout(resolve, Math.min(check.interval, Math.max(0, end - Date.now()))));
  }
  return undefined;
}

/**
 * Starts `process` through `manager` (the "start" step, `started` its message), then checks `url`
 * (the "health" step, with the app's new error.log lines when it fails).
 */
export async function startAndCheck(
  journal: Journal,
  runner: Runner,
  manager: ProcessManager,
  process: AppProcess,
  url: string,
  check: HealthCheck,
  started: string,
): Promise<HealthResult> {
  const since = await fileSize(process.errorLog);
  await journal.step("start", () => runner.apply(manager.restart(process)), () => started);
  const owner = portOwner(process);
  const name = manager.nameOf(process.app, process.slot);
  const pidOf = async () => {
    const pid = (await manager.states?.(runner, process.root, [name]))?.get(name)?.pid;
    return pid ? { name, pid } : undefined;
  };
  return await healthStep(
    journal,
    url,
    check,
    process.errorLog,
    since,
    "health",
    owner && {
      ...owner,
      started: pidOf,
    },
  );
}

/**
 * The static check: deploy.yml's `root:` is a directory inside the release (not a link out of it),
 * and the file for the health path is in it.
 */
export async function checkStaticFiles(
  journal: Journal,
  releaseDir: string,
  meta: ReleaseMeta,
  note: string,
): Promise<HealthResult> {
  return await journal.step("health", async () => {
    const root = staticRoot(releaseDir, meta);
    if (meta.root !== undefined) {
      const real = await Deno.realPath(root).catch(() => undefined);
      const inside = real && relative(await Deno.realPath(releaseDir), real);
      if (!real || !(await Deno.stat(real)).isDirectory) {
        throw new Error(`deploy.yml root: ${meta.root} is not a directory of the release after its build`);
      }
      if (inside === undefined || inside === ".." || inside.startsWith(`..${sep}`) || isAbsolute(inside)) {
        throw new Error(`deploy.yml root: ${meta.root} leads out of the release (to ${real}): it is not served`);
      }
    }
    const path = meta.healthCheck?.path ?? "/";
    const file = join(root, path.endsWith("/") ? `${path}index.html` : path);
    if (!(await exists(file))) throw new Error(`the static app has no file for ${path} (looked for ${file})`);
    return { healthy: true, attempts: 1, successes: 1, problems: {}, checkedAt: isoNow(journal.clock) };
  }, () => note);
}

/** The directory of a static release the proxy serves: deploy.yml's `root:` in it, or the release itself. */
export function staticRoot(releaseDir: string, meta: Pick<ReleaseMeta, "root">): string {
  return meta.root === undefined ? releaseDir : join(releaseDir, meta.root);
}
