/**
 * The real `proxy` command as a child process over a temp server root, and a minimal HTTPS client
 * that sets SNI and Host to a test name while connecting to 127.0.0.1 (no DNS needed).
 * @module
 */
import { BIN } from "./server.ts";

/** A running `deploy-paradigm proxy`. */
export interface ProxyProcess {
  pid: number;
  /** Everything it printed so far (stdout and stderr). */
  output(): string;
  /** Resolves once its output matches `pattern` (rejects after `ms`, or when it exits). */
  waitFor(pattern: RegExp, ms?: number): Promise<void>;
  /** SIGTERM, then SIGKILL after 10 s; resolves with its exit code. */
  stop(): Promise<number>;
  status: Promise<Deno.CommandStatus>;
}

/** Starts the proxy for `root` on `host`; `wrap` prefixes the command (e.g. `prlimit --nofile=512:512 --`). */
export async function startProxy(
  root: string,
  options: { host?: string; wrap?: string[]; ready?: boolean } = {},
): Promise<ProxyProcess> {
  const argv = [...options.wrap ?? [], BIN, "proxy", "--host", options.host ?? "127.0.0.1"];
  const child = new Deno.Command(argv[0], {
    args: argv.slice(1),
    env: { DEPLOY_PARADIGM_PREFIX: root, NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let text = "";
  const waiters = new Set<() => void>();
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      text += chunk;
      for (const wake of [...waiters]) wake();
    }
  };
  const pumped = Promise.all([pump(child.stdout), pump(child.stderr)]);
  let exited = false;
  const status = child.status.then(async (status) => {
    exited = true;
    await pumped.catch(() => {});
    for (const wake of [...waiters]) wake();
    return status;
  });
  const waitFor = (pattern: RegExp, ms = 15_000) =>
    new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => finish(new Error(`no ${pattern} in ${ms} ms; proxy output:\n${text}`)), ms);
      const check = () => {
        if (pattern.test(text)) finish();
        else if (exited) finish(new Error(`the proxy exited before ${pattern}; output:\n${text}`));
      };
      const finish = (error?: Error) => {
        clearTimeout(timer);
        waiters.delete(check);
        error ? reject(error) : resolve();
      };
      waiters.add(check);
      check();
    });
  const process: ProxyProcess = {
    pid: child.pid,
    output: () => text,
    waitFor,
    status,
    stop: async () => {
      if (!exited) {
        try {
          child.kill("SIGTERM");
        } catch { /* gone */ }
      }
      const timer = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch { /* gone */ }
      }, 10_000);
      const { code } = await status;
      clearTimeout(timer);
      return code;
    },
  };
  if (options.ready !== false) {
    try {
      await waitFor(/proxy ready/);
    } catch (error) {
      await process.stop();
      throw error;
    }
  }
  return process;
}

/** A response read by {@link HttpsClient}. */
export interface RawResponse {
  status: number;
  headers: Headers;
  body: string;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * One keep-alive HTTP/1.1 connection over TLS to 127.0.0.1:`port`, with SNI and Host `name`,
 * trusting `ca`. Reads responses framed by Content-Length or chunked encoding.
 */
export class HttpsClient {
  #conn: Deno.TlsConn;
  #buffer = new Uint8Array(0);
  readonly name: string;

  private constructor(conn: Deno.TlsConn, name: string) {
    this.#conn = conn;
    this.name = name;
  }

  static async connect(port: number, name: string, ca: string, alpn = ["http/1.1"]): Promise<HttpsClient> {
    const tcp = await Deno.connect({ hostname: "127.0.0.1", port });
    const conn = await Deno.startTls(tcp, { hostname: name, caCerts: [ca], alpnProtocols: alpn });
    await conn.handshake();
    return new HttpsClient(conn, name);
  }

  get conn(): Deno.TlsConn {
    return this.#conn;
  }

  async #fill(): Promise<void> {
    const chunk = new Uint8Array(64 * 1024);
    const n = await this.#conn.read(chunk);
    if (n === null) throw new Error("the connection closed");
    const next = new Uint8Array(this.#buffer.length + n);
    next.set(this.#buffer);
    next.set(chunk.subarray(0, n), this.#buffer.length);
    this.#buffer = next;
  }

  async #take(n: number): Promise<Uint8Array> {
    while (this.#buffer.length < n) await this.#fill();
    const out = this.#buffer.slice(0, n);
    this.#buffer = this.#buffer.slice(n);
    return out;
  }

  async #line(): Promise<string> {
    while (true) {
      const at = this.#buffer.findIndex((byte, i) => byte === 10 && this.#buffer[i - 1] === 13);
      if (at >= 0) return decoder.decode(await this.#take(at + 1)).slice(0, -2);
      await this.#fill();
    }
  }

  /** Sends a request and reads its response. */
  async request(path: string, headers: Record<string, string> = {}): Promise<RawResponse> {
    const lines = [
      `GET ${path} HTTP/1.1`,
      `Host: ${this.name}`,
      ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
    ];
    await this.#conn.write(encoder.encode(lines.join("\r\n") + "\r\n\r\n"));
    const status = Number((await this.#line()).split(" ")[1]);
    const out = new Headers();
    for (let line = await this.#line(); line; line = await this.#line()) {
      const colon = line.indexOf(":");
      out.append(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
    }
    let body = "";
    if (out.get("transfer-encoding")?.includes("chunked")) {
      for (let size = parseInt(await this.#line(), 16); size > 0; size = parseInt(await this.#line(), 16)) {
        body += decoder.decode(await this.#take(size));
        await this.#line();
      }
      await this.#line();
    } else {
      body = decoder.decode(await this.#take(Number(out.get("content-length") ?? 0)));
    }
    return { status, headers: out, body };
  }

  close(): void {
    try {
      this.#conn.close();
    } catch { /* closed */ }
  }
}

/** The serial number of the certificate served for SNI `name` on 127.0.0.1:`port` (openssl s_client). */
export async function servedSerial(port: number, name: string): Promise<string> {
  const sClient = new Deno.Command("openssl", {
    args: ["s_client", "-connect", `127.0.0.1:${port}`, "-servername", name],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  });
  const { stdout } = await sClient.output();
  const x509 = new Deno.Command("openssl", { args: ["x509", "-noout", "-serial"], stdin: "piped", stdout: "piped" })
    .spawn();
  const writer = x509.stdin.getWriter();
  await writer.write(stdout);
  await writer.close();
  const { stdout: serial } = await x509.output();
  return decoder.decode(serial).trim();
}
