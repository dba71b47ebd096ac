/**
 * The fleet monitor's HTTP API: a pure handler ({@link createFleetHandler}, `Request` →
 * `Response`, no listener of its own) over the read side of the fleet database (./queries.ts),
 * Server-Sent Events for the collector's cycles ({@link FleetEvents}), and Prometheus metrics.
 * {@link serveFleet} wraps it in `Deno.serve`; where it may listen: ./api_binding.ts.
 *
 * Endpoints (GET; HEAD answers the same headers):
 * - `/api/fleet`: every server and app with its state, certificate, processes counted by type and
 *   canary release (./canary_status.ts), and `rules`: the alert rules' subjects firing or pending
 *   (those the running `fleet` judges).
 * - `/api/servers/:name`: one server, its apps (with certificates, each process, and the last run of
 *   each cron job), deployments, error.log lines and its subjects in `rules`.
 * - `/api/search?q=&server=&app=&file=&since=&until=&limit=&before=`: full-text search, newest first.
 * - `/api/logs/context?server=&app=&file=&offset=&lines=&id=`: the lines around a hit.
 * - `/api/deployments?server=&app=&limit=&before=`: deployments, newest first.
 * - `/api/rollouts?app=&limit=`, `/api/rollouts/:id`: rollouts from the laptop (./api_rollouts.ts).
 * - `/api/metrics/server?server=&range=`, `/api/metrics/app?server=&app=&range=`,
 *   `/api/metrics/overview?range=`: chart series (./series.ts) over 1h (default), 24h, 7d or 30d.
 * - `/api/events`: `event: cycle` messages (Server-Sent Events).
 * - `/metrics`: Prometheus text format.
 *
 * The API answers loopback host names only, without a token (DNS rebinding), and never a request
 * from another web site (`Sec-Fetch-Site`, `Origin`: {@link crossSite}), token or not.
 * @module
 */
import { UsageError } from "../errors.ts";
import { checkBinding, isLoopback, listenError } from "./api_binding.ts";
import type { ActiveRuleView } from "./alerts.ts";
import { HttpError, knownTarget, Params } from "./api_params.ts";
import { rolloutEndpoint } from "./api_rollouts.ts";
import { encodeEvent, type FleetEvent, type FleetEvents } from "./events.ts";
import { CONTEXT_LINES, logContext, SEARCH_SYNTAX_HELP, searchLogs, SearchSyntaxError } from "./log_queries.ts";
import { type CollectorStats, metrics } from "./metrics.ts";
import { deployments, fleetOverview, serverDetail } from "./queries.ts";
import { appSeries, overviewSparklines, type Range, RANGES, serverSeries } from "./series.ts";
import { type FreshnessView, PAGE } from "./views.ts";
import type { FleetStore } from "./store.ts";

/** A configured server, as the API needs it. */
export interface FleetServerConfig {
  name: string;
  /** The server's Netdata URL, linked from the dashboard. */
  netdata?: string;
}

/** Options of {@link createFleetHandler}. */
export interface FleetHandlerOptions {
  store: FleetStore;
  /** How fresh data is judged right now. */
  view: () => FreshnessView;
  /** The collector's counters, for /metrics. */
  collectorStats: () => CollectorStats;
  /** The configured servers. */
  servers: () => FleetServerConfig[];
  /** The alert rules' subjects firing or pending (./alerts.ts), for /api/fleet and /api/servers/:name. */
  rules?: () => ActiveRuleView[];
  /**
   * When set, every request to /api/ and /metrics needs `Authorization: Bearer <token>` (or, for
   * /api/events only, `?token=<token>`: EventSource cannot send headers). The dashboard's files
   * load without it.
   */
  token?: string;
  /** What /api/events streams. */
  events: FleetEvents;
  /** Serves the other paths (the dashboard's files); undefined → 404. */
  dashboard?: (path: string) => Response | undefined | Promise<Response | undefined>;
  /**
   * Without a token, requests must be addressed to a loopback name (`localhost`, `127.0.0.1`,
   * `[::1]`), which keeps other web sites from reading the API through DNS rebinding; these host
   * names are accepted too.
   */
  allowedHosts?: string[];
  /** Comment lines on event streams this often (default 15 s). */
  heartbeatMs?: number;
  /** Receives one line per unexpected failure (default: stderr). */
  log?: (line: string) => void;
}

