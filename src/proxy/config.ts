/**
 * The proxy's own settings, `<deployments root>/proxy.yml` (every key optional): the shared HTTP
 * and HTTPS ports, ACME, the loopback metrics address, the proxies whose forwarding headers are
 * kept, the connection limits and timeouts, and the proxy's scheduling priority. Read through the
 * same one-pass loader as config.yml (every problem with `file:line:column`).
 *
 * Also the trust rule for every file the proxy acts on (config.yml, route.json, proxy.yml): it and
 * its directory must be owned by root (or the proxy's own user) and writable by no group or other
 * user; else anyone who can write one could make the proxy serve any file it can read.
 * @module
 */
import { dirname, join, resolve } from "node:path";
import { z } from "zod";
import { crossChecks } from "../config/cross_checks.ts";
import { parseConfig } from "../config/load.ts";
import { absolutePath } from "../config/schema.ts";
import { duration, port } from "../config/fields.ts";
import { DeployParadigmError, UsageError } from "../errors.ts";
import { ifExists } from "../fsutil.ts";
import { deploymentsRoot, prefix } from "../paths.ts";

/** The proxy's settings file, in the deployments root. */
export const PROXY_FILE = "proxy.yml";

/** Let's Encrypt's production directory: the default ACME server. */
export const LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory";
/** Let's Encrypt's staging directory (untrusted certificates, generous rate limits). */
export const LETS_ENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory";

/** proxy.yml `priority` when absent: the proxy's nice value, ahead of the apps' 0. */
export const DEFAULT_PRIORITY = -5;

/** `<deployments root>/proxy.yml` under `root`. */
export function proxyConfigPath(root: string = prefix()): string {
  return join(deploymentsRoot(root), PROXY_FILE);
}

// ---------------------------------------------------------------------------------------------
// IP addresses and ranges

/** An address range: the first `bits` bits of `bytes` (4 bytes for IPv4, 16 for IPv6). */
export interface Range {
  bytes: Uint8Array;
  bits: number;
}

/** The 4 bytes of a dotted-quad IPv4 address (no leading zeros, each 0-255), or undefined. */
function parseIPv4(text: string): number[] | undefined {
  const parts = text.split(".");
  if (parts.length !== 4 || !parts.every((part) => /^(0|[1-9]\d{0,2})$/.test(part))) return undefined;
  const bytes = parts.map(Number);
  return bytes.every((byte) => byte <= 255) ? bytes : undefined;
}

/** The 16 bytes of an IPv6 address (`::` compression and a trailing dotted quad allowed), or undefined. */
function parseIPv6(text: string): number[] | undefined {
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const groups = (half: string): number[] | undefined => {
    if (half === "") return [];
    const out: number[] = [];
    const parts = half.split(":");
    for (const [i, part] of parts.entries()) {
      if (i === parts.length - 1 && part.includes(".")) {
        const v4 = parseIPv4(part);
        if (!v4) return undefined;
        out.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
      } else if (/^[0-9a-f]{1,4}$/i.test(part)) out.push(parseInt(part, 16));
      else return undefined;
    }
    return out;
  };
  const head = groups(halves[0]);
  const tail = halves.length === 2 ? groups(halves[1]) : [];
  if (!head || !tail) return undefined;
  // The embedded IPv4 address may only end the address.
  if (halves.length === 2 && halves[0].includes(".")) return undefined;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return undefined;
  return [...head, ...Array(missing).fill(0), ...tail].flatMap((group) => [group >> 8, group & 0xff]);
}

/**
 * The bytes of an IP address as peers are named: IPv4, IPv6 (with or without brackets, a zone
 * `%eth0` ignored); an IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) is its IPv4 address.
 */
export function parseIp(text: string): Uint8Array | undefined {
  const bare = text.replace(/^\[(.*)\]$/, "$1").replace(/%[^%]*$/, "");
  const v4 = parseIPv4(bare);
  if (v4) return Uint8Array.from(v4);
  const v6 = bare.includes(":") ? parseIPv6(bare) : undefined;
  if (!v6) return undefined;
  const mapped = v6.slice(0, 10).every((byte) => byte === 0) && v6[10] === 0xff && v6[11] === 0xff;
  return Uint8Array.from(mapped ? v6.slice(12) : v6);
}

