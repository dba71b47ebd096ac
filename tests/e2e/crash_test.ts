/**
 * Crash safety: a deploy killed with SIGKILL at 20 points spread over every step (test-only
 * hooks: DEPLOY_PARADIGM_TEST_KILL=before:<step>|after:<step>). After each kill the app still
 * answers from a healthy release, `current` points to a complete release and the lock is free;
 * the next deploy succeeds, records the interruption, and removes what the killed one left.
 */
import { assert, assertEquals } from "../helpers/assert.ts";
import { AppRepo } from "../helpers/apps.ts";
import { answers, invariants, leftovers } from "../helpers/crash.ts";
import { freePort, run, withServer } from "../helpers/server.ts";
import { deployLog, status } from "../helpers/state.ts";

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
      problems.push(...await invariants(server.paths(app)));

      // The next deploy (a new commit on top) succeeds and removes what the killed one left.
      const next = `n${i}`;
      await repo.python(app, next, "ok", { extra: EXTRA });
      const push = await repo.push();
      if (push.code !== 0) problems.push(`the next deploy failed:\n${push.output}`);
      else {
        good = next;
        const served = await answers(port, [next]);
        if (served) problems.push(served);
        const processes = [`${app}-${(await status(server, app)).slot}`];
        problems.push(...await leftovers(server.paths(app), { env: server.env, processes }));
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
