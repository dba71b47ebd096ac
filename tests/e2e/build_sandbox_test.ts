/**
 * Builds and hooks come from the pushed commit: they run as the app's user whatever their program
 * is called (a committed `venv/bin/docker` included), with an allow-list environment (none of the
 * deploying user's other variables), nothing they leave behind survives them (also daemonized
 * with `setsid`), and their output reaches the pusher's terminal with control sequences escaped.
 * On a PM2 server under a temp prefix, the deploy as root, the app with its own user (app-sbx).
 */
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { AppRepo } from "../helpers/apps.ts";
import { addTestUser, must } from "../helpers/host.ts";
import { get, withServer } from "../helpers/server.ts";
import { defaultUserName } from "../../src/users.ts";

/** Processes whose command line is `sleep <n>` for one of `marks` (read from /proc). */
function sleepers(marks: string[]): number[] {
  const found: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const argv = Deno.readTextFileSync(`/proc/${entry.name}/cmdline`).split("\0");
      if (argv[0].endsWith("sleep") && marks.includes(argv[1])) found.push(Number(entry.name));
    } catch { /* it has just ended */ }
  }
  return found;
}

Deno.test("a hook named docker (a committed venv/bin/docker) runs as the app's user; no inherited env, no leftovers, escaped output", async () => {
  // The user setup creates for the app (app-sbx): only such a user's processes are swept by uid.
  const user = defaultUserName("sbx");
  const removeUser = await addTestUser(user);
  const base = 900_000 + Math.floor(Math.random() * 90_000);
  const marks = [0, 1, 2, 3].map((i) => String(base + i));
  try {
    await withServer(async (server) => {
      for (const dir of [server.root, server.prefix]) {
        await Deno.mkdir(dir, { recursive: true });
        await Deno.chmod(dir, 0o755);
      }
      // A variable of the deploying environment (an operator's token): no build or hook may see it.
      const token = `operator-token-${crypto.randomUUID().slice(0, 8)}`;
      server.env.DP_OPERATOR_TOKEN = token;
      const port = 19000 + Math.floor(Math.random() * 900);
      const remote = await server.setupApp("sbx", {
        port,
        manager: "pm2",
        dotenv: "SECRET=abcdefgh123\n",
      });
      await Deno.writeTextFile(server.paths("sbx").config, `user: ${user}\n`, { append: true });
      const repo = await AppRepo.create(server, "sbx", remote);
      const report = (what: string) => `echo "${what} uid=$(id -u) token=\${DP_OPERATOR_TOKEN:-absent}"`;
      // Left behind: daemonized outside the release (cd /), and a plain background job holding the output.
      // (The pause lets it leave the group first: then only the sweep of what is left can find it.)
      const daemon = (mark: string) => `(cd / && setsid sleep ${mark} >/dev/null 2>&1 &); sleep 0.5`;
      await repo.node("sbx", "v1", "ok", {
        extra: "build: [sh, build.sh]\nhooks: { preDeploy: docker, postDeploy: [sh, post.sh] }\n",
        files: {
          "build.sh": `printf 'osc \\033]52;c;cHduZWQ=\\007 csi \\033[2J \\302\\233 end\\n'\n${report("build")}\n` +
            `${daemon(marks[0])}\nsleep ${marks[1]} &\n`,
          "venv/bin/docker": `#!/bin/sh\n${report("docker-hook")}\n${daemon(marks[2])}\n`,
          "post.sh": `${report("post")} secret=\${SECRET:+present}\n${daemon(marks[3])}\n`,
        },
      });
      await repo.git(["update-index", "--chmod=+x", "venv/bin/docker"]);
      await repo.git(["commit", "--quiet", "--amend", "--no-edit"]);
      const started = performance.now();
      const pushed = await repo.push();
      const seconds = (performance.now() - started) / 1000;
      assertEquals(pushed.code, 0, pushed.output);
      const uid = (await must(["id", "-u", user])).trim();
      // 1: the hook named docker ran the committed script as the app's user, not as root.
      assertMatch(pushed.output, new RegExp(`docker-hook uid=${uid} token=absent`));
      assertMatch(pushed.output, new RegExp(`build uid=${uid} token=absent`));
      // 5: the operator's variable reached none of them; the hook gets the .env values as before.
      assertMatch(pushed.output, new RegExp(`post uid=${uid} token=absent secret=present`));
      assert(!pushed.output.includes(token), pushed.output);
      // 5: nothing they left behind runs, and the deploy did not wait for the background job's output.
      assertEquals(sleepers(marks), [], "a build's or hook's leftover process still runs");
      assertEquals(pushed.output.match(/killed 1 process it left behind/g)?.length, 3, pushed.output);
      assert(seconds < 60, `the push took ${seconds}s`);
      // The running app (the same user, under PM2) was not taken for a leftover.
      assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: "v1" });
      // 8: OSC 52, CSI and an 8-bit CSI reach the pusher's terminal escaped, as text.
      assert(
        !["\x1b", "\x07", "\x9b"].some((c) => pushed.output.includes(c)),
        JSON.stringify(pushed.output.match(/.*osc.*/)?.[0]),
      );
      assertMatch(pushed.output, /osc \\x1b\]52;c;cHduZWQ=\\x07 csi \\x1b\[2J \\x9b end/);
      // deploy.log stays JSON lines.
      const log = await Deno.readTextFile(server.paths("sbx").deployLog);
      for (const line of log.trim().split("\n")) JSON.parse(line);
      console.log(
        `push in ${seconds.toFixed(1)}s: ${
          pushed.output.split("\n").filter((l) => /uid=|killed|osc/.test(l)).map((l) => l.trim()).join(" | ")
        }`,
      );
    });
  } finally {
    for (const pid of sleepers(marks)) Deno.kill(pid, "SIGKILL"); // only what this test's builds started
    await removeUser();
  }
});

