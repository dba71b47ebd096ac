/**
 * Crash safety: a deploy killed with SIGKILL at 20 points spread over every step (test-only
 * hooks: DEPLOY_PARADIGM_TEST_KILL=before:<step>|after:<step>). After each kill the app still
 * answers from a healthy release, `current` points to a complete release and the lock is free;
 * the next deploy succeeds, records the interruption, and removes what the killed one left.
 */
import { join } from "node:path";
import { assert, assertEquals } from "../helpers/assert.ts";
import { AppRepo } from "../helpers/apps.ts";
import { freePort, get, run, type TestServer, withServer } from "../helpers/server.ts";
import { current, deployLog, releases, status } from "../helpers/state.ts";

const POINTS = [
  "before:fetch",
  "after:fetch",
  "before:build",
  "after:build",
  "after:command",
  "after:env",
  "before:preDeploy",
  "after:preDeploy",
  "before:start",
  "after:start",
  "before:health",
  "after:health",
  "before:switch",
  "after:switch",
  "after:drain",
  "before:watch",
  "after:watch",
  "after:branch",
  "after:stop",
  "after:cleanup",
];

const EXTRA = "hooks: { preDeploy: 'true', postDeploy: 'true' }\n";

/** The app answers (200) with one of `versions`. */
async function answers(port: number, versions: string[]): Promise<string | undefined> {
  const answer = await get(`http://127.0.0.1:${port}/`);
  return "body" in answer && answer.status === 200 && versions.includes(answer.body.trim())
    ? undefined
    : `the app does not answer with ${versions.join(" or ")}: ${JSON.stringify(answer)}`;
}

/** What a killed deploy may leave wrong: a current without a complete release, a held lock. */
async function invariants(server: TestServer, app: string): Promise<string[]> {
  const problems: string[] = [];
  const link = await current(server, app);
  const meta = link &&
    await Deno.readTextFile(join(server.paths(app).dir, link, ".deploy-paradigm.json")).then(
      JSON.parse,
      () => undefined,
    );
  if (!meta || meta.pending) problems.push(`current (${link}) is not a complete, served release`);
  const lock = await run(["flock", "-n", server.paths(app).lock, "true"]);
  if (lock.code !== 0) problems.push("the lock is held");
  return problems;
}

/** What a finished deploy must not leave: pending or incomplete releases, the marker, extractions. */
async function leftovers(server: TestServer, app: string): Promise<string[]> {
  const paths = server.paths(app);
  const found: string[] = [];
  for (const id of await releases(server, app)) {
    const meta = await Deno.readTextFile(join(paths.release(id), ".deploy-paradigm.json")).then(
      JSON.parse,
      () => undefined,
    );
    if (!meta) found.push(`release ${id} without metadata`);
    else if (meta.pending) found.push(`release ${id} never served`);
  }
  for await (const entry of Deno.readDir(paths.releases)) {
    if (entry.name.startsWith(".")) found.push(`releases/${entry.name}`);
  }
  if (await Deno.stat(join(paths.dir, ".deploying")).then(() => true, () => false)) found.push(".deploying");
  const pm2 = await run(["pm2", "jlist"], { env: server.env });
  const names = (JSON.parse(pm2.stdout || "[]") as { name: string }[]).map((p) => p.name).sort();
  const slot = (await status(server, app)).slot;
  if (JSON.stringify(names) !== JSON.stringify([`${app}-${slot}`])) found.push(`pm2 runs ${names.join(", ")}`);
  return found;
}

Deno.test("crash safety: SIGKILL at 20 points of a deploy; the app keeps serving and the next deploy cleans up", async () => {
  await withServer(async (server) => {
    const app = "crash";
    const port = freePort();
    const repo = await AppRepo.create(server, app, await server.setupApp(app, { port }));
    await repo.python(app, "v0", "ok", { extra: EXTRA });
    await repo.pushOk();
    let good = "v0";
    const survived: string[] = [];
    const failures: string[] = [];
    for (const [i, point] of POINTS.entries()) {
      const version = `k${i}`;
      await repo.python(app, version, "ok", { extra: EXTRA });
      const killed = await run(["git", "push", "production", "main"], {
        cwd: repo.dir,
        env: { ...server.env, DEPLOY_PARADIGM_TEST_KILL: point },
      });
      const problems: string[] = [];
      if (killed.code === 0) problems.push("the killed push succeeded");
      const answer = await answers(port, [good, version]);
      if (answer) problems.push(answer);
      problems.push(...await invariants(server, app));

      // The next deploy (a new commit on top) succeeds and removes what the killed one left.
      const next = `n${i}`;
      await repo.python(app, next, "ok", { extra: EXTRA });
      const push = await repo.push();
      if (push.code !== 0) problems.push(`the next deploy failed:\n${push.output}`);
      else {
        good = next;
        const served = await answers(port, [next]);
        if (served) problems.push(served);
        problems.push(...await leftovers(server, app));
        const events = (await deployLog(server, app)).map((e) => e.event);
        if (!events.includes("interrupted")) problems.push("the interruption was not recorded");
      }
      if (problems.length) failures.push(`${point}: ${problems.join("; ")}`);
      else survived.push(point);
    }
    console.log(`crash safety: ${survived.length}/${POINTS.length} kills survived`);
    assertEquals(failures, [], failures.join("\n"));
    assertEquals(survived.length, 20);
    const interrupted = (await deployLog(server, app)).filter((e) => e.event === "interrupted");
    assertEquals(interrupted.length, 20, "each kill is recorded by the deploy after it");
    assert((await status(server, app)).healthy);
  });
});
