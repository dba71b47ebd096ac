/**
 * Alert rules end to end: fake VPS hosts (network namespace + sshd, tests/helpers/vps.ts) pulled by
 * the real `deploy-paradigm fleet collect --once`, one process per cycle (the rules' states kept in
 * the home's alerts.json in between), alerting a webhook receiver on loopback. A tmpfs on the host
 * filled and emptied between cycles (its use read by the pull's real `df`), a burst of log lines
 * appended on the host, and an app's metrics.log written with the proxy's own counters
 * (src/proxy/metrics.ts) in its real line format. `fleet alerts` and `/metrics` show the states;
 * bad rules are refused before anything is written.
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { openPage, screenshot, withBrowser } from "../helpers/browser.ts";
import { chartData, openChart } from "../helpers/charts.ts";
import { append, Laptop, serve } from "../helpers/fleet.ts";
import { receiver } from "../helpers/receiver.ts";
import { BIN, freePort, run } from "../helpers/server.ts";
import { FakeVps } from "../helpers/vps.ts";
import { ProxyMetrics } from "../../src/proxy/metrics.ts";

/** A fake host with `options`, a laptop with it as `web1`, a receiver, and `rules` (YAML lines) in the config. */
async function withRules(
  options: Parameters<typeof FakeVps.create>[0],
  rules: string,
  fn: (vps: FakeVps, laptop: Laptop, hooks: Awaited<ReturnType<typeof receiver>>) => Promise<void>,
) {
  const hooks = await receiver();
  const laptop = await Laptop.create();
  let vps: FakeVps | undefined;
  try {
    vps = await FakeVps.create(options);
    await laptop.addHost("web1", vps);
    await Deno.writeTextFile(
      join(laptop.home, "config.yml"),
      `alerts:\n  - { type: webhook, url: "${hooks.base}/hook" }\nrules:\n${rules}`,
      { append: true },
    );
    await fn(vps, laptop, hooks);
  } finally {
    await laptop.close();
    await vps?.close();
    await hooks.close();
  }
}

/** One `fleet collect --once`: it must work; the notices that arrived during it, as `event title`. */
async function cycle(laptop: Laptop, hooks: Awaited<ReturnType<typeof receiver>>): Promise<string[]> {
  const before = hooks.got.length;
  const result = await laptop.collect();
  assertEquals(result.code, 0, result.output);
  return hooks.at("/hook").slice(before);
}

