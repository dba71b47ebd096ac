/**
 * Section 3 of `deno task bench` (`deno task bench proxy` runs it alone): the built-in proxy
 * (`deploy-paradigm proxy`) side by side with nginx, Caddy and HAProxy (./baselines.ts), in one
 * run on 127.0.0.1, with the same client for all: `wrk -t1 -c8 --latency`, each endpoint in turn,
 * against a tiny Node app answering "ok", twice (./load.ts):
 * - at saturation (as fast as wrk can, 5 s after a 1 s warm-up): throughput and CPU per request.
 *   wrk, app and proxy share the CPUs, so its p99 is mostly time spent queued;
 * - at a fixed rate (`PACED_RATE`, 2,000 requests/s in all, 10 s after a 1 s warm-up), the same
 *   for every endpoint and well below the slowest one's capacity: the latency a proxy adds. A Lua
 *   script paces wrk (its `delay()` hook) and prints p50, p90, p99 and p99.9 (its `done()` hook);
 *   an endpoint whose achieved rate is off by more than `PACE_TOLERANCE` (3%) is flagged and its
 *   target not judged.
 *
 * 1. Plain HTTP: direct to the app; a bare Deno TCP relay (./relay_floor.ts, the runtime's
 *    floor: what any proxy on Deno adds, printed as context under the targets); a minimal HTTP/1.1
 *    proxy on Deno (./http_floor.ts: an HTTP proxy's floor, printed as context too); ours in
 *    per-port mode (an app without domains on its own port) and with host routing (an app with
 *    `domains: [plain.test]` on the shared `http:` port of proxy.yml, wrk sending `Host:
 *    plain.test`); each baseline.
 *    HTTPS: each proxy terminating TLS with one self-signed certificate for `localhost` (ours:
 *    an app with `domains: [localhost]` and `tls: {certificate, key}` on the shared `https:`
 *    port, found by SNI; wrk sends the URL's host as SNI).
 *    For each, at saturation: rps, p50, p99 and the CPU time per request of the proxy process and
 *    its children (utime + stime from /proc/<pid>/stat before and after the measured run); at the
 *    fixed rate: the achieved rate, p50, p90, p99 and p99.9.
 *    Then issue 13's targets, each PASS or MISS, for plain HTTP and for HTTPS: ours ≥ 1.5× Caddy's
 *    rps and ≤ Caddy's CPU per request, ≥ 0.8× nginx's rps, ≤ 1 ms of p99 added over direct at
 *    saturation, and ≤ 1 ms of p99 added over direct at the fixed rate.
 * 2. Switch time (per-port app): write route.json for another app and send `{"op":"reload"}` over
 *    the control socket, as a deploy does; the median time to the reply and to the first
 *    response served by the new app. Target: < 50 ms.
 *
 * Every proxy measured (ours, the relay, the baselines) runs at the same nice value: `--nice N`,
 * default ours' default (proxy.yml `priority`); ours through proxy.yml, the others under
 * `nice -n N`; the app and wrk at 0. The values in force are read back from /proc and printed.
 * Then what that priority is for: the paced run again beside CPU-bound loops at nice 0 (an app
 * busy computing), direct and through ours at N and at 0.
 *
 * Benchmarks report, tests assert: a missed target, a baseline that is not installed or an
 * endpoint that never answers (ours while a feature is missing) is printed and the run goes on.
 * Every child is tracked from its spawn (./procs.ts): {@link stopProxyBench} stops whatever still
 * runs (bench/run.ts calls it on Ctrl-C / SIGTERM), and `benchProxy` stops its children itself
 * when it ends, also on failure. Its files live in `<tmp>/proxy`, which run.ts removes.
 * @module
 */
