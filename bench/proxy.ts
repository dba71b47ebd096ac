/**
 * Section 3 of `deno task bench`: the built-in proxy (`deploy-paradigm proxy`), measured on
 * 127.0.0.1 against baselines taken in the same run.
 *
 * 1. Keep-alive throughput and latency of a tiny Node app answering "ok", three ways with the
 *    same client, connections and duration: direct to the app, through our proxy, and through
 *    nginx (one worker, upstream keepalive). Targets: proxy ≥ 0.8× the direct throughput, and
 *    less than 1 ms of added p99 latency. The client is `wrk` (outside our process); without it,
 *    a Deno client (concurrent sequential-fetch loops) stands in.
 * 2. Switch time: with two apps, write route.json for the other one and send `{"op":"reload"}`
 *    over the control socket, as a deploy does; the median time to the reply and to the first
 *    response served by the new app. Target: < 50 ms.
 *
 * Every child (apps, proxy, nginx, wrk) is tracked from its spawn: {@link stopProxyBench} stops
 * whatever still runs (bench/run.ts calls it on Ctrl-C / SIGTERM), and `benchProxy` stops them
 * all itself when it ends, also on failure. Its files live in `<tmp>/proxy`, which run.ts removes.
 * @module
 */
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { control } from "../src/proxy/client.ts";
import { FETCH_BLOCKED_PORTS, writeRoute } from "../src/proxy/routes.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BIN = join(ROOT, "bin", "deploy-paradigm");
const APP = "bench";
const NGINX = "/usr/sbin/nginx";
const INSTALL_HINT = "apt-get install -y wrk nginx";

const WARMUP_S = 1;
const DURATION_S = 5;
const CONNECTIONS = 8;
const SWITCHES = 20;
const SWITCH_WARMUPS = 2;
const READY_TIMEOUT_MS = 20_000;
const SERVED_TIMEOUT_MS = 5_000;
const STOP_GRACE_MS = 5_000;
const THROUGHPUT_TARGET = 0.8;
const ADDED_P99_TARGET_MS = 1;
const SWITCH_TARGET_MS = 50;
/** Width of the label column of the printed lines. */
const LABEL = 41;

/** The app: "ok" to everything, with its name in a header so a switch can be seen. */
const APP_SCRIPT = `const http = require("node:http");
const [port, name] = process.argv.slice(2);
const server = http.createServer((req, res) => {
  res.setHeader("x-bench-app", name);
  res.end("ok");
});
// Longer than any pause of the bench, as behind any reverse proxy: pooled upstream connections stay open.
server.keepAliveTimeout = 65_000;
server.listen(Number(port), "127.0.0.1");
`;

/** A child process of this benchmark and the tail of its output. */
interface Proc {
  name: string;
  child: Deno.ChildProcess;
  /** Settles when the child has exited and its output is fully read. */
  done: Promise<Deno.CommandStatus>;
  exited: boolean;
  output(): string;
}

/** Every child that may still run, so a signal can stop them before the temp dir goes. */
const live = new Set<Proc>();

const OUTPUT_TAIL = 64 * 1024;

