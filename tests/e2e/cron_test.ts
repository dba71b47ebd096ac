/**
 * Cron jobs for real. Under PM2 (its own PM2_HOME): the scheduler service runs every-minute jobs
 * over two minutes: each runs once a minute, in the serving release with its .env, a job that takes
 * longer than its interval is skipped (and recorded so), a hanging job is killed at its timeout,
 * failures reach a local webhook as `cron_failed`, and a job dropped by the next release stops.
 * Under real systemd (an nspawn host, pushed to over SSH): the timers are installed, systemd's next
 * run is ours, one run through `systemctl start` as the app's user, a changed schedule counts at
 * once, a dropped job's timer goes. Both deploy with git push (deploy.yml `cron:`); the cron-run
 * test writes its release as a deploy leaves it.
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { SystemdHost } from "../helpers/nspawn.ts";
import { AppRepo, FAST_HEALTH, pythonApp } from "../helpers/apps.ts";
import { BIN, freePort, run, type TestServer, withServer } from "../helpers/server.ts";
import { deployLog, status } from "../helpers/state.ts";
import type { CronJob } from "../../src/cron/job.ts";
import type { CronRun } from "../../src/cron/log.ts";
import { nextRun, parseSchedule, type Schedule } from "../../src/cron/schedule.ts";
import { appPaths } from "../../src/paths.ts";
import { sleep, until } from "../helpers/time.ts";

/** Writes release `id` of `app` under `root` as a deploy leaves it, with `jobs`, and points `current` at it. */
async function serve(root: string, app: string, id: string, jobs: CronJob[], dotenv: string): Promise<void> {
  const paths = appPaths(app, root);
  const dir = paths.release(id);
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(join(dir, ".env"), dotenv, { mode: 0o640 });
  const meta = {
    id,
    commit: "0123456789abcdef0123456789abcdef01234567",
    type: "python",
    createdAt: new Date().toISOString(),
    cron: jobs,
  };
  await Deno.writeTextFile(join(dir, ".deploy-paradigm.json"), JSON.stringify(meta, null, 2));
  await Deno.remove(`${paths.current}.new`).catch(() => {});
  await Deno.symlink(`releases/${id}`, `${paths.current}.new`);
  await Deno.rename(`${paths.current}.new`, paths.current);
}

async function cronLog(root: string, app: string): Promise<CronRun[]> {
  const text = await Deno.readTextFile(join(appPaths(app, root).logDir, "cron.log")).catch(() => "");
  return text.split("\n").filter(Boolean).map((line) => JSON.parse(line));
}

/**
 * The processes whose command line matches `pattern` and whose working directory is under `dir`
 * (a job runs in its release): this test's own, not those of other tests running beside it.
 */
async function jobProcesses(dir: string, pattern: RegExp): Promise<{ pid: number; args: string; cwd: string }[]> {
  const found = [];
  for await (const entry of Deno.readDir("/proc")) {
    const pid = Number(entry.name);
    if (!Number.isInteger(pid)) continue;
    try {
      const args = (await Deno.readTextFile(`/proc/${pid}/cmdline`)).split("\0").join(" ").trim();
      const cwd = await Deno.readLink(`/proc/${pid}/cwd`);
      if (pattern.test(args) && cwd.startsWith(`${dir}/`)) found.push({ pid, args, cwd });
    } catch { /* it has just ended */ }
  }
  return found;
}

/** Waits (5 s at most) until no process of a job matching `pattern` is left under `dir`; fails naming those left. */
async function assertNoneLeft(dir: string, pattern: RegExp, what: string): Promise<void> {
  let left: unknown[] = [];
  await until(
    5_000,
    what,
    async () => (left = await jobProcesses(dir, pattern)).length === 0,
    () => `left: ${JSON.stringify(left)}`,
  );
}

const parsed = (text: string) => parseSchedule(text) as Schedule;
const minuteOf = (ms: number) => Math.floor(ms / 60_000) * 60_000;

