/**
 * The question `rollout --confirm` asks before each wave, on the terminal: the question
 * written, one line read; a line that is `y` or `yes` is yes, anything else (or the input's end,
 * or a stop: Ctrl-C) is no. The stop's listener is removed whatever happens.
 * @module
 */

/** Where the question is written and the answer read (the terminal; a fake in tests). */
export interface AskIo {
  write(bytes: Uint8Array): Promise<unknown>;
  read(buffer: Uint8Array): Promise<number | null>;
}

const terminal: AskIo = {
  write: (bytes) => Deno.stdout.write(bytes),
  read: (buffer) => Deno.stdin.read(buffer),
};

/** Asks `question`; yes only for a line `y` or `yes` (any case). */
export async function ask(question: string, stop: AbortSignal, io: AskIo = terminal): Promise<boolean> {
  if (stop.aborted) return false;
  await io.write(new TextEncoder().encode(question));
  let onAbort: () => void = () => {};
  const stopped = new Promise<null>((resolve) => onAbort = () => resolve(null));
  stop.addEventListener("abort", onAbort, { once: true });
  try {
    if (stop.aborted) return false;
    const buffer = new Uint8Array(256);
    const decoder = new TextDecoder();
    let text = "";
    while (!text.includes("\n")) {
      const n = await Promise.race([io.read(buffer), stopped]);
      if (n === null) return false;
      text += decoder.decode(buffer.subarray(0, n), { stream: true });
      if (text.length > 4096) return false;
    }
    return /^\s*y(es)?\s*$/i.test(text.split("\n")[0]);
  } finally {
    stop.removeEventListener("abort", onAbort);
  }
}
