/**
 * Cancelling a deploy: SIGINT (a Ctrl-C on `git push` or on `execute`), SIGTERM, SIGHUP, or the
 * pusher's connection lost (the hook's output has nowhere to go). The running build or hook is
 * killed with its process group, no further step starts, a health check in progress stops, and
 * the deploy ends through its failure path: the half-made release removed, a started slot
 * stopped, traffic where it was, the lock freed, `cancelled` recorded.
 *
 * Also the test hooks of the crash-safety test: `DEPLOY_PARADIGM_TEST_KILL=<point>` makes the
 * process SIGKILL itself at that point (`before:<step>` or `after:<step>`, or `spawned:<text>`:
 * once it has started a command whose argv holds that text), and nowhere else; `<point>+<ms>`
 * does it that many milliseconds after the point, wherever the deploy is then.
 * @module
 */

/** Thrown where a cancelled deploy stops. */
export class Cancelled extends Error {
  constructor(readonly why: string) {
    super(`cancelled: ${why}`);
  }
}

/** A deploy's cancellation: its signal, and how to cancel it. */
export class Cancellation {
  readonly #controller = new AbortController();
  #listening: Deno.Signal[] = [];

  /** Cancels on SIGINT, SIGTERM and SIGHUP until {@link dispose}. */
  watchSignals(): this {
    for (const name of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
      try {
        Deno.addSignalListener(name, this.#onSignal);
        this.#listening.push(name);
      } catch { /* not on this platform */ }
    }
    return this;
  }

  #onSignal = () => this.cancel("interrupted by a signal (Ctrl-C, SIGTERM or a closed session)");

  /** Aborted once cancelled. */
  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  get cancelled(): boolean {
    return this.#controller.signal.aborted;
  }

  /** Why it was cancelled. */
  get why(): string {
    return String(this.#controller.signal.reason ?? "");
  }

  cancel(why: string): void {
    if (!this.cancelled) this.#controller.abort(why);
  }

  /** Throws {@link Cancelled} once cancelled: the deploy starts no further step. */
  check(): void {
    if (this.cancelled) throw new Cancelled(this.why);
  }

  dispose(): void {
    for (const name of this.#listening) Deno.removeSignalListener(name, this.#onSignal);
    this.#listening = [];
  }
}

/** The crash test's hook: SIGKILL this process at `point` (or a delay after it) when the test asks for it. */
export function killPoint(point: string): void {
  if (!TEST_KILL || TEST_KILL[1] !== point) return;
  const kill = () => Deno.kill(Deno.pid, "SIGKILL");
  if (TEST_KILL[2] === undefined) kill();
  else Deno.unrefTimer(setTimeout(kill, Number(TEST_KILL[2]))); // a deploy over by then just ends
}

/** The crash test's hook in the runner, once it has started `argv` (see `spawned:` above). */
export function killOnSpawn(argv: string[]): void {
  const point = TEST_KILL?.[1];
  if (point?.startsWith("spawned:") && argv.join(" ").includes(point.slice("spawned:".length))) killPoint(point);
}

const TEST_KILL = /^(.+?)(?:\+(\d+))?$/.exec(Deno.env.get("DEPLOY_PARADIGM_TEST_KILL") ?? "");
