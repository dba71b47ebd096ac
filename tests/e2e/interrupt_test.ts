/**
 * Cancelling a deploy for real: a Ctrl-C on `git push` (SIGINT to its whole process group, as a
 * terminal sends it), a SIGTERM or a SIGHUP to the hook process alone, a Ctrl-C while a
 * half-started slot is being health-checked, a lost SSH connection (the laptop's `git push` and
 * ssh killed), and a Ctrl-C on `rollback` while the release it goes back to is health-checked.
 * Each time: the build is killed with its process group, the failure path puts things back (no
 * release of the cancelled commit, `current` and traffic where they were, `cancelled` recorded in
 * status.json and deploy.log), the lock is free, and the next push just works. Prints how long
 * it took from the signal to the lock being free.
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { AppRepo, pythonApp } from "../helpers/apps.ts";
import { BIN, freePort, get, run, withServer } from "../helpers/server.ts";
import { current, releases, status } from "../helpers/state.ts";
import { FakeVps } from "../helpers/vps.ts";
import { type AppPaths, appPaths } from "../../src/paths.ts";
import { listReleases, readReleaseMeta } from "../../src/deploy/releases.ts";
import { readStatus } from "../../src/deploy/status.ts";
import { sleep } from "../helpers/time.ts";

/** A health check that would wait a minute for a release that never listens. */
const LONG_HEALTH = "{ path: /health, window: 60s, interval: 200ms, successes: 2, timeout: 1s }";

/**
 * The slow build: records its pid and its background `sleep`'s in `pidDir`, then prints a line
 * every 0.1 s for about 20 s. Should it run to its end (the deploy was not cancelled), it makes
 * the venv the default build would have made, so that the deploy then goes on and succeeds.
 */
function slowBuild(pidDir: string): string {
  return `#!/bin/sh
echo $$ > '${pidDir}/build.pid'
sleep 30 >/dev/null 2>&1 &
echo $! > '${pidDir}/sleep.pid'
i=0
while [ $i -lt 200 ]; do
  i=$((i + 1))
  echo "slow build line $i"
  sleep 0.1
done
python3 -m venv --without-pip venv
`;
}

/** What /proc/<pid>/stat says, or undefined when there is no such process. */
async function procStat(
  pid: number,
): Promise<{ state: string; ppid: number; pgrp: number; start: string } | undefined> {
  const text = await Deno.readTextFile(`/proc/${pid}/stat`).catch(() => undefined);
  if (text === undefined) return undefined;
  const rest = text.slice(text.lastIndexOf(")") + 2).split(" "); // fields 3.. (state, ppid, pgrp, …)
  return { state: rest[0], ppid: Number(rest[1]), pgrp: Number(rest[2]), start: rest[19] };
}

/** A process, told apart from a later one with the same pid by its start time. */
interface Proc {
  what: string;
  pid: number;
  start: string;
}

async function proc(what: string, pid: number): Promise<Proc> {
  const stat = await procStat(pid);
  assert(stat !== undefined && stat.state !== "Z", `${what} (pid ${pid}) is not running`);
  return { what, pid, start: stat.start };
}

/** The process whose pid is in `file` (written by the slow build). */
async function procFromFile(what: string, file: string): Promise<Proc> {
  const pid = Number((await Deno.readTextFile(file)).trim());
  assert(pid > 1, `${file} holds no pid`);
  return await proc(what, pid);
}

/**
 * Ended: no /proc/<pid> (or a later process there), or a zombie. This machine's init does not
 * reap orphans, so a killed process whose parent died before it stays a zombie: it runs nothing.
 */
async function gone(p: Proc): Promise<boolean> {
  const stat = await procStat(p.pid);
  return stat === undefined || stat.start !== p.start || stat.state === "Z";
}

/** Waits up to `ms` for `p` to end; fails with what /proc says. */
async function assertGone(p: Proc, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await gone(p)) && Date.now() < deadline) await sleep(50);
  const stat = await procStat(p.pid);
  assert(await gone(p), `${p.what} (pid ${p.pid}) still runs ${ms / 1000}s later: ${JSON.stringify(stat)}`);
}