Deno.test("pm2, through git push: each job once a minute, overlaps skipped, timeouts killed, cron_failed sent", async () => {
  await withServer(async (server: TestServer) => {
    // The notify target: a real local HTTP server.
    const notices: Record<string, unknown>[] = [];
    const hookPort = freePort();
    const hook = Deno.serve({ hostname: "127.0.0.1", port: hookPort, onListen: () => {} }, async (request) => {
      notices.push(await request.json());
      return new Response("ok");
    });
    try {
      const app = "cr";
      const paths = server.paths(app);
      const remote = await server.setupApp(app, {
        port: freePort(),
        strategy: "restart",
        dotenv: "GREETING=hello-from-env\n",
      });
      await Deno.writeTextFile(
        paths.config,
        `notify:\n  - { type: webhook, url: "http://127.0.0.1:${hookPort}/hook", events: [cron_failed] }\n`,
        { append: true },
      );
      const repo = await AppRepo.create(server, app, remote);
      const ticks = join(server.root, "ticks");
      const job = (name: string, schedule: string, script: string, timeout: string) =>
        `  - { name: ${name}, schedule: "${schedule}", command: [/bin/sh, -c, '${script}'], timeout: ${timeout} }\n`;
      const every = "* * * * *";
      const common = job("slow", every, "echo slow start; sleep 68; echo slow end", "2m") + // longer than a minute
        job("hang", every, "echo hanging; exec sleep 600", "2s") +
        job("fail", "*/1 * * * *", "echo it-broke >&2; exit 3", "10s");
      const tick = job("tick", every, `echo "tick $(date +%s) $GREETING $(pwd)" >> ${ticks}`, "10s");
      const tock = job("tock", every, `echo "tock $(date +%s)" >> ${ticks}`, "10s");

      // Not late in a minute: the scheduler must be up before the next one starts.
      if (Date.now() % 60_000 > 45_000) await sleep(60_000 - (Date.now() % 60_000) + 500);
      await repo.python(app, "v1", "ok", { extra: `cron:\n${tick}${common}` });
      const first = await repo.pushOk();
      assertMatch(
        first.output,
        /✓ cron .*tick \(\* \* \* \* \*\), slow .*; started the scheduler \(pm2 deploy-paradigm-cron\)/,
      );
      const m1 = minuteOf(Date.now()) + 60_000;
      const release1 = (await status(server, app)).release!;
      const event = (await deployLog(server, app)).find((e) => e.event === "cron");
      assertMatch(String(event?.message), /started the scheduler/);

      // After the first minute's runs, the next release drops `tick` and adds `tock`.
      await sleep(m1 + 20_000 - Date.now());
      await repo.python(app, "v2", "ok", { extra: `cron:\n${common}${tock}` });
      const second = await repo.pushOk();
      assertMatch(
        second.output,
        /✓ cron .*the scheduler \(pm2 deploy-paradigm-cron\) runs them; the scheduler no longer runs tick\s*\n/,
      );
      const release2 = (await status(server, app)).release!;
      // The second minute, and the first minute's slow run ending (68 s).
      await sleep(m1 + 60_000 + 14_000 - Date.now());

      const log = await cronLog(server.prefix, app);
      const by = (job: string) => log.filter((run) => run.job === job);
      // Within the minute it is due, early in it: the scheduler starts `cron-run` (a process of its own, which
      // under the whole test suite's load took more than 5 s to record its start once in CI).
      const startsIn = (run: CronRun, minute: number) =>
        Date.parse(run.start) >= minute && Date.parse(run.start) < minute + 20_000;
      // tick: once, in the first minute (the second release has no tick); tock: once, in the second.
      const tickLines = (await Deno.readTextFile(ticks)).trim().split("\n");
      assertEquals(tickLines.length, 2, tickLines.join("\n"));
      assertMatch(tickLines[0], new RegExp(`^tick \\d+ hello-from-env ${paths.release(release1)}$`));
      assertMatch(tickLines[1], /^tock \d+$/);
      assertEquals(by("tick").map((r) => [r.outcome, r.exitCode, r.release]), [["ok", 0, release1]]);
      assert(startsIn(by("tick")[0], m1), JSON.stringify(by("tick")));
      assertEquals(by("tock").map((r) => [r.outcome, r.release]), [["ok", release2]]);
      assert(startsIn(by("tock")[0], m1 + 60_000), JSON.stringify(by("tock")));
      // slow: the second minute's run found the first still going (skipped, naming it), then the first ended.
      const slow = by("slow");
      assertEquals(slow.map((r) => r.outcome), ["skipped", "ok"], JSON.stringify(slow));
      assertMatch(slow[0].reason!, new RegExp(`^the run started at .* \\(pid ${slow[1].pid}\\) is still going$`));
      assert(startsIn(slow[0], m1 + 60_000) && startsIn(slow[1], m1));
      assert(slow[1].durationMs >= 68_000 && slow[1].durationMs < 75_000, String(slow[1].durationMs));
      // hang: killed at its timeout in both minutes; fail: failed in both.
      for (const run of by("hang")) {
        assertEquals([run.outcome, run.exitCode], ["timeout", null]);
        assert(run.durationMs >= 2_000 && run.durationMs < 6_000, String(run.durationMs));
      }
      assertEquals(by("hang").map((r) => r.release), [release1, release2]);
      assertEquals(by("fail").map((r) => [r.outcome, r.exitCode]), [["failed", 3], ["failed", 3]]);
      for (const run of log) {
        assertEquals(Object.keys(run).filter((k) => !["reason", "pid"].includes(k)), [
          "job",
          "release",
          "start",
          "end",
          "exitCode",
          "durationMs",
          "outcome",
        ]);
        assert(Date.parse(run.end) >= Date.parse(run.start));
      }
      // Nothing of the hanging job is left.
      await assertNoneLeft(
        paths.dir,
        /sleep 600/,
        `the timed-out job still runs (runs: ${JSON.stringify(by("hang"))})`,
      );
      // The output log: start and end lines around each run's output.
      const hangOutput = await Deno.readTextFile(join(paths.logDir, "cron-hang.log"));
      assertMatch(
        hangOutput,
        new RegExp(
          `--- \\S+ start hang \\(release ${release1}\\): /bin/sh -c 'echo hanging; exec sleep 600'\nhanging\n` +
            "--- \\S+ end hang: timeout after 2\\.\\d\\d s: killed after 2 s \\(its timeout\\)\n",
        ),
      );
      // cron_failed, for each failed and timed-out run, to the local webhook.
      await sleep(1000);
      const failed = notices.filter((n) => n.event === "cron_failed");
      assertEquals(failed.length, 4, JSON.stringify(notices, null, 2));
      const fail = failed.find((n) => n.job === "fail")!;
      assertEquals([fail.app, fail.ok, fail.exitCode, fail.schedule], ["cr", false, "3", "*/1 * * * *"]);
      assertMatch(String(fail.title), /^cr cron job fail failed \(exit 3\) on /);
      assertEquals(fail.text, "it-broke");
      assertMatch(String(failed.find((n) => n.job === "hang")!.title), /^cr cron job hang timed out after 2 s on /);
      // One scheduler process of ours besides the app.
      const list = await run(["pm2", "jlist"], { env: server.env });
      const processes = JSON.parse(list.stdout.split("\n").findLast((l) => l.startsWith("["))!);
      assertEquals(processes.map((p: { name: string }) => p.name).sort(), ["cr", "deploy-paradigm-cron"]);
      // The scheduler runs in /, not in the directory of the deploy that started it (cr's bare repo).
      const scheduler = processes.find((p: { name: string }) => p.name === "deploy-paradigm-cron");
      assertEquals(scheduler.pm2_env.pm_cwd, "/");
      assertEquals(await Deno.readLink(`/proc/${scheduler.pid}/cwd`), "/");
    } finally {
      await hook.shutdown();
    }
  });
});

