/**
 * `setup`, end to end: non-interactive with flags, idempotent, refusing to guess without a
 * terminal, and interactive in a real TTY (tmux), followed by a real push through the proxy it
 * started under PM2, which keeps the address it listens on unless told another. Domains: `--domain` writes them; a domain another app has is refused by
 * setup and by a deploy, before anything changes.
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { AppRepo } from "../helpers/apps.ts";
import { BIN, freePort, get, run, type TestServer, withServer } from "../helpers/server.ts";
import { releases, snapshot, status } from "../helpers/state.ts";
import { envWords, Terminal } from "../helpers/terminal.ts";
import { until } from "../helpers/time.ts";
import { parseConfig } from "../../src/config/load.ts";
import { control } from "../../src/proxy/client.ts";
import { serverConfigSchema } from "../../src/config/schema.ts";

Deno.test("setup with flags: config with slots, .env 0600, repo and hook, the proxy under pm2; idempotent", async () => {
  await withServer(async (server) => {
    const port = freePort();
    const args = ["setup", "web", "--port", String(port), "--manager", "pm2", "--proxy-host", "127.0.0.1", "--yes"];
    const first = await server.cli(args);
    assertEquals(first.code, 0, first.output);
    const paths = server.paths("web");
    const lines = first.stdout.trim().split("\n");
    assertMatch(lines.at(-2)!, new RegExp(`^git remote add production \\S+@\\S+:${paths.repo}$`));
    assertEquals(lines.at(-1), "git push production main");
    const config = await Deno.readTextFile(paths.config);
    assertMatch(config, new RegExp(`port: ${port}\\nmanager: pm2\\nenv: production\\nstrategy: blue-green\\nslots:`));
    assertEquals((await Deno.stat(paths.envFile("production"))).mode! & 0o777, 0o600);
    assertMatch(await Deno.readTextFile(join(paths.repo, "hooks", "proc-receive")), new RegExp(BIN));

    // A push deploys through the proxy setup started.
    const repo = await AppRepo.create(server, "web", paths.repo);
    await repo.python("web", "v1");
    await repo.pushOk();
    assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: "v1" });

    // Again: the same files, the releases, .env and repository kept; a new env value applies.
    await Deno.writeTextFile(paths.envFile("production"), "SECRET=kept-as-is\n", { mode: 0o600 });
    const again = await server.cli([...args.slice(0, -1), "--env", "production", "--yes"]);
    assertEquals(again.code, 0, again.output);
    assertMatch(again.stdout, /✓ the proxy runs/);
    assertEquals(await Deno.readTextFile(paths.envFile("production")), "SECRET=kept-as-is\n");
    assertEquals((await releases(server, "web")).length, 1);
    assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: "v1" });
    assert((await Deno.readTextFile(paths.config)).includes("slots:"), "slots are kept");

    // The proxy keeps the address it was given: running, or stopped and started again by setup.
    const listensOn = async () => (await control(server.prefix, { op: "status" })).host;
    const other = ["setup", "api", "--port", String(freePort()), "--manager", "pm2", "--yes"];
    const kept = await server.cli(other);
    assertEquals(kept.code, 0, kept.output);
    assertMatch(kept.stdout, /✓ the proxy runs \(on 127\.0\.0\.1\)/);
    assertEquals(await listensOn(), "127.0.0.1");
    assertEquals((await run(["pm2", "stop", "deploy-paradigm-proxy"], { env: server.env })).code, 0);
    const restarted = await server.cli(other);
    assertEquals(restarted.code, 0, restarted.output);
    assertEquals(await listensOn(), "127.0.0.1", "not every interface (0.0.0.0)");
    // (A proxy just started answers its socket before it has opened every app's port.)
    const V1 = JSON.stringify({ status: 200, body: "v1" });
    const serves = (host: string) =>
      until(5_000, `v1 on ${host}:${port}`, async () => JSON.stringify(await get(`http://${host}:${port}/`)) === V1);
    await serves("127.0.0.1");
    // Another address asked for: the running proxy moves there.
    const moved = await server.cli([...other, "--proxy-host", "127.0.0.2"]);
    assertEquals(moved.code, 0, moved.output);
    assertMatch(moved.stdout, /! the proxy listens on 127\.0\.0\.1: restarting it on 127\.0\.0\.2/);
    assertEquals(await listensOn(), "127.0.0.2");
    await serves("127.0.0.2");
    // An address this machine does not have (192.0.2.1, TEST-NET-1) is refused before anything
    // changes: the running proxy is not restarted there, where it could not listen (every app down).
    const before = await Deno.readTextFile(paths.config);
    const elsewhere = await server.cli([...args.slice(0, -3), "--proxy-host", "192.0.2.1", "--yes"]);
    assertEquals(elsewhere.code, 2, elsewhere.output);
    assertMatch(elsewhere.stderr, /--proxy-host 192\.0\.2\.1 is not an address of this machine/);
    assertEquals(await listensOn(), "127.0.0.2");
    await serves("127.0.0.2");
    assertEquals(await Deno.readTextFile(paths.config), before);
  });
});

Deno.test("setup without a terminal and without values says which flags it needs, and writes nothing", async () => {
  await withServer(async (server) => {
    await Deno.mkdir(server.prefix, { recursive: true });
    const before = await snapshot(server);
    const missing = await server.cli(["setup", "api"]);
    assertEquals(missing.code, 2);
    assertMatch(missing.stderr, /setup needs --port and --manager when it cannot ask \(no terminal\)/);
    assertMatch(missing.stderr, /hint: pass them, or --yes to take the defaults \(port 8000, manager /);
    const one = await server.cli(["setup", "api", "--manager", "pm2"]);
    assertEquals(one.code, 2);
    assertMatch(one.stderr, /setup needs --port when it cannot ask \(no terminal\)\nhint: pass it, or --yes /);
    const bad = await server.cli(["setup", "Bad Name", "--yes"]);
    assertEquals(bad.code, 2);
    assertMatch(bad.stderr, /"Bad Name" is not a valid app name/);
    // The tool's own services are named so: an app with that name would replace the proxy's process.
    const reserved = await server.cli([
      "setup",
      "deploy-paradigm-proxy",
      "--port",
      "8080",
      "--manager",
      "pm2",
      "--yes",
    ]);
    assertEquals(reserved.code, 2, reserved.output);
    assertMatch(reserved.stderr, /the app name "deploy-paradigm-proxy" is reserved: the tool's own services are named/);
    const env = await server.cli(["setup", "api", "--port", "8080", "--manager", "pm2", "--env", "../../etc", "--yes"]);
    assertEquals(env.code, 2);
    assertMatch(env.stderr, /--env must be a name such as production/);
    const port = await server.cli(["setup", "api", "--port", "70000", "--manager", "pm2"]);
    assertEquals(port.code, 2);
    assertMatch(port.stderr, /--port must be a whole number from 1 to 65535/);
    for (
      const args of [["setup", "api", "--port", "8080", "--manager", "pm2", "--proxy-host", "not an ip"], [
        "proxy",
        "--host",
        "[::1]",
      ]]
    ) {
      const host = await server.cli(args);
      assertEquals(host.code, 2, host.output);
      assertMatch(
        host.stderr,
        /^error: --(proxy-)?host must be an IP address to listen on \(got "[^"]+"\)\nhint: 0\.0\.0\.0/,
      );
    }
    // No command at all: the help, and a line saying what is missing.
    const none = await server.cli([]);
    assertEquals(none.code, 2, none.output);
    assertMatch(none.stdout, /^deploy-paradigm \S+: safe git-push deploys/);
    assertEquals(none.stderr, "error: deploy-paradigm needs a command (listed above)\n");
    assertEquals(await snapshot(server), before);
    // Another tool's proc-receive hook in the app's repository: a configuration to sort out first, exit 2, nothing written.
    const hooks = join(server.paths("api").repo, "hooks");
    await Deno.mkdir(hooks, { recursive: true });
    await Deno.writeTextFile(join(hooks, "proc-receive"), "#!/bin/sh\nexec other-tool\n");
    const withHook = await snapshot(server);
    const foreign = await server.cli(["setup", "api", "--port", String(freePort()), "--manager", "pm2", "--yes"]);
    assertEquals(foreign.code, 2, foreign.output);
    assertMatch(
      foreign.stderr,
      /proc-receive is another tool's proc-receive hook\nhint: proc-receive hooks cannot be chained/,
    );
    assertEquals(await snapshot(server), withHook);
  });
});

Deno.test("setup in a real terminal asks for port, manager, environment and domains, shows a summary, then writes", async () => {
  await withServer(async (server) => {
    assertEquals((await setupRestart(server, "other", "--domain", "taken.example.com")).code, 0);
    const port = freePort();
    const env = envWords(server.env);
    const term = await Terminal.start(
      "dp-setup",
      `env ${env} ${BIN} setup shop --proxy-host 127.0.0.1; echo EXIT=$?; sleep 30`,
      { width: 160, height: 40 },
    );
    const waitFor = (pattern: RegExp) => term.waitFor(pattern);
    try {
      await waitFor(/Public port of the app/);
      await term.keys("C-u", String(port), "Enter");
      const manager = await waitFor(/Process manager/);
      assertMatch(manager, /systemd does not run here|pm2/);
      await term.keys("Enter"); // pm2, the only choice here
      await waitFor(/Environment/);
      await term.keys("C-u", "staging", "Enter");
      await waitFor(/Domains, comma-separated/);
      await term.keys("C-u", "shop.example.com, https://www.shop.example.com", "Enter");
      await waitFor(/must be a host name, not a URL: write "www\.shop\.example\.com"/); // asked again
      await term.keys("C-u", "shop.example.com, taken.example.com", "Enter");
      await waitFor(/cannot have the domain taken\.example\.com: app "other"/);
      await term.keys("C-u", "Shop.example.com, www.shop.example.com", "Enter");
      const summary = await waitFor(/Write all this\?/);
      assertMatch(summary, new RegExp(`port ${port}, pm2, env staging, blue-green`));
      assertMatch(summary, /domains: shop\.example\.com, www\.shop\.example\.com/);
      await term.keys("y", "Enter");
      const done = await waitFor(/EXIT=\d+/);
      assertMatch(done, /EXIT=0/);
      assertMatch(done, /git push production main/);
    } finally {
      await term.close();
    }
    const paths = server.paths("shop");
    assertMatch(await Deno.readTextFile(paths.config), new RegExp(`port: ${port}\\nmanager: pm2\\nenv: staging`));
    assertMatch(await Deno.readTextFile(paths.config), /domains:\n {2}- shop\.example\.com\n {2}- www\.shop/);
    assertEquals((await Deno.stat(paths.envFile("staging"))).mode! & 0o777, 0o600);
  });
});

Deno.test("setup with a repository URL seeds the bare repository with git clone --bare", async () => {
  await withServer(async (server) => {
    const origin = join(server.root, "origin.git");
    await run(["git", "init", "--quiet", "--bare", "-b", "main", origin]);
    const repo = await AppRepo.create(server, "seed", origin);
    const sha = await repo.python("seed", "v1");
    await repo.pushOk(); // into origin: a plain repository, no hook
    const result = await server.cli([
      "setup",
      "seed",
      origin,
      "--port",
      String(freePort()),
      "--manager",
      "pm2",
      "--strategy",
      "restart",
      "--yes",
    ]);
    assertEquals(result.code, 0, result.output);
    const head = await run(["git", "--git-dir", server.paths("seed").repo, "rev-parse", "main"]);
    assertEquals(head.stdout.trim(), sha);
    // A push of that commit would change nothing: the last line is how to deploy it, and it does.
    const last = result.stdout.trim().split("\n").at(-1)!;
    assertEquals(last, `deploy-paradigm execute ${server.paths("seed").repo} ${sha}`);
    assertMatch(result.stdout, /holds main at [0-9a-f]{7} \(cloned\): a push deploys only a newer commit/);
    const deployed = await server.cli(last.split(" ").slice(1));
    assertEquals(deployed.code, 0, deployed.output);
    assertEquals((await status(server, "seed")).commit, sha);
  });
});

Deno.test("setup with a repository URL it cannot clone fails and leaves nothing; with a good one it then works", async () => {
  await withServer(async (server) => {
    await Deno.mkdir(server.prefix, { recursive: true });
    const before = await snapshot(server);
    const flags = ["--port", String(freePort()), "--manager", "pm2", "--strategy", "restart", "--yes"];
    const bad = await server.cli(["setup", "seed", join(server.root, "nowhere.git"), ...flags]);
    assert(bad.code !== 0, bad.output);
    assertMatch(bad.stderr, /git clone .*exited with code 128/);
    assertEquals(await snapshot(server), before);
    assertEquals(await Array.fromAsync(Deno.readDir(server.prefix)), [], "no var/repos/ either");

    const origin = join(server.root, "origin.git");
    await run(["git", "init", "--quiet", "--bare", "-b", "main", origin]);
    const repo = await AppRepo.create(server, "seed", origin);
    const sha = await repo.python("seed", "v1");
    await repo.pushOk(); // into origin: a plain repository, no hook
    const good = await server.cli(["setup", "seed", origin, ...flags]);
    assertEquals(good.code, 0, good.output);
    const head = await run(["git", "--git-dir", server.paths("seed").repo, "rev-parse", "main"]);
    assertEquals(head.stdout.trim(), sha);
    assertEquals((await Array.fromAsync(Deno.readDir(join(server.prefix, "var", "repos")))).map((e) => e.name), [
      "seed.git",
    ]);
  });
});

/** `setup <app>` under restart and pm2 (no proxy, no process), with `extra` flags. */
function setupRestart(server: TestServer, app: string, ...extra: string[]) {
  return server.cli([
    "setup",
    app,
    "--port",
    String(freePort()),
    "--manager",
    "pm2",
    "--strategy",
    "restart",
    "--yes",
    ...extra,
  ]);
}

