/**
 * `deploy-paradigm fleet …`: the fleet monitor on a laptop. `fleet` collects every interval and
 * serves the API (and dashboard); `fleet collect --once` runs one cycle; `fleet add`, `fleet list`
 * and `fleet trust` manage the servers; `fleet alerts` (./cli_alerts.ts) lists the alert rules and
 * where they stand.
 * @module
 */
import { join } from "node:path";
import { acquireLock, type HeldLock } from "../deploy/lock.ts";
import type { FleetHandler } from "./api.ts";
import type { FleetEvents } from "./events.ts";
import { UsageError } from "../errors.ts";
import { writeFileAtomic } from "../fsutil.ts";
import { ProcessRunner } from "../runner.ts";
import { FleetAlerts } from "./fleet_alerts.ts";
import { Collector, type CycleSummary } from "./collector.ts";
import {
  addServer,
  fleetPaths,
  type FleetServer,
  loadFleetConfig,
  LOCAL,
  removeServer,
  serverIndex,
} from "./config.ts";
import { limitLines } from "./views.ts";
import { FleetStore } from "./store.ts";
import { forTerminal, jsonForTerminal } from "../terminal.ts";

/** A server's text on one line of the terminal. */
const safe = (text: string) => forTerminal(text, { oneLine: true });

/** Options common to the fleet actions. */
export interface FleetOptions {
  /** config.yml (default `<home>/config.yml`). */
  config?: string;
}

/** The config `options` name (`--config`: it must exist), else the home's (absent: an empty fleet). */
export async function readConfig(options: FleetOptions, paths = fleetPaths()) {
  const configPath = options.config ?? paths.config;
  return { configPath, config: await loadFleetConfig(configPath, { named: options.config !== undefined }) };
}

/**
 * Reads the config and opens the database (config first: a bad config changes nothing, nor does
 * `collect --once` without servers, `once`). With `collect`, also takes the home's collector lock:
 * one collector per home, so two never pull the same server into the same mirror and ledgers.
 */
async function open(options: FleetOptions, collect: false | "serve" | "once" = false) {
  const paths = fleetPaths();
  const { configPath, config } = await readConfig(options, paths);
  if (collect === "once" && !config.servers.length) {
    throw new UsageError(`no servers in ${configPath}`, {
      suggestion: "add one: deploy-paradigm fleet add <name> <user@host> (or `local` for this machine)",
    });
  }
  const lock = collect ? await collectorLock(paths.home) : undefined;
  const store = await FleetStore.open(paths.db);
  const collector = new Collector(store, config, paths);
  return { paths, configPath, config, store, collector, lock };
}

/** The home's collector lock (an flock, freed by the kernel when the process ends); never waits. */
async function collectorLock(
  home: string,
  suggestion = "its cycles already collect; read its API, or stop it first",
): Promise<HeldLock> {
  await Deno.mkdir(home, { recursive: true, mode: 0o700 });
  return await acquireLock(join(home, ".collector.lock"), { pid: Deno.pid, commit: "fleet collector" }, (holder) => {
    throw new UsageError(`another fleet collector is running on ${home}${holder ? ` (pid ${holder.pid})` : ""}`, {
      suggestion,
    });
  });
}

const kb = (bytes: number) => bytes < 1024 ? `${bytes} B` : `${(bytes / 1024).toFixed(1)} KB`;

