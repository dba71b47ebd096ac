/**
 * Requests in flight per target port, and waiting for a port to drain (as kamal-proxy's target
 * does): a deploy switches the route, then asks the proxy to `drain` the old slot's port (or
 * the ports of all its instances) before stopping it. Streams and WebSockets register a way to be cut when the proxy stops.
 * @module
 */

/** In-flight accounting of one proxy. */
export class InFlight {
  #counts = new Map<number, number>();
  #waiters = new Map<number, Set<() => void>>();
  /** Forced ends of open streams and WebSockets, for {@link abortAll}. */
  #active = new Set<() => void>();

  /** Counts one request in flight to `port`; the returned function (idempotent) ends it. */
  begin(port: number): () => void {
    this.#counts.set(port, (this.#counts.get(port) ?? 0) + 1);
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      const left = (this.#counts.get(port) ?? 1) - 1;
      if (left > 0) {
        this.#counts.set(port, left);
        return;
      }
      this.#counts.delete(port);
      for (const wake of [...this.#waiters.get(port) ?? []]) wake();
    };
  }

  /** Requests (and WebSockets) in flight to `port` now. */
  count(port: number): number {
    return this.#counts.get(port) ?? 0;
  }

  /**
   * Resolves when nothing is in flight to `port` (`drained: true`) or after `timeoutMs`; for a
   * list of ports, when nothing is in flight to any of them (`inFlight`: their sum), or after `timeoutMs`.
   */
  drain(port: number | readonly number[], timeoutMs: number): Promise<{ drained: boolean; inFlight: number }> {
    if (typeof port !== "number") return this.#drainAll(port, timeoutMs);
    if (this.count(port) === 0) return Promise.resolve({ drained: true, inFlight: 0 });
    return new Promise((resolve) => {
      const waiters = this.#waiters.get(port) ?? new Set();
      this.#waiters.set(port, waiters);
      const wake = () => {
        clearTimeout(timer);
        waiters.delete(wake);
        if (!waiters.size) this.#waiters.delete(port);
        const inFlight = this.count(port);
        resolve({ drained: inFlight === 0, inFlight });
      };
      const timer = setTimeout(wake, Math.max(0, timeoutMs));
      waiters.add(wake);
    });
  }

  async #drainAll(ports: readonly number[], timeoutMs: number): Promise<{ drained: boolean; inFlight: number }> {
    const deadline = Date.now() + timeoutMs;
    // A busy port after the other, each with the time left, until none is busy (or one did not drain in time).
    for (let busy = ports.find((port) => this.count(port) > 0); busy !== undefined;) {
      if (!(await this.drain(busy, Math.max(0, deadline - Date.now()))).drained) break;
      busy = ports.find((port) => this.count(port) > 0);
    }
    const inFlight = ports.reduce((sum, port) => sum + this.count(port), 0);
    return { drained: inFlight === 0, inFlight };
  }

  /** Registers a forced end (a stream or WebSocket to cut on shutdown); returns its unregistration. */
  track(abort: () => void): () => void {
    this.#active.add(abort);
    return () => void this.#active.delete(abort);
  }

  /** Whether streams or WebSockets are open. */
  get active(): number {
    return this.#active.size;
  }

  /** Cuts every open stream and WebSocket, and wakes every drain waiter. */
  abortAll(): void {
    for (const abort of [...this.#active]) abort();
    for (const waiters of [...this.#waiters.values()]) for (const wake of [...waiters]) wake();
  }

  /** `body`, counted in flight by `end` until it is fully read, cancelled or fails; cut by {@link abortAll}. */
  stream(body: ReadableStream<Uint8Array>, end: () => void): ReadableStream<Uint8Array> {
    const reader = body.getReader();
    let finished = false;
    let untrack: () => void = () => {};
    const finish = () => {
      finished = true;
      untrack();
      end();
    };
    return new ReadableStream<Uint8Array>({
      start: (controller) => {
        untrack = this.track(() => {
          if (finished) return;
          finish();
          reader.cancel("the proxy is shutting down").catch(() => {});
          controller.error(new Error("the proxy is shutting down"));
        });
      },
      pull: async (controller) => {
        try {
          const { done, value } = await reader.read();
          if (finished) return;
          if (done) {
            finish();
            controller.close();
          } else controller.enqueue(value);
        } catch (error) {
          if (finished) return;
          finish();
          controller.error(error);
        }
      },
      cancel: (reason) => {
        finish();
        return reader.cancel(reason).catch(() => {});
      },
    }, { highWaterMark: 0 });
  }
}