function spawn(name: string, argv: string[], options: { cwd?: string; env?: Record<string, string> } = {}): Proc {
  const child = new Deno.Command(argv[0], {
    args: argv.slice(1),
    cwd: options.cwd,
    env: options.env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let text = "";
  const decoder = new TextDecoder();
  const collect = (stream: ReadableStream<Uint8Array>) =>
    stream.pipeTo(
      new WritableStream({
        write(chunk) {
          text += decoder.decode(chunk, { stream: true });
          if (text.length > OUTPUT_TAIL * 2) text = text.slice(-OUTPUT_TAIL);
        },
      }),
    ).catch(() => {});
  const reading = Promise.all([collect(child.stdout), collect(child.stderr)]);
  const proc: Proc = {
    name,
    child,
    exited: false,
    done: Promise.all([child.status, reading]).then(([status]) => status),
    output: () => text.slice(-OUTPUT_TAIL),
  };
  live.add(proc);
  proc.done.then(() => {
    proc.exited = true;
    live.delete(proc);
  });
  return proc;
}

/** Stops `proc` with `signal` (SIGKILL after {@link STOP_GRACE_MS}) and waits for it. */
async function stop(proc: Proc, signal: Deno.Signal = "SIGTERM"): Promise<void> {
  if (proc.exited) return;
  try {
    proc.child.kill(signal);
  } catch {
    // already gone
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<"late">((resolve) => timer = setTimeout(() => resolve("late"), STOP_GRACE_MS));
  const outcome = await Promise.race([proc.done, late]);
  clearTimeout(timer);
  if (outcome === "late") {
    try {
      proc.child.kill("SIGKILL");
    } catch {
      // gone meanwhile
    }
    await proc.done;
  }
}

/** Stops every child of the proxy benchmark that still runs (for Ctrl-C / SIGTERM). */
export async function stopProxyBench(): Promise<void> {
  await Promise.all([...live].map((proc) => stop(proc)));
}

function which(name: string): string | undefined {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (!dir) continue;
    try {
      const path = join(dir, name);
      if (Deno.statSync(path).isFile) return path;
    } catch {
      // not there
    }
  }
  return undefined;
}

function exists(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/** `count` distinct free ports on 127.0.0.1 (held open together so that none repeats). */
function freePorts(count: number): number[] {
  const held: Deno.Listener[] = [];
  const ports: number[] = [];
  try {
    while (ports.length < count) {
      const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      held.push(listener);
      const port = (listener.addr as Deno.NetAddr).port;
      if (!FETCH_BLOCKED_PORTS.has(port)) ports.push(port);
    }
  } finally {
    for (const listener of held) listener.close();
  }
  return ports;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits until `url` answers 200 "ok" (from app `name` when given); throws if `proc` exits first. */
async function waitReady(url: string, procs: Proc[], name?: string): Promise<void> {
  const client = Deno.createHttpClient({});
  const deadline = performance.now() + READY_TIMEOUT_MS;
  let last = "";
  try {
    while (true) {
      for (const proc of procs) {
        if (proc.exited) {
          const status = await proc.done;
          throw new Error(`${proc.name} exited (${status.code}) before ${url} answered\n${proc.output()}`);
        }
      }
      try {
        const response = await fetch(url, { client });
        const body = await response.text();
        if (response.status === 200 && body === "ok" && (!name || response.headers.get("x-bench-app") === name)) {
          return;
        }
        last = `${response.status} ${body.slice(0, 200)}`;
      } catch (error) {
        last = error instanceof Error ? error.message : String(error);
      }
      if (performance.now() > deadline) {
        throw new Error(
          `${url} did not answer "ok" within ${READY_TIMEOUT_MS / 1000} s (last: ${last})\n` +
            procs.map((proc) => `--- ${proc.name}\n${proc.output()}`).join("\n"),
        );
      }
      await sleep(50);
    }
  } finally {
    client.close();
  }
}

/** One load run's figures. */
interface Load {
  rps: number;
  p50: number;
  p99: number;
  requests: number;
  /** Non-2xx answers and socket/fetch errors. */
  errors: number;
}

type LoadClient = (url: string, seconds: number) => Promise<Load>;

/** wrk's duration units → ms. */
function wrkMs(value: string, unit: string): number {
  const scale: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000 };
  return Number(value) * (scale[unit] ?? NaN);
}

/** Parses `wrk --latency` output. Throws when a figure is missing. */
export function parseWrk(text: string): Load {
  const number = (pattern: RegExp) => {
    const match = pattern.exec(text);
    if (!match) throw new Error(`wrk output without ${pattern}:\n${text}`);
    return match;
  };
  const p50 = number(/^\s*50%\s+([\d.]+)(us|ms|s|m)\b/m);
  const p99 = number(/^\s*99%\s+([\d.]+)(us|ms|s|m)\b/m);
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(text);
  const errors = (socket ? socket.slice(1).reduce((sum, n) => sum + Number(n), 0) : 0) +
    (non2xx ? Number(non2xx[1]) : 0);
  return {
    rps: Number(number(/^Requests\/sec:\s+([\d.]+)/m)[1]),
    p50: wrkMs(p50[1], p50[2]),
    p99: wrkMs(p99[1], p99[2]),
    requests: Number(number(/(\d+) requests in /)[1]),
    errors,
  };
}

function wrkClient(wrk: string, threads: number): LoadClient {
  return async (url, seconds) => {
    const proc = spawn("wrk", [wrk, `-t${threads}`, `-c${CONNECTIONS}`, `-d${seconds}s`, "--latency", url]);
    const status = await proc.done;
    if (!status.success) throw new Error(`wrk exited ${status.code}:\n${proc.output()}`);
    return parseWrk(proc.output());
  };
}

function percentile(sorted: number[], p: number): number {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];
}

/** The fallback client: {@link CONNECTIONS} sequential-fetch loops on one keep-alive client, in this process. */
const denoClient: LoadClient = async (url, seconds) => {
  const client = Deno.createHttpClient({ poolMaxIdlePerHost: CONNECTIONS });
  const latencies: number[] = [];
  let errors = 0;
  try {
    const start = performance.now();
    const end = start + seconds * 1000;
    const loop = async () => {
      while (performance.now() < end) {
        const t = performance.now();
        try {
          const response = await fetch(url, { client });
          await response.arrayBuffer();
          if (response.ok) latencies.push(performance.now() - t);
          else errors++;
        } catch {
          errors++;
          await sleep(10);
        }
      }
    };
    await Promise.all(Array.from({ length: CONNECTIONS }, loop));
    const elapsed = (performance.now() - start) / 1000;
    latencies.sort((a, b) => a - b);
    return {
      rps: latencies.length / elapsed,
      p50: percentile(latencies, 0.5),
      p99: percentile(latencies, 0.99),
      requests: latencies.length,
      errors,
    };
  } finally {
    client.close();
  }
};

/** Clock ticks per second of /proc/<pid>/stat times (`getconf CLK_TCK`; 100 on Linux). */
const CLOCK_TICKS = 100;

/** CPU time (user + system, all threads) of `pid` and its children listed in /proc, in ms; undefined without /proc. */
function cpuMs(pid: number): number | undefined {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // After "pid (comm) ": state is field 3, utime 14 and stime 15.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    let ms = ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS;
    const children = Deno.readTextFileSync(`/proc/${pid}/task/${pid}/children`).trim();
    for (const child of children ? children.split(" ") : []) ms += cpuMs(Number(child)) ?? 0;
    return Number.isFinite(ms) ? ms : undefined;
  } catch {
    return undefined;
  }
}

/** A warm-up run, then the measured one, with the CPU time `pid` (and its children) spent in it per request. */
async function measure(client: LoadClient, url: string, pid: number): Promise<Load & { cpuUs?: number }> {
  await client(url, WARMUP_S);
  const before = cpuMs(pid);
  const load = await client(url, DURATION_S);
  const after = cpuMs(pid);
  const cpuUs = before === undefined || after === undefined || !load.requests
    ? undefined
    : ((after - before) * 1000) / load.requests;
  return { ...load, cpuUs };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

function line(label: string, value: string): void {
  console.log(`   ${label.padEnd(LABEL)}${value}`);
}

function met(ok: boolean): string {
  return ok ? "met" : "not met";
}

function signed(value: number): string {
  return `${value < 0 ? "−" : "+"}${Math.abs(value).toFixed(2)}`;
}

/** `12,345 req/s   p50 0.12 ms   p99 0.34 ms` (and the errors, if any). */
function figures(load: Load): string {
  const rps = Math.round(load.rps).toLocaleString("en-US").padStart(7);
  const errors = load.errors ? `  (${load.errors} errors or non-2xx of ${load.requests})` : "";
  return `${rps} req/s   p50 ${load.p50.toFixed(2)} ms   p99 ${load.p99.toFixed(2)} ms${errors}`;
}

function nginxConfig(dir: string, listenPort: number, appPort: number): string {
  return `# Written by bench/proxy.ts: a plain reverse proxy with upstream keep-alive, for comparison.
daemon off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events {
  worker_connections 1024;
}
http {
  access_log off;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  upstream app {
    server 127.0.0.1:${appPort};
    keepalive 16;
  }
  server {
    listen 127.0.0.1:${listenPort};
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`;
}

/** Fetches `url` on `client` until app `name` answers; returns performance.now() of that answer. */
async function firstServedBy(client: Deno.HttpClient, url: string, name: string, deadline: number): Promise<number> {
  while (true) {
    const response = await fetch(url, { client });
    const at = performance.now();
    const from = response.headers.get("x-bench-app");
    await response.arrayBuffer();
    if (response.status === 200 && from === name) return at;
    if (at > deadline) {
      throw new Error(
        `the proxy still answered ${response.status} from ${from} ${SERVED_TIMEOUT_MS} ms after the switch`,
      );
    }
  }
}

/** Runs the proxy benchmark in `<tmp>/proxy`; every child it started is stopped before it returns or throws. */
export async function benchProxy(tmp: string): Promise<void> {
  const cpus = navigator.hardwareConcurrency;
  const wrk = which("wrk");
  const threads = cpus >= 4 ? 2 : 1;
  const clientName = wrk
    ? `wrk ${threads} thread${threads > 1 ? "s" : ""} × ${CONNECTIONS} connections`
    : `a Deno client, ${CONNECTIONS} fetch loops`;
  console.log(
    `\n3. Proxy: "ok" from a Node app on 127.0.0.1, keep-alive, ${clientName}, ${DURATION_S} s after ` +
      `${WARMUP_S} s warm-up (${cpus} CPUs, shared by client, proxy and app)`,
  );
  if (!wrk) {
    console.log(`   wrk: not installed (${INSTALL_HINT}); falling back to a Deno client in this process`);
    console.log("   (it takes CPU from the proxy and the app, so its figures are rougher)");
  }
  const hasNginx = exists(NGINX);
  if (!hasNginx) console.log("   nginx: not installed (apt-get install -y nginx)");
  const node = exists("/usr/bin/node") ? "/usr/bin/node" : which("node");
  if (!node) {
    console.log("   node: not installed: skipping the proxy benchmark");
    return;
  }
  const load = wrk ? wrkClient(wrk, threads) : denoClient;

  const dir = join(tmp, "proxy");
  const prefix = join(dir, "prefix");
  const appDir = join(prefix, "opt", "deployments", APP);
  const nginxDir = join(dir, "nginx");
  await Deno.mkdir(appDir, { recursive: true });
  await Deno.mkdir(nginxDir);
  const script = join(dir, "app.cjs");
  await Deno.writeTextFile(script, APP_SCRIPT);
  const [portA, portB, publicPort, nginxPort] = freePorts(4);
  await Deno.writeTextFile(join(appDir, "config.yml"), `port: ${publicPort}\nmanager: pm2\nenv: production\n`);
  await Deno.writeTextFile(join(appDir, "route.json"), JSON.stringify({ port: portA }) + "\n");
  const nginxConf = join(nginxDir, "nginx.conf");
  await Deno.writeTextFile(nginxConf, nginxConfig(nginxDir, nginxPort, portA));

  const procs: Proc[] = [];
  const clients: Deno.HttpClient[] = [];
  try {
    const appA = spawn("app a", [node, script, String(portA), "a"]);
    const appB = spawn("app b", [node, script, String(portB), "b"]);
    const proxy = spawn("proxy", [BIN, "proxy", "--host", "127.0.0.1"], {
      cwd: ROOT,
      env: { DEPLOY_PARADIGM_PREFIX: prefix },
    });
    procs.push(appA, appB, proxy);
    const nginx = hasNginx
      ? spawn("nginx", [NGINX, "-p", `${nginxDir}/`, "-e", `${nginxDir}/error.log`, "-c", nginxConf])
      : undefined;
    if (nginx) procs.push(nginx);
    const direct = `http://127.0.0.1:${portA}/`;
    const proxied = `http://127.0.0.1:${publicPort}/`;
    const viaNginx = `http://127.0.0.1:${nginxPort}/`;
    await Promise.all([
      waitReady(direct, [appA], "a"),
      waitReady(`http://127.0.0.1:${portB}/`, [appB], "b"),
      waitReady(proxied, [proxy, appA], "a"),
      nginx ? waitReady(viaNginx, [nginx, appA], "a") : undefined,
    ]);

    const directLoad = await measure(load, direct, appA.child.pid);
    line("direct to the app:", figures(directLoad));
    const proxyLoad = await measure(load, proxied, proxy.child.pid);
    line("through deploy-paradigm proxy:", figures(proxyLoad));
    const nginxLoad = nginx ? await measure(load, viaNginx, nginx.child.pid) : undefined;
    if (nginxLoad) line("through nginx (1 worker):", figures(nginxLoad));
    const us = (value: number | undefined) => value === undefined ? "?" : value.toFixed(1);
    if (proxyLoad.cpuUs !== undefined) {
      line(
        "CPU per request, measured run:",
        `proxy ${us(proxyLoad.cpuUs)} µs` + (nginxLoad ? `, nginx ${us(nginxLoad.cpuUs)} µs` : "") +
          `, the app alone ${us(directLoad.cpuUs)} µs`,
      );
    }

    const ratio = proxyLoad.rps / directLoad.rps;
    const added = proxyLoad.p99 - directLoad.p99;
    line(
      "throughput proxy / direct:",
      `${ratio.toFixed(2)}×  — target ≥ ${THROUGHPUT_TARGET}×: ${met(ratio >= THROUGHPUT_TARGET)}`,
    );
    line(
      "added p99 latency proxy − direct:",
      `${added.toFixed(2)} ms  — target < ${ADDED_P99_TARGET_MS} ms: ${met(added < ADDED_P99_TARGET_MS)}`,
    );
    if (nginxLoad) {
      line(
        "proxy against nginx:",
        `${(proxyLoad.rps / nginxLoad.rps).toFixed(2)}× its throughput, ${
          (proxyLoad.p99 / nginxLoad.p99).toFixed(2)
        }× its p99`,
      );
      line(
        "nginx against direct (for scale):",
        `${(nginxLoad.rps / directLoad.rps).toFixed(2)}× throughput, ${signed(nginxLoad.p99 - directLoad.p99)} ms p99`,
      );
    }

    // Switches, as a deploy makes them: route.json replaced atomically, then a reload over the control socket.
    const poll = Deno.createHttpClient({});
    clients.push(poll);
    const replyTimes: number[] = [];
    const servedTimes: number[] = [];
    const apps = [{ name: "b", port: portB }, { name: "a", port: portA }];
    for (let i = 0; i < SWITCH_WARMUPS + SWITCHES; i++) {
      const to = apps[i % 2];
      const start = performance.now();
      const served = firstServedBy(poll, proxied, to.name, start + SERVED_TIMEOUT_MS);
      served.catch(() => {}); // awaited below; not an unhandled rejection if the reload throws first
      await writeRoute(appDir, { port: to.port });
      const reply = await control(prefix, { op: "reload" });
      const replied = performance.now();
      if (reply.ok !== true) throw new Error(`reload answered ${JSON.stringify(reply)}`);
      const servedAt = await served;
      if (i < SWITCH_WARMUPS) continue;
      replyTimes.push(replied - start);
      servedTimes.push(servedAt - start);
    }
    const spread = (values: number[]) =>
      `${median(values).toFixed(2)} ms  (min ${Math.min(...values).toFixed(2)}, max ${
        Math.max(...values).toFixed(2)
      }, ${values.length} switches)`;
    line("switch: route.json + reload → reply:", spread(replyTimes));
    line("switch → first answer from the new app:", spread(servedTimes));
    const slower = Math.max(median(replyTimes), median(servedTimes));
    line(
      "switch, slower median of the two:",
      `${slower.toFixed(2)} ms  — target < ${SWITCH_TARGET_MS} ms: ${met(slower < SWITCH_TARGET_MS)}`,
    );

    const problems = proxy.output().split("\n").filter((line) => /\b(50[0-9]|error|failed|cannot)\b/i.test(line));
    if (problems.length) console.log(`   proxy log: ${problems.length} problem line(s), first: ${problems[0]}`);
  } finally {
    for (const client of clients) client.close();
    await Promise.all(procs.map((proc) => stop(proc)));
  }
}
