/**
 * Section 3 of `deno task bench` (`deno task bench proxy` runs it alone): the built-in proxy
 * (`deploy-paradigm proxy`) side by side with nginx, Caddy and HAProxy (./baselines.ts), in one
 * run on 127.0.0.1, with the same client for all: `wrk -t1 -c8 --latency`, 5 s after a 1 s
 * warm-up, each endpoint in turn, against a tiny Node app answering "ok".
 *
 * 1. Plain HTTP: direct to the app; ours in per-port mode (an app without domains on its own
 *    port) and with host routing (an app with `domains: [plain.test]` on the shared `http:` port
 *    of proxy.yml, wrk sending `Host: plain.test`); each baseline.
 *    HTTPS: each proxy terminating TLS with one self-signed certificate for `localhost` (ours:
 *    an app with `domains: [localhost]` and `tls: {certificate, key}` on the shared `https:`
 *    port, found by SNI; wrk sends the URL's host as SNI).
 *    For each: rps, p50, p99 and the CPU time per request of the proxy process and its children
 *    (utime + stime from /proc/<pid>/stat before and after the measured run).
 *    Then issue 13's targets, each PASS or MISS, for plain HTTP and for HTTPS: ours ≥ 1.5× Caddy's
 *    rps and ≤ Caddy's CPU per request, ≥ 0.8× nginx's rps, ≤ 1 ms of p99 added over direct.
 * 2. Switch time (per-port app): write route.json for another app and send `{"op":"reload"}` over
 *    the control socket, as a deploy does; the median time to the reply and to the first
 *    response served by the new app. Target: < 50 ms.
 *
 * Benchmarks report, tests assert: a missed target, a baseline that is not installed or an
 * endpoint that never answers (ours while a feature is missing) is printed and the run goes on.
 * Every child is tracked from its spawn (./procs.ts): {@link stopProxyBench} stops whatever still
 * runs (bench/run.ts calls it on Ctrl-C / SIGTERM), and `benchProxy` stops its children itself
 * when it ends, also on failure. Its files live in `<tmp>/proxy`, which run.ts removes.
 * @module
 */
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { control } from "../src/proxy/client.ts";
import { writeRoute } from "../src/proxy/routes.ts";
import { type Baseline, BASELINES, type Cert, makeCert, TLS_NAME, versionOf } from "./baselines.ts";
import { CONNECTIONS, DURATION_S, measure, type Measured, type Target, waitReady, WARMUP_S } from "./load.ts";
import { exists, freePorts, type Proc, run, spawn, stop, stopAll, which } from "./procs.ts";

export { stopAll as stopProxyBench };

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BIN = join(ROOT, "bin", "deploy-paradigm");
/** The host name of the app routed by host over plain HTTP (sent as a Host header: it needs no DNS). */
const PLAIN_HOST = "plain.test";
const INSTALL_HINT = "apt-get install -y wrk nginx caddy haproxy openssl";

const SWITCHES = 20;
const SWITCH_WARMUPS = 2;
const READY_TIMEOUT_MS = 20_000;
const SERVED_TIMEOUT_MS = 5_000;
const SWITCH_TARGET_MS = 50;
/** Width of the label column of the printed lines. */
const LABEL = 46;

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

type Group = "http" | "https";

/** One thing wrk measures. */
interface Endpoint {
  group: Group;
  /** "direct", "ours-port", "ours-host", "ours" or a baseline's name. */
  key: string;
  label: string;
  target: Target;
  /** The process whose CPU time is counted (with its children). */
  proc: Proc;
  /** Processes whose exit means the endpoint cannot answer. */
  watch: Proc[];
}

/** An endpoint's figures, or why it has none. */
interface Result {
  endpoint: Endpoint;
  load?: Measured;
  error?: string;
}

/** One of issue 13's speed targets, comparing ours with `against` (direct is always the plain HTTP one). */
interface Goal {
  name: string;
  target: string;
  against: string;
  value(ours: Measured, base: Measured): number | undefined;
  show(value: number, ours: Measured, base: Measured): string;
  pass(value: number): boolean;
}

const times = (value: number) => `${value.toFixed(2)}×`;

