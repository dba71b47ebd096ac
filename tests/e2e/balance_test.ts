/**
 * Several instances of one app behind the built-in proxy, for real: a {@link ProxyServer} in this
 * process over a temp server root, route.json `{"ports": [...]}`, and real HTTP apps (`Deno.serve`
 * on fixed loopback ports, each answering its own name) that are shut down and started again on
 * the same port. Keep-alive load (tests/helpers/load.ts) through the proxy's HTTP/1.1 server,
 * WebSockets, HTTP/2 over TLS (curl), the control socket's `drain` over a slot's ports, and
 * metrics by slot.
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { selfSigned } from "../helpers/certs.ts";
import { LoadGenerator } from "../helpers/load.ts";
import { type ProxyContext, withProxy } from "../helpers/proxy_server.ts";
import { freePort } from "../helpers/server.ts";
import { sleep, until } from "../helpers/time.ts";
import { WsClient } from "../helpers/websocket.ts";
import { control } from "../../src/proxy/client.ts";
import { deploymentsRoot } from "../../src/paths.ts";
import { writeRoute } from "../../src/proxy/routes.ts";

/** One instance of the app: a real HTTP server on its own port, answering its name (WebSockets: `name: message`). */
class Instance {
  server?: Deno.HttpServer<Deno.NetAddr>;
  /** Requests it answered (WebSocket handshakes apart). */
  hits = 0;
  /** How long it takes to answer (a slow instance). */
  delayMs = 0;
  readonly port = freePort();

  constructor(readonly name: string) {}

  start(): this {
    this.server = Deno.serve({ hostname: "127.0.0.1", port: this.port, onListen: () => {} }, async (req) => {
      if (req.headers.get("upgrade")?.toLowerCase() === "websocket") {
        const { socket, response } = Deno.upgradeWebSocket(req);
        socket.onmessage = (event) => socket.send(`${this.name}: ${event.data}`);
        return response;
      }
      this.hits++;
      const wait = new URL(req.url).pathname === "/slow" ? 1500 : this.delayMs;
      if (wait) await sleep(wait);
      return new Response(this.name);
    });
    return this;
  }

  /** Shuts the server down (requests in progress finish; its port refuses connections). */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    await server?.shutdown();
  }
}

/** `names` started as instances; stopped after `fn`, even on failure. */
async function withInstances(names: string[], fn: (instances: Instance[]) => Promise<void>): Promise<void> {
  const instances = names.map((name) => new Instance(name).start());
  try {
    await fn(instances);
  } finally {
    await Promise.all(instances.map((instance) => instance.stop()));
  }
}

/** The app "web" behind the proxy, routed to `instances`; the proxy's log printed when something fails. */
async function withBalanced(
  instances: Instance[],
  fn: (ctx: ProxyContext & { port: number }) => Promise<void>,
  options: { proxyYml?: string; config?: string } = {},
): Promise<void> {
  await withProxy(async (ctx) => {
    const port = await ctx.app("web", { ports: instances.map((instance) => instance.port) });
    if (options.config) {
      await Deno.writeTextFile(join(deploymentsRoot(ctx.root), "web", "config.yml"), options.config, { append: true });
    }
    await ctx.proxy.start();
    try {
      await fn({ ...ctx, port });
    } catch (error) {
      console.log(`proxy log:\n  ${ctx.logs.join("\n  ")}`);
      throw error;
    }
  }, { proxyYml: options.proxyYml });
}

/** Answers by body. */
function tally(bodies: (string | undefined)[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const body of bodies) if (body !== undefined) out[body] = (out[body] ?? 0) + 1;
  return out;
}

