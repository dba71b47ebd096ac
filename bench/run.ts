/**
 * `deno task bench`: three benchmarks, each printed as a ratio against a baseline measured in the
 * same run on the same machine. Prints figures only; nothing is asserted.
 *
 * 1. Execute speed: `bin/deploy-paradigm execute <bare> <commit>` of a static app of 1,000 files
 *    (~20 MB of incompressible text) against the floor, `git archive | tar -x` plus a rename into
 *    a fresh directory. Target: ≤ 1.3×. The median start-up of `main.ts --version` is printed too,
 *    to show how much of the gap is Deno starting.
 * 2. Start-up: `deno run -A --quiet main.ts --help` against a hello-world script. Target: ≤ 2×.
 * 3. The proxy (./proxy.ts): keep-alive throughput, latency and CPU per request direct / through
 *    our proxy / through nginx, Caddy and HAProxy, over plain HTTP and HTTPS, at saturation and
 *    at a fixed 2,000 requests/s (latency percentiles), with issue 13's targets (ours ≥ 1.5×
 *    Caddy's rps and ≤ its CPU per request, ≥ 0.8× nginx's rps, ≤ 1 ms p99 added over direct at
 *    saturation and at the fixed rate), and the time a route switch takes (target < 50 ms).
 * 4. The fleet monitor (./fleet.ts): ingest, search and collection cycles.
 *
 * `deno task bench [execute] [startup] [proxy] [fleet] [--rounds N] [--nice N]`: those sections only
 * (default: all); `--rounds N` makes the proxy section measure each endpoint N times in turn (median
 * figures); `--nice N` runs every proxy it measures at that nice value (default: ours' default).
 *
 * Product and baseline runs alternate so that drift in machine load hits both alike. Everything
 * lives in one temp dir that is removed at the end (also on Ctrl-C / SIGTERM); every child process
 * is awaited before the next one starts, except the proxy section's servers, which it stops itself
 * (and the signal handler stops through `stopProxyBench`).
 * @module
 */
import { Buffer } from "node:buffer";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { benchFleet } from "./fleet.ts";
import { benchProxy, stopProxyBench } from "./proxy.ts";
import { DEFAULT_PRIORITY } from "../src/proxy/config.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BIN = join(ROOT, "bin", "deploy-paradigm");
const APP = "bench-static";

const FILES = 1000;
const FILE_BYTES = 20 * 1024; // of base64 text per file, ~20 MB in all
const EXEC_RUNS = 9;
const VERSION_RUNS = 7;
const STARTUP_RUNS = 15;
const EXEC_TARGET = 1.3;
const STARTUP_TARGET = 2;

interface Timed {
  ms: number;
  code: number;
  stdout: string;
  stderr: string;
}

interface RunOptions {
  cwd?: string;
  env?: Record<string, string>;
  /** Discard stdout instead of capturing it. */
  discardStdout?: boolean;
}

/** The child running right now, so a signal can stop it before the temp dir goes. */
let running: Deno.ChildProcess | undefined;

/** Runs `argv` to completion and returns its wall time in ms. */
async function timed(argv: string[], options: RunOptions = {}): Promise<Timed> {
  const start = performance.now();
  const child = new Deno.Command(argv[0], {
    args: argv.slice(1),
    cwd: options.cwd,
    env: options.env,
    stdin: "null",
    stdout: options.discardStdout ? "null" : "piped",
    stderr: "piped",
  }).spawn();
  running = child;
  const out = await child.output();
  const ms = performance.now() - start;
  running = undefined;
  const text = new TextDecoder();
  return {
    ms,
    code: out.code,
    stdout: options.discardStdout ? "" : text.decode(out.stdout),
    stderr: text.decode(out.stderr),
  };
}

