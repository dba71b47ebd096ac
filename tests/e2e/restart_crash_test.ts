/**
 * Crash safety of `strategy: restart`: a deploy killed with SIGKILL at 10 moments spread over it
 * (DEPLOY_PARADIGM_TEST_KILL, see src/deploy/cancel.ts), six of them inside the restart step
 * (two of those just after the process manager's restart call started),
 * under PM2 (a Node app) and under a real systemd (a Python app, in a systemd-nspawn host).
 * Under PM2, two more: a variable taken out of .env makes the restart `pm2 delete` + `pm2 start`
 * (one command, PM2_REPLACE in src/managers/pm2.ts), killed just after it started and in between
 * the two pm2 calls.
 * After each kill a process serves the app's port (200 from the old or the new release) once the
 * process manager is done, `current` names a complete release and the lock is free; the next
 * deploy succeeds, names the release it found serving, and leaves nothing behind.
 * Prints "N/M serving".
 */
import { join } from "node:path";
import { assertEquals } from "../helpers/assert.ts";
import { AppRepo, FAST_HEALTH, pythonApp } from "../helpers/apps.ts";
import { type Answer, invariants, leftovers, servedWithin } from "../helpers/crash.ts";
import { SystemdHost } from "../helpers/nspawn.ts";
import { BIN, freePort, get, type Ran, run, withServer } from "../helpers/server.ts";
import { sleep } from "../helpers/time.ts";
import type { AppStatus } from "../../src/deploy/status.ts";
import { type AppPaths, appPaths } from "../../src/paths.ts";

/** How long the process manager may take to finish a restart the dead deploy asked for. */
const SETTLE_MS = 15_000;
/** After the first answer: long enough for a manager's client under way to have made its call. */
const SETTLED_MS = 3_000;

/** An app with `strategy: restart` on some server, as the loop below drives it. */
interface Target {
  label: string;
  paths: AppPaths;
  /** Text of the argv of the process manager's restart call. */
  call: string;
  /**
   * The manager's other way to restart, when it has one: the text of its argv, and how to make the
   * next deploy take it (`true`) or not (`false`) once the release before is deployed.
   */
  replace?: { call: string; force(on: boolean): Promise<void> };
  /** Commits the app at `version`; returns the commit. */
  commit(version: string): Promise<string>;
  /** Deploys the last commit with DEPLOY_PARADIGM_TEST_KILL=`point`. */
  killed(point: string): Promise<Ran>;
  /** Deploys the last commit (git push). */
  push(): Promise<Ran>;
  /** GET / of the app, where it listens. */
  ask(): Promise<Answer>;
  /** What else a finished deploy must not leave (the process manager's side). */
  leftovers(): Promise<string[]>;
}

/**
 * The moments: step boundaries; fractions of the restart step; and the start of the manager's
 * restart call itself (`systemctl restart`, `pm2 start <file>`), and 150 ms into it.
 */
const MOMENTS: (string | number)[] = [
  "after:fetch",
  "after:env",
  0.15,
  0.4,
  "spawned:{call}",
  "spawned:{call}+150",
  0.7,
  0.9,
  "after:start",
  "after:health",
];

/**
 * With {@link Target}.replace: the start of that call, and a moment inside it (pm2: its first call,
 * `pm2 delete`, takes about 0.2-0.3 s; then `pm2 start`).
 */
const REPLACE_MOMENTS = ["spawned:{replace}", "spawned:{replace}+300"];

/**
 * The kill point of a moment: a fraction of the restart is that fraction of the shortest of the
 * last three `start` steps (the machine is shared: a restart may take less than the last one).
 */
async function killPoint(target: Target, moment: string | number): Promise<string> {
  if (typeof moment === "string") {
    return moment.replace("{call}", target.call).replace("{replace}", target.replace?.call!);
  }
  const starts = (await deployLog(target.paths)).filter((e) => e.event === "start" && e.ok === true).slice(-3);
  return `after:switch+${Math.round(moment * Math.min(...starts.map((e) => Number(e.duration))))}`;
}

async function deployLog(paths: AppPaths): Promise<Record<string, unknown>[]> {
  const text = await Deno.readTextFile(paths.deployLog).catch(() => "");
  return text.trim().split("\n").filter(Boolean).map((line) => JSON.parse(line));
}

