/**
 * Secrets and shells: .env values never reach the push's output, deploy.log, status.json or the
 * fleet database (a canary is grepped for in all of them), .env files are 0600, and config values
 * never pass through a shell: metacharacters in commands and hooks arrive as literal words.
 */
import { join } from "node:path";
import { assert, assertEquals } from "../helpers/assert.ts";
import { AppRepo, FAST_HEALTH } from "../helpers/apps.ts";
import { BIN, freePort, get, run, withServer } from "../helpers/server.ts";

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
