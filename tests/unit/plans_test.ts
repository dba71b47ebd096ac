/** Build plans and start commands per app type, and the pm2/systemd plans (as data, nothing runs). */
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { throws } from "node:assert/strict";
import { buildPlan, type RepoFacts, startArgv } from "../../src/deploy/app_type.ts";
import { type DeployFile, deployFileSchema } from "../../src/config/schema.ts";
import { UsageError } from "../../src/errors.ts";
import { pm2 } from "../../src/managers/pm2.ts";
import { systemd, unitFile, unitQuote } from "../../src/managers/systemd.ts";
import { type AppProcess, managerNamed } from "../../src/managers/mod.ts";
import { type ContainerSpec, withDocker } from "../../src/managers/docker.ts";

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

Deno.test("pm2 restart: writes pm2-web.json (0600) with env, secrets, cwd and logs, then delete + start", () => {
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
  assertEquals(app.filter_env, true, "the pm2 daemon's own environment must not reach the app");
  assertEquals(plan.commands, [
    { argv: ["pm2", "delete", "web"], quiet: true, timeoutMs: 60_000, allowFailure: true },
    { argv: ["pm2", "start", "/srv/opt/deployments/web/pm2-web.json"], quiet: true, timeoutMs: 60_000 },
    { argv: ["pm2", "save"], quiet: true, timeoutMs: 60_000 },
  ]);
  // pm2 calls of all apps are serialized by one server-wide lock.
  assertEquals(plan.lock, "/tmp/dp-prefix/opt/deployments/.pm2.lock");
});

Deno.test("pm2 stop: pm2 delete (allowed to fail) and save, under the pm2 lock; its pm2-web.json removed", () => {
  assertEquals(pm2.stop("web", "/tmp/dp-prefix", "/srv/opt/deployments/web"), {
    files: [],
    commands: [
      { argv: ["pm2", "delete", "web"], quiet: true, timeoutMs: 60_000, allowFailure: true },
      { argv: ["pm2", "save"], quiet: true, timeoutMs: 60_000 },
    ],
    lock: "/tmp/dp-prefix/opt/deployments/.pm2.lock",
    remove: ["/srv/opt/deployments/web/pm2-web.json"],
  });
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
  assertEquals(plan.commands[0].argv, ["pm2", "delete", "web-green"]);
  assertEquals(pm2.stop("web", "/tmp/dp-prefix", "/srv/opt/deployments/web", "blue").commands[0].argv, [
    "pm2",
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
    ["pm2", "delete", "web-blue"],
    ["pm2", "save"],
    ["docker", "stop", "-t", "10", "web-blue"],
    ["docker", "rm", "--force", "web-blue"],
    [
      "docker",
      "run",
      "--detach",
      "--name",
      "web-blue",
      "--restart",
      "unless-stopped",
      "--pull",
      "never",
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
    ["pm2", "delete", "web-blue"],
    ["pm2", "start", "/srv/opt/deployments/web/pm2-web-blue.json"],
    ["pm2", "save"],
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
  assertEquals(python.commands.map((c) => c.argv.slice(0, 2).join(" ")), [
    "pm2 delete",
    "pm2 save",
    "docker stop",
    "docker rm",
    "pm2 delete",
    "pm2 start",
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
  assertEquals(managerNamed("pm2", true).stop("web", "/r", "/s").commands.at(-1)?.argv, ["pm2", "save"]);
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