import { setPriority } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { control } from "../src/proxy/client.ts";
import { DEFAULT_PRIORITY } from "../src/proxy/config.ts";
import { writeRoute } from "../src/proxy/routes.ts";
import { type Baseline, BASELINES, type Cert, makeCert, TLS_NAME, versionOf } from "./baselines.ts";
import {
  CONNECTIONS,
  DURATION_S,
  type Load,
  measure,
  type Measured,
  measurePaced,
  PACE_TOLERANCE,
  type Paced,
  PACED_RATE,
  PACED_S,
  pacingScript,
  type Target,
  waitReady,
  WARMUP_S,
} from "./load.ts";
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
const LABEL = 52;
/** Above this share of the slowest endpoint's rate at saturation, the paced rate is said to be too high. */
const PACED_SHARE_MAX = 0.5;

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

/** The runtime's floor: a bare Deno TCP relay, no HTTP (./relay_floor.ts). */
const RELAY_FLOOR = fileURLToPath(new URL("./relay_floor.ts", import.meta.url));

/**
 * An HTTP proxy's floor on Deno: heads read and checked, forwarding fields set, nothing more
 * (./http_floor.ts). Ours minus it is what ours does beyond that, and how it is built.
 */
const HTTP_FLOOR = fileURLToPath(new URL("./http_floor.ts", import.meta.url));

type Group = "http" | "https";
const GROUP_TITLES: Record<Group, string> = { http: "plain HTTP", https: "HTTPS (TLS at the proxy)" };

/** One thing wrk measures. */
interface Endpoint {
  group: Group;
  /** "direct", "floor", "floor-http", "ours-port", "ours-host", "ours" or a baseline's name. */
  key: string;
  label: string;
  target: Target;
  /** The process whose CPU time is counted (with its children). */
  proc: Proc;
  /** Processes whose exit means the endpoint cannot answer. */
  watch: Proc[];
}

/** An endpoint's figures at saturation and at the paced rate, each or why it has none. */
interface Result {
  endpoint: Endpoint;
  load: Measured | string;
  paced: Paced | string;
}

/**
 * One of issue 13's speed targets, comparing ours with `against` (direct is always the plain HTTP
 * one) at saturation, or with `paced` at the paced rate.
 */
interface Goal {
  name: string;
  target: string;
  against: string;
  paced?: true;
  value(ours: Measured, base: Measured): number | undefined;
  show(value: number, ours: Measured, base: Measured): string;
  pass(value: number): boolean;
}

const times = (value: number) => `${value.toFixed(2)}×`;
const rate = (rps: number) => Math.round(rps).toLocaleString("en-US");
const offPace = (paced: Load) => Math.abs(paced.rps / PACED_RATE - 1) > PACE_TOLERANCE;

