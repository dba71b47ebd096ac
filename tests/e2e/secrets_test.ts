/**
 * Secrets and shells: .env values never reach the push's output, deploy.log, status.json,
 * notifications or the fleet database (a canary is grepped for in all of them, also URL-encoded,
 * JSON-escaped, in hex and in base64 at every alignment), .env files are 0600, a secret too short
 * to redact is refused, and config values never pass through a shell: metacharacters in commands
 * and hooks arrive as literal words.
 */
import { Buffer } from "node:buffer";
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { AppRepo, FAST_HEALTH } from "../helpers/apps.ts";
import { BIN, freePort, get, run, type TestServer, withServer } from "../helpers/server.ts";
import { snapshot, status } from "../helpers/state.ts";

const CANARY = "canary-7f3a9e-not-for-your-eyes";

/** An app that answers its argv as JSON, and 200 on /health. */
const ARGV_APP = `import http.server, json, os, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps(sys.argv[1:]).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
`;

const HOSTILE = ["$(touch PWNED1)", "`touch PWNED2`", "; touch PWNED3", "| touch PWNED4", "&& touch PWNED5", "'\"*?~"];

Deno.test("secrets never leave .env; metacharacters in commands and hooks stay literal words", async () => {
  await withServer(async (server) => {
    const port = freePort();
    const app = "vault";
    const repo = await AppRepo.create(
      server,
      app,
      await server.setupApp(app, { port, dotenv: `CANARY='${CANARY}'\n` }),
    );
    const deployYml = (pre: string) =>
      `name: ${app}\ntype: python\nhealthCheck: ${FAST_HEALTH}\nwatch: 300ms\n` +
      `command: ${JSON.stringify(["python", "app.py", ...HOSTILE])}\n` +
      `hooks:\n  preDeploy: ${JSON.stringify(pre)}\n` +
      `  postDeploy: ["python3", "-c", "import json, os, sys; print('post', os.environ['CANARY']); ` +
      `json.dump(sys.argv[1:], open('hook-argv', 'w'))", ${JSON.stringify(HOSTILE.join(" "))}]\n`;

    // v1: the hooks print the secret (they get the environment); the output shows it redacted.
    await repo.commit({ "deploy.yml": deployYml("sh -c 'echo pre $CANARY'"), "app.py": ARGV_APP }, "v1");
    const v1 = await repo.pushOk();
    assert(v1.output.includes("[redacted]"), v1.output);
    // v2: a preDeploy hook that prints the secret and fails: its last lines go into the messages.
    await repo.commit({ "deploy.yml": deployYml("sh -c 'echo failing with $CANARY >&2; exit 3'") }, "v2");
    const v2 = await repo.push();
    assert(v2.code !== 0, v2.output);

    // The command's words arrive as they are: no shell ran them.
    const answer = await get(`http://127.0.0.1:${port}/`);
    assertEquals("body" in answer && JSON.parse(answer.body), HOSTILE);
    const paths = server.paths(app);
    const releaseDir = join(paths.dir, await Deno.readLink(paths.current));
    const hookArgv = JSON.parse(await Deno.readTextFile(join(releaseDir, "hook-argv")));
    assertEquals(hookArgv, [HOSTILE.join(" ")]);
    const pwned = await run(["sh", "-c", 'find "$1" -name "PWNED*"', "sh", server.root]);
    assertEquals(pwned.stdout.trim(), "", "a metacharacter ran something");

    // .env files: 0600.
    assertEquals((await Deno.stat(paths.envFile("production"))).mode! & 0o777, 0o600);
    assertEquals((await Deno.stat(join(releaseDir, ".env"))).mode! & 0o777, 0o600);

    // The fleet monitor collects this server (host: local) into its database.
    const home = join(server.root, "fleet-home");
    const env = { ...server.env, FLEET_MONITOR_HOME: home };
    assertEquals((await run([BIN, "fleet", "add", "here", "local"], { env })).code, 0);
    const collect = await run([BIN, "fleet", "collect", "--once"], { env });
    assertEquals(collect.code, 0, collect.output);

    // The canary: nowhere but .env files.
    const places: Record<string, string> = {
      "push output (v1)": v1.output,
      "push output (v2)": v2.output,
      "deploy.log": await Deno.readTextFile(paths.deployLog),
      "status.json": await Deno.readTextFile(paths.status),
      "collect output": collect.output,
    };
    for await (const entry of Deno.readDir(join(home, "data"))) {
      places[`fleet database ${entry.name}`] = new TextDecoder("latin1").decode(
        await Deno.readFile(join(home, "data", entry.name)),
      );
    }
    for (const [where, text] of Object.entries(places)) assert(!text.includes(CANARY), `the canary is in ${where}`);
    assert(places["deploy.log"].includes("[redacted]"), "the failing hook's secret is recorded redacted");
  });
});

/** A canary each encoding writes differently: a space, `/`, `+`, quotes, `~`, a letter beyond ASCII. */
const ENCODED = 'canary 7f3a/9e+"é"~not-for-your-eyes';

