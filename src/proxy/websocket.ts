/**
 * The proxy's WebSocket relay, with backpressure both ways so that a peer that stops reading
 * costs the proxy a bounded amount of memory (about `maxBufferedBytes` plus one message per
 * direction) instead of all of it.
 *
 * - Client side: `Deno.upgradeWebSocket`, whose `bufferedAmount` tells how much is still queued
 *   for the client.
 * - App side: a raw TCP connection to `127.0.0.1:<port>` speaking RFC 6455 itself (handshake,
 *   masked frames out, fragmented messages reassembled in, ping answered, close relayed).
 *
 * App → client is pull-based: while the client has more than `maxBufferedBytes` queued, the
 * relay stops reading the app's socket, so the app's TCP send buffer fills and the app is slowed
 * down. Client → app: while more than `maxBufferedBytes` wait to be written to the app, the relay
 * stops reading the client (see {@link ReadPause}), so the client is slowed down the same way.
 * A side that takes nothing for `stallTimeoutMs` while the other waits gets the relay cut (1008).
 * @module
 */
import { DeployParadigmError } from "../errors.ts";

/** Options of {@link relayWebSocket}. */
export interface WebSocketRelayOptions {
  /**
   * Called exactly once: when the relay ends (the app connection closed, and the client closed
   * or did not finish its close within `closeTimeoutMs`), or before `relayWebSocket` resolves
   * with an error response. For in-flight accounting.
   */
  onEnd?: () => void;
  /** Registers a function that cuts the relay at once (proxy shutdown); return value: unregister. */
  track?: (abort: () => void) => () => void;
  /** Time for the app to accept the connection and answer 101 (default 10 s). */
  openTimeoutMs?: number;
  /** High-water mark per direction (default 1 MiB). */
  maxBufferedBytes?: number;
  /** Longest message relayed either way (default 16 MiB); longer ones close both sides with 1009. */
  maxMessageBytes?: number;
  /** How long a close handshake may take before the connection is dropped (default 5 s). */
  closeTimeoutMs?: number;
  /**
   * How long a side may leave more than `maxBufferedBytes` queued for it without taking any of
   * it before the relay is cut with 1008 (default 60 s, like nginx's proxy_send_timeout).
   */
  stallTimeoutMs?: number;
  /** Receives one line per problem (the app's address and the details the client is not shown). */
  log?: (line: string) => void;
}

/** RFC 6455 opcodes. */
export const Opcode = { continuation: 0, text: 1, binary: 2, close: 8, ping: 9, pong: 10 } as const;

/** One whole message (text or binary, reassembled) or one control frame, as read by {@link MessageReader}. */
export interface Message {
  opcode: number;
  payload: Uint8Array;
}

/** A peer broke RFC 6455; `code` is the close code to answer with (1002, 1007, 1009). */
export class WebSocketProtocolError extends DeployParadigmError {
  constructor(readonly code: number, message: string) {
    super(message);
  }
}

const DEFAULTS = {
  openTimeoutMs: 10_000,
  maxBufferedBytes: 1024 * 1024,
  maxMessageBytes: 16 * 1024 * 1024,
  closeTimeoutMs: 5_000,
  stallTimeoutMs: 60_000,
};
/** Longest response head accepted from the app. */
const MAX_HANDSHAKE_BYTES = 16 * 1024;
const READ_CHUNK_BYTES = 64 * 1024;
/** Longest pause between two looks at the client's `bufferedAmount`. */
const MAX_POLL_MS = 50;
const ACCEPT_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const encoder = new TextEncoder();
const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Upgrades `req` (a Deno.serve request with `Upgrade: websocket`) and relays it to
 * `ws://127.0.0.1:<port><path>`. `headers` are the request headers for the app (already
 * filtered by the caller); the handshake ones are replaced, and the client's
 * `Sec-WebSocket-Protocol` offer is passed on. Resolves with the 101 to return to Deno.serve, a
 * 400 for a request that is not a valid upgrade, or a plain "502 Bad Gateway" (details go to
 * `log`, never to the client) when the app refuses, fails or does not answer 101 in time.
 */
