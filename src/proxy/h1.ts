/**
 * The proxy's own HTTP/1.1 server for one client connection (plain, or TLS whose ALPN chose
 * http/1.1): requests are read off the socket and, when they go to an app, forwarded by the
 * upstream pool (./upstream.ts) and answered byte for byte, with no `Request` or `Response`
 * built. That is what makes the proxy as fast as nginx; Deno's HTTP server (hyper) costs twice
 * the CPU per request. Everything else (static files, ACME challenges, redirects, the proxy's
 * own pages) goes through the same handler as HTTP/2 (./handler.ts), with a `Request` built here.
 *
 * - Heads are parsed strictly (./wire.ts): what two parsers could read differently is refused.
 * - Request bodies: Content-Length up to 64 KiB read first (replayable to a fresh connection),
 *   larger or chunked ones streamed with backpressure; `Expect: 100-continue` answered here.
 * - WebSockets (Upgrade): a connection of its own to the app, the handshake relayed, then bytes
 *   both ways with TCP's own backpressure: a side that does not read stops the other.
 * - A write that takes longer than the stall timeout (a client that stopped reading) cuts the
 *   connection, through the listener's sweep (no timer per request).
 *
 * One file on purpose (over 400 lines): nearly all of it is the `Session` of one client
 * connection, whose steps (head, body, forward, answer, WebSocket tunnel) share its buffer and
 * state in the per-request hot path; what stands apart already has its module (./wire.ts,
 * ./connection.ts, ./upstream.ts, ./handler.ts).
 * @module
 */
import { Balanced, type Balancer } from "./balance.ts";
import { decide, HSTS, MAX_HEADER_BYTES, measureRoute } from "./handler.ts";
import { headSent } from "./canary.ts";
import type { Conn, HandlerDeps } from "./handler.ts";
import { checkHost, type Client, forwardedRequest, within } from "./forward.ts";
import type { InFlight } from "./inflight.ts";
import { errorChain, errorPage, loggedPath, message } from "./pages.ts";
import type { Route } from "./routes.ts";
import { BodyDecoder, Connection, UpstreamError } from "./connection.ts";
import { parseResponseHead } from "./response_head.ts";
import type { Exchange, UpstreamPool, UpstreamRequest } from "./upstream.ts";
import {
  bodyless,
  chunked,
  concat,
  LAST_CHUNK,
  latin1Bytes,
  latin1Into,
  parseRequestHead,
  type RequestHead,
  statusLine,
} from "./wire.ts";

/** What serving HTTP/1.1 needs from the proxy. */
export interface H1Deps {
  /** Route decisions, metrics and logging, as the handler has them. */
  handlerDeps: HandlerDeps;
  /** The handler, for what is not forwarded here. */
  handler(req: Request, conn: Conn): Promise<Response>;
  pool: UpstreamPool;
  inFlight: InFlight;
  /** Chooses the instance of a target with several ports (./balance.ts). */
  balancer?: Balancer;
  /** How long a request body may stall (0: no limit). */
  requestTimeoutMs: number;
  /** How long the app may take to answer a WebSocket handshake. */
  upstreamTimeoutMs: number;
}

/** What the listener tracks of a connection while it is served. */
export interface Served {
  /** A request head was read: the connection is busy. */
  begin(): void;
  /** Part of a request head arrived: the rest must come within the header timeout. */
  heading(): void;
  /** The exchange is over: the connection is idle. */
  idle(): void;
  /** Whether the listener wants the connection closed once idle. */
  readonly draining: boolean;
  /** `performance.now()`-free clock (ms) of when a write began, 0 when none: the sweep cuts stalled writes. */
  writingSince: number;
  /** The same for writes to the app (WebSockets). */
  appWritingSince: number;
  /** The gate's clock. */
  now(): number;
  /** Also closed when the listener cuts the connection (a tunnel's connection to its app). */
  alsoClose?: () => void;
}

