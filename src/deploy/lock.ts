/**
 * The per-app deploy lock: an flock(2) on a file, which the kernel frees when the holder dies,
 * so a crashed or killed deploy never leaves a stale lock.
 * @module
 */

/** A held lock. */
export interface HeldLock {
  release(): void;
}

/** Who holds the lock, as written by the holder. */
export interface LockOwner {
  pid: number;
  commit: string;
  since: string;
}

/** What a deploy waiting for the lock says of its holder. */
export function waitingLine(app: string, holder: LockOwner | undefined): string {
  return `deploy-paradigm: waiting for another deploy of ${app}` +
    (holder ? ` (pid ${holder.pid}, commit ${holder.commit.slice(0, 7)}, since ${holder.since})` : "");
}

/**
 * Takes the exclusive lock on `path`. When another process holds it, calls `onWait` with the
 * holder's description, then waits; or gives up when `onWait` throws (its error is thrown; the
 * file stays open, its lock request pending, until the process ends).
 */
export async function acquireLock(
  path: string,
  owner: Omit<LockOwner, "since">,
  onWait: (holder: LockOwner | undefined) => void,
  /** Epoch milliseconds, for `since` (a deploy's injected clock). */
  now: () => number = Date.now,
): Promise<HeldLock> {
  const file = await Deno.open(path, { read: true, write: true, create: true, mode: 0o600 });
  let pending = false;
  try {
    const locking = file.lock(true);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const waited = await Promise.race([
      locking.then(() => false),
      new Promise<boolean>((resolve) => timer = setTimeout(resolve, 100, true)),
    ]);
    clearTimeout(timer);
    if (waited) {
      pending = true;
      locking.catch(() => {});
      onWait(await readOwner(path));
      await locking;
      pending = false;
    }
    const content = JSON.stringify({ ...owner, since: new Date(now()).toISOString() } satisfies LockOwner) + "\n";
    await file.truncate(0);
    await file.write(new TextEncoder().encode(content));
  } catch (error) {
    if (!pending) file.close();
    throw error;
  }
  let released = false;
  return {
    release() {
      if (released) return;
      released = true;
      file.unlock();
      file.close();
    },
  };
}

async function readOwner(path: string): Promise<LockOwner | undefined> {
  try {
    return JSON.parse(await Deno.readTextFile(path)) as LockOwner;
  } catch {
    return undefined;
  }
}