export async function relayWebSocket(
  req: Request,
  port: number,
  path: string,
  headers: Headers,
  options: WebSocketRelayOptions = {},
): Promise<Response> {
  const settings = {
    openTimeoutMs: options.openTimeoutMs ?? DEFAULTS.openTimeoutMs,
    maxBufferedBytes: options.maxBufferedBytes ?? DEFAULTS.maxBufferedBytes,
    maxMessageBytes: options.maxMessageBytes ?? DEFAULTS.maxMessageBytes,
    closeTimeoutMs: options.closeTimeoutMs ?? DEFAULTS.closeTimeoutMs,
    stallTimeoutMs: options.stallTimeoutMs ?? DEFAULTS.stallTimeoutMs,
  };
  const log = options.log ?? (() => {});
  // Without the query string, which may carry a token.
  const where = `127.0.0.1:${port}${path.split("?")[0]}`;
  let ended = false;
  const end = () => {
    if (ended) return;
    ended = true;
    options.onEnd?.();
  };
  const problem = upgradeProblem(req, path);
  if (problem) {
    log(`websocket to ${where}: 400: ${problem}`);
    end();
    return plainText(400, "400 Bad Request");
  }
  const offered = parseProtocols(req.headers.get("sec-websocket-protocol"));
  const cancel = new AbortController();
  let untrack = options.track?.(() => cancel.abort(new Error("the proxy is shutting down"))) ?? (() => {});
  let app: AppConnection;
  try {
    app = await openApp(port, path, headers, offered, settings.openTimeoutMs, cancel.signal);
  } catch (error) {
    untrack();
    log(`websocket to ${where}: 502: ${errorMessage(error)}`);
    end();
    return plainText(502, "502 Bad Gateway");
  }
  let upgrade: { socket: WebSocket; response: Response };
  try {
    upgrade = Deno.upgradeWebSocket(req);
  } catch (error) {
    untrack();
    closeQuietly(app.conn);
    log(`websocket to ${where}: 400: ${errorMessage(error)}`);
    end();
    return plainText(400, "400 Bad Request");
  }
  // Set here rather than through the `protocol` option, which wants the offer split on ", " exactly.
  if (app.protocol) upgrade.response.headers.set("sec-websocket-protocol", app.protocol);
  untrack();
  const relay = new Relay(upgrade.socket, app.conn, {
    ...settings,
    log,
    onEnd: end,
    where,
  });
  untrack = options.track?.(() => relay.abort()) ?? (() => {});
  relay.onEnded = untrack;
  relay.start(app.leftover);
  return upgrade.response;
}

/** Why `req` cannot be upgraded (the checks Deno.upgradeWebSocket makes, plus GET and a sane path), or null. */
export function upgradeProblem(req: Request, path: string): string | null {
  if (req.method !== "GET") return `method ${req.method} (a WebSocket upgrade is a GET)`;
  if (!hasToken(req.headers.get("upgrade"), "websocket")) return "no Upgrade: websocket";
  if (!hasToken(req.headers.get("connection"), "upgrade")) return "no Connection: Upgrade";
  if (!req.headers.get("sec-websocket-key")) return "no Sec-WebSocket-Key";
  if (!/^\/[\x21-\x7e]*$/.test(path)) return `path ${JSON.stringify(path)} is not an origin-form request target`;
  return null;
}

/** The subprotocols offered in a `Sec-WebSocket-Protocol` header, in order. */
export function parseProtocols(value: string | null): string[] {
  return (value ?? "").split(",").map((protocol) => protocol.trim()).filter(Boolean);
}

/** The HTTP/1.1 upgrade request to the app. `headers` lose the handshake headers the relay makes itself. */
export function handshakeRequest(
  port: number,
  path: string,
  headers: Headers,
  key: string,
  protocols: string[],
): string {
  const lines = [`GET ${path} HTTP/1.1`, `Host: ${headers.get("host") ?? `127.0.0.1:${port}`}`];
  const own = new Set(["host", "connection", "upgrade", "content-length", "transfer-encoding"]);
  for (const [name, value] of headers) {
    if (!own.has(name) && !name.startsWith("sec-websocket-")) lines.push(`${name}: ${value}`);
  }
  lines.push("Connection: Upgrade", "Upgrade: websocket", `Sec-WebSocket-Key: ${key}`, "Sec-WebSocket-Version: 13");
  if (protocols.length) lines.push(`Sec-WebSocket-Protocol: ${protocols.join(", ")}`);
  return lines.join("\r\n") + "\r\n\r\n";
}

/** The `Sec-WebSocket-Accept` a server must answer to `key`. */
export async function acceptFor(key: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-1", encoder.encode(key + ACCEPT_GUID));
  return btoa(String.fromCharCode(...new Uint8Array(digest)));
}

/**
 * Checks the app's response head (everything before the blank line) against the request:
 * 101, the upgrade headers, the accept value, a subprotocol among those offered, no extension.
 * Returns the negotiated subprotocol ("" for none); throws with what is wrong.
 */
