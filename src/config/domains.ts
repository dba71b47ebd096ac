/**
 * Which app has which domain and which port on this server: the `domains`, and the `port`, `slots`
 * and `instancePorts` of every app's config.yml under the deployments root. A domain (an exact
 * name, or a wildcard such as `*.example.com` compared as written) belongs to one app, and so does a
 * port: `setup` and deploys refuse a second claim before anything changes (exit 2, both apps
 * named). An exact name under another app's wildcard is no conflict: the exact name wins when
 * routing.
 * @module
 */
import { UsageError } from "../errors.ts";
import { ifExists } from "../fsutil.ts";
import { appPaths, deploymentsRoot, prefix } from "../paths.ts";
import { parse } from "../yaml.ts";
import { join } from "node:path";
import { MAX_CONFIG_BYTES, positionIn } from "./load.ts";
import { NAME_PATTERN } from "./names.ts";
import { hostNameProblem } from "./schema.ts";

/** A domain two or more apps claim. */
export interface DomainConflict {
  /** Lowercased, as in config.yml. */
  domain: string;
  /** The claiming apps, sorted by name. */
  apps: string[];
}

/**
 * Every domain claimed on the server under `root`, mapped to the apps claiming it (sorted). Each
 * app's config.yml is read for `domains` alone, leniently: a file that is missing, too big or not
 * YAML claims nothing (deploying that app reports its problems), and invalid names are skipped.
 */
export async function domainClaims(root: string = prefix()): Promise<Map<string, string[]>> {
  const claims = new Map<string, string[]>();
  for (const app of await appNames(root)) {
    for (const domain of (await claimsOf(appPaths(app, root).config)).domains) {
      claims.set(domain, [...(claims.get(domain) ?? []), app].sort());
    }
  }
  return claims;
}

/**
 * The domains claimed by more than one app under `root`, sorted by domain. `pending` replaces the
 * lists of the apps it names (what setup is about to write), lowercased.
 */
export async function domainConflicts(
  root: string = prefix(),
  pending: Record<string, readonly string[]> = {},
): Promise<DomainConflict[]> {
  const claims = await domainClaims(root);
  for (const [domain, apps] of claims) {
    const kept = apps.filter((app) => !(app in pending));
    if (kept.length) claims.set(domain, kept);
    else claims.delete(domain);
  }
  for (const [app, domains] of Object.entries(pending)) {
    for (const domain of new Set(domains.map((name) => name.toLowerCase()))) {
      claims.set(domain, [...(claims.get(domain) ?? []), app].sort());
    }
  }
  return [...claims].filter(([, apps]) => apps.length > 1).map(([domain, apps]) => ({ domain, apps }))
    .sort((a, b) => a.domain < b.domain ? -1 : a.domain > b.domain ? 1 : 0);
}

/**
 * Throws a {@link UsageError} (exit 2) naming each of `domains` that another app under `root`
 * already claims, with that app; changes nothing. `where` names the file `app`'s list comes from.
 */
export async function refuseTakenDomains(
  app: string,
  domains: readonly string[],
  options: { root?: string; where?: string } = {},
): Promise<void> {
  if (domains.length === 0) return;
  const root = options.root ?? prefix();
  const taken = (await domainConflicts(root, { [app]: domains })).filter((c) => c.apps.includes(app));
  if (taken.length === 0) return;
  const others = (apps: string[]) => apps.filter((other) => other !== app);
  const owners = (apps: string[], sep: string) =>
    others(apps).map((other) => `app "${other}"${sep}${appPaths(other, root).config}`);
  const from = options.where ? ` (${options.where})` : "";
  throw new UsageError(
    taken.length === 1
      ? `app "${app}"${from} cannot have the domain ${taken[0].domain}: ` +
        `${owners(taken[0].apps, " (").map((o) => `${o})`).join(" and ")} has it already`
      : `app "${app}"${from} cannot have these domains, other apps have them already: ` +
        taken.map(({ domain, apps }) => `${domain} (${owners(apps, ", ").join("; ")})`).join(", "),
    {
      suggestion: "a domain belongs to one app: choose another name, or first remove it from the other app's " +
        "config.yml (domains:)",
    },
  );
}