Deno.test("fleet rules: a filling disk fires once after 2 cycles and recovers once; 100 matching lines are one alert", async () => {
  await withRules(
    { tmpfs: { path: "/srv/data", size: "16m" } },
    "  - { name: disk, metric: disk.used_percent, above: 50, for: 2 cycles, mount: /srv/data, severity: critical }\n" +
      `  - { name: fatal, query: '"Traceback" OR FATAL', app: api, atLeast: 5, within: 5m }\n`,
    async (vps, laptop, hooks) => {
      await append(vps, "api", "error.log", "started\n");
      assertEquals(await cycle(laptop, hooks), [], "an empty disk, no matching line");
      // The fill is sampled in the next minute: the server page's disk chart (1-minute buckets) shows the rise.
      await new Promise((r) => setTimeout(r, 61_000 - Date.now() % 60_000));

      const fill = await vps.ssh("fallocate -l 10M /srv/data/fill && df -P /srv/data");
      assertEquals(fill.code, 0, fill.output);
      await append(vps, "api", "error.log", Array.from({ length: 100 }, (_, i) => `FATAL worker ${i} died\n`).join(""));
      assertEquals(await cycle(laptop, hooks), [
        'rule_firing web1/api: 100 lines matching "Traceback" OR FATAL within 5m',
      ], "the burst: one alert; the disk: one cycle over, pending");
      const pending = await laptop.fleet("alerts");
      assertEquals(pending.code, 0, pending.output);
      assertMatch(pending.output, /^fatal +warning +web1\/api +FIRING +\S+ +100 lines +≥ 5 lines matching/m);
      assertMatch(
        pending.output,
        /^disk +critical +web1 \/srv\/data +pending +\S+ +62\.5 % +disk\.used_percent above 50 %/m,
      );

      const fired = await cycle(laptop, hooks);
      assertEquals(fired, ["rule_firing web1 /srv/data: disk.used_percent is 62.5 %, above 50 % for 2 cycles"]);
      const firing = hooks.got.at(-1)!.body;
      assertEquals(
        [firing.rule, firing.severity, firing.server, firing.mount, firing.value, firing.threshold],
        ["disk", "critical", "web1", "/srv/data", "62.5 %", "above 50 %"],
      );
      // The running `fleet` (its own cycles: still over, nothing more) shows the firing rules on the dashboard.
      const running = await serve(laptop);
      try {
        const listed = await running.json("/api/fleet");
        assertEquals(
          listed.body.rules.map((r: Record<string, string>) => `${r.rule} ${r.state} ${r.server} ${r.mount ?? r.app}`),
          ["disk firing web1 /srv/data", "fatal firing web1 api"],
        );
        await withBrowser(async (browser) => {
          const watched = await openPage(browser);
          try {
            await watched.page.goto(`${running.base}/`);
            await watched.page.waitForSelector("section.attention li.state-rule");
            const lines = await watched.page.locator("section.attention li.state-rule").allTextContents();
            assertMatch(
              lines[0],
              /^web1 \/srv\/data firing: disk \(critical\) · disk\.used_percent above 50 % for 2 cycles · is 62\.5 % · since /,
            );
            assertMatch(
              lines[1],
              /^web1 \/ api firing: fatal \(warning\) · ≥ 5 lines matching "Traceback" OR FATAL within 5m/,
            );
            assertMatch(await watched.page.locator("p.summary").textContent() ?? "", /2 alert rules are firing\./);

            await openChart(watched, running.base, "#/server/web1", 'figure[data-chart="disk"] svg.chart');
            const rules = await watched.page.locator("[data-rules] li.state-rule").allTextContents();
            assertEquals(rules.length, 2, rules.join("\n"));
            const disk = await chartData(watched.page, "disk");
            const data = disk.legend.find((l) => l.label === "/srv/data");
            assert(data, JSON.stringify(disk.legend));
            const values = disk.series[data.key].filter((v): v is number => v !== null);
            assert(values.length >= 2 && values[0] < 10 && values.at(-1)! > 60, `the rise: ${JSON.stringify(values)}`);
            await screenshot(watched.page, "rules-disk-rise");
            assertEquals(watched.problems, []);
          } finally {
            await watched.context.close();
          }
        });
      } finally {
        await running.stop();
      }
      assertEquals(hooks.got.length, 2, "still over: nothing more");

      assertEquals((await vps.ssh("rm /srv/data/fill")).code, 0);
      assertEquals(await cycle(laptop, hooks), [], "one clear cycle: not yet");
      assertEquals(await cycle(laptop, hooks), [
        "rule_recovered web1 /srv/data: disk.used_percent recovered: 0 %, below 47.5 %",
      ]);
      assertEquals(hooks.got.length, 3, "3 notices in 6 cycles: one per transition");

      const listed = await laptop.fleet("alerts", "--json");
      assertEquals(listed.code, 0, listed.output);
      const rules = JSON.parse(listed.stdout).rules as { name: string; subjects: Record<string, unknown>[] }[];
      assertEquals(rules.map((r) => [r.name, r.subjects.map((s) => `${s.server} ${s.mount ?? s.app} ${s.state}`)]), [
        ["disk", ["web1 /srv/data ok"]],
        ["fatal", ["web1 api firing"]],
      ]);

      // /metrics of the running `fleet` shows each rule's subjects.
      const fleet = await serve(laptop);
      try {
        const response = await fetch(`${fleet.base}/metrics`);
        const text = await response.text();
        assertMatch(text, /^fleet_alert_firing\{rule="disk",server="web1",mount="\/srv\/data"\} 0$/m);
        assertMatch(text, /^fleet_alert_firing\{rule="fatal",server="web1",app="api"\} 1$/m);
      } finally {
        await fleet.stop();
      }
    },
  );
});

