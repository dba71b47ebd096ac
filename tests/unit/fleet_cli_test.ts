/**
 * The fleet's commands before they touch anything: a config named with --config that does not
 * exist, and `collect --once` without servers, are usage errors with nothing created.
 * @module
 */
import { join, resolve } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { UsageError } from "../../src/errors.ts";
import { add, collectOnce, listServers, trust } from "../../src/fleet/cli.ts";
import { listAlerts } from "../../src/fleet/cli_alerts.ts";
import { fleetConfigSchema } from "../../src/fleet/config.ts";
import { type Rule, subjectKey } from "../../src/fleet/rules.ts";
import { parseConfig } from "../../src/config/load.ts";
import { FleetStore } from "../../src/fleet/store.ts";
import { acquireLock } from "../../src/deploy/lock.ts";

/** Runs `body` with FLEET_MONITOR_HOME at `<dir>/home` (not created), console.log silenced. */
async function inHome(body: (dir: string, home: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "dp-fleet-cli-" });
  const before = Deno.env.get("FLEET_MONITOR_HOME");
  const log = console.log;
  Deno.env.set("FLEET_MONITOR_HOME", join(dir, "home"));
  console.log = () => {};
  try {
    await body(dir, join(dir, "home"));
  } finally {
    console.log = log;
    if (before === undefined) Deno.env.delete("FLEET_MONITOR_HOME");
    else Deno.env.set("FLEET_MONITOR_HOME", before);
    await Deno.remove(dir, { recursive: true });
  }
}

const MAIN = resolve(import.meta.dirname!, "../../main.ts");

/** Runs the real CLI, `deploy-paradigm fleet <args>`, with `env` added: its exit code and output. */
async function fleetCli(args: string[], env: Record<string, string>) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, "fleet", ...args],
    env: { NO_COLOR: "1", FLEET_MONITOR_TOKEN: "", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  return { code: out.code, stdout: text(out.stdout), stderr: text(out.stderr) };
}

/** The files under `dir`, relative to it, sorted. */
async function filesUnder(dir: string): Promise<string[]> {
  const found: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    found.push(entry.name);
    if (entry.isDirectory) found.push(...(await filesUnder(join(dir, entry.name))).map((f) => join(entry.name, f)));
  }
  return found.sort();
}

const refusal = async (run: Promise<unknown>): Promise<UsageError> => {
  const error = await run.then(() => undefined, (error) => error);
  assert(error instanceof UsageError, `not refused: ${error}`);
  assertEquals(error.exitCode, 2);
  return error;
};

Deno.test("fleet: a config named with --config that does not exist is refused by every action; nothing created", async () => {
  await inHome(async (dir) => {
    const config = join(dir, "nonexistent.yml");
    for (
      const run of [
        () => listServers({ config }),
        () => listAlerts({ config }),
        () => collectOnce({ config }),
        () => trust({ config, name: "web1", yes: true }),
      ]
    ) {
      const error = await refusal(run());
      assertEquals(error.message, `--config ${config}: no such file`);
      assertMatch(error.suggestion ?? "", /leave --config out .*fleet add <name> <user@host> --config /);
      assertEquals(await Array.fromAsync(Deno.readDir(dir)), [], "nothing created");
    }
  });
});

Deno.test("fleet: the home's own config absent is an empty fleet (README: `fleet add` creates it)", async () => {
  await inHome(async () => {
    assertEquals(await listServers({}), 0);
    assertEquals(await listAlerts({}), 0);
  });
});

Deno.test("fleet collect --once: without servers, refused before the lock and the database are created", async () => {
  await inHome(async (dir, home) => {
    const error = await refusal(collectOnce({}));
    assertEquals(error.message, `no servers in ${join(home, "config.yml")}`);
    assertEquals(await Array.fromAsync(Deno.readDir(dir)), [], "no home, no lock, no fleet.db");
    await Deno.mkdir(home);
    await Deno.writeTextFile(join(home, "config.yml"), "servers: []\n");
    await refusal(collectOnce({ config: join(home, "config.yml") }));
    assertEquals((await Array.fromAsync(Deno.readDir(home))).map((e) => e.name), ["config.yml"]);
  });
});

