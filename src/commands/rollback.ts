import type { CommandSpec } from "../cli.ts";
import { rootOnly } from "./root_only.ts";

/** `rollback <app> [--to <release>]`. */
export const rollbackCommand: CommandSpec = {
  name: "rollback",
  summary: "Go back to the previous good release (or --to one) through the health-gated switch",
  args: [{ name: "app", description: "The app to roll back" }],
  options: [{
    name: "to",
    value: "release",
    description: "The release to serve: an older one, or a newer one to roll forward (see `releases`)",
  }],
  async run({ args, opts }) {
    const { rollback } = await import("../deploy/rollback.ts");
    const { realEffects } = await import("../deploy/context.ts");
    try {
      return await rollback(args[0], opts.to as string | undefined, realEffects());
    } catch (error) {
      throw rootOnly(error, `rollback ${args[0]}${opts.to ? ` --to ${opts.to}` : ""}`);
    }
  },
};
