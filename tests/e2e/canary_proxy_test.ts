/**
 * The canary split in the real proxy (a {@link ProxyServer} over a temp server root, real
 * sockets): two small HTTP apps answering their own version (v1 stable in slot blue, v2 canary in
 * slot green), canary.json written as the deploy engine writes it, reloads over the proxy. Keep-alive
 * stickiness with Set-Cookie, the exact split by cookie, the address's bucket for clients without
 * one (connections from 127.0.0.x), a percent raised, the canary removed, the control op's figures
 * (requests, 5xx, p95), hostile cookies and canary.json files, HTTP/2 over TLS and WebSockets.
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { selfSigned } from "../helpers/certs.ts";
import { type ProxyProcess, startProxy } from "../helpers/proxy_process.ts";
import { type ProxyContext, withProxy } from "../helpers/proxy_server.ts";
import { freePort } from "../helpers/server.ts";
import { sleep } from "../helpers/time.ts";
import { upgradeRequest, WsClient } from "../helpers/websocket.ts";
import { WireClient } from "../helpers/wire_client.ts";
import { addressBucket } from "../../src/proxy/canary.ts";
import { CANARY_FILE, type CanarySplit, removeCanary, writeCanary } from "../../src/proxy/canary_file.ts";
import { bucketIndex, type CanaryStats, quantileMs } from "../../src/proxy/canary_stats.ts";
import { control } from "../../src/proxy/client.ts";
import { deploymentsRoot } from "../../src/paths.ts";

/** One release of the app: a real HTTP server answering its version (WebSockets: `version: message`). */
class Release {
  readonly server: Deno.HttpServer<Deno.NetAddr>;
  /** How long it takes to answer. */
  delayMs = 0;
  /** Every n-th request answers 500 (0: none). */
  failEvery = 0;
  #answered = 0;

  constructor(readonly version: string) {
    this.server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
      if (req.headers.get("upgrade")?.toLowerCase() === "websocket") {
        const { socket, response } = Deno.upgradeWebSocket(req);
        socket.onmessage = (event) => socket.send(`${this.version}: ${event.data}`);
        return response;
      }
      if (new URL(req.url).pathname === "/slow") return slowBody(this.version);
      const n = ++this.#answered;
      if (this.delayMs) await sleep(this.delayMs);
      return new Response(this.version, { status: this.failEvery && n % this.failEvery === 0 ? 500 : 200 });
    });
  }

  get port(): number {
    return this.server.addr.port;
  }
}

/** A download: its head at once, then `version` and 8 more pieces 250 ms apart (2 s). */
function slowBody(version: string): Response {
  let sent = 0;
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (sent) await sleep(250);
      controller.enqueue(new TextEncoder().encode(sent ? "." : version));
      if (++sent > 8) controller.close();
    },
  });
  return new Response(body);
}

const SINCE = "2026-12-03T15:00:00.000Z";
const COOKIE = /^dp_canary=(\d+); Path=\/; Max-Age=86400; HttpOnly; SameSite=Lax$/;

interface World extends ProxyContext {
  port: number;
  dir: string;
  v1: Release;
  v2: Release;
  /** canary.json to v2 at `percent`, then a reload. */
  canary(percent: number): Promise<void>;
  /** The proxy re-reads the routes (over the control socket, for the proxy process). */
  reload(): Promise<void>;
  /** The proxy process, when the test runs `deploy-paradigm proxy` (else the proxy runs in this process). */
  child?: ProxyProcess;
  stats(): Promise<CanaryStats | null>;
  /** The control op `canary`'s whole reply. */
  reply(): Promise<{ stats: CanaryStats | null; problem?: string }>;
}

