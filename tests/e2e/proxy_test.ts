/**
 * The built-in proxy for real: `Deno.serve` apps on loopback, a {@link ProxyServer} over a temp
 * server root, its real control socket, and the real `proxy` command as a child process.
 */
import { join, resolve } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { control } from "../../src/proxy/client.ts";
import { controlSocketPath, writeRoute } from "../../src/proxy/routes.ts";
import { deployGroup, lookupGroup } from "../../src/users.ts";
import { ProxyServer } from "../../src/proxy/server.ts";
import { deploymentsRoot } from "../../src/paths.ts";
import { sleep, within } from "../helpers/time.ts";
import { freePort } from "../helpers/server.ts";
import { withProxy } from "../helpers/proxy_server.ts";
import { type ProxyProcess, startProxy } from "../helpers/proxy_process.ts";
import { selfSigned } from "../helpers/certs.ts";

const BIN = resolve(import.meta.dirname!, "../../bin/deploy-paradigm");
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** An app process: a real HTTP server on 127.0.0.1. */
function upstream(handler: Deno.ServeHandler<Deno.NetAddr>): Deno.HttpServer<Deno.NetAddr> {
  return Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, handler);
}

/** One HTTP/1.1 request with the request-target sent exactly as given (fetch would normalize `..`). */
async function rawGet(port: number, target: string): Promise<{ status: number; text: string }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(encoder.encode(`GET ${target} HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n`));
  const text = await new Response(conn.readable).text();
  return { status: Number(text.split(" ")[1]), text };
}

Deno.test("proxy: forwards with Host kept and X-Forwarded-*, hop-by-hop dropped; 503 without target, 502 refused", async () => {
  const app = upstream(async (req, info) => {
    const url = new URL(req.url);
    if (url.pathname === "/redirect") return new Response(null, { status: 302, headers: { location: "/elsewhere" } });
    if (url.pathname === "/gzip") {
      const gz = new Blob(["compressed ".repeat(100)]).stream().pipeThrough(new CompressionStream("gzip"));
      return new Response(gz, { headers: { "content-encoding": "gzip", "content-type": "text/plain" } });
    }
    return Response.json({
      path: url.pathname + url.search,
      method: req.method,
      headers: Object.fromEntries(req.headers),
      body: await req.text(),
      peer: info.remoteAddr.hostname,
    }, { headers: { "x-app": "yes", "set-cookie": "a=1" } });
  });
  const client = Deno.createHttpClient({ allowHost: true });
  try {
    await withProxy(async ({ proxy, logs, app: setup, url }) => {
      const port = await setup("web", { port: app.addr.port });
      const empty = await setup("empty");
      const down = await setup("down", { port: freePort() });
      await proxy.start();

      const response = await fetch(url(port, "/a/b?q=1&r=%20"), {
        client,
        method: "POST",
        body: "hello",
        headers: { host: "example.test", "x-forwarded-for": "10.0.0.1", "keep-alive": "timeout=5", "x-custom": "1" },
      });
      assertEquals(response.status, 200);
      assertEquals(response.headers.get("x-app"), "yes");
      assertEquals(response.headers.get("set-cookie"), "a=1");
      const seen = await response.json();
      assertEquals(seen.path, "/a/b?q=1&r=%20");
      assertEquals(seen.method, "POST");
      assertEquals(seen.body, "hello");
      assertEquals(seen.headers.host, "example.test");
      assertEquals(seen.headers["x-forwarded-for"], "127.0.0.1", "a client's X-Forwarded-For is replaced");
      assertEquals(seen.headers["x-real-ip"], "127.0.0.1");
      assertEquals(seen.headers["x-forwarded-proto"], "http");
      assertEquals(seen.headers["x-forwarded-host"], "example.test");
      assertEquals(seen.headers["x-custom"], "1");
      assertEquals(seen.headers["keep-alive"], undefined);
      assertEquals(seen.headers["content-length"], "5", "small bodies reach the app with a Content-Length");
      assertEquals(seen.peer, "127.0.0.1");

      const redirect = await fetch(url(port, "/redirect"), { redirect: "manual" });
      await redirect.body?.cancel();
      assertEquals([redirect.status, redirect.headers.get("location")], [302, "/elsewhere"]);

      const gzip = await fetch(url(port, "/gzip"));
      assertEquals(gzip.headers.get("content-encoding"), "gzip", "a compressed answer stays compressed");
      assertEquals(await gzip.text(), "compressed ".repeat(100));

      const noTarget = await fetch(url(empty));
      assertEquals([noTarget.status, await noTarget.text()], [503, "503 Service Unavailable\n"]);

      const started = performance.now();
      const refused = await fetch(url(down));
      assertEquals([refused.status, await refused.text()], [502, "502 Bad Gateway\n"], "no internal address");
      assert(logs.some((line) => /^down: GET \/: 127\.0\.0\.1:\d+: /.test(line)), "the cause is in the log");
      assert(performance.now() - started < 1000, "a refused connection answers at once");
      assertEquals(proxy.inFlight(app.addr.port), 0);
    });
  } finally {
    client.close();
    await app.shutdown();
  }
});

