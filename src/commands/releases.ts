import type { CommandSpec } from "../cli.ts";
import { rootOnly } from "./root_only.ts";

/** `releases <app> [--json]`. */
export const releasesCommand: CommandSpec = {
  name: "releases",
  summary: "List an app's releases: id, commit, time, and which one serves",
  args: [{ name: "app", description: "The app" }],
  options: [{ name: "json", description: "Print JSON instead of a table" }],
  async run({ args, opts }) {
    const { showReleases } = await import("../deploy/rollback.ts");
    try {
      return await showReleases(args[0], opts.json === true);
    } catch (error) {
      throw rootOnly(error, `releases ${args[0]}${opts.json ? " --json" : ""}`);
    }
  },
};