Deno.test("balance: keep-alive load spreads over 3 instances; a slow one gets fewer (fewest in flight)", async () => {
  await withInstances(["a", "b", "c"], async (instances) => {
    await withBalanced(instances, async ({ proxy, root, url, port }) => {
      const even = new LoadGenerator(url(port), 6).start();
      await sleep(1500);
      await even.stop();
      const spread = tally(even.samples.map((s) => s.body));
      const total = even.samples.length;
      console.log(`even: ${JSON.stringify(spread)} of ${total}`);
      assertEquals(even.failures().length, 0);
      for (const name of ["a", "b", "c"]) assert(spread[name] > total * 0.15, `${name}: ${JSON.stringify(spread)}`);

      instances[2].delayMs = 30;
      const skewed = new LoadGenerator(url(port), 6).start();
      await sleep(1500);
      await skewed.stop();
      const counts = tally(skewed.samples.map((s) => s.body));
      console.log(`c slow (30 ms): ${JSON.stringify(counts)}`);
      assertEquals(skewed.failures().length, 0);
      assert(counts.c > 0, "the slow one still gets requests");
      assert(counts.c * 4 < counts.a && counts.c * 4 < counts.b, JSON.stringify(counts));

      // status: the route's target as written, every instance in rotation.
      const { routes } = await control(root, { op: "status" }) as { routes: Record<string, unknown>[] };
      assertEquals(routes[0].target, { ports: instances.map((instance) => instance.port) });
      assertEquals(routes[0].inFlight, 0);
      assertEquals(
        routes[0].instances,
        instances.map((instance) => ({ port: instance.port, inFlight: 0, inRotation: true })),
      );
      assert(proxy.routes()[0].target !== undefined);
    });
  });
});

Deno.test("balance: an instance shut down under load leaves rotation with 0 failed requests; restarted, it is back", async () => {
  await withInstances(["a", "b", "c"], async (instances) => {
    await withBalanced(instances, async ({ logs, root, url, port }) => {
      const [, b] = instances;
      const load = new LoadGenerator(url(port), 6).start();
      try {
        await sleep(500);
        await b.stop();
        const stoppedAt = performance.now();
        await until(15_000, "b out of rotation", () => logs.some((line) => line.includes("out of rotation")));
        const { routes } = await control(root, { op: "status" }) as { routes: { instances: unknown[] }[] };
        assertEquals(
          routes[0].instances.map((i) => (i as { inRotation: boolean }).inRotation),
          [true, false, true],
        );
        await sleep(1500);
        assertEquals(load.bodiesBetween(stoppedAt + 200, performance.now()), new Set(["a", "c"]));
        b.hits = 0;
        b.start();
        const restartedAt = performance.now();
        await until(15_000, "b answers again", () => b.hits > 0);
        console.log(`b back after ${(performance.now() - restartedAt).toFixed(0)} ms`);
        await until(15_000, "b back in rotation", () => logs.some((line) => line.includes("back in rotation")));
        await sleep(500);
      } finally {
        await load.stop();
      }
      assertEquals(load.failures(), [], "not one failed request");
      const events = logs.filter((line) => /rotation/.test(line));
      assertEquals(events.length, 2, events.join("\n"));
      assertMatch(
        events[0],
        new RegExp(
          `^web: instance 127\\.0\\.0\\.1:${b.port} refused a connection \\(connection refused\\): out of rotation`,
        ),
      );
      assertMatch(events[1], new RegExp(`^web: instance 127\\.0\\.0\\.1:${b.port} answers again: back in rotation`));
      const after = tally(load.samples.slice(-200).map((s) => s.body));
      assert(after.b > 20, `b takes its share again: ${JSON.stringify(after)}`);
      console.log(`requests: ${load.samples.length}, 0 failed; last 200: ${JSON.stringify(after)}`);
    });
  });
});

/** An instance as a process of its own (`deno run`), answering `name` after 5 ms: killed with SIGKILL, it crashes. */
async function spawnInstance(name: string, port: number): Promise<Deno.ChildProcess> {
  const code = `Deno.serve({ hostname: "127.0.0.1", port: ${port}, onListen: () => console.log("up") }, ` +
    `async () => { await new Promise((r) => setTimeout(r, 5)); return new Response(${JSON.stringify(name)}); });`;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", "--no-config", code],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const first = await reader.read();
  reader.releaseLock();
  child.stdout.cancel().catch(() => {});
  if (!first.value?.includes("up")) throw new Error(`${name} did not start`);
  return child;
}

Deno.test("balance: an instance killed with SIGKILL under load (a crash): 0 failed GETs, requests in flight on it retried", async () => {
  const names = ["a", "b", "c"];
  const ports = names.map(() => freePort());
  const children = await Promise.all(names.map((name, i) => spawnInstance(name, ports[i])));
  try {
    await withProxy(async ({ app, proxy, url, logs }) => {
      const port = await app("web", { ports });
      await proxy.start();
      const load = new LoadGenerator(url(port), 8).start();
      try {
        await sleep(700);
        children[1].kill("SIGKILL");
        await children[1].status;
        const killedAt = performance.now();
        await sleep(1000);
        assertEquals(load.bodiesBetween(killedAt + 100, performance.now()), new Set(["a", "c"]));
      } finally {
        await load.stop();
      }
      assertEquals(load.failures(), [], logs.join("\n"));
      assertEquals(logs.filter((line) => line.includes("out of rotation")).length, 1, logs.join("\n"));
      console.log(
        `requests: ${load.samples.length}, 0 failed; ${JSON.stringify(tally(load.samples.map((s) => s.body)))}`,
      );
    });
  } finally {
    for (const child of children) {
      try {
        child.kill("SIGKILL");
      } catch { /* already gone */ }
      await child.status;
    }
  }
});

