/**
 * The registries (app types, process managers, notification targets): what derives from them,
 * and the plans of installing a service such as the proxy, as data (nothing runs).
 */
import { dirname } from "node:path";
import { assert, assertEquals } from "../helpers/assert.ts";
import { deployFileJsonSchema, deployFileSchema, serverConfigSchema } from "../../src/config/schema.ts";
import { APP_TYPES, DEPLOYERS, DETECTION, READS } from "../../src/deployers/mod.ts";
import { UsageError } from "../../src/errors.ts";
import { throws } from "node:assert/strict";
import { DETECTORS } from "../../src/init.ts";
import { MANAGER_NAMES, managerNamed, MANAGERS, type ServiceSpec } from "../../src/managers/mod.ts";
import { PM2_UMASK } from "../../src/managers/pm2.ts";
import { templateUnit } from "../../src/managers/systemd.ts";
import { withDocker } from "../../src/managers/docker.ts";
import { TOOL_DIRS } from "../../src/deploy/runtime.ts";
import { type Notice, payload } from "../../src/notify.ts";
import { NOTIFIERS, TARGET_TYPES } from "../../src/notifiers/mod.ts";
import { initCommand } from "../../src/commands/init.ts";
import { setupCommand } from "../../src/commands/setup.ts";
import { PROXY_SERVICE, proxyService } from "../../src/setup.ts";

const ROOT = "/tmp/dp-prefix";
const PM2 = ["sh", "-c", PM2_UMASK, "pm2"];

/** The proxy as setup installs it (its program named here, not this test's own). */
function proxy(restart = false, env: Record<string, string> = {}): ServiceSpec {
  return { ...proxyService("127.0.0.1", env, ROOT, restart), argv: ["/usr/local/bin/deploy-paradigm", "proxy"] };
}

Deno.test("app types: every type has a deployer, detection lists each once, and the enums come from them", () => {
  assertEquals(Object.keys(DEPLOYERS).sort(), [...APP_TYPES].sort());
  assertEquals([...DETECTION].sort(), [...APP_TYPES].sort());
  assertEquals(deployFileSchema.shape.type.options, [...APP_TYPES]);
  const properties = (deployFileJsonSchema() as { properties: { type: { enum: string[] } } }).properties;
  assertEquals(properties.type.enum, [...APP_TYPES]);
  assertEquals(initCommand.options?.find((o) => o.name === "type")?.choices, APP_TYPES);
});

Deno.test("init's detectors: each type's files in DETECTION order, then the files that count only last", () => {
  assertEquals(DETECTORS.map((d) => [d.type, [...d.files]]), [
    ["docker", ["Dockerfile"]],
    ["python", ["requirements.txt", "pyproject.toml"]],
    ["node", ["package.json"]],
    ["static", ["index.html"]],
    ["python", ["app.py", "main.py", "server.py"]],
  ]);
});

Deno.test("app types: PATH dirs and environment from the deployers; keys of one type refused for others", () => {
  assertEquals(TOOL_DIRS, ["venv/bin", "node_modules/.bin"]);
  assertEquals(DEPLOYERS.python.env, { PYTHONUNBUFFERED: "1" });
  assertEquals(APP_TYPES.filter((type) => !DEPLOYERS[type].healthCheckRequired), ["static"]);
  const parsed = deployFileSchema.safeParse({ name: "web", type: "node", healthCheck: "/", containerPort: 80 });
  assertEquals(parsed.error?.issues.map((i) => [i.path.join("."), i.message]), [
    ["containerPort", "is for docker apps only (this app's type is node)"],
  ]);
});

Deno.test("process managers: each under its own name; config.yml's enum and setup's choices come from them", () => {
  for (const name of MANAGER_NAMES) {
    assertEquals(MANAGERS[name].name, name);
    assertEquals(managerNamed(name), MANAGERS[name]);
    assertEquals(managerNamed(name, true).name, name);
  }
  assertEquals(serverConfigSchema.shape.manager.options, [...MANAGER_NAMES]);
  assertEquals(setupCommand.options?.find((o) => o.name === "manager")?.choices, MANAGER_NAMES);
});