Deno.test("cron-run: SIGTERM then SIGKILL at the timeout, one run at a time, a job not in the release", async () => {
  await withServer(async (server: TestServer) => {
    const app = "cr";
    const paths = server.paths(app);
    await Deno.mkdir(paths.dir, { recursive: true });
    await Deno.writeTextFile(paths.config, `port: ${freePort()}\nmanager: pm2\n`);
    const marker = join(server.root, "stubborn");
    const jobs: CronJob[] = [
      // Ignores SIGTERM: SIGKILL follows 3 s after it; its background child goes with its group.
      {
        name: "stubborn",
        schedule: "* * * * *",
        argv: [
          "/bin/sh",
          "-c",
          `trap 'echo got TERM' TERM; (sleep 300 &); printf partial; while :; do sleep 0.1; done`,
        ],
        timeoutMs: 1_000,
      },
      {
        name: "quick",
        schedule: "@daily",
        argv: ["/bin/sh", "-c", `echo $DEPLOY_CRON_JOB $DEPLOY_RELEASE > ${marker}`],
        timeoutMs: 5_000,
      },
    ];
    // Never deployed: refused (exit 2), saying where it looked and what to do; nothing recorded.
    const never = await server.cli(["cron-run", app, "quick"]);
    assertEquals([never.code, never.stdout], [2, ""], never.output);
    assertEquals(
      never.stderr,
      `error: cr has no serving release (${paths.current} does not exist): its cron job "quick" cannot run\n` +
        `hint: deploy cr first (git push to ${paths.repo}): the jobs are those of its serving release's deploy.yml ` +
        "`cron:`\n",
    );
    assertEquals(await Deno.stat(paths.logDir).then(() => "written", () => "nothing"), "nothing");
    await serve(server.prefix, app, "20260101-000000-001", jobs, "");
    // Whichever takes the job's lock first runs it: the second is started 300 ms later, but on a busy
    // machine the first process can take longer than that to start. Exit codes order them (1, then 0).
    const [ran, skipped] = (await Promise.all([
      server.cli(["cron-run", app, "stubborn"]),
      new Promise((r) => setTimeout(r, 300)).then(() => server.cli(["cron-run", app, "stubborn"])),
    ])).sort((a, b) => b.code - a.code);
    assertEquals(ran.code, 1, ran.output);
    assertMatch(
      ran.stdout,
      /^cr\/stubborn: timeout \(killed after 1 s\) in 4\.\d s; output in \S+cron-stubborn\.log\n$/,
    );
    assertEquals(skipped.code, 0, skipped.output);
    assertMatch(skipped.stdout, /^cr\/stubborn: skipped: the run started at \S+ \(pid \d+\) is still going\n$/);
    const quick = await server.cli(["cron-run", app, "quick"]);
    assertEquals(quick.code, 0, quick.output);
    assertEquals(await Deno.readTextFile(marker), "quick 20260101-000000-001\n");
    const missing = await server.cli(["cron-run", app, "quik"]);
    assertEquals(missing.code, 2, missing.output);
    assertMatch(missing.stderr, /has no cron job "quik"\n.*did you mean "quick"\?/);
    const bad = await server.cli(["cron-run", app, "Bad_Name"]);
    assertEquals(bad.code, 2, bad.output);
    assertMatch(bad.stderr, /"Bad_Name" is not a job name: it must start with a lowercase letter/);
    const log = await cronLog(server.prefix, app);
    assertEquals(log.map((r) => [r.job, r.outcome, r.exitCode]), [
      ["stubborn", "skipped", null],
      ["stubborn", "timeout", null],
      ["quick", "ok", 0],
    ]); // a job that is not there is not a run
    assert(log[1].durationMs >= 4_000 && log[1].durationMs < 6_000, String(log[1].durationMs));
    // The output: the run's lines (one without its newline; the shell may say its sleep was terminated), then
    // the end line on a line of its own.
    assertMatch(
      await Deno.readTextFile(join(paths.logDir, "cron-stubborn.log")),
      /^--- \S+ start stubborn \(release 20260101-000000-001\): \/bin\/sh -c .*\npartial(Terminated\n)?got TERM\n--- \S+ end stubborn: timeout after 4\.\d\d s: killed after 1 s \(its timeout\)\n$/,
    );
    await assertNoneLeft(paths.dir, /^sleep 300$/, "the job's background child still runs");
    // The runs and the jobs' output (which may hold their secrets): root's only from creation, as access.log is.
    for (const name of ["cron.log", "cron-stubborn.log", "cron-quick.log"]) {
      assertEquals(((await Deno.stat(join(paths.logDir, name))).mode! & 0o777).toString(8), "600", name);
    }
    // `cron <app>`: each job with its next run and its last one.
    const listed = await server.cli(["cron", app]);
    assertEquals(listed.code, 0, listed.output);
    assertMatch(listed.stdout, /^JOB +SCHEDULE +NEXT RUN +LAST RUN\nstubborn +\* \* \* \* \* +\S+ \S+ +timeout at /);
    assertMatch(listed.stdout, /\nquick +@daily +\S+ 00:00 +ok at \S+ \S+, 0\.\d s\n/);
    const json = JSON.parse((await server.cli(["cron", app, "--json"])).stdout);
    assertEquals(json.map((j: { name: string; lastRun: CronRun }) => [j.name, j.lastRun.outcome]), [
      ["stubborn", "timeout"],
      ["quick", "ok"],
    ]);
    assertEquals(json[1].nextRun, nextRun(parsed("@daily"), new Date()).toISOString());
  });
});