/**
 * Whether `host` is a loopback address: IPv4 127.0.0.0/8, or IPv6 ::1 (brackets allowed). An
 * IPv4-mapped IPv6 address is not: a listener cannot bind to it as such.
 */
export function isLoopbackIp(host: string): boolean {
  const address = parseIp(host);
  if (host.includes(":")) return address?.length === 16 && address.every((byte, i) => byte === (i === 15 ? 1 : 0));
  return address?.length === 4 && address[0] === 127;
}

/** An address (`10.0.0.1`, `fd00::1`) or a CIDR range (`10.0.0.0/8`, `fd00::/8`): the range, or what is wrong. */
export function parseRange(text: string): Range | string {
  const [address, length, extra] = text.split("/");
  const explain = "must be an IP address or a CIDR range such as 10.0.0.0/8 or fd00::/8";
  if (extra !== undefined || address.includes("[") || address.includes("%")) return explain;
  const v4 = parseIPv4(address);
  const v6 = v4 ? undefined : address.includes(":") ? parseIPv6(address) : undefined;
  const parsed = v4 ?? v6;
  if (!parsed) return explain;
  let bytes = Uint8Array.from(parsed);
  let max = bytes.length * 8;
  // An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is the IPv4 address clients are seen with.
  const mapped = bytes.length === 16 && bytes.slice(0, 10).every((b) => b === 0) && bytes[10] === 0xff &&
    bytes[11] === 0xff && (length === undefined || Number(length) >= 96);
  if (mapped) [bytes, max] = [bytes.slice(12), 32];
  if (length === undefined) return { bytes, bits: max };
  const offset = mapped ? 96 : 0;
  if (!/^(0|[1-9]\d*)$/.test(length) || Number(length) - offset > max) {
    return `has a prefix length that is not a whole number from 0 to ${max + offset}`;
  }
  const bits = Number(length) - offset;
  const network = bytes.map((byte, i) => byte & maskByte(bits, i));
  if (network.some((byte, i) => byte !== bytes[i])) {
    return `has bits set past its /${bits + offset} prefix: write "${
      formatRange(network, bits, v4 !== undefined || mapped)
    }"`;
  }
  return { bytes, bits };
}

/** The mask of byte `i` of a `/bits` prefix. */
function maskByte(bits: number, i: number): number {
  const within = Math.max(0, Math.min(8, bits - i * 8));
  return (0xff00 >> within) & 0xff;
}

function formatRange(bytes: Uint8Array, bits: number, v4: boolean): string {
  if (v4) return `${[...bytes].join(".")}/${bits}`;
  const groups = Array.from({ length: 8 }, (_, i) => ((bytes[2 * i] << 8) | bytes[2 * i + 1]).toString(16));
  // The longest run of zero groups becomes "::".
  let best = { at: -1, length: 0 };
  for (let i = 0; i < 8; i++) {
    let j = i;
    while (j < 8 && groups[j] === "0") j++;
    if (j - i > best.length && j - i > 1) best = { at: i, length: j - i };
  }
  const text = best.at < 0
    ? groups.join(":")
    : `${groups.slice(0, best.at).join(":")}::${groups.slice(best.at + best.length).join(":")}`;
  return `${text}/${bits}`;
}

function contains(range: Range, ip: Uint8Array): boolean {
  if (range.bytes.length !== ip.length) return false;
  for (let i = 0; i * 8 < range.bits; i++) {
    const mask = maskByte(range.bits, i);
    if ((ip[i] & mask) !== (range.bytes[i] & mask)) return false;
  }
  return true;
}

const compiled = new WeakMap<readonly string[], Range[]>();

