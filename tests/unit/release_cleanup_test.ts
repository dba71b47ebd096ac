/** Release cleanup on real release directories (what rollback can go back to is kept before what it skips), and the prefetch's staging directory. */
import { join } from "node:path";
import { assertEquals } from "../helpers/assert.ts";
import { cleanupReleases, listReleases, type ReleaseMeta, writeReleaseMeta } from "../../src/deploy/releases.ts";
import { appPaths, deploymentsRoot } from "../../src/paths.ts";
import { prefetchCommit } from "../../src/deploy/prefetch.ts";

/** Release `n`'s id (ids sort by time). */
const id = (n: number) => `20261205-1200${String(n).padStart(2, "0")}-000`;

async function withReleases(
  states: ("good" | "bad" | "pending")[],
  fn: (paths: ReturnType<typeof appPaths>) => Promise<void>,
): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "dp-cleanup-" });
  try {
    const paths = appPaths("web", root);
    for (const [n, state] of states.entries()) {
      await Deno.mkdir(paths.release(id(n)), { recursive: true });
      const meta: ReleaseMeta = { id: id(n), commit: `c${n}`, type: "node", createdAt: new Date().toISOString() };
      await writeReleaseMeta(paths, {
        ...meta,
        ...(state === "bad" ? { bad: true } : {}),
        ...(state === "pending" ? { pending: true } : {}),
      });
    }
    await fn(paths);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

Deno.test("cleanupReleases: rolled-back-from releases go first; the newest 3 rollback can go back to stay", async () => {
  // 0 good, 1 good, 2 good, 3 bad, 4 bad; 5 is deploying, 2 serves (the previous): keep 3.
  await withReleases(["good", "good", "good", "bad", "bad", "good"], async (paths) => {
    const removed = await cleanupReleases(paths, 3, [id(5), id(2)]);
    assertEquals(removed.sort(), [id(0), id(3), id(4)]);
    assertEquals(await listReleases(paths), [id(1), id(2), id(5)], "1 stays: the target before 2");
  });
});

Deno.test("cleanupReleases: with fewer good releases than kept, the newest bad ones fill the room; never-served ones go", async () => {
  await withReleases(["bad", "bad", "pending", "good"], async (paths) => {
    const removed = await cleanupReleases(paths, 3, [id(3)]);
    assertEquals(removed.sort(), [id(2)]);
    assertEquals(await listReleases(paths), [id(0), id(1), id(3)]);
  });
  await withReleases(["bad", "bad", "bad", "good"], async (paths) => {
    assertEquals(await cleanupReleases(paths, 2, [id(3)]), [id(0), id(1)]);
    assertEquals(await listReleases(paths), [id(2), id(3)]);
  });
});

Deno.test("prefetch: the commit is extracted into a directory only its owner (root on a server) can open", async () => {
  const root = await Deno.makeTempDir({ prefix: "dp-prefetch-" });
  try {
    const repo = join(root, "repo");
    const git = (...args: string[]) => new Deno.Command("git", { args, cwd: repo, stdout: "piped" }).outputSync();
    await Deno.mkdir(repo);
    git("init", "-q", "-b", "main");
    await Deno.writeTextFile(join(repo, "app.py"), "print(1)\n");
    git("add", "-A");
    git("-c", "user.name=T", "-c", "user.email=t@e.invalid", "commit", "-qm", "v1");
    const commit = new TextDecoder().decode(git("rev-parse", "HEAD").stdout).trim();
    await Deno.mkdir(deploymentsRoot(root), { recursive: true });
    const prefetch = prefetchCommit(join(repo, ".git"), commit, root)!;
    await prefetch.done;
    assertEquals((Deno.statSync(prefetch.dir).mode! & 0o777).toString(8), "700");
    assertEquals(Deno.readTextFileSync(join(prefetch.dir, "app.py")), "print(1)\n");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