Deno.test("proxy: streams a chunked response and a request body incrementally, both ways", async () => {
  const clientGotFirst = Promise.withResolvers<void>();
  const appGotFirst = Promise.withResolvers<void>();
  const app = upstream(async (req) => {
    const url = new URL(req.url);
    if (url.pathname === "/download") {
      return new Response(
        new ReadableStream<Uint8Array>({
          async start(controller) {
            controller.enqueue(encoder.encode("first;"));
            // Only sent once the client has the first chunk: a buffering proxy deadlocks here.
            const ok = await within(3000, "first chunk through the proxy", clientGotFirst.promise).then(
              () => true,
              () => false,
            );
            controller.enqueue(encoder.encode(ok ? "second" : "TIMEOUT"));
            controller.close();
          },
        }),
        { headers: { "content-type": "text/plain" } },
      );
    }
    let bytes = 0;
    for await (const chunk of req.body!) {
      if (bytes === 0) appGotFirst.resolve();
      bytes += chunk.length;
    }
    return Response.json({ bytes, chunked: req.headers.get("transfer-encoding") });
  });
  try {
    await withProxy(async ({ proxy, app: setup, url }) => {
      const port = await setup("stream", { port: app.addr.port });
      await proxy.start();

      const download = await fetch(url(port, "/download"));
      const reader = download.body!.getReader();
      const first = await within(3000, "first chunk", reader.read());
      assertEquals(decoder.decode(first.value), "first;");
      clientGotFirst.resolve();
      let rest = "";
      for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) {
        rest += decoder.decode(chunk.value);
      }
      assertEquals(rest, "second");

      // An upload without a length: its first chunk must reach the app before the client sends the rest.
      const big = new Uint8Array(64 * 1024).fill(7);
      let sent = 0;
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(big);
          sent = big.length;
        },
        async pull(controller) {
          if (sent === big.length) await within(3000, "first upload chunk at the app", appGotFirst.promise);
          if (sent >= 8 * 1024 * 1024) return controller.close();
          controller.enqueue(big);
          sent += big.length;
        },
      });
      const upload = await fetch(url(port, "/upload"), { method: "POST", body });
      assertEquals(await upload.json(), { bytes: 8 * 1024 * 1024, chunked: "chunked" });
      assertEquals(proxy.inFlight(app.addr.port), 0);
    });
  } finally {
    await app.shutdown();
  }
});

