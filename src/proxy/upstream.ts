/**
 * The proxy's HTTP/1.1 client for the apps on 127.0.0.1:<port>, in place of `fetch` (which tops
 * out well below what the proxy can serve): keep-alive connections pooled per port, the request
 * head and a small body sent in one write, response heads found by a byte scan, bodies streamed
 * with backpressure (nothing is read from the app while the consumer is not pulling).
 *
 * Framing follows RFC 9112: response bodies by Content-Length, chunked (trailers dropped) or
 * until the app closes; none for HEAD, 204, 205 and 304; interim 1xx responses are skipped. A head
 * that is malformed or larger than `maxHeaderBytes` fails with {@link UpstreamError} `protocol`.
 * A body that came complete with the head (the usual small answer) is the Response's bytes, in
 * one piece, and its connection is back in the pool before `request` resolves. The Response's
 * headers are its own (mutable): a proxy that edits them in place and returns the Response keeps
 * those bytes for `Deno.serve` to send directly, where `new Response(res.body, ...)` makes a stream.
 *
 * A connection goes back to the pool only when its response was read to the end, allowed
 * keep-alive (HTTP/1.1 without `Connection: close`, not delimited by close, not both
 * Transfer-Encoding and Content-Length, not the answer to a HEAD nor a 204 or 304 announcing a
 * body: ./response_head.ts) and the request body was sent in full. While pooled, a
 * read is kept pending on it, so an app closing its idle keep-alive connection removes it at
 * once; if a reused connection still fails before any byte of the response arrives, a request
 * with a replayable body (null or bytes) is sent again once, on a fresh connection.
 *
 * Here: the pool and the Response. One request's course is ./upstream_call.ts, the connection and
 * body framing ./connection.ts, the response head ./response_head.ts.
 * @module
 */
import { Connection, UpstreamError } from "./connection.ts";
import { message } from "./pages.ts";
import type { ResponseHead } from "./response_head.ts";
import { abortReason, Call, type Slots } from "./upstream_call.ts";
import { concat, TOKEN } from "./wire.ts";

/** Responses whose body (or lack of one) was read in full with the head: done with the app. */
const COMPLETE = new WeakSet<Response>();

/**
 * Whether `response` (from {@link UpstreamPool.request}) came with its whole body: nothing more is
 * read from the app. Asking this instead of looking at `response.body` keeps the body as bytes,
 * which Deno's HTTP server sends without a stream.
 */
export function isComplete(response: Response): boolean {
  return COMPLETE.has(response);
}

/** One request to an app. */
export interface UpstreamRequest {
  /** An HTTP token (`GET`, `POST`, ...). */
  method: string;
  /** Origin-form request target, exactly as it goes on the request line (`/a?b`): starts with `/`, visible ASCII. */
  path: string;
  /**
   * Header fields to send, already filtered by the caller (no hop-by-hop), Host included (without
   * one, `host: 127.0.0.1:<port>` is sent). Any Content-Length, Transfer-Encoding or Connection here
   * is dropped: the client frames the body itself; keep-alive is HTTP/1.1's default. Or the header
   * lines already written (`name: value\r\n` each, Host included, none of those three): the proxy's
   * fast path.
   */
  headers: Headers | string;
  /** Bytes go with a Content-Length, a stream chunked (with backpressure), null with none (`content-length: 0` for POST/PUT/PATCH). */
  body: ReadableStream<Uint8Array> | Uint8Array | null;
  /** A stream's length when the client gave one: sent with it as a Content-Length (apps that read no chunked bodies), not chunked. */
  length?: number;
  /** Aborting closes the connection; the request (or the response body) fails with the signal's reason. */
  signal?: AbortSignal;
}

/** Options of an {@link UpstreamPool}. */
export interface UpstreamOptions {
  /** Idle connections kept per port (default 64); more are closed when their response ends. */
  maxIdlePerPort?: number;
  /** Pooled connections idle longer than this are closed (default 30 s). */
  idleMs?: number;
  /**
   * Whether idle connections let the process exit (default true). A long-running server passes
   * false: two fewer calls into the runtime per request.
   */
  unrefIdle?: boolean;
  /** Longest time from the request to the response head, connecting included (default 60 s) → `timeout`. */
  headerTimeoutMs?: number;
  /**
   * Why the proxy must not connect to `port` now (another user's process holds it: see
   * ../listeners.ts), or undefined. A refused port fails as a refused connection (502, or the
   * next instance); its idle connections are not reused. Called per request: a lookup, no I/O.
   */
  refuse?: (port: number) => string | undefined;
  /** Largest response head accepted (default 64 KiB) → `protocol`. */
  maxHeaderBytes?: number;
}

