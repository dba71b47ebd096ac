/**
 * Upgrading past the move of the proxy's control socket to `.control/proxy.sock`: a proxy an
 * older version started still listens at `.proxy.sock`. The client falls back to it (deploys keep
 * switching routes), and `setup` restarts it, after which the new path answers.
 */
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { freePort, withServer } from "../helpers/server.ts";
import { control } from "../../src/proxy/client.ts";
import { ControlServer } from "../../src/proxy/control.ts";
import { controlSocketPath, legacyControlSocketPath } from "../../src/proxy/routes.ts";
import { exists } from "../../src/fsutil.ts";

Deno.test("an older proxy's control socket (.proxy.sock): the client falls back to it; setup restarts it", async () => {
  await withServer(async (server) => {
    const root = server.prefix;
    // No proxy at all: the error names the new path.
    const none = await control(root, { op: "status" }).then(() => "answered", (error) => String(error));
    assertMatch(none, new RegExp(`the proxy is not running \\(no ${controlSocketPath(root)}\\)`));

    // The older proxy: a real control server, at the path older versions used.
    const old = new ControlServer(legacyControlSocketPath(root), {
      reload: () => Promise.resolve(0),
      drain: () => Promise.resolve({ drained: true, inFlight: 0 }),
      status: () => "the older proxy",
    }, () => {});
    await old.open();
    try {
      assert(!(await exists(controlSocketPath(root))));
      assertEquals(await control(root, { op: "status" }), { ok: true, routes: "the older proxy" });
      assertEquals((await control(root, { op: "reload" })).ok, true);
      console.log(`the client fell back to ${legacyControlSocketPath(root)}`);

      // setup sees the older proxy and restarts it (here: starts this version's under pm2).
      const setup = await server.cli([
        "setup",
        "web",
        "--port",
        String(freePort()),
        "--manager",
        "pm2",
        "--proxy-host",
        "127.0.0.1",
        "--yes",
      ]);
      assertEquals(setup.code, 0, setup.output);
      assertMatch(setup.stdout, /! the proxy runs an older version \(.*\.proxy\.sock\): restarting it/);
      assertMatch(setup.stdout, /✓ the proxy runs \(pm2\)/);
      assert(await exists(controlSocketPath(root)));
      // The new path comes first once it exists.
      const now = await control(root, { op: "status" });
      assert(now.routes !== "the older proxy", JSON.stringify(now));
      // And a second setup finds it running, nothing restarted.
      const again = await server.cli(["setup", "web", "--yes"]);
      assertEquals(again.code, 0, again.output);
      assertMatch(again.stdout, /✓ the proxy runs \(on 127\.0\.0\.1\)\n/);
      assert(!again.stdout.includes("older version"), again.stdout);
    } finally {
      await old.close();
    }
  });
});

Deno.test("proxy status against a proxy an older version started, from before domains: its routes shown, and said", async () => {
  await withServer(async (server) => {
    // What a proxy of d5187ee answers: each route without `domains`, no host, problems, shared ports or certificates.
    const routes = [{ app: "web", port: 18080, target: { port: 21001 }, inFlight: 0, listening: true }];
    const old = new ControlServer(legacyControlSocketPath(server.prefix), {
      reload: () => Promise.resolve(0),
      drain: () => Promise.resolve({ drained: true, inFlight: 0 }),
      status: () => routes,
    }, () => {});
    await old.open();
    try {
      const status = await server.cli(["proxy", "status"]);
      assertEquals(status.code, 0, status.output);
      assertMatch(status.stdout, /^web +:18080 +127\.0\.0\.1:21001 +0 +- +listening$/m);
      assertMatch(status.stdout, /! the proxy runs an older version of deploy-paradigm: restart it to run this one's/);
    } finally {
      await old.close();
    }
  });
});