/** Request bodies with a Content-Length up to this are read whole first (then a reused connection may replay them). */
const BUFFERED_BODY_MAX = 64 * 1024;
/** A client connection's read buffer to start with (grown for larger heads, and bodies), and again once idle. */
const CLIENT_BUFFER = 4096;
/** A client connection's read buffer while it reads a body. */
const CLIENT_BODY_BUFFER = 16 * 1024;
/** Largest request head: as the handler's limit on forwarded header bytes. */
const MAX_HEAD = MAX_HEADER_BYTES;
/** Response bodies of the handler read whole up to this to be sent with a Content-Length. */
const SMALL_BODY = 64 * 1024;
/** The request body of a request without one. */
const NO_BODY = { body: null, read: () => true };
/** Empty lines a client may send before a request line. */
const LEADING_EMPTY_LINES = /^[\r\n]+/;
const CONTINUE = new TextEncoder().encode("HTTP/1.1 100 Continue\r\n\r\n");

/** Serves HTTP/1.1 on `tcp` until either side closes. */
export async function serveH1(
  tcp: Deno.Conn,
  client: Client,
  conn: Conn,
  served: Served,
  deps: H1Deps,
): Promise<void> {
  const c = new Connection(tcp, 0, () => {}, CLIENT_BUFFER, CLIENT_BODY_BUFFER);
  const session = new Session(c, client, conn, served, deps);
  try {
    await session.run();
  } catch {
    /* the connection failed: nothing to answer */
  } finally {
    c.close();
  }
}

/** Why the loop stops after an exchange. */
type Next = "keep" | "close";

class Session {
  /**
   * The request in progress when its app has several instances (./balance.ts): the instance it is
   * for. On the session (one request at a time), not passed along: the one-port path stays as it was.
   */
  balancedRequest?: Balanced;

  constructor(
    readonly c: Connection,
    readonly client: Client,
    readonly conn: Conn,
    readonly served: Served,
    readonly deps: H1Deps,
  ) {}

  get log(): (line: string) => void {
    return this.deps.handlerDeps.log;
  }

  async run(): Promise<void> {
    const c = this.c;
    while (true) {
      // The head: up to an empty line, read as it comes; empty lines before it are skipped (RFC 9112 §2.2).
      let text: string | null;
      try {
        text = await c.readHead(MAX_HEAD, this.served.heading);
      } catch (error) {
        if (error instanceof UpstreamError) return void await this.refuse(431);
        throw error;
      }
      if (text === null) return;
      text = text.replace(LEADING_EMPTY_LINES, "");
      if (!text) continue;
      this.served.begin();
      let next: Next;
      try {
        next = await this.exchange(text);
      } finally {
        this.served.idle();
      }
      if (next === "close" || this.served.draining) return;
      // A buffer a large head grew is given back; the one bodies use is kept (no allocation per POST).
      c.shrink(CLIENT_BUFFER, CLIENT_BODY_BUFFER);
    }
  }

  /** Answers with the proxy's page for `status` and closes. */
  async refuse(status: number): Promise<void> {
    this.served.begin();
    try {
      await this.writeResponse(errorPage(status, { connection: "close" }), "GET", true, false);
    } finally {
      this.served.idle();
    }
  }

  /** One request: from its head to the end of its answer. */
  async exchange(text: string): Promise<Next> {
    const head = parseRequestHead(text);
    if ("status" in head) {
      await this.writeResponse(errorPage(head.status, { connection: "close" }), "GET", true, false);
      return "close";
    }
    if (head.host === undefined) {
      // HTTP/1.0 without Host: an app's own port still knows the app; the shared ports cannot tell.
      if (this.conn.entry.kind !== "port" || !this.client.local) {
        await this.writeResponse(errorPage(404, { connection: "close" }), head.method, true, false);
        return "close";
      }
      head.host = this.client.local;
    }
    const host = checkHost(head.host);
    if (host === undefined || head.target === "*") {
      await this.writeResponse(errorPage(400, { connection: "close" }), head.method, true, false);
      return "close";
    }
    const route = decide(this.deps.handlerDeps, this.conn.entry, host, head.target, head.fields, this.client);
    if (!(route instanceof Response)) {
      const target = route.target;
      if (target && "port" in target) {
        if (tunnels(head)) return await this.tunnel(head, route, target.port, host);
        return await this.forward(head, route, target.port, host);
      }
      if (target && "ports" in target) return await this.balance(head, route, target.ports, host);
    }
    return await this.handle(head, host, route instanceof Response ? route : undefined);
  }