export function checkHandshake(head: string, accept: string, offered: string[]): string {
  const [statusLine, ...lines] = head.split("\r\n");
  const status = /^HTTP\/1\.[01] (\d{3})(?: |$)/.exec(statusLine);
  if (!status) throw new Error(`not an HTTP response: ${JSON.stringify(statusLine.slice(0, 80))}`);
  if (status[1] !== "101") throw new Error(`the app answered ${JSON.stringify(statusLine.slice(0, 80))}, not 101`);
  const headers = new Map<string, string>();
  for (const line of lines) {
    const colon = line.indexOf(":");
    if (colon <= 0) throw new Error(`malformed header line ${JSON.stringify(line.slice(0, 80))}`);
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    headers.set(name, headers.has(name) ? `${headers.get(name)}, ${value}` : value);
  }
  if (!hasToken(headers.get("upgrade") ?? null, "websocket")) throw new Error("101 without Upgrade: websocket");
  if (!hasToken(headers.get("connection") ?? null, "upgrade")) throw new Error("101 without Connection: Upgrade");
  if (headers.get("sec-websocket-accept") !== accept) throw new Error("wrong Sec-WebSocket-Accept");
  if (headers.get("sec-websocket-extensions")) {
    throw new Error(`extensions ${headers.get("sec-websocket-extensions")} were not offered`);
  }
  const protocol = headers.get("sec-websocket-protocol") ?? "";
  if (protocol && !offered.includes(protocol)) throw new Error(`subprotocol ${JSON.stringify(protocol)} not offered`);
  return protocol;
}

/** One frame (FIN set unless `fin` is false); masked with a random key when `masked` (every frame a client sends). */
export function encodeFrame(opcode: number, payload: Uint8Array, masked: boolean, fin = true): Uint8Array {
  const key = masked ? crypto.getRandomValues(new Uint8Array(4)) : undefined;
  const header = frameHeader(opcode, payload.length, key, fin);
  const frame = new Uint8Array(header.length + payload.length);
  frame.set(header);
  frame.set(payload, header.length);
  if (key) applyMask(frame.subarray(header.length), key);
  return frame;
}

/**
 * A masked frame as [header, payload]: `payload` is masked in place (it must be the caller's to
 * change), which spares copying a large message.
 */
export function maskInPlace(opcode: number, payload: Uint8Array): [Uint8Array, Uint8Array] {
  const key = crypto.getRandomValues(new Uint8Array(4));
  applyMask(payload, key);
  return [frameHeader(opcode, payload.length, key, true), payload];
}

/** The header of a frame of `length` payload bytes, masked with `key` if given. */
export function frameHeader(opcode: number, length: number, key?: Uint8Array, fin = true): Uint8Array {
  const lengthBytes = length < 126 ? 0 : length < 0x10000 ? 2 : 8;
  const header = new Uint8Array(2 + lengthBytes + (key ? 4 : 0));
  header[0] = (fin ? 0x80 : 0) | opcode;
  header[1] = (key ? 0x80 : 0) | (lengthBytes === 0 ? length : lengthBytes === 2 ? 126 : 127);
  const view = new DataView(header.buffer);
  if (lengthBytes === 2) view.setUint16(2, length);
  if (lengthBytes === 8) view.setBigUint64(2, BigInt(length));
  if (key) header.set(key, 2 + lengthBytes);
  return header;
}

/** XORs `data` in place with the 4-byte masking `key` (its own inverse). */
export function applyMask(data: Uint8Array, key: Uint8Array): void {
  const words = data.byteOffset % 4 === 0 ? Math.floor(data.length / 4) : 0;
  if (words) {
    const word = new Uint32Array(key.buffer.slice(key.byteOffset, key.byteOffset + 4))[0];
    const view = new Uint32Array(data.buffer, data.byteOffset, words);
    for (let i = 0; i < words; i++) view[i] ^= word;
  }
  for (let i = words * 4; i < data.length; i++) data[i] ^= key[i & 3];
}

/** The payload of a close frame: nothing without a code, else the code and the reason (cut to 123 bytes). */
export function closePayload(code: number | undefined, reason = ""): Uint8Array {
  if (code === undefined) return new Uint8Array(0);
  const text = encoder.encode(reason);
  let end = Math.min(text.length, 123);
  while (end < text.length && (text[end] & 0xc0) === 0x80) end--; // do not cut a UTF-8 sequence
  const payload = new Uint8Array(2 + end);
  new DataView(payload.buffer).setUint16(0, code);
  payload.set(text.subarray(0, end), 2);
  return payload;
}

