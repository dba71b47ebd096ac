/**
 * End to end: what the hook refuses or guards against. Real pushes, real PM2.
 */
import { assert, assertEquals, assertMatch, assertNotMatch } from "../helpers/assert.ts";
import { AppRepo } from "../helpers/apps.ts";
import { freePort, get, run, withServer } from "../helpers/server.ts";
import { branchHead, current, releases, snapshot, status } from "../helpers/state.ts";

Deno.test("the server decides the deploy branch: a pushed deploy.yml cannot make its own branch deploy", async () => {
  await withServer(async (server) => {
    const port = freePort();
    const repo = await AppRepo.create(server, "br", await server.setupApp("br", { port }));
    const v1 = await repo.python("br", "v1");
    await repo.pushOk();
    await repo.git(["checkout", "--quiet", "-b", "feature"]);
    const feature = await repo.python("br", "feature", "ok", { extra: "branch: feature\n" });
    const push = await repo.pushOk("feature");
    assertMatch(push.output, /refs\/heads\/feature stored; only main deploys/);
    assertEquals(await branchHead(server, "br", "feature"), feature);
    assertEquals((await status(server, "br")).commit, v1);
    assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: "v1" });
    // Merged into main, it deploys, and from then on feature is the deploy branch.
    await repo.git(["checkout", "--quiet", "main"]);
    await repo.git(["merge", "--quiet", "--ff-only", "feature"]);
    await repo.pushOk("main");
    assertEquals((await status(server, "br")).branch, "feature");
    const next = await repo.python("br", "v3", "ok", { extra: "branch: feature\n" });
    assertMatch((await repo.pushOk("main")).output, /refs\/heads\/main stored; only feature deploys/);
    await repo.git(["push", "--quiet", "production", "main:feature"]);
    assertEquals((await status(server, "br")).commit, next);
  });
});

Deno.test("a repository deploys only the app it is named after", async () => {
  await withServer(async (server) => {
    const [webPort, otherPort] = [freePort(), freePort()];
    const web = await AppRepo.create(server, "web", await server.setupApp("web", { port: webPort }));
    await web.python("web", "web-v1");
    await web.pushOk();
    const other = await AppRepo.create(server, "other", await server.setupApp("other", { port: otherPort }));
    const before = await snapshot(server);
    await other.python("web", "hijack");
    const push = await other.push();
    assert(push.code !== 0, push.output);
    assertMatch(push.output, /deploy\.yml names the app "web", whose repository is .*web\.git, not .*other\.git/);
    assertEquals(await snapshot(server), before);
    assertEquals(await get(`http://127.0.0.1:${webPort}/`), { status: 200, body: "web-v1" });
  });
});

Deno.test("git's receive.deny* settings hold, the deploy branch cannot be deleted, atomic multi-branch pushes are refused", async () => {
  await withServer(async (server) => {
    const port = freePort();
    const repoPath = await server.setupApp("deny", { port });
    const repo = await AppRepo.create(server, "deny", repoPath);
    await repo.python("deny", "v1");
    await repo.pushOk();
    await repo.pushOk("main:topic");
    const del = await repo.push(":main");
    assert(del.code !== 0);
    assertMatch(del.output, /main is the deploy branch of deny; deleting it is refused/);
    await run(["git", "--git-dir", repoPath, "config", "receive.denyDeletes", "true"]);
    assertMatch((await repo.push(":topic")).output, /deletion prohibited \(receive\.denyDeletes\)/);
    await run(["git", "--git-dir", repoPath, "config", "receive.denyNonFastForwards", "true"]);
    await repo.git(["checkout", "--quiet", "-b", "rewrite", "main"]);
    await repo.commit({ "other.txt": "x" });
    await repo.git(["push", "--quiet", "production", "rewrite:topic"]);
    await repo.git(["reset", "--quiet", "--hard", "main"]);
    await repo.commit({ "other.txt": "y" });
    const nonFf = await repo.push("+rewrite:topic");
    assert(nonFf.code !== 0);
    assertMatch(nonFf.output, /non-fast-forward \(receive\.denyNonFastForwards\)/);
    await repo.git(["checkout", "--quiet", "main"]);
    const v2 = await repo.python("deny", "v2");
    const single = await repo.push("main", ["--atomic"]); // one branch: atomic is no obstacle
    assertEquals(single.code, 0, single.output);
    assertEquals(await branchHead(server, "deny"), v2);
    await repo.python("deny", "v3");
    const both = await new Deno.Command("git", {
      args: ["push", "--atomic", "production", "main", "main:topic3"],
      cwd: repo.dir,
      env: server.env,
    }).output();
    const text = new TextDecoder().decode(both.stderr);
    assert(!both.success, text);
    assertMatch(text, /atomic pushes of several branches are not supported/);
    assertEquals(await branchHead(server, "deny", "topic3"), "");
  });
});

