/**
 * What a rollout (`deploy-paradigm rollout <app>`) does, decided without I/O: its options checked,
 * the servers that run the app (the fleet's, by its database, and the app's git remotes), how each
 * is pushed to, the ones picked (`--servers a,b` or `--all`), and the waves: the first server alone,
 * then the rest `--parallel N` at a time.
 *
 * A fleet server is pushed to at `ssh://<user>@<host>:<port><path>` with the fleet's ssh options
 * (its known_hosts, strict host keys, its identityFile): `<path>` is that of the app's git remote
 * whose host (and port, ssh aliases resolved) is the server's, else `/var/repos/<app>.git` (where
 * `setup` puts it). A git remote whose host is no fleet server is a server only when its path ends
 * in `/var/repos/<app>.git` (a code host's `git@github.com:acme/web.git` never is), named as the
 * remote, pushed to at its URL with the user's own ssh settings. One repository (host, port,
 * path) is one target.
 * @module
 */
import { NAME_PATTERN } from "../config/names.ts";
import { didYouMean, UsageError } from "../errors.ts";

/** What to do when a server fails: push the servers already switched back to their version before, or leave them. */
export const ON_FAILURE = ["rollback", "stop"] as const;
export type OnFailure = typeof ON_FAILURE[number];

/** The most servers deployed at once. */
export const MAX_PARALLEL = 32;

/** A rollout's options, checked. */
export interface RolloutOptions {
  app: string;
  /** `--servers a,b` (in that order), or undefined with `--all`. */
  servers?: string[];
  parallel: number;
  confirm: boolean;
  yes: boolean;
  ref: string;
  onFailure: OnFailure;
  /** `--force`: push where the commit is not ahead of the server's branch (a forced update). */
  force: boolean;
}

/** The fleet server fields a rollout needs (a subset of the fleet config's server). */
export interface FleetHost {
  name: string;
  host: string;
  user: string;
  port: number;
  identityFile?: string;
}

/** One server a rollout may push to. */
export interface Target {
  name: string;
  /** What `git push` and `git ls-remote` are given. */
  url: string;
  /** A fleet server (reached with the fleet's ssh options); else a git remote (the user's ssh settings). */
  fleet?: FleetHost;
  /** The git remote it came from, if any. */
  remote?: string;
  /** Known to run the app (the fleet database says so, or a git remote points there). */
  runs?: boolean;
  /** Its repository (host, port, path): one repository is pushed once. */
  key?: string;
}

/** An ssh URL of git, split. */
export interface SshUrl {
  user?: string;
  host: string;
  port?: number;
  path: string;
}

const USAGE = "see deploy-paradigm rollout --help";

/**
 * The options of `rollout <app>` from the parsed command line; throws a {@link UsageError} for
 * anything wrong. `terminal`: whether stdin is one (`--confirm` asks there).
 */
