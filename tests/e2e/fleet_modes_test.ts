/**
 * What the fleet monitor leaves on the laptop, and how it takes its API token: every command run
 * in a fresh HOME under umask 022 (`fleet add` first, as a new operator would), against a fake
 * VPS over real ssh and rsync, then every file and directory under HOME walked: files 0600,
 * directories 0700, fleet.db's -wal and -shm included (walked while `fleet` runs). And the token:
 * `--token-file` (refused when group or others may read it), FLEET_MONITOR_TOKEN, `--token` with
 * a warning; and an option of another action refused.
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { append, Laptop, serve, withFleet, writeStatus } from "../helpers/fleet.ts";
import { run } from "../helpers/server.ts";
import { until } from "../helpers/time.ts";

/** Every entry under `dir` (not `dir` itself) with its type and permission bits. */
async function walk(dir: string): Promise<{ path: string; kind: string; mode: number }[]> {
  const found: { path: string; kind: string; mode: number }[] = [];
  for (const entry of await Array.fromAsync(Deno.readDir(dir)).catch(() => [])) {
    const path = join(dir, entry.name);
    const info = await Deno.lstat(path).catch(() => undefined);
    if (!info) continue; // removed meanwhile (a temp file)
    const kind = info.isDirectory ? "dir" : info.isFile ? "file" : info.isSocket ? "socket" : "other";
    found.push({ path, kind, mode: (info.mode ?? 0) & 0o7777 });
    if (info.isDirectory) found.push(...await walk(path));
  }
  return found;
}

const octal = (mode: number) => mode.toString(8).padStart(4, "0");

Deno.test("fleet: in a fresh HOME under umask 022, every file it creates is 0600 and every directory 0700", async () => {
  const home = await Deno.makeTempDir({ prefix: "dp-fleet-home-" });
  const umask = ["sh", "-c", 'umask 022; exec "$@"', "sh"];
  // Deno's own cache stays where it is (it would be under HOME otherwise): HOME holds what the fleet makes.
  const denoDir = Deno.env.get("DENO_DIR") ?? join(Deno.env.get("HOME") ?? "/root", ".cache", "deno");
  const laptop = new Laptop(join(home, ".fleet-monitor"), { HOME: home, DENO_DIR: denoDir, NO_COLOR: "1" }, umask);
  try {
    await withFleet(1, async ([vps], laptop) => {
      await writeStatus(vps, "web", { status: "running", healthy: true, version: "abc1234" });
      await append(vps, "web", "access.log", "GET / 200\n".repeat(50));
      await append(vps, "web", "deploy.log", JSON.stringify({ time: "2026-12-03T09:00:00Z", event: "success" }) + "\n");
      await Deno.mkdir(join(vps.deployments, ".tls"), { recursive: true });
      await Deno.writeTextFile(
        join(vps.deployments, ".tls", "certificates.json"),
        JSON.stringify({ updatedAt: "2026-12-03T09:00:00Z", certificates: {} }),
      );
      await laptop.addHost("web1", vps); // `fleet add` first: it creates the home
      const config = join(laptop.home, "config.yml");
      // Alerts to a closed port: alerts.json is written all the same.
      await Deno.writeTextFile(
        config,
        'interval: 1s\nalerts: [{ type: webhook, url: "http://127.0.0.1:1/" }]\n' + await Deno.readTextFile(config),
      );
      const collect = await laptop.collect();
      assertEquals(collect.code, 0, collect.output);
      const list = await laptop.fleet("list");
      assertEquals(list.code, 0, list.output);

      const token = join(home, "token");
      await Deno.writeTextFile(token, "s3cret-from-file\n", { mode: 0o600 });
      const api = await serve(laptop, ["--token-file", token]);
      let walked: Awaited<ReturnType<typeof walk>>;
      try {
        // A second cycle or later that pulled the server (on a busy machine a pull can outlast a cycle or two).
        await until(
          20_000,
          "a second cycle that pulled web1",
          () => /cycle ([2-9]|\d{2,}): 1\/1 servers/.test(api.log()),
          () => api.log(),
        );
        walked = await walk(home);
      } finally {
        await api.stop();
      }
      const names = walked.map((entry) => entry.path.slice(home.length + 1));
      for (const expected of ["data/fleet.db", "data/fleet.db-wal", "data/fleet.db-shm", "data/alerts.json"]) {
        assert(names.includes(`.fleet-monitor/${expected}`), `${expected} is missing: ${names.join(" ")}`);
      }
      for (const expected of ["config.yml", "known_hosts", "mirror/web1/logs/web/access.log"]) {
        assert(names.includes(`.fleet-monitor/${expected}`), `${expected} is missing: ${names.join(" ")}`);
      }
      const wrong = walked.filter((entry) => entry.mode !== (entry.kind === "dir" ? 0o700 : 0o600));
      console.log(
        `figures: ${walked.length} entries under a fresh HOME (umask 022): ` +
          `${walked.filter((e) => e.kind === "dir").length} directories, ` +
          `${walked.filter((e) => e.kind !== "dir").length} files and sockets; wrong modes: ${wrong.length}\n` +
          walked.map((e) => `figures:   ${octal(e.mode)} ${e.kind.padEnd(6)} ${e.path.slice(home.length + 1)}`).join(
            "\n",
          ),
      );
      assertEquals(wrong.map((entry) => `${entry.path.slice(home.length + 1)} ${entry.kind} ${octal(entry.mode)}`), []);

      // A database left 0644 by an older version is narrowed, -wal and -shm with it.
      const db = join(laptop.home, "data", "fleet.db");
      await Deno.chmod(db, 0o644);
      assertEquals((await laptop.fleet("list")).code, 0);
      assertEquals(octal((await Deno.stat(db)).mode! & 0o777), "0600");
    }, laptop);
  } finally {
    await Deno.remove(home, { recursive: true }).catch(() => {});
  }
});