/** The app "web": route.json → v1 (blue), canary.json → v2 (green) at `percent`; torn down after `fn`. */
async function withCanary(
  percent: number,
  fn: (world: World) => Promise<void>,
  options: { proxyYml?: string; config?: string; process?: boolean } = {},
): Promise<void> {
  const [v1, v2] = [new Release("v1"), new Release("v2")];
  let child: ProxyProcess | undefined;
  try {
    await withProxy(async (ctx) => {
      const port = await ctx.app("web", { port: v1.port });
      const dir = join(deploymentsRoot(ctx.root), "web");
      const config = `slots: { blue: ${v1.port}, green: ${v2.port} }\n${options.config ?? ""}`;
      await Deno.writeTextFile(join(dir, "config.yml"), config, { append: true });
      const split = (p: number): CanarySplit => ({
        target: { port: v2.port },
        slot: "green",
        percent: p,
        since: SINCE,
      });
      await writeCanary(dir, split(percent));
      if (options.process) child = await startProxy(ctx.root);
      else await ctx.proxy.start();
      const reload = async () => {
        if (child) await control(ctx.root, { op: "reload" });
        else await ctx.proxy.reload();
      };
      const world: World = {
        ...ctx,
        port,
        dir,
        v1,
        v2,
        child,
        reload,
        canary: async (p) => {
          await writeCanary(dir, split(p));
          await reload();
        },
        stats: async () => (await world.reply()).stats,
        reply: async () =>
          await control(ctx.root, { op: "canary", app: "web" }) as { stats: CanaryStats | null; problem?: string },
      };
      try {
        await fn(world);
      } catch (error) {
        console.log(`proxy log:\n  ${child ? child.output() : ctx.logs.join("\n  ")}`);
        throw error;
      }
    }, { proxyYml: options.proxyYml });
  } finally {
    await child?.stop();
    await Promise.all([v1.server.shutdown(), v2.server.shutdown()]);
  }
}

/** `GET /` on `client` with `headers`: the answer (which must come). */
async function get(client: WireClient, port: number, headers = "") {
  assert(await client.send(`GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n${headers}\r\n`));
  const response = await client.response();
  assert(response?.complete, "a whole answer");
  return { version: response.text, status: response.status, cookie: response.headers.get("set-cookie") };
}

/** The side a bucket is on at `percent`. */
const sideOf = (bucket: number, percent: number) => bucket < percent * 100 ? "v2" : "v1";

Deno.test("canary at 25 %: sticky over keep-alive with Set-Cookie, the exact split by cookie, raised, removed", async () => {
  await withCanary(25, async ({ port, logs, url, proxy, dir, canary, stats }) => {
    assertMatch(logs.join("\n"), /web: canary: 25 % of clients → 127\.0\.0\.1:\d+ \(green\)/);
    const sent = { v1: 0, v2: 0 };
    const count = (version: string) => sent[version as "v1" | "v2"]++;
    // A client without a cookie: 100 keep-alive requests, one side, each answer with the cookie of its bucket.
    const own = addressBucket("127.0.0.1");
    const client = await WireClient.connect(port);
    try {
      for (let i = 0; i < 100; i++) {
        const answer = await get(client, port);
        assertEquals([answer.status, answer.version], [200, sideOf(own, 25)]);
        assertEquals(COOKIE.exec(answer.cookie ?? "")?.[1], String(own), answer.cookie ?? "no Set-Cookie");
        count(answer.version);
      }
      // Cookies decide, exactly at the threshold (buckets below 2500 on the canary); no Set-Cookie then.
      const sample = [...Array.from({ length: 400 }, (_, i) => i * 25), 2498, 2499, 2500, 2501, 9999];
      for (const bucket of sample) {
        const answer = await get(client, port, `Cookie: theme=dark; dp_canary=${bucket}\r\n`);
        assertEquals(answer.version, sideOf(bucket, 25), `bucket ${bucket}`);
        assertEquals(answer.cookie, null);
        count(answer.version);
      }
      // Clients from other addresses: each on its address's side.
      for (let i = 2; i < 22; i++) {
        const address = `127.0.0.${i}`;
        const from = Deno.createHttpClient({ localAddress: address });
        try {
          const response = await fetch(url(port), { client: from });
          const version = await response.text();
          assertEquals(version, sideOf(addressBucket(address), 25), address);
          assertEquals(COOKIE.exec(response.headers.get("set-cookie") ?? "")?.[1], String(addressBucket(address)));
          count(version);
        } finally {
          from.close();
        }
      }
      // The figures are what was sent.
      const figures = (await stats())!;
      assertEquals([figures.percent, figures.since], [25, SINCE]);
      assertEquals(
        [figures.stable.slot, figures.stable.requests, figures.canary.slot, figures.canary.requests],
        ["blue", sent.v1, "green", sent.v2],
      );
      assertEquals([figures.stable.errors, figures.canary.errors], [0, 0]);

      // 50 %: the canary's clients stay on it, more join; the figures go on.
      await canary(50);
      assertMatch(logs.at(-1)!, /^web: canary: 50 % of clients → 127\.0\.0\.1:\d+ \(green\)$/);
      for (const bucket of [0, 1000, 2499, 2500, 4999, 5000, 9999]) {
        const answer = await get(client, port, `Cookie: dp_canary=${bucket}\r\n`);
        assertEquals(answer.version, sideOf(bucket, 50), `bucket ${bucket} at 50 %`);
        count(answer.version);
      }
      const later = (await stats())!;
      assertEquals([later.percent, later.stable.requests, later.canary.requests], [50, sent.v1, sent.v2]);

      // Removed: everyone on stable after the reload, no cookie, no figures.
      await removeCanary(dir);
      await proxy.reload();
      assertEquals(logs.at(-1), "web: canary ended: every request goes to the stable target");
      for (const cookie of ["", "Cookie: dp_canary=0\r\n"]) {
        const answer = await get(client, port, cookie);
        assertEquals([answer.version, answer.cookie], ["v1", null]);
      }
      assertEquals(await stats(), null);
    } finally {
      client.close();
    }
  });
});

