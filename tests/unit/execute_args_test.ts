/**
 * `execute --ref/--old` by hand: a short branch name is the branch (`main` is refs/heads/main, as
 * the help says "Move this branch"), --old defaults to where the branch is, and anything else is a
 * usage error (exit 2) before anything is written.
 */
import { assertEquals, assertMatch } from "../helpers/assert.ts";
import { commit, deploy, git, logLength, withWorld, ZEROS } from "../helpers/pipeline_world.ts";
import { executeCommand, refArgs } from "../../src/commands/execute.ts";
import { usageMessage } from "../helpers/usage.ts";

Deno.test("execute --ref main deploys and moves refs/heads/main; --old defaults to where it is", async () => {
  await withWorld("restart", async (w) => {
    const c1 = await commit(w, "ok");
    const first = await refArgs(w.repo, "main", undefined);
    assertEquals(first, { ref: "refs/heads/main", old: ZEROS });
    assertEquals((await deploy(w, c1, first)).ok, true);
    const c2 = await commit(w, "ok");
    assertEquals((await deploy(w, c2, await refArgs(w.repo, "main", c1))).ok, true);
    assertEquals(await git(w.repo, "rev-parse", "refs/heads/main"), c2);
    const c3 = await commit(w, "ok");
    assertEquals(await refArgs(w.repo, "refs/heads/main", undefined), { ref: "refs/heads/main", old: c2 });
    assertEquals((await deploy(w, c3, await refArgs(w.repo, "main", undefined))).ok, true);
    assertEquals(await git(w.repo, "rev-parse", "refs/heads/main"), c3);
  });
});

Deno.test("execute: a --ref that is no branch, or an --old that is no full sha, is a usage error; nothing is written", async () => {
  await withWorld("restart", async (w) => {
    const c1 = await commit(w, "ok");
    const before = await logLength(w);
    const run = (opts: Record<string, string>) => () =>
      executeCommand.run({ args: [w.repo, c1], opts } as unknown as Parameters<typeof executeCommand.run>[0]);
    assertMatch(await usageMessage(run({ ref: "main", old: "abc123" })), /--old "abc123" is not a full commit sha/);
    assertMatch(await usageMessage(run({ ref: "refs/tags/v1", old: c1 })), /--ref "refs\/tags\/v1" is not a branch/);
    assertMatch(await usageMessage(run({ ref: "bad..name" })), /is not a branch/);
    assertMatch(await usageMessage(run({ old: c1 })), /--old goes with --ref/);
    assertEquals(await logLength(w), before);
  });
});