Deno.test("fleet: the API token from --token-file (0600 only), FLEET_MONITOR_TOKEN, or --token with a warning", async () => {
  const laptop = await Laptop.create();
  const dir = await Deno.makeTempDir({ prefix: "dp-fleet-token-" });
  try {
    const token = join(dir, "token");
    const secret = `tok-${crypto.randomUUID()}`;
    await Deno.writeTextFile(token, secret + "\n", { mode: 0o600 });
    await Deno.chmod(token, 0o644);
    const open = await laptop.fleet("--token-file", token);
    assertEquals(open.code, 2, open.output);
    assertMatch(open.stderr, /the token file .* is open to group or others \(mode 0644\): refused/);
    assertMatch(open.stderr, /hint: chmod 600/);
    await Deno.chmod(token, 0o640);
    assertEquals((await laptop.fleet("--token-file", token)).code, 2, "group-readable: refused too");
    const missing = await laptop.fleet("--token-file", join(dir, "none"));
    assertEquals(missing.code, 2);
    assertMatch(missing.stderr, /cannot read the token file/);
    await Deno.writeTextFile(join(dir, "empty"), "", { mode: 0o600 });
    assertMatch((await laptop.fleet("--token-file", join(dir, "empty"))).stderr, /must hold one token.*empty/);
    await Deno.chmod(token, 0o600);
    const twice = await laptop.fleet("--token-file", token, "--token", "x");
    assertEquals(twice.code, 2);
    assertMatch(twice.stderr, /given twice \(--token-file and --token\)/);
    // An option of another action would be ignored: refused, naming what the action takes.
    const foreign = await laptop.fleet("list", "--once");
    assertEquals(foreign.code, 2, foreign.output);
    assertMatch(foreign.stderr, /--once is not an option of fleet list\nhint: fleet list takes --json, --config/);
    const foreignServe = await laptop.fleet("--json", "--yes");
    assertEquals(foreignServe.code, 2, foreignServe.output);
    assertMatch(foreignServe.stderr, /--json, --yes are not options of fleet \(collect and serve\)/);
    assertEquals(
      await Deno.readDir(laptop.home)[Symbol.asyncIterator]().next().then((n) => n.done),
      true,
      "nothing made",
    );

    const check = async (args: string[], env: Record<string, string> = {}) => {
      const api = await serve(new Laptop(laptop.home, { ...laptop.env, ...env }), [...args, "--host", "0.0.0.0"]);
      try {
        assertEquals((await fetch(`${api.base}/api/fleet`)).status, 401);
        const ok = await fetch(`${api.base}/api/fleet`, { headers: { authorization: `Bearer ${secret}` } });
        assertEquals(ok.status, 200);
        await ok.body?.cancel();
        const ps = await run(["ps", "-eo", "args"]);
        return { log: api.log(), inPs: ps.stdout.includes(secret) };
      } finally {
        await api.stop();
      }
    };
    const fromFile = await check(["--token-file", token]);
    assertEquals(fromFile.inPs, false, "the token is not in ps");
    assert(!/warning/.test(fromFile.log), fromFile.log);
    const fromEnv = await check([], { FLEET_MONITOR_TOKEN: secret });
    assertEquals(fromEnv.inPs, false);
    const fromArgv = await check(["--token", secret]);
    assertEquals(fromArgv.inPs, true, "what the warning is about");
    assertMatch(fromArgv.log, /warning: --token shows the token to every user of this machine \(ps/);
  } finally {
    await laptop.close();
    await Deno.remove(dir, { recursive: true });
  }
});
