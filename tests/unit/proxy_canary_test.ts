/**
 * The canary split in the proxy without sockets (./src/proxy/canary.ts): the cookie's bucket
 * (hostile values ignored), the address hash, a split applied to a route (and refused when it
 * cannot apply), the handler's choice of side with Set-Cookie, metrics and figures per side, and
 * the control op `canary`. The real proxy is tested in tests/e2e/canary_proxy_test.ts.
 */
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import {
  addressBucket,
  type Canary,
  canaryChange,
  canaryStats,
  chooseSide,
  cookieBucket,
  headSent,
  measureSide,
  withCanary,
} from "../../src/proxy/canary.ts";
import type { CanarySplit } from "../../src/proxy/canary_file.ts";
import { bucketIndex, emptySide, quantileMs } from "../../src/proxy/canary_stats.ts";
import { controlReply } from "../../src/proxy/control.ts";
import type { Client } from "../../src/proxy/forward.ts";
import { type Conn, createHandler, type HandlerDeps } from "../../src/proxy/handler.ts";
import type { Route } from "../../src/proxy/routes.ts";
import { RouteTable } from "../../src/proxy/table.ts";

const SPLIT: CanarySplit = { target: { port: 41002 }, slot: "green", percent: 25, since: "2026-12-03T15:00:00.000Z" };
const ROUTE: Route = {
  app: "shop",
  port: 8000,
  domains: ["shop.test"],
  hsts: false,
  target: { port: 41001 },
  slot: "blue",
};
const COOKIE = /^dp_canary=(\d+); Path=\/; Max-Age=86400; HttpOnly; SameSite=Lax$/;

/** `route` with `split` applied, which must apply. */
function applied(route: Route = ROUTE, split: CanarySplit = SPLIT, before?: Route): Route & { canary: Canary } {
  const result = withCanary(route, split, before);
  assert(!("problem" in result), (result as { problem: string }).problem);
  return result as Route & { canary: Canary };
}

Deno.test("cookieBucket: a whole number 0..9999 from the dp_canary cookie; anything else is none (-1)", () => {
  const cases: [string | null, number][] = [
    ["dp_canary=0", 0],
    ["dp_canary=9999", 9999],
    ["a=1; dp_canary=42; b=2", 42],
    ["a=1;dp_canary=42", 42],
    ["a=1, dp_canary=7", 7], // two Cookie fields joined
    ["dp_canary=0042", 42],
    ["dp_canary=42 ; a=1", 42],
    ["dp_canary=42\t", 42],
    ["dp_canary=12 34", -1],
    ["xdp_canary=5; dp_canary=6", 6], // not the name "xdp_canary"
    ["dp_canary=1; dp_canary=2", 1],
    [null, -1],
    ["", -1],
    ["other=1", -1],
    ["dp_canary=", -1],
    ["dp_canary=10000", -1],
    ["dp_canary=99999999999999999999999", -1],
    ["dp_canary=" + "9".repeat(100_000), -1],
    ["dp_canary=-1", -1],
    ["dp_canary=12abc", -1],
    ["dp_canary=1e3", -1],
    ["dp_canary=0x10", -1],
    ['dp_canary="12"', -1],
    ["dp_canary=12.5", -1],
    ["xdp_canary=5", -1],
  ];
  for (const [header, bucket] of cases) assertEquals(cookieBucket(header), bucket, String(header).slice(0, 40));
});

Deno.test("addressBucket: FNV-1a of the address, stable, 0..9999, spread", () => {
  assertEquals(addressBucket("127.0.0.1"), addressBucket("127.0.0.1"));
  // FNV-1a 32 of "a" is 0xe40c292c.
  assertEquals(addressBucket("a"), 0xe40c292c % 10_000);
  const buckets = Array.from({ length: 4000 }, (_, i) => addressBucket(`10.${(i >> 8) & 255}.${i & 255}.7`));
  assert(buckets.every((b) => Number.isInteger(b) && b >= 0 && b < 10_000));
  const below = buckets.filter((b) => b < 2500).length / buckets.length;
  assert(below > 0.2 && below < 0.3, `25 % of addresses below 2500 (got ${below})`);
});

