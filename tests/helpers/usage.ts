/** The usage errors of a command, as its tests read them. */
import { UsageError } from "../../src/errors.ts";

/** The message of the {@link UsageError} `fn` rejects with; anything else (or nothing) fails the test. */
export async function usageMessage(fn: () => Promise<unknown>): Promise<string> {
  try {
    await fn();
  } catch (error) {
    if (error instanceof UsageError) return error.message;
    throw error;
  }
  throw new Error("no usage error");
}