/** SIGKILLs what is left of `procs` (cleanup after a failure). */
async function killLeft(procs: Proc[]): Promise<void> {
  for (const p of procs) {
    if (await gone(p)) continue;
    try {
      Deno.kill(p.pid, "SIGKILL");
    } catch { /* it has just ended */ }
  }
}

/** Whether nobody holds the flock on `lock` now. */
async function lockFree(lock: string): Promise<boolean> {
  return (await run(["flock", "-n", lock, "true"])).code === 0;
}

/** Milliseconds from `since` until the app's lock is free; fails after `ms`, with the deploy's last events. */
async function untilLockFree(paths: AppPaths, since: number, ms = 30_000): Promise<number> {
  while (performance.now() - since < ms) {
    if (await lockFree(paths.lock)) return performance.now() - since;
    await sleep(20);
  }
  const log = await Deno.readTextFile(paths.deployLog).catch(() => "");
  throw new Error(
    `the lock ${paths.lock} is still held ${ms / 1000}s after the signal; deploy.log ends with:\n` +
      log.trim().split("\n").slice(-4).join("\n"),
  );
}

/** The pid the deploy wrote into its lock file. */
async function lockOwner(lock: string): Promise<number> {
  return (JSON.parse(await Deno.readTextFile(lock)) as { pid: number }).pid;
}

/**
 * `git push production main` (or `argv`) in a process group of its own (`setsid`, like a
 * terminal's job), its output collected as it streams.
 */
class Push {
  readonly child: Deno.ChildProcess;
  output = "";
  readonly ended: Promise<Deno.CommandStatus>;
  private readonly reading: Promise<unknown>;
  exited?: Deno.CommandStatus;