Deno.test("withCanary: the variant has the canary's target and slot; refused when it cannot apply", () => {
  const route = applied();
  assertEquals(route.canary.threshold, 2500);
  assertEquals(route.canary.stable, route);
  assertEquals(route.canary.variant.target, { port: 41002 });
  assertEquals(route.canary.variant.slot, "green");
  assertEquals(route.canary.variant.canary, route.canary);
  assertEquals(route.canary.stats.stable, emptySide("blue"));
  assertEquals(route.canary.stats.canary, emptySide("green"));
  assertEquals(ROUTE.canary, undefined, "the route given is not changed");
  const problem = (r: Route, s: CanarySplit) => (withCanary(r, s, undefined) as { problem: string }).problem;
  assertMatch(problem({ ...ROUTE, target: undefined }, SPLIT), /ignored: the app has no route\.json/);
  assertMatch(problem(ROUTE, { ...SPLIT, target: { port: 41001 } }), /ignored: its target is route\.json's \(127/);
  assertMatch(
    problem({ ...ROUTE, target: { ports: [41001, 41003] } }, { ...SPLIT, target: { ports: [41003, 41004] } }),
    /ignored: its target shares port 41003 with route\.json's/,
  );
  // The figures go on through a percent change; a new target (either side) starts them again.
  const more = applied(ROUTE, { ...SPLIT, percent: 50 }, route);
  assert(more.canary.stats === route.canary.stats);
  assertEquals(more.canary.threshold, 5000);
  assert(applied(ROUTE, { ...SPLIT, target: { port: 41005 } }, route).canary.stats !== route.canary.stats);
  assert(applied({ ...ROUTE, target: { port: 41009 } }, SPLIT, route).canary.stats !== route.canary.stats);
  assertEquals(canaryChange(route.canary, more.canary), "canary: 50 % of clients → 127.0.0.1:41002 (green)");
  assertEquals(canaryChange(route.canary, applied(ROUTE, SPLIT, route).canary), undefined);
  assertEquals(canaryChange(route.canary, undefined), "canary ended: every request goes to the stable target");
  assertEquals(canaryChange(undefined, route.canary), "canary: 25 % of clients → 127.0.0.1:41002 (green)");
});

const client = (ip: string): Client => ({ ip, scheme: "https", isTrusted: () => false });

Deno.test("chooseSide: a valid cookie decides (no copy); else the address's bucket, with Set-Cookie", () => {
  const { canary } = applied();
  const withCookie = (value: string) => chooseSide(canary, new Headers({ cookie: `dp_canary=${value}` }), client("x"));
  assert(withCookie("0") === canary.variant);
  assert(withCookie("2499") === canary.variant);
  assert(withCookie("2500") === canary.stable);
  assert(withCookie("9999") === canary.stable);
  for (const ip of ["192.0.2.1", "192.0.2.2", "192.0.2.3", "2001:db8::1"]) {
    const side = chooseSide(canary, new Headers({ cookie: "dp_canary=-5" }), client(ip));
    const bucket = addressBucket(ip);
    assertEquals(side.target, bucket < 2500 ? { port: 41002 } : { port: 41001 });
    assertEquals(side.setCookie, `dp_canary=${bucket}; Path=/; Max-Age=86400; HttpOnly; SameSite=Lax`);
  }
  assert(chooseSide(canary) === canary.stable, "no client known: stable");
});

/** A handler over one app with a canary; what it measured, by slot. */
function harness(route: Route) {
  const measured: string[] = [];
  const deps: HandlerDeps = {
    table: () => new RouteTable([route]),
    forward: (r) => Promise.resolve(new Response(`port ${"port" in r.target! ? r.target.port : "?"}`, { status: 200 })),
    websocket: () => Promise.resolve(new Response("ws")),
    serveStatic: () => Promise.resolve(new Response("static")),
    measure: (app, slot) => (status) => void measured.push(`${app}/${slot}/${status}`),
    log: () => {},
  };
  return { handler: createHandler(deps), measured };
}

const conn = (ip: string): Conn => ({ entry: { kind: "https" }, client: client(ip) });

Deno.test("handler: the side by cookie or address, Set-Cookie without a valid cookie, counted per side", async () => {
  const route = applied();
  const { handler, measured } = harness(route);
  const get = (cookie?: string, ip = "192.0.2.1") =>
    handler(new Request("https://shop.test/", { headers: cookie ? { cookie } : {} }), conn(ip));
  const canaryAnswer = await get("dp_canary=100");
  assertEquals([await canaryAnswer.text(), canaryAnswer.headers.get("set-cookie")], ["port 41002", null]);
  const stableAnswer = await get("dp_canary=7000");
  assertEquals([await stableAnswer.text(), stableAnswer.headers.get("set-cookie")], ["port 41001", null]);
  // No cookie, or a hostile one: the address decides, and the cookie is set.
  let sides = { canary: 0, stable: 0 };
  for (let i = 0; i < 200; i++) {
    const ip = `198.51.100.${i % 250}`;
    const response = await get(i % 2 ? "dp_canary=99999" : undefined, ip);
    const [, bucket] = COOKIE.exec(response.headers.get("set-cookie") ?? "") ?? [];
    assertEquals(Number(bucket), addressBucket(ip));
    const text = await response.text();
    assertEquals(text, Number(bucket) < 2500 ? "port 41002" : "port 41001");
    sides = text === "port 41002" ? { ...sides, canary: sides.canary + 1 } : { ...sides, stable: sides.stable + 1 };
  }
  assert(sides.canary > 20 && sides.stable > 100, JSON.stringify(sides));
  assertEquals(measured.slice(0, 2), ["shop/green/200", "shop/blue/200"]);
  const stats = canaryStats(route)!;
  assertEquals(stats.percent, 25);
  assertEquals(stats.since, SPLIT.since);
  assertEquals([stats.canary.slot, stats.canary.requests, stats.canary.errors], ["green", 1 + sides.canary, 0]);
  assertEquals([stats.stable.slot, stats.stable.requests, stats.stable.errors], ["blue", 1 + sides.stable, 0]);
  assertEquals(stats.canary.histogram.reduce((a, b) => a + b, 0), stats.canary.requests, "each in the histogram");
  assert(stats.canary.histogram[bucketIndex(0)] + stats.canary.histogram[bucketIndex(1)] > 0, "fast answers");
  assert(stats.canary.histogram !== route.canary.stats.canary.histogram, "a copy");
  assertEquals(canaryStats(ROUTE), null);
  assertEquals(canaryStats(undefined), null);
});

Deno.test("handler: an app without a canary answers without the cookie; 5xx are counted on their side", async () => {
  const plain = harness(ROUTE);
  const answer = await plain.handler(new Request("https://shop.test/"), conn("192.0.2.1"));
  assertEquals(answer.headers.get("set-cookie"), null);
  await answer.body?.cancel();
  const route = applied();
  const failing = createHandler({
    table: () => new RouteTable([route]),
    forward: () => Promise.resolve(new Response("oops", { status: 503 })),
    serveStatic: () => Promise.resolve(new Response("static")),
    log: () => {},
  });
  for (const bucket of [1, 2, 3, 9000]) {
    const response = await failing(
      new Request("https://shop.test/", { headers: { cookie: `dp_canary=${bucket}` } }),
      conn("192.0.2.1"),
    );
    await response.body?.cancel();
  }
  const stats = canaryStats(route)!;
  assertEquals([stats.canary.requests, stats.canary.errors, stats.stable.requests, stats.stable.errors], [3, 3, 1, 1]);
});

Deno.test("control op canary: the figures, null without a canary, a bad app value refused", async () => {
  const ops = {
    reload: () => Promise.resolve(1),
    drain: () => Promise.resolve({ drained: true, inFlight: 0 }),
    status: () => [],
    canary: (app: string) => {
      if (app !== "shop") throw new Error(`the proxy serves no app named ${app}`);
      return canaryStats(applied());
    },
  };
  const reply = await controlReply('{"op":"canary","app":"shop"}', ops);
  assertEquals(reply.ok, true);
  assertEquals((reply.stats as { percent: number }).percent, 25);
  assertEquals(await controlReply('{"op":"canary","app":"other"}', ops), {
    ok: false,
    error: "the proxy serves no app named other",
  });
  for (const [app, shown] of [[7, "7"], ["../x", '"../x"'], [undefined, "undefined"]]) {
    assertEquals(await controlReply(JSON.stringify({ op: "canary", app }), ops), {
      ok: false,
      error: `"app" must be an app name (got ${shown})`,
    });
  }
  const { canary: _, ...without } = ops;
  assertEquals(await controlReply('{"op":"canary","app":"shop"}', without), {
    ok: false,
    error: "this proxy has no canary figures",
  });
  assertMatch(
    String((await controlReply('{"op":"x"}', ops)).error),
    /unknown op "x" \(reload, drain, status, renew, canary\)/,
  );
});

Deno.test("withCanary with config.yml's slots: the target must have the port of the slot canary.json names", () => {
  const slots = { blue: 41001, green: 41002 };
  assert(!("problem" in withCanary(ROUTE, SPLIT, undefined, slots)));
  assert(!("problem" in withCanary(ROUTE, { ...SPLIT, target: { ports: [41002, 41007] } }, undefined, slots)));
  const problem = (split: CanarySplit) => (withCanary(ROUTE, split, undefined, slots) as { problem: string }).problem;
  assertEquals(
    problem({ ...SPLIT, target: { port: 41005 } }),
    'canary.json is ignored: its target (127.0.0.1:41005) is not slot "green" (port 41002 in config.yml\'s slots)' +
      " (fix: a deploy with `canary:` writes it naming the new release's slot and its port in config.yml's " +
      "`slots`; remove it to end the canary)",
  );
  assertMatch(problem({ ...SPLIT, slot: "blue" }), /ignored: its target \(127\.0\.0\.1:41002\) is not slot "blue"/);
  assertMatch(problem({ ...SPLIT, slot: "red" }), /ignored: config\.yml's slots have no slot "red" \(blue, green\)/);
  assertMatch(problem({ ...SPLIT, slot: "constructor" }), /no slot "constructor"/);
  // Without slots in config.yml (an app on one port per release), any slot name goes.
  assert(!("problem" in withCanary(ROUTE, { ...SPLIT, target: { port: 41005 } }, undefined)));
});

Deno.test("measureSide: the figures time the answer's head, once; a WebSocket (101) is counted, not timed", () => {
  const route = applied();
  let clock = 1000;
  const now = () => clock;
  const ended: string[] = [];
  const measure = (app: string, slot: string) => (status: number, _in: number, out: number) =>
    void ended.push(`${app}/${slot}/${status}/${out}`);
  // A download: its head after 20 ms, its body 60 s later.
  const download = measureSide(route.canary, route.canary.variant, measure, now);
  clock += 20;
  headSent(download, 200);
  clock += 60_000;
  download(200, 0, 1e9);
  // A WebSocket: its 101 after 5 ms, its session 60 s.
  const socket = measureSide(route.canary, route.canary.variant, measure, now);
  clock += 5;
  headSent(socket, 101);
  clock += 60_000;
  socket(101, 0, 0);
  socket(101, 0, 0); // a second end does nothing
  // The proxy's own 502 (no head from the app): timed to its end.
  const failed = measureSide(route.canary, route, measure, now);
  clock += 40;
  failed(502, 0, 0);
  assertEquals(ended, ["shop/green/200/1000000000", "shop/green/101/0", "shop/blue/502/0"], "metrics: unchanged");
  const stats = canaryStats(route)!;
  assertEquals([stats.canary.requests, stats.canary.errors, stats.stable.requests, stats.stable.errors], [2, 0, 1, 1]);
  assertEquals(stats.canary.histogram.reduce((a, b) => a + b, 0), 1, "the WebSocket is not in the histogram");
  assertEquals(stats.canary.histogram[bucketIndex(20)], 1);
  const p95 = quantileMs(stats.canary.histogram, 0.95)!;
  assert(p95 >= 20 && p95 <= 21, `the canary's p95 is its head's 20 ms (got ${p95})`);
  assertEquals(stats.stable.histogram[bucketIndex(40)], 1);
  headSent(undefined, 200); // no measure (no metrics, no canary): nothing
});

Deno.test("control op canary: a refused canary.json is `stats: null` with its problem", async () => {
  const problem = "canary.json is ignored: its target shares port 41001 with route.json's (fix: …)";
  const ops = {
    reload: () => Promise.resolve(1),
    drain: () => Promise.resolve({ drained: true, inFlight: 0 }),
    status: () => [],
    canary: (app: string) => app === "shop" ? null : canaryStats(applied()),
    canaryProblem: (app: string) => app === "shop" ? problem : undefined,
  };
  assertEquals(await controlReply('{"op":"canary","app":"shop"}', ops), { ok: true, stats: null, problem });
  const running = await controlReply('{"op":"canary","app":"other"}', ops);
  assertEquals([running.ok, "problem" in running, (running.stats as { percent: number }).percent], [true, false, 25]);
  const none = { ...ops, canaryProblem: () => undefined };
  assertEquals(await controlReply('{"op":"canary","app":"shop"}', none), { ok: true, stats: null });
});
