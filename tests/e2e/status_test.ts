/**
 * `status` and `releases` as a user diagnosing a server sees them (real pushes, PM2, the proxy):
 * a deploy killed midway is named with what it left running and exits 0 (the old release serves);
 * one killed after its switch (before status.json) shows the release the proxy routes to, its
 * slot's processes, and the redeploy that finishes it;
 * a port changed in config.yml shows at once; a failed first deploy (nothing healthy serves)
 * exits 1; `releases` lists while config.yml does not load, naming its problem.
 */
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { AppRepo, FAST_HEALTH, pythonApp } from "../helpers/apps.ts";
import { portFree } from "../../src/deploy/slots.ts";
import { freePort, get, run, type TestServer, withServer } from "../helpers/server.ts";
import { status } from "../helpers/state.ts";

Deno.test("status: a deploy killed after its health check is a warning naming its commit and the slot that still runs it (exit 0); the next push clears it", async () => {
  await withServer(async (server) => {
    const app = "st";
    const port = freePort();
    const repo = await AppRepo.create(server, app, await server.setupApp(app, { port }));
    await repo.python(app, "v1");
    await repo.pushOk();
    const v1 = await status(server, app);
    assertEquals(v1.slot, "blue");

    // Killed after the new release's health check, before its switch: v1 serves, green runs v2.
    const v2 = await repo.python(app, "v2");
    const killed = await run(["git", "push", "production", "main"], {
      cwd: repo.dir,
      env: { ...server.env, DEPLOY_PARADIGM_TEST_KILL: "after:health" },
    });
    assert(killed.code !== 0, killed.output);
    const answer = await get(`http://127.0.0.1:${port}/`);
    assertEquals("body" in answer ? answer.body : answer.error, "v1");
    const shown = await server.cli(["status", app]);
    assertEquals(shown.code, 0, shown.output);
    assertMatch(shown.stdout, new RegExp(`\\n${app} +running +yes `));
    assertMatch(
      shown.stdout,
      new RegExp(
        `\\n! ${app}: a deploy of ${
          v2.slice(0, 7)
        } \\(pid \\d+, since [^)]+\\) was interrupted; the green slot still ` +
          `runs it \\(${app}-green, pid \\d+\\); ${v1.version} still serves; the next push records the interruption`,
      ),
    );
    const json = await server.cli(["status", app, "--json"]);
    assertEquals(json.code, 0, json.output);
    assertMatch(json.stderr, new RegExp(`^! ${app}: a deploy of ${v2.slice(0, 7)} .* was interrupted`, "m"));

    // The next push cleans up: the warning is gone.
    await repo.python(app, "v3");
    await repo.pushOk();
    const after = await server.cli(["status", app]);
    assertEquals(after.code, 0, after.output);
    assert(!after.stdout.includes("was interrupted"), after.stdout);
  });
});

/** Sets up `app` on `server` and deploys it once (v1); returns its port. */
async function deployedApp(server: TestServer, app: string): Promise<number> {
  const port = freePort();
  const repo = await AppRepo.create(server, app, await server.setupApp(app, { port }));
  await repo.python(app, "v1");
  await repo.pushOk();
  return port;
}

