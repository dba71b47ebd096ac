/** Build plans and start commands per app type, and the pm2/systemd plans (as data, nothing runs). */
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { throws } from "node:assert/strict";
import { join } from "node:path";
import { buildPlan, type RepoFacts, startArgv } from "../../src/deploy/app_type.ts";
import { type DeployFile, deployFileSchema } from "../../src/config/schema.ts";
import { UsageError } from "../../src/errors.ts";
import { pm2, PM2_BOOT_UNIT, PM2_REPLACE, PM2_UMASK, pm2BootPlan, pm2Home } from "../../src/managers/pm2.ts";
import { systemd, unitFile, unitQuote } from "../../src/managers/systemd.ts";
import { type AppProcess, managerNamed, type Running } from "../../src/managers/mod.ts";
import { baseEnv, findInPath, type Runner } from "../../src/runner.ts";
import { type ContainerSpec, runContainer, withDocker } from "../../src/managers/docker.ts";
import { execDropIn, sandbox, templateUnit, workerTemplate } from "../../src/managers/systemd.ts";
import { asApp, INHERITED, inherited, toolEnv } from "../../src/deploy/runtime.ts";
import {
  type AppUser,
  buildUserName,
  defaultUserName,
  handOver,
  regroupCmd,
  sealCmds,
  sweepCmd,
  unsealedCmd,
  useraddCmd,
} from "../../src/users.ts";
import { sudoersDropIn } from "../../src/setup_users.ts";
import { serverConfigSchema } from "../../src/config/schema.ts";
import { timerPlans } from "../../src/cron/systemd.ts";
import { parseConfig } from "../../src/config/load.ts";

/** pm2 as the plans run it: under umask 077, so dump.pm2 and the rest are 0600 from creation. */
const PM2 = ["sh", "-c", PM2_UMASK, "pm2"];
/** `pm2 delete web` then `pm2 start <file>` as one command that goes on if the deploy dies during it. */
const REPLACE = ["sh", "-c", PM2_REPLACE, "pm2", "web", "/srv/opt/deployments/web/pm2-web.json"];

const RELEASE = "/srv/opt/deployments/web/releases/20260101-000000-000";

/** A validated deploy.yml (defaults applied) with `fields`. */
function deploy(fields: Record<string, unknown>): DeployFile {
  return deployFileSchema.parse({ name: "web", healthCheck: "/health", ...fields });
}

function facts(files: string[], packageJson?: RepoFacts["packageJson"]): RepoFacts {
  return { files: new Set(files), packageJson };
}

const NPM_FLAGS = ["--omit=dev", "--no-audit", "--no-fund"];

Deno.test("buildPlan python: requirements.txt → venv + pip install -r", () => {
  assertEquals(buildPlan(deploy({ type: "python" }), facts(["requirements.txt", "app.py"]), RELEASE), [
    { argv: ["python3", "-m", "venv", "venv"], cwd: RELEASE },
    {
      argv: ["venv/bin/python", "-m", "pip", "install", "--disable-pip-version-check", "-r", "requirements.txt"],
      cwd: RELEASE,
    },
  ]);
});

Deno.test("buildPlan python: pyproject.toml → pip install .; requirements.txt wins when both exist", () => {
  const pyproject = buildPlan(deploy({ type: "python" }), facts(["pyproject.toml"]), RELEASE);
  assertEquals(pyproject.map((c) => c.argv), [
    ["python3", "-m", "venv", "venv"],
    ["venv/bin/python", "-m", "pip", "install", "--disable-pip-version-check", "."],
  ]);
  const both = buildPlan(deploy({ type: "python" }), facts(["pyproject.toml", "requirements.txt"]), RELEASE);
  assertEquals(both[1].argv.slice(-2), ["-r", "requirements.txt"]);
});

Deno.test("buildPlan python: no dependency file → only a venv without pip", () => {
  assertEquals(buildPlan(deploy({ type: "python" }), facts(["app.py"]), RELEASE), [
    { argv: ["python3", "-m", "venv", "--without-pip", "venv"], cwd: RELEASE },
  ]);
});

Deno.test("buildPlan node: a lockfile → npm ci, none → npm install, no package.json → nothing", () => {
  const node = deploy({ type: "node" });
  assertEquals(buildPlan(node, facts(["package.json", "package-lock.json"]), RELEASE), [
    { argv: ["npm", "ci", ...NPM_FLAGS], cwd: RELEASE },
  ]);
  assertEquals(buildPlan(node, facts(["package.json", "npm-shrinkwrap.json"]), RELEASE), [
    { argv: ["npm", "ci", ...NPM_FLAGS], cwd: RELEASE },
  ]);
  assertEquals(buildPlan(node, facts(["package.json"]), RELEASE), [
    { argv: ["npm", "install", ...NPM_FLAGS], cwd: RELEASE },
  ]);
  assertEquals(buildPlan(node, facts(["server.js"]), RELEASE), []);
});

Deno.test("buildPlan static: nothing to build", () => {
  assertEquals(buildPlan(deploy({ type: "static" }), facts(["index.html", "package.json"]), RELEASE), []);
});

Deno.test("buildPlan docker: docker build tagged <app>:<release>, labelled, with dockerfile and build args", () => {
  const release = { id: "20260101-000000-000", commit: "a".repeat(40) };
  assertEquals(buildPlan(deploy({ type: "docker" }), facts(["Dockerfile"]), RELEASE, release), [{
    argv: [
      "docker",
      "build",
      "--tag",
      "web:20260101-000000-000",
      "--label",
      "deploy-paradigm.app=web",
      "--label",
      "deploy-paradigm.release=20260101-000000-000",
      "--label",
      `deploy-paradigm.commit=${"a".repeat(40)}`,
      "--file",
      `${RELEASE}/Dockerfile`,
      RELEASE,
    ],
    cwd: RELEASE,
    quiet: false,
    timeoutMs: undefined,
    engine: true,
  }]);
  const custom = deploy({ type: "docker", dockerfile: "ops/web.Dockerfile", buildArgs: { VERSION: 2, MODE: "$(rm)" } });
  const [cmd] = buildPlan(custom, facts(["ops"]), RELEASE, release);
  assertEquals(cmd.argv.slice(10), [
    "--file",
    `${RELEASE}/ops/web.Dockerfile`,
    "--build-arg",
    "VERSION=2",
    "--build-arg",
    "MODE=$(rm)",
    RELEASE,
  ]);
  // A build override runs first; the image is still built.
  const both = buildPlan(deploy({ type: "docker", build: "make assets" }), facts(["Dockerfile"]), RELEASE, release);
  assertEquals(both.map((c) => c.argv[0]), ["make", "docker"]);
  // Only the image build the deploy creates is the engine's; deploy.yml's `build:` never is.
  assertEquals(both.map((c) => c.engine === true), [false, true]);
  const named = buildPlan(deploy({ type: "docker", build: "docker build ." }), facts(["Dockerfile"]), RELEASE, release);
  assertEquals(named.map((c) => c.engine === true), [false, true]);
});

