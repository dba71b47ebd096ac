/**
 * Test apps (standard library only) and a git work tree to push them from.
 */
import { join } from "node:path";
import { type Ran, run, type TestServer } from "./server.ts";

/**
 * How a test app behaves: `ok`; `500` on every path; `crash` at start; `nolisten`; `flaky`: its
 * /health answers 200 three times, then 500 (every other path stays 200): it passes a health
 * check of 2 successes and fails in the watch window after, without failing a request; `half500`:
 * paths under /b answer 500, every other path (/health too) 200 (a release that broke half its routes);
 * `envfail` (Python): /health answers 500 where the server's env sets FAIL_HEALTH (fails on one host only).
 * Python only, for canaries: `paced`: every path but /health takes 50 ms; `slow`: 150 ms (3× paced);
 * `some500`: paced, and every 10th answer of a path but /health is a 500.
 */
export type Mode = "ok" | "500" | "crash" | "nolisten" | "flaky" | "half500" | "envfail" | "paced" | "slow" | "some500";

/** A fast health check for tests: 2 successes 200 ms apart, within 8 s. */
export const FAST_HEALTH = "{ path: /health, window: 8s, interval: 200ms, successes: 2, timeout: 1s }";

/** A health check that gives up after 3 s, for versions that are meant to fail. */
export const SHORT_HEALTH = "{ path: /health, window: 3s, interval: 200ms, successes: 2, timeout: 1s }";

/** Options of the app commits. */
export interface AppOptions {
  /** Extra deploy.yml lines. */
  extra?: string;
  /** The healthCheck value (default {@link FAST_HEALTH}). */
  health?: string;
  /** The blue-green watch window (default 300ms, to keep tests short). */
  watch?: string;
  /** Extra files. */
  files?: Record<string, string | null>;
}

/** The Python app: answers its version on every path, or misbehaves as `mode` says. */
export function pythonApp(version: string, mode: Mode = "ok"): string {
  return `import http.server, itertools, os, sys, time
VERSION = ${JSON.stringify(version)}
MODE = ${JSON.stringify(mode)}
if MODE == "crash":
    print("crashing on purpose", file=sys.stderr)
    sys.exit(3)
if MODE == "nolisten":
    while True:
        time.sleep(60)

HEALTH_HITS = [0]
ANSWERS = itertools.count(1)
PACE = {"paced": 0.05, "some500": 0.05, "slow": 0.15}.get(MODE, 0)

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/stream":
            self.send_response(200)
            self.end_headers()
            for i in range(5):
                self.wfile.write(("%s %d\\n" % (VERSION, i)).encode())
                self.wfile.flush()
                time.sleep(1)
            return
        body = (os.environ.get("GREETING", "") + " " + VERSION if self.path == "/greeting" else VERSION).encode()
        if self.path == "/health":
            HEALTH_HITS[0] += 1
        answer = 0 if self.path == "/health" else next(ANSWERS)
        time.sleep(0 if self.path == "/health" else PACE)
        flaky = MODE == "flaky" and self.path == "/health" and HEALTH_HITS[0] > 3
        every10th = MODE == "some500" and answer % 10 == 9
        broken = MODE == "half500" and self.path.startswith("/b") or (
            MODE == "envfail" and self.path == "/health" and os.environ.get("FAIL_HEALTH"))
        self.send_response(500 if MODE == "500" or flaky or every10th or broken else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        print("%s %s" % (self.address_string(), fmt % args), flush=True)

http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
`;
}

/** A Python app that answers `<version> <port>` on every path (which web instance answered). */
export function portApp(version: string): string {
  return `import http.server, os
VERSION = ${JSON.stringify(version)}
PORT = int(os.environ["PORT"])
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = ("%s %d" % (VERSION, PORT)).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, fmt, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
`;
}