  /** A request the handler answers (or `answer`, already decided). */
  async handle(head: RequestHead, host: string, answer?: Response): Promise<Next> {
    let response = answer;
    if (!response) {
      let req: Request | undefined;
      try {
        req = new Request(`${this.client.scheme}://${host}${head.target}`, {
          method: head.method,
          headers: head.fields.toHeaders(),
        });
      } catch {
        response = errorPage(400, { connection: "close" });
      }
      if (req) {
        try {
          response = await this.deps.handler(req, this.conn);
        } catch (error) {
          this.log(`${head.method} ${loggedPath(head.target)}: ${message(error)}`);
          response = errorPage(500);
        }
      }
    }
    // A body the handler did not read is not read here either: the connection ends with the answer.
    const close = head.close || head.framing !== "none" || response!.headers.get("connection") === "close";
    return await this.writeResponse(response!, head.method, close, head.http11) ? "keep" : "close";
  }

  /**
   * Writes a Response: its body with its Content-Length, or whole with one when it is small, or
   * chunked (HTTP/1.1) or up to the close (HTTP/1.0). True when the connection may go on.
   */
  async writeResponse(response: Response, method: string, close: boolean, http11: boolean): Promise<boolean> {
    let text = statusLine(response.status, response.statusText);
    response.headers.forEach((value, name) => {
      if (name === "connection" || name === "transfer-encoding" || name === "keep-alive") return;
      text += `${name}: ${value}\r\n`;
    });
    const length = response.headers.get("content-length");
    const body = response.body;
    if (bodyless(method, response.status) || !body) {
      body?.cancel().catch(() => {});
      if (!length && !bodyless(method, response.status)) text += "content-length: 0\r\n";
      text += close ? "connection: close\r\n" : http11 ? "" : "connection: keep-alive\r\n";
      await this.write(latin1Bytes(`${text}\r\n`));
      return !close;
    }
    const reader = body.getReader();
    try {
      const first: Uint8Array[] = [];
      let size = 0;
      let ended = false;
      // Without a Content-Length: read up to SMALL_BODY to send it with one.
      while (!length && size <= SMALL_BODY) {
        const { done, value } = await reader.read();
        if (done) {
          ended = true;
          break;
        }
        first.push(value);
        size += value.length;
      }
      const framing = length ? "length" : ended ? "whole" : http11 ? "chunked" : "close";
      if (framing === "whole") text += `content-length: ${size}\r\n`;
      else if (framing === "chunked") text += "transfer-encoding: chunked\r\n";
      const closing = close || framing === "close";
      if (closing) text += "connection: close\r\n";
      else if (!http11) text += "connection: keep-alive\r\n";
      await this.write(joined(latin1Bytes(`${text}\r\n`, size), first));
      if (framing === "whole") return !closing;
      // With a Content-Length (a static file's size when it was found): that many bytes and no more,
      // whatever the body gives (a file that grows or shrinks while it is sent never desyncs the client).
      let left = framing === "length" ? Number(length) : Infinity;
      while (left > 0) {
        const { done, value } = await reader.read();
        if (done) break;
        const piece = value.length > left ? value.subarray(0, left) : value;
        if (piece.length) await this.write(framing === "chunked" ? chunked(piece) : piece);
        left -= piece.length;
      }
      if (framing === "chunked") await this.write(LAST_CHUNK);
      // Fewer bytes than announced: only the connection's end can tell the client.
      return !closing && (framing !== "length" || left === 0);
    } finally {
      reader.cancel().catch(() => {});
    }
  }

  /** Writes all of `bytes` to the client; the sweep cuts a write that stalls. */
  async write(bytes: Uint8Array): Promise<void> {
    this.served.writingSince = this.served.now();
    try {
      await this.c.write(bytes);
    } finally {
      this.served.writingSince = 0;
    }
  }

