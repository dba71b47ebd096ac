/**
 * End to end (issue 8, reliability): many pushes at once. Five pushes of the same app, each from
 * its own clone on top of the same base, are serialized by the app's lock: one deploys, the
 * others wait and are refused because the branch moved, and the server ends consistent (branch,
 * status.json, `current` and the answering app agree) with the lock free. Pushes of different
 * apps are not serialized: their deploys run at the same time.
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { AppRepo } from "../helpers/apps.ts";
import { freePort, get, type Ran, run, type TestServer, withServer } from "../helpers/server.ts";
import { branchHead, current, deployLog, releases, status } from "../helpers/state.ts";
import { RELEASE_META, type ReleaseMeta } from "../../src/deploy/releases.ts";
import { parse as parseYaml } from "../../src/yaml.ts";

const PUSHES = 5;
const TERMINAL = new Set(["success", "failed", "rolled_back"]);

/** The hook's refusal of a push that waited while another one moved the branch. */
const MOVED = /main moved to [0-9a-f]{7} while this push waited; fetch, merge and push again/;
/** git's own refusal, when the push started only after the branch had moved (its client saw it). */
const CLIENT_REJECTED = /! \[rejected\]\s+main -> main \((fetch first|non-fast-forward)\)/;

/** How one push ended. */
type Outcome = "deployed" | "refused-by-hook" | "refused-by-git" | "unclear";

function classify(push: Ran, sha: string, app: string): Outcome {
  const short = sha.slice(0, 7);
  if (push.code === 0) {
    return new RegExp(`✓ deployed ${app} ${short} `).test(push.output) ? "deployed" : "unclear";
  }
  if (MOVED.test(push.output) && /! \[remote rejected\] main -> main \(main moved to/.test(push.output)) {
    return "refused-by-hook";
  }
  return CLIENT_REJECTED.test(push.output) ? "refused-by-git" : "unclear";
}

/** Whether nobody holds the app's deploy lock (flock -n succeeds at once). */
async function lockFree(server: TestServer, app: string): Promise<boolean> {
  return (await run(["flock", "--nonblock", server.paths(app).lock, "true"])).code === 0;
}

/** The metadata of the release `current` points at. */
async function currentMeta(server: TestServer, app: string): Promise<ReleaseMeta> {
  return JSON.parse(await Deno.readTextFile(join(server.paths(app).current, RELEASE_META)));
}

/** Entries of a directory whose names match `pattern`. */
async function leftovers(dir: string, pattern: RegExp): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) if (pattern.test(entry.name)) names.push(entry.name);
  return names;
}

/**
 * Checks that deploys in deploy.log never interleave: from a `begin` to its outcome every event
 * is of the same commit, and a `refused` (decided under the lock) never falls inside a deploy.
 * Returns each deploy's window [begin, outcome] by commit.
 */
function deployWindows(
  events: Record<string, unknown>[],
): Map<string, { begin: number; end: number; outcome: string }> {
  const windows = new Map<string, { begin: number; end: number; outcome: string }>();
  const trail = events.map((e) => `${e.event}:${String(e.commit).slice(0, 7)}`).join(" ");
  let active: { commit: string; begin: number } | undefined;
  for (const e of events) {
    const commit = String(e.commit);
    const time = Date.parse(String(e.time));
    if (e.event === "begin") {
      assert(active === undefined, `a deploy began while another ran: ${trail}`);
      active = { commit, begin: time };
    } else if (e.event === "refused") {
      assert(active === undefined, `a push was refused in the middle of another deploy: ${trail}`);
    } else {
      assert(active !== undefined, `event ${e.event} outside any deploy: ${trail}`);
      assertEquals(commit, active.commit, `deploys interleave: ${trail}`);
      if (TERMINAL.has(String(e.event))) {
        windows.set(commit, { begin: active.begin, end: time, outcome: String(e.event) });
        active = undefined;
      }
    }
  }
  assert(active === undefined, `a deploy has no outcome in deploy.log: ${trail}`);
  return windows;
}