export function rolloutOptions(
  app: string,
  opts: Record<string, string | string[] | boolean | undefined>,
  terminal: boolean,
): RolloutOptions {
  if (!NAME_PATTERN.test(app)) {
    throw new UsageError(`"${app}" is not a valid app name (lowercase letters, digits and dashes, up to 63)`);
  }
  const str = (key: string) => opts[key] as string | undefined;
  const list = str("servers");
  if (list !== undefined && opts.all) {
    throw new UsageError("give --servers a,b or --all, not both", { suggestion: USAGE });
  }
  if (list === undefined && !opts.all) {
    throw new UsageError(`say which servers: --servers a,b or --all`, {
      suggestion: `deploy-paradigm rollout ${app} --all (every server that runs ${app})`,
    });
  }
  let servers: string[] | undefined;
  if (list !== undefined) {
    servers = list.split(",").map((name) => name.trim());
    if (servers.some((name) => name === "")) {
      throw new UsageError(`--servers must be names separated by commas, e.g. --servers a,b (got "${list}")`);
    }
    const twice = servers.find((name, i) => servers!.indexOf(name) !== i);
    if (twice) throw new UsageError(`--servers names "${twice}" twice`);
  }
  const parallelText = str("parallel") ?? "1";
  const parallel = Number(parallelText);
  if (!/^\d+$/.test(parallelText) || parallel < 1 || parallel > MAX_PARALLEL) {
    throw new UsageError(`--parallel must be a whole number from 1 to ${MAX_PARALLEL} (got "${parallelText}")`);
  }
  const ref = str("ref") ?? "HEAD";
  // deno-lint-ignore no-control-regex
  if (ref === "" || ref.startsWith("-") || /[\x00-\x20\x7f]/.test(ref)) {
    throw new UsageError(`--ref must name a commit, e.g. HEAD, main, v1.2 or a sha (got ${JSON.stringify(ref)})`);
  }
  const onFailure = (str("on-failure") ?? "rollback") as OnFailure;
  if (!ON_FAILURE.includes(onFailure)) {
    throw new UsageError(`--on-failure must be one of ${ON_FAILURE.join(", ")} (got "${onFailure}")`);
  }
  const confirm = opts.confirm === true;
  const yes = opts.yes === true;
  if (yes && !confirm) {
    throw new UsageError("--yes answers --confirm's question, and without --confirm nothing is asked", {
      suggestion: "leave --yes out (the waves go on by themselves), or add --confirm to be asked before each",
    });
  }
  if (confirm && !terminal && !yes) {
    throw new UsageError("--confirm asks before each wave, and there is no terminal to ask on", {
      suggestion: "run it from a terminal, or add --yes to go on without asking",
    });
  }
  return { app, servers, parallel, confirm, yes, ref, onFailure, force: opts.force === true };
}

/**
 * Parses an ssh URL of git (`ssh://[user@]host[:port]/path`, or scp-like `[user@]host:path`); else
 * undefined. Never a transport helper (`ext::…`, `<transport>::…`) or a host or user starting with
 * `-` (which ssh would take as an option).
 */
export function parseSshUrl(url: string): SshUrl | undefined {
  if (/^[A-Za-z][A-Za-z0-9+.-]*::/.test(url)) return undefined; // git's `<transport>::<address>`
  const parsed = splitSshUrl(url);
  if (!parsed || parsed.host.startsWith("-") || parsed.user?.startsWith("-") || parsed.host === "") return undefined;
  return parsed;
}

function splitSshUrl(url: string): SshUrl | undefined {
  const full = /^(?:ssh|git\+ssh|ssh\+git):\/\/(?:([^@/]+)@)?(\[[^\]/]+\]|[^:/]+)(?::(\d+))?(\/.*)$/.exec(url);
  if (full) {
    const port = full[3] === undefined ? undefined : Number(full[3]);
    return { user: full[1], host: unbracket(full[2]), port, path: full[4] };
  }
  if (url.includes("://")) return undefined;
  const scp = /^(?:([^@/:]+)@)?(\[[^\]/]+\]|[^:/\[]+):(.+)$/.exec(url);
  if (!scp) return undefined;
  return { user: scp[1], host: unbracket(scp[2]), path: scp[3] };
}

const unbracket = (host: string) => host.startsWith("[") ? host.slice(1, -1) : host;

/** Whether a repository path names the app's repository (`…/<app>.git`, or `…/<app>`). */
export function pointsAtApp(path: string, app: string): boolean {
  const base = path.replace(/\/+$/, "").split("/").pop();
  return base === `${app}.git` || base === app;
}

/** Whether a repository path is where `setup` puts the app's (`…/var/repos/<app>.git`: tests prefix it). */
export function isServerRepo(path: string, app: string): boolean {
  return path.replace(/\/+$/, "").endsWith(repoPath(app));
}

/** `ssh://user@host:port/path` (IPv6 hosts in brackets; a relative path under the user's home). */
export function sshUrl(user: string, host: string, port: number, path: string): string {
  const at = host.includes(":") ? `[${host}]` : host;
  return `ssh://${user}@${at}:${port}${path.startsWith("/") ? path : `/~/${path}`}`;
}

/** Where `setup` puts an app's repository on a server. */
export const repoPath = (app: string) => `/var/repos/${app}.git`;