  constructor(cwd: string, env: Record<string, string>, argv = ["git", "push", "production", "main"]) {
    this.child = new Deno.Command("setsid", {
      args: argv,
      cwd,
      env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.reading = Promise.all(
      [this.child.stdout, this.child.stderr].map((stream) =>
        stream.pipeThrough(new TextDecoderStream())
          .pipeTo(new WritableStream({ write: (chunk) => void (this.output += chunk) }))
          .catch(() => {})
      ),
    );
    this.ended = this.child.status.then((status) => this.exited = status);
  }

  /** Waits until the output matches `pattern`; fails if the push ends first or after `ms`. */
  async waitFor(pattern: RegExp, ms = 60_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!pattern.test(this.output)) {
      assert(this.exited === undefined, `the push ended (${this.exited?.code}) before ${pattern}:\n${this.output}`);
      assert(Date.now() < deadline, `no ${pattern} in the push's output after ${ms / 1000}s:\n${this.output}`);
      await sleep(25);
    }
  }

  /** Its process group (setsid made the push its leader). */
  async assertOwnGroup(): Promise<void> {
    const stat = await procStat(this.child.pid);
    assertEquals(stat?.pgrp, this.child.pid, "git push must lead a process group of its own");
  }

  /** Signals the whole process group. */
  signal(signal: Deno.Signal): void {
    Deno.kill(-this.child.pid, signal);
  }

  /** Its exit status, waiting at most `ms`. */
  async status(ms = 30_000): Promise<Deno.CommandStatus> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) =>
      timer = setTimeout(() => reject(new Error(`the push did not end within ${ms / 1000}s:\n${this.output}`)), ms)
    );
    try {
      return await Promise.race([this.ended, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Kills what is left of its group and waits for it (cleanup). */
  async stop(): Promise<void> {
    if (this.exited === undefined) {
      try {
        this.signal("SIGKILL");
      } catch { /* gone */ }
    }
    await this.ended;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([this.reading, new Promise((resolve) => timer = setTimeout(resolve, 5000))]);
    clearTimeout(timer);
    for (const stream of [this.child.stdout, this.child.stderr]) await stream.cancel().catch(() => {});
  }
}

/** What served before v2's push. */
interface Before {
  releases: string[];
  current: string | undefined;
  commit: string;
}

async function before(paths: AppPaths): Promise<Before> {
  const st = await readStatus(paths.status);
  assert(st?.commit, "v1 must have deployed");
  return {
    releases: await listReleases(paths),
    current: await Deno.readLink(paths.current).catch(() => undefined),
    commit: st.commit,
  };
}

/**
 * Everything is back where it was before v2's cancelled deploy: status.json and deploy.log say
 * `cancelled` (at `step`), no release of v2 and no partial one is left, `current` has not moved,
 * `url` still answers `body`, and the lock is free.
 */
async function assertPutBack(
  paths: AppPaths,
  v2: string,
  was: Before,
  step: string,
  url: string,
  body: string,
): Promise<void> {
  const deadline = Date.now() + 10_000;
  let st = await readStatus(paths.status);
  while (st?.lastDeploy?.commit !== v2 && Date.now() < deadline) {
    await sleep(100);
    st = await readStatus(paths.status);
  }
  assert(st?.lastDeploy?.commit === v2, `status.json never recorded v2's deploy:\n${JSON.stringify(st, null, 2)}`);
  assertEquals(st.lastDeploy.outcome, "cancelled", `lastDeploy: ${JSON.stringify(st.lastDeploy)}`);
  assertEquals(st.lastDeploy.step, step);
  assertEquals([st.status, st.commit, st.healthy], ["running", was.commit, true]);

  const log = (await Deno.readTextFile(paths.deployLog)).trim().split("\n").map((line) =>
    JSON.parse(line) as Record<string, unknown>
  );
  const begin = log.findLastIndex((e) => e.event === "begin" && e.commit === v2);
  assert(begin >= 0, "deploy.log has no begin of v2");
  const own = log.slice(begin);
  const events = own.map((e) => `${e.event}${e.ok === false ? "✗" : ""}`).join(" ");
  const failedAt = own.findIndex((e) => e.event === step);
  assert(failedAt > 0 && own[failedAt].ok === false, `deploy.log has no failed ${step} of v2: ${events}`);
  const cancelledAt = own.findIndex((e) => e.event === "cancelled");
  assert(cancelledAt > failedAt, `deploy.log has no cancelled event after the ${step}: ${events}`);
  assertEquals(own.at(-1)?.event, "cancelled", `v2's events: ${events}`);
  assertMatch(String(own[cancelledAt].message), new RegExp(`^${step}: `));

  const v2Release = String(own[0].release);
  assert(!(await Deno.stat(paths.release(v2Release)).then(() => true, () => false)), `${v2Release} is left`);
  assertEquals(await listReleases(paths), was.releases);
  const entries = [];
  for await (const entry of Deno.readDir(paths.releases)) entries.push(entry.name);
  assertEquals(entries.filter((name) => name.includes("partial")), [], `left in releases/: ${entries}`);
  assertEquals(await Deno.readLink(paths.current).catch(() => undefined), was.current);
  assertEquals(await get(url), { status: 200, body });
  assert(await lockFree(paths.lock), "the lock must be free");
}

/** The slow build's process and its `sleep`, as they run now. */
async function buildProcs(pidDir: string): Promise<Proc[]> {
  return [
    await procFromFile("the build script", join(pidDir, "build.pid")),
    await procFromFile("the build's background sleep", join(pidDir, "sleep.pid")),
  ];
}

/** Prints how long the deploy took to end after the signal. */
function timing(what: string, ms: number): void {
  console.log(`[interrupt] ${what}: signal → lock free in ${Math.round(ms)} ms`);
}

/** Cases 1 and 2: v1 serves, v2's slow build runs, then `interrupt` cancels it. */
async function cancelDuringBuild(
  app: string,
  what: string,
  interrupt: (push: Push, build: Proc, hook: Proc) => void,
  afterwards: (push: Push, status: Deno.CommandStatus) => void,
): Promise<void> {
  await withServer(async (server) => {
    const port = freePort();
    const paths = server.paths(app);
    const repo = await AppRepo.create(server, app, await server.setupApp(app, { port }));
    await repo.python(app, "v1");
    await repo.pushOk();
    const pidDir = await Deno.makeTempDir({ dir: server.root, prefix: "pids-" });
    const v2 = await repo.python(app, "v2", "ok", {
      extra: "build: ./slow.sh\n",
      files: { "slow.sh": slowBuild(pidDir) },
    });
    const was = await before(paths);
    const push = new Push(repo.dir, server.env);
    const procs: Proc[] = [];
    try {
      await push.waitFor(/remote:\s+slow build line 3\b/);
      await push.assertOwnGroup();
      procs.push(...await buildProcs(pidDir));
      const hookPid = (await procStat(procs[0].pid))!.ppid; // the build runs under setsid, exec'd by the hook
      assertEquals(await lockOwner(paths.lock), hookPid, "the build's parent is the deploy that holds the lock");
      const hook = await proc("the hook (deploy-paradigm receive)", hookPid);
      procs.push(hook);
      assert(!(await lockFree(paths.lock)), "the deploy must hold the lock during the build");

      const signalled = performance.now();
      interrupt(push, procs[0], hook);
      timing(what, await untilLockFree(paths, signalled));
      const exit = await push.status();
      assert(exit.code !== 0, `the push must fail:\n${push.output}`);
      afterwards(push, exit);

      await assertPutBack(paths, v2, was, "build", `http://127.0.0.1:${port}/`, "v1");
      for (const p of procs.slice(0, 2)) await assertGone(p);
      await assertGone(hook);

      await repo.python(app, "v3");
      const next = await repo.pushOk();
      assert(!/waiting for another deploy/.test(next.output), next.output);
      assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: "v3" });
      assertEquals((await status(server, app)).lastDeploy.outcome, "success");
    } catch (error) {
      console.error(`--- the push's output ---\n${push.output}`);
      throw error;
    } finally {
      await push.stop();
      await killLeft(procs);
    }
  });
}