Deno.test("buildPlan docker: no Dockerfile in the commit is a usage error", () => {
  throws(
    () => buildPlan(deploy({ type: "docker" }), facts(["app.py"]), RELEASE),
    (error: unknown) => {
      assert(error instanceof UsageError);
      assertEquals(error.exitCode, 2);
      assertEquals(error.message, "the docker app has no Dockerfile in the commit");
      assertMatch(error.suggestion ?? "", /dockerfile: path\/to\/Dockerfile/);
      return true;
    },
  );
});

Deno.test("buildPlan: a build override replaces the type's build step", () => {
  assertEquals(buildPlan(deploy({ type: "node", build: "npm run build" }), facts(["package.json"]), RELEASE), [
    { argv: ["npm", "run", "build"], cwd: RELEASE },
  ]);
  assertEquals(
    buildPlan(deploy({ type: "python", build: ["make", "all"] }), facts(["requirements.txt"]), RELEASE),
    [{ argv: ["make", "all"], cwd: RELEASE }],
  );
  assertEquals(buildPlan(deploy({ type: "static", build: "./build.sh --prod" }), facts([]), RELEASE), [
    { argv: ["./build.sh", "--prod"], cwd: RELEASE },
  ]);
});

Deno.test("startArgv: an explicit command wins, string or list", () => {
  const files = facts(["app.py", "package.json"], { scripts: { start: "node s.js" } });
  assertEquals(startArgv(deploy({ type: "python", command: "gunicorn -b '0.0.0.0:8000' app:app" }), files), [
    "gunicorn",
    "-b",
    "0.0.0.0:8000",
    "app:app",
  ]);
  assertEquals(startArgv(deploy({ type: "node", command: ["node", "dist/main.js"] }), files), [
    "node",
    "dist/main.js",
  ]);
  assertEquals(startArgv(deploy({ type: "static", command: "./serve" }), facts([])), ["./serve"]);
});

Deno.test("startArgv python: app.py, then main.py, then server.py", () => {
  const python = deploy({ type: "python" });
  assertEquals(startArgv(python, facts(["server.py", "main.py", "app.py"])), ["python", "app.py"]);
  assertEquals(startArgv(python, facts(["server.py", "main.py"])), ["python", "main.py"]);
  assertEquals(startArgv(python, facts(["server.py"])), ["python", "server.py"]);
  throws(
    () => startArgv(python, facts(["requirements.txt", "wsgi.py"])),
    (error: unknown) =>
      error instanceof UsageError &&
      error.message === 'deploy.yml has no "command" and there is no app.py, main.py or server.py to run' &&
      /command: "python app.py"/.test(error.suggestion ?? ""),
  );
});

Deno.test("startArgv node: a plain start script runs directly, one that needs a shell via npm start", () => {
  const node = deploy({ type: "node" });
  assertEquals(
    startArgv(node, facts(["package.json", "index.js"], { scripts: { start: "node x.js" }, main: "lib/a.js" })),
    ["node", "x.js"],
  );
  assertEquals(
    startArgv(node, facts(["package.json"], { scripts: { start: "node x.js && echo" } })),
    ["npm", "start"],
  );
  assertEquals(startArgv(node, facts(["package.json"], { scripts: { start: "NODE_ENV=production node x.js" } })), [
    "npm",
    "start",
  ]);
  assertEquals(startArgv(node, facts(["package.json", "index.js"], { main: "lib/a.js" })), ["node", "lib/a.js"]);
  assertEquals(startArgv(node, facts(["package.json", "app.js", "index.js"], { scripts: { test: "x" } })), [
    "node",
    "index.js",
  ]);
  assertEquals(startArgv(node, facts(["app.js", "server.js"])), ["node", "server.js"]);
  throws(
    () => startArgv(node, facts(["package.json"], {})),
    (error: unknown) =>
      error instanceof UsageError && /no "start" script and there is no server\.js, index\.js or app\.js/.test(
        error.message,
      ),
  );
});

Deno.test("startArgv static: nothing to run", () => {
  assertEquals(startArgv(deploy({ type: "static" }), facts(["index.html", "app.py"])), undefined);
});

function appProcess(overrides: Partial<AppProcess> = {}): AppProcess {
  return {
    app: "web",
    root: "/tmp/dp-prefix",
    argv: ["/srv/current/venv/bin/python", "app.py"],
    cwd: "/srv/opt/deployments/web/current",
    env: { PORT: "8080", PATH: "/usr/bin:/bin" },
    secrets: { DATABASE_URL: "postgres://u:p@db/x", PORT: "9999" },
    envFile: "/srv/opt/deployments/web/current/.env",
    accessLog: "/srv/var/log/deployments/web/access.log",
    errorLog: "/srv/var/log/deployments/web/error.log",
    stateDir: "/srv/opt/deployments/web",
    ...overrides,
  };
}

Deno.test("pm2 restart: writes pm2-web.json (0600) with env, secrets, cwd and logs, then delete + start as one command", () => {
  const plan = pm2.restart(appProcess());
  assertEquals(plan.files.length, 1);
  const [file] = plan.files;
  assertEquals(file.path, "/srv/opt/deployments/web/pm2-web.json");
  assertEquals(file.mode, 0o600);
  assert(file.content.endsWith("\n"));
  const { apps } = JSON.parse(file.content);
  assertEquals(apps.length, 1);
  const [app] = apps;
  assertEquals(app.name, "web");
  assertEquals(app.script, "/srv/current/venv/bin/python");
  assertEquals(app.args, ["app.py"]);
  assertEquals(app.cwd, "/srv/opt/deployments/web/current");
  assertEquals(app.interpreter, "none");
  // Secrets are included; the tool's own env (PORT) wins over a secret of the same name.
  assertEquals(app.env, { DATABASE_URL: "postgres://u:p@db/x", PORT: "8080", PATH: "/usr/bin:/bin" });
  assertEquals(app.out_file, "/srv/var/log/deployments/web/access.log");
  assertEquals(app.error_file, "/srv/var/log/deployments/web/error.log");
  assertEquals(app.autorestart, true);
  assertEquals(app.filter_env, [""], "nothing of the pm2 client's own environment may reach the app");
  assertEquals(plan.commands, [
    { argv: REPLACE, quiet: true, timeoutMs: 120_000 },
    { argv: [...PM2, "save"], quiet: true, timeoutMs: 60_000 },
  ]);
  // The shell runs a fixed script: the name and the file are its arguments, never its text.
  assert(!PM2_REPLACE.includes("web"));
  assertMatch(PM2_REPLACE, /^umask 077 && export PM2_KILL_SIGNAL=SIGTERM && trap "" PIPE && /);
  // pm2 calls of all apps are serialized by one server-wide lock.
  assertEquals(plan.lock, "/tmp/dp-prefix/opt/deployments/.pm2.lock");
});