Deno.test("canary figures: requests, 5xx and p95 per side equal what was sent (a slow, failing canary)", async () => {
  await withCanary(10, async ({ port, v2, stats, dir, proxy, logs }) => {
    v2.delayMs = 30;
    v2.failEvery = 10;
    const client = await WireClient.connect(port);
    try {
      const answers = { v1: 0, v2: 0, errors: 0 };
      for (let i = 0; i < 100; i++) {
        const bucket = i < 40 ? i * 20 : 1000 + i * 80; // 40 below 1000 (the canary), 60 from 4200 (stable)
        const answer = await get(client, port, `Cookie: dp_canary=${bucket}\r\n`);
        answers[answer.version as "v1" | "v2"]++;
        if (answer.status >= 500) answers.errors++;
      }
      assertEquals(answers, { v1: 60, v2: 40, errors: 4 });
      const figures = (await stats())!;
      assertEquals([figures.canary.requests, figures.canary.errors], [40, 4]);
      assertEquals([figures.stable.requests, figures.stable.errors], [60, 0]);
      const p95 = quantileMs(figures.canary.histogram, 0.95)!;
      assert(p95 >= 25, `the canary's p95 (${p95} ms) shows its 30 ms`);
      // Another target starts the figures again (a percent change did not: see the test above).
      const v3 = new Release("v3");
      try {
        // (The green slot moves to v3's port in config.yml: the canary's target must be its slot's.)
        const config = join(dir, "config.yml");
        await Deno.writeTextFile(config, (await Deno.readTextFile(config)).replace(`${v2.port}`, `${v3.port}`));
        await writeCanary(dir, { target: { port: v3.port }, slot: "green", percent: 10, since: SINCE });
        await proxy.reload();
        assertMatch(
          logs.at(-1)!,
          /^web: canary: 10 % of clients → 127\.0\.0\.1:\d+ \(green\) \(figures start again\)$/,
        );
        const fresh = (await stats())!;
        assertEquals([fresh.canary.requests, fresh.stable.requests], [0, 0]);
        assertEquals((await get(client, port, "Cookie: dp_canary=5\r\n")).version, "v3");
      } finally {
        await v3.server.shutdown();
      }
    } finally {
      client.close();
    }
  });
});

