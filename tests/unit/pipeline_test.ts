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
  entries,
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
import { UsageError } from "../../src/errors.ts";

/** deploy.log's first events of a deploy, up to its switch. */
const PREPARED = ["begin", "fetch", "build", "command", "env"];

Deno.test("pipeline: the strategy registry has an implementation for every strategy name", () => {
  assertEquals(Object.keys(STRATEGY).sort(), ["blue-green", "restart"]);
  for (const [name, strategy] of Object.entries(STRATEGY)) assertEquals(strategy.name, name);
});

Deno.test("pipeline: the command step names a program of the new release as in the release, not under current/", async () => {
  await withWorld("restart", async (w) => {
    const sha = await commit(w, "ok");
    assertEquals(await deploy(w, sha, { ref: "refs/heads/main", old: ZEROS }), { ok: true });
    const line = w.printed.find((printed) => /\bcommand\b/.test(printed)) ?? "";
    assertMatch(line, /\(server in the release\)$/);
    assert(!line.includes(w.paths.current), line);
  });
});

Deno.test("pipeline: a hook's or a gate's program missing from the release fails the deploy at its command step", async () => {
  for (
    const [extra, what] of [
      [["hooks: { preDeploy: ./scripts/migrate.sh }"], "hooks.preDeploy"],
      [["hooks: { postDeploy: ./notify.sh }"], "hooks.postDeploy"],
      [["gates: [{ command: ./scripts/smoke.sh, timeout: 30s }]"], "gates.0"],
    ] as const
  ) {
    await withWorld("blue-green", async (w) => {
      const sha = await commit(w, "ok", [...extra]);
      assertEquals(await deploy(w, sha), { ok: false, reason: "deploy failed at command" });
      assertEquals(await events(w), ["begin", "fetch", "build", "command✗", "failed✗"]);
      const program = /\.\/[a-z/]+\.sh/.exec(extra[0])![0];
      assert(
        w.printed.some((line) => line.includes(`${what}: the command's program ${program} is not in the release`)),
        w.printed.join("\n"),
      );
      assertEquals(w.fake.ran(["systemctl"]).filter((argv) => argv[1] !== "show"), []); // nothing started
    });
  }
});

Deno.test("pipeline: a deploy refuses an instance's port that an app that serves has (exit 2, both named), nothing changed", async () => {
  await withWorld("blue-green", async (w) => {
    // beta serves (its current link) on its own port; alpha's config.yml names that port for a web instance.
    const beta = join(w.root, "opt/deployments/beta");
    await Deno.mkdir(join(beta, "releases/r1"), { recursive: true });
    await Deno.symlink("releases/r1", join(beta, "current"));
    await Deno.writeTextFile(join(beta, "config.yml"), "port: 19810\nmanager: pm2\n");
    const config = await Deno.readTextFile(w.paths.config);
    for (const [line, key] of [["instancePorts: { blue: [19810] }", "instancePorts.blue.0"]] as const) {
      await Deno.writeTextFile(w.paths.config, `${config}${line}\n`);
      const from = await logLength(w);
      const error = await deploy(w, await commit(w, "ok")).catch((e) => e);
      assert(error instanceof UsageError, String(error));
      assertEquals(
        error.message,
        `app "alpha" (${w.paths.config} ${key}) cannot have port 19810: app "beta" has it already ` +
          `(${join(beta, "config.yml")})`,
      );
      assertMatch(error.suggestion ?? "", /remove instancePorts: from config\.yml, and the deploy chooses free ones/);
      assertEquals(await logLength(w), from, "nothing recorded");
      assertEquals(await releases(w).catch(() => []), [], "no release made");
      assertEquals(await Deno.readTextFile(w.paths.config), `${config}${line}\n`, "config.yml unchanged");
    }
  });
});

