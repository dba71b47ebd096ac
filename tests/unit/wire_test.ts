/**
 * HTTP/1.1 on the wire (src/proxy/wire.ts), the pure parts of the proxy's own HTTP/1.1 server:
 * finding the end of a request head in a buffer (split anywhere, pipelined, bare LF), parsing it
 * strictly (what two parsers could read differently is refused, with the status to answer), and
 * the small helpers for response heads. The same parser is attacked end to end in
 * tests/e2e/http1_test.ts.
 */
import { assert, assertEquals } from "../helpers/assert.ts";
import {
  bodyless,
  findHeadEnd,
  type HeadProblem,
  latin1,
  latin1Bytes,
  MAX_HEADER_FIELDS,
  parseRequestHead,
  type RequestHead,
  statusLine,
  trimOws,
} from "../../src/proxy/wire.ts";

/** `text` as bytes, one per char. */
const bytes = (text: string) => Uint8Array.from(text, (c) => c.charCodeAt(0));

/** Parses `text` and expects a head. */
function head(text: string): RequestHead {
  const parsed = parseRequestHead(text);
  assert(!("status" in parsed), `${JSON.stringify(text)}: refused with ${JSON.stringify(parsed)}`);
  return parsed as RequestHead;
}

/** Parses `text` and expects a refusal; returns its status. */
function refused(text: string): number {
  const parsed = parseRequestHead(text);
  assert("status" in parsed, `${JSON.stringify(text)} was accepted: ${JSON.stringify(parsed)}`);
  assert((parsed as HeadProblem).why.length > 0);
  return (parsed as HeadProblem).status;
}

const GET = "GET /a?b=1 HTTP/1.1\r\nHost: h.test";

Deno.test("findHeadEnd: CRLF CRLF, bare LFs, split reads, pipelined buffers", () => {
  const whole = bytes("GET / HTTP/1.1\r\nHost: h\r\n\r\nrest");
  assertEquals(findHeadEnd(whole, 0, 0, whole.length), whole.length - 4);
  for (
    const text of ["GET / HTTP/1.1\nHost: h\n\n", "GET / HTTP/1.1\r\nHost: h\n\r\n", "GET / HTTP/1.1\nHost: h\r\n\n"]
  ) {
    const b = bytes(text);
    assertEquals(findHeadEnd(b, 0, 0, b.length), b.length, JSON.stringify(text));
  }
  for (const text of ["GET / HTTP/1.1\r\nHost: h\r\n\r", "GET / HTTP/1.1\r\nHost: h\r\n", "GET / HTTP/1.1\r\r\n", ""]) {
    const b = bytes(text);
    assertEquals(findHeadEnd(b, 0, 0, b.length), -1, JSON.stringify(text));
  }
  // Only up to `end`: bytes past it are not read yet.
  assertEquals(findHeadEnd(whole, 0, 0, whole.length - 6), -1);
  // Every split point, resuming the scan 3 bytes before where the last one stopped (as h1.ts does).
  const text = bytes("POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi");
  const expected = text.length - 2;
  for (let split = 1; split < text.length; split++) {
    const first = findHeadEnd(text, 0, 0, split);
    const found = first >= 0 ? first : findHeadEnd(text, 0, Math.max(0, split - 3), text.length);
    assertEquals(found, expected, `split at ${split}`);
  }
  // A second head after a first one in the same buffer: from `start`.
  const two = bytes("GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n");
  const end1 = findHeadEnd(two, 0, 0, two.length);
  assertEquals(findHeadEnd(two, end1, end1, two.length), two.length);
  // The empty line that ended the first head is not taken for the end of the second.
  assertEquals(findHeadEnd(two, end1, end1, end1 + 5), -1);
});

Deno.test("parseRequestHead: a plain request, fields in order with lowercase names, Host, keep-alive", () => {
  const parsed = head(`${GET}\r\nX-One: 1\r\nx-one:  2 \r\nAccept: */*`);
  assertEquals([parsed.method, parsed.target, parsed.http11, parsed.host], ["GET", "/a?b=1", true, "h.test"]);
  assertEquals(parsed.fields.names, ["host", "x-one", "x-one", "accept"]);
  assertEquals(parsed.fields.values, ["h.test", "1", "2", "*/*"]);
  assertEquals(parsed.fields.get("x-one"), "1, 2");
  assertEquals(parsed.fields.get("nope"), null);
  assertEquals([parsed.framing, parsed.length, parsed.close, parsed.upgrade, parsed.expectContinue], [
    "none",
    0,
    false,
    undefined,
    false,
  ]);
  assertEquals([...parsed.fields.toHeaders()].length, 3);
  // Bare LF line ends are read as CRLF (RFC 9112 §2.2).
  assertEquals(head("GET / HTTP/1.1\nHost: h\nX: y").fields.get("x"), "y");
  // obs-text is a valid field value byte; an empty value too.
  assertEquals(head(`${GET}\r\nX-Latin: caf\xe9\r\nX-Empty:`).fields.get("x-latin"), "caf\xe9");
  assertEquals(head(`${GET}\r\nX-Empty:`).fields.get("x-empty"), "");
});

