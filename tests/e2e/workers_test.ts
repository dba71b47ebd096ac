/**
 * Worker processes for real (real pushes, real PM2): a Python app with a web process and two
 * instances of a worker that consumes a file-based queue, deployed three times while jobs keep
 * coming: every job is done exactly once (a worker told to stop finishes the job in hand), the
 * workers run the serving release; a failed deploy leaves them alone; `rollback` brings back the
 * release's own workers; a deploy without workers stops them.
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { AppRepo, FAST_HEALTH, pythonApp } from "../helpers/apps.ts";
import { freePort, get, type TestServer, withServer } from "../helpers/server.ts";
import { pm2Online, status } from "../helpers/state.ts";
import { sleep } from "../helpers/time.ts";

/** The worker: claims the oldest job file by renaming it, works 300 ms, records it; on SIGTERM ends after the job. */
function worker(version: string): string {
  return `import os, signal, sys, time
VERSION = ${JSON.stringify(version)}
QUEUE = os.environ["QUEUE_DIR"]
stopping = [False]
def stop(signum, frame):
    stopping[0] = True
signal.signal(signal.SIGTERM, stop)
claimed = os.path.join(QUEUE, "claimed")
while not stopping[0]:
    jobs = sorted(f for f in os.listdir(os.path.join(QUEUE, "new")))
    job = None
    for name in jobs:
        try:
            os.rename(os.path.join(QUEUE, "new", name), os.path.join(claimed, name))
            job = name
            break
        except FileNotFoundError:
            continue
    if job is None:
        time.sleep(0.05)
        continue
    time.sleep(0.3)  # the work; a SIGTERM now waits for it
    with open(os.path.join(QUEUE, "done.log"), "a") as log:
        log.write("%s %s %s %s\\n" % (job, VERSION, os.environ.get("INSTANCE", "?"), os.environ.get("PROCESS_TYPE", "?")))
    os.remove(os.path.join(claimed, job))
print("worker %s: stopped after its job" % VERSION, flush=True)
`;
}

interface Done {
  job: string;
  version: string;
}

async function doneLog(queue: string): Promise<Done[]> {
  const text = await Deno.readTextFile(join(queue, "done.log")).catch(() => "");
  return text.trim().split("\n").filter(Boolean).map((line) => {
    const [job, version] = line.split(" ");
    return { job, version };
  });
}

/** An app set up with a file queue (new/, claimed/) whose directory its .env names as QUEUE_DIR. */
async function queueApp(server: TestServer, app: string, strategy: "blue-green" | "restart") {
  const port = freePort();
  const queue = join(server.root, "queue");
  for (const dir of ["new", "claimed"]) await Deno.mkdir(join(queue, dir), { recursive: true });
  const remote = await server.setupApp(app, { port, strategy, dotenv: `QUEUE_DIR=${queue} # public\n` });
  return { port, queue, repo: await AppRepo.create(server, app, remote) };
}

