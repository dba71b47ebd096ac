/**
 * `proxy status`'s table: a certificate the proxy could not get says why, not only "failing"
 * (the reason was in `--json` alone).
 * @module
 */
import { assertEquals } from "../helpers/assert.ts";
import { proxyStatusLines } from "../../src/proxy/status_view.ts";

Deno.test("proxy status: a certificate's last error is a line under the table, with the app; exit code unchanged", () => {
  const now = Date.parse("2026-12-06T12:00:00Z");
  const lines = proxyStatusLines({
    host: "127.0.0.1",
    routes: [
      { app: "shop", port: 8000, domains: ["shop.test"], target: null, inFlight: 0, listening: true },
      { app: "blog", port: 8001, domains: ["blog.test"], target: null, inFlight: 0, listening: true },
      { app: "api", port: 8002, domains: [], target: null, inFlight: 0, listening: true },
    ],
    problems: {},
    shared: { http: 80, https: 443 },
    certificates: {
      shop: { notAfter: null, source: "acme", lastError: "no certificate: automatic certificates are off" },
      blog: { notAfter: "2027-01-05T12:00:00Z", source: "acme", lastError: "renewal: rate limited\nretry later" },
    },
  }, now);
  assertEquals(lines.slice(1).map((line) => line.trimEnd()), [
    "APP   SERVES ON  TARGET             IN FLIGHT  CERTIFICATE                   STATE",
    "shop  shop.test  no active release  0          none yet (failing)            listening",
    "blog  blog.test  no active release  0          expires 2027-01-05 (30 days)  listening",
    "api   :8002      no active release  0          -                             listening",
    "",
    "! shop: certificate: no certificate: automatic certificates are off",
    "! blog: certificate: renewal: rate limited\\x0aretry later",
  ]);
});