Deno.test("bad .env, a missing program, or GIT_DIR: refused or isolated before anything switches", async () => {
  await withServer(async (server) => {
    const port = freePort();
    const repo = await AppRepo.create(server, "iso", await server.setupApp("iso", { port, dotenv: "OK=1 # public\n" }));
    // The hook's GIT_* variables reach neither the hooks nor the app.
    await repo.python("iso", "v1", "ok", {
      extra: "hooks:\n  preDeploy: [sh, -c, 'echo \"hook sees GIT_DIR=${GIT_DIR:-unset}\"']\n",
    });
    const first = await repo.pushOk();
    assertMatch(first.output, /hook sees GIT_DIR=unset/);
    const pm2 = JSON.parse(await Deno.readTextFile(`${server.paths("iso").dir}/pm2-iso-blue.json`));
    assertEquals(Object.keys(pm2.apps[0].env).filter((k) => k.startsWith("GIT_")), []);
    assertNotMatch(pm2.apps[0].env.PATH, /git-core/);
    const serving = await current(server, "iso");

    await Deno.writeTextFile(server.paths("iso").envFile("production"), "OK=1 # public\nthis is not a variable\n");
    const before = await snapshot(server);
    await repo.python("iso", "v2");
    const badEnv = await repo.push();
    assert(badEnv.code !== 0);
    assertMatch(badEnv.output, /\.env\.production:2:1: expected KEY=value/);
    assertEquals(await snapshot(server), before, "a bad .env changes nothing");
    await Deno.writeTextFile(server.paths("iso").envFile("production"), "OK=1 # public\n");

    await repo.commit({
      "deploy.yml": "name: iso\ntype: python\nhealthCheck: /health\ncommand: no-such-program --x\n",
    });
    const missing = await repo.push();
    assert(missing.code !== 0);
    assertMatch(missing.output, /✗ command .*cannot find the program "no-such-program"/);
    assertMatch(missing.output, /nothing was switched/);
    assertEquals(await current(server, "iso"), serving);
    assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: "v1" });
    assertEquals((await releases(server, "iso")).length, 1);
  });
});

Deno.test("a static app runs no process, and replacing a process app by a static one stops the process", async () => {
  await withServer(async (server) => {
    const port = freePort();
    const repo = await AppRepo.create(server, "site", await server.setupApp("site", { port, strategy: "restart" }));
    await repo.python("site", "v1");
    await repo.pushOk();
    assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: "v1" });
    const push = await repo.pushOk().then(() =>
      repo.commit({ "deploy.yml": "name: site\ntype: static\n", "index.html": "<h1>site</h1>\n", "app.py": null })
    ).then(() => repo.pushOk());
    assertMatch(push.output, /\(static files\)/);
    assertMatch(push.output, /pm2 stopped the process of the release before/);
    assertNotMatch(push.output, /http:\/\/127/);
    assert("error" in await get(`http://127.0.0.1:${port}/`), "the python process must be gone");
    const st = await status(server, "site");
    assertEquals([st.type, st.status, st.url], ["static", "running", undefined]);
    const release = server.paths("site").release(st.release!);
    assertEquals(await Deno.readTextFile(`${release}/index.html`), "<h1>site</h1>\n");
  });
});

Deno.test("a deploy killed mid-build leaves the lock free and the next push works", async () => {
  await withServer(async (server) => {
    const port = freePort();
    const repo = await AppRepo.create(server, "kill", await server.setupApp("kill", { port }));
    await repo.python("kill", "v1");
    await repo.pushOk();
    await repo.python("kill", "v2", "ok", { extra: "build: [sleep, '30']\n" });
    const pushing = repo.push();
    const lockFile = `${server.paths("kill").lock}`;
    let pid = 0;
    for (let i = 0; i < 100 && !pid; i++) {
      await new Promise((r) => setTimeout(r, 100));
      const owner = await Deno.readTextFile(lockFile).then((t) => JSON.parse(t), () => undefined).catch(() =>
        undefined
      );
      if (owner?.commit && owner.commit !== (await status(server, "kill")).commit) pid = owner.pid;
    }
    assert(pid > 1, "the deploy never took the lock");
    await new Promise((r) => setTimeout(r, 500)); // into the build
    Deno.kill(pid, "SIGKILL");
    const killed = await pushing;
    assert(killed.code !== 0, killed.output);
    assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: "v1" });
    await repo.python("kill", "v3");
    const started = performance.now();
    const next = await repo.pushOk();
    assert(performance.now() - started < 20_000, "the next push must not wait for a stale lock");
    assertNotMatch(next.output, /waiting for another deploy/);
    assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: "v3" });
  });
});

Deno.test("blue-green: an idle slot's port taken by a foreign process moves the slot instead of checking it", async () => {
  await withServer(async (server) => {
    const port = freePort();
    const repo = await AppRepo.create(server, "mv", await server.setupApp("mv", { port }));
    await repo.python("mv", "v1");
    await repo.pushOk();
    const st = await status(server, "mv");
    const idle = st.slot === "blue" ? "green" : "blue";
    const config = await Deno.readTextFile(server.paths("mv").config);
    const idlePort = Number(new RegExp(`${idle}: (\\d+)`).exec(config)![1]);
    // A foreign server that would answer any health check with 200.
    const foreign = Deno.serve({ hostname: "127.0.0.1", port: idlePort, onListen() {} }, () => new Response("foreign"));
    try {
      await repo.python("mv", "v2");
      const push = await repo.pushOk();
      assertMatch(push.output, new RegExp(`port ${idlePort} of the ${idle} slot is taken by another process`));
      assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: "v2" });
      const moved = Number(new RegExp(`${idle}: (\\d+)`).exec(await Deno.readTextFile(server.paths("mv").config))![1]);
      assert(moved !== idlePort);
      assertEquals((await status(server, "mv")).slotPort, moved);
    } finally {
      await foreign.shutdown();
    }
  });
});