Deno.test("proxy: a route switch + reload over the control socket while a 3 s stream is in flight; drain waits for it", async () => {
  const slow = upstream((req) => {
    if (new URL(req.url).pathname !== "/slow") return new Response("old");
    let i = 0;
    return new Response(
      new ReadableStream<Uint8Array>({
        async pull(controller) {
          if (i > 0) await sleep(600);
          if (i === 6) return controller.close();
          controller.enqueue(encoder.encode(`part${i++};`));
        },
      }),
    );
  });
  const fresh = upstream(() => new Response("new"));
  try {
    await withProxy(async ({ root, proxy, logs, app: setup, url }) => {
      const port = await setup("switch", { port: slow.addr.port });
      await proxy.start();
      const socket = controlSocketPath(root);
      // Root only; root and the deploy group when the machine has one (see control.ts).
      const mode = lookupGroup(deployGroup()) === undefined ? 0o600 : 0o660;
      assertEquals(
        (await Deno.stat(socket)).mode! & 0o777,
        mode,
        "only root (and the deploy group) may use the socket",
      );
      assertEquals(await (await fetch(url(port))).text(), "old");

      const started = performance.now();
      const stream = await fetch(url(port, "/slow"));
      const reader = stream.body!.getReader();
      let received = decoder.decode((await reader.read()).value);
      const rest = (async () => {
        for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) {
          received += decoder.decode(chunk.value);
        }
      })();
      rest.catch(() => {}); // awaited below; a failed assertion before that must not hide behind it
      assertEquals(proxy.inFlight(slow.addr.port), 1);

      await writeRoute(join(deploymentsRoot(root), "switch"), { port: fresh.addr.port });
      assertEquals(await control(root, { op: "reload" }), { ok: true, routes: 1 });
      assert(logs.includes(`switch: 127.0.0.1:${slow.addr.port} → 127.0.0.1:${fresh.addr.port}`), logs.join("\n"));
      for (let i = 0; i < 3; i++) assertEquals(await (await fetch(url(port))).text(), "new");

      const status = await control(root, { op: "status" });
      assertEquals(status, {
        ok: true,
        routes: [{ app: "switch", port, domains: [], target: { port: fresh.addr.port }, inFlight: 0, listening: true }],
        host: "127.0.0.1",
        problems: {}, // what the proxy could not do (status's `! proxy:` lines): nothing
        shared: { http: null, https: null }, // no app has domains: the shared ports are closed
        certificates: {},
      });
      assertEquals(
        await control(root, { op: "drain", port: slow.addr.port, timeoutMs: 100 }),
        { ok: true, drained: false, inFlight: 1 },
      );
      const drain = await control(root, { op: "drain", port: slow.addr.port, timeoutMs: 10_000 });
      const drainedAfter = performance.now() - started;
      assertEquals(drain, { ok: true, drained: true, inFlight: 0 });
      assert(drainedAfter > 2500, `drain returned after ${drainedAfter} ms, before the 3 s stream ended`);
      await rest;
      assertEquals(received, "part0;part1;part2;part3;part4;part5;", "the stream from the old target is intact");
      assertEquals(await control(root, { op: "drain", port: slow.addr.port }), {
        ok: true,
        drained: true,
        inFlight: 0,
      });

      // Bad requests get an error reply, and the connection keeps working.
      // control() turns a refusal into an error that says why.
      const refusal = (request: object) => control(root, request).then(() => "accepted", (e: Error) => e.message);
      assertMatch(
        await refusal({ op: "explode" }),
        /refused .*unknown op "explode" \(reload, drain, status, renew, canary\)/,
      );
      assertMatch(await refusal({ op: "drain", port: "x" }), /"port" must be a whole number/);
      const conn = await Deno.connect({ transport: "unix", path: socket });
      await conn.write(encoder.encode('not json\n{"op":"reload"}\n'));
      const replies = decoder.decode(await within(3000, "control replies", readLines(conn, 2)));
      conn.close();
      assertEquals(replies.trim().split("\n").map((line) => JSON.parse(line)), [
        { ok: false, error: "not a JSON object" },
        { ok: true, routes: 1 },
      ]);

      // A second proxy on the same server refuses to start while this one runs.
      const second = new ProxyServer({ root, host: "127.0.0.1" });
      const refused = await second.start().then(() => "started", (error: Error) => error.message);
      await second.close();
      assertMatch(refused, /another proxy is already running/);
    });
  } finally {
    await slow.shutdown();
    await fresh.shutdown();
  }
});

async function readLines(conn: Deno.Conn, lines: number): Promise<Uint8Array> {
  const chunks: number[] = [];
  const buffer = new Uint8Array(4096);
  while (chunks.filter((b) => b === 10).length < lines) {
    const n = await conn.read(buffer);
    if (n === null) break;
    chunks.push(...buffer.subarray(0, n));
  }
  return new Uint8Array(chunks);
}

Deno.test("proxy: reload opens and closes listeners, skips an invalid config.yml with a log line", async () => {
  const app = upstream(() => new Response("ok"));
  try {
    await withProxy(async ({ root, proxy, logs, app: setup, url }) => {
      await proxy.start();
      assertEquals(proxy.routes(), []);
      const port = await setup("later", { port: app.addr.port });
      const broken = join(deploymentsRoot(root), "broken");
      await Deno.mkdir(broken);
      await Deno.writeTextFile(join(broken, "config.yml"), "port: 99999\nmanager: pm2\n");
      const restart = join(deploymentsRoot(root), "restart");
      await Deno.mkdir(restart);
      await Deno.writeTextFile(join(restart, "config.yml"), `port: ${freePort()}\nmanager: pm2\nstrategy: restart\n`);
      assertEquals(await proxy.reload(), 1, "apps with strategy: restart bind their port themselves");
      assert(logs.some((line) => line.startsWith("skipping broken:") && line.includes("port")), logs.join("\n"));
      assertEquals(await (await fetch(url(port))).text(), "ok");
      const lines = logs.length;
      await proxy.reload();
      assertEquals(logs.length, lines, "an unchanged problem is not logged again");

      await Deno.remove(join(deploymentsRoot(root), "later"), { recursive: true });
      assertEquals(await proxy.reload(), 0);
      assert(logs.includes(`closed 127.0.0.1:${port}`), logs.join("\n"));
      const gone = await fetch(url(port)).then(() => "answered", (error: Error) => error.message);
      assertMatch(gone, /refused|fetch failed/);
    });
  } finally {
    await app.shutdown();
  }
});