Deno.test("systemd installService: the unit, daemon-reload and enable --now (restart for an old one)", () => {
  const plan = MANAGERS.systemd.installService(proxy(false, { DEPLOY_PARADIGM_PREFIX: ROOT }));
  assertEquals(plan, {
    files: [{
      path: `${ROOT}/etc/systemd/system/deploy-paradigm-proxy.service`,
      content: [
        "# Written by deploy-paradigm setup.",
        "[Unit]",
        "Description=deploy-paradigm proxy (zero-downtime switches for blue-green apps)",
        "Wants=network-online.target",
        "After=network-online.target",
        "StartLimitIntervalSec=0",
        "",
        "[Service]",
        'ExecStart="/usr/local/bin/deploy-paradigm" "proxy"',
        `Environment="DEPLOY_PARADIGM_PREFIX=${ROOT}"`,
        "Restart=always",
        "RestartSec=500ms",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
      ].join("\n"),
      mode: 0o644, // systemd warns of a unit others cannot read
    }],
    commands: [
      { argv: ["systemctl", "daemon-reload"], timeoutMs: 60_000 },
      { argv: ["systemctl", "enable", "--now", "deploy-paradigm-proxy.service"], timeoutMs: 60_000 },
    ],
  });
  assertEquals(MANAGERS.systemd.installService(proxy(true)).commands.map((c) => c.argv).at(-1), [
    "systemctl",
    "restart",
    "deploy-paradigm-proxy.service",
  ]);
  assertEquals(MANAGERS.systemd.logsCommand(PROXY_SERVICE), "journalctl -u deploy-paradigm-proxy");
});

Deno.test("systemd installService: quotes in the program's words are escaped", () => {
  const unit = MANAGERS.systemd.installService({ ...proxy(), argv: ['/opt/my "dp"/bin\\x', "proxy"] }).files[0];
  assert(unit.content.includes('\nExecStart="/opt/my \\"dp\\"/bin\\\\x" "proxy"\n'), unit.content);
});

