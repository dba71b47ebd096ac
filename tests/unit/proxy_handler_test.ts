/**
 * The proxy's handler without sockets: routing by port and host name, ACME challenges, HTTPS
 * redirects, the forwarding headers an app gets (spoofed ones replaced), and error pages that
 * name nothing internal.
 */
import { assert, assertEquals } from "../helpers/assert.ts";
import { forwardedHeaders, hostName, requestHost } from "../../src/proxy/forward.ts";
import { type Conn, createHandler, type Entry, type HandlerDeps } from "../../src/proxy/handler.ts";
import type { Route } from "../../src/proxy/routes.ts";
import { loggedPath } from "../../src/proxy/pages.ts";
import { serveStatic } from "../../src/proxy/static.ts";
import { RouteTable } from "../../src/proxy/table.ts";

function route(app: string, extra: Partial<Route> = {}): Route {
  return { app, port: 8000, domains: [], hsts: false, target: { port: 41000 }, ...extra };
}

const TABLE = new RouteTable([
  route("shop", { domains: ["shop.test", "www.shop.test"], target: { port: 41001 }, hsts: true }),
  route("blog", { domains: ["*.blog.test"], target: { port: 41002 } }),
  route("new", { domains: ["new.test"], target: undefined }),
  route("legacy", { port: 8080, target: { port: 41003 } }),
]);

interface Forwarded {
  app: string;
  port: number | readonly number[];
  headers: string;
  url: string;
}

function harness(extra: Partial<HandlerDeps> = {}) {
  const forwarded: Forwarded[] = [];
  const deps: HandlerDeps = {
    table: () => TABLE,
    forward: (route, port, req, headers) => {
      forwarded.push({ app: route.app, port, headers, url: req.url });
      return Promise.resolve(new Response(`from ${route.app}`));
    },
    websocket: () => Promise.resolve(new Response("ws")),
    serveStatic: () => Promise.resolve(new Response("static")),
    challenge: (token) => token === "tok" ? "tok.key" : undefined,
    hasCertificate: (host) => host === "shop.test",
    httpsPort: () => 8443,
    log: () => {},
    ...extra,
  };
  return { handler: createHandler(deps), forwarded };
}

function conn(entry: Entry, ip = "203.0.113.7", trusted: string[] = []): Conn {
  const scheme = entry.kind === "https" ? "https" : "http";
  return { entry, client: { ip, scheme, isTrusted: (address) => trusted.includes(address) } };
}

const HTTP: Entry = { kind: "http" };
const HTTPS: Entry = { kind: "https" };

Deno.test("handler: routes by exact host, then one-label wildcard; unknown hosts get a plain 404", async () => {
  const { handler, forwarded } = harness();
  assertEquals(await (await handler(new Request("https://www.shop.test/a?b=1"), conn(HTTPS))).text(), "from shop");
  assertEquals(await (await handler(new Request("https://x.blog.test/"), conn(HTTPS))).text(), "from blog");
  const deeper = await handler(new Request("https://a.x.blog.test/"), conn(HTTPS));
  assertEquals([deeper.status, await deeper.text()], [404, "404 Not Found\n"]);
  const unknown = await handler(new Request("https://other.test/"), conn(HTTPS));
  assertEquals([unknown.status, await unknown.text()], [404, "404 Not Found\n"]);
  assertEquals(forwarded.map((f) => [f.app, f.port]), [["shop", 41001], ["blog", 41002]]);
});

