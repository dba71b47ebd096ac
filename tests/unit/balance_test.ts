/**
 * The balancer (src/proxy/balance.ts): its choices with a clock of the test's own and the proxy's
 * real in-flight counts (fewest in flight first, ties in turn, out of rotation on a refused connect
 * with a doubling backoff, back on an answered retry, a retry elsewhere only when nothing reached
 * the app), the pool's own failures against raw loopback servers, route.json's `{"ports"}` target,
 * and `drain` over several ports (InFlight and the control op).
 */
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { throws } from "node:assert/strict";
import { Balanced, Balancer, mayRetry } from "../../src/proxy/balance.ts";
import { UpstreamError } from "../../src/proxy/connection.ts";
import { InFlight } from "../../src/proxy/inflight.ts";
import { describeTarget, parseRouteTarget, portsTarget, targetPorts } from "../../src/proxy/routes.ts";
import { Unanswered } from "../../src/proxy/upstream_call.ts";
import { UpstreamPool } from "../../src/proxy/upstream.ts";
import { controlReply } from "../../src/proxy/control.ts";

const PORTS = [41001, 41002, 41003];
const IDLE = { 41001: 0, 41002: 0, 41003: 0 };

function world() {
  let now = 0;
  const logs: string[] = [];
  const inFlight = new InFlight();
  const balancer = new Balancer(inFlight, (line) => logs.push(line), () => now);
  return { inFlight, balancer, logs, advance: (ms: number) => now += ms };
}

/** A request to `ports`, counted in flight (as the proxy does). */
function begun(balancer: Balancer, inFlight: InFlight, ports: readonly number[]): Balanced {
  const request = new Balanced(balancer, inFlight, "web", ports);
  request.begin();
  return request;
}

const refused = (port: number) =>
  new UpstreamError("connect", `cannot connect to 127.0.0.1:${port}: Connection refused`, {
    cause: new Deno.errors.ConnectionRefused("Connection refused (os error 111)"),
  });

Deno.test("balance: ties go round robin; the instance with the fewest in flight is chosen", () => {
  const { inFlight, balancer } = world();
  assertEquals([1, 2, 3, 4, 5, 6].map(() => balancer.pick(PORTS)), [...PORTS, ...PORTS], "all idle: in turn");
  const ends = [inFlight.begin(41001), inFlight.begin(41001), inFlight.begin(41003)];
  assertEquals(balancer.pick(PORTS), 41002, "the idle one");
  assertEquals(balancer.pick(PORTS), 41002, "still the one with fewest (0 < 1 < 2)");
  const busy = inFlight.begin(41002);
  // 41001: 2, 41002: 1, 41003: 1: a tie between 41002 and 41003, in turn.
  const picks = [balancer.pick(PORTS), balancer.pick(PORTS), balancer.pick(PORTS)];
  assertEquals(new Set(picks), new Set([41002, 41003]));
  assert(!picks.includes(41001));
  for (const end of [...ends, busy]) end();
  assertEquals(balancer.pick(PORTS, [41001, 41002]), 41003, "not one already tried");
  assertEquals(balancer.pick(PORTS, PORTS), undefined, "every one tried");
});

Deno.test("balance: a slow instance gets fewer requests (simulated: each holds its request for its latency)", () => {
  const { inFlight, balancer } = world();
  const latency = new Map([[41001, 1], [41002, 1], [41003, 5]]);
  const open: { port: number; endsAt: number; end: () => void }[] = [];
  const served = new Map<number, number>();
  for (let t = 0; t < 3000; t++) {
    for (const request of open.filter((r) => r.endsAt <= t)) {
      request.end();
      open.splice(open.indexOf(request), 1);
    }
    while (open.length < 4) {
      const port = balancer.pick(PORTS)!;
      open.push({ port, endsAt: t + latency.get(port)!, end: inFlight.begin(port) });
      served.set(port, (served.get(port) ?? 0) + 1);
    }
  }
  const [fast, other, slow] = PORTS.map((port) => served.get(port) ?? 0);
  assert(slow * 2 < fast && slow * 2 < other, `slow ${slow} vs ${fast}, ${other}`);
});