Deno.test("fleet alerts: a rule edited since it was judged shows the condition its state was judged by, beside the new one", async () => {
  await inHome(async (_dir, home) => {
    const config =
      "servers:\n  - { name: web1, host: h }\nrules:\n  - { name: shop-5xx, metric: cpu.percent, above: 50 }\n";
    await Deno.mkdir(join(home, "data"), { recursive: true });
    await Deno.writeTextFile(join(home, "config.yml"), config);
    const { rules: [edited] } = parseConfig(config, fleetConfigSchema, "config.yml");
    const judged = { ...edited, threshold: 5 } as Rule;
    const subject = { server: "web1" };
    await Deno.writeTextFile(
      join(home, "data", "alerts.json"),
      JSON.stringify({
        version: 2,
        apps: {},
        servers: {},
        rules: {
          "shop-5xx": {
            [subjectKey(subject)]: { subject, state: "firing", count: 0, since: "2026-01-01T00:00:00Z", value: 14.7 },
          },
        },
        ruleDefs: { "shop-5xx": judged },
      }),
    );
    const lines: string[] = [];
    console.log = (line: string) => lines.push(line);
    assertEquals(await listAlerts({}), 0);
    assertMatch(lines[0], /^! the rules in .* are not those last judged \(changed "shop-5xx"\)/);
    const row = lines.find((line) => line.startsWith("shop-5xx")) ?? "";
    assertMatch(row, /FIRING .* cpu\.percent above 5 % \(as judged; the config now says cpu\.percent above 50 %\)$/);
  });
});

Deno.test("fleet: an interval past a day, or in an unknown unit, is refused at load where it is written (the CLI, exit 2)", async () => {
  await inHome(async (_dir, home) => {
    await Deno.mkdir(home);
    for (
      const [interval, problem] of [
        ["30000h", 'must be at most 24h (got "30000h")'],
        ["30d", '(units: ms, s, m, h) (got "30d")'],
        ["0.5s", 'must be at least 1s (got "0.5s")'],
      ]
    ) {
      await Deno.writeTextFile(join(home, "config.yml"), `servers: []\ninterval: ${interval}\n`);
      const run = await fleetCli(["list"], { FLEET_MONITOR_HOME: home });
      assertEquals(run.code, 2, run.stderr);
      assert(run.stderr.includes(`${join(home, "config.yml")}:2:11: "interval" `), run.stderr);
      assert(run.stderr.includes(problem), run.stderr);
      assertEquals(await filesUnder(home), ["config.yml"]);
    }
  });
});

Deno.test("fleet alerts: rules added to a config the collector judged without any are said to be not those last judged", async () => {
  await inHome(async (_dir, home) => {
    await Deno.mkdir(home);
    await Deno.writeTextFile(
      join(home, "config.yml"),
      "servers:\n  - { name: web1, host: h }\nrules:\n  - { name: hot, metric: cpu.percent, above: 50 }\n",
    );
    const lines: string[] = [];
    console.log = (line: string) => lines.push(line);
    assertEquals(await listAlerts({}), 0);
    assert(!lines.some((line) => line.startsWith("!")), "no collector ran: nothing was judged, nothing to say");
    // A collector ran (its database is there) with no rules: it kept no memory of any.
    (await FleetStore.open(join(home, "data", "fleet.db"))).close();
    lines.length = 0;
    assertEquals(await listAlerts({}), 0);
    assertMatch(lines[0], /^! the rules in .* are not those last judged \(added "hot"\): .*restart `fleet`/);
  });
});

Deno.test("fleet --host that is no address: a usage error about the address, token or not (the CLI, exit 2), nothing made", async () => {
  await inHome(async (dir, home) => {
    for (const token of ["", "abcdefabcdefabcdef"]) {
      const run = await fleetCli(["--host", "not a host", "--port", "46600"], {
        FLEET_MONITOR_HOME: home,
        FLEET_MONITOR_TOKEN: token,
      });
      assertEquals(run.code, 2, run.stderr);
      assertMatch(run.stderr, /^error: --host "not a host" is not an address to listen on\nhint: give an IP address/);
      assertEquals(await filesUnder(dir), []);
    }
  });
});

