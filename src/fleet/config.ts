/**
 * The fleet monitor's home (`~/.fleet-monitor`, or `FLEET_MONITOR_HOME`) and its config.yml:
 * the servers, the collection interval, the retention of log lines, the alerts' targets and the
 * alert rules (`rules:`: their keys and checks in ./rule_config.ts, what they watch in ./rules.ts).
 * @module
 */
import { dirname, join, resolve } from "node:path";
import { z } from "zod";
import { parseConfig, positionIn } from "../config/load.ts";
import { duration } from "../config/fields.ts";
import { ConfigError, UsageError } from "../errors.ts";
import { readTextOrUndefined, writeFileAtomic } from "../fsutil.ts";
import { FLEET_EVENTS, targetSchema } from "../notify.ts";
import { documentText, parseDocument } from "../yaml.ts";
import { crossChecks } from "../config/cross_checks.ts";
import { checkRules, ruleSchema, salvage } from "./rule_config.ts";

/** `host: local`: this machine's own deployments, read directly (no ssh). */
export const LOCAL = "local";

/** The fleet monitor's home directory. `FLEET_MONITOR_HOME` set but empty is refused (a usage error). */
export function fleetHome(): string {
  const home = Deno.env.get("FLEET_MONITOR_HOME");
  if (home === "") {
    throw new UsageError("FLEET_MONITOR_HOME is set but empty", {
      suggestion: "set it to the fleet monitor's directory, or unset it for ~/.fleet-monitor",
    });
  }
  if (home) return resolve(home);
  return join(Deno.env.get("HOME") ?? ".", ".fleet-monitor");
}

/** Files under the home. */
export function fleetPaths(home = fleetHome()) {
  return {
    home,
    config: join(home, "config.yml"),
    db: join(home, "data", "fleet.db"),
    /** What the alerts last saw (so one-shot cycles alert on transitions too). */
    alerts: join(home, "data", "alerts.json"),
    mirror: (server: string) => join(home, "mirror", server),
    knownHosts: join(home, "known_hosts"),
    sockets: join(home, "ssh"),
  };
}

