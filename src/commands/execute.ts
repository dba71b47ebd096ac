import type { CommandSpec } from "../cli.ts";
import { UsageError } from "../errors.ts";

/** `execute <git-dir> <commit>`: run by the git hook (`receive`), or by hand to redeploy a commit. */
export const executeCommand: CommandSpec = {
  name: "execute",
  summary: "Deploy a commit of an app's bare repository (the git hook runs it for each push)",
  args: [
    { name: "git-dir", description: "The bare repository, e.g. /var/repos/my-api.git" },
    { name: "commit", description: "The commit to deploy" },
  ],
  options: [
    { name: "ref", value: "ref", description: "Move this branch to the commit after a healthy deploy" },
    { name: "old", value: "sha", description: "With --ref: the branch's expected value before (compare-and-swap)" },
    { name: "dry-run", description: "Validate and print the plan without changing anything" },
  ],
  async run({ args, opts }) {
    if (opts.old !== undefined && opts.ref === undefined) {
      throw new UsageError("--old goes with --ref: it is the branch's value before --ref moves it", {
        suggestion: "give --ref <branch> too, or leave --old out",
      });
    }
    // Start extracting the commit first, so it overlaps loading and validating (see prefetch.ts).
    const { prefetchCommit } = await import("../deploy/prefetch.ts");
    const prefetch = opts["dry-run"] ? undefined : prefetchCommit(args[0], args[1]);
    const { execute } = await import("../deploy/execute.ts");
    const { realEffects } = await import("../deploy/context.ts");
    const result = await execute({
      effects: realEffects(), // processes, the proxy's socket, the clock, stdout: built once, here
      prefetch,
      gitDir: args[0],
      commit: args[1],
      ref: opts.ref as string | undefined,
      old: opts.old as string | undefined,
      dryRun: opts["dry-run"] === true,
    });
    return result.ok ? 0 : 1;
  },
};
