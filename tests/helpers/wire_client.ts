/**
 * HTTP/1.1 on the wire for tests: a client connection (plain TCP, or TLS with a chosen ALPN) that
 * sends bytes exactly as given — malformed, pipelined, split anywhere — and reads each response
 * as it comes off the wire: interim 1xx answers, Content-Length, chunked (decoded, with the raw
 * framing kept) and close-delimited bodies, and whether the connection was closed after it.
 * Reads never throw: a reset is a close.
 * @module
 */
import { concat, latin1Bytes } from "../../src/proxy/wire.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** One response as received. */
export interface WireResponse {
  /** `HTTP/1.1`, `HTTP/1.0`. */
  version: string;
  status: number;
  /** The head as received, without the empty line (status line and header lines, CRLF-separated). */
  head: string;
  /** The header fields in order, as received. */
  fields: [string, string][];
  headers: Headers;
  /** How the body was delimited. */
  framing: "none" | "length" | "chunked" | "close";
  /** The body (chunked: decoded). */
  body: Uint8Array;
  /** The body as UTF-8. */
  text: string;
  /** Whether the body was complete by its framing (false: the connection ended first, or the time ran out). */
  complete: boolean;
}

/** Options of {@link WireClient.response}. */
export interface ReadOptions {
  /** Time for the whole response (default 5 s). */
  ms?: number;
  /** The request's method (HEAD answers have no body). */
  method?: string;
}

/** One client connection to 127.0.0.1. */
export class WireClient {
  #conn: Deno.Conn;
  #buf = new Uint8Array(64 * 1024);
  #start = 0;
  #end = 0;
  #pending?: Promise<number | null>;
  #chunk = new Uint8Array(256 * 1024);
  #closed = false;
  /** Bytes received in all. */
  received = 0;

