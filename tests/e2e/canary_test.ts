/**
 * Canary releases and gates, for real: git pushes into the bare repository, the real proxy
 * splitting traffic by the `dp_canary` cookie, real PM2, Python apps on loopback, keep-alive load
 * from clients pinned to each side (a cookie bucket of 9999 is always on the stable side, 0 on the
 * canary from the first step), and one without a cookie that keeps the one the proxy sets. One app goes through: a good release promoted through 3 steps, a
 * release answering 10 % 500s reverted at the first step, a release 3× slower reverted on latency,
 * a release whose gate fails, `canary <app> abort` by hand, and a deploy killed mid-canary.
 */
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { AppRepo, type Mode } from "../helpers/apps.ts";
import { LoadGenerator } from "../helpers/load.ts";
import { freePort, run, withServer } from "../helpers/server.ts";
import { deployLog, releases, status } from "../helpers/state.ts";
import { readReleaseMeta } from "../../src/deploy/releases.ts";
import { readCanary } from "../../src/proxy/canary_file.ts";

const HEALTH = "{ path: /health, window: 8s, interval: 150ms, successes: 2, timeout: 1s }";
/** maxLatencyRatio 2: a p95 of a few dozen requests on a busy 2-core machine varies by ±40 %; 3× slower is well above. */
const CANARY = "canary: { steps: [5, 25, 50], interval: 2s, minRequests: 10, maxWait: 6s, maxLatencyRatio: 2 }\n";
/** A gate that asks the new slot (DEPLOY_URL) for its version and prints it; fails when told to. */
const GATE = `import os, sys, urllib.request
body = urllib.request.urlopen(os.environ["DEPLOY_URL"] + "/health", timeout=5).read().decode()
print("gate: %s answers %s" % (os.environ["DEPLOY_URL"], body))
sys.exit(1 if os.path.exists("gate-fails") else 0)
`;

