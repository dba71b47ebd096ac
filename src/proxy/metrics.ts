/**
 * The proxy's metrics, per app and per slot (`blue`, `green`, `static`, or `-` when no route
 * matched): requests, responses by status class, a latency histogram, bytes in and out, requests
 * in flight, and open client connections.
 *
 * - {@link ProxyMetrics} counts. Its hot path ({@link ProxyMetrics.begin} and the function it
 *   returns) costs two plain-string Map lookups, a closure and a few array increments: each
 *   (app, slot) has one record object, found through `app → slot`, never a composite key.
 * - {@link serveMetrics} serves the Prometheus text format (0.0.4) on a loopback address only.
 * - ./metrics_log.ts appends one JSON line per app per wall-clock minute to
 *   `/var/log/deployments/<app>/metrics.log`, which the fleet pulls like any other `*.log`.
 *
 * `requests` counts requests when they start; responses, the histogram and bytes when they end
 * (a long request, such as a WebSocket, is counted in the minute it ends).
 * @module
 */
import { DeployParadigmError } from "../errors.ts";
import { escapeLabel } from "../fleet/metrics.ts";
import { isLoopbackIp } from "./config.ts";

/** Upper bounds of the latency histogram's buckets, in seconds (`+Inf` follows). */
export const BUCKETS: readonly number[] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** Status classes, by index: 1xx … 5xx, then anything else (a status outside 100–599). */
const CLASSES = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"] as const;
const OTHER = CLASSES.length - 1;
/** The quantiles of a minute's JSON line. */
const QUANTILES = [["p50_ms", 0.5], ["p90_ms", 0.9], ["p95_ms", 0.95], ["p99_ms", 0.99]] as const;

/** The counts of one (app, slot) over a window: since start, or the current minute. */
class Window {
  /** Requests started. */
  requests = 0;
  /** Requests ended, by {@link CLASSES} index. */
  readonly classes = new Float64Array(CLASSES.length);
  /** Ended requests by duration bucket (not cumulative); the last one is `+Inf`. */
  readonly buckets = new Float64Array(BUCKETS.length + 1);
  /** Sum of the durations, in seconds. */
  seconds = 0;
  bytesIn = 0;
  bytesOut = 0;

  end(status: number, seconds: number, bytesIn: number, bytesOut: number): void {
    const hundreds = (status / 100) | 0;
    this.classes[hundreds >= 1 && hundreds <= 5 ? hundreds - 1 : OTHER]++;
    let i = 0;
    while (i < BUCKETS.length && seconds > BUCKETS[i]) i++;
    this.buckets[i]++;
    this.seconds += seconds;
    this.bytesIn += bytesIn;
    this.bytesOut += bytesOut;
  }

  /** Whether anything started or ended in this window. */
  get active(): boolean {
    return this.requests > 0 || this.buckets.some((n) => n > 0);
  }

  /** Adds `other` into this one (an app's minute is the sum of its slots'). */
  add(other: Window): void {
    this.requests += other.requests;
    for (let i = 0; i < this.classes.length; i++) this.classes[i] += other.classes[i];
    for (let i = 0; i < this.buckets.length; i++) this.buckets[i] += other.buckets[i];
    this.seconds += other.seconds;
    this.bytesIn += other.bytesIn;
    this.bytesOut += other.bytesOut;
  }

  reset(): void {
    this.requests = 0;
    this.seconds = 0;
    this.bytesIn = 0;
    this.bytesOut = 0;
    this.classes.fill(0);
    this.buckets.fill(0);
  }
}

/** One (app, slot): its totals, its current minute, and its requests in flight. */
class SlotRecord {
  inFlight = 0;
  readonly total = new Window();
  readonly minute = new Window();
  /** `app="…",slot="…"`, escaped once. */
  readonly labels: string;

  constructor(readonly app: string, readonly slot: string) {
    this.labels = `app="${escapeLabel(app)}",slot="${escapeLabel(slot)}"`;
  }
}

/** Ends a request begun by {@link ProxyMetrics.begin}: its final status and body bytes. Later calls do nothing. */
export type EndRequest = (status: number, bytesIn: number, bytesOut: number) => void;

/** The proxy's counters. App names should be configured apps (or `-`): each name is kept for good. */
export class ProxyMetrics {
  readonly #now: () => number;
  readonly #apps = new Map<string, Map<string, SlotRecord>>();
  #connections = 0;

