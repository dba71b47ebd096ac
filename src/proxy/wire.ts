/**
 * HTTP/1.1 on the wire (RFC 9112), the parts the proxy's own HTTP/1.1 server needs: finding and
 * parsing a request head strictly (anything ambiguous is refused before an app sees it: request
 * smuggling lives in the differences between two parsers), and writing response heads.
 * Pure functions over bytes and strings; the server is ./h1.ts.
 * @module
 */

const CR = 13;
const LF = 10;
export const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** A field value: HTAB, SP, VCHAR, obs-text (no other control characters). */
export const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
/** A request target: visible ASCII, nothing else (no space, no control, no 8-bit byte). */
const TARGET = /^[\x21-\x7e]+$/;
export const DIGITS = /^[0-9]{1,15}$/;
const REQUEST_LINE = /^([^ ]+) ([^ ]+) HTTP\/([0-9])\.([0-9])$/;
/** Header fields a request may have: more is refused with 431 (as hyper does). */
export const MAX_HEADER_FIELDS = 100;

/**
 * The index just past the first empty line of `buf` between `start` and `end` (looking from
 * `from`, where an earlier look stopped), or -1. Lines end with CRLF or a bare LF (RFC 9112 §2.2).
 */
export function findHeadEnd(buf: Uint8Array, start: number, from: number, end: number): number {
  const view = buf.subarray(0, end);
  for (let i = from; i < end;) {
    const lf = view.indexOf(LF, i);
    if (lf < 0) return -1;
    if (lf - 1 >= start && view[lf - 1] === LF) return lf + 1;
    if (lf - 2 >= start && view[lf - 1] === CR && view[lf - 2] === LF) return lf + 1;
    i = lf + 1;
  }
  return -1;
}

/** ASCII bytes as text: one call that allocates the string only (fromCharCode.apply copies every byte first). */
const ASCII = new TextDecoder();

/** Bytes as latin1 text (one char per byte), as HTTP header bytes are read. */
export function latin1(bytes: Uint8Array, start: number, end: number): string {
  let ascii = true;
  for (let i = start; i < end; i++) {
    if (bytes[i] > 0x7f) {
      ascii = false;
      break;
    }
  }
  if (ascii) return ASCII.decode(bytes.subarray(start, end));
  let text = "";
  for (let i = start; i < end; i += 8192) {
    const part = bytes.subarray(i, Math.min(end, i + 8192));
    text += String.fromCharCode.apply(null, part as unknown as number[]);
  }
  return text;
}

const encoder = new TextEncoder();

/** The end of a chunked body. */
export const LAST_CHUNK = encoder.encode("0\r\n\r\n");

/** `data` as one chunk of a chunked body (size line, data, CRLF), in one array. */
export function chunked(data: Uint8Array): Uint8Array<ArrayBuffer> {
  const size = `${data.length.toString(16)}\r\n`;
  const out = new Uint8Array(size.length + data.length + 2);
  encoder.encodeInto(size, out);
  out.set(data, size.length);
  out[out.length - 2] = CR;
  out[out.length - 1] = LF;
  return out;
}

/** `pieces` (of `size` bytes in all) copied into one new array (never one of them: they may be views). */
export function concat(
  pieces: readonly Uint8Array[],
  size = pieces.reduce((sum, piece) => sum + piece.length, 0),
): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(size);
  let at = 0;
  for (const piece of pieces) {
    out.set(piece, at);
    at += piece.length;
  }
  return out;
}

/**
 * `text` as bytes (one per char: header values are byte strings, latin1, never UTF-8), with room
 * for `extra` more bytes after it (from index `text.length`).
 */
export function latin1Bytes(text: string, extra = 0): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(text.length + extra);
  latin1Into(text, bytes);
  return bytes;
}

/** Writes `text` as latin1 bytes at the start of `target` (at least `text.length` long); returns `text.length`. */
export function latin1Into(text: string, target: Uint8Array): number {
  const { read, written } = encoder.encodeInto(text, target);
  if (read !== text.length || written !== text.length) {
    for (let i = 0; i < text.length; i++) target[i] = text.charCodeAt(i);
  }
  return text.length;
}