Deno.test("serviceArgv reads back the argv installService wrote, under both managers (quotes and backslashes too)", async () => {
  const root = await Deno.makeTempDir({ prefix: "dp-service-argv-" });
  try {
    const argv = ['/opt/my "dp"/bin\\x', "proxy", "--host", "127.0.0.1"];
    for (const manager of MANAGER_NAMES) {
      const m = MANAGERS[manager];
      assertEquals(await m.serviceArgv!(PROXY_SERVICE, root), undefined, `${manager}: none installed yet`);
      for (const file of m.installService({ ...proxyService("127.0.0.1", {}, root), argv }).files) {
        await Deno.mkdir(dirname(file.path), { recursive: true });
        await Deno.writeTextFile(file.path, file.content);
      }
      assertEquals(await m.serviceArgv!(PROXY_SERVICE, root), argv, manager);
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("pm2 installService: a 0600 definition run in /, start (startOrRestart when old) and save, under the pm2 lock", () => {
  const file = `${ROOT}/opt/deployments/pm2-deploy-paradigm-proxy.json`;
  const plan = MANAGERS.pm2.installService(proxy(false, { DEPLOY_PARADIGM_PREFIX: ROOT }));
  assertEquals(plan.files.map((f) => [f.path, f.mode]), [[file, 0o600]]);
  assertEquals(
    plan.files[0].content,
    JSON.stringify(
      {
        apps: [{
          name: "deploy-paradigm-proxy",
          script: "/usr/local/bin/deploy-paradigm",
          args: ["proxy"],
          cwd: "/",
          interpreter: "none",
          env: { DEPLOY_PARADIGM_PREFIX: ROOT },
          exp_backoff_restart_delay: 100,
        }],
      },
      null,
      2,
    ) + "\n",
  );
  assertEquals(plan.commands.map((c) => c.argv), [[...PM2, "start", file], [...PM2, "save"]]);
  assertEquals(plan.lock, `${ROOT}/opt/deployments/.pm2.lock`);
  assertEquals(MANAGERS.pm2.installService(proxy(true)).commands[0].argv, [...PM2, "startOrRestart", file]);
  assertEquals(MANAGERS.pm2.logsCommand(PROXY_SERVICE), "pm2 logs deploy-paradigm-proxy");
});

Deno.test("installService through the docker wrapper is the manager's own", () => {
  for (const name of MANAGER_NAMES) {
    assertEquals(withDocker(MANAGERS[name]).installService(proxy()), MANAGERS[name].installService(proxy()));
  }
});

Deno.test("systemd slotTemplate: the app's template unit, then daemon-reload; pm2 needs none", () => {
  const p = {
    app: "web",
    slot: "blue" as const,
    root: ROOT,
    argv: ["/bin/true"],
    cwd: `${ROOT}/opt/deployments/web/slots/blue`,
    env: {},
    secrets: {},
    accessLog: "/var/log/deployments/web/access.log",
    errorLog: "/var/log/deployments/web/error.log",
    stateDir: `${ROOT}/opt/deployments/web`,
  };
  const plan = MANAGERS.systemd.slotTemplate!(p);
  assertEquals(plan.files.map((f) => [f.path, f.content]), [[
    `${ROOT}/etc/systemd/system/web@.service`,
    templateUnit(p),
  ]]);
  assertEquals(plan.commands, [{ argv: ["systemctl", "daemon-reload"], timeoutMs: 60_000 }]);
  assertEquals(MANAGERS.pm2.slotTemplate, undefined);
});

Deno.test("systemd runs here only without DEPLOY_PARADIGM_PREFIX (it could not see our units)", async () => {
  // runsHere reads the process environment: asked in a process of its own, so this test never
  // changes the environment of the others running in this one (deno test --parallel).
  const mod = new URL("../../src/managers/mod.ts", import.meta.url).href;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", `import { MANAGERS } from "${mod}"; console.log(await MANAGERS.systemd.runsHere())`],
    cwd: new URL("../..", import.meta.url).pathname,
    env: { DEPLOY_PARADIGM_PREFIX: ROOT },
    stdout: "piped",
    stderr: "inherit",
  }).output();
  assertEquals([out.code, new TextDecoder().decode(out.stdout).trim()], [0, "false"]);
  assertEquals(MANAGERS.pm2.runsHere, undefined);
});

Deno.test("proxyService: the proxy's program, listening on the given host", () => {
  const spec = proxyService("0.0.0.0", {}, ROOT);
  assertEquals([spec.name, spec.argv.slice(-3), spec.restart], [PROXY_SERVICE, ["proxy", "--host", "0.0.0.0"], false]);
});

const NOTICE: Notice = {
  event: "failed",
  ok: false,
  title: "web failed",
  fields: { app: "web", server: "vps1" },
  text: "boom",
  at: "2026-01-01T00:00:00.000Z",
};

Deno.test("notification targets: each type has a notifier building its payload; the enum comes from them", () => {
  assertEquals(Object.keys(NOTIFIERS).sort(), [...TARGET_TYPES].sort());
  for (const type of TARGET_TYPES) assertEquals(payload(type, NOTICE), NOTIFIERS[type].payload(NOTICE));
  assertEquals(payload("webhook", NOTICE), {
    event: "failed",
    ok: false,
    title: "web failed",
    text: "boom",
    at: "2026-01-01T00:00:00.000Z",
    app: "web",
    server: "vps1",
  });
  const target = serverConfigSchema.shape.notify.unwrap().element.shape.type;
  assertEquals(target.options, [...TARGET_TYPES]);
  assertEquals(
    serverConfigSchema.safeParse({ port: 80, manager: "pm2", notify: [{ type: "teams", url: "https://x.test/" }] })
      .error?.issues.map((i) => i.message),
    ["must be one of webhook, slack, discord"],
  );
});

Deno.test("deployers: the commit files a type reads before extraction are its own (node: package.json)", () => {
  assertEquals(READS, ["package.json"], "read from the commit in the same git call as deploy.yml");
  const reads = DEPLOYERS.node.reads!;
  assertEquals(reads.facts(new Map(), "commit abc1234"), {}, "no package.json: nothing learnt");
  assertEquals(
    reads.facts(new Map([["package.json", '{"scripts":{"start":"node a.js"}}']]), "commit abc1234"),
    { packageJson: { scripts: { start: "node a.js" } } },
  );
  throws(
    () => reads.facts(new Map([["package.json", "{"]]), "commit abc1234"),
    (error: unknown) =>
      error instanceof UsageError && /^package\.json in commit abc1234 is not valid JSON: /.test(error.message),
  );
  for (const type of APP_TYPES.filter((type) => type !== "node")) assertEquals(DEPLOYERS[type].reads, undefined);
});

Deno.test("deployers: a start command that cannot be guessed is asked for with an example of the app's type", () => {
  const asked = (type: "node" | "python", files: string[]) => {
    try {
      DEPLOYERS[type].start!({ files: new Set(files) });
    } catch (error) {
      assert(error instanceof UsageError);
      return [error.message, error.suggestion];
    }
    throw new Error("no error");
  };
  assertEquals(asked("node", ["README.md"]), [
    'deploy.yml has no "command" and there is no package.json, server.js, index.js or app.js',
    'add a command to deploy.yml, e.g. command: "node server.js"',
  ]);
  assertEquals(asked("node", ["package.json"])[1], 'add a command to deploy.yml, e.g. command: "node server.js"');
  assertEquals(asked("python", ["wsgi.py"])[1], 'add a command to deploy.yml, e.g. command: "python app.py"');
});
