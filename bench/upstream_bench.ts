/**
 * The upstream client against `fetch`: a Node app answering "ok", and proxy fronts (`Deno.serve`
 * in this process) that forward each request with (a) `fetch` and a `Deno.createHttpClient`, (b)
 * an {@link UpstreamPool} whose response is re-wrapped (`new Response(upstream.body, init)`: Deno.serve
 * then pumps a JS stream) and (c) the pool's response passed through, its hop-by-hop headers
 * deleted in place (a body already read stays bytes that Deno.serve sends directly). Each is loaded with
 * `wrk -t1 -c8 -d5s` after a 1 s warm-up; prints req/s for direct, fetch, pool, and for the
 * fronts the CPU time this process spent per request (the client's cost, steadier than req/s
 * when other work shares the machine). Last, the clients alone: concurrent request loops straight
 * to the app, without a front.
 *
 * On a shared machine the numbers move with the load of the moment: `--rounds=N` measures every
 * setup N times, interleaved, and keeps each one's best.
 *
 * Run: `deno run -A bench/upstream_bench.ts [--rounds=N]`
 * @module
 */
import process from "node:process";
import { UpstreamPool } from "../src/proxy/upstream.ts";

const DURATION = "5s";
const WARMUP = "1s";
const CONNECTIONS = 8;
const READY_TIMEOUT_MS = 10_000;
/** How long each client-alone measurement runs. */
const CLIENT_MS = 3000;

const APP = `const http = require("node:http");
const server = http.createServer((req, res) => res.end("ok"));
server.keepAliveTimeout = 65_000;
server.listen(0, "127.0.0.1", () => console.log(server.address().port));
`;

/** Starts the Node app; resolves with its port and a stop function. */
async function startApp(): Promise<{ port: number; stop: () => Promise<void> }> {
  const child = new Deno.Command("node", { args: ["-e", APP], stdout: "piped", stderr: "inherit", stdin: "null" })
    .spawn();
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch { /* gone */ }
    await child.status;
  };
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error("the node app did not start")), READY_TIMEOUT_MS);
  });
  try {
    while (!text.includes("\n")) {
      const { done, value } = await Promise.race([reader.read(), late]);
      if (done) throw new Error("the node app exited");
      text += value;
    }
  } catch (error) {
    await stop();
    throw error;
  } finally {
    clearTimeout(timer);
  }
  reader.releaseLock();
  child.stdout.cancel().catch(() => {});
  return { port: Number(text.trim()), stop };
}

/** A measured run: wrk's requests per second, and the CPU time this process (the fronts) spent per request. */
interface Result {
  rps: number;
  cpuUsPerRequest: number;
}

/** `wrk` against `url`, after a warm-up. */
async function wrk(url: string): Promise<Result> {
  const run = async (duration: string) => {
    const { stdout, success } = await new Deno.Command("wrk", {
      args: ["-t1", `-c${CONNECTIONS}`, `-d${duration}`, url],
      stdout: "piped",
      stderr: "inherit",
    }).output();
    const text = new TextDecoder().decode(stdout);
    const rps = /Requests\/sec:\s+([\d.]+)/.exec(text);
    const requests = /(\d+) requests in/.exec(text);
    if (!success || !rps || !requests) throw new Error(`wrk failed:\n${text}`);
    if (/Non-2xx|Socket errors/.test(text)) console.error(text);
    return { rps: Number(rps[1]), requests: Number(requests[1]) };
  };
  await run(WARMUP);
  const before = process.cpuUsage();
  const { rps, requests } = await run(DURATION);
  const cpu = process.cpuUsage(before);
  return { rps, cpuUsPerRequest: (cpu.user + cpu.system) / requests };
}

/** {@link CONNECTIONS} concurrent loops of `send` for {@link CLIENT_MS} (after a short warm-up). */
async function loops(send: () => Promise<void>): Promise<Result> {
  const during = async (ms: number) => {
    const end = performance.now() + ms;
    let count = 0;
    await Promise.all(Array.from({ length: CONNECTIONS }, async () => {
      for (; performance.now() < end; count++) await send();
    }));
    return count;
  };
  await during(500);
  const before = process.cpuUsage();
  const count = await during(CLIENT_MS);
  const cpu = process.cpuUsage(before);
  return { rps: count / (CLIENT_MS / 1000), cpuUsPerRequest: (cpu.user + cpu.system) / count };
}

