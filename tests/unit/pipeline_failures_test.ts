/**
 * Failure paths of a deploy and a rollback, through the real pipeline (helpers/pipeline_world.ts:
 * real git, real processes, a fake systemctl): whatever fails, what served before serves, or
 * status.json says that nothing does; what is refused is refused with what, where and how to fix.
 */
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { APP, commit, deploy, releases, status, withWorld, ZEROS } from "../helpers/pipeline_world.ts";
import { readDeployDotenv } from "../../src/deploy/dotenv.ts";
import { listAppReleases, rollback } from "../../src/deploy/rollback.ts";
import { DeployParadigmError } from "../../src/errors.ts";
import { Cancellation } from "../../src/deploy/cancel.ts";
import type { Plan } from "../../src/runner.ts";
import type { appPaths } from "../../src/paths.ts";

/** Whether the app answers its health check on `port`. */
async function answers(port: number): Promise<boolean> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/health`);
    await res.body?.cancel();
    return res.ok;
  } catch {
    return false;
  }
}

Deno.test("restart → blue-green, the proxy's reload fails at the switch: the old release serves again, status.json says so", async () => {
  await withWorld("restart", async (w) => {
    const first = await commit(w, "ok");
    assertEquals(await deploy(w, first, { ref: "refs/heads/main", old: ZEROS }), { ok: true });
    assert(await answers(w.port), "the first release serves");
    // The operator moves to blue-green.
    await Deno.writeTextFile(
      w.paths.config,
      `port: ${w.port}\nmanager: systemd\nstrategy: blue-green\nuser: root\n` +
        `slots: { blue: ${w.slots.blue}, green: ${w.slots.green} }\n`,
    );
    // The proxy runs (preflight's status), but its reload at the switch fails.
    const proxy = w.effects.proxy;
    w.effects.proxy = (request) =>
      (request as { op?: string }).op === "reload" ? Promise.reject(new Error("reload refused")) : proxy(request);
    const second = await commit(w, "ok");
    const result = await deploy(w, second, { ref: "refs/heads/main", old: first });
    assertEquals(result.ok, false);
    const s = await status(w);
    assert(await answers(w.port), `nothing answers on ${w.port}; printed:\n${w.printed.join("\n")}`);
    assertEquals({ version: s.version, healthy: s.healthy }, { version: first.slice(0, 7), healthy: true });
  });
});

Deno.test("restart → blue-green, cancelled and failing at the switch: the stopped old process still starts again", async () => {
  await withWorld("restart", async (w) => {
    const first = await commit(w, "ok");
    assertEquals(await deploy(w, first, { ref: "refs/heads/main", old: ZEROS }), { ok: true });
    await Deno.writeTextFile(
      w.paths.config,
      `port: ${w.port}\nmanager: systemd\nstrategy: blue-green\nuser: root\n` +
        `slots: { blue: ${w.slots.blue}, green: ${w.slots.green} }\n`,
    );
    // Ctrl-C while the switch stops the old process; then the proxy's reload fails.
    const cancellation = new Cancellation();
    const proxy = w.effects.proxy;
    w.effects.proxy = (request) => {
      if ((request as { op?: string }).op !== "reload") return proxy(request);
      cancellation.cancel("the pusher pressed Ctrl-C");
      return Promise.reject(new Error("reload refused"));
    };
    const second = await commit(w, "ok");
    const result = await deploy(w, second, { ref: "refs/heads/main", old: first, cancellation });
    assertEquals(result.ok, false);
    assert(await answers(w.port), `nothing answers on ${w.port}; printed:\n${w.printed.join("\n")}`);
    assertEquals((await status(w)).healthy, true);
  });
});

Deno.test("a step after the switch whose `when` throws is tolerated as its run would be: the deploy stands", async () => {
  await withWorld("restart", async (w) => {
    const first = await commit(w, "ok");
    assertEquals(await deploy(w, first, { ref: "refs/heads/main", old: ZEROS }), { ok: true });
    // The cron step's `when` lists the systemd units dir: make that listing fail (not NotFound).
    await Deno.mkdir(`${w.root}/etc`, { recursive: true });
    await Deno.writeTextFile(`${w.root}/etc/systemd`, "not a directory\n");
    const second = await commit(w, "ok");
    const result = await deploy(w, second, { ref: "refs/heads/main", old: first });
    const s = await status(w);
    const currentExists = await Deno.stat(w.paths.current).then(() => true, () => false);
    assertEquals(
      { ok: result.ok, currentExists, version: s.version, outcome: s.lastDeploy?.outcome },
      { ok: true, currentExists: true, version: second.slice(0, 7), outcome: "success" },
      w.printed.join("\n"),
    );
    assert(w.printed.some((line) => /^✗ cron .*(Not a directory|os error 20)/.test(line)), w.printed.join("\n"));
    assert(w.printed.includes("! the cron jobs were not updated; the deploy stands (see the lines above)"));
  });
});

Deno.test("a commit that holds .env (a file or a link): the server's values replace it, and the push says so", async () => {
  await withWorld("restart", async (w) => {
    await Deno.writeTextFile(`${w.paths.dir}/.env.production`, "SECRET_KEY=abcdefgh\n", { mode: 0o600 });
    await Deno.writeTextFile(`${w.work}/.env`, "SECRET_KEY=committed-by-mistake\n");
    const first = await commit(w, "ok");
    assertEquals(await deploy(w, first, { ref: "refs/heads/main", old: ZEROS }), { ok: true });
    const written = async () => {
      const file = `${w.paths.current}/.env`;
      assertEquals((await Deno.lstat(file)).isFile, true);
      assertEquals((await Deno.stat(file)).mode! & 0o037, 0, "no write but the owner's, nothing for others");
      return await Deno.readTextFile(file);
    };
    assertMatch(await written(), /SECRET_KEY='abcdefgh'/);
    assert(!(await written()).includes("committed-by-mistake"));
    assert(
      w.printed.some((line) => /^! the release had a \.env \(from the commit or its build\): replaced by/.test(line)),
    );
    // A link the commit holds, to a file root must not write: removed, not followed.
    const target = `${w.root}/precious`;
    await Deno.writeTextFile(target, "untouched\n");
    await Deno.remove(`${w.work}/.env`);
    await Deno.symlink(target, `${w.work}/.env`);
    const second = await commit(w, "ok");
    assertEquals(await deploy(w, second, { ref: "refs/heads/main", old: first }), { ok: true });
    assertEquals(await Deno.readTextFile(target), "untouched\n");
    assertMatch(await written(), /SECRET_KEY='abcdefgh'/);
  });
});

Deno.test(".env: a problem's column is its value's, not a match of the value's text inside the key", () => {
  const error = (() => {
    try {
      readDeployDotenv("PASSWORD=PASS\n", ".env.production");
    } catch (e) {
      return e as { problems?: string[] };
    }
  })();
  assertEquals(error?.problems?.[0]?.split(": ")[0], ".env.production:1:10");
});

/** Two releases: a good one, and one whose metadata is valid JSON of the wrong shape (edited by hand). */
async function oddReleases(w: { paths: ReturnType<typeof appPaths> }) {
  const good = "20260101-000000-000";
  const odd = "20260102-000000-000";
  for (const id of [good, odd]) await Deno.mkdir(w.paths.release(id), { recursive: true });
  await Deno.writeTextFile(
    `${w.paths.release(good)}/.deploy-paradigm.json`,
    JSON.stringify({ id: good, commit: "a".repeat(40), type: "python", argv: ["./server"], createdAt: "x" }),
  );
  await Deno.writeTextFile(
    `${w.paths.release(odd)}/.deploy-paradigm.json`,
    JSON.stringify({ id: odd, type: "python", argv: "./server", createdAt: "x" }), // argv a string, no commit
  );
  return { good, odd };
}

Deno.test("releases: one release's metadata of the wrong shape is listed as unreadable, the others as they are", async () => {
  await withWorld("restart", async (w) => {
    const { good, odd } = await oddReleases(w);
    const rows = await listAppReleases(APP, w.root);
    assertEquals(rows.map((r) => [r.id, r.state]), [[good, "good"], [odd, "unreadable"]]);
  });
});

Deno.test("rollback --to a release whose metadata has the wrong shape: a clear error naming it and the key", async () => {
  await withWorld("restart", async (w) => {
    const { odd } = await oddReleases(w);
    const error = await rollback(APP, odd, w.effects).catch((e) => e);
    assert(error instanceof DeployParadigmError, String(error));
    assertMatch(error.message, new RegExp(`${odd}/\\.deploy-paradigm\\.json`));
    assertMatch(error.message, /commit|argv/);
  });
});

Deno.test("a restart rollback cancelled during its health check puts back the release it started from", async () => {
  await withWorld("restart", async (w) => {
    assert((await deploy(w, await commit(w, "ok"))).ok);
    assert((await deploy(w, await commit(w, "ok"))).ok);
    const [first, latest] = await releases(w);
    const cancellation = new Cancellation();
    // Ctrl-C as the target release is started (before its health check): the rollback is cancelled.
    const runner = w.effects.runner;
    w.effects.runner = (sink) => {
      const inner = runner(sink);
      return {
        run: (cmd) => inner.run(cmd),
        apply: async (plan: Plan) => {
          await inner.apply(plan);
          if (plan.commands.some((c) => c.argv.includes("restart"))) cancellation.cancel("interrupted by a test");
        },
      };
    };
    w.fake.calls.length = 0;
    assertEquals(await rollback(APP, undefined, w.effects, cancellation), 1);
    const s = await status(w);
    const serving = await answers(w.port);
    assertEquals(
      {
        current: await Deno.readLink(w.paths.current),
        release: s.release,
        healthy: s.healthy,
        serving,
        restarts: w.fake.ran(["systemctl", "restart"]).length, // the target's, then the restore's
      },
      { current: `releases/${latest}`, release: latest, healthy: true, serving: true, restarts: 2 },
      `target ${first}; printed:\n${w.printed.slice(-8).join("\n")}`,
    );
  });
});
