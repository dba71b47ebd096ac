/**
 * One HTTP/1.1 connection as both sides of the proxy use it: a socket with its read buffer (heads
 * found by a byte scan, lines, a reused output buffer), the {@link BodyDecoder} that takes a
 * Content-Length, chunked or close-delimited body off it, and {@link UpstreamError}, what a failure
 * of a connection to an app is. The pool (./upstream.ts) holds connections to apps; ./h1.ts serves
 * one from a client.
 * @module
 */
import { DeployParadigmError } from "../errors.ts";
import { findHeadEnd, latin1 } from "./wire.ts";

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

const HEAD_BUFFER = 16 * 1024;
/** Writes up to OUTPUT_MAX bytes are encoded into a buffer kept per connection (at least OUTPUT_MIN). */
const OUTPUT_MIN = 4096;
const OUTPUT_MAX = 64 * 1024;
const BODY_BUFFER = 64 * 1024;
/** Longest chunk-size line (with extensions). */
const MAX_CHUNK_LINE = 4096;
/** Most bytes of trailer fields after a chunked body (they are dropped; without a bound, a peer could send them for ever). */
export const MAX_TRAILER_BYTES = 16 * 1024;
const CR = 13;
const LF = 10;
/** A chunk size and the spaces or tabs after it (anchored at the start: linear, whatever the line). */
const CHUNK_SIZE = /^([0-9a-fA-F]{1,12})[ \t]*$/;

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
  /** Trailer bytes read so far (each line with its line end). */
  #trailerBytes = 0;

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
        // chunk-size, then spaces or tabs only (RFC 9112 §7.1.1's BWS), then extensions; no CR anywhere.
        const semicolon = line.indexOf(";");
        const size = CHUNK_SIZE.exec(semicolon < 0 ? line : line.slice(0, semicolon))?.[1];
        if (size === undefined || line.includes("\r")) throw new UpstreamError("protocol", "malformed chunk size");
        this.#remaining = parseInt(size, 16);
        this.#state = this.#remaining === 0 ? "trailers" : "data";
      } else {
        const line = conn.line(MAX_CHUNK_LINE);
        if (line === null) return;
        if (line === "") this.done = true; // trailer fields are dropped
        else if ((this.#trailerBytes += line.length + 2) > MAX_TRAILER_BYTES) {
          throw new UpstreamError("protocol", `the trailer fields are over ${MAX_TRAILER_BYTES} bytes`);
        }
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