function front(handler: (req: Request) => Promise<Response>): Deno.HttpServer<Deno.NetAddr> {
  return Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, handler);
}

const app = await startApp();
const client = Deno.createHttpClient({});
const pool = new UpstreamPool();
const target = (req: Request) => {
  const url = new URL(req.url);
  return url.pathname + url.search;
};
const viaFetch = front(async (req) => {
  const upstream = await fetch(`http://127.0.0.1:${app.port}${target(req)}`, {
    method: req.method,
    headers: req.headers,
    client,
  });
  return new Response(upstream.body, { status: upstream.status, headers: upstream.headers });
});
const viaPool = front(async (req) => {
  const upstream = await pool.request(app.port, {
    method: req.method,
    path: target(req),
    headers: req.headers,
    body: null,
  });
  return new Response(upstream.body, { status: upstream.status, headers: upstream.headers });
});
const viaPoolDirect = front(async (req) => {
  const upstream = await pool.request(app.port, {
    method: req.method,
    path: target(req),
    headers: req.headers,
    body: null,
  });
  // Its headers are mutable: hop-by-hop ones go in place, and a body already read stays plain bytes for Deno.serve.
  for (const name of ["connection", "keep-alive", "transfer-encoding"]) upstream.headers.delete(name);
  return upstream;
});
const rounds = Math.max(1, Number(/^--rounds=(\d+)$/.exec(Deno.args[0] ?? "")?.[1] ?? 1));
const setups = [
  ["direct (node app)", app.port],
  ["fetch + createHttpClient", viaFetch.addr.port],
  ["pool, body re-wrapped", viaPool.addr.port],
  ["pool, response passed through", viaPoolDirect.addr.port],
] as const;
try {
  const best = new Map<string, Result>();
  const line = (label: string, result: Result, direct: boolean) =>
    console.log(
      `${label.padEnd(42)} ${Math.round(result.rps).toString().padStart(7)} req/s` +
        (direct ? "" : `  ${result.cpuUsPerRequest.toFixed(1).padStart(6)} µs CPU/req in the front`),
    );
  for (let round = 1; round <= rounds; round++) {
    for (const [i, [name, port]] of setups.entries()) {
      const result = await wrk(`http://127.0.0.1:${port}/`);
      const prior = best.get(name);
      best.set(name, {
        rps: Math.max(prior?.rps ?? 0, result.rps),
        cpuUsPerRequest: Math.min(prior?.cpuUsPerRequest ?? Infinity, result.cpuUsPerRequest),
      });
      line(rounds > 1 ? `${name} (round ${round})` : name, result, i === 0);
    }
  }
  if (rounds > 1) {
    console.log("best of each:");
    for (const [i, [name]] of setups.entries()) line(name, best.get(name)!, i === 0);
  }
  const fetched = best.get(setups[1][0])!;
  for (const [name] of setups.slice(2)) {
    const result = best.get(name)!;
    console.log(
      `${name}: ${(result.rps / fetched.rps).toFixed(2)}× fetch's req/s, ` +
        `${(result.cpuUsPerRequest / fetched.cpuUsPerRequest).toFixed(2)}× its CPU per request`,
    );
  }
  console.log(`client alone (${CONNECTIONS} concurrent request loops, no front, ${CLIENT_MS / 1000} s each):`);
  const headers = new Headers({ host: "app.test", "user-agent": "bench", accept: "*/*" });
  for (
    const [name, send] of [
      ["fetch + createHttpClient", () => fetch(`http://127.0.0.1:${app.port}/`, { headers, client })],
      ["pool", () => pool.request(app.port, { method: "GET", path: "/", headers, body: null })],
    ] as const
  ) {
    const result = await loops(async () => void await (await send()).arrayBuffer());
    console.log(
      `${name.padEnd(42)} ${Math.round(result.rps).toString().padStart(7)} req/s` +
        `  ${result.cpuUsPerRequest.toFixed(1).padStart(6)} µs CPU/req`,
    );
  }
  console.log(
    `load average: ${Deno.loadavg().map((n) => n.toFixed(2)).join(" ")} on ${navigator.hardwareConcurrency} CPUs`,
  );
} finally {
  await Promise.all([viaFetch.shutdown(), viaPool.shutdown(), viaPoolDirect.shutdown()]);
  pool.close();
  client.close();
  await app.stop();
}