Deno.test("balance: route.json from 3 ports to 3 others under load, drain over the control socket: 0 failed; metrics by slot", async () => {
  const metrics = freePort();
  await withInstances(["old-1", "old-2", "old-3", "new-1", "new-2", "new-3"], async (instances) => {
    const [olds, news] = [instances.slice(0, 3), instances.slice(3)];
    const ports = (list: Instance[]) => list.map((instance) => instance.port);
    await withBalanced(olds, async ({ root, url, port, proxy }) => {
      const load = new LoadGenerator(url(port), 6).start();
      let slow: Promise<string> | undefined;
      let switchedAt = 0;
      try {
        await sleep(500);
        const slowAt = performance.now();
        slow = fetch(url(port, "/slow")).then((response) => response.text());
        await sleep(100);
        assertEquals(proxy.routes()[0].slot, "blue");
        await writeRoute(join(deploymentsRoot(root), "web"), { ports: ports(news) });
        assertEquals(await control(root, { op: "reload" }), { ok: true, routes: 1 });
        switchedAt = performance.now();
        assertEquals(proxy.routes()[0].slot, "green");
        const started = performance.now();
        const drained = await control(root, { op: "drain", ports: ports(olds), timeoutMs: 10_000 });
        const drainMs = performance.now() - started;
        assertEquals(drained, { ok: true, drained: true, inFlight: 0 });
        const slowMs = performance.now() - slowAt;
        assert(
          slowMs > 1400,
          `drain waited for the 1.5 s request (it returned ${slowMs.toFixed(0)} ms after it began)`,
        );
        console.log(
          `drain of 3 ports: ${drainMs.toFixed(0)} ms (the 1.5 s request in flight began ${
            slowMs.toFixed(0)
          } ms before)`,
        );
        await Promise.all(olds.map((instance) => instance.stop()));
        await sleep(700);
      } finally {
        await load.stop();
      }
      assertEquals(await slow, "old-1", "the request in flight finished on its old instance");
      assertEquals(load.failures(), []);
      assertEquals(load.bodiesBetween(switchedAt + 50, performance.now()), new Set(["new-1", "new-2", "new-3"]));
      const text = await (await fetch(`http://127.0.0.1:${metrics}/metrics`)).text();
      const count = (slot: string) =>
        Number(new RegExp(`^deploy_paradigm_requests_total\\{app="web",slot="${slot}"\\} (\\d+)`, "m").exec(text)?.[1]);
      assert(
        count("blue") > 50 && count("green") > 50,
        `requests by slot: blue ${count("blue")}, green ${count("green")}`,
      );
    }, {
      proxyYml: `metrics: 127.0.0.1:${metrics}\n`,
      config: `slots: { blue: ${olds[0].port}, green: ${news[0].port} }\n`,
    });
  });
});

Deno.test("balance: WebSockets go to the instance with the fewest open; a refused one is skipped", async () => {
  await withInstances(["a", "b", "c"], async (instances) => {
    await withBalanced(instances, async ({ port, logs }) => {
      const open: WsClient[] = [];
      try {
        for (let i = 0; i < 6; i++) open.push(await WsClient.open(`ws://127.0.0.1:${port}/ws`));
        const answers = await Promise.all(open.map((client, i) => client.echo(`hi ${i}`)));
        const by = tally(answers.map((answer) => String(answer).split(":")[0]));
        assertEquals(by, { a: 2, b: 2, c: 2 }, "an open WebSocket is in flight: two each");
        for (const client of open.splice(0)) await client.close();
        await instances[2].stop();
        for (let i = 0; i < 4; i++) open.push(await WsClient.open(`ws://127.0.0.1:${port}/ws`));
        const later = await Promise.all(open.map((client) => client.echo("again")));
        assertEquals(tally(later.map((answer) => String(answer).split(":")[0])), { a: 2, b: 2 });
        assertEquals(logs.filter((line) => line.includes("out of rotation")).length, 1);
      } finally {
        for (const client of open) await client.close().catch(() => {});
      }
    });
  });
});

