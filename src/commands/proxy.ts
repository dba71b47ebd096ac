import { listenAddress } from "./listen_address.ts";
import type { CommandSpec } from "../cli.ts";
import { didYouMean, UsageError } from "../errors.ts";

/** What `proxy` does besides running the proxy. */
const ACTIONS = ["status"] as const;

/**
 * `proxy [--host <addr>]`: the built-in reverse proxy, in the foreground (setup runs it as a
 * service); `proxy status [--json]`: what the running proxy serves, asked over its control socket.
 */
export const proxyCommand: CommandSpec = {
  name: "proxy",
  summary: "Run the built-in reverse proxy: each app's port, or its domains on the shared HTTP/HTTPS ports of " +
    "/opt/deployments/proxy.yml (automatic HTTPS), → its active release; `proxy status`: what it serves now",
  args: [{
    name: "action",
    description: "none: run the proxy; status: show what the running proxy serves",
    optional: true,
  }],
  options: [
    {
      name: "host",
      value: "addr",
      description: "Address the public ports (the apps' own and proxy.yml's http/https) listen on (default 0.0.0.0)",
    },
    { name: "json", description: "status: print JSON" },
  ],
  async run({ args, opts }) {
    const action = args[0];
    if (action === undefined) {
      if (opts.json) {
        throw new UsageError("--json is for `proxy status`", { suggestion: "deploy-paradigm proxy status --json" });
      }
      const host = await listenAddress("host", opts.host as string | undefined);
      const { runProxy } = await import("../proxy/server.ts");
      return await runProxy({ host: host ?? "0.0.0.0" });
    }
    if (!(ACTIONS as readonly string[]).includes(action)) {
      const guess = didYouMean(action, ACTIONS);
      throw new UsageError(`proxy: unknown action "${action}" (${ACTIONS.join(", ")}; none runs the proxy)`, {
        suggestion: guess ? `did you mean "${guess}"?` : "see deploy-paradigm proxy --help",
      });
    }
    if (opts.host !== undefined) {
      throw new UsageError("--host is for running the proxy, not `proxy status`", {
        suggestion: "deploy-paradigm proxy status asks the running proxy, wherever it listens",
      });
    }
    const { showProxyStatus } = await import("../proxy/status_view.ts");
    return await showProxyStatus(opts.json === true);
  },
};
