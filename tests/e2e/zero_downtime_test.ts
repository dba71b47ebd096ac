/**
 * Zero downtime, for real: blue-green deploys through the built-in proxy under continuous load
 * from keep-alive connections, with real git pushes, real PM2, Python and Node apps on loopback.
 */
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { AppRepo, type Mode } from "../helpers/apps.ts";
import { LoadGenerator } from "../helpers/load.ts";
import { freePort, get, type TestServer, withServer } from "../helpers/server.ts";
import { deployLog, status } from "../helpers/state.ts";

type Step = Mode | "rollback";

interface Record {
  step: Step;
  /** The version that must serve once the step is over. */
  expect: string;
  start: number;
  end: number;
}

/** Runs one app's steps under load; returns what happened, for the checks. */
async function runSteps(server: TestServer, name: string, kind: "python" | "node", steps: Step[]) {
  const port = freePort();
  const repo = await AppRepo.create(server, name, await server.setupApp(name, { port }));
  // A flaky release passes its health check, then fails /health: inside a 3 s watch window.
  const commit = (version: string, mode: Mode) => {
    const options = { health: HEALTH, watch: mode === "flaky" ? "3s" : "300ms" };
    return kind === "python" ? repo.python(name, version, mode, options) : repo.node(name, version, mode, options);
  };
  await commit(`${name}-v0`, "ok");
  await repo.pushOk();
  const load = new LoadGenerator(`http://127.0.0.1:${port}/`, 3).start();
  const history: string[] = [`${name}-v0`]; // good versions, oldest first
  let serving = `${name}-v0`;
  const records: Record[] = [];
  for (const [i, step] of steps.entries()) {
    const start = performance.now();
    if (step === "rollback") {
      const result = await server.cli(["rollback", name]);
      assertEquals(result.code, 0, result.output);
      history.pop();
      serving = history.at(-1)!;
    } else {
      const version = `${name}-v${i + 1}`;
      await commit(version, step);
      const push = await repo.push();
      if (step === "ok") {
        assertEquals(push.code, 0, push.output);
        history.push(version);
        serving = version;
      } else {
        assert(push.code !== 0, `${step} must fail:\n${push.output}`);
        await repo.git(["reset", "--quiet", "--hard", "HEAD~1"]);
      }
    }
    records.push({ step, expect: serving, start, end: performance.now() });
    await new Promise((r) => setTimeout(r, 300)); // let the load see the result
    await load.answered(records.at(-1)!.end, `${name} after ${step} (#${i + 1})`);
  }
  await load.stop();
  return { load, records, port };
}

const HEALTH = "{ path: /health, window: 4s, interval: 150ms, successes: 2, timeout: 1s }";

Deno.test("zero failed requests: 10 deploys, 3 failing health checks, 1 watch-window failure, 2 rollbacks", async () => {
  await withServer(async (server) => {
    const [py, node] = await Promise.all([
      runSteps(server, "zpy", "python", ["ok", "ok", "500", "ok", "flaky", "ok", "ok", "rollback"]),
      runSteps(server, "znode", "node", ["ok", "ok", "crash", "ok", "nolisten", "ok", "ok", "rollback"]),
    ]);
    const all = [...py.records, ...node.records];
    assertEquals(all.filter((r) => r.step === "ok").length, 10);
    assertEquals(all.filter((r) => ["500", "crash", "nolisten"].includes(r.step)).length, 3);
    assertEquals(all.filter((r) => r.step === "flaky").length, 1);
    assertEquals(all.filter((r) => r.step === "rollback").length, 2);
    for (const { load, records } of [py, node]) {
      const failures = load.failures();
      assertEquals(failures.length, 0, `failed requests: ${JSON.stringify(failures.slice(0, 5))}`);
      assert(load.samples.length > 200, `too few requests: ${load.samples.length}`);
      for (const [i, record] of records.entries()) {
        // Once a step is over (switch and drain done), only the version that must serve answers.
        const until = records[i + 1]?.start ?? Infinity;
        const seen = load.bodiesBetween(record.end, until);
        assertEquals([...seen], [record.expect], `after ${record.step} (#${i + 1}), answers came from ${[...seen]}`);
        if (record.step !== "ok" && record.step !== "rollback" && record.step !== "flaky") {
          // A deploy that fails its health check never gets traffic.
          const during = load.bodiesBetween(record.start, record.end);
          assertEquals([...during], [records[i - 1]?.expect ?? record.expect], `during a failed deploy #${i + 1}`);
        }
      }
    }
    const log = await deployLog(server, "zpy");
    for (const event of ["switch", "drain", "watch", "revert", "rollback"]) {
      assert(log.some((e) => e.event === event), `deploy.log has no ${event} event`);
    }
    const st = await status(server, "zpy");
    assertEquals([st.strategy, st.status, st.healthy], ["blue-green", "running", true]);
    assert(st.slot && st.slotPort, "status.json names the active slot and its port");
    const releases = await server.cli(["releases", "zpy"]);
    assertMatch(releases.stdout, /bad \(rolled back from\)/);
    // Samples come in time order; reduce, not Math.max(...): a fast machine records more than a call's arguments can take.
    const gap = (load: LoadGenerator) =>
      load.samples.reduce((most, s, i, all) => Math.max(most, i ? s.at - all[i - 1].at : 0), 0);
    console.log(
      `zero-downtime run: ${py.load.samples.length + node.load.samples.length} requests, 0 failed; ` +
        `longest wait for an answer (ms): ${gap(py.load).toFixed(0)} (python), ${gap(node.load).toFixed(0)} (node); ` +
        `switch times (ms): ${log.filter((e) => e.event === "switch").map((e) => e.message).join("; ")}`,
    );
  });
});