Deno.test("balance: a refused instance leaves rotation once, is retried after 1 s doubling to 10 s, comes back when answered", async () => {
  const { inFlight, balancer, logs, advance } = world();
  const attempts: number[] = [];
  const down = new Set([41002]);
  const send = (method = "GET") => {
    const request = begun(balancer, inFlight, PORTS);
    return request.send(method, (port) => {
      attempts.push(port);
      assertEquals(
        inFlightOf(inFlight),
        { ...IDLE, [port]: 1 },
        "counted in flight to the instance it is sent to only",
      );
      return down.has(port) ? Promise.reject(refused(port)) : Promise.resolve(port);
    }).finally(() => request.end());
  };
  // In turn: 41001, then 41002 refuses and the request goes on to 41003.
  assertEquals([await send(), await send()], [41001, 41003]);
  assertEquals(attempts, [41001, 41002, 41003]);
  assertEquals(logs.length, 1);
  assertMatch(
    logs[0],
    /^web: instance 127\.0\.0\.1:41002 refused a connection \(connection refused\): out of rotation/,
  );
  assert(!balancer.inRotation(41002));
  assertEquals(inFlightOf(inFlight), IDLE, "every in-flight count ended, the refused one's too");
  // Out of rotation: not tried for 1 s.
  attempts.length = 0;
  for (let i = 0; i < 10; i++) await send();
  assert(!attempts.includes(41002), `${attempts}`);
  // Then one retry per backoff: 1 s, 2 s, 4 s, 8 s, 10 s, 10 s.
  const retriedAfter: number[] = [];
  let waited = 0;
  while (retriedAfter.length < 6) {
    advance(100);
    waited += 100;
    attempts.length = 0;
    assertEquals(await send(), attempts.at(-1), "answered by whoever was tried last");
    if (attempts.includes(41002)) {
      retriedAfter.push(waited);
      waited = 0;
    }
  }
  assertEquals(retriedAfter, [1000, 2000, 4000, 8000, 10_000, 10_000]);
  assertEquals(logs.length, 1, "leaving is logged once, not per retry");
  // It is back: its next retry is answered (ties in turn: within a round).
  down.delete(41002);
  advance(10_000);
  attempts.length = 0;
  const answers = [await send(), await send(), await send()];
  assert(answers.includes(41002), `${answers}`);
  assert(balancer.inRotation(41002));
  assertMatch(logs[1], /^web: instance 127\.0\.0\.1:41002 answers again: back in rotation \(out for \d+\.\d s\)$/);
  assertEquals(logs.length, 2);
});

Deno.test("balance: requests already on their way when an instance left do not bring it back or stretch its backoff", async () => {
  const { inFlight, balancer, logs, advance } = world();
  const ONE = [41001];
  const earlier = [0, 1, 2].map(() => begun(balancer, inFlight, ONE)); // picked while it was up
  const refuse = (port: number) => Promise.reject(refused(port));
  await earlier[0].send("GET", refuse).catch(() => {});
  assert(!balancer.inRotation(41001));
  // Another one refused too (it was connecting as the instance went), one answered (a kept-alive connection).
  await earlier[1].send("GET", refuse).catch(() => {});
  await earlier[2].send("GET", (port) => Promise.resolve(port));
  for (const request of earlier) request.end();
  assertEquals(logs.length, 1, "no second line, no 'back'");
  assert(!balancer.inRotation(41001));
  // Its backoff is still the first one: a retry is due after 1 s.
  const busy = inFlight.begin(41002);
  advance(999);
  const early = begun(balancer, inFlight, [41002, 41001]);
  assertEquals(early.port, 41002, "not due yet: the busier instance in rotation");
  early.end();
  advance(1);
  const retry = begun(balancer, inFlight, [41002, 41001]);
  assertEquals(retry.port, 41001, "due after 1 s: it has fewer in flight");
  busy();
  await retry.send("GET", (port) => Promise.resolve(port));
  retry.end();
  assert(balancer.inRotation(41001));
  assertEquals(logs.length, 2);
});

Deno.test("balance: a retry that ends before it is sent (a bad request body) lets the next one go", async () => {
  const { inFlight, balancer, advance } = world();
  const first = begun(balancer, inFlight, [41001]);
  await first.send("GET", (port) => Promise.reject(refused(port))).catch(() => {});
  first.end();
  const busy = inFlight.begin(41002);
  advance(1000);
  const abandoned = begun(balancer, inFlight, [41002, 41001]);
  assertEquals(abandoned.port, 41001, "its retry");
  abandoned.end(); // never sent
  advance(1000);
  const next = begun(balancer, inFlight, [41002, 41001]);
  assertEquals(next.port, 41001, "retried again once its backoff is over, not stuck waiting for the first retry");
  await next.send("GET", (port) => Promise.resolve(port));
  next.end();
  assert(balancer.inRotation(41001));
  busy();
});

