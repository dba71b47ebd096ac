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
    {
      name: "ref",
      value: "branch",
      description: "Move this branch (main, or refs/heads/main) to the commit after a healthy deploy",
    },
    {
      name: "old",
      value: "sha",
      description:
        "With --ref: the branch's expected value before, a full sha (compare-and-swap; default: where it is now)",
    },
    { name: "dry-run", description: "Validate and print the plan without changing anything" },
  ],
  async run({ args, opts }) {
    const { ref, old } = await refArgs(args[0], opts.ref as string | undefined, opts.old as string | undefined);
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
      ref,
      old,
      dryRun: opts["dry-run"] === true,
    });
    return result.ok ? 0 : 1;
  },
};

/**
 * `--ref` and `--old` as the deploy takes them, or a usage error before anything is written: a
 * branch's full name (a short one, `main`, is `refs/heads/main`; no other kind of ref moves), and
 * its value before as a full object name (40 or 64 hex digits; zeros: the branch is new), by
 * default where the branch is now.
 */
export async function refArgs(
  gitDir: string,
  ref: string | undefined,
  old: string | undefined,
): Promise<{ ref?: string; old?: string }> {
  if (ref === undefined) {
    if (old === undefined) return {};
    throw new UsageError("--old goes with --ref: it is the branch's value before --ref moves it", {
      suggestion: "give --ref <branch> too, or leave --old out",
    });
  }
  const full = ref.startsWith("refs/") ? ref : `refs/heads/${ref}`;
  const { isRefName, refTip } = await import("../git.ts");
  if (!full.startsWith("refs/heads/") || full === "refs/heads/" || !await isRefName(full)) {
    throw new UsageError(`--ref ${JSON.stringify(ref)} is not a branch`, {
      suggestion: "give the deploy branch, as main or refs/heads/main",
    });
  }
  if (old !== undefined && !/^(?:[0-9a-f]{40}|[0-9a-f]{64})$/.test(old)) {
    throw new UsageError(`--old ${JSON.stringify(old)} is not a full commit sha (40 hex digits)`, {
      suggestion: `give the branch's value before as \`git rev-parse ${full}\` prints it, ` +
        "all zeros for a new branch, or leave --old out (where the branch is now)",
    });
  }
  return { ref: full, old: old ?? await refTip(gitDir, full).catch(() => undefined) ?? "0".repeat(40) };
}
