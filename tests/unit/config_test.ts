/**
 * deploy.yml / config.yml parsing: schemas, defaults, and the one-pass error report
 * (every problem, each with file:line:col and its key path); config.yml's domains, and which app
 * claims which domain on a server.
 */
import { join } from "node:path";
import { throws } from "node:assert/strict";
import { FULL_DEPLOY_YML } from "../helpers/configs.ts";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { MAX_CONFIG_BYTES, parseConfig } from "../../src/config/load.ts";
import {
  APP_TYPES,
  deployFileJsonSchema,
  deployFileSchema,
  hostNameProblem,
  serverConfigSchema,
} from "../../src/config/schema.ts";
import { parseDuration } from "../../src/config/fields.ts";
import { domainClaims, domainConflicts, refuseTakenDomains } from "../../src/config/domains.ts";
import { appPaths } from "../../src/paths.ts";
import { ConfigError, DeployParadigmError, UsageError } from "../../src/errors.ts";

/** Parses `text` expecting failure; returns the ConfigError. */
function configError(text: string, schema: typeof deployFileSchema | typeof serverConfigSchema = deployFileSchema) {
  try {
    parseConfig(text, schema, "deploy.yml");
  } catch (error) {
    assert(error instanceof ConfigError, `expected a ConfigError, got ${error}`);
    return error;
  }
  throw new Error(`expected ${JSON.stringify(text)} to be refused`);
}

/** The problems of a refused file. */
const problems = (text: string, schema?: typeof deployFileSchema | typeof serverConfigSchema) =>
  configError(text, schema).problems;

const DEFAULT_HEALTH = { path: "/health", window: 30_000, interval: 1000, successes: 3, timeout: 2000 };

Deno.test("deploy.yml: a minimal static app gets its defaults and needs no healthCheck", () => {
  const deploy = parseConfig("name: site\ntype: static\n", deployFileSchema, "deploy.yml");
  assertEquals(deploy, { name: "site", type: "static", cron: [], keepReleases: 3, branch: "main", watch: 20_000 });
});

Deno.test("deploy.yml: the healthCheck string form is normalized to the full object", () => {
  const deploy = parseConfig("name: api\ntype: python\nhealthCheck: /health\n", deployFileSchema, "deploy.yml");
  assertEquals(deploy, {
    name: "api",
    type: "python",
    healthCheck: DEFAULT_HEALTH,
    cron: [],
    keepReleases: 3,
    branch: "main",
    watch: 20_000,
  });
});

Deno.test("deploy.yml: a full file keeps every value it sets", () => {
  const text = FULL_DEPLOY_YML;
  assertEquals(parseConfig(text, deployFileSchema, "deploy.yml"), {
    name: "web-2",
    type: "node",
    healthCheck: { path: "/ready", window: 120_000, interval: 500, successes: 5, timeout: 5000 },
    command: ["node", "server.js"],
    cron: [],
    build: "npm run build",
    hooks: { preDeploy: "./scripts/migrate.sh", postDeploy: ["./notify", "--ok"] },
    keepReleases: 10,
    branch: "release/v1",
    watch: 0,
  });
});

Deno.test("deploy.yml: the long healthCheck form fills in missing durations with the defaults", () => {
  const deploy = parseConfig("name: a\ntype: node\nhealthCheck: { path: /h, window: 2.5s }\n", deployFileSchema, "x");
  assertEquals(deploy.healthCheck, { path: "/h", window: 2500, interval: 1000, successes: 3, timeout: 2000 });
});

Deno.test("config.yml: a minimal file gets env production, blue-green and a 30 s drain", () => {
  assertEquals(parseConfig("port: 8080\nmanager: systemd\n", serverConfigSchema, "config.yml"), {
    port: 8080,
    manager: "systemd",
    env: "production",
    strategy: "blue-green",
    drainTimeout: 30_000,
    notify: [],
    domains: [],
    hsts: false,
  });
  assertEquals(problems("port: 80\nmanager: pm2\nstrategy: canary\n", serverConfigSchema), [
    'deploy.yml:3:11: "strategy" must be one of blue-green, restart (got "canary")',
  ]);
  assertEquals(problems("port: 80\nmanager: pm2\nslots: { blue: 80, green: 81 }\n", serverConfigSchema), [
    'deploy.yml:3:8: "slots" must be two different ports, neither of them the app\'s port 80 (remove slots: and the ' +
    "next deploy chooses them) (got a mapping)",
  ]);
  // An instance's port that is the app's, a slot's or another instance's: each named at its own position.
  assertEquals(
    problems(
      "port: 80\nmanager: pm2\nslots: { blue: 8001, green: 8002 }\n" +
        "instancePorts: { blue: [8002, 8003], green: [80, 8003] }\n",
      serverConfigSchema,
    ),
    [
      'deploy.yml:4:25: "instancePorts.blue.0" is 8002, the green slot\'s port already: each web instance needs a ' +
      "port of its own (remove instancePorts: and the next deploy chooses them) (got 8002)",
      'deploy.yml:4:46: "instancePorts.green.0" is 80, the app\'s port already: each web instance needs a port of its ' +
      "own (remove instancePorts: and the next deploy chooses them) (got 80)",
      'deploy.yml:4:50: "instancePorts.green.1" is 8003, instancePorts.blue.1 already: each web instance needs a port ' +
      "of its own (remove instancePorts: and the next deploy chooses them) (got 8003)",
    ],
  );
  assertEquals(parseConfig("port: 1\nmanager: pm2\nenv: staging\nstrategy: restart\n", serverConfigSchema, "c"), {
    port: 1,
    manager: "pm2",
    env: "staging",
    strategy: "restart",
    drainTimeout: 30_000,
    notify: [],
    domains: [],
    hsts: false,
  });
});