Deno.test("fleet list reads only: no home, no data/fleet.db made; an empty FLEET_MONITOR_HOME is refused (the CLI)", async () => {
  await inHome(async (dir, home) => {
    // HOME elsewhere (deno keeps its cache there): where an empty FLEET_MONITOR_HOME made ~/.fleet-monitor.
    const user = await Deno.makeTempDir({ prefix: "dp-fleet-cli-user-" });
    try {
      const list = await fleetCli(["list"], { FLEET_MONITOR_HOME: home, HOME: user });
      assertEquals(list.code, 0, list.stderr);
      assertEquals(await filesUnder(dir), [], "nothing made");
      await Deno.mkdir(home);
      await Deno.writeTextFile(join(home, "config.yml"), "servers:\n  - { name: web1, host: h }\n");
      assertEquals((await fleetCli(["list"], { FLEET_MONITOR_HOME: home, HOME: user })).code, 0);
      assertEquals(await filesUnder(dir), ["home", "home/config.yml"]);
      const empty = await fleetCli(["list"], { FLEET_MONITOR_HOME: "", HOME: user });
      assertEquals(empty.code, 2, empty.stderr);
      assertMatch(empty.stderr, /^error: FLEET_MONITOR_HOME is set but empty\nhint: set it to .* or unset it/);
      assert(!(await filesUnder(user)).includes(".fleet-monitor"), "no ~/.fleet-monitor");
    } finally {
      await Deno.remove(user, { recursive: true });
    }
  });
});

Deno.test("fleet: --config naming a directory, or FLEET_MONITOR_HOME naming a file, is a usage error naming it (the CLI)", async () => {
  await inHome(async (dir) => {
    const file = join(dir, "file");
    await Deno.writeTextFile(file, "");
    const directory = await fleetCli(["list", "--config", dir], { FLEET_MONITOR_HOME: join(dir, "home") });
    assertEquals(directory.code, 2, directory.stderr);
    assertMatch(directory.stderr, new RegExp(`^error: ${dir} is a directory, not a fleet config\nhint: `));
    for (const args of [["list"], ["add", "web1", "root@h"], ["alerts"], ["collect", "--once"]]) {
      const run = await fleetCli(args, { FLEET_MONITOR_HOME: file });
      assertEquals(run.code, 2, run.stderr);
      assertMatch(
        run.stderr,
        new RegExp(`^error: cannot read ${file}/config\.yml: ${file} is a file, not a directory`),
      );
      assertMatch(run.stderr, /hint: point FLEET_MONITOR_HOME at a directory/);
    }
    assertEquals(await filesUnder(dir), ["file"]);
  });
});

Deno.test("fleet add and config.yml take IPv6 literals alike: ::1, root@::1, root@[::1], 2001:db8::10 (kept bare)", async () => {
  await inHome(async (_dir, home) => {
    const targets = { a: "::1", b: "root@::1", c: "root@[::1]", d: "deploy@2001:db8::10" };
    for (const [name, target] of Object.entries(targets)) assertEquals(await add({ name, target }), 0);
    const config = await Deno.readTextFile(join(home, "config.yml"));
    const { servers } = parseConfig(config, fleetConfigSchema, "config.yml");
    const bracketed = "servers:\n  - { name: e, host: '[fe80::1]' }\n";
    servers.push(...parseConfig(bracketed, fleetConfigSchema, "config.yml").servers);
    assertEquals(servers.map((s) => `${s.user}@${s.host}`), [
      "root@::1",
      "root@::1",
      "root@::1",
      "deploy@2001:db8::10",
      "root@fe80::1",
    ]);
    const lines: string[] = [];
    console.log = (line: string) => lines.push(line);
    await listServers({});
    assertMatch(lines[1], /^a +root@\[::1\]:22 /);
    for (const host of [":", "[::1", "::1]x", ":::g"]) {
      const error = await refusal(add({ name: "x", target: host }));
      assertMatch(error.message, /must be a host name, an IPv4 address, or an IPv6 address such as ::1/);
    }
  });
});

