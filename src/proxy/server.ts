/**
 * The built-in reverse proxy: one long-running process per server. It listens on each app's
 * public `port` (config.yml) and forwards every request to the app's active target
 * (route.json), which deploys switch at run time without dropping requests: a changed target
 * applies to the next request while requests in flight finish on the old one, and `drain`
 * tells a deploy when the old target has no request left.
 *
 * Deploys talk to it over a unix control socket (see ./client.ts); it also re-reads the routes
 * every 2 s, so a missed reload only delays a switch.
 * @module
 */
import { dirname, join, relative, sep } from "node:path";
import { parseConfig } from "../config/load.ts";
import { NAME_PATTERN } from "../config/names.ts";
import { serverConfigSchema } from "../config/schema.ts";
import { DeployParadigmError, UsageError } from "../errors.ts";
import { ifExists } from "../fsutil.ts";
import { deploymentsRoot, prefix } from "../paths.ts";
import { controlSocketPath, describeTarget, readRoute, type Route, type RouteTarget } from "./routes.ts";

/** Options of a {@link ProxyServer}. */
export interface ProxyOptions {
  /** The server root (the prefix): routes come from `<root>/opt/deployments/<app>/`. */
  root: string;
  /** Address the public listeners bind to, e.g. `0.0.0.0`. */
  host: string;
  /** Receives one line per event (listener opened or closed, route changed, problem). */
  log?: (line: string) => void;
}

/** An HTTP handler as `Deno.serve` calls it. */
export type ProxyHandler = (req: Request, info: Deno.ServeHandlerInfo) => Promise<Response>;

/** One route as `status` reports it. */
export interface RouteStatus {
  app: string;
  port: number;
  target: RouteTarget | null;
  /** Requests in flight to the target port (0 for static targets). */
  inFlight: number;
  /** Whether the public port is open. */
  listening: boolean;
}

/** How often routes are re-read without a `reload`. */
export const RELOAD_INTERVAL_MS = 2000;
/** Request bodies up to this size with a Content-Length are read first and forwarded with it. */
const BUFFERED_BODY_MAX = 1024 * 1024;
/** Responses up to this Content-Length are passed to Deno.serve unwrapped (see #forward). */
const DIRECT_BODY_MAX = 256 * 1024;
/** How long a WebSocket to the app may take to open. */
const WEBSOCKET_OPEN_TIMEOUT_MS = 10_000;
/** Longest control line accepted. */
const MAX_CONTROL_LINE = 64 * 1024;
/** Longest `drain` accepted over the control socket. */
const MAX_DRAIN_MS = 60 * 60 * 1000;

const HOP_BY_HOP = [
  "connection",
  "keep-alive",
  "proxy-authenticate",
  "proxy-authorization",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
];
/** Handshake headers a WebSocket upstream connection makes itself. */
const WEBSOCKET_HANDSHAKE = ["sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions"];
const NULL_BODY_STATUS = new Set([101, 103, 204, 205, 304]);
/** Content encodings that Deno's fetch decodes by itself (unless the request asked for `identity`). */
const DECODED_BY_FETCH = new Set(["gzip", "br"]);

/** The reverse proxy of one server. */
export class ProxyServer {
  readonly #root: string;
  readonly #host: string;
  readonly #log: (line: string) => void;
  readonly #client: Deno.HttpClient;
  #routes = new Map<string, Route>();
  /** Public port → app that owns it. */
  #byPort = new Map<number, string>();
  #listeners = new Map<number, Deno.HttpServer<Deno.NetAddr>>();
  #listenErrors = new Map<number, string>();
  /** Last problem logged per app, so the 2 s re-read does not repeat it. */
  #problems = new Map<string, string>();
  #inFlight = new Map<number, number>();
  #drainWaiters = new Map<number, Set<() => void>>();
  /** Forced ends of open streams and WebSockets, for {@link close}. */
  #active = new Set<() => void>();
  /** Graceful shutdowns of listeners whose port went away. */
  #stopping = new Set<Promise<void>>();
  #reloadChain: Promise<unknown> = Promise.resolve();
  #control?: Deno.Listener<Deno.UnixConn, Deno.UnixAddr>;
  #controlIno?: number | null;
  #controlLoop?: Promise<void>;
  #controlConns = new Set<Deno.UnixConn>();
  #timer?: ReturnType<typeof setInterval>;
  #closing?: Promise<void>;

  constructor(options: ProxyOptions) {
    this.#root = options.root;
    this.#host = options.host;
    this.#log = options.log ?? (() => {});
    this.#client = Deno.createHttpClient({ allowHost: true });
  }