Deno.test("errors: a repeated cron job name and every wrong field of a schedule, beside the other problems, at once", () => {
  const text = "name: app\ntype: static\nkeepReleases: 1\ncron:\n" +
    "  - { name: tick, schedule: '61 25 * * *', command: a }\n" +
    "  - { name: tick, schedule: '@daily', command: b }\n";
  assertEquals(problems(text), [
    'deploy.yml:3:15: "keepReleases" must be at least 2: the serving release and the one before it are always kept (got 1)',
    'deploy.yml:5:30: "cron.0.schedule" field 1 (minute): 61 is out of range 0-59 (got "61 25 * * *")',
    'deploy.yml:5:33: "cron.0.schedule" field 2 (hour): 25 is out of range 0-23 (got "61 25 * * *")',
    'deploy.yml:6:13: "cron.1.name" repeats cron.0.name: name each job once (got "tick")',
  ]);
});

Deno.test("errors: every problem is reported at once with file:line:col and key path", () => {
  const error = configError("name: Bad_Name\ntype: ruby\nhelthCheck: /x\n");
  assertEquals(error.problems.length, 3);
  const [name, type, unknown] = error.problems;
  assertMatch(name, /^deploy\.yml:1:7: "name" must be 1-63 lowercase letters.*\(got "Bad_Name"\)$/);
  assertMatch(type, /^deploy\.yml:2:7: "type" must be one of python, node, docker, static \(got "ruby"\)$/);
  assertEquals(unknown, 'deploy.yml:3:1: "helthCheck" is not a known key; did you mean "healthCheck"?');
  assertMatch(error.message, /^Cannot read deploy\.yml \(3 problems\):\n {2}deploy\.yml:1:7: /);
  // The tool's own services' names (deploy-paradigm-proxy, deploy-paradigm-cron) are no app's.
  for (const name of ["deploy-paradigm", "deploy-paradigm-cron"]) {
    assertEquals(configError(`name: ${name}\ntype: static\n`).problems, [
      `deploy.yml:1:7: "name" is reserved: the tool's own services are named deploy-paradigm-… (got "${name}")`,
    ]);
  }
  assertEquals(configError("name: deploy-paradigms\ntype: ruby\n").problems.length, 1, "only the type");
});

Deno.test("errors: problems are sorted by position in the file", () => {
  const found = problems("keepReleases: 0\ntype: static\nname: UPPER\n");
  assertEquals(found.map((p) => p.split(": ")[0]), ["deploy.yml:1:15", "deploy.yml:3:7"]);
  assertMatch(found[0], /"keepReleases" .*\(got 0\)/);
  assertMatch(found[1], /"name" must be/);
});

Deno.test("errors: a ConfigError is a UsageError with exit code 2", () => {
  const error = configError("name: a\n");
  assert(error instanceof UsageError);
  assert(error instanceof DeployParadigmError);
  assertEquals(error.exitCode, 2);
  assertEquals(error.name, "ConfigError");
  assertEquals(error.problems, ['deploy.yml:1:1: "type" is required and must be one of python, node, docker, static']);
  assertEquals(error.message, `Cannot read deploy.yml:\n  ${error.problems[0]}`);
});

Deno.test("errors: the label names the file in every message", () => {
  try {
    parseConfig("name: a\ntype: static\nfoo: 1\n", deployFileSchema, "deploy.yml (commit abc1234)");
    assert(false, "should have thrown");
  } catch (error) {
    assert(error instanceof ConfigError);
    assertMatch(error.message, /^Cannot read deploy\.yml \(commit abc1234\):/);
    assertMatch(error.problems[0], /^deploy\.yml \(commit abc1234\):3:1: "foo" is not a known key/);
  }
});

Deno.test("errors: YAML syntax errors carry line:col", () => {
  assertEquals(problems("name: app\ntype: static: x\n"), [
    "deploy.yml:2:7: YAML syntax error: Nested mappings are not allowed in compact mappings",
  ]);
  assertEquals(problems("name: app\ntype: static\n\tbranch: x\n"), [
    "deploy.yml:3:1: YAML syntax error: Tabs are not allowed as indentation",
  ]);
  // Found at the end of the file: placed at the end of its last line (not on a line after it).
  assertEquals(problems("name: app\ntype: 'static\n"), ["deploy.yml:2:14: YAML syntax error: Missing closing 'quote"]);
  assertEquals(problems("name: app\ntype: 'static"), ["deploy.yml:2:14: YAML syntax error: Missing closing 'quote"]);
  assertEquals(problems("name: app\r\ntype: 'static\r\n"), [
    "deploy.yml:2:14: YAML syntax error: Missing closing 'quote",
  ]);
});

Deno.test("errors: duplicate keys are refused", () => {
  const [problem] = problems("name: a\nname: b\ntype: static\n");
  assertEquals(problem, "deploy.yml:2:1: YAML syntax error: the key name appears twice in the same mapping (keep one)");
});

Deno.test("errors: an unknown key gets a did-you-mean, or the list of known keys", () => {
  assertEquals(problems("name: app\ntype: static\nbranh: main\n"), [
    'deploy.yml:3:1: "branh" is not a known key; did you mean "branch"?',
  ]);
  assertEquals(problems("name: app\ntype: static\nfoo: 1\n"), [
    'deploy.yml:3:1: "foo" is not a known key; known keys: name, type, healthCheck, command, processes, cron, build, hooks, keepReleases, branch, dockerfile, root, buildArgs, containerPort, watch, gates, canary',
  ]);
});

