/**
 * The proxy's metrics for real: {@link serveMetrics} on a loopback socket answered over HTTP,
 * a non-loopback address refused, and {@link startMetricsLog} writing metrics.log files into a
 * temp server root on a short window, which the fleet's local source then lists like any log.
 */
import { join } from "node:path";
import { rejects, throws } from "node:assert/strict";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { DeployParadigmError } from "../../src/errors.ts";
import { LocalSource } from "../../src/fleet/source.ts";
import { appPaths, logsRoot } from "../../src/paths.ts";
import { ProxyMetrics, serveMetrics } from "../../src/proxy/metrics.ts";
import { startMetricsLog } from "../../src/proxy/metrics_log.ts";
import { until } from "../helpers/time.ts";

function ipv6Loopback(): boolean {
  try {
    Deno.listen({ hostname: "::1", port: 0 }).close();
    return true;
  } catch {
    return false;
  }
}

Deno.test("serveMetrics: GET /metrics on 127.0.0.1 answers the Prometheus text; anything else is 404", async () => {
  const metrics = new ProxyMetrics();
  for (let i = 0; i < 3; i++) metrics.begin("shop", "blue")(200, 10, 20);
  metrics.begin("shop", "green")(503, 0, 5);
  const pending = metrics.begin("shop", "green");
  metrics.connectionOpened();
  const server = serveMetrics("127.0.0.1:0", metrics);
  try {
    assert(server.port > 0);
    const base = `http://127.0.0.1:${server.port}`;
    const response = await fetch(`${base}/metrics`, { signal: AbortSignal.timeout(5_000) });
    assertEquals(response.status, 200);
    assertEquals(response.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
    const text = await response.text();
    assertEquals(text, metrics.prometheus());
    for (
      const line of [
        'deploy_paradigm_requests_total{app="shop",slot="blue"} 3',
        'deploy_paradigm_requests_total{app="shop",slot="green"} 2',
        'deploy_paradigm_responses_total{app="shop",slot="green",class="5xx"} 1',
        'deploy_paradigm_request_duration_seconds_count{app="shop",slot="blue"} 3',
        'deploy_paradigm_request_bytes_total{app="shop",slot="blue"} 30',
        'deploy_paradigm_response_bytes_total{app="shop",slot="blue"} 60',
        'deploy_paradigm_requests_in_flight{app="shop",slot="green"} 1',
        "deploy_paradigm_open_connections 1",
      ]
    ) assert(text.split("\n").includes(line), `${line} in:\n${text}`);

    // Each scrape is the state of the moment.
    pending(200, 0, 0);
    const again = await (await fetch(`${base}/metrics?x=1`)).text();
    assertMatch(again, /^deploy_paradigm_requests_in_flight\{app="shop",slot="green"\} 0$/m);

    for (const [method, path] of [["GET", "/"], ["GET", "/metrics/"], ["GET", "/other"], ["POST", "/metrics"]]) {
      const other = await fetch(`${base}${path}`, { method, body: method === "POST" ? "x" : undefined });
      assertEquals(other.status, 404, `${method} ${path}`);
      await other.body?.cancel();
    }
  } finally {
    await server.close();
  }
  // Closed: nothing listens there any more.
  await rejects(fetch(`http://127.0.0.1:${server.port}/metrics`, { signal: AbortSignal.timeout(5_000) }));
});

Deno.test({
  name: "serveMetrics: [::1] works, and an abort signal stops it",
  ignore: !ipv6Loopback(),
  fn: async () => {
    const metrics = new ProxyMetrics();
    metrics.begin("a", "static")(304, 0, 0);
    const controller = new AbortController();
    const server = serveMetrics("[::1]:0", metrics, controller.signal);
    const response = await fetch(`http://[::1]:${server.port}/metrics`, { signal: AbortSignal.timeout(5_000) });
    assertMatch(await response.text(), /^deploy_paradigm_responses_total\{app="a",slot="static",class="3xx"\} 1$/m);
    controller.abort();
    await server.close();
    await rejects(fetch(`http://[::1]:${server.port}/metrics`, { signal: AbortSignal.timeout(5_000) }));
  },
});

Deno.test("serveMetrics: a non-loopback or busy address is refused with the reason", () => {
  const metrics = new ProxyMetrics();
  for (const address of ["0.0.0.0:0", "[::]:0"]) {
    throws(() => serveMetrics(address, metrics), (error: unknown) => {
      assert(error instanceof DeployParadigmError);
      assertMatch(error.message, /not a loopback address/);
      assertMatch(error.suggestion ?? "", /loopback only/);
      return true;
    });
  }
  const busy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    throws(() => serveMetrics(`127.0.0.1:${(busy.addr as Deno.NetAddr).port}`, metrics), (error: unknown) => {
      assert(error instanceof DeployParadigmError);
      assertMatch(error.suggestion ?? "", /another process listens/);
      return true;
    });
  } finally {
    busy.close();
  }
});

