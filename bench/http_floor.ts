/**
 * An HTTP proxy's floor on this runtime, for the proxy benchmark (./proxy.ts): the least an
 * HTTP/1.1 proxy written on Deno does per request, measured beside ours in the same run.
 * The bare relay there copies bytes. This one reads each head and checks it, as any proxy must:
 * - it finds the head's end, checks the request line and every header name and value byte by byte
 *   (a lookup table), and drops hop-by-hop fields and the client's forwarding fields;
 * - it sets X-Forwarded-For, X-Forwarded-Proto and X-Real-IP;
 * - it checks the app's status line's version and its fields the same way, drops the hop-by-hop
 *   ones, and relays a Content-Length body.
 *
 * It keeps one connection to the app per client connection and has no routing, metrics, limits,
 * timeouts, chunked bodies, request bodies or error pages: anything it does not handle (a request
 * body, Transfer-Encoding, a malformed head) closes the connection.
 * Ours minus this floor is the cost of what ours does beyond it and of how it is built.
 *
 * Usage: `deno run --no-config --allow-net=127.0.0.1 http_floor.ts <port> <app port>`.
 * @module
 */

import { findHeadEnd } from "../src/proxy/wire.ts";
import { closeBoth, serveFloor } from "./floor_server.ts";

const CR = 13;
const LF = 10;
const COLON = 58;
/** tchar (RFC 9110 §5.6.2): the bytes a field name may have. */
const TOKEN = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") {
  TOKEN[c.charCodeAt(0)] = 1;
}
/** The bytes a field value may have: HTAB, SP, VCHAR, obs-text. */
const VALUE = new Uint8Array(256).fill(1, 32, 127).fill(1, 128, 256);
VALUE[9] = 1;
const HOP_BY_HOP = ["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"];
const REQUEST_DROPPED = new Set([
  ...HOP_BY_HOP,
  "proxy-authorization",
  "x-forwarded-for",
  "x-forwarded-proto",
  "x-forwarded-host",
  "x-real-ip",
  "forwarded",
]);
const RESPONSE_DROPPED = new Set(HOP_BY_HOP);
/** Names are lowercased only when their length is one of these. */
const CHECKED_LENGTHS = new Set([...REQUEST_DROPPED, "content-length"].map((name) => name.length));
const MALFORMED = -2;

function lowercase(buf: Uint8Array, start: number, end: number): string {
  let name = "";
  for (let i = start; i < end; i++) name += String.fromCharCode(buf[i] >= 65 && buf[i] <= 90 ? buf[i] + 32 : buf[i]);
  return name;
}

/**
 * Checks the field lines of `buf` from `start` to `end` (each ending in CRLF) and pushes the start
 * and end of each one not in `dropped` to `kept`; sets `seen.close` when Connection asks for the
 * close. Returns the Content-Length, -1 without one, or {@link MALFORMED}.
 */
function fields(
  buf: Uint8Array,
  start: number,
  end: number,
  dropped: Set<string>,
  kept: number[],
  seen: { close: boolean },
): number {
  let length = -1;
  seen.close = false;
  for (let i = start; i < end;) {
    const lf = buf.indexOf(LF, i);
    if (lf < 0 || lf > end || buf[lf - 1] !== CR) return MALFORMED;
    let colon = i;
    while (colon < lf && buf[colon] !== COLON) if (!TOKEN[buf[colon++]]) return MALFORMED;
    if (colon === i || colon === lf) return MALFORMED;
    for (let v = colon + 1; v < lf - 1; v++) if (!VALUE[buf[v]]) return MALFORMED;
    let keep = true;
    if (CHECKED_LENGTHS.has(colon - i)) {
      const name = lowercase(buf, i, colon);
      if (name === "transfer-encoding") return MALFORMED; // chunked bodies are not handled
      if (name === "connection") seen.close ||= lowercase(buf, colon + 1, lf - 1).includes("close");
      else if (name === "content-length") {
        let v = colon + 1;
        while (buf[v] === 32) v++;
        length = 0;
        for (; v < lf - 1; v++) {
          if (buf[v] < 48 || buf[v] > 57) return MALFORMED;
          length = length * 10 + buf[v] - 48;
        }
      }
      keep = !dropped.has(name);
    }
    if (keep) kept.push(i, lf + 1);
    i = lf + 1;
  }
  return length;
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let done = 0; done < bytes.length;) done += await conn.write(done ? bytes.subarray(done) : bytes);
}

