/**
 * Maintenance mode for real: the `maintenance` command (a process, like an operator runs it)
 * against the real proxy and real apps. Under keep-alive load only 503s with Retry-After while
 * on (except from the allowed address, 127.0.0.2 as the connections' source), 0 failed requests
 * outside; WebSocket upgrades refused; apps with domains over HTTPS (HTTP/2 and HTTP/1.1) with
 * the release's own maintenance.html; a trusted proxy's X-Forwarded-For; a hand-edited bad file
 * (the proxy keeps what it had); real deploys (git push, PM2) during maintenance; a proxy
 * restart; `status`, status.json; and the command's bad input (exit 2, exact messages, nothing
 * changed on disk).
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { AppRepo } from "../helpers/apps.ts";
import { selfSigned } from "../helpers/certs.ts";
import { LoadGenerator, type Sample } from "../helpers/load.ts";
import { withProxy } from "../helpers/proxy_server.ts";
import { BIN, freePort, run, withServer } from "../helpers/server.ts";
import { snapshot, status } from "../helpers/state.ts";
import { upgradeRequest } from "../helpers/websocket.ts";
import { WireClient } from "../helpers/wire_client.ts";
import { deploymentsRoot } from "../../src/paths.ts";
import { openPage, screenshot, withBrowser } from "../helpers/browser.ts";
import { serveFleet } from "../../src/fleet/api.ts";
import { collectorHandler } from "../../src/fleet/cli.ts";
import { Collector } from "../../src/fleet/collector.ts";
import { fleetConfigSchema, fleetPaths } from "../../src/fleet/config.ts";
import { FleetEvents } from "../../src/fleet/events.ts";
import { LocalSource, type Source } from "../../src/fleet/source.ts";
import { FleetStore } from "../../src/fleet/store.ts";
import { sleep } from "../helpers/time.ts";

/** A plain app on 127.0.0.1 (on `port`, else any free one) answering `text` to anything. */
function plainApp(text = "app", port = 0) {
  const server = Deno.serve({ hostname: "127.0.0.1", port, onListen: () => {} }, () => new Response(text));
  return { port: server.addr.port, close: () => server.shutdown() };
}

/** `deploy-paradigm maintenance …` for the server under `root`. */
function maintenance(root: string, args: string[]) {
  return run([BIN, "maintenance", ...args], { env: { DEPLOY_PARADIGM_PREFIX: root, NO_COLOR: "1" } });
}

/** A fetch that never throws: the status, Retry-After and body, or the error. */
async function fetchFrom(url: string, init: RequestInit & { client?: Deno.HttpClient } = {}) {
  const response = await fetch(url, { ...init, signal: AbortSignal.timeout(5000) });
  return {
    status: response.status,
    retryAfter: response.headers.get("retry-after"),
    cacheControl: response.headers.get("cache-control"),
    type: response.headers.get("content-type"),
    body: await response.text(),
  };
}

/** The requests of a load sent after `from` and answered before `to`: wholly within. */
function between(samples: Sample[], from: number, to: number): Sample[] {
  return samples.filter((s) => (s.sent ?? s.at) > from && s.at < to);
}

