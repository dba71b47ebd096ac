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
 * Transfer-Encoding and Content-Length) and the request body was sent in full. While pooled, a
 * read is kept pending on it, so an app closing its idle keep-alive connection removes it at
 * once; if a reused connection still fails before any byte of the response arrives, a request
 * with a replayable body (null or bytes) is sent again once, on a fresh connection.
 * @module
 */
import { DeployParadigmError } from "../errors.ts";
import {
  chunked,
  concat,
  DIGITS,
  FIELD_VALUE,
  findHeadEnd,
  LAST_CHUNK,
  latin1,
  latin1Into,
  TOKEN,
  trimOws,
} from "./wire.ts";

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

/**
 * What went wrong talking to the app: `connect` (nothing accepted the connection), `timeout` (no
 * response head in time), `protocol` (the app's answer is not valid HTTP/1.1), `reset` (the
 * connection closed or failed before the response was complete).
 */
export type UpstreamErrorKind = "connect" | "timeout" | "protocol" | "reset";

/** A failure of the connection to the app. The message is for logs, never for clients. */
export class UpstreamError extends DeployParadigmError {
  /** What kind of failure it is. */
  readonly kind: UpstreamErrorKind;

  constructor(kind: UpstreamErrorKind, message: string, options: { cause?: unknown } = {}) {
    super(message, options);
    this.kind = kind;
  }
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

/** What a response head says (see {@link parseResponseHead}). */
export interface ResponseHead {
  status: number;
  statusText: string;
  /** The header fields in order, flat: name, value, name, value, ... (values without surrounding whitespace). */
  fields: string[];
  /** How the body is delimited. */
  framing: "none" | "length" | "chunked" | "close";
  /** The Content-Length when `framing` is `length`, else 0. */
  length: number;
  /** Whether the connection may carry another request once this response is read. */
  keepAlive: boolean;
}

const HEAD_BUFFER = 16 * 1024;
/** Writes up to OUTPUT_MAX bytes are encoded into a buffer kept per connection (at least OUTPUT_MIN). */
const OUTPUT_MIN = 4096;
const OUTPUT_MAX = 64 * 1024;
const BODY_BUFFER = 64 * 1024;
/** A request body up to this size goes in the same write as the head. */
const INLINE_BODY_MAX = 64 * 1024;
/** A streamed request chunk up to this size goes in one write with its framing. */
const INLINE_CHUNK_MAX = 16 * 1024;
/** Most interim (1xx) responses accepted before the final one. */
const MAX_INTERIM = 16;
/** Longest chunk-size line (with extensions). */
const MAX_CHUNK_LINE = 4096;
/** Header timeouts and idle connections are checked this often (within these bounds, from the options). */
const MIN_TICK_MS = 5;
const MAX_TICK_MS = 1000;
const CR = 13;
const LF = 10;
const TARGET = /^\/[\x21-\x7e]*$/;
const STATUS_LINE = /^HTTP\/1\.([01]) ([0-9]{3})(?: (.*))?$/;
/** A reason phrase: HTAB, SP, VCHAR, obs-text. */
const REASON = /^[\t -~\x80-\xff]*$/;
const HEX = /^[0-9a-fA-F]{1,12}$/;
/** Methods that get `content-length: 0` without a body (as fetch does), so the app need not wait for one. */
const LENGTH_WITHOUT_BODY = new Set(["POST", "PUT", "PATCH"]);
const DROPPED_REQUEST_HEADERS = new Set(["content-length", "transfer-encoding", "connection"]);
/** The lengths of the response field names parseResponseHead acts on (hop-by-hop ones, Content-Length). */
const ACTED_ON_LENGTHS = new Set([2, 7, 10, 14, 16, 17]);
/** Response fields that describe the connection to the app, not the answer (RFC 9110 §7.6.1). */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);
const encoder = new TextEncoder();

/** A reused connection that failed before any byte of the response: the app had closed it. */
class StaleConnection extends Error {
  /** Whether the whole request had been written: then the app may have acted on it. */
  written = false;
}