Deno.test("balance: HTTP/2 over TLS is balanced too, and retried past a stopped instance", async () => {
  const HOST = "balance.test";
  const [http, https] = [freePort(), freePort()];
  const root = await Deno.makeTempDir({ prefix: "dp-balance-tls-" });
  try {
    const tls = await selfSigned(root, [HOST]);
    await withInstances(["a", "b", "c"], async (instances) => {
      await withBalanced(instances, async () => {
        const curl = async (n: number) => {
          const url = `https://${HOST}:${https}/`;
          const { code, stdout, stderr } = await new Deno.Command("curl", {
            args: [
              ...["-sS", "--max-time", "10", "--http2", "--cacert", tls.certificate],
              ...["--resolve", `${HOST}:${https}:127.0.0.1`, "-w", " %{http_code} %{http_version}\n"],
              ...Array(n).fill(url),
            ],
          }).output();
          const out = new TextDecoder().decode(stdout).trim().split("\n");
          assertEquals(code, 0, new TextDecoder().decode(stderr));
          return out.map((line) => line.split(" "));
        };
        // The certificate loads in the background.
        let first: string[][] = [];
        for (let i = 0; i < 100; i++) {
          first = await curl(9).catch(() => []);
          if (first.length) break;
          await sleep(100);
        }
        assertEquals(new Set(first.map(([, status, version]) => `${status} ${version}`)), new Set(["200 2"]));
        assertEquals(tally(first.map(([name]) => name)), { a: 3, b: 3, c: 3 }, "one HTTP/2 connection, in turn");
        await instances[0].stop();
        const later = await curl(8);
        assertEquals(new Set(later.map(([, status, version]) => `${status} ${version}`)), new Set(["200 2"]));
        assertEquals(tally(later.map(([name]) => name)), { b: 4, c: 4 });
      }, {
        proxyYml: `http: ${http}\nhttps: ${https}\n`,
        config: `domains: [${HOST}]\ntls: { certificate: ${tls.certificate}, key: ${tls.key} }\n`,
      });
    });
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test('balance: a bad {"ports"} route.json is logged and the previous target kept', async () => {
  await withInstances(["a", "b", "c"], async (instances) => {
    await withBalanced(instances, async ({ root, logs, proxy, url, port }) => {
      const good = { ports: instances.map((instance) => instance.port) };
      const file = join(deploymentsRoot(root), "web", "route.json");
      const cases: [string, RegExp][] = [
        [`{"ports": [${good.ports[0]}, ${good.ports[0]}]}`, /"ports" lists port \d+ twice/],
        [`{"ports": [${good.ports[0]}]}`, /"ports" must list 2 to 64 ports \(got 1\); one instance is \{"port": \d+\}/],
        [
          JSON.stringify({ ports: Array.from({ length: 65 }, (_, i) => 40000 + i) }),
          /"ports" must list 2 to 64 ports \(got 65\)/,
        ],
        [`{"ports": [${good.ports[0]}, 0]}`, /"ports"\[1\] must be a whole number from 1 to 65535 \(got 0\)/],
        [`{"ports": ["a", "b"]}`, /"ports"\[0\] must be a whole number from 1 to 65535 \(got "a"\)/],
        [`{"ports": [${good.ports[0]}, ${good.ports[1]}`, /not valid JSON/],
      ];
      for (const [text, expected] of cases) {
        logs.length = 0;
        await Deno.writeTextFile(file, text);
        await proxy.reload();
        const line = logs.find((l) => l.startsWith("web: "));
        assert(line, `${text}: nothing logged`);
        assertMatch(line, expected);
        assertMatch(line, new RegExp(`^web: ${file.replace(/[.]/g, "\\.")}: `));
        assertMatch(line, new RegExp(`; it keeps 3 instances on 127\\.0\\.0\\.1:${good.ports.join(", ")}$`));
        assertEquals(proxy.routes()[0].target, good);
        const answers = await Promise.all([1, 2, 3].map(() => fetch(url(port)).then((r) => r.text())));
        assertEquals(new Set(answers), new Set(["a", "b", "c"]), `${text}: still served by all three`);
      }
      await writeRoute(join(deploymentsRoot(root), "web"), good);
      logs.length = 0;
      await proxy.reload();
      assertEquals(logs, ["web: the problem logged before is gone"]);
    });
  });
});
