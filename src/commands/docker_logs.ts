import type { CommandSpec } from "../cli.ts";
import { UsageError } from "../errors.ts";

/** `docker-logs <container> --state <file>`: the log follower a docker app's process manager runs. */
export const dockerLogsCommand: CommandSpec = {
  name: "docker-logs",
  summary: "Follow a docker app's container output into the process manager's logs (deploys start it)",
  args: [{ name: "container", description: "The container, e.g. my-api-blue" }],
  options: [
    { name: "state", value: "file", required: true, description: "Where the follower keeps its place across restarts" },
  ],
  async run({ args, opts }) {
    if (typeof opts.state !== "string" || opts.state === "") {
      throw new UsageError("docker-logs needs --state <file>", {
        suggestion: "deploys start it; see deploy-paradigm docker-logs --help",
      });
    }
    const { followContainer } = await import("../docker_logs.ts");
    const stop = new AbortController();
    const signals = ["SIGTERM", "SIGINT", "SIGHUP"] as const;
    const onSignal = () => stop.abort();
    for (const signal of signals) Deno.addSignalListener(signal, onSignal);
    try {
      await followContainer(args[0], opts.state, stop.signal);
    } finally {
      for (const signal of signals) Deno.removeSignalListener(signal, onSignal);
    }
    return 0;
  },
};