Deno.test("handler: a Host that could rewrite the path is refused; the path is the request line's", async () => {
  const { handler, forwarded } = harness();
  for (const host of ["x/admin#", "shop.test/admin?", "a@shop.test", "shop.test#x", "sh op.test", ""]) {
    const req = new Request("http://shop.test/public", { headers: { host } });
    const response = await handler(req, conn({ kind: "port", port: 8080 }));
    assertEquals(response.status, 400, `Host: ${JSON.stringify(host)}`);
    assertEquals(await response.text(), "400 Bad Request\n");
  }
  assertEquals(forwarded.length, 0);
  assertEquals(requestHost(new Request("http://x/", { headers: { host: "Shop.Test:8080" } })), "shop.test:8080");
  assertEquals(requestHost(new Request("http://x/", { headers: { host: "[::1]:80" } })), "[::1]:80");
  assertEquals(requestHost(new Request("http://x/", { headers: { host: "shop.test:99999" } })), undefined);
  // A trailing dot names the same host: routed and forwarded without it.
  assertEquals(requestHost(new Request("http://x/", { headers: { host: "Shop.Test.:8080" } })), "shop.test:8080");
  assertEquals(requestHost(new Request("http://x/", { headers: { host: "shop.test." } })), "shop.test");
  assertEquals(hostName("shop.test:443"), "shop.test");
  assertEquals(hostName("[::1]:80"), "[::1]");
  assertEquals(hostName("shop.test:80"), "shop.test");
});

Deno.test("handler: per-port apps; no route or no release is a 503 naming nothing", async () => {
  const { handler, forwarded } = harness();
  assertEquals(
    await (await handler(new Request("http://h/"), conn({ kind: "port", port: 8080 }))).text(),
    "from legacy",
  );
  for (
    const [req, entry] of [[new Request("http://h/"), { kind: "port", port: 9999 }], [
      new Request("https://new.test/"),
      HTTPS,
    ]] as const
  ) {
    const response = await handler(req, conn(entry));
    assertEquals([response.status, await response.text()], [503, "503 Service Unavailable\n"]);
  }
  assertEquals(forwarded.length, 1);
});

Deno.test("handler: ACME challenges on HTTP; 308 to HTTPS for hosts with a certificate; HSTS when asked", async () => {
  const { handler } = harness();
  const challenge = await handler(new Request("http://shop.test/.well-known/acme-challenge/tok"), conn(HTTP));
  assertEquals([challenge.status, await challenge.text()], [200, "tok.key"]);
  const unknown = await handler(new Request("http://shop.test/.well-known/acme-challenge/nope"), conn(HTTP));
  assertEquals(unknown.status, 404);
  await unknown.body?.cancel();
  const redirect = await handler(new Request("http://shop.test/cart?x=1"), conn(HTTP));
  assertEquals([redirect.status, redirect.headers.get("location")], [308, "https://shop.test:8443/cart?x=1"]);
  // No certificate yet: served over plain HTTP.
  assertEquals(await (await handler(new Request("http://www.shop.test/"), conn(HTTP))).text(), "from shop");
  const secure = await handler(new Request("https://shop.test/"), conn(HTTPS));
  assertEquals(secure.headers.get("strict-transport-security"), "max-age=31536000");
  await secure.body?.cancel();
  const blog = await handler(new Request("https://a.blog.test/"), conn(HTTPS));
  assertEquals(blog.headers.get("strict-transport-security"), null);
  await blog.body?.cancel();
});

Deno.test("forwarding headers: client-sent X-Forwarded-*, X-Real-IP and Forwarded are replaced", () => {
  const spoofed = new Headers({
    host: "shop.test",
    "x-forwarded-for": "1.2.3.4",
    "x-real-ip": "1.2.3.4",
    "x-forwarded-proto": "https",
    "x-forwarded-host": "admin.internal",
    forwarded: "for=1.2.3.4;proto=https",
    connection: "keep-alive, x-secret",
    "x-secret": "drop me",
    "keep-alive": "timeout=5",
  });
  const out = forwardedHeaders(spoofed, conn(HTTP).client, "shop.test");
  assertEquals(out.get("x-forwarded-for"), "203.0.113.7");
  assertEquals(out.get("x-real-ip"), "203.0.113.7");
  assertEquals(out.get("x-forwarded-proto"), "http");
  assertEquals(out.get("x-forwarded-host"), "shop.test");
  assertEquals(out.get("forwarded"), 'for=203.0.113.7;host="shop.test";proto=http');
  assertEquals(out.get("host"), "shop.test");
  for (const name of ["connection", "x-secret", "keep-alive"]) assertEquals(out.get(name), null, name);
  const v6 = forwardedHeaders(new Headers(), conn(HTTPS, "2001:db8::1").client, "shop.test");
  assertEquals(v6.get("forwarded"), 'for="[2001:db8::1]";host="shop.test";proto=https');
  // A Connection header naming something that is not a header name does not break forwarding.
  assert(forwardedHeaders(new Headers({ connection: "a b, (c)" }), conn(HTTP).client, "h").has("x-real-ip"));
});