/**
 * Whether the peer address `ip` (as `Deno.NetAddr.hostname` gives it: IPv4, IPv6, IPv4-mapped
 * IPv6) is one of `list`: addresses and CIDR ranges, IPv4 and IPv6, as proxy.yml `trustedProxies`
 * holds them. Entries that are not valid never match. Pure; the list is parsed once per array.
 */
export function isTrusted(ip: string, list: readonly string[]): boolean {
  if (list.length === 0) return false;
  let ranges = compiled.get(list);
  if (!ranges) {
    ranges = list.map(parseRange).filter((range): range is Range => typeof range !== "string");
    compiled.set(list, ranges);
  }
  const address = parseIp(ip);
  return address !== undefined && ranges.some((range) => contains(range, address));
}

// ---------------------------------------------------------------------------------------------
// proxy.yml

/**
 * A `host:port` on loopback: `127.x.x.x`, `[::1]` or `localhost`; a bare port means 127.0.0.1. Out:
 * `127.0.0.1:9464` or `[::1]:9464` (localhost as 127.0.0.1).
 */
const loopbackAddress = z.union([z.string(), z.int()], {
  error: 'must be a loopback address and port such as "127.0.0.1:9464"',
}).transform((value, ctx) => {
  const text = String(value);
  const match = /^(?:(\[[^\]]*\]|[^:]+):)?(\d{1,5})$/.exec(text);
  const host = match?.[1] ?? "127.0.0.1";
  const number = Number(match?.[2]);
  const loopback = host === "localhost" || isLoopbackIp(host);
  if (!match || !loopback || number < 1 || number > 65535) {
    ctx.addIssue({
      code: "custom",
      message: !match || number < 1 || number > 65535
        ? 'must be a loopback address and a port from 1 to 65535, such as "127.0.0.1:9464"'
        : "must be on loopback (127.x.x.x, [::1] or localhost): the metrics are for this server alone",
    });
    return z.NEVER;
  }
  return `${host === "localhost" ? "127.0.0.1" : host}:${number}`;
});

const trustedProxies = z.array(z.string({ error: "must be an IP address or a CIDR range such as 10.0.0.0/8" }), {
  error: "must be a list of IP addresses or CIDR ranges, e.g. [10.0.0.0/8, fd00::/8]",
}).superRefine((entries, ctx) => {
  for (const [i, entry] of entries.entries()) {
    const range = parseRange(entry);
    if (typeof range === "string") ctx.addIssue({ code: "custom", path: [i], message: range });
  }
});

const count = (what: string, max: number) =>
  z.int({ error: `must be a whole number from 1 to ${max}` }).min(1, `must be from 1 to ${max}`)
    .max(max, `must be from 1 to ${max}`).meta({ description: what });

const positive = <T extends z.ZodType<number>>(schema: T, why: string) =>
  // Not a number: not a duration at all, which `schema` already said (one problem, not two).
  schema.refine((ms) => typeof ms !== "number" || ms > 0, `must be more than 0: ${why}`);

const limits = z.strictObject({
  maxConnections: count("Open client connections in total; more are refused cleanly.", 1_000_000).default(10_000),
  maxConnectionsPerIp: count("Open client connections from one IP address.", 1_000_000).default(256),
  headerTimeout: positive(duration("10s"), "a client must send its request head in time (slowloris)"),
  idleTimeout: positive(duration("60s"), "idle keep-alive connections must be closed at some point"),
  requestTimeout: duration("60s").meta({
    description: "How long a request body may stall (no byte arriving) before it is cut, or a body up to 64 KiB " +
      "may take in all (then 408); 0: no limit.",
  }),
  upstreamTimeout: positive(duration("60s"), "it is the time the app has for its response head (then 504)"),
  sendTimeout: positive(
    duration("60s"),
    "it is how long one write (up to 64 KiB) to a client, or behind a WebSocket to an app, may take (then a cut)",
  ),
}).check(crossChecks((value, ctx, ok) => {
  if (ok("maxConnections", "maxConnectionsPerIp") && value.maxConnectionsPerIp > value.maxConnections) {
    ctx.addIssue({
      code: "custom",
      path: ["maxConnectionsPerIp"],
      message: `must be at most maxConnections (${value.maxConnections})`,
    });
  }
})).transform(({ headerTimeout, idleTimeout, requestTimeout, upstreamTimeout, sendTimeout, ...counts }) => ({
  ...counts,
  sendTimeoutMs: sendTimeout,
  headerTimeoutMs: headerTimeout,
  idleTimeoutMs: idleTimeout,
  requestTimeoutMs: requestTimeout,
  upstreamTimeoutMs: upstreamTimeout,
}));