Deno.test("setup --domain writes the app's domains; another app's domain is refused, nothing changed", async () => {
  await withServer(async (server) => {
    const shop = await setupRestart(
      server,
      "shop",
      "--domain",
      "Shop.Example.com",
      "--domain",
      "www.shop.example.com,*.cdn.example.com",
    );
    assertEquals(shop.code, 0, shop.output);
    const shopConfig = server.paths("shop").config;
    const config = parseConfig(await Deno.readTextFile(shopConfig), serverConfigSchema, shopConfig);
    assertEquals(config.domains, ["shop.example.com", "www.shop.example.com", "*.cdn.example.com"]);
    assertEquals((await Deno.stat(shopConfig)).mode! & 0o777, 0o600, "config.yml holds notify URLs: root's only");
    assertEquals((await Deno.stat(server.paths("shop").dir)).mode! & 0o022, 0, "the app dir is not group-writable");

    // A new app asking for one of them: exit 2 naming both apps and the domain; no file written.
    const before = await snapshot(server);
    const blog = await setupRestart(server, "blog", "--domain", "blog.example.com", "--domain", "WWW.shop.example.com");
    assertEquals(blog.code, 2, blog.output);
    assertMatch(
      blog.stderr,
      new RegExp(`app "blog" cannot have the domain www\\.shop\\.example\\.com: app "shop" \\(${shopConfig}\\) has it`),
    );
    assertEquals(await snapshot(server), before);

    // An app already set up keeps its config.yml byte for byte (and its mtime).
    assertEquals((await setupRestart(server, "blog", "--domain", "blog.example.com")).code, 0);
    const blogConfig = server.paths("blog").config;
    const bytes = await Deno.readFile(blogConfig);
    const mtime = (await Deno.stat(blogConfig)).mtime;
    const again = await setupRestart(server, "blog", "--domain", "*.cdn.example.com");
    assertEquals(again.code, 2, again.output);
    assertMatch(again.stderr, /app "blog" cannot have the domain \*\.cdn\.example\.com: app "shop"/);
    assertEquals(await Deno.readFile(blogConfig), bytes);
    assertEquals((await Deno.stat(blogConfig)).mtime, mtime);

    // Setup again without --domain keeps the domains; --domain '' clears them.
    assertEquals((await setupRestart(server, "shop")).code, 0);
    assertMatch(await Deno.readTextFile(shopConfig), /domains:\n {2}- shop\.example\.com\n/);
    assertEquals((await setupRestart(server, "shop", "--domain", "")).code, 0);
    assert(!/^domains:/m.test(await Deno.readTextFile(shopConfig)), "the domains are gone");
  });
});

