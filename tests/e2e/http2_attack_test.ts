/**
 * HTTP/2 attacks on the proxy (found by an attacker with hand-made frames), replayed with Node's
 * real HTTP/2 client (`node:http2`, a child process) against the proxy with a self-signed
 * certificate: a client that shuts its window on a streamed answer and reads nothing is cut after
 * sendTimeout and its app connection freed; a Host other than `:authority` (and so a `:path`
 * without its "/") and CONNECT get 400 and never reach an app. A flood of empty (or tiny) DATA
 * frames, which Deno's HTTP/2 server would keep in memory until the connection ends, is cut by the
 * proxy's frame guard (raw frames over TLS from a Node script), as is HTTP/1.1 sent after ALPN h2,
 * while an ordinary upload and thousands of small POSTs pass; a client that reads nothing at all
 * is cut and its connection slot freed; requests in flight beyond a connection's first count
 * against the connection limits; `http2: false` makes ALPN offer HTTP/1.1 alone, served by the
 * proxy's own server. Answers are never compressed by the proxy (a BREACH size oracle), and a
 * plain-HTTP app asked for over another name's TLS connection gets 421.
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
  fn: (ctx: { https: number; ca: string; seen: string[]; cancelled: () => number; logs: string[] }) => Promise<void>,
  proxyYml = "",
) {
  const https = freePort();
  const seen: string[] = [];
  let cancelled = 0;
  // An app that records what reaches it; /big streams 1 MiB chunks without end.
  const chunk = new Uint8Array(1 << 20).fill(0x61);
  const app = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    seen.push(`${req.method} ${new URL(req.url).pathname} ${req.headers.get("host")}`);
    if (new URL(req.url).pathname === "/len") return new Response(String((await req.arrayBuffer()).byteLength));
    if (new URL(req.url).pathname === "/slow") {
      return new Promise((resolve) => setTimeout(() => resolve(new Response("ok")), 500));
    }
    if (new URL(req.url).pathname === "/cancelled") return new Response(String(cancelled));
    if (new URL(req.url).pathname === "/text") {
      // A page that reflects its query beside a secret: compressed, its size would tell the secret (BREACH).
      const body = `csrf_token=7f3a9c2e1b ${new URL(req.url).search} ${"x".repeat(2000)}`;
      return new Response(body, {
        headers: { "content-type": "text/plain", etag: '"v1"', "cache-control": "private" },
      });
    }
    if (new URL(req.url).pathname === "/eight") {
      let left = 8;
      return new Response(new ReadableStream({ pull: (c) => left-- > 0 ? c.enqueue(chunk) : c.close() }));
    }
    if (new URL(req.url).pathname !== "/big") return new Response("ok");
    return new Response(
      new ReadableStream({ pull: (c) => c.enqueue(chunk), cancel: () => void cancelled++ }, { highWaterMark: 0 }),
    );
  });
  try {
    await withProxy(async ({ root, proxy, app: setUp, logs }) => {
      const tlsDir = join(root, "tls");
      await Deno.mkdir(tlsDir, { mode: 0o700 });
      const tls = await selfSigned(tlsDir, ["a.test", "b.test"]);
      for (const name of ["a", "b", "c"]) {
        await setUp(name, { port: app.addr.port });
        // c.test is plain HTTP only: no certificate names it.
        const tlsLine = name === "c" ? "" : `tls: { certificate: ${tls.certificate}, key: ${tls.key} }\n`;
        await Deno.writeTextFile(
          join(deploymentsRoot(root), name, "config.yml"),
          `domains: [${name}.test]\n${tlsLine}`,
          {
            append: true,
          },
        );
      }
      await proxy.start();
      await fn({ https, ca: tls.certificate, seen, cancelled: () => cancelled, logs });
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

/**
 * On one connection: three streamed answers read for 1 MiB each, then cancelled (RST_STREAM, as a
 * browser does when a video seeks); how many answers the app saw cancelled, asked on the same
 * connection (for up to 2 s, until 3); then an 8 MiB answer read whole.
 */