for (const strategy of ["blue-green", "restart"] as const) {
  Deno.test(`5 pushes of the same app at once are serialized and end consistent, with the lock free (${strategy})`, async () => {
    await withServer(async (server) => {
      const app = "herd";
      const port = freePort();
      const repoPath = await server.setupApp(app, { port, strategy });
      const base = await AppRepo.create(server, `${app}-base`, repoPath);
      const v1 = await base.python(app, "v1");
      await base.pushOk();
      const logBefore = (await deployLog(server, app)).length;

      // Five clones of the same base, each with its own version.
      const clones = await Promise.all(Array.from({ length: PUSHES }, async (_, i) => {
        const clone = await AppRepo.create(server, `${app}-${i}`, repoPath);
        await clone.git(["fetch", "--quiet", "production"]);
        await clone.git(["reset", "--quiet", "--hard", "production/main"]);
        return clone;
      }));
      const shas: string[] = [];
      for (const [i, clone] of clones.entries()) shas.push(await clone.python(app, `v2-${i}`));
      assertEquals(new Set(shas).size, PUSHES);

      const pushes = await Promise.all(clones.map((clone) => clone.push()));
      const outcomes = pushes.map((push, i) => classify(push, shas[i], app));
      const report = pushes.map((push, i) => `--- push ${i} (${shas[i].slice(0, 7)}): ${outcomes[i]}\n${push.output}`)
        .join("\n");
      const count = (o: Outcome) => outcomes.filter((x) => x === o).length;
      console.log(
        `${strategy}: concurrent pushes of one app: ${PUSHES - count("unclear")}/${PUSHES} consistent ` +
          `(${count("deployed")} deployed, ${count("refused-by-hook")} refused by the hook after waiting, ` +
          `${count("refused-by-git")} refused by git, ${count("unclear")} unclear); ` +
          `${pushes.filter((p) => /waiting for another deploy of herd/.test(p.output)).length} waited for the lock`,
      );

      // Each push either deployed or was refused with a clear message; all on the same base, so one deploys.
      assertEquals(count("unclear"), 0, report);
      assertEquals(count("deployed"), 1, report);
      const winner = shas[outcomes.indexOf("deployed")];
      // The pushes really ran into each other: some waited for the lock. A refused push never
      // started a release.
      assert(pushes.some((push) => /waiting for another deploy of herd \(pid \d+/.test(push.output)), report);
      for (const [i, push] of pushes.entries()) {
        if (outcomes[i] !== "deployed") assert(!/deploying herd/.test(push.output), report);
      }

      // deploy.log: valid JSON lines; exactly the winner succeeded; the refused are recorded; no overlap.
      const events = (await deployLog(server, app)).slice(logBefore);
      const windows = deployWindows(events);
      assertEquals([...windows.keys()], [winner], `one deploy ran: ${JSON.stringify(events)}`);
      assertEquals(windows.get(winner)!.outcome, "success");
      assertEquals(
        events.filter((e) => e.event === "success").map((e) => e.commit),
        shas.filter((_, i) => outcomes[i] === "deployed"),
      );
      assertEquals(
        events.filter((e) => e.event === "refused").map((e) => e.commit).sort(),
        shas.filter((_, i) => outcomes[i] === "refused-by-hook").sort(),
      );
      for (const e of events.filter((e) => e.event === "refused")) {
        const at = Date.parse(String(e.time));
        const w = windows.get(winner)!;
        assert(at < w.begin || at >= w.end, `a refusal at ${e.time} falls inside the deploy ${JSON.stringify(w)}`);
        assertMatch(String(e.message), MOVED);
      }

      // The final state is consistent: branch == status.json == the answering version == current's release.
      const version = `v2-${shas.indexOf(winner)}`;
      const st = await status(server, app);
      assertEquals(await branchHead(server, app), winner);
      assertEquals([st.commit, st.status, st.healthy, st.lastDeploy.outcome], [winner, "running", true, "success"]);
      assertEquals(await current(server, app), `releases/${st.release}`);
      assertEquals((await currentMeta(server, app)).commit, winner);
      assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: version });
      assertEquals((await releases(server, app)).length, 2, "v1 and the winner; no release of a refused push");
      assert(st.previous !== undefined && st.previous !== st.release, `previous: ${st.previous}`);
      assertEquals(await leftovers(server.paths(app).releases, /^\./), [], "no .partial or temp entry left");
      assertEquals(await leftovers(join(server.paths(app).dir, ".."), /^\.incoming-/), [], "no prefetch left");
      assert(v1 !== winner);

      // The lock is free: nobody holds it, and a follow-up push of a refused clone deploys at once.
      assert(await lockFree(server, app), "the deploy lock is still held");
      const loser = clones[outcomes.findIndex((o) => o !== "deployed")];
      await loser.git(["fetch", "--quiet", "production"]);
      await loser.git(["reset", "--quiet", "--hard", "production/main"]);
      const v3 = await loser.python(app, "v3");
      const follow = await loser.pushOk();
      assert(!/waiting for another deploy/.test(follow.output), follow.output);
      assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: "v3" });
      assertEquals([await branchHead(server, app), (await status(server, app)).commit], [v3, v3]);
      assertEquals((await currentMeta(server, app)).commit, v3);
      assert(await lockFree(server, app), "the deploy lock is still held after the follow-up push");
    });
  });
}

