/**
 * The built-in reverse proxy: one long-running process per server, composed of the parts in
 * this folder (as kamal-proxy is): the route table (./table.ts), the handler (./handler.ts),
 * forwarding (./forward.ts, ./upstream.ts), HTTP/1.1 and WebSocket tunnels (./h1.ts, ./wire.ts), in-flight and drain
 * (./inflight.ts), balancing across an app's instances (./balance.ts), the control socket
 * (./control.ts), static files (./static.ts), listeners with limits (./listener.ts), certificates
 * (./acme.ts) and metrics (./metrics.ts).
 *
 * Apps without domains are served on their own public `port` (config.yml). Apps with `domains`
 * share the HTTP and HTTPS ports of proxy.yml and are routed by host name, with certificates
 * from ACME or the operator's own. Deploys switch an app's target (route.json) at run time:
 * a changed target applies to the next request while requests in flight finish on the old one,
 * and `drain` tells a deploy when the old target has no request left. Routes are re-read on
 * `reload` (control socket) and every 2 s.
 *
 * One file on purpose (over 400 lines): {@link ProxyServer} is where the parts above are put
 * together and where their lifecycle (start, reload, listeners per port, certificates, drain,
 * close) is kept in one order; each part's own logic lives in its module.
 * @module
 */
import { UsageError } from "../errors.ts";
import { prefix } from "../paths.ts";
import type { CertificateManager } from "./acme.ts";
import { Balancer } from "./balance.ts";
import { isTrusted, loadProxyConfig, type ProxyConfig, trustedFile } from "./config.ts";
import { ControlServer } from "./control.ts";
import { forward, type ForwardDeps } from "./forward.ts";
import type { H1Deps } from "./h1.ts";
import { createHandler, type Entry, type HandlerDeps } from "./handler.ts";
import { InFlight } from "./inflight.ts";
import { Gate, type Limits } from "./gate.ts";
import { raiseFdLimit, setNice } from "./process.ts";
import { HttpListener } from "./listener.ts";
import { ProxyMetrics, serveMetrics } from "./metrics.ts";
import { startMetricsLog } from "./metrics_log.ts";
import { message } from "./pages.ts";
import { maintenanceChange } from "./maintenance.ts";
import { canaryChange, canaryStats } from "./canary.ts";
import { controlSocketPath, describeTarget, type Route, type RouteTarget, targetPorts } from "./routes.ts";
import { serveStatic } from "./static.ts";
import { describeRoute, loadRoutes, RouteTable, type TrustCheck } from "./table.ts";
import { UpstreamPool } from "./upstream.ts";
import { heldBy, readListeners } from "../listeners.ts";
import { userNameOf } from "../users.ts";

/** Options of a {@link ProxyServer}. */
export interface ProxyOptions {
  /** The server root (the prefix): routes come from `<root>/opt/deployments/<app>/`. */
  root: string;
  /** Address the public listeners bind to, e.g. `0.0.0.0`. */
  host: string;
  /** Receives one line per event (listener opened or closed, route changed, problem). */
  log?: (line: string) => void;
  /** Who may own the files the proxy trusts (tests); default: root or the proxy's own user, not writable by others. */
  trust?: TrustCheck;
  /**
   * The proxy has the process to itself (the `proxy` command): it sets the process's nice value to
   * proxy.yml `priority` at start. Off (default) for a proxy inside another program, such as a test:
   * the value would be the whole program's, and its children's.
   */
  ownProcess?: boolean;
  /** Distinct TLS server names before a fresh listener takes over (tests; default: the listener's). */
  maxServerNames?: number;
}