  /**
   * `now`: the clock, epoch milliseconds (durations and the minute's `ts`). Default `Date.now`: half
   * the cost of `performance.now()` per call (≈50 ns against ≈100 ns, two calls per request), and
   * millisecond resolution is plenty for buckets that start at 5 ms (the rounding errors of start and
   * end cancel on average). A wall-clock step during a request skews that one request (clamped at 0).
   */
  constructor(opts: { now?: () => number } = {}) {
    this.#now = opts.now ?? Date.now;
  }

  #record(app: string, slot: string): SlotRecord {
    let slots = this.#apps.get(app);
    if (!slots) this.#apps.set(app, slots = new Map());
    let record = slots.get(slot);
    if (!record) slots.set(slot, record = new SlotRecord(app, slot));
    return record;
  }

  /** A request starts for `app`/`slot`; call the returned function once, when it ends. */
  begin(app: string, slot: string): EndRequest {
    const record = this.#record(app, slot);
    record.inFlight++;
    record.total.requests++;
    record.minute.requests++;
    const started = this.#now();
    let ended = false;
    return (status, bytesIn, bytesOut) => {
      if (ended) return;
      ended = true;
      record.inFlight--;
      const seconds = Math.max(0, this.#now() - started) / 1000;
      record.total.end(status, seconds, bytesIn, bytesOut);
      record.minute.end(status, seconds, bytesIn, bytesOut);
    };
  }

  /** A client connection was accepted. */
  connectionOpened(): void {
    this.#connections++;
  }

  /** A client connection closed. */
  connectionClosed(): void {
    if (this.#connections > 0) this.#connections--;
  }

  /** Every record, by app then slot. */
  #records(): SlotRecord[] {
    return sortedByKey(this.#apps).flatMap(([, slots]) => sortedByKey(slots).map(([, record]) => record));
  }

  /** Everything in the Prometheus text format, version 0.0.4. */
  prometheus(): string {
    const records = this.#records();
    const out: string[] = [];
    type Samples = (r: SlotRecord, name: string) => string[];
    const family = (name: string, type: string, help: string, samples: Samples) => {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, ...records.flatMap((r) => samples(r, name)));
    };
    const one = (value: (r: SlotRecord) => number): Samples => (r, name) => [`${name}{${r.labels}} ${value(r)}`];
    family(
      "deploy_paradigm_requests_total",
      "counter",
      "Requests received, counted when they start.",
      one((r) => r.total.requests),
    );
    family(
      "deploy_paradigm_responses_total",
      "counter",
      "Requests ended, by status class.",
      (r, name) =>
        CLASSES.flatMap((cls, i) =>
          i === OTHER && r.total.classes[i] === 0 ? [] : [`${name}{${r.labels},class="${cls}"} ${r.total.classes[i]}`]
        ),
    );
    family(
      "deploy_paradigm_request_duration_seconds",
      "histogram",
      "Time from a request's start to its end.",
      (r, name) => {
        let cumulative = 0;
        const buckets = [...BUCKETS, "+Inf"].map((le, i) => {
          cumulative += r.total.buckets[i];
          return `${name}_bucket{${r.labels},le="${le}"} ${cumulative}`;
        });
        return [...buckets, `${name}_sum{${r.labels}} ${r.total.seconds}`, `${name}_count{${r.labels}} ${cumulative}`];
      },
    );
    family(
      "deploy_paradigm_request_bytes_total",
      "counter",
      "Request body bytes received from clients.",
      one((r) => r.total.bytesIn),
    );
    family(
      "deploy_paradigm_response_bytes_total",
      "counter",
      "Response body bytes sent to clients.",
      one((r) => r.total.bytesOut),
    );
    family(
      "deploy_paradigm_requests_in_flight",
      "gauge",
      "Requests started and not yet ended.",
      one((r) => r.inFlight),
    );
    out.push(
      "# HELP deploy_paradigm_open_connections Open client connections.",
      "# TYPE deploy_paradigm_open_connections gauge",
      `deploy_paradigm_open_connections ${this.#connections}`,
    );
    return out.join("\n") + "\n";
  }

  /**
   * One JSON object per app with traffic or requests in flight, for the window that ends at `end`
   * (epoch ms; default now), then a new window starts.
   */
  takeMinute(end: number = this.#now()): Array<Record<string, unknown>> {
    const ts = new Date(end).toISOString();
    const lines: Array<Record<string, unknown>> = [];
    for (const [app, slots] of sortedByKey(this.#apps)) {
      const sum = new Window();
      let inFlight = 0;
      const bySlot: Record<string, unknown> = {};
      for (const [slot, record] of slots) {
        if (!record.minute.active && record.inFlight === 0) continue;
        bySlot[slot] = minuteCounts(record.minute, record.inFlight);
        sum.add(record.minute);
        inFlight += record.inFlight;
        record.minute.reset();
      }
      if (Object.keys(bySlot).length === 0) continue;
      lines.push({ ts, app, ...minuteCounts(sum, inFlight), slots: bySlot });
    }
    return lines;
  }
}

/** A map's entries in code-point order of their keys. */
function sortedByKey<T>(map: Map<string, T>): [string, T][] {
  return [...map].sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0);
}

