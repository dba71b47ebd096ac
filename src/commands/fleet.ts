import type { CommandSpec } from "../cli.ts";
import { UsageError } from "../errors.ts";

/**
 * The API token: from `--token-file` (which must not be readable or writable by group or others),
 * `--token` (kept for scripts, with a warning: every user of the machine sees it in `ps`), or
 * `FLEET_MONITOR_TOKEN`; one of them at most.
 */
export async function apiToken(file: string | undefined, argv: string | undefined): Promise<string | undefined> {
  const env = Deno.env.get("FLEET_MONITOR_TOKEN");
  const given = [file !== undefined && "--token-file", argv !== undefined && "--token", env && "FLEET_MONITOR_TOKEN"]
    .filter(Boolean);
  if (given.length > 1) throw new UsageError(`the API token is given twice (${given.join(" and ")}): give one`);
  if (argv !== undefined) {
    console.error(
      "warning: --token shows the token to every user of this machine (ps, /proc); " +
        "use --token-file FILE (mode 0600) or FLEET_MONITOR_TOKEN instead",
    );
    return argv;
  }
  if (file === undefined) return env || undefined;
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(file);
  } catch (error) {
    throw new UsageError(`cannot read the token file ${file}: ${error instanceof Error ? error.message : error}`);
  }
  if (!info.isFile) throw new UsageError(`the token file ${file} is not a file`);
  const mode = (info.mode ?? 0) & 0o777;
  if (mode & 0o077) {
    throw new UsageError(
      `the token file ${file} is open to group or others (mode ${mode.toString(8).padStart(4, "0")}): refused`,
      { suggestion: `chmod 600 ${file}, and make a new token if others may have read it` },
    );
  }
  const token = (await Deno.readTextFile(file)).trim();
  if (!token || /\s/.test(token)) {
    throw new UsageError(`the token file ${file} must hold one token (no spaces)${token ? "" : ": it is empty"}`);
  }
  return token;
}

const ACTIONS = ["collect", "add", "remove", "list", "trust", "alerts"] as const;

/** The options of each action (`""`: none, collect and serve), beside --config, which all take. */
const TAKES: Record<(typeof ACTIONS)[number] | "", readonly string[]> = {
  "": ["host", "port", "token-file", "token"],
  collect: ["once"],
  add: ["ssh-port", "identity", "netdata"],
  remove: [],
  list: ["json"],
  trust: ["fingerprint", "yes"],
  alerts: ["json"],
};

/** Refuses an option given to an action that does not take it (it would be ignored). */
function refuseForeignOptions(action: string, opts: Record<string, unknown>): void {
  const takes = TAKES[action as keyof typeof TAKES];
  if (!takes) return; // an unknown action is refused as such
  const foreign = Object.keys(opts).filter((key) =>
    opts[key] !== undefined && key !== "config" && !takes.includes(key)
  );
  if (!foreign.length) return;
  const what = action ? `fleet ${action}` : "fleet (collect and serve)";
  const listed = foreign.map((key) => `--${key}`).join(", ");
  throw new UsageError(`${listed} ${foreign.length === 1 ? "is not an option" : "are not options"} of ${what}`, {
    suggestion: `${what} takes ${[...takes, "config"].map((key) => `--${key}`).join(", ")}`,
  });
}

/**
 * `fleet [collect --once | add <name> <user@host> | remove <server> | list | trust <server> | alerts]`: the
 * fleet monitor.
 * Without an action it collects every interval and serves the API on 127.0.0.1:3333.
 */
export const fleetCommand: CommandSpec = {
  name: "fleet",
  summary: "Monitor the fleet from a laptop: pull status and logs over ssh/rsync into SQLite, serve them on :3333",
  args: [
    { name: "action", description: `none (collect and serve), ${ACTIONS.join(", ")}`, optional: true },
    { name: "name", description: "add, remove, trust: the server's name", optional: true },
    { name: "target", description: "add: user@host (or local, for this machine)", optional: true },
  ],
  options: [
    { name: "config", value: "file", description: "The fleet config (default ~/.fleet-monitor/config.yml)" },
    { name: "host", value: "addr", description: "Address the API listens on (default 127.0.0.1)" },
    { name: "port", value: "port", description: "Port of the API (default 3333)" },
    {
      name: "token-file",
      value: "file",
      description: "The API token, read from a file only you can read (or FLEET_MONITOR_TOKEN); required " +
        "to listen beyond loopback",
    },
    {
      name: "token",
      value: "token",
      description: "The API token on the command line: shows in `ps`; prefer --token-file",
    },
    { name: "once", description: "collect: one cycle, then exit" },
    { name: "json", description: "list, alerts: print JSON" },
    { name: "ssh-port", value: "port", description: "add: the server's ssh port (default 22)" },
    { name: "identity", value: "file", description: "add: the ssh key to use" },
    { name: "netdata", value: "url", description: "add: the server's Netdata URL, shown in its drill-down" },
    { name: "fingerprint", value: "SHA256:…", description: "trust: the fingerprint the host key must have" },
    { name: "yes", short: "y", description: "trust: trust the keys shown without asking" },
  ],
  async run({ args, opts }) {
    const [action, name, target] = args;
    const str = (key: string) => opts[key] as string | undefined;
    const cli = await import("../fleet/cli.ts");
    const common = { config: str("config") };
    const needs = (count: number, usage: string) => {
      if (args.length !== count) throw new UsageError(`usage: deploy-paradigm fleet ${usage}`);
    };
    refuseForeignOptions(action ?? "", opts);
    switch (action) {
      case undefined: {
        const port = Number(str("port") ?? 3333);
        if (!Number.isInteger(port) || port < 1 || port > 65535) {
          throw new UsageError(`--port must be a port from 1 to 65535 (got "${str("port")}")`);
        }
        const token = await apiToken(str("token-file"), str("token"));
        const stop = new AbortController();
        const onSignal = () => stop.abort();
        for (const signal of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(signal, onSignal);
        try {
          return await cli.runFleet({ ...common, host: str("host") ?? "127.0.0.1", port, token, signal: stop.signal });
        } finally {
          for (const signal of ["SIGINT", "SIGTERM"] as const) Deno.removeSignalListener(signal, onSignal);
        }
      }
      case "collect":
        needs(1, "collect --once");
        if (!opts.once) throw new UsageError("fleet collect needs --once (plain `fleet` collects every interval)");
        return await cli.collectOnce(common);
      case "list":
        needs(1, "list [--json]");
        return await cli.listServers({ ...common, json: opts.json === true });
      case "alerts":
        needs(1, "alerts [--json]");
        return await (await import("../fleet/cli_alerts.ts")).listAlerts({ ...common, json: opts.json === true });
      case "add":
        needs(3, "add <name> <user@host> [--ssh-port N] [--identity FILE] [--netdata URL]");
        return await cli.add({
          ...common,
          name: name!,
          target: target!,
          sshPort: str("ssh-port"),
          identity: str("identity"),
          netdata: str("netdata"),
        });
      case "remove":
        needs(2, "remove <server>");
        return await cli.remove({ ...common, name: name! });
      case "trust":
        needs(2, "trust <server> [--fingerprint SHA256:…] [--yes]");
        return await cli.trust({ ...common, name: name!, fingerprint: str("fingerprint"), yes: opts.yes === true });
      default:
        throw new UsageError(`unknown fleet action "${action}"`, {
          suggestion: `use one of ${ACTIONS.join(", ")}, or none to collect and serve`,
        });
    }
  },
};