  /**
   * The request body for the app: bytes (small, with a Content-Length), a stream, or null; with
   * whether it was read to its end; or the status to refuse it with.
   */
  async body(
    head: RequestHead & { framing: "length" | "chunked" },
  ): Promise<{ body: Uint8Array | ReadableStream<Uint8Array> | null; read(): boolean } | 408 | 400> {
    if (head.expectContinue) await this.write(CONTINUE);
    const decoder = new BodyDecoder(this.c, head.framing, head.length, "the client");
    const limit = this.deps.requestTimeoutMs;
    /** Reads more within `ms` (no limit when the request timeout is 0): false when the time is up. */
    const more = (ms: number) => limit > 0 && ms <= 0 ? false : within(decoder.readMore().then(() => true), ms);
    const read = () => decoder.done;
    if (head.framing === "length" && head.length <= BUFFERED_BODY_MAX) {
      // A small body has requestTimeout in all (a slow POST cannot hold the connection for long).
      const deadline = Date.now() + limit;
      // Kept as it arrives (nothing is set aside for what a client only announced).
      const pieces: Uint8Array<ArrayBuffer>[] = [];
      try {
        while (true) {
          decoder.decodeBuffered(pieces);
          if (decoder.done) return { body: concat(pieces, head.length), read };
          if (!(await more(deadline - Date.now()))) return 408;
        }
      } catch {
        return 400;
      }
    }
    // A larger or chunked one streams, and may stall for requestTimeout at most between two reads.
    const body = new ReadableStream<Uint8Array>({
      pull: async (controller) => {
        const out: Uint8Array<ArrayBuffer>[] = [];
        try {
          decoder.decodeBuffered(out);
          while (!out.length && !decoder.done) {
            if (!(await more(limit))) throw new ClientBodyError(408, `the request body stalled for ${limit} ms`);
            decoder.decodeBuffered(out);
          }
        } catch (error) {
          throw error instanceof ClientBodyError ? error : new ClientBodyError(400, message(error));
        }
        // What one read decoded goes on as one piece (one write to the app): a client sending 1-byte
        // chunks would otherwise cost a write each, ~300× the CPU of large chunks, slowing every app.
        if (out.length) controller.enqueue(out.length === 1 ? out[0] : concat(out));
        if (decoder.done) controller.close();
      },
    }, { highWaterMark: 0 });
    return { body, read };
  }

  /**
   * Forwards a request to the app on `port` (with several instances: the one {@link balancedRequest}
   * chose, or another one if it refuses) and relays its answer.
   */
  async forward(head: RequestHead, route: Route, port: number, host: string): Promise<Next> {
    const { lines } = forwardedRequest(head.fields, this.client, host);
    if (lines.length > MAX_HEADER_BYTES) {
      await this.writeResponse(errorPage(431, { connection: "close" }), head.method, true, false);
      return "close";
    }
    const done = measureRoute(this.deps.handlerDeps, route);
    const hsts = this.conn.entry.kind === "https" && route.hsts;
    const end = this.balancedRequest ? this.balancedRequest.begin() : this.deps.inFlight.begin(port);
    let bytesOut = 0;
    let status = 502;
    try {
      const request = head.framing === "none" ? NO_BODY : await this.body(head as RequestHead & { framing: "length" });
      if (request === 408 || request === 400) {
        status = request;
        await this.writeResponse(errorPage(request, { connection: "close" }), head.method, true, false);
        return "close";
      }
      let exchange: Exchange;
      try {
        exchange = await this.send(port, {
          method: head.method,
          path: head.target,
          headers: lines,
          body: request.body,
          // A large body with a Content-Length keeps it (apps that read no chunked bodies).
          length: head.framing === "length" ? head.length : undefined,
        });
      } catch (error) {
        if (this.balancedRequest) port = this.balancedRequest.port;
        const where = `${route.app}: ${head.method} ${loggedPath(head.target)}`;
        if (error instanceof ClientBodyError) {
          status = error.status;
          this.log(`${where}: the client's body: ${error.message}`);
          await this.writeResponse(errorPage(status, { connection: "close" }), head.method, true, false);
          return "close";
        }
        const timeout = error instanceof UpstreamError && error.kind === "timeout";
        status = timeout ? 504 : 502;
        this.log(`${where}: 127.0.0.1:${port}: ${errorChain(error).split("\n")[0]}`);
        const close = head.close || !request.read();
        await this.writeResponse(
          errorPage(status, close ? { connection: "close" } : {}),
          head.method,
          close,
          head.http11,
        );
        return close ? "close" : "keep";
      }
      status = exchange.head.status;
      if (route.canary !== undefined) headSent(done, status); // its figures time the head, as HTTP/2's
      const relayed = await this.relay(exchange, head, route, hsts, end);
      bytesOut = relayed.written;
      // A body the app did not read in full is still on the connection: it cannot carry another request.
      return head.close || !request.read() || relayed.close ? "close" : "keep";
    } finally {
      end();
      done?.(status, head.length, bytesOut);
    }
  }

