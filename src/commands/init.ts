import type { CommandSpec } from "../cli.ts";
import { APP_TYPES } from "../deployers/mod.ts";

/** `init`: write deploy.yml in a project. */
export const initCommand: CommandSpec = {
  name: "init",
  summary: "Write a commented deploy.yml for the project in the current directory",
  options: [
    { name: "name", value: "name", description: "App name (default: from the folder name)" },
    {
      name: "type",
      value: "type",
      description: "App type (default: detected)",
      choices: APP_TYPES,
    },
    { name: "force", short: "f", description: "Overwrite an existing deploy.yml" },
  ],
  async run({ opts }) {
    const { init } = await import("../init.ts");
    const result = await init({
      dir: Deno.cwd(),
      name: opts.name as string | undefined,
      type: opts.type as string | undefined,
      force: opts.force === true,
    });
    console.log(`Wrote ${result.path} (name: ${result.name}, type: ${result.type}).`);
    for (const warning of result.warnings) console.error(`warning: ${warning}`);
    console.log("Check command and healthCheck, then: git add deploy.yml && git commit -m 'Add deploy.yml'");
  },
};