/** Like `timed`, but throws with the child's output when it does not exit 0. */
async function mustRun(argv: string[], options: RunOptions = {}): Promise<Timed> {
  const result = await timed(argv, options);
  if (result.code !== 0) {
    throw new Error(
      `\`${argv.join(" ")}\` exited ${result.code}\n--- stdout\n${result.stdout}--- stderr\n${result.stderr}`,
    );
  }
  return result;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

function ms(value: number): string {
  return `${value.toFixed(1)} ms`.padStart(10);
}

/** `median (min–max, n runs)` */
function summary(values: number[]): string {
  return `${ms(median(values))}  (min ${Math.min(...values).toFixed(1)}, max ${
    Math.max(...values).toFixed(1)
  }, ${values.length} runs)`;
}

function verdict(ratio: number, target: number): string {
  return `${ratio.toFixed(2)}×  — target ≤ ${target}×: ${ratio <= target ? "met" : "not met"}`;
}

/** ~`bytes` characters of base64 of random bytes, in 76-character lines. */
function randomText(bytes: number): string {
  const raw = new Uint8Array(Math.ceil((bytes * 3) / 4));
  crypto.getRandomValues(raw);
  const b64 = Buffer.from(raw).toString("base64").slice(0, bytes);
  return b64.replace(/(.{76})/g, "$1\n") + "\n";
}

const GIT_IDENTITY = [
  "-c",
  "user.name=bench",
  "-c",
  "user.email=bench@example.invalid",
  "-c",
  "commit.gpgsign=false",
];

/** Writes the app, commits it and pushes it into a bare repo. Returns the bare repo and commit. */
async function makeRepo(tmp: string): Promise<{ bare: string; commit: string; bytes: number }> {
  const work = join(tmp, "work");
  // Where the server keeps the app's repository: execute deploys only the app a repository is named after.
  const bare = join(tmp, "prefix", "var", "repos", `${APP}.git`);
  await Deno.mkdir(join(bare, ".."), { recursive: true });
  await Deno.mkdir(work);
  await Deno.writeTextFile(join(work, "deploy.yml"), `name: ${APP}\ntype: static\nkeepReleases: 3\n`);
  await Deno.writeTextFile(
    join(work, "index.html"),
    "<!doctype html>\n<title>bench</title>\n<h1>deploy-paradigm bench</h1>\n",
  );
  let bytes = 0;
  const perDir = 100;
  for (let i = 0; i < FILES; i++) {
    const dir = join(work, "assets", `d${String(Math.floor(i / perDir)).padStart(2, "0")}`);
    if (i % perDir === 0) await Deno.mkdir(dir, { recursive: true });
    const text = randomText(FILE_BYTES);
    bytes += text.length;
    await Deno.writeTextFile(join(dir, `f${String(i).padStart(4, "0")}.txt`), text);
  }
  await mustRun(["git", "init", "-q", work]);
  await mustRun(["git", "-C", work, "add", "-A"]);
  await mustRun(["git", "-C", work, ...GIT_IDENTITY, "commit", "-q", "-m", "bench app"]);
  await mustRun(["git", "init", "-q", "--bare", bare]);
  await mustRun(["git", "-C", work, "push", "-q", bare, "HEAD:refs/heads/main"]);
  const commit = (await mustRun(["git", "-C", work, "rev-parse", "HEAD"])).stdout.trim();
  await Deno.remove(work, { recursive: true }); // only the bare repo is needed from here on
  return { bare, commit, bytes };
}

const FLOOR_SCRIPT =
  'set -eo pipefail; mkdir "$3"; git --git-dir "$1" archive --format=tar "$2" | tar -x -f - -C "$3"; ' +
  'mv -T "$3" "$4"';

async function benchExecute(tmp: string): Promise<void> {
  console.log(`\n1. Execute speed: static app, ${FILES} files`);
  const setupStart = performance.now();
  const { bare, commit, bytes } = await makeRepo(tmp);
  console.log(
    `   app: ${FILES + 2} files, ${(bytes / 1e6).toFixed(1)} MB, commit ${commit.slice(0, 7)} ` +
      `(set up in ${((performance.now() - setupStart) / 1000).toFixed(1)} s)`,
  );

  const prefix = join(tmp, "prefix");
  const appDir = join(prefix, "opt", "deployments", APP);
  await Deno.mkdir(appDir, { recursive: true });
  await Deno.writeTextFile(
    join(appDir, "config.yml"),
    "port: 18080\nmanager: pm2\nenv: production\nstrategy: restart\n",
  );
  const env = { DEPLOY_PARADIGM_PREFIX: prefix };
  const current = join(appDir, "current");

  const floorRoot = join(tmp, "floor");
  await Deno.mkdir(floorRoot);
  let floorCount = 0;

  let lastRelease: string | undefined;
  const cleanupTimes: number[] = [];
  const execute = async (): Promise<number> => {
    const result = await mustRun([BIN, "execute", bare, commit], { cwd: ROOT, env });
    const release = await Deno.readLink(current);
    if (release === lastRelease) throw new Error(`execute did not make a new release (current → ${release})`);
    lastRelease = release;
    // The cleanup step deletes the oldest release (20 MB, 1,000 files), which the floor does not do.
    const cleanup = /✓ cleanup +([\d.]+)s/.exec(result.stdout);
    cleanupTimes.push(cleanup ? Number(cleanup[1]) * 1000 : 0);
    return result.ms;
  };
  const floor = async (): Promise<number> => {
    const n = floorCount++;
    const partial = join(floorRoot, `.${n}.partial`);
    const final = join(floorRoot, String(n));
    const result = await mustRun(["bash", "-c", FLOOR_SCRIPT, "floor", bare, commit, partial, final]);
    await Deno.remove(final, { recursive: true }); // outside the timing; keeps the disk use flat
    return result.ms;
  };
  const version = async (): Promise<number> =>
    (await mustRun([Deno.execPath(), "run", "-A", "main.ts", "--version"], { cwd: ROOT })).ms;

  await execute(); // warm-up: caches, page cache of the bare repo
  await floor();
  await version();
  const execTimes: number[] = [];
  const floorTimes: number[] = [];
  const versionTimes: number[] = [];
  for (let i = 0; i < EXEC_RUNS; i++) {
    execTimes.push(await execute());
    floorTimes.push(await floor());
    if (i < VERSION_RUNS) versionTimes.push(await version());
  }
  const releases = [];
  for await (const entry of Deno.readDir(join(appDir, "releases"))) {
    if (entry.isDirectory && !entry.name.startsWith(".")) releases.push(entry.name);
  }

  const exec = median(execTimes);
  const base = median(floorTimes);
  const startup = median(versionTimes);
  console.log(`   execute (bin/deploy-paradigm):     ${summary(execTimes)}`);
  console.log(`   floor (git archive | tar, mv):     ${summary(floorTimes)}`);
  console.log(`   startup (main.ts --version):       ${summary(versionTimes)}`);
  console.log(`   execute minus startup:             ${ms(exec - startup)}`);
  console.log(`   ratio execute / floor:             ${verdict(exec / base, EXEC_TARGET)}`);
  const cleanup = median(cleanupTimes.slice(-EXEC_RUNS));
  console.log(`   of which deleting the oldest release: ${ms(cleanup)} (the floor deletes nothing)`);
  console.log(
    `   ratio without that deletion:       ${
      (exec - cleanup) / base < 0 ? "-" : ((exec - cleanup) / base).toFixed(2)
    }×`,
  );
  console.log(`   releases kept after ${EXEC_RUNS + 1} deploys:    ${releases.length} (keepReleases: 3)`);
}

async function benchStartup(tmp: string): Promise<void> {
  console.log("\n2. Start-up");
  const hello = join(tmp, "hello.ts");
  await Deno.writeTextFile(hello, 'console.log("hello world");\n');
  const deno = Deno.execPath();
  const help = async () =>
    (await mustRun([deno, "run", "-A", "--quiet", "main.ts", "--help"], { cwd: ROOT, discardStdout: true })).ms;
  const helloWorld = async () =>
    (await mustRun([deno, "run", "-A", "--quiet", hello], { cwd: tmp, discardStdout: true })).ms;

  await help(); // warm-up
  await helloWorld();
  const helpTimes: number[] = [];
  const bareTimes: number[] = [];
  for (let i = 0; i < STARTUP_RUNS; i++) {
    helpTimes.push(await help());
    bareTimes.push(await helloWorld());
  }
  console.log(`   main.ts --help:                    ${summary(helpTimes)}`);
  console.log(`   hello.ts:                          ${summary(bareTimes)}`);
  console.log(
    `   ratio help / hello:                ${verdict(median(helpTimes) / median(bareTimes), STARTUP_TARGET)}`,
  );
}

const SECTIONS = ["execute", "startup", "proxy", "fleet"] as const;
type Section = typeof SECTIONS[number];
const USAGE = `usage: deno task bench [${SECTIONS.join("] [")}] [--rounds N] [--nice N]
  sections: those only (default: all); --rounds N: the proxy section measures each endpoint N times
  in turn and prints the median of each figure (default 1); --nice N: every proxy measured runs at
  that nice value, -20 to 19 (default ${DEFAULT_PRIORITY}, ours' default; below 0 needs root)`;

/** The whole number from `min` to `max` that `value` of `flag` spells, or an error with the usage. */
function wholeNumber(flag: string, value: string | undefined, min: number, max: number): number {
  const number = Number(value);
  if (value === undefined || value === "" || !Number.isInteger(number) || number < min || number > max) {
    throw new Error(`${flag} takes a whole number from ${min} to ${max} (got ${value})\n${USAGE}`);
  }
  return number;
}

/** `deno task bench` arguments: section names (default: all), `--rounds N` and `--nice N` (or `--flag=N`). */
export function parseArgs(argv: string[]): { sections: Set<Section>; rounds: number; nice: number } {
  const sections = new Set<Section>();
  let rounds = 1;
  let nice = DEFAULT_PRIORITY;
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i].split(/=(.*)/s, 2);
    if (flag === "--rounds") rounds = wholeNumber(flag, inline ?? argv[++i], 1, 20);
    else if (flag === "--nice") nice = wholeNumber(flag, inline ?? argv[++i], -20, 19);
    else if ((SECTIONS as readonly string[]).includes(argv[i])) sections.add(argv[i] as Section);
    else throw new Error(`unknown argument ${JSON.stringify(argv[i])}\n${USAGE}`);
  }
  return { sections: sections.size ? sections : new Set(SECTIONS), rounds, nice };
}

