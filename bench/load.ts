/**
 * Load and readiness for the proxy benchmark: `wrk --latency` runs at saturation (parsed into rps,
 * p50, p99, errors) and paced to {@link PACED_RATE} by a Lua script ({@link pacingScript}: its
 * `delay()` hook schedules each request, its `done()` hook prints p50, p90, p99 and p99.9 from
 * wrk's latency histogram), the CPU time a process and its children spent during a run (utime +
 * stime from /proc/<pid>/stat), and a raw HTTP/1.1 probe that can send any Host header and SNI
 * name (fetch overrides neither), used to wait until an endpoint answers.
 * @module
 */
import { type Proc, run, sleep } from "./procs.ts";

/** Keep-alive connections of every wrk run (one thread). */
export const CONNECTIONS = 8;
export const WARMUP_S = 1;
export const DURATION_S = 5;
/**
 * Requests/s of every paced run, all connections together: the same for every endpoint and well
 * below the slowest one's capacity (Caddy, about 8,000/s at saturation on 2 shared cores; the
 * bench prints the share it measured), so that its latency is the path's own and not time spent
 * queued behind other requests.
 */
export const PACED_RATE = 2_000;
/** Long enough for p99.9 to rest on ~20 requests. */
export const PACED_S = 10;
/** How far a paced run's achieved rate may be from {@link PACED_RATE} (as a share) before it is flagged. */
export const PACE_TOLERANCE = 0.03;
/** Longest single readiness probe. */
const PROBE_TIMEOUT_MS = 2_000;
/** Longest response a probe reads. */
const PROBE_MAX_BYTES = 64 * 1024;

/** One endpoint as wrk requests it. */
export interface Target {
  /** `http://127.0.0.1:P/` or `https://localhost:P/`: over HTTPS the URL's host is the SNI name wrk sends. */
  url: string;
  /** A Host header other than the URL's (host routing over plain HTTP). */
  host?: string;
}

/** One load run's figures. */
export interface Load {
  rps: number;
  /** ms */
  p50: number;
  /** ms */
  p99: number;
  requests: number;
  /** Non-2xx answers and socket errors. */
  errors: number;
}

/** A measured run, with the CPU time the measured process (and its children) spent per request, in µs. */
export type Measured = Load & { cpuUs?: number };

/** A paced run's figures: `rps` is the achieved rate; p90 and p999 (p99.9) in ms. */
export type Paced = Load & { p90: number; p999: number };

/**
 * wrk's Lua script for paced runs. `delay()` is called before each request of any connection (one
 * wrk thread: one Lua state for all) and gives it the next free slot of one schedule of `rate`
 * slots/s (a monotonic clock through LuaJIT's FFI; wrk waits whole ms, so a request goes up to
 * 0.5 ms early or late, but the schedule does not drift, and a late request's followers catch up).
 * Latency is counted from when the request is written. `done()` prints one line for {@link parsePaced}.
 */
export function pacingScript(rate: number): string {
  return `-- Written by bench/load.ts: ${rate} requests/s in all, then the latency percentiles.
local ffi = require("ffi")
ffi.cdef[[
struct bench_timespec { long sec; long nsec; };
int clock_gettime(int clock, struct bench_timespec *now);
]]
local CLOCK_MONOTONIC = 1
local INTERVAL_MS = 1000 / ${rate}
local now = ffi.new("struct bench_timespec")
local slot

local function clock_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, now)
  return tonumber(now.sec) * 1000 + tonumber(now.nsec) / 1e6
end

function delay()
  local t = clock_ms()
  slot = (slot or t) + INTERVAL_MS
  return math.max(0, math.floor(slot - t + 0.5))
end

function done(summary, latency)
  local e = summary.errors
  local p = function(q) return latency:percentile(q) end
  io.write(string.format("paced requests=%d duration_us=%d errors=%d p50=%d p90=%d p99=%d p999=%d\\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    p(50), p(90), p(99), p(99.9)))
end
`;
}

/** Parses the line {@link pacingScript}'s `done()` prints (latencies in µs). Throws when it is missing. */
export function parsePaced(text: string): Paced {
  const match = /^paced requests=(\d+) duration_us=(\d+) errors=(\d+) p50=(\d+) p90=(\d+) p99=(\d+) p999=(\d+)$/m
    .exec(text);
  if (!match) throw new Error(`wrk output without the paced line:\n${text}`);
  const [requests, durationUs, errors, ...percentiles] = match.slice(1).map(Number);
  const [p50, p90, p99, p999] = percentiles.map((us) => us / 1000);
  return { rps: requests / (durationUs / 1e6), p50, p90, p99, p999, requests, errors };
}