Deno.test("balance: when every instance refuses, each is tried once and the last error is the request's (502)", async () => {
  const { inFlight, balancer, logs } = world();
  const attempts: number[] = [];
  const request = begun(balancer, inFlight, PORTS);
  const error = await request.send("GET", (port) => {
    attempts.push(port);
    return Promise.reject(refused(port));
  }).catch((error) => error);
  request.end();
  assertEquals(attempts.toSorted(), PORTS);
  assert(error instanceof UpstreamError && error.kind === "connect");
  assertEquals(logs.length, 3);
  // All out of rotation: the next request still tries one (the one due first), not none.
  const next = begun(balancer, inFlight, PORTS);
  assert(PORTS.includes(next.port));
  next.end();
});

Deno.test("balance: only what never reached the app is retried elsewhere", async () => {
  const { inFlight, balancer } = world();
  assert(mayRetry(refused(1), "POST"), "refused: nothing was sent");
  assert(!mayRetry(new UpstreamError("connect", "the upstream pool is closed"), "GET"), "no instance at fault");
  assert(!mayRetry(new UpstreamError("timeout", "no response head within 60000 ms"), "GET"));
  assert(!mayRetry(new UpstreamError("reset", "reading the response body"), "GET"));
  assert(mayRetry(new Unanswered("EOF", true, true), "GET"), "sent, no answer, idempotent");
  assert(!mayRetry(new Unanswered("EOF", true, true), "POST"), "a POST the app may have handled");
  assert(mayRetry(new Unanswered("EOF", false, true), "POST"), "not written in full");
  assert(!mayRetry(new Unanswered("EOF", false, false), "GET"), "a streamed body is not replayable");
  // A reset after the app answered in part is the request's failure: not retried, instance kept.
  const request = begun(balancer, inFlight, PORTS);
  const tried: number[] = [];
  await request.send("GET", (port) => {
    tried.push(port);
    return Promise.reject(new UpstreamError("reset", "the app closed the connection midway"));
  }).catch(() => {});
  request.end();
  assertEquals(tried.length, 1);
  assert(PORTS.every((port) => balancer.inRotation(port)));
});

Deno.test("balance: the pool tells a fresh connection the app closed unanswered from one it answered in part", async () => {
  // Raw servers on loopback: one takes the request and closes at once, one sends half a head first.
  const serve = (reply: string) => {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const done = (async () => {
      for await (const conn of listener) {
        await conn.read(new Uint8Array(4096)).catch(() => null);
        if (reply) await conn.write(new TextEncoder().encode(reply)).catch(() => 0);
        conn.close();
      }
    })();
    return { port: (listener.addr as Deno.NetAddr).port, close: () => (listener.close(), done) };
  };
  const silent = serve("");
  const half = serve("HTTP/1.1 200 OK\r\ncontent-le");
  const pool = new UpstreamPool();
  try {
    const get = { method: "GET", path: "/", headers: new Headers(), body: null };
    const unanswered = await pool.request(silent.port, get).catch((error) => error);
    assert(unanswered instanceof Unanswered, String(unanswered));
    assertEquals([unanswered.kind, unanswered.written, unanswered.replayable], ["reset", true, true]);
    assert(mayRetry(unanswered, "GET") && !mayRetry(unanswered, "POST"));
    const body = new ReadableStream<Uint8Array>({ start: (c) => (c.enqueue(new Uint8Array(3)), c.close()) });
    const streamed = await pool.request(silent.port, { ...get, method: "PUT", body }).catch((error) => error);
    assert(streamed instanceof Unanswered && !streamed.replayable && !mayRetry(streamed, "PUT"), String(streamed));
    const partly = await pool.request(half.port, get).catch((error) => error);
    assert(partly instanceof UpstreamError && !(partly instanceof Unanswered), String(partly));
    assert(!mayRetry(partly, "GET"), "the app answered in part: not sent elsewhere");
  } finally {
    pool.close();
    await silent.close();
    await half.close();
  }
});

Deno.test("balance: retain forgets ports no route lists", async () => {
  const { inFlight, balancer } = world();
  const request = begun(balancer, inFlight, [41001, 41002]);
  await request.send("GET", (port) => port === 41001 ? Promise.reject(refused(port)) : Promise.resolve(port));
  request.end();
  assert(!balancer.inRotation(41001));
  balancer.retain(new Set([41001, 41002]));
  assert(!balancer.inRotation(41001));
  balancer.retain(new Set([42001, 42002]));
  assert(balancer.inRotation(41001));
});

