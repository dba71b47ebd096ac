/**
 * End to end (issue 8, reliability): the disk fills during a build. The whole server prefix
 * (releases, logs, repositories, the proxy's socket) is a small tmpfs mounted by the test.
 *
 * 1. v2's build fills the filesystem from inside its release. The deploy must abort cleanly: the
 *    push fails naming the build and "No space left on device", v1 keeps serving from the same
 *    release, no trace of v2 is left, the lock is free, status.json says the deploy failed and
 *    deploy.log stays valid JSON lines; once the space is back (the failed release is removed),
 *    v3 deploys.
 * 2. The disk stays full after the failed build (the space is held outside the release): the
 *    deploy can write nothing more, but must still fail cleanly and say why.
 *
 * Checks that found bugs are collected as findings, so the rest of the scenario (v3 deploys) is
 * still checked; the test then fails with every finding.
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { AppRepo } from "../helpers/apps.ts";
import { freePort, get, run, type TestServer, withServer } from "../helpers/server.ts";
import { branchHead, current, releases, status } from "../helpers/state.ts";

/** The filesystem the server lives on: big enough for v1, v3 and their repository, not for v2's build. */
const SIZE_MB = 24;

/** Runs `fn` with a fresh server whose prefix is a tmpfs of {@link SIZE_MB} MB; always unmounts it. */
async function withSmallDisk(fn: (server: TestServer) => Promise<void>): Promise<void> {
  await withServer(async (server) => {
    await Deno.mkdir(server.prefix, { recursive: true });
    const mount = await run(["mount", "-t", "tmpfs", "-o", `size=${SIZE_MB}m,mode=0755`, "tmpfs", server.prefix]);
    if (mount.code !== 0) throw new Error(`cannot mount a tmpfs on ${server.prefix}:\n${mount.output}`);
    try {
      await fn(server);
    } finally {
      // Stop what runs from the filesystem (the proxy, the apps under PM2), then unmount it.
      await server.stopProxy();
      await run(["timeout", "30", "pm2", "kill"], { env: server.env });
      const umount = await run(["umount", "-l", server.prefix]);
      if (umount.code !== 0) console.error(`umount -l ${server.prefix} failed:\n${umount.output}`);
    }
  });
}

/** Free bytes on the filesystem of `path`. */
async function freeBytes(path: string): Promise<number> {
  const out = await run(["stat", "--file-system", "--format", "%a %S", path]);
  const [blocks, size] = out.stdout.trim().split(" ").map(Number);
  return blocks * size;
}

/** Whether nobody holds the app's deploy lock. */
async function lockFree(server: TestServer, app: string): Promise<boolean> {
  return (await run(["flock", "--nonblock", server.paths(app).lock, "true"])).code === 0;
}

/** deploy.log's lines: each parsed, or the reason it is not a whole JSON line. */
async function deployLogLines(server: TestServer, app: string): Promise<(Record<string, unknown> | string)[]> {
  const text = await Deno.readTextFile(server.paths(app).deployLog);
  const lines = text.split("\n");
  const last = lines.pop();
  const parsed: (Record<string, unknown> | string)[] = lines.map((line, i) => {
    try {
      return JSON.parse(line);
    } catch {
      return `line ${i + 1} is not JSON: ${shorten(line)}`;
    }
  });
  if (last) parsed.push(`the last line has no newline: ${shorten(last)}`);
  return parsed;
}

/** The lines of deploy.log that are not whole JSON lines. */
async function deployLogProblems(server: TestServer, app: string): Promise<string[]> {
  return (await deployLogLines(server, app)).filter((line): line is string => typeof line === "string");
}

/** A long text cut for a message (the builds print 6000 x's). */
function shorten(text: string): string {
  return JSON.stringify(text.replace(/x{100,}/g, (xs) => `x…(${xs.length} x)`));
}

/** Names in `dir` matching `pattern`. */
async function entries(dir: string, pattern: RegExp): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) if (pattern.test(entry.name)) names.push(entry.name);
  return names;
}

/** Checks that found a bug: collected, so the rest of the test still runs; {@link assertNone} fails with them all. */
class Findings {
  readonly list: string[] = [];
  check(ok: boolean, message: string): void {
    if (!ok) this.list.push(message);
  }
  assertNone(): void {
    assert(this.list.length === 0, `${this.list.length} finding(s):\n- ${this.list.join("\n- ")}`);
  }
}

