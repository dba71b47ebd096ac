/** Process types (deploy.yml `processes`, a Procfile) and the worker plans of pm2 and systemd, as data. */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { init } from "../../src/init.ts";
import { appPaths, deploymentsRoot } from "../../src/paths.ts";
import { nameClash, syncWorkers } from "../../src/deploy/workers.ts";
import { instancePorts } from "../../src/deploy/slots.ts";
import { parse } from "../../src/yaml.ts";
import type { ReleaseMeta } from "../../src/deploy/releases.ts";
import type { WorkerSpec } from "../../src/deploy/processes.ts";
import { loadServerConfig } from "../../src/config/server_config.ts";
import { FakeRunner } from "../helpers/fake_runner.ts";
import { throws } from "node:assert/strict";
import { type DeployFile, deployFileSchema } from "../../src/config/schema.ts";
import { parseProcfile, processTypes } from "../../src/deploy/processes.ts";
import { UsageError } from "../../src/errors.ts";
import type { Runner } from "../../src/runner.ts";
import type { AppProcess, ProcessManager } from "../../src/managers/mod.ts";
import { pm2, PM2_REPLACE, PM2_UMASK } from "../../src/managers/pm2.ts";
import { systemd, workerTemplate } from "../../src/managers/systemd.ts";

function deploy(fields: Record<string, unknown>): DeployFile {
  return deployFileSchema.parse({ name: "shop", type: "python", healthCheck: "/health", ...fields });
}

Deno.test("processes: command alone is web; processes gives web instances and workers with their stop timeouts", () => {
  assertEquals(processTypes(deploy({ command: "python app.py" })), {
    web: ["python", "app.py"],
    instances: 1,
    workers: [],
  });
  assertEquals(
    processTypes(deploy({
      processes: {
        web: { command: "gunicorn app:app", instances: 3 },
        worker: { command: ["python", "worker.py"], instances: 2, stopTimeout: "90s" },
        beat: "python beat.py",
      },
    })),
    {
      web: ["gunicorn", "app:app"],
      instances: 3,
      workers: [
        { type: "worker", argv: ["python", "worker.py"], instances: 2, stopTimeoutMs: 90_000 },
        { type: "beat", argv: ["python", "beat.py"], instances: 1, stopTimeoutMs: 30_000 },
      ],
    },
  );
  // web without a command: the type's default start command (decided later), with its instances.
  assertEquals(processTypes(deploy({ processes: { web: { instances: 2 } } })), {
    web: undefined,
    instances: 2,
    workers: [],
  });
});

Deno.test("processes: a Procfile is read when deploy.yml has no processes; deploy.yml's command wins over its web", () => {
  const procfile =
    "# processes\nweb: gunicorn app:app --bind 127.0.0.1:$PORT_IS_NOT_EXPANDED\n\nworker:python worker.py -q 'high low'\n";
  assertEquals(processTypes(deploy({}), procfile.replace("$PORT_IS_NOT_EXPANDED", "8000")), {
    web: ["gunicorn", "app:app", "--bind", "127.0.0.1:8000"],
    instances: 1,
    workers: [{ type: "worker", argv: ["python", "worker.py", "-q", "high low"], instances: 1, stopTimeoutMs: 30_000 }],
  });
  assertEquals(processTypes(deploy({ command: "python app.py" }), "web: other\n").web, ["python", "app.py"]);
  // deploy.yml's processes: the Procfile is not read at all.
  assertEquals(
    processTypes(deploy({ processes: { worker: "python w.py" } }), "clock: python clock.py\n").workers.map((w) =>
      w.type
    ),
    ["worker"],
  );
});