Deno.test("proxy: WebSocket echo (text and binary), closes propagated both ways, in flight while open", async () => {
  let appClose: { code: number; reason: string } | undefined;
  const app = upstream((req) => {
    const who = `${req.headers.get("host")} ${new URL(req.url).search} ${req.headers.get("x-forwarded-for")}`;
    const { socket, response } = Deno.upgradeWebSocket(req, { protocol: "echo" });
    socket.onmessage = (event) => {
      if (event.data === "who") socket.send(who);
      else if (event.data === "bye") socket.close(4001, "server says bye");
      else socket.send(event.data);
    };
    socket.onclose = (event) => appClose = { code: event.code, reason: event.reason };
    return response;
  });
  try {
    await withProxy(async ({ proxy, app: setup }) => {
      const port = await setup("ws", { port: app.addr.port });
      const down = await setup("ws-down", { port: freePort() });
      await proxy.start();
      const refused = new WebSocket(`ws://127.0.0.1:${down}/`);
      const failure = await within(3000, "refused WebSocket", new Promise((resolve) => refused.onerror = resolve));
      assertMatch((failure as ErrorEvent).message, /Invalid status code:? 502/);
      const open = async () => {
        const ws = new WebSocket(`ws://127.0.0.1:${port}/socket?x=1`, ["echo"]);
        ws.binaryType = "arraybuffer";
        const messages: unknown[] = [];
        const waiting: ((value: unknown) => void)[] = [];
        ws.onmessage = (event) => waiting.length ? waiting.shift()!(event.data) : messages.push(event.data);
        const closed = new Promise<CloseEvent>((resolve) => ws.onclose = resolve);
        await within(
          3000,
          "WebSocket open",
          new Promise((resolve, reject) => (ws.onopen = resolve, ws.onerror = reject)),
        );
        const next = () =>
          within(
            3000,
            "WebSocket message",
            messages.length ? Promise.resolve(messages.shift()) : new Promise((resolve) => waiting.push(resolve)),
          );
        return { ws, next, closed };
      };

      const one = await open();
      assertEquals(one.ws.protocol, "echo");
      one.ws.send("hello");
      assertEquals(await one.next(), "hello");
      one.ws.send(new Uint8Array([1, 2, 3, 255]));
      assertEquals([...new Uint8Array(await one.next() as ArrayBuffer)], [1, 2, 3, 255]);
      one.ws.send("who");
      assertEquals(await one.next(), `127.0.0.1:${port} ?x=1 127.0.0.1`);
      assertEquals(proxy.inFlight(app.addr.port), 1);
      one.ws.close(4000, "client says bye");
      await within(3000, "client close", one.closed);
      for (let i = 0; i < 50 && !appClose; i++) await sleep(20);
      assertEquals(appClose, { code: 4000, reason: "client says bye" });
      for (let i = 0; i < 50 && proxy.inFlight(app.addr.port); i++) await sleep(20);
      assertEquals(proxy.inFlight(app.addr.port), 0);

      const two = await open();
      two.ws.send("bye");
      const closed = await within(3000, "server close", two.closed);
      assertEquals([closed.code, closed.reason], [4001, "server says bye"]);
    });
  } finally {
    await app.shutdown();
  }
});

