/**
 * A request to an app as bytes on the wire (./upstream_call.ts sends them): its head as text, a
 * small body in the same write as the head, a larger one after it, and the chunks of a streamed
 * body without a length.
 * @module
 */
import type { Connection } from "./connection.ts";
import type { UpstreamRequest } from "./upstream.ts";
import { chunked, LAST_CHUNK, latin1Into } from "./wire.ts";

/** A request body up to this size goes in the same write as the head. */
const INLINE_BODY_MAX = 64 * 1024;
/** A streamed request chunk up to this size goes in one write with its framing. */
const INLINE_CHUNK_MAX = 16 * 1024;
/** Methods that get `content-length: 0` without a body (as fetch does), so the app need not wait for one. */
const LENGTH_WITHOUT_BODY = new Set(["POST", "PUT", "PATCH"]);
const DROPPED_REQUEST_HEADERS = new Set(["content-length", "transfer-encoding", "connection"]);
const encoder = new TextEncoder();

/** A request as text (its head), a small body to send with it, and a larger one to send after. */
export interface EncodedRequest {
  text: string;
  inline: Uint8Array | null;
  tail: Uint8Array | null;
}

/** `req` to the app on `port`, encoded. */
export function encodeRequest(port: number, req: UpstreamRequest): EncodedRequest {
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
export function requestBytes(conn: Connection, encoded: EncodedRequest): Uint8Array {
  const { text, inline } = encoded;
  const out = conn.output(text.length + (inline?.length ?? 0));
  const n = latin1Into(text, out);
  if (inline) out.set(inline, n);
  return out.subarray(0, n + (inline?.length ?? 0));
}

/** Writes one chunk of a chunked body. */
export async function writeChunk(conn: Connection, chunk: Uint8Array): Promise<void> {
  const size = `${chunk.length.toString(16)}\r\n`;
  if (chunk.length > INLINE_CHUNK_MAX) {
    await conn.write(encoder.encode(size));
    await conn.write(chunk);
    await conn.write(LAST_CHUNK.subarray(3));
    return;
  }
  await conn.write(chunked(chunk));
}