  private constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  /** A plain TCP connection to 127.0.0.1:`port`. */
  static async connect(port: number): Promise<WireClient> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conn.setNoDelay(true);
    return new WireClient(conn);
  }

  /** A TLS connection to 127.0.0.1:`port` with SNI `name`, trusting `ca` (PEM), offering `alpn`. */
  static async connectTls(port: number, name: string, ca: string, alpn?: string[]): Promise<WireClient> {
    const tcp = await Deno.connect({ hostname: "127.0.0.1", port });
    const conn = await Deno.startTls(tcp, { hostname: name, caCerts: [ca], alpnProtocols: alpn });
    const { alpnProtocol } = await conn.handshake();
    const client = new WireClient(conn);
    client.alpn = alpnProtocol;
    return client;
  }

  /** The protocol TLS negotiated (null: none). */
  alpn: string | null = null;

  /** Writes all of `data`; false when the peer closed or reset the connection. */
  async send(data: string | Uint8Array): Promise<boolean> {
    const bytes = typeof data === "string" ? latin1(data) : data;
    try {
      for (let at = 0; at < bytes.length;) at += await this.#conn.write(bytes.subarray(at));
      return true;
    } catch {
      return false;
    }
  }

  /** Ends our side of the connection (TCP only): the peer reads EOF. */
  async closeWrite(): Promise<void> {
    await (this.#conn as Deno.TcpConn).closeWrite();
  }

  get buffered(): number {
    return this.#end - this.#start;
  }

  /** Whether the peer has closed the connection (as far as read so far). */
  get closed(): boolean {
    return this.#closed;
  }

  /** Reads once more (up to `deadline`, `performance.now()`). */
  async #more(deadline: number): Promise<"data" | "closed" | "timeout"> {
    if (this.#closed) return "closed";
    const left = deadline - performance.now();
    if (left <= 0) return "timeout";
    this.#pending ??= this.#conn.read(this.#chunk).catch(() => null);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const n = await Promise.race([
      this.#pending,
      new Promise<"timeout">((resolve) => timer = setTimeout(resolve, left, "timeout")),
    ]);
    clearTimeout(timer);
    if (n === "timeout") return "timeout";
    this.#pending = undefined;
    if (n === null) {
      this.#closed = true;
      return "closed";
    }
    this.received += n;
    if (this.#end + n > this.#buf.length) {
      // Compact, or grow when what is kept does not fit.
      const kept = this.#buf.subarray(this.#start, this.#end);
      const size = kept.length + n;
      if (size > this.#buf.length) {
        const next = new Uint8Array(Math.max(size, this.#buf.length * 2));
        next.set(kept);
        this.#buf = next;
      } else this.#buf.copyWithin(0, this.#start, this.#end);
      this.#end = kept.length;
      this.#start = 0;
    }
    this.#buf.set(this.#chunk.subarray(0, n), this.#end);
    this.#end += n;
    return "data";
  }

  /** Index (absolute) just past the next CRLF (or LF) from `from`, or -1. */
  #lineEnd(from: number): number {
    const at = this.#buf.subarray(0, this.#end).indexOf(10, from);
    return at < 0 ? -1 : at + 1;
  }

  /** The next line (without its CRLF), or undefined when the connection ended or the time ran out. */
  async #line(deadline: number): Promise<string | undefined> {
    let end = this.#lineEnd(this.#start);
    while (end < 0) {
      if ((await this.#more(deadline)) !== "data") return undefined;
      end = this.#lineEnd(this.#start);
    }
    let text = decoder.decode(this.#buf.subarray(this.#start, end - 1));
    if (text.endsWith("\r")) text = text.slice(0, -1);
    this.#start = end;
    return text;
  }

  /** The next `n` bytes (fewer when the connection ended or the time ran out). */
  async #take(n: number, deadline: number): Promise<Uint8Array> {
    while (this.buffered < n && (await this.#more(deadline)) === "data");
    const out = this.#buf.slice(this.#start, this.#start + Math.min(n, this.buffered));
    this.#start += out.length;
    return out;
  }

  /** The next response (an interim 1xx one too), or undefined if no head came within the time. */
  async response(options: ReadOptions = {}): Promise<WireResponse | undefined> {
    const deadline = performance.now() + (options.ms ?? 5000);
    const statusLine = await this.#line(deadline);
    if (statusLine === undefined) return undefined;
    const lines = [statusLine];
    const fields: [string, string][] = [];
    for (let line = await this.#line(deadline); line !== ""; line = await this.#line(deadline)) {
      if (line === undefined) return undefined;
      lines.push(line);
      const colon = line.indexOf(":");
      fields.push([line.slice(0, colon), line.slice(colon + 1).trim()]);
    }
    const [version, code] = statusLine.split(" ");
    const status = Number(code);
    const headers = new Headers();
    for (const [name, value] of fields) {
      try {
        headers.append(name, value);
      } catch { /* kept in fields */ }
    }
    const response: WireResponse = {
      version,
      status,
      head: lines.join("\r\n"),
      fields,
      headers,
      framing: "none",
      body: new Uint8Array(0),
      text: "",
      complete: true,
    };
    if (options.method === "HEAD" || status < 200 || status === 204 || status === 304) return response;
    const te = headers.get("transfer-encoding");
    const length = headers.get("content-length");
    if (te?.toLowerCase().includes("chunked")) {
      response.framing = "chunked";
      const pieces: Uint8Array[] = [];
      response.complete = false;
      while (true) {
        const size = await this.#line(deadline);
        if (size === undefined) break;
        const n = parseInt(size, 16);
        if (!(n >= 0)) throw new Error(`malformed chunk size ${JSON.stringify(size)}`);
        if (n === 0) {
          let trailer = await this.#line(deadline);
          while (trailer) trailer = await this.#line(deadline);
          response.complete = trailer === "";
          break;
        }
        const data = await this.#take(n, deadline);
        pieces.push(data);
        if (data.length < n) break;
        const crlf = await this.#line(deadline);
        if (crlf !== "") {
          if (crlf !== undefined) throw new Error(`a chunk does not end with CRLF: ${JSON.stringify(crlf)}`);
          break;
        }
      }
      response.body = concat(pieces);
    } else if (length !== null) {
      response.framing = "length";
      response.body = await this.#take(Number(length), deadline);
      response.complete = response.body.length === Number(length);
    } else {
      response.framing = "close";
      while ((await this.#more(deadline)) === "data");
      response.body = this.#buf.slice(this.#start, this.#end);
      this.#start = this.#end;
      response.complete = this.#closed;
    }
    response.text = decoder.decode(response.body);
    return response;
  }

  /** Milliseconds until the peer closes the connection, or undefined after `ms` (bytes meanwhile are kept). */
  async closedWithin(ms: number): Promise<number | undefined> {
    const start = performance.now();
    while (true) {
      const result = await this.#more(start + ms);
      if (result === "closed") return performance.now() - start;
      if (result === "timeout") return undefined;
    }
  }

  /** What is buffered and not read as a response yet, as latin1 text. */
  leftover(): string {
    return String.fromCharCode(...this.#buf.subarray(this.#start, this.#end).subarray(0, 4096));
  }

  close(): void {
    try {
      this.#conn.close();
    } catch { /* closed */ }
  }
}

/** `text` as bytes, one per char (test requests carry bytes such as NUL, CR and 0xff exactly). */
export const latin1 = (text: string): Uint8Array<ArrayBuffer> => latin1Bytes(text);

export { concat };

/** `size` bytes of a repeating, position-dependent pattern (a shifted or dropped byte shows). */
export function pattern(size: number, seed = 0): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(size);
  for (let i = 0; i < size; i++) out[i] = (i * 31 + (i >> 8) + seed) & 0xff;
  return out;
}

/** SHA-256 of `bytes` as hex. */
export async function sha256(bytes: Uint8Array): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new Uint8Array(bytes)));
  return [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** `data` as one chunk of a chunked body. */
export function chunk(data: string | Uint8Array): Uint8Array {
  const bytes = typeof data === "string" ? encoder.encode(data) : data;
  return concat([encoder.encode(`${bytes.length.toString(16)}\r\n`), bytes, encoder.encode("\r\n")]);
}
