/**
 * `setup`, end to end: non-interactive with flags, idempotent, refusing to guess without a
 * terminal, and interactive in a real TTY (tmux), followed by a real push through the proxy it
 * started under PM2.
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { AppRepo } from "../helpers/apps.ts";
import { BIN, freePort, get, run, withServer } from "../helpers/server.ts";
import { releases, snapshot } from "../helpers/state.ts";

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
    await Deno.writeTextFile(paths.envFile("production"), "SECRET=kept\n", { mode: 0o600 });
    const again = await server.cli([...args.slice(0, -1), "--env", "production", "--yes"]);
    assertEquals(again.code, 0, again.output);
    assertMatch(again.stdout, /✓ the proxy runs/);
    assertEquals(await Deno.readTextFile(paths.envFile("production")), "SECRET=kept\n");
    assertEquals((await releases(server, "web")).length, 1);
    assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: "v1" });
    assert((await Deno.readTextFile(paths.config)).includes("slots:"), "slots are kept");
  });
});

Deno.test("setup without a terminal and without values says which flags it needs, and writes nothing", async () => {
  await withServer(async (server) => {
    await Deno.mkdir(server.prefix, { recursive: true });
    const before = await snapshot(server);
    const missing = await server.cli(["setup", "api"]);
    assertEquals(missing.code, 2);
    assertMatch(missing.stderr, /setup needs --port and --manager when it cannot ask \(no terminal\)/);
    const bad = await server.cli(["setup", "Bad Name", "--yes"]);
    assertEquals(bad.code, 2);
    assertMatch(bad.stderr, /"Bad Name" is not a valid app name/);
    const env = await server.cli(["setup", "api", "--port", "8080", "--manager", "pm2", "--env", "../../etc", "--yes"]);
    assertEquals(env.code, 2);
    assertMatch(env.stderr, /--env must be a name such as production/);
    const port = await server.cli(["setup", "api", "--port", "70000", "--manager", "pm2"]);
    assertEquals(port.code, 2);
    assertMatch(port.stderr, /--port must be a whole number from 1 to 65535/);
    assertEquals(await snapshot(server), before);
  });
});

Deno.test("setup in a real terminal asks for port, manager and environment, shows a summary, then writes", async () => {
  await withServer(async (server) => {
    const port = freePort();
    const session = `dp-setup-${crypto.randomUUID().slice(0, 8)}`;
    const env = Object.entries(server.env).map(([k, v]) => `${k}='${v}'`).join(" ");
    const tmux = (...args: string[]) => run(["tmux", ...args]);
    const started = await tmux(
      "new-session",
      "-d",
      "-s",
      session,
      "-x",
      "160",
      "-y",
      "40",
      `env ${env} ${BIN} setup shop --proxy-host 127.0.0.1; echo EXIT=$?; sleep 30`,
    );
    assertEquals(started.code, 0, started.output);
    const screen = async () => (await tmux("capture-pane", "-p", "-t", session)).stdout;
    const waitFor = async (pattern: RegExp) => {
      for (let i = 0; i < 150; i++) {
        const text = await screen();
        if (pattern.test(text)) return text;
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error(`the terminal never showed ${pattern}:\n${await screen()}`);
    };
    try {
      await waitFor(/Public port of the app/);
      await tmux("send-keys", "-t", session, "C-u", String(port), "Enter");
      const manager = await waitFor(/Process manager/);
      assertMatch(manager, /systemd does not run here|pm2/);
      await tmux("send-keys", "-t", session, "Enter"); // pm2, the only choice here
      await waitFor(/Environment/);
      await tmux("send-keys", "-t", session, "C-u", "staging", "Enter");
      const summary = await waitFor(/Write all this\?/);
      assertMatch(summary, new RegExp(`port ${port}, pm2, env staging, blue-green`));
      await tmux("send-keys", "-t", session, "y", "Enter");
      const done = await waitFor(/EXIT=\d+/);
      assertMatch(done, /EXIT=0/);
      assertMatch(done, /git push production main/);
    } finally {
      await tmux("kill-session", "-t", session);
    }
    const paths = server.paths("shop");
    assertMatch(await Deno.readTextFile(paths.config), new RegExp(`port: ${port}\\nmanager: pm2\\nenv: staging`));
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
  });
});