Deno.test("root: a static app's served directory inside the repository; not for other types, nor beside a command", () => {
  assertEquals(parseConfig("name: app\ntype: static\nroot: dist\n", deployFileSchema, "deploy.yml").root, "dist");
  assertEquals(problems("name: app\ntype: static\nroot: ../x\n"), [
    'deploy.yml:3:7: "root" must stay inside the repository (no ..) (got "../x")',
  ]);
  assertEquals(problems("name: app\ntype: static\nroot: /srv\n"), [
    'deploy.yml:3:7: "root" must be a path inside the repository, e.g. dist (got "/srv")',
  ]);
  assertEquals(problems("name: app\ntype: node\nhealthCheck: /h\nroot: dist\n"), [
    'deploy.yml:4:7: "root" is for static apps only (this app\'s type is node) (got "dist")',
  ]);
  assertEquals(problems("name: app\ntype: static\nhealthCheck: /h\ncommand: ./serve\nroot: dist\n"), [
    'deploy.yml:5:7: "root" is the directory the proxy serves, and this static app runs a command that serves ' +
    'itself: remove one (got "dist")',
  ]);
});

Deno.test("errors: unknown nested keys are reported with their full path", () => {
  const hooks = "name: app\ntype: static\nhooks:\n  preDeploy: ./m.sh\n  postDeplo: x\n";
  assertEquals(problems(hooks), ['deploy.yml:5:3: "hooks.postDeplo" is not a known key; did you mean "postDeploy"?']);
  const health = "name: app\ntype: node\nhealthCheck: {path: /h, windw: 5s}\n";
  assertEquals(problems(health), [
    'deploy.yml:3:25: "healthCheck.windw" is not a known key; did you mean "window"?',
  ]);
});

Deno.test("errors: a missing required key and a misspelt one are both reported", () => {
  assertEquals(problems("nme: app\ntype: static\n"), [
    'deploy.yml:1:1: "name" is required',
    'deploy.yml:1:1: "nme" is not a known key; did you mean "name"?',
  ]);
});

Deno.test("errors: an empty file is refused", () => {
  for (const text of ["", "\n", "   \n", "# just a comment\n"]) {
    assertEquals(problems(text), ["deploy.yml: file is empty; it must be a YAML mapping of keys"], text);
  }
});

Deno.test("errors: a file that is not a mapping is refused", () => {
  assertEquals(problems("- name: a\n- type: static\n"), [
    "deploy.yml:1:1: the file must be a YAML mapping of keys (key: value), not a list",
  ]);
  assertEquals(problems("42\n"), ["deploy.yml:1:1: the file must be a YAML mapping of keys (key: value), not 42"]);
  assertEquals(problems("hello\n"), [
    'deploy.yml:1:1: the file must be a YAML mapping of keys (key: value), not "hello"',
  ]);
});

Deno.test("errors: an alias bomb is refused before it expands", () => {
  const bomb = [
    "a: &a [x, x, x, x, x, x, x, x, x, x]",
    "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]",
    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]",
    "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]",
    "e: [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]",
    "",
  ].join("\n");
  const found = problems(bomb);
  assertEquals(found.length, 1);
  assertMatch(found[0], /^deploy\.yml: .*\(YAML aliases are limited to 50\)$/);
});

Deno.test("errors: an oversized file is refused before parsing", () => {
  const text = "name: app\ntype: static\n# " + "x".repeat(MAX_CONFIG_BYTES) + "\n";
  assertEquals(problems(text), [
    `deploy.yml: file is ${text.length} bytes; config files are limited to ${MAX_CONFIG_BYTES} bytes`,
  ]);
  // Just under the limit is fine.
  const fits = "name: app\ntype: static\n#" + "x".repeat(MAX_CONFIG_BYTES - 30) + "\n";
  assert(fits.length <= MAX_CONFIG_BYTES);
  assertEquals(parseConfig(fits, deployFileSchema, "deploy.yml").name, "app");
});

Deno.test("errors: text that was not valid UTF-8 is refused", () => {
  const text = new TextDecoder().decode(new Uint8Array([...new TextEncoder().encode("name: a\n"), 0xff, 0x0a]));
  assertEquals(problems(text), ["deploy.yml: file is not valid UTF-8 text"]);
});

Deno.test("config.yml: port out of range or not a whole number", () => {
  for (const port of [0, 65536, 70000, -1]) {
    assertEquals(problems(`port: ${port}\nmanager: pm2\n`, serverConfigSchema), [
      `deploy.yml:1:7: "port" must be from 1 to 65535 (got ${port})`,
    ]);
  }
  const [fraction] = problems("port: 80.5\nmanager: pm2\n", serverConfigSchema);
  assertMatch(fraction, /^deploy\.yml:1:7: "port" must be .*\(got 80\.5\)$/);
  const [text] = problems("port: '80'\nmanager: pm2\n", serverConfigSchema);
  assertMatch(text, /^deploy\.yml:1:7: "port" must be .*\(got "80"\)$/);
  assertEquals(parseConfig("port: 65535\nmanager: pm2\n", serverConfigSchema, "c").port, 65535);
});

Deno.test("config.yml: manager must be systemd or pm2; port is required", () => {
  assertEquals(problems("port: 8080\nmanager: docker\n", serverConfigSchema), [
    'deploy.yml:2:10: "manager" must be one of systemd, pm2 (got "docker")',
  ]);
  assertEquals(problems("manager: SystemD\n", serverConfigSchema), [
    'deploy.yml:1:1: "port" is required',
    'deploy.yml:1:10: "manager" must be one of systemd, pm2 (got "SystemD")',
  ]);
  assertEquals(problems("port: 0\nmanager: docker\nprt: 1\n", serverConfigSchema), [
    'deploy.yml:1:7: "port" must be from 1 to 65535 (got 0)',
    'deploy.yml:2:10: "manager" must be one of systemd, pm2 (got "docker")',
    'deploy.yml:3:1: "prt" is not a known key; did you mean "port"?',
  ]);
});