/**
 * Every port an app's config.yml under `root` names (its public port, its slots, its instances'
 * ports), mapped to the apps naming it (sorted); read leniently, as {@link domainClaims}. With
 * `bound`, only the ports something listens on: not the `port` of an app with domains behind the
 * proxy (its traffic comes by host name on the shared ports; `setup --yes` gives them all 8000).
 */
export async function portClaims(root: string = prefix(), bound = false): Promise<Map<number, string[]>> {
  const claims = new Map<number, string[]>();
  for (const app of await appNames(root)) {
    const claimed = await claimsOf(appPaths(app, root).config);
    for (const port of new Set(bound ? claimed.bound : claimed.ports)) {
      claims.set(port, [...(claims.get(port) ?? []), app]);
    }
  }
  return claims;
}

/** A port an app asks for: the port, where it comes from (a file, a key), and the fix when another app has it. */
export interface PortUse {
  port: number;
  where?: string;
  fix?: string;
}

/**
 * Throws a {@link UsageError} (exit 2) for the first of `ports` another app under `root` listens on
 * by its config.yml (its public port, a slot or an instance's port); changes nothing. The apps'
 * files are read once for all. Call it for an app's ports it listens on itself ({@link bindsPort}).
 * With `serving`, only apps that serve (a release is current) count: an app deployed long ago keeps
 * deploying when a copied config.yml names its port.
 */
export async function refuseTakenPorts(
  app: string,
  ports: readonly PortUse[],
  options: { root?: string; serving?: boolean } = {},
): Promise<void> {
  if (!ports.length) return;
  const root = options.root ?? prefix();
  const claims = await portClaims(root, true);
  const shared = await sharedPorts(root);
  for (const { port, where, fix } of ports) {
    const listener = shared.find((use) => use.port === port);
    if (listener) {
      throw new UsageError(
        `app "${app}"${where ? ` (${where})` : ""} cannot have port ${port}: it is proxy.yml's ${listener.key}: ` +
          `port (${listener.at}), the proxy's shared ${listener.key.toUpperCase()} port for apps with domains`,
        {
          suggestion: `choose another port for the app (setup --port N, or port: in config.yml), or give ` +
            `${listener.key}: in proxy.yml another one`,
        },
      );
    }
    const others = (claims.get(port) ?? []).filter((other) => other !== app);
    const serves = await Promise.all(others.map((other) => ifExists(Deno.lstat(appPaths(other, root).current))));
    const owner = others.find((_, i) => !options.serving || serves[i]);
    if (owner === undefined) continue;
    throw new UsageError(
      `app "${app}"${where ? ` (${where})` : ""} cannot have port ${port}: app "${owner}" has it already ` +
        `(${appPaths(owner, root).config})`,
      { suggestion: fix ?? "a port belongs to one app: choose another one (setup --port N, or port: in config.yml)" },
    );
  }
}

/** {@link refuseTakenPorts} for one port. */
export async function refuseTakenPort(
  app: string,
  port: number,
  options: { root?: string; where?: string; serving?: boolean } = {},
): Promise<void> {
  await refuseTakenPorts(app, [{ port, where: options.where }], options);
}

/** A shared port proxy.yml names: its key, the port, and where (`…/proxy.yml:2:7`). */
export interface SharedPort {
  key: "http" | "https";
  port: number;
  at: string;
}

/**
 * The shared HTTP and HTTPS ports proxy.yml under `root` names (`http:`, `https:`), where it names
 * them; read leniently, as {@link domainClaims} reads config.yml (no file, a file that is not YAML:
 * none; proxy.yml's own problems are the proxy's and `status`'s to report). The defaults (80, 443)
 * are not listed: a server without domains may give an app port 80.
 */
