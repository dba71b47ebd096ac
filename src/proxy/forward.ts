/**
 * Forwarding one HTTP request to an app on 127.0.0.1: the headers the app sees (hop-by-hop
 * dropped, forwarding headers set by the proxy and never taken from an untrusted client), the
 * request's host checked (it must not be able to change the path), and the upstream's failures
 * turned into plain 502/504 pages (details only in the log).
 * @module
 */
import { Balanced, type Balancer } from "./balance.ts";
import type { InFlight } from "./inflight.ts";
import { errorChain, errorPage, loggedPath } from "./pages.ts";
import { UpstreamError } from "./connection.ts";
import { isComplete, type UpstreamPool, type UpstreamRequest } from "./upstream.ts";

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
/** Request bodies up to this size with a Content-Length are read first (replayable to a fresh connection). */
const BUFFERED_BODY_MAX = 64 * 1024;

/** A host name, IPv4 address or [IPv6] address, with an optional port: nothing that can carry a path. */
const VALID_HOST = /^(?:[a-z0-9_](?:[a-z0-9_.-]{0,252})|\[[0-9a-f:.]{2,45}\])(?::[0-9]{1,5})?$/i;

/** A request's header fields as forwarding reads them: `Headers`, or ./wire.ts's `HeadFields`. */
export interface HeaderSource {
  /** The values of `name` (lowercase) joined by ", ", or null. */
  get(name: string): string | null;
  /** Each field (names lowercase; a name may come more than once). */
  forEach(callback: (value: string, name: string) => void): void;
}

/** Who sent a request, as the proxy saw it. */
export interface Client {
  /** The peer's address. */
  ip: string;
  /** How the request reached the proxy. */
  scheme: "http" | "https";
  /** The address the client connected to (`host:port`, IPv6 in brackets), for requests without a host. */
  local?: string;
  /** Whether `ip` is one of the trusted proxies (its forwarding headers are kept and extended). */
  isTrusted: (ip: string) => boolean;
  /** The forwarding lines last written for this client (one connection), by host: they rarely change. */
  lastForwarding?: { host: string; lines: string };
}

/**
 * The request's host (lowercase, port kept) from the Host header (HTTP/1.1) or the URL's
 * authority (HTTP/2), or undefined when it is not a plain host: a Host such as `x/admin#`
 * would otherwise rewrite the path the app sees.
 */
export function requestHost(req: Request): string | undefined {
  return checkHost(req.headers.get("host") ?? authorityOf(req.url));
}

/**
 * Why an HTTP/2 request is refused before routing (400), or undefined: CONNECT (the proxy tunnels
 * nothing), or a Host field that names another host than `:authority` (RFC 9113 §8.3.1: a front end
 * that checked one would be bypassed by the other; `:path` without its leading "/" shows here too,
 * as Deno joins it to the authority).
 */
export function h2Problem(req: Request): string | undefined {
  if (req.method === "CONNECT") return "CONNECT";
  const header = req.headers.get("host");
  if (header === null) return undefined;
  // HTTP/2 is served over TLS alone (its URL says http: as Deno's server reads it from a loopback connection).
  const plain = (host: string) => host.toLowerCase().replace(/:443$/, "");
  return plain(header) === plain(authorityOf(req.url)) ? undefined : "a Host other than :authority";
}

/**
 * `host` (lowercase, without a trailing dot: `A.test.:8080` is `a.test:8080`, as nginx forwards it)
 * when it is a plain host with an optional port, else undefined (see {@link requestHost}).
 */
export function checkHost(host: string): string | undefined {
  if (!VALID_HOST.test(host)) return undefined;
  const colon = host.lastIndexOf(":");
  const port = colon > host.lastIndexOf("]") ? colon : host.length;
  if (port < host.length && Number(host.slice(port + 1)) > 65535) return undefined;
  const dotted = host[port - 1] === "." && port > 1;
  return (dotted ? host.slice(0, port - 1) + host.slice(port) : host).toLowerCase();
}

/** The authority of a request URL (`http://a.test:8443/x` → `a.test:8443`), without a URL object. */
function authorityOf(url: string): string {
  const start = url.indexOf("://") + 3;
  const slash = url.indexOf("/", start);
  return url.slice(start, slash < 0 ? url.length : slash);
}