Deno.test("a long streaming request that started before a switch completes intact", async () => {
  await withServer(async (server) => {
    const port = freePort();
    const repo = await AppRepo.create(server, "stream", await server.setupApp("stream", { port }));
    await repo.node("stream", "old");
    await repo.pushOk();
    const started = performance.now();
    const download = fetch(`http://127.0.0.1:${port}/stream`).then((r) => r.text());
    await new Promise((r) => setTimeout(r, 500));
    await repo.node("stream", "new");
    const push = await repo.pushOk();
    assertMatch(push.output, /✓ drain .*requests in flight to the old slot finished/);
    assertEquals(await download, "old 0\nold 1\nold 2\nold 3\nold 4\n");
    assert(performance.now() - started >= 4500, "the download took its full 5 s");
    assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: "new" });
  });
});

const WS_APP = `Deno.serve({ port: Number(Deno.env.get("PORT")), hostname: "127.0.0.1" }, (req) => {
  if (req.headers.get("upgrade") === "websocket") {
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onmessage = (e) => socket.send("echo " + e.data);
    return response;
  }
  return new Response("ws-app " + (req.headers.get("host") ?? ""));
});
`;

Deno.test("a WebSocket echo works through the proxy, and Host reaches the app", async () => {
  await withServer(async (server) => {
    const port = freePort();
    const repo = await AppRepo.create(server, "ws", await server.setupApp("ws", { port }));
    await repo.commit({
      "deploy.yml":
        "name: ws\ntype: node\nhealthCheck: { path: /health, window: 8s, interval: 200ms, successes: 2 }\n" +
        "command: deno run --allow-net --allow-env server.ts\nwatch: 0\n",
      "server.ts": WS_APP,
    });
    await repo.pushOk();
    const client = Deno.createHttpClient({ allowHost: true }); // plain fetch would overwrite Host itself
    const answer = await fetch(`http://127.0.0.1:${port}/`, { headers: { host: "app.example" }, client });
    assertEquals(await answer.text(), "ws-app app.example");
    client.close();
    const socket = new WebSocket(`ws://127.0.0.1:${port}/chat`);
    const reply = await new Promise<string>((resolve, reject) => {
      socket.onopen = () => socket.send("hello");
      socket.onmessage = (e) => resolve(String(e.data));
      socket.onerror = () => reject(new Error("websocket error"));
    });
    socket.close();
    assertEquals(reply, "echo hello");
  });
});

