/**
 * Raw HTTP/1.1 over TCP: bytes exactly as a client (or an attacker) sends them, and responses as
 * read off the wire (Content-Length framing, else up to the close).
 * @module
 */

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A response as read off the wire. */
export interface RawResponse {
  status: number;
  headers: Headers;
  body: string;
  /** The head as received (status line and header lines). */
  head: string;
}

/** One client connection to 127.0.0.1. Reads never throw: a reset is a close. */
export class Raw {
  #conn: Deno.TcpConn;
  #buffer = new Uint8Array(0);
  #pending?: Promise<Uint8Array | null>;
  #closed = false;

  private constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
  }

  static async connect(port: number): Promise<Raw> {
    return new Raw(await Deno.connect({ hostname: "127.0.0.1", port }));
  }

  /** The socket. */
  get conn(): Deno.TcpConn {
    return this.#conn;
  }

  /** Writes all of `data`; false when the proxy has closed (or reset) the connection. */
  async send(data: string | Uint8Array): Promise<boolean> {
    const bytes = typeof data === "string" ? encoder.encode(data) : data;
    try {
      for (let at = 0; at < bytes.length;) at += await this.#conn.write(bytes.subarray(at));
      return true;
    } catch {
      return false;
    }
  }

  /** Waits for more bytes until `deadline` (performance.now()). */
  async #more(deadline: number): Promise<"data" | "closed" | "timeout"> {
    if (this.#closed) return "closed";
    const left = deadline - performance.now();
    if (left <= 0) return "timeout";
    if (!this.#pending) {
      const chunk = new Uint8Array(64 * 1024);
      this.#pending = this.#conn.read(chunk).then((n) => n === null ? null : chunk.subarray(0, n), () => null);
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const result = await Promise.race([
      this.#pending,
      new Promise<"timeout">((resolve) => timer = setTimeout(resolve, left, "timeout")),
    ]);
    clearTimeout(timer);
    if (result === "timeout") return "timeout";
    this.#pending = undefined;
    if (result === null) {
      this.#closed = true;
      return "closed";
    }
    const next = new Uint8Array(this.#buffer.length + result.length);
    next.set(this.#buffer);
    next.set(result, this.#buffer.length);
    this.#buffer = next;
    return "data";
  }

  /**
   * The next response (none of a body for 1xx, 204 and 304, or with `head` (the answer to a HEAD),
   * else Content-Length framing, else up to the close); undefined if none came within `ms`. What
   * follows a 101 is kept for {@link bytes}.
   */
  async response(ms = 5000, options: { head?: boolean } = {}): Promise<RawResponse | undefined> {
    const deadline = performance.now() + ms;
    for (;;) {
      const end = findHeadEnd(this.#buffer);
      if (end >= 0) {
        const text = decoder.decode(this.#buffer.subarray(0, end));
        const [statusLine, ...lines] = text.split("\r\n");
        const headers = new Headers();
        for (const line of lines) {
          const colon = line.indexOf(":");
          headers.append(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
        }
        const status = Number(statusLine.split(" ")[1]);
        const bodyless = options.head || status < 200 || status === 204 || status === 304;
        const length = bodyless ? 0 : headers.has("content-length") ? Number(headers.get("content-length")) : undefined;
        const bodyStart = end + 4;
        const complete = () => length === undefined ? this.#closed : this.#buffer.length >= bodyStart + length;
        while (!complete() && (await this.#more(deadline)) === "data");
        if (length !== undefined && !complete()) return undefined;
        const bodyEnd = length === undefined ? this.#buffer.length : bodyStart + length;
        const body = decoder.decode(this.#buffer.subarray(bodyStart, bodyEnd));
        this.#buffer = this.#buffer.slice(bodyEnd);
        return { status, headers, body, head: text };
      }
      if ((await this.#more(deadline)) !== "data") return undefined;
    }
  }

  /** The next `n` bytes; undefined if they did not all come within `ms`. */
  async bytes(n: number, ms = 5000): Promise<Uint8Array | undefined> {
    const deadline = performance.now() + ms;
    while (this.#buffer.length < n) if ((await this.#more(deadline)) !== "data") return undefined;
    const out = this.#buffer.slice(0, n);
    this.#buffer = this.#buffer.slice(n);
    return out;
  }

  /** Milliseconds until the proxy closes the connection (bytes meanwhile are kept), or undefined after `ms`. */
  async closedWithin(ms: number): Promise<number | undefined> {
    const start = performance.now();
    for (;;) {
      const result = await this.#more(start + ms);
      if (result === "closed") return performance.now() - start;
      if (result === "timeout") return undefined;
    }
  }

  close(): void {
    try {
      this.#conn.close();
    } catch { /* closed */ }
  }
}

export function findHeadEnd(bytes: Uint8Array): number {
  for (let i = 0; i + 3 < bytes.length; i++) {
    if (bytes[i] === 13 && bytes[i + 1] === 10 && bytes[i + 2] === 13 && bytes[i + 3] === 10) return i;
  }
  return -1;
}

/** A request head with `headers` in order. */
export function head(line: string, headers: Record<string, string>): string {
  return `${line}\r\n${Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`).join("")}\r\n`;
}
