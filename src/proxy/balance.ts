/**
 * Balancing one app's requests across the instances of a `{"ports": [...]}` target (route.json):
 * each request goes to the instance with the fewest requests in flight (the proxy's own
 * {@link InFlight} counts), ties in turn (round robin), as nginx's `least_conn`.
 *
 * An instance whose connect is refused (nothing listens: it crashed, or was stopped) is taken out
 * of rotation and the request is tried on another one: safe, since nothing of it reached the dead
 * one. The same holds for a fresh connection the app closed before answering anything, for a
 * request that may be sent twice (replayable body; idempotent method, or not written at all), as
 * nginx's `proxy_next_upstream error` does. (A kept-alive connection a dying instance closed is
 * already sent again once by the pool on a fresh connection: that one is refused.) An instance out of rotation gets one request again
 * after a backoff (1 s, doubling up to 10 s): if that one is answered, the instance is back; if it
 * is refused, that request too goes elsewhere. Leaving and coming back are logged once each.
 * When every instance refuses, the request fails as with one port (502).
 *
 * Nothing here runs for a `{"port"}` target: its requests take the path they always took.
 * @module
 */
import { UpstreamError } from "./connection.ts";
import type { InFlight } from "./inflight.ts";
import { message } from "./pages.ts";
import { IDEMPOTENT, Unanswered } from "./upstream_call.ts";

/** First backoff of an instance out of rotation, doubled after each refused retry up to {@link MAX_BACKOFF_MS}. */
export const FIRST_BACKOFF_MS = 1000;
export const MAX_BACKOFF_MS = 10_000;

/** An instance out of rotation. */
interface Down {
  /** When it left (the balancer's clock). */
  since: number;
  /** Not picked before this, unless no other instance is left. */
  until: number;
  backoffMs: number;
  /** A request was sent to it as a retry: its outcome decides (refused: longer backoff; answered: back). */
  trial: boolean;
}

/** The instances of every balanced target of one proxy: who is out of rotation, and whose turn it is. */
export class Balancer {
  readonly #inFlight: InFlight;
  readonly #log: (line: string) => void;
  readonly #now: () => number;
  /** Instances out of rotation, by port. */
  readonly #down = new Map<number, Down>();
  /** Where the next tie-break starts, by the target's first port. */
  readonly #turn = new Map<number, number>();

  constructor(inFlight: InFlight, log: (line: string) => void, now: () => number = () => performance.now()) {
    this.#inFlight = inFlight;
    this.#log = log;
    this.#now = now;
  }

  /**
   * The port for the next request among `ports`, not one of `tried`: the fewest in flight of those
   * in rotation (and those whose backoff is over), ties in turn; when none is left, the one out of
   * rotation that is due first. Undefined when every port was tried.
   */
  pick(ports: readonly number[], tried?: readonly number[]): number | undefined {
    const n = ports.length;
    const start = this.#turn.get(ports[0]) ?? 0;
    const now = this.#now();
    const anyDown = this.#down.size > 0;
    let best = -1;
    let bestCount = Infinity;
    let fallback = -1;
    let fallbackUntil = Infinity;
    for (let k = 0; k < n; k++) {
      const i = (start + k) % n;
      const port = ports[i];
      if (tried?.includes(port)) continue;
      if (anyDown) {
        const down = this.#down.get(port);
        if (down && (down.until > now || down.trial)) {
          if (down.until < fallbackUntil) {
            fallback = i;
            fallbackUntil = down.until;
          }
          continue;
        }
      }
      const count = this.#inFlight.count(port);
      if (count < bestCount) {
        best = i;
        bestCount = count;
      }
    }
    if (best < 0) best = fallback;
    if (best < 0) return undefined;
    this.#turn.set(ports[0], (best + 1) % n);
    const port = ports[best];
    if (anyDown) {
      const down = this.#down.get(port);
      if (down) {
        // A retry: one request at a time, and the next one not before another backoff.
        down.trial = true;
        down.until = now + down.backoffMs;
      }
    }
    return port;
  }

