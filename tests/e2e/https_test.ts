/**
 * The front door for real: the `proxy` command routing two apps by host name on one HTTP and
 * one HTTPS port, with certificates issued by a real ACME server (Debian's pebble) over HTTP-01
 * answered by the proxy itself; HTTP/2 and HTTP/1.1 (curl), HTTP → HTTPS redirects, WebSocket
 * over TLS, a renewal under keep-alive load that loses no request, and serving on with the old
 * certificate while the ACME server is down.
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { startPebble } from "../helpers/pebble.ts";
import { HttpsClient, servedSerial, startProxy } from "../helpers/proxy_process.ts";
import { freePort } from "../helpers/server.ts";
import { sleep, until } from "../helpers/time.ts";
import { control } from "../../src/proxy/client.ts";
import { writeRoute } from "../../src/proxy/routes.ts";
import { deploymentsRoot } from "../../src/paths.ts";

/** An app that names itself and echoes what the proxy told it; WebSockets echo. */
function app(name: string): Deno.HttpServer<Deno.NetAddr> {
  return Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    if (req.headers.get("upgrade") === "websocket") {
      const { socket, response } = Deno.upgradeWebSocket(req);
      socket.onmessage = (event) => socket.send(`${name}: ${event.data}`);
      return response;
    }
    const body = JSON.stringify({
      app: name,
      path: new URL(req.url).pathname,
      proto: req.headers.get("x-forwarded-proto"),
      host: req.headers.get("host"),
    });
    return new Response(body, { headers: { "content-type": "application/json" } });
  });
}

async function curl(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const { code, stdout, stderr } = await new Deno.Command("curl", { args: ["-sS", "--max-time", "10", ...args] })
    .output();
  return { code, out: new TextDecoder().decode(stdout), err: new TextDecoder().decode(stderr) };
}

interface CertState {
  names: string[];
  notAfter: string | null;
  notBefore: string | null;
  lastError: string | null;
}

async function certificates(root: string): Promise<Record<string, CertState>> {
  const text = await Deno.readTextFile(join(deploymentsRoot(root), ".tls", "certificates.json")).catch(() => "{}");
  return (JSON.parse(text).certificates ?? {}) as Record<string, CertState>;
}