Deno.test("maintenance under keep-alive load: only 503 + Retry-After while on, except the allowed address; 0 failed outside", async () => {
  const app = plainApp();
  const metricsPort = freePort();
  try {
    await withProxy(async ({ root, proxy, app: setUp, url, logs }) => {
      const port = await setUp("web", { port: app.port });
      await proxy.start();
      const everyone = new LoadGenerator(url(port), 3).start();
      const allowed = new LoadGenerator(url(port), 2, "127.0.0.2").start();
      await sleep(500);
      const onStart = performance.now();
      const on = await maintenance(root, [
        "web",
        "on",
        "--message",
        "Back at <16:00> & later",
        "--allow",
        "127.0.0.2",
        "--retry-after",
        "30",
      ]);
      const onEnd = performance.now();
      assertEquals(on.code, 0, on.output);
      assertEquals(
        on.stdout,
        `web: maintenance since ${
          JSON.parse(await Deno.readTextFile(join(deploymentsRoot(root), "web", "maintenance.json"))).since
            .replace("T", " ").slice(0, 16)
        } UTC, Retry-After 30 s, allowed: 127.0.0.2.\nThe proxy answers 503 for it now to all but 127.0.0.2.\n`,
      );
      await sleep(800);

      // While on: the page, its headers; HEAD; a WebSocket upgrade refused; keep-alive goes on.
      const page = await fetchFrom(url(port, "/any?x=1"));
      assertEquals(page.status, 503);
      assertEquals(page.retryAfter, "30");
      assertEquals(page.cacheControl, "no-store");
      assertEquals(page.type, "text/html; charset=utf-8");
      assert(page.body.includes("<p>Back at &#60;16:00&#62; &#38; later</p>"), page.body);
      const head = await fetch(url(port), { method: "HEAD" });
      assertEquals([head.status, head.headers.get("retry-after"), await head.text()], [503, "30", ""]);
      const client = await WireClient.connect(port);
      try {
        await client.send(upgradeRequest("/ws", { Host: `127.0.0.1:${port}` }));
        const refused = await client.response();
        assertEquals(refused?.status, 503);
        assertEquals(refused?.headers.get("retry-after"), "30");
        await client.send(`GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`);
        assertEquals((await client.response())?.status, 503, "the connection stays usable");
      } finally {
        client.close();
      }

      const offStart = performance.now();
      const off = await maintenance(root, ["web", "off"]);
      const offEnd = performance.now();
      assertEquals(off.code, 0, off.output);
      assertEquals(
        off.stdout,
        "web is out of maintenance: its requests go to the app again.\nThe proxy serves it again.\n",
      );
      await sleep(500);
      await everyone.stop();
      await allowed.stop();

      const outside = [...between(everyone.samples, 0, onStart), ...between(everyone.samples, offEnd, Infinity)];
      assertEquals(outside.filter((s) => s.status !== 200 || s.body !== "app"), [], "0 failed outside the window");
      assert(outside.length > 50, `too few requests outside: ${outside.length}`);
      const inside = between(everyone.samples, onEnd, offStart);
      assert(inside.length > 50, `too few requests while on: ${inside.length}`);
      const wrong = inside.filter((s) => s.status !== 503 || s.retryAfter !== "30" || !s.body?.includes("Back at"));
      assertEquals(wrong.slice(0, 3), [], "only 503 with Retry-After and the page while on");
      // Requests that overlap a switch get one answer or the other, never an error.
      for (const s of everyone.samples.filter((s) => !outside.includes(s) && !inside.includes(s))) {
        assert(s.error === undefined && (s.body === "app" || s.status === 503), JSON.stringify(s));
      }
      assertEquals(allowed.failures(), [], "the allowed address reaches the app all along");
      assert(between(allowed.samples, onEnd, offStart).length > 30, "the allowed address was served while on");
      assertEquals(new Set(allowed.samples.map((s) => s.body)), new Set(["app"]));
      assert(
        logs.some((line) =>
          /^web: in maintenance since .*127\.0\.0\.2; requests get 503 with the built-in page$/.test(line)
        ),
        logs.join("\n"),
      );
      assert(logs.includes("web: maintenance off: requests go to the app again"), logs.join("\n"));
      // The proxy's metrics count maintenance answers apart: slot "maintenance" (the load's 503s, and 4 above).
      const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      const served = everyone.samples.filter((s) => s.status === 503).length + 4;
      assert(
        metrics.includes(`deploy_paradigm_responses_total{app="web",slot="maintenance",class="5xx"} ${served}\n`),
        metrics.split("\n").filter((line) => line.includes("maintenance")).join("\n"),
      );
    }, { proxyYml: `metrics: 127.0.0.1:${metricsPort}\n` });
  } finally {
    await app.close();
  }
});

