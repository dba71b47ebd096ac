/**
 * Smaller modules: .env parsing, release ids, did-you-mean, the CLI parser, pkt-lines, the git
 * hook, `init`, the health check (against a real loopback server), the deploy lock, and `status`
 * with certificates (the text, and status.json taking the certificate when written).
 */
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { rejects, throws } from "node:assert/strict";
import { join } from "node:path";
import { parseDotenv } from "../../src/deploy/dotenv.ts";
import { listReleases, newReleaseId, releaseIdAt } from "../../src/deploy/releases.ts";
import { type AppPaths, appPaths, selfCommand } from "../../src/paths.ts";
import { ConfigError, DeployParadigmError, didYouMean, UsageError } from "../../src/errors.ts";
import { type CommandSpec, parseInvocation, runCli } from "../../src/cli.ts";
import { program } from "../../src/commands/mod.ts";
import { pkt, PktReader } from "../../src/receive.ts";
import { renderHook, shellQuote } from "../../src/hook.ts";
import { detectType, nameFromFolder, renderDeployYml } from "../../src/init.ts";
import { parseConfig } from "../../src/config/load.ts";
import { deployFileSchema, type HealthCheck } from "../../src/config/schema.ts";
import { checkHealth, seenText } from "../../src/deploy/health.ts";
import { until } from "../helpers/time.ts";
import { acquireLock, type LockOwner } from "../../src/deploy/lock.ts";
import { type AppStatus, readStatus, writeStatus } from "../../src/deploy/status.ts";
import type { CertificateState } from "../../src/proxy/cert_state.ts";
import { statusLines } from "../../src/status_view.ts";
import { DEPLOY } from "../../src/deploy/steps/mod.ts";

// ---------------------------------------------------------------- .env

Deno.test("selfCommand: DEPLOY_PARADIGM_SELF, else from source the launcher (the runtime alone would run nothing)", async () => {
  const set = Deno.env.get("DEPLOY_PARADIGM_SELF");
  try {
    Deno.env.delete("DEPLOY_PARADIGM_SELF");
    const launcher = join(import.meta.dirname!, "..", "..", "bin", "deploy-paradigm");
    assertEquals(selfCommand(), await Deno.realPath(launcher)); // this test runs under `deno`, from source
    assert(((await Deno.stat(selfCommand())).mode! & 0o111) !== 0, "the launcher is executable");
    Deno.env.set("DEPLOY_PARADIGM_SELF", "/usr/local/bin/deploy-paradigm");
    assertEquals(selfCommand(), "/usr/local/bin/deploy-paradigm");
  } finally {
    if (set === undefined) Deno.env.delete("DEPLOY_PARADIGM_SELF");
    else Deno.env.set("DEPLOY_PARADIGM_SELF", set);
  }
});

Deno.test("parseDotenv: KEY=value lines, comments, export, quotes", () => {
  const text = [
    "# a comment",
    "",
    "PLAIN=value",
    "export EXPORTED = spaced ",
    "SINGLE='a b $HOME \\n'",
    'DOUBLE="line1\\nline2 \\"q\\" \\\\ $HOME"',
    "INLINE=v # trailing comment",
    "HASH=a#b",
    "EMPTY=",
    "  INDENTED=yes",
    "URL=postgres://u:p@h:5432/db?x=1",
    "",
  ].join("\n");
  assertEquals(parseDotenv(text, ".env"), {
    PLAIN: "value",
    EXPORTED: "spaced",
    SINGLE: "a b $HOME \\n",
    DOUBLE: 'line1\nline2 "q" \\ $HOME',
    INLINE: "v",
    HASH: "a#b",
    EMPTY: "",
    INDENTED: "yes",
    URL: "postgres://u:p@h:5432/db?x=1",
  });
});

Deno.test("parseDotenv: CRLF line endings and later values win", () => {
  assertEquals(parseDotenv("A=1\r\nB='x'\r\nA=2\r\n", ".env"), { A: "2", B: "x" });
  assertEquals(parseDotenv("", ".env"), {});
});

Deno.test("parseDotenv: every bad line is reported with its line number", () => {
  try {
    parseDotenv("A=1\nnot a pair\n1X=2\nB=3\nC-D=4\n", "/srv/.env.production");
    assert(false, "should have thrown");
  } catch (error) {
    assert(error instanceof ConfigError);
    assertEquals(error.exitCode, 2);
    assertEquals(error.problems, [
      "/srv/.env.production:2:1: expected KEY=value (KEY of letters, digits and _)",
      "/srv/.env.production:3:1: expected KEY=value (KEY of letters, digits and _)",
      "/srv/.env.production:5:1: expected KEY=value (KEY of letters, digits and _)",
    ]);
    assertMatch(error.message, /^Cannot read \/srv\/\.env\.production:\n/);
  }
});

// ---------------------------------------------------------------- release ids