Deno.test("workers (pm2): deployed 3 times under a stream of jobs, each job done once; failed deploy, rollback, removal", async () => {
  await withServer(async (server) => {
    const { port, queue, repo } = await queueApp(server, "wk", "blue-green");
    const processes = "processes:\n  worker: { command: python worker.py, instances: 2, stopTimeout: 10s }\n";
    const commit = (version: string, mode: "ok" | "crash" = "ok", extra = processes) =>
      repo.python("wk", version, mode, { extra, files: { "worker.py": worker(version) } });

    // Jobs arrive all along: 4 a second.
    let next = 0;
    let producing = true;
    const producer = (async () => {
      while (producing) {
        const name = `job-${String(next++).padStart(4, "0")}`;
        await Deno.writeTextFile(join(queue, `.${name}`), "");
        await Deno.rename(join(queue, `.${name}`), join(queue, "new", name));
        await sleep(250);
      }
    })();
    try {
      for (const version of ["v1", "v2", "v3"]) {
        await commit(version);
        const pushed = await repo.pushOk();
        assertMatch(pushed.output, /workers: worker ×2 \(python worker\.py\)/);
        assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: version });
        await sleep(1500);
      }
      const names = await pm2Online(server);
      assert(names.has("wk-worker-1") && names.has("wk-worker-2"), [...names.keys()].join(", "));
      const done = await doneLog(queue);
      assert(done.some((d) => d.version === "v3"), "the workers run v3");
      const { processes, slot } = await status(server, "wk");
      assertEquals(
        processes?.map((p) => `${p.type}/${p.instance} ${p.name} ${p.state} ${p.pid > 0}`),
        [`web/1 wk-${slot} online true`, "worker/1 wk-worker-1 online true", "worker/2 wk-worker-2 online true"],
      );
      const shown = await server.cli(["status", "wk"]);
      assertMatch(
        shown.stdout,
        /wk +processes: web\/1 online pid \d+ · worker\/1 online pid \d+ · worker\/2 online pid \d+/,
      );

      // A deploy that fails (its web process crashes) never touches the workers.
      const pids = [names.get("wk-worker-1"), names.get("wk-worker-2")];
      await commit("v4", "crash");
      const failed = await repo.push();
      assert(failed.code !== 0, failed.output);
      const after = await pm2Online(server);
      assertEquals([after.get("wk-worker-1"), after.get("wk-worker-2")], pids);

      // rollback (to v2: v3 is the serving release, the one before it v2) brings back v2's workers.
      const back = await server.cli(["rollback", "wk"]);
      assertEquals(back.code, 0, back.output);
      assertMatch(back.stdout, /workers: worker ×2/);
      const rolledAt = (await doneLog(queue)).length;
      await sleep(1500);
      const sinceRollback = (await doneLog(queue)).slice(rolledAt + 2); // jobs in hand at the restart may be v3's
      assert(sinceRollback.length > 0 && sinceRollback.every((d) => d.version === "v2"), JSON.stringify(sinceRollback));
    } finally {
      producing = false;
      await producer;
    }

    // The queue drains: every job done exactly once, none left claimed (none lost at a SIGTERM).
    const deadline = Date.now() + 20_000;
    while ((await doneLog(queue)).length < next && Date.now() < deadline) await sleep(200);
    const done = await doneLog(queue);
    const jobs = done.map((d) => d.job);
    const left = (dir: string) => [...Deno.readDirSync(join(queue, dir))].map((e) => e.name).sort();
    const missing = Array.from({ length: next }, (_, i) => `job-${String(i).padStart(4, "0")}`)
      .filter((job) => !jobs.includes(job));
    assertEquals(
      jobs.length,
      next,
      `${next} jobs made, ${jobs.length} done; missing ${missing}; new: ${left("new")}; claimed: ${left("claimed")}\n` +
        (await Deno.readTextFile(server.paths("wk").errorLog).catch(() => "")).slice(-3000),
    );
    assertEquals(new Set(jobs).size, jobs.length, "no job done twice");
    assertEquals(left("claimed"), [], "no job left claimed");
    const log = await Deno.readTextFile(server.paths("wk").accessLog);
    assert((log.match(/stopped after its job/g) ?? []).length >= 6, "every restart let the worker finish");

    // A release without workers stops them.
    await commit("v5", "ok", "");
    const pushed = await repo.pushOk();
    assertMatch(pushed.output, /stopped wk-worker-1, wk-worker-2/);
    const names = await pm2Online(server);
    assert(!names.has("wk-worker-1") && !names.has("wk-worker-2"), [...names.keys()].join(", "));
    assert(names.has("wk-blue") || names.has("wk-green"));
  });
});

Deno.test("workers (pm2): a Procfile gives the web command and a worker when deploy.yml has no processes", async () => {
  await withServer(async (server) => {
    const { port, queue, repo } = await queueApp(server, "pf", "restart");
    await repo.commit({
      "deploy.yml": "name: pf\ntype: python\nhealthCheck: { path: /health, window: 8s, interval: 200ms }\n",
      "Procfile": "# the app's processes\nweb: python server.py\nworker: python worker.py\n",
      "server.py": pythonApp("pf-v1"),
      "worker.py": worker("pf-v1"),
    });
    const pushed = await repo.pushOk();
    assertMatch(pushed.output, /workers: worker ×1 \(python worker\.py\)/);
    assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: "pf-v1" });
    await Deno.writeTextFile(join(queue, "new", "job-1"), "");
    const deadline = Date.now() + 10_000;
    while (!(await doneLog(queue)).length && Date.now() < deadline) await sleep(100);
    assertEquals(await doneLog(queue), [{ job: "job-1", version: "pf-v1" }]);
    assert((await pm2Online(server)).has("pf-worker-1"));
  });
});

Deno.test("workers (pm2): a missing worker program fails the deploy before the switch; a worker that crashes is said", async () => {
  await withServer(async (server) => {
    const { port, repo } = await queueApp(server, "wc", "restart");
    const commit = (version: string, worker: string) =>
      repo.commit({
        "deploy.yml": `name: wc\ntype: python\nhealthCheck: ${FAST_HEALTH}\nprocesses:\n  web: python app.py\n` +
          `  worker: ${worker}\n`,
        "app.py": pythonApp(version),
      }, version);
    await commit("v1", "python -c 'import time; time.sleep(3600)'");
    await repo.pushOk();
    await commit("v2", "celery -A app worker");
    const missing = await repo.push();
    assert(missing.code !== 0, missing.output);
    assertMatch(missing.output, /✗ command .*worker worker: cannot find the program "celery"/);
    assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: "v1" }, "v1 still serves");
    await repo.git(["reset", "--quiet", "--hard", "HEAD~1"]);

    await commit("v3", "python missing.py");
    const crashing = await repo.pushOk();
    assertMatch(crashing.output, /✗ workers .*not running 1\.5s after its start: wc-worker-1 /);
    assertMatch(crashing.output, /! not every worker started; the deploy stands/);
  });
});
