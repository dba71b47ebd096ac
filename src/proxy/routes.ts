/**
 * The proxy's routing data, shared with the deploy engine. Light on purpose: no YAML or zod,
 * so a deploy can switch a route without loading the proxy.
 *
 * Each app's *active target* lives in `<appDir>/route.json`, replaced atomically by deploys:
 * `{"port": 41001}` (a process on 127.0.0.1) or `{"dir": "/abs/release"}` (a static site the
 * proxy serves itself). The proxy re-reads it on `reload` (control socket) and every 2 s.
 * @module
 */
import { isAbsolute, join } from "node:path";
import { DeployParadigmError } from "../errors.ts";
import { ifExists, writeFileAtomic } from "../fsutil.ts";
import { deploymentsRoot } from "../paths.ts";

/** Where an app's requests go: a port on 127.0.0.1, or a directory of static files. */
export type RouteTarget = { port: number } | { dir: string };

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
      suggestion: 'it must be {"port": <1-65535>} or {"dir": "/absolute/path"}',
    });
  };
  if (value === null || typeof value !== "object" || Array.isArray(value)) return fail("not a JSON object");
  const record = value as Record<string, unknown>;
  const keys = Object.keys(record);
  if (keys.length !== 1 || !["port", "dir"].includes(keys[0])) {
    return fail(`expected exactly one key, "port" or "dir" (got ${keys.map((k) => `"${k}"`).join(", ") || "none"})`);
  }
  if ("port" in record) {
    const port = record.port;
    if (typeof port !== "number" || !Number.isInteger(port) || port < 1 || port > 65535) {
      return fail(`"port" must be a whole number from 1 to 65535 (got ${JSON.stringify(port)})`);
    }
    if (FETCH_BLOCKED_PORTS.has(port)) return fail(`port ${port} is one fetch refuses to connect to; use another`);
    return { port };
  }
  const dir = record.dir;
  if (typeof dir !== "string" || !isAbsolute(dir) || dir.includes("\0")) {
    return fail(`"dir" must be an absolute path (got ${JSON.stringify(dir)})`);
  }
  return { dir };
}

/** Makes `target` the active target of the app in `appDir`: route.json replaced atomically. */
export async function writeRoute(appDir: string, target: RouteTarget): Promise<void> {
  const path = join(appDir, ROUTE_FILE);
  const valid = parseRouteTarget(target, path);
  await writeFileAtomic(path, JSON.stringify(valid) + "\n");
}

/**
 * The active target of the app in `appDir`, or undefined when it has none yet (no route.json).
 * Throws {@link DeployParadigmError} when the file is not a valid target.
 */
export async function readRoute(appDir: string): Promise<RouteTarget | undefined> {
  const path = join(appDir, ROUTE_FILE);
  const text = await ifExists(Deno.readTextFile(path));
  if (text === undefined) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new DeployParadigmError(`${path}: not valid JSON (${(error as Error).message})`, { cause: error });
  }
  return parseRouteTarget(value, path);
}

/** A target in words: `127.0.0.1:41001` or `static /path`. */
export function describeTarget(target: RouteTarget | undefined): string {
  if (!target) return "no active release";
  return "port" in target ? `127.0.0.1:${target.port}` : `static ${target.dir}`;
}