Deno.test("releaseIdAt: UTC YYYYMMDD-HHMMSS-mmm", () => {
  assertEquals(releaseIdAt(Date.UTC(2026, 10, 29, 5, 0, 33, 123)), "20261129-050033-123");
  assertEquals(releaseIdAt(Date.UTC(2026, 0, 2, 3, 4, 5, 6)), "20260102-030405-006");
  assertEquals(releaseIdAt(0), "19700101-000000-000");
});

Deno.test("releaseIdAt: text order is time order", () => {
  const times = [
    Date.UTC(2025, 11, 31, 23, 59, 59, 999),
    Date.UTC(2026, 0, 1),
    Date.UTC(2026, 0, 1, 0, 0, 0, 1),
    Date.UTC(2026, 0, 1, 0, 0, 1),
    Date.UTC(2026, 0, 1, 9, 0, 0),
    Date.UTC(2026, 0, 1, 10, 0, 0),
    Date.UTC(2026, 9, 1),
  ];
  const ids = times.map(releaseIdAt);
  assertEquals([...ids].sort(), ids);
  assertEquals(new Set(ids).size, ids.length);
});

/** Runs `fn` with the app paths of "web" under a fresh temp prefix, which is removed afterwards. */
async function withTempApp(fn: (paths: AppPaths) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "dp-unit-" });
  try {
    const paths = appPaths("web", dir);
    assert(paths.releases.startsWith(dir), paths.releases);
    await fn(paths);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("newReleaseId: later than every existing release, even in the same millisecond", async () => {
  await withTempApp(async (paths) => {
    const now = Date.UTC(2026, 5, 1, 12, 0, 0, 500);
    // No releases directory yet.
    assertEquals(await newReleaseId(paths, now), releaseIdAt(now));
    await Deno.mkdir(paths.releases, { recursive: true });
    assertEquals(await newReleaseId(paths, now), releaseIdAt(now));

    const first = await newReleaseId(paths, now);
    await Deno.mkdir(paths.release(first));
    const second = await newReleaseId(paths, now);
    assertEquals(second, releaseIdAt(now + 1));
    await Deno.mkdir(paths.release(second));
    const third = await newReleaseId(paths, now);
    assertEquals(third, releaseIdAt(now + 2));
    assert(first < second && second < third);

    // The clock went back: still after the newest release.
    const future = releaseIdAt(now + 60_000);
    await Deno.mkdir(paths.release(future));
    const afterFuture = await newReleaseId(paths, now);
    assertEquals(afterFuture, releaseIdAt(now + 60_001));
    // An ordinary later time is used as it is.
    assertEquals(await newReleaseId(paths, now + 120_000), releaseIdAt(now + 120_000));
    // A release from a clock once set decades ahead: the next id follows it at once (it used to count up to it).
    const far = releaseIdAt(Date.UTC(2099, 0, 1));
    await Deno.mkdir(paths.release(far));
    assertEquals(await newReleaseId(paths, now), releaseIdAt(Date.UTC(2099, 0, 1) + 1));
    // A directory that looks like a release but is no time (day 00): refused, never an id that sorts before it.
    await Deno.mkdir(paths.release("99990100-000000-000"));
    await rejects(() => newReleaseId(paths, now), /is not a valid release time/);
  });
});

Deno.test("newReleaseId/listReleases: only release directories count", async () => {
  await withTempApp(async (paths) => {
    const now = Date.UTC(2026, 5, 1);
    await Deno.mkdir(paths.releases, { recursive: true });
    await Deno.mkdir(join(paths.releases, ".20990101-000000-000.partial"));
    await Deno.mkdir(join(paths.releases, "notes"));
    await Deno.writeTextFile(join(paths.releases, "20990101-000000-001"), "a file, not a release");
    const old = releaseIdAt(now - 1000);
    await Deno.mkdir(paths.release(old));
    assertEquals(await listReleases(paths), [old]);
    assertEquals(await newReleaseId(paths, now), releaseIdAt(now));
  });
});

// ---------------------------------------------------------------- did you mean

Deno.test("didYouMean: close typos, prefixes, and nothing for unrelated words", () => {
  const commands = ["init", "execute", "receive", "status", "schema"];
  assertEquals(didYouMean("stauts", commands), "status");
  assertEquals(didYouMean("exectue", commands), "execute");
  assertEquals(didYouMean("recieve", commands), "receive");
  assertEquals(didYouMean("INIT", commands), "init");
  assertEquals(didYouMean("sch", commands), "schema");
  assertEquals(didYouMean("helthCheck", ["name", "healthCheck", "command"]), "healthCheck");
  assertEquals(didYouMean("deploy", commands), undefined);
  assertEquals(didYouMean("xyz", commands), undefined);
  assertEquals(didYouMean("status", []), undefined);
});

// ---------------------------------------------------------------- CLI

function command(name: string): CommandSpec {
  const found = program.commands.find((c) => c.name === name);
  assert(found, `no command ${name}`);
  return found;
}

/** Asserts that `fn` throws a UsageError whose message (and suggestion) match. */
function usageError(fn: () => unknown, message: RegExp, suggestion?: RegExp): void {
  throws(fn, (error: unknown) => {
    assert(error instanceof UsageError, `expected a UsageError, got ${error}`);
    assertEquals(error.exitCode, 2);
    assertMatch(error.message, message);
    if (suggestion) assertMatch(error.suggestion ?? "", suggestion);
    return true;
  });
}

Deno.test("parseInvocation: arguments and options by spec", () => {
  assertEquals(parseInvocation(program, command("status"), []), { args: [], opts: {} });
  assertEquals(parseInvocation(program, command("status"), ["web", "--json"]), {
    args: ["web"],
    opts: { json: true },
  });
  assertEquals(
    parseInvocation(program, command("execute"), [
      "/r.git",
      "abc",
      "--ref=refs/heads/main",
      "--old",
      "000",
      "--dry-run",
    ]),
    { args: ["/r.git", "abc"], opts: { ref: "refs/heads/main", old: "000", "dry-run": true } },
  );
  assertEquals(parseInvocation(program, command("init"), ["-f", "--name", "web", "--type=node"]), {
    args: [],
    opts: { force: true, name: "web", type: "node" },
  });
  // After "--", everything is an argument.
  assertEquals(parseInvocation(program, command("receive"), ["--", "--weird.git"]), {
    args: ["--weird.git"],
    opts: {},
  });
});

Deno.test("canary and maintenance with the app and the word swapped: said so, with the command the right way round", async () => {
  const root = await Deno.makeTempDir({ prefix: "dp-swapped-" });
  const before = Deno.env.get("DEPLOY_PARADIGM_PREFIX");
  try {
    Deno.env.set("DEPLOY_PARADIGM_PREFIX", root);
    await Deno.mkdir(join(root, "opt/deployments/web"), { recursive: true });
    await Deno.writeTextFile(join(root, "opt/deployments/web/config.yml"), "port: 8000\nmanager: pm2\n");
    const cases: [string, string[], string][] = [
      ["canary", ["promote", "web"], "canary web promote"],
      ["maintenance", ["off", "web"], "maintenance web off"],
    ];
    for (const [name, args, fixed] of cases) {
      const error = await command(name).run({ args, opts: {} }).catch((e) => e);
      assert(error instanceof UsageError, String(error));
      assertEquals(error.suggestion, `deploy-paradigm ${fixed}`);
    }
    // An app may be named on or promote: the swap is suggested only for an app that is set up.
    for (const [name, args] of [["maintenance", ["on", "onn"]], ["canary", ["abort", "Web"]]] as [string, string[]][]) {
      const error = await command(name).run({ args, opts: {} }).catch((e) => e);
      assert(error instanceof UsageError && !/app first/.test(error.message), String(error));
    }
  } finally {
    if (before === undefined) Deno.env.delete("DEPLOY_PARADIGM_PREFIX");
    else Deno.env.set("DEPLOY_PARADIGM_PREFIX", before);
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("parseInvocation: a single-value option given twice is refused (no silent last-wins)", () => {
  usageError(
    () => parseInvocation(program, command("setup"), ["web", "--port", "8000", "--port=9000"]),
    /^option --port is given twice \("8000", then "9000"\)$/,
  );
});

Deno.test("parseInvocation: unknown option with did-you-mean", () => {
  usageError(
    () => parseInvocation(program, command("status"), ["--jsn"]),
    /^unknown option "--jsn" for "status"$/,
    /^did you mean "--json"\? \(see deploy-paradigm status --help\)$/,
  );
  usageError(
    () => parseInvocation(program, command("execute"), ["a", "b", "--dryrun"]),
    /unknown option "--dryrun"/,
    /did you mean "--dry-run"/,
  );
  usageError(
    () => parseInvocation(program, command("status"), ["--zzzzzz"]),
    /unknown option "--zzzzzz"/,
    /^see deploy-paradigm status --help$/,
  );
  usageError(() => parseInvocation(program, command("status"), ["-x"]), /unknown option "-x" for "status"/);
});

Deno.test("parseInvocation: missing and extra arguments", () => {
  usageError(
    () => parseInvocation(program, command("execute"), []),
    /^"execute" needs <git-dir>$/,
    /see deploy-paradigm execute --help/,
  );
  usageError(() => parseInvocation(program, command("execute"), ["/r.git"]), /^"execute" needs <commit>$/);
  usageError(
    () => parseInvocation(program, command("status"), ["a", "b"]),
    /^"status" takes at most 1 argument, got 2$/,
  );
  usageError(() => parseInvocation(program, command("schema"), ["x"]), /"schema" takes no arguments, got 1/);
});

Deno.test("parseInvocation: option values and choices", () => {
  usageError(() => parseInvocation(program, command("init"), ["--name"]), /^option --name needs a value <name>$/);
  usageError(
    () => parseInvocation(program, command("init"), ["--type", "ruby"]),
    /^option --type must be one of python, node, docker, static \(got "ruby"\)$/,
  );
  usageError(() => parseInvocation(program, command("init"), ["--force=yes"]), /^option --force takes no value$/);
});

Deno.test("runCli: unknown command with did-you-mean", async () => {
  await rejects(runCli(program, ["stauts"]), (error: unknown) => {
    assert(error instanceof UsageError);
    assertEquals(error.message, 'unknown command "stauts"');
    assertEquals(error.suggestion, 'did you mean "status"? (see deploy-paradigm --help)');
    return true;
  });
  await rejects(
    runCli(program, ["deploy"]),
    (error: unknown) =>
      error instanceof UsageError && error.message === 'unknown command "deploy"' &&
      error.suggestion === "see deploy-paradigm --help",
  );
});

Deno.test("runCli: usage errors are thrown before a command runs", async () => {
  await rejects(runCli(program, ["status", "--jsn"]), /unknown option "--jsn"/);
  await rejects(runCli(program, ["execute", "/r.git"]), (e: unknown) => e instanceof UsageError);
  await rejects(runCli(program, ["receive", "a", "b"]), /takes at most 1 argument/);
  await rejects(runCli(program, ["-V", "x"]), /-V takes no arguments \(got "x"\)/);
});

Deno.test("runCli: --version, help and no arguments", async () => {
  const printed: string[] = [];
  const log = console.log;
  console.log = (...args: unknown[]) => printed.push(args.join(" "));
  try {
    assertEquals(await runCli(program, ["--version"]), 0);
    assertEquals(printed.pop(), program.version);
    assertEquals(await runCli(program, []), 2);
    assertMatch(printed.pop()!, /^deploy-paradigm .*\n\nUsage: deploy-paradigm <command>/);
    assertEquals(await runCli(program, ["help", "status"]), 0);
    assertMatch(printed.pop()!, /^Usage: deploy-paradigm status \[app\] \[options\]/);
    assertEquals(await runCli(program, ["init", "--help"]), 0);
    assertMatch(printed.pop()!, /--type <type>.*\(python\|node\|docker\|static\)/);
  } finally {
    console.log = log;
  }
});

// ---------------------------------------------------------------- pkt-lines

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

Deno.test("pkt: 4 hex digits of length (header included), then the data", () => {
  assertEquals(text(pkt("hello\n")), "000ahello\n");
  assertEquals(text(pkt("")), "0004");
  assertEquals(text(pkt(null)), "0000");
  // The length counts bytes, not characters.
  assertEquals(text(pkt("é")), "0006é");
  assertEquals(text(pkt("x".repeat(300))).slice(0, 4), "0130");
});

/** A reader that hands out `data` in chunks of at most `size` bytes, then end of file. */
function fakeReader(data: Uint8Array, size: number) {
  let at = 0;
  return {
    reads: 0,
    read(p: Uint8Array): Promise<number | null> {
      this.reads++;
      if (at >= data.length) return Promise.resolve(null);
      const n = Math.min(size, p.length, data.length - at);
      p.set(data.subarray(at, at + n));
      at += n;
      return Promise.resolve(n);
    },
  };
}

const concat = (...parts: Uint8Array[]) => new Uint8Array(parts.flatMap((p) => [...p]));

Deno.test("PktReader: decodes lines and flushes across arbitrary chunk boundaries", async () => {
  const sha = "a".repeat(40);
  const stream = concat(
    pkt("version=1\0report-status"),
    pkt(null),
    pkt(`${"0".repeat(40)} ${sha} refs/heads/main\n`),
    pkt(`${sha} ${"0".repeat(40)} refs/heads/old`),
    pkt(null),
    pkt("é"),
  );
  for (const size of [1, 3, 7, stream.length]) {
    const source = fakeReader(stream, size);
    const reader = new PktReader(source);
    assertEquals(await reader.readSection(), ["version=1\0report-status"]);
    assertEquals(await reader.readSection(), [
      `${"0".repeat(40)} ${sha} refs/heads/main`,
      `${sha} ${"0".repeat(40)} refs/heads/old`,
    ]);
    assertEquals(await reader.read(), "é");
    await rejects(reader.read(), /git closed the connection in the middle of the protocol/);
    if (size === 1) assert(source.reads > stream.length, "reads one byte at a time");
  }
});

Deno.test("PktReader: an empty section and a malformed length", async () => {
  assertEquals(await new PktReader(fakeReader(pkt(null), 100)).readSection(), []);
  for (const bad of ["zzzzhello", " 00ahello", "0003", "fff1xxxx", "0x10hello"]) {
    const error = await new PktReader(fakeReader(new TextEncoder().encode(bad), 100)).read().catch((e) => e);
    assert(error instanceof UsageError, `${bad}: ${error}`); // bad input: exit 2, as the README says
    assertMatch(error.message, /^malformed pkt-line from git \(length "/);
  }
  // Nothing at all: no git at the other end (receive run by hand).
  await rejects(new PktReader(fakeReader(new Uint8Array(0), 100)).read(), /nothing came from git on the input/);
  // A packet cut short by the end of input.
  await rejects(new PktReader(fakeReader(pkt("hello").slice(0, 6), 100)).read(), /closed the connection/);
});

// ---------------------------------------------------------------- git hook

Deno.test('renderHook: execs the quoted command with receive "$GIT_DIR"', () => {
  const hook = renderHook("/usr/local/bin/deploy-paradigm");
  assert(hook.startsWith("#!/usr/bin/env bash\n"), hook);
  const lines = hook.split("\n");
  assert(lines.includes(`exec '/usr/local/bin/deploy-paradigm' receive "$GIT_DIR"`), hook);
  assert(!lines.some((l) => l.startsWith("export ")), hook);
  assert(!hook.includes("__"), `placeholder left in:\n${hook}`);
});

Deno.test("renderHook: exports, and quoting of spaces and single quotes", () => {
  const hook = renderHook("/opt/my tools/deploy-paradigm", {
    DEPLOY_PARADIGM_PREFIX: "/tmp/it's here",
    PM2_HOME: "/srv/pm2",
  });
  const lines = hook.split("\n");
  assert(lines.includes(`export DEPLOY_PARADIGM_PREFIX='/tmp/it'\\''s here'`), hook);
  assert(lines.includes(`export PM2_HOME='/srv/pm2'`), hook);
  assert(lines.includes(`exec '/opt/my tools/deploy-paradigm' receive "$GIT_DIR"`), hook);
  // Exports come before the exec.
  assert(lines.findIndex((l) => l.startsWith("export ")) < lines.findIndex((l) => l.startsWith("exec ")));
  assert(!hook.includes("__"), hook);
});

Deno.test("shellQuote: single quotes with '\\'' for embedded quotes", () => {
  assertEquals(shellQuote("plain"), "'plain'");
  assertEquals(shellQuote(""), "''");
  assertEquals(shellQuote('$HOME `x` "y"'), "'$HOME `x` \"y\"'");
  assertEquals(shellQuote("it's"), "'it'\\''s'");
});

// ---------------------------------------------------------------- init

Deno.test("detectType: Dockerfile, then python, then node, then static", () => {
  assertEquals(detectType(new Set(["Dockerfile", "package.json", "requirements.txt"])), "docker");
  assertEquals(detectType(new Set(["package.json", "requirements.txt"])), "python");
  assertEquals(detectType(new Set(["pyproject.toml", "index.html"])), "python");
  assertEquals(detectType(new Set(["package.json", "index.html"])), "node");
  assertEquals(detectType(new Set(["index.html", "README.md"])), "static");
  assertEquals(detectType(new Set(["README.md"])), undefined);
  assertEquals(detectType(new Set()), undefined);
});

Deno.test("nameFromFolder: lowercase, dashes, at most 63 characters, else app", () => {
  assertEquals(nameFromFolder("My App"), "my-app");
  assertEquals(nameFromFolder("my_api.v2"), "my-api-v2");
  assertEquals(nameFromFolder("__web__"), "web");
  assertEquals(nameFromFolder("already-fine-1"), "already-fine-1");
  assertEquals(nameFromFolder("a".repeat(80)), "a".repeat(63));
  assertEquals(nameFromFolder("---"), "app");
  assertEquals(nameFromFolder(""), "app");
  assertEquals(nameFromFolder("日本"), "app");
  assertEquals(nameFromFolder("Deploy-Paradigm-Site"), "app", "a reserved name (the tool's own services)");
});

Deno.test("renderDeployYml: a node app with a start script renders a valid deploy.yml", () => {
  const yml = renderDeployYml("web", "node", {
    files: new Set(["package.json"]),
    packageJson: { scripts: { start: "node server.js" } },
  });
  assert(!yml.includes("__"), `placeholder left in:\n${yml}`);
  assertMatch(yml, /^# yaml-language-server: \$schema=https:\/\/\S+deploy\.schema\.json\n/);
  assertMatch(yml, /\/opt\/deployments\/web\/\.env\.<env>/);
  const deploy = parseConfig(yml, deployFileSchema, "deploy.yml");
  assertEquals(deploy.name, "web");
  assertEquals(deploy.type, "node");
  assertEquals(deploy.command, "node server.js");
  assertEquals(deploy.healthCheck?.path, "/health");
  assertEquals(deploy.keepReleases, 3);
});

Deno.test("renderDeployYml: python with app.py, python without, and static", () => {
  const py = parseConfig(
    renderDeployYml("api", "python", { files: new Set(["requirements.txt", "app.py"]) }),
    deployFileSchema,
    "deploy.yml",
  );
  assertEquals([py.type, py.command, py.healthCheck?.path], ["python", "python app.py", "/health"]);

  const unknown = renderDeployYml("api", "python", { files: new Set(["requirements.txt"]) });
  // No entry point found: the command is left commented with an example, so the deploy's own
  // validation explains what is missing instead of running a placeholder.
  assertMatch(unknown, /^# command: python app\.py {3}# set this: no app\.py, main\.py or server\.py was found$/m);
  assertEquals(parseConfig(unknown, deployFileSchema, "deploy.yml").command, undefined);

  const site = renderDeployYml("site", "static", { files: new Set(["index.html"]) });
  assertMatch(site, /^# command: \(none: the static files are served as they are\)$/m);
  const parsed = parseConfig(site, deployFileSchema, "deploy.yml");
  assertEquals([parsed.name, parsed.type, parsed.command, parsed.healthCheck?.path], [
    "site",
    "static",
    undefined,
    "/",
  ]);
});

Deno.test("renderDeployYml: a command with spaces is quoted so it splits back the same", () => {
  const yml = renderDeployYml("web", "node", {
    files: new Set(["package.json"]),
    packageJson: { main: "my server.js" },
  });
  const deploy = parseConfig(yml, deployFileSchema, "deploy.yml");
  assertEquals(deploy.command, "node 'my server.js'");
});

// ---------------------------------------------------------------- health check

/** Serves on 127.0.0.1:<free port>; `status(n)` answers the n-th request (from 1). */
async function withHealthServer(
  status: (n: number) => number,
  fn: (url: string, requests: () => number) => Promise<void>,
): Promise<void> {
  let count = 0;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => {
    count++;
    return new Response(`request ${count}`, { status: status(count) });
  });
  try {
    await fn(`http://127.0.0.1:${server.addr.port}/health`, () => count);
  } finally {
    await server.shutdown();
  }
}

const check = (fields: Partial<HealthCheck>): HealthCheck => ({
  path: "/health",
  window: 5000,
  interval: 50,
  successes: 3,
  timeout: 1000,
  ...fields,
});

Deno.test("checkHealth: healthy after N consecutive 2xx, after some 500s", async () => {
  await withHealthServer((n) => (n <= 2 ? 500 : 200), async (url, requests) => {
    const result = await checkHealth(url, check({ successes: 3 }));
    assertEquals(result.healthy, true);
    assertEquals(result.attempts, 5);
    assertEquals(result.successes, 3);
    assertEquals(result.problems, { "answered 500 Internal Server Error": 2 });
    assertEquals(requests(), 5);
    assert(!Number.isNaN(Date.parse(result.checkedAt)));
  });
});

Deno.test("checkHealth: a failure resets the run of successes", async () => {
  // 200, 500, 200, 200 → healthy only at the 4th attempt with successes: 2.
  await withHealthServer((n) => (n === 2 ? 503 : 200), async (url) => {
    const result = await checkHealth(url, check({ successes: 2 }));
    assertEquals([result.healthy, result.attempts, result.successes], [true, 4, 2]);
    assertEquals(result.problems, { "answered 503 Service Unavailable": 1 });
  });
});

Deno.test("checkHealth: unhealthy when it always answers 500 within the window", async () => {
  await withHealthServer(() => 500, async (url, requests) => {
    const started = Date.now();
    const result = await checkHealth(url, check({ window: 600, interval: 50 }));
    const elapsed = Date.now() - started;
    assertEquals(result.healthy, false);
    assertEquals(result.successes, 0);
    assertEquals(result.problems, { "answered 500 Internal Server Error": result.attempts });
    assert(result.attempts >= 3, `only ${result.attempts} attempts`);
    assertEquals(requests(), result.attempts);
    assert(elapsed < 3000, `took ${elapsed}ms for a 600ms window`);
  });
});

Deno.test("checkHealth: connection refused is reported as such", async () => {
  let port = 0;
  await withHealthServer(() => 200, (url) => {
    port = Number(new URL(url).port);
    return Promise.resolve();
  });
  const result = await checkHealth(`http://127.0.0.1:${port}/health`, check({ window: 200, interval: 50 }));
  assertEquals(result.healthy, false);
  assertEquals(Object.keys(result.problems), ["connection refused (nothing listens on the port)"]);
});

Deno.test("checkHealth: counts each problem it met, in the order met", async () => {
  await withHealthServer((n) => (n <= 2 ? 503 : 500), async (url) => {
    const result = await checkHealth(url, check({ window: 2_000, interval: 50 }));
    assertEquals(result.healthy, false);
    assertEquals(Object.keys(result.problems), [
      "answered 503 Service Unavailable",
      "answered 500 Internal Server Error",
    ]);
    assertEquals(result.problems["answered 503 Service Unavailable"], 2);
    assertEquals(result.problems["answered 500 Internal Server Error"], result.attempts - 2);
  });
});

Deno.test("seenText: each problem with its count in the order met, a cap on how many, the 2xx run it ended with", () => {
  const result = (problems: Record<string, number>, successes = 0) => ({
    healthy: false,
    attempts: 0,
    successes,
    problems,
    checkedAt: "",
  });
  assertEquals(
    seenText(
      result({ "connection refused (nothing listens on the port)": 2, "answered 500 Internal Server Error": 9 }),
    ),
    "connection refused (nothing listens on the port) ×2, answered 500 Internal Server Error ×9",
  );
  // successes: 3 and the window ended after two 2xx answers: the message says so rather than nothing.
  assertEquals(
    seenText(result({ "answered 503 Service Unavailable": 1 }, 2)),
    "answered 503 Service Unavailable ×1, then 2 2xx in a row",
  );
  assertEquals(seenText(result({}, 2)), "then 2 2xx in a row");
  const many = Object.fromEntries(["a", "b", "c", "d", "e", "f"].map((p, i) => [`problem ${p}`, i + 1]));
  assertEquals(
    seenText(result(many)),
    "problem a ×1, problem b ×2, problem c ×3, problem d ×4, 2 other problems ×11",
  );
});

Deno.test("checkHealth: a timer that wakes past the window makes no attempt cut down to nothing", async () => {
  // A busy machine: the event loop is held from 100 ms to past the 600 ms window while the check
  // sleeps its 200 ms interval. Before, the wake-up probed with a 1 ms timeout and reported
  // "no answer within 1ms" in place of what the app had answered.
  await withHealthServer(() => 500, async (url) => {
    const started = Date.now();
    const hold = setTimeout(() => {
      while (Date.now() - started < 700) { /* the machine is busy */ }
    }, 100);
    try {
      const result = await checkHealth(url, check({ window: 600, interval: 200 }));
      assertEquals([result.healthy, result.attempts], [false, 1]);
      assertEquals(result.problems, { "answered 500 Internal Server Error": 1 });
    } finally {
      clearTimeout(hold);
    }
  });
});

// ---------------------------------------------------------------- deploy lock

Deno.test("acquireLock: a second acquire waits until the first releases", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dp-lock-" });
  try {
    const path = join(dir, ".deploy.lock");
    const waits: (LockOwner | undefined)[] = [];
    const first = await acquireLock(path, { pid: 111, commit: "aaaaaaa" }, () => assert(false, "nobody held it"));
    const holder = JSON.parse(await Deno.readTextFile(path)) as LockOwner;
    assertEquals([holder.pid, holder.commit], [111, "aaaaaaa"]);
    assert(!Number.isNaN(Date.parse(holder.since)));
    assertEquals((await Deno.stat(path)).mode! & 0o777, 0o600);

    let acquired = false;
    const secondPromise = acquireLock(path, { pid: 222, commit: "bbbbbbb" }, (owner) => waits.push(owner)).then(
      (lock) => {
        acquired = true;
        return lock;
      },
    );
    // Waits for the call of onWait (after 100 ms of waiting; later on a busy machine), not for a time.
    await until(10_000, "onWait is called", () => waits.length > 0);
    assertEquals(acquired, false, "the second acquire must wait");
    assertEquals(waits.length, 1, "onWait is called once while waiting");
    assertEquals([waits[0]?.pid, waits[0]?.commit], [111, "aaaaaaa"]);

    first.release();
    const second = await secondPromise;
    assertEquals(acquired, true);
    const now = JSON.parse(await Deno.readTextFile(path)) as LockOwner;
    assertEquals([now.pid, now.commit], [222, "bbbbbbb"]);
    second.release();

    // Free again: a third acquire does not wait.
    const third = await acquireLock(path, { pid: 333, commit: "c" }, () => assert(false, "should not wait"));
    third.release();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------- status and certificates

const STATUS: AppStatus = {
  name: "shop",
  status: "running",
  healthy: true,
  version: "1a2b3c4",
  release: "20261201-000000-000",
  deployed: "2026-12-01T00:00:00Z",
  type: "node",
  manager: "systemd",
  port: 3000,
  lastDeploy: { outcome: "success", release: "r", commit: "c", version: "1a2b3c4", at: "x", duration: 1 },
};

const CERTIFICATE: CertificateState = {
  names: ["a.test", "www.a.test"],
  source: "acme",
  issuer: "C=US, O=Let's Encrypt, CN=R11",
  notBefore: "2026-12-01T00:00:00.000Z",
  notAfter: "2027-03-01T00:00:00.000Z",
  lastError: null,
  lastErrorAt: null,
  nextAttemptAt: null,
};

Deno.test("statusLines: a certificate line per app with one; expiring, expired and errors marked (red with color)", () => {
  const now = Date.parse("2026-12-02T00:00:00Z");
  const statuses = [STATUS, { ...STATUS, name: "api" }, { ...STATUS, name: "blog" }, { ...STATUS, name: "new" }];
  const certificates = new Map<string, CertificateState>([
    ["shop", CERTIFICATE],
    ["api", {
      ...CERTIFICATE,
      names: ["api.test"],
      notAfter: "2026-12-10T12:00:00.000Z",
      lastError: "urn:ietf:params:acme:error:rateLimited: too many certificates",
      lastErrorAt: "2026-12-01T23:00:00.000Z",
      nextAttemptAt: "2026-12-02T01:00:00.000Z",
    }],
    ["blog", {
      ...CERTIFICATE,
      names: ["blog.test"],
      source: "file",
      issuer: "CN=Corp CA",
      notAfter: "2026-11-29T00:00:00Z",
    }],
    ["new", { ...CERTIFICATE, names: ["new.test"], issuer: null, notBefore: null, notAfter: null }],
    ["gone", CERTIFICATE], // no status.json: not listed
  ]);
  const lines = statusLines(statuses, certificates, { now, color: false });
  assertEquals(lines.slice(5), [
    "",
    "shop  certificate: a.test, www.a.test — Let's Encrypt R11 — valid until 2027-03-01 (89 days)",
    "api   certificate: api.test — Let's Encrypt R11 — valid until 2026-12-10 (8 days) — expires soon",
    "      ! last error 2026-12-01 23:00 UTC: urn:ietf:params:acme:error:rateLimited: too many certificates; " +
    "next attempt 2026-12-02 01:00 UTC",
    "blog  certificate: blog.test — Corp CA (config.yml tls) — EXPIRED on 2026-11-29 (3 days ago)",
    "new   certificate: new.test — none yet",
  ]);
  assertMatch(lines[0], /^APP {3}STATUS/);
  const colored = statusLines(statuses, certificates, { now, color: true });
  assertEquals(colored.filter((line) => line.startsWith("\x1b[31m")).length, 3, "expiring, its error, expired");
  assertEquals(colored[6], lines[6], "a valid certificate is not red");
  assertEquals(statusLines([STATUS], new Map(), { now, color: false }).length, 2, "no certificates: the table only");
  assertEquals(statusLines([], certificates, { now, color: false }), ["No app has been deployed on this server yet."]);
  // Set up, never deployed: a row each, in name order with the others.
  const fresh = statusLines([STATUS], new Map(), { now, color: false, undeployed: ["aaa", "zzz"] });
  assertEquals(fresh.map((line) => line.split(/ +/)[0]), ["APP", "aaa", "shop", "zzz"]);
  assertMatch(fresh[1], /^aaa +set up +- +- +- +- +never deployed \(push to deploy it\)$/);
  assertEquals(statusLines([], new Map(), { now, color: false, undeployed: ["aaa"] }).length, 2);
});

Deno.test("readStatus: a status.json without the fields a deploy writes is an error naming the field, never a crash later", async () => {
  const root = await Deno.makeTempDir({ prefix: "dp-status-" });
  try {
    const path = join(root, "status.json");
    const read = async (value: unknown) => {
      await Deno.writeTextFile(path, JSON.stringify(value));
      try {
        await readStatus(path);
        return "read";
      } catch (error) {
        assert(error instanceof DeployParadigmError, String(error));
        assertMatch(String(error.suggestion), /^deploys write this file: restore it from a backup, or remove it/);
        return error.message.replace(`${path} is not a status written by a deploy: `, "");
      }
    };
    assertEquals(await read({}), '"name" must be a string (got undefined)');
    assertEquals(await read({ ...STATUS, lastDeploy: null }), '"lastDeploy" must be an object (got null)');
    assertEquals(
      await read({ ...STATUS, lastDeploy: { ...STATUS.lastDeploy, at: 5 } }),
      '"lastDeploy.at" must be a string (got number)',
    );
    assertEquals(await read({ ...STATUS, processes: {} }), '"processes" must be a list (got object)');
    assertEquals(await read({ ...STATUS, deployed: null }), '"deployed" must be a string (got null)');
    assertEquals(await read(STATUS), "read");
    // Only what a reader uses is required: a last deploy's outcome and version (the rest is checked when there).
    assertEquals(await read({ ...STATUS, lastDeploy: { outcome: "success", version: "1a2b3c4" } }), "read");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("writeStatus: status.json takes the app's certificate from .tls/certificates.json when written", async () => {
  const root = await Deno.makeTempDir({ prefix: "dp-status-" });
  try {
    const path = join(root, "shop", "status.json");
    await writeStatus(path, { ...STATUS, certificate: CERTIFICATE });
    assertEquals((await readStatus(path))?.certificate, undefined, "no certificates.json: an old copy is dropped");
    await Deno.mkdir(join(root, ".tls"));
    const notAfter = "2027-06-01T00:00:00.000Z";
    await Deno.writeTextFile(
      join(root, ".tls", "certificates.json"),
      JSON.stringify({ updatedAt: "x", certificates: { shop: { ...CERTIFICATE, notAfter }, api: CERTIFICATE } }),
    );
    await writeStatus(path, STATUS);
    assertEquals((await readStatus(path))?.certificate, { ...CERTIFICATE, notAfter });
    await Deno.writeTextFile(join(root, ".tls", "certificates.json"), "not json");
    await writeStatus(path, STATUS);
    assertEquals((await readStatus(path))?.certificate, undefined, "a broken file does not fail the write");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("README: the deploy.log events it lists name every journaled step of a deploy", async () => {
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  const from = readme.indexOf("JSON line to `deploy.log`:");
  const events = readme.slice(from, readme.indexOf("`status.json`:", from)).replaceAll("\n", " ");
  assert(from >= 0, "README lost its deploy.log events");
  for (const step of DEPLOY.filter((step) => !step.unjournaled)) {
    assert(events.includes(`\`${step.name}\``), `README's deploy.log events leave out \`${step.name}\``);
  }
});