Deno.test("parseRequestHead: Connection, HTTP/1.0, Upgrade, Expect", () => {
  assertEquals(head(`${GET}\r\nConnection: close`).close, true);
  assertEquals(head(`${GET}\r\nConnection: keep-alive, Close`).close, true);
  assertEquals(head("GET / HTTP/1.0").close, true, "HTTP/1.0 closes by default");
  assertEquals(head("GET / HTTP/1.0").host, undefined, "HTTP/1.0 may come without Host");
  assertEquals(head("GET / HTTP/1.0\r\nConnection: Keep-Alive").close, false);
  assertEquals(head("GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close").close, true);
  assertEquals(head(`${GET}\r\nConnection: Upgrade\r\nUpgrade: websocket`).upgrade, "websocket");
  assertEquals(head(`${GET}\r\nUpgrade: websocket`).upgrade, undefined, "Upgrade counts only when Connection names it");
  assertEquals(head(`${GET}\r\nExpect: 100-Continue`).expectContinue, true);
  assertEquals(head(`${GET}\r\nExpect: something-else`).expectContinue, false);
});

Deno.test("parseRequestHead: body framing by Content-Length and Transfer-Encoding", () => {
  const cl = head(`${GET}\r\nContent-Length: 42`);
  assertEquals([cl.framing, cl.length, cl.close], ["length", 42, false]);
  assertEquals(head(`${GET}\r\nContent-Length: 0`).framing, "none");
  assertEquals(head(`${GET}\r\nContent-Length: 007`).length, 7);
  assertEquals(head(`${GET}\r\nContent-Length: 5, 5\r\nContent-Length: 5`).length, 5, "the same value repeated");
  assertEquals(head(`${GET}\r\nContent-Length: 999999999999999`).length, 999999999999999);
  const chunked = head(`${GET}\r\nTransfer-Encoding: Chunked`);
  assertEquals([chunked.framing, chunked.length, chunked.close], ["chunked", 0, false]);
  assertEquals(head(`${GET}\r\nTransfer-Encoding:\tchunked `).framing, "chunked");
  // Both: chunked wins and the connection ends after the exchange (RFC 9112 §6.3).
  for (
    const both of ["Content-Length: 5\r\nTransfer-Encoding: chunked", "Transfer-Encoding: chunked\r\nContent-Length: 5"]
  ) {
    const parsed = head(`${GET}\r\n${both}`);
    assertEquals([parsed.framing, parsed.length, parsed.close], ["chunked", 0, true]);
  }
});