Deno.test('balance: route.json {"ports"}: 2 to 64 different valid ports; {"port"} unchanged', () => {
  assertEquals(parseRouteTarget({ ports: [41001, 41002] }), { ports: [41001, 41002] });
  assertEquals(parseRouteTarget({ port: 41001 }), { port: 41001 });
  assertEquals(JSON.stringify(portsTarget([41001])), '{"port":41001}', "one instance: the same route.json as before");
  assertEquals(portsTarget([41001, 41002, 41003]), { ports: [41001, 41002, 41003] });
  assertEquals(targetPorts({ ports: [1234, 1235] }), [1234, 1235]);
  assertEquals(targetPorts({ port: 1234 }), [1234]);
  assertEquals(targetPorts({ dir: "/srv" }), []);
  assertEquals(describeTarget({ ports: [41001, 41002, 41003] }), "3 instances on 127.0.0.1:41001, 41002, 41003");
  const many = Array.from({ length: 64 }, (_, i) => 40000 + i);
  assertEquals(parseRouteTarget({ ports: many }), { ports: many });
  const bad: [unknown, RegExp][] = [
    [{ ports: [41001, 41001] }, /route\.json: "ports" lists port 41001 twice: each instance has a port of its own$/],
    [{ ports: [41001] }, /route\.json: "ports" must list 2 to 64 ports \(got 1\); one instance is \{"port": 41001\}$/],
    [{ ports: [] }, /"ports" must list 2 to 64 ports \(got 0\)$/],
    [{ ports: [...many, 40064] }, /"ports" must list 2 to 64 ports \(got 65\)$/],
    [{ ports: [41001, 0] }, /"ports"\[1\] must be a whole number from 1 to 65535 \(got 0\)$/],
    [{ ports: ["41001", "41002"] }, /"ports"\[0\] must be a whole number from 1 to 65535 \(got "41001"\)$/],
    [{ ports: [41001, 1.5] }, /"ports"\[1\] must be a whole number/],
    [{ ports: [41001, 6000] }, /port 6000 is one fetch refuses to connect to; use another$/],
    [{ ports: "41001,41002" }, /"ports" must be a list of ports \(got "41001,41002"\)$/],
    [
      { ports: [41001, 41002], port: 41003 },
      /expected exactly one key, "port", "ports" or "dir" \(got "ports", "port"\)/,
    ],
  ];
  for (const [value, expected] of bad) {
    throws(() => parseRouteTarget(value), (error: Error & { suggestion?: string }) => {
      assertMatch(error.message, expected);
      assertMatch(error.suggestion!, /\{"ports": \[<port>, <port>, \.\.\.\]\} \(2 to 64 different ports\)/);
      return true;
    }, JSON.stringify(value));
  }
});

Deno.test("balance: drain over several ports waits for all of them; the control op takes port or ports", async () => {
  const inFlight = new InFlight();
  const a = inFlight.begin(41001);
  const b = inFlight.begin(41002);
  assertEquals(await inFlight.drain([41001, 41002, 41003], 50), { drained: false, inFlight: 2 });
  let done: { drained: boolean; inFlight: number } | undefined;
  const waiting = inFlight.drain([41001, 41002, 41003], 5000).then((result) => done = result);
  a();
  await new Promise((resolve) => setTimeout(resolve, 50));
  assertEquals(done, undefined, "one of two still in flight");
  b();
  assertEquals(await waiting, { drained: true, inFlight: 0 });

  const asked: unknown[] = [];
  const ops = {
    reload: () => Promise.resolve(0),
    drain: (port: number | number[]) => {
      asked.push(port);
      return Promise.resolve({ drained: true, inFlight: 0 });
    },
    status: () => [],
  };
  assertEquals(await controlReply('{"op":"drain","ports":[41001,41002],"timeoutMs":100}', ops), {
    ok: true,
    drained: true,
    inFlight: 0,
  });
  assertEquals(await controlReply('{"op":"drain","port":41001}', ops), { ok: true, drained: true, inFlight: 0 });
  assertEquals(await controlReply('{"op":"drain","ports":[]}', ops), { ok: true, drained: true, inFlight: 0 });
  assertEquals(asked, [[41001, 41002], 41001, []]);
  for (
    const [line, error] of [
      ['{"op":"drain","ports":[41001,"x"]}', '"ports" must be a list of up to 64 whole numbers from 1 to 65535'],
      ['{"op":"drain","ports":41001}', '"ports" must be a list of up to 64 whole numbers from 1 to 65535'],
      ['{"op":"drain","port":1,"ports":[2]}', 'give "port" or "ports", not both'],
      ['{"op":"drain"}', '"port" must be a whole number from 1 to 65535'],
    ]
  ) assertEquals(await controlReply(line, ops), { ok: false, error }, line);
  assertEquals(asked.length, 3, "nothing drained for a bad request");
});

function inFlightOf(inFlight: InFlight): Record<number, number> {
  return Object.fromEntries(PORTS.map((port) => [port, inFlight.count(port)]));
}