  /**
   * Writes the app's answer to the client. Returns the body bytes written, and whether the
   * connection must close after it (the body was delimited by closing it, or it failed midway).
   */
  async relay(
    exchange: Exchange,
    head: RequestHead,
    route: Route,
    hsts: boolean | undefined,
    ended: () => void,
  ): Promise<{ written: number; close: boolean }> {
    const res = exchange.head;
    let text = statusLine(res.status, res.statusText);
    const fields = res.fields;
    for (let i = 0; i < fields.length; i += 2) {
      if (hsts && fields[i].length === 25 && fields[i].toLowerCase() === "strict-transport-security") continue;
      text += `${fields[i]}: ${fields[i + 1]}\r\n`;
    }
    if (hsts) text += `strict-transport-security: ${HSTS}\r\n`;
    if (route.setCookie !== undefined) text += `set-cookie: ${route.setCookie}\r\n`;
    let size = 0;
    for (const piece of exchange.first) size += piece.length;
    const noBody = res.framing === "none";
    let framing: "length" | "chunked" | "close" | "none" = "none";
    if (!noBody) {
      if (res.framing === "length") framing = "length";
      else if (exchange.done) {
        framing = "length";
        text += `content-length: ${size}\r\n`;
      } else framing = head.http11 ? "chunked" : "close";
    }
    if (framing === "chunked") text += "transfer-encoding: chunked\r\n";
    const closing = head.close || framing === "close";
    if (closing) text += "connection: close\r\n";
    else if (!head.http11) text += "connection: keep-alive\r\n";
    if (exchange.done) {
      ended();
      text += "\r\n";
      const out = this.c.output(text.length + size);
      let at = latin1Into(text, out);
      for (const piece of exchange.first) {
        out.set(piece, at);
        at += piece.length;
      }
      exchange.settle(); // the app's connection is free: its bytes are copied
      await this.write(out.subarray(0, at));
      return { written: size, close: closing };
    }
    // A body that streams: what came with the head, then the rest as the app sends it.
    const chunk = framing === "chunked";
    try {
      await this.write(
        chunk ? latin1Bytes(`${text}\r\n`) : joined(latin1Bytes(`${text}\r\n`, size), exchange.first),
      );
      if (chunk && size) await this.write(chunked(concat(exchange.first, size)));
      let written = size;
      while (true) {
        let pieces: Uint8Array[] | null | undefined;
        try {
          // An app silent for upstreamTimeout in the middle of its answer is given up (as nginx's proxy_read_timeout).
          pieces = await within(exchange.next(), this.deps.upstreamTimeoutMs);
          if (pieces === undefined) throw new Error(`nothing for ${this.deps.upstreamTimeoutMs} ms`);
        } catch (error) {
          const where = `${route.app}: ${head.method} ${loggedPath(head.target)}`;
          this.log(`${where}: the app's answer failed midway: ${message(error)}`);
          exchange.cancel();
          return { written, close: true };
        }
        if (pieces) {
          let n = 0;
          for (const piece of pieces) n += piece.length;
          const bytes = pieces.length === 1 ? pieces[0] : concat(pieces, n);
          await this.write(chunk ? chunked(bytes) : bytes);
          written += n;
        }
        if (exchange.done) break;
      }
      ended();
      if (chunk) await this.write(LAST_CHUNK);
      return { written, close: closing };
    } catch (error) {
      exchange.cancel();
      throw error;
    }
  }