export async function sharedPorts(root: string = prefix()): Promise<SharedPort[]> {
  const path = join(deploymentsRoot(root), "proxy.yml");
  try {
    const info = await ifExists(Deno.stat(path));
    if (!info?.isFile || info.size > MAX_CONFIG_BYTES) return [];
    const text = await Deno.readTextFile(path);
    const value = parse(text, { maxAliasCount: 50 }) as Record<string, unknown> | null;
    return (["http", "https"] as const).flatMap((key) => {
      const port = value?.[key];
      return Number.isInteger(port) ? [{ key, port: port as number, at: positionIn(text, path, [key]) }] : [];
    });
  } catch {
    return [];
  }
}

/**
 * The ports something of an app listens on that proxy.yml names as a shared port, one line each:
 * `<proxy.yml:line:col>: "http" is 8080, app "shop"'s port (<its config.yml>)`. For `status`.
 */
export async function sharedPortConflicts(root: string = prefix()): Promise<string[]> {
  const shared = await sharedPorts(root);
  if (!shared.length) return [];
  const claims = await portClaims(root, true);
  return shared.flatMap(({ key, port, at }) =>
    (claims.get(port) ?? []).map((app) =>
      `${at}: "${key}" is ${port}, a port of app "${app}" (${appPaths(app, root).config}): give one of them ` +
      "another port (the proxy keeps the first that listens on it)"
    )
  );
}

/** The app directories under the deployments root (names only; dot entries such as .tls are not apps). */
async function appNames(root: string): Promise<string[]> {
  const names: string[] = [];
  const entries = await ifExists(Array.fromAsync(Deno.readDir(deploymentsRoot(root))));
  for (const entry of entries ?? []) {
    if (entry.isDirectory && NAME_PATTERN.test(entry.name)) names.push(entry.name);
  }
  return names.sort();
}

/** config.yml's internal ports by key path (`slots.blue`, `instancePorts.green.0`): what the app's processes listen on. */
export function internalPorts(
  config: { slots?: Record<string, number>; instancePorts?: Record<string, number[] | undefined> },
): [string, number][] {
  return [
    ...Object.entries(config.slots ?? {}).map(([slot, port]): [string, number] => [`slots.${slot}`, port]),
    ...Object.entries(config.instancePorts ?? {}).flatMap(([slot, ports]) =>
      (ports ?? []).map((port, i): [string, number] => [`instancePorts.${slot}.${i}`, port])
    ),
  ];
}

/** Whether an app listens on its config.yml `port` itself: without domains, or without the proxy (restart). */
export function bindsPort(config: { domains?: readonly unknown[]; strategy?: unknown }): boolean {
  return !config.domains?.length || config.strategy === "restart";
}

/**
 * What one config.yml claims: its valid, lowercased `domains`, the ports it names, and of those
 * the ones something listens on ({@link bindsPort}); nothing when it cannot be read.
 */
async function claimsOf(path: string): Promise<{ domains: string[]; ports: number[]; bound: number[] }> {
  const none = { domains: [], ports: [], bound: [] };
  try {
    const info = await ifExists(Deno.stat(path));
    if (!info?.isFile || info.size > MAX_CONFIG_BYTES) return none;
    const value = parse(await Deno.readTextFile(path), { maxAliasCount: 50 }) as {
      domains?: unknown;
      port?: unknown;
      strategy?: unknown;
      slots?: Record<string, unknown>;
      instancePorts?: Record<string, unknown>;
    } | null;
    const list = Array.isArray(value?.domains) ? value.domains : [];
    const extra = Object.values(value?.instancePorts ?? {}).flatMap((ports) => Array.isArray(ports) ? ports : []);
    const whole = (ports: unknown[]) => ports.filter((port): port is number => Number.isInteger(port));
    const internal = whole([value?.slots?.blue, value?.slots?.green, ...extra]);
    const own = whole([value?.port]);
    return {
      domains: list.filter((name): name is string => typeof name === "string" && !hostNameProblem(name))
        .map((name) => name.toLowerCase()),
      ports: [...own, ...internal],
      bound: bindsPort({ domains: list, strategy: value?.strategy }) ? [...own, ...internal] : internal,
    };
  } catch {
    return none;
  }
}