Deno.test("fleet: an identityFile in config.yml that is absent, a directory or a public key is refused at load where it is written (the CLI)", async () => {
  await inHome(async (dir, home) => {
    await Deno.mkdir(home);
    await Deno.writeTextFile(join(dir, "key.pub"), "ssh-ed25519 AAAAC3Nza me@laptop\n");
    await Deno.writeTextFile(
      join(home, "config.yml"),
      "servers:\n  - { name: a, host: h, identityFile: /nonexistent }\n" +
        `  - { name: b, host: h, identityFile: ${dir} }\n  - { name: c, host: h, identityFile: ${dir}/key.pub }\n`,
    );
    const before = await filesUnder(dir);
    for (const action of ["list", "alerts"]) {
      const run = await fleetCli([action], { FLEET_MONITOR_HOME: home });
      assertEquals(run.code, 2, run.stderr);
      const config = join(home, "config.yml");
      assertEquals(run.stderr.split("\n").slice(1, 4), [
        `  ${config}:2:25: "servers.0.identityFile" is no such file (got "/nonexistent")`,
        `  ${config}:3:25: "servers.1.identityFile" is a directory, not a key file (got "${dir}")`,
        `  ${config}:4:25: "servers.2.identityFile" is a public key: give the private key (the same name without ` +
        `.pub) (got "${dir}/key.pub")`,
      ]);
      assertMatch(run.stderr, /hint: give the private key ssh uses for this server/);
      assertEquals(await filesUnder(dir), before);
    }
  });
});

