/**
 * HTTP/2 frames checked before Deno's HTTP server reads them. Deno 2.9.6's server (hyper on h2
 * 0.4.7) queues every DATA frame a client sends, empty ones too, until its connection ends:
 * about 230 bytes each, so 9 bytes on the wire grow the proxy by 230 (measured: +244 MiB for
 * 1,000,000 empty frames; RUSTSEC-2026-0258 / GHSA-q83h-524g-xf6h, fixed in h2 0.4.16, which no
 * Deno on npm ships yet). The proxy therefore stands between the TLS connection and that server
 * (./listener.ts): it reads the client's bytes itself, passes them on over a loopback connection,
 * and closes a connection whose DATA frames cost more to keep than they carry, as h2 0.4.16 does:
 * - more than {@link MAX_EMPTY_DATA} empty DATA frames that do not end their stream;
 * - small DATA frames beyond a budget: each one under {@link SMALL_FRAME} bytes that does not end
 *   its stream spends what it is short of them, payload bytes earn budget back, up to
 *   {@link DATA_BUDGET}, and so does the end of a stream, what its frames spent. A client sending
 *   one body in frames of a few bytes is cut after a few thousand of them; a client sending
 *   ordinary frames, or small requests one after another for ever, never is.
 * Only frame headers are read (9 bytes each), never payloads: the bytes pass on unchanged.
 *
 * The guard also tells which streams the client opens and which it resets (RST_STREAM), for
 * {@link StreamOrder}.
 * @module
 */

/** The client connection preface (RFC 9113 §3.4): anything else (HTTP/1.1 sent after ALPN chose h2) is cut. */
const PREFACE = new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
const FRAME_HEADER = 9;
const DATA = 0;
const HEADERS = 1;
const RST_STREAM = 3;
const END_STREAM = 0x1;
const PADDED = 0x8;
/** Empty DATA frames without END_STREAM a connection may have sent on streams still open (as h2 0.4.16's limit). */
export const MAX_EMPTY_DATA = 100;
/** DATA frames smaller than this (payload bytes) spend budget (as h2 0.4.16's overhead threshold). */
export const SMALL_FRAME = 256;
/** The budget of a connection, at start and at most. */
export const DATA_BUDGET = 1024 * 1024;
/** Streams with small DATA frames counted at once: more is no client's need (browsers open 100 at most). */
export const MAX_COUNTED_STREAMS = 1024;

/** What a {@link FrameGuard} tells of the client's streams: each it opens (its first HEADERS frame), in order, and each it resets. */
export interface StreamEvents {
  opened(stream: number): void;
  reset(stream: number): void;
}

/** What the small and empty DATA frames of one open stream spent (given back when it ends). */
interface Spent {
  budget: number;
  empty: number;
}

/**
 * Follows the frames of one client→server byte stream; `feed` says why to close it, if it must.
 * What a stream's frames spent is given back when the stream ends (DATA or HEADERS with
 * END_STREAM, RST_STREAM): the server frees its frames then, and a client that sends many small
 * requests (or a body in two frames, the last one empty) over a long-lived connection is never cut.
 */
export class FrameGuard {
  readonly #streams?: StreamEvents;
  /** The highest stream the client opened. */
  #last = 0;
  /** Bytes of the preface seen so far. */
  #preface = 0;
  /** The frame header being read (it may arrive in pieces). */
  readonly #header = new Uint8Array(FRAME_HEADER);
  #headerBytes = 0;
  /** Payload bytes of the current frame still to skip. */
  #skip = 0;
  /** A padded DATA frame whose pad length (its first payload byte) is not read yet: its stream and length. */
  #padded?: { stream: number; length: number };
  #empty = 0;
  #budget = DATA_BUDGET;
  readonly #spent = new Map<number, Spent>();

  constructor(streams?: StreamEvents) {
    this.#streams = streams;
  }