/** A request's header fields in order (names lowercase), read as `Headers` is by forwarding. */
export class HeadFields {
  readonly names: string[] = [];
  readonly values: string[] = [];

  /** The values of `name` (lowercase) joined by ", ", or null. */
  get(name: string): string | null {
    let found: string | null = null;
    for (let i = 0; i < this.names.length; i++) {
      if (this.names[i] === name) found = found === null ? this.values[i] : `${found}, ${this.values[i]}`;
    }
    return found;
  }

  forEach(callback: (value: string, name: string) => void): void {
    for (let i = 0; i < this.names.length; i++) callback(this.values[i], this.names[i]);
  }

  /** As `Headers` (for a `Request`); throws what `Headers` throws. */
  toHeaders(): Headers {
    const headers = new Headers();
    for (let i = 0; i < this.names.length; i++) headers.append(this.names[i], this.values[i]);
    return headers;
  }
}

/** A request head the proxy accepts. */
export interface RequestHead {
  method: string;
  /** Origin-form (`/a?b`), or `*` for `OPTIONS *`. */
  target: string;
  /** HTTP/1.1 (else 1.0). */
  http11: boolean;
  fields: HeadFields;
  /** The Host field's value, or the authority of an absolute-form target; undefined when neither. */
  host?: string;
  /** How the body is delimited: none, Content-Length, or chunked. */
  framing: "none" | "length" | "chunked";
  /** Content-Length when `framing` is `length`. */
  length: number;
  /** The connection ends after this exchange (the client asked, HTTP/1.0 without keep-alive, or ambiguous framing). */
  close: boolean;
  /** The Upgrade field, when Connection names `upgrade`. */
  upgrade?: string;
  /** `Expect: 100-continue`. */
  expectContinue: boolean;
}

/** A request head refused: the status to answer with (then close), and why (for the log). */
export interface HeadProblem {
  status: 400 | 431 | 501 | 505;
  why: string;
}

