/**
 * `receive` reads its protocol lines from stdin, which through sudo a member of the deploy group
 * writes herself (users_test.ts does that on a real host). Here the real CLI gets such lines:
 * an object name that is not 40/64 hex digits, a ref that is not refs/… or that git refuses
 * (an option such as `-d`, which once deleted the branch) is refused with a line saying which
 * and why, exit 2, and no ref moves, not even a well-formed one of the same push.
 */
import { join } from "node:path";
import { assertEquals, assertMatch } from "../helpers/assert.ts";
import { BIN, run } from "../helpers/server.ts";
import { MAX_REFS, pkt } from "../../src/receive.ts";

async function receive(gitDir: string, env: Record<string, string>, lines: string[]) {
  const child = new Deno.Command(BIN, {
    args: ["receive", gitDir],
    env,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  })
    .spawn();
  const writer = child.stdin.getWriter();
  try {
    for (const line of ["version=1\0atomic-no", null, ...lines, null]) await writer.write(pkt(line));
    await writer.close();
  } catch { /* it stopped reading (too many lines): its answer says why */ }
  const out = await child.output();
  return { code: out.code, stdout: new TextDecoder().decode(out.stdout), stderr: new TextDecoder().decode(out.stderr) };
}

Deno.test("receive: malformed protocol lines are refused (exit 2, which and why) and no ref moves", async () => {
  const root = await Deno.makeTempDir({ prefix: "dp-receive-" });
  try {
    const env = {
      DEPLOY_PARADIGM_PREFIX: join(root, "server"),
      GIT_AUTHOR_NAME: "Test",
      GIT_AUTHOR_EMAIL: "test@example.invalid",
      GIT_COMMITTER_NAME: "Test",
      GIT_COMMITTER_EMAIL: "test@example.invalid",
    };
    const bare = join(root, "app.git");
    const work = join(root, "work");
    const git = async (...args: string[]) => {
      const out = await run(["git", ...args], { cwd: work, env });
      assertEquals(out.code, 0, out.output);
      return out.stdout.trim();
    };
    await Deno.mkdir(work);
    await git("init", "--quiet", "--bare", bare);
    await git("init", "--quiet", "-b", "main");
    await git("commit", "--quiet", "--allow-empty", "-m", "one");
    const c1 = await git("rev-parse", "HEAD");
    await git("commit", "--quiet", "--allow-empty", "-m", "two");
    const c2 = await git("rev-parse", "HEAD");
    await git("push", "--quiet", bare, "main");
    const refs = () => git("--git-dir", bare, "for-each-ref", "--format=%(refname) %(objectname)");
    const before = await refs();
    assertEquals(before, `refs/heads/main ${c2}`);
    const zero = "0".repeat(40);
    const refused: [string, RegExp][] = [
      [`${c2} refs/heads/main -d`, /the new object name is not 40 or 64 hex digits/],
      [`${c1} refs/heads/main --no-deref`, /the new object name is not 40 or 64 hex digits/],
      [`${c2} ${c1} --no-deref`, /the ref is not under refs\//],
      [`${c2} ${c1} -d`, /the ref is not under refs\//],
      [`${c2} ${c1} refs/heads/a..b`, /not a valid ref name \(git check-ref-format\)/],
      [`${c2} ${c1} refs/heads/main extra`, /expected <old> <new> <ref>/],
      [`${c2.toUpperCase()} ${c1} refs/heads/main`, /the old object name is not 40 or 64 hex digits/],
      [`${c2}0 ${c1} refs/heads/main`, /the old object name is not 40 or 64 hex digits/],
      [`${c2} HEAD refs/heads/main`, /the new object name is not 40 or 64 hex digits/],
    ];
    for (const [line, why] of refused) {
      const out = await receive(bare, env, [`${zero} ${c1} refs/heads/feature`, line]);
      assertEquals(out.code, 2, `${line}: ${out.stderr}`);
      assertMatch(out.stderr, new RegExp(`error: refused ".*": ${why.source}`), line);
      assertMatch(out.stdout, /ng refs\/heads\/feature another ref of this push is malformed/);
      assertEquals(await refs(), before, line);
    }
    // More ref lines than a push may have: all refused before any git runs, none applied.
    const many = Array.from({ length: MAX_REFS + 1 }, (_, i) => `${zero} ${c1} refs/heads/f${i}`);
    const tooMany = await receive(bare, env, many);
    assertEquals(tooMany.code === 0, false, tooMany.stderr);
    assertMatch(tooMany.stderr, new RegExp(`a push updates at most ${MAX_REFS} refs`));
    assertEquals(await refs(), before);
    // The same harness with well-formed lines only: a branch other than the deploy branch is stored.
    const stored = await receive(bare, env, [`${zero} ${c1} refs/heads/feature`]);
    assertEquals(stored.code, 0, stored.stderr);
    assertMatch(stored.stdout, /ok refs\/heads\/feature/);
    assertEquals(await refs(), `refs/heads/feature ${c1}\nrefs/heads/main ${c2}`);
    // Well-formed but not what the repository holds (an object it lacks, an old value that is not the
    // branch's): git refuses the update, and the pusher reads git's reason, not a stack trace.
    for (const line of [`${zero} ${"1234567890".repeat(4)} refs/heads/ghost`, `${c2} ${c1} refs/heads/feature`]) {
      const failed = await receive(bare, env, [line]);
      assertEquals(failed.code, 0, failed.stderr);
      assertMatch(failed.stdout, /ng refs\/heads\/(ghost|feature) git update-ref refs\/heads\/\w+ failed: /);
      assertMatch(failed.stderr, /^error: git update-ref refs\/heads\/\w+ failed: /);
      for (const text of [failed.stdout, failed.stderr]) {
        assertEquals(/\sat \S+ \(|file:\/\/|unexpected failure/.test(text), false, text);
      }
      assertEquals(await refs(), `refs/heads/feature ${c1}\nrefs/heads/main ${c2}`);
    }
    console.log(`${refused.length} malformed lines refused (exit 2), refs unchanged; a well-formed one stored`);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