Deno.test("config.yml: env must be a plain name", () => {
  assertEquals(problems("port: 80\nmanager: pm2\nenv: 'pro duction'\n", serverConfigSchema), [
    'deploy.yml:3:6: "env" must be a name such as production (letters, digits, . _ -) (got "pro duction")',
  ]);
});

Deno.test("deploy.yml: healthCheck is required for python, node and docker but not static", () => {
  for (const type of ["python", "node", "docker"]) {
    assertEquals(problems(`name: app\ntype: ${type}\n`), [
      `deploy.yml:1:1: "healthCheck" is required for ${type} apps, e.g. healthCheck: /health`,
    ]);
  }
  assertEquals(parseConfig("name: app\ntype: static\n", deployFileSchema, "d").healthCheck, undefined);
  assertEquals(
    parseConfig("name: app\ntype: static\nhealthCheck: /\n", deployFileSchema, "d").healthCheck?.path,
    "/",
  );
});

Deno.test("deploy.yml: healthCheck must be a URL path", () => {
  assertEquals(problems("name: app\ntype: node\nhealthCheck: health\n"), [
    'deploy.yml:3:14: "healthCheck" must be a URL path starting with "/", e.g. "/health" (got "health")',
  ]);
  const [spaced] = problems("name: app\ntype: node\nhealthCheck: /a b\n");
  assertMatch(spaced, /^deploy\.yml:3:14: "healthCheck" must be a URL path/);
});

