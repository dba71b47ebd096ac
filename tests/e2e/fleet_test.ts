/**
 * The fleet monitor against fake VPS hosts (network namespaces with their own sshd and their own
 * /opt/deployments and /var/log/deployments), over real ssh and rsync, into real SQLite, read
 * through the real HTTP API of `deploy-paradigm fleet`.
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { pythonApp } from "../helpers/apps.ts";
import { append, serve, withFleet, writeStatus } from "../helpers/fleet.ts";
import { BIN, freePort, run } from "../helpers/server.ts";
import type { FakeVps } from "../helpers/vps.ts";

Deno.test("fleet: overview, search across hosts, deployment history; a real deploy's status and logs", async () => {
  await withFleet(2, async ([a, b], laptop) => {
    // A real deploy on host a: setup + git push over ssh; its status.json and logs are real.
    const port = 18000 + Math.floor(Math.random() * 1000);
    const setup = await a.ssh(`${BIN} setup shop --port ${port} --manager pm2 --proxy-host ${a.address} --yes`);
    assertEquals(setup.code, 0, setup.output);
    const work = await Deno.makeTempDir({ prefix: "dp-laptop-" });
    try {
      const git = (...args: string[]) => run(["git", ...args], { cwd: work, env: a.env });
      await git("init", "--quiet", "-b", "main");
      await git("remote", "add", "production", `root@${a.address}:/var/repos/shop.git`);
      await Deno.writeTextFile(
        join(work, "deploy.yml"),
        "name: shop\ntype: python\ncommand: python app.py\nwatch: 0\nhealthCheck: { path: /health, interval: 200ms, successes: 2 }\n",
      );
      await Deno.writeTextFile(join(work, "app.py"), pythonApp("shop-v1"));
      await git("add", "-A");
      await git("commit", "--quiet", "-m", "v1");
      const push = await git("push", "production", "main");
      assertEquals(push.code, 0, push.output);
    } finally {
      await Deno.remove(work, { recursive: true });
    }
    // Two more apps, written by the test: one unhealthy on a, one on b with a rolled-back deploy.
    await writeStatus(a, "api", { status: "failed", healthy: false, version: "1111111", type: "node" });
    await append(a, "api", "error.log", "Error: connect ECONNREFUSED zebracorn-db:5432\n");
    await writeStatus(b, "api", { status: "rolled_back", healthy: true, version: "2222222", type: "node" });
    await append(b, "api", "access.log", "GET /checkout zebracorn 200\n");
    await append(
      b,
      "api",
      "deploy.log",
      JSON.stringify({
        time: "2026-11-29T07:00:00Z",
        app: "api",
        event: "rolled_back",
        release: "20261129-070000-000",
        commit: "3".repeat(40),
        ok: false,
        duration: 4200,
        message: "health: /health answered 500",
      }) + "\n",
    );

    // The proxy's certificate state comes with the status files (keys next to it do not); over 1 MiB it does not.
    const tls = async (vps: FakeVps, certificates: Record<string, unknown>, pad = "") => {
      await Deno.mkdir(join(vps.deployments, ".tls"), { recursive: true, mode: 0o700 });
      await Deno.writeTextFile(join(vps.deployments, ".tls", "account.key"), "secret", { mode: 0o600 });
      await Deno.writeTextFile(
        join(vps.deployments, ".tls", "certificates.json"),
        JSON.stringify({ updatedAt: "2026-11-29T07:00:00Z", certificates, pad }),
      );
    };
    const certificate = { names: ["api.test"], source: "acme", issuer: "CN=Pebble", notAfter: "2099-01-01T00:00:00Z" };
    await tls(b, { api: certificate });
    await tls(a, { api: certificate }, "x".repeat(1 << 21));

    await laptop.addHost("alpha", a);
    await laptop.addHost("beta", b);
    const collect = await laptop.collect();
    assertEquals(collect.code, 0, collect.output);
    assertMatch(collect.stdout, /collected: 2\/2 servers, 3 apps/);

    const api = await serve(laptop);
    try {
      const fleet = (await api.json("/api/fleet")).body;
      type App = { app: string; state: string; version: string; certificate: Record<string, unknown> | null };
      const apps = Object.fromEntries(
        fleet.servers.flatMap((s: { name: string; apps: App[] }) => s.apps.map((app) => [`${s.name}/${app.app}`, app])),
      );
      assertEquals(Object.keys(apps).sort(), ["alpha/api", "alpha/shop", "beta/api"]);
      assertEquals(apps["alpha/shop"].state, "fresh");
      assertEquals(apps["alpha/api"].state, "unhealthy");
      assertEquals(apps["beta/api"].version, "2222222");
      assertEquals(fleet.counts.unhealthy, 1);
      assertEquals(
        [apps["beta/api"].certificate?.names, apps["beta/api"].certificate?.state],
        [["api.test"], "valid"],
      );
      assertEquals(apps["alpha/api"].certificate, null, "a certificates.json over 1 MiB is not pulled");
      const mirrored = await Array.fromAsync(Deno.readDir(join(laptop.home, "mirror", "beta", "status", ".tls")));
      assertEquals(mirrored.map((entry) => entry.name), ["certificates.json"], "no key leaves the server");

      // One word, one line on each host: found on both, newest first, highlighted.
      const search = (await api.json("/api/search?q=zebracorn")).body;
      assertEquals(search.results.map((r: { server: string }) => r.server).sort(), ["alpha", "beta"]);
      for (const result of search.results) {
        assert(result.snippet.some((part: { text: string; hit: boolean }) => part.hit && part.text === "zebracorn"));
      }
      const errors = (await api.json("/api/search?q=ECONNREFUSED&server=beta")).body;
      assertEquals(errors.results.length, 0, "the server filter");

      // The real deploy's deploy.log and the rolled-back one.
      const { deployments } = (await api.json("/api/deployments")).body;
      const outcomes = deployments.map((d: { server: string; app: string; outcome: string }) =>
        `${d.server}/${d.app}:${d.outcome}`
      );
      assert(outcomes.includes("alpha/shop:success"), outcomes.join(" "));
      assert(outcomes.includes("beta/api:rolled_back"), outcomes.join(" "));
    } finally {
      await api.stop();
    }
  });
});

Deno.test("fleet: growth, partial lines, rotation and copytruncate: 0 duplicate and 0 lost lines", async () => {
  await withFleet(1, async ([vps], laptop) => {
    await laptop.addHost("solo", vps);
    await writeStatus(vps, "web", { status: "running", healthy: true, version: "abcdef0" });
    const written: string[] = [];
    let n = 0;
    const lines = (count: number) =>
      Array.from({ length: count }, () => {
        const line = `req ${++n} quokka ${"x".repeat(n % 50)}`;
        written.push(line);
        return line + "\n";
      }).join("");
    const log = join(vps.logs, "web", "access.log");
    const collect = async () => {
      const result = await laptop.collect();
      assertEquals(result.code, 0, result.output);
    };

    await append(vps, "web", "access.log", lines(300)); // more than 4 KiB: the identity is the first 4 KiB
    await collect();
    await append(vps, "web", "access.log", lines(50) + "req partial-");
    await collect(); // the partial line waits for its newline
    await append(vps, "web", "access.log", "line\n");
    written.push("req partial-line");
    await append(vps, "web", "access.log", lines(20));
    await collect();
    await collect(); // nothing new: nothing added

    // Rotation: renamed to .1 (with lines written after the last pull), a new file.
    await append(vps, "web", "access.log", lines(30));
    await Deno.rename(log, `${log}.1`);
    await append(vps, "web", "access.log", lines(10));
    await collect();
    await append(vps, "web", "access.log", lines(5));
    await collect();

    // copytruncate: copied to .1, truncated in place, written again.
    await append(vps, "web", "access.log", lines(15));
    await Deno.copyFile(log, `${log}.1`);
    await Deno.truncate(log, 0);
    await append(vps, "web", "access.log", lines(7));
    await collect();

    const api = await serve(laptop);
    try {
      const found: string[] = [];
      let before = "";
      for (let page = 0; page < 20; page++) {
        const { body } = await api.json(`/api/search?q=quokka%20OR%20partial&limit=500${before}`);
        found.push(
          ...body.results.filter((r: { kind: string }) => r.kind !== "gap").map((r: { text: string }) => r.text),
        );
        if (!body.nextBefore) break;
        before = `&before=${body.nextBefore}`;
      }
      assertEquals(found.length, written.length, "0 lost, 0 duplicate");
      assertEquals(new Set(found).size, found.length, "no line twice");
      assertEquals([...found].sort(), [...written].sort());
      const gaps = (await api.json("/api/search?q=gap")).body.results.filter((r: { kind: string }) => r.kind === "gap");
      assertEquals(gaps.length, 1, "copytruncate leaves one visible marker");
      assertMatch(gaps[0].text, /copytruncate/);
    } finally {
      await api.stop();
    }
  });
});

Deno.test("fleet: a host that goes down and comes back; an unknown host key is refused; the token rule", async () => {
  await withFleet(3, async ([up, flaky, stranger], laptop) => {
    for (const vps of [up, flaky, stranger]) await writeStatus(vps, "app", { status: "running", healthy: true });
    await laptop.addHost("up", up);
    await laptop.addHost("flaky", flaky);
    await laptop.addHost("stranger", stranger, false);
    const first = await laptop.collect();
    assertEquals(first.code, 1, "a server failed");
    assertMatch(first.stdout, /collected: 2\/3 servers/);
    assertMatch(first.stdout, /stranger: the host key of \S+ is not trusted .*fleet trust stranger/);

    await flaky.down();
    const down = await laptop.collect();
    assertMatch(down.stdout, /1\/3 servers/);
    assertMatch(down.stdout, /✗ flaky: /);

    const config = join(laptop.home, "config.yml");
    await Deno.writeTextFile(config, "interval: 2s\n" + await Deno.readTextFile(config));
    const api = await serve(laptop, ["--token", "s3cret-token"]);
    try {
      assertEquals((await fetch(`${api.base}/api/fleet`)).status, 401);
      assertEquals((await fetch(`${api.base}/api/fleet`, { headers: { authorization: "Bearer nope" } })).status, 401);
      const auth = { authorization: "Bearer s3cret-token" };
      const fleet = (await api.json("/api/fleet", auth)).body;
      const state = (name: string) =>
        fleet.servers.find((s: { name: string }) => s.name === name).apps[0]?.state ??
          fleet.servers.find((s: { name: string }) => s.name === name).state;
      assertEquals(state("up"), "fresh");
      assertEquals(state("flaky"), "unreachable");
      assertEquals((await fetch(`${api.base}/metrics`, { headers: auth })).status, 200);
      const twice = await laptop.collect();
      assertEquals(twice.code, 2, "one collector per home");
      assertMatch(twice.stderr, /another fleet collector is running/);
      // Server-Sent Events after each cycle (every 2 s here); EventSource sends the token as ?token=.
      const events = await fetch(`${api.base}/api/events?token=s3cret-token`);
      assertEquals(events.status, 200);
      const reader = events.body!.pipeThrough(new TextDecoderStream()).getReader();
      let stream = "";
      for (const deadline = Date.now() + 15_000; !/event: cycle\ndata: .*\n\n/.test(stream) && Date.now() < deadline;) {
        const { value, done } = await reader.read();
        if (done) break;
        stream += value;
      }
      await reader.cancel();
      const cycle = JSON.parse(/event: cycle\ndata: (.*)\n/.exec(stream)![1]);
      assertEquals(cycle.servers.map((s: { server: string }) => s.server).sort(), ["flaky", "stranger", "up"]);
    } finally {
      await api.stop();
    }

    await flaky.startSshd();
    const back = await laptop.collect();
    assertMatch(back.stdout, /2\/3 servers/);
    assert(!back.stdout.includes("✗ flaky"), back.stdout);

    // Beyond loopback without a token: refused, exit 2.
    const open = await laptop.fleet("--host", "0.0.0.0", "--port", String(freePort()));
    assertEquals(open.code, 2, open.output);
    assertMatch(open.stderr, /without a token/);
    // A wrong fingerprint is not trusted.
    const wrong = await laptop.fleet("trust", "stranger", "--fingerprint", "SHA256:AAAA");
    assertEquals(wrong.code, 2, wrong.output);
  });
});