/** Code and reason of a received close frame (no code: `code` undefined). */
export function parseClose(payload: Uint8Array): { code?: number; reason: string } {
  if (payload.length === 0) return { reason: "" };
  if (payload.length === 1) throw new WebSocketProtocolError(1002, "close frame with a 1-byte payload");
  const code = (payload[0] << 8) | payload[1];
  if (wireCloseCode(code) !== code) throw new WebSocketProtocolError(1002, `close code ${code} is not allowed`);
  return { code, reason: decodeText(payload.subarray(2)) };
}

/** `code` if a close frame may carry it, else undefined (1005 "no code", 1006 "abnormal", 0, ...). */
export function wireCloseCode(code: number): number | undefined {
  const defined = code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006;
  return defined || (code >= 3000 && code <= 4999) ? code : undefined;
}

/**
 * Reads a stream of frames as they come in chunks: whole messages (fragments reassembled) and
 * control frames. `masked` says whether frames must be masked (sent by a client) or must not be.
 * Copies what it keeps, so the caller may reuse its chunk buffer.
 */
export class MessageReader {
  readonly #maxMessageBytes: number;
  readonly #masked: boolean;
  readonly #header = new Uint8Array(14);
  #headerFilled = 0;
  #headerNeeded = 2;
  /** The frame whose payload is being read, once its header is complete. */
  #frame: { fin: boolean; opcode: number; key?: Uint8Array; payload: Uint8Array; filled: number } | null = null;
  /** Opcode of the fragmented message being assembled (0: none). */
  #messageOpcode = 0;
  #fragments: Uint8Array[] = [];
  #messageBytes = 0;

  constructor(maxMessageBytes: number, masked = false) {
    this.#maxMessageBytes = maxMessageBytes;
    this.#masked = masked;
  }