async function main(): Promise<void> {
  let args: ReturnType<typeof parseArgs>;
  try {
    args = parseArgs(Deno.args);
  } catch (error) {
    console.error((error as Error).message);
    Deno.exit(2);
  }
  // On tmpfs when there is one: the shared disk's writeback makes file-heavy timings swing 5×
  // from run to run, and both sides are measured on the same filesystem either way.
  const shm = await Deno.stat("/dev/shm").then((s) => s.isDirectory, () => false);
  const tmp = await Deno.makeTempDir({ prefix: "dp-bench-", dir: shm ? "/dev/shm" : undefined });
  console.log(`temp dir: ${tmp}`);
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
  const onSignal = async () => {
    try {
      running?.kill("SIGTERM");
      await running?.status;
    } catch {
      // already gone
    }
    await stopProxyBench();
    Deno.removeSync(tmp, { recursive: true });
    Deno.exit(130);
  };
  for (const signal of signals) Deno.addSignalListener(signal, onSignal);
  const started = performance.now();
  try {
    console.log(`deploy-paradigm bench — ${Deno.version.deno} — ${Deno.build.target}`);
    const only = (name: Section) => args.sections.has(name);
    if (only("execute")) await benchExecute(tmp);
    if (only("startup")) await benchStartup(tmp);
    if (only("proxy")) await benchProxy(tmp, args.rounds, args.nice);
    if (only("fleet")) await benchFleet(tmp);
    console.log(`\ntotal ${((performance.now() - started) / 1000).toFixed(1)} s`);
  } finally {
    for (const signal of signals) Deno.removeSignalListener(signal, onSignal);
    await Deno.remove(tmp, { recursive: true });
  }
}

await main();