Deno.test("proxy: static releases: types, index.html, ETag/304, HEAD; traversal, dotfiles and outside symlinks refused", async () => {
  const base = await Deno.makeTempDir({ prefix: "dp-static-" });
  try {
    const www = join(base, "www");
    const release = join(www, "release");
    await Deno.mkdir(join(release, "sub"), { recursive: true });
    await Deno.mkdir(join(www, "etc"));
    await Deno.mkdir(join(base, "etc"));
    await Deno.writeTextFile(join(www, "etc", "passwd"), "SECRET-1");
    await Deno.writeTextFile(join(base, "etc", "passwd"), "SECRET-2");
    await Deno.writeTextFile(join(www, "outside.txt"), "SECRET-3");
    await Deno.writeTextFile(join(release, ".env"), "SECRET-4");
    await Deno.writeTextFile(join(release, ".deploy-paradigm.json"), '{"SECRET":5}');
    await Deno.writeTextFile(join(release, "index.html"), "<h1>home</h1>");
    await Deno.writeTextFile(join(release, "app.js"), "console.log(1)");
    await Deno.writeTextFile(join(release, "style.css"), "h1{}");
    await Deno.writeTextFile(join(release, "data.json"), "{}");
    await Deno.writeTextFile(join(release, "blob.bin"), "xyz");
    await Deno.writeTextFile(join(release, "sub", "index.html"), "<h1>sub</h1>");
    await Deno.symlink(join(www, "outside.txt"), join(release, "link-out"));
    await Deno.symlink(join(release, ".env"), join(release, "link-env"));
    await Deno.symlink("app.js", join(release, "link-in.js"));
    await Deno.symlink("loop-b", join(release, "loop-a"));
    await Deno.symlink("loop-a", join(release, "loop-b"));

    await withProxy(async ({ proxy, app: setup, url, logs }) => {
      const port = await setup("site", { dir: release });
      await proxy.start();
      const get = async (path: string, init?: RequestInit) => {
        const response = await fetch(url(port, path), init);
        return { response, text: await response.text() };
      };

      const home = await get("/");
      assertEquals([home.response.status, home.text], [200, "<h1>home</h1>"]);
      assertEquals(home.response.headers.get("content-type"), "text/html; charset=utf-8");
      for (
        const [path, type] of [
          ["/app.js", "text/javascript; charset=utf-8"],
          ["/style.css", "text/css; charset=utf-8"],
          ["/data.json", "application/json"],
          ["/blob.bin", "application/octet-stream"],
          ["/link-in.js", "text/javascript; charset=utf-8"],
        ]
      ) {
        const { response } = await get(path);
        assertEquals([path, response.status, response.headers.get("content-type")], [path, 200, type]);
      }
      const redirect = await get("/sub", { redirect: "manual" });
      assertEquals([redirect.response.status, redirect.response.headers.get("location")], [301, "/sub/"]);
      assertEquals((await get("/sub/")).text, "<h1>sub</h1>");

      const js = await get("/app.js");
      const etag = js.response.headers.get("etag")!;
      const modified = js.response.headers.get("last-modified")!;
      // Weak once Deno's HTTP server compresses the file for a client that accepts gzip (fetch does).
      assertMatch(etag, /^(W\/)?"[0-9a-f]+-[0-9a-f]+"$/);
      const cached = await get("/app.js", { headers: { "if-none-match": etag } });
      assertEquals([cached.response.status, cached.text], [304, ""]);
      assertEquals((await get("/app.js", { headers: { "if-modified-since": modified } })).response.status, 304);
      assertEquals((await get("/app.js", { headers: { "if-none-match": '"other"' } })).response.status, 200);

      const head = await get("/", { method: "HEAD" });
      assertEquals([head.response.status, head.response.headers.get("content-length"), head.text], [200, "13", ""]);
      assertEquals((await get("/", { method: "POST", body: "x" })).response.status, 405);
      assertEquals((await get("/missing.html")).response.status, 404);

      for (
        const path of [
          "/../etc/passwd",
          "/%2e%2e/%2e%2e/etc/passwd",
          "/..%2f..%2fetc/passwd",
          "/..%5c..%5cetc%5cpasswd",
          "/.env",
          "/sub/../.env",
          "/%2eenv",
          "/.deploy-paradigm.json",
          "/link-out",
          "/link-env",
          "/app.js%00.html",
        ]
      ) {
        const { status, text } = await rawGet(port, path);
        assertEquals([path, status], [path, 404]);
        assert(!text.includes("SECRET"), `${path} leaked: ${text}`);
      }
      assertEquals((await rawGet(port, "/%E0%A4%A")).status, 400);
      // A symbolic link loop, a name too long for the file system: nothing there (they were 500s, each
      // logging the whole path: a client could write 120 KB of log per request).
      for (const path of ["/loop-a", `/${"a".repeat(300)}`, `/${"b".repeat(5000)}/x`]) {
        assertEquals([path.slice(0, 20), (await rawGet(port, path)).status], [path.slice(0, 20), 404]);
      }
      assertEquals(logs.filter((line) => line.length > 500), [], "no log line carries a whole long path");
    });
  } finally {
    await Deno.remove(base, { recursive: true });
  }
});

