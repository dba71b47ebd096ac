/**
 * The proxy's upstream HTTP/1.1 client against real servers: a Node `node:http` app in a child
 * process for the well-behaved cases (keep-alive, chunked, HEAD, 204/304, 1xx, cookies, bodies,
 * concurrency, timeouts) and raw `Deno.listen` servers for what a real server will not send on
 * request (close-delimited and malformed answers, a connection closed under a request, a body
 * written against a reader that does not read). Plus the pure response-head parser.
 */
import { rejects, throws } from "node:assert/strict";
import { assert, assertEquals } from "../helpers/assert.ts";
import { UpstreamError, type UpstreamErrorKind } from "../../src/proxy/connection.ts";
import { parseResponseHead } from "../../src/proxy/response_head.ts";
import { UpstreamPool } from "../../src/proxy/upstream.ts";
import { sleep, until, within } from "../helpers/time.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

// ---------------------------------------------------------------- servers

/** The Node app: one route per behaviour; `/connections` tells how many connections it accepted. */
const NODE_APP = `
const http = require("node:http");
const crypto = require("node:crypto");
let connections = 0;
const server = http.createServer((req, res) => {
  const url = new URL(req.url, "http://x");
  const path = url.pathname;
  if (path === "/ok") return res.end("ok");
  if (path === "/connections") return res.end(String(connections));
  if (path === "/request") {
    return res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers }));
  }
  if (path === "/chunked") {
    res.write("first,");
    setTimeout(() => { res.write("second,"); res.end("third"); }, 20);
    return;
  }
  if (path === "/sized") {
    res.setHeader("content-length", "1234");
    return res.end(req.method === "HEAD" ? undefined : "x".repeat(1234));
  }
  if (path === "/204") { res.statusCode = 204; return res.end(); }
  if (path === "/304") { res.statusCode = 304; res.setHeader("etag", '"v1"'); return res.end(); }
  if (path === "/interim") {
    res.writeContinue();
    res.writeEarlyHints({ link: "</style.css>; rel=preload; as=style" });
    setTimeout(() => res.end("final"), 20);
    return;
  }
  if (path === "/cookies") {
    res.setHeader("set-cookie", ["a=1; Path=/", "b=2; HttpOnly"]);
    return res.end("cookies");
  }
  if (path === "/hash") {
    const hash = crypto.createHash("sha256");
    let bytes = 0;
    req.on("data", (chunk) => { hash.update(chunk); bytes += chunk.length; });
    req.on("end", () => res.end(JSON.stringify({
      bytes,
      sha256: hash.digest("hex"),
      contentLength: req.headers["content-length"] ?? null,
      transferEncoding: req.headers["transfer-encoding"] ?? null,
    })));
    return;
  }
  if (path.startsWith("/id/")) {
    return setTimeout(() => res.end(path.slice(4)), Math.floor(Math.random() * 5));
  }
  if (path === "/never") return; // no answer
  if (path === "/early") { res.statusCode = 413; return res.end("too big"); } // the body is not read
  res.statusCode = 404;
  res.end("not found");
});
server.on("connection", () => connections++);
server.keepAliveTimeout = 60_000;
server.listen(0, "127.0.0.1", () => console.log(server.address().port));
`;

interface NodeApp {
  port: number;
  stop(): Promise<void>;
}

