/**
 * What the crash tests check after a deploy killed with SIGKILL (DEPLOY_PARADIGM_TEST_KILL, see
 * src/deploy/cancel.ts), and after the deploy that follows it. Paths are the app's as seen from
 * the test (a TestServer's prefix, or a systemd host's root filesystem).
 */
import { join } from "node:path";
import { listReleases } from "../../src/deploy/releases.ts";
import type { AppPaths } from "../../src/paths.ts";
import { get, run } from "./server.ts";
import { sleep } from "./time.ts";

/** An answer to a GET: status and body, or the connection error. */
export type Answer = Awaited<ReturnType<typeof get>>;

/** Undefined when the app answers 200 with one of `versions`; else what it answered. */
export async function answers(port: number, versions: string[]): Promise<string | undefined> {
  const answer = await get(`http://127.0.0.1:${port}/`);
  return "body" in answer && answer.status === 200 && versions.includes(answer.body.trim())
    ? undefined
    : `the app does not answer with ${versions.join(" or ")}: ${JSON.stringify(answer)}`;
}

/**
 * Which of `versions` answers 200 to `ask`, asking until one does within `ms` (a restart the
 * process manager finishes after the deploy died takes a moment); else what it last answered.
 */
export async function servedWithin(
  ask: () => Promise<Answer>,
  versions: string[],
  ms: number,
): Promise<{ version: string } | { problem: string }> {
  const deadline = Date.now() + ms;
  for (;;) {
    const answer = await ask();
    if ("body" in answer && answer.status === 200 && versions.includes(answer.body.trim())) {
      return { version: answer.body.trim() };
    }
    if (Date.now() > deadline) {
      return { problem: `nothing answers with ${versions.join(" or ")} within ${ms} ms: ${JSON.stringify(answer)}` };
    }
    await sleep(100);
  }
}

async function readMeta(dir: string): Promise<{ pending?: boolean } | undefined> {
  return await Deno.readTextFile(join(dir, ".deploy-paradigm.json")).then(JSON.parse, () => undefined);
}

/** What a killed deploy may leave wrong: a current without a complete release, a held lock. */
export async function invariants(paths: AppPaths): Promise<string[]> {
  const problems: string[] = [];
  const link = await Deno.readLink(paths.current).catch(() => undefined);
  const meta = link && await readMeta(join(paths.dir, link));
  if (!meta || meta.pending) problems.push(`current (${link}) is not a complete, served release`);
  const lock = await run(["flock", "-n", paths.lock, "true"]);
  if (lock.code !== 0) problems.push("the lock is held");
  return problems;
}

/**
 * What a finished deploy must not leave: pending or incomplete releases, the marker, extractions;
 * with `pm2`, processes other than `pm2.processes` in the daemon of `pm2.env`.
 */
export async function leftovers(
  paths: AppPaths,
  pm2?: { env: Record<string, string>; processes: string[] },
): Promise<string[]> {
  const found: string[] = [];
  for (const id of await listReleases(paths)) {
    const meta = await readMeta(paths.release(id));
    if (!meta) found.push(`release ${id} without metadata`);
    else if (meta.pending) found.push(`release ${id} never served`);
  }
  for await (const entry of Deno.readDir(paths.releases)) {
    if (entry.name.startsWith(".")) found.push(`releases/${entry.name}`);
  }
  if (await Deno.stat(join(paths.dir, ".deploying")).then(() => true, () => false)) found.push(".deploying");
  if (pm2) {
    const list = await run(["pm2", "jlist"], { env: pm2.env });
    const names = (JSON.parse(list.stdout || "[]") as { name: string }[]).map((p) => p.name).sort();
    if (JSON.stringify(names) !== JSON.stringify([...pm2.processes].sort())) found.push(`pm2 runs ${names.join(", ")}`);
  }
  return found;
}
