import type { CommandSpec } from "../cli.ts";
import { rootOnly } from "./root_only.ts";

/** `status [app] [--json]`: what runs on this server, and each app's certificate. */
export const statusCommand: CommandSpec = {
  name: "status",
  summary: "Show every app's status and certificate on this server (or one app's)",
  args: [{ name: "app", description: "Only this app", optional: true }],
  options: [{ name: "json", description: "Print JSON instead of a table" }],
  async run({ args, opts }) {
    const { showStatus } = await import("../status_view.ts");
    try {
      return await showStatus(args[0], opts.json === true);
    } catch (error) {
      throw rootOnly(error, `status${args[0] ? ` ${args[0]}` : ""}`);
    }
  },
};