Deno.test("parseRequestHead: ambiguous or malformed heads are refused with the right status", () => {
  const cases: [string, number][] = [
    [`${GET}\r\nContent-Length: 5\r\nContent-Length: 6`, 400],
    [`${GET}\r\nContent-Length: 5, 6`, 400],
    [`${GET}\r\nContent-Length: -1`, 400],
    [`${GET}\r\nContent-Length: +1`, 400],
    [`${GET}\r\nContent-Length: 0x10`, 400],
    [`${GET}\r\nContent-Length: 1 2`, 400],
    [`${GET}\r\nContent-Length: `, 400],
    [`${GET}\r\nContent-Length: 1234567890123456`, 400],
    [`${GET}\r\nContent-Length: 005\r\nContent-Length: 5`, 400],
    [`${GET}\r\nTransfer-Encoding: gzip, chunked`, 501],
    [`${GET}\r\nTransfer-Encoding: chunked, gzip`, 501],
    [`${GET}\r\nTransfer-Encoding: xchunked`, 501],
    [`${GET}\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked`, 501],
    [`${GET}\r\nTransfer-Encoding: identity`, 501],
    [`${GET}\r\nTransfer-Encoding:`, 501],
    ["POST / HTTP/1.0\r\nTransfer-Encoding: chunked", 400],
    [`${GET}\r\nTransfer-Encoding : chunked`, 400],
    [`${GET}\r\nX: a\r\n folded`, 400],
    [`${GET}\r\n\tX: a`, 400],
    [`${GET}\r\nX: a\rb`, 400],
    [`${GET}\r\nX: a\r\r`, 400],
    [`${GET}\r\nX: a\0b`, 400],
    [`${GET}\r\nX: a\x01b`, 400],
    [`${GET}\r\nX: a\x7fb`, 400],
    [`${GET}\r\nX Y: z`, 400],
    [`${GET}\r\nX[]: z`, 400],
    [`${GET}\r\n: z`, 400],
    [`${GET}\r\nno colon`, 400],
    ["GET /a\r HTTP/1.1\r\nHost: h", 400],
    ["GET  /a HTTP/1.1\r\nHost: h", 400],
    ["GET /a b HTTP/1.1\r\nHost: h", 400],
    ["GET /a HTTP/1.1 \r\nHost: h", 400],
    ["GET /a http/1.1\r\nHost: h", 400],
    ["GET /a HTTP/1.10\r\nHost: h", 400],
    ["G(T /a HTTP/1.1\r\nHost: h", 400],
    ["GET /\xe9 HTTP/1.1\r\nHost: h", 400],
    ["GET a HTTP/1.1\r\nHost: h", 400],
    ["GET * HTTP/1.1\r\nHost: h", 400],
    ["GET ftp://h/a HTTP/1.1\r\nHost: h", 400],
    ["GET http://u@h/a HTTP/1.1\r\nHost: h", 400],
    ["CONNECT h:443 HTTP/1.1\r\nHost: h:443", 400],
    ["GET /a HTTP/2.0\r\nHost: h", 505],
    ["GET /a HTTP/1.2\r\nHost: h", 505],
    ["PRI * HTTP/2.0", 505],
    ["GET /a HTTP/1.1", 400],
    ["GET /a HTTP/1.1\r\nHost: a\r\nHost: b", 400],
    ["GET /a HTTP/1.1\r\nHost: a\r\nhost: a", 400],
    ["", 400],
    [`${GET}\r\n${Array.from({ length: MAX_HEADER_FIELDS }, (_, i) => `X-${i}: v`).join("\r\n")}`, 431],
  ];
  const wrong = cases.flatMap(([text, status]) => {
    const parsed = parseRequestHead(text);
    const got = "status" in parsed ? parsed.status : "accepted";
    return got === status ? [] : [`${JSON.stringify(text.slice(0, 60))}: ${got}, want ${status}`];
  });
  assertEquals(wrong, []);
  // 100 fields are fine (Host + 99).
  head(`${GET}\r\n${Array.from({ length: MAX_HEADER_FIELDS - 1 }, (_, i) => `X-${i}: v`).join("\r\n")}`);
  assertEquals(refused("GET /a HTTP/1.1\r\nX: 1"), 400, "HTTP/1.1 without Host");
});

Deno.test("parseRequestHead: absolute-form and OPTIONS *", () => {
  const absolute = head("GET http://H.test:8080/p/q?x=1 HTTP/1.1\r\nHost: other.test");
  assertEquals([absolute.target, absolute.host], ["/p/q?x=1", "H.test:8080"], "the authority wins over Host");
  assertEquals(head("GET https://h.test?x=1 HTTP/1.1\r\nHost: h.test").target, "/?x=1");
  assertEquals(head("GET http://h.test HTTP/1.1\r\nHost: h.test").target, "/");
  assertEquals(head("GET http://h.test HTTP/1.0").host, "h.test", "HTTP/1.0 needs no Host");
  // HTTP/1.1 needs a Host even with an authority (RFC 9112 §3.2); a fragment is never part of a target.
  for (
    const text of [
      "GET http://h.test/ HTTP/1.1",
      "GET /a#frag HTTP/1.1\r\nHost: h",
      "GET http://h/a#f HTTP/1.1\r\nHost: h",
    ]
  ) {
    assertEquals((parseRequestHead(text) as { status?: number }).status, 400, text);
  }
  const star = head("OPTIONS * HTTP/1.1\r\nHost: h");
  assertEquals([star.method, star.target], ["OPTIONS", "*"]);
});

Deno.test("wire helpers: trimOws, latin1 both ways, status lines, bodyless answers", () => {
  assertEquals(trimOws("X: \t a b \t", 2), "a b");
  assertEquals(trimOws("X:", 2), "");
  const all = Uint8Array.from({ length: 256 }, (_, i) => i);
  const text = latin1(all, 0, 256);
  assertEquals(text.length, 256);
  assertEquals([...latin1Bytes(text)], [...all], "one byte per char, never UTF-8");
  const big = new Uint8Array(20_000).fill(0x41);
  assertEquals(latin1(big, 10, 20_000), "A".repeat(19_990));
  const room = latin1Bytes("ab", 3);
  assertEquals([room.length, room[0], room[1]], [5, 0x61, 0x62]);
  assertEquals(statusLine(200), "HTTP/1.1 200 OK\r\n");
  assertEquals(statusLine(404, "Nope"), "HTTP/1.1 404 Nope\r\n");
  assertEquals(statusLine(299), "HTTP/1.1 299 \r\n");
  assertEquals(
    [bodyless("HEAD", 200), bodyless("GET", 204), bodyless("GET", 304), bodyless("GET", 101), bodyless("GET", 200)],
    [true, true, true, true, false],
  );
});
