/**
 * End to end: real bare repos with the real hook, real `git push`, the real CLI through
 * bin/deploy-paradigm under a temp prefix, real PM2 with its own PM2_HOME, real apps on loopback.
 */
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { AppRepo } from "../helpers/apps.ts";
import { freePort, get, type TestServer, withServer } from "../helpers/server.ts";
import { listReleases } from "../../src/deploy/releases.ts";
import type { AppStatus } from "../../src/deploy/status.ts";

async function status(server: TestServer, app: string): Promise<AppStatus> {
  return JSON.parse(await Deno.readTextFile(server.paths(app).status));
}

async function releases(server: TestServer, app: string): Promise<string[]> {
  return await listReleases(server.paths(app));
}

async function headOf(server: TestServer, app: string): Promise<string> {
  const cmd = await new Deno.Command("git", { args: ["--git-dir", server.paths(app).repo, "rev-parse", "main"] })
    .output();
  return new TextDecoder().decode(cmd.stdout).trim();
}

Deno.test("a Python app and a Node app deploy from git push and answer on their port", async () => {
  await withServer(async (server) => {
    const [pyPort, nodePort] = [freePort(), freePort()];
    const py = await AppRepo.create(server, "py", await server.setupApp("py", { port: pyPort }));
    const node = await AppRepo.create(server, "node", await server.setupApp("node", { port: nodePort }));
    const pySha = await py.python("py", "py-v1");
    await node.node("node", "node-v1");
    const [pyPush, nodePush] = await Promise.all([py.push(), node.push()]);
    assertEquals(pyPush.code, 0, pyPush.output);
    assertEquals(nodePush.code, 0, nodePush.output);
    assertMatch(pyPush.output, /✓ deployed py [0-9a-f]{7}/);
    assertMatch(pyPush.output, /✓ health/);
    assertEquals(await get(`http://127.0.0.1:${pyPort}/`), { status: 200, body: "py-v1" });
    assertEquals(await get(`http://127.0.0.1:${nodePort}/`), { status: 200, body: "node-v1" });
    const st = await status(server, "py");
    assertEquals([st.status, st.healthy, st.version, st.commit], ["running", true, pySha.slice(0, 7), pySha]);
    assert(st.deployed && st.lastHealthCheck && st.release);
    assertEquals(await headOf(server, "py"), pySha);
    const current = await Deno.readLink(server.paths("py").current);
    assertEquals(current, `releases/${st.release}`);
    // No .git in the release; deploy.log holds one JSON line per step.
    await Deno.stat(`${server.paths("py").release(st.release!)}/.git`).then(
      () => assert(false, "release contains .git"),
      () => {},
    );
    const log = (await Deno.readTextFile(server.paths("py").deployLog)).trim().split("\n").map((l) => JSON.parse(l));
    assertEquals(log.map((e) => e.event), [
      "start",
      "fetch",
      "build",
      "env",
      "switch",
      "start",
      "health",
      "cleanup",
      "success",
    ]);
    for (const e of log) assert(e.time && e.app === "py" && e.commit === pySha && e.release === st.release);
  });
});