/** One route as `status` reports it. */
export interface RouteStatus {
  app: string;
  port: number;
  domains: string[];
  target: RouteTarget | null;
  /** Requests in flight to the target port, or to all its instances (0 for static targets). */
  inFlight: number;
  /** A target with several ports: each instance's requests in flight, and whether it is in rotation. */
  instances?: { port: number; inFlight: number; inRotation: boolean }[];
  /** Whether the app's public port (or the shared ports, for apps with domains) is open. */
  listening: boolean;
  /** Why it is not: the error of the last try to listen there (it is retried). */
  listenError?: string;
  /** Set when the app is in maintenance (its requests get 503, see ./maintenance.ts). */
  maintenance?: true;
}

/** How often routes are re-read without a `reload`. */
export const RELOAD_INTERVAL_MS = 2000;
/** What the shared HTTP and HTTPS listeners are for, in their log lines. */
const SHARED = "apps with domains";

/** The reverse proxy of one server. */
export class ProxyServer {
  readonly #root: string;
  readonly #host: string;
  readonly #log: (line: string) => void;
  readonly #trust: TrustCheck;
  readonly #ownProcess: boolean;
  readonly #maxServerNames?: number;
  readonly #inFlight = new InFlight();
  readonly #balancer = new Balancer(this.#inFlight, (line) => this.#log(line));
  readonly #metrics = new ProxyMetrics();
  #config?: ProxyConfig;
  #pool?: UpstreamPool;
  #forwardDeps?: ForwardDeps;
  #gate?: Gate;
  #table = new RouteTable([]);
  #loaded = new Map<string, Route>();
  /**
   * Target ports another uid listens on (not the app's user: see {@link Route.owner}), with why:
   * the pool connects to none of them (502). Found by each reload (every 2 s, and when told).
   */
  #taken = new Map<number, string>();
  /** Last problem logged per app, so the 2 s re-read does not repeat it. */
  #problems = new Map<string, string>();
  /** Per-port listeners of apps without domains. */
  #listeners = new Map<number, HttpListener>();
  #listenErrors = new Map<number, { what: string; text: string }>();
  #http?: HttpListener;
  #https?: HttpListener;
  #certs?: CertificateManager;
  #control: ControlServer;
  #stopMetrics: (() => Promise<void>)[] = [];
  #reloadChain: Promise<unknown> = Promise.resolve();
  #timer?: ReturnType<typeof setInterval>;
  #closing?: Promise<void>;
  #forgetErrors?: () => void;
  readonly #handlerDeps: HandlerDeps = {
    table: () => this.#table,
    forward: (route, port, req, headers) => forward(this.#forwardDeps!, route.app, port, req, headers),
    serveStatic,
    challenge: (token) => this.#certs?.challengeResponse(token),
    hasCertificate: (host) => this.#certs?.hasCertificate(host) ?? false,
    servesTls: (host) => this.#certs?.certificateFor(host) !== undefined,
    httpsPort: () => this.#config?.https ?? 443,
    measure: (app, slot) => this.#metrics.begin(app, slot),
    log: (line) => this.#log(line),
  };
  readonly #handle = createHandler(this.#handlerDeps);
  #http1?: H1Deps;

