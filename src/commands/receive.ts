import type { CommandSpec } from "../cli.ts";

/** `receive <git-dir>`: the git proc-receive hook. */
export const receiveCommand: CommandSpec = {
  name: "receive",
  summary: "Deploy pushed branches and move them only when healthy (run by the git hook)",
  args: [{ name: "git-dir", description: "The bare repository" }],
  async run({ args }) {
    const { receive } = await import("../receive.ts");
    return await receive(args[0]);
  },
};