Deno.test("forwarding headers: behind a trusted load balancer the chain is kept and the real client found", () => {
  const headers = new Headers({
    "x-forwarded-for": "198.51.100.9, 10.0.0.5",
    "x-forwarded-proto": "https",
    "x-forwarded-host": "shop.test",
    forwarded: "for=198.51.100.9",
  });
  const client = conn(HTTP, "10.0.0.2", ["10.0.0.2", "10.0.0.5"]).client;
  const out = forwardedHeaders(headers, client, "shop.test");
  assertEquals(out.get("x-forwarded-for"), "198.51.100.9, 10.0.0.5, 10.0.0.2");
  assertEquals(out.get("x-real-ip"), "198.51.100.9");
  assertEquals(out.get("x-forwarded-proto"), "https");
  assertEquals(out.get("forwarded"), 'for=198.51.100.9, for=10.0.0.2;host="shop.test";proto=http');
});

Deno.test("route table: an app that serves keeps its port and host names over one with no release yet", () => {
  const table = new RouteTable([
    route("aaa-copy", { port: 8080, target: undefined }),
    route("aaa-site", { domains: ["site.test"], target: undefined }),
    route("legacy", { port: 8080, target: { port: 41003 } }),
    route("site", { domains: ["site.test"], target: { port: 41004 } }),
    route("zzz", { port: 8080, target: { port: 41005 } }),
  ]);
  assertEquals(table.byPort(8080)?.app, "legacy");
  assertEquals(table.byHost("site.test")?.app, "site");
  assertEquals(Object.fromEntries(table.conflicts), {
    "aaa-copy": "skipping aaa-copy: port 8080 is already legacy's",
    "aaa-site": "skipping aaa-site: site.test is already site's",
    zzz: "skipping zzz: port 8080 is already legacy's", // both serve: the first by name
  });
});

Deno.test("loggedPath: a request's path in the log is cut at 200 characters and loses its query", () => {
  assertEquals(loggedPath("/a/b?token=secret"), "/a/b");
  assertEquals(loggedPath(`/${"x".repeat(60_000)}?q`), `/${"x".repeat(199)}… (60001 characters)`);
});

Deno.test("serveStatic: a file that grows while it is sent gives its size when found, no more; one that shrinks fails", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dp-static-size-" });
  try {
    const path = `${dir}/big.bin`;
    const size = 1 << 20;
    for (const change of ["grow", "shrink"] as const) {
      await Deno.writeFile(path, new Uint8Array(size).fill(0x61));
      const response = await serveStatic(dir, new Request("http://x/big.bin"));
      assertEquals(response.headers.get("content-length"), String(size));
      const reader = response.body!.getReader();
      let read = (await reader.read()).value!.length; // the file is open and being sent
      if (change === "grow") await Deno.writeFile(path, new Uint8Array(3 << 20).fill(0x62), { append: true });
      else await Deno.truncate(path, 1000);
      const rest = (async () => {
        for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) read += chunk.value.length;
        return read;
      })();
      if (change === "grow") assertEquals(await rest, size, "exactly the announced length");
      else assertEquals(await rest.then(() => "ended", () => "failed"), "failed", "never a short body taken as whole");
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