/**
 * Prints $CANARY in every form (a label, a space, the form) and $LEVEL (marked public), to stderr
 * with --stderr; exits 3 with --fail. The base64 forms carry the canary at each of the 3 alignments.
 * A build gets no .env values: it reads the server's .env.production (from its release directory).
 */
const LEAK_PY = `import base64, json, os, sys, urllib.parse
if "CANARY" not in os.environ:
    for line in open("../../.env.production"):
        key, _, value = line.strip().partition("=")
        os.environ[key] = value.split(" #")[0].strip("'")
c = os.environ["CANARY"]
b = c.encode()
lines = [
    "plain " + c,
    "uri " + urllib.parse.quote(c, safe=""),
    "form " + urllib.parse.quote_plus(c),
    "json " + json.dumps(c),
    "json-utf8 " + json.dumps(c, ensure_ascii=False),
    "hex " + b.hex(),
]
for k in range(3):
    data = b"\\x01\\xfe"[:k] + b + b"!?"
    lines.append("b64-%d %s" % (k, base64.b64encode(data).decode()))
    lines.append("b64url-%d %s" % (k, base64.urlsafe_b64encode(data).decode()))
lines.append("level " + os.environ["LEVEL"])
print("\\n".join(lines), file=sys.stderr if "--stderr" in sys.argv else sys.stdout, flush=True)
sys.exit(3 if "--fail" in sys.argv else 0)
`;

const OK_APP = `import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
`;

/** A notification receiver on loopback that keeps each body as it came. */
function receiver() {
  const bodies: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (request) => {
    bodies.push(await request.text());
    return new Response(null, { status: 204 });
  });
  return { url: `http://127.0.0.1:${server.addr.port}/hook/a-webhook-token`, bodies, close: () => server.shutdown() };
}

/** Whether 6 bytes of `secret` in a row can be read back from any base64 run of `text`, at any offset. */
function recoverable(text: string, secret: Uint8Array): boolean {
  const pieces = new Set<string>();
  for (let i = 0; i + 6 <= secret.length; i++) pieces.add(Buffer.from(secret.subarray(i, i + 6)).toString("latin1"));
  for (const found of text.match(/[A-Za-z0-9+/_-]{8,}/g) ?? []) {
    const standard = found.replaceAll("-", "+").replaceAll("_", "/");
    for (let skip = 0; skip < 4; skip++) {
      const body = standard.slice(skip);
      const decoded = Buffer.from(body.slice(0, body.length - (body.length % 4)), "base64").toString("latin1");
      for (let i = 0; i + 6 <= decoded.length; i++) if (pieces.has(decoded.slice(i, i + 6))) return true;
    }
  }
  return false;
}

/** The fleet database's files, each as latin1 text (so UTF-8 forms are searched as their bytes). */
async function fleetDatabase(home: string): Promise<Record<string, string>> {
  const files: Record<string, string> = {};
  for await (const entry of Deno.readDir(join(home, "data"))) {
    files[`fleet database ${entry.name}`] = Buffer.from(await Deno.readFile(join(home, "data", entry.name)))
      .toString("latin1");
  }
  return files;
}

/** Collects `server` (host: local) into a fresh fleet home; returns the collect's output. */
async function collectFleet(server: TestServer, home: string): Promise<string> {
  const env = { ...server.env, FLEET_MONITOR_HOME: home };
  assertEquals((await run([BIN, "fleet", "add", "here", "local"], { env })).code, 0);
  const collect = await run([BIN, "fleet", "collect", "--once"], { env });
  assertEquals(collect.code, 0, collect.output);
  return collect.output;
}

