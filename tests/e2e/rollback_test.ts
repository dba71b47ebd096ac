/**
 * `rollback` and `releases`, end to end: real pushes, real PM2, through the proxy (blue-green)
 * and in place (restart).
 */
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { AppRepo } from "../helpers/apps.ts";
import { freePort, get, withServer } from "../helpers/server.ts";
import { current, deployLog, status } from "../helpers/state.ts";

for (const strategy of ["blue-green", "restart"] as const) {
  Deno.test(`rollback (${strategy}): the release's own .env snapshot, bad releases skipped, --to`, async () => {
    await withServer(async (server) => {
      const port = freePort();
      const paths = server.paths("rb");
      const repo = await AppRepo.create(
        server,
        "rb",
        await server.setupApp("rb", { port, strategy, dotenv: "GREETING=first # public\n" }),
      );
      const greeting = () => get(`http://127.0.0.1:${port}/greeting`);
      await repo.python("rb", "v1");
      await repo.pushOk();
      const v1 = (await status(server, "rb")).release!;
      await Deno.writeTextFile(paths.envFile("production"), "GREETING=second\n");
      await repo.python("rb", "v2");
      await repo.pushOk();
      const v2 = (await status(server, "rb")).release!;
      await repo.python("rb", "v3");
      await repo.pushOk();
      const v3 = (await status(server, "rb")).release!;
      assertEquals(await greeting(), { status: 200, body: "second v3" });

      // The bare repository's deploy branch follows what serves.
      const branch = async () =>
        (await repo.git(["--git-dir", paths.repo, "rev-parse", "refs/heads/main"])).stdout.trim();
      const commitOf = async () => (await status(server, "rb")).commit!;
      const c3 = await commitOf();
      assertEquals(await branch(), c3);

      // Back to v2, the newest good release before v3; v3 is marked bad.
      const back = await server.cli(["rollback", "rb"]);
      assertEquals(back.code, 0, back.output);
      assertMatch(back.stdout, new RegExp(`rolling rb back to release ${v2}`));
      assertMatch(back.stdout, new RegExp(`↺ rolled back rb to release ${v2} .*release ${v3} is marked bad`));
      assertEquals(await greeting(), { status: 200, body: "second v2" });
      assertEquals(await current(server, "rb"), `releases/${v2}`);
      assertMatch(back.stdout, new RegExp(`✓ branch +[\\d.]+s +main → ${(await commitOf()).slice(0, 7)}`));
      assertEquals(await branch(), await commitOf());
      const listing = await server.cli(["releases", "rb"]);
      assertMatch(listing.stdout, new RegExp(`\\* +${v2} .*serving`));
      assertMatch(listing.stdout, new RegExp(`${v3} .*bad \\(rolled back from\\)`));

      // Again: v1, with v1's own snapshot of .env, not today's.
      assertEquals((await server.cli(["rollback", "rb"])).code, 0);
      assertEquals(await greeting(), { status: 200, body: "first v1" });
      const st = await status(server, "rb");
      assertEquals([st.release, st.status, st.healthy, st.lastDeploy.outcome], [v1, "running", true, "rolled_back"]);
      // The table's last deploy names the version rolled away from as such (VERSION has the one that serves).
      assertMatch(
        (await server.cli(["status", "rb"])).stdout,
        new RegExp(`\\nrb .* ${st.version} .* rolled back from ${st.lastDeploy.version} by hand\\n`),
      );

      // Nothing good before v1; --to picks any release, even a bad one, by name.
      const none = await server.cli(["rollback", "rb"]);
      assertEquals(none.code, 2);
      assertMatch(none.stderr, /no good release before/);
      // Here --to goes forward: v1 is not marked bad, and v3, chosen by name, is good again.
      const to = await server.cli(["rollback", "rb", "--to", v3]);
      assertEquals(to.code, 0, to.output);
      assertMatch(to.stdout, new RegExp(`rolling rb forward to release ${v3}`));
      assertMatch(to.stdout, new RegExp(`↺ rolled forward rb to release ${v3} \\(\\w+\\) in [\\d.]+s\\n`));
      assertEquals(await greeting(), { status: 200, body: "second v3" });
      const forward = await status(server, "rb");
      assertEquals(forward.lastDeploy.message, `rolled forward by hand to release ${v3} (${forward.version})`);
      // Not a rollback of v1: v3 serves, as after its deploy (no rolled_back alert in the fleet).
      assertEquals(
        [forward.lastDeploy.outcome, forward.lastDeploy.release, forward.lastDeploy.version],
        ["success", v3, forward.version],
      );
      assertEquals((await deployLog(server, "rb")).at(-1)?.event, "success");
      assertMatch(
        (await server.cli(["status", "rb"])).stdout,
        new RegExp(`\\nrb .* rolled forward ${forward.version}\\n`),
      );
      const after = (await server.cli(["releases", "rb", "--json"])).stdout;
      assertEquals(
        (JSON.parse(after) as { id: string; bad: boolean; current: boolean }[]).map((r) => [r.id, r.bad, r.current]),
        [[v1, false, false], [v2, true, false], [v3, false, true]],
      );
      const unknown = await server.cli(["rollback", "rb", "--to", "20000101-000000-000"]);
      assertEquals(unknown.code, 2);
      assertMatch(unknown.stderr, /has no release "20000101-000000-000"/);
      assert((await deployLog(server, "rb")).filter((e) => e.event === "rollback").length >= 3);
      assertEquals(await branch(), c3);

      // Back again (v2 is bad: to v1), then the same v3 pushed again deploys it: the branch had followed.
      assertEquals((await server.cli(["rollback", "rb"])).code, 0);
      assertEquals([await branch(), await greeting()], [await commitOf(), { status: 200, body: "first v1" }]);
      await repo.pushOk();
      assertEquals([await branch(), await commitOf(), await greeting()], [c3, c3, { status: 200, body: "second v3" }]);

      if (strategy === "blue-green") {
        // With the proxy stopped a rollback is refused first, as a deploy is: it names the command that
        // starts the proxy, starts nothing and changes nothing (it said "… failed; <release> serves"
        // after starting the release and failing at the switch, while nothing served through no proxy).
        const serving = (await status(server, "rb")).release;
        const before = [await Deno.readTextFile(server.paths("rb").status), (await deployLog(server, "rb")).length];
        await server.stopProxy();
        const down = await server.cli(["rollback", "rb"]);
        assertEquals(down.code, 1, down.output);
        assertMatch(down.stderr, /^error: the proxy is not running \(no \S+\): start it with `/);
        assert(!/serves|✓ start/.test(down.output), down.output);
        assertEquals(
          [await Deno.readTextFile(server.paths("rb").status), (await deployLog(server, "rb")).length],
          before,
        );
        assertEquals(await current(server, "rb"), `releases/${serving}`);
      }
    });
  });
}