/** Starts {@link NODE_APP} in a `node` child process. */
async function startNode(): Promise<NodeApp> {
  const child = new Deno.Command("node", { args: ["-e", NODE_APP], stdin: "null", stdout: "piped", stderr: "piped" })
    .spawn();
  const stderr = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let errors = "";
  const collecting = (async () => {
    for (let r = await stderr.read(); !r.done; r = await stderr.read()) errors += r.value;
  })().catch(() => {});
  const stdout = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const stop = async () => {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await child.status;
    await stdout.cancel().catch(() => {});
    await collecting;
  };
  try {
    let text = "";
    while (!text.includes("\n")) {
      const { done, value } = await within(10_000, "node app start", stdout.read());
      if (done) throw new Error(`the node app exited: ${errors}`);
      text += value;
    }
    return { port: Number(text.trim()), stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** A raw TCP server on 127.0.0.1 that runs `serve` for each connection (numbered from 0). */
interface RawServer {
  port: number;
  /** Connections accepted so far. */
  readonly accepted: number;
  stop(): Promise<void>;
}

function rawServer(serve: (conn: Deno.TcpConn, index: number) => Promise<void>): RawServer {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.TcpConn>();
  const tasks = new Set<Promise<void>>();
  let accepted = 0;
  const loop = (async () => {
    for await (const conn of listener) {
      conns.add(conn);
      const task: Promise<void> = serve(conn, accepted++).catch(() => {}).finally(() => {
        conns.delete(conn);
        tasks.delete(task);
        closeQuietly(conn);
      });
      tasks.add(task);
    }
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    get accepted() {
      return accepted;
    },
    async stop() {
      listener.close();
      await loop;
      for (const conn of conns) closeQuietly(conn);
      await Promise.all(tasks);
    },
  };
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch { /* already closed */ }
}

/** Reads one request head from `conn` (bodies are not expected); null at EOF. */
async function readRequestHead(conn: Deno.Conn): Promise<string | null> {
  const buf = new Uint8Array(16 * 1024);
  let text = "";
  while (!text.includes("\r\n\r\n")) {
    const n = await conn.read(buf);
    if (n === null) return null;
    text += decoder.decode(buf.subarray(0, n));
  }
  return text;
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let done = 0; done < bytes.length;) done += await conn.write(bytes.subarray(done));
}

/**
 * A raw server answering every request on a connection with `answer` (parts of it 20 ms apart),
 * then closing when `close`.
 */
function answering(answer: string | string[], options: { close?: boolean } = {}): RawServer {
  const parts = typeof answer === "string" ? [answer] : answer;
  return rawServer(async (conn) => {
    while (await readRequestHead(conn) !== null) {
      for (const [i, part] of parts.entries()) {
        if (i) await sleep(20);
        await writeAll(conn, encoder.encode(part));
      }
      if (options.close) return;
    }
  });
}

/** Runs `fn` with a pool and the Node app; both are closed after, also on failure. */
async function withNode(
  fn: (
    ctx: { pool: UpstreamPool; app: NodeApp; get(path: string, init?: Partial<Req>): Promise<Response> },
  ) => Promise<void>,
  options: ConstructorParameters<typeof UpstreamPool>[0] = {},
): Promise<void> {
  const app = await startNode();
  const pool = new UpstreamPool(options);
  try {
    const get = (path: string, init: Partial<Req> = {}) => pool.request(app.port, request(path, init));
    await fn({ pool, app, get });
  } finally {
    pool.close();
    await app.stop();
    await sleep(0);
  }
}

type Req = Parameters<UpstreamPool["request"]>[1];

function request(path: string, init: Partial<Req> = {}): Req {
  return { method: "GET", path, headers: new Headers({ host: "app.test" }), body: null, ...init };
}

/** Asserts that `promise` rejects with an {@link UpstreamError} of `kind`. */
async function rejectsWith(promise: Promise<unknown>, kind: UpstreamErrorKind): Promise<void> {
  await rejects(promise, (error) => {
    assert(error instanceof UpstreamError, `an UpstreamError, not ${error}`);
    assertEquals(error.kind, kind, `kind ${kind}: ${error.message}`);
    return true;
  });
}

/** A stream of `chunks`, pulled one at a time. */
function streamOf(chunks: Uint8Array[]): ReadableStream<Uint8Array> {
  let i = 0;
  return new ReadableStream({
    pull(controller) {
      if (i < chunks.length) controller.enqueue(chunks[i++]);
      else controller.close();
    },
  }, { highWaterMark: 0 });
}

async function sha256(chunks: Uint8Array[]): Promise<string> {
  const whole = new Uint8Array(chunks.reduce((sum, chunk) => sum + chunk.length, 0));
  let at = 0;
  for (const chunk of chunks) {
    whole.set(chunk, at);
    at += chunk.length;
  }
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", whole));
  return [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
}

// ---------------------------------------------------------------- the head parser (no sockets)

Deno.test("parseResponseHead: status, fields and body framing", () => {
  const head = (text: string, method = "GET") => parseResponseHead(text.replaceAll("\n", "\r\n"), method);
  const ok = head("HTTP/1.1 200 OK\nContent-Length: 2\nX-A:  spaced \t\nSet-Cookie: a=1\nSet-Cookie: b=2");
  assertEquals(ok.status, 200);
  assertEquals(ok.statusText, "OK");
  assertEquals(ok.fields, ["Content-Length", "2", "X-A", "spaced", "Set-Cookie", "a=1", "Set-Cookie", "b=2"]);
  assertEquals([ok.framing, ok.length, ok.keepAlive], ["length", 2, true]);
  // Repeated identical lengths are one length, passed on as one field with one value (clients such as Node's refuse both).
  const repeated = head("HTTP/1.1 200 OK\nContent-Length: 5, 5\nX-A: 1\nContent-Length: 5");
  assertEquals([repeated.length, repeated.fields], [5, ["Content-Length", "5", "X-A", "1"]]);
  assertEquals(head("HTTP/1.1 200 OK\nContent-Length: 7\ncontent-length: 7").fields, ["Content-Length", "7"]);
  assertEquals(head("HTTP/1.1 200 \nTransfer-Encoding: chunked").framing, "chunked");
  assertEquals(head("HTTP/1.1 200 OK").statusText, "OK");
  assertEquals(head("HTTP/1.1 200").statusText, "");
  // No length at all: until close, never reused.
  assertEquals([head("HTTP/1.1 200 OK").framing, head("HTTP/1.1 200 OK").keepAlive], ["close", false]);
  // Another transfer coding would reach the client unlabelled once Transfer-Encoding is dropped: refused.
  for (const coding of ["chunked, gzip", "gzip, chunked", "gzip", "chunked, chunked"]) {
    throws(() => head(`HTTP/1.1 200 OK\nTransfer-Encoding: ${coding}`), /Transfer-Encoding/);
  }
  // Both Transfer-Encoding and Content-Length: chunked, the length dropped, the connection not reused.
  const both = head("HTTP/1.1 200 OK\nContent-Length: 10\nTransfer-Encoding: chunked");
  // Transfer-Encoding frames this connection only: the Response carries no hop-by-hop field.
  assertEquals([both.framing, both.keepAlive, both.fields], ["chunked", false, []]);
  // No body: HEAD, 204, 304, 1xx; Connection: close and HTTP/1.0 are not kept alive.
  assertEquals(head("HTTP/1.1 200 OK\nContent-Length: 99", "HEAD").framing, "none");
  assertEquals(head("HTTP/1.1 204 No Content").framing, "none");
  assertEquals(head("HTTP/1.1 304 Not Modified\nContent-Length: 99").framing, "none");
  const reset = head("HTTP/1.1 205 Reset Content\nContent-Length: 0");
  assertEquals([reset.framing, reset.keepAlive], ["none", false]);
  // A 205 has no body whatever its length says: length 0 for the client, never the app's.
  assertEquals(head("HTTP/1.1 205 Reset Content\nContent-Length: 17\nX-A: 1").fields, [
    "X-A",
    "1",
    "Content-Length",
    "0",
  ]);
  assertEquals(head("HTTP/1.1 103 Early Hints\nLink: </a>").status, 103);
  assertEquals(head("HTTP/1.1 200 OK\nConnection: Keep-Alive, Close\nContent-Length: 0").keepAlive, false);
  assertEquals(head("HTTP/1.0 200 OK\nContent-Length: 0").keepAlive, false);
  assertEquals(head("HTTP/1.1 200 OK\nContent-Length: 0").keepAlive, true);
});

Deno.test("parseResponseHead: malformed heads are protocol errors", () => {
  const bad = [
    "HTPT/1.1 200 OK",
    "HTTP/2 200 OK",
    "HTTP/1.1 20 OK",
    "HTTP/1.1 2000 OK",
    "HTTP/1.1 099 Low",
    "HTTP/1.1 600 High",
    "HTTP/1.1  200 OK",
    "HTTP/1.1 200 O\x01K",
    "",
    "HTTP/1.1 200 OK\r\nno colon",
    "HTTP/1.1 200 OK\r\n: empty name",
    "HTTP/1.1 200 OK\r\nContent-Length: -1",
    "HTTP/1.1 200 OK\r\nContent-Length: 1x",
    "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2",
    "HTTP/1.1 200 OK\r\nContent-Length: 1, 2",
  ];
  for (const text of bad) {
    throws(() => parseResponseHead(text, "GET"), (error) => {
      assert(error instanceof UpstreamError && error.kind === "protocol", `${JSON.stringify(text)}: ${error}`);
      return true;
    });
  }
});

// ---------------------------------------------------------------- a well-behaved app (node:http)

Deno.test("upstream: 50 sequential requests share one kept-alive connection", async () => {
  await withNode(async ({ pool, app, get }) => {
    for (let i = 0; i < 50; i++) {
      const res = await get("/ok");
      assertEquals([res.status, await res.text()], [200, "ok"]);
      assertEquals(pool.idle(app.port), 1);
    }
    assertEquals(await (await get("/connections")).text(), "1");
  });
});

Deno.test("upstream: request line and headers as given; Host kept; framing headers replaced", async () => {
  await withNode(async ({ get }) => {
    const headers = new Headers({
      host: "site.test",
      "x-custom": "café", // a byte string: sent as latin1 bytes
      "content-length": "999",
      "transfer-encoding": "gzip",
      connection: "close",
    });
    const res = await get("/request?a=1&b=%20", { method: "POST", headers, body: encoder.encode("0123456789") });
    const seen = await res.json();
    assertEquals(seen.method, "POST");
    assertEquals(seen.url, "/request?a=1&b=%20");
    assertEquals(seen.headers.host, "site.test");
    assertEquals(seen.headers["x-custom"], "café");
    assertEquals(seen.headers["content-length"], "10");
    assertEquals(seen.headers["transfer-encoding"], undefined);
    assertEquals(seen.headers.connection, undefined);
    // POST without a body says so; GET says nothing.
    const empty = await (await get("/request", { method: "POST" })).json();
    assertEquals(empty.headers["content-length"], "0");
    const plain = await (await get("/request", { headers: new Headers() })).json();
    assertEquals([plain.headers["content-length"], plain.headers.host !== undefined], [undefined, true]);
  });
});

Deno.test("upstream: an invalid method, path or port is refused before anything is sent", async () => {
  const pool = new UpstreamPool();
  try {
    for (const path of ["a", "/a b", "/a\r\nX: y", "/a\0", "/é", ""]) {
      await rejects(pool.request(80, request(path)), TypeError, JSON.stringify(path));
    }
    await rejects(pool.request(80, request("/", { method: "GET /x" })), TypeError);
    await rejects(pool.request(0, request("/")), TypeError);
    await rejects(pool.request(65536, request("/")), TypeError);
  } finally {
    pool.close();
  }
});

Deno.test("upstream: chunked response streamed and the connection reused", async () => {
  await withNode(async ({ pool, app, get }) => {
    const res = await get("/chunked");
    assertEquals(res.headers.get("transfer-encoding"), null, "hop-by-hop: not passed on");
    assertEquals(await res.text(), "first,second,third");
    assertEquals(pool.idle(app.port), 1);
    assertEquals(await (await get("/ok")).text(), "ok");
    assertEquals(await (await get("/connections")).text(), "1");
  });
});

Deno.test("upstream: HEAD, 204 and 304 have no body; the connection is pooled after 204 and 304, not after HEAD", async () => {
  await withNode(async ({ pool, app, get }) => {
    const head = await get("/sized", { method: "HEAD" });
    assertEquals([head.status, head.headers.get("content-length"), head.body], [200, "1234", null]);
    // An app may send a body anyway (late): on a pooled connection it would be the next request's answer.
    assertEquals(pool.idle(app.port), 0);
    const sized = await get("/sized");
    assertEquals((await sized.text()).length, 1234);
    assertEquals(pool.idle(app.port), 1);
    // Without a Content-Length or Transfer-Encoding (as Node sends them), nothing more is announced.
    const noContent = await get("/204");
    assertEquals([noContent.status, noContent.body], [204, null]);
    const notModified = await get("/304");
    assertEquals([notModified.status, notModified.headers.get("etag"), notModified.body], [304, '"v1"', null]);
    assertEquals(pool.idle(app.port), 1);
    assertEquals(await (await get("/connections")).text(), "2"); // HEAD's; then one for the rest
  });
});

Deno.test("upstream: a body an app sends late after HEAD, or a 204 or 304 announcing one, is no other request's answer", async () => {
  // HEAD served as GET, a 204 or 304 with a Content-Length and a body: the body follows the head
  // 50 ms later and looks like an answer of its own. Any other request is answered with its own
  // path after 100 ms.
  const forged = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Forged: 1\r\n\r\nEVIL!";
  const server = rawServer(async (conn) => {
    for (let head; (head = await readRequestHead(conn)) !== null;) {
      const [method, path] = head.split(" ");
      if (method === "HEAD" || path === "/204" || path === "/304") {
        const status = method === "HEAD" ? "200 OK" : path === "/204" ? "204 No Content" : "304 Not Modified";
        await writeAll(conn, encoder.encode(`HTTP/1.1 ${status}\r\nContent-Length: ${forged.length}\r\n\r\n`));
        await sleep(50);
        await writeAll(conn, encoder.encode(forged));
      } else {
        await sleep(100);
        await writeAll(conn, encoder.encode(`HTTP/1.1 200 OK\r\nContent-Length: ${path.length}\r\n\r\n${path}`));
      }
    }
  });
  await withRaw(server, async (_pool, get) => {
    for (const first of [{ path: "/page", method: "HEAD" }, { path: "/204" }, { path: "/304" }]) {
      const answer = await get(first.path, first);
      await answer.body?.cancel();
      const secret = `/secret-after-${first.method ?? first.path}`;
      const next = await get(secret);
      assertEquals([next.status, next.headers.get("x-forged"), await next.text()], [200, null, secret]);
    }
  });
});

Deno.test("upstream: interim 100 Continue and 103 Early Hints are skipped", async () => {
  await withNode(async ({ pool, app, get }) => {
    const res = await get("/interim");
    assertEquals([res.status, await res.text()], [200, "final"]);
    assertEquals(res.headers.get("link"), null);
    assertEquals(pool.idle(app.port), 1);
  });
});

Deno.test("upstream: two Set-Cookie headers stay two", async () => {
  await withNode(async ({ get }) => {
    const res = await get("/cookies");
    assertEquals(res.headers.getSetCookie(), ["a=1; Path=/", "b=2; HttpOnly"]);
    assertEquals(await res.text(), "cookies");
  });
});

Deno.test("upstream: a streamed request body arrives intact, chunked; bytes go with a Content-Length", async () => {
  await withNode(async ({ pool, app, get }) => {
    const chunks: Uint8Array[] = [];
    let size = 1;
    for (let i = 0; i < 300; i++) {
      const chunk = new Uint8Array(size);
      crypto.getRandomValues(chunk.subarray(0, Math.min(chunk.length, 65536)));
      chunks.push(chunk);
      size = (size * 7 + 13) % 40_000 + 1;
    }
    chunks.push(new Uint8Array(0)); // an empty chunk must not end the body
    chunks.push(new Uint8Array(100_000)); // bigger than one write
    const expected = { bytes: chunks.reduce((sum, c) => sum + c.length, 0), sha256: await sha256(chunks) };
    const res = await get("/hash", { method: "PUT", body: streamOf(chunks) });
    const seen = await res.json();
    assertEquals(seen, { ...expected, contentLength: null, transferEncoding: "chunked" });
    assertEquals(pool.idle(app.port), 1);
    const whole = new Uint8Array(200_000).map((_, i) => i % 251);
    const fixed = await (await get("/hash", { method: "POST", body: whole })).json();
    assertEquals(fixed, {
      bytes: whole.length,
      sha256: await sha256([whole]),
      contentLength: "200000",
      transferEncoding: null,
    });
    assertEquals(await (await get("/connections")).text(), "1");
  });
});

Deno.test("upstream: a failing request body fails the request with its error", async () => {
  await withNode(async ({ pool, app, get }) => {
    const broken = new Error("the client went away");
    let pulls = 0;
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (pulls++ === 0) return controller.enqueue(encoder.encode("some"));
        await sleep(20);
        controller.error(broken);
      },
    }, { highWaterMark: 0 });
    await rejects(get("/hash", { method: "POST", body }), (error) => error === broken);
    assertEquals(pool.idle(app.port), 0);
  });
});

Deno.test("upstream: an answer before the streamed body is all sent stops the upload and the connection", async () => {
  await withNode(async ({ pool, app, get }) => {
    let cancelled = false;
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        await sleep(10);
        controller.enqueue(new Uint8Array(1000));
      },
      cancel() {
        cancelled = true;
      },
    }, { highWaterMark: 0 });
    const res = await within(5000, "the early answer", get("/early", { method: "POST", body }));
    assertEquals([res.status, await res.text()], [413, "too big"]);
    await until(3000, "the upload is cancelled", () => cancelled);
    assertEquals(pool.idle(app.port), 0);
  });
});

