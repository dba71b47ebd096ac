/**
 * The proxy's metrics without sockets: counts, status classes, the histogram and its quantiles,
 * the Prometheus text (escaping, shape), the minute window and its reset (an injected clock), and
 * the loopback-only metrics address.
 */
import { throws } from "node:assert/strict";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { DeployParadigmError } from "../../src/errors.ts";
import { BUCKETS, parseMetricsAddress, ProxyMetrics, quantileMs } from "../../src/proxy/metrics.ts";

/** A clock the test moves by hand. */
function clock(start = Date.UTC(2030, 0, 2, 3, 4, 0)) {
  const c = { t: start, now: () => c.t };
  return c;
}

/** The samples of a Prometheus text, `name{labels}` → value; checks every line's shape on the way. */
function samples(text: string): Map<string, number> {
  assert(text.endsWith("\n"), "the text ends with a newline");
  const out = new Map<string, number>();
  const typed = new Set<string>();
  for (const line of text.slice(0, -1).split("\n")) {
    const comment = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$/.exec(line);
    if (comment) {
      if (comment[1] === "TYPE") typed.add(comment[2]);
      continue;
    }
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_]\w*="(?:[^"\\\n]|\\[\\"n])*",?)*\})? (\S+)$/.exec(line);
    assert(match, `a sample line: ${JSON.stringify(line)}`);
    const family = match[1].replace(/_(bucket|sum|count)$/, "");
    assert(typed.has(match[1]) || typed.has(family), `${match[1]} comes after its # TYPE`);
    assert(!out.has(match[1] + (match[2] ?? "")), `one sample per series: ${line}`);
    out.set(match[1] + (match[2] ?? ""), Number(match[3]));
  }
  return out;
}

Deno.test("metrics: requests, status classes, bytes, in flight and connections per app and slot", () => {
  const metrics = new ProxyMetrics();
  const statuses = [101, 200, 204, 301, 404, 499, 503, 0];
  for (const status of statuses) metrics.begin("shop", "blue")(status, 10, 100);
  metrics.begin("shop", "green")(200, 1, 2);
  const pending = metrics.begin("shop", "green");
  metrics.begin("-", "-")(404, 0, 9);
  metrics.connectionOpened();
  metrics.connectionOpened();
  metrics.connectionClosed();
  let s = samples(metrics.prometheus());
  const blue = 'app="shop",slot="blue"';
  const green = 'app="shop",slot="green"';
  assertEquals(s.get(`deploy_paradigm_requests_total{${blue}}`), 8);
  assertEquals(s.get(`deploy_paradigm_requests_total{${green}}`), 2, "counted when they start");
  for (const [cls, n] of [["1xx", 1], ["2xx", 2], ["3xx", 1], ["4xx", 2], ["5xx", 1], ["other", 1]] as const) {
    assertEquals(s.get(`deploy_paradigm_responses_total{${blue},class="${cls}"}`), n, cls);
  }
  assertEquals(s.get(`deploy_paradigm_responses_total{${green},class="2xx"}`), 1);
  assertEquals(s.get(`deploy_paradigm_responses_total{${green},class="5xx"}`), 0, "known classes start at 0");
  assertEquals(s.has(`deploy_paradigm_responses_total{${green},class="other"}`), false, "other only when seen");
  assertEquals(s.get(`deploy_paradigm_request_bytes_total{${blue}}`), 80);
  assertEquals(s.get(`deploy_paradigm_response_bytes_total{${blue}}`), 800);
  assertEquals(s.get(`deploy_paradigm_requests_in_flight{${green}}`), 1);
  assertEquals(s.get(`deploy_paradigm_requests_in_flight{${blue}}`), 0);
  assertEquals(s.get(`deploy_paradigm_response_bytes_total{app="-",slot="-"}`), 9);
  assertEquals(s.get("deploy_paradigm_open_connections"), 1);

  pending(502, 5, 6);
  pending(200, 1000, 1000); // a second call does nothing
  metrics.connectionClosed();
  metrics.connectionClosed(); // never below 0
  s = samples(metrics.prometheus());
  assertEquals(s.get(`deploy_paradigm_requests_in_flight{${green}}`), 0);
  assertEquals(s.get(`deploy_paradigm_responses_total{${green},class="5xx"}`), 1);
  assertEquals(s.get(`deploy_paradigm_responses_total{${green},class="2xx"}`), 1);
  assertEquals(s.get(`deploy_paradigm_request_bytes_total{${green}}`), 6);
  assertEquals(s.get("deploy_paradigm_open_connections"), 0);
});

