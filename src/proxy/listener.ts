/**
 * Where connections come in. The proxy accepts them itself (so it can count and refuse them),
 * then serves HTTP/1.1 itself (./h1.ts: plain, and TLS whose ALPN chose http/1.1) and hands
 * HTTP/2 connections to Deno's HTTP server for one connection, `Deno.serveHttp` (hyper), through a
 * loopback connection the proxy feeds after checking the frames (./h2_guard.ts: hyper keeps every
 * empty DATA frame). (The newer internal `serveHttpOnConnection` closes an upgraded WebSocket as
 * soon as its connection's HTTP part ends; WebSockets are HTTP/1.1 here anyway.)
 *
 * - The gate (./gate.ts): connection limits in total and per client address, and a sweep that
 *   closes connections that send no complete request in time (slowloris) or stay idle too long.
 * - {@link HttpListener}: one listening socket (plain or TLS) and its accept loop. TLS picks the
 *   certificate by SNI; since Deno keeps the first answer per name for a listener's life, a new
 *   certificate is put in service by {@link HttpListener.handOver}: a new listener on the same
 *   port (SO_REUSEPORT), then the old one stops accepting (after 1 s, or at once when it failed a
 *   name that now has a certificate); open connections carry on.
 * @module
 */
import { type Client, h2Problem } from "./forward.ts";
import { closeWhenIdle, cut, type Gate, type Tracked } from "./gate.ts";
import { type H1Deps, type Served, serveH1 } from "./h1.ts";
import { closeConn, FrameGuard, LoopbackPairs, pump, StreamOrder } from "./h2_guard.ts";
import type { Conn, Entry } from "./handler.ts";
import { errorPage, message } from "./pages.ts";
import { isComplete } from "./upstream.ts";

/** One request of `Deno.serveHttp` (deprecated in the types, present and working in Deno 2.9.6). */
interface RequestEvent {
  request: Request;
  respondWith(response: Response | Promise<Response>): Promise<void>;
}

/** One connection served by `Deno.serveHttp`. */
interface HttpConn extends AsyncIterable<RequestEvent> {
  close(): void;
}

// deno-lint-ignore no-explicit-any
const serveHttp = (Deno as any).serveHttp as (conn: Deno.Conn) => HttpConn;
const SNI_RESOLVER = Symbol.for("unstableSniResolver");

/** Options of an {@link HttpListener}. */
export interface ListenerOptions {
  hostname: string;
  port: number;
  entry: Entry;
  gate: Gate;
  handler: (req: Request, conn: Conn) => Promise<Response>;
  /** What the HTTP/1.1 server needs besides. */
  http1: H1Deps;
  isTrusted: (ip: string) => boolean;
  /** TLS: offer HTTP/2 (ALPN h2) besides HTTP/1.1. */
  http2?: boolean;
  /** TLS: the certificate for an SNI name (undefined: the handshake fails). */
  certificateFor?: (serverName: string) => { cert: string; key: string } | undefined;
  /** TLS: distinct SNI names a listener answers before a fresh one replaces it (default {@link MAX_SNI_NAMES}). */
  maxServerNames?: number;
  log: (line: string) => void;
}

/** Accept errors about one connection that went away before it was accepted. */
const PEER_GONE = [Deno.errors.NotConnected, Deno.errors.ConnectionReset, Deno.errors.ConnectionAborted];

/** Refusals written at once at most; beyond, the accept loop waits for them (a connection flood's file descriptors). */
const MAX_REFUSING = 32;

/** Distinct SNI names (with a certificate or not) before a fresh TLS listener replaces the one that remembers them. */
export const MAX_SNI_NAMES = 10_000;
/** How long a replaced TLS listener keeps accepting what the kernel queued for it. */
const HANDOVER_OVERLAP_MS = 1000;
/** Requests in flight on one connection (HTTP/2 streams) past which new ones get a 503. */
const MAX_REQUESTS_PER_CONNECTION = 100;

const REFUSAL = new TextEncoder().encode(
  "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 24\r\nConnection: close\r\n\r\n" +
    "503 Service Unavailable\n",
);

/** One listening socket and its accept loop. */
export class HttpListener {
  readonly #options: ListenerOptions;
  #listener?: Deno.Listener;
  #loop?: Promise<void>;
  #closed = false;
  #acceptErrorLogged = 0;
  /** The SNI names the current TLS listener found no certificate for (Deno remembers those failures). */
  #missed = new Set<string>();
  #handOverPending = false;
  /** Refusals being written now. */
  #refusing = 0;
  /** The connections this listener accepted that are still open. */
  readonly #conns = new Set<Tracked>();
  /** Where HTTP/2 connections are handed to Deno's server (made at the first one). */
  #pairs?: LoopbackPairs;