  /** The control socket's path. */
  get controlSocket(): string {
    return controlSocketPath(this.#root);
  }

  /** Opens the control socket, loads the routes, opens their listeners, and starts the 2 s re-read. */
  async start(): Promise<void> {
    await this.#openControl();
    try {
      const count = await this.reload();
      this.#log(`proxy ready: ${count} app(s), control socket ${this.controlSocket}`);
    } catch (error) {
      await this.close();
      throw error;
    }
    this.#timer = setInterval(() => {
      this.reload().catch((error) => this.#problem("*", `re-reading the routes failed: ${message(error)}`));
    }, RELOAD_INTERVAL_MS);
  }

  /**
   * Re-reads every app's config.yml (its port) and route.json (its target); opens listeners for
   * new ports and closes those of removed apps. Returns the number of routes. Apps with
   * `strategy: restart` bind their port themselves and are not routed. An app whose config.yml or
   * route.json is invalid is logged and keeps what it had (nothing, if it is new).
   */
  reload(): Promise<number> {
    const run = this.#reloadChain.then(() => this.#reloadNow());
    this.#reloadChain = run.catch(() => {});
    return run;
  }

  async #reloadNow(): Promise<number> {
    if (this.#closing) return this.#routes.size;
    const root = deploymentsRoot(this.#root);
    const names: string[] = [];
    try {
      for await (const entry of Deno.readDir(root)) {
        if ((entry.isDirectory || entry.isSymlink) && NAME_PATTERN.test(entry.name)) names.push(entry.name);
      }
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
    const next = new Map<string, Route>();
    const problems = new Set<string>();
    for (const app of names.sort()) {
      const dir = join(root, app);
      const configPath = join(dir, "config.yml");
      const previous = this.#routes.get(app);
      let port: number;
      try {
        const text = await ifExists(Deno.readTextFile(configPath));
        if (text === undefined) continue; // not set up (yet)
        const config = parseConfig(text, serverConfigSchema, configPath) as { port: number; strategy?: string };
        if (config.strategy === "restart") continue; // the app binds its port itself
        port = config.port;
      } catch (error) {
        if (error instanceof Deno.errors.NotADirectory) continue;
        problems.add(app);
        const keeps = previous ? `; it keeps :${previous.port} → ${describeTarget(previous.target)}` : "";
        this.#problem(app, `skipping ${app}: ${message(error)}${keeps}`);
        if (previous) next.set(app, previous);
        continue;
      }
      let target: RouteTarget | undefined;
      try {
        target = await readRoute(dir);
      } catch (error) {
        problems.add(app);
        target = previous?.target;
        this.#problem(app, `${app}: ${message(error)}; it keeps ${describeTarget(target)}`);
      }
      next.set(app, { app, port, target });
    }
    const byPort = new Map<number, string>();
    for (const route of next.values()) {
      const owner = byPort.get(route.port);
      if (owner === undefined) {
        byPort.set(route.port, route.app);
        continue;
      }
      problems.add(route.app);
      this.#problem(route.app, `skipping ${route.app}: port ${route.port} is already ${owner}'s`);
      next.delete(route.app);
    }
    for (const app of this.#problems.keys()) if (!problems.has(app)) this.#problems.delete(app);
    this.#logChanges(next);
    this.#routes = next;
    this.#byPort = byPort;
    for (const [port, server] of this.#listeners) {
      if (byPort.has(port)) continue;
      this.#listeners.delete(port);
      const stopping: Promise<void> = server.shutdown().catch(() => {}).finally(() => this.#stopping.delete(stopping));
      this.#stopping.add(stopping);
      this.#log(`closed ${this.#address(port)}`);
    }
    for (const port of [...this.#listenErrors.keys()]) if (!byPort.has(port)) this.#listenErrors.delete(port);
    for (const [port, app] of byPort) if (!this.#listeners.has(port)) this.#listen(port, app);
    return next.size;
  }

  #logChanges(next: Map<string, Route>): void {
    for (const [app, route] of next) {
      const previous = this.#routes.get(app);
      if (!previous) {
        this.#log(`${app}: :${route.port} → ${describeTarget(route.target)}`);
        continue;
      }
      if (previous.port !== route.port) this.#log(`${app}: public port ${previous.port} → ${route.port}`);
      if (JSON.stringify(previous.target) !== JSON.stringify(route.target)) {
        this.#log(`${app}: ${describeTarget(previous.target)} → ${describeTarget(route.target)}`);
      }
    }
    for (const [app, route] of this.#routes) if (!next.has(app)) this.#log(`${app}: removed (was :${route.port})`);
  }

  #problem(app: string, line: string): void {
    if (this.#problems.get(app) === line) return;
    this.#problems.set(app, line);
    this.#log(line);
  }

  #address(port: number): string {
    return `${this.#host.includes(":") ? `[${this.#host}]` : this.#host}:${port}`;
  }

  #listen(port: number, app: string): void {
    if (this.#closing) return;
    try {
      const server = Deno.serve({
        hostname: this.#host,
        port,
        onListen: () => {},
        onError: (error) => {
          this.#log(`${this.#address(port)}: ${message(error)}`);
          return textResponse(500, "500 proxy error");
        },
      }, (req, info) => {
        const owner = this.#byPort.get(port);
        if (owner === undefined) return Promise.resolve(textResponse(503, `503 nothing is routed to port ${port}`));
        return this.handler(owner)(req, info);
      });
      this.#listeners.set(port, server);
      this.#listenErrors.delete(port);
      this.#log(`listening on ${this.#address(port)} for ${app}`);
    } catch (error) {
      const text = `cannot listen on ${this.#address(port)} for ${app}: ${message(error)} (retrying every ${
        RELOAD_INTERVAL_MS / 1000
      } s)`;
      if (this.#listenErrors.get(port) === text) return;
      this.#listenErrors.set(port, text);
      this.#log(text);
    }
  }

  /** The routes as they are now. */
  routes(): Route[] {
    return [...this.#routes.values()];
  }

  /** Every route with its requests in flight, for `status`. */
  status(): RouteStatus[] {
    return this.routes().map((route) => ({
      app: route.app,
      port: route.port,
      target: route.target ?? null,
      inFlight: route.target && "port" in route.target ? this.inFlight(route.target.port) : 0,
      listening: this.#listeners.has(route.port),
    }));
  }

  /**
   * The HTTP handler of `app`: forwards to the app's active target as it is when the request
   * arrives (a proxied WebSocket for `Upgrade: websocket`), serves a static target, or answers
   * 502/503 at once with a plain-text reason.
   */
  handler(app: string): ProxyHandler {
    return async (req, info) => {
      const route = this.#routes.get(app);
      if (!route) return textResponse(503, `503 ${app} is not configured on this proxy`);
      const target = route.target;
      if (!target) return textResponse(503, `503 ${app} has no active release yet`);
      try {
        if ("dir" in target) return await serveStatic(target.dir, req);
        if (req.headers.get("upgrade")?.toLowerCase() === "websocket") {
          return await this.#proxyWebSocket(app, target.port, req, info);
        }
        return await this.#forward(app, target.port, req, info);
      } catch (error) {
        this.#log(`${app}: ${req.method} ${new URL(req.url).pathname}: ${message(error)}`);
        return textResponse(500, `500 the proxy failed to handle this request for ${app}`);
      }
    };
  }

  async #forward(app: string, port: number, req: Request, info: Deno.ServeHandlerInfo): Promise<Response> {
    const end = this.#begin(port);
    try {
      const url = new URL(req.url);
      const headers = forwardedHeaders(req.headers, info);
      const clientEncoding = req.headers.get("accept-encoding");
      // Without it fetch asks for gzip and decodes the answer: ask for what the client accepts.
      if (!clientEncoding) headers.set("accept-encoding", "identity");
      headers.delete("expect");
      headers.delete("content-length");
      let body: ReadableStream<Uint8Array> | ArrayBuffer | null = null;
      if (req.body) {
        const length = Number(req.headers.get("content-length") ?? NaN);
        // Small bodies go with a Content-Length (some app servers read no chunked bodies); others stream.
        if (length <= BUFFERED_BODY_MAX) {
          try {
            body = await req.arrayBuffer();
          } catch {
            end();
            return textResponse(400, "400 the request body could not be read");
          }
        } else body = req.body;
      }
      let upstream: Response;
      try {
        upstream = await fetch(`http://127.0.0.1:${port}${url.pathname}${url.search}`, {
          method: req.method,
          headers,
          body,
          redirect: "manual",
          client: this.#client,
        });
      } catch (error) {
        end();
        return this.#upstreamFailure(app, port, error);
      }
      const decoded = DECODED_BY_FETCH.has(upstream.headers.get("content-encoding")?.trim().toLowerCase() ?? "") &&
        headers.get("accept-encoding") !== "identity";
      const out = withoutHopByHop(upstream.headers);
      let gzip = false;
      if (decoded) {
        // fetch handed us the decoded body: label it as such, or encode it again for the client.
        out.delete("content-encoding");
        out.delete("content-length");
        gzip = acceptsGzip(clientEncoding);
        if (gzip) out.set("content-encoding", "gzip");
        const etag = out.get("etag");
        if (etag && !etag.startsWith("W/")) out.set("etag", `W/${etag}`);
      }
      const init = { status: upstream.status, statusText: upstream.statusText, headers: out };
      if (!upstream.body || req.method === "HEAD" || NULL_BODY_STATUS.has(upstream.status)) {
        upstream.body?.cancel().catch(() => {});
        end();
        return new Response(null, init);
      }
      let stream: ReadableStream<Uint8Array> = upstream.body;
      // Deno.serve settles `completed` once the response is fully sent, or the client is gone.
      info.completed?.then(end, end);
      const length = Number(out.get("content-length") ?? NaN);
      // A small body of known length goes as is: Deno sends fetch's body without a JS round trip per
      // chunk (faster), but it cannot be cut by close(). Streams and large bodies are wrapped.
      if (!info.completed || gzip || !(length <= DIRECT_BODY_MAX)) stream = this.#track(stream, end);
      if (gzip) stream = stream.pipeThrough(new CompressionStream("gzip") as TransformStream<Uint8Array, Uint8Array>);
      return new Response(stream, init);
    } catch (error) {
      end();
      throw error;
    }
  }

  #upstreamFailure(app: string, port: number, error: unknown): Response {
    const detail = errorChain(error);
    let text: string;
    if (/connection refused/i.test(detail)) {
      text = `502 ${app}: nothing answers on 127.0.0.1:${port} (connection refused)`;
    } else {
      text = `502 ${app}: the app on 127.0.0.1:${port} did not answer: ${detail.split("\n")[0].slice(0, 300)}`;
    }
    this.#log(text);
    return textResponse(502, text);
  }

  /** `body`, counted in flight for `end` until it is fully read, cancelled or fails. */
  #track(body: ReadableStream<Uint8Array>, end: () => void): ReadableStream<Uint8Array> {
    const reader = body.getReader();
    let finished = false;
    let abort = () => {};
    const finish = () => {
      finished = true;
      this.#active.delete(abort);
      end();
    };
    return new ReadableStream<Uint8Array>({
      start: (controller) => {
        abort = () => {
          if (finished) return;
          finish();
          reader.cancel("the proxy is shutting down").catch(() => {});
          controller.error(new Error("the proxy is shutting down"));
        };
        this.#active.add(abort);
      },
      pull: async (controller) => {
        try {
          const { done, value } = await reader.read();
          if (finished) return;
          if (done) {
            finish();
            controller.close();
          } else controller.enqueue(value);
        } catch (error) {
          if (finished) return;
          finish();
          controller.error(error);
        }
      },
      cancel: (reason) => {
        finish();
        return reader.cancel(reason).catch(() => {});
      },
    }, { highWaterMark: 0 });
  }

  async #proxyWebSocket(app: string, port: number, req: Request, info: Deno.ServeHandlerInfo): Promise<Response> {
    const url = new URL(req.url);
    const headers = forwardedHeaders(req.headers, info);
    for (const name of [...WEBSOCKET_HANDSHAKE, "sec-websocket-protocol"]) headers.delete(name);
    const protocols = (req.headers.get("sec-websocket-protocol") ?? "").split(",").map((p) => p.trim()).filter(
      Boolean,
    );
    const end = this.#begin(port);
    let upstream: WebSocket;
    try {
      upstream = new WebSocket(`ws://127.0.0.1:${port}${url.pathname}${url.search}`, {
        protocols,
        headers,
        client: this.#client,
      });
    } catch (error) {
      end();
      return this.#upstreamFailure(app, port, error);
    }
    upstream.binaryType = "arraybuffer";
    const opened = await new Promise<true | string>((resolve) => {
      const timer = setTimeout(() => resolve("timed out"), WEBSOCKET_OPEN_TIMEOUT_MS);
      upstream.onopen = () => {
        clearTimeout(timer);
        resolve(true);
      };
      upstream.onerror = (event) => {
        clearTimeout(timer);
        resolve((event as ErrorEvent).message || "connection failed");
      };
      upstream.onclose = (event) => {
        clearTimeout(timer);
        resolve(`closed (${event.code})`);
      };
    });
    if (opened !== true) {
      end();
      closeQuietly(upstream, 1000, "");
      const text = /tcp connect error|connection refused/i.test(opened)
        ? `502 ${app}: nothing answers on 127.0.0.1:${port} (connection refused)`
        : `502 ${app}: the WebSocket to 127.0.0.1:${port} failed: ${opened}`;
      this.#log(text);
      return textResponse(502, text);
    }
    let socket: WebSocket;
    let response: Response;
    try {
      ({ socket, response } = Deno.upgradeWebSocket(req, upstream.protocol ? { protocol: upstream.protocol } : {}));
    } catch (error) {
      end();
      closeQuietly(upstream, 1000, "");
      return textResponse(400, `400 not a valid WebSocket request: ${message(error)}`);
    }
    socket.binaryType = "arraybuffer";
    let ended = false;
    const abort = () => {
      if (ended) return;
      ended = true;
      this.#active.delete(abort);
      end();
      closeQuietly(socket, 1001, "");
      closeQuietly(upstream, 1001, "");
    };
    this.#active.add(abort);
    const pending: (string | ArrayBuffer)[] = [];
    upstream.onmessage = (event) => {
      if (socket.readyState === WebSocket.OPEN) socket.send(event.data);
      else if (socket.readyState === WebSocket.CONNECTING) pending.push(event.data);
    };
    socket.onopen = () => {
      for (const data of pending.splice(0)) socket.send(data);
    };
    socket.onmessage = (event) => {
      if (upstream.readyState === WebSocket.OPEN) upstream.send(event.data);
    };
    socket.onclose = (event) => {
      closeQuietly(upstream, event.code, event.reason);
      abort();
    };
    upstream.onclose = (event) => {
      closeQuietly(socket, event.code, event.reason);
      abort();
    };
    socket.onerror = () => {};
    upstream.onerror = () => {};
    return response;
  }

  /** Counts one request in flight to `port`; the returned function (idempotent) ends it. */
  #begin(port: number): () => void {
    this.#inFlight.set(port, (this.#inFlight.get(port) ?? 0) + 1);
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      const left = (this.#inFlight.get(port) ?? 1) - 1;
      if (left > 0) {
        this.#inFlight.set(port, left);
        return;
      }
      this.#inFlight.delete(port);
      for (const wake of [...this.#drainWaiters.get(port) ?? []]) wake();
    };
  }

  /** Requests (and WebSockets) in flight to `targetPort` now. */
  inFlight(targetPort: number): number {
    return this.#inFlight.get(targetPort) ?? 0;
  }

  /** Resolves when no request to `targetPort` is in flight (`drained: true`) or after `timeoutMs`. */
  drain(targetPort: number, timeoutMs: number): Promise<{ drained: boolean; inFlight: number }> {
    if (this.inFlight(targetPort) === 0) return Promise.resolve({ drained: true, inFlight: 0 });
    return new Promise((resolve) => {
      const waiters = this.#drainWaiters.get(targetPort) ?? new Set();
      this.#drainWaiters.set(targetPort, waiters);
      const wake = () => {
        clearTimeout(timer);
        waiters.delete(wake);
        if (!waiters.size) this.#drainWaiters.delete(targetPort);
        const inFlight = this.inFlight(targetPort);
        resolve({ drained: inFlight === 0, inFlight });
      };
      const timer = setTimeout(wake, Math.max(0, timeoutMs));
      waiters.add(wake);
    });
  }

  async #openControl(): Promise<void> {
    try {
      await this.#bindControl();
    } catch (error) {
      if (!(error instanceof Deno.errors.PermissionDenied)) throw error;
      throw new DeployParadigmError(`cannot create the control socket ${this.controlSocket}: permission denied`, {
        suggestion: "run the proxy as root (setup installs it as a service)",
        cause: error,
      });
    }
    this.#controlLoop = this.#acceptControl(this.#control!);
  }

  /** Held for the proxy's lifetime: one proxy per server, even when two start at the same moment. */
  #instanceLock?: Deno.FsFile;

  async #bindControl(): Promise<void> {
    const path = this.controlSocket;
    const dir = dirname(path);
    await Deno.mkdir(dir, { recursive: true });
    const lockFile = await Deno.open(join(dir, ".proxy.lock"), { read: true, write: true, create: true, mode: 0o600 });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const locked = await Promise.race([
      lockFile.lock(true).then(() => true),
      new Promise<boolean>((resolve) => timer = setTimeout(resolve, 500, false)),
    ]);
    clearTimeout(timer);
    if (!locked) {
      throw new DeployParadigmError(`another proxy is already running (it holds ${join(dir, ".proxy.lock")})`, {
        suggestion: "stop it first (systemctl stop deploy-paradigm-proxy), or use it",
      });
    }
    this.#instanceLock = lockFile;
    const existing = await ifExists(Deno.lstat(path));
    if (existing) {
      if (!existing.isSocket) {
        throw new DeployParadigmError(`${path} exists and is not a socket`, { suggestion: "remove it" });
      }
      const live = await Deno.connect({ transport: "unix", path }).then((conn) => {
        conn.close();
        return true;
      }, () => false);
      if (live) {
        throw new DeployParadigmError(`another proxy is already running (${path} answers)`, {
          suggestion: "stop it first (systemctl stop deploy-paradigm-proxy), or use it",
        });
      }
      await Deno.remove(path);
      this.#log(`removed a stale control socket ${path}`);
    }
    // Bind in a private (0700) directory, restrict to 0600, then move into place: never reachable before.
    const temp = await Deno.makeTempDir({ dir, prefix: ".proxy-sock-" });
    try {
      const tempPath = join(temp, "s");
      const listener = Deno.listen({ transport: "unix", path: tempPath });
      try {
        await Deno.chmod(tempPath, 0o600);
        await Deno.rename(tempPath, path);
        this.#controlIno = (await Deno.lstat(path)).ino;
      } catch (error) {
        listener.close();
        throw error;
      }
      this.#control = listener;
    } finally {
      await Deno.remove(temp, { recursive: true }).catch(() => {});
    }
  }

  async #acceptControl(listener: Deno.Listener<Deno.UnixConn, Deno.UnixAddr>): Promise<void> {
    try {
      for await (const conn of listener) {
        this.#controlConns.add(conn);
        this.#serveControl(conn).catch(() => {}).finally(() => {
          this.#controlConns.delete(conn);
          try {
            conn.close();
          } catch { /* already closed */ }
        });
      }
    } catch (error) {
      if (!this.#closing) this.#log(`control socket failed: ${message(error)}`);
    }
  }

  async #serveControl(conn: Deno.UnixConn): Promise<void> {
    const decoder = new TextDecoder();
    const encoder = new TextEncoder();
    const buffer = new Uint8Array(16 * 1024);
    let pending = "";
    const reply = async (value: unknown) => {
      const bytes = encoder.encode(JSON.stringify(value) + "\n");
      for (let written = 0; written < bytes.length;) written += await conn.write(bytes.subarray(written));
    };
    while (true) {
      const n = await conn.read(buffer);
      if (n === null) return;
      pending += decoder.decode(buffer.subarray(0, n), { stream: true });
      for (let newline = pending.indexOf("\n"); newline >= 0; newline = pending.indexOf("\n")) {
        const line = pending.slice(0, newline).trim();
        pending = pending.slice(newline + 1);
        if (line) await reply(await this.#controlOp(line));
      }
      if (pending.length > MAX_CONTROL_LINE) {
        await reply({ ok: false, error: `request line longer than ${MAX_CONTROL_LINE} bytes` });
        return;
      }
    }
  }

  async #controlOp(line: string): Promise<Record<string, unknown>> {
    let request: unknown;
    try {
      request = JSON.parse(line);
    } catch {
      return { ok: false, error: "not a JSON object" };
    }
    if (request === null || typeof request !== "object" || Array.isArray(request)) {
      return { ok: false, error: "not a JSON object" };
    }
    const { op, port, timeoutMs } = request as Record<string, unknown>;
    try {
      switch (op) {
        case "reload": {
          const routes = await this.reload();
          this.#log(`reload: ${routes} route(s)`);
          return { ok: true, routes };
        }
        case "drain": {
          if (typeof port !== "number" || !Number.isInteger(port) || port < 1 || port > 65535) {
            return { ok: false, error: '"port" must be a whole number from 1 to 65535' };
          }
          if (timeoutMs !== undefined && (typeof timeoutMs !== "number" || !(timeoutMs >= 0))) {
            return { ok: false, error: '"timeoutMs" must be a number of milliseconds ≥ 0' };
          }
          const result = await this.drain(port, Math.min((timeoutMs as number | undefined) ?? 30_000, MAX_DRAIN_MS));
          return { ok: true, ...result };
        }
        case "status":
          return { ok: true, routes: this.status() };
        default:
          return { ok: false, error: `unknown op ${JSON.stringify(op)} (reload, drain, status)` };
      }
    } catch (error) {
      return { ok: false, error: message(error) };
    }
  }

  /**
   * Stops the proxy: closes the control socket (and removes it) and the listeners. Requests in
   * flight get up to `graceMs` to finish; then open streams and WebSockets are cut.
   */
  close(graceMs = 0): Promise<void> {
    this.#closing ??= this.#closeNow(graceMs);
    return this.#closing;
  }

  async #closeNow(graceMs: number): Promise<void> {
    clearInterval(this.#timer);
    if (this.#control) {
      try {
        this.#control.close();
      } catch { /* already closed */ }
      for (const conn of this.#controlConns) {
        try {
          conn.close();
        } catch { /* already closed */ }
      }
      await this.#controlLoop;
      const path = this.controlSocket;
      const stat = await ifExists(Deno.lstat(path)).catch(() => undefined);
      if (stat?.isSocket && stat.ino === this.#controlIno) await Deno.remove(path).catch(() => {});
    }
    await this.#reloadChain;
    const shutdowns = [...this.#listeners.values()].map((server) => server.shutdown().catch(() => {}));
    this.#listeners.clear();
    if (graceMs > 0 && this.#active.size) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        Promise.all([...shutdowns, ...this.#stopping]),
        new Promise((resolve) => timer = setTimeout(resolve, graceMs)),
      ]);
      clearTimeout(timer);
    }
    for (const abort of [...this.#active]) abort();
    await Promise.all([...shutdowns, ...this.#stopping]);
    for (const waiters of [...this.#drainWaiters.values()]) for (const wake of [...waiters]) wake();
    this.#client.close();
    this.#instanceLock?.close(); // frees the one-proxy lock
  }
}

/** Serves the proxy in the foreground until SIGINT or SIGTERM (the `proxy` command). Returns the exit code. */
export async function runProxy(options: { host: string; root?: string }): Promise<number> {
  const root = options.root ?? prefix();
  try {
    Deno.listen({ hostname: options.host, port: 0 }).close();
  } catch (error) {
    throw new UsageError(`--host ${options.host}: cannot listen there (${message(error)})`, {
      suggestion: "use an address of this machine, e.g. 0.0.0.0 (all IPv4), :: or 127.0.0.1",
    });
  }
  const log = (line: string) => console.log(line);
  const proxy = new ProxyServer({ root, host: options.host, log });
  const stop = Promise.withResolvers<Deno.Signal>();
  const listeners = (["SIGINT", "SIGTERM"] as const).map((signal) => {
    const listener = () => stop.resolve(signal);
    Deno.addSignalListener(signal, listener);
    return [signal, listener] as const;
  });
  try {
    await proxy.start();
    const signal = await stop.promise;
    log(`${signal}: stopping (requests in flight get up to 10 s)`);
    // Small unwrapped responses cannot be cut: should one stall, exit anyway a little later.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const stopped = await Promise.race([
      proxy.close(10_000).then(() => true),
      new Promise<false>((resolve) => timer = setTimeout(resolve, 15_000, false)),
    ]);
    clearTimeout(timer);
    log(stopped ? "proxy stopped" : "proxy stopped (some responses were still being sent)");
    return 0;
  } finally {
    for (const [signal, listener] of listeners) Deno.removeSignalListener(signal, listener);
  }
}

/** A short plain-text answer. */
function textResponse(status: number, text: string, headers: Record<string, string> = {}): Response {
  return new Response(text + "\n", {
    status,
    headers: { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store", ...headers },
  });
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** The messages of `error` and its causes, joined. */
function errorChain(error: unknown): string {
  const parts: string[] = [];
  for (let e = error, depth = 0; e !== undefined && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    parts.push(message(e));
    if (!(e instanceof Error)) break;
  }
  return parts.join(": ");
}

function closeQuietly(socket: WebSocket, code: number, reason: string): void {
  if (socket.readyState === WebSocket.CLOSING || socket.readyState === WebSocket.CLOSED) return;
  // close() accepts only 1000 and 3000-4999; other codes (1001, 1006, ...) become 1000.
  const allowed = code === 1000 || (code >= 3000 && code <= 4999);
  try {
    socket.close(allowed ? code : 1000, reason);
  } catch {
    try {
      socket.close();
    } catch { /* nothing left to close */ }
  }
}

/** A copy of `headers` without hop-by-hop headers (and those named by Connection). */
function withoutHopByHop(headers: Headers): Headers {
  const out = new Headers(headers);
  const named = (headers.get("connection") ?? "").split(",").map((name) => name.trim().toLowerCase());
  for (const name of [...HOP_BY_HOP, ...named]) if (name) out.delete(name);
  return out;
}

/** The request headers for the app: Host kept, hop-by-hop dropped, X-Forwarded-* set. */
function forwardedHeaders(headers: Headers, info: Deno.ServeHandlerInfo): Headers {
  const out = withoutHopByHop(headers);
  const address = info.remoteAddr as Partial<Deno.NetAddr>;
  if (address.hostname) {
    const prior = headers.get("x-forwarded-for");
    out.set("x-forwarded-for", prior ? `${prior}, ${address.hostname}` : address.hostname);
  }
  out.set("x-forwarded-proto", "http");
  const host = headers.get("host");
  if (host) out.set("x-forwarded-host", host);
  return out;
}

/** Whether an Accept-Encoding value accepts gzip. */
function acceptsGzip(value: string | null): boolean {
  if (!value) return false;
  let gzip: number | undefined;
  let any: number | undefined;
  for (const part of value.split(",")) {
    const [name, ...params] = part.split(";").map((p) => p.trim().toLowerCase());
    const q = params.find((p) => p.startsWith("q="));
    const weight = q ? Number(q.slice(2)) : 1;
    if (name === "gzip" || name === "x-gzip") gzip = weight;
    else if (name === "*") any = weight;
  }
  return (gzip ?? any ?? 0) > 0;
}

const CONTENT_TYPES: Record<string, string> = {
  html: "text/html; charset=utf-8",
  htm: "text/html; charset=utf-8",
  css: "text/css; charset=utf-8",
  js: "text/javascript; charset=utf-8",
  mjs: "text/javascript; charset=utf-8",
  json: "application/json",
  map: "application/json",
  svg: "image/svg+xml",
  png: "image/png",
  jpg: "image/jpeg",
  jpeg: "image/jpeg",
  gif: "image/gif",
  webp: "image/webp",
  avif: "image/avif",
  ico: "image/x-icon",
  txt: "text/plain; charset=utf-8",
  xml: "application/xml",
  pdf: "application/pdf",
  woff: "font/woff",
  woff2: "font/woff2",
  wasm: "application/wasm",
};

/** The Content-Type of a file name, by extension. */
export function contentType(name: string): string {
  const dot = name.lastIndexOf(".");
  return (dot > 0 && CONTENT_TYPES[name.slice(dot + 1).toLowerCase()]) || "application/octet-stream";
}

/**
 * Serves `req` from the static release `dir`: GET and HEAD, `index.html` for directories,
 * ETag/Last-Modified with 304s, 404 otherwise. Nothing outside `dir` and nothing whose path has
 * a segment starting with `.` (`.env`, `.deploy-paradigm.json`) is ever served, symlinks
 * included.
 */
export async function serveStatic(dir: string, req: Request): Promise<Response> {
  if (req.method !== "GET" && req.method !== "HEAD") {
    return textResponse(405, "405 method not allowed", { allow: "GET, HEAD" });
  }
  const url = new URL(req.url);
  const segments: string[] = [];
  for (const raw of url.pathname.split("/")) {
    let segment: string;
    try {
      segment = decodeURIComponent(raw);
    } catch {
      return textResponse(400, "400 malformed percent-encoding in the path");
    }
    if (segment === "") continue;
    if (segment.startsWith(".") || /[\0\\/]/.test(segment)) return await notFound(null, req);
    segments.push(segment);
  }
  let root: string;
  try {
    root = await Deno.realPath(dir);
  } catch {
    return textResponse(503, "503 the release's files are missing");
  }
  let file = await resolveInside(root, join(root, ...segments));
  if (!file) return await notFound(root, req);
  let stat = await Deno.stat(file);
  if (stat.isDirectory) {
    if (!url.pathname.endsWith("/")) {
      const location = "/" + segments.map(encodeURIComponent).map((s) => s + "/").join("") + url.search;
      return new Response(null, { status: 301, headers: { location } });
    }
    file = await resolveInside(root, join(file, "index.html"));
    if (!file) return await notFound(root, req);
    stat = await Deno.stat(file);
  }
  if (!stat.isFile) return await notFound(root, req);
  return await fileResponse(file, stat, req, 200);
}

/** The real path of `path` when it exists inside `root` with no dot-segment, else undefined. */
async function resolveInside(root: string, path: string): Promise<string | undefined> {
  let real: string;
  try {
    real = await Deno.realPath(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound || error instanceof Deno.errors.NotADirectory) return undefined;
    throw error;
  }
  const base = root.endsWith(sep) ? root : root + sep;
  if (real !== root && !real.startsWith(base)) return undefined;
  if (relative(root, real).split(sep).some((segment) => segment.startsWith("."))) return undefined;
  return real;
}

async function notFound(root: string | null, req: Request): Promise<Response> {
  const page = root ? await resolveInside(root, join(root, "404.html")) : undefined;
  const stat = page ? await Deno.stat(page) : undefined;
  if (page && stat?.isFile) return await fileResponse(page, stat, req, 404);
  return textResponse(404, "404 not found");
}

async function fileResponse(path: string, stat: Deno.FileInfo, req: Request, status: number): Promise<Response> {
  const mtime = stat.mtime?.getTime() ?? 0;
  const headers = new Headers({
    "content-type": contentType(path),
    "cache-control": "no-cache",
    "x-content-type-options": "nosniff",
  });
  if (status === 200) {
    const etag = `"${stat.size.toString(16)}-${Math.floor(mtime).toString(16)}"`;
    headers.set("etag", etag);
    if (stat.mtime) headers.set("last-modified", stat.mtime.toUTCString());
    if (notModified(req.headers, etag, mtime)) return new Response(null, { status: 304, headers });
  }
  headers.set("content-length", String(stat.size));
  if (req.method === "HEAD") return new Response(null, { status, headers });
  const file = await Deno.open(path);
  return new Response(file.readable, { status, headers });
}

function notModified(headers: Headers, etag: string, mtime: number): boolean {
  const match = headers.get("if-none-match");
  if (match !== null) {
    return match.split(",").some((tag) => {
      const value = tag.trim();
      return value === "*" || value.replace(/^W\//, "") === etag;
    });
  }
  const since = Date.parse(headers.get("if-modified-since") ?? "");
  return !Number.isNaN(since) && Math.floor(mtime / 1000) <= Math.floor(since / 1000);
}
