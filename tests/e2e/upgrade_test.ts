/**
 * The upgrade path, as an operator lives it: a fake VPS whose apps were set up and deployed by an
 * older version ({@link OLD}, a commit of this repository from before builds had a user of their
 * own), then this checkout installed over it (install.sh again: one path, new code). Two PM2 apps:
 * `web` on its own port, `shop` on a domain behind the proxy's shared port. Under keep-alive load
 * on both across the switch of version, a push and a rollback (no request may fail): `status`,
 * `releases`, a push of a new commit, `rollback` to the release the old version built, the
 * status.json the fleet monitor pulls, and the owners and modes the new version requires. Then
 * from {@link OLDEST}, before apps had users: the push says to run setup; after it, a push and a
 * rollback to the release the oldest version built as root.
 */
import { join, resolve } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { AppRepo } from "../helpers/apps.ts";
import { Laptop } from "../helpers/fleet.ts";
import { LoadGenerator } from "../helpers/load.ts";
import { run } from "../helpers/server.ts";
import { FakeVps } from "../helpers/vps.ts";
import { FleetStore } from "../../src/fleet/store.ts";
import { fleetPaths } from "../../src/fleet/config.ts";
import { fleetOverview } from "../../src/fleet/queries.ts";

/** The older version: the last commit before build users (1feb7ff), with domains and the shared ports. */
const OLD = "acaba80";

/** An older one still: before apps had users of their own (and before domains). */
const OLDEST = "d5187ee";

/** This checkout: the version the operator upgrades to. */
const NEW = resolve(import.meta.dirname!, "../..");

/**
 * The older version `commit` of this repository, its dependencies installed: from
 * tests/fixtures/versions/<commit>.tar.gz (`git archive --format=tar.gz <commit> src main.ts deno.json
 * deno.lock package.json bin templates dashboard`), so that a checkout without the history (a
 * shallow clone, an export) runs it too.
 */
async function checkout(commit: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "dp-old-" });
  const archive = join(NEW, "tests", "fixtures", "versions", `${commit}.tar.gz`);
  for (const argv of [["tar", "-xzf", archive, "-C", dir], ["deno", "install", "--frozen", "--quiet"]]) {
    const done = await run(argv, { cwd: dir });
    if (done.code !== 0) {
      await Deno.remove(dir, { recursive: true });
      throw new Error(`${argv.join(" ")}: ${done.output} (the older version ${commit})`);
    }
  }
  return dir;
}

/** The app: answers `version` (with `extra` lines run first, at start). */
const python = (version: string, extra = "") =>
  `import http.server, os
${extra}
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = ${JSON.stringify(version)}.encode()
        self.send_response(200); self.send_header("content-length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
`;

const deployYml = (app: string) =>
  `name: ${app}\ntype: python\ncommand: python3 app.py\nwatch: 300ms\n` +
  "healthCheck: { path: /health, window: 8s, interval: 200ms, successes: 2, timeout: 1s }\n";

/** What the load's answers say serves from now on (a few answers, all received after this call). */
async function serving(load: LoadGenerator, what: string): Promise<string[]> {
  const from = performance.now();
  await load.answered(from, what, 8);
  return [...load.bodiesBetween(from, performance.now())];
}