  /** Takes the next bytes; returns the messages they complete. Throws {@link WebSocketProtocolError}. */
  push(chunk: Uint8Array): Message[] {
    const messages: Message[] = [];
    let at = 0;
    while (at < chunk.length) {
      const frame = this.#frame;
      if (frame) {
        const take = Math.min(frame.payload.length - frame.filled, chunk.length - at);
        frame.payload.set(chunk.subarray(at, at + take), frame.filled);
        frame.filled += take;
        at += take;
        if (frame.filled === frame.payload.length) this.#endFrame(messages);
        continue;
      }
      const take = Math.min(this.#headerNeeded - this.#headerFilled, chunk.length - at);
      this.#header.set(chunk.subarray(at, at + take), this.#headerFilled);
      this.#headerFilled += take;
      at += take;
      if (this.#headerFilled < this.#headerNeeded) continue;
      const needed = headerLength(this.#header);
      if (needed > this.#headerNeeded) {
        this.#headerNeeded = needed;
        continue;
      }
      this.#startFrame();
      if (this.#frame!.payload.length === 0) this.#endFrame(messages);
    }
    return messages;
  }

  #startFrame(): void {
    const header = this.#header;
    const fin = (header[0] & 0x80) !== 0;
    const opcode = header[0] & 0x0f;
    const masked = (header[1] & 0x80) !== 0;
    const view = new DataView(header.buffer);
    const short = header[1] & 0x7f;
    const length = short === 126 ? view.getUint16(2) : short === 127 ? Number(view.getBigUint64(2)) : short;
    this.#headerFilled = 0;
    this.#headerNeeded = 2;
    if (header[0] & 0x70) throw new WebSocketProtocolError(1002, "reserved bits set (no extension was negotiated)");
    if (masked !== this.#masked) throw new WebSocketProtocolError(1002, masked ? "masked frame" : "unmasked frame");
    const control = opcode >= 8;
    if (control) {
      if (opcode > Opcode.pong) throw new WebSocketProtocolError(1002, `unknown opcode ${opcode}`);
      if (!fin || length > 125) throw new WebSocketProtocolError(1002, "fragmented or long control frame");
    } else if (opcode > Opcode.binary) {
      throw new WebSocketProtocolError(1002, `unknown opcode ${opcode}`);
    } else if ((opcode === Opcode.continuation) !== (this.#messageOpcode !== 0)) {
      throw new WebSocketProtocolError(1002, opcode ? "new message inside a fragmented one" : "stray continuation");
    } else if (this.#messageBytes + length > this.#maxMessageBytes) {
      throw new WebSocketProtocolError(1009, `message over ${this.#maxMessageBytes} bytes`);
    }
    const lengthBytes = short === 126 ? 2 : short === 127 ? 8 : 0;
    const key = masked ? header.slice(2 + lengthBytes, 6 + lengthBytes) : undefined;
    this.#frame = { fin, opcode, key, payload: new Uint8Array(length), filled: 0 };
  }

  #endFrame(messages: Message[]): void {
    const { fin, opcode, key, payload } = this.#frame!;
    this.#frame = null;
    if (key) applyMask(payload, key);
    if (opcode >= 8) {
      messages.push({ opcode, payload });
      return;
    }
    if (opcode !== Opcode.continuation) this.#messageOpcode = opcode;
    this.#fragments.push(payload);
    this.#messageBytes += payload.length;
    if (!fin) return;
    messages.push({ opcode: this.#messageOpcode, payload: concat(this.#fragments, this.#messageBytes) });
    this.#messageOpcode = 0;
    this.#fragments = [];
    this.#messageBytes = 0;
  }
}

/** Length of the frame header that starts with `header[0..1]`. */
function headerLength(header: Uint8Array): number {
  const short = header[1] & 0x7f;
  return 2 + (short === 126 ? 2 : short === 127 ? 8 : 0) + (header[1] & 0x80 ? 4 : 0);
}

/** `text` as UTF-8 bytes must be valid (RFC 6455 requires it of text messages and close reasons). */
function decodeText(bytes: Uint8Array): string {
  try {
    return utf8.decode(bytes);
  } catch {
    throw new WebSocketProtocolError(1007, "invalid UTF-8 in a text message or close reason");
  }
}

interface AppConnection {
  conn: Deno.TcpConn;
  /** Bytes that came after the 101's head (the first frames). */
  leftover: Uint8Array;
  protocol: string;
}

/** Connects to the app and performs the opening handshake, all within `timeoutMs` (and until `signal`). */
async function openApp(
  port: number,
  path: string,
  headers: Headers,
  protocols: string[],
  timeoutMs: number,
  signal: AbortSignal,
): Promise<AppConnection> {
  const deadline = AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port, signal: deadline }).catch((error) => {
    throw deadline.aborted ? abortReason(deadline, timeoutMs) : error;
  });
  const stop = () => closeQuietly(conn);
  deadline.addEventListener("abort", stop);
  try {
    const key = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
    await writeAll(conn, latin1(handshakeRequest(port, path, headers, key, protocols)));
    const { head, leftover } = await readHead(conn);
    const protocol = checkHandshake(head, await acceptFor(key), protocols);
    if (deadline.aborted) throw abortReason(deadline, timeoutMs);
    return { conn, leftover, protocol };
  } catch (error) {
    closeQuietly(conn);
    throw deadline.aborted ? abortReason(deadline, timeoutMs) : error;
  } finally {
    deadline.removeEventListener("abort", stop);
  }
}

function abortReason(signal: AbortSignal, timeoutMs: number): Error {
  return signal.reason instanceof DOMException && signal.reason.name === "TimeoutError"
    ? new Error(`no 101 within ${timeoutMs} ms`)
    : signal.reason instanceof Error
    ? signal.reason
    : new Error(String(signal.reason));
}

/** Reads the response head (up to the blank line) and whatever came after it. */
async function readHead(conn: Deno.Conn): Promise<{ head: string; leftover: Uint8Array }> {
  const buffer = new Uint8Array(MAX_HANDSHAKE_BYTES + 4096);
  let filled = 0;
  while (true) {
    const end = indexOfBlankLine(buffer.subarray(0, filled));
    if (end >= 0) {
      return {
        head: new TextDecoder("latin1").decode(buffer.subarray(0, end)),
        leftover: buffer.slice(end + 4, filled),
      };
    }
    if (filled >= MAX_HANDSHAKE_BYTES) throw new Error(`response head over ${MAX_HANDSHAKE_BYTES} bytes`);
    const n = await conn.read(buffer.subarray(filled));
    if (n === null) {
      throw new Error(filled ? "the app closed the connection mid-response" : "the app closed the connection");
    }
    filled += n;
  }
}

/** Header values are byte strings: one byte per character. */
function latin1(text: string): Uint8Array {
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  return bytes;
}

function indexOfBlankLine(bytes: Uint8Array): number {
  for (let i = 0; i + 3 < bytes.length; i++) {
    if (bytes[i] === 13 && bytes[i + 1] === 10 && bytes[i + 2] === 13 && bytes[i + 3] === 10) return i;
  }
  return -1;
}

type RelaySettings = typeof DEFAULTS & { log: (line: string) => void; onEnd: () => void; where: string };

/** One relay between an upgraded client WebSocket and a raw app connection after the handshake. */
class Relay {
  /** Called once when the relay has ended, before `onEnd`. */
  onEnded: () => void = () => {};
  readonly #socket: WebSocket;
  readonly #conn: Deno.TcpConn;
  readonly #settings: RelaySettings;
  readonly #reader: MessageReader;
  /** Frames waiting to be written to the app, and their total size. */
  #queue: Uint8Array[] = [];
  #queued = 0;
  #writing = false;
  #closeSentToApp = false;
  #closeFromApp = false;
  #appClosed = false;
  #clientCloseRequested = false;
  /** The client closed, or did not finish closing in time. */
  #clientDone = false;
  #ended = false;
  #timers = new Set<ReturnType<typeof setTimeout>>();
  /** Cut the app connection once the queue is written (after a close sent on a protocol error). */
  #cutWhenWritten = false;
  /** Ends the wait of #clientDrained early. */
  #wake: () => void = () => {};
  /** Pauses reading the client (null: this Deno cannot). */
  #clientReads: ReadPause | null = null;
  /** Bytes written to the app so far (progress, for the stall timeout). */
  #written = 0;
  #watchingStall = false;

  constructor(socket: WebSocket, conn: Deno.TcpConn, settings: RelaySettings) {
    this.#socket = socket;
    this.#conn = conn;
    this.#settings = settings;
    this.#reader = new MessageReader(settings.maxMessageBytes);
  }

  start(leftover: Uint8Array): void {
    const socket = this.#socket;
    this.#clientReads = ReadPause.install(socket);
    if (!this.#clientReads) {
      this.#settings.log(
        "websocket: this Deno cannot pause reading a WebSocket; a client the app does not keep " +
          "up with is closed with 1008",
      );
    }
    socket.binaryType = "arraybuffer";
    socket.onopen = () => this.#pullFromApp(leftover);
    socket.onmessage = (event) => this.#fromClient(event.data);
    socket.onclose = (event) => this.#clientClosed(event.code, event.reason);
    // An error before "open" (the upgrade failed) has no "close" after it.
    socket.onerror = () => {
      if (socket.readyState === WebSocket.CONNECTING) {
        this.#clientClosed(1006, "");
        this.#cutApp();
      }
    };
  }

  /** Cuts both sides at once (proxy shutdown). */
  abort(): void {
    this.#closeClient(1001, "the proxy is shutting down");
    this.#clientDone = true;
    this.#cutApp();
  }

  /** App → client: read the app only while the client takes what it is sent. */
  async #pullFromApp(first: Uint8Array): Promise<void> {
    const { log, where, stallTimeoutMs } = this.#settings;
    const buffer = new Uint8Array(READ_CHUNK_BYTES);
    let chunk = first;
    try {
      while (!this.#appClosed) {
        if (chunk.length) this.#toClient(this.#reader.push(chunk));
        if (!(await this.#clientDrained())) {
          log(`websocket to ${where}: the client took nothing for ${stallTimeoutMs} ms, cut`);
          this.#closeClient(1008, "peer not reading");
          break;
        }
        const n = this.#appClosed ? null : await this.#conn.read(buffer);
        if (n === null) break;
        chunk = buffer.subarray(0, n);
      }
    } catch (error) {
      if (error instanceof WebSocketProtocolError) {
        log(`websocket to ${where}: the app broke the protocol: ${error.message}`);
        const reason = error.code === 1009 ? "message too big" : "protocol error";
        this.#closeClient(error.code, reason);
        this.#closeApp(error.code, reason, true);
        return;
      }
      // Otherwise the connection was cut (by the relay or the app): as at its end.
    }
    this.#closeClient(1001, "the app closed the connection"); // nothing if it is already closing
    this.#cutApp();
  }

  /**
   * Waits while the client has more than maxBufferedBytes queued. False when it took nothing
   * for stallTimeoutMs.
   */
  async #clientDrained(): Promise<boolean> {
    const socket = this.#socket;
    const { maxBufferedBytes, stallTimeoutMs } = this.#settings;
    let delay = 1;
    let lowest = Infinity;
    let since = Date.now();
    while (!this.#appClosed && socket.readyState === WebSocket.OPEN) {
      const buffered = socket.bufferedAmount;
      if (buffered <= maxBufferedBytes) return true;
      if (buffered < lowest) [lowest, since] = [buffered, Date.now()];
      else if (Date.now() - since > stallTimeoutMs) return false;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          this.#wake = () => {};
          resolve();
        }, delay);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      delay = Math.min(delay * 2, MAX_POLL_MS);
    }
    return true;
  }

