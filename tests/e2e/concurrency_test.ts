/**
 * End to end: concurrent deploys of one app are serialized by the lock and end consistent.
 */
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { AppRepo } from "../helpers/apps.ts";
import { freePort, get, withServer } from "../helpers/server.ts";
import { branchHead, current, deployLog, releases, status } from "../helpers/state.ts";

Deno.test("two pushes at the same moment are serialized and end in a consistent state", async () => {
  await withServer(async (server) => {
    const port = freePort();
    const repoPath = await server.setupApp("race", { port });
    const a = await AppRepo.create(server, "race-a", repoPath);
    await a.python("race", "v1");
    const first = await a.push();
    assertEquals(first.code, 0, first.output);
    const b = await AppRepo.create(server, "race-b", repoPath);
    await b.git(["fetch", "--quiet", "production"]);
    await b.git(["reset", "--quiet", "--hard", "production/main"]);
    const shaA = await a.python("race", "v2-a");
    const shaB = await b.python("race", "v2-b");
    const [pushA, pushB] = await Promise.all([a.push(), b.push()]);
    const outputs = `A:\n${pushA.output}\nB:\n${pushB.output}`;
    // One deploys; the other waited for the lock and is refused because main moved meanwhile.
    assertEquals([pushA.code, pushB.code].filter((c) => c === 0).length, 1, outputs);
    const [winner, loser] = pushA.code === 0 ? [shaA, pushB] : [shaB, pushA];
    assertMatch(loser.output, /waiting for another deploy of race/);
    assertMatch(loser.output, /main moved to [0-9a-f]{7} while this push waited; fetch, merge and push again/);
    const st = await status(server, "race");
    assertEquals(await branchHead(server, "race"), winner);
    assertEquals([st.commit, st.healthy, st.status], [winner, true, "running"]);
    assertEquals(await current(server, "race"), `releases/${st.release}`);
    assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: winner === shaA ? "v2-a" : "v2-b" });
    assertEquals((await releases(server, "race")).length, 2);
  });
});

Deno.test("concurrent execute calls deploy one after the other, never overlapping", async () => {
  await withServer(async (server) => {
    const port = freePort();
    const repoPath = await server.setupApp("serial", { port });
    const repo = await AppRepo.create(server, "serial", repoPath);
    const shas: string[] = [];
    for (const v of ["v1", "v2"]) {
      shas.push(await repo.python("serial", v));
      await repo.push(`main:refs/heads/store-${v}`); // stored, not deployed
    }
    const results = await Promise.all(shas.map((sha) => server.cli(["execute", repoPath, sha])));
    for (const r of results) assertEquals(r.code, 0, r.output);
    assert(results.some((r) => /waiting for another deploy of serial/.test(r.output)));
    // The log shows two whole deploys, one after the other.
    const events = (await deployLog(server, "serial")).map((e) => `${e.event}:${(e.commit as string).slice(0, 7)}`);
    const starts = events.map((e, i) => (e.startsWith("begin:") ? i : -1)).filter((i) => i >= 0);
    assertEquals(starts.length, 2);
    const firstCommit = events[starts[0]].split(":")[1];
    const between = events.slice(starts[0], starts[1]);
    assert(between.every((e) => e.endsWith(firstCommit)), `deploys overlapped: ${events.join(" ")}`);
    assertEquals(between.at(-1), `success:${firstCommit}`);
    const st = await status(server, "serial");
    assertEquals(await current(server, "serial"), `releases/${st.release}`);
    const body = await get(`http://127.0.0.1:${port}/`);
    assertEquals(body, { status: 200, body: st.commit === shas[0] ? "v1" : "v2" });
  });
});