Deno.test("startMetricsLog: a JSON line per app per window in <log dir>/metrics.log, which the fleet lists", async () => {
  const root = await Deno.makeTempDir({ prefix: "dp-metrics-" });
  const problems: string[] = [];
  const metrics = new ProxyMetrics();
  const interval = 200;
  const writer = startMetricsLog({ root, metrics, intervalMs: interval, log: (line) => problems.push(line) });
  const shopLog = join(appPaths("shop", root).logDir, "metrics.log");
  const lines = async () =>
    (await Deno.readTextFile(shopLog).catch(() => "")).split("\n").filter(Boolean).map((line) => JSON.parse(line));
  try {
    for (let i = 0; i < 5; i++) metrics.begin("shop", "blue")(200, 1, 2);
    metrics.begin("shop", "green")(404, 0, 3);
    metrics.begin("-", "-")(404, 0, 9); // no app: not written anywhere
    const open = metrics.begin("api", "blue"); // in flight across windows
    await until(3_000, "a first line", async () => (await lines()).length >= 1);
    metrics.begin("shop", "blue")(500, 0, 0);
    await until(3_000, "a second line", async () => (await lines()).length >= 2);
    open(200, 0, 0);
    await until(
      3_000,
      "api's request ended",
      async () =>
        (await Deno.readTextFile(join(appPaths("api", root).logDir, "metrics.log")).catch(() => "")).includes(
          '"2xx":1',
        ),
    );
  } finally {
    await writer.stop();
  }
  try {
    const shop = await lines();
    for (const line of shop) {
      assertEquals(line.app, "shop");
      assertEquals(Date.parse(line.ts) % interval, 0, `ts on a window boundary: ${line.ts}`);
      assertEquals(line.inFlight, 0);
    }
    assertEquals(shop[0].requests, 6);
    assertEquals(shop[0].status, { "2xx": 5, "4xx": 1 });
    assertEquals([shop[0].bytesIn, shop[0].bytesOut], [5, 13]);
    assertEquals(Object.keys(shop[0].slots).sort(), ["blue", "green"]);
    assertEquals(shop[1].status, { "5xx": 1 });
    assertEquals(shop.length, 2, "no line for a window without traffic");
    assert(Date.parse(shop[1].ts) > Date.parse(shop[0].ts));

    const api = (await Deno.readTextFile(join(appPaths("api", root).logDir, "metrics.log"))).trim().split("\n")
      .map((line) => JSON.parse(line));
    assert(api.length >= 2, "a request in flight is reported every window until it ends");
    assertEquals(api.at(-1).inFlight, 0);
    assertEquals(api.slice(0, -1).map((line) => line.inFlight), api.slice(0, -1).map(() => 1));

    const info = await Deno.stat(shopLog);
    assertEquals(info.mode! & 0o777, 0o600); // as every log of the app: a deploy would narrow it otherwise
    assertEquals([...Deno.readDirSync(logsRoot(root))].map((entry) => entry.name).sort(), ["api", "shop"]);
    assertEquals(problems, []);

    // The fleet's collector pulls every <app>/<name>.log: metrics.log is one of them.
    const pulled = await new LocalSource(root).pull();
    assertEquals([...pulled.logs.keys()].sort(), ["api/metrics.log", "shop/metrics.log"]);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("startMetricsLog: appends to an existing file, refuses a symlink, and reports problems without throwing", async () => {
  const root = await Deno.makeTempDir({ prefix: "dp-metrics-" });
  try {
    const problems: string[] = [];
    const keptLog = join(appPaths("kept", root).logDir, "metrics.log");
    await Deno.mkdir(appPaths("kept", root).logDir, { recursive: true });
    await Deno.writeTextFile(keptLog, "earlier line\n");
    const target = join(root, "elsewhere");
    await Deno.writeTextFile(target, "");
    await Deno.mkdir(appPaths("linked", root).logDir, { recursive: true });
    await Deno.symlink(target, join(appPaths("linked", root).logDir, "metrics.log"));
    await Deno.mkdir(logsRoot(root), { recursive: true });
    await Deno.writeTextFile(join(logsRoot(root), "blocked"), "a file where the log dir should be");

    const metrics = new ProxyMetrics();
    const writer = startMetricsLog({ root, metrics, log: (line) => problems.push(line) }); // a whole minute
    for (const app of ["blocked", "linked", "kept"]) metrics.begin(app, "blue")(200, 0, 0);
    await writer.stop(); // writes the partial window
    await writer.stop(); // a second stop does nothing more

    const kept = (await Deno.readTextFile(keptLog)).split("\n");
    assertEquals(kept.length, 3);
    assertEquals(kept[0], "earlier line");
    assertEquals(JSON.parse(kept[1]).app, "kept");
    assertEquals(await Deno.readTextFile(target), "", "nothing written through the symlink");
    assertEquals(problems.length, 2, problems.join("\n"));
    assertMatch(problems.find((line) => line.includes("/blocked/")) ?? "", /^metrics: cannot append to /);
    assertMatch(problems.find((line) => line.includes("/linked/")) ?? "", /not a plain file/);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