/** Where an ssh host alias leads (`ssh -G`): its real host name, port and user. */
export interface Resolved {
  host: string;
  port: number;
  user?: string;
}
/** Resolves a host as ssh would (`ssh -G`); the identity (port 22) when nothing is known. */
export type Resolver = (host: string, port?: number, user?: string) => Resolved;
export const noAliases: Resolver = (host, port, user) => ({ host, port: port ?? 22, user });

/**
 * Every server `app` may be rolled out to, in the fleet config's order, then the git remotes'
 * (see the module's doc); `runs` says whether it is known to run the app (the fleet database
 * says so, or a git remote points at it): `--all` takes those, `--servers` any. `running`: the
 * fleet servers whose database rows say they run it; `remotes`: the current repository's (name,
 * push URL); `localRepo`: the repository of a fleet server `host: local`; `resolve`: ssh aliases
 * resolved (`ssh -G`). One repository (host, port, path) is one target, whatever its names.
 */
export function rolloutTargets(
  app: string,
  fleet: readonly FleetHost[],
  running: ReadonlySet<string>,
  remotes: readonly { name: string; url: string }[],
  localRepo: string,
  resolve: Resolver = noAliases,
): Target[] {
  const fleetHosts = fleet.filter((s) => s.host !== "local").map((s) => ({ server: s, at: resolve(s.host, s.port) }));
  const appRemotes = remotes.flatMap((remote) => {
    const url = parseSshUrl(remote.url);
    if (!url) return [];
    const at = resolve(url.host, url.port, url.user);
    const onFleet = fleetHosts.find((f) => sameHost(f.at.host, at.host) && f.server.port === at.port);
    // A code host (github, a repository server) is never a server: only setup's path, or a fleet host.
    if (!isServerRepo(url.path, app) && !(onFleet && pointsAtApp(url.path, app))) return [];
    return [{ ...remote, parsed: url, at, onFleet: onFleet?.server }];
  });
  const used = new Set<string>();
  const targets: Target[] = [];
  const add = (target: Target, key: string) => {
    // The same repository under another name (an alias of a fleet host, a server added twice): once.
    if (target.remote && !target.fleet && targets.some((t) => t.key === key)) return;
    targets.push({ ...target, key });
  };
  for (const server of fleet) {
    if (server.host === "local") {
      add({ name: server.name, url: localRepo, fleet: server, runs: running.has(server.name) }, `local\0${localRepo}`);
      continue;
    }
    const at = resolve(server.host, server.port);
    const matches = appRemotes.filter((r) => r.onFleet === server);
    for (const r of matches) used.add(r.name);
    const remote = matches[0];
    const path = remote?.parsed.path ?? repoPath(app);
    const target = {
      name: server.name,
      url: sshUrl(server.user, server.host, server.port, path),
      fleet: server,
      remote: remote?.name,
      runs: running.has(server.name) || matches.length > 0,
    };
    add(target, repoKey(at.host, server.port, path));
  }
  for (const remote of appRemotes) {
    if (used.has(remote.name)) continue;
    const clash = targets.find((t) => t.name === remote.name);
    if (clash) {
      throw new UsageError(
        `the git remote "${remote.name}" (${remote.url}) has the name of the fleet server "${clash.name}" ` +
          `(${clash.fleet?.host}) but points elsewhere`,
        { suggestion: `rename the remote (git remote rename ${remote.name} <other>) or add its host to the fleet` },
      );
    }
    add(
      { name: remote.name, url: remote.url, remote: remote.name, runs: true },
      repoKey(remote.at.host, remote.at.port, remote.parsed.path),
    );
  }
  return targets;
}

const repoKey = (host: string, port: number, path: string) =>
  `${host.toLowerCase()}\0${port}\0${path.replace(/\/+$/, "").replace(/^\/~\//, "")}`;

const sameHost = (a: string, b: string) => a.toLowerCase() === b.toLowerCase();

/**
 * The targets `options` picks: `--all` (those known to run the app), or `--servers` in the order
 * given (any fleet server or app remote; unknown names refused). One repository is picked once
 * (under the first name that names it).
 */