Deno.test("pm2 stop: pm2 delete (allowed to fail) and save, under the pm2 lock; its pm2-web.json removed", () => {
  assertEquals(pm2.stop("web", "/tmp/dp-prefix", "/srv/opt/deployments/web"), {
    files: [],
    commands: [
      { argv: [...PM2, "delete", "web"], quiet: true, timeoutMs: 60_000, allowFailure: true },
      { argv: [...PM2, "save"], quiet: true, timeoutMs: 60_000 },
    ],
    lock: "/tmp/dp-prefix/opt/deployments/.pm2.lock",
    remove: ["/srv/opt/deployments/web/pm2-web.json"],
  });
});

Deno.test("pm2 restart of an app with a user: uid and gid, under setpriv --no-new-privs (no set-user-ID program makes it another user), without the channel to the daemon (fd 3)", () => {
  const [file] = pm2.restart(appProcess({ user: USER })).files;
  const { apps: [app] } = JSON.parse(file.content);
  const setpriv = findInPath("setpriv", baseEnv().PATH) ?? "setpriv";
  assertEquals([app.script, ...app.args], [
    setpriv,
    "--no-new-privs",
    "--",
    "/bin/sh",
    "-c",
    'unset NODE_CHANNEL_FD NODE_CHANNEL_SERIALIZATION_MODE; exec "$@" 3>&-',
    "sh",
    "/srv/current/venv/bin/python",
    "app.py",
  ]);
  assertEquals([app.uid, app.gid], ["app-web", "app-web"]);
});

Deno.test("pm2 restart in place: one `pm2 start` (the daemon's restart), unless pm2 would keep some of the old definition", () => {
  const start = [...PM2, "start", "/srv/opt/deployments/web/pm2-web.json"];
  const argvs = (running?: Running | null, p = appProcess()) => pm2.restart(p, running).commands.map((c) => c.argv);
  const kept = { program: "/srv/current/venv/bin/python", variables: ["DATABASE_URL", "PORT"], user: false };
  const inPlace = [start, [...PM2, "save"]];
  assertEquals(argvs({ pid: 42, kept }), inPlace, "the same program and variables: one daemon call");
  assertEquals(argvs({ pid: 0, kept: { ...kept, variables: [] } }), inPlace, "variables added: one call");
  assertEquals(argvs(null), inPlace, "no process yet: start");
  // An app with a user runs under setpriv: pm2's program is setpriv (one a version before started is replaced).
  const setpriv = findInPath("setpriv", baseEnv().PATH) ?? "setpriv";
  const under = { ...kept, program: setpriv, user: true };
  assertEquals(argvs({ pid: 42, kept: under }, appProcess({ user: USER })), inPlace);
  assertEquals(argvs({ pid: 42, kept: { ...kept, user: true } }, appProcess({ user: USER })), [REPLACE, [
    ...PM2,
    "save",
  ]]);
  // What pm2's restart would keep of the old definition: delete first, then start, in one command.
  const replace = [REPLACE, [...PM2, "save"]];
  assertEquals(argvs({ pid: 42, kept: { ...kept, program: "/usr/bin/node" } }), replace, "another program");
  assertEquals(
    argvs({ pid: 42, kept: { ...kept, variables: ["DATABASE_URL", "OLD_TOKEN"] } }),
    replace,
    "a variable gone",
  );
  assertEquals(argvs({ pid: 42, kept: { ...kept, user: true } }), replace, "a user dropped");
  assertEquals(argvs({ pid: 42 }), replace, "what pm2 keeps is unknown");
  assertEquals(argvs(undefined), replace, "unknown: delete first");
  // A slot serves nothing before its switch: always delete + start, as two commands.
  const slot = pm2.restart(appProcess({ slot: "blue", cwd: "/srv/opt/deployments/web/slots/blue" }), null);
  assertEquals(slot.commands.map((c) => c.argv), [
    [...PM2, "delete", "web-blue"],
    [...PM2, "start", "/srv/opt/deployments/web/pm2-web-blue.json"],
    [...PM2, "save"],
  ]);
});

/** A runner that answers every command with `output` (and records the argv). */
function answering(output: string, code = 0): Runner & { ran: string[][] } {
  const ran: string[][] = [];
  return {
    ran,
    run: (cmd) => (ran.push(cmd.argv), Promise.resolve({ code, output, tail: [] })),
    apply: () => Promise.resolve(),
  };
}