Deno.test("status: port and url are config.yml's now, after its port changed (as setup --port writes it); under restart, a warning", async () => {
  await withServer(async (server) => {
    const app = "sp";
    const port = await deployedApp(server, app);
    // config.yml's port changed (as `setup --port` writes it): status shows it at once (the proxy serves it there).
    const paths = server.paths(app);
    const moved = freePort();
    const config = await Deno.readTextFile(paths.config);
    await Deno.writeTextFile(paths.config, config.replace(`port: ${port}\n`, `port: ${moved}\n`));
    const row = JSON.parse((await server.cli(["status", app, "--json"])).stdout);
    assertEquals([row.port, row.url], [moved, `http://127.0.0.1:${moved}/`]);

    // Under restart the app's own process keeps its port until the next deploy: shown as it is, and a warning.
    const own = freePort();
    const restart = await AppRepo.create(server, "sq", await server.setupApp("sq", { port: own, strategy: "restart" }));
    await restart.python("sq", "v1");
    await restart.pushOk();
    const other = freePort();
    const file = server.paths("sq").config;
    await Deno.writeTextFile(file, (await Deno.readTextFile(file)).replace(`port: ${own}\n`, `port: ${other}\n`));
    const shown = await server.cli(["status", "sq"]);
    assertEquals(shown.code, 0, shown.output);
    assertMatch(
      shown.stdout,
      new RegExp(`\\n! sq: config\\.yml says port ${other}, but the serving release was started on port ${own} `),
    );
    const json = JSON.parse((await server.cli(["status", "sq", "--json"])).stdout);
    assertEquals([json.port, json.url], [own, `http://127.0.0.1:${own}/`]);
  });
});

Deno.test("releases: lists while config.yml does not load (a typo in notify:), with one line naming where", async () => {
  await withServer(async (server) => {
    const app = "sr";
    await deployedApp(server, app);
    const paths = server.paths(app);
    const config = await Deno.readTextFile(paths.config);
    // A typo in notify: config.yml does not load; releases still lists, with one line naming where.
    await Deno.writeTextFile(paths.config, config + "notify:\n  - { type: slak, url: https://example.com/x }\n");
    const listed = await server.cli(["releases", app]);
    assertEquals(listed.code, 0, listed.output);
    assertMatch(listed.stdout, new RegExp(`\\n\\* +\\S+ +${(await status(server, app)).version} .*serving\\n`));
    const warning = listed.stdout.split("\n").filter((line) => line.startsWith("!"));
    assertEquals(warning.length, 1, listed.stdout);
    assertMatch(warning[0], /^! config\.yml does not load \(listed without it; .*\): \S+config\.yml:\d+:\d+: /);
    const listedJson = await server.cli(["releases", app, "--json"]);
    assertEquals(listedJson.code, 0, listedJson.output);
    assertEquals(JSON.parse(listedJson.stdout).length, 1);
    assertMatch(listedJson.stderr, /^! config\.yml does not load/);
    await Deno.writeTextFile(paths.config, config);
  });
});

Deno.test("status: a failed first deploy (nothing healthy serves) exits 1, as a stopped process does", async () => {
  await withServer(async (server) => {
    const app = "sf";
    const repo = await AppRepo.create(server, app, await server.setupApp(app, { port: freePort() }));
    await repo.commit({
      "deploy.yml": `name: ${app}\ntype: static\nhealthCheck: /missing.html\nwatch: 0\n`,
      "index.html": "v1\n",
    });
    const failed = await repo.push();
    assert(failed.code !== 0, failed.output);
    assertEquals((await status(server, app)).status, "failed");
    const shown = await server.cli(["status", app]);
    assertEquals(shown.code, 1, shown.output);
    assertMatch(shown.stdout, new RegExp(`\\n${app} +failed +no `));
    assertMatch(shown.stdout, new RegExp(`\\n! ${app}: nothing healthy serves \\(status failed; the last deploy`));
    assertEquals((await server.cli(["status", app, "--json"])).code, 1);
  });
});

/** Free loopback ports from 46000-46499 (this test's app, slots and web instances), never the same twice. */
function portsIn46k(count: number): number[] {
  const ports: number[] = [];
  for (let port = 46000 + Math.floor(Math.random() * 400); ports.length < count && port < 46500; port++) {
    if (portFree(port)) ports.push(port);
  }
  assertEquals(ports.length, count, "free ports in 46000-46499");
  return ports;
}