Deno.test("canary at 5 % then 25 %: clients placed by their address (no cookie) stay on their side or join the canary", async () => {
  // Addresses 127.0.0.x: one on the canary at 5 %, one that joins it at 25 %, one on stable at both.
  const addresses = Array.from({ length: 250 }, (_, i) => `127.0.0.${i + 2}`);
  const pick = (low: number, high: number) =>
    addresses.find((address) => addressBucket(address) >= low && addressBucket(address) < high)!;
  const [early, joins, stays] = [pick(0, 500), pick(500, 2500), pick(2500, 10_000)];
  assert(early && joins && stays, "such addresses exist");
  /** The version `address` gets, without a cookie (each fetch on its own client keeps none). */
  const from = async (url: string, address: string) => {
    const client = Deno.createHttpClient({ localAddress: address });
    try {
      const response = await fetch(url, { client });
      assertEquals(COOKIE.exec(response.headers.get("set-cookie") ?? "")?.[1], String(addressBucket(address)));
      return await response.text();
    } finally {
      client.close();
    }
  };
  await withCanary(5, async ({ port, url, canary }) => {
    const versions = () => Promise.all([early, joins, stays].map((address) => from(url(port), address)));
    for (let i = 0; i < 3; i++) assertEquals(await versions(), ["v2", "v1", "v1"], "at 5 %");
    await canary(25);
    for (let i = 0; i < 3; i++) assertEquals(await versions(), ["v2", "v2", "v1"], "at 25 %");
  });
});

Deno.test("canary latency: a 3 s WebSocket and a 2 s download on the canary leave its p95 at its answers' heads", async () => {
  await withCanary(25, async ({ port, url, stats }) => {
    const client = await WireClient.connect(port);
    try {
      // Few fast answers, so that two long ones (more than 5 % of them) would be the p95 if they counted.
      for (let i = 0; i < 10; i++) assertEquals((await get(client, port, "Cookie: dp_canary=7\r\n")).version, "v2");
    } finally {
      client.close();
    }
    const before = (await stats())!;
    const p95Before = quantileMs(before.canary.histogram, 0.95)!;
    const started = Date.now();
    const session = async () => {
      const ws = await WsClient.open(`ws://127.0.0.1:${port}/ws`, { headers: { cookie: "dp_canary=7" } });
      try {
        assertEquals(await ws.echo("a"), "v2: a");
        await sleep(3000);
        assertEquals(await ws.echo("b"), "v2: b");
      } finally {
        await ws.close();
      }
    };
    const download = async () => {
      const response = await fetch(url(port, "/slow"), { headers: { cookie: "dp_canary=7" } });
      assertEquals(await response.text(), "v2........");
    };
    await Promise.all([session(), download()]);
    assert(Date.now() - started >= 3000, "the session lasted 3 s");
    await sleep(100); // the tunnel's end is counted after the client's close
    const after = (await stats())!;
    assertEquals(after.canary.requests, before.canary.requests + 2, "both counted");
    assertEquals(after.canary.errors, 0);
    const timed = (h: number[]) => h.reduce((a, b) => a + b, 0);
    assertEquals(timed(after.canary.histogram), timed(before.canary.histogram) + 1, "the download timed, the 101 not");
    const slowest = after.canary.histogram.findLastIndex((count) => count > 0);
    const p95After = quantileMs(after.canary.histogram, 0.95)!;
    assert(slowest < bucketIndex(1000), `nothing near 1 s or more (the slowest bucket is ${slowest})`);
    // Where it was: one more fast answer (the download's head) may move it by a few milliseconds.
    assert(p95After < Math.max(4 * p95Before, 100), `the canary's p95: ${p95Before} ms, then ${p95After} ms`);
  });
});