/** `host` (from {@link checkHost}) without its port (`[::1]:8080` → `[::1]`). */
export function hostName(host: string): string {
  const colon = host.lastIndexOf(":");
  return colon > host.lastIndexOf("]") ? host.slice(0, colon) : host;
}

/** An address as a Forwarded node (RFC 7239): IPv6 in quotes and brackets. */
function node(ip: string): string {
  return ip.includes(":") ? `"[${ip}]"` : ip;
}

/** The X-Forwarded-For chain the app gets: a trusted peer's chain extended with the peer, else the peer alone. */
function forwardedChain(headers: HeaderSource, client: Client): string[] {
  const prior = client.isTrusted(client.ip) ? headers.get("x-forwarded-for") : null;
  return prior ? [...prior.split(",").map((ip) => ip.trim()).filter(Boolean), client.ip] : [client.ip];
}

/** The real client of a chain: its right-most address that is not a trusted proxy. */
function realClient(chain: string[], client: Client): string {
  let real = chain[0];
  for (let i = chain.length - 1; i >= 0; i--) {
    real = chain[i];
    if (!client.isTrusted(real)) break;
  }
  return real;
}

/** The client's address as the app gets it in X-Real-IP: the peer, or behind trusted proxies the client they name. */
export function clientIp(headers: HeaderSource, client: Client): string {
  return realClient(forwardedChain(headers, client), client);
}

/** The forwarding fields the proxy sets, computed once for {@link forwardedHeaders} and {@link forwardedLines}. */
function forwarding(headers: HeaderSource, client: Client, host: string): [string, string][] {
  const trusted = client.isTrusted(client.ip);
  const chain = forwardedChain(headers, client);
  const real = realClient(chain, client);
  const own = `for=${node(client.ip)};host="${host.replace(/"/g, "")}";proto=${client.scheme}`;
  const priorForwarded = trusted ? headers.get("forwarded") : null;
  return [
    ["x-forwarded-for", chain.join(", ")],
    ["x-real-ip", real],
    ["x-forwarded-proto", (trusted && headers.get("x-forwarded-proto")) || client.scheme],
    ["x-forwarded-host", (trusted && headers.get("x-forwarded-host")) || host],
    ["forwarded", priorForwarded ? `${priorForwarded}, ${own}` : own],
  ];
}

/** Request fields the app never gets from the client: hop-by-hop, framing, and the ones the proxy sets. */
const NOT_FORWARDED = new Set([
  ...HOP_BY_HOP,
  "host",
  "content-length",
  "expect",
  "x-forwarded-for",
  "x-real-ip",
  "x-forwarded-proto",
  "x-forwarded-host",
  "forwarded",
]);

/**
 * Fields that frameworks read as the client's address, scheme, port, path prefix or URL (Rack's
 * X-Forwarded-Ssl, Spring's and Django's X-Forwarded-Port and -Prefix, IIS's X-Original-URL, CDN
 * client-IP headers): dropped unless the peer is a trusted proxy, since the proxy sets none of them.
 */
const CLIENT_CLAIMS = new Set([
  "x-forwarded-ssl",
  "x-forwarded-scheme",
  "x-forwarded-port",
  "x-forwarded-prefix",
  "x-forwarded-server",
  "x-forwarded-uri",
  "x-forwarded",
  "forwarded-for",
  "x-original-url",
  "x-original-uri",
  "x-rewrite-url",
  "x-original-forwarded-for",
  "true-client-ip",
  "x-client-ip",
  "x-cluster-client-ip",
  "cf-connecting-ip",
  "fastly-client-ip",
  "front-end-https",
]);

/**
 * The headers the app gets: the client's, without hop-by-hop ones, names with "_" and, unless the
 * peer is a trusted proxy, the {@link CLIENT_CLAIMS}; with Host (HTTP/2 has none: the
 * :authority becomes it), X-Forwarded-For, -Proto, -Host, X-Real-IP and Forwarded set by the proxy.
 * Values sent by a client are replaced, unless the peer is a trusted proxy: then its chain is
 * extended and the real client is the right-most address that is not a trusted proxy.
 */