  /** A WebSocket: the handshake to the app on a connection of its own, then bytes both ways. */
  async tunnel(head: RequestHead, route: Route, port: number, host: string): Promise<Next> {
    const { lines } = forwardedRequest(head.fields, this.client, host);
    const done = measureRoute(this.deps.handlerDeps, route);
    const balanced = this.balancedRequest;
    const end = balanced ? balanced.begin() : this.deps.inFlight.begin(port);
    const where = () => `${route.app}: websocket ${loggedPath(head.target)}: 127.0.0.1:${balanced?.port ?? port}`;
    let app: Connection | undefined;
    let status = 502;
    const untrack = this.deps.inFlight.track(() => {
      this.log(`${where()}: cut (the proxy is shutting down)`);
      app?.close();
      this.c.close();
    });
    // A cut by the listener (a stalled write) ends both sides: the pumps may both wait on the app.
    this.served.alsoClose = () => app?.close();
    try {
      if (head.framing !== "none" || lines.length > MAX_HEADER_BYTES) {
        status = 400;
        await this.writeResponse(errorPage(400, { connection: "close" }), head.method, true, false);
        return "close";
      }
      let answer: Awaited<ReturnType<typeof handshake>>;
      try {
        const tcp = balanced
          ? await balanced.send(head.method, (chosen) => this.connectApp(chosen))
          : await this.connectApp(port);
        tcp.setNoDelay(true);
        app = new Connection(tcp, balanced?.port ?? port, () => {});
        const request =
          `GET ${head.target} HTTP/1.1\r\n${lines}connection: upgrade\r\nupgrade: ${head.upgrade}\r\n\r\n`;
        await app.write(latin1Bytes(request));
        const answered = await within(handshake(app), this.deps.upstreamTimeoutMs);
        if (!answered) throw new UpstreamError("timeout", `no answer within ${this.deps.upstreamTimeoutMs} ms`);
        answer = answered;
      } catch (error) {
        status = error instanceof UpstreamError && error.kind === "timeout" ? 504 : 502;
        this.log(`${where()}: ${status}: ${errorChain(error).split("\n")[0]}`);
        await this.writeResponse(errorPage(status, { connection: "close" }), head.method, true, false);
        return "close";
      }
      status = answer.status;
      if (route.canary !== undefined) headSent(done, status); // not the session's length
      if (answer.status !== 101) {
        // The app said no (a 403, a 404): its answer, then the connection ends.
        await this.writeResponse(answer.response!, head.method, true, false);
        return "close";
      }
      let text = statusLine(101, answer.statusText);
      for (let i = 0; i < answer.fields.length; i += 2) text += `${answer.fields[i]}: ${answer.fields[i + 1]}\r\n`;
      if (route.setCookie !== undefined) text += `set-cookie: ${route.setCookie}\r\n`;
      text += `connection: upgrade\r\nupgrade: ${answer.upgrade}\r\n\r\n`;
      const early = app!.buffered ? app!.take(app!.buffered) : new Uint8Array(0);
      await this.write(joined(latin1Bytes(text, early.length), [early]));
      const pending = this.c.buffered ? this.c.take(this.c.buffered) : null;
      await Promise.race([
        this.pump(this.c, app!, pending, "app"),
        this.pump(app!, this.c, null, "client"),
      ]);
      return "close";
    } finally {
      untrack();
      this.served.alsoClose = undefined;
      app?.close();
      end();
      done?.(status, 0, 0);
    }
  }

  /** A connection to the app on `port` for a tunnel; fails with an {@link UpstreamError} (`connect`, `timeout`). */
  async connectApp(port: number): Promise<Deno.TcpConn> {
    const refused = this.deps.pool.refusal(port);
    if (refused) throw refused;
    const connecting = Deno.connect({ hostname: "127.0.0.1", port });
    let tcp: Deno.TcpConn | undefined;
    try {
      tcp = await within(connecting, this.deps.upstreamTimeoutMs);
    } catch (error) {
      throw new UpstreamError("connect", `cannot connect to 127.0.0.1:${port}: ${message(error)}`, { cause: error });
    }
    if (!tcp) {
      connecting.then((late) => late.close(), () => {}); // connected after all: not kept
      throw new UpstreamError("timeout", "connecting timed out");
    }
    return tcp;
  }

  /**
   * A request (or WebSocket) to an app with several instances, on `ports`: to the one
   * {@link balancedRequest} chooses. Apart from {@link exchange}, whose every local costs the
   * one-port path 8 bytes per request (an async function's registers live on the heap).
   */
  async balance(head: RequestHead, route: Route, ports: readonly number[], host: string): Promise<Next> {
    const balanced = this.balancedRequest = new Balanced(this.deps.balancer!, this.deps.inFlight, route.app, ports);
    try {
      if (tunnels(head)) return await this.tunnel(head, route, balanced.port, host);
      return await this.forward(head, route, balanced.port, host);
    } finally {
      this.balancedRequest = undefined;
    }
  }