/** v1 deployed on the small disk: its release, and the free space after it. */
async function deployV1(server: TestServer, app: string, port: number, strategy: "restart" | "blue-green") {
  const repo = await AppRepo.create(server, app, await server.setupApp(app, { port, strategy }));
  const sha = await repo.python(app, "v1");
  await repo.pushOk();
  assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: "v1" });
  const release = (await status(server, app)).release!;
  const free = await freeBytes(server.prefix);
  assert(free > 8 * 1024 * 1024, `only ${free} bytes free after v1: the test's tmpfs is too small`);
  return { repo, sha, release, free };
}

/** After the failed v2: v1 serves on from its release, the branch is v1's, nothing of v2 is left, the lock is free. */
async function assertV1Intact(server: TestServer, app: string, port: number, v1: { sha: string; release: string }) {
  const paths = server.paths(app);
  assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: "v1" });
  assertEquals(await current(server, app), `releases/${v1.release}`);
  assertEquals(await branchHead(server, app), v1.sha);
  assertEquals(await releases(server, app), [v1.release], "the failed release is removed");
  assertEquals(await entries(paths.releases, /^\./), [], "a .partial or temp entry is left in releases/");
  assertEquals(await entries(join(paths.dir, ".."), /^\.incoming-/), [], "a prefetch staging dir is left");
  assertEquals(await entries(paths.dir, /\.tmp-/), [], "a temp file is left beside status.json");
  assert(await lockFree(server, app), "the deploy lock is still held");
  // status.json is whole JSON (written atomically) and still names v1 as what serves.
  const st = await status(server, app);
  assertEquals([st.status, st.healthy, st.commit, st.release], ["running", true, v1.sha, v1.release]);
  return st;
}

/** v3 deploys once the space is back; status.json and deploy.log end with it. */
async function assertV3Deploys(server: TestServer, app: string, port: number, repo: AppRepo) {
  const v3 = await repo.python(app, "v3", "ok", { files: { "fill.sh": null } });
  const push = await repo.push();
  assertEquals(push.code, 0, push.output);
  assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: "v3" });
  const st = await status(server, app);
  assertEquals([st.status, st.commit, st.lastDeploy.outcome], ["running", v3, "success"]);
  assertEquals(await current(server, app), `releases/${st.release}`);
  assertEquals(await branchHead(server, app), v3);
  // The v3 deploy's own events are whole lines, from its begin to its success.
  const lines = await deployLogLines(server, app);
  const begin = lines.findLastIndex((l) => typeof l !== "string" && l.event === "begin" && l.commit === v3);
  assert(begin >= 0, "deploy.log has no begin of v3 on a line of its own");
  const own = lines.slice(begin);
  assert(own.every((l) => typeof l !== "string"), `v3's events in deploy.log are not whole: ${own}`);
  assertEquals((own.at(-1) as Record<string, unknown>).event, "success");
}

/**
 * v2's build: prints a long line (as a bundler's or compiler's error would), then fills the
 * filesystem from inside the release dir. With the long line among the last lines of output, the
 * failed build's event in deploy.log is longer than a memory page, so appending it to deploy.log
 * on the full filesystem needs a new page whatever the log's size: the write cannot fit entirely.
 */
const FILL = `#!/bin/sh
echo filling the disk
long=$(printf '%6000s' '' | tr ' ' x)
echo "error: $long" >&2
dd if=/dev/zero of=big bs=1M count=64
`;

for (const strategy of ["restart", "blue-green"] as const) {
  Deno.test(`a build that fills the disk aborts cleanly and v1 keeps serving (${strategy})`, async () => {
    await withSmallDisk(async (server) => {
      const app = "full";
      const port = freePort();
      const findings = new Findings();
      const v1 = await deployV1(server, app, port, strategy);

      // v2's build fills the filesystem.
      const v2 = await v1.repo.python(app, "v2", "ok", { extra: "build: ./fill.sh\n", files: { "fill.sh": FILL } });
      const push = await v1.repo.push();
      const said = push.output.replace(/x{100,}/g, "x…");
      assert(push.code !== 0, `the push of v2 must fail:\n${said}`);
      assertMatch(said, /filling the disk/);
      assert(push.output.includes(`error: ${"x".repeat(6000)}`), "the build's long line reaches the pusher");
      assertMatch(said, /dd: error writing 'big': No space left on device/);
      assertMatch(said, /✗ build .*`\.\/fill\.sh` exited with code 1/);
      assertMatch(said, /✗ deploy of full [0-9a-f]{7} failed at step "build"/);
      assertMatch(said, /nothing was switched: [0-9a-f]{7} still serves/);
      assertMatch(said, /! \[remote rejected\] main -> main \(deploy failed at build\)/);

      // v1 keeps serving, nothing of v2 is left, the lock is free; status.json says the deploy failed.
      const st = await assertV1Intact(server, app, port, v1);
      assertEquals([st.lastDeploy.outcome, st.lastDeploy.step, st.lastDeploy.commit], ["failed", "build", v2]);
      assertMatch(st.lastDeploy.message ?? "", /No space left on device/);

      // deploy.log is valid JSON lines, ending with the failed build and the failed deploy.
      const problems = await deployLogProblems(server, app);
      findings.check(
        problems.length === 0,
        `deploy.log is not valid JSON lines after the disk filled: ${problems.join("; ")}`,
      );
      if (problems.length === 0) {
        const last = (await deployLogLines(server, app)).slice(-2) as Record<string, unknown>[];
        assertEquals(last.map((e) => [e.event, e.ok, e.commit]), [["build", false, v2], ["failed", false, v2]]);
      }

      // The space is back (the failed release and its big file are gone), and v3 deploys.
      const free = await freeBytes(server.prefix);
      assert(free > v1.free - 1024 * 1024, `only ${free} bytes free after the failed deploy, ${v1.free} before it`);
      await assertV3Deploys(server, app, port, v1.repo);
      findings.assertNone();
    });
  });
}