Deno.test("setup --domain refuses a bad host name with what to write instead, and writes nothing", async () => {
  await withServer(async (server) => {
    await Deno.mkdir(server.prefix, { recursive: true });
    const before = await snapshot(server);
    const bad = await setupRestart(server, "web", "--domain", "https://example.com/", "--domain", "a_b.example.com");
    assertEquals(bad.code, 2, bad.output);
    assertMatch(
      bad.stderr,
      /--domain: "https:\/\/example\.com\/" must be a host name, not a URL: write "example\.com"; "a_b\.example\.com" may hold only letters/,
    );
    assertEquals(await snapshot(server), before);
  });
});

Deno.test("a deploy whose config.yml claims another app's domain fails first: exit 2, both apps named", async () => {
  await withServer(async (server) => {
    assertEquals((await setupRestart(server, "shop", "--domain", "shop.example.com")).code, 0);
    assertEquals((await setupRestart(server, "blog")).code, 0);
    const blog = server.paths("blog");
    await Deno.writeTextFile(blog.config, "domains: [Shop.example.com]\n", { append: true });
    const repo = await AppRepo.create(server, "blog", blog.repo);
    await repo.python("blog", "v1");
    const before = await snapshot(server);
    const push = await repo.push();
    assert(push.code !== 0, push.output);
    assertMatch(
      push.output,
      new RegExp(
        `app "blog" \\(${blog.config}\\) cannot have the domain shop\\.example\\.com: app "shop" \\(${
          server.paths("shop").config
        }\\) has it already`,
      ),
    );
    assertEquals(await snapshot(server), before, "nothing built or written");
    assertEquals(await releases(server, "blog"), []);
  });
});