Deno.test("upstream: 100 parallel requests all get their own answer", async () => {
  await withNode(async ({ pool, app, get }) => {
    const ids = Array.from({ length: 100 }, (_, i) => i);
    const bodies = await within(
      20_000,
      "100 parallel requests",
      Promise.all(ids.map(async (i) => (await get(`/id/${i}`)).text())),
    );
    assertEquals(bodies, ids.map(String));
    assert(pool.idle(app.port) <= 64, `at most 64 idle, not ${pool.idle(app.port)}`);
    // And again on the pooled connections.
    const again = await Promise.all(ids.map(async (i) => (await get(`/id/${i}`)).text()));
    assertEquals(again, ids.map(String));
  });
});

Deno.test("upstream: the pool keeps at most maxIdlePerPort connections", async () => {
  await withNode(async ({ pool, app, get }) => {
    await Promise.all(Array.from({ length: 20 }, async (_, i) => await (await get(`/id/${i}`)).text()));
    assertEquals(pool.idle(app.port), 3);
    await Promise.all(Array.from({ length: 20 }, async (_, i) => await (await get(`/id/${i}`)).text()));
    assertEquals(pool.idle(app.port), 3);
  }, { maxIdlePerPort: 3 });
});

Deno.test("upstream: no response head in time is a timeout; the connection is closed", async () => {
  await withNode(async ({ pool, app, get }) => {
    const started = performance.now();
    await rejectsWith(get("/never"), "timeout");
    const took = performance.now() - started;
    assert(took >= 290 && took < 2000, `timed out after ${took} ms`);
    assertEquals(pool.idle(app.port), 0);
    assertEquals(await (await get("/ok")).text(), "ok");
  }, { headerTimeoutMs: 300 });
});