Deno.test("metrics: the histogram's buckets are cumulative, upper bounds inclusive, with _sum and _count", () => {
  const c = clock();
  const metrics = new ProxyMetrics({ now: c.now });
  const request = (ms: number) => {
    const end = metrics.begin("api", "blue");
    c.t += ms;
    end(200, 0, 0);
  };
  for (const ms of [0, 5, 5.5, 30, 200, 999, 20_000]) request(ms);
  const s = samples(metrics.prometheus());
  const bucket = (le: string) =>
    s.get(`deploy_paradigm_request_duration_seconds_bucket{app="api",slot="blue",le="${le}"}`);
  const expected = [2, 3, 3, 4, 4, 5, 5, 6, 6, 6, 6, 7]; // le = 0.005 … 10, +Inf
  [...BUCKETS.map(String), "+Inf"].forEach((le, i) => assertEquals(bucket(le), expected[i], `le=${le}`));
  assertEquals(s.get('deploy_paradigm_request_duration_seconds_count{app="api",slot="blue"}'), 7);
  const sum = s.get('deploy_paradigm_request_duration_seconds_sum{app="api",slot="blue"}')!;
  assert(Math.abs(sum - 21.2395) < 1e-9, `sum ${sum}`);
});

Deno.test("metrics: a clock that steps back counts a request as 0 s", () => {
  const c = clock();
  const metrics = new ProxyMetrics({ now: c.now });
  const end = metrics.begin("api", "green");
  c.t -= 5_000;
  end(200, 0, 0);
  const s = samples(metrics.prometheus());
  assertEquals(s.get('deploy_paradigm_request_duration_seconds_bucket{app="api",slot="green",le="0.005"}'), 1);
  assertEquals(s.get('deploy_paradigm_request_duration_seconds_sum{app="api",slot="green"}'), 0);
});

Deno.test("quantileMs: interpolated within the bucket, like histogram_quantile", () => {
  const empty = new Array(BUCKETS.length + 1).fill(0);
  assertEquals(quantileMs(empty, 0.5), null);
  const one = [...empty];
  one[0] = 10; // ten requests ≤ 5 ms
  assertEquals(quantileMs(one, 0.5), 2.5);
  assertEquals(quantileMs(one, 0.9), 4.5);
  const spread = [...empty];
  spread[0] = 50; // ≤ 5 ms
  spread[3] = 40; // 25–50 ms
  spread[5] = 10; // 100–250 ms
  assertEquals(quantileMs(spread, 0.5), 5);
  assertEquals(quantileMs(spread, 0.9), 50);
  assertEquals(quantileMs(spread, 0.99), 235);
  assertEquals(quantileMs(spread, 0.7), 37.5);
  const slow = [...empty];
  slow[BUCKETS.length] = 3; // all above 10 s: the largest finite bound
  assertEquals(quantileMs(slow, 0.5), 10_000);
});

Deno.test("metrics: label values are escaped (backslash, quote, newline)", () => {
  const metrics = new ProxyMetrics();
  metrics.begin('we"ird\\app\nname', "blue")(200, 0, 0);
  const text = metrics.prometheus();
  assert(text.includes('deploy_paradigm_requests_total{app="we\\"ird\\\\app\\nname",slot="blue"} 1\n'), text);
  samples(text); // every line still has the shape of a sample
  assertEquals(text.split("\n").filter((line) => line.startsWith("name")), [], "no raw newline in a label");
});

Deno.test("metrics: series are sorted by app then slot, and HELP/TYPE come once per family", () => {
  const metrics = new ProxyMetrics();
  for (const [app, slot] of [["zeta", "green"], ["alpha", "static"], ["zeta", "blue"], ["-", "-"]]) {
    metrics.begin(app, slot)(200, 0, 0);
  }
  const text = metrics.prometheus();
  const order = [...text.matchAll(/^deploy_paradigm_requests_total\{app="([^"]*)",slot="([^"]*)"\}/gm)]
    .map((m) => `${m[1]}/${m[2]}`);
  assertEquals(order, ["-/-", "alpha/static", "zeta/blue", "zeta/green"]);
  const types = [...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => `${m[1]} ${m[2]}`);
  assertEquals(types, [
    "deploy_paradigm_requests_total counter",
    "deploy_paradigm_responses_total counter",
    "deploy_paradigm_request_duration_seconds histogram",
    "deploy_paradigm_request_bytes_total counter",
    "deploy_paradigm_response_bytes_total counter",
    "deploy_paradigm_requests_in_flight gauge",
    "deploy_paradigm_open_connections gauge",
  ]);
  const fresh = new ProxyMetrics().prometheus();
  assertMatch(fresh, /^deploy_paradigm_open_connections 0$/m);
  samples(fresh);
});

