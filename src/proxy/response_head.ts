/**
 * An app's response head (RFC 9112): the status line and fields checked, the fields that describe
 * the connection (hop-by-hop) dropped, and how the body is framed.
 * @module
 */
import { UpstreamError } from "./connection.ts";
import { DIGITS, FIELD_VALUE, TOKEN, trimOws } from "./wire.ts";

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

const STATUS_LINE = /^HTTP\/1\.([01]) ([0-9]{3})(?: (.*))?$/;
/** A reason phrase: HTAB, SP, VCHAR, obs-text. */
const REASON = /^[\t -~\x80-\xff]*$/;
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

/**
 * Whether an answer without a body may still have one coming (then its connection is not reused):
 * a body an app sends anyway, late, would be read as the next request's answer, maybe another
 * client's. After HEAD always (HEAD served as GET is common, and its Content-Length is no sign);
 * after a 204 or 304 that announces a body (Content-Length above 0, Transfer-Encoding). A 204 or
 * 304 without either (as Node and most servers send them) keeps its connection: they are frequent
 * (CORS preflights, revalidated files).
 */
function mayFollow(method: string, length: string | undefined, transferEncoding: string | undefined): boolean {
  return method === "HEAD" || transferEncoding !== undefined || (length !== undefined && Number(length) > 0);
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
    if (!HOP_BY_HOP.has(lower) && lower !== "content-length") fields.push(name, value);
    switch (lower) {
      case "connection":
        for (const token of value.split(",")) {
          const option = token.trim().toLowerCase();
          if (option === "close") close = true;
          // Content-Length frames this very response: named or not, it stays (else the client reads to the close).
          else if (option && option !== "keep-alive" && option !== "content-length") (named ??= new Set()).add(option);
        }
        break;
      case "content-length": {
        const first = length === undefined;
        if (!first || !DIGITS.test(value)) {
          for (const part of value.split(",")) {
            const digits = part.trim();
            if (!DIGITS.test(digits) || (length !== undefined && length !== digits)) {
              throw new UpstreamError("protocol", `invalid Content-Length ${JSON.stringify(value.slice(0, 100))}`);
            }
            length = digits;
          }
        } else length = value;
        // Passed on as one field with one value (RFC 9110 §8.6): a list or a repeat, as the app sent it, some clients refuse.
        if (first) fields.push(name, length!);
        break;
      }
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
  // A 204 has no Content-Length (RFC 9110 §8.6): a client that honoured one would read the next answer as its body.
  const lengthless = both || reset || status === 204;
  if (lengthless || named) {
    // Both: Transfer-Encoding wins, Content-Length goes, and the connection gets no other request.
    // Fields named by Connection are hop-by-hop too. A 205 has no body whatever it says: length 0.
    kept = [];
    for (let i = 0; i < fields.length; i += 2) {
      const lower = fields[i].toLowerCase();
      if ((lengthless && lower === "content-length") || named?.has(lower)) continue;
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
    keepAlive: !close && framing !== "close" && !(framing === "none" && mayFollow(method, length, transferEncoding)),
  };
}