const CANCELLER_JS = `
const http2 = require("node:http2");
const fs = require("node:fs");
const [port, name, ca] = process.argv.slice(1);
const client = http2.connect("https://127.0.0.1:" + port, { ca: fs.readFileSync(ca), servername: name });
client.on("error", (e) => { console.log("session-error " + e.code); process.exit(0); });
const get = (path, limit) => new Promise((resolve) => {
  const req = client.request({ ":path": path, ":authority": name }, { endStream: true });
  const chunks = [];
  let n = 0;
  req.on("data", (d) => {
    n += d.length;
    if (!limit) chunks.push(d);
    else if (n >= limit) req.close(http2.constants.NGHTTP2_CANCEL);
  });
  req.on("error", (e) => console.log("error " + e.code));
  req.on("close", () => resolve({ n, text: Buffer.concat(chunks).toString() }));
});
(async () => {
  for (let i = 0; i < 3; i++) console.log("cancelled after " + ((await get("/big", 1 << 20)).n >= 1 << 20 ? "1 MiB" : "less"));
  let seen = "";
  for (let i = 0; i < 20 && seen !== "3"; i++) {
    seen = (await get("/cancelled")).text;
    if (seen !== "3") await new Promise((r) => setTimeout(r, 100));
  }
  console.log("the app saw " + seen + " cancelled");
  console.log("whole " + (await get("/eight")).n);
  client.close();
})();
`;