Deno.test("pm2 running: the app's pid and program from `pm2 jlist` (under the pm2 lock); null when absent", async () => {
  const root = await Deno.makeTempDir();
  try {
    // A fresh start's env also has pm2's own variables (and nothing of the pm2 client's: filter_env).
    const env = { SECRET: "s", PORT: "1", PM2_HOME: "/h", unique_id: "u", web: "x" };
    const list = JSON.stringify([
      { name: "web-blue", pid: 7, pm2_env: { pm_exec_path: "/x" } },
      { name: "web", pid: 42, pm2_env: { pm_exec_path: "/usr/bin/node", env, uid: 1001 } },
    ]);
    const runner = answering(`[PM2] Spawning PM2 daemon with pm2_home=/root/.pm2\n${list}`);
    assertEquals(await pm2.running!(runner, "web", root), {
      pid: 42,
      kept: { program: "/usr/bin/node", variables: ["SECRET", "PORT"], user: true },
    });
    assertEquals(runner.ran, [[...PM2, "jlist"]]);
    assertEquals(await pm2.running!(runner, "api", root), null);
    assertEquals(await pm2.running!(answering("", 1), "web", root), undefined, "pm2 failed: unknown");
    assertEquals(await pm2.running!(answering("not json"), "web", root), undefined);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("systemd running: the unit's MainPID (0 when it is not running)", async () => {
  const runner = answering("1234\n");
  assertEquals(await systemd.running!(runner, "web", "/"), { pid: 1234 });
  assertEquals(runner.ran, [["systemctl", "show", "--property=MainPID", "--value", "web.service"]]);
  assertEquals(await systemd.running!(answering("0\n"), "web", "/"), { pid: 0 });
  assertEquals(await systemd.running!(answering("", 1), "web", "/"), undefined);
});

Deno.test("systemd restart: writes the unit under the prefix, then daemon-reload, restart, is-active", () => {
  const plan = systemd.restart(appProcess());
  assertEquals(plan.files.length, 1);
  assertEquals(plan.files[0].path, "/tmp/dp-prefix/etc/systemd/system/web.service");
  assertEquals(plan.files[0].content, unitFile(appProcess()));
  assertEquals(plan.commands, [
    { argv: ["systemctl", "daemon-reload"], timeoutMs: 120_000 },
    { argv: ["systemctl", "enable", "--quiet", "web.service"], timeoutMs: 120_000 },
    { argv: ["systemctl", "restart", "web.service"], timeoutMs: 120_000 },
    { argv: ["systemctl", "is-active", "web.service"], timeoutMs: 120_000, quiet: true },
  ]);
});

Deno.test("systemd unit file: directory, env file, environment, restart policy and logs", () => {
  const unit = unitFile(appProcess());
  const lines = unit.split("\n");
  for (
    const line of [
      "[Unit]",
      "Description=deploy-paradigm app web",
      "[Service]",
      "Type=simple",
      "WorkingDirectory=/srv/opt/deployments/web/current",
      "EnvironmentFile=-/srv/opt/deployments/web/current/.env",
      'Environment="PORT=8080" "PATH=/usr/bin:/bin"',
      'ExecStart="/srv/current/venv/bin/python" "app.py"',
      "Restart=on-failure",
      "StandardOutput=append:/srv/var/log/deployments/web/access.log",
      "StandardError=append:/srv/var/log/deployments/web/error.log",
      "[Install]",
      "WantedBy=multi-user.target",
    ]
  ) {
    assert(lines.includes(line), `unit file lacks ${JSON.stringify(line)}:\n${unit}`);
  }
  assert(lines.indexOf("[Unit]") < lines.indexOf("[Service]"));
  assert(lines.indexOf("[Service]") < lines.indexOf("[Install]"));
  // Secrets come from EnvironmentFile, never from the unit file itself.
  assert(!unit.includes("postgres://"), "a secret leaked into the unit file");
  assert(!unit.includes("DATABASE_URL"));
});

Deno.test("systemd unit file: ExecStart quotes spaces, %, $ and quotes", () => {
  const unit = unitFile(appProcess({ argv: ["/opt/my app/run", "50%", "$HOME", 'say "hi"', "back\\slash"] }));
  const exec = unit.split("\n").find((l) => l.startsWith("ExecStart="));
  assertEquals(exec, 'ExecStart="/opt/my app/run" "50%%" "$$HOME" "say \\"hi\\"" "back\\\\slash"');
  assertEquals(unitQuote("plain"), '"plain"');
  assertEquals(unitQuote("a b"), '"a b"');
  assertEquals(unitQuote("%n"), '"%%n"');
  assertEquals(unitQuote("${X}"), '"$${X}"');
  assertEquals(unitQuote('"'), '"\\""');
  assertEquals(unitQuote("\\"), '"\\\\"');
});

Deno.test("systemd stop: disable --now (allowed to fail), and the unit file is removed", () => {
  assertEquals(systemd.stop("web", "/tmp/dp-prefix", "/srv/opt/deployments/web"), {
    files: [],
    commands: [{
      argv: ["systemctl", "disable", "--now", "--quiet", "web.service"],
      timeoutMs: 120_000,
      allowFailure: true,
    }],
    remove: ["/tmp/dp-prefix/etc/systemd/system/web.service"],
  });
});

Deno.test("managerNamed: picks the strategy by name", () => {
  assertEquals(managerNamed("pm2"), pm2);
  assertEquals(managerNamed("systemd"), systemd);
  assertEquals(managerNamed("pm2").name, "pm2");
  assertEquals(managerNamed("systemd").name, "systemd");
});

Deno.test("pm2 slots: process <app>-<slot>, its own definition file, cwd the slot's link", () => {
  const plan = pm2.restart(appProcess({ slot: "green", cwd: "/srv/opt/deployments/web/slots/green" }));
  const { apps: [app] } = JSON.parse(plan.files[0].content);
  assertEquals([app.name, app.cwd], ["web-green", "/srv/opt/deployments/web/slots/green"]);
  assertEquals(plan.files[0].path, "/srv/opt/deployments/web/pm2-web-green.json");
  assertEquals(plan.commands[0].argv, [...PM2, "delete", "web-green"]);
  assertEquals(pm2.stop("web", "/tmp/dp-prefix", "/srv/opt/deployments/web", "blue").commands[0].argv, [
    ...PM2,
    "delete",
    "web-blue",
  ]);
});

Deno.test("systemd slots: a template unit <app>@.service with %i for the slot, and the slot's port file", () => {
  const slotDir = "/srv/opt/deployments/web/slots/blue";
  const plan = systemd.restart(appProcess({
    slot: "blue",
    cwd: slotDir,
    argv: [`${slotDir}/venv/bin/python`, "app.py"],
    envFile: `${slotDir}/.env`,
    env: { PORT: "41001", PATH: `${slotDir}/venv/bin:/usr/bin` },
  }));
  assertEquals(plan.files.map((f) => f.path), [
    "/tmp/dp-prefix/etc/systemd/system/web@.service",
    "/tmp/dp-prefix/etc/systemd/system/web@blue.service.d/exec.conf",
    "/srv/opt/deployments/web/slot-blue.env",
  ]);
  const unit = plan.files[0].content.split("\n");
  for (
    const line of [
      "WorkingDirectory=/srv/opt/deployments/web/slots/%i",
      "EnvironmentFile=-/srv/opt/deployments/web/slots/%i/.env",
      "EnvironmentFile=/srv/opt/deployments/web/slot-%i.env",
      "Restart=on-failure",
    ]
  ) assert(unit.includes(line), `template lacks ${line}:\n${unit.join("\n")}`);
  // Each slot's command lives in its instance's drop-in: the slots run different releases.
  assert(!unit.some((line) => line.startsWith("ExecStart")), "the template must not carry a command");
  assertEquals(plan.files[1].content.split("\n").slice(1, 4), [
    "[Service]",
    "ExecStart=",
    `ExecStart="${slotDir}/venv/bin/python" "app.py"`,
  ]);
  assertMatch(plan.files[2].content, /^PORT='41001'$/m);
  assertEquals(plan.commands.map((c) => c.argv.slice(1).join(" ")), [
    "daemon-reload",
    "enable --quiet web@blue.service",
    "restart web@blue.service",
    "is-active web@blue.service",
  ]);
  assertEquals(systemd.stop("web", "/tmp/dp-prefix", "/srv", "green").commands[0].argv, [
    "systemctl",
    "disable",
    "--now",
    "--quiet",
    "web@green.service",
  ]);
});

const CONTAINER: ContainerSpec = {
  image: "web:20260101-000000-000",
  containerPort: 8000,
  publish: "127.0.0.1:20001",
  envFile: `${RELEASE}/.env`,
  env: { PORT: "8000", DEPLOY_ENV: "production" },
  labels: { app: "web", release: "20260101-000000-000", slot: "blue" },
};

Deno.test("docker restart: what ran under the name stops (process, then container), docker run, then the follower", () => {
  const follower = appProcess({ slot: "blue", argv: ["/usr/local/bin/deploy-paradigm", "docker-logs", "web-blue"] });
  const plan = withDocker(pm2).restart({ ...follower, envFile: undefined, container: CONTAINER });
  assertEquals(plan.commands.map((c) => c.argv), [
    [...PM2, "delete", "web-blue"],
    [...PM2, "save"],
    ["docker", "stop", "-t", "10", "web-blue"],
    ["docker", "rm", "--force", "web-blue"],
    [
      "docker",
      "run",
      "--detach",
      "--name",
      "web-blue",
      "--restart",
      "always",
      "--pull",
      "never",
      "--security-opt",
      "no-new-privileges",
      "--publish",
      "127.0.0.1:20001:8000",
      "--env-file",
      `${RELEASE}/.env`,
      "--env",
      "PORT=8000",
      "--env",
      "DEPLOY_ENV=production",
      "--label",
      "deploy-paradigm.app=web",
      "--label",
      "deploy-paradigm.release=20260101-000000-000",
      "--label",
      "deploy-paradigm.slot=blue",
      "web:20260101-000000-000",
    ],
    [...PM2, "delete", "web-blue"],
    [...PM2, "start", "/srv/opt/deployments/web/pm2-web-blue.json"],
    [...PM2, "save"],
  ]);
  assertEquals(plan.commands.slice(0, 4).map((c) => c.allowFailure), [true, undefined, true, true]);
  assertEquals(plan.commands[4].allowFailure, undefined, "a failed docker run fails the start");
  assertEquals(plan.remove, undefined, "the follower's definition file stays");
  const { apps: [app] } = JSON.parse(plan.files[0].content);
  assertEquals([app.script, ...app.args], ["/usr/local/bin/deploy-paradigm", "docker-logs", "web-blue"]);
  // deploy.yml's command replaces the image's CMD.
  const custom = withDocker(pm2).restart({ ...follower, container: { ...CONTAINER, command: ["serve", "--fast"] } });
  assertEquals(custom.commands[4].argv.slice(-3), ["web:20260101-000000-000", "serve", "--fast"]);
  // A process app replacing a docker release: the container goes before the process starts.
  const python = withDocker(pm2).restart(appProcess());
  const words = (argv: string[]) => (argv[0] === "sh" ? argv.slice(PM2.length - 1) : argv).slice(0, 2).join(" ");
  assertEquals(python.commands.map((c) => words(c.argv)), [
    "pm2 delete",
    "pm2 save",
    "docker stop",
    "docker rm",
    "pm2 web", // REPLACE: pm2 delete web, then pm2 start
    "pm2 save",
  ]);
});

Deno.test("docker stop: the container first (the follower catches its last lines), then the process", () => {
  const plan = withDocker(systemd).stop("web", "/tmp/dp-prefix", "/srv/opt/deployments/web", "green");
  assertEquals(plan.commands.map((c) => [c.argv, c.allowFailure]), [
    [["docker", "stop", "-t", "10", "web-green"], true],
    [["docker", "rm", "--force", "web-green"], true],
    [["systemctl", "disable", "--now", "--quiet", "web@green.service"], true],
  ]);
  assertEquals(managerNamed("pm2", true).stop("web", "/r", "/s").commands.at(-1)?.argv, [...PM2, "save"]);
});

Deno.test("systemd: a container's log follower gets no app .env (EnvironmentFile reset in its drop-in)", () => {
  const follower = appProcess({ slot: "blue", cwd: "/srv/opt/deployments/web/slots/blue", envFile: undefined });
  const plan = systemd.restart(follower);
  const dropIn = plan.files.find((f) => f.path.endsWith("exec.conf"))!.content;
  assertMatch(dropIn, /\nEnvironmentFile=\nEnvironmentFile=\/srv\/opt\/deployments\/web\/slot-blue.env\n/);
  const app = systemd.restart(appProcess({ slot: "blue", cwd: "/srv/opt/deployments/web/slots/blue" }));
  assert(!app.files.find((f) => f.path.endsWith("exec.conf"))!.content.includes("EnvironmentFile"));
  const template = plan.files[0].content;
  assertMatch(template, /\nEnvironmentFile=-\/srv\/opt\/deployments\/web\/slots\/%i\/.env\n/);
  const restartUnit = unitFile(appProcess({ envFile: undefined }));
  assert(!restartUnit.includes("EnvironmentFile"), restartUnit);
});

Deno.test("requireEngine: names the missing CLI, or the engine it could not reach (DOCKER_HOST)", async () => {
  const { requireEngine, dockerHost } = await import("../../src/managers/docker.ts");
  const { DeployParadigmError } = await import("../../src/errors.ts");
  const answering = (code: number, tail: string[]) => ({
    run: () => Promise.resolve({ code, output: tail.join("\n"), tail }),
    apply: () => Promise.resolve(),
  });
  assertEquals(await requireEngine(answering(0, ["28.2.2"])), "28.2.2");
  const missing = await requireEngine(answering(127, ["docker: command not found"])).catch((e) => e);
  assert(missing instanceof DeployParadigmError);
  assertEquals(missing.message, "the docker CLI is not installed (no docker in PATH)");
  const down = await requireEngine(
    answering(1, ["Cannot connect to the Docker daemon at unix:///x.sock. Is the docker daemon running?"]),
  ).catch((e) => e);
  assertEquals(
    down.message,
    `docker engine not reachable at ${dockerHost()}: Cannot connect to the Docker daemon at unix:///x.sock. ` +
      "Is the docker daemon running?",
  );
  assertMatch(down.suggestion, /DOCKER_HOST/);
  assertEquals(dockerHost({ DOCKER_HOST: "tcp://10.0.0.1:2375" }), "tcp://10.0.0.1:2375");
  assertMatch(dockerHost({}), /DOCKER_HOST is not set/);
});

// ---------------------------------------------------------------- apps as their own users

const USER: AppUser = { name: "app-web", uid: 990, gid: 985, group: "app-web", home: "/srv/opt/deployments/web/home" };

Deno.test("systemd unit of an app with a user: User=, Group=, and the sandbox; without one, neither", () => {
  const unit = unitFile(appProcess({ user: USER })).split("\n");
  for (
    const line of [
      "User=app-web",
      "Group=app-web",
      "ReadWritePaths=-/srv/opt/deployments/web/home",
      "NoNewPrivileges=yes",
      "ProtectSystem=strict",
      "ProtectHome=yes",
      "PrivateTmp=yes",
      "ProtectKernelTunables=yes",
      "ProtectKernelModules=yes",
      "ProtectKernelLogs=yes",
      "ProtectControlGroups=yes",
      "RestrictSUIDSGID=yes",
      "RestrictNamespaces=yes",
      "LockPersonality=yes",
      "CapabilityBoundingSet=",
      "AmbientCapabilities=",
    ]
  ) assert(unit.includes(line), `unit lacks ${line}:\n${unit.join("\n")}`);
  // The sandbox is in [Service], before [Install]; logs are still opened by systemd (append:).
  assert(unit.indexOf("User=app-web") < unit.indexOf("[Install]"));
  assert(unit.includes("StandardOutput=append:/srv/var/log/deployments/web/access.log"));
  assertEquals(sandbox(appProcess()), [], "no user (a log follower, or user: root): not confined");
  // An app on a port below 1024 (restart strategy) keeps only CAP_NET_BIND_SERVICE.
  const low = sandbox(appProcess({ user: USER, env: { PORT: "80", PATH: "/usr/bin" } }));
  assert(low.includes("CapabilityBoundingSet=CAP_NET_BIND_SERVICE"), low.join("\n"));
  assert(low.includes("AmbientCapabilities=CAP_NET_BIND_SERVICE"));
  // The template unit of a blue-green app carries them too (both slots are the same app).
  const template = templateUnit(appProcess({ user: USER, slot: "blue", cwd: "/srv/opt/deployments/web/slots/blue" }));
  assertMatch(template, /\nUser=app-web\nGroup=app-web\n/);
  assertMatch(template, /\nCapabilityBoundingSet=\n/);
});

Deno.test("systemd units bind only their own TCP port: the app's, each slot instance's; a worker none", () => {
  const lines = (text: string) => text.split("\n").filter((line) => line.startsWith("SocketBind"));
  // strategy: restart: the public port, which the app binds itself.
  assertEquals(lines(unitFile(appProcess({ user: USER }))), [
    "SocketBindAllow=udp",
    "SocketBindAllow=tcp:8080",
    "SocketBindDeny=any",
  ]);
  // Blue-green: the template allows nothing itself; each instance's drop-in allows its own slot port.
  const slot = appProcess({ user: USER, slot: "green-2", env: { PORT: "41007", PATH: "/usr/bin" } });
  assertEquals(lines(templateUnit(slot)), []);
  assertEquals(lines(execDropIn(slot)), ["SocketBindAllow=udp", "SocketBindAllow=tcp:41007", "SocketBindDeny=any"]);
  // A worker has no port: no TCP bind at all.
  const worker = appProcess({
    user: USER,
    env: { PATH: "/usr/bin", INSTANCE: "1" },
    worker: { type: "queue", instance: 1, stopTimeoutMs: 10_000 },
  });
  assertEquals(lines(workerTemplate(worker)), ["SocketBindAllow=udp", "SocketBindDeny=any"]);
  // No user (a container's log follower, user: root): not confined.
  assertEquals(lines(unitFile(appProcess())), []);
  assertEquals(lines(execDropIn({ ...slot, user: undefined })), []);
});

Deno.test("pm2 definition of an app with a user: uid and gid (the daemon starts it as that user)", () => {
  const { apps: [app] } = JSON.parse(pm2.restart(appProcess({ user: USER })).files[0].content);
  assertEquals([app.uid, app.gid], ["app-web", "app-web"]);
  const { apps: [plain] } = JSON.parse(pm2.restart(appProcess()).files[0].content);
  assertEquals([plain.uid, plain.gid], [undefined, undefined]);
});

Deno.test("docker run of an app with a user: --user uid:gid, always no-new-privileges", () => {
  const run = runContainer("web-blue", { ...CONTAINER, user: USER }).argv;
  const at = run.indexOf("--user");
  assertEquals(run.slice(at, at + 2), ["--user", "990:985"]);
  assertEquals(run.slice(run.indexOf("--security-opt"), run.indexOf("--security-opt") + 2), [
    "--security-opt",
    "no-new-privileges",
  ]);
  assert(!runContainer("web-blue", CONTAINER).argv.includes("--user"));
});

Deno.test("builds and hooks as the app's user: setpriv argv, only the given env, reaped; only the engine's build stays root's", () => {
  const build = { argv: ["npm", "ci", "--omit=dev"], cwd: RELEASE };
  const env = { PATH: "/usr/bin", HOME: "/root" };
  assertEquals(asApp(build, USER, env), {
    argv: ["setpriv", "--reuid=990", "--regid=985", "--init-groups", "--no-new-privs", "--", "npm", "ci", "--omit=dev"],
    cwd: RELEASE,
    env: { PATH: "/usr/bin", HOME: "/srv/opt/deployments/web/home", USER: "app-web", LOGNAME: "app-web" },
    clearEnv: true,
    reap: true,
    keepLines: 200,
  });
  assertEquals(asApp(build, undefined, env), { ...build, env, clearEnv: true, reap: true, keepLines: 200 });
  // The program's name decides nothing: a hook called docker (a committed venv/bin/docker) is the app's.
  const hook = { argv: ["docker", "build", "."], cwd: RELEASE };
  assertEquals(asApp(hook, USER, env).argv.slice(0, 2), ["setpriv", "--reuid=990"]);
  const engine = { ...hook, engine: true };
  assertEquals(asApp(engine, USER, env), engine);
  assertEquals(handOver(RELEASE, USER).argv, ["chown", "-R", "--no-dereference", "990:985", "--", RELEASE]);
  assertEquals(sealCmds(RELEASE, USER).map((c) => c.argv), [
    ["chmod", "-R", "go-w,ug-s", "--", RELEASE],
    ["chown", "-R", "--no-dereference", "0:985", "--", RELEASE],
    ["chmod", "-R", "g+rX,ug-s", "--", RELEASE],
  ]);
});

Deno.test("seal check (real find): names an entry not root's, writable by group or others, or setuid/setgid; links and a sealed tree pass", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dp-seal-" });
  const found = async () => {
    const { argv } = unsealedCmd(dir);
    const out = await new Deno.Command(argv[0], { args: argv.slice(1), stdout: "piped" }).output();
    return new TextDecoder().decode(out.stdout).trim();
  };
  try {
    await Deno.mkdir(join(dir, "d"), { mode: 0o755 });
    await Deno.writeTextFile(join(dir, "d", "app.py"), "print(1)\n", { mode: 0o644 });
    await Deno.symlink("/etc/passwd", join(dir, "d", "link")); // a link's own mode is 0777: not a finding
    await Deno.chmod(dir, 0o755);
    assertEquals(await found(), "");
    await Deno.mkdir(join(dir, "d", "x"));
    await Deno.chmod(join(dir, "d", "x"), 0o777);
    assertEquals(await found(), join(dir, "d", "x"));
    await Deno.chmod(join(dir, "d", "x"), 0o755);
    // A setgid program without group execute (2745), which the chown keeps and the chmod's g+X arms.
    await Deno.chmod(join(dir, "d", "app.py"), 0o2745);
    assertEquals(await found(), join(dir, "d", "app.py"));
    await Deno.chmod(join(dir, "d", "app.py"), 0o644);
    assertEquals(await found(), "");
    if (Deno.uid() === 0) {
      await Deno.chown(join(dir, "d", "x"), 990, 985); // planted by the app's user
      assertEquals(await found(), join(dir, "d", "x"));
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("app users: app-<name>, hashed to 32 characters for long names; build users build-<app>; useradd argv", () => {
  assertEquals(defaultUserName("web"), "app-web");
  const long = defaultUserName("a-very-long-application-name-that-goes-on-and-on");
  assertEquals(long.length, 32);
  assertMatch(long, /^app-a-very-long-applica-[0-9a-f]{8}$/);
  assert(long !== defaultUserName("a-very-long-application-name-that-goes-on-and-on-2"));
  assertEquals(useraddCmd("app-web", "/opt/deployments/web/home").argv, [
    "useradd",
    "--system",
    "--user-group",
    "--home-dir",
    "/opt/deployments/web/home",
    "--no-create-home",
    "--shell",
    "/usr/sbin/nologin",
    "--comment",
    "deploy-paradigm app",
    "app-web",
  ]);
  // The build user: build-<app>, in no group but its own; never an app's user name (app-…).
  assertEquals(buildUserName("web"), "build-web");
  const longBuilder = buildUserName("a-very-long-application-name-that-goes-on-and-on");
  assertMatch(longBuilder, /^build-a-very-long-appli-[0-9a-f]{8}$/);
  assertEquals(longBuilder.length, 32);
  const builder = useraddCmd("build-app-web", "/opt/deployments/web/build-home").argv;
  assertEquals(builder.slice(0, 4), ["useradd", "--system", "--user-group", "--home-dir"]);
  // Leaving the app's group: what it made the group's (a setgid program in /tmp) goes to its own group.
  const build = { ...USER, name: "build-web", uid: 991, gid: 986, group: "build-web" };
  assertEquals(regroupCmd(build, 985).argv, [
    "find",
    "/",
    "(",
    "-path",
    "/proc",
    "-o",
    "-path",
    "/sys",
    ")",
    "-prune",
    "-o",
    "-user",
    "991",
    "-group",
    "985",
    "-print",
    "-execdir",
    "chgrp",
    "--no-dereference",
    "986",
    "--",
    "{}",
    "+",
  ]);
  // The setuid/setgid files a build user has in the shared temp dirs go before each build and after each command.
  assertEquals(sweepCmd(build).argv, [
    "find",
    "/tmp",
    "/var/tmp",
    "/dev/shm",
    "/run/lock",
    "-xdev",
    "-user",
    "991",
    "-type",
    "f",
    "-perm",
    "/6000",
    "-delete",
  ]);
});

Deno.test("sudoers drop-in: %deploy may run only `<binary> receive /var/repos/*.git`, as root, no password", () => {
  assertEquals(
    sudoersDropIn("/usr/local/bin/deploy-paradigm", "deploy").split("\n").filter((l) => !l.startsWith("#")),
    ["%deploy ALL=(root) NOPASSWD: /usr/local/bin/deploy-paradigm receive /var/repos/*.git", ""],
  );
  assertMatch(sudoersDropIn("/opt/my tools/dp", "ops"), /^%ops ALL=\(root\) NOPASSWD: \/opt\/my\\ tools\/dp receive/m);
});

Deno.test("config.yml user: a user name, or a clear error at its position", () => {
  const config = serverConfigSchema.parse({ port: 8000, manager: "systemd", user: "www-data" });
  assertEquals(config.user, "www-data");
  throws(
    () => parseConfig("port: 8000\nmanager: systemd\nuser: Bad User\n", serverConfigSchema, "config.yml"),
    (error: unknown) => {
      assertMatch(
        String((error as { problems?: string[] }).problems ?? (error as Error).message),
        /config.yml:3:7: "user" must be a user name/,
      );
      return true;
    },
  );
});

Deno.test("config.yml user: naming no user of this server is a usage error at its line (as root)", async () => {
  const { appUser } = await import("../../src/users.ts");
  const { appPaths } = await import("../../src/paths.ts");
  const root = await Deno.makeTempDir({ prefix: "dp-user-" });
  try {
    const paths = appPaths("web", root);
    await Deno.mkdir(paths.dir, { recursive: true });
    await Deno.writeTextFile(paths.config, "port: 8000\nmanager: pm2\nuser: dp-no-such-user\n");
    if (Deno.uid() !== 0) return assertEquals(appUser(paths, "dp-no-such-user"), undefined, "not root: no switch");
    throws(() => appUser(paths, "dp-no-such-user"), (error: unknown) => {
      assert(error instanceof UsageError);
      assertEquals(error.message, `${paths.config}:3:1: "user" names no user of this server: "dp-no-such-user"`);
      assertMatch(error.suggestion ?? "", /useradd --system dp-no-such-user/);
      return true;
    });
    assertEquals(appUser(paths, "root"), undefined, "user: root runs the app as root, unconfined");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("toolEnv: an allow-list (never the deploying user's other variables); release tools in PATH only for an app user", () => {
  const config = serverConfigSchema.parse({ port: 8000, manager: "pm2" });
  Deno.env.set("DP_PLANS_TOKEN", "operator-token");
  try {
    const env = toolEnv(RELEASE, config, USER);
    assertEquals(env.DP_PLANS_TOKEN, undefined);
    assert(
      Object.keys(env).every((key) => [...INHERITED, "PATH", "PORT", "DEPLOY_ENV"].includes(key)),
      Object.keys(env).join(" "),
    );
    const cmd = asApp({ argv: ["npm", "ci"] }, USER, env);
    assertEquals([cmd.env!.HOME, cmd.env!.USER, cmd.env!.LOGNAME, cmd.env!.PORT], [
      USER.home,
      "app-web",
      "app-web",
      "8000",
    ]);
    assertEquals(cmd.clearEnv, true);
    assert(env.PATH.startsWith(`${RELEASE}/venv/bin:${RELEASE}/node_modules/.bin:`), env.PATH);
    const asDeployer = toolEnv(RELEASE, config, undefined);
    assertEquals(asDeployer.DP_PLANS_TOKEN, undefined);
    if (Deno.uid() === 0) assert(!asDeployer.PATH.includes(RELEASE), `root searches the release: ${asDeployer.PATH}`);
  } finally {
    Deno.env.delete("DP_PLANS_TOKEN");
  }
});

Deno.test("the allow-list passes what says where builds download from (proxies, CAs, package indexes), no secrets", () => {
  const where = {
    HTTP_PROXY: "http://proxy:3128",
    https_proxy: "http://proxy:3128",
    NO_PROXY: "localhost",
    NODE_EXTRA_CA_CERTS: "/etc/ssl/corp.pem",
    SSL_CERT_FILE: "/etc/ssl/certs/ca.pem",
    SSL_CERT_DIR: "/etc/ssl/certs",
    PIP_INDEX_URL: "https://pypi.corp/simple",
    PIP_EXTRA_INDEX_URL: "https://pypi.org/simple",
    PIP_CERT: "/etc/ssl/corp.pem",
    npm_config_registry: "https://npm.corp/",
    LANG: "C.UTF-8",
  };
  const env = inherited({
    ...where,
    GITHUB_TOKEN: "t",
    AWS_SECRET_ACCESS_KEY: "s",
    NPM_TOKEN: "n",
    SSH_AUTH_SOCK: "/a",
  });
  assertEquals(env, where);
  for (const key of ["HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"]) {
    assert(INHERITED.includes(key) && INHERITED.includes(key.toLowerCase()), key);
  }
});

Deno.test("ProcessRunner: root finds a program in its own PATH, never in the command's; another user in the command's", async () => {
  const { ProcessRunner, programOf } = await import("../../src/runner.ts");
  const dir = await Deno.makeTempDir({ prefix: "dp-path-" });
  try {
    await Deno.writeTextFile(`${dir}/id`, "#!/bin/sh\necho fake\n", { mode: 0o755 });
    const cmd = { argv: ["id", "-u"], env: { PATH: `${dir}:/usr/bin:/bin` }, quiet: true };
    assert(programOf(cmd, 0) !== `${dir}/id`, "root searched the command's PATH");
    assertEquals(
      programOf(cmd, 1000),
      `${dir}/id`,
      "a non-root deploy: the release's venv/bin first, as a shell would",
    );
    assertEquals(programOf({ argv: ["id"], env: {} }, 1000), programOf({ argv: ["id"] }, 0), "no PATH given: ours");
    assertEquals(programOf({ argv: ["./x"], env: cmd.env }, 1000), "./x");
    const result = await new ProcessRunner().run(cmd);
    assertEquals(result.output.trim(), Deno.uid() === 0 ? "0" : "fake");
    // Within the command, its PATH applies: `sh -c id` finds the fake one.
    const inside = await new ProcessRunner().run({ ...cmd, argv: ["sh", "-c", "id"] });
    assertEquals(inside.output.trim(), "fake");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("pm2 at boot: deploy-paradigm-pm2.service resurrects pm2 with our PM2_HOME, SIGTERM and umask 077; enabled, not started", () => {
  const plan = pm2BootPlan("/srv", {
    pm2: "/usr/local/bin/pm2",
    home: "/root/.pm2",
    path: "/opt/node 20%/bin:/usr/bin",
  });
  assertEquals(plan.files.map((file) => file.path), ["/srv/etc/systemd/system/deploy-paradigm-pm2.service"]);
  assertEquals(PM2_BOOT_UNIT, "deploy-paradigm-pm2.service");
  assertEquals(plan.commands.map((cmd) => cmd.argv), [
    ["systemctl", "daemon-reload"],
    ["systemctl", "enable", "--quiet", "deploy-paradigm-pm2.service"],
  ]);
  // Started only when no pm2 daemon runs (a deploy on a server set up before, whose unit is there: only started).
  const start = pm2BootPlan("/srv", { pm2: "/usr/bin/pm2", home: "/root/.pm2", path: "/usr/bin" }, {
    write: false,
    start: true,
  });
  assertEquals(start.files, []);
  assertEquals(start.commands.map((cmd) => cmd.argv), [["systemctl", "start", "deploy-paradigm-pm2.service"]]);
  assertEquals(start.lock, "/srv/opt/deployments/.pm2.lock", "its pm2 resurrect may start the daemon");
  const lines = plan.files[0].content.split("\n");
  for (
    const line of [
      "Type=forking",
      // The environment every pm2 command of ours has (PM2_UMASK): the daemon it starts stops processes with SIGTERM.
      'Environment="PM2_HOME=/root/.pm2" "PM2_KILL_SIGNAL=SIGTERM" "PATH=/opt/node 20%%/bin:/usr/bin"',
      "UMask=0077",
      "PIDFile=/root/.pm2/pm2.pid",
      'ExecStart="/usr/local/bin/pm2" resurrect',
      'ExecStop="/usr/local/bin/pm2" kill',
      "TimeoutStopSec=3660", // a worker's stopTimeout (at most 1 h) at shutdown, not systemd's 90 s
      "WantedBy=multi-user.target",
    ]
  ) assert(lines.includes(line), `${line} in:\n${lines.join("\n")}`);
  assertMatch(PM2_UMASK, /^umask 077 && export PM2_KILL_SIGNAL=SIGTERM && /);
});

Deno.test("pm2 at boot: nothing real under a root other than / (DEPLOY_PARADIGM_PREFIX); PM2_HOME, else ~/.pm2", async () => {
  assertEquals(pm2Home({ PM2_HOME: "/srv/pm2", HOME: "/root" }), "/srv/pm2");
  assertEquals(pm2Home({ HOME: "/home/ops" }), "/home/ops/.pm2");
  assertEquals(pm2Home({}), "/root/.pm2");
  // A server under a root other than / (DEPLOY_PARADIGM_PREFIX: tests, the demo; a pipeline test's root).
  for (const root of ["/tmp/dp-prefix", "/tmp/dp-prefix/"]) assertEquals(await pm2.atBoot!(root, true), undefined);
  // Without systemd (this machine's PID 1 may be another), one line saying what to run at boot.
  if (!(await Deno.stat("/run/systemd/system").then(() => true, () => false))) {
    assertMatch(String(await pm2.atBoot!("/", true)), /^! nothing starts pm2 at boot here \(no systemd\): /);
  }
});

Deno.test("every unit a plan writes is 0644: systemd warns at each daemon-reload of one others cannot read ('world-inaccessible'), and hides nothing by it", () => {
  const spec = { name: "deploy-paradigm-proxy", description: "the proxy", argv: ["/usr/bin/dp", "proxy"], env: {} };
  const plans = [
    systemd.restart(appProcess()),
    systemd.restart(appProcess({ slot: "blue" })),
    systemd.restart(appProcess({ worker: { type: "queue", instance: 1, stopTimeoutMs: 10_000 } })),
    systemd.slotTemplate!(appProcess({ slot: "blue" })),
    systemd.installService!({ ...spec, root: "/tmp/dp-prefix" }),
    pm2BootPlan("/tmp/dp-prefix", { pm2: "/usr/bin/pm2", home: "/root/.pm2", path: "/usr/bin" }),
    ...timerPlans(
      "web",
      [{ name: "report", schedule: "@hourly", argv: ["/bin/true"], timeoutMs: 30_000 }],
      new Map(),
      "/tmp/dp-prefix",
      {},
      "/usr/bin/dp",
    ),
  ];
  const units = plans.flatMap((plan) => plan.files).filter((file) =>
    file.path.startsWith("/tmp/dp-prefix/etc/systemd/")
  );
  assertEquals(units.length, 9);
  for (const file of units) {
    assertEquals(file.mode, 0o644, `${file.path} is written ${file.mode?.toString(8) ?? "0640 (the default)"}`);
  }
});

Deno.test("systemd units run under UMask=0077 with or without an app user: systemd creates the append: logs 0666 & ~UMask, so a log follower's or a user: root app's access.log is 0600 from creation, as pm2's", () => {
  const follower = appProcess({ envFile: undefined });
  const units = {
    plain: unitFile(follower),
    slot: templateUnit(appProcess({ slot: "blue", cwd: "/srv/opt/deployments/web/slots/blue" })),
    worker: workerTemplate(appProcess({ worker: { type: "queue", instance: 1, stopTimeoutMs: 10_000 } })),
    user: unitFile(appProcess({ user: USER })),
  };
  for (const [kind, unit] of Object.entries(units)) {
    const lines = unit.split("\n");
    assertEquals(lines.filter((line) => line === "UMask=0077").length, 1, `${kind}:\n${unit}`);
    assert(lines.indexOf("UMask=0077") < lines.indexOf("[Install]"), `${kind}: in [Service]`);
  }
});