Deno.test("fleet remove: out of config.yml (comments kept), its mirror, host keys and overview rows gone; others kept (the CLI)", async () => {
  await inHome(async (_dir, home) => {
    const env = { FLEET_MONITOR_HOME: home };
    for (const args of [["web1", "root@10.0.0.1"], ["web2", "deploy@10.0.0.2"], ["twin", "root@10.0.0.2"]]) {
      const added = await fleetCli(["add", ...args], env);
      assertEquals(added.code, 0, added.stderr);
    }
    const configPath = join(home, "config.yml");
    await Deno.writeTextFile(configPath, "# my fleet\n" + await Deno.readTextFile(configPath));
    for (const name of ["web1", "web2"]) {
      await Deno.mkdir(join(home, "mirror", name, "opt"), { recursive: true });
      await Deno.writeTextFile(join(home, "mirror", name, "opt", "status.json"), "{}");
    }
    const keys = "10.0.0.1 ssh-ed25519 AAAAone\n10.0.0.1 ecdsa-sha2-nistp256 AAAAone2\n10.0.0.2 ssh-ed25519 AAAAtwo\n";
    await Deno.writeTextFile(join(home, "known_hosts"), keys, { mode: 0o600 });
    await Deno.mkdir(join(home, "data"), { recursive: true });
    const store = await FleetStore.open(join(home, "data", "fleet.db"));
    for (const name of ["web1", "web2"]) store.recordContact(name, name, { at: 1, ok: true, durationMs: 1, bytes: 1 });
    store.close();
    const rows = async () => {
      const reopened = await FleetStore.open(join(home, "data", "fleet.db"));
      try {
        return (reopened.db.prepare("SELECT name FROM servers ORDER BY name").all() as { name: string }[])
          .map((row) => row.name);
      } finally {
        reopened.close();
      }
    };

    const removed = await fleetCli(["remove", "web1"], env);
    assertEquals(removed.code, 0, removed.stderr);
    assertMatch(removed.stdout, /✓ removed web1 \(root@10\.0\.0\.1\) from .*config\.yml/);
    assertMatch(removed.stdout, /its mirror, 2 host keys and its status, certificates and metrics are gone/);
    const config = await Deno.readTextFile(configPath);
    assert(config.startsWith("# my fleet\n"), config);
    assertEquals(parseConfig(config, fleetConfigSchema, "config.yml").servers.map((s) => s.name), ["web2", "twin"]);
    assertEquals(await filesUnder(join(home, "mirror")), ["web2", "web2/opt", "web2/opt/status.json"]);
    assertEquals(await Deno.readTextFile(join(home, "known_hosts")), "10.0.0.2 ssh-ed25519 AAAAtwo\n");
    assertEquals((await Deno.stat(join(home, "known_hosts"))).mode! & 0o777, 0o600);
    assertEquals(await rows(), ["web2"]);
    // twin shares web2's host and port: removing web2 keeps the key twin still needs.
    const second = await fleetCli(["remove", "web2"], env);
    assertEquals(second.code, 0, second.stderr);
    assertMatch(second.stdout, /its mirror, 0 host keys/);
    assertEquals(await Deno.readTextFile(join(home, "known_hosts")), "10.0.0.2 ssh-ed25519 AAAAtwo\n");

    // A name not there: exit 2, the servers named, nothing changed.
    const before = [await Deno.readTextFile(configPath), await filesUnder(home)];
    const unknown = await fleetCli(["remove", "web9"], env);
    assertEquals(unknown.code, 2, unknown.stderr);
    assertMatch(unknown.stderr, /no server "web9" in \S+config\.yml/);
    assertMatch(unknown.stderr, /its servers: twin/);
    assertEquals([await Deno.readTextFile(configPath), await filesUnder(home)], before);
    // Nor in a home that does not exist yet: no home, no lock made.
    const elsewhere = await fleetCli(["remove", "web9"], { FLEET_MONITOR_HOME: join(home, "none") });
    assertEquals(elsewhere.code, 2, elsewhere.stderr);
    assertMatch(elsewhere.stderr, /no server "web9" in \S+config\.yml/);
    assertEquals(await Deno.stat(join(home, "none")).then(() => "made", () => "absent"), "absent");
    const usage = await fleetCli(["remove"], env);
    assertEquals(usage.code, 2);
    assertMatch(usage.stderr, /usage: deploy-paradigm fleet remove <server>/);
    // A collector running on the home would pull it again: refused until it stops.
    const held = await acquireLock(join(home, ".collector.lock"), { pid: Deno.pid, commit: "fleet collector" }, () => {
      throw new Error("the lock is taken");
    });
    try {
      const running = await fleetCli(["remove", "twin"], env);
      assertEquals(running.code, 2, running.stderr);
      assertMatch(running.stderr, /another fleet collector is running on \S+ \(pid \d+\)/);
      assertMatch(running.stderr, /stop it \(Ctrl-C\), remove the server, then start it again/);
      assertEquals([await Deno.readTextFile(configPath), await filesUnder(home)], before);
    } finally {
      held.release();
    }
  });
});

Deno.test("fleet remove: a known_hosts line that names another host too loses only the server's name (the CLI)", async () => {
  await inHome(async (_dir, home) => {
    const env = { FLEET_MONITOR_HOME: home };
    for (const args of [["web1", "root@10.0.0.1"], ["web3", "root@10.0.0.3", "--ssh-port", "2222"]]) {
      const added = await fleetCli(["add", ...args], env);
      assertEquals(added.code, 0, added.stderr);
    }
    // As a user may write it: names shared by hosts, tabs, a comment, markers, the same host on another port.
    const line = {
      shared: "10.0.0.9,10.0.0.1 ssh-ed25519 AAAAshared",
      tabbed: "10.0.0.1,10.0.0.9,web9\tecdsa-sha2-nistp256 AAAAtabbed me@laptop",
      own: "10.0.0.1 ssh-rsa AAAAone",
      comment: "# 10.0.0.1 ssh-ed25519 AAAAcomment",
      ca: "@cert-authority 10.0.0.1,*.example.com ssh-ed25519 AAAAca",
      revoked: "@revoked 10.0.0.1 ssh-ed25519 AAAArevoked",
      port: "[10.0.0.1]:2222,10.0.0.7 ssh-ed25519 AAAAport",
      prefix: "10.0.0.10 ssh-ed25519 AAAAten",
      web3: "[10.0.0.3]:2222,10.0.0.3 ssh-ed25519 AAAAthree",
    };
    const path = join(home, "known_hosts");
    await Deno.writeTextFile(path, Object.values(line).join("\n") + "\n\n", { mode: 0o600 });
    const removed = await fleetCli(["remove", "web1"], env);
    assertEquals(removed.code, 0, removed.stderr);
    assertMatch(removed.stdout, /its mirror, 3 host keys and/);
    const kept = [
      "10.0.0.9 ssh-ed25519 AAAAshared",
      "10.0.0.9,web9\tecdsa-sha2-nistp256 AAAAtabbed me@laptop",
      line.comment,
      line.ca,
      line.revoked,
      line.port,
      line.prefix,
      line.web3,
    ];
    assertEquals(await Deno.readTextFile(path), kept.join("\n") + "\n\n");
    assertEquals((await Deno.stat(path)).mode! & 0o777, 0o600);
    // Another port: its bracketed name only; 10.0.0.3 on port 22 is another host's.
    const third = await fleetCli(["remove", "web3"], env);
    assertEquals(third.code, 0, third.stderr);
    assertMatch(third.stdout, /its mirror, 1 host key and/);
    assertEquals(
      await Deno.readTextFile(path),
      [...kept.slice(0, -1), "10.0.0.3 ssh-ed25519 AAAAthree"].join("\n") + "\n\n",
    );
  });
});