Deno.test("a static site deploys and is served by the proxy; path traversal and dotfiles are refused", async () => {
  await withServer(async (server) => {
    const port = freePort();
    const repo = await AppRepo.create(
      server,
      "site",
      await server.setupApp("site", { port, dotenv: "SECRET=hidden\n" }),
    );
    await repo.commit({
      "deploy.yml": "name: site\ntype: static\n",
      "index.html": "<h1>home</h1>\n",
      "docs/page.html": "<p>page</p>\n",
      "style.css": "h1 { color: red }\n",
    });
    // The success line says where the site answers, as for an app that runs.
    assertMatch(
      (await repo.pushOk()).output,
      new RegExp(`✓ deployed site \\w+ \\(release [\\d-]+\\) in [\\d.]+s: http://127\\.0\\.0\\.1:${port}/ *\\n`),
    );
    const home = await fetch(`http://127.0.0.1:${port}/`);
    assertEquals([home.status, home.headers.get("content-type")?.split(";")[0]], [200, "text/html"]);
    assertEquals(await home.text(), "<h1>home</h1>\n");
    const css = await fetch(`http://127.0.0.1:${port}/style.css`);
    assertEquals(css.headers.get("content-type")?.split(";")[0], "text/css");
    await css.body?.cancel();
    assertEquals(await get(`http://127.0.0.1:${port}/docs/page.html`), { status: 200, body: "<p>page</p>\n" });
    for (
      const path of [
        "/../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/.env",
        "/docs/../.env",
        "/.deploy-paradigm.json",
      ]
    ) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      await conn.write(new TextEncoder().encode(`GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`));
      const raw = new TextDecoder().decode(await new Response(conn.readable).arrayBuffer());
      assertMatch(raw, /^HTTP\/1\.1 (400|403|404)/, `${path} must be refused:\n${raw.slice(0, 200)}`);
      assert(!raw.includes("root:") && !raw.includes("SECRET"), `${path} leaked a file`);
    }
  });
});

Deno.test("a built static site serves its root: (dist/) only; a root that is a link out of the release is refused", async () => {
  await withServer(async (server) => {
    const port = freePort();
    const repo = await AppRepo.create(server, "built", await server.setupApp("built", { port }));
    await repo.commit({
      "deploy.yml": "name: built\ntype: static\nbuild: cp -r src dist\nroot: dist\n",
      "src/index.html": "<h1>built</h1>\n",
      "src/app.js": "console.log(1)\n",
      "package.json": "{}\n",
    });
    await repo.pushOk();
    assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: "<h1>built</h1>\n" });
    assertEquals(await get(`http://127.0.0.1:${port}/app.js`), { status: 200, body: "console.log(1)\n" });
    for (const path of ["/deploy.yml", "/package.json", "/src/index.html", "/dist/index.html"]) {
      assertEquals(
        await fetch(`http://127.0.0.1:${port}${path}`).then(async (r) => (await r.body?.cancel(), r.status)),
        404,
        path,
      );
    }
    // A root its build made a link out of the release (a committed one is extracted as a plain file): refused at
    // health, the site stays.
    await repo.commit({ "deploy.yml": "name: built\ntype: static\nbuild: ln -s /etc out\nroot: out\n", "src": null });
    const refused = await repo.push();
    assert(refused.code !== 0, refused.output);
    assertMatch(refused.output, /✗ health .*deploy\.yml root: out (leads out of the release|is not a directory)/);
    assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: "<h1>built</h1>\n" });
  });
});

Deno.test("changing strategy: restart → blue-green → restart; with the proxy down a deploy stops before building", async () => {
  await withServer(async (server) => {
    const port = freePort();
    const paths = server.paths("sw");
    const repo = await AppRepo.create(server, "sw", await server.setupApp("sw", { port, strategy: "restart" }));
    const strategy = async (name: string) => {
      const config = await Deno.readTextFile(paths.config);
      await Deno.writeTextFile(paths.config, config.replace(/strategy: .*/, `strategy: ${name}`));
    };
    await repo.python("sw", "v1");
    await repo.pushOk();
    assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: "v1" });

    await strategy("blue-green");
    await server.startProxy();
    await repo.python("sw", "v2");
    await repo.pushOk();
    assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: "v2" });
    assertEquals((await status(server, "sw")).strategy, "blue-green");

    await strategy("restart");
    await new Promise((r) => setTimeout(r, 2500)); // the proxy lets go of the port on its next re-read
    await repo.python("sw", "v3");
    const back = await repo.pushOk();
    assertMatch(back.output, /✓ retire .*slots of the blue-green setup are stopped/);
    assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: "v3" });
    const st = await status(server, "sw");
    assertEquals([st.strategy, st.slot, st.slotPort], ["restart", undefined, undefined]);
    await Deno.stat(`${paths.dir}/route.json`).then(() => assert(false, "route.json must be gone"), () => {});

    await strategy("blue-green");
    await server.stopProxy();
    await repo.python("sw", "v4");
    const down = await repo.push();
    assert(down.code !== 0);
    assertMatch(down.output, /the proxy is not running/);
    assert(!/✓ fetch/.test(down.output), "nothing is built while the proxy is down");
  });
});