/** Parses a request head (`text`: its lines without the empty line that ends it). */
export function parseRequestHead(text: string): RequestHead | HeadProblem {
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    lines[i] = line.charCodeAt(line.length - 1) === CR ? line.slice(0, -1) : line;
    // A CR anywhere else, or a NUL, is read differently by different parsers: refused.
    if (lines[i].includes("\r") || lines[i].includes("\0")) return { status: 400, why: "a stray CR or NUL" };
  }
  const match = REQUEST_LINE.exec(lines[0]);
  if (!match) return { status: 400, why: "malformed request line" };
  const [, method, rawTarget, major, minor] = match;
  if (!TOKEN.test(method)) return { status: 400, why: "invalid method" };
  if (major !== "1" || (minor !== "0" && minor !== "1")) return { status: 505, why: `HTTP/${major}.${minor}` };
  if (!TARGET.test(rawTarget)) return { status: 400, why: "invalid request target" };
  // Never sent by a client (RFC 9112 §3.2: no fragment in a request target): an app could read it differently.
  if (rawTarget.includes("#")) return { status: 400, why: "a fragment (#) in the request target" };
  let target = rawTarget;
  let authority: string | undefined;
  if (target.charCodeAt(0) !== 47 /* / */) {
    const absolute = /^https?:\/\/([^/?]*)(.*)/i.exec(target);
    if (absolute && !absolute[1].includes("@")) {
      authority = absolute[1];
      target = absolute[2].startsWith("/") ? absolute[2] : `/${absolute[2]}`;
    } else if (!(target === "*" && method === "OPTIONS")) {
      return { status: 400, why: "unsupported request target form" };
    }
  }
  const http11 = minor === "1";
  const fields = new HeadFields();
  if (lines.length - 1 > MAX_HEADER_FIELDS) return { status: 431, why: `more than ${MAX_HEADER_FIELDS} header fields` };
  let host: string | undefined;
  let hosts = 0;
  let length: string | undefined;
  let transferEncoding: string | undefined;
  let connection = "";
  let expectContinue = false;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i];
    const colon = line.indexOf(":");
    if (colon <= 0) return { status: 400, why: "malformed header line" };
    const name = line.slice(0, colon);
    // Whitespace before the colon and obs-fold (a line starting with whitespace) fail here.
    if (!TOKEN.test(name)) return { status: 400, why: "invalid header name" };
    const value = trimOws(line, colon + 1);
    if (!FIELD_VALUE.test(value)) return { status: 400, why: "control characters in a header value" };
    const lower = name.toLowerCase();
    fields.names.push(lower);
    fields.values.push(value);
    switch (lower) {
      case "host":
        host = value;
        hosts++;
        break;
      case "content-length":
        for (const part of value.split(",")) {
          const digits = part.trim();
          if (!DIGITS.test(digits) || (length !== undefined && length !== digits)) {
            return { status: 400, why: "invalid or conflicting Content-Length" };
          }
          length = digits;
        }
        break;
      case "transfer-encoding":
        transferEncoding = transferEncoding === undefined ? value : `${transferEncoding},${value}`;
        break;
      case "connection":
        connection = connection ? `${connection},${value}` : value;
        break;
      case "expect":
        // HTTP/1.0 clients know no 100 Continue (RFC 9110 §10.1.1): ignored.
        if (value.toLowerCase() === "100-continue" && minor === "1") expectContinue = true;
        break;
    }
  }
  if (hosts > 1) return { status: 400, why: "more than one Host" };
  // Also with an absolute-form target, whose authority then wins (RFC 9112 §3.2, §3.2.2).
  if (http11 && hosts === 0) return { status: 400, why: "no Host" };
  let asksClose = false;
  let asksKeepAlive = false;
  let upgrade: string | undefined;
  for (const token of connection ? connection.split(",") : []) {
    const option = token.trim().toLowerCase();
    if (option === "close") asksClose = true;
    else if (option === "keep-alive") asksKeepAlive = true;
    else if (option === "upgrade") upgrade = fields.get("upgrade") ?? undefined;
  }
  let close = asksClose || (!http11 && !asksKeepAlive);
  let framing: RequestHead["framing"] = "none";
  if (transferEncoding !== undefined) {
    if (!http11) return { status: 400, why: "Transfer-Encoding in an HTTP/1.0 request" };
    const codings = transferEncoding.split(",").map((coding) => coding.trim().toLowerCase()).filter(Boolean);
    if (codings.length !== 1 || codings[0] !== "chunked") {
      return { status: 501, why: `Transfer-Encoding ${JSON.stringify(transferEncoding.slice(0, 50))}` };
    }
    framing = "chunked";
    // With a Content-Length beside it, chunked wins and the connection ends after (RFC 9112 §6.3).
    if (length !== undefined) close = true;
  } else if (length !== undefined && length !== "0") framing = "length";
  return {
    method,
    target,
    http11,
    fields,
    host: authority ?? host,
    framing,
    length: framing === "length" ? Number(length) : 0,
    close,
    upgrade,
    expectContinue,
  };
}

/** `line` from `start` without leading and trailing spaces and tabs (optional whitespace). */
export function trimOws(line: string, start: number): string {
  let end = line.length;
  while (start < end && (line.charCodeAt(start) === 32 || line.charCodeAt(start) === 9)) start++;
  while (end > start && (line.charCodeAt(end - 1) === 32 || line.charCodeAt(end - 1) === 9)) end--;
  return line.slice(start, end);
}

/** Reason phrases of the statuses the proxy writes itself. */
export const REASONS: Record<number, string> = {
  100: "Continue",
  101: "Switching Protocols",
  200: "OK",
  201: "Created",
  204: "No Content",
  206: "Partial Content",
  301: "Moved Permanently",
  302: "Found",
  304: "Not Modified",
  308: "Permanent Redirect",
  400: "Bad Request",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  408: "Request Timeout",
  413: "Content Too Large",
  421: "Misdirected Request",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  501: "Not Implemented",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
  505: "HTTP Version Not Supported",
};

/** A status line (`HTTP/1.1 200 OK\r\n`), with `reason` or the usual one. */
export function statusLine(status: number, reason?: string): string {
  return `HTTP/1.1 ${status} ${reason || REASONS[status] || ""}\r\n`;
}

/** Whether a response with `status` to `method` has no body whatever its fields say. */
export function bodyless(method: string, status: number): boolean {
  return method === "HEAD" || status < 200 || status === 204 || status === 304;
}