Deno.test("pushes of two different apps at once deploy in parallel, both succeed", async () => {
  await withServer(async (server) => {
    const apps = ["alpha", "beta"] as const;
    const ports = { alpha: freePort(), beta: freePort() };
    const repos = await Promise.all(
      apps.map(async (app) => AppRepo.create(server, app, await server.setupApp(app, { port: ports[app] }))),
    );
    // A build that takes a while (the default python build, then 2 s): serialized deploys could not overlap.
    const slowBuild = "build: [sh, -c, 'python3 -m venv --without-pip venv && sleep 2']\n";
    const overlaps: string[] = [];
    // Round 1: both first deploys at once (both choose their slot ports); round 2: both updates at once.
    for (const round of ["v1", "v2"]) {
      const shas = await Promise.all(
        apps.map((app, i) => repos[i].python(app, `${app}-${round}`, "ok", { extra: slowBuild })),
      );
      const logBefore = await Promise.all(apps.map(async (app) => (await deployLog(server, app)).length));
      const pushes = await Promise.all(repos.map((repo) => repo.push()));
      const report = pushes.map((p, i) => `--- ${apps[i]} ${round}:\n${p.output}`).join("\n");
      for (const [i, push] of pushes.entries()) {
        assertEquals(push.code, 0, report);
        assertMatch(push.output, new RegExp(`✓ deployed ${apps[i]} ${shas[i].slice(0, 7)} `));
        assert(!/waiting for another deploy/.test(push.output), `different apps must not wait:\n${report}`);
      }
      const windows = await Promise.all(apps.map(async (app, i) => {
        const events = (await deployLog(server, app)).slice(logBefore[i]);
        const w = deployWindows(events);
        assertEquals([...w.keys()], [shas[i]]);
        assertEquals(w.get(shas[i])!.outcome, "success");
        return w.get(shas[i])!;
      }));
      const [a, b] = windows;
      const overlap = Math.min(a.end, b.end) - Math.max(a.begin, b.begin);
      overlaps.push(`${round}: ${overlap} ms`);
      assert(
        overlap > 0,
        `the deploys of alpha and beta did not overlap: alpha ${JSON.stringify(a)}, beta ${JSON.stringify(b)}`,
      );
      for (const [i, app] of apps.entries()) {
        const st = await status(server, app);
        assertEquals([st.commit, st.status, st.healthy], [shas[i], "running", true]);
        assertEquals(await branchHead(server, app), shas[i]);
        assertEquals(await current(server, app), `releases/${st.release}`);
        assertEquals((await currentMeta(server, app)).commit, shas[i]);
        assertEquals(await get(`http://127.0.0.1:${ports[app]}/`), { status: 200, body: `${app}-${round}` });
        assert(await lockFree(server, app));
      }
      // Both first deploys chose slot ports at the same time, and never the same ones.
      const taken = await Promise.all(apps.map(async (app) => {
        const config = parseYaml(await Deno.readTextFile(server.paths(app).config)) as {
          port: number;
          slots?: { blue: number; green: number };
        };
        return [config.port, config.slots?.blue, config.slots?.green];
      }));
      assertEquals(new Set(taken.flat()).size, 6, `ports collide: ${JSON.stringify(taken)}`);
    }
    console.log(
      `two apps pushed at once: both deployed in both rounds; their deploys overlapped by ${overlaps.join(", ")}`,
    );
  });
});