/** Deploys v0 and v1, then kills a deploy at each moment and deploys once more after it. */
async function killAtMoments(target: Target): Promise<void> {
  const { paths } = target;
  const commits = new Map<string, string>();
  const commit = async (version: string) => commits.set(version, await target.commit(version));
  for (const version of ["v0", "v1"]) {
    await commit(version);
    const push = await target.push();
    assertEquals(push.code, 0, push.output);
  }
  let good = "v1";
  let serving = 0;
  const failures: string[] = [];
  const moments = [...MOMENTS, ...(target.replace ? REPLACE_MOMENTS : [])];
  for (const [i, moment] of moments.entries()) {
    const point = await killPoint(target, moment);
    const version = `k${i}`;
    if (REPLACE_MOMENTS.includes(String(moment))) {
      // A release deployed with what the killed deploy will not keep.
      await target.replace!.force(true);
      await commit(`p${i}`);
      const push = await target.push();
      assertEquals(push.code, 0, push.output);
      good = `p${i}`;
      await target.replace!.force(false);
    }
    await commit(version);
    const killed = await target.killed(point);
    const problems: string[] = [];
    if (killed.code === 0) problems.push("the killed deploy succeeded");
    const first = await servedWithin(() => target.ask(), [good, version], SETTLE_MS);
    // A restart the dead deploy asked for may still be under way (the pm2 or systemctl client it
    // started goes on): what serves once it is over is what the next deploy must find.
    await sleep(SETTLED_MS);
    const served = "problem" in first ? first : await servedWithin(() => target.ask(), [good, version], SETTLE_MS);
    if ("problem" in served) problems.push(served.problem);
    else serving++;
    problems.push(...await invariants(paths));

    // The next deploy succeeds, names the release it found serving, and leaves nothing behind.
    const next = `n${i}`;
    await commit(next);
    const logged = (await deployLog(paths)).length;
    const push = await target.push();
    if (push.code !== 0) problems.push(`the next deploy failed:\n${push.output}`);
    else {
      good = next;
      const answer = await target.ask();
      if (!("body" in answer) || answer.body.trim() !== next) {
        problems.push(`after the next deploy: ${JSON.stringify(answer)}`);
      }
      problems.push(...await leftovers(paths), ...await target.leftovers());
      const interrupted = (await deployLog(paths)).slice(logged).find((e) => e.event === "interrupted");
      const found = "version" in served ? commits.get(served.version)!.slice(0, 7) : "?";
      if (!interrupted) problems.push("the interruption was not recorded");
      else if (!String(interrupted.message).includes(`(${found}) serves`)) {
        problems.push(`the next deploy did not find ${found} serving: ${interrupted.message}`);
      }
      const st = JSON.parse(await Deno.readTextFile(paths.status)) as AppStatus;
      const link = await Deno.readLink(paths.current).catch(() => undefined);
      if (!st.healthy || st.status !== "running" || `releases/${st.release}` !== link) {
        problems.push(`status.json after the next deploy: ${JSON.stringify(st)}`);
      }
    }
    const seen = (answer: typeof served) => "version" in answer ? answer.version : "nothing";
    console.log(`${target.label}, killed ${point}: ${seen(first)} answered first, then ${seen(served)}`);
    if (problems.length) failures.push(`${point}: ${problems.join("; ")}`);
  }
  console.log(`restart strategy under ${target.label}: ${serving}/${moments.length} serving`);
  assertEquals(failures, [], failures.join("\n"));
  assertEquals(serving, moments.length);
}

Deno.test("restart strategy under PM2: SIGKILL at 12 moments of a deploy (2 in delete + start); a process serves after each", async () => {
  await withServer(async (server) => {
    const app = "rcrash";
    const port = freePort();
    const repo = await AppRepo.create(server, app, await server.setupApp(app, { port, strategy: "restart" }));
    const push = (env: Record<string, string> = {}) =>
      run(["git", "push", "production", "main"], { cwd: repo.dir, env: { ...server.env, ...env } });
    await killAtMoments({
      label: "PM2",
      paths: server.paths(app),
      call: `start ${server.paths(app).dir}/pm2-${app}.json`,
      replace: {
        call: "pm2 delete", // the text of PM2_REPLACE, the argv of no other pm2 call of a deploy
        // A variable in .env, then gone: the process would keep it, so it is deleted and started.
        force: (on) =>
          Deno.writeTextFile(server.paths(app).envFile("production"), on ? "DROPPED=dropped-value-1\n" : "", {
            mode: 0o600,
          }),
      },
      commit: (version) => repo.node(app, version),
      killed: (point) => push({ DEPLOY_PARADIGM_TEST_KILL: point }),
      push: () => push(),
      ask: () => get(`http://127.0.0.1:${port}/`),
      leftovers: () => leftovers(server.paths(app), { env: server.env, processes: [app] }),
    });
  });
});

/** A Node app that answers its variables GREETING and OLD_TOKEN as JSON. */
const ENV_APP = `require("node:http").createServer((req, res) => {
  res.end(JSON.stringify({ greeting: process.env.GREETING, old: process.env.OLD_TOKEN }));
}).listen(Number(process.env.PORT), "127.0.0.1");
`;

