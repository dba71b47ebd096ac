/** An app's URL as deploys print it and status.json keeps it: scheme, host and port as the proxy serves it. */
import { join } from "node:path";
import { assertEquals } from "../helpers/assert.ts";
import { appUrl, frontDoor } from "../../src/deploy/outcome.ts";
import { serverConfigSchema } from "../../src/config/schema.ts";
import { deploymentsRoot } from "../../src/paths.ts";

const config = (extra: Record<string, unknown> = {}) =>
  serverConfigSchema.parse({ port: 8000, manager: "pm2", ...extra });

Deno.test("appUrl: its own port without domains; a domain over HTTPS only with a certificate to serve; the port when not the scheme's", () => {
  const front = (http: number, https: number, acme: boolean) => ({ http, https, acme });
  assertEquals(appUrl(config()), "http://127.0.0.1:8000/");
  assertEquals(appUrl(config({ domains: ["*.cdn.test", "shop.test"] })), "http://shop.test/", "no ACME, no tls:");
  assertEquals(appUrl(config({ domains: ["shop.test"] }), front(80, 443, true)), "https://shop.test/");
  assertEquals(appUrl(config({ domains: ["shop.test"] }), front(8080, 8443, false)), "http://shop.test:8080/");
  assertEquals(appUrl(config({ domains: ["shop.test"] }), front(8080, 8443, true)), "https://shop.test:8443/");
  const tls = { certificate: "/etc/ssl/shop.pem", key: "/etc/ssl/shop.key" };
  assertEquals(appUrl(config({ domains: ["shop.test"], tls }), front(80, 8443, false)), "https://shop.test:8443/");
  // strategy: restart: the app listens itself, domains or not.
  assertEquals(appUrl(config({ domains: ["shop.test"], strategy: "restart" })), "http://127.0.0.1:8000/");
});

Deno.test("frontDoor: proxy.yml's ports and ACME; the defaults without one or with one that does not load", async () => {
  const root = await Deno.makeTempDir({ prefix: "dp-front-" });
  try {
    assertEquals(await frontDoor(root), { http: 80, https: 443, acme: false });
    const file = join(deploymentsRoot(root), "proxy.yml");
    await Deno.mkdir(deploymentsRoot(root), { recursive: true });
    await Deno.writeTextFile(file, "http: 8080\nhttps: 8443\nacme: { email: ops@shop.test }\n", { mode: 0o644 });
    await Deno.chmod(file, 0o644);
    assertEquals(await frontDoor(root), { http: 8080, https: 8443, acme: true });
    await Deno.writeTextFile(file, "htps: 1\n");
    assertEquals(await frontDoor(root), { http: 80, https: 443, acme: false });
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