Deno.test("fleet rules: an app's 5xx rate from the proxy's metrics.log fires once when a release answers 500 on half its requests", async () => {
  await withRules(
    {},
    "  - { name: api 5xx, metric: app.error_percent, above: 10, app: api, within: 5m, minRequests: 50 }\n",
    async (vps, laptop, hooks) => {
      // The proxy's own counters, its minutes written as its metrics log writes them.
      // One minute per cycle, the last ending now: all of them within the rule's 5 minutes.
      const proxy = new ProxyMetrics();
      let end = Date.now() - 3 * 60_000;
      const minute = async (requests: number, failing: number) => {
        for (let i = 0; i < requests; i++) proxy.begin("api", "blue")(i < failing ? 500 : 200, 0, 512);
        const lines = proxy.takeMinute(end);
        end += 60_000;
        await append(vps, "api", "metrics.log", lines.map((line) => JSON.stringify(line) + "\n").join(""));
      };
      await minute(20, 20); // 20 requests in the window, all failing: too few to judge (minRequests 50)
      assertEquals(await cycle(laptop, hooks), []);
      await minute(200, 0); // release 1: 20 of 220 failed (9.1 %)
      assertEquals(await cycle(laptop, hooks), []);
      await minute(200, 100); // release 2: half of its requests answer 500
      const fired = await cycle(laptop, hooks);
      assertEquals(fired.length, 1, fired.join("\n"));
      assertMatch(fired[0], /^rule_firing web1\/api: app\.error_percent is \d+(\.\d)? %, above 10 %$/);
      const rate = Number(/is ([\d.]+) %/.exec(fired[0])![1]);
      assertEquals(rate, 28.6, "120 of 420 requests in the 5 minutes");
      await minute(200, 100);
      assertEquals(await cycle(laptop, hooks), [], "still failing: one alert");
    },
  );
});

/** A Python app answering its version; from `halfFailing`, 500 on every path under /b (half of the routes). */
function routesApp(version: string, halfFailing: boolean): string {
  return `import http.server, os
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ${JSON.stringify(version)}.encode()
        self.send_response(500 if ${halfFailing ? "True" : "False"} and self.path.startswith("/b") else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, fmt, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
`;
}

