/**
 * Several web instances for real (real pushes, real PM2, the built-in proxy): `instances: 3`
 * starts three processes in the idle slot, each on its own port, all health-checked before the
 * switch; the proxy spreads requests over them; five deploys under keep-alive load fail no
 * request; an instance that is stopped is taken out of rotation without a failed request, and
 * comes back; the old slot's instances are stopped after each switch.
 */
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { join } from "node:path";
import { AppRepo, FAST_HEALTH, portApp, pythonApp, SHORT_HEALTH } from "../helpers/apps.ts";
import { LoadGenerator } from "../helpers/load.ts";
import { freePort, get, run, type TestServer, withServer } from "../helpers/server.ts";
import { pm2Online, status } from "../helpers/state.ts";
import { sleep } from "../helpers/time.ts";

/** The names of the test server's online pm2 processes, sorted. */
async function onlineNames(server: TestServer): Promise<string[]> {
  return [...(await pm2Online(server)).keys()].sort();
}

Deno.test("instances: 3 web processes per slot behind the proxy; 5 deploys under load, 0 failed; a stopped one leaves rotation", async () => {
  await withServer(async (server) => {
    const port = freePort();
    const repo = await AppRepo.create(server, "inst", await server.setupApp("inst", { port }));
    const commit = (version: string) =>
      repo.commit({
        "deploy.yml": `name: inst\ntype: python\nhealthCheck: ${FAST_HEALTH}\nwatch: 300ms\n` +
          "processes:\n  web: { command: python app.py, instances: 3 }\n",
        "app.py": portApp(version),
      }, version);
    await commit("v1");
    const first = await repo.pushOk();
    assertMatch(first.output, /started the blue slot instance 3\/3/);
    assertEquals(await onlineNames(server), ["inst-blue", "inst-blue-2", "inst-blue-3"]);

    const load = new LoadGenerator(`http://127.0.0.1:${port}/`, 4).start();
    try {
      for (let v = 2; v <= 6; v++) {
        await commit(`v${v}`);
        const pushed = await repo.pushOk();
        assertMatch(pushed.output, /instance 3\/3/);
        const since = performance.now();
        await sleep(700);
        const ports = new Set(
          load.samples.filter((s) => s.at > since && s.body?.startsWith(`v${v} `)).map((s) => s.body!.split(" ")[1]),
        );
        assertEquals(ports.size, 3, `v${v} answered from ports ${[...ports]}`);
      }
      const { slot, processes } = await status(server, "inst");
      assertEquals(processes?.map((p) => `${p.type}/${p.instance} ${p.name} ${p.state}`), [
        `web/1 inst-${slot} online`,
        `web/2 inst-${slot}-2 online`,
        `web/3 inst-${slot}-3 online`,
      ]);
      assertEquals(
        await onlineNames(server),
        [`inst-${slot}`, `inst-${slot}-2`, `inst-${slot}-3`],
        "the old slot stopped",
      );

      // One instance stopped: the proxy retries its requests elsewhere, then leaves it out.
      const stopped = await run(["pm2", "stop", `inst-${slot}-2`], { env: server.env });
      assertEquals(stopped.code, 0, stopped.output);
      await sleep(1500);
      const since = performance.now();
      await sleep(1000);
      const answering = new Set(load.samples.filter((s) => s.at > since && s.body).map((s) => s.body!.split(" ")[1]));
      assertEquals(answering.size, 2, `ports answering with one instance stopped: ${[...answering]}`);
      assertEquals((await run(["pm2", "start", `inst-${slot}-2`], { env: server.env })).code, 0);
      await sleep(12_000); // the proxy tries it again within its backoff (at most 10 s)
      const back = performance.now();
      await sleep(1000);
      const all = new Set(load.samples.filter((s) => s.at > back && s.body).map((s) => s.body!.split(" ")[1]));
      assertEquals(all.size, 3, `ports answering once it is back: ${[...all]}`);
    } finally {
      await load.stop();
    }
    const failures = load.failures();
    assertEquals(failures.length, 0, JSON.stringify(failures.slice(0, 5)));
    assert(load.samples.length > 500, `only ${load.samples.length} requests`);
    console.log(`instances: ${load.samples.length} requests across 5 deploys and a stopped instance, 0 failed`);
  });
});

Deno.test("instances: a failed deploy stops all its new instances; 3 → 1 → 3; to strategy restart leaves none behind", async () => {
  await withServer(async (server) => {
    const port = freePort();
    const repo = await AppRepo.create(server, "in2", await server.setupApp("in2", { port }));
    const commit = (version: string, instances: number, healthy = true) =>
      repo.commit({
        "deploy.yml": `name: in2\ntype: python\nhealthCheck: ${healthy ? FAST_HEALTH : SHORT_HEALTH}\nwatch: 300ms\n` +
          `processes:\n  web: { command: python app.py, instances: ${instances} }\n`,
        "app.py": healthy ? portApp(version) : pythonApp(version, "500"),
      }, version);
    const online = async () => (await onlineNames(server)).filter((name) => name.startsWith("in2"));
    await commit("v1", 3);
    await repo.pushOk();
    assertEquals(await online(), ["in2-blue", "in2-blue-2", "in2-blue-3"]);

    await commit("v2", 3, false);
    const failed = await repo.push();
    assert(failed.code !== 0, failed.output);
    assertEquals(
      await online(),
      ["in2-blue", "in2-blue-2", "in2-blue-3"],
      "the new instances stopped, the old ones serve",
    );
    await repo.git(["reset", "--quiet", "--hard", "HEAD~1"]);

    await commit("v3", 1);
    await repo.pushOk();
    assertEquals(await online(), ["in2-green"]);
    assertEquals(
      (await Array.fromAsync(Deno.readDir(join(server.paths("in2").dir, "slots")))).map((e) => e.name).sort(),
      [
        "blue",
        "green",
      ],
    );
    await commit("v4", 3);
    await repo.pushOk();
    assertEquals(await online(), ["in2-blue", "in2-blue-2", "in2-blue-3"]);
    // A dry run says how many web instances it would start and how many the old slot's drain would stop.
    const head = (await repo.git(["rev-parse", "HEAD"])).stdout.trim();
    const dry = await server.cli(["execute", "--dry-run", server.paths("in2").repo, head]);
    assertEquals(dry.code, 0, dry.output);
    assertMatch(dry.stdout, /would start 3 web instances there/);
    assertMatch(dry.stdout, /would drain the old slot \(its 3 web instances\) \(up to/);
    assertEquals(await online(), ["in2-blue", "in2-blue-2", "in2-blue-3"]);

    const config = server.paths("in2").config;
    await Deno.writeTextFile(
      config,
      (await Deno.readTextFile(config)).replace("strategy: blue-green", "strategy: restart"),
    );
    await commit("v5", 1);
    await repo.pushOk();
    assertEquals(await online(), ["in2"], "no instance of the blue-green setup is left");
    assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: `v5 ${port}` });
  });
});
