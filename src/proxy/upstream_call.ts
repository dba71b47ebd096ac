/**
 * One request through the pool (./upstream.ts): the request encoded (./request_encoding.ts: its
 * head and a small body in one write), the connection taken or made, one retry when a kept-alive
 * connection turns out closed, the header timeout, abort, the request body pumped with
 * backpressure, and the response body read on demand until the connection goes back to the pool
 * or is closed.
 * @module
 */
import { BodyDecoder, type Connection, UpstreamError } from "./connection.ts";
import { message } from "./pages.ts";
import { type EncodedRequest, encodeRequest, requestBytes, writeChunk } from "./request_encoding.ts";
import { parseResponseHead, type ResponseHead } from "./response_head.ts";
import type { Exchange, UpstreamRequest } from "./upstream.ts";
import { LAST_CHUNK } from "./wire.ts";

/** Most interim (1xx) responses accepted before the final one. */
const MAX_INTERIM = 16;

const CLOSED_BEFORE_HEAD = "the app closed the connection before a complete response head";

/** A reused connection that failed before any byte of the response: the app had closed it. */
class StaleConnection extends Error {
  /** Whether the whole request had been written: then the app may have acted on it. */
  written = false;
}

/**
 * A fresh connection the app took but closed or reset before any byte of an answer: for a
 * balanced target (./balance.ts), the request may go to another instance when `replayable`
 * (its body is not a stream) and either not `written` in full or idempotent.
 */
export class Unanswered extends UpstreamError {
  constructor(message: string, readonly written: boolean, readonly replayable: boolean, options?: { cause?: unknown }) {
    super("reset", message, options);
  }
}

/** Methods that may be sent twice (RFC 9110 §9.2.2): only these are retried after the request was written. */
export const IDEMPOTENT = new Set(["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]);

/** The `next` of an exchange whose body was read whole. */
const ended = () => Promise.resolve(null);

/** The pool as a {@link Call} sees it. */
export interface Slots {
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
 * The failure of a fresh connection that gave no response head: {@link Unanswered} when nothing
 * at all came back (a stream body is not replayable: it may have been read in part).
 * A function, not a private method: that would add a brand to every {@link Call}.
 */
function noHead(why: string, answered: boolean, sent: boolean, req: UpstreamRequest, cause?: unknown): UpstreamError {
  if (answered) return new UpstreamError("reset", why, { cause });
  return new Unanswered(why, sent, !(req.body instanceof ReadableStream), { cause });
}

function stale(why: string, written: boolean): StaleConnection {
  const error = new StaleConnection(why);
  error.written = written;
  return error;
}

/** One request: its connection attempts, header timeout, abort, request body pump and response body. */
export class Call {
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
        throw noHead(
          `reading the response head: ${message(error)}`,
          received || conn.buffered > 0,
          sent,
          this.#req,
          error,
        );
      }
      if (text === null) {
        if (reused && !received && !conn.buffered) throw stale("EOF", sent);
        throw noHead(CLOSED_BEFORE_HEAD, received || conn.buffered > 0, sent, this.#req);
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

export function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException("The request was aborted", "AbortError");
}
