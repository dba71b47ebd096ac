/** Waiting in tests: bounded, so a hang fails the test instead of stalling it. */

/** Resolves after `ms`. */
export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** What a check of {@link until} gives when it does not hold yet. */
type NotYet = false | undefined | null;

/**
 * Resolves with what `check()` gives once it is neither false, undefined nor null (polling every
 * 10 ms), or rejects after `ms` naming `what`, followed by what `seen()` says (called only then).
 */
export async function until<T>(
  ms: number,
  what: string,
  check: () => T | Promise<T>,
  seen?: () => string,
): Promise<Exclude<T, NotYet>> {
  const deadline = performance.now() + ms;
  while (true) {
    const value = await check();
    if (value !== false && value !== undefined && value !== null) return value as Exclude<T, NotYet>;
    if (performance.now() > deadline) throw new Error(`${what}: not so within ${ms} ms${seen ? `\n${seen()}` : ""}`);
    await sleep(10);
  }
}

/** Resolves with `promise`, or rejects after `ms` naming `what`. */
export async function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) =>
        timer = setTimeout(() => reject(new Error(`${what}: no answer in ${ms} ms`)), ms)
      ),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
