/**
 * End to end: real bare repos with the real hook, real `git push`, the real CLI through
 * bin/deploy-paradigm under a temp prefix, real PM2 with its own PM2_HOME, real apps on loopback.
 */
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { AppRepo } from "../helpers/apps.ts";
import { freePort, get, withServer } from "../helpers/server.ts";
import { branchHead, current, deployLog, releases, status } from "../helpers/state.ts";

Deno.test("a Python app and a Node app deploy from git push and answer on their port", async () => {
  await withServer(async (server) => {
    const [pyPort, nodePort] = [freePort(), freePort()];
    const py = await AppRepo.create(server, "py", await server.setupApp("py", { port: pyPort }));
    const node = await AppRepo.create(server, "node", await server.setupApp("node", { port: nodePort }));
    const pySha = await py.python("py", "py-v1");
    const nodeSha = await node.node("node", "node-v1");
    const [pyPush, nodePush] = await Promise.all([py.push(), node.push()]);
    assertEquals(pyPush.code, 0, pyPush.output);
    assertEquals(nodePush.code, 0, nodePush.output);
    assertMatch(pyPush.output, /✓ deployed py [0-9a-f]{7}/);
    assertMatch(nodePush.output, /✓ build .*\n/);
    assertEquals(await get(`http://127.0.0.1:${pyPort}/`), { status: 200, body: "py-v1" });
    assertEquals(await get(`http://127.0.0.1:${nodePort}/`), { status: 200, body: "node-v1" });
    for (const [app, sha] of [["py", pySha], ["node", nodeSha]]) {
      const st = await status(server, app);
      assertEquals([st.status, st.healthy, st.version, st.commit], ["running", true, sha.slice(0, 7), sha]);
      assert(st.deployed && st.lastHealthCheck && st.release);
      assertEquals(await branchHead(server, app), sha, `${app}: main must be the deployed commit`);
      assertEquals(await current(server, app), `releases/${st.release}`);
      // The release is the commit's tree: no .git inside.
      await Deno.stat(`${server.paths(app).release(st.release!)}/.git`).then(
        () => assert(false, "release contains .git"),
        () => {},
      );
    }
    const log = await deployLog(server, "py");
    // Blue-green (the default): the new release starts in a slot and is checked before the switch.
    // (A first deploy has no watch window: there is nothing to switch back to.)
    assertEquals(log.map((e) => e.event), [
      "begin",
      "fetch",
      "build",
      "command",
      "env",
      "start",
      "health",
      "switch",
      "branch",
      "cleanup",
      "success",
    ]);
    for (const e of log) assert(e.time && e.app === "py" && e.commit === pySha && typeof e.release === "string");
    // The app's output lands in the log files the fleet monitor reads.
    assertMatch(await Deno.readTextFile(server.paths("py").accessLog), /GET \/health/);
    // status, as a table and as JSON.
    const table = await server.cli(["status"]);
    assertEquals(table.code, 0, table.output);
    assertMatch(table.stdout, /^APP +STATUS/);
    assertMatch(table.stdout, /\nnode +running +yes/);
    const json = await server.cli(["status", "py", "--json"]);
    assertEquals(JSON.parse(json.stdout).commit, pySha);
  });
});

Deno.test("a second push replaces the first and keeps the old release; .env reaches the app with mode 0600", async () => {
  await withServer(async (server) => {
    const port = freePort();
    const repo = await AppRepo.create(
      server,
      "app",
      await server.setupApp("app", { port, dotenv: "# secrets\nGREETING='hello there'\n" }),
    );
    await repo.python("app", "v1");
    await repo.pushOk();
    const first = (await status(server, "app")).release!;
    // postDeploy runs in the release with the app's environment; its failure is reported, not rolled back.
    const v2 = await repo.python("app", "v2", "ok", {
      extra: "hooks:\n  postDeploy: [sh, -c, 'echo \"notified $DEPLOY_COMMIT with $GREETING\"; exit 9']\n",
    });
    const push = await repo.push();
    assertEquals(push.code, 0, push.output);
    // The hook gets the environment; what it prints of a secret is redacted.
    assertMatch(push.output, new RegExp(`notified ${v2} with \\[redacted\\]`));
    assert(!push.output.includes("hello there"), "a secret value never reaches the push's output");
    assertMatch(push.output, /✗ postDeploy .*exited with code 9/);
    assertMatch(push.output, /postDeploy failed; the deploy stands/);
    assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: "v2" });
    assertEquals(await get(`http://127.0.0.1:${port}/greeting`), { status: 200, body: "hello there v2" });
    const st = await status(server, "app");
    assertEquals([st.commit, st.previous], [v2, first]);
    assertEquals((await releases(server, "app")).length, 2);
    assert((await releases(server, "app")).includes(first));
    const env = await Deno.stat(`${server.paths("app").release(st.release!)}/.env`);
    assertEquals(env.mode! & 0o777, 0o600);
  });
});

Deno.test("only keepReleases (3) releases remain after 5 deploys, current and previous among them", async () => {
  await withServer(async (server) => {
    const port = freePort();
    const repo = await AppRepo.create(server, "five", await server.setupApp("five", { port }));
    const ids: string[] = [];
    for (let i = 1; i <= 5; i++) {
      await repo.python("five", `v${i}`);
      const push = await repo.push();
      assertEquals(push.code, 0, push.output);
      ids.push((await status(server, "five")).release!);
    }
    assertEquals(await releases(server, "five"), ids.slice(-3));
    const st = await status(server, "five");
    assertEquals([st.release, st.previous], [ids[4], ids[3]]);
    assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: "v5" });
    assertEquals([...ids].sort(), ids, "release ids sort in deploy order");
  });
});

Deno.test("a push to another branch deploys nothing; deleting it works", async () => {
  await withServer(async (server) => {
    const port = freePort();
    const repo = await AppRepo.create(server, "br", await server.setupApp("br", { port }));
    await repo.git(["checkout", "--quiet", "-b", "feature"]);
    const sha = await repo.python("br", "feature-v1");
    const push = await repo.push("feature");
    assertEquals(push.code, 0, push.output);
    assertMatch(push.output, /refs\/heads\/feature stored; only main deploys/);
    assertEquals(await branchHead(server, "br", "feature"), sha);
    assertEquals(await releases(server, "br"), []);
    assertEquals(await current(server, "br"), undefined);
    assertEquals(await deployLog(server, "br"), []);
    const nothing = await get(`http://127.0.0.1:${port}/`);
    assert("error" in nothing || nothing.status === 503, "nothing may serve the app yet");
    const del = await repo.push(":feature");
    assertEquals(del.code, 0, del.output);
    assertEquals(await branchHead(server, "br", "feature"), "");
  });
});