/** An HTTP handler as `Deno.serve` calls it. */
export type FleetHandler = (request: Request) => Promise<Response>;

/** Options of {@link serveFleet}. */
export interface ServeFleetOptions {
  host: string;
  port: number;
  /** The token the handler checks; required to listen beyond loopback. */
  token?: string;
  signal?: AbortSignal;
  onListen?: (address: Deno.NetAddr) => void;
}

const HEARTBEAT_MS = 15_000;
/** Messages queued for a client that does not read before its stream is dropped. */
const MAX_QUEUED_MESSAGES = 256;

const JSON_HEADERS = {
  "content-type": "application/json; charset=utf-8",
  "cache-control": "no-store",
  "x-content-type-options": "nosniff",
};
const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** What {@link serveFleet} knows of the handlers made here: the token checked, and the handler itself. */
const handlers = new WeakMap<
  FleetHandler,
  { token?: string; handle: (request: Request, watch: boolean) => Promise<Response> }
>();
const encoder = new TextEncoder();
/** Creates the API's handler. Throws a {@link UsageError} for an empty token. */
export function createFleetHandler(options: FleetHandlerOptions): FleetHandler {
  const { store, events } = options;
  if (options.token !== undefined && options.token.length === 0) {
    throw new UsageError("the fleet API token is empty", { suggestion: "set a long random token, or none" });
  }
  const tokenDigest = options.token === undefined ? undefined : sha256(options.token);
  const allowedHosts = new Set(options.allowedHosts ?? []);
  const heartbeatMs = options.heartbeatMs ?? HEARTBEAT_MS;
  const log = options.log ?? ((line: string) => console.error(line));

  async function authorized(request: Request, url: URL): Promise<boolean> {
    if (!tokenDigest) return true;
    const header = request.headers.get("authorization");
    // ?token= only where a header cannot be sent (EventSource): elsewhere it would end up in URL logs and history.
    const query = url.pathname === "/api/events" ? url.searchParams.get("token") : null;
    const given = header === null ? query : /^Bearer +(\S+) *$/i.exec(header)?.[1];
    if (!given) return false;
    return constantTimeEqual(await sha256(given), await tokenDigest);
  }

  async function route(request: Request, url: URL, watch: boolean): Promise<Response> {
    const path = url.pathname;
    if (path === "/api/fleet") {
      const overview = fleetOverview(store, options.view());
      const netdata = netdataLinks(options.servers());
      for (const server of overview.servers) {
        const link = netdata.get(server.name);
        if (link) Object.assign(server, { netdata: link });
      }
      return json(200, { ...overview, rules: options.rules?.() ?? [] });
    }
    const server = /^\/api\/servers\/([^/]+)$/.exec(path);
    if (server) {
      const name = decode(server[1]);
      const detail = serverDetail(store, name, options.view());
      if (!detail) throw new HttpError(404, `no server ${JSON.stringify(name)} in the fleet database`);
      const rules = (options.rules?.() ?? []).filter((rule) => rule.server === name);
      return json(200, { ...detail, netdata: netdataLinks(options.servers()).get(name) ?? null, rules });
    }
    if (path === "/api/search") {
      const params = new Params(url);
      const q = params.string("q");
      if (q === undefined || !q.trim()) throw new HttpError(400, "missing q: what to search for", SEARCH_SYNTAX_HELP);
      return json(
        200,
        searchLogs(store, {
          q,
          server: params.string("server"),
          app: params.string("app"),
          file: params.string("file"),
          since: params.time("since"),
          until: params.time("until"),
          limit: params.integer("limit", 1, PAGE.max),
          before: params.integer("before", 1),
        }),
      );
    }
    if (path === "/api/logs/context") {
      const params = new Params(url);
      const where = {
        server: params.required("server"),
        app: params.required("app"),
        file: params.required("file"),
        offset: params.integer("offset", 0) ?? params.missing("offset"),
      };
      const context = logContext(store, {
        ...where,
        id: params.integer("id", 1),
        lines: params.integer("lines", 0, CONTEXT_LINES.max),
      });
      if (!context) throw new HttpError(404, `no line at offset ${where.offset} of ${describe(where)}`);
      return json(200, context);
    }
    if (path === "/api/deployments") {
      const params = new Params(url);
      return json(
        200,
        deployments(store, {
          server: params.string("server"),
          app: params.string("app"),
          limit: params.integer("limit", 1, PAGE.max),
          before: params.integer("before", 1),
        }),
      );
    }
    const rollouts = rolloutEndpoint(store, url);
    if (rollouts) return json(200, rollouts);
    if (path.startsWith("/api/metrics/")) {
      const params = new Params(url);
      const range = params.oneOf("range", Object.keys(RANGES) as Range[]) ?? "1h";
      if (path === "/api/metrics/overview") {
        return json(200, { range, sparklines: overviewSparklines(store, range, Date.now()) });
      }
      if (path === "/api/metrics/server") {
        return json(200, serverSeries(store, knownTarget(store, params, false).server, range, Date.now()));
      }
      if (path === "/api/metrics/app") {
        const { server, app } = knownTarget(store, params, true);
        return json(200, appSeries(store, server, app, range, Date.now()));
      }
    }
    if (path === "/api/events") return eventStream(request, watch);
    if (path === "/metrics") {
      return new Response(metrics(store, options.view(), options.collectorStats()), {
        headers: { ...JSON_HEADERS, "content-type": METRICS_CONTENT_TYPE },
      });
    }
    if (!path.startsWith("/api/") && path !== "/api" && options.dashboard) {
      const response = await options.dashboard(path);
      if (response) return response;
    }
    throw new HttpError(404, `no such endpoint: ${path}`);
  }

  /**
   * An event stream, ended by a cancel (Deno.serve cancels the body when the client goes away, in
   * about 10 ms) or, when `watch`, by `request.signal` (reading it under Deno.serve makes Deno 2.9
   * print a warning about its legacy abort behaviour, so serveFleet does not).
   */
  function eventStream(request: Request, watch: boolean): Response {
    let stop = () => {};
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        let stopped = false;
        const send = (chunk: Uint8Array) => {
          if (stopped) return;
          if ((controller.desiredSize ?? 0) < -MAX_QUEUED_MESSAGES) {
            stop();
            controller.error(new Error("the client does not read its event stream"));
            return;
          }
          controller.enqueue(chunk);
        };
        const listener = (message: FleetEvent) => send(encodeEvent(message));
        const heartbeat = encoder.encode(": heartbeat\n\n");
        const timer = setInterval(() => send(heartbeat), heartbeatMs);
        const onAbort = () => {
          stop();
          try {
            controller.close();
          } catch {
            // Already closed or errored.
          }
        };
        stop = () => {
          if (stopped) return;
          stopped = true;
          clearInterval(timer);
          events.unsubscribe(listener);
          if (watch) request.signal.removeEventListener("abort", onAbort);
        };
        events.subscribe(listener);
        send(encoder.encode("retry: 5000\n: connected\n\n"));
        if (watch) {
          request.signal.addEventListener("abort", onAbort, { once: true });
          if (request.signal.aborted) onAbort();
        }
      },
      cancel() {
        stop();
      },
    });
    return new Response(body, {
      headers: {
        "content-type": "text/event-stream; charset=utf-8",
        "cache-control": "no-store",
        "x-content-type-options": "nosniff",
        "x-accel-buffering": "no",
      },
    });
  }

  async function handle(request: Request, watch: boolean): Promise<Response> {
    let url: URL;
    try {
      url = new URL(request.url);
    } catch {
      return error(400, "invalid request URL");
    }
    if (!tokenDigest && !isLoopback(url.hostname) && !allowedHosts.has(url.hostname)) {
      return error(
        403,
        `requests to host ${JSON.stringify(url.host)} are refused: without a token the fleet API answers loopback ` +
          "names only",
        "use http://127.0.0.1:<port>/, or configure a token",
      );
    }
    // The dashboard's own files hold no data: they load without the token, then ask for it, and a
    // link from another site may open them.
    const guarded = url.pathname.startsWith("/api/") || url.pathname === "/metrics";
    const foreign = guarded ? crossSite(request, url) : undefined;
    if (foreign) {
      return error(
        403,
        `${foreign}: the fleet API answers its own dashboard (${url.origin}) and clients that are not browsers only`,
        `open the dashboard at ${url.origin}/, or call the API from a script (curl)`,
      );
    }
    if (guarded && !(await authorized(request, url))) {
      return error(401, "missing or wrong token", "send Authorization: Bearer <token> (or ?token= for EventSource)", {
        "www-authenticate": 'Bearer realm="fleet"',
      });
    }
    if (request.method !== "GET" && request.method !== "HEAD") {
      return error(405, `method ${request.method} is not allowed`, undefined, { allow: "GET, HEAD" });
    }
    let response: Response;
    try {
      response = await route(request, url, watch);
    } catch (caught) {
      if (caught instanceof HttpError) response = error(caught.status, caught.message, caught.hint);
      else if (caught instanceof SearchSyntaxError) response = error(400, caught.message, caught.suggestion);
      else {
        log(`fleet API: ${request.method} ${url.pathname} failed: ${caught instanceof Error ? caught.stack : caught}`);
        response = error(500, `internal error: ${caught instanceof Error ? caught.message : String(caught)}`);
      }
    }
    if (request.method === "HEAD" && response.body) {
      await response.body.cancel();
      return new Response(null, { status: response.status, headers: response.headers });
    }
    return response;
  }
  const handler: FleetHandler = (request) => handle(request, true);
  handlers.set(handler, { token: options.token, handle });
  return handler;
}

