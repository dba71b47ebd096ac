/**
 * Load generators for zero-downtime tests: several workers, each sending requests one after the
 * other over keep-alive connections on loopback, recording every answer. {@link LoadGenerator}
 * fetches a URL; {@link HttpsLoadGenerator} speaks HTTP/1.1 over TLS with SNI and Host set to a
 * test name. They run until stopped; one still running after {@link BOUND_MS} records a failure
 * saying so and stops, so that a forgotten stop() cannot load forever and a test that outlasts its
 * load fails by name rather than as an outage.
 */
import { HttpsClient } from "./proxy_process.ts";
import { sleep, until } from "./time.ts";

/** How long a load may run: far beyond any test, on the slowest machine. */
export const BOUND_MS = 600_000;

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

/** The workers' loop, and the answers a load run recorded with the checks on them. */
abstract class Load {
  readonly samples: Sample[] = [];
  /** When each worker's request now waiting was sent, by worker. */
  readonly #waiting = new Map<number, number>();
  #running = true;
  #workers: Promise<void>[] = [];

  /**
   * Starts `count` workers, each sending one request after the other until stopped: `send` sends
   * one (at `sent`) and returns its answer. A request that throws is recorded as an error, and
   * `failed` told.
   */
  protected run(
    count: number,
    send: (worker: number, sent: number) => Promise<Sample>,
    failed?: (worker: number) => void,
  ): void {
    const end = performance.now() + BOUND_MS;
    this.#workers = Array.from({ length: count }, async (_, worker) => {
      while (this.#running) {
        if (performance.now() > end) {
          this.samples.push({ at: performance.now(), error: `the load ran past its bound of ${BOUND_MS} ms` });
          return;
        }
        const sent = performance.now();
        this.#waiting.set(worker, sent);
        try {
          this.samples.push(await send(worker, sent));
        } catch (error) {
          this.samples.push({ at: performance.now(), error: String(error) });
          failed?.(worker);
          await sleep(20);
        } finally {
          this.#waiting.delete(worker);
        }
      }
    });
  }

  /** Stops the workers, once each has its answer. */
  protected async halt(): Promise<void> {
    this.#running = false;
    await Promise.all(this.#workers);
  }

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
   * sees some (a slow machine may go 300 ms without one); throws when fewer than `count` came in `ms`,
   * naming `what` and saying what the load saw.
   */
  async answered(from: number, what: string, count = 3, ms = 10_000): Promise<void> {
    await until(ms, `${what}: ${count} answers from the load`, () => {
      let got = 0; // samples come in time order: count from the newest
      for (let i = this.samples.length - 1; i >= 0 && this.samples[i].at >= from && got < count; i--) {
        if (this.samples[i].body !== undefined) got++;
      }
      return got >= count;
    }, () => this.#since(from));
  }

  /** What the load saw since `from`, and the requests still waiting: for a failure's message. */
  #since(from: number): string {
    const now = performance.now();
    const after = this.samples.filter((s) => s.at >= from);
    const last = this.samples.findLast((s) => s.body !== undefined);
    const ago = (t: number) => `${(now - t).toFixed(0)} ms ago`;
    return [
      `since ${ago(from)}: ${after.length} samples ${JSON.stringify(after.slice(0, 5))}`,
      `last answer ${last ? `${ago(last.at)}: ${last.status} ${last.body}` : "none"}`,
      `requests waiting, sent: ${[...this.#waiting.values()].map(ago).join(", ") || "none"}`,
    ].join("\n");
  }
}

/** Sends requests until stopped. */
export class LoadGenerator extends Load {
  private readonly client: Deno.HttpClient;

  /**
   * `localAddress`: the address the connections come from (e.g. 127.0.0.2), else the kernel's choice;
   * `headers`: sent with every request (e.g. a canary cookie); `keepCookies`: each worker sends
   * back the cookies answers set (a browser without a cookie of its own to start with).
   */
  constructor(
    readonly url: string,
    readonly workers = 4,
    localAddress?: string,
    readonly headers?: HeadersInit,
    readonly keepCookies = false,
  ) {
    super();
    this.client = Deno.createHttpClient({
      poolMaxIdlePerHost: 16,
      allowHost: true,
      ...(localAddress ? { localAddress } : {}),
    });
  }

  /** Starts the workers. */
  start(): this {
    const jars = Array.from({ length: this.workers }, () => new Map<string, string>());
    this.run(this.workers, async (worker, sent) => {
      const jar = jars[worker];
      const headers = new Headers(this.headers);
      if (jar.size) headers.set("cookie", [...jar].map(([name, value]) => `${name}=${value}`).join("; "));
      const response = await fetch(this.url, { client: this.client, headers, signal: AbortSignal.timeout(10_000) });
      for (const cookie of this.keepCookies ? response.headers.getSetCookie() : []) {
        const [name, value] = cookie.split(";")[0].split("=");
        jar.set(name.trim(), (value ?? "").trim());
      }
      const body = await response.text();
      const retryAfter = response.headers.get("retry-after");
      return { at: performance.now(), sent, status: response.status, body, ...(retryAfter ? { retryAfter } : {}) };
    });
    return this;
  }

  /** Stops the workers and closes the connections. */
  async stop(): Promise<Sample[]> {
    await this.halt();
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
export class HttpsLoadGenerator extends Load {
  /** Connections opened, the first `connections` included. */
  connects = 0;
  /** Each worker's open connection. */
  readonly #clients: (HttpsClient | undefined)[] = [];

  constructor(
    readonly port: number,
    readonly name: string,
    readonly ca: string,
    readonly connections = 4,
    readonly path = "/",
  ) {
    super();
  }

  /** Starts the workers. */
  start(): this {
    const drop = (worker: number) => {
      this.#clients[worker]?.close();
      this.#clients[worker] = undefined;
    };
    this.run(this.connections, async (worker) => {
      if (!this.#clients[worker]) {
        this.connects++;
        this.#clients[worker] = await HttpsClient.connect(this.port, this.name, this.ca);
      }
      const open = this.#clients[worker]!;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error("no answer within 10 s")), 10_000);
      });
      try {
        const response = await Promise.race([open.request(this.path), timeout]);
        if (response.headers.get("connection")?.toLowerCase() === "close") drop(worker);
        return { at: performance.now(), status: response.status, body: response.body };
      } finally {
        clearTimeout(timer);
      }
    }, drop);
    return this;
  }

  /** Stops the workers and closes the connections. */
  async stop(): Promise<Sample[]> {
    await this.halt();
    for (const client of this.#clients) client?.close();
    return this.samples;
  }
}