const P99_ADDED: Omit<Goal, "name"> = {
  target: "≤ 1 ms",
  against: "direct",
  value: (ours, base) => ours.p99 - base.p99,
  show: (value) => `${value.toFixed(2)} ms`,
  pass: (value) => value <= 1,
};

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
  { name: "p99 added over direct at saturation", ...P99_ADDED },
  {
    name: `p99 added over direct at ${rate(PACED_RATE)} req/s`,
    ...P99_ADDED,
    paced: true,
    // Not judged unless both ran at the offered rate (the table says which did not).
    value: (ours, base) => offPace(ours) || offPace(base) ? undefined : P99_ADDED.value(ours, base),
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

/** A results table: its columns and a note after a row's cells, if any. */
interface Table<T extends Load> {
  columns: { title: string; width: number; cell(figures: T): string }[];
  note?(figures: T): string;
}

const ms = (value: number, digits = 2) => value.toFixed(digits);
const SATURATION: Table<Measured> = {
  columns: [
    { title: "req/s", width: 9, cell: (load) => rate(load.rps) },
    { title: "p50 ms", width: 9, cell: (load) => ms(load.p50) },
    { title: "p99 ms", width: 9, cell: (load) => ms(load.p99) },
    { title: "CPU µs/req", width: 12, cell: (load) => us(load.cpuUs) },
  ],
};
const PACED: Table<Paced> = {
  columns: [
    { title: "req/s", width: 9, cell: (paced) => rate(paced.rps) },
    ...(["p50", "p90", "p99", "p999"] as const).map((key) => ({
      title: `${key === "p999" ? "p99.9" : key} ms`,
      width: 10,
      cell: (paced: Paced) => ms(paced[key], 3),
    })),
  ],
  note: (paced) => offPace(paced) ? `off pace: ${rate(paced.rps)} of ${rate(PACED_RATE)} req/s` : "",
};

/** `  12,345    0.12    0.34     56.7` (and the errors and the table's note, if any). */
function row<T extends Load>(figures: T, table: Table<T>): string {
  const cells = table.columns.map((column) => column.cell(figures).padStart(column.width)).join("");
  const errors = figures.errors ? `   (${figures.errors} errors or non-2xx of ${figures.requests})` : "";
  const note = table.note?.(figures);
  return cells + errors + (note ? `   ${note}` : "");
}

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
async function writeOurServer(
  prefix: string,
  ports: OursPorts,
  appPort: number,
  nice: number,
  cert?: Cert,
): Promise<string> {
  const root = join(prefix, "opt", "deployments");
  await Deno.mkdir(root, { recursive: true });
  await Deno.writeTextFile(
    join(root, "proxy.yml"),
    `http: ${ports.http}\n` + (cert ? `https: ${ports.https}\n` : "") +
      (nice === DEFAULT_PRIORITY ? "" : `priority: ${nice}\n`),
  );
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
  nice: number,
  cert?: Cert,
): Promise<{ proc?: Proc; error?: string }> {
  if (!exists(baseline.binary)) return { error: `not installed (${baseline.binary})` };
  try {
    await Deno.mkdir(dir);
    const { argv, env } = await baseline.prepare(dir, { http: ports[0], https: cert && ports[1], app: appPort }, cert);
    return { proc: spawn(baseline.name, niced(nice, argv), { env }) };
  } catch (error) {
    return { error: firstLine(error) };
  }
}

/** `argv` run at nice value `nice` by coreutils' `nice` (which runs it anyway when it may not). */
function niced(nice: number, argv: string[]): string[] {
  return ["nice", "-n", String(nice), ...argv];
}

/** The nice value of process `pid` (field 19 of /proc/<pid>/stat, after the name in parentheses). */
function niceOf(pid: number): number | undefined {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const nice = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[16]);
    return Number.isInteger(nice) ? nice : undefined;
  } catch {
    return undefined;
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
export function medians<T extends Load>(runs: T[]): T {
  const keys = new Set(runs.flatMap((run) => Object.keys(run) as (keyof T)[]));
  const figures = [...keys].map((key) => {
    const values = runs.map((run) => run[key] as number | undefined)
      .filter((value): value is number => value !== undefined);
    const sum = values.reduce((total, value) => total + value, 0);
    return [key, key === "requests" || key === "errors" ? sum : values.length ? median(values) : undefined];
  });
  return Object.fromEntries(figures) as T;
}

/**
 * Measures every endpoint that answered with `how`, `rounds` times in turn (so that drift in
 * machine load hits all alike), and returns the median figures; an endpoint that fails once is
 * not measured again.
 */
async function measureAll<T extends Load>(
  endpoints: Endpoint[],
  ready: Map<Endpoint, string | undefined>,
  rounds: number,
  how: (endpoint: Endpoint) => Promise<T>,
): Promise<Map<Endpoint, T | string>> {
  const runs = new Map<Endpoint, T[]>(endpoints.map((endpoint) => [endpoint, []]));
  const errors = new Map<Endpoint, string>();
  for (const endpoint of endpoints) {
    const notReady = ready.get(endpoint);
    if (notReady) errors.set(endpoint, notReady);
  }
  for (let round = 0; round < rounds; round++) {
    for (const endpoint of endpoints) {
      if (errors.has(endpoint)) continue;
      try {
        runs.get(endpoint)!.push(await how(endpoint));
      } catch (error) {
        errors.set(endpoint, firstLine(error));
      }
    }
  }
  return new Map(endpoints.map((endpoint) => [endpoint, errors.get(endpoint) ?? medians(runs.get(endpoint)!)]));
}

/** Prints one group's table of the figures `pick` takes from each result (saturation or paced). */
function printGroup<T extends Load>(
  title: string,
  results: Result[],
  pick: (result: Result) => T | string,
  table: Table<T>,
): void {
  console.log(`\n   ${title.padEnd(LABEL)}${table.columns.map((c) => c.title.padStart(c.width)).join("")}`);
  for (const result of results) {
    const figures = pick(result);
    line(result.endpoint.label, typeof figures === "string" ? `   not measured: ${figures}` : row(figures, table));
  }
}

/**
 * `   2,000 req/s offered = 21% of the slowest endpoint's rate at saturation (…)`, and a warning when
 * that share is over {@link PACED_SHARE_MAX}: too close to its capacity for the latency to be its own.
 */
function pacedShare(results: Result[]): string {
  const [slowest] = results.flatMap(({ endpoint, load }) => typeof load === "string" ? [] : [{ endpoint, load }])
    .sort((a, b) => a.load.rps - b.load.rps);
  if (!slowest) return "";
  const share = PACED_RATE / slowest.load.rps;
  const { label, group } = slowest.endpoint;
  const high = share > PACED_SHARE_MAX ? ": too close to it, the paced figures include queueing" : "";
  return `   ${rate(PACED_RATE)} req/s offered = ${(share * 100).toFixed(0)}% of the slowest endpoint's rate at ` +
    `saturation (${label}, ${group === "http" ? "HTTP" : "HTTPS"}: ${rate(slowest.load.rps)})${high}`;
}

/** Prints issue 13's targets for both groups: PASS or MISS for each of ours, never an exit code. */
function printGoals(results: Result[]): void {
  const find = (group: Group, key: string, paced?: boolean) => {
    const result = results.find((r) => r.endpoint.group === group && r.endpoint.key === key);
    const figures = paced ? result?.paced : result?.load;
    return typeof figures === "string" ? undefined : figures;
  };
  console.log("\n   issue 13 targets (reported, never fatal):");
  for (const group of ["http", "https"] as const) {
    if (!results.some((r) => r.endpoint.group === group)) continue;
    for (const goal of GOALS) {
      const base = find(goal.against === "direct" ? "http" : group, goal.against, goal.paced);
      const cells = OURS[group].map(({ key, title }) => {
        const ours = find(group, key, goal.paced);
        const value = ours && base ? goal.value(ours, base) : undefined;
        if (!ours || !base || value === undefined || !Number.isFinite(value)) return `${title}: n/a`;
        return `${title}: ${goal.show(value, ours, base)} ${goal.pass(value) ? "PASS" : "MISS"}`;
      });
      line(`${group === "http" ? "HTTP " : "HTTPS"} ${goal.name} ${goal.target}`, cells.join("   "));
    }
  }
  // What the runtime alone adds, and the least an HTTP proxy on it adds, for reading the p99 lines
  // above (no target of their own).
  const added = (key: string, paced: boolean) => {
    const [base, floor] = [find("http", "direct", paced), find("http", key, paced)];
    return base && floor ? `${(floor.p99 - base.p99).toFixed(2)} ms` : "n/a";
  };
  for (const [key, what] of [["floor", "the bare Deno relay"], ["floor-http", "the HTTP floor"]]) {
    line(
      `context: p99 ${what} adds over direct`,
      `at saturation: ${added(key, false)}   at ${rate(PACED_RATE)} req/s: ${added(key, true)}`,
    );
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

/** Sets the nice value of every thread of process `pid` (as the proxy does for itself at start). */
function reniceThreads(pid: number, nice: number): void {
  for (const task of Deno.readDirSync(`/proc/${pid}/task`)) setPriority(Number(task.name), nice);
}

/**
 * Why the proxy has a priority of its own: the paced run again while CPU-bound loops at nice 0
 * (one per CPU: an app busy computing) compete for the CPUs, direct to the app and through ours in
 * per-port mode at `nice` (as measured above) and at nice 0, the rows in turn each round.
 */
async function benchBusyNeighbour(options: {
  direct: Endpoint;
  ours: Endpoint;
  ready: Map<Endpoint, string | undefined>;
  rounds: number;
  nice: number;
  wrk: string;
  pacer: string;
  cpus: number;
}): Promise<void> {
  const { direct, ours, nice } = options;
  const pid = ours.proc.child.pid;
  const rows = new Map<Endpoint, number | undefined>([
    [direct, undefined],
    [{ ...ours, label: `ours, per-port mode, at nice ${nice}` }, nice],
    ...(nice === 0 ? [] : [[{ ...ours, label: "ours, per-port mode, at nice 0" }, 0] as const]),
  ]);
  const ready = new Map([...rows.keys()].map((row) => [row, options.ready.get(row.key === "direct" ? direct : ours)]));
  const loops = Array.from({ length: options.cpus }, (_, i) => spawn(`busy ${i}`, ["sh", "-c", "while :; do :; done"]));
  let paced: Map<Endpoint, Paced | string>;
  try {
    paced = await measureAll([...rows.keys()], ready, options.rounds, (row) => {
      const rowNice = rows.get(row);
      if (rowNice !== undefined) reniceThreads(pid, rowNice);
      return measurePaced(options.wrk, row.target, options.pacer);
    });
  } finally {
    await Promise.all(loops.map((loop) => stop(loop)));
    try {
      reniceThreads(pid, nice);
    } catch { /* not permitted: the row said so */ }
  }
  const results = [...rows.keys()].map((endpoint): Result => ({ endpoint, load: "", paced: paced.get(endpoint)! }));
  printGroup(
    `with ${options.cpus} CPU-bound loops at nice 0, at ${rate(PACED_RATE)} req/s`,
    results,
    (r) => r.paced,
    PACED,
  );
  const base = paced.get(direct)!;
  const added = results.slice(1).map(({ endpoint, paced: figures }) => {
    const value = typeof base === "string" || typeof figures === "string" ? "?" : ms(figures.p99 - base.p99);
    return `${endpoint.label.replace("ours, per-port mode, ", "")}: ${value} ms`;
  });
  line("context: p99 ours adds over direct beside them", added.join("   "));
}

/** Runs the proxy benchmark in `<tmp>/proxy`; every child it started is stopped before it returns or throws. */
export async function benchProxy(tmp: string, rounds = 1, nice = DEFAULT_PRIORITY): Promise<void> {
  const cpus = navigator.hardwareConcurrency;
  console.log(
    `\n3. Proxy: "ok" from a Node app on 127.0.0.1, wrk 1 thread × ${CONNECTIONS} keep-alive connections, ` +
      `one endpoint at a time (${cpus} CPUs shared by wrk, proxy and app), each measured twice:\n` +
      `   - at saturation (as fast as wrk can, ${DURATION_S} s after ${WARMUP_S} s warm-up): throughput and CPU ` +
      `per request; its p99 is mostly time queued behind other requests\n` +
      `   - at a fixed rate, ${rate(PACED_RATE)} req/s in all (paced by a wrk Lua script, ${PACED_S} s after ` +
      `${WARMUP_S} s warm-up): the same load for every endpoint, well below the slowest one's capacity, ` +
      `so the latency is the one a proxy adds`,
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

  const [portA, portB, perPort, oursHttp, oursHttps, hostAppA, hostAppB, floorPort, httpFloorPort, ...baselinePorts] =
    freePorts(9 + 2 * BASELINES.length);
  const appDir = await writeOurServer(
    prefix,
    { perPort, http: oursHttp, https: oursHttps, hostApps: [hostAppA, hostAppB] },
    portA,
    nice,
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
    /** A Deno script on 127.0.0.1 at the proxies' priority, with `args`. */
    const denoScript = (name: string, args: string[]) =>
      started(spawn(
        name,
        niced(nice, [
          Deno.execPath(),
          "run",
          "--quiet",
          "--no-prompt",
          "--no-config",
          "--allow-net=127.0.0.1",
          ...args,
        ]),
      ));
    const floor = denoScript("floor", [RELAY_FLOOR, String(floorPort), String(portA)]);
    const httpFloor = denoScript("http floor", [HTTP_FLOOR, String(httpFloorPort), String(portA)]);
    const endpoints = [
      endpoint("http", "direct", "direct to the app (Node)", http(portA), appA),
      endpoint("http", "floor", "bare Deno TCP relay (the runtime's floor)", http(floorPort), floor),
      endpoint(
        "http",
        "floor-http",
        "minimal HTTP/1.1 proxy on Deno (bench/http_floor.ts)",
        http(httpFloorPort),
        httpFloor,
      ),
      endpoint("http", "ours-port", "ours, per-port mode", http(perPort), ours),
      endpoint("http", "ours-host", `ours, host routing (Host: ${PLAIN_HOST})`, http(oursHttp, PLAIN_HOST), ours),
    ];
    if (cert) {
      endpoints.push(endpoint("https", "ours", `ours (domains: [${TLS_NAME}], tls: BYO)`, https(oursHttps), ours));
    }
    const failed = new Map<string, string>();
    for (const [i, baseline] of BASELINES.entries()) {
      const ports = baselinePorts.slice(2 * i, 2 * i + 2) as [number, number];
      const { proc, error } = await startBaseline(baseline, join(dir, baseline.name), ports, portA, nice, cert);
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

    const proxies = [...new Set(endpoints.map((endpoint) => endpoint.proc))].filter((proc) => proc !== appA);
    line(
      "priority:",
      `every proxy asked for nice ${nice} (ours: proxy.yml priority${
        nice === DEFAULT_PRIORITY ? ", its default" : ""
      }; the others: nice -n ${nice}), the app and wrk at 0; in force: ` +
        proxies.map((proc) => `${proc.name} ${niceOf(proc.child.pid) ?? "?"}`).join(", "),
    );
    const measured = endpoints.filter((endpoint) => !ready.get(endpoint)).length;
    const perEndpointS = 2 * WARMUP_S + DURATION_S + PACED_S + 0.6;
    // (+ the paced run beside busy loops: direct and ours at one or two nice values)
    const seconds = rounds * (measured * perEndpointS + (nice === 0 ? 2 : 3) * (WARMUP_S + PACED_S + 0.3));
    console.log(
      `   measuring ${measured} endpoint(s)${rounds > 1 ? ` × ${rounds} rounds (median of each figure)` : ""}, ` +
        `about ${Math.ceil(seconds / 5) * 5} s …`,
    );
    const pacer = join(dir, "paced.lua");
    await Deno.writeTextFile(pacer, pacingScript(PACED_RATE));
    const loads = await measureAll(endpoints, ready, rounds, (e) => measure(wrk, e.target, e.proc.child.pid));
    const paced = await measureAll(endpoints, ready, rounds, (e) => measurePaced(wrk, e.target, pacer));
    const results: Result[] = endpoints.map((e) => ({ endpoint: e, load: loads.get(e)!, paced: paced.get(e)! }));
    const inGroup = (group: Group) => results.filter((result) => result.endpoint.group === group);
    const groups: Group[] = cert ? ["http", "https"] : ["http"];
    for (const group of groups) {
      printGroup(`${GROUP_TITLES[group]}, at saturation`, inGroup(group), (r) => r.load, SATURATION);
    }
    for (const [name, error] of failed) line(`${name}:`, `not measured: ${error}`);
    console.log(`\n${pacedShare(results)}`);
    for (const group of groups) {
      printGroup(`${GROUP_TITLES[group]}, at ${rate(PACED_RATE)} req/s`, inGroup(group), (r) => r.paced, PACED);
    }
    printGoals(results);
    const [direct, oursPort] = ["direct", "ours-port"].map((key) => endpoints.find((e) => e.key === key)!);
    await benchBusyNeighbour({ direct, ours: oursPort, ready, rounds, nice, wrk, pacer, cpus });

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