  /** Takes the next bytes the client sent: undefined while they are fine, else why the connection must go. */
  feed(bytes: Uint8Array): string | undefined {
    let at = 0;
    while (this.#preface < PREFACE.length && at < bytes.length) {
      if (bytes[at++] !== PREFACE[this.#preface++]) return "no HTTP/2 connection preface";
    }
    while (at < bytes.length) {
      if (this.#padded) {
        const { stream, length } = this.#padded;
        this.#padded = undefined;
        // What is left after the pad length byte and the padding (a pad longer than the frame is the server's error to find).
        const why = this.#data(stream, Math.max(0, length - 1 - bytes[at]));
        if (why) return why;
      }
      if (this.#skip) {
        const n = Math.min(this.#skip, bytes.length - at);
        this.#skip -= n;
        at += n;
        continue;
      }
      const n = Math.min(FRAME_HEADER - this.#headerBytes, bytes.length - at);
      this.#header.set(bytes.subarray(at, at + n), this.#headerBytes);
      this.#headerBytes += n;
      at += n;
      if (this.#headerBytes < FRAME_HEADER) break;
      this.#headerBytes = 0;
      const h = this.#header;
      const length = (h[0] << 16) | (h[1] << 8) | h[2];
      const stream = ((h[5] & 0x7f) << 24 | h[6] << 16 | h[7] << 8 | h[8]) >>> 0;
      this.#skip = length;
      const type = h[3];
      if (type === HEADERS && stream > this.#last) this.#streams?.opened(this.#last = stream);
      else if (type === RST_STREAM) this.#streams?.reset(stream);
      if (type === RST_STREAM || ((type === DATA || type === HEADERS) && h[4] & END_STREAM)) this.#ended(stream);
      else if (type === DATA && h[4] & PADDED && length > 0) this.#padded = { stream, length };
      else if (type === DATA) {
        const why = this.#data(stream, length);
        if (why) return why;
      }
    }
    return undefined;
  }

  /** A DATA frame that does not end `stream`, carrying `data` bytes. */
  #data(stream: number, data: number): string | undefined {
    const cost = Math.max(0, SMALL_FRAME - data);
    this.#budget = Math.min(DATA_BUDGET, this.#budget + data) - cost;
    if (cost === 0) return undefined;
    let spent = this.#spent.get(stream);
    if (!spent) {
      if (this.#spent.size >= MAX_COUNTED_STREAMS) {
        return `small DATA frames on more than ${MAX_COUNTED_STREAMS} streams`;
      }
      this.#spent.set(stream, spent = { budget: 0, empty: 0 });
    }
    spent.budget += cost;
    if (data === 0) {
      spent.empty++;
      if (++this.#empty > MAX_EMPTY_DATA) return `more than ${MAX_EMPTY_DATA} empty DATA frames`;
    }
    return this.#budget < 0 ? "too many small DATA frames" : undefined;
  }

  /** `stream` ended: what its frames spent is given back. */
  #ended(stream: number): void {
    const spent = this.#spent.get(stream);
    if (!spent) return;
    this.#spent.delete(stream);
    this.#budget = Math.min(DATA_BUDGET, this.#budget + spent.budget);
    this.#empty -= spent.empty;
  }
}

/** A request being answered: its stream, whether the client reset it, and what stops its streamed answer. */
export interface Answering {
  stream?: number;
  reset: boolean;
  stop?: () => void;
}

/**
 * The requests of one connection matched to their streams, so that a stream the client resets
 * (RST_STREAM) stops its answer: Deno's server neither cancels a streamed answer's body nor aborts
 * the request's signal then, it keeps reading the body until the connection ends. Requests come in
 * the order their streams opened. A stream reset before its request came may never come (Deno's
 * server drops it, or not, depending on timing), and more than `maxWaiting` streams waiting for
 * their request means some never came: from then on the order is not trusted and nothing is stopped.
 */
export class StreamOrder implements StreamEvents {
  /** Streams opened whose request has not come yet, oldest first. */
  readonly #waiting: number[] = [];
  readonly #answering = new Map<number, Answering>();
  #inOrder = true;

  constructor(readonly maxWaiting: number) {}

  opened(stream: number): void {
    if (this.#inOrder && this.#waiting.push(stream) > this.maxWaiting) this.#inOrder = false;
  }

  reset(stream: number): void {
    if (this.#inOrder && this.#waiting.includes(stream)) this.#inOrder = false;
    const answering = this.#inOrder ? this.#answering.get(stream) : undefined;
    if (!answering) return;
    answering.reset = true;
    answering.stop?.();
  }

  /** The next request has come: its record (with no stream once the order is lost). */
  begin(): Answering {
    const stream = this.#waiting.shift();
    if (stream === undefined) this.#inOrder = false;
    const answering: Answering = { reset: false };
    if (this.#inOrder) this.#answering.set(answering.stream = stream!, answering);
    return answering;
  }

  /** `answering` streams its answer: `stop` ends it if the client resets the stream (or has already). */
  streaming(answering: Answering, stop: () => void): void {
    answering.stop = stop;
    if (answering.reset) stop();
  }

  /** The answer is over. */
  end(answering: Answering): void {
    if (answering.stream !== undefined) this.#answering.delete(answering.stream);
  }
}

/** Bytes of the token that opens each loopback connection. */
const TOKEN_BYTES = 16;
/** How long an accepted loopback connection has to send its token. */
const TOKEN_MS = 1000;
/** Pause after a failed accept on the loopback listener. */
const ACCEPT_RETRY_MS = 10;
/** Accepted loopback connections waiting for their token; past this, the oldest is closed (a local flood). */
const MAX_PENDING = 64;

/**
 * Pairs of connected sockets on 127.0.0.1, one end for the proxy and one for Deno's HTTP server:
 * one listener; the proxy's end first sends a random token, and a connection it accepts is handed
 * out only for a token it is waiting for. Anything else on the machine (an app) that connects is
 * closed, never served; a flood of such connections closes the oldest first, and the proxy's own
 * send their token at once, so they are never the oldest.
 */
export class LoopbackPairs {
  #listener?: Deno.TcpListener;
  readonly #claims = new Map<string, (conn: Deno.Conn) => void>();
  /** Accepted connections whose token is not read yet, oldest first. */
  readonly #pending = new Set<Deno.Conn>();

  /** A connected pair: [the proxy's end, the server's end]. */
  async pair(): Promise<[Deno.TcpConn, Deno.Conn]> {
    const listener = this.#listener ??= this.#open();
    const token = crypto.getRandomValues(new Uint8Array(TOKEN_BYTES));
    const key = token.join(",");
    const { promise: theirs, resolve, reject } = Promise.withResolvers<Deno.Conn>();
    theirs.catch(() => {}); // awaited below, unless the connect fails first
    this.#claims.set(key, resolve);
    let timer: ReturnType<typeof setTimeout> | undefined;
    let ours: Deno.TcpConn | undefined;
    try {
      ours = await Deno.connect({ hostname: "127.0.0.1", port: (listener.addr as Deno.NetAddr).port });
      ours.setNoDelay(true);
      await ours.write(token);
      // From here on only the accept loop can be late (a local flood fills its queue).
      timer = setTimeout(() => reject(new Error("the loopback connection was not accepted")), TOKEN_MS);
      return [ours, await theirs];
    } catch (error) {
      if (ours) closeConn(ours);
      throw error;
    } finally {
      clearTimeout(timer);
      this.#claims.delete(key);
    }
  }

  /** The loopback port, once the first pair was made. */
  get port(): number | undefined {
    return (this.#listener?.addr as Deno.NetAddr | undefined)?.port;
  }

  close(): void {
    try {
      this.#listener?.close();
    } catch { /* closed */ }
    for (const conn of this.#pending) closeConn(conn);
    this.#pending.clear();
  }

  #open(): Deno.TcpListener {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.#accept(listener);
    return listener;
  }

  /** Accepts until the listener is closed; a failed accept (no file descriptor left) is retried shortly after. */
  async #accept(listener: Deno.TcpListener): Promise<void> {
    while (true) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch (error) {
        if (error instanceof Deno.errors.BadResource) break; // closed
        await new Promise((resolve) => setTimeout(resolve, ACCEPT_RETRY_MS));
        continue;
      }
      this.#claim(conn);
    }
    if (this.#listener === listener) this.#listener = undefined;
  }

  /** Reads the token of an accepted connection and hands it to the pair waiting for it, or closes it. */
  async #claim(conn: Deno.Conn): Promise<void> {
    if (this.#pending.size >= MAX_PENDING) {
      const oldest = this.#pending.values().next().value!;
      this.#pending.delete(oldest);
      closeConn(oldest);
    }
    this.#pending.add(conn);
    const token = new Uint8Array(TOKEN_BYTES);
    const timer = setTimeout(() => closeConn(conn), TOKEN_MS);
    try {
      for (let got = 0; got < TOKEN_BYTES;) {
        const n = await conn.read(token.subarray(got));
        if (n === null) throw new Error("closed");
        got += n;
      }
      const claim = this.#claims.get(token.join(","));
      if (!claim) throw new Error("a stranger");
      claim(conn);
    } catch {
      closeConn(conn);
    } finally {
      clearTimeout(timer);
      this.#pending.delete(conn);
    }
  }
}

/** Closes `conn` if it is still open. */
export function closeConn(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch { /* closed */ }
}

/**
 * Copies `from` to `to`, each read written in full before the next one (backpressure), until
 * either fails or is cut (then both are closed) or `from` ends: then `to` is only shut for writing
 * (the client's end of its requests lets the server finish its answers) when `halfClose`, else
 * both are closed. With `guard`, the bytes are checked first and `refused` hears why a connection
 * was cut.
 */
export async function pump(
  from: Deno.Conn,
  to: Deno.Conn,
  options: { guard?: FrameGuard; refused?: (why: string) => void; halfClose?: boolean } = {},
): Promise<void> {
  const buf = new Uint8Array(16 * 1024);
  try {
    for (let n; (n = await from.read(buf)) !== null;) {
      const bytes = buf.subarray(0, n);
      const why = options.guard?.feed(bytes);
      if (why) {
        options.refused?.(why);
        throw new Error(why);
      }
      for (let done = 0; done < n;) done += await to.write(bytes.subarray(done));
    }
    if (options.halfClose) return void await (to as Deno.TcpConn).closeWrite();
  } catch { /* either side closed, or cut */ }
  closeConn(from);
  closeConn(to);
}