Deno.test("setup refuses a port another app has (its public port or a slot's) and one that is not plain digits; nothing changed", async () => {
  await withServer(async (server) => {
    const port = freePort();
    assertEquals((await server.cli(["setup", "shop", "--port", String(port), "--manager", "pm2", "--yes"])).code, 0);
    const shop = parseConfig(await Deno.readTextFile(server.paths("shop").config), serverConfigSchema, "config.yml");
    const before = await snapshot(server);
    // The proxy listens on shop's port: refused as shop's, not first warned about as in use.
    for (const taken of [port, shop.slots!.green]) {
      const clash = await server.cli(["setup", "blog", "--port", String(taken), "--manager", "pm2", "--yes"]);
      assertEquals(clash.code, 2, clash.output);
      assert(!clash.stdout.includes("in use"), clash.stdout);
      assertMatch(
        clash.stderr,
        new RegExp(
          `app "blog" cannot have port ${taken}: app "shop" has it already \\(${server.paths("shop").config}\\)`,
        ),
      );
      assertMatch(clash.stderr, /hint: a port belongs to one app: choose another one/);
    }
    for (const odd of ["0x5209", "2.1e4", " 21102", "21102.0"]) {
      const bad = await server.cli(["setup", "blog", "--port", odd, "--manager", "pm2", "--yes"]);
      assertEquals(bad.code, 2, `${odd}: ${bad.output}`);
      assertMatch(bad.stderr, /--port must be a whole number from 1 to 65535/);
    }
    assertEquals(await snapshot(server), before);
  });
});