Deno.test({
  name: "upgrade: apps set up and deployed by an older version are served, pushed, rolled back by the new one",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const old = await checkout(OLD);
    const vps = await FakeVps.create({ checkout: old });
    const laptop = await Laptop.create();
    const work = await Deno.makeTempDir({ prefix: "dp-laptop-" });
    const loads: LoadGenerator[] = [];
    try {
      const dp = (args: string) => vps.ssh(`${vps.bin} ${args}`);
      const port = 18000 + Math.floor(Math.random() * 1000);
      const repos: Record<string, AppRepo> = {};
      for (const [app, options] of [["web", `--port ${port}`], ["shop", "--port 8000 --domain shop.test"]]) {
        const setup = await dp(`setup ${app} ${options} --manager pm2 --proxy-host ${vps.address} --yes`);
        assertEquals(setup.code, 0, setup.output);
        await Deno.writeTextFile(join(vps.deployments, app, ".env.production"), "SECRET=s3cr3t-value\n");
        const dir = join(work, app);
        await Deno.mkdir(dir);
        const repo = repos[app] = new AppRepo(dir, vps);
        await repo.git(["init", "--quiet", "-b", "main"]);
        await repo.git(["remote", "add", "production", `root@${vps.address}:/var/repos/${app}.git`]);
        await repo.commit({ "deploy.yml": deployYml(app), "app.py": python(`${app}-v1`) }, "v1");
        await repo.pushOk();
      }
      const releases = async (app: string) =>
        (await Array.fromAsync(Deno.readDir(join(vps.deployments, app, "releases")))).map((e) => e.name).sort();
      const [oldRelease] = await releases("web");

      const web = new LoadGenerator(`http://${vps.address}:${port}/`).start();
      const shop = new LoadGenerator(`http://${vps.address}/`, 4, undefined, { host: "shop.test" }).start();
      loads.push(web, shop);
      assertEquals(await serving(web, "web before the upgrade"), ["web-v1"]);
      assertEquals(await serving(shop, "shop before the upgrade"), ["shop-v1"]);

      // The upgrade: the new binary at the same path.
      await vps.useCheckout(NEW);
      const status = await dp("status");
      assertEquals(status.code, 0, status.output);
      console.log(status.stdout);
      const listed = await dp("releases web");
      assertEquals(listed.code, 0, listed.output);
      assertMatch(listed.stdout, new RegExp(oldRelease));

      for (const app of ["web", "shop"]) {
        await repos[app].commit({ "app.py": python(`${app}-v2`) }, "v2");
        const push = await repos[app].pushOk();
        assertMatch(push.output, new RegExp(`remote: ✓ deployed ${app}`));
        // What the older version left is brought to what this one requires, and said: the build user made,
        // deploy.log (0644) narrowed.
        assertMatch(
          push.output,
          new RegExp(`✓ user build-${app}, which builds ${app}'s releases \\(in no group but its own\\)`),
        );
        assertMatch(
          push.output,
          new RegExp(`! /var/log/deployments/${app}/deploy.log was 0644, open to group or others: narrowed to 0600`),
        );
        // status.json and the releases it wrote 0644 and 0755 behind a 0750 dir, now 0751.
        assertMatch(
          push.output,
          new RegExp(
            `! /opt/deployments/${app}: .*status\\.json.* open to others \\(nothing in an app's directory is theirs\\): narrowed`,
          ),
        );
      }
      assertEquals(await serving(web, "web after the push"), ["web-v2"]);
      assertEquals(await serving(shop, "shop after the push"), ["shop-v2"]);

      const rollback = await dp(`rollback web --to ${oldRelease}`);
      assertEquals(rollback.code, 0, rollback.output);
      assertEquals(await serving(web, "web after the rollback"), ["web-v1"]);

      for (const load of loads.splice(0)) {
        const samples = await load.stop();
        assertEquals(load.failures(), [], `${load.url}: ${load.failures().length} of ${samples.length} failed`);
      }

      // What the fleet monitor makes of the upgraded server's status.json.
      await laptop.addHost("vps", vps);
      const collected = await laptop.collect();
      assertEquals(collected.code, 0, collected.output);
      const store = await FleetStore.open(fleetPaths(laptop.home).db);
      try {
        const overview = fleetOverview(store, { now: Date.now(), intervalMs: 30_000, holding: false, gapMs: 0 });
        const apps = overview.servers[0].apps;
        assertEquals(apps.map((a) => [a.app, a.status, a.healthy, a.state]), [
          ["shop", "running", true, "fresh"],
          ["web", "running", true, "fresh"],
        ]);
        for (const app of apps) {
          assertEquals(
            [app.processes?.up, app.processes?.down],
            [1, 0],
            `${app.app}: ${JSON.stringify(app.processes)}`,
          );
        }
      } finally {
        store.close();
      }

      // Owners and modes as the new version requires them (README, "Users and permissions").
      for (const app of ["web", "shop"]) {
        const modes = await vps.ssh(
          `cd /opt/deployments/${app} && stat -c '%n %U:%G %a' . releases home build-home .env.production config.yml ` +
            `/var/log/deployments/${app} /var/log/deployments/${app}/* && id -nG build-${app}`,
        );
        assertEquals(modes.code, 0, modes.output);
        const lines = modes.stdout.trim().split("\n");
        assertEquals(lines.slice(0, 7), [
          `. root:app-${app} 751`,
          `releases root:app-${app} 751`,
          `home app-${app}:app-${app} 700`,
          `build-home build-${app}:build-${app} 700`,
          ".env.production root:root 600",
          "config.yml root:root 600",
          `/var/log/deployments/${app} root:app-${app} 750`,
        ]);
        const logs = lines.slice(7, -1);
        assert(logs.some((line) => line.startsWith(`/var/log/deployments/${app}/deploy.log `)), logs.join("\n"));
        for (const line of logs) assertMatch(line, / root:root 600$/, `${line}: a log file is root's 0600`);
        assertEquals(lines.at(-1), `build-${app}`); // in no group but its own: no build reads the app's .env
      }
    } finally {
      for (const load of loads) await load.stop();
      await laptop.close();
      await vps.close();
      await Deno.remove(work, { recursive: true }).catch(() => {});
      await Deno.remove(old, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name:
    "upgrade from before apps had users: the push says to run setup; then a push, and a rollback to the old release",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const old = await checkout(OLDEST);
    const vps = await FakeVps.create({ checkout: old });
    const work = await Deno.makeTempDir({ prefix: "dp-laptop-" });
    try {
      const dp = (args: string) => vps.ssh(`${vps.bin} ${args}`);
      const port = 18000 + Math.floor(Math.random() * 1000);
      const setup = await dp(`setup web --port ${port} --manager pm2 --proxy-host ${vps.address} --yes`);
      assertEquals(setup.code, 0, setup.output);
      await Deno.writeTextFile(join(vps.deployments, "web", ".env.production"), "SECRET=s3cr3t-value\n");
      const repo = new AppRepo(work, vps);
      await repo.git(["init", "--quiet", "-b", "main"]);
      await repo.git(["remote", "add", "production", `root@${vps.address}:/var/repos/web.git`]);
      // The app reads its release's .env itself (as python-dotenv or Node's dotenv do).
      const readsEnv = 'open(".env").read()';
      await repo.commit({ "deploy.yml": deployYml("web"), "app.py": python("web-v1", readsEnv) }, "v1");
      await repo.pushOk();
      const [oldRelease] = await Array.fromAsync(Deno.readDir(join(vps.deployments, "web", "releases")));

      await vps.useCheckout(NEW);
      await repo.commit({ "app.py": python("web-v2", readsEnv) }, "v2");
      const refused = await repo.push();
      assertEquals(refused.code, 1, refused.output);
      assertMatch(refused.output, /the user app-web that web runs as does not exist on this server/);
      assertMatch(refused.output, /hint: run `deploy-paradigm setup web`/);
      const again = await dp("setup web --yes");
      assertEquals(again.code, 0, again.output);
      assertMatch(again.output, /✓ user app-web/);
      assertMatch(again.output, /! the proxy runs an older version \(.*\): restarting it/);
      const pushed = await repo.pushOk();
      assertMatch(pushed.output, /remote: ✓ deployed web/);
      assertEquals(await (await fetch(`http://${vps.address}:${port}/`)).text(), "web-v2");

      // The release the older version built, as root, becomes what the new one requires when rolled back to.
      const rollback = await dp(`rollback web --to ${oldRelease.name}`);
      assertEquals(rollback.code, 0, rollback.output);
      const said = rollback.stdout.split("\n").find((line) => line.startsWith("! release"));
      console.log(said);
      assertMatch(said ?? rollback.output, new RegExp(`^! release ${oldRelease.name} was built by an older version: `));
      assertEquals(await (await fetch(`http://${vps.address}:${port}/`)).text(), "web-v1");
      const dir = `/opt/deployments/web/releases/${oldRelease.name}`;
      const sealed = await vps.ssh(`stat -c '%U:%G %a' ${dir}/.env && find ${dir} ! -user 0 -o ! -type l -perm /6022`);
      assertEquals(sealed.stdout, "root:app-web 640\n", sealed.output);
    } finally {
      await vps.close();
      await Deno.remove(work, { recursive: true }).catch(() => {});
      await Deno.remove(old, { recursive: true }).catch(() => {});
    }
  },
});