Deno.test("fleet add while a collector runs on the home says it pulls the new server only once restarted (the CLI)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dp-fleet-cli-" });
  const home = join(dir, "home");
  const env = { FLEET_MONITOR_HOME: home };
  try {
    // No collector: the usual next steps, nothing about one.
    const alone = await fleetCli(["add", "web1", "root@127.0.0.1"], env);
    assertEquals(alone.code, 0, alone.stderr);
    assertMatch(alone.stdout, /next: check its host key with `deploy-paradigm fleet trust web1`, then/);
    assert(!alone.stdout.includes("collector"), alone.stdout);
    // A collector reads config.yml when it starts: it would never pull web2, and `collect --once` is refused.
    const held = await acquireLock(join(home, ".collector.lock"), { pid: Deno.pid, commit: "fleet collector" }, () => {
      throw new Error("the lock is taken");
    });
    try {
      const running = await fleetCli(["add", "web2", "root@127.0.0.2"], env);
      assertEquals(running.code, 0, running.stderr);
      assertMatch(running.stdout, /✓ added web2 \(root@127\.0\.0\.2\)/);
      assertMatch(
        running.stdout,
        new RegExp(
          `! the fleet collector running on ${home} \\(pid ${Deno.pid}\\) pulls the servers it started with: ` +
            "restart it \\(Ctrl-C, then `deploy-paradigm fleet`\\) to pull web2",
        ),
      );
      assert(!running.stdout.includes("fleet collect --once"), running.stdout);
      const local = await fleetCli(["add", "here", "local"], env);
      assertMatch(local.stdout, /! the fleet collector running on .* restart it .* to pull here/);
    } finally {
      held.release();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("fleet add <name> local refuses ssh's options (--ssh-port, --identity, a user@): local is pulled without ssh; nothing made (the CLI)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dp-fleet-cli-" });
  const home = join(dir, "home");
  const env = { FLEET_MONITOR_HOME: home };
  try {
    const key = join(dir, "id_ed25519");
    await Deno.writeTextFile(key, "-----BEGIN OPENSSH PRIVATE KEY-----\n-----END OPENSSH PRIVATE KEY-----\n");
    for (
      const [args, named] of [
        [["here", "local", "--ssh-port", "2222"], "--ssh-port"],
        [["here", "local", "--identity", key], "--identity"],
        [["here", "admin@local"], "admin@"],
      ] as const
    ) {
      const refused = await fleetCli(["add", ...args], env);
      assertEquals(refused.code, 2, refused.stdout + refused.stderr);
      assertMatch(refused.stderr, new RegExp(`^error: fleet add: ${named} is for ssh; local is this machine`));
      assertEquals(await Deno.stat(home).then(() => true, () => false), false, "no home made");
    }
    const local = await fleetCli(["add", "here", "local", "--netdata", "http://127.0.0.1:19999"], env);
    assertEquals(local.code, 0, local.stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