Deno.test("setup refuses proxy.yml's shared http:/https: port as an app's port, nothing changed; status flags a proxy.yml that names an app's port", async () => {
  await withServer(async (server) => {
    const [http, https, own] = [freePort(), freePort(), freePort()];
    const proxyYml = join(server.prefix, "opt", "deployments", "proxy.yml");
    await Deno.mkdir(join(proxyYml, ".."), { recursive: true });
    await Deno.writeTextFile(proxyYml, `http: ${http}\nhttps: ${https}\n`);
    const before = await snapshot(server);
    for (const [key, port, at] of [["http", http, "1:1"], ["https", https, "2:1"]] as const) {
      const clash = await server.cli(["setup", "tst-py", "--port", String(port), "--manager", "pm2", "--yes"]);
      assertEquals(clash.code, 2, clash.output);
      assert(!clash.stdout.includes("in use"), clash.stdout);
      assertMatch(
        clash.stderr,
        new RegExp(`app "tst-py" cannot have port ${port}: it is proxy.yml's ${key}: port \\(${proxyYml}:${at}\\)`),
      );
      assertMatch(clash.stderr, new RegExp(`hint: choose another port for the app .* or give ${key}: in proxy.yml`));
    }
    assertEquals(await snapshot(server), before);
    // The reverse: proxy.yml edited to an app's port (status flags it, at proxy.yml's key).
    await server.setupApp("tst-py", { port: own, strategy: "restart" });
    await Deno.writeTextFile(proxyYml, `https: ${https}\nhttp: ${own}\n`);
    const table = await server.cli(["status"]);
    assertEquals(table.code, 1, table.output);
    assertMatch(
      table.stdout,
      new RegExp(
        `\\n! proxy: ${proxyYml}:2:1: "http" is ${own}, a port of app "tst-py" \\(${server.paths("tst-py").config}\\)`,
      ),
    );
  });
});

