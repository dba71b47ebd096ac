/**
 * One cron scheduler per server (src/cron/scheduler.ts): real `deploy-paradigm cron-scheduler`
 * processes under a temp prefix (here, not in tests/unit/: it starts daemons); no root, no pm2 (no app
 * has jobs: nothing is started).
 * @module
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

/** Whether `promise` settles within `ms`. */
async function within(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const settled = await Promise.race([
    promise.then(() => true, () => true),
    new Promise<boolean>((resolve) => timer = setTimeout(resolve, ms, false)),
  ]);
  clearTimeout(timer);
  return settled;
}

/** A `cron-scheduler` process under `root`. */
const spawnScheduler = (root: string) =>
  new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, "cron-scheduler"],
    env: { DEPLOY_PARADIGM_PREFIX: root },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();

/** Starts `cron-scheduler` under `root`; resolves once it says it runs (its first line), with that line. */
async function startScheduler(root: string) {
  const child = spawnScheduler(root);
  const stderr = new Response(child.stderr).text();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!out.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    out += value;
  }
  const rest = (async () => {
    while (!(await reader.read()).done) { /* what it says after: read to its end */ }
  })();
  return { child, first: out.split("\n")[0], stderr, rest };
}

Deno.test("cron-scheduler: a second one on the server refuses (exit 1, the holder's pid and lock named); the first runs on", async () => {
  const root = await Deno.makeTempDir({ prefix: "dp-cron-scheduler-" });
  const started: Deno.ChildProcess[] = [];
  try {
    const first = await startScheduler(root);
    started.push(first.child);
    assertMatch(first.first, new RegExp(`^deploy-paradigm cron scheduler: pid ${first.child.pid}, `));
    const lock = join(root, "opt", "deployments", ".cron-scheduler.lock");

    const second = spawnScheduler(root);
    started.push(second);
    const output = second.output();
    assert(await within(output, 10_000), "the second scheduler runs too (every job would run twice)");
    const { code, stdout, stderr } = await output;
    const said = new TextDecoder().decode(stderr);
    assertEquals(code, 1, said);
    assertEquals(new TextDecoder().decode(stdout), "", "it never said it runs");
    assertMatch(
      said,
      new RegExp(`another cron scheduler is running on this server \\(pid ${first.child.pid}\\): it holds ${lock}`),
    );
    assertMatch(said, /one scheduler per server/);
    assertEquals((await Deno.stat(lock)).mode! & 0o777, 0o600);

    // The first one still runs, and ends as usual on SIGTERM.
    assert(!await within(first.child.status, 300), "the first scheduler ended");
    first.child.kill("SIGTERM");
    assertEquals((await first.child.status).code, 0, await first.stderr);
    await first.rest;

    // Its lock went with it: the next scheduler starts.
    const next = await startScheduler(root);
    started.push(next.child);
    assertMatch(next.first, new RegExp(`^deploy-paradigm cron scheduler: pid ${next.child.pid}, `));
    next.child.kill("SIGTERM");
    assertEquals((await next.child.status).code, 0, await next.stderr);
    await next.rest;
  } finally {
    for (const child of started) {
      try {
        child.kill("SIGKILL");
      } catch { /* already ended */ }
      await child.status;
    }
    await Deno.remove(root, { recursive: true });
  }
});