Deno.test("maintenance with domains over HTTPS (HTTP/2, HTTP/1.1): the release's page, the allowed address, a bad file kept", async () => {
  const app = plainApp("shop");
  const [httpPort, httpsPort] = [freePort(), freePort()];
  const name = "shop.test";
  try {
    await withProxy(async ({ root, proxy, app: setUp, logs }) => {
      await setUp("shop", { port: app.port });
      const dir = join(deploymentsRoot(root), "shop");
      const tlsDir = join(root, "tls");
      await Deno.mkdir(tlsDir, { mode: 0o700 });
      const tls = await selfSigned(tlsDir, [name]);
      await Deno.writeTextFile(
        join(dir, "config.yml"),
        `domains: [${name}]\ntls: { certificate: ${tls.certificate}, key: ${tls.key} }\n`,
        { append: true },
      );
      // The serving release, with its own page.
      const release = join(dir, "releases", "r1");
      await Deno.mkdir(release, { recursive: true });
      await Deno.writeTextFile(join(release, "maintenance.html"), "<h1>Shop: back soon</h1>\n");
      await Deno.symlink(release, join(dir, "current"));
      await proxy.start();
      const curl = async (args: string[]) => {
        const { code, stdout, stderr } = await new Deno.Command("curl", {
          args: [
            "-sS",
            "--max-time",
            "10",
            "--cacert",
            tls.certificate,
            "--resolve",
            `${name}:${httpsPort}:127.0.0.1`,
            "-w",
            "\n%{http_code} %{http_version}",
            ...args,
            `https://${name}:${httpsPort}/`,
          ],
        }).output();
        assertEquals(code, 0, new TextDecoder().decode(stderr));
        const text = new TextDecoder().decode(stdout);
        const at = text.lastIndexOf("\n");
        return { body: text.slice(0, at), line: text.slice(at + 1) };
      };
      let served = false;
      for (let i = 0; i < 100 && !served; i++) { // the certificate loads in the background
        served = await new Deno.Command("curl", {
          args: [
            "-sS",
            "--max-time",
            "2",
            "--cacert",
            tls.certificate,
            "--resolve",
            `${name}:${httpsPort}:127.0.0.1`,
            `https://${name}:${httpsPort}/`,
          ],
          stdout: "null",
          stderr: "null",
        }).output().then((out) => out.code === 0);
        if (!served) await sleep(100);
      }
      assertEquals((await curl(["--http2"])).body, "shop");

      const on = await maintenance(root, ["shop", "on", "--allow", "127.0.0.2/32,2001:db8::/32"]);
      assertEquals(on.code, 0, on.output);
      for (const version of ["--http2", "--http1.1"]) {
        const answer = await curl([version, "-D", "-"]);
        assertEquals(answer.line, `503 ${version === "--http2" ? "2" : "1.1"}`);
        assertMatch(answer.body, /^retry-after: 60\r$/im);
        // (over HTTP/2 with no-transform: the proxy's answers are never compressed, see http2_attack_test.ts)
        const cacheControl = version === "--http2" ? "no-store, no-transform" : "no-store";
        assertMatch(answer.body, new RegExp(`^cache-control: ${cacheControl}\r$`, "im"));
        assert(answer.body.endsWith("<h1>Shop: back soon</h1>\n"), answer.body);
      }
      // The allowed address reaches the app, over HTTP/2 and HTTP/1.1.
      assertEquals(await curl(["--http2", "--interface", "127.0.0.2"]), { body: "shop", line: "200 2" });
      assertEquals(await curl(["--http1.1", "--interface", "127.0.0.2"]), { body: "shop", line: "200 1.1" });

      // A hand-edited bad file: the proxy logs it and keeps what it had.
      const file = join(dir, "maintenance.json");
      const good = await Deno.readTextFile(file);
      await Deno.writeTextFile(file, good.replace('"retryAfter":60', '"retryAfter":"soon"'));
      await maintenanceReload(root);
      assert(
        logs.some((line) =>
          line.startsWith(
            `shop: ${file}: "retryAfter" must be a whole number of seconds from 1 to 86400 (got "soon")`,
          ) &&
          line.includes("; it keeps maintenance since")
        ),
        logs.join("\n"),
      );
      assertEquals((await curl(["--http2"])).line, "503 2", "kept");
      await Deno.writeTextFile(file, good);
      await maintenanceReload(root);
      assert(logs.includes("shop: the problem logged before is gone"), logs.join("\n"));

      const off = await maintenance(root, ["shop", "off"]);
      assertEquals(off.code, 0, off.output);
      assertEquals((await curl(["--http2"])).body, "shop");
    }, { proxyYml: `http: ${httpPort}\nhttps: ${httpsPort}\n` });
  } finally {
    await app.close();
  }
});