Deno.test("proxy: the handler works without a server; close() cuts streams and WebSockets left after the grace", async () => {
  const app = upstream((req) => {
    if (req.headers.get("upgrade") === "websocket") {
      const { socket, response } = Deno.upgradeWebSocket(req);
      socket.onmessage = (event) => socket.send(event.data);
      return response;
    }
    if (new URL(req.url).pathname === "/endless") {
      return new Response(
        new ReadableStream<Uint8Array>({
          async pull(controller) {
            await sleep(50);
            controller.enqueue(encoder.encode("tick;"));
          },
        }),
      );
    }
    return new Response(`hi ${req.headers.get("x-forwarded-for")}`);
  });
  try {
    await withProxy(async ({ proxy, app: setup, url }) => {
      const port = await setup("direct", { port: app.addr.port });
      await proxy.start();
      const client = { ip: "192.0.2.7", scheme: "http" as const, isTrusted: () => false };
      const conn = (port: number) => ({ entry: { kind: "port" as const, port }, client });
      const response = await proxy.handler(new Request("http://example.test/"), conn(port));
      // The app's whole answer came with its head: nothing more is asked of the app, so nothing is in flight.
      assertEquals(proxy.inFlight(app.addr.port), 0, "done with the app once its answer is read");
      assertEquals(await response.text(), "hi 192.0.2.7");
      const none = await proxy.handler(new Request("http://example.test/"), conn(port + 1));
      assertEquals([none.status, await none.text()], [503, "503 Service Unavailable\n"]);

      const endless = await fetch(url(port, "/endless"));
      const reader = endless.body!.getReader();
      await reader.read();
      const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
      const closed = new Promise<CloseEvent>((resolve) => ws.onclose = resolve);
      await within(3000, "WebSocket open", new Promise((resolve) => ws.onopen = resolve));
      assertEquals(proxy.inFlight(app.addr.port), 2);
      const started = performance.now();
      await within(3000, "close", proxy.close(300));
      const took = performance.now() - started;
      assert(took >= 250 && took < 2000, `close took ${took} ms`);
      const ended = await within(
        3000,
        "cut stream",
        (async () => {
          try {
            while (!(await reader.read()).done);
            return "done";
          } catch {
            return "cut";
          }
        })(),
      );
      assert(["done", "cut"].includes(ended));
      await within(3000, "WebSocket closed", closed);
      assertEquals(proxy.inFlight(app.addr.port), 0);
    });
  } finally {
    await app.shutdown();
  }
});

