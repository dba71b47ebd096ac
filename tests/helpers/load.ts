/**
 * Load generators for zero-downtime tests: several workers, each sending requests one after the
 * other over keep-alive connections on loopback, recording every answer. {@link LoadGenerator}
 * fetches a URL; {@link HttpsLoadGenerator} speaks HTTP/1.1 over TLS with SNI and Host set to a
 * test name. Bounded: they stop when told, or after `maxMs`.
 */
import { HttpsClient } from "./proxy_process.ts";
import { until } from "./time.ts";

/** One request's outcome. */
export interface Sample {
  /** performance.now() when the answer (or error) arrived. */
  at: number;
  /** performance.now() when the request was sent ({@link LoadGenerator} only). */
  sent?: number;
  status?: number;
  /** The body: the version of the release that answered. */
  body?: string;
  /** The answer's Retry-After, when it has one. */
  retryAfter?: string;
  error?: string;
}

/** The answers a load run recorded, and the checks on them. */
abstract class SampleLog {
  readonly samples: Sample[] = [];

  /** Samples that failed: connection errors and 5xx answers. */
  failures(): Sample[] {
    return this.samples.filter((s) => s.error !== undefined || (s.status ?? 0) >= 500);
  }

  /** The bodies answered between two instants. */
  bodiesBetween(from: number, to: number): Set<string> {
    return new Set(this.samples.filter((s) => s.at >= from && s.at <= to && s.body !== undefined).map((s) => s.body!));
  }

  /**
   * Waits until `count` answers arrived after `from`, so that the check of what answered after a step
   * sees some (a slow machine may go 300 ms without one); throws when fewer than `count` came in `ms`.
   */
  answered(from: number, count = 3, ms = 10_000): Promise<void> {
    return until(ms, `${count} answers from the load after a step`, () => {
      let got = 0; // samples come in time order: count from the newest
      for (let i = this.samples.length - 1; i >= 0 && this.samples[i].at >= from && got < count; i--) {
        if (this.samples[i].body !== undefined) got++;
      }
      return got >= count;
    });
  }
}

/** Sends requests until stopped. */
export class LoadGenerator extends SampleLog {
  private running = true;
  private workers: Promise<void>[] = [];
  private readonly client: Deno.HttpClient;

  /**
   * `localAddress`: the address the connections come from (e.g. 127.0.0.2), else the kernel's choice;
   * `headers`: sent with every request (e.g. a canary cookie); `keepCookies`: each worker sends
   * back the cookies answers set (a browser without a cookie of its own to start with).
   */
  constructor(
    readonly url: string,
    readonly workers_ = 4,
    readonly maxMs = 180_000,
    localAddress?: string,
    readonly headers?: HeadersInit,
    readonly keepCookies = false,
  ) {
    super();
    this.client = Deno.createHttpClient({ poolMaxIdlePerHost: 16, ...(localAddress ? { localAddress } : {}) });
  }

  /** Starts the workers. */
  start(): this {
    const until = performance.now() + this.maxMs;
    this.workers = Array.from({ length: this.workers_ }, async () => {
      const jar = new Map<string, string>();
      while (this.running && performance.now() < until) {
        const sent = performance.now();
        try {
          const headers = new Headers(this.headers);
          if (jar.size) headers.set("cookie", [...jar].map(([name, value]) => `${name}=${value}`).join("; "));
          const response = await fetch(this.url, { client: this.client, headers, signal: AbortSignal.timeout(10_000) });
          for (const cookie of this.keepCookies ? response.headers.getSetCookie() : []) {
            const [name, value] = cookie.split(";")[0].split("=");
            jar.set(name.trim(), (value ?? "").trim());
          }
          const body = await response.text();
          const retryAfter = response.headers.get("retry-after");
          this.samples.push({
            at: performance.now(),
            sent,
            status: response.status,
            body,
            ...(retryAfter ? { retryAfter } : {}),
          });
        } catch (error) {
          this.samples.push({ at: performance.now(), error: String(error) });
          await new Promise((r) => setTimeout(r, 20));
        }
      }
    });
    return this;
  }

  /** Stops the workers and closes the connections. */
  async stop(): Promise<Sample[]> {
    this.running = false;
    await Promise.all(this.workers);
    this.client.close();
    return this.samples;
  }
}

/**
 * `connections` keep-alive HTTPS connections to 127.0.0.1:`port` with SNI and Host `name`, trusting
 * `ca`, each sending `GET path` one request after the other. A request that fails (connection error,
 * or no answer within 10 s) is recorded and its connection replaced; so is a connection the server
 * closes with `Connection: close` (not a failure). {@link connects} counts every connection opened.
 */
export class HttpsLoadGenerator extends SampleLog {
  /** Connections opened, the first `connections` included. */
  connects = 0;
  private running = true;
  private workers: Promise<void>[] = [];

  constructor(
    readonly port: number,
    readonly name: string,
    readonly ca: string,
    readonly connections = 4,
    readonly path = "/",
    readonly maxMs = 180_000,
  ) {
    super();
  }

  /** Starts the workers. */
  start(): this {
    const until = performance.now() + this.maxMs;
    this.workers = Array.from({ length: this.connections }, async () => {
      let client: HttpsClient | undefined;
      while (this.running && performance.now() < until) {
        let timer: ReturnType<typeof setTimeout> | undefined;
        try {
          if (!client) {
            this.connects++;
            client = await HttpsClient.connect(this.port, this.name, this.ca);
          }
          const open = client;
          const timeout = new Promise<never>((_, reject) => {
            timer = setTimeout(() => {
              open.close();
              reject(new Error("no answer within 10 s"));
            }, 10_000);
          });
          const response = await Promise.race([open.request(this.path), timeout]);
          this.samples.push({ at: performance.now(), status: response.status, body: response.body });
          if (response.headers.get("connection")?.toLowerCase() === "close") {
            open.close();
            client = undefined;
          }
        } catch (error) {
          this.samples.push({ at: performance.now(), error: String(error) });
          client?.close();
          client = undefined;
          await new Promise((r) => setTimeout(r, 20));
        } finally {
          clearTimeout(timer);
        }
      }
      client?.close();
    });
    return this;
  }

  /** Stops the workers and closes the connections. */
  async stop(): Promise<Sample[]> {
    this.running = false;
    await Promise.all(this.workers);
    return this.samples;
  }
}
