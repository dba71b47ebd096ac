import type { CommandSpec } from "../cli.ts";

/** `schema`: the JSON Schema of deploy.yml. */
export const schemaCommand: CommandSpec = {
  name: "schema",
  summary: "Print the JSON Schema of deploy.yml (for editor completion)",
  async run() {
    const { deployFileJsonSchema } = await import("../config/schema.ts");
    console.log(JSON.stringify(deployFileJsonSchema(), null, 2));
  },
};