/** One line per cycle (`once`: the only one, `collect --once`, not numbered), plus one per server that failed. */
export function cycleLines(summary: CycleSummary, once = false): string[] {
  const ok = summary.servers.filter((s) => s.ok);
  const sum = (key: "apps" | "lines" | "deployments" | "bytes") => summary.servers.reduce((n, s) => n + s[key], 0);
  const time = summary.at.slice(11, 19);
  const lines = [
    `[${time}] ${once ? "collected" : `cycle ${summary.cycle}`}: ${ok.length}/${summary.servers.length} servers, ${
      sum("apps")
    } apps, ` +
    `+${sum("lines")} lines, +${sum("deployments")} deployments, ${kb(sum("bytes"))} in ` +
    `${(summary.durationMs / 1000).toFixed(1)}s` +
    (summary.skipped.length ? `; still pulling ${summary.skipped.join(", ")}` : "") +
    (summary.holding ? "; resumed after a pause: judging from the next cycle" : ""),
  ];
  for (const server of summary.servers.filter((s) => !s.ok)) {
    lines.push(`  ✗ ${server.server}: ${safe(server.error ?? "failed")}`);
  }
  for (const server of summary.servers) {
    for (const limit of server.limits ?? []) lines.push(`  ! ${server.server}: over a limit: ${safe(limit)}`);
  }
  for (const change of summary.changes) {
    const health = change.healthy === undefined ? "" : change.healthy ? " healthy" : " UNHEALTHY";
    lines.push(
      `  • ${change.server}/${safe(change.app)}: ${safe(change.status ?? "?")}${health} ${safe(change.version ?? "")}`
        .trimEnd(),
    );
  }
  return lines;
}

/**
 * `fleet collect --once`: one cycle, its summary printed, its alerts sent (each bounded by a
 * timeout). Exit 1 when a server failed.
 */
export async function collectOnce(options: FleetOptions): Promise<number> {
  const { paths, config, store, collector, lock } = await open(options, "once");
  try {
    const alerts = await FleetAlerts.open(config, paths.alerts);
    const summary = await collector.cycle();
    for (const line of cycleLines(summary, true)) console.log(line);
    await alerts?.after(summary, store);
    return summary.servers.every((s) => s.ok) ? 0 : 1;
  } finally {
    await collector.close();
    store.close();
    lock?.release();
  }
}

/** What the database at `db` knows of each server; none, and no database made, when there is none yet. */
async function knownServers(db: string) {
  const known = new Map<string, { last_ok: number | null; last_error: string | null; limits: string | null }>();
  if (!(await Deno.stat(db).then((info) => info.isFile, () => false))) return known;
  const store = await FleetStore.open(db);
  try {
    for (const row of store.sql("SELECT name, last_ok, last_error, limits FROM servers").all()) {
      const { name, ...rest } = row as {
        name: string;
        last_ok: number | null;
        last_error: string | null;
        limits: string | null;
      };
      known.set(name, rest);
    }
  } finally {
    store.close();
  }
  return known;
}

/** `fleet list`: the configured servers and what the database knows of them. Reads only: makes nothing. */
export async function listServers(options: FleetOptions & { json?: boolean }): Promise<number> {
  const paths = fleetPaths();
  const { config, configPath } = await readConfig(options, paths);
  const known = await knownServers(paths.db);
  const rows = config.servers.map((server) => {
    const row = known.get(server.name);
    return {
      name: server.name,
      target: server.host === LOCAL
        ? LOCAL
        : `${server.user}@${server.host.includes(":") ? `[${server.host}]` : server.host}:${server.port}`,
      lastContact: row?.last_ok ? new Date(row.last_ok).toISOString() : undefined,
      error: row?.last_error ?? undefined,
      limits: limitLines(row?.limits ?? null),
      netdata: server.netdata,
    };
  });
  if (options.json) {
    console.log(jsonForTerminal(rows, 2));
    return 0;
  }
  if (!rows.length) {
    console.log(`No servers in ${configPath}. Add one: deploy-paradigm fleet add <name> <user@host>`);
    return 0;
  }
  const table = [
    ["NAME", "TARGET", "LAST CONTACT", "LIMITS", "ERROR"],
    ...rows.map((r) => [
      r.name,
      r.target,
      r.lastContact ?? "never",
      r.limits.length ? `OVER (${r.limits.length})` : "-",
      safe(r.error ?? ""),
    ]),
  ];
  const widths = table[0].map((_, i) => Math.max(...table.map((row) => row[i].length)));
  for (const row of table) console.log(row.map((cell, i) => cell.padEnd(widths[i])).join("  ").trimEnd());
  for (const r of rows) for (const limit of r.limits) console.log(`! ${r.name}: over a limit: ${safe(limit)}`);
  return 0;
}

