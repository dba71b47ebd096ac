import { listenAddress } from "./listen_address.ts";
import type { CommandSpec } from "../cli.ts";
import { UsageError } from "../errors.ts";
import { type Manager, MANAGER_NAMES } from "../managers/mod.ts";
import { STRATEGIES, type Strategy } from "../deploy/strategies/names.ts";
import type { SlotPorts } from "../deploy/slots.ts";

/** `setup <app> [repo-url]`. */
export const setupCommand: CommandSpec = {
  name: "setup",
  summary: "Prepare this server for an app: config, .env, repository and hook, the proxy (asks on a terminal)",
  args: [
    { name: "app", description: "The app's name (as in its deploy.yml)" },
    { name: "repo-url", description: "Seed the bare repository with git clone --bare of this URL", optional: true },
  ],
  options: [
    { name: "port", value: "n", description: "The app's public port (1-65535)" },
    { name: "manager", value: "name", description: "Process manager", choices: MANAGER_NAMES },
    { name: "env", value: "name", description: "Environment: which .env.<env> the app gets (default production)" },
    { name: "strategy", value: "name", description: "How deploys switch", choices: STRATEGIES },
    {
      name: "domain",
      value: "name",
      repeatable: true,
      description: "A host name the proxy routes to the app, e.g. example.com or *.example.com (repeatable, or " +
        "comma-separated; replaces the app's list; --domain '' for none)",
    },
    {
      name: "proxy-host",
      value: "addr",
      description:
        "Address the proxy listens on (default: the one it has, else 0.0.0.0); a running proxy elsewhere is restarted there",
    },
    {
      name: "slots",
      value: "blue,green",
      description: "The internal ports of the blue and green slots, e.g. 21001,21002 (default: two free ports, " +
        "chosen once and kept)",
    },
    {
      name: "yes",
      short: "y",
      description: "Take defaults for what is not given (those it had, else port 8000, the manager running, " +
        "production, blue-green, the proxy on 0.0.0.0); ask nothing",
    },
  ],
  async run({ args, opts }) {
    const port = opts.port === undefined ? undefined : Number(opts.port);
    // Digits only: Number() also takes 0x5209, 2.1e4 and " 21102".
    if (port !== undefined && !(/^[0-9]{1,5}$/.test(String(opts.port)) && port >= 1 && port <= 65535)) {
      throw new UsageError(`--port must be a whole number from 1 to 65535 (got "${opts.port}")`);
    }
    const env = opts.env as string | undefined;
    if (env !== undefined && (!/^[A-Za-z0-9_.-]+$/.test(env) || env === "." || env === "..")) {
      throw new UsageError(`--env must be a name such as production (letters, digits, . _ -), got "${env}"`);
    }
    const slots = opts.slots === undefined ? undefined : slotPorts(String(opts.slots));
    const { setup } = await import("../setup.ts");
    return await setup({
      app: args[0],
      repoUrl: args[1],
      port,
      manager: opts.manager as Manager | undefined,
      env: opts.env as string | undefined,
      strategy: opts.strategy as Strategy | undefined,
      domains: opts.domain as string[] | undefined,
      slots,
      proxyHost: await listenAddress("proxy-host", opts["proxy-host"] as string | undefined),
      yes: opts.yes === true,
    });
  },
};

/** `--slots 21001,21002`: two different whole numbers from 1 to 65535, blue's first. */
function slotPorts(text: string): SlotPorts {
  const ports = text.split(",").map((part) => part.trim());
  const valid = ports.length === 2 && ports.every((port) => /^[0-9]{1,5}$/.test(port) && +port >= 1 && +port <= 65535);
  if (!valid || +ports[0] === +ports[1]) {
    throw new UsageError(
      `--slots must be two different ports, blue's then green's, such as 21001,21002 (got "${text}")`,
    );
  }
  return { blue: +ports[0], green: +ports[1] };
}