/** The Node app, same behaviour. */
export function nodeApp(version: string, mode: Mode = "ok"): string {
  return `const http = require("node:http");
const VERSION = ${JSON.stringify(version)};
const MODE = ${JSON.stringify(mode)};
if (MODE === "crash") { console.error("crashing on purpose"); process.exit(3); }
let healthHits = 0;
if (MODE === "nolisten") setInterval(() => {}, 60000);
else http.createServer((req, res) => {
  console.log(req.method + " " + req.url);
  if (req.url === "/stream") {
    let i = 0;
    res.writeHead(200, { "content-type": "text/plain" });
    const timer = setInterval(() => {
      res.write(VERSION + " " + i + "\\n");
      if (++i === 5) { clearInterval(timer); res.end(); }
    }, 1000);
    return;
  }
  if (req.url === "/health") healthHits++;
  const flaky = MODE === "flaky" && req.url === "/health" && healthHits > 3;
  res.writeHead(MODE === "500" || flaky ? 500 : 200, { "content-type": "text/plain" });
  res.end(req.url === "/greeting" ? (process.env.GREETING || "") + " " + VERSION : VERSION);
}).listen(Number(process.env.PORT), "127.0.0.1");
`;
}

/** A work tree of an app, with `production` pointing at the server's bare repo. */
export class AppRepo {
  /** `server`: whose environment git runs with (a {@link TestServer}, or a fake VPS's `env`). */
  constructor(readonly dir: string, readonly server: Pick<TestServer, "env">) {}

  /** Creates a work tree in the server's temp root. */
  static async create(server: TestServer, name: string, remote: string): Promise<AppRepo> {
    const dir = join(server.root, "work", `${name}-${crypto.randomUUID().slice(0, 6)}`);
    await Deno.mkdir(dir, { recursive: true });
    const repo = new AppRepo(dir, server);
    await repo.git(["init", "--quiet", "-b", "main"]);
    await repo.git(["remote", "add", "production", remote]);
    return repo;
  }

  /** Runs git in the work tree; throws on failure. */
  async git(args: string[]): Promise<Ran> {
    const result = await run(["git", ...args], { cwd: this.dir, env: this.server.env });
    if (result.code !== 0) throw new Error(`git ${args.join(" ")} failed:\n${result.output}`);
    return result;
  }

  /** Writes files (path → content; null deletes) and commits them. Returns the commit sha. */
  async commit(files: Record<string, string | null>, message = "change"): Promise<string> {
    for (const [path, content] of Object.entries(files)) {
      const full = join(this.dir, path);
      if (content === null) await Deno.remove(full).catch(() => {});
      else {
        await Deno.mkdir(join(full, ".."), { recursive: true });
        await Deno.writeTextFile(full, content, { mode: path.endsWith(".sh") ? 0o755 : 0o644 });
      }
    }
    await this.git(["add", "-A"]);
    await this.git(["commit", "--quiet", "--allow-empty", "-m", message]);
    return (await this.git(["rev-parse", "HEAD"])).stdout.trim();
  }

  /** `git push production <refspec>` that must succeed; throws with the push's output otherwise. */
  async pushOk(refspec = "main"): Promise<Ran> {
    const result = await this.push(refspec);
    if (result.code !== 0) throw new Error(`git push ${refspec} failed (${result.code}):\n${result.output}`);
    return result;
  }

  /** `git push production <refspec>`; returns the outcome (does not throw). */
  push(refspec = "main", extra: string[] = []): Promise<Ran> {
    return run(["git", "push", ...extra, "production", refspec], { cwd: this.dir, env: this.server.env });
  }

  /** Commits a Python app at `version` with a deploy.yml. */
  python(app: string, version: string, mode: Mode = "ok", options: AppOptions = {}): Promise<string> {
    return this.commit({
      "deploy.yml": deployYml(app, "python", "python app.py", options),
      "app.py": pythonApp(version, mode),
      ...options.files,
    }, `${version} (${mode})`);
  }

  /** Commits a Node app at `version` with a deploy.yml and package.json. */
  node(app: string, version: string, mode: Mode = "ok", options: AppOptions = {}): Promise<string> {
    return this.commit({
      "deploy.yml": deployYml(app, "node", "node server.js", options),
      "package.json": JSON.stringify({ name: app, version: "1.0.0", private: true }),
      "server.js": nodeApp(version, mode),
      ...options.files,
    }, `${version} (${mode})`);
  }
}

function deployYml(app: string, type: string, command: string, options: AppOptions): string {
  return `name: ${app}\ntype: ${type}\nhealthCheck: ${options.health ?? FAST_HEALTH}\ncommand: ${command}\n` +
    `watch: ${options.watch ?? "300ms"}\n` + (options.extra ?? "");
}
