/**
 * The health check: healthy after `successes` consecutive 2xx answers within `window`.
 * @module
 */
import type { HealthCheck } from "../config/schema.ts";

/** The verdict of a health check. */
export interface HealthResult {
  healthy: boolean;
  attempts: number;
  /** Consecutive successes at the end. */
  successes: number;
  /** Why the last failing attempt failed. */
  lastProblem?: string;
  checkedAt: string;
}

/** Checks `url` until it has answered 2xx `successes` times in a row, or `window` has passed. */
export async function checkHealth(url: string, check: HealthCheck): Promise<HealthResult> {
  const deadline = Date.now() + check.window;
  let attempts = 0;
  let successes = 0;
  let lastProblem: string | undefined;
  while (true) {
    attempts++;
    const problem = await probe(url, Math.min(check.timeout, Math.max(1, deadline - Date.now())));
    if (problem === undefined) successes++;
    else [successes, lastProblem] = [0, problem];
    if (successes >= check.successes) {
      return { healthy: true, attempts, successes, lastProblem, checkedAt: new Date().toISOString() };
    }
    if (Date.now() + check.interval > deadline) {
      return { healthy: false, attempts, successes, lastProblem, checkedAt: new Date().toISOString() };
    }
    await new Promise((resolve) => setTimeout(resolve, check.interval));
  }
}

/** One attempt: undefined when healthy, else what went wrong. */
async function probe(url: string, timeout: number): Promise<string | undefined> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(timeout), redirect: "manual" });
    await response.body?.cancel();
    return response.ok ? undefined : `answered ${response.status} ${response.statusText}`.trim();
  } catch (error) {
    if (error instanceof DOMException && error.name === "TimeoutError") return `no answer within ${timeout}ms`;
    const cause = error instanceof Error && error.cause instanceof Error ? `: ${error.cause.message}` : "";
    const message = error instanceof Error ? `${error.message}${cause}` : String(error);
    return /refused/i.test(message) ? "connection refused (nothing listens on the port)" : message;
  }
}