Deno.test("upstream: an abort closes the connection, before the head and in the body", async () => {
  await withNode(async ({ pool, app, get }) => {
    const early = new AbortController();
    const pending = get("/never", { signal: early.signal });
    setTimeout(() => early.abort(), 50);
    await rejects(pending, (error) => (error as Error).name === "AbortError");
    const late = new AbortController();
    const res = await get("/chunked", { signal: late.signal });
    const reader = res.body!.getReader();
    assertEquals(decoder.decode((await reader.read()).value), "first,");
    late.abort();
    await rejects(reader.read(), (error) => (error as Error).name === "AbortError");
    assertEquals(pool.idle(app.port), 0);
    // Already aborted: nothing is sent.
    await rejects(get("/ok", { signal: AbortSignal.abort() }), (error) => (error as Error).name === "AbortError");
    assertEquals(await (await get("/connections")).text(), "3");
  });
});

Deno.test("upstream: a cancelled body closes its connection instead of pooling it", async () => {
  await withNode(async ({ pool, app, get }) => {
    const res = await get("/chunked");
    const reader = res.body!.getReader();
    await reader.read();
    await reader.cancel();
    assertEquals(pool.idle(app.port), 0);
    assertEquals(await (await get("/ok")).text(), "ok");
    assertEquals(await (await get("/connections")).text(), "2");
  });
});

