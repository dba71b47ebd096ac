/**
 * `deno task demo`: the whole story on this machine, as a normal user, under a temp prefix.
 *
 * Sets up a local "server" with `setup` (config.yml, .env, the bare repo with the real hook, the
 * proxy under PM2), then pushes v1, a broken v2 (it never takes traffic), and v3 of a small Python app,
 * checking each outcome; then starts the fleet monitor (`fleet`, this machine as `host: local`)
 * and ends with its dashboard open. `--exit` tears down at the end and exits 0 only when every
 * step went as expected; without it, the app and the dashboard keep running until Ctrl-C. Not
 * part of the binary.
 * @module
 */
import { join, resolve } from "node:path";

const BIN = resolve(import.meta.dirname!, "..", "bin", "deploy-paradigm");
const exitAtEnd = Deno.args.includes("--exit");

const APP = `import http.server, os

VERSION = open("version.txt").read().strip()
BROKEN = os.path.exists("broken")

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        status = 500 if BROKEN and self.path == "/health" else 200
        body = f"Hello from {VERSION} ({os.environ.get('GREETING', 'no greeting')})\\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
`;

const DEPLOY_YML = `name: hello
type: python
command: python app.py
healthCheck: { path: /health, window: 6s, interval: 300ms, successes: 2, timeout: 1s }
watch: 2s
`;

const root = await Deno.makeTempDir({ prefix: "deploy-paradigm-demo-" });
const prefix = join(root, "server");
const env: Record<string, string> = {
  DEPLOY_PARADIGM_PREFIX: prefix,
  PM2_HOME: join(root, "pm2"),
  FLEET_MONITOR_HOME: join(root, "fleet"),
  PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
  GIT_AUTHOR_NAME: "Demo",
  GIT_AUTHOR_EMAIL: "demo@example.invalid",
  GIT_COMMITTER_NAME: "Demo",
  GIT_COMMITTER_EMAIL: "demo@example.invalid",
};
const results: { step: string; ok: boolean }[] = [];
let tornDown: Promise<void> | undefined;
/** The running `deploy-paradigm fleet`, stopped at teardown. */
let fleet: Deno.ChildProcess | undefined;

function say(text: string): void {
  console.log(Deno.env.get("NO_COLOR") ? `\n== ${text}` : `\n\x1b[1m== ${text}\x1b[0m`);
}

function check(step: string, ok: boolean): void {
  results.push({ step, ok });
  console.log(`${ok ? "✓" : "✗"} ${step}`);
}

async function run(argv: string[], options: { cwd?: string; show?: boolean } = {}): Promise<number> {
  const { code } = await new Deno.Command(argv[0], {
    args: argv.slice(1),
    cwd: options.cwd,
    env,
    stdin: "null",
    stdout: options.show ? "inherit" : "null",
    stderr: options.show ? "inherit" : "null",
  }).output();
  return code;
}

async function has(program: string): Promise<boolean> {
  return await new Deno.Command("sh", { args: ["-c", 'command -v "$1"', "sh", program], stdout: "null", env })
    .output().then((o) => o.success, () => false);
}

async function fetchText(url: string): Promise<string> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(3000) });
    return (await response.text()).trim();
  } catch (error) {
    return `(no answer: ${(error as Error).message})`;
  }
}

/** Starts `deploy-paradigm fleet` on 127.0.0.1 (port 3333, or any free one); returns its URL. */
async function startFleet(): Promise<string | undefined> {
  let port = 3333;
  try {
    Deno.listen({ hostname: "127.0.0.1", port }).close();
  } catch {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    port = (listener.addr as Deno.NetAddr).port;
    listener.close();
  }
  console.log(`$ deploy-paradigm fleet --port ${port}`);
  fleet = new Deno.Command(BIN, { args: ["fleet", "--port", String(port)], env, stdin: "null", stdout: "piped" })
    .spawn();
  const lines = fleet.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  const deadline = Date.now() + 20_000;
  while (!/cycle 1:/.test(seen) && Date.now() < deadline) {
    const { value, done } = await lines.read();
    if (done) break;
    seen += value;
    Deno.stdout.writeSync(new TextEncoder().encode(value));
  }
  (async () => {
    for (let r = await lines.read(); !r.done; r = await lines.read()) {
      Deno.stdout.writeSync(new TextEncoder().encode(r.value));
    }
  })().catch(() => {});
  return /cycle 1:/.test(seen) ? `http://127.0.0.1:${port}/` : undefined;
}

/** Opens `url` in the desktop's browser, when there is one. */
function openInBrowser(url: string): void {
  const opener = Deno.build.os === "darwin" ? "open" : "xdg-open";
  if (Deno.build.os !== "darwin" && !Deno.env.get("DISPLAY") && !Deno.env.get("WAYLAND_DISPLAY")) return;
  try {
    new Deno.Command(opener, { args: [url], stdin: "null", stdout: "null", stderr: "null" }).spawn();
  } catch { /* no opener: the URL is printed */ }
}

/** Tears down once; every caller waits for the same teardown (Ctrl-C under `deno task` arrives twice). */
function teardown(): Promise<void> {
  tornDown ??= stopEverything();
  return tornDown;
}

