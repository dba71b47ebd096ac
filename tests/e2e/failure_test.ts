/**
 * End to end: failed deploys. Real pushes, real PM2, real apps that misbehave.
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { AppRepo, SHORT_HEALTH } from "../helpers/apps.ts";
import { freePort, get, run, withServer } from "../helpers/server.ts";
import { branchHead, current, deployLog, releases, snapshot, status } from "../helpers/state.ts";

Deno.test("a deploy that fails its health check (500, crash, never listens) is rolled back", async () => {
  await withServer(async (server) => {
    const [pyPort, nodePort] = [freePort(), freePort()];
    // The restart strategy: switch, restart, check, and switch back on failure. (Blue-green
    // failures never take traffic: see zero_downtime_test.ts.)
    const py = await AppRepo.create(server, "py", await server.setupApp("py", { port: pyPort, strategy: "restart" }));
    const node = await AppRepo.create(
      server,
      "node",
      await server.setupApp("node", { port: nodePort, strategy: "restart" }),
    );
    const good = { py: await py.python("py", "py-v1"), node: await node.node("node", "node-v1") };
    await py.pushOk();
    await node.pushOk();
    const serving = { py: (await status(server, "py")).release, node: (await status(server, "node")).release };

    const cases = [
      { app: "py" as const, repo: py, port: pyPort, mode: "500" as const, problem: /answered 500/ },
      // The app's own last words reach the pusher.
      { app: "py" as const, repo: py, port: pyPort, mode: "crash" as const, problem: /crashing on purpose/ },
      { app: "node" as const, repo: node, port: nodePort, mode: "nolisten" as const, problem: /connection refused/ },
    ];
    for (const c of cases) {
      const bad = c.app === "py"
        ? await c.repo.python(c.app, `bad-${c.mode}`, c.mode, { health: SHORT_HEALTH })
        : await c.repo.node(c.app, `bad-${c.mode}`, c.mode, { health: SHORT_HEALTH });
      const push = await c.repo.push();
      assert(push.code !== 0, `push of a ${c.mode} app must fail:\n${push.output}`);
      assertMatch(push.output, /\[remote rejected\] main -> main \(deploy failed at health; rolled back\)/);
      assertMatch(push.output, c.problem);
      assertMatch(push.output, /↺ rolled back: release/);
      // The previous version answers, from the same release, and the branch did not move.
      assertEquals(await get(`http://127.0.0.1:${c.port}/`), { status: 200, body: `${c.app}-v1` });
      assertEquals(await current(server, c.app), `releases/${serving[c.app]}`);
      assertEquals(await branchHead(server, c.app), good[c.app]);
      assertEquals(await releases(server, c.app), [serving[c.app]!], "the failed release is removed");
      const st = await status(server, c.app);
      assertEquals([st.status, st.healthy, st.commit, st.release], ["rolled_back", true, good[c.app], serving[c.app]]);
      assertEquals([st.lastDeploy.outcome, st.lastDeploy.step, st.lastDeploy.commit], ["rolled_back", "health", bad]);
      assertMatch(st.lastDeploy.message!, c.problem);
      // The rollback's events name the release that serves again; the outcome names the failed one.
      const log = (await deployLog(server, c.app)).slice(-4);
      assertEquals(log.map((e) => e.event), ["rollback", "start", "health", "rolled_back"]);
      assertEquals(log.map((e) => e.release === serving[c.app]), [true, true, true, false]);
    }
    // The next good push just works.
    await py.python("py", "py-v3");
    await py.pushOk();
    assertEquals(await get(`http://127.0.0.1:${pyPort}/`), { status: 200, body: "py-v3" });
  });
});

Deno.test("a first deploy that fails leaves nothing running and says so", async () => {
  await withServer(async (server) => {
    const port = freePort();
    const repo = await AppRepo.create(server, "first", await server.setupApp("first", { port, strategy: "restart" }));
    await repo.python("first", "v1", "500", { health: SHORT_HEALTH });
    const push = await repo.push();
    assert(push.code !== 0);
    assertMatch(push.output, /no previous release to go back to; the app is stopped/);
    const st = await status(server, "first");
    assertEquals([st.status, st.healthy, st.lastDeploy.outcome], ["failed", false, "rolled_back"]);
    assertEquals(await current(server, "first"), undefined);
    assert("error" in await get(`http://127.0.0.1:${port}/`), "the failed app must be stopped");
    assertEquals(await branchHead(server, "first"), "");
  });
});

Deno.test("a public port another program holds: setup says so, and the deploy that cannot be served names why", async () => {
  await withServer(async (server) => {
    const port = freePort();
    const holder = Deno.listen({ hostname: "127.0.0.1", port }); // another program's
    try {
      const setup = await server.cli(
        ["setup", "busy", "--port", String(port), "--manager", "pm2", "--proxy-host", "127.0.0.1", "--yes"],
      );
      assertEquals(setup.code, 0, setup.output);
      assertMatch(setup.stdout, new RegExp(`! port ${port} is in use on this server right now`));
      const repo = await AppRepo.create(server, "busy", server.paths("busy").repo);
      await repo.python("busy", "v1");
      const push = await repo.push();
      assert(push.code !== 0, push.output);
      assertMatch(
        push.output,
        new RegExp(`the proxy does not serve busy as asked \\(cannot listen on 127\\.0\\.0\\.1:${port} `),
      );
      assertMatch(push.output, /Address already in use/);
      // status says it too, and exits 1.
      const shown = await server.cli(["status"]);
      assertEquals(shown.code, 1, shown.output);
      assertMatch(
        shown.output,
        new RegExp(`\\n! proxy: busy: cannot listen on 127\\.0\\.0\\.1:${port} for busy: .*Address already in use`),
      );
    } finally {
      holder.close();
    }
  });
});

Deno.test("status names an app the proxy skips for a port another app has (a config.yml edited by hand), and exits 1", async () => {
  await withServer(async (server) => {
    const port = freePort();
    await server.setupApp("one", { port });
    await server.setupApp("two", { port }); // by hand: one's port
    const skipped = new RegExp(`\\n! proxy: skipping two: port ${port} is already one's\\n`);
    let shown = await server.cli(["status"]);
    // The proxy reads config.yml files every 2 s.
    for (let tries = 0; tries < 30 && !skipped.test(shown.stdout); tries++) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      shown = await server.cli(["status"]);
    }
    assertMatch(shown.stdout, skipped);
    assertEquals(shown.code, 1, shown.output);
    // Of one app: its own problems and the proxy's, not another app's.
    const one = await server.cli(["status", "one"]);
    assert(!one.output.includes("skipping two"), one.output);
    assertMatch((await server.cli(["status", "two"])).output, skipped);
    // Fixed: the line goes.
    await Deno.writeTextFile(server.paths("two").config, `port: ${freePort()}\nmanager: pm2\n`);
    for (let tries = 0; tries < 30 && skipped.test(shown.stdout); tries++) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      shown = await server.cli(["status"]);
    }
    assert(!shown.output.includes("skipping two"), shown.output);
  });
});

Deno.test("a failing preDeploy hook leaves current untouched", async () => {
  await withServer(async (server) => {
    const port = freePort();
    const repo = await AppRepo.create(server, "hook", await server.setupApp("hook", { port }));
    await repo.python("hook", "v1");
    await repo.pushOk();
    const before = await current(server, "hook");
    const bad = await repo.python("hook", "v2", "ok", {
      extra: "hooks:\n  preDeploy: ./migrate.sh --strict\n",
      files: { "migrate.sh": '#!/bin/sh\necho "migrating with $1"\necho "migration 42 failed" >&2\nexit 3\n' },
    });
    const push = await repo.push();
    assert(push.code !== 0, push.output);
    assertMatch(push.output, /✗ preDeploy .*`\.\/migrate\.sh --strict` exited with code 3/);
    assertMatch(push.output, /migration 42 failed/);
    assertMatch(push.output, /nothing was switched: [0-9a-f]{7} still serves/);
    assertEquals(await current(server, "hook"), before);
    assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: "v1" });
    const st = await status(server, "hook");
    assertEquals([st.status, st.lastDeploy.outcome, st.lastDeploy.step, st.lastDeploy.commit], [
      "running",
      "failed",
      "preDeploy",
      bad,
    ]);
    assertEquals((await releases(server, "hook")).length, 1);

    // A failing build: same guarantees, and the step names the command and its last lines.
    await repo.python("hook", "v3", "ok", {
      extra: "build: [sh, -c, 'echo compiling; echo syntax error >&2; exit 7']\n",
    });
    const build = await repo.push();
    assert(build.code !== 0, build.output);
    assertMatch(build.output, /✗ build .*`sh -c 'echo compiling; echo syntax error >&2; exit 7'` exited with code 7/);
    assertMatch(build.output, /syntax error/);
    assertEquals(await current(server, "hook"), before);
    assertEquals((await status(server, "hook")).lastDeploy.step, "build");
    assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: "v1" });
  });
});

Deno.test("a broken deploy.yml gives a clear message and changes nothing", async () => {
  await withServer(async (server) => {
    const port = freePort();
    const repo = await AppRepo.create(server, "cfg", await server.setupApp("cfg", { port }));
    const good = await repo.python("cfg", "v1");
    await repo.pushOk();
    const before = await snapshot(server);
    const broken = [
      {
        yml: "name: cfg\ntype: python\nhealthCheck: [/health\n",
        message: /Cannot read deploy\.yml from commit [0-9a-f]{7}:\s+remote:\s+deploy\.yml:3:22: YAML syntax error/,
      },
      {
        yml: "name: cfg\ntype: rust\nhealthCheck: /health\n",
        message: /deploy\.yml:2:7: "type" must be one of python, node, docker, static \(got "rust"\)/,
      },
      {
        yml: "name: cfg\ntype: python\nhealthCheck: /health\nkomand: python app.py\n",
        message: /4:1: "komand" is not a known key; did you mean "command"\?/,
      },
    ];
    for (const { yml, message } of broken) {
      await repo.commit({ "deploy.yml": yml });
      const push = await repo.push();
      assert(push.code !== 0, push.output);
      assertMatch(push.output, message);
      assertMatch(push.output, /\[remote rejected\] main -> main \(Cannot read deploy\.yml/);
      assertEquals(await snapshot(server), before, "nothing changes on disk");
      assertEquals(await branchHead(server, "cfg"), good);
      await repo.git(["reset", "--quiet", "--hard", "HEAD~1"]);
    }
    assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: "v1" });
  });
});

Deno.test("a push naming an app that is not set up says whose repository it is and what to do, and changes nothing", async () => {
  await withServer(async (server) => {
    const repoPath = await server.setupApp("known", { port: freePort() });
    const repo = await AppRepo.create(server, "other", repoPath);
    const before = await snapshot(server);
    await repo.python("unknown-app", "v1");
    const push = await repo.push();
    assert(push.code !== 0);
    // Setting up unknown-app alone would not make this push deploy: the name and the repository disagree.
    assertMatch(push.output, /deploy\.yml names the app "unknown-app", whose repository is \S+unknown-app\.git, not /);
    assertMatch(push.output, /hint: .*fix "name" in deploy\.yml \(for a new app: `deploy-paradigm setup unknown-app` /);
    assertEquals(await snapshot(server), before);
  });
});

Deno.test("execute exits 2 on usage errors and 1 on a failed deploy", async () => {
  await withServer(async (server) => {
    const missing = await server.cli(["execute", server.root, "HEAD"]);
    assertEquals(missing.code, 2);
    assertMatch(missing.stderr, /is not a git repository/);
    const noArgs = await server.cli(["execute"]);
    assertEquals(noArgs.code, 2);
    assertMatch(noArgs.stderr, /"execute" needs <git-dir>/);
    const oldAlone = await server.cli(["execute", server.root, "HEAD", "--old", "abc"]);
    assertEquals(oldAlone.code, 2, oldAlone.output);
    assertMatch(oldAlone.stderr, /--old goes with --ref/);
    const emptyState = await server.cli(["docker-logs", "web-blue", "--state="]);
    assertEquals(emptyState.code, 2, emptyState.output);
    assertMatch(emptyState.stderr, /docker-logs needs --state <file>/);
    const port = freePort();
    const repoPath = await server.setupApp("direct", { port });
    const repo = await AppRepo.create(server, "direct", repoPath);
    const sha = await repo.python("direct", "v1", "500", { health: SHORT_HEALTH });
    // Put the commit into the bare repo without deploying (a branch other than main).
    await repo.push("main:refs/heads/staging");
    const dry = await server.cli(["execute", repoPath, sha, "--dry-run"]);
    assertEquals(dry.code, 0, dry.output);
    assertMatch(dry.stdout, /would run: python3 -m venv --without-pip venv/);
    assertEquals(await releases(server, "direct"), []);
    const failed = await server.cli(["execute", repoPath, sha]);
    assertEquals(failed.code, 1, failed.output);
    // A bad deploy.yml through the CLI: exit 2, and the early extraction (prefetch) is removed.
    const before = await snapshot(server);
    const broken = await repo.commit({ "deploy.yml": "name: direct\ntype: python\nhealthCheck: /h\nport: 80\n" });
    await repo.push("main:refs/heads/broken");
    const bad = await server.cli(["execute", repoPath, broken]);
    assertEquals(bad.code, 2, bad.output);
    assertMatch(bad.stderr, /4:1: "port" is not a key of this file: it goes in config.yml on the server/);
    assertEquals(await snapshot(server), before);
    // receive run by hand (no git protocol on its input): what it is for and what to run instead.
    const byHand = await server.cli(["receive", repoPath]);
    assertEquals(byHand.code, 2, byHand.output);
    assertMatch(byHand.stderr, /^error: nothing came from git on the input\nhint: receive is run by /);
    assertMatch(byHand.stderr, /run `deploy-paradigm execute <git-dir> <commit>`/);
    assert(!/\n\s+at /.test(byHand.stderr), byHand.stderr);
    // ...on a path that is no repository: said so, before anything else.
    const nowhere = await server.cli(["receive", `${repoPath}-missing`]);
    assertEquals(nowhere.code, 2, nowhere.output);
    assertMatch(nowhere.stderr, /^error: \S+-missing is not a git repository\nhint: an app's repository is /);
    assert(nowhere.stderr.includes(`repository is ${server.prefix}/var/repos/<app>.git,`), nowhere.stderr);
    // ...and a work tree given to execute: the bare repository's place on this server.
    const workTree = await server.cli(["execute", repo.dir, "HEAD"]);
    assertEquals(workTree.code, 2, workTree.output);
    assert(workTree.stderr.includes(`such as ${server.prefix}/var/repos/<app>.git`), workTree.stderr);
    assertEquals(await snapshot(server), before);
    for await (const entry of Deno.readDir(`${server.prefix}/opt/deployments`)) {
      assert(!entry.name.startsWith(".incoming-"), `staging dir left behind: ${entry.name}`);
    }
  });
});

Deno.test("status names what keeps an app from being served or shown, shows the rest and exits 1; files deploys write, changed by hand, are named (no stack trace)", async () => {
  await withServer(async (server) => {
    const repo = await AppRepo.create(server, "web", await server.setupApp("web", { port: freePort() }));
    await repo.python("web", "v1");
    await repo.pushOk();
    const web = server.paths("web");
    const written = await Deno.readTextFile(web.status);
    // "typo": its config.yml does not load, so the proxy skips it; "cut": its status.json was cut short.
    for (
      const [app, config, state] of [
        ["typo", "port: [1\n", written.replaceAll('"web"', '"typo"')],
        ["cut", `port: ${freePort()}\nmanager: pm2\nenv: production\n`, '{"name": "cut", "status": '],
      ]
    ) {
      const paths = server.paths(app);
      await Deno.mkdir(paths.dir, { recursive: true });
      await Deno.writeTextFile(paths.config, config);
      await Deno.writeTextFile(paths.status, state);
    }
    await server.setupApp("fresh", { port: freePort() }); // set up, never deployed: a row of its own
    const table = await server.cli(["status"]);
    assertEquals(table.code, 1, table.output);
    assertMatch(table.stdout, /\nfresh +set up +- +- +- +- +never deployed \(push to deploy it\)\n/);
    // One app: set up (its row, in JSON too), not set up, not a name.
    const fresh = await server.cli(["status", "fresh"]);
    assertMatch(fresh.stdout, /^APP .*\nfresh +set up +- /);
    const freshJson = await server.cli(["status", "fresh", "--json"]);
    assertEquals(freshJson.code, 0, freshJson.output);
    assertEquals(JSON.parse(freshJson.stdout), { name: "fresh", status: "set up", deployed: null });
    const nope = await server.cli(["status", "nope"]);
    assertEquals(nope.code, 2, nope.output);
    assertMatch(
      nope.stderr,
      /^error: app "nope" is not set up on this server\nhint: deploy-paradigm setup nope sets it up/,
    );
    const upper = await server.cli(["status", "WEB"]);
    assertEquals(upper.code, 2, upper.output);
    assertMatch(upper.stderr, /"WEB" is not a valid app name\nhint: app names are 1-63 lowercase letters/);
    assertMatch(table.stdout, /\nweb +running +yes/);
    assertMatch(table.stdout, /\ntypo +running +yes/); // what status.json says, and below why it is not served
    assertMatch(
      table.stdout,
      new RegExp(
        `\\n! typo: config\\.yml does not load \\(deploys refuse it; the proxy keeps the route it had, none after ` +
          `it restarts\\): Cannot read ${server.paths("typo").config}:\\n  \\S+:1:9: YAML`,
      ),
    );
    assertMatch(
      table.stdout,
      new RegExp(`\\n! cut: ${server.paths("cut").status} is not valid JSON \\(.*\\) \\(deploys `),
    );
    const json = await server.cli(["status", "--json"]);
    assertEquals(json.code, 1, json.output);
    const rows = JSON.parse(json.stdout) as { name: string }[];
    assertEquals(rows.map((s) => s.name), ["typo", "web", "fresh"]);
    assertEquals(rows[2], { name: "fresh", status: "set up", deployed: null });
    assertMatch(json.stderr, /^! cut: /m);
    const one = await server.cli(["status", "cut"]);
    assertEquals(one.code, 1, one.output);
    assertMatch(one.stderr, /^error: \S+status\.json is not valid JSON .*\nhint: deploys write this file: restore it/);
    await Deno.writeTextFile(join(web.release((await status(server, "web")).release!), ".deploy-paradigm.json"), "[]");
    // ...and a release directory without metadata: each is listed for what it is, the others too; exit 1.
    const serving = (await status(server, "web")).release!;
    await Deno.mkdir(web.release("20000101-000000-000"));
    const releasesShown = await server.cli(["releases", "web"]);
    assertEquals(releasesShown.code, 1, releasesShown.output);
    assertMatch(
      releasesShown.stdout,
      /\n +20000101-000000-000 +- +- +incomplete \(no metadata: it cannot be started\)\n/,
    );
    assertMatch(releasesShown.stdout, new RegExp(`\\n\\* +${serving} .*serving\\n`));
    assertMatch(
      releasesShown.stdout,
      new RegExp(`\\n! release ${serving}: \\S+\\.deploy-paradigm\\.json holds a list, not an object`),
    );
    const releasesJson = await server.cli(["releases", "web", "--json"]);
    assertEquals(releasesJson.code, 1, releasesJson.output);
    assertEquals(
      JSON.parse(releasesJson.stdout).map((r: { id: string; state: string }) => [r.id, r.state]),
      [["20000101-000000-000", "incomplete"], [serving, "serving"]],
    );
    await Deno.remove(web.release("20000101-000000-000"));
    for (const run of [table, json, one, releasesShown]) assert(!/\n\s+at /.test(run.stderr), run.stderr);

    // Its only web process stopped behind the deploy's back: status.json still says healthy, status says otherwise.
    const process = (await status(server, "web")).processes![0].name;
    assertEquals((await run(["pm2", "stop", process], { env: server.env })).code, 0);
    const stopped = await server.cli(["status"]);
    assertEquals(stopped.code, 1, stopped.output);
    assertMatch(
      stopped.stdout,
      new RegExp(
        `\\n! web: no web process runs \\(${process} stopped\\): the app is not served, whatever its last health`,
      ),
    );
    assertEquals((await run(["pm2", "start", process], { env: server.env })).code, 0);

    // The proxy: a proxy.yml it would not start with again, then the proxy down. Setup refuses the first.
    const proxyYml = join(server.prefix, "opt", "deployments", "proxy.yml");
    await Deno.writeTextFile(proxyYml, "http: 24080\nhttp2: ture\n");
    const broken = await server.cli(["status"]);
    assertEquals(broken.code, 1, broken.output);
    assertMatch(
      broken.stdout,
      /\n! proxy: proxy\.yml does not load \(the proxy keeps the settings it started with.*\n.*proxy\.yml:2:8: "http2" must be/,
    );
    const before = await snapshot(server);
    const setup = await server.cli(["setup", "more", "--port", String(freePort()), "--manager", "pm2", "--yes"]);
    assertEquals(setup.code, 2, setup.output);
    assertMatch(setup.stderr, /proxy\.yml:2:8: "http2" must be/);
    assertEquals(await snapshot(server), before, "setup wrote nothing");
    await Deno.remove(proxyYml);
    await server.stopProxy();
    const down = await server.cli(["status"]);
    assertEquals(down.code, 1, down.output);
    assertMatch(
      down.stdout,
      /\n! proxy: it does not answer on its control socket, so the apps behind it are not served/,
    );
  });
});
