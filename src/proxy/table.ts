/**
 * The route table: every app's config.yml (port, domains, certificate), route.json (active
 * target), maintenance.json and canary.json, loaded from disk in one pass, and looked up by public port or by host name.
 * Loading is pure apart from reading files; it never throws for one app's problem: that app is
 * reported and keeps what it had.
 * @module
 */
import { join } from "node:path";
import { NAME_PATTERN } from "../config/names.ts";
import { type LoadedRouteConfig, loadRouteConfig, ROUTING_KEYS } from "../config/route_config.ts";
import { PROXIED } from "../deploy/strategies/names.ts";
import { ifExists } from "../fsutil.ts";
import { deploymentsRoot } from "../paths.ts";
import { message } from "./pages.ts";
import { loadCanarySplit, withCanary } from "./canary.ts";
import { describeMaintenance, loadMaintenance, sameMaintenance } from "./maintenance.ts";
import { describeTarget, readRoute, type Route, ROUTE_FILE, type RouteTarget } from "./routes.ts";
import { DeployParadigmError } from "../errors.ts";
import { defaultUserName, uidOfUser } from "../users.ts";

/** Throws when a file must not be trusted (owner, mode); see `trustedFile` in ./config.ts. */
export type TrustCheck = (path: string) => Promise<void>;

/** The routes of a server, as loaded. */
export interface LoadedRoutes {
  routes: Route[];
  /** One line per app that has a problem (what it keeps is said). */
  problems: Map<string, string>;
}

/** A user looked up, by name, and when: a name with no user is asked again after {@link OWNER_RETRY_MS}. */
const OWNERS = new Map<string, { uid?: number; at: number }>();
const OWNER_RETRY_MS = 30_000;

/**
 * The uid of user `name` (looked up again after {@link OWNER_RETRY_MS} while there is none; one
 * found is kept: each lookup is a getent process, so not every 2 s for every app).
 */
async function uidOf(name: string): Promise<number | undefined> {
  if (name === "root") return 0;
  const known = OWNERS.get(name);
  if (known && (known.uid !== undefined || Date.now() - known.at < OWNER_RETRY_MS)) return known.uid;
  const uid = await uidOfUser(name);
  if (OWNERS.size > 10_000) OWNERS.clear();
  OWNERS.set(name, { uid, at: Date.now() });
  return uid;
}

/**
 * Whose processes must hold the ports of `app` (see {@link Route.owner}): config.yml's `user:` (read
 * as it is: not a routing key; one that is no string is the default's), app-<name> and root;
 * undefined (no check) while that user does not exist.
 */
async function ownerOf(app: string, config: { user?: unknown }): Promise<Route["owner"]> {
  const name = typeof config.user === "string" ? config.user : defaultUserName(app);
  const uid = await uidOf(name);
  if (uid === undefined) return undefined;
  const own = await uidOf(defaultUserName(app));
  return { uids: [...new Set([uid, ...(own === undefined ? [] : [own]), 0])], name };
}

/** config.yml parsed last time, by path: re-reads every 2 s skip YAML and the schema when the text is unchanged. */
const PARSED = new Map<string, { text: string; loaded: LoadedRouteConfig }>();

/**
 * config.yml's routing keys (../config/route_config.ts): a problem in a key the proxy does not use
 * (a typo in `notify:`) is in `ignored`, and the app is still served.
 */
function parsed(path: string, text: string): LoadedRouteConfig {
  const known = PARSED.get(path);
  if (known?.text === text) return known.loaded;
  const loaded = loadRouteConfig(text, path);
  if (PARSED.size > 10_000) PARSED.clear();
  PARSED.set(path, { text, loaded });
  return loaded;
}

/**
 * Reads every app under the deployments root of `root`. Apps with `strategy: restart` bind their
 * port themselves and are not routed. An app whose config.yml or route.json is invalid or not
 * trusted keeps its `previous` route (nothing, if it is new).
 */