async function stopEverything(): Promise<void> {
  console.log("\nTearing down: stopping the fleet monitor and the demo's PM2 daemon, removing", root);
  if (fleet) {
    try {
      fleet.kill("SIGTERM");
    } catch { /* already gone */ }
    await fleet.status;
  }
  // The daemon's own SIGTERM handling stops its apps (the proxy among them); quicker than a `pm2 kill` client, which
  // matters on Ctrl-C under `deno task`, which does not wait long for its child.
  const pid = Number(await Deno.readTextFile(join(env.PM2_HOME, "pm2.pid")).catch(() => ""));
  if (pid > 1) {
    try {
      Deno.kill(pid, "SIGTERM");
      for (let i = 0; i < 50 && await Deno.stat(`/proc/${pid}`).then(() => true, () => false); i++) {
        await new Promise((r) => setTimeout(r, 100));
      }
    } catch { /* already gone */ }
  }
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      return await Deno.remove(root, { recursive: true });
    } catch {
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

Deno.addSignalListener("SIGINT", async () => {
  await teardown();
  Deno.exit(130);
});

try {
  for (const tool of ["git", "python3", "npm"]) {
    if (!(await has(tool))) throw new Error(`the demo needs ${tool} on PATH`);
  }
  if (!(await has("pm2"))) {
    say("PM2 is not installed: installing it for the demo only (npm install --prefix <temp> pm2)");
    if (
      await run(["npm", "install", "--no-fund", "--no-audit", "--prefix", join(root, "tools"), "pm2"], { show: true })
    ) {
      throw new Error("npm install pm2 failed");
    }
    env.PATH = `${join(root, "tools", "node_modules", ".bin")}:${env.PATH}`;
  }

  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const url = `http://127.0.0.1:${port}/`;

  say(`Setting up a local server under ${prefix}`);
  const repo = join(prefix, "var", "repos", "hello.git");
  console.log(`$ deploy-paradigm setup hello --port ${port} --manager pm2 --proxy-host 127.0.0.1 --yes`);
  const setup = ["setup", "hello", "--port", String(port), "--manager", "pm2", "--proxy-host", "127.0.0.1", "--yes"];
  check("setup prepares the server and starts the proxy", (await run([BIN, ...setup], { show: true })) === 0);
  await Deno.writeTextFile(
    join(prefix, "opt", "deployments", "hello", ".env.production"),
    "GREETING='secrets stay on the server'\n",
    {
      mode: 0o600,
    },
  );
  console.log(
    "(and a secret in .env.production; the proxy on port " + port + " switches between the blue and green slots)",
  );

  const work = join(root, "hello");
  await Deno.mkdir(work);
  await run(["git", "init", "--quiet", "-b", "main"], { cwd: work });
  await run(["git", "remote", "add", "production", repo], { cwd: work });
  await Deno.writeTextFile(join(work, "app.py"), APP);
  await Deno.writeTextFile(join(work, "deploy.yml"), DEPLOY_YML);

  const release = async (version: string, broken: boolean): Promise<number> => {
    await Deno.writeTextFile(join(work, "version.txt"), `${version}\n`);
    if (broken) await Deno.writeTextFile(join(work, "broken"), "health answers 500\n");
    else await Deno.remove(join(work, "broken")).catch(() => {});
    await run(["git", "add", "-A"], { cwd: work });
    await run(["git", "commit", "--quiet", "-m", version], { cwd: work });
    console.log(`$ git push production main   # ${version}${broken ? " (its health check fails)" : ""}`);
    return await run(["git", "push", "production", "main"], { cwd: work, show: true });
  };

  say("Push v1");
  check("v1 deploys (git push exits 0)", (await release("v1", false)) === 0);
  const v1 = await fetchText(url);
  console.log(`GET ${url} → ${v1}`);
  check("v1 answers", v1.startsWith("Hello from v1"));

  say(
    "Push a broken v2: it fails its health check in the idle slot, so it never takes traffic and the push is rejected",
  );
  check("the broken v2 push is rejected", (await release("v2", true)) !== 0);
  const afterV2 = await fetchText(url);
  console.log(`GET ${url} → ${afterV2}`);
  check("v1 still answers after the failed v2", afterV2.startsWith("Hello from v1"));

  say("Push v3");
  check("v3 deploys", (await release("v3", false)) === 0);
  const v3 = await fetchText(url);
  console.log(`GET ${url} → ${v3}`);
  check("v3 answers", v3.startsWith("Hello from v3"));

  say("deploy-paradigm status");
  check("status runs", (await run([BIN, "status"], { show: true })) === 0);

  say("The fleet monitor: this machine as a server (host: local), collected into SQLite, with its dashboard");
  console.log("$ deploy-paradigm fleet add demo local");
  check("fleet add", (await run([BIN, "fleet", "add", "demo", "local"], { show: true })) === 0);
  const dashboard = await startFleet();
  check("the dashboard serves", dashboard !== undefined);
  if (dashboard) {
    const overview = await fetchText(`${dashboard}api/fleet`);
    check("the fleet API shows hello healthy", /"app":"hello"[^}]*"healthy":true/.test(overview));
    check("the dashboard page loads", /<title>[^<]*<\/title>/.test(await fetchText(dashboard)));
  }

  say("What happened");
  for (const r of results) console.log(`${r.ok ? "✓" : "✗"} ${r.step}`);
  console.log(`\nApp:        ${url}`);
  console.log(`Server:     ${prefix}`);
  console.log(`deploy.log: ${join(prefix, "var", "log", "deployments", "hello", "deploy.log")}`);
  console.log(`Dashboard:  ${dashboard ?? "(did not start)"}`);
  if (dashboard && !exitAtEnd) openInBrowser(dashboard);
} catch (error) {
  check(`demo: ${(error as Error).message}`, false);
}

const ok = results.length > 0 && results.every((r) => r.ok);
if (!exitAtEnd && ok) {
  console.log("\nThe app and the dashboard keep running. Press Ctrl-C to stop them and clean up.");
  await new Promise(() => {}); // until SIGINT
}
await teardown();
console.log(ok ? "\nDemo: every step worked." : "\nDemo: some steps failed (✗ above).");
Deno.exit(ok ? 0 : 1);