  #toClient(messages: Message[]): void {
    const socket = this.#socket;
    for (const { opcode, payload } of messages) {
      if (this.#closeFromApp) return;
      if (opcode === Opcode.text) {
        const text = decodeText(payload);
        if (socket.readyState === WebSocket.OPEN) socket.send(text);
      } else if (opcode === Opcode.binary) {
        if (socket.readyState === WebSocket.OPEN) socket.send(payload);
      } else if (opcode === Opcode.ping) {
        this.#writeToApp(encodeFrame(Opcode.pong, payload, true));
      } else if (opcode === Opcode.close) {
        this.#closeFromApp = true;
        const { code, reason } = parseClose(payload);
        this.#closeClient(code, reason);
        // The app answered our close (the handshake is over), or we answer its close and are done.
        if (this.#closeSentToApp) this.#cutApp();
        else this.#closeApp(code, reason, true);
      }
    }
  }

  /**
   * Client → app: queued for the app; above maxBufferedBytes the client is not read until the
   * app has taken enough (without a {@link ReadPause}: the relay is closed with 1008).
   */
  #fromClient(data: unknown): void {
    if (this.#closeSentToApp || this.#appClosed) return;
    const { maxBufferedBytes, maxMessageBytes, log, where } = this.#settings;
    if (this.#queued > maxBufferedBytes && !this.#clientReads) {
      log(`websocket to ${where}: the app is not reading (${this.#queued} bytes unwritten), closed with 1008`);
      this.#closeClient(1008, "peer not reading");
      this.#cutApp();
      return;
    }
    const text = typeof data === "string";
    const payload = text ? encoder.encode(data) : new Uint8Array(data as ArrayBuffer);
    if (payload.length > maxMessageBytes) {
      log(`websocket to ${where}: a client message of ${payload.length} bytes is over ${maxMessageBytes}, closed`);
      this.#closeClient(1009, "message too big");
      this.#closeApp(1001, "the client went away");
      return;
    }
    this.#writeToApp(...maskInPlace(text ? Opcode.text : Opcode.binary, payload));
    if (this.#queued > maxBufferedBytes && this.#clientReads && !this.#clientReads.paused) {
      this.#clientReads.pause();
      this.#watchAppStall();
    }
  }

  /**
   * While the client is paused, cuts the relay if the app takes nothing for stallTimeoutMs. One
   * watch at a time: pauses come and go as often as the queue crosses maxBufferedBytes.
   */
  #watchAppStall(): void {
    if (this.#watchingStall) return;
    this.#watchingStall = true;
    const { stallTimeoutMs, log, where } = this.#settings;
    let written = this.#written;
    const check = () => {
      if (!this.#clientReads?.paused || this.#appClosed) {
        this.#watchingStall = false;
      } else if (this.#written > written) {
        written = this.#written;
        this.#later(check, stallTimeoutMs);
      } else {
        log(`websocket to ${where}: the app took nothing for ${stallTimeoutMs} ms, cut`);
        this.#closeClient(1008, "peer not reading");
        this.#cutApp();
      }
    };
    this.#later(check, stallTimeoutMs);
  }

  #clientClosed(code: number, reason: string): void {
    if (this.#clientDone) return;
    this.#clientDone = true;
    const wire = wireCloseCode(code);
    if (code === 1005) this.#closeApp(undefined, "");
    else this.#closeApp(wire ?? 1001, wire ? reason : "the client went away");
    this.#maybeEnd();
  }

  /** Starts the close handshake with the app; the connection is dropped if it does not end in closeTimeoutMs. */
  #closeApp(code: number | undefined, reason: string, cutWhenWritten = false): void {
    if (this.#closeSentToApp || this.#appClosed) return;
    this.#closeSentToApp = true;
    this.#cutWhenWritten = cutWhenWritten;
    this.#writeToApp(encodeFrame(Opcode.close, closePayload(code, reason), true));
    this.#later(() => this.#cutApp());
  }

  /** Closes the client side; it counts as done if its close does not complete in closeTimeoutMs. */
  #closeClient(code: number | undefined, reason: string): void {
    if (this.#clientDone || this.#clientCloseRequested) return;
    this.#clientCloseRequested = true;
    const socket = this.#socket;
    const close = () => {
      try {
        if (code === undefined) socket.close();
        else socket.close(code, reason);
      } catch {
        try {
          socket.close();
        } catch { /* already closing */ }
      }
    };
    // A close before "open" would be forgotten when the upgrade completes.
    if (socket.readyState === WebSocket.CONNECTING) socket.addEventListener("open", close, { once: true });
    else close();
    this.#later(() => {
      this.#clientDone = true;
      this.#maybeEnd();
    });
  }

  #writeToApp(...chunks: Uint8Array[]): void {
    if (this.#appClosed) return;
    for (const chunk of chunks) {
      this.#queue.push(chunk);
      this.#queued += chunk.length;
    }
    if (!this.#writing) this.#flush();
  }

  async #flush(): Promise<void> {
    this.#writing = true;
    try {
      while (this.#queue.length && !this.#appClosed) {
        const frame = this.#queue[0];
        await writeAll(this.#conn, frame);
        this.#queue.shift();
        this.#queued -= frame.length;
        this.#written += frame.length;
        if (this.#queued <= this.#settings.maxBufferedBytes) this.#clientReads?.resume();
      }
      if (this.#cutWhenWritten) this.#cutApp();
    } catch {
      this.#cutApp(); // the reader then closes the client
    } finally {
      this.#writing = false;
    }
  }

  #cutApp(): void {
    if (this.#appClosed) return;
    this.#appClosed = true;
    this.#queue = [];
    this.#queued = 0;
    closeQuietly(this.#conn);
    this.#clientReads?.resume(); // the client's close must be read
    this.#wake();
    this.#maybeEnd();
  }

  #later(fn: () => void, ms = this.#settings.closeTimeoutMs): void {
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      fn();
    }, ms);
    this.#timers.add(timer);
  }

  #maybeEnd(): void {
    if (this.#ended || !this.#appClosed || !this.#clientDone) return;
    this.#ended = true;
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    this.onEnded();
    this.#settings.onEnd();
  }
}