Deno.test("proxy: the real command serves, answers on the control socket, and stops cleanly on SIGTERM", async () => {
  const root = await Deno.makeTempDir({ prefix: "dp-proxy-cli-" });
  const app = upstream(() => new Response("from the app"));
  let child: Deno.ChildProcess | undefined;
  let lines: ReadableStreamDefaultReader<string> | undefined;
  let stderr: Promise<string> | undefined;
  try {
    const dir = join(deploymentsRoot(root), "cli");
    await Deno.mkdir(dir, { recursive: true });
    const port = freePort();
    await Deno.writeTextFile(join(dir, "config.yml"), `port: ${port}\nmanager: pm2\nenv: production\n`);
    await writeRoute(dir, { port: app.addr.port });
    child = new Deno.Command(BIN, {
      args: ["proxy", "--host", "127.0.0.1"],
      env: { DEPLOY_PARADIGM_PREFIX: root, NO_COLOR: "1" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    stderr = new Response(child.stderr).text();
    lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let stdout = "";
    await within(
      10_000,
      "proxy ready",
      (async () => {
        while (!stdout.includes("proxy ready")) {
          const { value, done } = await lines!.read();
          if (done) throw new Error(`the proxy exited: ${stdout}${await stderr}`);
          stdout += value;
        }
      })(),
    );
    assertMatch(stdout, new RegExp(`listening on 127\\.0\\.0\\.1:${port} for cli`));
    assertEquals(await (await fetch(`http://127.0.0.1:${port}/`)).text(), "from the app");
    const status = await control(root, { op: "status" });
    assertEquals((status.routes as { app: string }[]).map((route) => route.app), ["cli"]);

    child.kill("SIGTERM");
    const exit = await within(10_000, "proxy exit", child.status);
    for (let chunk = await lines.read(); !chunk.done; chunk = await lines.read()) stdout += chunk.value;
    assertEquals(exit.code, 0, stdout + (await stderr));
    assertMatch(stdout, /SIGTERM: stopping/);
    assertEquals(await stderr, "");
    child = undefined;
    const gone = await Deno.lstat(controlSocketPath(root)).then(() => "still there", () => "removed");
    assertEquals(gone, "removed");
    const error = await control(root, { op: "status" }).then(() => "answered", (e: Error) => e.message);
    assertEquals(error, `the proxy is not running (no ${controlSocketPath(root)})`);
  } finally {
    if (child) {
      child.kill("SIGKILL");
      await child.status;
    }
    if (lines) {
      await lines.cancel().catch(() => {});
      await stderr;
    }
    await app.shutdown();
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("two proxies started at the same moment: exactly one runs", async () => {
  const root = await Deno.makeTempDir({ prefix: "dp-proxy-twice-" });
  try {
    await Deno.mkdir(`${root}/opt/deployments`, { recursive: true });
    const start = () =>
      new Deno.Command(`${import.meta.dirname}/../../bin/deploy-paradigm`, {
        args: ["proxy", "--host", "127.0.0.1"],
        env: { DEPLOY_PARADIGM_PREFIX: root },
        stdout: "piped",
        stderr: "piped",
      }).spawn();
    const [a, b] = [start(), start()];
    const first = await Promise.race([a.status.then(() => a), b.status.then(() => b)]);
    const other = first === a ? b : a;
    const out = new TextDecoder().decode((await first.output()).stderr);
    if (!/another proxy is already running/.test(out)) throw new Error(`expected a refusal, got: ${out}`);
    other.kill("SIGTERM");
    if ((await other.status).code !== 0) throw new Error("the running proxy did not stop cleanly");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("proxy: restarted with a typo in config.yml's notify: it still serves the app; a bad routing key is still refused", async () => {
  const root = await Deno.makeTempDir({ prefix: "dp-proxy-notify-" });
  const app = upstream(() => new Response("from the app"));
  let proxy: ProxyProcess | undefined;
  try {
    const config = (name: string, text: string) =>
      Deno.writeTextFile(join(deploymentsRoot(root), name, "config.yml"), text);
    const port = freePort();
    const badPort = freePort();
    for (const name of ["typo", "misrouted"]) {
      await Deno.mkdir(join(deploymentsRoot(root), name), { recursive: true });
      await writeRoute(join(deploymentsRoot(root), name), { port: app.addr.port });
    }
    await config("typo", `port: ${port}\nmanager: pm2\nenv: production\n`);
    await config("misrouted", `port: ${badPort}\nmanager: pm2\n`);
    proxy = await startProxy(root);
    assertEquals(await (await fetch(`http://127.0.0.1:${port}/`)).text(), "from the app");
    assertEquals(await proxy.stop(), 0);
    // Hand edits while it is down (a reboot): a notification URL's type mistyped, and in the other
    // app a routing key (the domains key misspelled) that must still be refused.
    await config(
      "typo",
      `port: ${port}\nmanager: pm2\nenv: production\nnotify: [{ type: webhok, url: "http://127.0.0.1:19850/a" }]\n`,
    );
    await config("misrouted", `port: ${badPort}\nmanager: pm2\ndomain: [shop.test]\nnotify: [{ type: webhok }]\n`);
    proxy = await startProxy(root);
    const served = await fetch(`http://127.0.0.1:${port}/`);
    assertEquals([served.status, await served.text()], [200, "from the app"], proxy.output());
    const status = await control(root, { op: "status" });
    assertEquals((status.routes as { app: string }[]).map((route) => route.app), ["typo"]);
    const problems = status.problems as Record<string, string>;
    assertMatch(problems.typo, /routing keys .* do: served from them; .*config\.yml:4:18: "notify\.0\.type" must be/);
    assertMatch(
      problems.misrouted,
      /^skipping misrouted: [^]*config\.yml:3:1: "domain" is not a known key; did you mean "domains"\?/,
    );
    const refused = await fetch(`http://127.0.0.1:${badPort}/`).then(() => "answered", (error: Error) => error.message);
    assertMatch(refused, /refused|fetch failed/);
  } finally {
    await proxy?.stop();
    await app.shutdown();
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("proxy: an app given proxy.yml's shared http: port by hand is told so, and the apps with domains are not blamed", async () => {
  const app = upstream(() => new Response("ok"));
  const [http, https] = [freePort(), freePort()];
  const client = Deno.createHttpClient({ allowHost: true });
  try {
    await withProxy(async ({ root, proxy, logs }) => {
      const write = async (name: string, config: string) => {
        const dir = join(deploymentsRoot(root), name);
        await Deno.mkdir(dir, { recursive: true });
        await Deno.writeTextFile(join(dir, "config.yml"), config);
        await writeRoute(dir, { port: app.addr.port });
      };
      await write("tst-st", `port: 8000\nmanager: pm2\ndomains: [st.test]\n`);
      await proxy.start();
      const served = await fetch(`http://127.0.0.1:${http}/`, { client, headers: { host: "st.test" } });
      assertEquals(await served.text(), "ok");
      await write("tst-py", `port: ${http}\nmanager: pm2\n`);
      await proxy.reload();
      const status = proxy.status();
      const st = status.find((route) => route.app === "tst-st")!;
      const py = status.find((route) => route.app === "tst-py")!;
      assertEquals(st.listenError, undefined, "tst-st's shared listener serves");
      assertMatch(
        py.listenError ?? "",
        new RegExp(
          `^cannot listen on 127\\.0\\.0\\.1:${http} for tst-py: it is proxy\\.yml's http: port, which the proxy holds`,
        ),
      );
      assert(logs.some((line) => line.includes(`for tst-py: it is proxy.yml's http: port`)), logs.join("\n"));
      assertEquals(
        await (await fetch(`http://127.0.0.1:${http}/`, { client, headers: { host: "st.test" } })).text(),
        "ok",
      );
    }, { proxyYml: `http: ${http}\nhttps: ${https}\n` });
  } finally {
    client.close();
    await app.shutdown();
  }
});

Deno.test("proxy status asks the running proxy what it serves: apps, ports and domains, targets, certificates; --json", async () => {
  const root = await Deno.makeTempDir({ prefix: "dp-proxy-status-" });
  const app = upstream(() => new Response("ok"));
  const [port, http, https] = [freePort(), freePort(), freePort()];
  let proxy: ProxyProcess | undefined;
  const cli = (args: string[]) =>
    new Deno.Command(BIN, { args, env: { DEPLOY_PARADIGM_PREFIX: root, NO_COLOR: "1" }, stdin: "null" }).output()
      .then((out) => ({ code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) }));
  try {
    const base = deploymentsRoot(root);
    const tls = await selfSigned(root, ["site.test"], { days: 30 });
    await Deno.mkdir(base, { recursive: true });
    await Deno.writeTextFile(join(base, "proxy.yml"), `http: ${http}\nhttps: ${https}\n`);
    const write = async (name: string, config: string) => {
      await Deno.mkdir(join(base, name));
      await Deno.writeTextFile(join(base, name, "config.yml"), config);
      await writeRoute(join(base, name), { port: app.addr.port });
    };
    await write("api", `port: ${port}\nmanager: pm2\n`);
    await write(
      "site",
      `port: 8000\nmanager: pm2\ndomains: [site.test]\ntls: { certificate: ${tls.certificate}, key: ${tls.key} }\n`,
    );
    const down = await cli(["proxy", "status"]);
    assertEquals(down.code, 1, down.stderr);
    assertMatch(
      down.stderr,
      /^error: the proxy is not running \(no .*\)\nhint: start it with `deploy-paradigm setup <app>`/,
    );
    proxy = await startProxy(root);
    const expiry = async () =>
      ((await control(root, { op: "status" })).certificates as Record<string, { notAfter?: string }> | undefined)
        ?.site?.notAfter;
    await within(
      10_000,
      "the certificate loaded",
      (async () => {
        while (!await expiry()) await sleep(100);
      })(),
    );
    const table = await cli(["proxy", "status"]);
    assertEquals(table.code, 0, table.stdout + table.stderr);
    const lines = table.stdout.trimEnd().split("\n");
    assertEquals(lines[0], `the proxy listens on 127.0.0.1; 2 apps; shared ports: HTTP :${http}, HTTPS :${https}`);
    assertMatch(lines[1], /^APP +SERVES ON +TARGET +IN FLIGHT +CERTIFICATE +STATE$/);
    assertMatch(lines[2], new RegExp(`^api +:${port} +127\\.0\\.0\\.1:${app.addr.port} +0 +- +listening$`));
    assertMatch(
      lines[3],
      new RegExp(
        `^site +site\\.test +127\\.0\\.0\\.1:${app.addr.port} +0 +expires \\d{4}-\\d\\d-\\d\\d \\((29|30) days\\) +listening$`,
      ),
    );
    const json = await cli(["proxy", "status", "--json"]);
    assertEquals(json.code, 0, json.stderr);
    const reply = JSON.parse(json.stdout);
    assertEquals(reply.routes.map((route: { app: string }) => route.app), ["api", "site"]);
    assertEquals(reply.shared, { http, https });
    assertEquals(reply.certificates.site.source, "file");
    const wrong = await cli(["proxy", "stauts"]);
    assertEquals(wrong.code, 2);
    assertMatch(wrong.stderr, /unknown action "stauts".*\nhint: did you mean "status"\?/);
  } finally {
    await proxy?.stop();
    await app.shutdown();
    await Deno.remove(root, { recursive: true });
  }
});