/** Reads from `conn` into `buf` after its first `end` bytes until a head is complete: [head end, bytes held], or null. */
async function readHead(conn: Deno.Conn, buf: Uint8Array, end: number): Promise<[number, number] | null> {
  let at: number;
  while ((at = findHeadEnd(buf, 0, 0, end)) < 0) {
    if (end === buf.length) return null;
    const n = await conn.read(buf.subarray(end));
    if (n === null) return null;
    end += n;
  }
  return [at, end];
}

/** Copies the ranges of `buf` in `kept` into `out` from `at`; returns where they end. */
function copyKept(buf: Uint8Array, kept: number[], out: Uint8Array, at: number): number {
  for (let i = 0; i < kept.length; i += 2) {
    out.set(buf.subarray(kept[i], kept[i + 1]), at);
    at += kept[i + 1] - kept[i];
  }
  return at;
}

async function serve(client: Deno.TcpConn, upstream: Deno.TcpConn): Promise<void> {
  const request = new Uint8Array(16 * 1024);
  const response = new Uint8Array(64 * 1024);
  const out = new Uint8Array(80 * 1024);
  const ip = (client.remoteAddr as Deno.NetAddr).hostname;
  const forwarding = new TextEncoder().encode(
    `x-forwarded-for: ${ip}\r\nx-real-ip: ${ip}\r\nx-forwarded-proto: http\r\n\r\n`,
  );
  const kept: number[] = [];
  const seen = { close: false };
  let held = 0;
  try {
    while (true) {
      const head = await readHead(client, request, held);
      if (!head) return;
      const [end, read] = head;
      const lineEnd = request.indexOf(LF);
      const space = request.indexOf(32);
      const space2 = request.indexOf(32, space + 1);
      if (space <= 0 || space2 < 0 || space2 > lineEnd || request[lineEnd - 1] !== CR) return;
      for (let i = 0; i < space; i++) if (!TOKEN[request[i]]) return;
      for (let i = space + 1; i < space2; i++) if (request[i] < 0x21 || request[i] > 0x7e) return;
      kept.length = 0;
      // A request body is not relayed: a request with one ends the connection.
      const length = fields(request, lineEnd + 1, end - 2, REQUEST_DROPPED, kept, seen);
      if (length === MALFORMED || length > 0) return;
      const close = seen.close;
      out.set(request.subarray(0, lineEnd + 1));
      let at = copyKept(request, kept, out, lineEnd + 1);
      out.set(forwarding, at);
      at += forwarding.length;
      held = read - end;
      request.copyWithin(0, end, read);
      await writeAll(upstream, out.subarray(0, at));

      const answer = await readHead(upstream, response, 0);
      if (!answer) return;
      const [answerEnd, answerRead] = answer;
      const statusEnd = response.indexOf(LF);
      if (lowercase(response, 0, 7) !== "http/1." || response[statusEnd - 1] !== CR) return;
      kept.length = 0;
      const bodyLength = fields(response, statusEnd + 1, answerEnd - 2, RESPONSE_DROPPED, kept, seen);
      if (bodyLength < 0 || answerEnd + bodyLength > response.length) return;
      let have = answerRead;
      while (have < answerEnd + bodyLength) {
        const n = await upstream.read(response.subarray(have));
        if (n === null) return;
        have += n;
      }
      out.set(response.subarray(0, statusEnd + 1));
      out[7] = 49; // HTTP/1.1 to the client
      at = copyKept(response, kept, out, statusEnd + 1);
      out[at++] = CR;
      out[at++] = LF;
      out.set(response.subarray(answerEnd, answerEnd + bodyLength), at);
      await writeAll(client, out.subarray(0, at + bodyLength));
      if (close) return;
    }
  } catch {
    /* either side closed */
  } finally {
    closeBoth(client, upstream);
  }
}

await serveFloor(serve);