  constructor(options: ListenerOptions) {
    this.#options = options;
  }

  /** Opens the socket (throws when it cannot) and starts accepting. */
  start(): void {
    const listener = this.#open();
    this.#listener = listener;
    this.#loop = this.#accept(listener);
  }

  #open(): Deno.Listener {
    const { hostname, port, certificateFor } = this.#options;
    if (!certificateFor) return Deno.listen({ hostname, port });
    const missed = new Set<string>();
    const names = new Set<string>();
    const most = this.#options.maxServerNames ?? MAX_SNI_NAMES;
    const resolver = (serverName: string) => {
      const name = serverName.toLowerCase();
      // Deno remembers every name's answer for the listener's life, a certificate or a failure:
      // random names (unknown ones, or any under a wildcard) would grow that memory for ever, so a
      // fresh listener (an empty memory) takes over now and then.
      if (!names.has(name) && names.add(name).size === most) {
        this.#options.log(`${hostname}:${port}: ${most} TLS server names asked for: a fresh listener takes over`);
        setTimeout(() => this.handOver(), 0);
      }
      const pair = certificateFor(name);
      if (pair) return pair;
      missed.add(name);
      throw new Error(`no certificate for ${JSON.stringify(serverName)}`);
    };
    const listener = Deno.listenTls(
      {
        hostname,
        port,
        reusePort: true,
        alpnProtocols: this.#options.http2 === false ? ["http/1.1"] : ["h2", "http/1.1"],
        [SNI_RESOLVER]: resolver,
      } as unknown as Deno.ListenTlsOptions & Deno.TlsCertifiedKeyPem,
    );
    this.#missed = missed;
    return listener;
  }

  /**
   * TLS: puts changed certificates in service. A new socket on the same port takes new
   * connections; the old one stops accepting; connections already open are not touched.
   */
  handOver(): void {
    if (this.#closed || !this.#listener) return;
    const missed = this.#missed;
    let next: Deno.Listener;
    try {
      next = this.#open();
    } catch (error) {
      this.#handOverPending = true; // retried by retryHandOver (the proxy's 2 s tick)
      this.#options.log(
        `${this.#options.hostname}:${this.#options.port}: a new TLS listener failed: ${message(error)}`,
      );
      return;
    }
    this.#handOverPending = false;
    const previous = this.#listener;
    this.#listener = next;
    this.#loop = this.#accept(next);
    // The old socket's accept loop goes on for a moment: what the kernel queued for it is still
    // served. Unless it failed a name that now has a certificate (a client came before the
    // certificate did): it would fail that name again, for about half the new connections during
    // the overlap (the kernel spreads them over both sockets), so it goes at once.
    const poisoned = [...missed].some((name) => this.#options.certificateFor!(name));
    if (poisoned) closeListener(previous);
    else setTimeout(() => closeListener(previous), HANDOVER_OVERLAP_MS);
  }

  /** Retries a hand-over that could not open its new listener. */
  retryHandOver(): void {
    if (this.#handOverPending) this.handOver();
  }

  async #accept(listener: Deno.Listener): Promise<void> {
    const { gate, log } = this.#options;
    while (!this.#closed) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch (error) {
        if (this.#closed || this.#listener !== listener || error instanceof Deno.errors.BadResource) return;
        // A connection reset before it was accepted is that one connection's problem: go on at once
        // (a pause per reset would let a client stop all accepting with a few resets a second).
        if (PEER_GONE.some((kind) => error instanceof kind)) continue;
        // EMFILE and the like: refuse by not accepting for a moment, never crash.
        const now = Date.now();
        if (now - this.#acceptErrorLogged > 10_000) {
          this.#acceptErrorLogged = now;
          log(`${this.#options.hostname}:${this.#options.port}: accepting a connection failed: ${message(error)}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 50));
        continue;
      }
      const ip = (conn.remoteAddr as Deno.NetAddr).hostname ?? "";
      if (!gate.admit(ip, this.#options.isTrusted(ip))) {
        // Each refusal holds a file descriptor until written: a flood must not use them all up.
        const refused = refuse(conn, !this.#options.certificateFor);
        this.#refusing++;
        refused.finally(() => this.#refusing--);
        if (this.#refusing >= MAX_REFUSING) await refused;
        continue;
      }
      try {
        this.#serve(conn, ip);
      } catch (error) {
        closeConn(conn); // (setNoDelay on a connection already gone)
        log(`serving a connection failed: ${message(error)}`);
      }
    }
  }

  #serve(conn: Deno.Conn, ip: string): void {
    const { gate, entry, isTrusted } = this.#options;
    // Answers go out at once (as nginx's tcp_nodelay): no waiting for the client's ACK of the last one.
    if (!this.#options.certificateFor) (conn as Deno.TcpConn).setNoDelay(true);
    const local = conn.localAddr as Deno.NetAddr;
    const tracked = gate.track(ip);
    this.#conns.add(tracked);
    tracked.close = () => closeConn(conn);
    const client: Client = {
      ip,
      scheme: entry.kind === "https" ? "https" : "http",
      isTrusted,
      local: `${local.hostname.includes(":") ? `[${local.hostname}]` : local.hostname}:${local.port}`,
    };
    const release = () => {
      this.#conns.delete(tracked);
      gate.release(tracked);
    };
    const serving = this.#options.certificateFor
      ? (conn as Deno.TlsConn).handshake().then(({ alpnProtocol }) =>
        alpnProtocol === "h2" ? this.#serveHttp2(conn, tracked, client) : this.#serveHttp1(conn, tracked, client)
      )
      : this.#serveHttp1(conn, tracked, client);
    serving.catch(() => {}).finally(() => {
      release();
      closeConn(conn);
    });
  }

  /** HTTP/1.1, served by ./h1.ts. */
  #serveHttp1(conn: Deno.Conn, tracked: Tracked, client: Client): Promise<void> {
    const { gate, entry, http1 } = this.#options;
    const served: Served = {
      begin: () => {
        tracked.active++;
        tracked.requests++;
        tracked.headSince = 0;
      },
      heading: () => {
        if (!tracked.headSince) tracked.headSince = Date.now();
      },
      idle: () => {
        tracked.active--;
        tracked.idleSince = gate.now;
      },
      get draining() {
        return tracked.draining;
      },
      set writingSince(since: number) {
        tracked.writingSince = since;
      },
      get writingSince() {
        return tracked.writingSince;
      },
      set appWritingSince(since: number) {
        tracked.appWritingSince = since;
      },
      get appWritingSince() {
        return tracked.appWritingSince;
      },
      now: () => gate.now,
    };
    tracked.close = () => {
      closeConn(conn);
      served.alsoClose?.();
    };
    return serveH1(conn, client, { entry, client }, served, http1);
  }

  /** HTTP/2 (TLS only), served by `Deno.serveHttp` and the handler. */
  async #serveHttp2(conn: Deno.Conn, tracked: Tracked, client: Client): Promise<void> {
    if (this.#closed) return;
    const { gate, entry, handler, log, isTrusted } = this.#options;
    const idle = () => {
      tracked.active--;
      tracked.idleSince = gate.now;
      if (tracked.draining && tracked.active === 0) cut(tracked);
    };
    const context: Conn = { entry, client };
    // Requests matched to their streams: a stream the client resets stops its answer (./h2_guard.ts).
    const order = new StreamOrder(MAX_REQUESTS_PER_CONNECTION);
    const respond = async (event: RequestEvent) => {
      const answering = order.begin();
      // One HTTP/2 connection carries many requests at once, each may hold a connection to an app:
      // beyond the first, each counts as a connection against the limits while in flight (./gate.ts).
      const admitted = tracked.active < MAX_REQUESTS_PER_CONNECTION
        ? gate.admitStream(tracked, isTrusted(client.ip))
        : undefined;
      tracked.active++;
      tracked.requests++;
      let response: Response;
      try {
        response = h2Problem(event.request)
          ? errorPage(400)
          : !admitted
          ? errorPage(503)
          : await handler(event.request, context);
      } catch (error) {
        log(`${entry.kind}: ${message(error)}`);
        response = new Response("500 Internal Server Error\n", { status: 500 });
      }
      if (response.body && !isComplete(response)) {
        const streamed = watched(response, waits, tracked, gate);
        response = streamed.response;
        order.streaming(answering, streamed.stop);
      }
      await event.respondWith(untransformed(response)).catch(() => {});
      order.end(answering);
      if (admitted === "counted") gate.endStream(tracked);
      idle();
    };
    /** Since when each streamed answer's next chunk has waited for the client to take it (its window shut). */
    const waits = new Set<{ since: number }>();
    // Deno's server reads the frames from a loopback connection the proxy feeds through a FrameGuard (./h2_guard.ts).
    let pair: [Deno.TcpConn, Deno.Conn];
    try {
      const pairs = this.#pairs ??= new LoopbackPairs();
      pair = await pairs.pair().catch(() => pairs.pair()); // once more: a local flood may have filled the queue
    } catch (error) {
      return log(`${entry.kind}: HTTP/2 connection from ${client.ip} not served: ${message(error)}`);
    }
    const [ours, theirs] = pair;
    const http = serveHttp(theirs);
    // Closing the client's connection ends both pumps (one may wait on a client that reads nothing).
    tracked.close = () => {
      http.close();
      closeConn(ours);
      closeConn(conn);
    };
    const refused = (why: string) => log(`${entry.kind}: HTTP/2 connection from ${client.ip} cut: ${why}`);
    const inbound = pump(conn, ours, { guard: new FrameGuard(order), refused, halfClose: true });
    // Ends when Deno's server closes its end (after its last bytes) or the client's connection goes.
    const outbound = pump(ours, conn);
    try {
      for await (const event of http) respond(event);
    } finally {
      await outbound;
      await inbound;
    }
  }

  /**
   * Stops accepting. With `drain`, its open connections end gracefully too: idle keep-alive ones
   * at once, the others after their requests in flight (the gate cuts what is left at shutdown).
   */
  async close(drain = false): Promise<void> {
    this.#closed = true;
    if (this.#listener) closeListener(this.#listener);
    await this.#loop;
    this.#pairs?.close();
    if (drain) { for (const tracked of this.#conns) closeWhenIdle(tracked); }
  }
}

function closeListener(listener: Deno.Listener): void {
  try {
    listener.close();
  } catch { /* already closed */ }
}

/** Turns a connection away: a 503 on plain HTTP (a few bytes, into the socket's empty buffer), a close on TLS. */
function refuse(conn: Deno.Conn, plain: boolean): Promise<void> {
  const close = () => {
    try {
      conn.close();
    } catch { /* closed */ }
  };
  if (!plain) return Promise.resolve(close());
  return conn.write(REFUSAL).then(() => {}, () => {}).finally(close);
}

/**
 * `response` marked `Cache-Control: no-transform`, which keeps Deno's HTTP/2 server from
 * compressing it (it would, for a client that accepts gzip or br, a compressible Content-Type and
 * no Content-Encoding or Content-Range): the app's bytes go as it sent them, as over HTTP/1.1.
 * Compressing a page that reflects input beside a secret lets its size tell the secret (BREACH),
 * and it made the app's strong ETag weak.
 */
function untransformed(response: Response): Response {
  const { headers } = response;
  if (!response.body || !headers.has("content-type") || headers.has("content-encoding")) return response;
  if (headers.has("content-range")) return response;
  const cacheControl = headers.get("cache-control");
  if (cacheControl !== null && /(?:^|,)\s*no-transform\s*(?:,|$)/i.test(cacheControl)) return response;
  try {
    headers.set("cache-control", cacheControl ? `${cacheControl}, no-transform` : "no-transform");
  } catch { /* immutable headers (a redirect): no body to compress */ }
  return response;
}

/**
 * `response` with its streamed body watched for HTTP/2's sendTimeout: while a chunk waits for the
 * client to take it (a client that shuts its window and reads nothing), `tracked.writingSince`
 * holds the oldest such wait of the connection's streams, and the gate's sweep cuts the connection
 * as it cuts an HTTP/1.1 one whose write stalls. Without it, each such stream held its app
 * connection for good (found by an attacker: 1,000 app connections held from 10 connections).
 */
function watched(
  response: Response,
  waits: Set<{ since: number }>,
  tracked: Tracked,
  gate: Gate,
): { response: Response; stop(): void } {
  const reader = response.body!.getReader();
  let wait: { since: number } | undefined;
  const settle = () => {
    if (!wait) return;
    waits.delete(wait);
    wait = undefined;
    let oldest = 0;
    for (const { since } of waits) if (!oldest || since < oldest) oldest = since;
    tracked.writingSince = oldest;
  };
  let bodyController: ReadableStreamDefaultController<Uint8Array> | undefined;
  const body = new ReadableStream<Uint8Array>({
    start: (controller) => void (bodyController = controller),
    pull: async (controller) => {
      settle(); // the client took the last chunk
      const { done, value } = await reader.read();
      if (done) return controller.close();
      controller.enqueue(value);
      waits.add(wait = { since: gate.now });
      if (!tracked.writingSince) tracked.writingSince = wait.since;
    },
    cancel: (reason) => {
      settle();
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
  /** The client reset the stream: the app's answer is cancelled, Deno's server stops reading this one. */
  const stop = () => {
    const reason = new Error("the client reset the stream");
    settle();
    reader.cancel(reason).catch(() => {});
    try {
      bodyController!.error(reason);
    } catch { /* it had ended */ }
  };
  return {
    response: new Response(body, {
      status: response.status,
      statusText: response.statusText,
      headers: response.headers,
    }),
    stop,
  };
}
