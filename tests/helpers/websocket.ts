/**
 * WebSockets in tests: a client whose messages and close can be awaited, a raw upgrade request,
 * and the WebSocket app of tests/fixtures/websocket/app.ts as its own process.
 * @module
 */
import { head } from "./raw_http.ts";
import { within } from "./time.ts";

/** A WebSocket client whose messages and close can be awaited. */
export class WsClient {
  readonly ws: WebSocket;
  readonly closed: Promise<CloseEvent>;
  #messages: (string | ArrayBuffer)[] = [];
  #waiting: ((data: string | ArrayBuffer) => void) | null = null;

  private constructor(ws: WebSocket) {
    this.ws = ws;
    ws.binaryType = "arraybuffer";
    this.closed = new Promise((resolve) => ws.addEventListener("close", resolve, { once: true }));
    ws.onmessage = (event) => {
      if (this.#waiting) this.#waiting(event.data);
      else this.#messages.push(event.data);
    };
  }

  /** Opens `url` (Deno's WebSocket: `headers` are sent with the upgrade request); throws when it does not open. */
  static async open(
    url: string,
    options: { protocols?: string[]; headers?: Record<string, string> } = {},
  ): Promise<WsClient> {
    const ws = new WebSocket(url, { protocols: options.protocols, headers: options.headers });
    const client = new WsClient(ws);
    const opened = await within(
      5000,
      `open ${url}`,
      new Promise<string | undefined>((resolve) => {
        ws.onopen = () => resolve(undefined);
        ws.onerror = (event) => resolve((event as ErrorEvent).message ?? "error");
      }),
    );
    if (opened !== undefined) throw new Error(`${url}: the WebSocket did not open: ${opened}`);
    return client;
  }

  /** The next message, within `ms`. */
  next(ms = 5000): Promise<string | ArrayBuffer> {
    const queued = this.#messages.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    return within(
      ms,
      "a message",
      new Promise((resolve) => {
        this.#waiting = (data) => {
          this.#waiting = null;
          resolve(data);
        };
      }),
    );
  }

  /** Sends `message` and returns the next message (an echo app's answer). */
  async echo(message: string, ms = 5000): Promise<string | ArrayBuffer> {
    this.ws.send(message);
    return await this.next(ms);
  }

  /** Closes (if open) and waits for the close. */
  async close(code?: number, reason?: string): Promise<CloseEvent> {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.close(code, reason);
    return await within(5000, "close", this.closed);
  }
}

/** An RFC 6455 upgrade request head for `path`, with `headers` added. */
export function upgradeRequest(path: string, headers: Record<string, string> = {}): string {
  const fields = {
    Host: "site.test",
    Upgrade: "websocket",
    Connection: "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
    ...headers,
  };
  return head(`GET ${path} HTTP/1.1`, fields);
}

/** The WebSocket app of tests/fixtures/websocket/app.ts (`/stream`, `/echo`) as a child process. */
export async function startWebSocketApp(): Promise<{ port: number; pid: number; stop(): Promise<void> }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("../fixtures/websocket/app.ts", import.meta.url).pathname],
    stdout: "piped",
    stderr: "inherit",
    stdin: "null",
  }).spawn();
  const stop = async () => {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await child.status;
  };
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  try {
    while (!text.includes("\n")) {
      const { value, done } = await within(20_000, "the WebSocket app starts", reader.read());
      if (done) throw new Error("the WebSocket app exited");
      text += value;
    }
  } catch (error) {
    await stop();
    throw error;
  } finally {
    reader.cancel().catch(() => {});
  }
  return { port: JSON.parse(text.split("\n")[0]).port, pid: child.pid, stop };
}
