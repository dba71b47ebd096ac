/**
 * The HTTP/2 frame guard (src/proxy/h2_guard.ts), the pure part: frame headers followed across
 * reads split anywhere, empty and small DATA frames counted against their limits, frames that end
 * a stream, padding and other frame types left alone; the streams opened and reset, told. Attacked end to end (raw frames over TLS
 * against the real proxy) in tests/e2e/http2_attack_test.ts.
 */
import { assertEquals } from "../helpers/assert.ts";
import {
  DATA_BUDGET,
  FrameGuard,
  LoopbackPairs,
  MAX_COUNTED_STREAMS,
  MAX_EMPTY_DATA,
  SMALL_FRAME,
} from "../../src/proxy/h2_guard.ts";

const PREFACE = new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

function frame(type: number, flags: number, payload: number, stream = 1): Uint8Array {
  const bytes = new Uint8Array(9 + payload);
  bytes.set([
    payload >> 16,
    (payload >> 8) & 0xff,
    payload & 0xff,
    type,
    flags,
    stream >> 24,
    stream >> 16,
    stream >> 8,
  ]);
  bytes[8] = stream & 0xff;
  return bytes.fill(0x61, 9);
}

const data = (payload: number, flags = 0, stream = 1) => frame(0, flags, payload, stream);

/** A padded DATA frame: `data` bytes and `pad` bytes of padding (and the pad length byte). */
function padded(data: number, pad: number): Uint8Array {
  const bytes = frame(0, 0x8, 1 + data + pad);
  bytes[9] = pad;
  return bytes;
}

function joined(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, part) => n + part.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** Feeds `bytes` in pieces of `step` bytes; the first refusal, or undefined. */
function feed(bytes: Uint8Array, step = bytes.length, guard = new FrameGuard()): string | undefined {
  for (let at = 0; at < bytes.length; at += step) {
    const why = guard.feed(bytes.subarray(at, at + step));
    if (why) return why;
  }
  return undefined;
}

Deno.test("h2 guard: empty DATA frames past the limit are refused, wherever the reads split them", () => {
  const allowed = joined([PREFACE, frame(4, 0, 0), frame(1, 4, 20), ...Array(MAX_EMPTY_DATA).fill(data(0))]);
  for (const step of [1, 5, 9, 10, 4096]) {
    assertEquals(feed(allowed, step), undefined, `step ${step}`);
    assertEquals(
      feed(joined([allowed, data(0)]), step),
      `more than ${MAX_EMPTY_DATA} empty DATA frames`,
      `step ${step}`,
    );
  }
});

Deno.test("h2 guard: a connection that does not start with the HTTP/2 preface is cut (HTTP/1.1 after ALPN h2)", () => {
  const http1 = new TextEncoder().encode("GET / HTTP/1.1\r\nHost: a.test\r\n\r\n");
  for (const step of [1, 4096]) assertEquals(feed(http1, step), "no HTTP/2 connection preface");
  assertEquals(feed(joined([PREFACE.subarray(0, 23), new Uint8Array([0x41])]), 1), "no HTTP/2 connection preface");
  assertEquals(feed(joined([PREFACE, frame(4, 0, 0)]), 1), undefined);
});

Deno.test("h2 guard: frames that end their stream, other frame types and payload bytes never count", () => {
  const frames: Uint8Array[] = [PREFACE];
  for (let i = 0; i < 1000; i++) {
    frames.push(data(0, 0x1)); // an empty DATA frame with END_STREAM: how a body ends
    frames.push(frame(6, 0, 8)); // PING
    frames.push(frame(8, 0, 4)); // WINDOW_UPDATE
  }
  // A payload that looks like empty DATA frames is skipped, not read as frames.
  const looksLikeFrames = joined(Array(2000).fill(data(0)));
  const carrier = frame(0, 0, looksLikeFrames.length);
  carrier.set(looksLikeFrames, 9);
  frames.push(carrier);
  assertEquals(feed(joined(frames), 7), undefined);
});

Deno.test("h2 guard: small DATA frames spend the budget, ordinary ones earn it back", () => {
  // 1-byte frames alone: cut once the budget is spent (a few thousand frames).
  const guard = new FrameGuard();
  guard.feed(PREFACE);
  let frames = 0;
  let why: string | undefined;
  while (!why && frames < 100_000) {
    why = guard.feed(data(1));
    frames++;
  }
  assertEquals(why, "too many small DATA frames");
  assertEquals(frames, Math.floor(DATA_BUDGET / (SMALL_FRAME - 2)) + 1);
  // An upload in 16 KiB frames with a short one now and then (the end of each write) is never cut.
  const upload: Uint8Array[] = [PREFACE];
  for (let i = 0; i < 20_000; i++) upload.push(data(i % 4 === 3 ? 100 : 16_384));
  assertEquals(feed(joined(upload), 65_536), undefined);
  // Padding is not data: padded frames carrying nothing spend as empty ones, whatever their padding,
  // also when the pad length byte comes in a later read.
  for (const pad of [0, 200, 255]) {
    const frames = joined([PREFACE, ...Array(MAX_EMPTY_DATA + 1).fill(padded(0, pad))]);
    for (const step of [1, 10, 4096]) {
      assertEquals(feed(frames, step), `more than ${MAX_EMPTY_DATA} empty DATA frames`, `pad ${pad}, step ${step}`);
    }
  }
  assertEquals(feed(joined([PREFACE, ...Array(1000).fill(padded(300, 255))])), undefined);
});