Deno.test("Ctrl-C on a local git push during the build cancels the deploy and puts everything back", async () => {
  await cancelDuringBuild(
    "intr",
    "Ctrl-C on git push (build)",
    (push) => push.signal("SIGINT"),
    (_push, exit) => assertEquals(exit.signal, "SIGINT", "git push itself dies of the Ctrl-C"),
  );
});

for (const [signal, app] of [["SIGTERM", "term"], ["SIGHUP", "hup"]] as const) {
  Deno.test(`${signal} to the hook process alone cancels the deploy; the push is rejected as cancelled`, async () => {
    await cancelDuringBuild(
      app,
      `${signal} to the hook (build)`,
      (_push, _build, hook) => Deno.kill(hook.pid, signal),
      (push) => {
        assertMatch(push.output, new RegExp(`✗ deploy of ${app} [0-9a-f]{7} cancelled at step "build"`));
        assertMatch(push.output, /nothing was switched: [0-9a-f]{7} still serves/);
        assertMatch(push.output, /! \[remote rejected\] main -> main \(deploy cancelled at build\)/);
      },
    );
  });
}

Deno.test("Ctrl-C during the health check of the idle slot stops the half-started slot", async () => {
  await withServer(async (server) => {
    const app = "hc";
    const port = freePort();
    const paths = server.paths(app);
    const repo = await AppRepo.create(server, app, await server.setupApp(app, { port }));
    await repo.python(app, "v1");
    await repo.pushOk();
    const active = (await status(server, app)).slot!;
    const idle = active === "blue" ? "green" : "blue";
    const idlePort = Number(new RegExp(`${idle}: (\\d+)`).exec(await Deno.readTextFile(paths.config))![1]);
    const v2 = await repo.python(app, "v2", "nolisten", { health: LONG_HEALTH });
    const was = await before(paths);
    const pm2 = async () =>
      JSON.parse((await run(["pm2", "jlist"], { env: server.env })).stdout) as {
        name: string;
        pid: number;
        pm2_env: { status: string };
      }[];
    const push = new Push(repo.dir, server.env);
    const procs: Proc[] = [];
    try {
      await push.waitFor(/remote: ▸ health/);
      await push.assertOwnGroup();
      const slot = (await pm2()).find((p) => p.name === `${app}-${idle}`);
      assert(slot && slot.pid > 0, `the ${idle} slot must run v2 now: ${JSON.stringify(await pm2())}`);
      procs.push(await proc(`v2 in the ${idle} slot`, slot.pid));
      const hook = await proc("the hook (deploy-paradigm receive)", await lockOwner(paths.lock));
      procs.push(hook);

      const signalled = performance.now();
      push.signal("SIGINT");
      timing("Ctrl-C on git push (health check)", await untilLockFree(paths, signalled));
      const exit = await push.status();
      assert(exit.code !== 0, push.output);

      await assertPutBack(paths, v2, was, "health", `http://127.0.0.1:${port}/`, "v1");
      const left = await pm2();
      assertEquals(left.filter((p) => p.name === `${app}-${idle}`), [], `the ${idle} slot must be stopped`);
      assertEquals(left.find((p) => p.name === `${app}-${active}`)?.pm2_env.status, "online");
      await assertGone(procs[0]);
      const listener = Deno.listen({ hostname: "127.0.0.1", port: idlePort }); // nothing holds the idle port
      listener.close();
      await assertGone(hook);

      await repo.python(app, "v3");
      await repo.pushOk();
      assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: "v3" });
      assertEquals((await status(server, app)).slot, idle);
      assertEquals((await releases(server, app)).length, was.releases.length + 1);
      assertEquals(await current(server, app), `releases/${(await status(server, app)).release}`);
    } catch (error) {
      console.error(`--- the push's output ---\n${push.output}`);
      throw error;
    } finally {
      await push.stop();
      await killLeft(procs);
    }
  });
});

