/**
 * Attacks "Exit 0 only when every server got the commit" (src/rollout/rollout.ts): a server whose
 * deploy branch already names the commit while the fleet database saw it serve another version
 * (the branch did not follow a rollback by hand) is known, before anything is pushed, not to serve
 * the commit, and a push would change nothing there. It used to get a warning, and the rollout
 * ended `success`, exit 0, that server "already at this commit"; now it is refused, exit 1,
 * nothing pushed, saying how to deploy the commit there.
 */
import { join } from "node:path";
import { assertEquals, assertMatch } from "../helpers/assert.ts";
import { describeError } from "../../src/errors.ts";
import { FleetStore } from "../../src/fleet/store.ts";
import { rollout } from "../../src/rollout/rollout.ts";
import { rolloutOptions } from "../../src/rollout/plan.ts";
import { RolloutRecord } from "../../src/rollout/record.ts";

Deno.test("rollout: a server whose branch names the commit but the fleet saw serve another version is refused, exit 1", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dp-review-rollout-" });
  const saved = ["DEPLOY_PARADIGM_PREFIX", "FLEET_MONITOR_HOME"].map((k) => [k, Deno.env.get(k)] as const);
  try {
    const run = async (cwd: string, ...args: string[]) => {
      const out = await new Deno.Command("git", {
        args: ["-c", "user.name=t", "-c", "user.email=t@t", ...args],
        cwd,
        stdout: "piped",
        stderr: "piped",
      }).output();
      assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
      return new TextDecoder().decode(out.stdout).trim();
    };
    const work = join(dir, "work");
    await Deno.mkdir(work);
    await run(work, "init", "-q", "-b", "main");
    await Deno.writeTextFile(
      join(work, "deploy.yml"),
      "name: web\ntype: node\nhealthCheck: /health\ncommand: [node, server.js]\n",
    );
    await run(work, "add", "deploy.yml");
    await run(work, "commit", "-q", "-m", "one");
    const commit = await run(work, "rev-parse", "HEAD");
    // The server: this machine (host: local), its repository's main already at the commit.
    const root = join(dir, "root");
    Deno.env.set("DEPLOY_PARADIGM_PREFIX", root);
    const home = join(dir, "fleet");
    Deno.env.set("FLEET_MONITOR_HOME", home);
    await Deno.mkdir(join(root, "var", "repos"), { recursive: true });
    await run(dir, "clone", "-q", "--bare", work, join(root, "var", "repos", "web.git"));
    await Deno.mkdir(home, { recursive: true });
    await Deno.writeTextFile(join(home, "config.yml"), "servers:\n  - { name: here, host: local }\n");
    // ... and the fleet saw it serve another version (rolled back by hand).
    const store = await FleetStore.open(join(home, "data", "fleet.db"));
    store.upsertApp("here", "web", { status: "running", healthy: true, version: "0123456" }, Date.now());
    store.close();
    const printed: string[] = [];
    const go = () =>
      rollout(rolloutOptions("web", { servers: "here" }, false), {
        cwd: work,
        print: (line) => printed.push(line),
        ask: () => Promise.resolve(false),
        stop: new AbortController().signal,
      });
    // The exit code main.ts gives: the one returned, or the error's.
    const code = await go().catch((error) => {
      const { text, exitCode } = describeError(error);
      printed.push(text);
      return exitCode;
    });
    assertEquals(
      code,
      1,
      `here serves 0123456, not ${commit.slice(0, 7)}: the rollout said\n${printed.join("\n")}`,
    );
    const said = printed.join("\n");
    assertMatch(said, /main already names \w{7} on here \(0123456\).*nothing was pushed/);
    assertMatch(said, /deploy-paradigm rollback web --to <the release of \w{7}>/);
    // Nothing was recorded: the refusal came before the record.
    const after = await FleetStore.open(join(home, "data", "fleet.db"));
    try {
      assertEquals(after.sql("SELECT count(*) AS n FROM rollouts").get()?.n, 0);
      // A rollout that moved it to the commit after the fleet saw it: the fleet's view is older, not diverged.
      const record = RolloutRecord.start(after, {
        app: "web",
        ref: "main",
        commit,
        startedAt: Date.now() + 1,
        options: {},
        servers: [{ name: "here", wave: 1, versionBefore: "0123456" }],
      });
      record.server("here", { outcome: "success", startedAt: Date.now() + 1, versionAfter: commit.slice(0, 7) });
      record.finish("success", Date.now() + 2);
    } finally {
      after.close();
    }
    const again = await go();
    assertEquals(again, 0, printed.join("\n"));
    assertMatch(printed.join("\n"), /here: success .*already at this commit/);
  } finally {
    for (const [k, v] of saved) v === undefined ? Deno.env.delete(k) : Deno.env.set(k, v);
    await Deno.remove(dir, { recursive: true });
  }
});
