/**
 * `deploy-paradigm rollout` from a laptop to three fake VPS hosts (network namespaces with their
 * own sshd, set up over ssh, PM2 and the proxy each), the fleet's config naming them: a first
 * rollout found through the app's git remotes, then through the fleet database (the remotes
 * gone); a good commit everywhere (no version skew after); a commit whose health fails on the
 * second host only (its server-side .env says so) rolled back everywhere, or left (`stop`: the
 * skew shows in the fleet API); a Ctrl-C to the rollout's process group while the first push
 * runs (that deploy finishes, no other starts); `--confirm` answered in a real terminal (tmux). The
 * hosts are shared by the steps, in order.
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { AppRepo, type Mode, SHORT_HEALTH } from "../helpers/apps.ts";
import { serve, withFleet } from "../helpers/fleet.ts";
import { BIN, run, spawnCapturing } from "../helpers/server.ts";
import { envWords, shellQuote, Terminal } from "../helpers/terminal.ts";
import { FleetStore } from "../../src/fleet/store.ts";
import { rolloutById } from "../../src/fleet/rollouts.ts";
import { placed, versionSkew } from "../../dashboard/fleet.js";

const NAMES = ["alpha", "beta", "gamma"];

Deno.test("rollout: three hosts over ssh; good, rolled back, stopped with skew, interrupted", async (t) => {
  await withFleet(3, async (hosts, laptop) => {
    const port = 18000 + Math.floor(Math.random() * 1000);
    await Promise.all(hosts.map(async (vps) => {
      const setup = await vps.ssh(`${BIN} setup web --port ${port} --manager pm2 --proxy-host ${vps.address} --yes`);
      assertEquals(setup.code, 0, setup.output);
    }));
    for (const [i, vps] of hosts.entries()) await laptop.addHost(NAMES[i], vps);
    const work = await Deno.makeTempDir({ prefix: "dp-laptop-" });
    try {
      const { GIT_SSH_COMMAND: _, ...identity } = hosts[0].env;
      const repo = new AppRepo(work, { env: identity });
      await repo.git(["init", "--quiet", "-b", "main"]);
      for (const [i, vps] of hosts.entries()) {
        await repo.git(["remote", "add", `prod-${NAMES[i]}`, `root@${vps.address}:/var/repos/web.git`]);
      }
      const commit = (version: string, mode: Mode = "ok", extra = "") =>
        repo.python("web", version, mode, { health: SHORT_HEALTH, extra });
      const rollout = (...args: string[]) => run([BIN, "rollout", "web", ...args], { cwd: work, env: laptop.env });
      const serving = () =>
        Promise.all(hosts.map(async (vps) => await (await fetch(`http://${vps.address}:${port}/`)).text()));
      const db = join(laptop.home, "data", "fleet.db");
      const record = async (output: string) => {
        const id = /rollout (\d+): /.exec(output)?.[1];
        assert(id, output);
        const store = await FleetStore.open(db);
        try {
          const view = rolloutById(store, Number(id))!;
          return {
            ...view,
            rows: view.servers.map((s) => [s.server, s.wave, s.outcome, s.versionBefore, s.versionAfter]),
          };
        } finally {
          store.close();
        }
      };
      /** The fleet API's version skew after one `fleet collect --once`. */
      const skew = async () => {
        const collect = await laptop.collect();
        assertEquals(collect.code, 0, collect.output);
        const api = await serve(laptop);
        try {
          const skewed = versionSkew(placed((await api.json("/api/fleet")).body.servers).all).skewed;
          const latest = (await api.json("/api/rollouts?app=web&limit=1")).body.rollouts[0];
          return { skewed, latest };
        } finally {
          await api.stop();
        }
      };
      const short = (sha: string) => sha.slice(0, 7);
      const v1 = await commit("v1");

      await t.step("bad options: exit 2, nothing pushed, nothing recorded", async () => {
        for (
          const [args, message] of [
            [[], /say which servers: --servers a,b or --all/],
            [["--servers", "alpha,nope"], /"nope" is not in the fleet config.*; the known servers: alpha, beta, gamma/],
            [["--all", "--parallel", "0"], /--parallel must be a whole number from 1 to 32/],
            [["--all", "--confirm"], /no terminal to ask on/],
            [["--all", "--ref", "nosuchbranch"], /--ref nosuchbranch names no commit/],
            [["--all", "--on-failure", "pray"], /--on-failure must be one of rollback, stop/],
          ] as const
        ) {
          const bad = await rollout(...args);
          assertEquals(bad.code, 2, `${args.join(" ")}: ${bad.output}`);
          assertMatch(bad.stderr, message);
        }
        const other = await run([BIN, "rollout", "api", "--all"], { cwd: work, env: laptop.env });
        assertEquals(other.code, 2, other.output);
        assertMatch(other.stderr, /the deploy.yml of commit \w+ is app "web", not "api"/);
        const store = await FleetStore.open(db);
        try {
          assertEquals(store.sql("SELECT count(*) AS n FROM rollouts").get()?.n, 0, "nothing recorded");
        } finally {
          store.close();
        }
      });

      await t.step("the first rollout finds the servers through the app's git remotes", async () => {
        const first = await rollout("--all", "--parallel", "2");
        assertEquals(first.code, 0, first.output);
        assertMatch(first.stdout, /to 3 servers, branch main: alpha → beta \+ gamma; on failure: rollback/);
        assertMatch(first.stdout, /\[beta\] remote: ✓ deployed web/);
        assertEquals(await serving(), ["v1", "v1", "v1"]);
        const view = await record(first.stdout);
        assertEquals([view.outcome, view.commit, view.ref], ["success", v1, "main"], "HEAD named as its branch");
        assertEquals(view.rows, [
          ["alpha", 1, "success", null, short(v1)],
          ["beta", 2, "success", null, short(v1)],
          ["gamma", 2, "success", null, short(v1)],
        ]);
        assert(view.finishedAt && view.servers.every((s) => s.durationMs! > 0 && s.startedAt), JSON.stringify(view));
      });

      // From here the servers come from the fleet database (what `fleet collect` saw run web).
      for (const name of NAMES) await repo.git(["remote", "remove", `prod-${name}`]);
      // A code host's remote is never a server (it would not answer here: the rollout would fail).
      await repo.git(["remote", "add", "origin", "git@github.com:acme/web.git"]);
      const v2 = await commit("v2");

      await t.step("a good commit to all three: one record, three successes, no skew after", async () => {
        assertEquals((await skew()).skewed, [], "all on v1");
        const good = await rollout("--all", "--parallel", "2");
        assertEquals(good.code, 0, good.output);
        assertEquals(await serving(), ["v2", "v2", "v2"]);
        const view = await record(good.stdout);
        assertEquals(view.outcome, "success");
        assertEquals(view.rows, NAMES.map((name, i) => [name, i ? 2 : 1, "success", short(v1), short(v2)]));
        const { pid, hostname, ...options } = view.options;
        assertEquals(options, {
          servers: NAMES,
          all: true,
          parallel: 2,
          onFailure: "rollback",
          confirm: false,
          branch: "main",
        });
        assert(typeof pid === "number" && typeof hostname === "string", JSON.stringify(view.options));
        const after = await skew();
        assertEquals(after.skewed, [], "all on v2 again");
        assertEquals([after.latest.id, after.latest.outcome, after.latest.servers.length], [view.id, "success", 3]);
      });

      // v3 fails its health check where the server's env says FAIL_HEALTH: on beta only.
      const env = join(hosts[1].deployments, "web", ".env.production");
      await Deno.writeTextFile(env, "FAIL_HEALTH=1 # public\n", { append: true });
      const v3 = await commit("v3", "envfail");

      await t.step("fails on the second host, --on-failure rollback: all three back on the old version", async () => {
        const failed = await rollout("--all");
        assertEquals(failed.code, 1, failed.output);
        assertMatch(failed.stdout, /\[beta\] ✗ failed: deploy failed at health/);
        assertEquals(await serving(), ["v2", "v2", "v2"]);
        const view = await record(failed.stdout);
        assertEquals(view.outcome, "rolled_back");
        assertEquals(view.rows, [
          ["alpha", 1, "rolled_back", short(v2), short(v2)],
          ["beta", 2, "failed", short(v2), short(v2)],
          ["gamma", 3, "skipped", short(v2), short(v2)],
        ]);
        assertMatch(view.message ?? "", /^beta: deploy failed at health; rolled back alpha$/);
        const heads = await Promise.all(
          hosts.map((vps) => vps.ssh("git --git-dir=/var/repos/web.git rev-parse main").then((r) => r.stdout.trim())),
        );
        assertEquals(heads, [v2, v2, v2], "each server's branch names what it serves");
      });

      await t.step("the same with --on-failure stop: the first new, the others old, the skew in the API", async () => {
        const stopped = await rollout("--all", "--on-failure", "stop");
        assertEquals(stopped.code, 1, stopped.output);
        assertEquals(await serving(), ["v3", "v2", "v2"]);
        const view = await record(stopped.stdout);
        assertEquals(view.outcome, "failed");
        assertEquals(view.rows.map((row) => row.slice(0, 3)), [
          ["alpha", 1, "success"],
          ["beta", 2, "failed"],
          ["gamma", 3, "skipped"],
        ]);
        const { skewed, latest } = await skew();
        assertEquals(skewed, [["web", [[short(v2), ["beta", "gamma"]], [short(v3), ["alpha"]]]]]);
        assertEquals(latest.id, view.id, "the API shows this rollout");
        assertEquals(
          latest.servers.map((s: { server: string; outcome: string }) => `${s.server}:${s.outcome}`),
          ["alpha:success", "beta:failed", "gamma:skipped"],
        );
      });

      const v4 = await commit("v4", "ok", "hooks: { preDeploy: sleep 3 }\n");

      await t.step("Ctrl-C while the first push runs: that deploy finishes, no other starts", async () => {
        let output = "";
        // Its own process group, signalled as a terminal's Ctrl-C would be: the pushes must not get it.
        const child = spawnCapturing(
          ["setsid", "env", "-C", work, BIN, "rollout", "web", "--all", "--parallel", "2"],
          laptop.env,
          (text) => output += text,
        );
        for (let i = 0; i < 300 && !output.includes("[alpha] git push"); i++) {
          await new Promise((r) => setTimeout(r, 50));
        }
        assert(output.includes("[alpha] git push"), output);
        const sent = performance.now();
        Deno.kill(-child.pid, "SIGINT");
        const status = await child.status;
        assertEquals(status.code, 1, output);
        assert(performance.now() - sent > 1500, `it waited for alpha's deploy (sleep 3): ${output}`);
        assertMatch(output, /stopping: the pushes running finish, no new one starts/);
        assertMatch(output, /\[alpha\] remote: ✓ deployed web/);
        assert(!/\[(beta|gamma)\] git push/.test(output), output);
        assertEquals(await serving(), ["v4", "v2", "v2"]);
        const view = await record(output);
        assertEquals(view.outcome, "interrupted");
        assertEquals(view.rows, [
          ["alpha", 1, "success", short(v3), short(v4)],
          ["beta", 2, "interrupted", short(v2), short(v2)],
          ["gamma", 2, "interrupted", short(v2), short(v2)],
        ]);
      });

      const v5 = await commit("v5");

      await t.step("--confirm on a terminal: yes to the first wave, no to the second: stopped", async () => {
        const command = `cd ${shellQuote(work)} && env ${envWords(laptop.env)} ${BIN} rollout web --all --parallel 2 ` +
          `--confirm; echo EXIT=$?`;
        const term = await Terminal.start("dp-rollout", `${command}; sleep 30`, {
          width: 200,
          height: 50,
          tries: 300,
          history: true,
        });
        const waitFor = (pattern: RegExp) => term.waitFor(pattern);
        try {
          await waitFor(/wave 1\/2 \(alpha\): deploy \w{7}\? \[y\/N\]/);
          await term.keys("y", "Enter");
          await waitFor(/wave 2\/2 \(beta, gamma\): deploy \w{7}\? \[y\/N\]/);
          await term.keys("n", "Enter");
          const done = await waitFor(/EXIT=\d+/);
          assertMatch(done, /EXIT=1/);
          assertEquals(await serving(), ["v5", "v2", "v2"]);
          const view = await record(done);
          assertEquals([view.outcome, view.message], ["stopped", "stopped at the confirmation"]);
          assertEquals(view.rows, [
            ["alpha", 1, "success", short(v4), short(v5)],
            ["beta", 2, "skipped", short(v2), short(v2)],
            ["gamma", 2, "skipped", short(v2), short(v2)],
          ]);
        } finally {
          await term.close();
        }
      });

      await t.step(
        "a commit behind a server's branch: refused before anything is pushed (unless --force)",
        async () => {
          const behind = await rollout("--servers", "alpha", "--ref", v1);
          assertEquals(behind.code, 2, behind.output);
          assertMatch(behind.stderr, /\w{7} is not ahead of main on alpha \(at \w{7}\).*nothing was pushed/);
          assertMatch(behind.stderr, /--force/);
          assertEquals(await serving(), ["v5", "v2", "v2"]);
        },
      );

      await t.step(
        "a commit whose deploy.yml names another branch: stored there, nothing deployed, a failure",
        async () => {
          await commit("v5b", "ok", "branch: production\n");
          const stored = await rollout("--servers", "alpha");
          assertEquals(stored.code, 1, stored.output);
          assertMatch(
            stored.stdout,
            /\[alpha\] remote: deploy-paradigm: refs\/heads\/production stored; only main deploys/,
          );
          const view = await record(stored.stdout);
          assertEquals(view.outcome, "failed");
          assertEquals(
            view.servers[0].message,
            "nothing deployed: alpha deploys main, the commit's deploy.yml says production",
          );
          assertMatch(view.message ?? "", /no server had switched: nothing to roll back/);
          assertEquals(await serving(), ["v5", "v2", "v2"]);
        },
      );

      await t.step("a server that does not answer: nothing pushed anywhere, nothing recorded", async () => {
        await repo.git(["remote", "add", "ghost", "root@127.0.0.1:/var/repos/web.git"]); // nothing listens there
        const count = async () => {
          const store = await FleetStore.open(db);
          try {
            return store.sql("SELECT count(*) AS n FROM rollouts").get()?.n;
          } finally {
            store.close();
          }
        };
        const before = await count();
        await commit("v6");
        const refused = await rollout("--all");
        assertEquals(refused.code, 1, refused.output);
        assertMatch(
          refused.stderr,
          /cannot read main on a server; nothing was pushed:\n {2}ghost \(root@127\.0\.0\.1:/,
        );
        assertEquals(await serving(), ["v5", "v2", "v2"]);
        assertEquals(await count(), before);
      });
    } finally {
      await Deno.remove(work, { recursive: true });
    }
  });
});