/**
 * Pauses reading a server WebSocket, which Deno otherwise reads as fast as messages come. Deno's
 * read loop (the internal `[[eventLoop]]` method, started when the upgrade completes) runs over a
 * view of the socket whose `[[readyState]]` reads CLOSED while paused: the loop then stops after
 * the message it is dispatching, and {@link resume} starts it again. The socket itself (send,
 * close, bufferedAmount) is untouched. Relies on those two Deno internals (the tests check that
 * they work); {@link install} returns null when they are missing.
 *
 * {@link pause} must be called from a message handler (so that the loop checks the state next).
 */
export class ReadPause {
  #paused = false;
  #running = false;
  readonly #start: () => void;

  private constructor(socket: WebSocket, eventLoop: symbol, readyState: symbol) {
    const internal = socket as unknown as Record<symbol, unknown>;
    const loop = internal[eventLoop] as (this: unknown) => Promise<void>;
    const view = new Proxy(internal, {
      get: (target, key) => key === readyState && this.#paused ? WebSocket.CLOSED : Reflect.get(target, key, target),
    });
    this.#start = () => {
      if (this.#running || this.#paused || internal[readyState] === WebSocket.CLOSED) return;
      this.#running = true;
      loop.call(view).finally(() => {
        this.#running = false;
        this.#start();
      });
    };
    internal[eventLoop] = this.#start;
  }