export async function loadRoutes(
  root: string,
  previous: ReadonlyMap<string, Route>,
  trust: TrustCheck,
): Promise<LoadedRoutes> {
  const base = deploymentsRoot(root);
  const names: string[] = [];
  try {
    for await (const entry of Deno.readDir(base)) {
      if ((entry.isDirectory || entry.isSymlink) && NAME_PATTERN.test(entry.name)) names.push(entry.name);
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  const routes: Route[] = [];
  const problems = new Map<string, string>();
  for (const app of names.sort()) {
    const dir = join(base, app);
    const configPath = join(dir, "config.yml");
    const before = previous.get(app);
    let config: LoadedRouteConfig["config"];
    let ignored: LoadedRouteConfig["ignored"];
    try {
      const text = await ifExists(Deno.readTextFile(configPath));
      if (text === undefined) continue; // not set up (yet)
      await trust(configPath);
      ({ config, ignored } = parsed(configPath, text));
      if (!PROXIED[config.strategy]) continue; // served on its own port, not through the proxy
    } catch (error) {
      if (error instanceof Deno.errors.NotADirectory) continue;
      const keeps = before ? `; it keeps ${describeRoute(before)}` : "";
      problems.set(app, `skipping ${app}: ${withFix(error)}${keeps}`);
      if (before) routes.push(before);
      continue;
    }
    // canary.json before route.json: a switch writes route.json, then removes canary.json, and a
    // load between the two must not see the old route.json without its canary (its canary clients
    // back on the old release). Read in this order, it sees the new route.json with the old split
    // at worst, which is refused (its target is route.json's): every request on the new release.
    const split = await loadCanarySplit(dir, trust).then((value) => ({ value }), (error: unknown) => ({ error }));
    let target: RouteTarget | undefined;
    try {
      if (await ifExists(Deno.lstat(join(dir, ROUTE_FILE)))) await trust(join(dir, ROUTE_FILE));
      target = await readRoute(dir);
    } catch (error) {
      target = before?.target;
      problems.set(app, `${app}: ${withFix(error)}; it keeps ${describeTarget(target)}`);
    }
    const problem = (line: string) => problems.set(app, problems.has(app) ? `${problems.get(app)}\n${line}` : line);
    if (ignored) {
      problem(
        `${app}: ${configPath} does not load (deploys refuse it), but its routing keys (${ROUTING_KEYS.join(", ")}) ` +
          `do: served from them; ${ignored.problems.join("; ")}`,
      );
    }
    let maintenance = before?.maintenance;
    try {
      const loaded = await loadMaintenance(dir, trust);
      maintenance = sameMaintenance(before?.maintenance, loaded.maintenance) ? before?.maintenance : loaded.maintenance;
      if (loaded.problem) problem(`${app}: ${loaded.problem}`);
    } catch (error) {
      problem(`${app}: ${withFix(error)}; it keeps ${describeMaintenance(maintenance)}`);
    }
    let route: Route = {
      app,
      port: config.port,
      domains: (config.domains ?? []).map((domain) => domain.toLowerCase()),
      tls: config.tls,
      hsts: config.hsts ?? false,
      target,
      slot: slotOf(config.slots, target),
      ...(maintenance ? { maintenance } : {}),
    };
    const owner = target && !("dir" in target) ? await ownerOf(app, config as { user?: unknown }) : undefined;
    if (owner) route.owner = owner;
    try {
      // A canary that cannot apply is logged; the app's requests all go to its stable target.
      if ("error" in split) throw split.error;
      const applied = split.value && withCanary(route, split.value, before, config.slots);
      if (applied && "problem" in applied) route.canaryProblem = applied.problem;
      else if (applied) route = applied;
    } catch (error) {
      route.canaryProblem = `${withFix(error)}; every request goes to its stable target`;
    }
    if (route.canaryProblem !== undefined) problem(`${app}: ${route.canaryProblem}`);
    routes.push(route);
  }
  return { routes, problems };
}

/** An error's message with its suggestion (`… (fix: chmod go-w …)`), for the proxy's log. */
function withFix(error: unknown): string {
  const fix = error instanceof DeployParadigmError && error.suggestion ? ` (fix: ${error.suggestion})` : "";
  return message(error) + fix;
}

function slotOf(slots: LoadedRouteConfig["config"]["slots"], target: RouteTarget | undefined): string | undefined {
  if (!target) return undefined;
  if ("dir" in target) return "static";
  // Several instances: the slot whose port (its first instance's) the list has.
  const has = (port: number | undefined) => "port" in target ? port === target.port : target.ports.includes(port!);
  return has(slots?.blue) ? "blue" : has(slots?.green) ? "green" : undefined;
}

/** A route in words: `:8080 → 127.0.0.1:41001` or `a.test, b.test → static /path`. */
export function describeRoute(route: Route): string {
  const front = route.domains.length ? route.domains.join(", ") : `:${route.port}`;
  return `${front} → ${describeTarget(route.target)}`;
}

/**
 * Routes indexed for lookups. Built from loaded routes: a port or a host name claimed by two
 * apps goes to one that serves (has a release) before one that does not, else to the first by
 * name; the other is reported in `conflicts`.
 */
export class RouteTable {
  readonly #byApp = new Map<string, Route>();
  readonly #byPort = new Map<number, Route>();
  readonly #byHost = new Map<string, Route>();
  /** `*.example.com` → route, keyed by `example.com`. */
  readonly #byWildcard = new Map<string, Route>();
  /** One line per app left out (a port or host name another app has). */
  readonly conflicts = new Map<string, string>();

  constructor(routes: Iterable<Route>) {
    // An app that serves keeps its port and host names over one with nothing to serve yet (a
    // config.yml copied by hand): otherwise the first by name would take them. Else, by name.
    for (const route of [...routes].sort((a, b) => Number(!a.target) - Number(!b.target))) {
      const clash = this.#clash(route);
      if (clash) {
        this.conflicts.set(route.app, `skipping ${route.app}: ${clash}`);
        continue;
      }
      this.#byApp.set(route.app, route);
      if (!route.domains.length) this.#byPort.set(route.port, route);
      for (const domain of route.domains) {
        if (domain.startsWith("*.")) this.#byWildcard.set(domain.slice(2), route);
        else this.#byHost.set(domain, route);
      }
    }
  }

  #clash(route: Route): string | undefined {
    if (!route.domains.length) {
      const owner = this.#byPort.get(route.port);
      if (owner) return `port ${route.port} is already ${owner.app}'s`;
    }
    for (const domain of route.domains) {
      const owner = domain.startsWith("*.") ? this.#byWildcard.get(domain.slice(2)) : this.#byHost.get(domain);
      if (owner) return `${domain} is already ${owner.app}'s`;
    }
    return undefined;
  }

  /** Every route, by app name. */
  get routes(): Route[] {
    return [...this.#byApp.values()];
  }

  app(name: string): Route | undefined {
    return this.#byApp.get(name);
  }

  /** The app on a public port (apps without domains). */
  byPort(port: number): Route | undefined {
    return this.#byPort.get(port);
  }

  /** The ports that need a listener of their own. */
  ports(): number[] {
    return [...this.#byPort.keys()];
  }

  /** The app for a host name (lowercase, no port): an exact name first, then `*.parent` for one more label. */
  byHost(host: string): Route | undefined {
    const exact = this.#byHost.get(host);
    if (exact) return exact;
    const dot = host.indexOf(".");
    return dot > 0 ? this.#byWildcard.get(host.slice(dot + 1)) : undefined;
  }
}