/** `fleet add <name> <user@host>`. */
export async function add(
  options: FleetOptions & { name: string; target: string; sshPort?: string; identity?: string; netdata?: string },
): Promise<number> {
  const paths = fleetPaths();
  const configPath = options.config ?? paths.config;
  const port = options.sshPort === undefined ? undefined : Number(options.sshPort);
  if (port !== undefined && !(Number.isInteger(port) && port >= 1 && port <= 65535)) {
    throw new UsageError(`--ssh-port must be a port from 1 to 65535 (got "${options.sshPort}")`);
  }
  const server = await addServer(configPath, {
    name: options.name,
    target: options.target,
    port,
    identityFile: options.identity,
    netdata: options.netdata,
  });
  console.log(
    `✓ added ${server.name} (${server.host === LOCAL ? LOCAL : `${server.user}@${server.host}`}) to ${configPath}`,
  );
  // A collector reads config.yml when it starts (and refuses `collect --once` beside it).
  const collector = await runningCollector(paths.home);
  if (server.host !== LOCAL) {
    console.log(
      `  next: check its host key with \`deploy-paradigm fleet trust ${server.name}\`` +
        (collector ? "" : ", then `deploy-paradigm fleet collect --once`"),
    );
  }
  if (collector) {
    console.log(
      `! the fleet collector running on ${paths.home}${collector.pid ? ` (pid ${collector.pid})` : ""} pulls the ` +
        `servers it started with: restart it (Ctrl-C, then \`deploy-paradigm fleet\`) to pull ${server.name}`,
    );
  }
  return 0;
}

/** The collector holding the home's lock now, if one does (its pid when it wrote it); takes nothing. */
async function runningCollector(home: string): Promise<{ pid?: number } | undefined> {
  const path = join(home, ".collector.lock");
  const file = await Deno.open(path, { read: true }).catch(() => undefined);
  if (!file) return undefined; // no collector ever ran here
  try {
    if (await file.tryLock(true)) {
      await file.unlock();
      return undefined;
    }
    const owner: { pid?: unknown } | null = await Deno.readTextFile(path).then((text) => JSON.parse(text), () => ({}));
    return { pid: typeof owner?.pid === "number" ? owner.pid : undefined };
  } finally {
    file.close();
  }
}

/**
 * `fleet remove <server>`: takes it out of config.yml, and removes its mirror, its host keys (unless
 * another server has the same host and port) and what the overview holds of it (its apps, status,
 * certificates, cron runs and metrics; its logs and deployments stay searchable, as when it is
 * deleted from config.yml by hand). Under the collector lock: a running collector would pull it again.
 */
export async function remove(options: FleetOptions & { name: string }): Promise<number> {
  const paths = fleetPaths();
  const { configPath, config } = await readConfig(options, paths);
  serverIndex(config, configPath, options.name); // an unknown name is refused before the lock is made
  const lock = await collectorLock(paths.home, "stop it (Ctrl-C), remove the server, then start it again");
  try {
    const { removed, left } = await removeServer(configPath, options.name);
    await Deno.remove(paths.mirror(removed.name), { recursive: true }).catch((error) => {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    });
    const keys = removed.host === LOCAL ? 0 : await forgetHostKeys(paths.knownHosts, removed, left);
    if (await Deno.stat(paths.db).then(() => true, () => false)) {
      const store = await FleetStore.open(paths.db);
      try {
        store.keepServers(left.map((s) => s.name));
      } finally {
        store.close();
      }
    }
    const where = removed.host === LOCAL ? LOCAL : `${removed.user}@${removed.host}`;
    console.log(`✓ removed ${removed.name} (${where}) from ${configPath}`);
    console.log(
      `  its mirror, ${keys} host key${keys === 1 ? "" : "s"} and its status, certificates and metrics are gone; ` +
        "its logs and deployments stay searchable until retention ends them",
    );
    return 0;
  } finally {
    lock.release();
  }
}

