/**
 * proxy.yml (defaults, every problem with its position) and the trustedProxies matcher for IPv4,
 * IPv6 and CIDR ranges. (The ownership rule for files the proxy acts on needs root to chown real
 * temp files: tests/e2e/trusted_files_test.ts.)
 */
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { PROXY_DEFAULT_LIMITS as DEFAULT_LIMITS, PROXY_DEFAULTS as DEFAULTS } from "../helpers/configs.ts";
import { parseConfig } from "../../src/config/load.ts";
import { ConfigError } from "../../src/errors.ts";
import { isTrusted, LETS_ENCRYPT, parseIp, proxyConfigSchema } from "../../src/proxy/config.ts";

/** The problems of a refused proxy.yml. */
function problems(text: string): string[] {
  try {
    parseConfig(text, proxyConfigSchema, "proxy.yml");
  } catch (error) {
    assert(error instanceof ConfigError, `expected a ConfigError, got ${error}`);
    return error.problems;
  }
  throw new Error(`expected ${JSON.stringify(text)} to be refused`);
}

const parse = (text: string) => parseConfig(text, proxyConfigSchema, "proxy.yml");

Deno.test("proxy.yml: every key is optional; the defaults", () => {
  assertEquals(parse("http: 80\n"), DEFAULTS);
  assertEquals(proxyConfigSchema.parse({}), DEFAULTS);
  assertEquals(parse("acme: {}\n").acme, { directory: LETS_ENCRYPT });
});

Deno.test("proxy.yml: a full file keeps every value it sets", () => {
  const text = [
    "http: 8080",
    "https: 8443",
    "acme:",
    "  email: ops@example.com",
    "  directory: https://localhost:14000/dir",
    "  caCertificate: /etc/pebble/ca.pem",
    "metrics: '[::1]:9464'",
    "trustedProxies: [10.0.0.0/8, 192.168.1.7, 'fd00::/8', '2001:db8::1']",
    "limits:",
    "  maxConnections: 500",
    "  maxConnectionsPerIp: 50",
    "  headerTimeout: 5s",
    "  idleTimeout: 2m",
    "  requestTimeout: 10m",
    "  upstreamTimeout: 30",
    "  sendTimeout: 90s",
    "priority: 0",
    "http2: false",
    "",
  ].join("\n");
  assertEquals(parse(text), {
    http: 8080,
    https: 8443,
    acme: { email: "ops@example.com", directory: "https://localhost:14000/dir", caCertificate: "/etc/pebble/ca.pem" },
    metrics: "[::1]:9464",
    trustedProxies: ["10.0.0.0/8", "192.168.1.7", "fd00::/8", "2001:db8::1"],
    limits: {
      maxConnections: 500,
      maxConnectionsPerIp: 50,
      headerTimeoutMs: 5000,
      idleTimeoutMs: 120_000,
      requestTimeoutMs: 600_000,
      upstreamTimeoutMs: 30_000,
      sendTimeoutMs: 90_000,
    },
    priority: 0,
    http2: false,
  });
  assertEquals(parse("metrics: 127.0.0.2:9100\n").metrics, "127.0.0.2:9100");
  assertEquals(parse("metrics: localhost:9100\n").metrics, "127.0.0.1:9100");
  assertEquals(parse("metrics: 9100\n").metrics, "127.0.0.1:9100");
  assertEquals(parse("limits: { headerTimeout: 1s }\n").limits, { ...DEFAULT_LIMITS, headerTimeoutMs: 1000 });
});