  /**
   * `port` refused a connection: out of rotation (logged once), or a longer backoff when that was
   * its retry (`trial`: it was out of rotation when picked).
   */
  refused(app: string, port: number, error: unknown, trial: boolean): void {
    const now = this.#now();
    const down = this.#down.get(port);
    if (!down) {
      this.#down.set(port, { since: now, until: now + FIRST_BACKOFF_MS, backoffMs: FIRST_BACKOFF_MS, trial: false });
      this.#log(
        `${app}: instance 127.0.0.1:${port} refused a connection (${reason(error)}): out of rotation, ` +
          `retried after ${FIRST_BACKOFF_MS / 1000} s, then up to every ${MAX_BACKOFF_MS / 1000} s`,
      );
      return;
    }
    // Requests that were already on their way when it left say nothing new.
    if (!trial) return;
    down.trial = false;
    down.backoffMs = Math.min(down.backoffMs * 2, MAX_BACKOFF_MS);
    down.until = now + down.backoffMs;
  }

  /** The retry of `port` (out of rotation when picked) got an answer: it is back. */
  answered(app: string, port: number): void {
    const down = this.#down.get(port);
    if (!down) return;
    this.#down.delete(port);
    this.#log(
      `${app}: instance 127.0.0.1:${port} answers again: back in rotation (out for ${
        ((this.#now() - down.since) / 1000).toFixed(1)
      } s)`,
    );
  }

  /** The retry of `port` ended without telling (it failed otherwise): another one may go. */
  undecided(port: number): void {
    const down = this.#down.get(port);
    if (down) down.trial = false;
  }

  /** Whether `port` is in rotation now. */
  inRotation(port: number): boolean {
    return !this.#down.has(port);
  }

  /** Forgets what it knows of ports no target lists any more (a slot stopped after a deploy starts afresh). */
  retain(ports: ReadonlySet<number>): void {
    for (const port of this.#down.keys()) if (!ports.has(port)) this.#down.delete(port);
    for (const first of this.#turn.keys()) if (!ports.has(first)) this.#turn.delete(first);
  }
}

/** The refused connect of `error`, when that is what it is (nobody listens: out of rotation). */
function refusedConnect(error: unknown): boolean {
  if (!(error instanceof UpstreamError) || error.kind !== "connect") return false;
  const cause = error.cause;
  return cause instanceof Deno.errors.ConnectionRefused || cause instanceof Deno.errors.ConnectionReset ||
    cause instanceof Deno.errors.ConnectionAborted;
}

/**
 * Whether a request that failed with `error` may go to another instance: nothing of it reached
 * the app (connect failed), or the app took a fresh connection and answered nothing, and the
 * request may be sent twice.
 */
export function mayRetry(error: unknown, method: string): boolean {
  if (error instanceof Unanswered) return error.replayable && (!error.written || IDEMPOTENT.has(method));
  return error instanceof UpstreamError && error.kind === "connect" && error.cause !== undefined;
}

function reason(error: unknown): string {
  const cause = error instanceof Error && error.cause instanceof Error ? error.cause : error;
  return cause instanceof Deno.errors.ConnectionRefused ? "connection refused" : message(cause);
}

const NOTHING = () => {};

/**
 * One request to a balanced target: the instance it is counted in flight to (`port`, `end`), and
 * moving it to another instance when that one refuses (see {@link send}).
 */
export class Balanced {
  /** The instance the request is (now) for. */
  port: number;
  /**
   * Ends the request's in-flight count (to {@link port}, wherever it moved); idempotent. A retry
   * of an instance out of rotation that ended before it was sent (a bad request body) decides nothing.
   */
  readonly end = (): void => {
    this.#end();
    if (this.#trial) this.#undecided();
  };
  #end: () => void;
  /** Whether {@link port} was out of rotation when picked: this request is its retry. */
  #trial: boolean;
  #tried?: number[];

  constructor(
    readonly balancer: Balancer,
    readonly inFlight: InFlight,
    readonly app: string,
    readonly ports: readonly number[],
  ) {
    this.port = balancer.pick(ports)!;
    this.#trial = !balancer.inRotation(this.port);
    this.#end = NOTHING;
  }

  #undecided(): void {
    this.#trial = false;
    this.balancer.undecided(this.port);
  }

  /** Counts the request in flight (to {@link port}, and wherever it moves); returns {@link end}. */
  begin(): () => void {
    this.#end = this.inFlight.begin(this.port);
    return this.end;
  }

  /**
   * `attempt(port)` on the chosen instance; when it fails in a way that may be retried ({@link mayRetry}),
   * on the next best one not tried yet, until one answers or every one was tried (then its error).
   */
  async send<T>(method: string, attempt: (port: number) => Promise<T>): Promise<T> {
    while (true) {
      try {
        const result = await attempt(this.port);
        if (this.#trial) {
          this.#trial = false;
          this.balancer.answered(this.app, this.port);
        }
        return result;
      } catch (error) {
        if (refusedConnect(error)) {
          this.balancer.refused(this.app, this.port, error, this.#trial);
          this.#trial = false;
        } else if (this.#trial) this.#undecided();
        if (!mayRetry(error, method)) throw error;
        (this.#tried ??= []).push(this.port);
        const next = this.balancer.pick(this.ports, this.#tried);
        if (next === undefined) throw error;
        this.#end();
        this.port = next;
        this.#trial = !this.balancer.inRotation(next);
        this.#end = this.inFlight.begin(next);
      }
    }
  }
}