  constructor(options: ProxyOptions) {
    this.#root = options.root;
    this.#host = options.host;
    this.#log = options.log ?? (() => {});
    this.#trust = options.trust ?? trustedFile;
    this.#ownProcess = options.ownProcess ?? false;
    this.#maxServerNames = options.maxServerNames;
    this.#control = new ControlServer(controlSocketPath(this.#root), {
      reload: async () => {
        const routes = await this.reload();
        this.#log(`reload: ${routes} route(s)`);
        return routes;
      },
      drain: (port, timeoutMs) => this.drain(port, timeoutMs),
      status: () => this.status(),
      host: () => this.#host,
      problems: () => Object.fromEntries(this.#problems),
      shared: () => ({
        http: this.#http ? this.#config?.http ?? null : null,
        https: this.#https ? this.#config?.https ?? null : null,
      }),
      certificates: () => this.#certs?.state().certificates ?? {},
      renew: async (app) => {
        if (!this.#certs) throw new Error("no app has domains");
        await this.#certs.renewNow(app);
        return this.#certs.state().certificates[app] ?? null;
      },
      canary: (app) => {
        if (!this.#table.app(app)) throw new Error(`the proxy serves no app named ${app}`);
        return canaryStats(this.#table.app(app));
      },
      canaryProblem: (app) => this.#table.app(app)?.canaryProblem,
    }, this.#log);
  }

  /** The control socket's path. */
  get controlSocket(): string {
    return this.#control.path;
  }

  /** The pure handler of this proxy (tests call it without sockets). */
  get handler(): (req: Request, conn: import("./handler.ts").Conn) => Promise<Response> {
    return this.#handle;
  }

  /** Opens the control socket, reads proxy.yml, loads the routes, opens their listeners, and starts the 2 s re-read. */
  async start(): Promise<void> {
    await this.#control.open();
    this.#forgetErrors = keepRunningOnClosedConnections(this.#log);
    try {
      const config = await loadProxyConfig(this.#root, this.#trust);
      this.#config = config;
      const fdLimit = await raiseFdLimit();
      const nice = this.#ownProcess ? setNice(config.priority) : undefined;
      // A connection holds up to four files: its own, an app's socket, and for HTTP/2 its loopback pair
      // (./h2_guard.ts; each further HTTP/2 request in flight counts as a connection); keep room for files
      // and the control socket.
      const cap = Math.max(64, Math.floor((fdLimit - 256) / 4));
      const limits: Limits = { ...config.limits, maxConnections: Math.min(config.limits.maxConnections, cap) };
      this.#gate = new Gate(limits, this.#log);
      this.#gate.onOpen = () => this.#metrics.connectionOpened();
      this.#gate.onClose = () => this.#metrics.connectionClosed();
      this.#pool = new UpstreamPool({
        headerTimeoutMs: config.limits.upstreamTimeoutMs,
        unrefIdle: false,
        refuse: (port) => this.#taken.get(port),
      });
      this.#http1 = {
        handlerDeps: this.#handlerDeps,
        handler: this.#handle,
        pool: this.#pool,
        inFlight: this.#inFlight,
        balancer: this.#balancer,
        requestTimeoutMs: config.limits.requestTimeoutMs,
        upstreamTimeoutMs: config.limits.upstreamTimeoutMs,
      };
      this.#forwardDeps = {
        pool: this.#pool,
        inFlight: this.#inFlight,
        balancer: this.#balancer,
        log: this.#log,
        requestTimeoutMs: config.limits.requestTimeoutMs,
      };
      if (config.metrics) {
        const logged = startMetricsLog({ root: this.#root, metrics: this.#metrics, log: this.#log });
        this.#stopMetrics.push(() => logged.stop());
        this.#serveMetrics();
      }
      const count = await this.reload();
      this.#log(
        `proxy ready: ${count} app(s), control socket ${this.controlSocket}, ` +
          `up to ${limits.maxConnections} connections (open files: ${fdLimit})` +
          (nice ? `, priority ${nice.nice}` : "") +
          (nice?.problem ? ` (proxy.yml priority ${config.priority}: ${nice.problem})` : ""),
      );
    } catch (error) {
      await this.close();
      throw error;
    }
    this.#timer = setInterval(() => {
      this.reload().catch((error) => this.#problem("*", `re-reading the routes failed: ${message(error)}`));
      this.#https?.retryHandOver();
      if (this.#config?.metrics && !this.#metricsServed) this.#serveMetrics();
    }, RELOAD_INTERVAL_MS);
  }

  #metricsServed = false;

  /** The metrics endpoint; a busy port is logged and retried every 2 s, never a reason not to serve the apps. */
  #serveMetrics(): void {
    try {
      const served = serveMetrics(this.#config!.metrics!, this.#metrics);
      this.#metricsServed = true;
      this.#stopMetrics.push(() => served.close());
      this.#problems.delete("#metrics");
      this.#log(`metrics on http://${this.#config!.metrics}/metrics`);
    } catch (error) {
      this.#problem("#metrics", `cannot serve the metrics on ${this.#config!.metrics}: ${message(error)} (retrying)`);
    }
  }

  /**
   * Re-reads every app's config.yml and route.json; opens listeners for new ports (and the
   * shared ports when an app has domains) and closes those no longer needed. Returns the number
   * of routes. An app whose files are invalid or not trusted is logged and keeps what it had.
   */
  reload(): Promise<number> {
    const run = this.#reloadChain.then(() => this.#reloadNow());
    this.#reloadChain = run.catch(() => {});
    return run;
  }

  async #reloadNow(): Promise<number> {
    if (this.#closing || !this.#config) return this.#table.routes.length;
    const { routes, problems } = await loadRoutes(this.#root, this.#loaded, this.#trust);
    this.#problems.delete("*"); // the routes were read again
    const shared = routes.some((route) => route.domains.length > 0);
    const table = new RouteTable(routes);
    for (const [app, line] of table.conflicts) problems.set(app, line);
    this.#taken = await portsTaken(table, problems);
    for (const [app, line] of problems) this.#problem(app, line);
    // Keys that are not app names (`*`, `:80`, `#metrics`) are the proxy's own and cleared where they arise.
    for (const app of this.#problems.keys()) {
      if (problems.has(app) || !/^[a-z0-9]/.test(app)) continue;
      this.#problems.delete(app);
      this.#log(`${app}: the problem logged before is gone`);
    }
    this.#logChanges(table);
    this.#table = table;
    this.#loaded = new Map(routes.map((route) => [route.app, route]));
    const ports = (route: Route) => [...targetPorts(route.target), ...targetPorts(route.canary?.split.target)];
    this.#balancer.retain(new Set(table.routes.flatMap(ports)));
    await this.#syncCertificates(table);
    this.#syncListeners(table, shared);
    return table.routes.length;
  }

  #logChanges(next: RouteTable): void {
    for (const route of next.routes) {
      const previous = this.#table.app(route.app);
      if (!previous) {
        this.#log(`${route.app}: ${describeRoute(route)}`);
        continue;
      }
      const [before, after] = [
        describeRoute({ ...previous, target: undefined }),
        describeRoute({ ...route, target: undefined }),
      ];
      if (before !== after) this.#log(`${route.app}: ${before.replace(/ → .*$/, "")} → ${after.replace(/ → .*$/, "")}`);
      if (JSON.stringify(previous.target) !== JSON.stringify(route.target)) {
        this.#log(`${route.app}: ${describeTarget(previous.target)} → ${describeTarget(route.target)}`);
      }
    }
    for (const route of this.#table.routes) {
      if (!next.app(route.app)) this.#log(`${route.app}: removed (was ${describeRoute(route)})`);
    }
    for (const route of next.routes) {
      const change = maintenanceChange(this.#table.app(route.app)?.maintenance, route.maintenance);
      if (change) this.#log(`${route.app}: ${change}`);
      const canary = canaryChange(this.#table.app(route.app)?.canary, route.canary);
      if (canary) this.#log(`${route.app}: ${canary}`);
    }
  }

  async #syncCertificates(table: RouteTable): Promise<void> {
    const wanted = new Map<string, { domains: string[]; tls?: { certificate: string; key: string } }>();
    for (const route of table.routes) {
      if (route.domains.length) wanted.set(route.app, { domains: route.domains, tls: route.tls });
    }
    if (!wanted.size && !this.#certs) return;
    if (!this.#certs) {
      const { CertificateManager } = await import("./acme.ts");
      this.#certs = new CertificateManager({ root: this.#root, acme: this.#config!.acme, log: this.#log });
      this.#certs.onChange(() => this.#https?.handOver());
    }
    this.#certs.sync(wanted);
  }

  #syncListeners(table: RouteTable, shared: boolean): void {
    const config = this.#config!;
    for (const [port, listener] of this.#listeners) {
      if (table.byPort(port)) continue;
      this.#listeners.delete(port);
      listener.close(true).catch(() => {});
      this.#log(`closed ${this.#address(port)}`);
    }
    for (const port of [...this.#listenErrors.keys()]) if (!table.byPort(port)) this.#listenErrors.delete(port);
    for (const port of table.ports()) {
      if (!this.#listeners.has(port)) this.#open(port, { kind: "port", port }, table.byPort(port)!.app);
    }
    if (shared) {
      // An app already serving on its own port keeps it: the shared port waits (and says why).
      for (const [port, kind] of [[config.http, "HTTP"], [config.https, "HTTPS"]] as const) {
        const owner = table.byPort(port);
        if (owner) {
          this.#problem(
            `:${port}`,
            `the shared ${kind} port ${port} (proxy.yml) is ${owner.app}'s own port: apps with domains are not ` +
              `served on it until ${owner.app} moves (domains, or another port) or proxy.yml names another port`,
          );
        } else this.#problems.delete(`:${port}`);
      }
      if (!table.byPort(config.http)) this.#http ??= this.#open(config.http, { kind: "http" }, SHARED);
      if (!table.byPort(config.https)) this.#https ??= this.#open(config.https, { kind: "https" }, SHARED);
    } else {
      for (const listener of [this.#http, this.#https]) listener?.close(true).catch(() => {});
      if (this.#http || this.#https) this.#log("closed the shared HTTP and HTTPS ports (no app has domains)");
      this.#http = this.#https = undefined;
    }
  }

  #open(port: number, entry: Entry, what: string): HttpListener | undefined {
    if (this.#closing) return undefined;
    const listener = new HttpListener({
      hostname: this.#host,
      port,
      entry,
      gate: this.#gate!,
      handler: this.#handle,
      http1: this.#http1!,
      isTrusted: (ip) => isTrusted(ip, this.#config!.trustedProxies),
      certificateFor: entry.kind === "https" ? (name) => this.#certs?.certificateFor(name) : undefined,
      http2: this.#config!.http2,
      maxServerNames: this.#maxServerNames,
      log: this.#log,
    });
    try {
      listener.start();
    } catch (error) {
      // An app's own port that the shared listener holds (proxy.yml names it): said as such.
      const key = entry.kind === "port" && this.#http && port === this.#config!.http
        ? "http"
        : entry.kind === "port" && this.#https && port === this.#config!.https
        ? "https"
        : undefined;
      const why = key
        ? `it is proxy.yml's ${key}: port, which the proxy holds for the apps with domains (give ${what} another ` +
          `port: in its config.yml, or proxy.yml another ${key}:)`
        : message(error);
      const text = `cannot listen on ${this.#address(port)} for ${what}: ${why} (retrying every ${
        RELOAD_INTERVAL_MS / 1000
      } s)`;
      if (this.#listenErrors.get(port)?.text !== text) {
        this.#listenErrors.set(port, { what, text });
        this.#log(text);
      }
      return undefined;
    }
    if (entry.kind === "port") this.#listeners.set(port, listener);
    this.#listenErrors.delete(port);
    this.#log(`listening on ${this.#address(port)}${entry.kind === "https" ? " (HTTPS)" : ""} for ${what}`);
    return listener;
  }

  #problem(app: string, line: string): void {
    if (this.#problems.get(app) === line) return;
    this.#problems.set(app, line);
    this.#log(line);
  }

  #address(port: number): string {
    return `${this.#host.includes(":") ? `[${this.#host}]` : this.#host}:${port}`;
  }

  /** The routes as they are now. */
  routes(): Route[] {
    return this.#table.routes;
  }

  /** Every route with its requests in flight, for `status`. */
  status(): RouteStatus[] {
    return this.routes().map((route) => ({
      app: route.app,
      port: route.port,
      domains: route.domains,
      target: route.target ?? null,
      inFlight: targetPorts(route.target).reduce((sum, port) => sum + this.inFlight(port), 0),
      ...(route.target && "ports" in route.target
        ? {
          instances: route.target.ports.map((port) => ({
            port,
            inFlight: this.inFlight(port),
            inRotation: this.#balancer.inRotation(port),
          })),
        }
        : {}),
      listening: route.domains.length ? this.#http !== undefined : this.#listeners.has(route.port),
      ...this.#listenErrorOf(route),
      ...(route.maintenance ? { maintenance: true as const } : {}),
    }));
  }

  /**
   * The last error of listening on the port `route` is served on, while it is not open: its own
   * listener's, or the shared one's for an app with domains (never another app's on that port).
   */
  #listenErrorOf(route: Route): { listenError?: string } {
    const port = route.domains.length ? this.#config?.http : route.port;
    const error = port === undefined ? undefined : this.#listenErrors.get(port);
    const mine = error?.what === (route.domains.length ? SHARED : route.app);
    return error && mine ? { listenError: error.text } : {};
  }

  /** Requests (and WebSockets) in flight to `targetPort` now. */
  inFlight(targetPort: number): number {
    return this.#inFlight.count(targetPort);
  }

  /**
   * Resolves when no request to `targetPort` (or to any of a list of ports: a slot's instances) is
   * in flight (`drained: true`) or after `timeoutMs`.
   */
  drain(targetPort: number | readonly number[], timeoutMs: number): Promise<{ drained: boolean; inFlight: number }> {
    return this.#inFlight.drain(targetPort, timeoutMs);
  }

  /** The certificates' state (none when no app has domains). */
  certificates(): ReturnType<CertificateManager["state"]> | undefined {
    return this.#certs?.state();
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
    await this.#control.close();
    await this.#reloadChain;
    const listeners = [...this.#listeners.values(), this.#http, this.#https].filter((l) => l !== undefined);
    this.#listeners.clear();
    await Promise.all(listeners.map((listener) => listener.close()));
    await this.#gate?.closeAll(this.#inFlight.active ? graceMs : Math.min(graceMs, 1000));
    this.#inFlight.abortAll();
    this.#gate?.stop();
    await Promise.all(this.#stopMetrics.map((stop) => stop().catch(() => {})));
    await this.#certs?.close();
    this.#pool?.close();
    this.#forgetErrors?.();
  }
}

/** Deno's per-connection server can report a closed connection's cancel as uncaught: never let it stop the proxy. */
function keepRunningOnClosedConnections(log: (line: string) => void): () => void {
  const onError = (event: ErrorEvent) => {
    if (event.error instanceof Deno.errors.BadResource) {
      event.preventDefault();
      log(`ignored: ${message(event.error)} (a connection closed while being cut)`);
    }
  };
  globalThis.addEventListener("error", onError);
  return () => globalThis.removeEventListener("error", onError);
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
  const proxy = new ProxyServer({ root, host: options.host, log, ownProcess: true });
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

/**
 * The target ports of `table` that a uid other than their app's user listens on (an app that took
 * another's slot port when its process crashed or stopped), read from /proc once, with why; each
 * adds a line to its app's `problems` (logged once, and its end too).
 */
async function portsTaken(table: RouteTable, problems: Map<string, string>): Promise<Map<number, string>> {
  const taken = new Map<number, string>();
  const owned = table.routes.filter((route) => route.owner);
  if (!owned.length) return taken;
  const listeners = await readListeners();
  for (const route of owned) {
    const ports = new Set([...targetPorts(route.target), ...targetPorts(route.canary?.split.target)]);
    for (const port of ports) {
      const why = heldBy(listeners, port, route.owner!.uids, route.owner!.name, userNameOf);
      if (!why) continue;
      taken.set(port, why);
      const line = `${route.app}: ${why}; the proxy does not forward to it (502)`;
      problems.set(route.app, problems.has(route.app) ? `${problems.get(route.app)}\n${line}` : line);
    }
  }
  return taken;
}