Deno.test("Ctrl-C during a rollback's health check stops the slot it started; the release that served goes on", async () => {
  await withServer(async (server) => {
    const app = "rb";
    const port = freePort();
    const paths = server.paths(app);
    const repo = await AppRepo.create(server, app, await server.setupApp(app, { port }));
    // v1's check waits up to a minute: its release, made deaf after it served, holds the rollback there.
    await repo.python(app, "v1", "ok", { health: LONG_HEALTH });
    await repo.pushOk();
    const v1 = (await status(server, app)).release!;
    await repo.python(app, "v2");
    await repo.pushOk();
    const v2 = (await status(server, app)).release!;
    const active = (await status(server, app)).slot!;
    const idle = active === "blue" ? "green" : "blue";
    await Deno.writeTextFile(join(paths.release(v1), "app.py"), pythonApp("v1", "nolisten"));
    const pm2 = async () =>
      JSON.parse((await run(["pm2", "jlist"], { env: server.env })).stdout) as { name: string; pid: number }[];
    const rollback = new Push(server.prefix, server.env, [BIN, "rollback", app]);
    const procs: Proc[] = [];
    try {
      await rollback.waitFor(/▸ health/);
      const slot = (await pm2()).find((p) => p.name === `${app}-${idle}`);
      assert(slot && slot.pid > 0, `the ${idle} slot must run v1 now: ${JSON.stringify(await pm2())}`);
      procs.push(await proc(`v1 in the ${idle} slot`, slot.pid));

      const signalled = performance.now();
      rollback.signal("SIGINT");
      timing("Ctrl-C on rollback (health check)", await untilLockFree(paths, signalled));
      const exit = await rollback.status();
      assertEquals(exit.code, 1, rollback.output);
      assertMatch(
        rollback.output,
        new RegExp(`✗ rollback of ${app} to ${v1} cancelled \\(interrupted by a signal.*; ${v2} serves`),
      );
      assertEquals((await pm2()).filter((p) => p.name === `${app}-${idle}`), [], `the ${idle} slot must be stopped`);
      await assertGone(procs[0]);
      assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: "v2" });
      const st = await status(server, app);
      assertEquals([st.release, st.slot, st.healthy], [v2, active, true]);
      const last = JSON.parse((await Deno.readTextFile(paths.deployLog)).trim().split("\n").at(-1)!);
      assertEquals([last.event, last.ok], ["cancelled", false]);
      assertMatch(last.message, /^cancelled: interrupted by a signal/);
      assert(!(await readReleaseMeta(paths, v2))?.bad, "the serving release is not marked bad");
    } catch (error) {
      console.error(`--- the rollback's output ---\n${rollback.output}`);
      throw error;
    } finally {
      await rollback.stop();
      await killLeft(procs);
    }
  });
});