/** wrk's duration units → ms. */
function wrkMs(value: string, unit: string): number {
  const scale: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000 };
  return Number(value) * (scale[unit] ?? NaN);
}

/** Parses `wrk --latency` output. Throws when a figure is missing. */
export function parseWrk(text: string): Load {
  const number = (pattern: RegExp) => {
    const match = pattern.exec(text);
    if (!match) throw new Error(`wrk output without ${pattern}:\n${text}`);
    return match;
  };
  const p50 = number(/^\s*50%\s+([\d.]+)(us|ms|s|m)\b/m);
  const p99 = number(/^\s*99%\s+([\d.]+)(us|ms|s|m)\b/m);
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(text);
  const errors = (socket ? socket.slice(1).reduce((sum, n) => sum + Number(n), 0) : 0) +
    (non2xx ? Number(non2xx[1]) : 0);
  return {
    rps: Number(number(/^Requests\/sec:\s+([\d.]+)/m)[1]),
    p50: wrkMs(p50[1], p50[2]),
    p99: wrkMs(p99[1], p99[2]),
    requests: Number(number(/(\d+) requests in /)[1]),
    errors,
  };
}

/** The arguments of one wrk run against `target`, with Lua `script` if given. */
export function wrkArgs(target: Target, seconds: number, script?: string): string[] {
  const host = target.host ? ["-H", `Host: ${target.host}`] : [];
  const lua = script ? ["-s", script] : [];
  return ["-t1", `-c${CONNECTIONS}`, `-d${seconds}s`, "--latency", ...host, ...lua, target.url];
}

async function wrk(bin: string, target: Target, seconds: number): Promise<Load> {
  return parseWrk(await run("wrk", [bin, ...wrkArgs(target, seconds)]));
}

/** Clock ticks per second of /proc/<pid>/stat times (`getconf CLK_TCK`; 100 on Linux). */
const CLOCK_TICKS = 100;

/**
 * CPU time (user + system, all threads) of `pid` and of its descendants, from /proc, in ms;
 * undefined without /proc or once `pid` is gone. Children of every thread count (Go and Deno
 * spawn from any thread).
 */
export function cpuMs(pid: number): number | undefined {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // After "pid (comm) ": state is field 3, utime 14 and stime 15.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    let ms = ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS;
    for (const task of Deno.readDirSync(`/proc/${pid}/task`)) {
      const children = Deno.readTextFileSync(`/proc/${pid}/task/${task.name}/children`).trim();
      for (const child of children ? children.split(" ") : []) ms += cpuMs(Number(child)) ?? 0;
    }
    return Number.isFinite(ms) ? ms : undefined;
  } catch {
    return undefined;
  }
}

/** A warm-up run, then the measured one, with the CPU time `pid` (and its children) spent in it per request. */
export async function measure(bin: string, target: Target, pid: number): Promise<Measured> {
  await wrk(bin, target, WARMUP_S);
  const before = cpuMs(pid);
  const load = await wrk(bin, target, DURATION_S);
  const after = cpuMs(pid);
  const cpuUs = before === undefined || after === undefined || !load.requests
    ? undefined
    : ((after - before) * 1000) / load.requests;
  return { ...load, cpuUs };
}

/** A paced warm-up run, then the measured one, with `script` (written from {@link pacingScript}). */
export async function measurePaced(bin: string, target: Target, script: string): Promise<Paced> {
  const paced = async (seconds: number) => parsePaced(await run("wrk", [bin, ...wrkArgs(target, seconds, script)]));
  await paced(WARMUP_S);
  return await paced(PACED_S);
}

/** A probe's answer. */
export interface Probed {
  status: number;
  headers: Headers;
  body: string;
}

