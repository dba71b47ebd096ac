/**
 * A server for unit tests of the deploy pipeline (tests/unit/pipeline_test.ts): a temp dir as
 * the server root (injected as Effects.root; the process environment is left alone, as other test
 * modules run in the same process) with app alpha set up, a real bare repository, and injected effects: a
 * fake runner whose `systemctl restart` starts a tiny HTTP server on the app's (or the slot's)
 * port answering as the release's `server` file says, a fake proxy control socket that serves
 * what route.json says, and a fake clock.
 * @module
 */
import { join } from "node:path";
import { FakeRunner } from "./fake_runner.ts";
import { freePort } from "./server.ts";
import type { Effects, ProxyControl } from "../../src/deploy/context.ts";
import { execute, type ExecuteOptions } from "../../src/deploy/execute.ts";
import type { DeployEvent } from "../../src/deploy/journal.ts";
import type { AppStatus } from "../../src/deploy/status.ts";
import { appPaths } from "../../src/paths.ts";
import { readRoute } from "../../src/proxy/routes.ts";
import { readCanary } from "../../src/proxy/canary_file.ts";
import { bucketIndex, type CanaryStats, emptySide, type SideStats } from "../../src/proxy/canary_stats.ts";

export const APP = "alpha";
export const ZEROS = "0".repeat(40);