Deno.test("pipeline: a successful restart deploy runs its steps, moves the branch and writes status.json", async () => {
  await withWorld("restart", async (w) => {
    const sha = await commit(w, "ok");
    const result = await deploy(w, sha, { ref: "refs/heads/main", old: ZEROS });
    assertEquals(result, { ok: true });
    assertEquals(await events(w), [
      ...PREPARED,
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
      "systemctl show --property=Id,MainPID,ActiveState,NRestarts,LoadState alpha.service", // whose the port is
      "systemctl show --property=Id,MainPID,ActiveState,NRestarts,LoadState alpha.service", // status.json's processes
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
    assertEquals(w.fake.ran(["systemctl"]).filter((argv) => argv[1] !== "show"), []); // only status.json's read
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
      ...PREPARED,
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
      ...PREPARED,
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
      ...PREPARED,
      "start",
      "health",
      "switch",
      "drain",
      "watch✗",
      "revert", // traffic back first, then the slot it left drained and stopped: in the order they happen
      "drain",
      "stop",
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
    assertEquals(w.fake.ran(["systemctl"]).filter((argv) => argv[1] !== "show"), []); // only status.json's read
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
    assertEquals([s.slot, s.slotPort, s.healthy], ["green", w.slots.green, true], "the slot routed to, not blue");
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

Deno.test("pipeline: a dry run says which running workers the deploy would stop, as the manager names them", async () => {
  await withWorld("blue-green", async (w) => {
    // Running now (as the last sync recorded them): mailer ×2 and cleaner ×1; the new release has mailer ×1 only.
    await Deno.writeTextFile(
      join(w.paths.dir, "workers.json"),
      JSON.stringify([{ type: "mailer", instances: 2 }, { type: "cleaner", instances: 1 }]),
    );
    const sha = await commit(w, "ok", ["processes:", "  mailer: { command: ./server, instances: 1 }"]);
    assertEquals(await deploy(w, sha, { dryRun: true }), { ok: true });
    const line = w.printed.find((printed) => printed.startsWith("would restart the workers")) ?? "";
    assertMatch(line, /; running now: mailer ×2, cleaner ×1; would stop alpha-mailer@2, alpha-cleaner@1$/);
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

Deno.test("pipeline: a secret of .env.<env> in a build's output is printed and recorded as [redacted]", async () => {
  await withWorld("restart", async (w) => {
    const secret = "hunter2-s3cr3t-token";
    await Deno.writeTextFile(w.paths.envFile("production"), `API_TOKEN=${secret}\n`, { mode: 0o600 });
    // The build's output reaches the journal (through the runner's sink), and so does a failure's tail.
    w.fake.on(["python3", "-m", "venv"], { output: `resolving with token ${secret}\nsecond line` });
    assert((await deploy(w, await commit(w, "ok"))).ok);
    assert(w.printed.includes("    resolving with token [redacted]"), w.printed.join("\n"));
    assert(w.printed.includes("    second line"));
    const from = await logLength(w);
    w.fake.fail(["python3", "-m", "venv"], `cannot use ${secret}`);
    assert(!(await deploy(w, await commit(w, "ok"))).ok);
    assertEquals(await events(w, from), ["begin", "fetch", "build✗", "failed✗"]);
    assert(w.printed.includes("    cannot use [redacted]"));
    const s = await status(w);
    assertEquals([s.lastDeploy.outcome, s.lastDeploy.step], ["failed", "build"]);
    for (const text of [w.printed.join("\n"), await Deno.readTextFile(w.paths.deployLog), JSON.stringify(s)]) {
      assert(!text.includes(secret));
    }
    assertMatch((await entries(w, from))[2].message!, /\[redacted\]/);
    assertEquals(w.fake.ran(["python3"]).length, 2);
  });
});

Deno.test("pipeline: PORT and DEPLOY_ENV in .env.<env> are left out of the release's .env, and said (ours win under every manager)", async () => {
  await withWorld("restart", async (w) => {
    const env = "API_TOKEN=hunter2-s3cr3t-token\nPORT=9999 # public\nDEPLOY_ENV=staging # public\n";
    await Deno.writeTextFile(w.paths.envFile("production"), env, { mode: 0o600 });
    assert((await deploy(w, await commit(w, "ok"))).ok);
    const [release] = await releases(w);
    const written = await Deno.readTextFile(join(w.paths.releases, release, ".env"));
    assertMatch(written, /^API_TOKEN='hunter2-s3cr3t-token'$/m);
    assert(!/PORT|DEPLOY_ENV/.test(written), written);
    assert(
      w.printed.some((line) =>
        line.startsWith(`! ${w.paths.envFile("production")} sets PORT and DEPLOY_ENV, which deploy-paradigm sets`)
      ),
      w.printed.join("\n"),
    );
  });
});

Deno.test("pipeline: after a restart deploy killed between its switch and its restart, current follows the running process", async () => {
  await withWorld("restart", async (w) => {
    const v1 = await commit(w, "ok");
    assert((await deploy(w, v1)).ok);
    const [first] = await releases(w);
    // The killed deploy: release `second` made and switched to (`current`), never restarted: first's process runs.
    const killed = await commit(w, "ok");
    const second = "20260101-000100-000"; // a minute after the first (the fake clock's time)
    await Deno.mkdir(w.paths.release(second));
    const meta = await readReleaseMeta(w.paths, first);
    await Deno.writeTextFile(
      join(w.paths.release(second), ".deploy-paradigm.json"),
      JSON.stringify({ ...meta, id: second, commit: killed, pending: false }),
    );
    await Deno.remove(w.paths.current);
    await Deno.symlink(`releases/${second}`, w.paths.current);
    await Deno.writeTextFile(
      join(w.paths.dir, ".deploying"),
      JSON.stringify({ commit: killed, pid: 4242, since: "2026-01-01T01:00:00.000Z" }) + "\n",
    );
    // The app's process, as systemd would name it: a real one whose working directory is the first release.
    const sleeper = new Deno.Command("sleep", { args: ["60"], cwd: await Deno.realPath(w.paths.release(first)) })
      .spawn();
    try {
      w.fake.on(["systemctl", "show"], { output: String(sleeper.pid) });
      const from = await logLength(w);
      w.fake.calls.length = 0;
      const v3 = await commit(w, "ok");
      assertEquals(await deploy(w, v3), { ok: true });
      const log = await entries(w, from);
      assertEquals(log.map((e) => e.ok === false ? `${e.event}✗` : e.event), [
        "interrupted✗",
        ...PREPARED,
        "switch",
        "start",
        "health",
        "cleanup",
        "success",
      ]);
      assertEquals(
        log[0].message,
        `the deploy of ${killed.slice(0, 7)} (pid 4242, since 2026-01-01T01:00:00.000Z) was interrupted; ` +
          `release ${first} (${v1.slice(0, 7)}) serves`,
      );
      const [, third] = await releases(w);
      // Reconcile moved `current` back to the running release and made the killed one pending again: cleanup took it.
      assertEquals(await releases(w), [first, third]);
      assertEquals(log[9].message, `removed ${second}`);
      const s = await status(w);
      assertEquals([s.status, s.release, s.previous, s.version], ["running", third, first, v3.slice(0, 7)]);
      assertEquals(w.fake.lines().slice(0, 3), [
        "systemctl show --property=MainPID --value alpha.service", // recover: which release runs
        "systemctl show --property=Id,MainPID,ActiveState,NRestarts,LoadState alpha.service", // status.json
        "python3 -m venv --without-pip venv",
      ]);
      assertEquals(w.fake.ran(["systemctl", "restart"]), [["systemctl", "restart", "alpha.service"]]);
      assertEquals(await Deno.readLink(w.paths.current), `releases/${third}`);
    } finally {
      sleeper.kill();
      await sleeper.status;
    }
  });
});

Deno.test("pipeline: a blue-green release that fails its health check in the idle slot switches nothing and goes", async () => {
  await withWorld("blue-green", async (w) => {
    const v1 = await commit(w, "ok");
    assert((await deploy(w, v1)).ok);
    const [first] = await releases(w);
    const before = await status(w);
    const from = await logLength(w);
    w.fake.calls.length = 0;
    w.proxied.length = 0;
    const result = await deploy(w, await commit(w, "500"));
    assertEquals(result, { ok: false, reason: "deploy failed at health" });
    assertEquals(await events(w, from), [
      ...PREPARED,
      "start",
      "health✗",
      "stop",
      "failed✗",
    ]);
    assertEquals(await readRoute(w.paths.dir), { port: w.slots.blue }); // the route never moved
    assertEquals(await Deno.readLink(w.paths.current), `releases/${first}`);
    assertEquals(await releases(w), [first]); // the failed release is gone
    const s = await status(w);
    assertEquals({ ...s, lastDeploy: before.lastDeploy }, before); // what serves is as it was
    assertEquals([s.lastDeploy.outcome, s.lastDeploy.step], ["failed", "health"]);
    assertEquals(w.fake.lines().filter((line) => line.startsWith("systemctl restart") || line.includes("disable")), [
      "systemctl restart alpha@green.service",
      "systemctl disable --now --quiet alpha@green.service",
    ]);
    assertEquals(w.proxied.map((r) => r.op), ["status"]); // the preflight only: nothing was switched
    assert(w.printed.includes(`  nothing was switched: ${v1.slice(0, 7)} still serves`));
    assertEquals(await (await fetch(`http://127.0.0.1:${w.slots.blue}/`)).text(), "ok");
  });
});

Deno.test("pipeline: a restart deploy cancelled after its switch switches back and records `cancelled`", async () => {
  await withWorld("restart", async (w) => {
    assert((await deploy(w, await commit(w, "ok"))).ok);
    const [first] = await releases(w);
    const from = await logLength(w);
    w.fake.calls.length = 0;
    const cancellation = new Cancellation();
    // The pusher presses Ctrl-C while the manager restarts the app: after the switch, before the health check.
    w.fake.on(["systemctl", "restart"], { times: 1, effect: () => cancellation.cancel("the pusher pressed Ctrl-C") });
    const sha = await commit(w, "ok");
    const result = await deploy(w, sha, { cancellation });
    const log = await entries(w, from);
    // (seen once in a full run: "nothing healthy serves", cause unknown: the log says what the checks met;
    // node:assert shows only a given message, so it has the result too)
    assertEquals(
      result,
      { ok: false, reason: "deploy cancelled at health; rolled back" },
      JSON.stringify({ result, log }),
    );
    assertEquals(log.map((e) => e.ok === false ? `${e.event}✗` : e.event), [
      ...PREPARED,
      "switch",
      "start", // cancelled while it ran: the health check does not start
      "rollback",
      "start",
      "health",
      "cancelled✗",
    ]);
    assertEquals(log.slice(7, 10).map((e) => e.release), [first, first, first]); // switching back names it
    const s = await status(w);
    assertEquals([s.status, s.healthy, s.release], ["rolled_back", true, first]);
    assertEquals([s.lastDeploy.outcome, s.lastDeploy.step], ["cancelled", "health"]);
    assertEquals(await releases(w), [first]); // it serves nowhere: removed
    assertEquals(await Deno.readLink(w.paths.current), `releases/${first}`);
    assertEquals(w.fake.ran(["systemctl", "restart"]).length, 2); // the new release, then the one before
    assert(w.printed.some((line) => /cancelled at step "health" \(the pusher pressed Ctrl-C\)/.test(line)));
    assertEquals(
      await git(w.work, "--git-dir", w.repo, "rev-parse", "--verify", "-q", "refs/heads/main").catch(() => ""),
      "",
    );
  });
});

Deno.test("pipeline: blue-green rollback starts the release before in the idle slot and moves the route to it", async () => {
  await withWorld("blue-green", async (w) => {
    assert((await deploy(w, await commit(w, "ok"))).ok);
    const second = await commit(w, "ok");
    assert((await deploy(w, second)).ok);
    const [first, latest] = await releases(w);
    assertEquals(await readRoute(w.paths.dir), { port: w.slots.green });
    const from = await logLength(w);
    w.fake.calls.length = 0;
    w.proxied.length = 0;
    assertEquals(await rollback(APP, undefined, w.effects), 0);
    assertEquals(await events(w, from), ["rollback", "start", "health", "switch", "drain", "stop", "rolled_back"]);
    assertEquals(await readRoute(w.paths.dir), { port: w.slots.blue });
    assertEquals(await Deno.readLink(w.paths.current), `releases/${first}`);
    const s = await status(w);
    assertEquals([s.status, s.healthy, s.release, s.previous, s.slot, s.slotPort], [
      "running",
      true,
      first,
      latest,
      "blue",
      w.slots.blue,
    ]);
    assertEquals([s.lastDeploy.outcome, s.lastDeploy.release, s.lastDeploy.version], [
      "rolled_back",
      latest,
      second.slice(0, 7),
    ]);
    assertEquals((await readReleaseMeta(w.paths, latest))?.bad, true);
    assertEquals(w.fake.lines().filter((line) => line.startsWith("systemctl restart") || line.includes("disable")), [
      "systemctl restart alpha@blue.service",
      "systemctl disable --now --quiet alpha@green.service",
    ]);
    assertEquals(w.proxied.map((r) => r.op), ["status", "reload", "status", "drain"]); // the proxy answers first
    assertEquals(await (await fetch(`http://127.0.0.1:${w.slots.blue}/`)).text(), "ok");
  });
});

Deno.test("pipeline: a failed restart rollback restores the release it started from, as before", async () => {
  await withWorld("restart", async (w) => {
    assert((await deploy(w, await commit(w, "ok"))).ok);
    const second = await commit(w, "ok");
    assert((await deploy(w, second)).ok);
    const [first, latest] = await releases(w);
    await Deno.writeTextFile(join(w.paths.release(first), "server"), "500\n"); // the target no longer answers
    const before = await status(w);
    const from = await logLength(w);
    const printedFrom = w.printed.length;
    w.fake.calls.length = 0;
    assertEquals(await rollback(APP, undefined, w.effects), 1);
    const log = await entries(w, from);
    assertEquals(log.map((e) => e.ok === false ? `${e.event}✗` : e.event), [
      "rollback",
      "switch",
      "start",
      "health✗",
      "switch",
      "start",
      "health",
      "rollback_failed✗",
    ]);
    // Every event is the rollback's (to `first`), the restore's too; the restore is its `switch` back.
    assertEquals(log.map((e) => e.release), Array(8).fill(first));
    assertEquals(log[4].message, `current → releases/${latest}`);
    const printed = w.printed.slice(printedFrom);
    assertEquals(printed.at(-2), `✗ rollback of alpha to ${first} failed; ${latest} serves`);
    // `rollback` alone would pick `first` again, and nothing is older: the last line says so.
    assertMatch(printed.at(-1)!, new RegExp(`picks release ${first} again, and no good release is older`));
    assert(!printed.some((line) => line.startsWith("↺")), printed.join("\n"));
    // status.json: what serves as before; its last deploy says the rollback failed, and why.
    const { lastDeploy, ...after } = await status(w);
    const { lastDeploy: _, ...unchanged } = before;
    assertEquals(after, unchanged);
    assertEquals([lastDeploy?.outcome, lastDeploy?.step, lastDeploy?.release], ["failed", "rollback", first]);
    assertMatch(lastDeploy?.message ?? "", /^rollback to release \S+ failed: .*did not answer 2xx/);
    assertEquals(await Deno.readLink(w.paths.current), `releases/${latest}`);
    assert(!(await readReleaseMeta(w.paths, latest))?.bad);
    assertEquals(w.fake.ran(["systemctl", "restart"]), [
      ["systemctl", "restart", "alpha.service"],
      ["systemctl", "restart", "alpha.service"],
    ]);
    assertEquals(await (await fetch(`http://127.0.0.1:${w.port}/`)).text(), "ok");
  });
});

Deno.test("pipeline: a push that waited while a rollback moved the branch back deploys when it contains where the branch is; a sibling is refused", async () => {
  await withWorld("restart", async (w) => {
    const main = "refs/heads/main";
    const tip = () => git(w.repo, "rev-parse", main);
    const c1 = await commit(w, "ok");
    assert((await deploy(w, c1, { ref: main, old: ZEROS })).ok);
    const c2 = await commit(w, "ok");
    assert((await deploy(w, c2, { ref: main, old: c1 })).ok);
    assertEquals(await rollback(APP, undefined, w.effects), 0);
    assertEquals(await tip(), c1, "the branch followed the rollback");
    // Pushed on top of c2 before the rollback moved the branch: it waited, and c1 is in its history.
    const c3 = await commit(w, "ok");
    assert((await deploy(w, c3, { ref: main, old: c2 })).ok);
    assertEquals([await tip(), (await status(w)).commit], [c3, c3]);
    // A sibling of c3 pushed on top of c2 meanwhile: the branch's c3 is not in it.
    await git(w.work, "reset", "--quiet", "--hard", c2);
    const c4 = await commit(w, "ok");
    const sibling = await deploy(w, c4, { ref: main, old: c2 });
    assertEquals(sibling.ok, false);
    assertMatch(sibling.reason!, /^main moved to [0-9a-f]{7} while this push waited; fetch, merge and push again$/);
    assertEquals(await tip(), c3);
  });
});

Deno.test("pipeline: rollback leaves a branch that moved since where it is, with a ! line; a never-pushed app has none to move", async () => {
  await withWorld("restart", async (w) => {
    const main = "refs/heads/main";
    const c1 = await commit(w, "ok");
    assert((await deploy(w, c1, { ref: main, old: ZEROS })).ok);
    const c2 = await commit(w, "ok");
    assert((await deploy(w, c2, { ref: main, old: c1 })).ok);
    const elsewhere = await commit(w, "ok"); // the branch moved by hand, never deployed
    await git(w.repo, "update-ref", main, elsewhere, c2);
    const printedFrom = w.printed.length;
    assertEquals(await rollback(APP, undefined, w.effects), 0);
    assertEquals(await git(w.repo, "rev-parse", main), elsewhere);
    const printed = w.printed.slice(printedFrom);
    assert(
      printed.includes(
        `! main stays at ${elsewhere.slice(0, 7)}: it is not at ${c2.slice(0, 7)}, the commit rolled away from`,
      ),
      printed.join("\n"),
    );
    assert(!printed.some((line) => line.startsWith("✓ branch")), printed.join("\n"));
  });
  await withWorld("restart", async (w) => {
    for (let i = 0; i < 2; i++) assert((await deploy(w, await commit(w, "ok"))).ok); // by `execute`, no branch
    const printedFrom = w.printed.length;
    assertEquals(await rollback(APP, undefined, w.effects), 0);
    const printed = w.printed.slice(printedFrom);
    assert(!printed.some((line) => /branch|main/.test(line)), printed.join("\n"));
  });
});

Deno.test("pipeline: a rollback whose status.json cannot be read stops before it begins: nothing logged, nothing switched", async () => {
  await withWorld("restart", async (w) => {
    for (let i = 0; i < 2; i++) assert((await deploy(w, await commit(w, "ok"))).ok);
    const [, latest] = await releases(w);
    await Deno.writeTextFile(w.paths.status, '{"name": "alpha", "status": ');
    const from = await logLength(w);
    const error = await rollback(APP, undefined, w.effects).catch((e) => e);
    assertMatch(String(error?.message), /status\.json is not valid JSON/);
    assertEquals(await logLength(w), from, "no rollback event without its end");
    assertEquals(await Deno.readLink(w.paths.current), `releases/${latest}`);
  });
});

Deno.test("pipeline: a rollback of an app never deployed says so (exit 2), not that no release is before the serving one", async () => {
  await withWorld("restart", async (w) => {
    const error = await rollback(APP, undefined, w.effects).catch((e) => e);
    assert(error instanceof UsageError, String(error));
    assertEquals(error.message, `${APP} has no serving release to roll back from`);
    assertEquals(error.suggestion, "it was never deployed: push to deploy it");
  });
});

Deno.test("pipeline: a rollback makes the deploy branch the one of the release gone to (its deploy.yml's), as a push of it would", async () => {
  await withWorld("restart", async (w) => {
    const c1 = await commit(w, "ok");
    assert((await deploy(w, c1, { ref: "refs/heads/main", old: ZEROS })).ok);
    const [first] = await releases(w);
    const c2 = await commit(w, "ok", ["branch: prod"]);
    assert((await deploy(w, c2, { ref: "refs/heads/main", old: c1 })).ok);
    assertEquals((await status(w)).branch, "prod");
    const c3 = await commit(w, "ok", ["branch: prod"]);
    assert((await deploy(w, c3, { ref: "refs/heads/prod", old: ZEROS })).ok);
    const printedFrom = w.printed.length;
    assertEquals(await rollback(APP, first, w.effects), 0);
    assertEquals([(await status(w)).branch, (await status(w)).commit], ["main", c1]);
    const printed = w.printed.slice(printedFrom);
    assert(
      printed.includes(`  deploy branch: prod → main (the deploy.yml of release ${first}); pushes to main deploy`),
    );
    assert(!printed.some((line) => line.startsWith("!")), printed.join("\n"));
    assertEquals((await readReleaseMeta(w.paths, first))?.branch, "main");
    // A push to prod that waited for the lock meanwhile: prod is no longer the deploy branch.
    const c4 = await commit(w, "ok", ["branch: prod"]);
    const late = await deploy(w, c4, { ref: "refs/heads/prod", old: c3 });
    assertEquals(late, { ok: false, reason: "the deploy branch became main while this push waited: push to main" });
    assertEquals((await status(w)).commit, c1);
  });
});