/**
 * Forgets `server`'s host and port (`host` for 22, `[host]:port` otherwise) in known_hosts, unless a
 * server `left` has the same: its name is taken off each line that names it, and a line left with no
 * name goes; other hosts' names and keys, comments, `@cert-authority` and `@revoked` lines stay.
 * Returns how many keys it no longer names.
 */
async function forgetHostKeys(path: string, server: FleetServer, left: FleetServer[]): Promise<number> {
  if (left.some((s) => s.host === server.host && s.port === server.port)) return 0;
  const text = await Deno.readTextFile(path).catch(() => undefined);
  if (text === undefined) return 0;
  const name = server.port === 22 ? server.host : `[${server.host}]:${server.port}`;
  const lines = text.split("\n");
  const changed = lines.map((line) => withoutName(line, name));
  const forgotten = changed.filter((line, i) => line !== lines[i]).length;
  if (forgotten) await writeFileAtomic(path, changed.filter((line) => line !== undefined).join("\n"), 0o600);
  return forgotten;
}

/**
 * A known_hosts line without host `name` among its comma-separated names (undefined: it named no
 * other); the line as it is when it does not name it, or is a comment or a marked line.
 */
function withoutName(line: string, name: string): string | undefined {
  const fields = /^(\s*)([^#@\s]\S*)(\s.*)$/.exec(line); // indent, names, the key and its comment
  const names = fields?.[2].split(",") ?? [];
  if (!names.includes(name)) return line;
  const others = names.filter((n) => n !== name);
  return others.length ? fields![1] + others.join(",") + fields![3] : undefined;
}

/**
 * `fleet trust <server>`: shows the server's host key fingerprints (ssh-keyscan) and adds the keys
 * to the fleet's known_hosts once confirmed: `--fingerprint SHA256:…` must match one of them, or
 * `--yes` accepts what was shown (or a prompt asks, in a terminal).
 */
export async function trust(
  options: FleetOptions & { name: string; fingerprint?: string; yes?: boolean },
): Promise<number> {
  const paths = fleetPaths();
  const { config, configPath } = await readConfig(options, paths);
  const server = config.servers.find((s) => s.name === options.name);
  if (!server) {
    throw new UsageError(`no server "${options.name}" in ${configPath}`, {
      suggestion: "see deploy-paradigm fleet list",
    });
  }
  if (server.host === LOCAL) throw new UsageError(`${server.name} is this machine (host: local): nothing to trust`);
  const runner = new ProcessRunner();
  const scan = await runner.run({
    argv: ["ssh-keyscan", "-T", "5", "-p", String(server.port), "--", server.host],
    quiet: true,
    allowFailure: true,
    timeoutMs: 20_000,
  });
  const keys = scan.output.split("\n").filter((line) => line && !line.startsWith("#") && /\sssh-|\secdsa-/.test(line));
  if (!keys.length) {
    throw new UsageError(
      `no host key from ${server.host}:${server.port} (${safe(scan.tail.join(" ")) || "no answer"})`,
      {
        suggestion: "check that the server is up and its sshd listens on that port",
      },
    );
  }
  const temp = await Deno.makeTempFile({ prefix: "fleet-keys-" });
  let fingerprints: string[];
  try {
    await Deno.writeTextFile(temp, keys.join("\n") + "\n");
    const listed = await runner.run({ argv: ["ssh-keygen", "-l", "-f", temp], quiet: true, timeoutMs: 10_000 });
    fingerprints = listed.output.split("\n").filter(Boolean);
    if (fingerprints.length !== keys.length) {
      throw new Error(`ssh-keygen listed ${fingerprints.length} keys of ${keys.length}`);
    }
  } finally {
    await Deno.remove(temp).catch(() => {});
  }
  console.log(`Host keys of ${server.name} (${server.host}:${server.port}):`);
  for (const line of fingerprints) console.log(`  ${safe(line)}`);
  const shown = fingerprints.map((line) => line.split(" ")[1]);
  let trusted = keys;
  if (options.fingerprint !== undefined) {
    // Only the key with that fingerprint: another key offered alongside it proves nothing.
    trusted = keys.filter((_, i) => shown[i] === options.fingerprint);
    if (!trusted.length) {
      throw new UsageError(`none of ${server.name}'s host keys has the fingerprint ${options.fingerprint}`, {
        suggestion: "compare with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the server; do not trust it",
      });
    }
  } else if (!options.yes) {
    const answer = Deno.stdin.isTerminal() ? prompt("Trust these keys? Compare them with the server's. [y/N]") : null;
    if (!answer || !/^y(es)?$/i.test(answer.trim())) {
      throw new UsageError(`${server.name}'s host keys were not trusted`, {
        suggestion: "compare the fingerprints with the server's, then pass --yes or --fingerprint SHA256:…",
      });
    }
  }
  await Deno.mkdir(paths.home, { recursive: true, mode: 0o700 });
  const existing = await Deno.readTextFile(paths.knownHosts).catch(() => "");
  const added = trusted.filter((key) => !existing.includes(key));
  await Deno.writeTextFile(paths.knownHosts, added.map((key) => key + "\n").join(""), { append: true, mode: 0o600 });
  console.log(`✓ ${server.name}'s host keys are trusted (${paths.knownHosts})`);
  return 0;
}

/** The API and dashboard over a collector's store: what `fleet` serves (`alerts`: their rules' states on /metrics). */
export async function collectorHandler(
  collector: Collector,
  events: FleetEvents,
  options: { token?: string; heartbeatMs?: number; alerts?: FleetAlerts } = {},
): Promise<FleetHandler> {
  const { createFleetHandler } = await import("./api.ts");
  const { config, store } = collector;
  const { alerts, ...rest } = options;
  return createFleetHandler({
    store,
    view: () => collector.view(),
    collectorStats: () => ({
      ...collector.stats(),
      alerts: alerts?.alerter.firing(),
    }),
    rules: () => alerts?.alerter.activeRules() ?? [],
    servers: () => config.servers,
    events,
    dashboard: (path) => import("./dashboard.ts").then((files) => files.serveDashboard(path, config.servers)),
    ...rest,
  });
}

/** `fleet [--port 3333] [--host 127.0.0.1] [--token T]`: collect every interval and serve the API. */
export async function runFleet(
  options: FleetOptions & { host: string; port: number; token?: string; signal?: AbortSignal },
): Promise<number> {
  const { serveFleet } = await import("./api.ts");
  const { checkAddressFree, checkBinding } = await import("./api_binding.ts");
  const { FleetEvents } = await import("./events.ts");
  checkBinding(options.host, options.port, options.token); // before anything is opened or created
  checkAddressFree(options.host, options.port);
  const { paths, config, store, collector, configPath, lock } = await open(options, "serve");
  const alerts = await FleetAlerts.open(config, paths.alerts);
  const events = new FleetEvents();
  const handler = await collectorHandler(collector, events, { token: options.token, alerts });
  const stop = new AbortController();
  options.signal?.addEventListener("abort", () => stop.abort(), { once: true });
  const server = serveFleet(handler, {
    host: options.host,
    port: options.port,
    token: options.token,
    signal: stop.signal,
    onListen: ({ hostname, port }) =>
      console.log(
        `fleet: ${config.servers.length} server(s) from ${configPath}, every ${config.interval / 1000}s; ` +
          `API on http://${hostname.includes(":") ? `[${hostname}]` : hostname}:${port}/`,
      ),
  });
  // Alerts go out while the next cycles run; the ones under way are awaited at shutdown.
  const sending = new Set<Promise<void>>();
  try {
    await collector.run(stop.signal, (summary) => {
      for (const line of cycleLines(summary)) console.log(line);
      events.emit("cycle", summary);
      const sent = alerts?.after(summary, store);
      if (sent) {
        sending.add(sent);
        sent.finally(() => sending.delete(sent));
      }
    });
  } finally {
    await Promise.all(sending);
    await server.finished.catch(() => {});
    await collector.close();
    store.close();
    lock?.release();
  }
  return 0;
}