Deno.test("a secret printed URL-encoded, JSON-escaped, in hex and in base64 (each alignment) is redacted everywhere", async () => {
  // The forms as the build prints them, from the same script run here.
  const local = await new Deno.Command("python3", {
    args: ["-c", LEAK_PY],
    env: { CANARY: ENCODED, LEVEL: "info" },
    stdout: "piped",
  }).output();
  const forms = Object.fromEntries(
    new TextDecoder().decode(local.stdout).trim().split("\n").map((line) => line.split(/ (.*)/s).slice(0, 2)),
  ) as Record<string, string>;
  delete forms.level;
  assertEquals(Object.keys(forms).length, 12);
  for (const [label, form] of Object.entries(forms)) assert(label === "plain" || form !== ENCODED, label);
  assert(forms["b64-1"] !== forms["b64url-1"] || forms["b64-2"] !== forms["b64url-2"], "both base64 alphabets used");

  const sink = receiver();
  try {
    await withServer(async (server) => {
      const port = freePort();
      const app = "leaky";
      const remote = await server.setupApp(app, {
        port,
        dotenv: `CANARY='${ENCODED}'\nLEVEL=info # public\n`,
      });
      const paths = server.paths(app);
      await Deno.writeTextFile(
        paths.config,
        (await Deno.readTextFile(paths.config)) + `notify:\n  - { type: webhook, url: "${sink.url}" }\n`,
      );
      const repo = await AppRepo.create(server, app, remote);
      const deployYml = (pre: string[]) =>
        `name: ${app}\ntype: python\nhealthCheck: ${FAST_HEALTH}\nwatch: 300ms\n` +
        `build: [python3, leak.py]\ncommand: [python3, app.py]\n` +
        `hooks:\n  preDeploy: ${JSON.stringify(pre)}\n  postDeploy: [python3, leak.py]\n`;
      // v1: the build, preDeploy (on stderr) and postDeploy print every form; v2: preDeploy also fails.
      await repo.commit({
        "deploy.yml": deployYml(["python3", "leak.py", "--stderr"]),
        "leak.py": LEAK_PY,
        "app.py": OK_APP,
      }, "v1");
      const v1 = await repo.pushOk();
      await repo.commit({ "deploy.yml": deployYml(["python3", "leak.py", "--stderr", "--fail"]) }, "v2");
      const v2 = await repo.push();
      assert(v2.code !== 0, v2.output);

      // Each form was printed, and came out redacted; the public value as it is.
      const shown = v2.output.split("\n").filter((line) => / (\S*\[redacted\]\S*|info) *$/.test(line));
      console.log(
        `v2: the build's lines, then the failing preDeploy hook's, as the pusher saw them:\n${shown.join("\n")}`,
      );
      for (const label of Object.keys(forms)) {
        assertMatch(v1.output, new RegExp(`^remote: +${label} \\S*\\[redacted\\]\\S* *$`, "m"), label);
        assertMatch(v2.output, new RegExp(`^remote: +${label} \\S*\\[redacted\\]\\S* *$`, "m"), label);
      }
      assertMatch(v1.output, /^remote: +level info *$/m);
      const log = await Deno.readTextFile(paths.deployLog);
      assertMatch(log, /b64url-2 \S*\[redacted\]/, "the failing hook's last lines are in deploy.log, redacted");
      assertMatch((await status(server, app)).lastDeploy!.message!, /plain \[redacted\]/);
      assertEquals(sink.bodies.length, 2, "a success and a failure were notified");
      assertMatch(sink.bodies[1], /json \\"\[redacted\]\\"/, "the failure's notification carries the lines");

      const home = join(server.root, "fleet-home");
      const places: Record<string, string> = {
        "push output (v1)": v1.output,
        "push output (v2)": v2.output,
        "deploy.log": log,
        "status.json": await Deno.readTextFile(paths.status),
        ...Object.fromEntries(sink.bodies.map((body, i) => [`notification ${i + 1}`, body])),
        "collect output": await collectFleet(server, home),
      };
      const database = await fleetDatabase(home);
      const canary = new TextEncoder().encode(ENCODED);
      for (const [where, text] of Object.entries({ ...places, ...database })) {
        const bytes = where.startsWith("fleet database");
        for (const [label, form] of Object.entries({ plain: ENCODED, ...forms })) {
          const needle = bytes ? Buffer.from(form).toString("latin1") : form;
          assert(!text.includes(needle), `the canary (${label}) is in ${where}`);
        }
        assert(!recoverable(text, canary), `6 bytes of the canary can be decoded from base64 in ${where}`);
      }
      assert(Object.keys(database).length > 0, "the fleet database exists");
      assert(database["fleet database fleet.db"]?.includes("[redacted]"), "the fleet stored the redacted lines");
    });
  } finally {
    await sink.close();
  }
});

Deno.test("a secret under 6 characters is refused by a deploy and by setup, naming key and line; `# public` lets a value through", async () => {
  await withServer(async (server) => {
    const port = freePort();
    const app = "short";
    const repo = await AppRepo.create(
      server,
      app,
      await server.setupApp(app, { port, dotenv: "GOOD='long-enough-secret'\nPIN=1234\n" }),
    );
    await repo.python(app, "v1");
    const before = await snapshot(server);
    const pushed = await repo.push();
    assert(pushed.code !== 0, pushed.output);
    const envFile = server.paths(app).envFile("production");
    assert(
      pushed.output.includes(`${envFile}:2:5: PIN is 4 characters long; a secret needs at least 6`),
      pushed.output,
    );
    assertMatch(pushed.output, /hint: make each secret at least 6 characters long; .*`PIN=… # public`/);
    assert(!pushed.output.includes("1234"), "the value is not shown");
    const setup = await server.cli(["setup", app, "--port", String(port), "--manager", "pm2", "--yes"]);
    assertEquals(setup.code, 2, setup.output);
    assert(setup.stderr.includes(`${envFile}:2:5: PIN is 4 characters long`), setup.stderr);
    assertEquals(await snapshot(server), before, "nothing changed");

    await Deno.writeTextFile(envFile, "GOOD='long-enough-secret'\nPIN=1234 # public\n");
    const ok = await repo.pushOk();
    assertMatch(ok.output, /✓ deployed short/);
  });
});