const GOALS: Goal[] = [
  {
    name: "rps, ours / Caddy",
    target: "≥ 1.5×",
    against: "caddy",
    value: (ours, base) => ours.rps / base.rps,
    show: times,
    pass: (value) => value >= 1.5,
  },
  {
    name: "CPU per request, ours / Caddy",
    target: "≤ 1×",
    against: "caddy",
    value: (ours, base) => ours.cpuUs !== undefined && base.cpuUs ? ours.cpuUs / base.cpuUs : undefined,
    show: (value, ours, base) => `${times(value)} (${us(ours.cpuUs)} vs ${us(base.cpuUs)} µs)`,
    pass: (value) => value <= 1,
  },
  {
    name: "rps, ours / nginx",
    target: "≥ 0.8×",
    against: "nginx",
    value: (ours, base) => ours.rps / base.rps,
    show: times,
    pass: (value) => value >= 0.8,
  },
  {
    name: "p99 added over direct",
    target: "≤ 1 ms",
    against: "direct",
    value: (ours, base) => ours.p99 - base.p99,
    show: (value) => `${value.toFixed(2)} ms`,
    pass: (value) => value <= 1,
  },
];

/** Ours, per group: the result key and the column title of the targets table. */
const OURS: Record<Group, { key: string; title: string }[]> = {
  http: [{ key: "ours-port", title: "per-port" }, { key: "ours-host", title: "host routing" }],
  https: [{ key: "ours", title: "SNI" }],
};

function us(value: number | undefined): string {
  return value === undefined ? "?" : value.toFixed(1);
}

function line(label: string, value: string): void {
  console.log(`   ${label.padEnd(LABEL)}${value}`);
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** The 1-minute load average from /proc/loadavg, or undefined. */
function loadAverage(): number | undefined {
  try {
    return Number(Deno.readTextFileSync("/proc/loadavg").split(" ")[0]);
  } catch {
    return undefined;
  }
}

/**
 * `load average before: 0.12 on 2 CPUs`, taken before the bench's own processes start, with a
 * warning when other work competes for the CPUs; "" without /proc.
 */
function loadNote(cpus: number): string {
  const load = loadAverage();
  if (load === undefined) return "";
  const busy = load > cpus / 4 ? ": other work is running, the figures are noisy (p99 most of all)" : "";
  return `   load average before: ${load.toFixed(2)} on ${cpus} CPUs${busy}`;
}

function quote(lines: string[]): string {
  return lines.map((text) => `     | ${text}`).join("\n");
}

function firstLine(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).split("\n")[0];
}

/** `  12,345    0.12    0.34     56.7` (and the errors, if any). */
function figures(load: Measured): string {
  const rps = Math.round(load.rps).toLocaleString("en-US").padStart(9);
  const errors = load.errors ? `   (${load.errors} errors or non-2xx of ${load.requests})` : "";
  return `${rps}${load.p50.toFixed(2).padStart(9)}${load.p99.toFixed(2).padStart(9)}${us(load.cpuUs).padStart(12)}` +
    errors;
}

const HEADINGS = `${"req/s".padStart(9)}${"p50 ms".padStart(9)}${"p99 ms".padStart(9)}${"CPU µs/req".padStart(12)}`;

/** config.yml of one of our bench apps. */
export function appConfig(port: number, domains: string[] = [], tls?: { certificate: string; key: string }): string {
  const lines = [`port: ${port}`, "manager: pm2", "env: production"];
  if (domains.length) lines.push(`domains: [${domains.join(", ")}]`);
  if (tls) lines.push("tls:", `  certificate: ${tls.certificate}`, `  key: ${tls.key}`);
  return lines.join("\n") + "\n";
}

/** Ports of our proxy's apps and shared listeners. */
interface OursPorts {
  /** The per-port app's public port. */
  perPort: number;
  /** proxy.yml `http:`. */
  http: number;
  /** proxy.yml `https:`. */
  https: number;
  /** config.yml `port` of the two apps with domains (unused in host routing, but required). */
  hostApps: [number, number];
}

/**
 * Writes the server under `prefix`: proxy.yml and three apps routed to `appPort`:
 * `bench-port` (no domains), `bench-plain` (`domains: [plain.test]`) and, with `cert`, `bench`
 * (`domains: [localhost]`, `tls`). Returns the per-port app's directory (for the switch test).
 */
