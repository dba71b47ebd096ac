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
 *   {@link DATA_BUDGET}. A client sending its body in frames of a few bytes is cut after a few
 *   thousand of them; any client sending ordinary frames never is.
 * Only frame headers are read (9 bytes each), never payloads: the bytes pass on unchanged.
 * @module
 */

/** The client connection preface (RFC 9113 §3.4), passed on before the first frame. */
const PREFACE_LENGTH = 24;
const FRAME_HEADER = 9;
const DATA = 0;
const END_STREAM = 0x1;
const PADDED = 0x8;
/** Empty DATA frames without END_STREAM a connection may send (as h2 0.4.16's limit). */
export const MAX_EMPTY_DATA = 100;
/** DATA frames smaller than this (payload bytes) spend budget (as h2 0.4.16's overhead threshold). */
export const SMALL_FRAME = 256;
/** The budget of a connection, at start and at most. */
export const DATA_BUDGET = 1024 * 1024;

/** Follows the frames of one client→server byte stream; `feed` says why to close it, if it must. */
export class FrameGuard {
  /** Bytes of the preface not seen yet. */
  #preface = PREFACE_LENGTH;
  /** The frame header being read (it may arrive in pieces). */
  readonly #header = new Uint8Array(FRAME_HEADER);
  #headerBytes = 0;
  /** Payload bytes of the current frame still to skip. */
  #skip = 0;
  #empty = 0;
  #budget = DATA_BUDGET;

  /** Takes the next bytes the client sent: undefined while they are fine, else why the connection must go. */
  feed(bytes: Uint8Array): string | undefined {
    let at = 0;
    if (this.#preface) {
      const n = Math.min(this.#preface, bytes.length);
      this.#preface -= n;
      at = n;
    }
    while (at < bytes.length) {
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
      this.#skip = length;
      if (h[3] !== DATA || h[4] & END_STREAM) continue;
      // Padding is no data: a padded frame is counted by what it would carry at most.
      const data = h[4] & PADDED ? Math.max(0, length - 1) : length;
      if (data === 0 && ++this.#empty > MAX_EMPTY_DATA) return `more than ${MAX_EMPTY_DATA} empty DATA frames`;
      this.#budget = Math.min(DATA_BUDGET, this.#budget + data) - Math.max(0, SMALL_FRAME - data);
      if (this.#budget < 0) return "too many small DATA frames";
    }
    return undefined;
  }
}

/** Bytes of the token that opens each loopback connection. */
const TOKEN_BYTES = 16;
/** How long an accepted loopback connection has to send its token. */
const TOKEN_MS = 1000;
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
    this.#claims.set(key, resolve);
    const timer = setTimeout(() => reject(new Error("the loopback connection was not accepted")), TOKEN_MS);
    let ours: Deno.TcpConn | undefined;
    try {
      ours = await Deno.connect({ hostname: "127.0.0.1", port: (listener.addr as Deno.NetAddr).port });
      ours.setNoDelay(true);
      await ours.write(token);
      return [ours, await theirs];
    } catch (error) {
      if (ours) close(ours);
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
    for (const conn of this.#pending) close(conn);
    this.#pending.clear();
  }

  #open(): Deno.TcpListener {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    (async () => {
      for await (const conn of listener) this.#claim(conn);
    })().catch(() => {});
    return listener;
  }

  /** Reads the token of an accepted connection and hands it to the pair waiting for it, or closes it. */
  async #claim(conn: Deno.Conn): Promise<void> {
    if (this.#pending.size >= MAX_PENDING) {
      const oldest = this.#pending.values().next().value!;
      this.#pending.delete(oldest);
      close(oldest);
    }
    this.#pending.add(conn);
    const token = new Uint8Array(TOKEN_BYTES);
    const timer = setTimeout(() => close(conn), TOKEN_MS);
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
      close(conn);
    } finally {
      clearTimeout(timer);
      this.#pending.delete(conn);
    }
  }
}

function close(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch { /* closed */ }
}

/**
 * Copies `from` to `to` until either ends (then both are closed), each read written in full before
 * the next one (backpressure); with `guard`, the bytes are checked first and `refused` hears why
 * a connection was cut.
 */
export async function pump(
  from: Deno.Conn,
  to: Deno.Conn,
  guard?: FrameGuard,
  refused?: (why: string) => void,
): Promise<void> {
  const buf = new Uint8Array(16 * 1024);
  try {
    for (let n; (n = await from.read(buf)) !== null;) {
      const bytes = buf.subarray(0, n);
      const why = guard?.feed(bytes);
      if (why) {
        refused?.(why);
        break;
      }
      for (let done = 0; done < n;) done += await to.write(bytes.subarray(done));
    }
  } catch { /* either side closed */ }
  close(from);
  close(to);
}
