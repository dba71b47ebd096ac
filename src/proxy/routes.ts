/**
 * The proxy's routing data, shared with the deploy engine. Light on purpose: no YAML or zod,
 * so a deploy can switch a route without loading the proxy.
 *
 * Each app's *active target* lives in `<appDir>/route.json`, replaced atomically by deploys:
 * `{"port": 41001}` (a process on 127.0.0.1), `{"ports": [41001, 41002, 41003]}` (several
 * instances of it, 2 to 64, which the proxy balances: ./balance.ts) or `{"dir": "/abs/release"}`
 * (a static site the proxy serves itself). The proxy re-reads it on `reload` (control socket) and
 * every 2 s.
 * @module
 */
import { isAbsolute, join } from "node:path";
import { DeployParadigmError } from "../errors.ts";
import { ifExists, writeFileAtomic } from "../fsutil.ts";
import { deploymentsRoot } from "../paths.ts";
import type { Canary } from "./canary.ts";
import type { Maintenance } from "./maintenance.ts";

/**
 * Where an app's requests go: a port on 127.0.0.1, the ports of several instances of one process
 * (2 to {@link MAX_INSTANCES}, distinct), or a directory of static files.
 */
export type RouteTarget = { port: number } | { ports: number[] } | { dir: string };

/** Most instances one target may list. */
export const MAX_INSTANCES = 64;

/** One app as the proxy serves it: its public port or host names, and its active target (none before the first deploy). */
export interface Route {
  app: string;
  /** The public port from config.yml: the proxy listens on it when the app has no domains. */
  port: number;
  /** Host names from config.yml, lowercased (`*.example.com` wildcards too); empty = per-port mode. */
  domains: string[];
  /** A certificate of the operator's own (PEM paths), instead of ACME. */
  tls?: { certificate: string; key: string };
  /** Whether HTTPS answers carry Strict-Transport-Security. */
  hsts: boolean;
  target?: RouteTarget;
  /** The slot the target port belongs to (blue, green), for metrics. */
  slot?: string;
  /** Set while the app is in maintenance (its maintenance.json, see ./maintenance.ts). */
  maintenance?: Maintenance;
  /** Set while the app has a canary (its canary.json, see ./canary.ts): on its route and on the canary's variant. */
  canary?: Canary;
  /** The `Set-Cookie` its answer carries: a client without a valid `dp_canary` cookie (./canary.ts). */
  setCookie?: string;
  /** Why the app's canary.json is refused (every request goes to `target`), for the control op `canary`. */
  canaryProblem?: string;
  /**
   * The user whose processes must hold the target's ports (config.yml's `user:`, else the app's
   * own `app-<name>`; `root`: uid 0), named by `name`: the proxy forwards to no port that a uid
   * not in `uids` listens on. `uids` are that user's, the app's own `app-<name>`'s (a process
   * started before `user:` was set) and root's (docker's proxy, which publishes a container's
   * port; a process of root's may do anything anyway). None when that user does not exist (yet).
   */
  owner?: { uids: number[]; name: string };
}

/** The file in the app's directory that names its active target. */
export const ROUTE_FILE = "route.json";

/**
 * Ports that `fetch` refuses to connect to (the WHATWG "bad ports" list): the proxy could not
 * forward to a process listening on one of them.
 */
// deno-fmt-ignore
export const FETCH_BLOCKED_PORTS: ReadonlySet<number> = new Set([
  1, 7, 9, 11, 13, 15, 17, 19, 20, 21, 22, 23, 25, 37, 42, 43, 53, 69, 77, 79, 87, 95, 101, 102, 103, 104, 109, 110,
  111, 113, 115, 117, 119, 123, 135, 137, 139, 143, 161, 179, 389, 427, 465, 512, 513, 514, 515, 526, 530, 531, 532,
  540, 548, 554, 556, 563, 587, 601, 636, 989, 990, 993, 995, 1719, 1720, 1723, 2049, 3659, 4045, 4190, 5060, 5061,
  6000, 6566, 6665, 6666, 6667, 6668, 6669, 6679, 6697, 10080
]);

/** The proxy's service name, under every manager. */
export const PROXY_SERVICE = "deploy-paradigm-proxy";

/** Where the proxy's log is, under either manager (a hint's words). */
export const PROXY_LOG = `the proxy's log (journalctl -u ${PROXY_SERVICE}, or pm2 logs ${PROXY_SERVICE})`;

/**
 * The proxy's control socket: `<deployments root>/.control/proxy.sock` under `root`, in a
 * directory only root and the deploy group may enter (see control.ts).
 */
export function controlSocketPath(root: string): string {
  return join(deploymentsRoot(root), ".control", "proxy.sock");
}

/**
 * Where a proxy started by a version before `.control/` listens: `<deployments root>/.proxy.sock`.
 * The client falls back to it until that proxy is restarted (setup restarts it).
 */
export function legacyControlSocketPath(root: string): string {
  return join(deploymentsRoot(root), ".proxy.sock");
}