Deno.test("canary: promoted in 3 steps; reverted on 10 % 500s, on latency; a failing gate; abort by hand; killed mid-canary", async () => {
  await withServer(async (server) => {
    const app = "cnry";
    const port = freePort();
    const repo = await AppRepo.create(server, app, await server.setupApp(app, { port }));
    const paths = server.paths(app);
    const commit = (version: string, mode: Mode, files: Record<string, string | null> = {}) =>
      repo.python(app, version, mode, {
        health: HEALTH,
        extra: CANARY + "gates: [python3 gate.py]\n",
        files: { "gate.py": GATE, ...files },
      });
    await commit("v0", "paced");
    const first = await repo.pushOk();
    assertMatch(first.output, /canary: none for this first deploy/);
    const url = `http://127.0.0.1:${port}/`;
    const stable = new LoadGenerator(url, 3, undefined, { cookie: "dp_canary=9999" }).start();
    const canary = new LoadGenerator(url, 3, undefined, { cookie: "dp_canary=0" }).start();
    // A client without a cookie that keeps the one the proxy sets: one version, then (at most) the next, never back.
    const browser = new LoadGenerator(url, 1, undefined, undefined, true).start();
    try {
      // 1. A good release: 5 %, 25 %, 50 %, each judged after 2 s, then the switch.
      await commit("v1", "paced");
      const started = performance.now();
      const good = await repo.push();
      const ended = performance.now();
      assertEquals(good.code, 0, good.output);
      const passed = good.output.split("\n").filter((line) => /✓ canary +\d+% passed/.test(line));
      assertEquals(passed.length, 3, good.output);
      assertMatch(passed[0], /new \d+ req, 5xx 0%, p95 \d+ ms; old \d+ req, 5xx 0%, p95 \d+ ms/);
      assertMatch(good.output, /gate: http:\/\/127\.0\.0\.1:\d+ answers v1/); // DEPLOY_URL is the new slot
      let s = await status(server, app);
      assertEquals([s.version, s.canary?.state, s.canary?.step, s.canary?.steps], [
        s.commit?.slice(0, 7),
        "promoted",
        3,
        [5, 25, 50],
      ]);
      // The canary client saw v1 during the canary; the stable client only v0 until the switch.
      // Until the final switch began: its deploy.log line says when it ended and how long it took (wall clock).
      const switched = (await deployLog(server, app)).findLast((event) => event.event === "switch")!;
      const switchAt = Date.parse(switched.time as string) - (switched.duration as number) - performance.timeOrigin;
      const during = (load: LoadGenerator) => load.bodiesBetween(started + 500, switchAt);
      assert(during(canary).has("v1"), `canary client: ${[...during(canary)]}`);
      assertEquals([...during(stable)], ["v0"]);
      // Sticky: once the canary client got v1, it got v1 only (5 %, 25 %, 50 %, then everyone).
      const seen = canary.samples.filter((sample) => sample.at <= ended).map((sample) => sample.body);
      assertEquals(new Set(seen.slice(seen.indexOf("v1"))), new Set(["v1"]));
      assertEquals(canary.failures().length + stable.failures().length + browser.failures().length, 0);
      const versions = browser.samples.filter((sample) => sample.at <= ended).map((sample) => sample.body);
      const flips = versions.filter((body, i) => i > 0 && body !== versions[i - 1]);
      assert(flips.length <= 1 && !flips.includes("v0"), `the cookieless client flipped: ${flips}`);

      // 2. A release with 10 % 500s: reverted at the first step; stable clients see no failure.
      await commit("v2", "some500");
      const before500 = stable.samples.length;
      const bad = await repo.push();
      assert(bad.code !== 0, bad.output);
      assertMatch(bad.output, /deploy failed at canary; rolled back/);
      assertMatch(bad.output, /✗ canary +5% fails: 5xx rate [\d.]+% on the new release against 0% on the old/);
      s = await status(server, app);
      assertEquals([s.status, s.canary?.state, s.canary?.step, s.lastDeploy.step], [
        "rolled_back",
        "reverted",
        1,
        "canary",
      ]);
      assertMatch(s.canary!.reason!, /^reverted at 5%: 5xx rate/);
      const bad2 = (await releases(server, app)).at(-1)!;
      assertEquals((await readReleaseMeta(paths, bad2))?.bad, true);
      assertEquals(stable.failures().length, 0, JSON.stringify(stable.failures().slice(0, 3)));
      assert(stable.samples.length > before500 + 20, "the stable client kept being served");
      assert(canary.failures().length > 0, "the canary client met the 500s");
      await repo.git(["reset", "--quiet", "--hard", "HEAD~1"]);

      // 3. A release 3× slower: reverted on latency.
      await commit("v3", "slow");
      const slow = await repo.push();
      assert(slow.code !== 0, slow.output);
      assertMatch(slow.output, /✗ canary +5% fails: p95 latency \d+ ms on the new release against \d+ ms on the old/);
      assertEquals((await status(server, app)).canary?.state, "reverted");
      await repo.git(["reset", "--quiet", "--hard", "HEAD~1"]);

      // 4. A failing gate: nothing switched, the new slot stopped.
      await commit("v4", "paced", { "gate-fails": "" });
      const kept = await releases(server, app);
      const gated = await repo.push();
      assert(gated.code !== 0, gated.output);
      assertMatch(gated.output, /deploy failed at gate/);
      assertMatch(gated.output, /nothing was switched/);
      s = await status(server, app);
      // This deploy's own outcome (status stays "rolled_back" from case 3: nothing switched since).
      assertEquals([s.lastDeploy.outcome, s.lastDeploy.step, s.lastDeploy.version], [
        "failed",
        "gate",
        s.lastDeploy.commit.slice(0, 7),
      ]);
      assertEquals(await releases(server, app), kept); // the half-made release went
      assertEquals(s.canary, undefined); // the gate failed before its first step
      // 5. `canary <app> abort` by hand, while a slow canary (30 s steps) runs; refused once none runs.
      await repo.git(["reset", "--quiet", "--hard", "HEAD~1"]);
      await repo.python(app, "v5", "paced", {
        health: HEALTH,
        extra: "canary: { steps: [10], interval: 30s }\n",
      });
      const pushing = repo.push();
      const deadline = performance.now() + 30_000;
      while ((await status(server, app)).canary?.state !== "running" && performance.now() < deadline) {
        await new Promise((r) => setTimeout(r, 100));
      }
      const abort = await server.cli(["canary", app, "abort"]);
      assertEquals(abort.code, 0, abort.output);
      assertMatch(abort.output, /canary at 10%, step 1\/1\) will abort it and revert/);
      const aborted = await pushing;
      assert(aborted.code !== 0, aborted.output);
      assertMatch(aborted.output, /✗ canary +aborted by hand at 10% \(`canary cnry abort`\)/);
      assertEquals((await status(server, app)).canary?.state, "aborted");
      const none = await server.cli(["canary", app, "promote"]);
      assertEquals(none.code, 2, none.output);
      assertMatch(none.output, /no canary of cnry runs now/);
      // 6. A deploy killed (SIGKILL) 1 s into its first canary step leaves canary.json; the next deploy ends it.
      await repo.git(["reset", "--quiet", "--hard", "HEAD~1"]);
      await commit("v6", "paced");
      const killed = await run(["git", "push", "production", "main"], {
        cwd: repo.dir,
        env: { ...server.env, DEPLOY_PARADIGM_TEST_KILL: "after:gate+1000" },
      });
      assert(killed.code !== 0, killed.output);
      assert(await readCanary(paths.dir), "the killed deploy left its canary");
      assertEquals((await status(server, app)).canary?.state, "running");
      // Nothing runs it any more: promote is refused, pointing at abort.
      const left = await server.cli(["canary", app, "promote"]);
      assertEquals(left.code, 2, left.output);
      assertMatch(left.output, /left by a deploy that was killed: nothing can promote it/);
      await repo.git(["reset", "--quiet", "--hard", "HEAD~1"]);
      await repo.python(app, "v7", "paced", { health: HEALTH });
      const next = await repo.pushOk();
      assertMatch(
        next.output,
        /the interrupted deploy's canary ended: every request goes to the (blue|green) slot; the (blue|green) slot is stopped/,
      );
      assertEquals(await readCanary(paths.dir), undefined);
      const log = await deployLog(server, app);
      assert(log.some((e) => e.event === "canary" && e.ok === false), "deploy.log has the failed judgements");
      assert(log.some((e) => e.event === "interrupted"), "deploy.log says the killed deploy was interrupted");
    } finally {
      await Promise.all([stable.stop(), canary.stop(), browser.stop()]);
    }
    assertEquals(stable.failures().length, 0, JSON.stringify(stable.failures().slice(0, 3)));
    const served = new Set(stable.samples.map((sample) => sample.body));
    assertEquals([...served].sort(), ["v0", "v1", "v7"]);
  });
});