Deno.test("systemd, through git push over SSH: timers run when ours say, as the app's user; changed and dropped jobs follow", async () => {
  const host = await SystemdHost.create();
  const work = await Deno.makeTempDir({ prefix: "dp-laptop-" });
  try {
    const app = "cr";
    const setup = await host.ssh(`${BIN} setup ${app} --port 18123 --manager systemd --strategy restart --yes`);
    assertEquals(setup.code, 0, setup.output);
    const root = host.rootfs;
    const paths = appPaths(app, root);
    await Deno.writeTextFile(join(paths.dir, ".env.production"), "GREETING=hello-from-env\n", { mode: 0o600 });
    const { push } = await host.laptop(work, app);
    const job = (name: string, schedule: string, command: string) =>
      `  - { name: ${name}, schedule: "${schedule}", command: ${command}, timeout: 30s }\n`;
    const report = (schedule: string) => job("report", schedule, "[/bin/sh, -c, 'id -un; echo $GREETING; pwd']");
    const others = job("both", "0 3 1,15 * sun", "/bin/true") + job("weekday", "30 9 * jan-jun mon-fri", "/bin/true");
    const deploy = (version: string, cron: string) =>
      push({
        "deploy.yml": `name: ${app}\ntype: python\ncommand: python app.py\nhealthCheck: ${FAST_HEALTH}\ncron:\n${cron}`,
        "app.py": pythonApp(version),
      }, version);
    const schedules: Record<string, string> = {
      report: "*/7 * * * *",
      both: "0 3 1,15 * sun",
      weekday: "30 9 * jan-jun mon-fri",
    };
    assertMatch(
      await deploy("v1", report(schedules.report) + others),
      /✓ cron +[\d.]+s +timers of report \(\*\/7 \* \* \* \*\), both/,
    );
    const release1 = JSON.parse(await Deno.readTextFile(paths.status)).release;

    const timers = await host.ssh("systemctl list-timers --all --no-pager");
    for (const name of Object.keys(schedules)) assertMatch(timers.stdout, new RegExp(`${app}-cron-${name}\\.timer`));
    // systemd's next elapse of each timer is our nextRun.
    const sameNextRun = async (name: string) => {
      const shown = await host.ssh(
        `systemctl show ${app}-cron-${name}.timer --property=NextElapseUSecRealtime --value --timestamp=utc`,
      );
      const theirs = Date.parse(shown.stdout.trim().replace(/^\w+ /, "").replace(" UTC", "Z").replace(" ", "T"));
      // A timer that fired since it was armed has moved on to its next run, as nextRun from now does.
      const ours = nextRun(parsed(schedules[name]), new Date()).getTime();
      assertEquals(new Date(theirs).toISOString(), new Date(ours).toISOString(), `${name}: ${shown.stdout}`);
      // …and list-timers shows it (the host's zone is UTC).
      const listed = (await host.ssh("systemctl list-timers --all --no-pager")).stdout;
      const line = listed.split("\n").find((l) => l.includes(`${app}-cron-${name}.timer`)) ?? listed;
      assert(line.includes(new Date(ours).toISOString().slice(0, 19).replace("T", " ")), line);
    };
    for (const name of Object.keys(schedules)) await sameNextRun(name);
    assertMatch(
      await Deno.readTextFile(join(root, "etc/systemd/system/cr-cron-both.timer")),
      /OnCalendar=Sun \*-\*-\* 03:00:00\nOnCalendar=\*-\*-01,15 03:00:00\nAccuracySec=1s\nPersistent=false\n/,
    );

    // One real run, as systemd starts it: the app's user, the release's .env, in the release.
    const started = await host.ssh(`systemctl start ${app}-cron-report.service`);
    assertEquals(started.code, 0, started.output);
    const log = (await cronLog(root, app)).filter((r) => r.job === "report" && r.outcome !== "skipped");
    assertEquals(log.map((r) => [r.outcome, r.exitCode, r.release]).at(-1), ["ok", 0, release1]);
    const output = await Deno.readTextFile(join(paths.logDir, "cron-report.log"));
    assertMatch(
      output,
      new RegExp(`\\napp-cr\\nhello-from-env\\n/opt/deployments/cr/releases/${release1}\\n--- \\S+ end report: ok`),
    );

    // A changed schedule counts at once; the other timers are left alone.
    schedules.report = "*/11 * * * *";
    assertMatch(
      await deploy("v2", report(schedules.report) + others),
      /✓ cron +[\d.]+s +timers of report \(\*\/11 \* \* \* \*\)/,
    );
    for (const name of Object.keys(schedules)) await sameNextRun(name);

    // The next release drops `both` and `weekday`: their timers and units go.
    const dropped = await deploy("v3", report(schedules.report));
    assertMatch(
      dropped,
      /✓ cron +[\d.]+s +timers of report \(\*\/11 \* \* \* \*\); removed the timers of both, weekday/,
    );
    const after = await host.ssh("systemctl list-timers --all --no-pager");
    assertMatch(after.stdout, /cr-cron-report\.timer/);
    assert(!/cr-cron-(both|weekday)/.test(after.stdout), after.stdout);
    for (const gone of ["both", "weekday"]) {
      for (const suffix of ["timer", "service"]) {
        await Deno.stat(join(root, `etc/systemd/system/cr-cron-${gone}.${suffix}`)).then(
          () => assert(false, `cr-cron-${gone}.${suffix} is still there`),
          () => {},
        );
      }
    }

    // A rollback brings back the jobs of the release gone back to (v2: both and weekday again).
    const back = await host.ssh(`${BIN} rollback ${app}`);
    assertEquals(back.code, 0, back.output);
    assertMatch(back.stdout, /✓ cron +[\d.]+s +timers of report \(\*\/11 \* \* \* \*\), both/);
    for (const name of Object.keys(schedules)) await sameNextRun(name);
  } finally {
    await host.close();
    await Deno.remove(work, { recursive: true });
  }
});