/** Validates a route target read from JSON. Throws {@link DeployParadigmError} naming `source` when it is invalid. */
export function parseRouteTarget(value: unknown, source = ROUTE_FILE): RouteTarget {
  const fail = (why: string): never => {
    throw new DeployParadigmError(`${source}: ${why}`, {
      suggestion: `it must be {"port": <1-65535>}, {"ports": [<port>, <port>, ...]} (2 to ${MAX_INSTANCES} different ` +
        'ports) or {"dir": "/absolute/path"}',
    });
  };
  if (value === null || typeof value !== "object" || Array.isArray(value)) return fail("not a JSON object");
  const record = value as Record<string, unknown>;
  const keys = Object.keys(record);
  if (keys.length !== 1 || !["port", "ports", "dir"].includes(keys[0])) {
    return fail(
      `expected exactly one key, "port", "ports" or "dir" (got ${keys.map((k) => `"${k}"`).join(", ") || "none"})`,
    );
  }
  /** `port` checked, as `what` names it. */
  const checkPort = (port: unknown, what: string): number => {
    if (typeof port !== "number" || !Number.isInteger(port) || port < 1 || port > 65535) {
      return fail(`${what} must be a whole number from 1 to 65535 (got ${JSON.stringify(port)})`);
    }
    if (FETCH_BLOCKED_PORTS.has(port)) return fail(`port ${port} is one fetch refuses to connect to; use another`);
    return port;
  };
  if ("port" in record) return { port: checkPort(record.port, '"port"') };
  if ("ports" in record) {
    const list = record.ports;
    if (!Array.isArray(list)) return fail(`"ports" must be a list of ports (got ${JSON.stringify(list)})`);
    if (list.length < 2 || list.length > MAX_INSTANCES) {
      const hint = list.length === 1 ? `; one instance is {"port": ${JSON.stringify(list[0])}}` : "";
      return fail(`"ports" must list 2 to ${MAX_INSTANCES} ports (got ${list.length})${hint}`);
    }
    const ports = list.map((port, i) => checkPort(port, `"ports"[${i}]`));
    const twice = ports.find((port, i) => ports.indexOf(port) !== i);
    if (twice !== undefined) return fail(`"ports" lists port ${twice} twice: each instance has a port of its own`);
    return { ports };
  }
  const dir = record.dir;
  if (typeof dir !== "string" || !isAbsolute(dir) || dir.includes("\0")) {
    return fail(`"dir" must be an absolute path (got ${JSON.stringify(dir)})`);
  }
  return { dir };
}

/**
 * The target for a process with an instance on each of `ports`: `{"port"}` for one (the same
 * route.json as before instances existed), `{"ports"}` for more. Throws as {@link parseRouteTarget}.
 */
export function portsTarget(ports: readonly number[]): RouteTarget {
  return parseRouteTarget(ports.length === 1 ? { port: ports[0] } : { ports: [...ports] }, "instances");
}

/** The ports a target sends requests to (none for static files). */
export function targetPorts(target: RouteTarget | undefined): number[] {
  if (!target || "dir" in target) return [];
  return "port" in target ? [target.port] : [...target.ports];
}

/** Makes `target` the active target of the app in `appDir`: route.json replaced atomically. */
export function writeRoute(appDir: string, target: RouteTarget): Promise<void> {
  return writeJsonFile(join(appDir, ROUTE_FILE), target, parseRouteTarget);
}

/**
 * `value`, checked by `parse` (which names the file in its errors) as {@link readJsonFile} will
 * read it, written to `path` as one JSON line, replaced atomically.
 */
export async function writeJsonFile<T>(
  path: string,
  value: T,
  parse: (value: unknown, source: string) => T,
): Promise<void> {
  await writeFileAtomic(path, JSON.stringify(parse(value, path)) + "\n");
}

/**
 * The active target of the app in `appDir`, or undefined when it has none yet (no route.json).
 * Throws {@link DeployParadigmError} when the file is not a valid target.
 */
export function readRoute(appDir: string): Promise<RouteTarget | undefined> {
  return readJsonFile(join(appDir, ROUTE_FILE), parseRouteTarget);
}

/**
 * The file at `path` read as JSON and checked by `parse` (which names the file in its errors), or
 * undefined when there is no file. Throws {@link DeployParadigmError} when it is not valid.
 */
export async function readJsonFile<T>(
  path: string,
  parse: (value: unknown, source: string) => T,
): Promise<T | undefined> {
  const text = await ifExists(Deno.readTextFile(path));
  if (text === undefined) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new DeployParadigmError(`${path}: not valid JSON (${(error as Error).message})`, { cause: error });
  }
  return parse(value, path);
}

/** A target in words: `127.0.0.1:41001`, `3 instances on 127.0.0.1:41001, 41002, 41003` or `static /path`. */
export function describeTarget(target: RouteTarget | undefined): string {
  if (!target) return "no active release";
  if ("port" in target) return `127.0.0.1:${target.port}`;
  if ("ports" in target) return `${target.ports.length} instances on 127.0.0.1:${target.ports.join(", ")}`;
  return `static ${target.dir}`;
}