/**
 * The build fills the disk from outside its release (as a package manager's cache on the same
 * filesystem would), and its own files are held elsewhere too (hard links), so removing the
 * failed release frees nothing: the disk stays full while the deploy records its failure. It can
 * then write nothing more (status.json, maybe deploy.log), but must still fail cleanly: the push
 * names the build and the full disk, v1 keeps serving, the lock is freed, nothing is half-written.
 */
const FILL_AND_KEEP_FULL = `#!/bin/sh
echo "filling the disk from outside the release"
top=$(cd ../.. && pwd)
cp -al . "$top/cache"
dd if=/dev/zero of="$top/cache-fill" bs=1M count=64
`;

for (const strategy of ["restart", "blue-green"] as const) {
  Deno.test(`a disk that stays full after the failed build fails the push cleanly (${strategy})`, async () => {
    await withSmallDisk(async (server) => {
      const app = "full";
      const port = freePort();
      const findings = new Findings();
      const v1 = await deployV1(server, app, port, strategy);
      const paths = server.paths(app);

      const v2 = await v1.repo.python(app, "v2", "ok", {
        extra: "build: ./fill.sh\n",
        files: { "fill.sh": FILL_AND_KEEP_FULL },
      });
      const push = await v1.repo.push();
      const free = await freeBytes(server.prefix);
      assert(free <= 64 * 1024, `${free} bytes free: the filesystem must still be full for this test to mean anything`);
      assert(push.code !== 0, `the push of v2 must fail:\n${push.output}`);
      assertMatch(push.output, /No space left on device/);
      assertMatch(push.output, /✗ build .*`\.\/fill\.sh` exited with code 1/);
      assertMatch(push.output, /✗ deploy of full [0-9a-f]{7} failed at step "build"/);

      // Whatever else fails for want of space, v1 serves on and nothing of v2 is left.
      const st = await assertV1Intact(server, app, port, v1);
      // status.json could not be updated on a full disk; if it was, it says the deploy failed.
      if (st.lastDeploy.commit === v2) assertEquals([st.lastDeploy.outcome, st.lastDeploy.step], ["failed", "build"]);
      const problems = await deployLogProblems(server, app);
      findings.check(problems.length === 0, `deploy.log is not valid JSON lines: ${problems.join("; ")}`);

      // The push names the failed step and the full disk, not an internal error with a stack
      // trace: failing to record the outcome must not replace the outcome.
      findings.check(
        !/unexpected failure|\n\S*\s+at (async )?\S+ \(file:/.test(push.output),
        `recording the failure on the full disk turned the push's answer into an internal error with a stack trace:\n` +
          push.output.split("\n").filter((l) => /unexpected failure|remote rejected|status\.ts|fsutil\.ts/.test(l))
            .join("\n"),
      );
      findings.check(
        /! \[remote rejected\] main -> main \(deploy failed at build\)/.test(push.output),
        `the push's reason does not name the build: ${push.output.match(/! \[remote rejected\].*/)?.[0]}`,
      );

      // Once the space is back, v3 deploys.
      await Deno.remove(join(paths.dir, "cache-fill"));
      await Deno.remove(join(paths.dir, "cache"), { recursive: true });
      await assertV3Deploys(server, app, port, v1.repo);
      findings.assertNone();
    });
  });
}