Deno.test("canary hostile input: bad cookies fall back to the address; an untrusted or invalid canary.json is refused, logged, stable serves", async () => {
  await withCanary(25, async ({ port, logs, proxy, dir, stats, reply }) => {
    const own = addressBucket("127.0.0.1");
    const client = await WireClient.connect(port);
    try {
      for (const value of ["9".repeat(20_000), "-3", "abc", "1e3", "0x10", '"12"', "10000", "", "12 34"]) {
        const answer = await get(client, port, `Cookie: dp_canary=${value}\r\n`);
        assertEquals(answer.version, sideOf(own, 25), `dp_canary=${value.slice(0, 20)}`);
        assertEquals(COOKIE.exec(answer.cookie ?? "")?.[1], String(own), "the address's bucket, set again");
      }
      const canaryPath = join(dir, CANARY_FILE);
      const good = await Deno.readTextFile(canaryPath);
      /** After `change` and a reload: the line logged, and every request (cookie 0: the canary's) on v1. */
      const refused = async (change: () => Promise<void>, expected: RegExp) => {
        await change();
        logs.length = 0;
        await proxy.reload();
        const line = logs.find((l) => l.startsWith("web: "));
        assert(line, `nothing logged for ${expected}`);
        assertMatch(line, expected);
        assertMatch(line, /every request goes to its stable target|canary\.json is ignored/);
        const answer = await get(client, port, "Cookie: dp_canary=0\r\n");
        assertEquals([answer.version, answer.cookie], ["v1", null], `${expected}: stable only`);
        assertEquals(await stats(), null);
        const { problem } = await reply();
        assertEquals(`web: ${problem}`, line, "the control op says the problem logged");
        await Deno.remove(canaryPath, { recursive: true });
        await Deno.writeTextFile(canaryPath, good);
        logs.length = 0;
        await proxy.reload();
        assert(logs.includes("web: the problem logged before is gone"), logs.join("\n"));
        assertEquals((await get(client, port, "Cookie: dp_canary=0\r\n")).version, "v2", "back on the canary");
      };
      const write = (text: string) => () => Deno.writeTextFile(canaryPath, text);
      const split = JSON.parse(good);
      await refused(
        () => Deno.chmod(canaryPath, 0o666),
        /refusing to trust .*canary\.json \(owner uid 0, mode 0666\) is writable by group and others \(fix: chmod go-w /,
      );
      await refused(write("{"), /canary\.json: not valid JSON/);
      await refused(
        write(JSON.stringify({ ...split, percent: 150 })),
        /canary\.json: "percent" must be a number more than 0 and less than 100 \(got 150\) \(fix: it is written by a deploy/,
      );
      await refused(write(JSON.stringify({ ...split, extra: 1 })), /canary\.json: unknown key "extra"/);
      await refused(
        write(JSON.stringify({ ...split, target: { port: 22 } })),
        /canary\.json: "target": port 22 is one fetch refuses/,
      );
      await refused(
        write(JSON.stringify({ ...split, target: { port: split.target.port, dir: "/x" } })),
        /canary\.json: "target": expected exactly one key/,
      );
      const routeJson = JSON.parse(await Deno.readTextFile(join(dir, "route.json")));
      await refused(write(JSON.stringify({ ...split, target: routeJson })), /ignored: its target is route\.json's/);
      await refused(() => Deno.remove(canaryPath).then(() => Deno.mkdir(canaryPath)), /not a regular file/);
      // config.yml has slots: the target must be the port of the slot canary.json names.
      await refused(
        write(JSON.stringify({ ...split, slot: "blue" })),
        /ignored: its target \(127\.0\.0\.1:\d+\) is not slot "blue" \(port \d+ in config\.yml's slots\) \(fix: /,
      );
      await refused(write(JSON.stringify({ ...split, slot: "red" })), /config\.yml's slots have no slot "red"/);
    } finally {
      client.close();
    }
  });
});

Deno.test("canary over HTTP/2 (TLS) and WebSockets: the same split, the cookie set", async () => {
  const HOST = "canary.test";
  const [http, https] = [freePort(), freePort()];
  const certs = await Deno.makeTempDir({ prefix: "dp-canary-tls-" });
  try {
    const tls = await selfSigned(certs, [HOST]);
    await withCanary(25, async ({ port: _ }) => {
      /** `n` GETs on one HTTP/2 connection with `cookie`: [body, HTTP version, Set-Cookie] each. */
      const curl = async (n: number, cookie?: string) => {
        const url = `https://${HOST}:${https}/`;
        const { code, stdout, stderr } = await new Deno.Command("curl", {
          args: [
            ...["-sS", "--max-time", "10", "--http2", "--cacert", tls.certificate],
            ...["--resolve", `${HOST}:${https}:127.0.0.1`, "-w", "|%{http_version}|%header{set-cookie}\n"],
            ...(cookie ? ["-H", `Cookie: ${cookie}`] : []),
            ...Array(n).fill(url),
          ],
        }).output();
        assertEquals(code, 0, new TextDecoder().decode(stderr));
        return new TextDecoder().decode(stdout).split("\n").slice(0, -1).map((line) => line.split("|"));
      };
      // The certificate loads in the background.
      let first: string[][] = [];
      for (let i = 0; i < 100 && !first.length; i++) {
        first = await curl(5).catch(() => []);
        if (!first.length) await sleep(100);
      }
      const own = addressBucket("127.0.0.1");
      assertEquals(first.length, 5);
      for (const [body, version, cookie] of first) {
        assertEquals([body, version], [sideOf(own, 25), "2"]);
        assertEquals(COOKIE.exec(cookie)?.[1], String(own));
      }
      for (const bucket of [0, 2499, 2500, 9999]) {
        const answers = await curl(3, `a=b; dp_canary=${bucket}`);
        assertEquals(answers, Array(3).fill([sideOf(bucket, 25), "2", ""]), `bucket ${bucket} over HTTP/2`);
      }
    }, {
      proxyYml: `http: ${http}\nhttps: ${https}\n`,
      config: `domains: [${HOST}]\ntls: { certificate: ${tls.certificate}, key: ${tls.key} }\n`,
    });
  } finally {
    await Deno.remove(certs, { recursive: true });
  }
  // WebSockets on an app's own port (HTTP/1.1 tunnels).
  await withCanary(25, async ({ port, stats }) => {
    for (const [bucket, side] of [[100, "v2"], [9000, "v1"]] as const) {
      const ws = await WsClient.open(`ws://127.0.0.1:${port}/ws`, { headers: { cookie: `dp_canary=${bucket}` } });
      try {
        assertEquals(await ws.echo("hi"), `${side}: hi`);
      } finally {
        await ws.close();
      }
    }
    const client = await WireClient.connect(port);
    try {
      await client.send(upgradeRequest("/ws", { Host: `127.0.0.1:${port}` }));
      const answer = await client.response({ ms: 5000 });
      assertEquals(answer?.status, 101);
      assertEquals(COOKIE.exec(answer?.headers.get("set-cookie") ?? "")?.[1], String(addressBucket("127.0.0.1")));
    } finally {
      client.close();
    }
    const figures = (await stats())!;
    assertEquals([figures.canary.requests, figures.stable.requests >= 1], [1, true]);
  });
});

Deno.test("canary in the `deploy-paradigm proxy` process: split, cookie, figures over the control socket, removal", async () => {
  await withCanary(25, async ({ port, child, root, dir, reload, stats }) => {
    await child!.waitFor(/web: canary: 25 % of clients → 127\.0\.0\.1:\d+ \(green\)/);
    const own = addressBucket("127.0.0.1");
    const client = await WireClient.connect(port);
    try {
      const first = await get(client, port);
      assertEquals([first.version, COOKIE.exec(first.cookie ?? "")?.[1]], [sideOf(own, 25), String(own)]);
      assertEquals((await get(client, port, "Cookie: dp_canary=0\r\n")).version, "v2");
      assertEquals((await get(client, port, "Cookie: dp_canary=9999\r\n")).version, "v1");
      const figures = (await stats())!;
      const expected = own < 2500 ? [1, 2] : [2, 1];
      assertEquals([figures.stable.requests, figures.canary.requests], expected);
      const refusal = (request: object) => control(root, request).then(() => "accepted", (e: Error) => e.message);
      assertMatch(await refusal({ op: "canary", app: "nope" }), /the proxy serves no app named nope/);
      assertMatch(await refusal({ op: "canary", app: "../web" }), /"app" must be an app name \(got "\.\.\/web"\)/);
      await removeCanary(dir);
      await reload();
      await child!.waitFor(/web: canary ended: every request goes to the stable target/);
      assertEquals((await get(client, port, "Cookie: dp_canary=0\r\n")).version, "v1");
      assertEquals(await stats(), null);
    } finally {
      client.close();
    }
  }, { process: true });
});