Deno.test("fleet rules: a real app deployed twice, the second release answering 500 on half its routes under load: the 5xx rule fires once", async () => {
  await withRules(
    {},
    "  - { name: shop 5xx, metric: app.error_percent, above: 10, app: shop, within: 5m, minRequests: 50 }\n",
    async (vps, laptop, hooks) => {
      // The proxy logs each app's requests every wall-clock minute once proxy.yml names a metrics address.
      await Deno.writeTextFile(
        join(vps.deployments, "proxy.yml"),
        `metrics: 127.0.0.1:${9100 + Math.floor(Math.random() * 800)}\n`,
      );
      const port = 18000 + Math.floor(Math.random() * 1000);
      const setup = await vps.ssh(`${BIN} setup shop --port ${port} --manager pm2 --proxy-host ${vps.address} --yes`);
      assertEquals(setup.code, 0, setup.output);
      const work = await Deno.makeTempDir({ prefix: "dp-laptop-" });
      const git = (...args: string[]) => run(["git", ...args], { cwd: work, env: vps.env });
      const metricsLog = join(vps.logs, "shop", "metrics.log");
      const minutes = async () =>
        (await Deno.readTextFile(metricsLog).catch(() => "")).split("\n").filter(Boolean).map((line) =>
          JSON.parse(line)
        );
      const logged = async () => (await minutes()).reduce((n, minute) => n + minute.requests, 0);
      let sent = 0;
      /** Deploys `version`, sends it 200 requests (20 at a time, half to /a…, half to /b…), waits for them in metrics.log. */
      const release = async (version: string, halfFailing: boolean) => {
        await Deno.writeTextFile(join(work, "app.py"), routesApp(version, halfFailing));
        await git("add", "-A");
        await git("commit", "--quiet", "-m", version);
        const push = await git("push", "production", "main");
        assertEquals(push.code, 0, push.output);
        const statuses: number[] = [];
        for (let batch = 0; batch < 10; batch++) {
          statuses.push(
            ...await Promise.all(Array.from({ length: 20 }, async (_, i) => {
              const response = await fetch(`http://${vps.address}:${port}/${i % 2 ? "b" : "a"}/${batch}`);
              await response.body?.cancel();
              return response.status;
            })),
          );
        }
        assertEquals(statuses.filter((status) => status === 500).length, halfFailing ? 100 : 0);
        sent += statuses.length;
        // Minutes end on the wall clock's: up to 60 s (twice, when the load straddled a minute).
        for (let i = 0; i < 1300 && await logged() < sent; i++) await new Promise((r) => setTimeout(r, 100));
        assertEquals(await logged(), sent, "the proxy's metrics.log counts every request within 130 s");
      };
      try {
        await git("init", "--quiet", "-b", "main");
        await git("remote", "add", "production", `root@${vps.address}:/var/repos/shop.git`);
        await Deno.writeTextFile(
          join(work, "deploy.yml"),
          "name: shop\ntype: python\ncommand: python app.py\nwatch: 0\n" +
            "healthCheck: { path: /health, interval: 200ms, successes: 2 }\n",
        );
        await release("v1", false);
        assertEquals(await cycle(laptop, hooks), [], "release 1 answers every request");
        await release("v2", true);
        const fired = await cycle(laptop, hooks);
        assertEquals(fired.length, 1, fired.join("\n"));
        assertMatch(fired[0], /^rule_firing web1\/shop: app\.error_percent is [\d.]+ %, above 10 %$/);
        const errors = (await minutes()).reduce((n, minute) => n + (minute.status["5xx"] ?? 0), 0);
        assertEquals([errors, sent], [100, 400]);
        assertEquals(hooks.got.at(-1)!.body.value, "25 %", "100 of the 400 requests in the window");
        assertEquals(await cycle(laptop, hooks), [], "still failing: one alert");
        // The app's error-rate chart: nothing before the second deploy's mark, about half after it.
        const running = await serve(laptop);
        try {
          await withBrowser(async (browser) => {
            const watched = await openPage(browser);
            try {
              await openChart(watched, running.base, "#/server/web1?app=shop", 'figure[data-chart="errors"] svg.chart');
              const errors = await chartData(watched.page, "errors");
              assertEquals(errors.marks.length, 2, JSON.stringify(errors.marks));
              const mark = errors.marks[1];
              const at = errors.ts.findLastIndex((ts) => ts <= mark.ts); // the minute the deploy happened in
              const rates = errors.series.errorRate;
              const before = rates.slice(0, at).filter((v) => v !== null);
              const after = rates.slice(at).filter((v) => v !== null);
              assert(before.length >= 1 && before.every((v) => v === 0), `before the mark: ${JSON.stringify(rates)}`);
              assert(after.length >= 1 && after.every((v) => v! >= 0.4), `after the mark: ${JSON.stringify(rates)}`);
              assert(errors.xs[at] <= mark.x, "the mark is drawn within its minute");
              const releases = await watched.page.locator("table.releases tbody tr").allTextContents();
              const answer = await running.json("/api/metrics/app?server=web1&app=shop&range=1h");
              const why = JSON.stringify({ releases: answer.body.releases, deploys: answer.body.deploys });
              assertEquals(releases.length, 2, why);
              assertMatch(releases[0], /50\.0 %/, `the second release, newest first: half 5xx; ${why}`);
              assertMatch(releases[1], /0\.00 %/, `the first release: none; ${why}`);
              await screenshot(watched.page, "rules-error-step");
              assertEquals(watched.problems, []);
            } finally {
              await watched.context.close();
            }
          });
        } finally {
          await running.stop();
        }
      } finally {
        await Deno.remove(work, { recursive: true });
      }
    },
  );
});