Deno.test("setup --slots gives the slots their ports, used by the deploy; bad values, the app's port, another app's port or strategy restart are refused, nothing changed", async () => {
  await withServer(async (server) => {
    const [port, blue, green] = [freePort(), freePort(), freePort()];
    const base = ["setup", "shop", "--port", String(port), "--manager", "pm2", "--yes"];
    const given = await server.cli([...base, "--slots", `${blue},${green}`]);
    assertEquals(given.code, 0, given.output);
    const slots = async (app = "shop") =>
      parseConfig(await Deno.readTextFile(server.paths(app).config), serverConfigSchema, "config.yml").slots;
    assertEquals(await slots(), { blue, green });
    assertEquals((await server.cli(base)).code, 0, "again without --slots");
    assertEquals(await slots(), { blue, green }, "kept");
    const repo = await AppRepo.create(server, "shop", server.paths("shop").repo);
    await repo.python("shop", "v1");
    await repo.pushOk();
    assertEquals((await status(server, "shop")).slotPort, blue);
    assertEquals(
      await get(`http://127.0.0.1:${blue}/`),
      { status: 200, body: "v1" },
      "the blue slot answers on its port",
    );

    const before = await snapshot(server);
    const refusals: [string[], RegExp][] = [
      [[...base, "--slots", `${blue},${blue}`], /--slots must be two different ports, blue's then green's/],
      [[...base, "--slots", String(blue)], /--slots must be two different ports/],
      [[...base, "--slots", "0x10,21002"], /--slots must be two different ports/],
      [
        [...base, "--slots", `${port},${green}`],
        new RegExp(`port ${port} is the blue slot's in --slots: the app's public port must be another`),
      ],
      // Other slots for an app that serves from its slots: refused (its serving slot is found by its port).
      [
        [...base, "--slots", `${freePort()},${freePort()}`],
        new RegExp(
          `--slots: shop serves from its slots \\(blue ${blue}, green ${green}\\) already\\n` +
            "hint: slots are set before the first deploy",
        ),
      ],
      // The public port moved onto one of the slots config.yml has: the flag is named, not config.yml.
      [
        ["setup", "shop", "--port", String(green), "--manager", "pm2", "--yes"],
        new RegExp(
          `port ${green} is the green slot's in config\\.yml's slots: the app's public port must be another\\n` +
            "hint: choose another --port, or give the slots other ports with --slots B,G",
        ),
      ],
      [
        [
          "setup",
          "blog",
          "--port",
          String(freePort()),
          "--manager",
          "pm2",
          "--yes",
          "--slots",
          `${freePort()},${green}`,
        ],
        new RegExp(`app "blog" \\(--slots, its green slot\\) cannot have port ${green}: app "shop" has it already`),
      ],
      [
        [...base, "--strategy", "restart", "--slots", `${freePort()},${freePort()}`],
        /--slots is for strategy blue-green/,
      ],
    ];
    for (const [args, expected] of refusals) {
      const refused = await server.cli(args);
      assertEquals(refused.code, 2, `${args.join(" ")}: ${refused.output}`);
      assertMatch(refused.stderr, expected);
    }
    assertEquals(await snapshot(server), before);
  });
});