/** Splits a raw HTTP/1.1 response (read to its end) into status, headers and the (de-chunked) body. */
export function parseResponse(raw: string): Probed {
  const end = raw.indexOf("\r\n\r\n");
  if (end < 0) throw new Error(`incomplete response: ${JSON.stringify(raw.slice(0, 200))}`);
  const [statusLine, ...lines] = raw.slice(0, end).split("\r\n");
  const status = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine);
  if (!status) throw new Error(`not an HTTP/1.x response: ${JSON.stringify(statusLine)}`);
  const headers = new Headers();
  for (const line of lines) {
    const colon = line.indexOf(":");
    if (colon > 0) headers.append(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
  }
  let body = raw.slice(end + 4);
  if (headers.get("transfer-encoding")?.toLowerCase().includes("chunked")) {
    let rest = body;
    body = "";
    while (true) {
      const eol = rest.indexOf("\r\n");
      const size = parseInt(rest.slice(0, eol), 16);
      if (eol < 0 || !Number.isFinite(size) || size === 0) break;
      body += rest.slice(eol + 2, eol + 2 + size);
      rest = rest.slice(eol + 2 + size + 2);
    }
  }
  return { status: Number(status[1]), headers, body };
}

/** Rejects with a timeout error after `ms` unless `promise` settles first; `onLate` gets its late value. */
function within<T>(promise: Promise<T>, ms: number, what: string, onLate: (value: T) => void): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let late = false;
  promise.then((value) => late && onLate(value), () => {});
  return Promise.race([
    promise,
    new Promise<never>((_, reject) =>
      timer = setTimeout(() => {
        late = true;
        reject(new Error(`${what}: no answer within ${ms} ms`));
      }, ms)
    ),
  ]).finally(() => clearTimeout(timer));
}

/** One GET over a fresh HTTP/1.1 connection (`Connection: close`), trusting `caCert` over HTTPS. */
export async function probe(target: Target, caCert?: string): Promise<Probed> {
  const url = new URL(target.url);
  const https = url.protocol === "https:";
  const port = Number(url.port || (https ? 443 : 80));
  const hostname = url.hostname.replace(/^\[|\]$/g, "");
  const close = (conn: Deno.Conn) => {
    try {
      conn.close();
    } catch {
      // closed already
    }
  };
  const connecting = https
    ? Deno.connectTls({ hostname, port, caCerts: caCert ? [caCert] : undefined })
    : Deno.connect({ hostname, port });
  const conn: Deno.Conn = await within<Deno.Conn>(connecting, PROBE_TIMEOUT_MS, target.url, close);
  const exchange = async () => {
    const head = `GET ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${target.host ?? url.host}\r\n` +
      "Connection: close\r\n\r\n";
    const bytes = new TextEncoder().encode(head);
    for (let written = 0; written < bytes.length;) written += await conn.write(bytes.subarray(written));
    const chunks: Uint8Array[] = [];
    let total = 0;
    const buffer = new Uint8Array(16 * 1024);
    while (total < PROBE_MAX_BYTES) {
      const n = await conn.read(buffer);
      if (n === null) break;
      chunks.push(buffer.slice(0, n));
      total += n;
    }
    const all = new Uint8Array(total);
    let at = 0;
    for (const chunk of chunks) {
      all.set(chunk, at);
      at += chunk.length;
    }
    return parseResponse(new TextDecoder().decode(all));
  };
  try {
    return await within(exchange(), PROBE_TIMEOUT_MS, target.url, () => {});
  } finally {
    close(conn);
  }
}

/** Where a probe counts as ready: status 200, body "ok", and from app `app` when given. */
export interface ReadyOptions {
  caCert?: string;
  app?: string;
  timeoutMs: number;
}

/** Waits until `target` answers 200 "ok"; throws if one of `watch` exits first or on timeout, with the last answer. */
export async function waitReady(target: Target, watch: Proc[], options: ReadyOptions): Promise<void> {
  const deadline = performance.now() + options.timeoutMs;
  let last = "";
  while (true) {
    for (const proc of watch) {
      if (proc.exited) {
        const status = await proc.done;
        throw new Error(`${proc.name} exited (${status.code}) before ${target.url} answered\n${proc.output()}`);
      }
    }
    try {
      const answer = await probe(target, options.caCert);
      if (
        answer.status === 200 && answer.body === "ok" &&
        (!options.app || answer.headers.get("x-bench-app") === options.app)
      ) {
        return;
      }
      last = `${answer.status} ${answer.body.slice(0, 200)}`;
    } catch (error) {
      last = error instanceof Error ? error.message : String(error);
    }
    if (performance.now() > deadline) {
      const via = target.host ? ` (Host: ${target.host})` : "";
      throw new Error(`${target.url}${via} did not answer "ok" within ${options.timeoutMs / 1000} s (last: ${last})`);
    }
    await sleep(100);
  }
}