Deno.test("http2: an answer the client resets is cancelled at the app at once, and leaves no wait that would cut the connection", async () => {
  await withTwoApps(async ({ https, ca, logs }) => {
    const out = await new Deno.Command("node", { args: ["-e", CANCELLER_JS, String(https), "a.test", ca] }).output();
    const lines = new TextDecoder().decode(out.stdout).trim().split("\n");
    // Deno's server does not cancel a streamed body when its stream is reset (it reads it until the
    // connection ends): without the proxy's own stop, the app kept streaming, and the wait left
    // behind made the sweep cut the connection after sendTimeout (1 s here) while it read.
    assertEquals(
      lines,
      [...Array(3).fill("cancelled after 1 MiB"), "the app saw 3 cancelled", `whole ${8 << 20}`],
      logs.join("\n") + new TextDecoder().decode(out.stderr),
    );
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

Deno.test("http2: answers go as the app sent them, never compressed by the proxy (BREACH), the strong ETag kept", async () => {
  await withTwoApps(async ({ https, ca }) => {
    const get = async (http: "--http2" | "--http1.1", query: string) => {
      const out = await new Deno.Command("curl", {
        args: ["-sS", http, "--cacert", ca, "--resolve", `a.test:${https}:127.0.0.1`, "-H", "accept-encoding: gzip, br"]
          .concat([
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-w",
            "size=%{size_download}",
            `https://a.test:${https}/text?q=${query}`,
          ]),
      }).output();
      assert(out.success, new TextDecoder().decode(out.stderr));
      return new TextDecoder().decode(out.stdout).toLowerCase();
    };
    for (const http of ["--http2", "--http1.1"] as const) {
      const right = await get(http, "csrf_token=7f3a9c2e1b");
      const wrong = await get(http, "csrf_token=zzzzzzzzzz");
      assert(!right.includes("content-encoding"), right);
      assert(right.includes('etag: "v1"'), `the app's strong ETag: ${right}`);
      // The same size whatever the query guesses: nothing to learn from it.
      assertEquals(/size=(\d+)/.exec(right)?.[1], /size=(\d+)/.exec(wrong)?.[1]);
      assertEquals(Number(/size=(\d+)/.exec(right)?.[1]), 2047, "the whole page, uncompressed");
    }
  });
});

Deno.test("https: a plain-HTTP app asked for on a connection made for another name gets 421, over HTTP/2 and HTTP/1.1", async () => {
  await withTwoApps(async ({ https, ca, seen }) => {
    for (const http of ["--http2", "--http1.1"]) {
      const out = await new Deno.Command("curl", {
        args: ["-sS", http, "--cacert", ca, "--resolve", `a.test:${https}:127.0.0.1`, "-H", "host: c.test"]
          .concat(["-o", "/dev/null", "-w", "%{http_code}", `https://a.test:${https}/fronted`]),
      }).output();
      assert(out.success, new TextDecoder().decode(out.stderr));
      assertEquals(new TextDecoder().decode(out.stdout), "421", http);
    }
    assertEquals(seen.filter((line) => line.includes("/fronted")), [], "the app was not reached");
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

/**
 * A Node script for raw HTTP/2 over TLS (ALPN h2) to the proxy: arguments port, server name, CA
 * file, then the script's own; `body` runs once connected, after the connection preface, with
 * `frame(type, flags, stream, payload)` to write frames with; `after` at the top level.
 */
function rawH2(body: string, after = ""): string {
  return `
const tls = require("node:tls");
const [port, name, ca, frames, size] = process.argv.slice(1);
const frame = (type, flags, stream, payload) => {
  const b = Buffer.alloc(9 + payload.length);
  b.writeUIntBE(payload.length, 0, 3); b[3] = type; b[4] = flags; b.writeUInt32BE(stream, 5); payload.copy(b, 9);
  return b;
};
const s = tls.connect({ host: "127.0.0.1", port: Number(port), servername: name, ALPNProtocols: ["h2"],
  ca: require("node:fs").readFileSync(ca) }, () => {
  s.write("PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n");
${body}});
s.on("error", () => {});
${after}`;
}

/**
 * Raw HTTP/2 over TLS: the preface, SETTINGS, a POST left open on stream 1, then FRAMES DATA frames
 * of SIZE bytes each (0: empty) on it, none ending the stream, sent as fast as the socket takes
 * them; prints `cut <bytes written>` when the connection ends first, or `sent N` once all were
 * sent, and then keeps the connection open (what it made the server keep stays kept) until killed.
 */
const FLOOD_JS = rawH2(
  `
  s.write(frame(4, 0, 0, Buffer.alloc(0)));
  const authority = Buffer.from(name);
  s.write(frame(1, 4, 1, Buffer.concat([Buffer.from([0x83, 0x87, 0x84, 0x01, authority.length]), authority])));
  const batch = Buffer.concat(Array(1000).fill(frame(0, 0, 1, Buffer.alloc(Number(size), 0x61))));
  let sent = 0;
  const pump = () => {
    while (sent < Number(frames)) {
      sent += 1000;
      if (!s.write(batch)) return s.once("drain", pump);
    }
    console.log("sent " + sent);
  };
  pump();
`,
  `
s.on("data", () => {});
s.on("close", () => { console.log("cut " + s.bytesWritten); process.exit(0); });
`,
);

for (const [size, frames, why] of [[0, 1_000_000, "empty"], [1, 2_000_000, "small"]] as const) {
  Deno.test(`http2: a flood of ${why} DATA frames is cut by the frame guard; memory stays flat, others are served`, async () => {
    await withTwoApps(async ({ https, ca, seen, logs }) => {
      const before = Deno.memoryUsage().rss;
      const flood = new Deno.Command("node", {
        args: ["-e", FLOOD_JS, String(https), "a.test", ca, String(frames), String(size)],
        stdout: "piped",
      }).spawn();
      // Its first line: cut, or all sent with the connection still open (then the proxy's memory is measured).
      const reader = flood.stdout.pipeThrough(new TextDecoderStream()).getReader();
      const printed = (await reader.read()).value?.trim() ?? "";
      await new Promise((resolve) => setTimeout(resolve, 1000)); // what is on its way is read
      const grown = (Deno.memoryUsage().rss - before) / 2 ** 20;
      reader.cancel().catch(() => {});
      try {
        flood.kill("SIGKILL");
      } catch { /* it ended: the proxy cut it */ }
      await flood.status;
      const cut = logs.filter((line) => line.includes("HTTP/2 connection from 127.0.0.1 cut"));
      console.log(
        `http2: ${frames.toLocaleString("en-US")} ${why} DATA frames: the client printed "${
          printed.replaceAll("\n", " / ")
        }"; the proxy logged ${JSON.stringify(cut)}; its process grew ${grown.toFixed(1)} MiB`,
      );
      assert(printed.startsWith("cut "), printed);
      assertEquals(cut.length, 1, logs.join("\n"));
      assert(cut[0].endsWith(size ? "too many small DATA frames" : "more than 100 empty DATA frames"), cut[0]);
      // Without the guard, 1-byte frames grow it by about 120 MiB a million (measured); the cut keeps it far below.
      assert(grown < 96, `the proxy grew ${grown.toFixed(1)} MiB`);
      // The flooding request never reached the app (its body never ended); a new client is served.
      const child = client(https, "a.test", ca, [{ ":path": "/after", ":authority": "a.test" }]);
      const answer = await child.output();
      assertEquals(new TextDecoder().decode(answer.stdout).trim(), "200");
      assertEquals(seen.filter((line) => line.startsWith("GET")), ["GET /after a.test"]);
    });
  });
}

Deno.test("http2: an upload in ordinary frames and 6,000 small POSTs on one connection pass the frame guard", async () => {
  await withTwoApps(async ({ https, ca, logs }) => {
    // Node's client: a 1 MiB body written in 1,024 writes of 1 KiB, then the end of the stream; then
    // 6,000 POSTs (10 at a time) of 20 bytes, each written, then ended a moment later (its own empty
    // DATA frame): without the budget given back at each stream's end, the 4,444th would be cut.
    const upload = `
const http2 = require("node:http2");
const [port, name, ca] = process.argv.slice(1);
const client = http2.connect("https://127.0.0.1:" + port, { ca: require("node:fs").readFileSync(ca), servername: name });
const post = (write) => new Promise((resolve, reject) => {
  const req = client.request({ ":method": "POST", ":path": "/len", ":authority": name });
  let body = "";
  req.on("data", (d) => body += d);
  req.on("end", () => resolve(body));
  req.on("error", reject);
  write(req);
});
const piece = Buffer.alloc(1024, 0x62);
(async () => {
  console.log(await post((req) => {
    let left = 1024;
    const write = () => { while (left-- > 0) if (!req.write(piece)) return req.once("drain", write); req.end(); };
    write();
  }));
  let ok = 0;
  const worker = async () => {
    while (ok < 6000) {
      const body = await post((req) => { req.write(piece.subarray(0, 20)); setImmediate(() => req.end()); });
      if (body === "20") ok++;
      else throw new Error("answer " + body);
    }
  };
  await Promise.all(Array.from({ length: 10 }, worker));
  console.log(ok);
  client.close();
})().catch((e) => { console.log("failed " + e.message); process.exit(1); });
`;
    const out = await new Deno.Command("node", { args: ["-e", upload, String(https), "a.test", ca] }).output();
    const printed = new TextDecoder().decode(out.stdout).trim().split("\n");
    assert(out.success, printed.join("\n") + new TextDecoder().decode(out.stderr));
    assertEquals(printed[0], String(1024 * 1024));
    assert(Number(printed[1]) >= 6000, printed[1]);
    assertEquals(logs.filter((line) => line.includes("cut:")), []);
  });
});

/**
 * Raw HTTP/2 over TLS: windows opened wide (SETTINGS and WINDOW_UPDATE), `GET /big` on stream 1,
 * then nothing read from the socket at all: the answer backs up in TCP, not in HTTP/2's windows.
 */
const NON_READER_JS = rawH2(`
  s.write(frame(4, 0, 0, Buffer.from([0, 4, 0x7f, 0xff, 0xff, 0xff]))); // INITIAL_WINDOW_SIZE 2^31-1
  s.write(frame(8, 0, 0, Buffer.from([0x40, 0, 0, 0]))); // the connection's window too (+1 GiB)
  const authority = Buffer.from(name);
  s.write(frame(1, 5, 1, Buffer.concat([Buffer.from([0x82, 0x87, 0x04, 4]), Buffer.from("/big"),
    Buffer.from([0x01, authority.length]), authority])));
  s.pause();
  console.log("asked");
`);

Deno.test("http2: a client that reads nothing at all (TCP backs up) is cut after sendTimeout and its connection slot freed", async () => {
  await withTwoApps(async ({ https, ca, cancelled, seen }) => {
    const child = new Deno.Command("node", {
      args: ["-e", NON_READER_JS, String(https), "a.test", ca],
      stdout: "piped",
    }).spawn();
    try {
      await until(15_000, "the app's stream cancelled", () => cancelled() === 1, () => seen.join("\n"));
      // maxConnections is 1: the next client is served only once the cut connection's slot is given back.
      let answer = "";
      await until(5_000, "a new client served", async () => {
        const { stdout } = await new Deno.Command("curl", {
          args: ["-sS", "--http2", "--cacert", ca, "--resolve", `a.test:${https}:127.0.0.1`, "-w", " %{http_version}"]
            .concat(`https://a.test:${https}/`),
        }).output();
        answer = new TextDecoder().decode(stdout);
        return answer === "ok 2";
      }, () => answer);
    } finally {
      try {
        child.kill("SIGKILL");
      } catch { /* ended */ }
      await child.status;
      await child.stdout.cancel().catch(() => {});
    }
  }, "  maxConnections: 1\n  maxConnectionsPerIp: 1\n");
});

Deno.test("http2: HTTP/1.1 sent after ALPN chose h2 is cut, not answered by Deno's own HTTP/1.1 server", async () => {
  await withTwoApps(async ({ https, ca, seen, logs }) => {
    const script = `
const tls = require("node:tls");
const [port, name, ca] = process.argv.slice(1);
const s = tls.connect({ host: "127.0.0.1", port: Number(port), servername: name, ALPNProtocols: ["h2"],
  ca: require("node:fs").readFileSync(ca) }, () => s.write("GET / HTTP/1.1\\\\r\\\\nHost: " + name + "\\\\r\\\\n\\\\r\\\\n"));
let got = "";
s.on("data", (d) => got += d);
s.on("error", () => {});
s.on("close", () => console.log(JSON.stringify({ alpn: s.alpnProtocol, got })));
`;
    const out = await new Deno.Command("node", { args: ["-e", script, String(https), "a.test", ca] }).output();
    const { alpn, got } = JSON.parse(new TextDecoder().decode(out.stdout));
    assertEquals(alpn, "h2");
    assertEquals(got, "");
    assertEquals(seen, []);
    assert(logs.some((line) => line.endsWith("cut: no HTTP/2 connection preface")), logs.join("\n"));
  });
});

Deno.test("http2: requests in flight beyond a connection's first count against the connection limits (files)", async () => {
  await withTwoApps(async ({ https, ca, seen, logs }) => {
    // 10 slow requests at once on one connection, 4 connections allowed per address: the
    // connection and 3 more requests in flight (each holds an app's socket), 6 refused with 503;
    // then the same again (what they counted was given back).
    const slow = Array.from({ length: 10 }, () => ({ ":path": "/slow", ":authority": "a.test" }));
    for (const round of [1, 2]) {
      const out = await client(https, "a.test", ca, slow).output();
      const statuses = new TextDecoder().decode(out.stdout).trim().split("\n").sort();
      console.log(`http2: round ${round}: ${statuses.join(" ")}`);
      assertEquals(statuses, [...Array(4).fill("200"), ...Array(6).fill("503")]);
    }
    assertEquals(seen.length, 8);
    assert(logs.some((line) => line.includes("connections from 127.0.0.1 (limit 4 per address)")), logs.join("\n"));
  }, "  maxConnections: 100\n  maxConnectionsPerIp: 4\n");
});
