/**
 * Connection accounting shared by every listener of a proxy (./listener.ts): connection limits in
 * total and per client address, and a sweep that closes connections that send no complete request
 * in time (slowloris), stay idle too long, or whose writes stall.
 * @module
 */

/** Connection limits and timeouts (proxy.yml `limits`). */
export interface Limits {
  maxConnections: number;
  maxConnectionsPerIp: number;
  /** A new connection must send a complete request head within this. */
  headerTimeoutMs: number;
  /** A keep-alive connection with no request in flight is closed after this. */
  idleTimeoutMs: number;
  /** A write to a client (or to an app behind a WebSocket) that takes longer cuts the connection. */
  sendTimeoutMs: number;
}

/** One client connection being served. */
export interface Tracked {
  ip: string;
  /** Requests in flight on it (WebSockets count until the relay ends). */
  active: number;
  requests: number;
  /** When it last had no request in flight. */
  idleSince: number;
  finished: boolean;
  /** Closes the connection. */
  close?: () => void;
  /** When part of a request head arrived on a kept-alive connection (0: none): it has headerTimeout too. */
  headSince: number;
  /** The gate's clock when a write to the client began (0: none), and the same for writes to an app. */
  writingSince: number;
  appWritingSince: number;
  /** Close once no request is in flight (the listener is going away). */
  draining: boolean;
}

/** Connection accounting shared by every listener of a proxy. */
export class Gate {
  readonly limits: Limits;
  readonly #perIp = new Map<string, number>();
  readonly #conns = new Set<Tracked>();
  readonly #timer: ReturnType<typeof setInterval>;
  readonly #log: (line: string) => void;
  #refusedLogged = 0;
  /** Seconds-resolution clock, updated by the sweep (no Date.now() per request). */
  now = Date.now();
  onOpen?: () => void;
  onClose?: () => void;

  constructor(limits: Limits, log: (line: string) => void, sweepMs = 500) {
    this.limits = limits;
    this.#log = log;
    this.#timer = setInterval(() => this.sweep(), sweepMs);
  }

  /** Open client connections. */
  get open(): number {
    return this.#conns.size;
  }

  /**
   * Whether a new connection from `ip` may be served; logs refusals at most every 10 s. A trusted
   * proxy (a load balancer in front) carries many clients: only the total limit applies to it.
   */
  admit(ip: string, trusted = false): boolean {
    const open = this.#conns.size + this.#extra;
    const fromIp = (this.#perIp.get(ip) ?? 0) + (this.#extraPerIp.get(ip) ?? 0);
    const why = open >= this.limits.maxConnections
      ? `${open} connections open (limit ${this.limits.maxConnections}${
        this.#extra ? `, HTTP/2 streams included` : ""
      })`
      : !trusted && fromIp >= this.limits.maxConnectionsPerIp
      ? `${fromIp} connections from ${ip} (limit ${this.limits.maxConnectionsPerIp} per address)`
      : undefined;
    if (!why) return true;
    const now = Date.now();
    if (now - this.#refusedLogged > 10_000) {
      this.#refusedLogged = now;
      this.#log(`refusing connections: ${why}`);
    }
    return false;
  }

  /**
   * Whether one more HTTP/2 request may be in flight on `tracked`: `first` (the connection's own),
   * `counted`, or undefined (refused). Beyond a connection's first, each holds an app's socket as a
   * connection does, so it counts as one against both limits until {@link endStream}; without that,
   * 100 streams on each of a few connections used up every file.
   */
  admitStream(tracked: Tracked, trusted = false): "first" | "counted" | undefined {
    if (tracked.active === 0) return "first";
    if (!this.admit(tracked.ip, trusted)) return undefined;
    this.#extra++;
    this.#extraPerIp.set(tracked.ip, (this.#extraPerIp.get(tracked.ip) ?? 0) + 1);
    return "counted";
  }

  /** An HTTP/2 request {@link admitStream} `counted` is over. */
  endStream(tracked: Tracked): void {
    this.#extra--;
    const left = (this.#extraPerIp.get(tracked.ip) ?? 1) - 1;
    if (left > 0) this.#extraPerIp.set(tracked.ip, left);
    else this.#extraPerIp.delete(tracked.ip);
  }

  /** HTTP/2 requests in flight beyond their connection's first, in all and per address. */
  #extra = 0;
  readonly #extraPerIp = new Map<string, number>();

  track(ip: string): Tracked {
    const tracked: Tracked = {
      ip,
      active: 0,
      requests: 0,
      // The real time: the sweep's clock may be up to one sweep old, which would cut the head early.
      idleSince: Date.now(),
      finished: false,
      draining: false,
      headSince: 0,
      writingSince: 0,
      appWritingSince: 0,
    };
    this.#conns.add(tracked);
    this.#perIp.set(ip, (this.#perIp.get(ip) ?? 0) + 1);
    this.onOpen?.();
    return tracked;
  }

  release(tracked: Tracked): void {
    if (tracked.finished) return;
    tracked.finished = true;
    this.#conns.delete(tracked);
    const left = (this.#perIp.get(tracked.ip) ?? 1) - 1;
    if (left > 0) this.#perIp.set(tracked.ip, left);
    else this.#perIp.delete(tracked.ip);
    this.onClose?.();
  }

  /** Closes the connections that are past their header or idle timeout, or whose writes stall. */
  sweep(): void {
    this.now = Date.now();
    const send = this.limits.sendTimeoutMs;
    for (const tracked of this.#conns) {
      if (tracked.active > 0) {
        const since = Math.min(tracked.writingSince || Infinity, tracked.appWritingSince || Infinity);
        if (this.now - since >= send) {
          this.#log(`${tracked.ip}: a write stalled for ${send} ms: connection cut`);
          cut(tracked);
        }
        continue;
      }
      const limit = tracked.requests === 0 ? this.limits.headerTimeoutMs : this.limits.idleTimeoutMs;
      if (this.now - tracked.idleSince >= limit) cut(tracked);
      else if (tracked.headSince && this.now - tracked.headSince >= this.limits.headerTimeoutMs) cut(tracked);
    }
  }

  /** Ends every connection: idle ones at once, the others when their requests end or after `graceMs`. */
  async closeAll(graceMs: number): Promise<void> {
    clearInterval(this.#timer);
    const deadline = Date.now() + graceMs;
    for (const tracked of this.#conns) closeWhenIdle(tracked);
    while (this.#conns.size && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 25));
    for (const tracked of [...this.#conns]) cut(tracked);
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}

export function cut(tracked: Tracked): void {
  if (tracked.finished) return;
  try {
    tracked.close?.();
  } catch { /* the connection ended meanwhile */ }
}

/** Closes `tracked` once no request is in flight on it. */
export function closeWhenIdle(tracked: Tracked): void {
  tracked.draining = true;
  if (tracked.active === 0) cut(tracked);
}