/** One WebSocket message over TLS to 127.0.0.1:`port` with SNI `name`: handshake, a masked text frame, the echo. */
async function wssEcho(port: number, name: string, ca: string, text: string): Promise<string> {
  const tcp = await Deno.connect({ hostname: "127.0.0.1", port });
  const conn = await Deno.startTls(tcp, { hostname: name, caCerts: [ca], alpnProtocols: ["http/1.1"] });
  try {
    const key = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
    await conn.write(new TextEncoder().encode(
      `GET /ws HTTP/1.1\r\nHost: ${name}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    ));
    const payload = new TextEncoder().encode(text);
    const mask = crypto.getRandomValues(new Uint8Array(4));
    const frame = new Uint8Array([0x81, 0x80 | payload.length, ...mask, ...payload.map((b, i) => b ^ mask[i % 4])]);
    let buffer = new Uint8Array(0);
    const chunk = new Uint8Array(4096);
    let sent = false;
    while (true) {
      const n = await conn.read(chunk);
      if (n === null) throw new Error(`closed; got ${new TextDecoder().decode(buffer)}`);
      buffer = new Uint8Array([...buffer, ...chunk.subarray(0, n)]);
      const head = new TextDecoder().decode(buffer);
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) continue;
      assertMatch(head, /^HTTP\/1\.1 101/);
      if (!sent) {
        await conn.write(frame);
        sent = true;
      }
      const rest = buffer.subarray(end + 4);
      if (rest.length >= 2 && rest.length >= 2 + (rest[1] & 0x7f)) {
        return new TextDecoder().decode(rest.subarray(2, 2 + (rest[1] & 0x7f)));
      }
    }
  } finally {
    conn.close();
  }
}

Deno.test("https: ACME certificates for two apps by host name, HTTP/2, redirects, wss, renewal under load, ACME down", async () => {
  const root = await Deno.makeTempDir({ prefix: "dp-https-" });
  const [httpPort, httpsPort] = [freePort(), freePort()];
  const pebble = await startPebble({ httpPort });
  const shop = app("shop");
  const blog = app("blog");
  let proxy: Awaited<ReturnType<typeof startProxy>> | undefined;
  try {
    const base = deploymentsRoot(root);
    await Deno.mkdir(base, { recursive: true });
    await Deno.writeTextFile(
      join(base, "proxy.yml"),
      `http: ${httpPort}\nhttps: ${httpsPort}\nacme:\n  email: ops@example.test\n  directory: ${pebble.directory}\n` +
        `  caCertificate: ${pebble.caCertificate}\n`,
    );
    for (
      const [name, server, domains] of [["shop", shop, "[shop.test, www.shop.test]"], [
        "blog",
        blog,
        "[blog.test, www.blog.test]",
      ]] as const
    ) {
      const dir = join(base, name);
      await Deno.mkdir(dir);
      await Deno.writeTextFile(join(dir, "config.yml"), `port: ${freePort()}\nmanager: pm2\ndomains: ${domains}\n`);
      await writeRoute(dir, { port: server.addr.port });
    }
    proxy = await startProxy(root);
    const issued = await until(30_000, "both certificates", async () => {
      const state = await certificates(root);
      return state.shop?.notAfter && state.blog?.notAfter ? state : undefined;
    });
    assertEquals(issued.shop.names.sort(), ["shop.test", "www.shop.test"]);
    assertEquals(issued.blog.names.sort(), ["blog.test", "www.blog.test"]);
    const tls = join(base, ".tls");
    for (const file of ["account.key", "shop/key.pem", "shop/cert.pem", "blog/key.pem"]) {
      assertEquals((await Deno.stat(join(tls, file))).mode! & 0o777, 0o600, file);
    }

    // Each name reaches its app over HTTP/2 and HTTP/1.1, with the certificate pebble issued.
    for (const [name, expected] of [["shop.test", "shop"], ["www.shop.test", "shop"], ["www.blog.test", "blog"]]) {
      const resolve = `${name}:${httpsPort}:127.0.0.1`;
      const h2 = await curl([
        "--http2",
        "--cacert",
        pebble.rootFile,
        "--resolve",
        resolve,
        "-w",
        "\n%{http_version}",
        `https://${name}:${httpsPort}/path?q=1`,
      ]);
      assertEquals(h2.code, 0, h2.err);
      const [body, version] = h2.out.split("\n");
      assertEquals(version, "2", `${name} over HTTP/2`);
      assertEquals(JSON.parse(body), { app: expected, path: "/path", proto: "https", host: `${name}:${httpsPort}` });
      const h1 = await curl([
        "--http1.1",
        "--cacert",
        pebble.rootFile,
        "--resolve",
        resolve,
        "-w",
        "\n%{http_version}",
        `https://${name}:${httpsPort}/`,
      ]);
      assertEquals(h1.out.split("\n")[1], "1.1");
    }
    // HTTP redirects to HTTPS once a certificate serves the name; unknown names get a plain 404.
    const redirect = await curl([
      "-o",
      "/dev/null",
      "-w",
      "%{http_code} %{redirect_url}",
      "-H",
      "Host: shop.test",
      `http://127.0.0.1:${httpPort}/cart?x=1`,
    ]);
    assertEquals(redirect.out, `308 https://shop.test:${httpsPort}/cart?x=1`);
    const unknown = await curl(["-H", "Host: nobody.test", "-w", "%{http_code}", `http://127.0.0.1:${httpPort}/`]);
    assertEquals(unknown.out, "404 Not Found\n404");
    const noCert = await curl([
      "--cacert",
      pebble.rootFile,
      "--resolve",
      `nobody.test:${httpsPort}:127.0.0.1`,
      `https://nobody.test:${httpsPort}/`,
    ]);
    assert(noCert.code !== 0, "no certificate for an unknown name: the handshake fails");

    // Renewal under keep-alive load: 4 keep-alive connections plus a new connection every 20 requests.
    const before = await servedSerial(httpsPort, "shop.test");
    let stop = false;
    const counts = { ok: 0, failed: 0, errors: [] as string[] };
    const worker = async (fresh: boolean) => {
      let client = await HttpsClient.connect(httpsPort, "shop.test", pebble.root);
      for (let i = 1; !stop; i++) {
        try {
          const response = await client.request("/load");
          if (response.status === 200 && JSON.parse(response.body).app === "shop") counts.ok++;
          else counts.failed++;
          if (fresh && i % 20 === 0) {
            client.close();
            client = await HttpsClient.connect(httpsPort, "shop.test", pebble.root);
          }
        } catch (error) {
          counts.failed++;
          counts.errors.push(String(error));
          client.close();
          client = await HttpsClient.connect(httpsPort, "shop.test", pebble.root);
        }
      }
      client.close();
    };
    const workers = [worker(false), worker(false), worker(true), worker(true)];
    await sleep(500);
    const renewed = await control(root, { op: "renew", app: "shop" }, 30_000);
    assert(renewed.ok);
    await sleep(1000);
    stop = true;
    await Promise.all(workers);
    console.log(`renewal under load: ${counts.ok} requests served, ${counts.failed} failed`);
    assertEquals(counts.failed, 0, counts.errors.slice(0, 3).join("; "));
    assert(counts.ok > 100, `only ${counts.ok} requests`);
    const after = await servedSerial(httpsPort, "shop.test");
    assert(before !== after, `a new connection gets the renewed certificate (${before} → ${after})`);

    // The ACME server down: a renewal fails, the error is recorded, the old certificate keeps serving.
    await pebble.stopPebble();
    const failed = await control(root, { op: "renew", app: "blog" }, 60_000).then(() => "ok", (e) => String(e));
    assert(failed !== "ok", "renewing without the ACME server fails");
    const state = await until(10_000, "the error in certificates.json", async () => {
      const s = await certificates(root);
      return s.blog?.lastError ? s : undefined;
    });
    assert(state.blog.notAfter, "the old certificate is still listed");
    const still = await curl([
      "--cacert",
      pebble.rootFile,
      "--resolve",
      `blog.test:${httpsPort}:127.0.0.1`,
      `https://blog.test:${httpsPort}/`,
    ]);
    assertEquals(JSON.parse(still.out).app, "blog");

    // WebSocket over TLS.
    assertEquals(await wssEcho(httpsPort, "blog.test", pebble.root, "hello"), "blog: hello", proxy.output());
  } finally {
    await proxy?.stop();
    await shop.shutdown();
    await blog.shutdown();
    await pebble.close();
    await Deno.remove(root, { recursive: true });
  }
});
