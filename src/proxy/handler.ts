/**
 * The proxy's HTTP handler: a pure `(Request, Conn) → Response` function over the route table
 * and injected forwarding, tested without sockets (tests/unit/proxy_handler_test.ts).
 *
 * - On an app's own port (apps without domains): that app.
 * - On the shared HTTP and HTTPS ports: the app whose domain is the request's host; unknown
 *   hosts get a plain 404. On HTTP, ACME HTTP-01 challenges are answered, and hosts with a
 *   certificate are redirected to HTTPS (308).
 * - A request whose Host could change the path is refused (400), one whose headers are larger
 *   than {@link MAX_HEADER_BYTES} with 431 (the app never sees it).
 * - An app in maintenance (./maintenance.ts) gets 503 with its maintenance page instead, WebSocket
 *   upgrades included, except for the clients on its allow list.
 * - An app with a canary (./canary.ts) sends each client to the side its bucket says.
 * @module
 */
import {
  type Client,
  clientIp,
  forwardedRequest,
  type HeaderSource,
  hostName,
  linesToHeaders,
  pathOf,
  requestHost,
} from "./forward.ts";
import { chooseSide, measureSide } from "./canary.ts";
import { isAllowed, maintenanceResponse } from "./maintenance.ts";
import { errorPage, loggedPath, message } from "./pages.ts";
import type { Route } from "./routes.ts";
import type { RouteTable } from "./table.ts";

/** Which listener a connection came in on. */
export type Entry = { kind: "port"; port: number } | { kind: "http" } | { kind: "https" };

/** A request's connection: where it came in and from whom. */
export interface Conn {
  entry: Entry;
  client: Client;
  /** Keeps the connection counted (against the limits) past its HTTP part, until the returned function runs. */
  hold?(): () => void;
}

/** What the handler is composed of. */
export interface HandlerDeps {
  table(): RouteTable;
  /** Forwards with `headers` as header lines (see `forwardedLines`) to `port`, or to one of an app's instances. */
  forward(route: Route, port: number | readonly number[], req: Request, headers: string): Promise<Response>;
  /** WebSocket upgrades (HTTP/1.1 ones are tunnelled by ./h1.ts before they reach the handler). */
  websocket?(
    route: Route,
    port: number | readonly number[],
    req: Request,
    headers: Headers,
    conn: Conn,
  ): Promise<Response>;
  serveStatic(dir: string, req: Request): Promise<Response>;
  /** The key authorization of an ACME HTTP-01 token being validated. */
  challenge?(token: string): string | undefined;
  /** Whether a certificate for this host name is being served (then HTTP redirects to HTTPS). */
  hasCertificate?(host: string): boolean;
  /** Whether the HTTPS port has a certificate for this host name at all (valid or not): else no handshake named it. */
  servesTls?(host: string): boolean;
  /** The shared HTTPS port (redirects name it unless it is 443). */
  httpsPort?(): number;
  /** Request accounting: returns the function to call with the response. */
  measure?(app: string, slot: string): (status: number, bytesIn: number, bytesOut: number) => void;
  log(line: string): void;
}

const CHALLENGE_PREFIX = "/.well-known/acme-challenge/";
/** The Strict-Transport-Security value of apps with `hsts: true`. */
export const HSTS = "max-age=31536000";
/** The most header bytes a request may forward: larger is refused (431) before the app sees it, as nginx and HAProxy do. */
export const MAX_HEADER_BYTES = 64 * 1024;

/**
 * Where a request to `host` (checked, lowercase) for `target` (origin-form, `/a?b`) that came in
 * on `entry` from `client` goes: the app's route, or the proxy's own answer (no route, unknown
 * host, an ACME challenge, a redirect to HTTPS, the page of an app in maintenance unless the client
 * (as `clientIp` tells it from `headers`) is on its allow list). For an app with a canary, the route
 * of the client's side (./canary.ts).
 */
export function decide(
  deps: HandlerDeps,
  entry: Entry,
  host: string,
  target: string,
  headers?: HeaderSource,
  client?: Client,
): Route | Response {
  const route = routeFor(deps, entry, host, target);
  if (route instanceof Response) return route;
  const maintenance = route.maintenance;
  if (maintenance && !(headers && client && isAllowed(maintenance, clientIp(headers, client)))) {
    deps.measure?.(route.app, "maintenance")(503, 0, maintenance.page.length);
    const page = maintenanceResponse(maintenance);
    // Its visitors keep the app's HSTS through a long maintenance, as through any answer.
    if (entry.kind === "https" && route.hsts) page.headers.set("strict-transport-security", HSTS);
    return page;
  }
  return route.canary === undefined ? route : chooseSide(route.canary, headers, client);
}