/** The counts of a minute's JSON line (the app's, or one slot's). */
function minuteCounts(window: Window, inFlight: number): Record<string, unknown> {
  const status: Record<string, number> = {};
  CLASSES.forEach((cls, i) => {
    if (window.classes[i] > 0) status[cls] = window.classes[i];
  });
  const counts: Record<string, unknown> = { requests: window.requests, status };
  for (const [key, q] of QUANTILES) counts[key] = quantileMs(window.buckets, q);
  return { ...counts, bytesIn: window.bytesIn, bytesOut: window.bytesOut, inFlight };
}

/**
 * The `q` quantile of a histogram (per-bucket counts, the last `+Inf`) in milliseconds, rounded to
 * the microsecond, as Prometheus' `histogram_quantile` estimates it: linear within the bucket, the
 * largest finite bound when it falls in `+Inf`. Null without observations.
 */
export function quantileMs(buckets: ArrayLike<number>, q: number): number | null {
  let count = 0;
  for (let i = 0; i < buckets.length; i++) count += buckets[i];
  if (count === 0) return null;
  const rank = q * count;
  let below = 0;
  for (let i = 0; i < BUCKETS.length; i++) {
    const inBucket = buckets[i];
    if (below + inBucket >= rank && inBucket > 0) {
      const lower = i === 0 ? 0 : BUCKETS[i - 1];
      const seconds = lower + (BUCKETS[i] - lower) * (rank - below) / inBucket;
      return Math.round(seconds * 1e6) / 1e3;
    }
    below += inBucket;
  }
  return BUCKETS[BUCKETS.length - 1] * 1000;
}

/** A loopback `host:port` for the metrics listener. */
export interface MetricsAddress {
  hostname: string;
  port: number;
}

/**
 * Parses `127.0.0.1:9464` or `[::1]:9464` (any 127.0.0.0/8 address); anything else is refused:
 * the metrics name every app and carry no authentication.
 */
export function parseMetricsAddress(address: string): MetricsAddress {
  const match = /^(?:\[([^\]]*)\]|([^:[\]]*)):(\d{1,5})$/.exec(address.trim());
  const hostname = match ? (match[1] ?? match[2]) : undefined;
  const port = match ? Number(match[3]) : NaN;
  if (hostname === undefined || !(port >= 0 && port <= 65535)) {
    throw new DeployParadigmError(`metrics address ${JSON.stringify(address)} is not host:port`, {
      suggestion: "write it as 127.0.0.1:9464 or [::1]:9464",
    });
  }
  if (!isLoopbackIp(hostname)) {
    throw new DeployParadigmError(`metrics address ${address} is not a loopback address`, {
      suggestion: "the metrics name every app and have no authentication, so they are served on loopback only: " +
        `use 127.0.0.1:${port} or [::1]:${port}, and reach them from elsewhere through an ssh tunnel or a scraper ` +
        "on this machine",
    });
  }
  return { hostname, port };
}

/** Serves {@link ProxyMetrics.prometheus} at `GET /metrics` on a loopback `address` (404 for anything else). */
export function serveMetrics(
  address: string,
  metrics: ProxyMetrics,
  signal?: AbortSignal,
): { close(): Promise<void>; port: number } {
  const { hostname, port } = parseMetricsAddress(address);
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve({ hostname, port, signal, onListen: () => {} }, (req) => {
      if ((req.method !== "GET" && req.method !== "HEAD") || new URL(req.url).pathname !== "/metrics") {
        return new Response("not found\n", { status: 404, headers: { "content-type": "text/plain" } });
      }
      return new Response(metrics.prometheus(), {
        headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8", "cache-control": "no-store" },
      });
    });
  } catch (error) {
    throw new DeployParadigmError(`cannot serve metrics on ${address}: ${(error as Error).message}`, {
      cause: error,
      suggestion: error instanceof Deno.errors.AddrInUse
        ? `another process listens on ${address}; choose another port for metrics: in proxy.yml`
        : undefined,
    });
  }
  return {
    port: server.addr.port,
    close: async () => {
      await server.shutdown().catch(() => {});
      await server.finished;
    },
  };
}
