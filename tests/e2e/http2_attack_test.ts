/**
 * HTTP/2 attacks on the proxy (found by an attacker with hand-made frames), replayed with Node's
 * real HTTP/2 client (`node:http2`, a child process) against the proxy with a self-signed
 * certificate: a client that shuts its window on a streamed answer and reads nothing is cut after
 * sendTimeout and its app connection freed; a Host other than `:authority` (and so a `:path`
 * without its "/") and CONNECT get 400 and never reach an app. What JavaScript cannot stop (a
 * flood of empty DATA frames, buffered inside Deno's HTTP/2 server) has `http2: false`: then
 * ALPN offers HTTP/1.1 alone, served by the proxy's own server.
 */
import { join } from "node:path";
import { assert, assertEquals } from "../helpers/assert.ts";
import { selfSigned } from "../helpers/certs.ts";
import { freePort } from "../helpers/server.ts";
import { withProxy } from "../helpers/proxy_server.ts";
import { deploymentsRoot } from "../../src/paths.ts";
import { until } from "../helpers/time.ts";

/**
 * The client: each argument is one request's headers as JSON, sent on one connection; prints one
 * line per request (`<status>` or `error <code>`). With `PAUSE=1`, the first request's answer is
 * never read (its stream window stays shut) and the process waits to be killed.
 */
const CLIENT_JS = `
const http2 = require("node:http2");
const fs = require("node:fs");
const [port, name, ca, ...requests] = process.argv.slice(1);
const client = http2.connect("https://127.0.0.1:" + port, { ca: fs.readFileSync(ca), servername: name });
client.on("error", (e) => { console.log("session-error " + e.code); process.exit(0); });
let left = requests.length;
for (const json of requests) {
  const req = client.request(JSON.parse(json), { endStream: true });
  req.on("response", (headers) => {
    console.log(String(headers[":status"]));
    if (process.env.PAUSE) return req.pause();
    req.resume();
  });
  req.on("error", (e) => console.log("error " + e.code));
  req.on("close", () => { if (!process.env.PAUSE && --left === 0) client.close(); });
}
`;

function client(port: number, name: string, ca: string, requests: Record<string, string>[], pause = false) {
  return new Deno.Command("node", {
    args: ["-e", CLIENT_JS, String(port), name, ca, ...requests.map((r) => JSON.stringify(r))],
    env: pause ? { PAUSE: "1" } : {},
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/** Two apps (a.test, b.test) with one self-signed certificate, behind the proxy's HTTPS port. */
async function withTwoApps(
  fn: (ctx: { https: number; ca: string; seen: string[]; cancelled: () => number }) => Promise<void>,
  proxyYml = "",
) {
  const https = freePort();
  const seen: string[] = [];
  let cancelled = 0;
  // An app that records what reaches it; /big streams 1 MiB chunks without end.
  const chunk = new Uint8Array(1 << 20).fill(0x61);
  const app = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    seen.push(`${req.method} ${new URL(req.url).pathname} ${req.headers.get("host")}`);
    if (new URL(req.url).pathname !== "/big") return new Response("ok");
    return new Response(
      new ReadableStream({ pull: (c) => c.enqueue(chunk), cancel: () => void cancelled++ }, { highWaterMark: 0 }),
    );
  });
  try {
    await withProxy(async ({ root, proxy, app: setUp }) => {
      const tlsDir = join(root, "tls");
      await Deno.mkdir(tlsDir, { mode: 0o700 });
      const tls = await selfSigned(tlsDir, ["a.test", "b.test"]);
      for (const name of ["a", "b"]) {
        await setUp(name, { port: app.addr.port });
        await Deno.writeTextFile(
          join(deploymentsRoot(root), name, "config.yml"),
          `domains: [${name}.test]\ntls: { certificate: ${tls.certificate}, key: ${tls.key} }\n`,
          { append: true },
        );
      }
      await proxy.start();
      await fn({ https, ca: tls.certificate, seen, cancelled: () => cancelled });
    }, { proxyYml: `https: ${https}\nhttp: ${freePort()}\nlimits:\n  sendTimeout: 1s\n${proxyYml}` });
  } finally {
    await app.shutdown();
  }
}

Deno.test("http2: a client that shuts its window on a streamed answer is cut after sendTimeout; its app connection freed", async () => {
  await withTwoApps(async ({ https, ca, seen, cancelled }) => {
    const started = performance.now();
    const child = client(https, "a.test", ca, [{ ":path": "/big", ":authority": "a.test" }], true);
    try {
      await until(15_000, "the app's stream cancelled", () => cancelled() === 1, () => seen.join("\n"));
      const ms = performance.now() - started;
      console.log(
        `http2: a client reading nothing was cut, its app stream cancelled ${ms.toFixed(0)} ms after it asked`,
      );
      assertEquals(seen, ["GET /big a.test"]);
    } finally {
      try {
        child.kill("SIGKILL");
      } catch { /* it ended by itself: the proxy cut its connection and it exits on the session error */ }
      await child.output();
    }
  });
});

Deno.test("http2: a Host other than :authority, a :path without '/' and CONNECT get 400 and reach no app", async () => {
  await withTwoApps(async ({ https, ca, seen }) => {
    const requests: Record<string, string>[] = [
      { ":path": "/h", ":authority": "a.test" },
      { ":path": "/h", ":authority": "a.test", host: "b.test" },
      { ":path": "x/../admin", ":authority": "a.test", host: "a.test" },
      { ":method": "CONNECT", ":authority": "b.test:443" },
      { ":path": "/h", ":authority": "a.test:443", host: "a.test" },
    ];
    const child = client(https, "a.test", ca, requests);
    const out = await child.output();
    const lines = new TextDecoder().decode(out.stdout).trim().split("\n").sort();
    console.log(`http2: answers: ${lines.join(", ")}; the app saw: ${JSON.stringify(seen)}`);
    assert(out.success, new TextDecoder().decode(out.stderr));
    assertEquals(lines, ["200", "200", "400", "400", "400"]);
    assertEquals(seen.sort(), ["GET /h a.test", "GET /h a.test"]);
  });
});

Deno.test("http2: false in proxy.yml: ALPN offers HTTP/1.1 alone (curl asking for HTTP/2 gets 1.1)", async () => {
  for (const [setting, version] of [["", "2"], ["http2: false\n", "1.1"]]) {
    await withTwoApps(async ({ https, ca }) => {
      const { stdout, stderr, success } = await new Deno.Command("curl", {
        args: ["-sS", "--http2", "--cacert", ca, "--resolve", `a.test:${https}:127.0.0.1`, "-w", " %{http_version}"]
          .concat(`https://a.test:${https}/`),
      }).output();
      assert(success, new TextDecoder().decode(stderr));
      assertEquals(new TextDecoder().decode(stdout), `ok ${version}`, setting || "(default)");
    }, setting);
  }
});