Deno.test("setup refuses a config.yml it cannot read, or whose kept keys are invalid (file:line:col, how to fix); nothing changed", async (t) => {
  await withServer(async (server) => {
    assertEquals((await setupRestart(server, "shop")).code, 0);
    const config = server.paths("shop").config;
    const written = await Deno.readTextFile(config);
    const at = written.split("\n").length; // the line the first appended one gets
    const cases = [
      {
        name: "not YAML",
        appended: "hsts: false\nnotify:\n\t- https://hooks.example.com/x\n",
        problems: [new RegExp(`Cannot read ${config}:\\n  ${config}:\\d+:\\d+: YAML syntax error`)],
      },
      {
        name: "keys a deploy would refuse",
        appended: "bogus: 1\nhsts: maybe\n",
        problems: [
          new RegExp(`${config}:${at}:1: "bogus" is not a known key`),
          new RegExp(`${config}:${at + 1}:7: "hsts" must be`),
        ],
      },
    ];
    for (const { name, appended, problems } of cases) {
      await t.step(name, async () => {
        await Deno.writeTextFile(config, written + appended);
        const before = await snapshot(server);
        const again = await server.cli(["setup", "shop", "--port", String(freePort()), "--manager", "pm2", "--yes"]);
        assertEquals(again.code, 2, again.output);
        for (const problem of problems) assertMatch(again.stderr, problem);
        assertMatch(again.stderr, /hint: fix \S+config\.yml \(setup keeps what it holds/);
        assertEquals(await Deno.readTextFile(config), written + appended);
        assertEquals(await snapshot(server), before);
      });
    }
  });
});

Deno.test("a deploy whose config.yml has a serving app's port fails first: exit 2, both apps named", async () => {
  await withServer(async (server) => {
    const port = freePort();
    assertEquals((await server.cli(["setup", "shop", "--port", String(port), "--manager", "pm2", "--yes"])).code, 0);
    const shopRepo = await AppRepo.create(server, "shop", server.paths("shop").repo);
    await shopRepo.python("shop", "v1");
    await shopRepo.pushOk();
    assertEquals((await setupRestart(server, "blog")).code, 0);
    const blog = server.paths("blog");
    await Deno.writeTextFile(
      blog.config,
      (await Deno.readTextFile(blog.config)).replace(/^port: \d+$/m, `port: ${port}`),
    );
    const repo = await AppRepo.create(server, "blog", blog.repo);
    await repo.python("blog", "v1");
    const before = await snapshot(server);
    const push = await repo.push();
    assert(push.code !== 0, push.output);
    assertMatch(push.output, new RegExp(`app "blog" \\(${blog.config}\\) cannot have port ${port}: app "shop" has it`));
    assertEquals(await snapshot(server), before, "nothing built or written");
    assertEquals(await releases(server, "blog"), []);
    assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: "v1" }, "shop still serves");
    // The serving app keeps deploying: blog, which serves nothing, does not hold its port against it.
    await shopRepo.python("shop", "v2");
    await shopRepo.pushOk();
    assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: "v2" });
  });
});

Deno.test("apps with domains behind the proxy may share a port (nothing listens on it): setup --yes twice", async () => {
  await withServer(async (server) => {
    for (const [app, domain] of [["shop", "shop.test"], ["blog", "blog.test"]]) {
      const setup = await server.cli(["setup", app, "--manager", "pm2", "--yes", "--domain", domain]);
      assertEquals(setup.code, 0, setup.output);
      assertMatch(await Deno.readTextFile(server.paths(app).config), /^port: 8000$/m);
    }
    // Without domains, 8000 is listened on: taken by neither of them, so still free for one app.
    const plain = await server.cli(["setup", "api", "--manager", "pm2", "--yes"]);
    assertEquals(plain.code, 0, plain.output);
    const second = await server.cli(["setup", "web", "--manager", "pm2", "--yes"]);
    assertEquals(second.code, 2, second.output);
    assertMatch(second.stderr, /app "web" cannot have port 8000: app "api" has it already/);
  });
});

/**
 * A static app `site` set up under pm2 with the proxy, pushed at each of `versions`, then the proxy
 * stopped (`pm2 stop`): `fn` gets the server, the app's port, and `site`, which commits a version.
 */