Deno.test("processes: a bad Procfile line is refused with file:line:column and how to fix it", () => {
  const refused = (text: string) => {
    try {
      parseProcfile(text, "Procfile (commit abc1234)");
    } catch (error) {
      if (!(error instanceof UsageError)) throw error;
      return error.suggestion ? `${error.message} | ${error.suggestion}` : error.message;
    }
    throw new Error("accepted");
  };
  assertEquals(
    refused("web: a\nWorker_1: b\n"),
    'Procfile (commit abc1234):2:1: "Worker_1" is not a process name | use lowercase letters, digits and -, starting with a letter (up to 30), e.g. `worker`',
  );
  assertMatch(
    refused("release: python manage.py migrate\n"),
    /^Procfile \(commit abc1234\):1:1: a release process runs once per deploy on Heroku.*\| make it deploy.yml's hooks.preDeploy/,
  );
  assertMatch(refused("green: python g.py\n"), /:1:1: the process green is named after a blue-green slot/);
  assertEquals(
    refused("just a command\n"),
    "Procfile (commit abc1234):1:1: expected `name: command` | write each process as `web: gunicorn app:app`",
  );
  assertEquals(
    refused("web: a\nweb: b\n"),
    "Procfile (commit abc1234):2:1: the process web is listed twice | list each process once",
  );
  assertMatch(
    refused("worker: celery -A app worker | tee log\n"),
    /^Procfile \(commit abc1234\):1:9: the command of worker contains the shell operator "\|"/,
  );
  assertMatch(refused("worker:\n"), /:1:8: the command of worker is empty/);
  // Every bad line at once, each with its place and its fix (not only the first).
  const lines = refused("web: a\nWorker_1: b\n# ok\nweb: c\nclock: x | y\n").split("\n");
  assertEquals(lines.length, 4);
  assertEquals(lines[0], "Cannot read Procfile (commit abc1234) (3 problems):");
  assertMatch(
    lines[1],
    /^ {2}Procfile \(commit abc1234\):2:1: "Worker_1" is not a process name: use lowercase letters/,
  );
  assertEquals(lines[2], "  Procfile (commit abc1234):4:1: the process web is listed twice: list each process once");
  assertMatch(
    lines[3],
    /^ {2}Procfile \(commit abc1234\):5:8: the command of clock contains the shell operator "\|" at character 3, but commands are not run by a shell: quote it, write the command as a list, or move it into a script$/,
  );
  throws(() => processTypes(deploy({ type: "docker" }), "web: a\nworker: b\n"), /docker apps run one web container/);
});

function worker(overrides: Partial<AppProcess> = {}): AppProcess {
  return {
    app: "shop",
    root: "/srv",
    argv: ["/srv/opt/deployments/shop/current/venv/bin/celery", "-A", "app", "worker"],
    cwd: "/srv/opt/deployments/shop/current",
    env: { PATH: "/usr/bin", PROCESS_TYPE: "worker" },
    secrets: { TOKEN: "s3cret" },
    envFile: "/srv/opt/deployments/shop/current/.env",
    accessLog: "/srv/var/log/deployments/shop/access.log",
    errorLog: "/srv/var/log/deployments/shop/error.log",
    stateDir: "/srv/opt/deployments/shop",
    worker: { type: "worker", instance: 2, stopTimeoutMs: 90_000 },
    ...overrides,
  };
}

Deno.test("workers under pm2: <app>-<type>-<n>, its stopTimeout as kill_timeout, delete + start as one command", () => {
  const plan = pm2.restart(worker());
  const file = "/srv/opt/deployments/shop/pm2-shop-worker-2.json";
  assertEquals(plan.files.map((f) => [f.path, f.mode]), [[file, 0o600]]);
  const app = JSON.parse(plan.files[0].content).apps[0];
  assertEquals([app.name, app.kill_timeout, app.cwd, app.env.TOKEN, app.env.PROCESS_TYPE], [
    "shop-worker-2",
    90_000,
    worker().cwd,
    "s3cret",
    "worker",
  ]);
  assertEquals(plan.commands.map((c) => c.argv), [
    ["sh", "-c", PM2_REPLACE, "pm2", "shop-worker-2", file],
    ["sh", "-c", PM2_UMASK, "pm2", "save"],
  ]);
  assertEquals(plan.commands[0].timeoutMs, 2 * 60_000 + 60 * 60_000 + 60_000); // any old stopTimeout, up to 1h
  assertEquals(plan.lock, undefined, "a worker's long stop never holds the server-wide pm2 lock");
  const stop = pm2.stop("shop", "/srv", "/srv/opt/deployments/shop", undefined, { type: "worker", instance: 2 });
  assertEquals(stop.commands.map((c) => c.argv), [["sh", "-c", PM2_UMASK, "pm2", "delete", "shop-worker-2"], [
    "sh",
    "-c",
    PM2_UMASK,
    "pm2",
    "save",
  ]]);
  assertMatch(PM2_UMASK, /export PM2_KILL_SIGNAL=SIGTERM/);
});