Deno.test("deploy.yml: durations in the long healthCheck form", () => {
  const parse = (fields: string) =>
    parseConfig(`name: a\ntype: node\nhealthCheck: { path: /h, ${fields} }\n`, deployFileSchema, "d").healthCheck!;
  assertEquals(parse("window: 500ms, successes: 1").window, 500);
  assertEquals(parse("window: 2m").window, 120_000);
  assertEquals(parse("window: 5").window, 5000);
  assertEquals(parse("interval: 1h, window: 3h").interval, 3_600_000);
  assertEquals(parse("timeout: 0.5").timeout, 500);
  // "soon" is not a duration: the file is refused, pointing at the health check.
  const found = problems("name: a\ntype: node\nhealthCheck:\n  path: /h\n  window: soon\n");
  assertEquals(found.length, 1);
  assertMatch(found[0], /^deploy\.yml:[45]:\d+: "healthCheck/);
  assertEquals(problems("name: a\ntype: node\nhealthCheck: { path: /h, successes: 0 }\n"), [
    'deploy.yml:3:37: "healthCheck.successes" must be from 1 to 100 (got 0)',
  ]);
});

Deno.test("parseDuration: units, plain seconds, and refusals", () => {
  assertEquals(parseDuration("500ms"), 500);
  assertEquals(parseDuration("2s"), 2000);
  assertEquals(parseDuration("1.5m"), 90_000);
  assertEquals(parseDuration("2m"), 120_000);
  assertEquals(parseDuration("1h"), 3_600_000);
  assertEquals(parseDuration(" 30s "), 30_000);
  assertEquals(parseDuration(5), 5000);
  assertEquals(parseDuration(0.25), 250);
  assertEquals(parseDuration(0), 0);
  for (const bad of ["soon", "2", "-2s", "2 s", "2d", "", "s", "1e3ms"]) {
    assertEquals(parseDuration(bad), undefined, bad);
  }
  for (const bad of [-1, Infinity, NaN]) assertEquals(parseDuration(bad), undefined, String(bad));
});

Deno.test("deploy.yml: a command with $(...) or another shell operator is refused", () => {
  const [dollar] = problems("name: app\ntype: node\ncommand: echo $(whoami)\nhealthCheck: /\n");
  assertMatch(dollar, /^deploy\.yml:3:10: "command" contains the shell operator "\$" at character 6/);
  assertMatch(dollar, /not run by a shell/);
  const [pipe] = problems("name: app\ntype: static\nhooks: {preDeploy: 'x | y'}\n");
  assertMatch(pipe, /^deploy\.yml:3:20: "hooks\.preDeploy" contains the shell operator "\|"/);
  const [unterminated] = problems("name: app\ntype: static\nbuild: 'make \"all'\n");
  assertMatch(unterminated, /^deploy\.yml:3:8: "build" has an unterminated " quote at character 6/);
  const [empty] = problems("name: app\ntype: node\ncommand: ''\nhealthCheck: /\n");
  assertEquals(empty, 'deploy.yml:3:10: "command" is empty (got an empty string)');
  const [emptyList] = problems("name: app\ntype: static\nbuild: []\n");
  assertEquals(emptyList, 'deploy.yml:3:8: "build" must list at least the program to run (got 0 items)');
  const jobs = Array.from({ length: 51 }, (_, i) => `  - { name: j${i}, schedule: "* * * * *", command: ./x }`);
  assertEquals(problems(`name: a\ntype: node\ncron:\n${jobs.join("\n")}\n`, deployFileSchema), [
    'deploy.yml:4:3: "cron" must list at most 50 jobs (got 51 items)',
  ]);
  // Quoted operators and argv lists are fine: nothing is run by a shell.
  const ok = parseConfig(
    "name: app\ntype: node\ncommand: \"echo '$(whoami)'\"\nbuild: [sh, -c, 'a | b']\nhealthCheck: /\n",
    deployFileSchema,
    "d",
  );
  assertEquals([ok.command, ok.build], ["echo '$(whoami)'", ["sh", "-c", "a | b"]]);
});

Deno.test("deploy.yml: name, keepReleases and branch limits", () => {
  assertEquals(parseConfig(`name: ${"a".repeat(63)}\ntype: static\n`, deployFileSchema, "d").name.length, 63);
  for (const name of ["a".repeat(64), "-app", "App", "my_app", "''"]) {
    const found = problems(`name: ${name}\ntype: static\n`);
    assertEquals(found.length, 1, name);
    assertMatch(found[0], /^deploy\.yml:1:7: "name" must be 1-63 lowercase letters/);
  }
  assertMatch(problems("name: a\ntype: static\nkeepReleases: 101\n")[0], /^deploy\.yml:3:15: "keepReleases" /);
  assertMatch(problems("name: a\ntype: static\nkeepReleases: 2.5\n")[0], /^deploy\.yml:3:15: "keepReleases" /);
  assertEquals(problems("name: a\ntype: static\nbranch: 'a b'\n"), [
    'deploy.yml:3:9: "branch" must be a branch name git accepts, such as main or release/v2 (letters, digits, . _ - ' +
    "and /; not starting with -, / or refs/, no .. or //, no part starting with . or ending with .lock, not HEAD) " +
    '(got "a b")',
  ]);
});

Deno.test("deploy.yml: branch takes what `git check-ref-format --branch` takes (a name git refuses could never deploy)", () => {
  const names = ["main", "release/v2", "feature/x.y", "v1.2", "HEADS", "my-HEAD", "a_b", "a..b", "../x", "-x", "HEAD"];
  names.push(
    "x.lock",
    "x.lock/y",
    "refs/heads/x",
    "a//b",
    "a/.b",
    ".a",
    "a/",
    "a.",
    "a b",
    "a~1",
    "a^",
    "a:b",
    "a@{1}",
    "/main",
  );
  for (const name of names) {
    const git =
      new Deno.Command("git", { args: ["check-ref-format", "--branch", name], stdout: "null", stderr: "null" })
        .outputSync().success;
    let ours = true;
    try {
      parseConfig(`name: a\ntype: static\nbranch: ${JSON.stringify(name)}\n`, deployFileSchema, "deploy.yml");
    } catch {
      ours = false;
    }
    // refs/heads/x is a name git takes (it makes refs/heads/refs/heads/x): refused here, it is never what was meant.
    assertEquals(ours, git && name !== "refs/heads/x", name);
  }
});

Deno.test("deployFileJsonSchema: describes the file for editors", () => {
  const schema = deployFileJsonSchema();
  const properties = schema.properties as Record<string, Record<string, unknown>>;
  for (const key of ["name", "type", "healthCheck", "command", "build", "hooks", "keepReleases", "branch"]) {
    assert(key in properties, `missing property ${key}`);
  }
  assertEquals(properties.type.enum, ["python", "node", "docker", "static"]);
  assertEquals(properties.type.enum, [...APP_TYPES]);
  assertEquals(schema.required, ["name", "type"]);
  assertEquals(schema.additionalProperties, false);
  assertEquals(properties.keepReleases.default, 3);
  assertEquals(properties.branch.default, "main");
  assertEquals(schema.title, "deploy-paradigm deploy.yml");
  // Serializable as-is (the `schema` command prints it).
  assertEquals(JSON.parse(JSON.stringify(schema)), schema);
});

Deno.test("docker keys: checked, and refused for other app types", () => {
  assertEquals(
    problems(
      "name: app\ntype: python\nhealthCheck: /h\ncontainerPort: 8080\ndockerfile: Dockerfile\n",
    ),
    [
      `deploy.yml:4:16: "containerPort" is for docker apps only (this app's type is python) (got 8080)`,
      `deploy.yml:5:13: "dockerfile" is for docker apps only (this app's type is python) (got "Dockerfile")`,
    ],
  );
  assertEquals(
    problems(
      "name: app\ntype: docker\nhealthCheck: /h\ncontainerPort: 70000\ndockerfile: ../x\nbuildArgs: {1X: a}\n",
    ),
    [
      'deploy.yml:4:16: "containerPort" must be from 1 to 65535 (got 70000)',
      'deploy.yml:5:13: "dockerfile" must stay inside the repository (no ..) (got "../x")',
      'deploy.yml:6:13: "buildArgs.1X" is not a build argument name: letters, digits and _, not starting with a digit',
    ],
  );
  // Every bad name and every bad value at once.
  const many = problems('name: app\ntype: docker\nhealthCheck: /h\nbuildArgs: {"BAD NAME": x, 1X: y, OK: [1]}\n');
  assertEquals(many.length, 3, many.join("\n"));
  assertMatch(many[2], /"buildArgs\.OK" must be a string, a number or true\/false/);
});

const BASE = "port: 8000\nmanager: pm2\n";

Deno.test("config.yml: domains are lowercased host names and wildcards; tls and hsts go with them", () => {
  const config = parseConfig(
    BASE + "domains: [Shop.Example.COM, '*.example.com', localhost, xn--bcher-kva.de]\nhsts: true\n" +
      "tls: { certificate: /etc/ssl/shop.pem, key: /etc/ssl/private/shop.key }\n",
    serverConfigSchema,
    "config.yml",
  );
  assertEquals(config.domains, ["shop.example.com", "*.example.com", "localhost", "xn--bcher-kva.de"]);
  assertEquals(config.hsts, true);
  assertEquals(config.tls, { certificate: "/etc/ssl/shop.pem", key: "/etc/ssl/private/shop.key" });
  const plain = parseConfig(BASE, serverConfigSchema, "config.yml");
  assertEquals([plain.domains, plain.hsts, plain.tls], [[], false, undefined]);
  assertEquals(parseConfig(BASE + "domains: []\n", serverConfigSchema, "c").domains, []);
});

Deno.test("config.yml: every bad domain is reported at once, at its entry, with what to write instead", () => {
  const text = BASE + [
    "domains:",
    "  - example.com",
    "  - https://Example.com/shop",
    "  - example.com:8080",
    "  - 203.0.113.7",
    "  - '[2001:db8::1]'",
    "  - api.example.com/v1",
    "  - a.*.example.com",
    "  - EXAMPLE.com",
    "  - my_app.example.com",
    "  - 42",
    "  - bücher.de",
    "  - example.com.",
    "  - .example.net",
    "  - -bad.example.com",
    "  - '*.com'",
    "",
  ].join("\n");
  assertEquals(problems(text, serverConfigSchema), [
    'deploy.yml:5:5: "domains.1" must be a host name, not a URL: write "example.com" (got "https://Example.com/shop")',
    'deploy.yml:6:5: "domains.2" must be a host name without a port (the proxy\'s ports are set in proxy.yml): ' +
    'write "example.com" (got "example.com:8080")',
    'deploy.yml:7:5: "domains.3" must be a host name, not an IP address (an app without domains is reached on its ' +
    'own port) (got "203.0.113.7")',
    'deploy.yml:8:5: "domains.4" must be a host name, not an IP address (an app without domains is reached on its ' +
    'own port) (got "[2001:db8::1]")',
    'deploy.yml:9:5: "domains.5" must be a host name without a path: write "api.example.com" (got "api.example.com/v1")',
    'deploy.yml:10:5: "domains.6" may use * only as the whole first label, as in *.example.com (got "a.*.example.com")',
    'deploy.yml:11:5: "domains.7" repeats domains.0: list each name once (got "EXAMPLE.com")',
    'deploy.yml:12:5: "domains.8" may hold only letters, digits, "-" and ".", not "_" (got "my_app.example.com")',
    'deploy.yml:13:5: "domains.9" must be a host name such as example.com (got 42)',
    'deploy.yml:14:5: "domains.10" must be written in ASCII: write its punycode form "xn--bcher-kva.de" ' +
    '(got "bücher.de")',
    'deploy.yml:15:5: "domains.11" must not end with a dot: write "example.com" (got "example.com.")',
    'deploy.yml:16:5: "domains.12" must not start with a dot: write "example.net", or "*.example.net" for every ' +
    'name under it (got ".example.net")',
    'deploy.yml:17:5: "domains.13" has a label that starts or ends with "-" ("-bad") (got "-bad.example.com")',
    'deploy.yml:18:5: "domains.14" must have at least two labels after *., as in *.example.com (got "*.com")',
  ]);
  assertEquals(problems(BASE + "domains: example.com\n", serverConfigSchema), [
    'deploy.yml:3:10: "domains" must be a list of host names, e.g. [example.com, www.example.com] (got "example.com")',
  ]);
});

Deno.test("hostNameProblem: RFC 1123 labels, 253 characters, a wildcard only as the whole first label", () => {
  for (
    const good of ["a", "a.b", "x-1.example.com", "*.example.com", "*.a.b.c", "EXAMPLE.com", `${"a".repeat(63)}.com`]
  ) {
    assertEquals(hostNameProblem(good), undefined, good);
  }
  const long = `${"a".repeat(60)}.`.repeat(4) + "abcdefghijklmnop";
  assertEquals(long.length, 260);
  assertEquals(hostNameProblem(long), "is longer than 253 characters (260)");
  assertEquals(
    hostNameProblem(`${"a".repeat(64)}.com`),
    'has a label longer than 63 characters ("aaaaaaaaaaaaaaaaaaaa...")',
  );
  assertEquals(hostNameProblem(""), "is empty: write a host name such as example.com");
  assertEquals(hostNameProblem("a..b"), "has an empty label (a leading dot, or two dots in a row)");
  assertEquals(hostNameProblem("*"), "must have at least two labels after *., as in *.example.com");
  for (const bad of ["*foo.example.com", "foo*.example.com", "*.*.example.com"]) {
    assertEquals(hostNameProblem(bad), "may use * only as the whole first label, as in *.example.com", bad);
  }
  assertEquals(hostNameProblem("a b.com"), 'may hold only letters, digits, "-" and ".", not " "');
  assertEquals(hostNameProblem("example.123"), "must not end in an all-digit label (it would read as an IP address)");
  for (const ip of ["::1", "[::1]:443", "10.0.0.1:80", "fe80::1"]) assertMatch(hostNameProblem(ip)!, /not an IP/, ip);
});

Deno.test("config.yml: tls needs absolute paths; tls and hsts need domains", () => {
  const bad = BASE + "domains: [a.example.com]\nhsts: yes\ntls: { certificate: a.pem, key: /k, ca: x }\n";
  assertEquals(problems(bad, serverConfigSchema), [
    'deploy.yml:4:7: "hsts" must be true or false (got "yes")',
    'deploy.yml:5:21: "tls.certificate" must be an absolute path without .., e.g. /etc/ssl/private/example.key ' +
    '(got "a.pem")',
    'deploy.yml:5:37: "tls.ca" is not a known key; known keys: certificate, key',
  ]);
  assertEquals(problems(BASE + "hsts: true\ntls: { certificate: /c.pem, key: /k.pem }\n", serverConfigSchema), [
    'deploy.yml:3:7: "hsts" is for apps with domains (HTTPS is served on the shared port, by host name) (got true)',
    'deploy.yml:4:6: "tls" is for apps with domains (HTTPS is served on the shared port, by host name) ' +
    "(got a mapping)",
  ]);
});

/** A server root with apps whose config.yml holds `text`; removed after `fn`. */
async function withApps(configs: Record<string, string>, fn: (root: string) => Promise<void>): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "dp-domains-" });
  try {
    for (const [app, text] of Object.entries(configs)) {
      await Deno.mkdir(appPaths(app, root).dir, { recursive: true });
      await Deno.writeTextFile(appPaths(app, root).config, text);
    }
    await fn(root);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

Deno.test("domainConflicts: an exact name or an identical wildcard claimed by two apps", async () => {
  await withApps({
    shop: BASE + "domains: [shop.example.com, '*.example.com', Both.Example.com]\n",
    blog: BASE + "domains: [blog.example.com, '*.example.com', both.example.com]\n",
    wiki: BASE + "domains: [a.example.com]\n", // under the wildcard: no conflict, the exact name wins
    api: BASE,
    broken: "port: [\n", // not YAML: claims nothing
  }, async (root) => {
    await Deno.mkdir(join(root, "opt", "deployments", ".tls"), { recursive: true }); // not an app
    assertEquals(await domainConflicts(root), [
      { domain: "*.example.com", apps: ["blog", "shop"] },
      { domain: "both.example.com", apps: ["blog", "shop"] },
    ]);
    const claims = await domainClaims(root);
    assertEquals(claims.get("a.example.com"), ["wiki"]);
    assertEquals(claims.get("shop.example.com"), ["shop"]);
    // What setup is about to write replaces the app's list.
    assertEquals(await domainConflicts(root, { blog: ["blog.example.com"], api: ["A.example.com"] }), [
      { domain: "a.example.com", apps: ["api", "wiki"] },
    ]);
  });
  const empty = await Deno.makeTempDir({ prefix: "dp-domains-" });
  assertEquals(await domainConflicts(empty), []); // no deployments root at all
  await Deno.remove(empty);
});

Deno.test("refuseTakenDomains: a usage error naming both apps and the domain", async () => {
  await withApps({ shop: BASE + "domains: [shop.example.com, www.shop.example.com]\n" }, async (root) => {
    await refuseTakenDomains("blog", ["blog.example.com"], { root }); // free
    await refuseTakenDomains("shop", ["shop.example.com"], { root }); // its own
    const refused = async (domains: string[], where?: string) => {
      try {
        await refuseTakenDomains("blog", domains, { root, where });
      } catch (error) {
        assert(error instanceof UsageError);
        assertEquals(error.exitCode, 2);
        return error;
      }
      throw new Error("expected a refusal");
    };
    const shopConfig = appPaths("shop", root).config;
    const one = await refused(["blog.example.com", "Shop.Example.com"]);
    assertEquals(
      one.message,
      `app "blog" cannot have the domain shop.example.com: app "shop" (${shopConfig}) has it already`,
    );
    assertMatch(one.suggestion!, /a domain belongs to one app/);
    const two = await refused(["shop.example.com", "www.shop.example.com"], "/x/config.yml");
    assertEquals(
      two.message,
      `app "blog" (/x/config.yml) cannot have these domains, other apps have them already: ` +
        `shop.example.com (app "shop", ${shopConfig}), www.shop.example.com (app "shop", ${shopConfig})`,
    );
  });
});

Deno.test("setup --domain: commas separate names; a space inside one is refused, as in config.yml", async () => {
  const { parseDomains } = await import("../../src/setup.ts");
  assertEquals(parseDomains(["Shop.Test, www.shop.test", "api.shop.test"]), [
    "shop.test",
    "www.shop.test",
    "api.shop.test",
  ]);
  assertEquals(parseDomains([""]), []);
  throws(() => parseDomains(["x y"]), /--domain: "x y"/);
});

/** deploy.yml with `extra` lines: the problems found, as "file:line:col: message". */
function canaryProblems(extra: string): string[] {
  try {
    parseConfig(`name: app\ntype: python\ncommand: ./x\nhealthCheck: /h\n${extra}`, deployFileSchema, "deploy.yml");
    return [];
  } catch (error) {
    return (error as ConfigError).problems;
  }
}

Deno.test("deploy.yml: canary and gates are validated with positions and how to fix them", () => {
  assertEquals(canaryProblems("canary: true\ngates: [./smoke.sh, { command: [./check, --x], timeout: 30s }]\n"), []);
  const cases: [string, RegExp][] = [
    ["canary: { steps: [25, 5] }", /^deploy\.yml:5:\d+: "canary\.steps\.1" must be above steps\.0 \(25\): steps go up/],
    ["canary: { steps: [0, 50] }", /"canary\.steps\.0" must be from 1 to 99/],
    ["canary: { steps: [50, 100] }", /"canary\.steps\.1" must be from 1 to 99/],
    ["canary: { steps: [] }", /"canary\.steps" must list at least one percentage/],
    [
      "canary: { maxErrorRate: 1 }",
      /"canary\.maxErrorRate" must be a share below 1 such as "1%" or 0.01 \(got 1\)/,
    ],
    ["canary: { maxErrorRate: 150% }", /"canary\.maxErrorRate" must be a share from "0%" to "100%"/],
    ["canary: { maxErrorRate: lots }", /"canary\.maxErrorRate" must be a share/],
    ["canary: { maxLatencyRatio: 1 }", /"canary\.maxLatencyRatio" must be above 1/],
    ["canary: { interval: soon }", /"canary\.interval" must be a duration/],
    ["canary: { interval: 2m, maxWait: 1m }", /"canary\.maxWait" must be at least interval/],
    ["canary: { minRequests: 0 }", /"canary\.minRequests" must be from 1/],
    ["canary: { onLowTraffic: maybe }", /"canary\.onLowTraffic" must be promote or revert/],
    ["canary: { stepz: [5] }", /"canary\.stepz" is not a known key; did you mean "steps"\?/],
    ["canary: 5", /"canary" must be true, or a mapping/],
    [
      "gates: [{ timeout: 1m }]",
      /^deploy\.yml:5:\d+: "gates\.0\.command" is required, e.g\. command: \.\/scripts\/smoke\.sh/,
    ],
    ["gates: [{ command: ./s, timeout: forever }]", /"gates\.0\.timeout" must be a duration/],
    ["gates: ./smoke.sh", /"gates" must be a list of checks/],
  ];
  for (const [yaml, expected] of cases) {
    const found = canaryProblems(yaml);
    assertEquals(found.length >= 1, true, `${yaml}: no problem found`);
    assertMatch(found[0], expected);
  }
  const parsed = parseConfig(
    "name: a\ntype: python\ncommand: ./x\nhealthCheck: /h\ncanary: { maxErrorRate: 2.5% }\n",
    deployFileSchema,
    "deploy.yml",
  );
  assertEquals(parsed.canary, {
    steps: [5, 25, 50],
    interval: 60_000,
    maxErrorRate: 0.025,
    maxLatencyRatio: 1.5,
    minRequests: 50,
    maxWait: 600_000,
    onLowTraffic: "revert",
  });
});

Deno.test("deploy-paradigm schema: canary takes true, a gate a string, command required in the object form", async () => {
  const { deployFileJsonSchema } = await import("../../src/config/schema.ts");
  const properties = deployFileJsonSchema().properties as Record<string, Record<string, unknown>>;
  const canary = properties.canary.anyOf as Record<string, unknown>[];
  assertEquals(canary[0], { type: "boolean" });
  const interval = (canary[1].properties as Record<string, Record<string, unknown>>).interval;
  assertEquals(interval.default, "1m");
  assertMatch(String(interval.description), /a duration such as "30s" or "2m"\. Default 1m\./);
  const gate = (properties.gates.items as { anyOf: Record<string, unknown>[] }).anyOf;
  assertEquals(gate[0], { type: "string" });
  assertEquals(gate[2].required, ["command"]);
});

Deno.test("deploy.yml, config.yml: checks across keys are reported with the other problems, never about a key that has its own", () => {
  assertEquals(problems("name: app\ntype: python\nwatch: x\n"), [
    'deploy.yml:1:1: "healthCheck" is required for python apps, e.g. healthCheck: /health',
    'deploy.yml:3:8: "watch" must be a duration like "500ms", "2s", "1m" or "1h" (units: ms, s, m, h) (got "x")',
  ]);
  // A healthCheck that is there but wrong is not also "required"; an unknown type judges nothing else.
  assertEquals(problems("name: app\ntype: python\nhealthCheck: 5\n").length, 1);
  assertEquals(problems("name: app\ntype: pythn\ncron: [{ name: a, schedule: '@daily', command: x }]\n").length, 1);
  assertEquals(
    problems("name: App\ntype: docker\nhealthCheck: /\ncron: [{ name: a, schedule: '@daily', command: x }]\n"),
    [
      'deploy.yml:1:7: "name" must be 1-63 lowercase letters, digits or dashes, starting with a letter or digit ' +
      '(got "App")',
      'deploy.yml:4:7: "cron" is not for docker apps yet (their release has no runtime) (got a list)',
    ],
  );
  assertEquals(problems("port: 80\nmanager: nope\nhsts: true\nslots: { blue: 80, green: 81 }\n", serverConfigSchema), [
    'deploy.yml:2:10: "manager" must be one of systemd, pm2 (got "nope")',
    'deploy.yml:3:7: "hsts" is for apps with domains (HTTPS is served on the shared port, by host name) (got true)',
    'deploy.yml:4:8: "slots" must be two different ports, neither of them the app\'s port 80 (remove slots: and the ' +
    "next deploy chooses them) (got a mapping)",
  ]);
  // Process names and commands are judged beside the processes' own problems.
  const processes = "name: app\ntype: python\nhealthCheck: /\nprocesses:\n  web: { instances: 17 }\n" +
    "  blue: python w.py\n  Worker: python w.py\n  q: { instances: 2 }\n  r: { instances: 0 }\n";
  assertEquals(problems(processes).map((problem) => problem.split(" ").slice(0, 2).join(" ")), [
    'deploy.yml:5:21: "processes.web.instances"',
    'deploy.yml:6:9: "processes.blue"',
    'deploy.yml:7:11: "processes.Worker"',
    'deploy.yml:8:6: "processes.q.command"',
    'deploy.yml:9:19: "processes.r.instances"',
  ]);
  // A fraction where a whole number goes (zod's one problem that stops the checks across keys): both said.
  assertEquals(problems("name: app\ntype: python\nkeepReleases: 2.5\n"), [
    'deploy.yml:1:1: "healthCheck" is required for python apps, e.g. healthCheck: /health',
    'deploy.yml:3:15: "keepReleases" must be a whole number from 2 to 100 (got 2.5)',
  ]);
  // domains with a problem of its own: whether hsts needs them is not judged.
  assertEquals(problems("port: 80\nmanager: pm2\ndomains: [bad..name]\nhsts: true\n", serverConfigSchema).length, 1);
});

Deno.test("deploy.yml: a key named like an Object property (constructor, toString) is an unknown key, not a hint", () => {
  for (const key of ["constructor", "toString", "__proto__"]) {
    const [problem] = problems(`name: app\ntype: static\n${key}: x\n`);
    assertMatch(problem, new RegExp(`^deploy\\.yml:3:1: "${key}" is not a known key`));
  }
});