  /** {@link UpstreamPool.exchange} to `port`, or with several instances to the one {@link balancedRequest} ends on. */
  send(port: number, req: UpstreamRequest): Promise<Exchange> {
    return this.balancedRequest ? this.sendBalanced(this.balancedRequest, req) : this.deps.pool.exchange(port, req);
  }

  /** (Apart from {@link send}: its closure would cost the one-port path a context per request.) */
  sendBalanced(balanced: Balanced, req: UpstreamRequest): Promise<Exchange> {
    return balanced.send(req.method, (port) => this.deps.pool.exchange(port, req));
  }

  /** Copies `from` to `to` until either ends; writes that stall are cut by the sweep. */
  async pump(from: Connection, to: Connection, first: Uint8Array | null, toWhom: "app" | "client"): Promise<void> {
    const served = this.served;
    const mark = (since: number) => toWhom === "app" ? served.appWritingSince = since : served.writingSince = since;
    try {
      if (first) {
        mark(served.now());
        await to.write(first);
        mark(0);
      }
      const buf = new Uint8Array(64 * 1024);
      while (true) {
        const n = await from.tcp.read(buf);
        if (n === null) break;
        mark(served.now());
        await to.write(buf.subarray(0, n));
        mark(0);
      }
    } catch {
      /* either side failed: the tunnel ends */
    } finally {
      mark(0);
    }
  }
}

/** Whether `head` opens a WebSocket (tunnelled); any other Upgrade is dropped: an ordinary request (it is hop-by-hop). */
function tunnels(head: RequestHead): boolean {
  if (head.upgrade === undefined) return false;
  // Not from HTTP/1.0 (RFC 9110 §7.8: a server ignores its Upgrade).
  if (head.upgrade.toLowerCase() === "websocket" && head.method === "GET" && head.http11) return true;
  head.upgrade = undefined;
  return false;
}

/** The app's answer to a WebSocket handshake. */
async function handshake(app: Connection): Promise<{
  status: number;
  statusText: string;
  fields: string[];
  upgrade: string;
  response?: Response;
}> {
  const text = await app.readHead(MAX_HEAD);
  if (text === null) throw new UpstreamError("reset", "the app closed the connection");
  const head = parseResponseHead(text, "GET");
  const upgrade = /\r?\nupgrade:[ \t]*([^\r\n]*)/i.exec(text)?.[1]?.trim() ?? "";
  if (head.status === 101) {
    if (upgrade.toLowerCase() !== "websocket") throw new UpstreamError("protocol", "101 without Upgrade: websocket");
    return { status: 101, statusText: head.statusText, fields: head.fields, upgrade };
  }
  if (head.status < 200) throw new UpstreamError("protocol", `${head.status} instead of 101`);
  // Its answer, read whole (up to 64 KiB): then the connection ends.
  const pieces: Uint8Array<ArrayBuffer>[] = [];
  if (head.framing !== "none") {
    const decoder = new BodyDecoder(app, head.framing, head.length);
    let size = 0;
    decoder.decodeBuffered(pieces);
    while (!decoder.done) {
      size = pieces.reduce((sum, piece) => sum + piece.length, 0);
      if (size > SMALL_BODY) throw new UpstreamError("protocol", `${head.status} instead of 101, with a large body`);
      await decoder.readMore();
      decoder.decodeBuffered(pieces);
    }
  }
  const headers = new Headers();
  for (let i = 0; i < head.fields.length; i += 2) {
    if (head.fields[i].toLowerCase() !== "content-length") headers.append(head.fields[i], head.fields[i + 1]);
  }
  const response = new Response(concat(pieces, pieces.reduce((sum, piece) => sum + piece.length, 0)), {
    status: head.status,
    statusText: head.statusText,
    headers,
  });
  return { status: head.status, statusText: head.statusText, fields: head.fields, upgrade, response };
}

/** A request body the client sent wrong (400) or too slowly (408). */
class ClientBodyError extends Error {
  constructor(readonly status: 400 | 408, message: string) {
    super(message);
  }
}

/** `head` (with room for the pieces after it) with `pieces` copied in. */
function joined(head: Uint8Array, pieces: Uint8Array[]): Uint8Array {
  let at = head.length;
  for (let i = pieces.length - 1; i >= 0; i--) at -= pieces[i].length;
  for (const piece of pieces) {
    head.set(piece, at);
    at += piece.length;
  }
  return head;
}