Deno.test("proxy.yml: every problem at once, with its position and key path", () => {
  assertEquals(problems("http: 8080\nhttps: 8080\n"), [
    'proxy.yml:2:8: "https" must differ from http (8080) (got 8080)',
  ]);
  const text = [
    "http: 80",
    "https: 80",
    "acme: { email: nobody, directory: 'http://acme.test/dir', caCertificate: ca.pem }",
    "metrics: 0.0.0.0:9464",
    "trustedProxies: [10.0.0.1/8, 'fd00::1/8', proxy.example.com, 10.0.0.0/33]",
    "limits:",
    "  headerTimeout: 0",
    "  maxConnections: 10",
    "  maxConnectionsPerIp: 20",
    "  idle: 5s",
    "htps: 443",
    "",
  ].join("\n");
  assertEquals(problems(text), [
    // Across keys too, beside the others (http: 80 and https: 80).
    'proxy.yml:2:8: "https" must differ from http (80) (got 80)',
    'proxy.yml:3:16: "acme.email" must be an email address such as ops@example.com (got "nobody")',
    'proxy.yml:3:35: "acme.directory" must be an https:// URL of an ACME directory (got "http://acme.test/dir")',
    'proxy.yml:3:74: "acme.caCertificate" must be an absolute path without .., e.g. /etc/ssl/private/example.key ' +
    '(got "ca.pem")',
    'proxy.yml:4:10: "metrics" must be on loopback (127.x.x.x, [::1] or localhost): the metrics are for this server ' +
    'alone (got "0.0.0.0:9464")',
    'proxy.yml:5:18: "trustedProxies.0" has bits set past its /8 prefix: write "10.0.0.0/8" (got "10.0.0.1/8")',
    'proxy.yml:5:30: "trustedProxies.1" has bits set past its /8 prefix: write "fd00::/8" (got "fd00::1/8")',
    'proxy.yml:5:43: "trustedProxies.2" must be an IP address or a CIDR range such as 10.0.0.0/8 or fd00::/8 ' +
    '(got "proxy.example.com")',
    'proxy.yml:5:62: "trustedProxies.3" has a prefix length that is not a whole number from 0 to 32 ' +
    '(got "10.0.0.0/33")',
    'proxy.yml:7:18: "limits.headerTimeout" must be more than 0: a client must send its request head in time ' +
    "(slowloris) (got 0)",
    'proxy.yml:9:24: "limits.maxConnectionsPerIp" must be at most maxConnections (10) (got 20)',
    'proxy.yml:10:3: "limits.idle" is not a known key; did you mean "idleTimeout"?',
    'proxy.yml:11:1: "htps" is not a known key; did you mean "https"?',
  ]);
});

Deno.test("proxy.yml: ports, metrics and limits out of range", () => {
  assertEquals(problems("http: 0\nhttps: 70000\n"), [
    'proxy.yml:1:7: "http" must be from 1 to 65535 (got 0)',
    'proxy.yml:2:8: "https" must be from 1 to 65535 (got 70000)',
  ]);
  for (const metrics of ["127.0.0.1:0", "127.0.0.1:70000", "127.0.0.1", "'[::1]'"]) {
    assertEquals(problems(`metrics: ${metrics}\n`), [
      `proxy.yml:1:10: "metrics" must be a loopback address and a port from 1 to 65535, such as "127.0.0.1:9464" ` +
      `(got ${JSON.stringify(metrics.replace(/'/g, ""))})`,
    ], metrics);
  }
  for (const metrics of ["'[::]:9464'", "10.0.0.1:9464", "localhost.evil:9464", "'[::2]:9464'", "256.0.0.1:1"]) {
    assertMatch(problems(`metrics: ${metrics}\n`)[0], /"metrics" must be on loopback/, metrics);
  }
  assertEquals(problems("trustedProxies: 10.0.0.0/8\nlimits: { maxConnections: 0, requestTimeout: soon }\n"), [
    'proxy.yml:1:17: "trustedProxies" must be a list of IP addresses or CIDR ranges, e.g. [10.0.0.0/8, fd00::/8] ' +
    '(got "10.0.0.0/8")',
    'proxy.yml:2:27: "limits.maxConnections" must be from 1 to 1000000 (got 0)',
    'proxy.yml:2:46: "limits.requestTimeout" must be a duration like "500ms", "2s", "1m" or "1h" (units: ms, s, m, h) (got "soon")',
  ]);
  // Not a duration at all: one problem, not also "must be more than 0".
  assertEquals(problems("limits:\n  idleTimeout: forever\n"), [
    'proxy.yml:2:16: "limits.idleTimeout" must be a duration like "500ms", "2s", "1m" or "1h" (units: ms, s, m, h) (got "forever")',
  ]);
  assertEquals(problems("priority: -21\n"), [
    'proxy.yml:1:11: "priority" must be from -20 to 19 (a nice value) (got -21)',
  ]);
  assertEquals(problems("priority: 1.5\n"), [
    'proxy.yml:1:11: "priority" must be a whole number from -20 to 19 (a nice value) (got 1.5)',
  ]);
  assertEquals(problems("priority: high\n"), [
    'proxy.yml:1:11: "priority" must be a whole number from -20 to 19 (a nice value) (got "high")',
  ]);
});

