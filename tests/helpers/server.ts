/**
 * Test harness: a whole "server" (DEPLOY_PARADIGM_PREFIX) in a temp dir, its own PM2 daemon
 * (PM2_HOME), bare repositories with the real hook, and app repositories to push from.
 * Everything a test starts is torn down by {@link TestServer.close}, even after a failure.
 */
import { join, resolve } from "node:path";
import { installHook } from "../../src/hook.ts";
import { appPaths } from "../../src/paths.ts";
import { controlSocketPath } from "../../src/proxy/routes.ts";

/** The launcher that runs the CLI from source, exactly as the binary would run. */
export const BIN = resolve(import.meta.dirname!, "../../bin/deploy-paradigm");

/** Output of a finished process. */
export interface Ran {
  code: number;
  stdout: string;
  stderr: string;
  /** stdout and stderr together. */
  output: string;
}

/** Runs a command to completion with `env` added. */
export async function run(argv: string[], options: { cwd?: string; env?: Record<string, string> } = {}): Promise<Ran> {
  const out = await new Deno.Command(argv[0], {
    args: argv.slice(1),
    cwd: options.cwd,
    env: options.env,
    stdin: "null",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  return { code: out.code, stdout, stderr, output: stdout + stderr };
}

/** Starts a long-running process whose stdout and stderr go to `sink` as they come. */
export function spawnCapturing(
  argv: string[],
  env: Record<string, string>,
  sink: (text: string) => void,
): Deno.ChildProcess {
  const child = new Deno.Command(argv[0], { args: argv.slice(1), env, stdin: "null", stdout: "piped", stderr: "piped" })
    .spawn();
  for (const stream of [child.stdout, child.stderr]) {
    stream.pipeThrough(new TextDecoderStream()).pipeTo(new WritableStream({ write: (chunk) => sink(chunk) }))
      .catch(() => {});
  }
  return child;
}

/**
 * A free TCP port on loopback, for a test to listen on a moment later (and again at each restart
 * of what listens there): from 10000-17999, or `DP_TEST_PORTS=<first>-<last>` (machines shared by
 * several runs, each given its range). Not a port the kernel picks (port 0): those come from its
 * ephemeral range (32768-60999), which every outgoing connection and every other port-0 listener
 * draws from meanwhile, so the port was often someone else's by the time the test bound it
 * (`Address already in use`: 56 of 957 ports handed out twice in one parallel run); nor the
 * product's slot ports (20000-32000). Each port is claimed once across every process of every
 * run (a file of its own, made with O_EXCL; a claim an hour old is taken over), and is free now.
 */
export function freePort(): number {
  const range = /^(\d+)-(\d+)$/.exec(Deno.env.get("DP_TEST_PORTS") ?? "");
  const [first, last] = range ? [Number(range[1]), Number(range[2])] : [10_000, 17_999];
  const size = last - first + 1;
  const offset = Math.floor(Math.random() * size);
  for (let i = 0; i < size; i++) {
    const port = first + (offset + i) % size;
    if (!claimPort(port)) continue;
    try {
      Deno.listen({ hostname: "127.0.0.1", port }).close();
    } catch (error) {
      if (error instanceof Deno.errors.AddrInUse) continue;
      throw error;
    }
    return port;
  }
  throw new Error(`no free port left in ${first}-${last}`);
}

/** Where each port handed out has its claim (see {@link freePort}). */
const PORT_CLAIMS = "/tmp/deploy-paradigm-test-ports";

/** Claims `port` for this process: false when another (of this run, or of one less than an hour ago) has it. */
function claimPort(port: number): boolean {
  Deno.mkdirSync(PORT_CLAIMS, { recursive: true, mode: 0o700 });
  const path = join(PORT_CLAIMS, String(port));
  for (let tries = 0; tries < 2; tries++) {
    try {
      Deno.openSync(path, { write: true, createNew: true }).close();
      return true;
    } catch (error) {
      if (!(error instanceof Deno.errors.AlreadyExists)) throw error;
      let age = 0;
      try {
        age = Date.now() - (Deno.statSync(path).mtime?.getTime() ?? 0);
      } catch {
        continue; // taken over meanwhile: created anew, or not
      }
      if (age < 3_600_000) return false;
      try {
        Deno.removeSync(path); // an old run's: claimed anew, by whoever creates it first
      } catch { /* removed meanwhile */ }
    }
  }
  return false;
}

/** A server under a temp prefix. */
export class TestServer {
  readonly prefix: string;
  readonly pm2Home: string;
  /** Environment for every process of this server: the CLI, git pushes (and so the hook), pm2. */
  readonly env: Record<string, string>;

  private constructor(readonly root: string) {
    this.prefix = join(root, "server");
    this.pm2Home = join(root, "pm2");
    this.env = {
      DEPLOY_PARADIGM_PREFIX: this.prefix,
      PM2_HOME: this.pm2Home,
      NO_COLOR: "1",
      GIT_AUTHOR_NAME: "Test",
      GIT_AUTHOR_EMAIL: "test@example.invalid",
      GIT_COMMITTER_NAME: "Test",
      GIT_COMMITTER_EMAIL: "test@example.invalid",
    };
  }

  /** A new, empty server. */
  static async create(): Promise<TestServer> {
    return new TestServer(await Deno.makeTempDir({ prefix: "dp-test-" }));
  }

  /** Paths of an app on this server. */
  paths(app: string) {
    return appPaths(app, this.prefix);
  }

  /**
   * What `setup` will do: config.yml, optional .env, the bare repo with the real hook, and for
   * blue-green (the default) the proxy, started once per server.
   */
  async setupApp(
    app: string,
    options: {
      port: number;
      manager?: "pm2" | "systemd";
      env?: string;
      dotenv?: string;
      strategy?: "blue-green" | "restart";
      drainTimeout?: string;
    },
  ): Promise<string> {
    const paths = this.paths(app);
    await Deno.mkdir(paths.dir, { recursive: true });
    const envName = options.env ?? "production";
    const strategy = options.strategy ?? "blue-green";
    await Deno.writeTextFile(
      paths.config,
      `port: ${options.port}\nmanager: ${options.manager ?? "pm2"}\nenv: ${envName}\nstrategy: ${strategy}\n` +
        (options.drainTimeout ? `drainTimeout: ${options.drainTimeout}\n` : ""),
    );
    if (strategy === "blue-green") await this.startProxy();
    if (options.dotenv !== undefined) {
      await Deno.writeTextFile(paths.envFile(envName), options.dotenv, { mode: 0o600 });
    }
    await Deno.mkdir(join(paths.repo, ".."), { recursive: true });
    const init = await run(["git", "init", "--quiet", "--bare", "-b", "main", paths.repo]);
    if (init.code !== 0) throw new Error(init.output);
    await installHook(paths.repo, BIN, { DEPLOY_PARADIGM_PREFIX: this.prefix });
    return paths.repo;
  }

  /** Runs the CLI against this server. */
  cli(args: string[], cwd?: string): Promise<Ran> {
    return run([BIN, ...args], { cwd, env: this.env });
  }

  private proxy?: Deno.ChildProcess;
  /** What the proxy printed. */
  proxyLog = "";

  private proxyStarting?: Promise<void>;

  /** Starts `deploy-paradigm proxy --host 127.0.0.1` for this server (once), and waits for its control socket. */
  startProxy(): Promise<void> {
    this.proxyStarting ??= this.spawnProxy(); // two apps set up at once share one proxy
    return this.proxyStarting;
  }

  private async spawnProxy(): Promise<void> {
    await Deno.mkdir(join(this.prefix, "opt", "deployments"), { recursive: true });
    this.proxy = spawnCapturing([BIN, "proxy", "--host", "127.0.0.1"], this.env, (text) => this.proxyLog += text);
    const socket = controlSocketPath(this.prefix);
    for (let i = 0; i < 200; i++) {
      if (await Deno.stat(socket).then(() => true, () => false)) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`the proxy did not start:\n${this.proxyLog}`);
  }

  /** Stops the proxy (a later startProxy starts a new one). */
  async stopProxy(): Promise<void> {
    if (this.proxy) {
      try {
        this.proxy.kill("SIGTERM");
      } catch { /* already gone */ }
      await this.proxy.status;
    }
    this.proxy = undefined;
    this.proxyStarting = undefined;
  }

  /** Stops the proxy, this server's PM2 daemon, and removes every file. */
  async close(): Promise<void> {
    await this.stopProxy();
    try {
      await Deno.stat(this.pm2Home);
      await run(["timeout", "30", "pm2", "kill"], { env: this.env });
    } catch { /* no daemon was started */ }
    await Deno.remove(this.root, { recursive: true }).catch(() => {});
  }
}

/** Runs `fn` with a fresh server, always closing it. */
export async function withServer(fn: (server: TestServer) => Promise<void>): Promise<void> {
  const server = await TestServer.create();
  try {
    await fn(server);
  } catch (error) {
    if (server.proxyLog) console.error(`--- the proxy's output ---\n${server.proxyLog}`);
    throw error;
  } finally {
    await server.close();
  }
}

/** GETs a URL on loopback; returns status and body, or the connection error. */
export async function get(url: string): Promise<{ status: number; body: string } | { error: string }> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(3000) });
    return { status: response.status, body: await response.text() };
  } catch (error) {
    return { error: String(error) };
  }
}