Deno.test("takeMinute: one line per app with per-slot counts, then a new window", () => {
  const c = clock();
  const metrics = new ProxyMetrics({ now: c.now });
  const timed = (app: string, slot: string, ms: number, status: number, bytesIn = 0, bytesOut = 0) => {
    const end = metrics.begin(app, slot);
    c.t += ms;
    end(status, bytesIn, bytesOut);
  };
  // An earlier window: a request that ended, and two that go on into the next minutes.
  metrics.begin("idle", "blue")(200, 0, 0);
  const longRequest = metrics.begin("shop", "green");
  const socket = metrics.begin("chat", "blue");
  const first = metrics.takeMinute();
  assertEquals(first.map((line) => [line.app, line.requests, line.inFlight]), [
    ["chat", 1, 1],
    ["idle", 1, 0],
    ["shop", 1, 1],
  ]);

  for (let i = 0; i < 9; i++) timed("shop", "blue", 2, 200, 10, 1000);
  timed("shop", "blue", 300, 500, 0, 50);
  timed("shop", "green", 40, 404, 5, 7);
  const end = Date.UTC(2030, 0, 2, 3, 5, 0);
  const lines = metrics.takeMinute(end);
  assertEquals(lines.map((line) => line.app), ["chat", "shop"], "only apps with traffic or in flight, sorted");
  const [chat, shop] = lines;
  assertEquals(chat, {
    ts: "2030-01-02T03:05:00.000Z",
    app: "chat",
    requests: 0,
    status: {},
    p50_ms: null,
    p90_ms: null,
    p95_ms: null,
    p99_ms: null,
    bytesIn: 0,
    bytesOut: 0,
    inFlight: 1,
    slots: {
      blue: {
        requests: 0,
        status: {},
        p50_ms: null,
        p90_ms: null,
        p95_ms: null,
        p99_ms: null,
        bytesIn: 0,
        bytesOut: 0,
        inFlight: 1,
      },
    },
  });
  assertEquals(shop.ts, "2030-01-02T03:05:00.000Z");
  assertEquals(shop.requests, 11);
  assertEquals(shop.status, { "2xx": 9, "4xx": 1, "5xx": 1 });
  assertEquals([shop.bytesIn, shop.bytesOut, shop.inFlight], [95, 9057, 1]);
  // 9 of 11 ≤ 5 ms, one in 25–50 ms, one in 250–500 ms
  assertEquals([shop.p50_ms, shop.p90_ms, shop.p95_ms, shop.p99_ms], [3.056, 47.5, 362.5, 472.5]);
  const slots = shop.slots as Record<string, Record<string, unknown>>;
  assertEquals(Object.keys(slots).sort(), ["blue", "green"]);
  assertEquals(slots.blue.requests, 10);
  assertEquals(slots.blue.status, { "2xx": 9, "5xx": 1 });
  assertEquals([slots.blue.bytesIn, slots.blue.bytesOut, slots.blue.inFlight], [90, 9050, 0]);
  assertEquals(slots.green, {
    requests: 1,
    status: { "4xx": 1 },
    p50_ms: 37.5,
    p90_ms: 47.5,
    p95_ms: 48.75,
    p99_ms: 49.75,
    bytesIn: 5,
    bytesOut: 7,
    inFlight: 1,
  });
  assertEquals(JSON.parse(JSON.stringify(lines)), lines, "plain JSON");

  // The window was reset: only what is still in flight shows, until it ends in a later minute.
  c.t = end + 30_000;
  const quiet = metrics.takeMinute(end + 60_000);
  assertEquals(quiet.map((line) => [line.app, line.requests, line.inFlight]), [["chat", 0, 1], ["shop", 0, 1]]);
  longRequest(200, 0, 123);
  socket(101, 1, 2);
  const later = metrics.takeMinute(end + 120_000);
  assertEquals(later.map((line) => [line.app, line.requests, line.status, line.inFlight]), [
    ["chat", 0, { "1xx": 1 }, 0],
    ["shop", 0, { "2xx": 1 }, 0],
  ]);
  assertEquals(metrics.takeMinute(end + 180_000), [], "nothing at all: no lines");

  // Prometheus' totals are not reset by the minutes.
  const s = samples(metrics.prometheus());
  assertEquals(s.get('deploy_paradigm_requests_total{app="shop",slot="blue"}'), 10);
  assertEquals(s.get('deploy_paradigm_requests_total{app="shop",slot="green"}'), 2);
  assertEquals(s.get('deploy_paradigm_requests_total{app="idle",slot="blue"}'), 1);
});

Deno.test("takeMinute: ts defaults to the clock's now", () => {
  const c = clock(Date.UTC(2031, 5, 6, 7, 8, 9, 10));
  const metrics = new ProxyMetrics({ now: c.now });
  metrics.begin("a", "static")(304, 0, 0);
  assertEquals(metrics.takeMinute()[0].ts, "2031-06-06T07:08:09.010Z");
});

Deno.test("parseMetricsAddress: loopback only, with a reason", () => {
  assertEquals(parseMetricsAddress("127.0.0.1:9464"), { hostname: "127.0.0.1", port: 9464 });
  assertEquals(parseMetricsAddress("127.1.2.3:0"), { hostname: "127.1.2.3", port: 0 });
  assertEquals(parseMetricsAddress("[::1]:9464"), { hostname: "::1", port: 9464 });
  for (const address of ["0.0.0.0:9464", "[::]:9464", "10.0.0.1:9464", "localhost:9464", "[::ffff:127.0.0.1]:9464"]) {
    throws(() => parseMetricsAddress(address), (error: unknown) => {
      assert(error instanceof DeployParadigmError, address);
      assertMatch(error.message, /not a loopback address/);
      assertMatch(error.suggestion ?? "", /loopback only.*127\.0\.0\.1:9464 or \[::1\]:9464/s);
      return true;
    });
  }
  for (const address of ["9464", "127.0.0.1", "127.0.0.1:99999", "127.0.0.1:x", "127.0.0.256:1", "::1:9464", ""]) {
    throws(() => parseMetricsAddress(address), DeployParadigmError, address);
  }
});