Deno.test("restart strategy under PM2: one daemon call applies a new definition; what it would keep takes delete + start", async () => {
  await withServer(async (server) => {
    const app = "inplace";
    const port = freePort();
    const paths = server.paths(app);
    const env = (text: string) => Deno.writeTextFile(paths.envFile("production"), text, { mode: 0o600 });
    const repo = await AppRepo.create(
      server,
      app,
      await server.setupApp(app, {
        port,
        strategy: "restart",
        dotenv: "GREETING=greeting-one\nOLD_TOKEN=old-token-1\n",
      }),
    );
    const pm2 = async () => {
      const list = JSON.parse((await run(["pm2", "jlist"], { env: server.env })).stdout);
      const p = list.find((p: { name: string }) => p.name === app);
      // pm2 counts the restarts of a process; delete + start makes a new one (at 0).
      return p.pm2_env.restart_time as number;
    };
    const deploy = async (version: string, command = "node server.js", files: Record<string, string> = {}) => {
      await repo.commit({
        "deploy.yml": `name: ${app}\ntype: node\nhealthCheck: ${FAST_HEALTH}\ncommand: ${command}\n`,
        "package.json": JSON.stringify({ name: app, version: "1.0.0", private: true }),
        "server.js": ENV_APP,
        ...files,
      }, version);
      await repo.pushOk();
      const answer = await get(`http://127.0.0.1:${port}/`);
      return { answer: "body" in answer ? JSON.parse(answer.body) : answer, pm2: await pm2() };
    };
    const first = await deploy("v1");
    assertEquals(first.answer, { greeting: "greeting-one", old: "old-token-1" });

    await env("GREETING=greeting-two\nOLD_TOKEN=old-token-1\nNEW_TOKEN=new-token-1\n");
    const changed = await deploy("v2");
    assertEquals(changed.answer, { greeting: "greeting-two", old: "old-token-1" });
    assertEquals(changed.pm2, first.pm2 + 1, "restarted in place");

    await env("GREETING=greeting-two\nNEW_TOKEN=new-token-1\n");
    // The deploy's own environment (here the push's, which the hook inherits) never reaches the app.
    server.env.OLD_TOKEN = "from-the-deploying-environment";
    const removed = await deploy("v3");
    delete server.env.OLD_TOKEN;
    assertEquals(removed.answer, { greeting: "greeting-two" }, "a variable taken out of .env is gone");
    assertEquals(removed.pm2, 0, "a variable gone: delete + start (a new pm2 process)");

    const script = { "run.sh": "#!/bin/sh\nexec node server.js\n" };
    const other = await deploy("v4", "./run.sh", script);
    assertEquals(other.answer, { greeting: "greeting-two" });
    assertEquals(other.pm2, 0, "another program: delete + start");
    const again = await deploy("v5", "./run.sh", script);
    assertEquals(again.pm2, 1, "the same again: in place");
  });
});

Deno.test("restart strategy under systemd: SIGKILL at 10 moments of a deploy; a process serves after each", async () => {
  const host = await SystemdHost.create();
  const work = await Deno.makeTempDir({ prefix: "dp-laptop-" });
  try {
    const port = 18000 + Math.floor(Math.random() * 1000);
    const setup = await host.ssh(`${BIN} setup web --port ${port} --manager systemd --strategy restart --yes`);
    assertEquals(setup.code, 0, setup.output);
    const git = async (...args: string[]) => {
      const result = await run(["git", ...args], { cwd: work, env: host.env });
      assertEquals(result.code, 0, `git ${args.join(" ")}:\n${result.output}`);
      return result;
    };
    await git("init", "--quiet", "-b", "main");
    await git("remote", "add", "production", `root@${host.address}:/var/repos/web.git`);
    const deployYml = `name: web\ntype: python\ncommand: python app.py\nhealthCheck: ${FAST_HEALTH}\n`;
    await killAtMoments({
      label: "systemd",
      paths: appPaths("web", host.rootfs),
      call: "systemctl restart web.service",
      async commit(version) {
        await Deno.writeTextFile(join(work, "deploy.yml"), deployYml);
        await Deno.writeTextFile(join(work, "app.py"), pythonApp(version));
        await git("add", "-A");
        await git("commit", "--quiet", "-m", version);
        return (await git("rev-parse", "HEAD")).stdout.trim();
      },
      async killed(point) {
        // The hook's environment is fixed: the commit goes to another branch (stored only) and
        // is deployed by `execute` itself, with the kill point in its environment.
        await git("push", "--quiet", "--force", "production", "HEAD:refs/heads/killed");
        const sha = (await git("rev-parse", "HEAD")).stdout.trim();
        return await host.ssh(`DEPLOY_PARADIGM_TEST_KILL='${point}' ${BIN} execute /var/repos/web.git ${sha}`);
      },
      push: () => run(["git", "push", "production", "main"], { cwd: work, env: host.env }),
      async ask() {
        // The app listens on the host's loopback: asked from inside its network namespace.
        const url = `http://127.0.0.1:${port}/`;
        const out = await run(["ip", "netns", "exec", host.name, "curl", "-s", "-m", "3", "-w", "\n%{http_code}", url]);
        const lines = out.stdout.split("\n");
        const status = Number(lines.pop());
        return status ? { status, body: lines.join("\n") } : { error: `curl exited ${out.code}` };
      },
      leftovers: () => Promise.resolve([]),
    });
  } finally {
    await host.close();
    await Deno.remove(work, { recursive: true });
  }
});