async function writeOurServer(prefix: string, ports: OursPorts, appPort: number, cert?: Cert): Promise<string> {
  const root = join(prefix, "opt", "deployments");
  await Deno.mkdir(root, { recursive: true });
  await Deno.writeTextFile(join(root, "proxy.yml"), `http: ${ports.http}\n` + (cert ? `https: ${ports.https}\n` : ""));
  const apps = [
    { app: "bench-port", config: appConfig(ports.perPort) },
    { app: "bench-plain", config: appConfig(ports.hostApps[0], [PLAIN_HOST]) },
    ...(cert ? [{ app: "bench", config: appConfig(ports.hostApps[1], [TLS_NAME], cert) }] : []),
  ];
  for (const { app, config } of apps) {
    const dir = join(root, app);
    await Deno.mkdir(dir);
    await Deno.writeTextFile(join(dir, "config.yml"), config);
    await writeRoute(dir, { port: appPort });
  }
  return join(root, "bench-port");
}

/** Starts `baseline` in `dir`: its endpoints, or why it has none. */
async function startBaseline(
  baseline: Baseline,
  dir: string,
  ports: [number, number],
  appPort: number,
  cert?: Cert,
): Promise<{ proc?: Proc; error?: string }> {
  if (!exists(baseline.binary)) return { error: `not installed (${baseline.binary})` };
  try {
    await Deno.mkdir(dir);
    const { argv, env } = await baseline.prepare(dir, { http: ports[0], https: cert && ports[1], app: appPort }, cert);
    return { proc: spawn(baseline.name, argv, { env }) };
  } catch (error) {
    return { error: firstLine(error) };
  }
}

/** `nginx 1.22.1, caddy 2.6.2, …` for the baselines that are installed. */
async function versions(): Promise<string> {
  const found = await Promise.all(
    BASELINES.filter((b) => exists(b.binary)).map(async (baseline) => {
      const text = await run(`${baseline.name} version`, [baseline.binary, ...baseline.versionArgs]).catch(() => "");
      return `${baseline.name} ${versionOf(text) || "?"}`;
    }),
  );
  return found.join(", ");
}

/** The median of each figure of `runs` (errors and requests summed). */
export function medianLoad(runs: Measured[]): Measured {
  const of = (pick: (load: Measured) => number | undefined) => {
    const values = runs.map(pick).filter((value): value is number => value !== undefined);
    return values.length ? median(values) : undefined;
  };
  return {
    rps: of((load) => load.rps)!,
    p50: of((load) => load.p50)!,
    p99: of((load) => load.p99)!,
    cpuUs: of((load) => load.cpuUs),
    requests: runs.reduce((sum, load) => sum + load.requests, 0),
    errors: runs.reduce((sum, load) => sum + load.errors, 0),
  };
}

/**
 * Measures every endpoint that answered, `rounds` times in turn (so that drift in machine load
 * hits all alike), and returns the median figures; an endpoint that fails once is not measured again.
 */
async function measureAll(
  endpoints: Endpoint[],
  ready: Map<Endpoint, string | undefined>,
  wrk: string,
  rounds: number,
): Promise<Result[]> {
  const runs = new Map<Endpoint, Measured[]>(endpoints.map((endpoint) => [endpoint, []]));
  const errors = new Map<Endpoint, string>();
  for (const endpoint of endpoints) {
    const notReady = ready.get(endpoint);
    if (notReady) errors.set(endpoint, notReady);
  }
  for (let round = 0; round < rounds; round++) {
    for (const endpoint of endpoints) {
      if (errors.has(endpoint)) continue;
      try {
        runs.get(endpoint)!.push(await measure(wrk, endpoint.target, endpoint.proc.child.pid));
      } catch (error) {
        errors.set(endpoint, firstLine(error));
      }
    }
  }
  return endpoints.map((endpoint) =>
    errors.has(endpoint)
      ? { endpoint, error: errors.get(endpoint) }
      : { endpoint, load: medianLoad(runs.get(endpoint)!) }
  );
}

/** Prints one group's table. */
function printGroup(title: string, results: Result[]): void {
  console.log(`\n   ${title.padEnd(LABEL)}${HEADINGS}`);
  for (const { endpoint, load, error } of results) {
    line(endpoint.label, load ? figures(load) : `   not measured: ${error}`);
  }
}