/** Words that reach ssh and rsync's -e: no quotes, no whitespace (rsync's own quoting cannot hold them). */
const plainPath = z.string().min(1).regex(/^[^\s'"\\]+$/, "must be a path without spaces or quotes");

/** The longest collection interval: a day (a server pulled less often is not monitored). */
const MAX_INTERVAL_MS = 24 * 3_600_000;

/** An IPv6 address (two colons at least; an IPv4 tail allowed), as a pattern's source. */
const IPV6 = "[0-9A-Fa-f.]*:[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*";

/**
 * `host:`: `local`, a host name or IPv4 address, or an IPv6 address, bare (`::1`) or in brackets
 * (`[::1]`, kept bare: ssh takes it so, and rsync's remote path brackets it, ./ssh_source.ts).
 */
const HOST = new RegExp(`^(local|[A-Za-z0-9_][A-Za-z0-9_.-]*|${IPV6}|\\[${IPV6}\\])$`);

const serverSchema = z.strictObject({
  name: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, "must be lowercase letters, digits and dashes (up to 63)"),
  host: z.string().regex(
    HOST,
    'must be a host name, an IPv4 address, or an IPv6 address such as ::1 (or "local" for this machine)',
  ).transform((host) => host.replace(/^\[(.*)\]$/, "$1")),
  user: z.string().regex(/^[A-Za-z_][A-Za-z0-9_.-]*$/, "must be a user name").default("root"),
  port: z.int({ error: "must be a whole number from 1 to 65535" }).min(1).max(65535).default(22),
  identityFile: plainPath.optional(),
  netdata: z.url({ protocol: /^https?$/, error: "must be an http(s) URL" }).optional(),
});

/** `~/.fleet-monitor/config.yml`. */
export const fleetConfigSchema = z.strictObject({
  interval: duration("30s", MAX_INTERVAL_MS, 1000),
  concurrency: z.int({ error: "must be a whole number from 1 to 64" }).min(1).max(64).default(8),
  retention: z.strictObject({
    days: z.number({ error: "must be a number of days above 0, e.g. 30" }).positive().default(30),
    maxLines: z.int({ error: "must be a whole number of 1000 or more, e.g. 5000000" }).min(1000).default(5_000_000),
  }).default({ days: 30, maxLines: 5_000_000 }),
  servers: z.array(serverSchema).default([]),
  /** Where transitions go: app unhealthy/recovered, server unreachable/back, deploy failed/rolled back. */
  alerts: z.array(targetSchema(FLEET_EVENTS)).max(20).default([]),
  /** Failed cycles in a row before a server is called unreachable in an alert. */
  graceCycles: z.int({ error: "must be a whole number from 1 to 100" }).min(1).max(100).default(2),
  /** Alert rules: thresholds, log patterns, certificate expiry, failed cron jobs (./rules.ts). */
  rules: z.array(ruleSchema).max(200).default([]),
}).check(crossChecks((config, ctx, ok) => {
  const seen = new Set<string>();
  (Array.isArray(config.servers) ? config.servers : []).forEach((server, i) => {
    if (!ok(`servers.${i}.name`) || typeof server?.name !== "string") return;
    if (seen.has(server.name)) {
      ctx.addIssue({ code: "custom", path: ["servers", i, "name"], message: `"${server.name}" is listed twice` });
    }
    seen.add(server.name);
  });
  // Other problems: the rules are checked too (else a second pass finds theirs), those that parse.
  // Without any, the transform below checks them.
  if (ctx.issues.length) checkRules(salvage(config), ctx);
})).transform((config, ctx) => {
  const rules = checkRules(config, ctx);
  return rules ? { ...config, rules } : z.NEVER;
});

/** A validated fleet config, defaults applied. */
export type FleetConfig = z.output<typeof fleetConfigSchema>;
/** One server of the fleet. */
export type FleetServer = FleetConfig["servers"][number];

/**
 * Reads the config. An absent file is an empty fleet when it is the home's own (`fleet add`
 * creates it), a usage error when it was named (`--config`: a typo would read as no servers and
 * no rules). Throws a usage error naming every problem.
 */
export async function loadFleetConfig(path: string, options: { named?: boolean } = {}): Promise<FleetConfig> {
  const text = await readConfigText(path);
  if (text === undefined && options.named) {
    throw new UsageError(`--config ${path}: no such file`, {
      suggestion: "give the path of an existing fleet config, or leave --config out for the home's " +
        `(${fleetPaths().config}); \`deploy-paradigm fleet add <name> <user@host> --config ${path}\` creates it`,
    });
  }
  const config = parseConfig(text ?? "servers: []\n", fleetConfigSchema, path);
  const problems: string[] = [];
  for (const [i, server] of config.servers.entries()) {
    const problem = server.identityFile && await identityProblem(server.identityFile);
    if (problem) {
      const at = positionIn(text!, path, ["servers", i, "identityFile"]);
      problems.push(`${at}: "servers.${i}.identityFile" ${problem} (got ${JSON.stringify(server.identityFile)})`);
    }
  }
  if (problems.length) {
    const count = problems.length > 1 ? ` (${problems.length} problems)` : "";
    throw new ConfigError(`Cannot read ${path}${count}:`, problems, { suggestion: IDENTITY_HINT });
  }
  return config;
}

/** What to give as an identity file, said where one is refused. */
const IDENTITY_HINT = "give the private key ssh uses for this server (e.g. ~/.ssh/id_ed25519), or leave it out";

/**
 * What is wrong with `identity` as ssh's `-i` (a private key file, `~/` its user's home), or
 * undefined: absent, a directory, or a public key (`.pub`, or text starting `ssh-`, `ecdsa-`, `sk-`).
 */
async function identityProblem(identity: string): Promise<string | undefined> {
  // `~/` as ssh reads it: the user's home
  const onDisk = identity.startsWith("~/") ? (Deno.env.get("HOME") ?? "") + identity.slice(1) : identity;
  const info = await Deno.stat(onDisk).catch(() => undefined);
  if (!info) return "is no such file";
  if (info.isDirectory) return "is a directory, not a key file";
  if (!info.isFile) return "is not a file";
  const start = await readStart(onDisk);
  if (identity.endsWith(".pub") || /^(ssh-|ecdsa-|sk-)/.test(start)) {
    return "is a public key: give the private key (the same name without .pub)";
  }
  return undefined;
}

/** The first bytes of the file at `path`, as text ("" when unreadable: ssh will say why). */
async function readStart(path: string): Promise<string> {
  try {
    using file = await Deno.open(path);
    const bytes = new Uint8Array(16);
    const read = await file.read(bytes);
    return new TextDecoder().decode(bytes.subarray(0, read ?? 0));
  } catch {
    return "";
  }
}

/**
 * The text of the config at `path`, undefined when absent; a directory, or a path through a file
 * (`FLEET_MONITOR_HOME` naming a file), is a {@link UsageError} that names it.
 */
async function readConfigText(path: string): Promise<string | undefined> {
  try {
    return await readTextOrUndefined(path);
  } catch (error) {
    if (error instanceof Deno.errors.IsADirectory) {
      throw new UsageError(`${path} is a directory, not a fleet config`, {
        suggestion: "give --config the config.yml itself, or leave --config out for the home's",
      });
    }
    if (error instanceof Deno.errors.NotADirectory) {
      let file = dirname(path);
      while (dirname(file) !== file && !(await Deno.stat(file).then((info) => info.isFile, () => false))) {
        file = dirname(file);
      }
      const home = fleetPaths().home;
      throw new UsageError(`cannot read ${path}: ${file} is a file, not a directory`, {
        suggestion: file === home
          ? "point FLEET_MONITOR_HOME at a directory (created if absent), or unset it for ~/.fleet-monitor"
          : "give --config the path of a config file in a directory",
      });
    }
    throw error;
  }
}

/** What `fleet add` writes. */
export interface NewServer {
  name: string;
  /** `user@host`, `host`, or `local`. */
  target: string;
  port?: number;
  identityFile?: string;
  netdata?: string;
}

/** Adds a server to config.yml, keeping the file's comments; refuses a name already there. */
export async function addServer(path: string, server: NewServer): Promise<FleetServer> {
  if (!/^([^@\s]+@)?[^@\s]+$/.test(server.target)) {
    throw new UsageError(`"${server.target}" is not user@host, host, or local`);
  }
  const [user, written] = server.target.includes("@") ? server.target.split("@", 2) : [undefined, server.target];
  const host = written.replace(/^\[(.*)\]$/, "$1"); // user@[::1], as ssh users write it
  const entry: Record<string, unknown> = { name: server.name, host };
  if (user) entry.user = user;
  if (server.port !== undefined) entry.port = server.port;
  if (server.identityFile) entry.identityFile = server.identityFile;
  if (server.netdata) entry.netdata = server.netdata;
  refuseBadArguments(entry);
  if (host === LOCAL) {
    // Pulled without ssh: these would be written to config.yml and never used.
    const ssh = [user && `${user}@`, server.port !== undefined && "--ssh-port", server.identityFile && "--identity"]
      .filter(Boolean);
    if (ssh.length) {
      throw new UsageError(
        `fleet add: ${ssh.join(", ")} ${ssh.length === 1 ? "is" : "are"} for ssh; local is this machine, ` +
          "whose files are read without ssh",
        { suggestion: `deploy-paradigm fleet add ${server.name} local [--netdata URL]` },
      );
    }
  }
  const problem = server.identityFile && await identityProblem(server.identityFile);
  if (problem) {
    throw new UsageError(`--identity ${server.identityFile} ${problem}`, {
      suggestion: IDENTITY_HINT.replace("leave it out", "leave --identity out"),
    });
  }
  const text = await readConfigText(path) ?? HEADER;
  const config = parseConfig(text, fleetConfigSchema, path);
  if (config.servers.some((s) => s.name === server.name)) {
    throw new UsageError(`a server named "${server.name}" is already in ${path}`, {
      suggestion: "pick another name, or edit the file",
    });
  }
  const doc = parseDocument(text);
  if (!doc.has("servers") || !doc.get("servers")) doc.set("servers", doc.createNode([]));
  (doc.get("servers") as { add(value: unknown): void }).add(doc.createNode(entry));
  const updated = documentText(doc);
  const checked = parseConfig(updated, fleetConfigSchema, `${path} (with ${server.name})`);
  await Deno.mkdir(dirname(path), { recursive: true, mode: 0o700 }); // the home, when this is the first command
  await writeFileAtomic(path, updated, 0o600);
  return checked.servers.find((s) => s.name === server.name)!;
}

/** Where server `name` is in `config` (read from `path`); refuses a name not there, naming those that are. */
export function serverIndex(config: FleetConfig, path: string, name: string): number {
  const index = config.servers.findIndex((s) => s.name === name);
  if (index < 0) {
    const names = config.servers.map((s) => s.name);
    throw new UsageError(`no server "${name}" in ${path}`, {
      suggestion: names.length ? `its servers: ${names.join(", ")}` : "it has no servers",
    });
  }
  return index;
}

/**
 * Removes server `name` from config.yml, keeping the file's comments and the other servers; refuses
 * a name not there (naming those that are). Returns it, and the servers left.
 */
export async function removeServer(
  path: string,
  name: string,
): Promise<{ removed: FleetServer; left: FleetServer[] }> {
  const text = await readConfigText(path) ?? "servers: []\n";
  const config = parseConfig(text, fleetConfigSchema, path);
  const index = serverIndex(config, path, name);
  const doc = parseDocument(text);
  (doc.get("servers") as { delete(index: number): boolean }).delete(index);
  const updated = documentText(doc);
  const checked = parseConfig(updated, fleetConfigSchema, `${path} (without ${name})`);
  await writeFileAtomic(path, updated, 0o600);
  return { removed: config.servers[index], left: checked.servers };
}

/** Where each key of a server entry comes from on `fleet add`'s command line. */
const ARGUMENTS: Record<string, string> = {
  name: "<name>",
  host: "the host of <user@host>",
  user: "the user of <user@host>",
  port: "--ssh-port",
  identityFile: "--identity",
  netdata: "--netdata",
};

/** Refuses an entry made of bad arguments, each problem named by its argument (the file is not theirs). */
function refuseBadArguments(entry: Record<string, unknown>): void {
  const checked = serverSchema.safeParse(entry);
  if (checked.success) return;
  const problems = checked.error.issues.map((issue) => {
    const key = String(issue.path[0]);
    return `${ARGUMENTS[key] ?? key} ${JSON.stringify(entry[key])} ${issue.message}`;
  });
  throw new UsageError(`fleet add: ${problems.join("; ")}`, {
    suggestion: "deploy-paradigm fleet add <name> <user@host> [--ssh-port N] [--identity FILE] [--netdata URL]",
  });
}

const HEADER = `# deploy-paradigm fleet monitor: the servers it pulls status.json and logs from, over ssh + rsync.
# interval: 30s               # how often every server is pulled
# retention: { days: 30, maxLines: 5000000 }
# alerts: [{ type: slack, url: "https://hooks.slack.com/services/…" }]   # webhook, slack or discord
# rules: [{ metric: disk.used_percent, above: 90, for: 2 cycles }, { query: FATAL, atLeast: 5, within: 5m }]
servers: []
`;