Deno.test("fleet rules: a cron job that failed fires once, and recovers when a later run is ok", async () => {
  await withRules({}, "  - { cron: failed, app: api, severity: critical }\n", async (vps, laptop, hooks) => {
    const run = (job: string, outcome: string, exitCode: number | null) => {
      const start = new Date().toISOString();
      const line = { job, release: "20261203-100000-000", start, end: start, exitCode, durationMs: 20, outcome };
      return append(vps, "api", "cron.log", JSON.stringify(line) + "\n");
    };
    await run("backup", "ok", 0);
    await run("report", "ok", 0);
    assertEquals(await cycle(laptop, hooks), []);
    await run("backup", "failed", 3);
    assertEquals(await cycle(laptop, hooks), ["rule_firing cron job backup of web1/api failed"]);
    assertEquals(hooks.got.at(-1)!.body.severity, "critical");
    await run("backup", "timeout", null);
    await run("backup", "skipped", null);
    assertEquals(await cycle(laptop, hooks), [], "failed again, then skipped: still the one alert");
    await run("backup", "ok", 0);
    assertEquals(await cycle(laptop, hooks), ["rule_recovered cron job backup of web1/api ran ok again"]);
  });
});

Deno.test("fleet rules: bad rules are refused at start by fleet, fleet collect and fleet alerts, with positions; nothing written", async () => {
  const home = await Deno.makeTempDir({ prefix: "dp-fleet-rules-" });
  try {
    const config = join(home, "config.yml");
    await Deno.writeTextFile(
      config,
      `servers:\n  - { name: web1, host: 10.251.255.1 }\nrules:\n  - { metric: disk.usedpercent, above: 90 }\n` +
        `  - { query: 'GET /api', atLeast: 5 }\n`,
    );
    const env = { FLEET_MONITOR_HOME: home, NO_COLOR: "1" };
    for (const args of [["collect", "--once"], ["alerts"], ["--port", String(freePort())]]) {
      const result = await run([BIN, "fleet", ...args], { env });
      assert(result.code !== 0, result.output);
      assertMatch(
        result.output,
        /config\.yml:4:15: "rules\.0\.metric" "disk\.usedpercent" is not a metric; did you mean "disk\.used_percent"\?/,
      );
      assertMatch(
        result.output,
        /config\.yml:5:19: "rules\.1\.query" cannot search for "GET \/api": fts5: syntax error near "\/"/,
      );
    }
    assertEquals((await Array.fromAsync(Deno.readDir(home))).map((e) => e.name), ["config.yml"]);
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});

Deno.test("fleet: a port in use is one line naming the address, exit 2, nothing created", async () => {
  const home = await Deno.makeTempDir({ prefix: "dp-fleet-port-" });
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    await Deno.writeTextFile(join(home, "config.yml"), "servers:\n  - { name: web1, host: 10.251.255.1 }\n");
    const port = (taken.addr as Deno.NetAddr).port;
    const result = await run([BIN, "fleet", "--port", String(port)], {
      env: { FLEET_MONITOR_HOME: home, NO_COLOR: "1" },
    });
    assertEquals(result.code, 2, result.output);
    assertEquals(
      result.output.trim(),
      `error: 127.0.0.1:${port} is in use by another process: choose another port with --port`,
    );
    assertEquals((await Array.fromAsync(Deno.readDir(home))).map((e) => e.name), ["config.yml"]);
  } finally {
    taken.close();
    await Deno.remove(home, { recursive: true });
  }
});