export function forwardedHeaders(headers: HeaderSource, client: Client, host: string): Headers {
  return linesToHeaders(forwardedLines(headers, client, host));
}

/** Header lines (`name: value\r\n` each, as {@link forwardedLines} writes them) as Headers. */
export function linesToHeaders(lines: string): Headers {
  return new Headers(
    lines.split("\r\n").filter(Boolean).map((line) => {
      const colon = line.indexOf(": ");
      return [line.slice(0, colon), line.slice(colon + 2)];
    }),
  );
}

/** {@link forwardedHeaders} as header lines (`name: value\r\n` each), as the upstream pool sends them. */
export function forwardedLines(headers: HeaderSource, client: Client, host: string): string {
  return forwardedRequest(headers, client, host).lines;
}

/** A request's header lines for the app, and what the walk over its headers saw on the way. */
export interface ForwardedRequest {
  lines: string;
  /** The client's Upgrade header (`websocket`), if any. */
  upgrade?: string;
  /** The client's Content-Length, if any. */
  length?: string;
}

/** {@link forwardedLines}, with the Upgrade and Content-Length seen in the same one walk over the headers. */
export function forwardedRequest(headers: HeaderSource, client: Client, host: string): ForwardedRequest {
  const out: ForwardedRequest = { lines: "" };
  let connection: string | undefined;
  const trusted = client.isTrusted(client.ip);
  const write = (skip?: Set<string>) => {
    let lines = `host: ${host}\r\n`;
    // forEach, not for-of: several times cheaper per header.
    headers.forEach((value, name) => {
      if (!NOT_FORWARDED.has(name)) {
        // A name with "_" is dropped (as nginx does): CGI/WSGI apps read X_Forwarded_For as X-Forwarded-For.
        if (!skip?.has(name) && !name.includes("_") && (trusted || !CLIENT_CLAIMS.has(name))) {
          lines += `${name}: ${value}\r\n`;
        }
      } else if (name === "connection") {
        // A name may come more than once (HeadFields): the values are one list.
        connection = connection === undefined ? value : `${connection}, ${value}`;
      } else if (name === "upgrade") out.upgrade ??= value;
      else if (name === "content-length") out.length ??= value;
    });
    return lines;
  };
  let lines = write();
  const named = connection?.split(",").map((name) => name.trim().toLowerCase())
    .filter((name) => name && name !== "keep-alive" && name !== "close" && name !== "upgrade");
  if (named?.length) lines = write(new Set(named)); // fields the client's Connection names are hop-by-hop
  out.lines = lines + forwardingLines(headers, client, host, trusted);
  return out;
}

/** The forwarding fields as lines; for an untrusted client they depend on its host only, so they are kept per connection. */
function forwardingLines(headers: HeaderSource, client: Client, host: string, trusted: boolean): string {
  if (!trusted && client.lastForwarding?.host === host) return client.lastForwarding.lines;
  let lines = "";
  for (const [name, value] of forwarding(headers, client, host)) lines += `${name}: ${value}\r\n`;
  if (!trusted) client.lastForwarding = { host, lines };
  return lines;
}

/** What forwarding needs from the proxy. */
export interface ForwardDeps {
  pool: UpstreamPool;
  inFlight: InFlight;
  log: (line: string) => void;
  /** Chooses the instance of a target with several ports. */
  balancer?: Balancer;
  /** How long the client may take to send its request body (0: no limit); then 408, or the upload is cut. */
  requestTimeoutMs?: number;
}

/** `promise`, or undefined once `ms` (> 0) have passed. */
export async function within<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  if (!(ms > 0)) return await promise;
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<undefined>((resolve) => timer = setTimeout(() => resolve(undefined), ms)),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** `body`, erroring when no byte arrived for `ms` (> 0): a stalled upload cannot hold a connection forever. */
function bounded(body: ReadableStream<Uint8Array>, ms: number): ReadableStream<Uint8Array> {
  if (!(ms > 0)) return body;
  const reader = body.getReader();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const next = await within(reader.read(), ms);
      if (!next) {
        reader.cancel("request timeout").catch(() => {});
        return controller.error(new Error(`the request body stalled for ${ms} ms`));
      }
      if (next.done) controller.close();
      else controller.enqueue(next.value);
    },
    cancel: (reason) => reader.cancel(reason),
  }, { highWaterMark: 0 });
}

