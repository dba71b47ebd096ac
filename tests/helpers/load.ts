/**
 * A load generator for zero-downtime tests: several workers, each sending requests one after the
 * other over keep-alive connections to a URL on loopback, recording every answer. Bounded: it
 * stops when told, or after `maxMs`.
 */

/** One request's outcome. */
export interface Sample {
  /** performance.now() when the answer (or error) arrived. */
  at: number;
  status?: number;
  /** The body: the version of the release that answered. */
  body?: string;
  error?: string;
}

/** Sends requests until stopped. */
export class LoadGenerator {
  readonly samples: Sample[] = [];
  private running = true;
  private workers: Promise<void>[] = [];
  private readonly client = Deno.createHttpClient({ poolMaxIdlePerHost: 16 });

  constructor(readonly url: string, readonly workers_ = 4, readonly maxMs = 180_000) {}

  /** Starts the workers. */
  start(): this {
    const until = performance.now() + this.maxMs;
    this.workers = Array.from({ length: this.workers_ }, async () => {
      while (this.running && performance.now() < until) {
        try {
          const response = await fetch(this.url, { client: this.client, signal: AbortSignal.timeout(10_000) });
          const body = await response.text();
          this.samples.push({ at: performance.now(), status: response.status, body });
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

  /** Samples that failed: connection errors and 5xx answers. */
  failures(): Sample[] {
    return this.samples.filter((s) => s.error !== undefined || (s.status ?? 0) >= 500);
  }

  /** The bodies answered between two instants. */
  bodiesBetween(from: number, to: number): Set<string> {
    return new Set(this.samples.filter((s) => s.at >= from && s.at <= to && s.body !== undefined).map((s) => s.body!));
  }
}