export function pickTargets(
  targets: readonly Target[],
  options: RolloutOptions,
  remotes: readonly { name: string; url: string }[] = [],
): Target[] {
  const once = (list: Target[]) => list.filter((t, i) => list.findIndex((o) => o.key === t.key) === i);
  if (!options.servers) {
    const runs = once(targets.filter((t) => t.runs));
    if (!runs.length) {
      throw new UsageError(
        `no server is known to run ${options.app}: the fleet database (after \`deploy-paradigm fleet collect --once\`) ` +
          `lists none, and no git remote here points at ${repoPath(options.app)}`,
        {
          suggestion:
            `name the servers to deploy it there first: deploy-paradigm rollout ${options.app} --servers NAME ` +
            `(a fleet server; deploy-paradigm fleet add <name> <user@host> adds one), or add a git remote`,
        },
      );
    }
    return runs;
  }
  const known = targets.map((t) => t.name);
  const picked: Target[] = [];
  for (const name of options.servers) {
    const target = targets.find((t) => t.name === name);
    if (!target) {
      const remote = remotes.find((r) => r.name === name);
      if (remote) throw remoteNotServer(remote, options.app);
      const guess = didYouMean(name, known);
      throw new UsageError(
        `"${name}" is not in the fleet config, nor a git remote here pointing at ${repoPath(options.app)}` +
          (known.length ? `; the known servers: ${known.join(", ")}` : ""),
        { suggestion: guess ? `did you mean "${guess}"?` : `add it: deploy-paradigm fleet add ${name} <user@host>` },
      );
    }
    picked.push(target);
  }
  return once(picked);
}

/** Whether a git remote's URL is a path on this machine (`/srv/x.git`, `../x.git`, `file://…`), as git reads it. */
export function isLocalPath(url: string): boolean {
  if (/^file:\/\//i.test(url)) return true;
  if (url.includes("://") || /^[A-Za-z][A-Za-z0-9+.-]*::/.test(url)) return false;
  const colon = url.indexOf(":");
  return colon < 0 || url.slice(0, colon).includes("/"); // `host:path` is scp-like ssh
}

/** `--servers NAME` where NAME is a git remote here that is no server: what it is, and what to do instead. */
function remoteNotServer(remote: { name: string; url: string }, app: string): UsageError {
  const shown = JSON.stringify(remote.url.replace(/^([a-z+]+:\/\/[^/:@]*):[^/@]*@/i, "$1:…@")); // no password
  if (isLocalPath(remote.url)) {
    return new UsageError(
      `the git remote "${remote.name}" is a path on this machine (${shown}), not a server: rollout deploys ` +
        "to servers over ssh",
      {
        suggestion: "to roll out to this machine, add it to the fleet and name it: deploy-paradigm fleet add here " +
          `local, then deploy-paradigm rollout ${app} --servers here; or push to it: git push ${remote.name}`,
      },
    );
  }
  return new UsageError(
    `the git remote "${remote.name}" (${shown}) is not a server's repository of ${app}: rollout takes a remote ` +
      `over ssh pointing at ${repoPath(app)}, or a fleet server`,
    { suggestion: `add the server: deploy-paradigm fleet add <name> <user@host>, then --servers <name>` },
  );
}

/** The waves: the first target alone, then the rest `parallel` at a time. */
export function waves<T>(targets: readonly T[], parallel: number): T[][] {
  if (!targets.length) return [];
  const out: T[][] = [[targets[0]]];
  for (let i = 1; i < targets.length; i += parallel) out.push(targets.slice(i, i + parallel));
  return out;
}

/** One shell word (for GIT_SSH_COMMAND, which git runs through `sh -c`): single-quoted unless plain. */
export function shellWord(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`;
}

/** The reason in a rejected push's `! [remote rejected] main -> main (deploy failed at health)`, else its last line. */
export function pushFailure(tail: readonly string[], code: number): string {
  const rejected = tail.map((line) => /\[(?:remote )?rejected\][^(]*\((.+)\)\s*$/.exec(line)?.[1]).find(Boolean);
  if (rejected) return rejected;
  const last = [...tail].reverse().find((line) => line.trim() && !/^error: failed to push/.test(line));
  return last?.trim().replace(/^remote:\s*/, "") || `git push exited with code ${code}`;
}