/** A response whose head has arrived (see {@link UpstreamPool.exchange}). */
export interface Exchange {
  head: ResponseHead;
  /**
   * The body's bytes read with the head (decoded: no chunk framing). When they are the whole body
   * (`done` at once) they are the connection's own buffer: use them, then call `settle`.
   */
  first: Uint8Array<ArrayBuffer>[];
  /** Whether the body was read to its end: at once when `first` is all of it. */
  readonly done: boolean;
  /** `first` is used: the connection goes back to the pool (for a complete body; else nothing). */
  settle(): void;
  /** The next bytes of the body (never empty), or null at its end; throws an {@link UpstreamError}. */
  next(): Promise<Uint8Array<ArrayBuffer>[] | null>;
  /** Gives up on the rest of the body (the connection is closed). */
  cancel(): void;
}

/** Header timeouts and idle connections are checked this often (within these bounds, from the options). */
const MIN_TICK_MS = 5;
const MAX_TICK_MS = 1000;
const TARGET = /^\/[\x21-\x7e]*$/;

/** Pooled HTTP/1.1 connections to apps on 127.0.0.1, by port. */
export class UpstreamPool {
  readonly #maxIdle: number;
  readonly #unrefIdle: boolean;
  readonly #idleMs: number;
  readonly #headerTimeoutMs: number;
  readonly #maxHeaderBytes: number;
  readonly #refuse?: (port: number) => string | undefined;
  /** Idle connections per port, oldest first. */
  readonly #idle = new Map<number, Connection[]>();
  /** Every open connection, idle or busy. */
  readonly #open = new Set<Connection>();
  /** Requests waiting for their response head. */
  readonly #waiting = new Set<Call>();
  /** Checks header timeouts and idle connections while there are any (cheaper than a timer per request). */
  #ticker?: ReturnType<typeof setInterval>;
  readonly #tickMs: number;
  #closed = false;

  constructor(options: UpstreamOptions = {}) {
    this.#maxIdle = options.maxIdlePerPort ?? 64;
    this.#unrefIdle = options.unrefIdle ?? true;
    this.#idleMs = options.idleMs ?? 30_000;
    this.#headerTimeoutMs = options.headerTimeoutMs ?? 60_000;
    this.#maxHeaderBytes = options.maxHeaderBytes ?? 64 * 1024;
    this.#refuse = options.refuse;
    this.#tickMs = Math.max(MIN_TICK_MS, Math.min(MAX_TICK_MS, this.#idleMs / 4, this.#headerTimeoutMs / 10));
    this.#slots = this.#makeSlots();
  }

  /**
   * Sends `req` to 127.0.0.1:`port` and resolves with the response once its head has arrived;
   * the body streams. Rejects with an {@link UpstreamError}, with the signal's reason when
   * aborted, with the request body stream's own error when that fails, or with a TypeError for
   * an invalid port, method or path.
   */
  async request(port: number, req: UpstreamRequest): Promise<Response> {
    const exchange = await this.exchange(port, req);
    if (exchange.done) {
      const first = exchange.first;
      let whole: Response;
      try {
        whole = response(first.some((piece) => piece.length) ? concat(first) : null, exchange.head);
      } finally {
        exchange.settle();
      }
      COMPLETE.add(whole);
      return whole;
    }
    const stream = new ReadableStream<Uint8Array>({
      start: (controller) => {
        for (const chunk of exchange.first) controller.enqueue(chunk);
      },
      pull: async (controller) => {
        const out = await exchange.next();
        if (out) { for (const chunk of out) controller.enqueue(chunk); }
        if (exchange.done) controller.close();
      },
      cancel: () => exchange.cancel(),
    }, { highWaterMark: 0 });
    return response(stream, exchange.head);
  }

