/**
 * `deploy-paradigm rollout <app>`: the command line (../rollout/ does the work, loaded only
 * when it runs). Ctrl-C, SIGTERM and SIGHUP stop it between servers.
 * @module
 */
import type { CommandSpec } from "../cli.ts";
import { ON_FAILURE } from "../rollout/plan.ts";

/** What stops a rollout between servers (SIGHUP: the terminal closed). */
const SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP"] as const;

/** `rollout <app> [--servers a,b | --all] [--parallel N] [--confirm] [--yes] [--ref REF] [--on-failure …] [--force]`. */
export const rolloutCommand: CommandSpec = {
  name: "rollout",
  summary: "From the laptop: push one commit to every server that runs the app, in waves, stopping at a failure",
  args: [{ name: "app", description: "The app (its repository is the current directory)" }],
  options: [
    { name: "servers", value: "a,b", description: "These servers, in this order (the first one goes alone first)" },
    { name: "all", description: "Every server known to run the app (by the fleet database, or a git remote to it)" },
    { name: "parallel", value: "N", description: "After the first server, N at a time (default 1)" },
    { name: "ref", value: "ref", description: "What to deploy, resolved to a commit here (default HEAD)" },
    {
      name: "on-failure",
      value: "how",
      choices: ON_FAILURE,
      description: "rollback (default): push the servers switched back to their commit before; stop: leave them",
    },
    {
      name: "force",
      description: "Push the commit even where it is not ahead of the server's branch (a forced update)",
    },
    { name: "confirm", description: "Ask before each wave (needs a terminal, or --yes)" },
    { name: "yes", short: "y", description: "With --confirm: go on without asking" },
  ],
  async run({ args, opts }) {
    const { rolloutOptions } = await import("../rollout/plan.ts");
    const options = rolloutOptions(args[0], opts, Deno.stdin.isTerminal());
    const { rollout } = await import("../rollout/rollout.ts");
    const { ask } = await import("../rollout/ask.ts");
    const stop = new AbortController();
    const onSignal = () => {
      try {
        if (!stop.signal.aborted) console.log("stopping: the pushes running finish, no new one starts");
      } catch { /* the terminal is gone (SIGHUP): stopping all the same */ }
      stop.abort();
    };
    for (const signal of SIGNALS) Deno.addSignalListener(signal, onSignal);
    try {
      return await rollout(options, { cwd: Deno.cwd(), print: console.log, ask, stop: stop.signal });
    } finally {
      for (const signal of SIGNALS) Deno.removeSignalListener(signal, onSignal);
    }
  },
};