export async function git(cwd: string, ...args: string[]): Promise<string> {
  const out = await new Deno.Command("git", {
    args: ["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main", ...args],
    cwd,
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(`git ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  return new TextDecoder().decode(out.stdout).trim();
}

/**
 * The app the fake process manager "starts": an HTTP server on a port, answering as the `server`
 * file of the release it runs says: `ok` (200), `500`, or `flaky` (200 once, then 500).
 */
export class Apps {
  readonly #servers = new Map<number, Deno.HttpServer>();

  async start(port: number, releaseDir: string): Promise<void> {
    await this.stop(port);
    const behaviour = (await Deno.readTextFile(join(releaseDir, "server"))).split("\n")[0];
    let answered = 0;
    const handler = () => {
      answered++;
      const ok = behaviour === "ok" || (behaviour === "flaky" && answered === 1);
      return new Response(ok ? "ok" : "broken", { status: ok ? 200 : 500 });
    };
    // The server just shut down on this port may not have let go of it yet (seen under load: the
    // restart failed with `Address already in use`): tried again for up to 5 s, as a process
    // manager's restart would.
    for (let tries = 1;; tries++) {
      try {
        this.#servers.set(port, Deno.serve({ hostname: "127.0.0.1", port, onListen() {} }, handler));
        return;
      } catch (error) {
        if (!(error instanceof Deno.errors.AddrInUse) || tries === 100) throw error;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
  }

  async stop(port: number): Promise<void> {
    await this.#servers.get(port)?.shutdown();
    this.#servers.delete(port);
  }

  async stopAll(): Promise<void> {
    for (const port of [...this.#servers.keys()]) await this.stop(port);
  }
}

/** What one side answered between two `canary` ops: requests, 5xx, and how long each took. */
export interface Traffic {
  requests: number;
  errors?: number;
  ms?: number;
}

/**
 * The fake proxy's canary traffic: what each side answered since the last `canary` op, given the
 * percent and how many ops this canary has had (`n`, from 0).
 */
export type CanaryScript = (split: { percent: number; n: number }) => { canary: Traffic; stable: Traffic };

/** The default: a healthy canary, 100 requests a reading on it and 1000 on the stable side, 10 ms each. */
export const HEALTHY: CanaryScript = () => ({ canary: { requests: 100, ms: 10 }, stable: { requests: 1000, ms: 10 } });

export interface World {
  root: string;
  repo: string;
  work: string;
  port: number;
  slots: { blue: number; green: number };
  fake: FakeRunner;
  apps: Apps;
  printed: string[];
  proxied: Record<string, unknown>[];
  effects: Effects;
  paths: ReturnType<typeof appPaths>;
  /** How the canary's sides answer (see {@link CanaryScript}); change it in a test. */
  canary: { script: CanaryScript; readings: CanaryStats[] };
  /** Runs at every fake sleep (the canary's waits): e.g. `canary <app> abort` in the middle of one. */
  onSleep?: (elapsedMs: number) => void | Promise<void>;
}

/** A server root in a temp dir with app alpha set up (`config` lines added to config.yml), and its repository. */
export async function withWorld(strategy: "restart" | "blue-green", fn: (w: World) => Promise<void>): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "dp-pipeline-" });
  const apps = new Apps();
  try {
    const paths = appPaths(APP, root);
    await Deno.mkdir(paths.dir, { recursive: true });
    await Deno.mkdir(join(root, "var", "repos"), { recursive: true });
    await git(root, "init", "--bare", "-q", paths.repo);
    const work = join(root, "work");
    await git(root, "init", "-q", work);
    const port = freePort();
    const slots = { blue: freePort(), green: freePort() };
    await Deno.writeTextFile(
      paths.config,
      [
        `port: ${port}`,
        "manager: systemd",
        `strategy: ${strategy}`,
        "user: root", // the deploying user runs it: the same as root and as anyone else
        ...(strategy === "blue-green" ? [`slots: { blue: ${slots.blue}, green: ${slots.green} }`] : []),
        "",
      ].join("\n"),
    );
    const fake = new FakeRunner();
    // The fake process manager: nothing runs (MainPID 0); a restart starts the release's server.
    fake.on(["systemctl", "show"], { output: "0" });
    fake.on((argv) => argv[0] === "systemctl" && argv[1] === "restart", {
      effect: async ({ argv }) => {
        const slot = /@(blue|green)\.service$/.exec(argv.at(-1)!)?.[1] as "blue" | "green" | undefined;
        const dir = slot ? join(paths.dir, "slots", slot) : paths.current;
        await apps.start(slot ? slots[slot] : port, await Deno.realPath(dir));
      },
    });
    fake.on((argv) => argv[0] === "systemctl" && argv[1] === "disable", {
      effect: async ({ argv }) => {
        const slot = /@(blue|green)\.service$/.exec(argv.at(-1)!)?.[1] as "blue" | "green" | undefined;
        await apps.stop(slot ? slots[slot] : port);
      },
    });
    const proxied: Record<string, unknown>[] = [];
    const canary: World["canary"] = { script: HEALTHY, readings: [] };
    let counted: (CanaryStats & { key: string; n: number }) | undefined;
    const add = (side: SideStats, traffic: Traffic) => {
      side.requests += traffic.requests;
      side.errors += traffic.errors ?? 0;
      side.histogram[bucketIndex(traffic.ms ?? 10)] += traffic.requests;
    };
    // The fake proxy: serves what route.json says, at once; counts a canary as `canary.script` says.
    const proxy: ProxyControl = async (request) => {
      proxied.push(request as Record<string, unknown>);
      if ((request as { op?: string }).op === "canary") {
        const split = await readCanary(paths.dir);
        if (!split) return { ok: true, stats: null };
        const key = JSON.stringify(split.target);
        if (counted?.key !== key) {
          const stable = split.slot === "blue" ? "green" : "blue";
          counted = {
            key,
            n: 0,
            percent: 0,
            since: split.since,
            stable: emptySide(stable),
            canary: emptySide(split.slot),
          };
        }
        const traffic = canary.script({ percent: split.percent, n: counted.n++ });
        add(counted.canary, traffic.canary);
        add(counted.stable, traffic.stable);
        const { key: _, n: _n, ...stats } = { ...counted, percent: split.percent };
        const copy = structuredClone(stats);
        canary.readings.push(copy);
        return { ok: true, stats: copy };
      }
      const target = await readRoute(paths.dir);
      return { ok: true, drained: true, routes: target ? [{ app: APP, target, listening: true }] : [] };
    };
    let now = Date.UTC(2026, 0, 1);
    let elapsed = 0;
    const printed: string[] = [];
    const effects: Effects = {
      root,
      runner: fake.withSink,
      proxy,
      clock: { now: () => (now += 1000), elapsed: () => (elapsed += 10) },
      print: (line) => printed.push(line),
      sleep: async (ms) => {
        elapsed += ms;
        await world.onSleep?.(elapsed); // defined before the first sleep
      },
    };
    const world: World = {
      root,
      repo: paths.repo,
      work,
      port,
      slots,
      fake,
      apps,
      printed,
      proxied,
      effects,
      paths,
      canary,
    };
    await fn(world).catch((error) => {
      // What the deploys and rollbacks printed says why one failed (a step's message), where an assertion does not.
      console.error(`--- printed in the world of the failed test:\n${printed.join("\n")}\n---`);
      throw error;
    });
  } finally {
    await apps.stopAll();
    await Deno.remove(root, { recursive: true });
  }
}

/** The gate programs of the tests' deploy.yml files, committed with every version. */
const GATE_SCRIPTS = ["smoke.sh", "check"];

/** Commits a version of the app (its `server` file says how it answers) and pushes it to a side branch. */
export async function commit(
  w: World,
  server: "ok" | "500" | "flaky",
  extra: string[] = [],
  watch = "0",
): Promise<string> {
  await Deno.writeTextFile(
    join(w.work, "deploy.yml"),
    [
      `name: ${APP}`,
      "type: python",
      "command: ./server",
      "healthCheck: { path: /health, window: 3s, interval: 50ms, successes: 1, timeout: 1s }",
      `watch: ${watch}`,
      ...extra,
      "",
    ].join("\n"),
  );
  await Deno.writeTextFile(join(w.work, "server"), `${server}\n${crypto.randomUUID()}\n`);
  // The gates the tests name are in the repository (the command step finds them; the fake runner runs them).
  for (const gate of GATE_SCRIPTS) await Deno.writeTextFile(join(w.work, gate), "#!/bin/sh\n");
  await git(w.work, "add", "-A");
  await git(w.work, "commit", "-q", "-m", server);
  const sha = await git(w.work, "rev-parse", "HEAD");
  await git(w.work, "push", "-q", w.repo, "HEAD:refs/heads/incoming", "--force");
  return sha;
}

export async function deploy(w: World, sha: string, options: Partial<ExecuteOptions> = {}) {
  return await execute({ gitDir: w.repo, commit: sha, effects: w.effects, ...options });
}

/** deploy.log's entries since line `from`. */
export async function entries(w: World, from = 0): Promise<DeployEvent[]> {
  const text = await Deno.readTextFile(w.paths.deployLog);
  return text.trim().split("\n").slice(from).map((line) => JSON.parse(line));
}

/** deploy.log's events since line `from`, as `event`, or `event✗` when it failed. */
export async function events(w: World, from = 0): Promise<string[]> {
  return (await entries(w, from)).map((e) => e.ok === false ? `${e.event}✗` : e.event);
}

export async function logLength(w: World): Promise<number> {
  return (await Deno.readTextFile(w.paths.deployLog).catch(() => "")).trim().split("\n").filter(Boolean).length;
}

export async function status(w: World): Promise<AppStatus> {
  return JSON.parse(await Deno.readTextFile(w.paths.status));
}

export async function releases(w: World): Promise<string[]> {
  return (await Array.fromAsync(Deno.readDir(w.paths.releases))).map((e) => e.name).sort();
}