Deno.test("without an app user (the build as root): the release's venv/bin is not searched, no inherited env, leftovers in the release killed", async () => {
  const base = 800_000 + Math.floor(Math.random() * 90_000);
  const marks = [String(base), String(base + 1)];
  try {
    await withServer(async (server) => {
      const token = `operator-token-${crypto.randomUUID().slice(0, 8)}`;
      server.env.DP_OPERATOR_TOKEN = token;
      const port = 19000 + Math.floor(Math.random() * 900);
      const remote = await server.setupApp("rootb", { port, manager: "pm2", strategy: "restart" });
      const repo = await AppRepo.create(server, "rootb", remote);
      const leave = (mark: string) => `setsid sleep ${mark} >/dev/null 2>&1 & sleep 0.5`;
      await repo.python("rootb", "v1", "ok", {
        extra: `build: [sh, -c, '${leave(marks[0])}']\n` +
          `hooks: { preDeploy: [sh, -c, 'echo "pre $(id) token=\${DP_OPERATOR_TOKEN:-absent}"; ${
            leave(marks[1])
          }'] }\n`,
        files: { "venv/bin/id": "#!/bin/sh\necho FAKE-ID\n" },
      });
      await repo.git(["update-index", "--chmod=+x", "venv/bin/id"]);
      await repo.git(["commit", "--quiet", "--amend", "--no-edit"]);
      const pushed = await repo.push();
      assertEquals(pushed.code, 0, pushed.output);
      if (Deno.uid() === 0) {
        assertMatch(pushed.output, /pre uid=0\(root\).* token=absent/);
        assert(!pushed.output.includes("FAKE-ID"), pushed.output);
      }
      assert(!pushed.output.includes(token), pushed.output);
      assertEquals(sleepers(marks), [], "a build's or hook's leftover process still runs");
      assertEquals(pushed.output.match(/killed 1 process it left behind/g)?.length, 2, pushed.output);
      assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: "v1" });
    });
  } finally {
    for (const pid of sleepers(marks)) Deno.kill(pid, "SIGKILL");
  }
});