  /**
   * {@link request} without a Response: the parsed head and the body's decoded bytes as they are
   * read (the proxy's HTTP/1.1 server writes them to its client itself). Rejects as `request` does.
   */
  exchange(port: number, req: UpstreamRequest): Promise<Exchange> {
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      return Promise.reject(new TypeError(`invalid upstream port ${port}`));
    }
    if (!TOKEN.test(req.method)) return Promise.reject(new TypeError(`invalid method ${JSON.stringify(req.method)}`));
    if (!TARGET.test(req.path)) {
      return Promise.reject(new TypeError(`invalid request target ${JSON.stringify(req.path.slice(0, 100))}`));
    }
    if (req.signal?.aborted) return Promise.reject(abortReason(req.signal));
    if (this.#closed) return Promise.reject(new UpstreamError("connect", "the upstream pool is closed"));
    return new Call(this.#slots, port, req).run();
  }

  /**
   * Why connections to `port` are refused now (its options' `refuse`), or undefined; throws it as
   * an {@link UpstreamError} `connect` whose cause is a refused connection.
   */
  refusal(port: number): UpstreamError | undefined {
    const why = this.#refuse?.(port);
    if (why === undefined) return undefined;
    return new UpstreamError("connect", `cannot connect to 127.0.0.1:${port}: ${why}`, {
      cause: new Deno.errors.ConnectionRefused(why),
    });
  }

  /** Idle connections to `port` now. */
  idle(port: number): number {
    return this.#idle.get(port)?.length ?? 0;
  }

  /** Closes every connection, idle or busy (requests and bodies in progress fail); later requests fail. */
  close(): void {
    this.#closed = true;
    this.#stopTicking();
    this.#idle.clear();
    for (const conn of [...this.#open]) conn.close();
  }

  /** What a {@link Call} may use of the pool. */
  readonly #slots: Slots;

  /** The pool as calls see it. */
  #makeSlots(): Slots {
    return {
      take: (port) => {
        if (this.#refuse?.(port) !== undefined) return undefined; // connect says why
        const list = this.#idle.get(port);
        const conn = list?.pop();
        if (conn) conn.wake();
        return conn;
      },
      release: (conn) => this.#release(conn),
      watch: (call) => {
        this.#waiting.add(call);
        this.#startTicking();
      },
      unwatch: (call) => this.#waiting.delete(call),
      connect: async (port) => {
        const refused = this.refusal(port);
        if (refused) throw refused;
        const tcp = await Deno.connect({ hostname: "127.0.0.1", port });
        if (this.#closed) {
          tcp.close();
          throw new UpstreamError("connect", "the upstream pool is closed");
        }
        tcp.setNoDelay(true);
        const conn = new Connection(tcp, port, (closed) => this.#forget(closed));
        this.#open.add(conn);
        return conn;
      },
      headerTimeoutMs: this.#headerTimeoutMs,
      maxHeaderBytes: this.#maxHeaderBytes,
    };
  }

  #release(conn: Connection): void {
    if (this.#closed || conn.closed) return conn.close();
    let list = this.#idle.get(conn.port);
    if (!list) this.#idle.set(conn.port, list = []);
    if (list.length >= this.#maxIdle) return conn.close();
    list.push(conn);
    conn.park(this.#unrefIdle);
    this.#startTicking();
  }

  /** Drops a closed connection from the pool. */
  #forget(conn: Connection): void {
    this.#open.delete(conn);
    const list = this.#idle.get(conn.port);
    const at = list ? list.indexOf(conn) : -1;
    if (at < 0) return;
    list!.splice(at, 1);
    if (!list!.length) this.#idle.delete(conn.port);
  }

  #startTicking(): void {
    if (this.#ticker !== undefined) return;
    this.#ticker = setInterval(() => this.#tick(), this.#tickMs);
    Deno.unrefTimer(this.#ticker);
  }

  #stopTicking(): void {
    clearInterval(this.#ticker);
    this.#ticker = undefined;
  }

  /** Fails the requests past their header timeout; closes the connections idle for longer than `idleMs`. */
  #tick(): void {
    const now = performance.now();
    for (const call of [...this.#waiting]) if (call.deadline <= now) call.expire();
    const cutoff = now - this.#idleMs;
    let idle = 0;
    for (const [port, list] of [...this.#idle]) {
      let stale = 0;
      while (stale < list.length && list[stale].idleSince <= cutoff) stale++;
      for (const conn of list.slice(0, stale)) conn.close();
      if (!list.length) this.#idle.delete(port);
      idle += list.length;
    }
    if (!idle && !this.#waiting.size) this.#stopTicking();
  }
}

/**
 * The Response for `head` with `body`; what `Response` and `Headers` reject (an invalid header
 * name or value) is a `protocol` error. The fields go straight into the response's own headers:
 * building a Headers first and passing it in costs a copy.
 */
function response(body: BodyInit | null, head: ResponseHead): Response {
  try {
    const res = new Response(body, { status: head.status, statusText: head.statusText });
    const { headers } = res;
    const fields = head.fields;
    for (let i = 0; i < fields.length; i += 2) headers.append(fields[i], fields[i + 1]);
    return res;
  } catch (error) {
    throw new UpstreamError("protocol", `unusable response head: ${message(error)}`, { cause: error });
  }
}