/**
 * Serves `handler` with `Deno.serve`. Throws a {@link UsageError} for a host other than loopback
 * (127.0.0.1, ::1, localhost) without a token, or an invalid port.
 */
export function serveFleet(handler: FleetHandler, options: ServeFleetOptions): Deno.HttpServer<Deno.NetAddr> {
  const { host, port, token } = options;
  checkBinding(host, port, token);
  const known = handlers.get(handler);
  if (known && known.token !== token) {
    throw new Error("serveFleet: the handler does not check the token it is served with");
  }
  try {
    return Deno.serve({
      hostname: host,
      port,
      signal: options.signal,
      onListen: options.onListen ?? (() => {}),
    }, known ? (request) => known.handle(request, false) : handler);
  } catch (error) {
    throw listenError(error, host, port);
  }
}

/**
 * Why `request` comes from another web site (a page the operator visits can make the browser send
 * one, with an `<img>`, a form or `fetch`, and its cost is the fleet's: see QUERY_LIMITS in
 * ./log_queries.ts), or undefined: `Sec-Fetch-Site` is `cross-site` or `same-site`, or `Origin` is
 * not the origin the request was sent to (scheme, host and port of its Host). Without either
 * header (curl, scripts) it is not. The loopback Host check stops DNS rebinding, not this: a page
 * elsewhere sends its requests to 127.0.0.1 itself.
 */
function crossSite(request: Request, url: URL): string | undefined {
  const site = request.headers.get("sec-fetch-site");
  if (site === "cross-site" || site === "same-site") return `a ${site} request is refused`;
  const origin = request.headers.get("origin");
  if (origin !== null && origin !== url.origin) return `a request from ${JSON.stringify(origin)} is refused`;
  return undefined;
}

function netdataLinks(servers: FleetServerConfig[]): Map<string, string> {
  return new Map(servers.flatMap((server) => server.netdata ? [[server.name, server.netdata] as const] : []));
}

function decode(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new HttpError(400, `invalid percent-encoding in ${JSON.stringify(segment)}`);
  }
}

function describe(where: { server: string; app: string; file: string }): string {
  return `${where.server}:${where.app}/${where.file}`;
}

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { ...JSON_HEADERS, ...headers } });
}

function error(status: number, message: string, hint?: string, headers: Record<string, string> = {}): Response {
  return json(status, hint === undefined ? { error: message } : { error: message, hint }, headers);
}

async function sha256(text: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", encoder.encode(text)));
}

/** Compares two digests of equal length without an early exit. */
function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let difference = 0;
  for (let i = 0; i < a.length; i++) difference |= a[i] ^ b[i];
  return difference === 0;
}