/** `proxy.yml`, in the deployments root. Every key is optional. */
export const proxyConfigSchema = z.strictObject({
  http: port.default(80).meta({
    description: "The shared HTTP port of apps with domains (ACME HTTP-01, 308 to HTTPS).",
  }),
  https: port.default(443).meta({ description: "The shared HTTPS port of apps with domains (HTTP/2 and HTTP/1.1)." }),
  acme: z.strictObject({
    email: z.string().regex(/^[^\s@]+@[^\s@]+\.[^\s@]+$/, "must be an email address such as ops@example.com")
      .optional().meta({ description: "The ACME account's contact (expiry and policy mail)." }),
    directory: z.url({ protocol: /^https$/, error: "must be an https:// URL of an ACME directory" })
      .default(LETS_ENCRYPT).meta({ description: `The ACME directory (default Let's Encrypt, ${LETS_ENCRYPT}).` }),
    caCertificate: absolutePath.optional().meta({
      description: "A PEM file of the CA to trust for the directory (a private ACME server such as step-ca).",
    }),
  }).optional().meta({ description: "Automatic certificates; absent: none (bring-your-own tls: only)." }),
  metrics: loopbackAddress.optional().meta({
    description: 'Prometheus text on this loopback address, e.g. "127.0.0.1:9464"; absent: off.',
  }),
  trustedProxies: trustedProxies.default([]).meta({
    description: "Peers (IPs or CIDR ranges) whose X-Forwarded-*/Forwarded headers are kept and extended.",
  }),
  limits: limits.prefault({}).meta({ description: "Connection limits and timeouts." }),
  http2: z.boolean({ error: "must be true or false" }).default(true).meta({
    description: "Offer HTTP/2 to HTTPS clients (ALPN h2); false: HTTP/1.1 only, served by the proxy's own " +
      "HTTP/1.1 server. HTTP/2 runs in Deno's HTTP server, behind the proxy's frame guard.",
  }),
  priority: z.int({ error: "must be a whole number from -20 to 19 (a nice value)" })
    .min(-20, "must be from -20 to 19 (a nice value)").max(19, "must be from -20 to 19 (a nice value)")
    .default(DEFAULT_PRIORITY).meta({
      description:
        `The proxy's nice value (-20 to 19, lower runs sooner). The default ${DEFAULT_PRIORITY} puts it ahead of the apps ` +
        "(0), so a busy app does not delay everyone's requests; 0: the same as the apps.",
    }),
}).check(crossChecks((value, ctx, ok) => {
  if (ok("http", "https") && value.http === value.https) {
    ctx.addIssue({ code: "custom", path: ["https"], message: `must differ from http (${value.http})` });
  }
  const metricsPort = ok("metrics") ? Number(value.metrics?.slice(value.metrics.lastIndexOf(":") + 1)) : NaN;
  if ((ok("http") && metricsPort === value.http) || (ok("https") && metricsPort === value.https)) {
    ctx.addIssue({ code: "custom", path: ["metrics"], message: `must use another port than http and https` });
  }
})).meta({ title: "deploy-paradigm proxy.yml", description: "The proxy's settings, in the deployments root." });

/**
 * A validated proxy.yml, defaults applied: `metrics` as `host:port`, and the limits' durations in
 * milliseconds as `headerTimeoutMs`, `idleTimeoutMs`, `requestTimeoutMs` (0: none), `upstreamTimeoutMs`, `sendTimeoutMs`.
 */
