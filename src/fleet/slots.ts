/**
 * A bound on how many of something run at once, the others waiting their turn in order: the
 * collector's pulls (`concurrency`), the alerts' deliveries to one target.
 * @module
 */

/** At most `limit` holders at once; the next in line gets a slot as it is released. */
export class Slots {
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(readonly limit: number) {}

  /** Waits for a slot; its release (once). */
  async take(): Promise<() => void> {
    if (this.running < this.limit) this.running++;
    else await new Promise<void>((resolve) => this.waiting.push(resolve));
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      // Handed over, not freed: no one else can take it between the release and the next one's turn.
      const next = this.waiting.shift();
      if (next) next();
      else this.running--;
    };
  }

  /** `fn` in a slot, released when it settles. */
  async run<T>(fn: () => Promise<T>): Promise<T> {
    const release = await this.take();
    try {
      return await fn();
    } finally {
      release();
    }
  }
}