Deno.test("a lost SSH connection (the laptop's git push killed) cancels the deploy on the host", async () => {
  const vps = await FakeVps.create();
  const work = await Deno.makeTempDir({ prefix: "dp-laptop-" });
  let push: Push | undefined;
  const procs: Proc[] = [];
  try {
    const prefix = join(vps.dir, "server");
    const paths = appPaths("web", prefix);
    const port = 18000 + Math.floor(Math.random() * 1000);
    const setup = await vps.ssh(
      `DEPLOY_PARADIGM_PREFIX=${prefix} ${BIN} setup web --port ${port} --manager pm2 ` +
        `--proxy-host ${vps.address} --yes`,
    );
    assertEquals(setup.code, 0, setup.output);
    const git = async (...args: string[]) => {
      const result = await run(["git", ...args], { cwd: work, env: vps.env });
      assertEquals(result.code, 0, `git ${args.join(" ")}:\n${result.output}`);
      return result;
    };
    const commit = async (files: Record<string, string>, message: string) => {
      for (const [name, content] of Object.entries(files)) {
        await Deno.writeTextFile(join(work, name), content, { mode: name.endsWith(".sh") ? 0o755 : 0o644 });
      }
      await git("add", "-A");
      await git("commit", "--quiet", "-m", message);
      return (await git("rev-parse", "HEAD")).stdout.trim();
    };
    const deployYml = "name: web\ntype: python\ncommand: python app.py\nwatch: 300ms\n" +
      "healthCheck: { path: /health, window: 8s, interval: 200ms, successes: 2 }\n";
    await git("init", "--quiet", "-b", "main");
    await git("remote", "add", "production", `root@${vps.address}:${paths.repo}`);
    await commit({ "deploy.yml": deployYml, "app.py": pythonApp("v1") }, "v1");
    await git("push", "production", "main");
    const url = `http://${vps.address}:${port}/`;
    assertEquals(await get(url), { status: 200, body: "v1" });

    const pidDir = join(vps.dir, "pids");
    await Deno.mkdir(pidDir);
    const v2 = await commit({
      "deploy.yml": deployYml + "build: ./slow.sh\n",
      "slow.sh": slowBuild(pidDir),
      "app.py": pythonApp("v2"),
    }, "v2");
    const was = await before(paths);
    push = new Push(work, vps.env);
    await push.waitFor(/remote:\s+slow build line 3\b/);
    await push.assertOwnGroup();
    procs.push(...await buildProcs(pidDir));
    const hook = await proc("the hook on the host", await lockOwner(paths.lock));
    procs.push(hook);
    assertEquals((await procStat(procs[0].pid))?.ppid, hook.pid);
    assert(!(await lockFree(paths.lock)), "the deploy must hold the lock during the build");

    const signalled = performance.now();
    push.signal("SIGKILL"); // the laptop's git push and its ssh client die: the connection drops
    const exit = await push.status();
    assertEquals(exit.signal, "SIGKILL");
    timing("lost SSH connection (build)", await untilLockFree(paths, signalled));
    const onHost = await vps.ssh(`flock -n ${paths.lock} true`);
    assertEquals(onHost.code, 0, `the lock, seen on the host: ${onHost.output}`);

    await assertPutBack(paths, v2, was, "build", url, "v1");
    for (const p of procs) await assertGone(p);

    await commit({ "deploy.yml": deployYml, "app.py": pythonApp("v3") }, "v3");
    const next = await git("push", "production", "main");
    assertMatch(next.output, /remote: ✓ deployed web/);
    assertEquals(await get(url), { status: 200, body: "v3" });
  } catch (error) {
    if (push) console.error(`--- the push's output ---\n${push.output}`);
    throw error;
  } finally {
    await push?.stop();
    await killLeft(procs);
    await vps.close();
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
});
