/**
 * The deploy pipeline (src/deploy/execute.ts, steps/, strategies/, reconcile.ts, rollback.ts)
 * with injected effects: a fake runner (tests/helpers/fake_runner.ts) instead of processes, a
 * fake proxy control socket, a fake clock. The repository is real (git in a temp dir), and so is
 * the health check: the fake runner's `systemctl restart` starts a tiny HTTP server on the app's
 * (or the slot's) port that answers as the release's `server` file says. No root, no network
 * namespace, nothing really started; each test asserts deploy.log's events, status.json and the
 * commands run.
 * @module
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import {
  APP,
  commit,
  deploy,
  events,
  git,
  logLength,
  releases,
  status,
  withWorld,
  ZEROS,
} from "../helpers/pipeline_world.ts";
import { Cancellation } from "../../src/deploy/cancel.ts";
import { readReleaseMeta } from "../../src/deploy/releases.ts";
import { rollback } from "../../src/deploy/rollback.ts";
import { STRATEGY } from "../../src/deploy/strategies/mod.ts";
import { readRoute } from "../../src/proxy/routes.ts";

Deno.test("pipeline: the strategy registry has an implementation for every strategy name", () => {
  assertEquals(Object.keys(STRATEGY).sort(), ["blue-green", "restart"]);
  for (const [name, strategy] of Object.entries(STRATEGY)) assertEquals(strategy.name, name);
});

Deno.test("pipeline: a successful restart deploy runs its steps, moves the branch and writes status.json", async () => {
  await withWorld("restart", async (w) => {
    const sha = await commit(w, "ok");
    const result = await deploy(w, sha, { ref: "refs/heads/main", old: ZEROS });
    assertEquals(result, { ok: true });
    assertEquals(await events(w), [
      "begin",
      "fetch",
      "build",
      "command",
      "env",
      "switch",
      "start",
      "health",
      "branch",
      "cleanup",
      "success",
    ]);
    const [id] = await releases(w);
    assertMatch(id, /^20260101-/); // the injected clock names it
    const s = await status(w);
    assertEquals(
      { status: s.status, healthy: s.healthy, version: s.version, release: s.release, strategy: s.strategy },
      { status: "running", healthy: true, version: sha.slice(0, 7), release: id, strategy: "restart" },
    );
    assertEquals(s.lastDeploy.outcome, "success");
    assertEquals(s.url, `http://127.0.0.1:${w.port}/`);
    assertEquals(await git(w.work, "--git-dir", w.repo, "rev-parse", "refs/heads/main"), sha);
    assertEquals(w.fake.lines(), [
      `python3 -m venv --without-pip venv`,
      "systemctl show --property=MainPID --value alpha.service",
      "systemctl daemon-reload",
      "systemctl enable --quiet alpha.service",
      "systemctl restart alpha.service",
      "systemctl is-active alpha.service",
    ]);
    assertEquals(w.fake.plans[0].files.map((f) => f.path), [join(w.root, "etc/systemd/system/alpha.service")]);
    assert(w.printed.some((line) => line.startsWith(`✓ deployed alpha ${sha.slice(0, 7)} (release ${id})`)));
    assertEquals(await Deno.readLink(w.paths.current), `releases/${id}`);
    assert(!(await readReleaseMeta(w.paths, id))?.pending);
  });
});

Deno.test("pipeline: a build failure switches nothing, removes the release and records the failed step", async () => {
  await withWorld("restart", async (w) => {
    w.fake.fail(["python3", "-m", "venv"], "no venv module here");
    const sha = await commit(w, "ok");
    const result = await deploy(w, sha);
    assertEquals(result, { ok: false, reason: "deploy failed at build" });
    assertEquals(await events(w), ["begin", "fetch", "build✗", "failed✗"]);
    const s = await status(w);
    assertEquals([s.status, s.healthy, s.lastDeploy.outcome, s.lastDeploy.step], ["failed", false, "failed", "build"]);
    assertEquals(await releases(w), []);
    assertEquals(w.fake.ran(["systemctl"]), []);
    assert(w.printed.includes("  nothing was switched: no release serves"));
  });
});

Deno.test("pipeline: a health failure under restart switches back to the release before, which serves again", async () => {
  await withWorld("restart", async (w) => {
    const v1 = await deploy(w, await commit(w, "ok"));
    assert(v1.ok);
    const [first] = await releases(w);
    const from = await logLength(w);
    const sha = await commit(w, "500");
    w.fake.calls.length = 0;
    const result = await deploy(w, sha);
    assertEquals(result, { ok: false, reason: "deploy failed at health; rolled back" });
    assertEquals(await events(w, from), [
      "begin",
      "fetch",
      "build",
      "command",
      "env",
      "switch",
      "start",
      "health✗",
      "rollback",
      "start",
      "health",
      "rolled_back✗",
    ]);
    const s = await status(w);
    assertEquals([s.status, s.healthy, s.release], ["rolled_back", true, first]);
    assertEquals([s.lastDeploy.outcome, s.lastDeploy.step], ["rolled_back", "health"]);
    assertEquals(await releases(w), [first]); // the failed one is gone
    assertEquals(w.fake.ran(["systemctl", "restart"]).length, 2); // the new release, then the one before
    assertEquals(await (await fetch(`http://127.0.0.1:${w.port}/health`)).text(), "ok");
  });
});

Deno.test("pipeline: blue-green starts the idle slot, switches the proxy, watches, then stops the old slot", async () => {
  await withWorld("blue-green", async (w) => {
    assert((await deploy(w, await commit(w, "ok"))).ok);
    const from = await logLength(w);
    w.fake.calls.length = 0;
    w.proxied.length = 0;
    const sha = await commit(w, "ok", [], "200ms");
    assertEquals(await deploy(w, sha), { ok: true });
    assertEquals(await events(w, from), [
      "begin",
      "fetch",
      "build",
      "command",
      "env",
      "start",
      "health",
      "switch",
      "drain",
      "watch",
      "stop",
      "cleanup",
      "success",
    ]);
    const [, second] = await releases(w);
    assertEquals(await readRoute(w.paths.dir), { port: w.slots.green });
    const s = await status(w);
    assertEquals([s.status, s.release, s.slot, s.slotPort, s.watch], [
      "running",
      second,
      "green",
      w.slots.green,
      "passed",
    ]);
    assertEquals(w.fake.lines().filter((line) => line.startsWith("systemctl restart") || line.includes("disable")), [
      "systemctl restart alpha@green.service",
      "systemctl disable --now --quiet alpha@blue.service",
    ]);
    assertEquals(w.proxied.map((r) => r.op), ["status", "reload", "status", "drain"]);
    assertEquals(await (await fetch(`http://127.0.0.1:${w.slots.green}/`)).text(), "ok");
  });
});

Deno.test("pipeline: blue-green reverts to the old slot when the new one fails in the watch window", async () => {
  await withWorld("blue-green", async (w) => {
    assert((await deploy(w, await commit(w, "ok"))).ok);
    const [first] = await releases(w);
    assertEquals(await readRoute(w.paths.dir), { port: w.slots.blue });
    const from = await logLength(w);
    w.fake.calls.length = 0;
    w.proxied.length = 0;
    const sha = await commit(w, "flaky", [], "1s");
    const result = await deploy(w, sha);
    assertEquals(result, { ok: false, reason: "deploy failed at watch; rolled back" });
    assertEquals(await events(w, from), [
      "begin",
      "fetch",
      "build",
      "command",
      "env",
      "start",
      "health",
      "switch",
      "drain",
      "watch✗",
      "drain",
      "stop",
      "revert",
      "rolled_back✗",
    ]);
    assertEquals(await readRoute(w.paths.dir), { port: w.slots.blue }); // traffic is back
    assertEquals(await Deno.readLink(w.paths.current), `releases/${first}`);
    const s = await status(w);
    assertEquals([s.status, s.release, s.watch, s.slot], ["rolled_back", first, "failed", "blue"]);
    assertEquals([s.lastDeploy.outcome, s.lastDeploy.step], ["rolled_back", "watch"]);
    const [, second] = await releases(w);
    assertEquals((await readReleaseMeta(w.paths, second))?.bad, true); // it took traffic: kept, marked bad
    assertEquals(w.fake.lines().filter((line) => line.startsWith("systemctl restart") || line.includes("disable")), [
      "systemctl restart alpha@green.service",
      "systemctl disable --now --quiet alpha@green.service",
    ]);
    assertEquals(w.proxied.map((r) => r.op), ["status", "reload", "status", "drain", "reload", "drain"]);
  });
});

Deno.test("pipeline: a cancelled deploy stops its build, removes the release and records `cancelled`", async () => {
  await withWorld("restart", async (w) => {
    const cancellation = new Cancellation();
    w.fake.on(["python3", "-m", "venv"], { effect: () => cancellation.cancel("the pusher pressed Ctrl-C") });
    const sha = await commit(w, "ok");
    const result = await deploy(w, sha, { cancellation });
    assertEquals(result, { ok: false, reason: "deploy cancelled at build" });
    assertEquals(await events(w), ["begin", "fetch", "build✗", "cancelled✗"]);
    const s = await status(w);
    assertEquals([s.lastDeploy.outcome, s.lastDeploy.step], ["cancelled", "build"]);
    assertEquals(await releases(w), []);
    assert(w.printed.some((line) => /cancelled at step "build" \(the pusher pressed Ctrl-C\)/.test(line)));
    assertEquals(w.fake.ran(["systemctl"]), []);
  });
});

Deno.test("pipeline: a leftover .deploying marker is reconciled first: current and status follow the proxy's route", async () => {
  await withWorld("blue-green", async (w) => {
    assert((await deploy(w, await commit(w, "ok"))).ok);
    const [first] = await releases(w);
    // A deploy killed right after its switch: green serves release `second` (still pending), `current` is behind.
    const killed = await commit(w, "ok");
    const second = "20260101-000100-000";
    await Deno.mkdir(w.paths.release(second));
    const meta = await readReleaseMeta(w.paths, first);
    await Deno.writeTextFile(
      join(w.paths.release(second), ".deploy-paradigm.json"),
      JSON.stringify({ ...meta, id: second, commit: killed, pending: true }),
    );
    await Deno.mkdir(join(w.paths.dir, "slots"), { recursive: true });
    await Deno.remove(join(w.paths.dir, "slots", "green")).catch(() => {});
    await Deno.symlink(`../releases/${second}`, join(w.paths.dir, "slots", "green"));
    await Deno.writeTextFile(join(w.paths.dir, "route.json"), JSON.stringify({ port: w.slots.green }) + "\n");
    await Deno.writeTextFile(
      join(w.paths.dir, ".deploying"),
      JSON.stringify({ commit: killed, pid: 4242, since: "2026-01-01T00:01:00.000Z" }) + "\n",
    );
    const from = await logLength(w);
    w.fake.fail(["python3", "-m", "venv"]); // the next deploy fails: status.json keeps what reconcile found
    const result = await deploy(w, await commit(w, "ok"));
    assert(!result.ok);
    assertEquals((await events(w, from)).slice(0, 2), ["interrupted✗", "begin"]);
    assertEquals(await Deno.readLink(w.paths.current), `releases/${second}`);
    assert(!(await readReleaseMeta(w.paths, second))?.pending);
    const s = await status(w);
    assertEquals([s.release, s.previous, s.version], [second, first, killed.slice(0, 7)]);
    assert(w.printed.some((line) => line.includes(`the deploy of ${killed.slice(0, 7)} (pid 4242`)));
    assert(!(await Deno.stat(join(w.paths.dir, ".deploying")).then(() => true, () => false)));
  });
});

Deno.test("pipeline: rollback restarts the release before in place and marks the one rolled back from bad", async () => {
  await withWorld("restart", async (w) => {
    assert((await deploy(w, await commit(w, "ok"))).ok);
    const second = await commit(w, "ok");
    assert((await deploy(w, second)).ok);
    const [first, latest] = await releases(w);
    const from = await logLength(w);
    w.fake.calls.length = 0;
    assertEquals(await rollback(APP, undefined, w.effects), 0);
    assertEquals(await events(w, from), ["rollback", "switch", "start", "health", "rolled_back"]);
    const s = await status(w);
    assertEquals([s.status, s.release, s.previous], ["running", first, latest]);
    assertEquals([s.lastDeploy.outcome, s.lastDeploy.release, s.lastDeploy.version], [
      "rolled_back",
      latest,
      second.slice(0, 7),
    ]);
    assertEquals((await readReleaseMeta(w.paths, latest))?.bad, true);
    assertEquals(await Deno.readLink(w.paths.current), `releases/${first}`);
    assertEquals(w.fake.ran(["systemctl", "restart"]), [["systemctl", "restart", "alpha.service"]]);
  });
});

Deno.test("pipeline: --dry-run walks the same steps and prints them; nothing runs, nothing changes", async () => {
  await withWorld("restart", async (w) => {
    const sha = await commit(w, "ok", ["hooks: { preDeploy: ./migrate, postDeploy: [./notify, --ok] }"]);
    const result = await deploy(w, sha, { dryRun: true });
    assertEquals(result, { ok: true });
    const release = w.paths.release("<new>");
    assertEquals(w.printed, [
      `deploy-paradigm: dry run of alpha ${sha.slice(0, 7)}; nothing is changed`,
      `would extract ${sha.slice(0, 7)} into ${release}`,
      `would run: python3 -m venv --without-pip venv  (in ${release})`,
      `no ${w.paths.envFile("production")}: the app would get PORT only`,
      `would run: ./migrate  (in ${release})`,
      `would switch ${w.paths.current} → releases/<new>`,
      `would write: ${join(w.root, "etc/systemd/system/alpha.service")}`,
      "would run: systemctl daemon-reload",
      "would run: systemctl enable --quiet alpha.service",
      "would run: systemctl restart alpha.service",
      "would run: systemctl is-active alpha.service",
      `would check http://127.0.0.1:${w.port}/health, else switch back`,
      `would run: ./notify --ok  (in ${release})`,
      "would keep the newest 3 releases",
    ]);
    assertEquals(w.fake.calls, []);
    assertEquals(await Deno.stat(w.paths.releases).then(() => true, () => false), false);
    assertEquals(await Deno.stat(w.paths.deployLog).then(() => true, () => false), false);
  });
});

Deno.test("pipeline: a docker dry run asks the engine (a read-only question) and shows the idle slot's container", async () => {
  await withWorld("blue-green", async (w) => {
    w.fake.on(["docker", "version"], { output: "27.1.0" });
    await Deno.writeTextFile(join(w.work, "deploy.yml"), "name: alpha\ntype: docker\nhealthCheck: /health\n");
    await Deno.writeTextFile(join(w.work, "Dockerfile"), "FROM scratch\n");
    await git(w.work, "add", "-A");
    await git(w.work, "commit", "-q", "-m", "docker");
    const sha = await git(w.work, "rev-parse", "HEAD");
    await git(w.work, "push", "-q", w.repo, "HEAD:refs/heads/incoming");
    assertEquals(await deploy(w, sha, { dryRun: true }), { ok: true });
    const text = w.printed.join("\n");
    assertEquals(w.printed[1], "docker engine 27.1.0 answers");
    assertMatch(text, /would run: docker build .*alpha:<new>/);
    assertMatch(text, new RegExp(`idle blue slot \\(port ${w.slots.blue}\\):[\\s\\S]*docker run .*--name alpha-blue`));
    assertEquals(w.fake.lines(), ["docker version --format {{.Server.Version}}"]); // nothing else ran
    assertEquals(await Deno.stat(w.paths.releases).then(() => true, () => false), false);
  });
});