/**
 * The fleet monitor over the server under `prefix` (the real collector with the LocalSource `host: local`
 * uses, the store, the API and the dashboard in headless Chromium): the maintenance badge on `app`'s row of
 * the overview, and its tooltip. A screenshot goes to tests/artifacts/maintenance-fleet.png.
 */
async function dashboardBadge(prefix: string, app: string): Promise<{ text: string | null; title: string | null }> {
  const dir = await Deno.makeTempDir({ prefix: "dp-maint-fleet-" });
  const paths = fleetPaths(join(dir, "home"));
  const store = await FleetStore.open(paths.db);
  const collector = new Collector(store, fleetConfigSchema.parse({ servers: [{ name: "vps", host: "local" }] }), paths);
  (collector as unknown as { sources: Map<string, Source> }).sources.set("vps", new LocalSource(prefix));
  const stop = new AbortController();
  const api = await collectorHandler(collector, new FleetEvents(), { heartbeatMs: 1000 });
  const server = serveFleet(api, { host: "127.0.0.1", port: 0, signal: stop.signal });
  try {
    const cycle = await collector.cycle();
    assert(cycle.servers.every((s) => s.ok), JSON.stringify(cycle.servers));
    return await withBrowser(async (browser) => {
      const { context, page, problems } = await openPage(browser);
      try {
        await page.goto(`http://127.0.0.1:${server.addr.port}/`);
        await page.waitForSelector("main[data-ready=overview]");
        const badge = page.locator("table.apps tbody tr", { hasText: app }).locator(".badge.maintenance");
        await badge.waitFor();
        await screenshot(page, "maintenance-fleet");
        assertEquals(problems, []);
        return { text: await badge.textContent(), title: await badge.getAttribute("title") };
      } finally {
        await context.close();
      }
    });
  } finally {
    stop.abort();
    await server.finished.catch(() => {});
    await collector.close();
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
}

/** Has the proxy under `root` re-read its routes now. */
async function maintenanceReload(root: string): Promise<void> {
  const { control } = await import("../../src/proxy/client.ts");
  await control(root, { op: "reload" });
}

Deno.test("maintenance on says what it leaves out (::/0 is IPv6 only, a page over 256 KiB), every problem of a bad file; bad input says how to write it", async () => {
  const app = plainApp("app", freePort());
  try {
    await withProxy(async ({ root, proxy, app: setUp, url, logs }) => {
      const port = await setUp("web", { port: app.port });
      const dir = join(deploymentsRoot(root), "web");
      // The serving release's maintenance.html is over the 256 KiB served: the built-in page is.
      await Deno.mkdir(join(dir, "releases", "r1"), { recursive: true });
      await Deno.writeTextFile(join(dir, "releases", "r1", "maintenance.html"), "x".repeat(256 * 1024 + 1));
      await Deno.symlink("releases/r1", join(dir, "current"));
      await proxy.start();

      // Bad input: exit 2, what is wrong and how to write it, nothing written.
      const before = await snapshot({ prefix: root });
      const message = 'hint: give one line of text, at most 1000 characters, e.g. --message "Back at 16:00"; ' +
        "without --message the built-in page says the site is down for maintenance\n";
      const corpus: [string[], string][] = [
        [["--message", ""], `error: --message is empty\n${message}`],
        [["--message", "Back\nsoon"], `error: --message has a control character (a line break, a tab…)\n${message}`],
        [
          ["--retry-after", "6 0"],
          'error: --retry-after must be a whole number of seconds from 1 to 86400 (got "6 0")\n' +
          "hint: e.g. --retry-after 120 for two minutes; without it clients are told 60\n",
        ],
      ];
      for (const [args, expected] of corpus) {
        const result = await maintenance(root, ["web", "on", ...args]);
        assertEquals([result.code, result.stderr, result.stdout], [2, expected, ""], args.join(" "));
      }
      assertEquals(await snapshot({ prefix: root }), before, "bad input changed nothing on disk");

      // ::/0 lets IPv6 clients through, not IPv4 ones, and `on` says so; spaces around values are dropped alike.
      const v6 = await maintenance(root, ["web", "on", "--allow", " ::/0", "--retry-after", " 30 "]);
      assertEquals(v6.code, 0, v6.output);
      const lines = v6.stdout.split("\n");
      assertEquals(
        lines[1],
        "! --allow ::/0 lets every IPv6 client through (IPv4 clients still get 503: add 0.0.0.0/0 for them)",
      );
      assertEquals(
        lines[2],
        `! web's serving release (${join(dir, "current")}): maintenance.html is over the 256 KiB a maintenance page ` +
          "may have: the built-in page is served; fix maintenance.html in the app's repository and deploy: the proxy " +
          "serves the new release's page",
      );
      assertEquals(lines[3], "The proxy answers 503 for it now to all but ::/0.");
      let page = await fetchFrom(url(port));
      assertEquals([page.status, page.retryAfter], [503, "30"], "an IPv4 client");
      assert(page.body.includes("<h1>Down for maintenance</h1>"), page.body);
      const both = await maintenance(root, ["web", "on", "--allow", "::/0, 0.0.0.0/0"]);
      assertEquals(both.code, 0, both.output);
      assertEquals(both.stdout.split("\n")[1], "! --allow ::/0, 0.0.0.0/0 let every client through");
      page = await fetchFrom(url(port));
      assertEquals([page.status, page.body], [200, "app"], "0.0.0.0/0 lets IPv4 clients through");

      // A hand-edited file with three problems: the proxy's log names all three, each with its key path.
      const file = join(dir, "maintenance.json");
      await Deno.writeTextFile(file, JSON.stringify({ since: "soon", allow: ["10.0.0.1", "nope"], retryAfter: 0 }));
      await maintenanceReload(root);
      const problems = '3 problems: "since" must be a time such as "2026-12-03T15:00:00Z" (got "soon"); "allow.1": ' +
        '"nope" must be an IP address or a CIDR range such as 10.0.0.0/8 or fd00::/8; "retryAfter" must be a whole ' +
        "number of seconds from 1 to 86400 (got 0)";
      assert(logs.some((line) => line.startsWith(`web: ${file}: ${problems}`)), logs.join("\n"));
      const off = await maintenance(root, ["web", "off"]);
      assertEquals(off.code, 0, off.output);
      assertEquals((await fetchFrom(url(port))).body, "app");
    });
  } finally {
    await app.close();
  }
});

Deno.test("maintenance through a trusted proxy: the client X-Forwarded-For names is allowed, never a spoofed one; `on` again updates", async () => {
  const app = plainApp();
  try {
    await withProxy(async ({ root, proxy, app: setUp, url }) => {
      const port = await setUp("web", { port: app.port });
      await proxy.start();
      assertEquals((await maintenance(root, ["web", "on", "--allow", "203.0.113.9"])).code, 0);
      const trustedPeer = Deno.createHttpClient({ localAddress: "127.0.0.1" });
      const otherPeer = Deno.createHttpClient({ localAddress: "127.0.0.2" });
      try {
        const xff = { "x-forwarded-for": "203.0.113.9" };
        assertEquals((await fetchFrom(url(port), { client: trustedPeer, headers: xff })).body, "app");
        assertEquals((await fetchFrom(url(port), { client: trustedPeer })).status, 503);
        assertEquals((await fetchFrom(url(port), { client: otherPeer, headers: xff })).status, 503, "spoofed");
        // `on` again updates the message and the allow list; `since` stays.
        const file = join(deploymentsRoot(root), "web", "maintenance.json");
        const first = JSON.parse(await Deno.readTextFile(file));
        const again = await maintenance(root, ["web", "on", "--message", "Second <try>", "--allow", "10.0.0.0/8"]);
        assertEquals(again.code, 0, again.output);
        assertMatch(
          again.stdout,
          /^web: maintenance since .*, Retry-After 60 s, allowed: 10\.0\.0\.0\/8 \(updated; what was not given is kept\)\.\n/,
        );
        assertEquals(JSON.parse(await Deno.readTextFile(file)), {
          since: first.since,
          message: "Second <try>",
          allow: ["10.0.0.0/8"],
          retryAfter: 60,
        });
        assertEquals(
          (await fetchFrom(url(port), { client: trustedPeer, headers: xff })).status,
          503,
          "no longer allowed",
        );
        assert((await fetchFrom(url(port))).body.includes("<p>Second &#60;try&#62;</p>"));
        // Only --retry-after: the message and the allow list stay.
        assertEquals((await maintenance(root, ["web", "on", "--retry-after", "30"])).code, 0);
        assertEquals(JSON.parse(await Deno.readTextFile(file)), {
          since: first.since,
          message: "Second <try>",
          allow: ["10.0.0.0/8"],
          retryAfter: 30,
        });
      } finally {
        trustedPeer.close();
        otherPeer.close();
      }
    }, { proxyYml: "trustedProxies: [127.0.0.1]\n" });
  } finally {
    await app.close();
  }
});

Deno.test("maintenance with real deploys: bad input changes nothing; a deploy during maintenance works and stays in maintenance; survives a proxy restart; status shows it", async () => {
  await withServer(async (server) => {
    const port = freePort();
    const url = `http://127.0.0.1:${port}/`;
    const repo = await AppRepo.create(server, "mweb", await server.setupApp("mweb", { port }));
    await repo.python("mweb", "v1", "ok", { files: { "maintenance.html": "<h1>v1: back soon</h1>" } });
    await repo.pushOk();
    assertEquals(await fetchFrom(url).then((r) => r.body), "v1");

    // Bad input: exit 2, the exact message, nothing changed on disk.
    const before = await snapshot(server);
    const corpus: [string[], string][] = [
      [["mweb"], 'error: "maintenance" needs <on|off>\nhint: see deploy-paradigm maintenance --help\n'],
      [
        ["mweb", "of"],
        'error: maintenance takes "on" or "off" after the app, got "of"\nhint: deploy-paradigm ' +
        "maintenance mweb on [--message TEXT] [--allow IP] [--retry-after SECONDS]\n",
      ],
      [
        ["nope", "on"],
        `error: app "nope" is not set up on this server: ${server.paths("nope").config} does not exist\n` +
        `hint: run \`deploy-paradigm setup nope\` on this server first (or write ${
          server.paths("nope").config
        } with port, manager and env)\n`,
      ],
      [
        ["mweb", "on", "--allow", "10.0.0.300"],
        'error: --allow "10.0.0.300" must be an IP address or a CIDR range ' +
        "such as 10.0.0.0/8 or fd00::/8\nhint: give IP addresses or CIDR ranges, e.g. --allow 203.0.113.7 --allow " +
        "10.0.0.0/8,2001:db8::/32\n",
      ],
      [
        ["mweb", "on", "--allow", "fd00::1/8"],
        'error: --allow "fd00::1/8" has bits set past its /8 prefix: write ' +
        '"fd00::/8"\nhint: give IP addresses or CIDR ranges, e.g. --allow 203.0.113.7 --allow ' +
        "10.0.0.0/8,2001:db8::/32\n",
      ],
      [
        ["mweb", "on", "--retry-after", "0"],
        "error: --retry-after must be a whole number of seconds from 1 to 86400 " +
        '(got "0")\nhint: e.g. --retry-after 120 for two minutes; without it clients are told 60\n',
      ],
      [
        ["mweb", "on", "--retry-after", "1m"],
        "error: --retry-after must be a whole number of seconds from 1 to " +
        '86400 (got "1m")\nhint: e.g. --retry-after 120 for two minutes; without it clients are told 60\n',
      ],
      [
        ["mweb", "off", "--allow", "::1"],
        'error: --allow goes with "on", not "off"\nhint: deploy-paradigm ' +
        "maintenance mweb off\n",
      ],
      [
        ["mweb", "on", "--allow"],
        "error: option --allow needs a value <ip>\nhint: see deploy-paradigm maintenance " +
        "--help\n",
      ],
    ];
    for (const [args, expected] of corpus) {
      const result = await server.cli(["maintenance", ...args]);
      assertEquals([result.code, result.stderr, result.stdout], [2, expected, ""], args.join(" "));
    }
    assertEquals(await snapshot(server), before, "bad input changed nothing on disk");

    const load = new LoadGenerator(url, 3).start();
    await sleep(300);
    const onStart = performance.now();
    const on = await server.cli(["maintenance", "mweb", "on", "--message", "Upgrading", "--retry-after", "15"]);
    const onEnd = performance.now();
    assertEquals(on.code, 0, on.output);
    const state = JSON.parse(await Deno.readTextFile(join(server.paths("mweb").dir, "maintenance.json")));
    assertEquals(state, { since: state.since, message: "Upgrading", allow: [], retryAfter: 15 });
    assertEquals((await status(server, "mweb")).maintenance, state, "status.json says it");
    let page = await fetchFrom(url);
    assertEquals([page.status, page.retryAfter, page.body], [503, "15", "<h1>v1: back soon</h1>"]);

    // A deploy during maintenance: health checks go to the slot's port; the app stays in maintenance.
    await repo.python("mweb", "v2", "ok", { files: { "maintenance.html": "<h1>v2: back soon</h1>" } });
    const pushed = await repo.pushOk();
    assertMatch(pushed.output, /! mweb is in maintenance: the proxy answers 503 until `maintenance mweb off`/);
    assertEquals(
      (await status(server, "mweb")).version,
      (await repo.git(["rev-parse", "--short=7", "HEAD"])).stdout.trim(),
    );
    page = await fetchFrom(url);
    assertEquals([page.status, page.body], [503, "<h1>v2: back soon</h1>"], "the new release's page");
    assertEquals(
      (await status(server, "mweb")).maintenance,
      { ...state, retryAfter: 15 },
      "the deploy's status.json keeps it",
    );
    const offLoadAt = performance.now();
    await load.stop();
    const outside = load.samples.filter((s) => s.at < onStart);
    assertEquals(outside.filter((s) => s.status !== 200), [], "0 failed before");
    assert(outside.length > 20, `too few requests before: ${outside.length}`);
    const inside = between(load.samples, onEnd, offLoadAt);
    assert(inside.length > 50, `too few requests while on: ${inside.length}`);
    assertEquals(
      inside.filter((s) => s.status !== 503 || s.retryAfter !== "15").slice(0, 3),
      [],
      `only 503 while on (sent after ${onEnd})`,
    );
    assert(!/mweb: maintenance off/.test(server.proxyLog), server.proxyLog);

    // `status` shows it (the table and JSON).
    const table = await server.cli(["status"]);
    assertEquals(table.code, 0, table.output);
    assertMatch(
      table.stdout,
      /^mweb\s+IN MAINTENANCE since \d{4}-\d\d-\d\d \d\d:\d\d UTC, Retry-After 15 s — message: Upgrading$/m,
    );
    const json = JSON.parse((await server.cli(["status", "mweb", "--json"])).stdout);
    assertEquals(json.maintenance.message, "Upgrading");
    // The fleet (collector, store, API, dashboard in Chromium) shows a maintenance badge on the app.
    const badge = await dashboardBadge(server.prefix, "mweb");
    assertEquals(badge.text, "maintenance");
    assertMatch(
      badge.title ?? "",
      /^In maintenance: the proxy answers 503 · since .* · Retry-After 15 s · no address allowed · message: Upgrading$/,
    );

    // The proxy restarts: the app is still in maintenance (it is on disk), never served meanwhile.
    await server.stopProxy();
    await server.startProxy();
    let answer: Awaited<ReturnType<typeof fetchFrom>> | undefined;
    for (let i = 0; i < 100 && !answer; i++) {
      answer = await fetchFrom(url).catch(() => undefined);
      if (!answer) await sleep(100);
    }
    assertEquals([answer?.status, answer?.body], [503, "<h1>v2: back soon</h1>"], "after a proxy restart");

    // A config.yml that does not load: the proxy could not re-read the route, so `off` (as `on`) refuses with
    // its problems and changes nothing: still in maintenance, on disk, in status.json and at the proxy.
    const config = server.paths("mweb").config;
    const good = await Deno.readTextFile(config);
    await Deno.writeTextFile(config, `${good}prot: 8080\n`);
    const untouched = await snapshot(server);
    const broken = await server.cli(["maintenance", "mweb", "off"]);
    assertEquals(broken.code, 2, broken.output);
    assertMatch(broken.stderr, /config\.yml:\d+:1: "prot" is not a known key/);
    assert(!/out of maintenance/.test(broken.stdout), broken.stdout);
    assertEquals(await snapshot(server), untouched);
    assertEquals((await fetchFrom(url)).status, 503);
    await Deno.writeTextFile(config, good);

    const off = await server.cli(["maintenance", "mweb", "off"]);
    assertEquals(off.code, 0, off.output);
    assertEquals(await fetchFrom(url).then((r) => [r.status, r.body]), [200, "v2"]);
    assertEquals((await status(server, "mweb")).maintenance, undefined, "status.json: off");
    const after = await server.cli(["status"]);
    assert(!after.stdout.includes("MAINTENANCE"), after.stdout);

    // strategy: restart: the proxy cannot answer for it, so `on` is refused; a maintenance.json left from
    // when it was blue-green still goes with `off`.
    await server.setupApp("rs", { port: freePort(), strategy: "restart" });
    const refused = await server.cli(["maintenance", "rs", "on"]);
    assertEquals(refused.code, 2, refused.output);
    assertMatch(refused.stderr, /app "rs" has strategy: restart: it listens on its port itself/);
    const left = join(server.paths("rs").dir, "maintenance.json");
    await Deno.writeTextFile(left, JSON.stringify({ since: new Date().toISOString(), allow: [], retryAfter: 60 }));
    const cleared = await server.cli(["maintenance", "rs", "off"]);
    assertEquals(cleared.code, 0, cleared.output);
    assertEquals(cleared.stdout, "rs is out of maintenance: its requests go to the app again.\n");
    assertEquals(await Deno.stat(left).then(() => true, () => false), false);
  });
});