/** Methods that may be sent twice (RFC 9110 §9.2.2): only these are retried after the request was written. */
const IDEMPOTENT = new Set(["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]);

/** The `next` of an exchange whose body was read whole. */
const ended = () => Promise.resolve(null);

/** Pooled HTTP/1.1 connections to apps on 127.0.0.1, by port. */
export class UpstreamPool {
  readonly #maxIdle: number;
  readonly #unrefIdle: boolean;
  readonly #idleMs: number;
  readonly #headerTimeoutMs: number;
  readonly #maxHeaderBytes: number;
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

/** The pool as a {@link Call} sees it. */
interface Slots {
  /** An idle connection to `port`, taken out of the pool. */
  take(port: number): Connection | undefined;
  /** Gives a connection whose exchange ended cleanly back to the pool (or closes it). */
  release(conn: Connection): void;
  connect(port: number): Promise<Connection>;
  /** Starts the header timeout of `call` (it is checked on the pool's tick). */
  watch(call: Call): void;
  unwatch(call: Call): void;
  readonly headerTimeoutMs: number;
  readonly maxHeaderBytes: number;
}

/**
 * One connection with its read buffer (bytes `start` to `end` are read but not used yet): to an
 * app, or (./h1.ts) from a client.
 */
export class Connection {
  buf: Uint8Array<ArrayBuffer>;
  start = 0;
  end = 0;
  closed = false;
  idle = false;
  /** `performance.now()` when it was parked. */
  idleSince = 0;
  /** The read left pending while idle; the next exchange takes it over. */
  #pending: Promise<number | null | Error> | null = null;

  constructor(
    readonly tcp: Deno.Conn,
    readonly port: number,
    readonly onClose: (conn: Connection) => void,
    size = HEAD_BUFFER,
    readonly bodySize = BODY_BUFFER,
  ) {
    this.buf = new Uint8Array(size);
  }

  /** Gives back buffers that grew past `above` (a large head) for one of `size`: idle connections stay small. */
  shrink(size: number, above: number): void {
    if (this.#out && this.#out.length > above) this.#out = undefined;
    if (this.buf.length <= above || this.buffered > size) return;
    const small = new Uint8Array(size);
    small.set(this.buf.subarray(this.start, this.end));
    this.end -= this.start;
    this.start = 0;
    this.buf = small;
  }

  get buffered(): number {
    return this.end - this.start;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.idle = false;
    try {
      this.tcp.close();
    } catch { /* already closed */ }
    this.onClose(this);
  }

  /** Makes it idle: a read stays pending (EOF = the app closed it) without keeping the process alive. */
  park(unref: boolean): void {
    this.idle = true;
    this.#unrefd = unref;
    this.idleSince = performance.now();
    this.start = this.end = 0;
    if (this.buf.length !== HEAD_BUFFER) this.buf = new Uint8Array(HEAD_BUFFER);
    // Anything (EOF, an error, stray bytes) while idle: the connection is done.
    this.#pending = this.tcp.read(this.buf).then((n) => {
      if (this.idle) this.close();
      return n;
    }, (error) => {
      if (this.idle) this.close();
      return error instanceof Error ? error : new Error(String(error));
    });
    if (unref) this.tcp.unref();
  }

  /** Takes it out of the pool. */
  wake(): void {
    this.idle = false;
    if (this.#unrefd) this.tcp.ref();
  }

  #unrefd = false;

  /** Writes all of `bytes`. */
  async write(bytes: Uint8Array): Promise<void> {
    for (let done = await this.tcp.write(bytes); done < bytes.length;) {
      done += await this.tcp.write(bytes.subarray(done));
    }
  }

  /**
   * Reads once more into the buffer (compacting it, or growing it up to `limit` bytes when it
   * is full). False at EOF; throws what the socket throws.
   */
  async fill(limit: number): Promise<boolean> {
    let n: number | null | Error;
    if (this.#pending) {
      n = await this.#pending;
      this.#pending = null;
      if (n instanceof Error) throw n;
    } else {
      if (this.start === this.end) this.start = this.end = 0;
      else if (this.end === this.buf.length) {
        if (this.start > 0) {
          this.buf.copyWithin(0, this.start, this.end);
          this.end -= this.start;
          this.start = 0;
        } else {
          if (this.buf.length >= limit) throw new UpstreamError("protocol", "the read buffer is full");
          const bigger = new Uint8Array(Math.min(limit, this.buf.length * 2));
          bigger.set(this.buf);
          this.buf = bigger;
        }
      }
      n = await this.tcp.read(this.end ? this.buf.subarray(this.end) : this.buf);
    }
    if (n === null) return false;
    this.end += n;
    return true;
  }

  /** Uses the body buffer size from now on (when nothing is buffered). */
  forBody(): void {
    if (this.start === this.end && this.buf.length < this.bodySize) {
      this.buf = new Uint8Array(this.bodySize);
      this.start = this.end = 0;
    }
  }

  /**
   * Reads until a whole head (lines up to an empty line) is buffered and returns its text without
   * the empty line, consumed; null at EOF before one. Throws what the socket throws, or
   * {@link UpstreamError} `protocol` past `max` bytes. `partial` runs after a read that left only
   * part of a head.
   */
  async readHead(max: number, partial?: () => void): Promise<string | null> {
    let end = findHeadEnd(this.buf, this.start, this.start, this.end);
    while (end < 0) {
      if (this.buffered > max) throw new UpstreamError("protocol", `a head larger than ${max} bytes`);
      const scanned = Math.max(0, this.buffered - 3);
      if (!(await this.fill(max + 4))) return null;
      end = findHeadEnd(this.buf, this.start, this.start + scanned, this.end);
      if (end < 0 && this.buffered) partial?.();
    }
    if (end - this.start > max + 4) throw new UpstreamError("protocol", `a head larger than ${max} bytes`);
    let stop = end;
    while (stop > this.start && (this.buf[stop - 1] === LF || this.buf[stop - 1] === CR)) stop--;
    const text = latin1(this.buf, this.start, stop);
    this.start = end;
    return text;
  }

  /** The next `n` buffered bytes, consumed: a copy, or with `view` the buffer's own (valid until the next read). */
  take(n: number, view = false): Uint8Array<ArrayBuffer> {
    const bytes = view ? this.buf.subarray(this.start, this.start + n) : this.buf.slice(this.start, this.start + n);
    this.start += n;
    return bytes;
  }

  /** A buffer to write from, reused (a write must end before the next use). */
  output(size: number): Uint8Array<ArrayBuffer> {
    if (size > OUTPUT_MAX) return new Uint8Array(size);
    if (!this.#out || this.#out.length < size) this.#out = new Uint8Array(Math.max(size, OUTPUT_MIN));
    return this.#out;
  }

  #out?: Uint8Array<ArrayBuffer>;

  /** The buffered line up to CRLF (consumed, without it), or null when no whole line is buffered. */
  line(max: number): string | null {
    const lf = this.buf.subarray(0, this.end).indexOf(LF, this.start);
    if (lf < 0) {
      if (this.buffered > max) throw new UpstreamError("protocol", "a chunked body line is too long");
      return null;
    }
    if (lf - this.start > max || lf === this.start || this.buf[lf - 1] !== CR) {
      throw new UpstreamError("protocol", "malformed line in a chunked body");
    }
    const text = latin1(this.buf, this.start, lf - 1);
    this.start = lf + 1;
    return text;
  }
}

/** How a body is taken off the connection. */
export class BodyDecoder {
  done = false;
  #remaining: number;
  /** Chunked: what comes next. */
  #state: "size" | "data" | "crlf" | "trailers" = "size";

  constructor(
    readonly conn: Connection,
    readonly framing: "length" | "chunked" | "close",
    length: number,
    readonly peer = "the app",
  ) {
    this.#remaining = length;
    if (framing === "length" && length === 0) this.done = true;
  }

  /**
   * Moves what is already buffered into `out`, without reading from the socket: copies, or with
   * `view` the connection buffer's own bytes (valid until its next read).
   */
  decodeBuffered(out: Uint8Array<ArrayBuffer>[], view = false): void {
    const conn = this.conn;
    if (this.framing === "close") {
      if (conn.buffered) out.push(conn.take(conn.buffered, view));
      return;
    }
    if (this.framing === "length") {
      const n = Math.min(conn.buffered, this.#remaining);
      if (n === 0) return;
      out.push(conn.take(n, view));
      this.#remaining -= n;
      this.done = this.#remaining === 0;
      return;
    }
    while (!this.done) {
      if (this.#state === "data") {
        const n = Math.min(conn.buffered, this.#remaining);
        if (n === 0) return;
        out.push(conn.take(n, view));
        this.#remaining -= n;
        if (this.#remaining === 0) this.#state = "crlf";
      } else if (this.#state === "crlf") {
        if (conn.buffered < 2) return;
        if (conn.buf[conn.start] !== CR || conn.buf[conn.start + 1] !== LF) {
          throw new UpstreamError("protocol", "a chunk does not end with CRLF");
        }
        conn.start += 2;
        this.#state = "size";
      } else if (this.#state === "size") {
        const line = conn.line(MAX_CHUNK_LINE);
        if (line === null) return;
        const semicolon = line.indexOf(";");
        const size = (semicolon < 0 ? line : line.slice(0, semicolon)).trimEnd();
        if (!HEX.test(size)) throw new UpstreamError("protocol", "malformed chunk size");
        this.#remaining = parseInt(size, 16);
        this.#state = this.#remaining === 0 ? "trailers" : "data";
      } else {
        const line = conn.line(MAX_CHUNK_LINE);
        if (line === null) return;
        if (line === "") this.done = true; // trailer fields are dropped
      }
    }
  }

  /** Reads from the socket once. */
  async readMore(): Promise<void> {
    this.conn.forBody();
    if (await this.conn.fill(this.conn.bodySize)) return;
    if (this.framing !== "close") {
      throw new UpstreamError("reset", `${this.peer} closed the connection in the middle of a body`);
    }
    this.done = true;
  }
}

function stale(why: string, written: boolean): StaleConnection {
  const error = new StaleConnection(why);
  error.written = written;
  return error;
}

/** One request: its connection attempts, header timeout, abort, request body pump and response body. */
class Call {
  readonly #slots: Slots;
  readonly #port: number;
  readonly #req: UpstreamRequest;
  #conn?: Connection;
  /** Set by a timeout, an abort or a failing request body: what the request (or its body) fails with. */
  #failure?: unknown;
  #failed?: PromiseWithResolvers<never>;
  /** `performance.now()` by which the response head must have arrived. */
  deadline: number;
  #headArrived = false;
  /** The head was handed out and the body is still being read. */
  #streaming = false;
  #ended = false;
  /** Request body stream: its reader, whether it ended, and the pump (true once the body was sent in full). */
  #reader?: ReadableStreamDefaultReader<Uint8Array>;
  #sourceDone = false;
  #pump?: Promise<boolean>;
  #pumpResult?: boolean;

  constructor(slots: Slots, port: number, req: UpstreamRequest) {
    this.#slots = slots;
    this.#port = port;
    this.#req = req;
    this.deadline = performance.now() + slots.headerTimeoutMs;
  }

  async run(): Promise<Exchange> {
    const { body, signal } = this.#req;
    const encoded = encodeRequest(this.#port, this.#req);
    const replayable = !(body instanceof ReadableStream);
    this.#slots.watch(this);
    signal?.addEventListener("abort", this.#onAbort);
    try {
      let conn = this.#slots.take(this.#port);
      let retried = false;
      while (true) {
        const reused = conn !== undefined;
        conn ??= await this.#connect();
        this.#conn = conn;
        try {
          return await this.#exchange(conn, reused, encoded);
        } catch (error) {
          this.#stopPump();
          conn.close();
          if (this.#failure !== undefined) throw this.#failure;
          if (!(error instanceof StaleConnection)) throw error;
          // A POST the app may already have handled is not sent again (as nginx's proxy_next_upstream).
          if (!replayable || retried || (error.written && !IDEMPOTENT.has(this.#req.method))) {
            throw new UpstreamError("reset", "the app closed a kept-alive connection before answering", {
              cause: error,
            });
          }
          retried = true;
          conn = undefined;
        }
      }
    } catch (error) {
      this.#end();
      throw error;
    } finally {
      this.#slots.unwatch(this);
    }
  }

  /** The header timeout is over (it counts from the end of a streamed upload: a slow upload is not the app's fault). */
  expire(): void {
    if (this.#headArrived) return;
    if (this.#req.body instanceof ReadableStream && !this.#sourceDone && this.#pumpResult === undefined) {
      this.deadline = performance.now() + this.#slots.headerTimeoutMs;
      return;
    }
    this.#fail(new UpstreamError("timeout", `no response head within ${this.#slots.headerTimeoutMs} ms`));
  }

  #onAbort = () => this.#fail(abortReason(this.#req.signal!));

  /** Ends the call with `error`: closes the connection; the request or its response body fails with it. */
  #fail(error: unknown): void {
    if (this.#failure !== undefined || this.#ended) return;
    this.#failure = error;
    this.#failed?.reject(error);
    this.#stopPump();
    this.#conn?.close();
    // A body being read fails at its next read (the connection is closed).
    if (this.#streaming) this.#end();
  }

  async #connect(): Promise<Connection> {
    if (this.#failure !== undefined) throw this.#failure;
    this.#failed = Promise.withResolvers<never>();
    this.#failed.promise.catch(() => {});
    const connecting = this.#slots.connect(this.#port);
    try {
      const conn = await Promise.race([connecting, this.#failed.promise]);
      if (this.#failure === undefined) return conn;
      conn.close(); // connected, but the call failed meanwhile
      throw this.#failure;
    } catch (error) {
      connecting.then((late) => late.close(), () => {});
      if (this.#failure !== undefined) throw this.#failure;
      if (error instanceof UpstreamError) throw error;
      throw new UpstreamError("connect", `cannot connect to 127.0.0.1:${this.#port}: ${message(error)}`, {
        cause: error,
      });
    }
  }

  /** Sends the request on `conn` and reads up to the final response head. */
  async #exchange(conn: Connection, reused: boolean, encoded: EncodedRequest): Promise<Exchange> {
    let sent = true;
    try {
      await conn.write(requestBytes(conn, encoded));
      if (encoded.tail) await conn.write(encoded.tail);
    } catch {
      // The app may still have answered (an early 413, then close): the head read tells.
      sent = false;
    }
    const body = this.#req.body;
    if (body instanceof ReadableStream) {
      if (sent) this.#pump = this.#pumpBody(conn, body);
      else this.#pumpResult = false;
    }
    const maxHeaderBytes = this.#slots.maxHeaderBytes;
    let received = false;
    for (let interim = 0;; interim++) {
      let text: string | null;
      try {
        text = await conn.readHead(maxHeaderBytes);
      } catch (error) {
        if (error instanceof UpstreamError) throw error;
        // Nothing at all came back on a reused connection: the app had closed it (see StaleConnection).
        if (reused && !received && !conn.buffered) throw stale(message(error), sent);
        throw new UpstreamError("reset", `reading the response head: ${message(error)}`, { cause: error });
      }
      if (text === null) {
        if (reused && !received && !conn.buffered) throw stale("EOF", sent);
        throw new UpstreamError("reset", "the app closed the connection before a complete response head");
      }
      received = true;
      const parsed = parseResponseHead(text, this.#req.method);
      if (parsed.status >= 200) return this.#respond(conn, parsed, sent);
      if (parsed.status === 101) throw new UpstreamError("protocol", "101 Switching Protocols was not asked for");
      if (interim >= MAX_INTERIM) throw new UpstreamError("protocol", "too many interim (1xx) responses");
    }
  }

  /**
   * The exchange for `head`: the body already buffered, decoded (the connection buffer's own
   * bytes when that is all of it: the connection waits for `settle`), the rest read on demand.
   */
  #respond(conn: Connection, head: ResponseHead, sent: boolean): Exchange {
    this.#headArrived = true;
    this.#slots.unwatch(this);
    const keepAlive = head.keepAlive && sent;
    const first: Uint8Array<ArrayBuffer>[] = [];
    const settle = () => this.#finish(conn, keepAlive);
    const cancel = () => this.#finish(conn, false);
    if (head.framing === "none") return { head, first, done: true, next: ended, settle, cancel };
    const decoder = new BodyDecoder(conn, head.framing, head.length);
    decoder.decodeBuffered(first, true);
    if (decoder.done) return { head, first, done: true, next: ended, settle, cancel };
    // More to read: the next read would overwrite what the views show.
    for (let i = 0; i < first.length; i++) first[i] = first[i].slice();
    this.#streaming = true;
    return {
      head,
      first,
      get done() {
        return decoder.done;
      },
      next: () => this.#next(conn, decoder, keepAlive),
      settle: () => {},
      cancel,
    };
  }

  async #next(conn: Connection, decoder: BodyDecoder, keepAlive: boolean): Promise<Uint8Array<ArrayBuffer>[] | null> {
    if (this.#ended) {
      if (this.#failure !== undefined) throw this.#failure;
      return null;
    }
    const out: Uint8Array<ArrayBuffer>[] = [];
    try {
      decoder.decodeBuffered(out);
      while (!out.length && !decoder.done) {
        await decoder.readMore();
        decoder.decodeBuffered(out);
      }
    } catch (error) {
      if (this.#failure !== undefined) throw this.#failure;
      this.#finish(conn, false);
      throw error instanceof UpstreamError
        ? error
        : new UpstreamError("reset", `reading the response body: ${message(error)}`, { cause: error });
    }
    if (this.#failure !== undefined) throw this.#failure;
    if (decoder.done) this.#finish(conn, keepAlive);
    return out.length ? out : null;
  }

  /** The response is over (read to the end when `reusable`): the connection goes back to the pool or is closed. */
  #finish(conn: Connection, reusable: boolean): void {
    if (this.#ended) return;
    this.#end();
    if (!reusable || conn.closed || conn.buffered || this.#pumpResult === false) {
      this.#stopPump();
      conn.close();
    } else if (this.#pump && this.#pumpResult === undefined) {
      // The app answered while the request body was still being sent. Once the whole body was
      // handed over only its last write is left: wait for it. Otherwise the app did not read it all.
      if (!this.#sourceDone) {
        this.#stopPump();
        conn.close();
      } else this.#pump.then((complete) => complete ? this.#slots.release(conn) : conn.close());
    } else this.#slots.release(conn);
  }

  #end(): void {
    this.#ended = true;
    this.#req.signal?.removeEventListener("abort", this.#onAbort);
  }

  /** Sends the request body stream: chunked, or as it is with a Content-Length. True when it was sent in full. */
  async #pumpBody(conn: Connection, body: ReadableStream<Uint8Array>): Promise<boolean> {
    let reader: ReadableStreamDefaultReader<Uint8Array>;
    try {
      reader = this.#reader = body.getReader();
    } catch (error) {
      this.#fail(error);
      return this.#pumpResult = false;
    }
    const length = this.#req.length;
    let sent = 0;
    try {
      while (true) {
        let result: ReadableStreamReadResult<Uint8Array>;
        try {
          result = await reader.read();
        } catch (error) {
          this.#fail(error);
          return this.#pumpResult = false;
        }
        if (this.#reader === undefined) return this.#pumpResult = false; // stopped
        if (result.done) break;
        const chunk = result.value;
        if (!(chunk instanceof Uint8Array)) {
          this.#fail(new TypeError("request body chunks must be Uint8Array"));
          return this.#pumpResult = false;
        }
        sent += chunk.length;
        if (length !== undefined && sent > length) {
          this.#fail(new UpstreamError("protocol", `the request body is longer than its Content-Length ${length}`));
          return this.#pumpResult = false;
        }
        if (chunk.length) await (length === undefined ? writeChunk(conn, chunk) : conn.write(chunk));
      }
      this.#sourceDone = true;
      if (length !== undefined && sent !== length) {
        this.#fail(new UpstreamError("protocol", `the request body ended at ${sent} of its ${length} bytes`));
        return this.#pumpResult = false;
      }
      if (length === undefined) await conn.write(LAST_CHUNK);
      return this.#pumpResult = true;
    } catch {
      // A failed write: the connection is gone, the response side reports it.
      this.#stopPump();
      return this.#pumpResult = false;
    }
  }

  #stopPump(): void {
    const reader = this.#reader;
    if (!reader) return;
    this.#reader = undefined;
    if (this.#pumpResult === undefined && !this.#sourceDone) reader.cancel().catch(() => {});
  }
}

/**
 * Parses a response head: the status line and header lines separated by CRLF, without the empty
 * line that ends it. Decides the body framing for a request with `method`. Throws
 * {@link UpstreamError} `protocol` when it is not valid HTTP/1.x.
 */
export function parseResponseHead(text: string, method: string): ResponseHead {
  const lines = text.split("\n");
  const first = lines[0].endsWith("\r") ? lines[0].slice(0, -1) : lines[0];
  const match = STATUS_LINE.exec(first);
  if (!match) throw new UpstreamError("protocol", `malformed status line ${JSON.stringify(first.slice(0, 100))}`);
  const http11 = match[1] === "1";
  const status = Number(match[2]);
  const statusText = match[3] ?? "";
  if (status < 100 || status > 599) throw new UpstreamError("protocol", `status ${status} is out of range`);
  if (!REASON.test(statusText)) throw new UpstreamError("protocol", "control characters in the reason phrase");
  const fields: string[] = [];
  let length: string | undefined;
  let transferEncoding: string | undefined;
  let close = !http11;
  let named: Set<string> | undefined;
  for (let i = 1; i < lines.length; i++) {
    const raw = lines[i];
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw; // CRLF, or a bare LF
    const colon = line.indexOf(":");
    // An empty name, whitespace before the colon and obs-fold (a leading space) fail as invalid names later.
    if (colon <= 0) throw new UpstreamError("protocol", `malformed header line ${JSON.stringify(line.slice(0, 100))}`);
    const name = line.slice(0, colon);
    const value = trimOws(line, colon + 1);
    // What the client would read differently (a bare CR, a NUL, a space in a name) never passes on.
    if (!TOKEN.test(name) || !FIELD_VALUE.test(value)) {
      throw new UpstreamError("protocol", `invalid header field ${JSON.stringify(line.slice(0, 100))}`);
    }
    // Only names as long as one the proxy acts on are lowercased (the rest pass as they are).
    const lower = ACTED_ON_LENGTHS.has(name.length) ? name.toLowerCase() : "";
    // Hop-by-hop fields are this connection's, never the client's: the Response carries none.
    if (!HOP_BY_HOP.has(lower)) fields.push(name, value);
    switch (lower) {
      case "connection":
        for (const token of value.split(",")) {
          const option = token.trim().toLowerCase();
          if (option === "close") close = true;
          else if (option && option !== "keep-alive") (named ??= new Set()).add(option);
        }
        break;
      case "content-length":
        if (length === undefined && DIGITS.test(value)) {
          length = value;
          break;
        }
        for (const part of value.split(",")) {
          const digits = part.trim();
          if (!DIGITS.test(digits) || (length !== undefined && length !== digits)) {
            throw new UpstreamError("protocol", `invalid Content-Length ${JSON.stringify(value.slice(0, 100))}`);
          }
          length = digits;
        }
        break;
      case "transfer-encoding":
        transferEncoding = transferEncoding === undefined ? value : `${transferEncoding},${value}`;
        break;
    }
  }
  let framing: ResponseHead["framing"];
  if (method === "HEAD" || status < 200 || status === 204 || status === 304) framing = "none";
  else if (status === 205) {
    // No content allowed (nor possible in a Response), whatever the framing says: the connection goes.
    framing = "none";
    close = true;
  } else if (transferEncoding !== undefined) {
    // Only chunked is relayed (decoded, then chunked again for the client): another coding would
    // reach the client unlabelled once the hop-by-hop Transfer-Encoding is dropped.
    if (transferEncoding.trim().toLowerCase() !== "chunked") {
      throw new UpstreamError("protocol", `Transfer-Encoding ${JSON.stringify(transferEncoding.slice(0, 50))}`);
    }
    framing = "chunked";
  } else framing = length !== undefined ? "length" : "close";
  let kept = fields;
  const both = transferEncoding !== undefined && length !== undefined;
  const reset = status === 205;
  if (both || named || reset) {
    // Both: Transfer-Encoding wins, Content-Length goes, and the connection gets no other request.
    // Fields named by Connection are hop-by-hop too. A 205 has no body whatever it says: length 0.
    kept = [];
    for (let i = 0; i < fields.length; i += 2) {
      const lower = fields[i].toLowerCase();
      if (((both || reset) && lower === "content-length") || named?.has(lower)) continue;
      kept.push(fields[i], fields[i + 1]);
    }
    if (reset) kept.push("Content-Length", "0");
    if (both) close = true;
  }
  return {
    status,
    statusText,
    fields: kept,
    framing,
    length: framing === "length" ? Number(length) : 0,
    keepAlive: !close && framing !== "close",
  };
}

/** The request head (with a small body) and what to write after it. */
/** A request as text (its head), a small body to send with it, and a larger one to send after. */
interface EncodedRequest {
  text: string;
  inline: Uint8Array | null;
  tail: Uint8Array | null;
}

function encodeRequest(port: number, req: UpstreamRequest): EncodedRequest {
  const body = req.body;
  let text = `${req.method} ${req.path} HTTP/1.1\r\n`;
  if (typeof req.headers === "string") text += req.headers;
  else {
    let host = false;
    // forEach, not for-of: same pairs (sorted, combined, Set-Cookie apart), several times cheaper.
    req.headers.forEach((value, name) => {
      if (DROPPED_REQUEST_HEADERS.has(name)) return;
      if (name === "host") host = true;
      text += `${name}: ${value}\r\n`;
    });
    if (!host) text += `host: 127.0.0.1:${port}\r\n`;
  }
  if (body instanceof Uint8Array) text += `content-length: ${body.length}\r\n\r\n`;
  else if (body) {
    text += req.length !== undefined ? `content-length: ${req.length}\r\n\r\n` : "transfer-encoding: chunked\r\n\r\n";
  } else text += LENGTH_WITHOUT_BODY.has(req.method) ? "content-length: 0\r\n\r\n" : "\r\n";
  const inline = body instanceof Uint8Array && body.length <= INLINE_BODY_MAX ? body : null;
  return { text, inline, tail: body instanceof Uint8Array && !inline ? body : null };
}

/** The request head (and small body) of `encoded`, in `conn`'s output buffer. */
function requestBytes(conn: Connection, encoded: EncodedRequest): Uint8Array {
  const { text, inline } = encoded;
  const out = conn.output(text.length + (inline?.length ?? 0));
  const n = latin1Into(text, out);
  if (inline) out.set(inline, n);
  return out.subarray(0, n + (inline?.length ?? 0));
}

/** Writes one chunk of a chunked body. */
async function writeChunk(conn: Connection, chunk: Uint8Array): Promise<void> {
  const size = `${chunk.length.toString(16)}\r\n`;
  if (chunk.length > INLINE_CHUNK_MAX) {
    await conn.write(encoder.encode(size));
    await conn.write(chunk);
    await conn.write(LAST_CHUNK.subarray(3));
    return;
  }
  await conn.write(chunked(chunk));
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

function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException("The request was aborted", "AbortError");
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