/** Starts measuring a request to `route` (metrics under its slot; its side's figures when the app has a canary). */
export function measureRoute(deps: HandlerDeps, route: Route): ((s: number, i: number, o: number) => void) | undefined {
  if (route.canary !== undefined) return measureSide(route.canary, route, deps.measure);
  return deps.measure?.(route.app, route.slot ?? "-");
}

function routeFor(deps: HandlerDeps, entry: Entry, host: string, target: string): Route | Response {
  if (entry.kind === "port") return deps.table().byPort(entry.port) ?? errorPage(503);
  const name = hostName(host);
  if (entry.kind === "http" && deps.challenge && target.startsWith(CHALLENGE_PREFIX)) {
    const answer = deps.challenge(target.slice(CHALLENGE_PREFIX.length).split("?")[0]);
    return answer === undefined
      ? errorPage(404)
      : new Response(answer, { headers: { "content-type": "application/octet-stream" } });
  }
  const route = deps.table().byHost(name);
  if (!route) return errorPage(404);
  // Over HTTPS, a host with no certificate was reached on a connection made for another name:
  // an app meant for plain HTTP is not served under another app's certificate (RFC 9110 §15.5.20).
  if (entry.kind === "https" && deps.servesTls && !deps.servesTls(name)) return errorPage(421);
  if (entry.kind === "http" && deps.hasCertificate?.(name)) return redirect(target, name, deps.httpsPort?.());
  return route;
}

/** The handler over `deps`. */
export function createHandler(deps: HandlerDeps): (req: Request, conn: Conn) => Promise<Response> {
  return async (req, conn) => {
    const host = requestHost(req);
    if (host === undefined) return errorPage(400);
    const entry = conn.entry;
    const route = decide(deps, entry, host, pathOf(req.url), req.headers, conn.client);
    if (route instanceof Response) return route;
    const done = measureRoute(deps, route);
    const seen: { length?: string } = {};
    let response: Response;
    try {
      response = await serve(deps, route, req, conn, host, seen);
    } catch (error) {
      deps.log(`${route.app}: ${req.method} ${loggedPath(pathOf(req.url))}: ${message(error)}`);
      response = errorPage(500);
    }
    if (entry.kind === "https" && route.hsts && response.status !== 101) {
      response.headers.set("strict-transport-security", HSTS);
    }
    if (route.setCookie !== undefined) setCookie(response, route.setCookie);
    done?.(
      response.status,
      Number(seen.length) || 0,
      Number(response.headers.get("content-length")) || 0,
    );
    return response;
  };
}

function serve(
  deps: HandlerDeps,
  route: Route,
  req: Request,
  conn: Conn,
  host: string,
  seen: { length?: string },
): Promise<Response> {
  const target = route.target;
  if (!target) return Promise.resolve(errorPage(503));
  if ("dir" in target) return deps.serveStatic(target.dir, req);
  const port = "port" in target ? target.port : target.ports;
  const { lines, upgrade, length } = forwardedRequest(req.headers, conn.client, host);
  seen.length = length;
  if (lines.length > MAX_HEADER_BYTES) return Promise.resolve(errorPage(431, { connection: "close" }));
  if (upgrade?.toLowerCase() === "websocket" && deps.websocket) {
    return deps.websocket(route, port, req, linesToHeaders(lines), conn);
  }
  return deps.forward(route, port, req, lines);
}

/** Adds the canary's cookie to `response` (one whose headers cannot change, as a WebSocket's 101 may be, goes without). */
function setCookie(response: Response, cookie: string): void {
  try {
    response.headers.append("set-cookie", cookie);
  } catch { /* immutable headers */ }
}

function redirect(target: string, name: string, httpsPort = 443): Response {
  const port = httpsPort === 443 ? "" : `:${httpsPort}`;
  return new Response(null, {
    status: 308,
    headers: { location: `https://${name}${port}${target}`, "cache-control": "no-store" },
  });
}
