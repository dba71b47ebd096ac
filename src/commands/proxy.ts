import { listenAddress } from "./listen_address.ts";
import type { CommandSpec } from "../cli.ts";

/** `proxy [--host <addr>]`: the built-in reverse proxy, in the foreground (setup runs it as a service). */
export const proxyCommand: CommandSpec = {
  name: "proxy",
  summary: "Run the built-in reverse proxy: each app's port, or its domains on the shared HTTP/HTTPS ports of " +
    "/opt/deployments/proxy.yml (automatic HTTPS), → its active release (zero-downtime switches)",
  options: [{
    name: "host",
    value: "addr",
    description: "Address the public ports (the apps' own and proxy.yml's http/https) listen on (default 0.0.0.0)",
  }],
  async run({ opts }) {
    const host = await listenAddress("host", opts.host as string | undefined);
    const { runProxy } = await import("../proxy/server.ts");
    return await runProxy({ host: host ?? "0.0.0.0" });
  },
};