Deno.test("h2 guard: what a stream spent comes back when it ends: small requests one after another for ever pass", () => {
  // 20,000 requests on one connection, each a 20-byte body then an empty DATA frame ending it
  // (Node's write() then end()), the odd ones reset by the client instead: never cut.
  const guard = new FrameGuard();
  guard.feed(PREFACE);
  for (let i = 0; i < 20_000; i++) {
    const stream = 2 * i + 1;
    const end = i % 2 ? frame(3, 0, 4, stream) : data(0, 0x1, stream);
    const why = guard.feed(joined([frame(1, 4, 10, stream), data(20, 0, stream), data(0, 0, stream), end]));
    assertEquals(why, undefined, `request ${i}`);
  }
  // The same requests left open are cut: by their empty frames, then (without those) by the budget.
  const open = new FrameGuard();
  open.feed(PREFACE);
  let why: string | undefined;
  for (let stream = 1; !why; stream += 2) why = open.feed(joined([data(20, 0, stream), data(0, 0, stream)]));
  assertEquals(why, `more than ${MAX_EMPTY_DATA} empty DATA frames`);
  const spread = new FrameGuard();
  spread.feed(PREFACE);
  why = undefined;
  for (let stream = 1; !why; stream += 2) why = spread.feed(data(20, 0, stream));
  assertEquals(why, `small DATA frames on more than ${MAX_COUNTED_STREAMS} streams`);
});

Deno.test("h2 guard: tells the streams the client opens, in order, and those it resets, wherever the reads split", () => {
  const HEADERS = 1, RST_STREAM = 3, END_STREAM = 1;
  const bytes = joined([
    PREFACE,
    frame(HEADERS, 0x4, 20, 1),
    frame(HEADERS, 0x4 | END_STREAM, 20, 3),
    data(300, 0, 1),
    frame(HEADERS, 0x4 | END_STREAM, 10, 1), // trailers of stream 1: not a new stream
    frame(RST_STREAM, 0, 4, 3),
    frame(HEADERS, 0x4, 20, 7),
    frame(8, 0, 4, 0), // WINDOW_UPDATE
  ]);
  for (const step of [1, 7, bytes.length]) {
    const seen: string[] = [];
    const guard = new FrameGuard({
      opened: (stream) => seen.push(`opened ${stream}`),
      reset: (stream) => seen.push(`reset ${stream}`),
    });
    assertEquals(feed(bytes, step, guard), undefined);
    assertEquals(seen, ["opened 1", "opened 3", "reset 3", "opened 7"], `reads of ${step} bytes`);
  }
});

Deno.test("h2 guard: loopback pairs carry bytes; a stranger that connects is closed, a flood of them delays no pair", async () => {
  const pairs = new LoopbackPairs();
  const opened: Deno.Conn[] = [];
  try {
    const [ours, theirs] = await pairs.pair();
    opened.push(ours, theirs);
    await ours.write(new TextEncoder().encode("hello"));
    const buf = new Uint8Array(16);
    assertEquals(new TextDecoder().decode(buf.subarray(0, (await theirs.read(buf))!)), "hello");
    // A stranger (an app on the machine) with a wrong token and a request after it: closed, unread.
    const stranger = await Deno.connect({ hostname: "127.0.0.1", port: pairs.port! });
    opened.push(stranger);
    await stranger.write(new Uint8Array(16).fill(7));
    await stranger.write(new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")).catch(() => 0);
    assertEquals(await stranger.read(buf).catch(() => null), null);
    // 200 strangers that send nothing, held open: a pair is still made, at once.
    for (let i = 0; i < 200; i++) opened.push(await Deno.connect({ hostname: "127.0.0.1", port: pairs.port! }));
    const started = performance.now();
    opened.push(...await pairs.pair());
    console.log(`h2 guard: a pair made beside 200 silent strangers in ${(performance.now() - started).toFixed(1)} ms`);
  } finally {
    for (const conn of opened) {
      try {
        conn.close();
      } catch { /* closed by the other side's close */ }
    }
    pairs.close();
  }
});