  /** Takes over the read loop of `socket` (from Deno.upgradeWebSocket, before it opens); null if this Deno cannot. */
  static install(socket: WebSocket): ReadPause | null {
    const eventLoop = symbolNamed(WebSocket.prototype, "[[eventLoop]]");
    const readyState = symbolNamed(socket, "[[readyState]]");
    if (!eventLoop || !readyState) return null;
    const internal = socket as unknown as Record<symbol, unknown>;
    if (typeof internal[eventLoop] !== "function" || internal[readyState] !== WebSocket.CONNECTING) return null;
    return new ReadPause(socket, eventLoop, readyState);
  }

  get paused(): boolean {
    return this.#paused;
  }

  pause(): void {
    this.#paused = true;
  }

  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    this.#start();
  }
}

function symbolNamed(object: object, description: string): symbol | undefined {
  return Object.getOwnPropertySymbols(object).find((symbol) => symbol.description === description);
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
}

function concat(parts: Uint8Array[], length: number): Uint8Array {
  if (parts.length === 1) return parts[0];
  const out = new Uint8Array(length);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** Whether the comma-separated header `value` contains `token` (case-insensitive). */
function hasToken(value: string | null, token: string): boolean {
  return (value ?? "").split(",").some((part) => part.trim().toLowerCase() === token);
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch { /* already closed */ }
}

function plainText(status: number, text: string): Response {
  return new Response(text + "\n", {
    status,
    headers: { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" },
  });
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