export type ProxyConfig = z.output<typeof proxyConfigSchema>;

/**
 * The proxy's settings under `root`: proxy.yml validated (a {@link ConfigError} lists every
 * problem), or the defaults when there is none. The file must pass `trust` first (default
 * {@link trustedFile}), which throws when it must not be trusted.
 */
export async function loadProxyConfig(
  root: string = prefix(),
  trust: (path: string) => Promise<void> = trustedFile,
): Promise<ProxyConfig> {
  const path = proxyConfigPath(root);
  if (!(await ifExists(Deno.lstat(path)))) return proxyConfigSchema.parse({});
  try {
    await trust(path);
  } catch (error) {
    // Not trusted is a configuration problem: exit 2, with the fix.
    if (!(error instanceof DeployParadigmError) || error instanceof UsageError) throw error;
    throw new UsageError(error.message, { suggestion: error.suggestion, cause: error });
  }
  return parseConfig(await Deno.readTextFile(path), proxyConfigSchema, path);
}

// ---------------------------------------------------------------------------------------------
// File trust

/** Why the proxy cannot trust one file or directory: its owner, its mode; undefined when it can. */
interface Distrust {
  path: string;
  owner: boolean;
  writable: boolean;
  text: string;
}

function distrust(path: string, info: Deno.FileInfo, own: number | null): Distrust | undefined {
  const mode = (info.mode ?? 0) & 0o7777;
  const owner = info.uid !== 0 && (own === null || info.uid !== own);
  const writers = [mode & 0o020 && "group", mode & 0o002 && "others"].filter(Boolean);
  if (!owner && writers.length === 0) return undefined;
  const problems = [
    owner ? (own === null || own === 0 ? "is not owned by root" : `is owned by neither root nor uid ${own}`) : "",
    writers.length ? `is writable by ${writers.join(" and ")}` : "",
  ].filter(Boolean);
  const text = `${path} (owner uid ${info.uid}, mode ${mode.toString(8).padStart(4, "0")}) ${problems.join(" and ")}`;
  return { path, owner, writable: writers.length > 0, text };
}

/**
 * Resolves when the proxy may act on `path`: a regular file that, with its directory (and, for a
 * symlink, its target's directory), is owned by root or by the proxy's own uid and writable by no
 * group or other user (`mode & 0o022` is 0). Throws a {@link DeployParadigmError} naming the path,
 * the owner uid and mode, and the fix; rejects with `Deno.errors.NotFound` when there is no file.
 */
export async function trustedFile(path: string): Promise<void> {
  const absolute = resolve(path);
  const real = await Deno.realPath(absolute);
  const info = await Deno.stat(real);
  if (!info.isFile) {
    throw new DeployParadigmError(`refusing to trust ${absolute}: it is not a regular file`, {
      suggestion: `replace it with a regular file owned by root (mode 0644 or 0600)`,
    });
  }
  const own = Deno.uid();
  const found = [distrust(absolute, info, own)];
  for (const dir of new Set([dirname(absolute), dirname(real)])) found.push(distrust(dir, await Deno.stat(dir), own));
  const bad = found.filter((d): d is Distrust => d !== undefined);
  if (bad.length === 0) return;
  const owners = bad.filter((d) => d.owner).map((d) => d.path);
  const writable = bad.filter((d) => d.writable).map((d) => d.path);
  throw new DeployParadigmError(`refusing to trust ${absolute}: ${bad.map((d) => d.text).join("; ")}`, {
    suggestion: [
      owners.length ? `chown root:root ${owners.join(" ")}` : "",
      writable.length ? `chmod go-w ${writable.join(" ")}` : "",
    ].filter(Boolean).join(" && "),
  });
}

/** The text of `path` once {@link trustedFile} passes, or undefined when there is no such file. */
export async function readTrusted(path: string): Promise<string | undefined> {
  const present = await ifExists(trustedFile(path).then(() => true));
  return present ? await ifExists(Deno.readTextFile(path)) : undefined;
}