Deno.test("workers under systemd: template <app>-<type>@.service with SIGTERM and TimeoutStopSec; instance <n> restarted", () => {
  const plan = systemd.restart(worker());
  assertEquals(plan.files.map((f) => f.path), ["/srv/etc/systemd/system/shop-worker@.service"]);
  const unit = workerTemplate(worker());
  for (
    const line of [
      "Description=deploy-paradigm app shop, worker %i",
      "WorkingDirectory=/srv/opt/deployments/shop/current",
      "EnvironmentFile=-/srv/opt/deployments/shop/current/.env",
      'Environment="PATH=/usr/bin" "PROCESS_TYPE=worker" "INSTANCE=%i"',
      'ExecStart="/srv/opt/deployments/shop/current/venv/bin/celery" "-A" "app" "worker"',
      "KillSignal=SIGTERM",
      "TimeoutStopSec=90s",
    ]
  ) assertMatch(unit, new RegExp(`^${line.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`, "m"));
  assertEquals(plan.commands.map((c) => c.argv), [
    ["systemctl", "daemon-reload"],
    ["systemctl", "enable", "--quiet", "shop-worker@2.service"],
    ["systemctl", "restart", "shop-worker@2.service"],
    ["systemctl", "is-active", "shop-worker@2.service"],
  ]);
  assertEquals(plan.commands[2].timeoutMs, 120_000 + 60 * 60_000); // the old instance's stopTimeout, up to 1h
  const stop = systemd.stop("shop", "/srv", "/srv/opt/deployments/shop", undefined, { type: "worker", instance: 2 });
  assertEquals(stop.commands.map((c) => c.argv), [[
    "systemctl",
    "disable",
    "--now",
    "--quiet",
    "shop-worker@2.service",
  ]]);
});