Deno.test("upstream: connection refused is a connect error", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const pool = new UpstreamPool();
  try {
    await rejectsWith(pool.request(port, request("/")), "connect");
  } finally {
    pool.close();
  }
});

// ---------------------------------------------------------------- raw servers: edge cases

/** Runs `fn` with a pool and `server`; both are closed after. */
async function withRaw(
  server: RawServer,
  fn: (pool: UpstreamPool, get: (path: string, init?: Partial<Req>) => Promise<Response>) => Promise<void>,
  options: ConstructorParameters<typeof UpstreamPool>[0] = {},
): Promise<void> {
  const pool = new UpstreamPool(options);
  try {
    await fn(pool, (path, init) => pool.request(server.port, request(path, init)));
  } finally {
    pool.close();
    await server.stop();
    await sleep(0);
  }
}

Deno.test("upstream: a body delimited by close is read to EOF and the connection not reused", async () => {
  const server = answering("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end", { close: true });
  await withRaw(server, async (pool, get) => {
    assertEquals(await (await get("/")).text(), "until the end");
    assertEquals(pool.idle(server.port), 0);
    assertEquals(await (await get("/")).text(), "until the end");
    assertEquals(server.accepted, 2);
  });
});

Deno.test("upstream: HTTP/1.0 and Connection: close responses are not pooled", async () => {
  for (
    const answer of [
      "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
      "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
    ]
  ) {
    const server = answering(answer);
    await withRaw(server, async (pool, get) => {
      assertEquals(await (await get("/")).text(), "ok");
      assertEquals(pool.idle(server.port), 0);
    });
  }
});