Deno.test("status: a deploy killed after its switch (the old slot stopped, before status.json) shows what serves: the new version, its slot's processes, and how to finish the deploy", async () => {
  await withServer(async (server) => {
    const app = "sk";
    const [port, blue, green, blue2, green2] = portsIn46k(5);
    const repo = await AppRepo.create(server, app, await server.setupApp(app, { port }));
    const paths = server.paths(app);
    await Deno.writeTextFile(
      paths.config,
      `slots: { blue: ${blue}, green: ${green} }\ninstancePorts: { blue: [${blue2}], green: [${green2}] }\n`,
      { append: true },
    );
    const release = (version: string) =>
      repo.commit({
        "deploy.yml": `name: ${app}\ntype: python\nwatch: 300ms\nhealthCheck: ${FAST_HEALTH}\nprocesses:\n` +
          "  web: { command: python app.py, instances: 2 }\n" +
          "  worker: { command: python worker.py, instances: 2, stopTimeout: 5s }\n",
        "app.py": pythonApp(version),
        "worker.py": "import time\nwhile True:\n    time.sleep(1)\n",
      }, version);
    const v1 = (await release("v1")).slice(0, 7);
    await repo.pushOk();

    // Killed right after the old (blue) slot stopped, before its workers and status.json: v2 serves from green.
    const v2 = await release("v2");
    const killed = await run(["git", "push", "production", "main"], {
      cwd: repo.dir,
      env: { ...server.env, DEPLOY_PARADIGM_TEST_KILL: "after:stop" },
    });
    assert(killed.code !== 0, killed.output);
    const answer = await get(`http://127.0.0.1:${port}/`);
    assertEquals("body" in answer ? answer.body : answer.error, "v2");
    const written = await status(server, app);
    assertEquals([written.slot, written.version], ["blue", v1], "status.json is as the deploy before wrote it");

    const shown = await server.cli(["status", app]);
    assertEquals(shown.code, 0, shown.output);
    assertMatch(shown.stdout, new RegExp(`\\n${app} +running +yes +${v2.slice(0, 7)} `));
    assertMatch(
      shown.stdout,
      new RegExp(
        `\\n${app} +processes: web/1 online pid \\d+ · web/2 online pid \\d+ · worker/1 online pid \\d+ · ` +
          "worker/2 online pid \\d+\\n",
      ),
    );
    const warnings = shown.stdout.split("\n").filter((line) => line.startsWith("!"));
    assertEquals(warnings.length, 1, shown.stdout);
    assertMatch(
      warnings[0],
      new RegExp(
        `^! ${app}: a deploy of ${v2.slice(0, 7)} \\(pid \\d+, since [^)]+\\) was interrupted after its switch; it ` +
          `serves \\(release \\d+-\\d+-\\d+, the green slot\\); what follows the switch \\(workers, cron jobs, the ` +
          "postDeploy hook, cleanup\\) may not have run: the next deploy records the interruption and does it \\(" +
          `push a new commit, or redeploy this one: \`deploy-paradigm execute ${paths.repo} ${v2}\`\\)$`,
      ),
    );
    const json = await server.cli(["status", app, "--json"]);
    assertEquals(json.code, 0, json.output);
    const row = JSON.parse(json.stdout);
    assertEquals([row.slot, row.version, row.healthy], ["green", v2.slice(0, 7), true]);
    assertEquals(row.processes.map((p: { name: string }) => p.name).slice(0, 2), [`${app}-green`, `${app}-green-2`]);

    // A push of the commit is up to date; the redeploy the warning names finishes it.
    assertMatch((await repo.push()).output, /Everything up-to-date/);
    const redeploy = await server.cli(["execute", paths.repo, v2]);
    assertEquals(redeploy.code, 0, redeploy.output);
    const after = await server.cli(["status", app]);
    assertEquals(after.code, 0, after.output);
    assert(!after.stdout.includes("!"), after.stdout);
    assertMatch(after.stdout, new RegExp(`\\n${app} +running +yes +${v2.slice(0, 7)} `));
  });
});