Deno.test("init: a Procfile's web process stands for the command, and its processes are named; a bad one is refused", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dp-procfile-" });
  try {
    await Deno.writeTextFile(join(dir, "requirements.txt"), "flask\n");
    await Deno.writeTextFile(join(dir, "Procfile"), "web: gunicorn app:app\nworker: python worker.py\n");
    await init({ dir, name: "pf" });
    const text = await Deno.readTextFile(join(dir, "deploy.yml"));
    assertMatch(text, /^# command: \(the Procfile's web process: gunicorn app:app\)$/m);
    assertMatch(text, /^# Processes: the Procfile's \(web, worker\), as long as deploy.yml has no processes:\.$/m);
    await Deno.writeTextFile(join(dir, "Procfile"), "web: gunicorn app:app > log\n");
    await Deno.remove(join(dir, "deploy.yml"));
    const error = await init({ dir, name: "pf" }).catch((e) => e);
    assert(error instanceof UsageError);
    assertMatch(
      error.message,
      new RegExp(`^${join(dir, "Procfile")}:1:6: the command of web contains the shell operator ">"`),
    );
    assertEquals(await Deno.stat(join(dir, "deploy.yml")).catch(() => "absent"), "absent", "nothing written");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("nameClash: worker, slot and timer names never take another app's process or unit names, either way round", async () => {
  const root = await Deno.makeTempDir({ prefix: "dp-clash-" });
  try {
    const app = (name: string) => Deno.mkdir(join(deploymentsRoot(root), name), { recursive: true });
    await app("shop");
    await app("shop-admin"); // its slot template is shop-admin@.service: shop's worker "admin" would take it
    await app("blog-blue-2"); // pm2's blog-blue-2 is blog's second web instance in the blue slot
    assertEquals(
      await nameClash(root, "shop", ["admin"]),
      `the app "shop-admin" has names that shop's processes (shop-admin…) would take`,
    );
    assertEquals(await nameClash(root, "shop", ["worker"]), undefined);
    // blog's blue slot is blog-blue (one instance) or blog-blue-<n>: taken whatever its deploy.yml says.
    assertEquals(
      await nameClash(root, "blog", []),
      `the app "blog-blue-2" has names that blog's processes (blog-blue…) would take`,
    );
    // The other way round: an app named after shop's green slot, or its cron timers (a deploy of it replaced shop's process).
    for (const name of ["shop-green", "shop-blue", "shop-cron-backup"]) {
      const kind = name.split("-").slice(0, 2).join("-");
      assertEquals(
        await nameClash(root, name, []),
        `the app "shop" runs processes named ${kind}…, which ${name}'s own names would take`,
      );
    }
    // The other way round: setting up (or deploying) "shop-worker-1" once shop runs workers of type worker.
    await Deno.writeTextFile(
      join(deploymentsRoot(root), "shop", "workers.json"),
      '[{"type":"worker","instances":2}]\n',
    );
    assertEquals(
      await nameClash(root, "shop-worker-1", []),
      `the app "shop" runs processes named shop-worker…, which shop-worker-1's own names would take`,
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("systemd states: blocks of systemctl show as it printed them on systemd 252 (no blank line reached us)", async () => {
  const output = "MainPID=65\nNRestarts=0\nId=pp-worker@1.service\nLoadState=loaded\nActiveState=active\n" +
    "MainPID=0\nNRestarts=3\nId=pp-worker@2.service\nLoadState=loaded\nActiveState=failed\n" +
    "MainPID=0\nNRestarts=0\nId=pp-gone@1.service\nLoadState=not-found\nActiveState=inactive\n";
  const ran: string[][] = [];
  const runner = {
    run: (cmd: { argv: string[] }) => (ran.push(cmd.argv), Promise.resolve({ code: 0, output })),
    apply: () => Promise.resolve(),
  } as unknown as Runner;
  const states = await systemd.states!(runner, "/", ["pp-worker@1", "pp-worker@2", "pp-gone@1"]);
  assertEquals([...states], [
    ["pp-worker@1", { pid: 65, state: "active", restarts: 0 }],
    ["pp-worker@2", { pid: 0, state: "failed", restarts: 3 }],
  ]);
  assertEquals(ran, [[
    "systemctl",
    "show",
    "--property=Id,MainPID,ActiveState,NRestarts,LoadState",
    "pp-worker@1.service",
    "pp-worker@2.service",
    "pp-gone@1.service",
  ]]);
});

Deno.test("workers: what a sync stops or finds down is named as its manager names it (pm2 shop-mailer-1, systemd shop-mailer@1)", async () => {
  const root = await Deno.makeTempDir({ prefix: "dp-workers-names-" });
  try {
    const paths = appPaths("shop", root);
    await Deno.mkdir(paths.dir, { recursive: true });
    await Deno.writeTextFile(paths.config, "port: 8000\nmanager: pm2\nuser: root\n");
    const config = await loadServerConfig(paths);
    const meta = (workers: WorkerSpec[]): ReleaseMeta => ({
      id: "r1",
      commit: "a",
      type: "python",
      createdAt: "",
      workers,
    });
    const sync = async (manager: ProcessManager, workers: WorkerSpec[], runner = new FakeRunner()) => {
      await Deno.writeTextFile(join(paths.dir, "workers.json"), JSON.stringify([{ type: "mailer", instances: 1 }]));
      return await syncWorkers(
        { paths, config, runner, manager, root, journal: undefined as never },
        meta(workers),
        {},
      );
    };
    // A release without the mailer (as `rollback` to one before it): the instance it stops.
    assertEquals(await sync(pm2, []), "no workers; stopped shop-mailer-1");
    assertEquals(await sync(systemd, []), "no workers; stopped shop-mailer@1");
    // A worker that does not run once started: pm2 lists no such process.
    const worker: WorkerSpec = { type: "worker", argv: ["/bin/true"], instances: 1, stopTimeoutMs: 1000 };
    const none = new FakeRunner().on((argv) => argv.at(-1) === "jlist", { output: "[]" });
    const error = await sync(pm2, [worker], none).then(() => undefined, (e: Error) => e.message);
    assertMatch(error ?? "", /^not running 1\.5s after its start: shop-worker-1 missing /);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("instance ports: chosen and recorded in config.yml, whose other lines stay as the operator wrote them", async () => {
  const root = await Deno.makeTempDir({ prefix: "dp-instance-ports-" });
  try {
    const paths = appPaths("shop", root);
    await Deno.mkdir(paths.dir, { recursive: true });
    const notify = `notify: [{ type: webhook, url: "https://hooks.example.com/${"x".repeat(60)}", events: [failed] }]`;
    const before = `port: 8000 # public\nmanager: pm2\n${notify}\nslots: { blue: 21001, green: 21002 }\n`;
    await Deno.writeTextFile(paths.config, before);
    const ports = await instancePorts(paths, root, { blue: 21001, green: 21002 }, "blue", 3, () => true);
    assertEquals(ports.length, 3);
    assertEquals(ports[0], 21001);
    // The yaml library writes flow lists with inner spaces (`[ failed ]`), but no line is refolded or spread.
    const after = (await Deno.readTextFile(paths.config)).split("\n");
    assertEquals(after.slice(0, 2), ["port: 8000 # public", "manager: pm2"]);
    assertEquals(after[2].replaceAll("[ ", "[").replaceAll(" ]", "]"), notify);
    assertEquals(after[3], "slots: { blue: 21001, green: 21002 }");
    assertEquals(parse(after.slice(4).join("\n")), { instancePorts: { blue: ports.slice(1) } });
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