Deno.test("upstream: malformed answers are protocol errors, truncated bodies reset", async () => {
  const cases: [string, UpstreamErrorKind][] = [
    ["HTPT/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "protocol"],
    ["HTTP/1.1 200 OK\r\nBad Name: x\r\nContent-Length: 0\r\n\r\n", "protocol"],
    ["HTTP/1.1 200 OK\r\nX: folded\r\n  value\r\nContent-Length: 0\r\n\r\n", "protocol"],
    ["HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "protocol"],
    ["HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", "protocol"],
    [`HTTP/1.1 200 OK\r\nX-Big: ${"b".repeat(2000)}\r\nContent-Length: 0\r\n\r\n`, "protocol"],
    ["HTTP/1.1 200 OK\r\nContent-Length: 0\r\n", "reset"], // closed in the middle of the head
    ["", "reset"],
  ];
  for (const [answer, kind] of cases) {
    const server = answering(answer, { close: true });
    await withRaw(server, async (_pool, get) => {
      await rejectsWith(get("/"), kind);
    }, { maxHeaderBytes: 1024 });
  }
  // The body comes after the head: the response resolves, its body fails.
  const chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
  const bodies: [string, string, UpstreamErrorKind][] = [
    ["HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", "short", "reset"],
    [chunked, "5\r\nabcde\r\n", "reset"],
    [chunked, "zz\r\nabcde\r\n0\r\n\r\n", "protocol"],
    [chunked, "5\r\nabcdeXX0\r\n\r\n", "protocol"],
    [chunked, `${"1".repeat(5000)}\r\n`, "protocol"],
    // Only spaces or tabs after the size (before any ";"), no CR inside (RFC 9112 §7.1.1).
    [chunked, `1${" ".repeat(4000)}x;a\r\nabc\r\n0\r\n\r\n`, "protocol"],
    [chunked, "3\u00a0;a\r\nabc\r\n0\r\n\r\n", "protocol"],
    [chunked, "3\u000b\r\nabc\r\n0\r\n\r\n", "protocol"],
    [chunked, "3;a\rb\r\nabc\r\n0\r\n\r\n", "protocol"],
  ];
  for (const [head, body, kind] of bodies) {
    const server = answering([head, body], { close: true });
    await withRaw(server, async (pool, get) => {
      const res = await get("/");
      await rejectsWith(res.text(), kind);
      assertEquals(pool.idle(server.port), 0);
    });
  }
});

Deno.test("upstream: chunked bodies with extensions and trailers, split across writes", async () => {
  const parts = [
    // Spaces or tabs after a size, before its extensions or alone (RFC 9112's BWS), are fine.
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4 \t;ext=1\r\nab",
    "cd\r",
    "\n0 ",
    "\r\nTrailer-A: x\r\n",
    "\r\n",
  ];
  const server = rawServer(async (conn) => {
    while (await readRequestHead(conn) !== null) {
      for (const part of parts) {
        await writeAll(conn, encoder.encode(part));
        await sleep(5);
      }
    }
  });
  await withRaw(server, async (pool, get) => {
    for (let i = 0; i < 3; i++) {
      const res = await get("/");
      assertEquals(await res.text(), "abcd");
      assertEquals(res.headers.get("trailer-a"), null);
    }
    assertEquals([pool.idle(server.port), server.accepted], [1, 1]);
  });
});

/** A server that answers the first request of each connection, then closes on the next without answering. */
function oneAnswerPerConnection(): RawServer {
  return rawServer(async (conn) => {
    if (await readRequestHead(conn) === null) return;
    await writeAll(conn, encoder.encode("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
    await readRequestHead(conn); // the next request: dropped, as by an app closing an idle keep-alive connection
  });
}

Deno.test("upstream: a kept-alive connection the app closed under a request is retried once, fresh (idempotent only)", async () => {
  const server = oneAnswerPerConnection();
  await withRaw(server, async (pool, get) => {
    assertEquals(await (await get("/")).text(), "ok");
    assertEquals(pool.idle(server.port), 1);
    assertEquals(await (await get("/")).text(), "ok"); // the pooled connection fails: a new one answers
    assertEquals(await (await get("/", { method: "PUT", body: encoder.encode("again") })).text(), "ok");
    assertEquals(server.accepted, 3);
    // A POST written in full may have been acted on: it is not sent again (as nginx), the caller gets a reset.
    await rejectsWith(get("/", { method: "POST", body: encoder.encode("once") }), "reset");
    assertEquals(server.accepted, 3);
  });
});

Deno.test("upstream: a streamed body is not retried on a connection the app closed", async () => {
  const server = oneAnswerPerConnection();
  await withRaw(server, async (pool, get) => {
    assertEquals(await (await get("/")).text(), "ok");
    assertEquals(pool.idle(server.port), 1);
    let pulled = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (pulled++ < 3) controller.enqueue(encoder.encode("part"));
        else controller.close();
      },
    });
    await rejectsWith(get("/", { method: "POST", body }), "reset");
    assertEquals(server.accepted, 1);
  });
});

Deno.test("upstream: an idle connection the app closes leaves the pool; idleMs closes the others", async () => {
  const closing = answering("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", { close: true });
  await withRaw(closing, async (pool, get) => {
    // Keep-alive by its head, then closed: the pending idle read sees EOF.
    assertEquals(await (await get("/")).text(), "ok");
    await until(3000, "the closed connection leaves the pool", () => pool.idle(closing.port) === 0);
  });
  const server = answering("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
  await withRaw(server, async (pool, get) => {
    assertEquals(await (await get("/")).text(), "ok");
    assertEquals(pool.idle(server.port), 1);
    await until(3000, "idleMs closes the idle connection", () => pool.idle(server.port) === 0);
  }, { idleMs: 100 });
});

/** A raw server answering one request per connection with a 10 MB body of 64 KiB pieces, counting what it wrote. */
function bigBody(total: number, piece: number): RawServer & { written(): number } {
  let written = 0;
  const server = rawServer(async (conn) => {
    written = 0;
    await readRequestHead(conn);
    await writeAll(conn, encoder.encode(`HTTP/1.1 200 OK\r\nContent-Length: ${total}\r\n\r\n`));
    for (let i = 0; written < total; i++) {
      await writeAll(conn, new Uint8Array(piece).fill(i & 0xff));
      written += piece;
    }
    // Kept alive (as an app does): the pool may keep the connection.
    await conn.read(new Uint8Array(1)).catch(() => null);
  });
  return Object.assign(server, { written: () => written });
}

/** What `written()` settles at (it has not moved for 200 ms). */
async function settled(written: () => number): Promise<number> {
  let last = -1;
  for (let stable = 0; stable < 4; stable = written() === last ? stable + 1 : 0) {
    last = written();
    await sleep(50);
  }
  return last;
}

Deno.test("upstream: a 10 MB body streams with backpressure: a slow reader holds the app back", async () => {
  const total = 10 * 1024 * 1024;
  const piece = 64 * 1024;
  const server = bigBody(total, piece);
  // What the kernel's socket buffers take when the client reads one piece and stops: the baseline.
  const raw = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  let kernel: number;
  try {
    await writeAll(raw, encoder.encode("GET / HTTP/1.1\r\nhost: x\r\n\r\n"));
    const first = await raw.read(new Uint8Array(piece));
    kernel = await within(5000, "the raw client's stall", settled(server.written)) - first!;
  } finally {
    raw.close();
  }
  await withRaw(server, async (pool, get) => {
    const res = await get("/big");
    const reader = res.body!.getReader();
    let read = 0;
    const check = (chunk: Uint8Array) => {
      // Byte n of the body is (n / 64 KiB) & 0xff: check the first and last byte of each chunk.
      assertEquals(chunk[0], Math.floor(read / piece) & 0xff);
      assertEquals(chunk[chunk.length - 1], Math.floor((read + chunk.length - 1) / piece) & 0xff);
      read += chunk.length;
    };
    check((await reader.read()).value!);
    const stalled = await within(5000, "the app's stall", settled(server.written));
    assert(stalled < total, "the app's writes block while nobody reads");
    // Ahead of the reader: the kernel buffers (as for the raw client) and what this process holds.
    const held = stalled - read - kernel;
    assert(held < 1024 * 1024, `the pool holds ${held} bytes (${stalled - read} ahead, kernel ${kernel})`);
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      check(value);
    }
    assertEquals([read, server.written()], [total, total]);
    assertEquals(pool.idle(server.port), 1);
  });
});

Deno.test("parseResponseHead: hop-by-hop fields, and those Connection names, never reach the Response", () => {
  const head = parseResponseHead(
    "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: timeout=5\r\nX-Secret: 1\r\n" +
      "Upgrade: h2c\r\nContent-Length: 2\r\nX-App: yes",
    "GET",
  );
  assertEquals(head.fields, ["Content-Length", "2", "X-App", "yes"]);
  assertEquals([head.framing, head.keepAlive], ["length", true]);
  // Content-Length frames the answer itself: named by Connection, it still reaches the client.
  const named = parseResponseHead("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: content-length", "GET");
  assertEquals([named.fields, named.framing, named.length], [["Content-Length", "2"], "length", 2]);
  // A 204 has none (RFC 9110 §8.6): a client that honoured it would read the next answer as its body.
  assertEquals(parseResponseHead("HTTP/1.1 204 No Content\r\nContent-Length: 44\r\nX-A: 1", "GET").fields, [
    "X-A",
    "1",
  ]);
});

Deno.test("upstream: a head whose lines end in a bare LF (a CGI script behind busybox httpd) is read", async () => {
  const parsed = parseResponseHead("HTTP/1.0 200 OK\nContent-Type: text/plain\nX-A: 1", "GET");
  assertEquals([parsed.status, parsed.fields, parsed.framing], [
    200,
    ["Content-Type", "text/plain", "X-A", "1"],
    "close",
  ]);
  const server = answering("HTTP/1.0 200 OK\r\nContent-Type: text/plain\n\nhello from .env\n", { close: true });
  await withRaw(server, async (_pool, get) => {
    const res = await get("/cgi-bin/greeting");
    assertEquals([res.status, res.headers.get("content-type"), await res.text()], [
      200,
      "text/plain",
      "hello from .env\n",
    ]);
  });
});

Deno.test("upstream: the time to the response head counts from the end of a slow streamed upload", async () => {
  const server = rawServer(async (conn) => {
    const buf = new Uint8Array(4096);
    let text = "";
    while (!text.includes("\r\n0\r\n\r\n")) {
      const n = await conn.read(buf);
      if (n === null) return;
      text += decoder.decode(buf.subarray(0, n));
    }
    await writeAll(conn, encoder.encode("HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nreceived"));
  });
  await withRaw(server, async (_pool, get) => {
    let parts = 0;
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        await sleep(200);
        if (parts++ < 6) controller.enqueue(encoder.encode("slow"));
        else controller.close();
      },
    });
    // 1.4 s of upload against a 500 ms head timeout: the app answers at once after the last chunk.
    assertEquals(await (await get("/", { method: "POST", body })).text(), "received");
  }, { headerTimeoutMs: 500 });
});

Deno.test("upstream: a port the pool's refuse names is not connected to (a refused connect), nor its idle connections reused", async () => {
  const refused = new Map<number, string>();
  await withNode(async ({ pool, app, get }) => {
    assertEquals((await get("/ok")).status, 200);
    assertEquals(pool.idle(app.port), 1);
    refused.set(app.port, `port ${app.port} is held by app-alpha (uid 998), not app-beta: another process took it`);
    await rejects(get("/ok"), (error) => {
      assert(error instanceof UpstreamError && error.kind === "connect", String(error));
      assert(error.cause instanceof Deno.errors.ConnectionRefused, String(error.cause));
      assert(error.message.includes("held by app-alpha"), error.message);
      return true;
    });
    refused.clear();
    assertEquals(await (await get("/ok")).text(), "ok");
  }, { refuse: (port) => refused.get(port) });
});