/** Prints issue 13's targets for both groups: PASS or MISS for each of ours, never an exit code. */
function printGoals(results: Result[]): void {
  const find = (group: Group, key: string) =>
    results.find((r) => r.endpoint.group === group && r.endpoint.key === key)?.load;
  console.log("\n   issue 13 targets (reported, never fatal):");
  for (const group of ["http", "https"] as const) {
    if (!results.some((r) => r.endpoint.group === group)) continue;
    for (const goal of GOALS) {
      const base = find(goal.against === "direct" ? "http" : group, goal.against);
      const cells = OURS[group].map(({ key, title }) => {
        const ours = find(group, key);
        const value = ours && base ? goal.value(ours, base) : undefined;
        if (!ours || !base || value === undefined || !Number.isFinite(value)) return `${title}: n/a`;
        return `${title}: ${goal.show(value, ours, base)} ${goal.pass(value) ? "PASS" : "MISS"}`;
      });
      line(`${group === "http" ? "HTTP " : "HTTPS"} ${goal.name} ${goal.target}`, cells.join("   "));
    }
  }
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

/**
 * Switches the per-port app in `appDir` between apps a and b as a deploy does (route.json, then
 * `reload` over the control socket) and prints the time to the reply and to the first answer from
 * the new app.
 */
async function benchSwitch(prefix: string, appDir: string, url: string, ports: { a: number; b: number }) {
  const poll = Deno.createHttpClient({});
  try {
    const replyTimes: number[] = [];
    const servedTimes: number[] = [];
    const apps = [{ name: "b", port: ports.b }, { name: "a", port: ports.a }];
    for (let i = 0; i < SWITCH_WARMUPS + SWITCHES; i++) {
      const to = apps[i % 2];
      const start = performance.now();
      const served = firstServedBy(poll, url, to.name, start + SERVED_TIMEOUT_MS);
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
      `${slower.toFixed(2)} ms  — target < ${SWITCH_TARGET_MS} ms: ${slower < SWITCH_TARGET_MS ? "PASS" : "MISS"}`,
    );
  } finally {
    poll.close();
  }
}

/** Runs the proxy benchmark in `<tmp>/proxy`; every child it started is stopped before it returns or throws. */
export async function benchProxy(tmp: string, rounds = 1): Promise<void> {
  const cpus = navigator.hardwareConcurrency;
  console.log(
    `\n3. Proxy: "ok" from a Node app on 127.0.0.1, wrk 1 thread × ${CONNECTIONS} keep-alive connections, ` +
      `${DURATION_S} s after ${WARMUP_S} s warm-up, one endpoint at a time (${cpus} CPUs shared by wrk, proxy and app)`,
  );
  const wrk = which("wrk");
  const node = exists("/usr/bin/node") ? "/usr/bin/node" : which("node");
  if (!wrk || !node) {
    console.log(`   ${wrk ? "node" : "wrk"}: not installed (${INSTALL_HINT}): skipping the proxy benchmark`);
    return;
  }
  const dir = join(tmp, "proxy");
  const prefix = join(dir, "prefix");
  await Deno.mkdir(dir, { recursive: true });
  const script = join(dir, "app.cjs");
  await Deno.writeTextFile(script, APP_SCRIPT);

  const openssl = which("openssl");
  let cert: Cert | undefined;
  if (!openssl) console.log("   openssl: not installed: no HTTPS measurements");
  else {
    try {
      cert = await makeCert(dir);
    } catch (error) {
      console.log(`   no HTTPS measurements: the certificate could not be made: ${firstLine(error)}`);
    }
  }
  console.log(`   versions: ${await versions()}`);
  console.log(loadNote(cpus));
  if (cert) console.log(`   TLS: one self-signed ECDSA P-256 certificate for ${TLS_NAME}; wrk speaks HTTP/1.1`);

  const [portA, portB, perPort, oursHttp, oursHttps, hostAppA, hostAppB, ...baselinePorts] = freePorts(
    7 + 2 * BASELINES.length,
  );
  const appDir = await writeOurServer(
    prefix,
    { perPort, http: oursHttp, https: oursHttps, hostApps: [hostAppA, hostAppB] },
    portA,
    cert,
  );

  const procs: Proc[] = [];
  const started = (proc: Proc) => {
    procs.push(proc);
    return proc;
  };
  try {
    const appA = started(spawn("app a", [node, script, String(portA), "a"]));
    const appB = started(spawn("app b", [node, script, String(portB), "b"]));
    const ours = started(spawn("ours", [BIN, "proxy", "--host", "127.0.0.1"], {
      cwd: ROOT,
      env: { DEPLOY_PARADIGM_PREFIX: prefix, NO_COLOR: "1" },
    }));
    const http = (port: number, host?: string): Target => ({ url: `http://127.0.0.1:${port}/`, host });
    const https = (port: number): Target => ({ url: `https://${TLS_NAME}:${port}/` });
    const endpoint = (group: Group, key: string, label: string, target: Target, proc: Proc): Endpoint => ({
      group,
      key,
      label,
      target,
      proc,
      watch: proc === appA ? [appA] : [proc, appA],
    });
    const endpoints = [
      endpoint("http", "direct", "direct to the app (Node)", http(portA), appA),
      endpoint("http", "ours-port", "ours, per-port mode", http(perPort), ours),
      endpoint("http", "ours-host", `ours, host routing (Host: ${PLAIN_HOST})`, http(oursHttp, PLAIN_HOST), ours),
    ];
    if (cert) {
      endpoints.push(endpoint("https", "ours", `ours (domains: [${TLS_NAME}], tls: BYO)`, https(oursHttps), ours));
    }
    const failed = new Map<string, string>();
    for (const [i, baseline] of BASELINES.entries()) {
      const ports = baselinePorts.slice(2 * i, 2 * i + 2) as [number, number];
      const { proc, error } = await startBaseline(baseline, join(dir, baseline.name), ports, portA, cert);
      if (!proc) {
        failed.set(baseline.name, error ?? "did not start");
        continue;
      }
      started(proc);
      endpoints.push(endpoint("http", baseline.name, baseline.label, http(ports[0]), proc));
      if (cert) endpoints.push(endpoint("https", baseline.name, baseline.label, https(ports[1]), proc));
    }
    const ready = new Map<Endpoint, string | undefined>();
    await Promise.all([
      waitReady(http(portB), [appB], { app: "b", timeoutMs: READY_TIMEOUT_MS }),
      ...endpoints.map((endpoint) =>
        waitReady(endpoint.target, endpoint.watch, { app: "a", caCert: cert?.pem, timeoutMs: READY_TIMEOUT_MS })
          .then(() => ready.set(endpoint, undefined), (error) => ready.set(endpoint, firstLine(error)))
      ),
    ]);

    const measured = endpoints.filter((endpoint) => !ready.get(endpoint)).length;
    console.log(
      `   measuring ${measured} endpoint(s)${rounds > 1 ? ` × ${rounds} rounds (median of each figure)` : ""}, ` +
        `about ${Math.ceil((measured * rounds * (WARMUP_S + DURATION_S + 0.3)) / 5) * 5} s …`,
    );
    const results = await measureAll(endpoints, ready, wrk, rounds);
    const inGroup = (group: Group) => results.filter((result) => result.endpoint.group === group);
    printGroup("plain HTTP", inGroup("http"));
    if (cert) printGroup("HTTPS (TLS at the proxy)", inGroup("https"));
    for (const [name, error] of failed) line(`${name}:`, `not measured: ${error}`);
    printGoals(results);

    console.log("");
    const perPortDown = ready.get(endpoints.find((e) => e.key === "ours-port")!);
    if (perPortDown) line("switch:", "not measured (ours in per-port mode did not answer)");
    else await benchSwitch(prefix, appDir, http(perPort).url, { a: portA, b: portB });

    const log = ours.output();
    const problems = log.split("\n").filter((text) => /\b(50[0-9]|error|failed|cannot)\b/i.test(text));
    if (ours.exited) console.log(`   ours exited; its log ends:\n${quote(log.trim().split("\n").slice(-12))}`);
    else if (problems.length) {
      console.log(`   ours' log: ${problems.length} problem line(s), the first ones:\n${quote(problems.slice(0, 5))}`);
    }
  } finally {
    await Promise.all(procs.map((proc) => stop(proc)));
  }
}