/**
 * Sends `req` to the app on 127.0.0.1:`port` (or to one of an app's instances on `ports`, as
 * ./balance.ts chooses) with `headers` (lines from {@link forwardedLines}), and answers with its
 * response: the upstream pool's own Response (its headers carry nothing hop-by-hop). The request
 * is in flight to `port` until the app's answer is read in full: at once when it came with its
 * head, else when the streamed body ends or is cancelled. Failures: 502 (refused, reset, bad
 * answer) and 504 (no answer in time), with the cause only in the log.
 */
export function forward(
  deps: ForwardDeps,
  app: string,
  port: number | readonly number[],
  req: Request,
  headers: string,
): Promise<Response> {
  if (typeof port === "number") return forwardTo(deps, app, port, req, headers);
  const balanced = new Balanced(deps.balancer!, deps.inFlight, app, port);
  return forwardTo(deps, app, balanced.port, req, headers, balanced);
}

/** {@link forward} to `port`, or with `balanced` to the instance it ends on (no other local: see ./h1.ts `balance`). */
async function forwardTo(
  deps: ForwardDeps,
  app: string,
  port: number,
  req: Request,
  headers: string,
  balanced?: Balanced,
): Promise<Response> {
  // In flight from the start: a deploy's drain waits for an upload to its old slot (bounded by requestTimeout).
  const end = balanced ? balanced.begin() : deps.inFlight.begin(port);
  try {
    let body: ReadableStream<Uint8Array> | Uint8Array | null = null;
    let streamed: number | undefined;
    if (req.body) {
      // With Transfer-Encoding the body is chunked whatever Content-Length says: its size is unknown.
      const length = req.headers.has("transfer-encoding") ? NaN : Number(req.headers.get("content-length") ?? NaN);
      // Small bodies go with a Content-Length (some app servers read no chunked bodies); others stream.
      if (length <= BUFFERED_BODY_MAX) {
        let read: ArrayBuffer | undefined;
        try {
          read = await within(req.arrayBuffer(), deps.requestTimeoutMs ?? 0);
        } catch {
          end();
          return errorPage(400);
        }
        if (!read) {
          end();
          return errorPage(408, { connection: "close" });
        }
        body = new Uint8Array(read);
      } else {
        body = bounded(req.body, deps.requestTimeoutMs ?? 0);
        // A large body with a Content-Length keeps it (apps that read no chunked bodies).
        if (Number.isSafeInteger(length)) streamed = length;
      }
    }
    const path = pathOf(req.url);
    let upstream: Response;
    try {
      upstream = await send(deps.pool, port, { method: req.method, path, headers, body, length: streamed }, balanced);
    } catch (error) {
      end();
      if (balanced) port = balanced.port;
      const timeout = error instanceof UpstreamError && error.kind === "timeout";
      const where = loggedPath(path);
      deps.log(`${app}: ${req.method} ${where}: 127.0.0.1:${port}: ${errorChain(error).split("\n")[0]}`);
      return errorPage(timeout ? 504 : 502);
    }
    if (isComplete(upstream)) {
      // Nothing more comes from the app: the request no longer holds its slot, however slow the client.
      end();
      return upstream;
    }
    return new Response(deps.inFlight.stream(upstream.body!, end), upstream);
  } catch (error) {
    end();
    throw error;
  }
}

/** {@link UpstreamPool.request} to `port`, or to the instance `balanced` chooses (another one if it refuses). */
function send(pool: UpstreamPool, port: number, req: UpstreamRequest, balanced?: Balanced): Promise<Response> {
  return balanced ? sendBalanced(pool, req, balanced) : pool.request(port, req);
}

/** (Apart from {@link send}: its closure would cost the one-port path a context per request.) */
function sendBalanced(pool: UpstreamPool, req: UpstreamRequest, balanced: Balanced): Promise<Response> {
  return balanced.send(req.method, (port) => pool.request(port, req));
}

/** The origin-form target of a request URL (`/a?b`): everything from the first `/` after the authority. */
export function pathOf(url: string): string {
  const slash = url.indexOf("/", url.indexOf("://") + 3);
  return slash < 0 ? "/" : url.slice(slash);
}