Deno.test("isTrusted: IPv4, IPv6 and CIDR ranges of either", () => {
  const list = ["10.0.0.0/8", "192.168.1.7", "172.16.0.0/12", "fd00::/8", "2001:db8::1", "2001:db8:1::/48"];
  const yes = [
    "10.0.0.1",
    "10.255.255.255",
    "192.168.1.7",
    "172.31.0.1",
    "::ffff:10.1.2.3", // IPv4-mapped, as a dual-stack listener names an IPv4 peer
    "fd12:3456::1",
    "FD00::1",
    "2001:db8::1",
    "2001:0db8:0000:0000:0000:0000:0000:0001",
    "[2001:db8::1]",
    "2001:db8:1:ffff::9",
    "fd00::1%eth0", // a zone is ignored
  ];
  for (const ip of yes) assert(isTrusted(ip, list), ip);
  const no = ["11.0.0.1", "192.168.1.8", "172.32.0.1", "fe00::1", "2001:db8::2", "2001:db8:2::1", "::1", "", "x"];
  for (const ip of no) assert(!isTrusted(ip, list), ip);
  assert(!isTrusted("10.0.0.1", []));
  assert(isTrusted("203.0.113.9", ["0.0.0.0/0"]) && !isTrusted("::1", ["0.0.0.0/0"]));
  assert(isTrusted("2001:db8::5", ["::/0"]) && isTrusted("::1", ["::1/128"]));
  assert(isTrusted("10.1.2.3", ["10.1.2.3/32"]) && !isTrusted("10.1.2.4", ["10.1.2.3/32"]));
  assert(isTrusted("10.1.2.3", ["10.1.2.0/31", "bogus", "10.1.2.2/31"]), "bad entries never match, the rest do");
});

Deno.test("parseIp: the forms peers are named in, and refusals", () => {
  assertEquals(parseIp("1.2.3.4"), Uint8Array.from([1, 2, 3, 4]));
  assertEquals(parseIp("::ffff:1.2.3.4"), Uint8Array.from([1, 2, 3, 4]));
  assertEquals(parseIp("::1"), Uint8Array.from([...Array(15).fill(0), 1]));
  assertEquals(parseIp("1::"), Uint8Array.from([0, 1, ...Array(14).fill(0)]));
  assertEquals(parseIp("64:ff9b::192.0.2.33")?.slice(12), Uint8Array.from([192, 0, 2, 33]));
  for (
    const bad of ["1.2.3", "1.2.3.256", "01.2.3.4", "1::2::3", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7", "g::1", ":::"]
  ) {
    assertEquals(parseIp(bad), undefined, bad);
  }
  assertEquals(parseIp("1:2:3:4:5:6:7::"), Uint8Array.from([0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0, 0]));
});

Deno.test("proxy.yml: the metrics port cannot be the shared HTTP or HTTPS port", () => {
  assertEquals(problems("http: 8080\nmetrics: 127.0.0.1:8080\n"), [
    'proxy.yml:2:10: "metrics" must use another port than http and https (got "127.0.0.1:8080")',
  ]);
});