async function withProxyStopped(
  versions: string[],
  fn: (server: TestServer, port: number, repo: AppRepo, site: (version: string) => Promise<string>) => Promise<void>,
): Promise<void> {
  await withServer(async (server) => {
    const port = freePort();
    const setup = await server.cli(["setup", "site", "--port", String(port), "--manager", "pm2", "--yes"]);
    assertEquals(setup.code, 0, setup.output);
    const repo = await AppRepo.create(server, "site", server.paths("site").repo);
    const site = (version: string) =>
      repo.commit({ "deploy.yml": "name: site\ntype: static\n", "index.html": version }, version);
    for (const version of versions) {
      await site(version);
      await repo.pushOk();
    }
    assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: versions.at(-1) });
    assertEquals((await run(["pm2", "stop", "deploy-paradigm-proxy"], { env: server.env })).code, 0);
    await fn(server, port, repo, site);
  });
}

Deno.test("a push while pm2 brings the proxy back (started, not answering yet) waits for it and deploys", async () => {
  await withProxyStopped(["v1"], async (server, port, repo, site) => {
    // The push waits for the app's deploy lock, held here; once pm2 starts the proxy again it goes on at once,
    // to its proxy step, while the proxy (a new process) is not answering yet.
    const lock = await Deno.open(server.paths("site").lock, { read: true, write: true, create: true });
    await lock.lock(true);
    await site("v2");
    const pushing = repo.push();
    const service = join(server.prefix, "opt", "deployments", "pm2-deploy-paradigm-proxy.json");
    // A process blocked on the lock file's inode: a `->` line of /proc/locks.
    const inode = (await Deno.stat(server.paths("site").lock)).ino;
    await until(
      20_000,
      "the push waits for the lock",
      async () =>
        (await Deno.readTextFile("/proc/locks")).split("\n").some((line) =>
          line.includes("->") && line.includes(`:${inode} `)
        ),
    );
    assertEquals((await run(["pm2", "start", service], { env: server.env })).code, 0);
    await lock.unlock();
    lock.close();
    const pushed = await pushing;
    assertEquals(pushed.code, 0, pushed.output);
    assertMatch(pushed.output, /✓ deployed site/);
    assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: "v2" });
  });
});

Deno.test("a push with the proxy stopped under pm2 fails at step proxy, says how to start it, and does not claim the old release serves", async () => {
  await withProxyStopped(["v0", "v1"], async (server, port, repo, site) => {
    // A rollback checks the proxy first too: nothing started, recorded or marked bad, and how to start it.
    const paths = server.paths("site");
    const kept = async () => [
      await Deno.readTextFile(paths.status),
      await Deno.readTextFile(paths.deployLog),
      await releases(server, "site"),
    ];
    const before = await kept();
    const back = await server.cli(["rollback", "site"]);
    assertEquals(back.code, 1, back.output);
    assertMatch(back.stderr, /^error: the proxy is not running \(no \S+\): start it with `pm2 start \S+`/);
    assert(!/serves/.test(back.output), back.output);
    assertEquals(await kept(), before);
    await site("v2");
    const down = await repo.push();
    assert(down.code !== 0, down.output);
    const service = join(server.prefix, "opt", "deployments", "pm2-deploy-paradigm-proxy.json");
    assertMatch(
      down.output,
      new RegExp(`✗ the proxy is not running \\(no \\S+\\): start it with \`pm2 start ${service}\``),
    );
    assertMatch(down.output, /✗ deploy of site \w+ failed at step "proxy"/);
    assertMatch(down.output, /nothing was switched: \w+ still runs behind the proxy/);
    assertMatch(
      down.output,
      new RegExp(
        `✗ site \\w+ was not deployed; the proxy is down: nothing serves http://127\\.0\\.0\\.1:${port}/ until it starts`,
      ),
    );
    assert(!/serves at/.test(down.output), down.output);
    assertMatch(down.output, /deploy failed at proxy/);
    assertEquals((await status(server, "site")).lastDeploy?.step, "proxy");
    // The command it names starts the proxy, and the old release serves again.
    assertEquals((await run(["pm2", "start", service], { env: server.env })).code, 0);
    await until(
      10_000,
      "v1 served again",
      async () =>
        JSON.stringify(await get(`http://127.0.0.1:${port}/`)) === JSON.stringify({ status: 200, body: "v1" }),
    );
  });
});
