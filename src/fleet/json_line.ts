/**
 * A log line read as one JSON object (deploy.log's events, cron.log's runs, metrics.log's
 * minutes): hostile input, so anything else (not JSON, an array, null, a number) is undefined.
 * @module
 */

/** The JSON object `text` holds, or undefined when it holds anything else. */
export function jsonObjectOf(text: string): Record<string, unknown> | undefined {
  if (!text.startsWith("{")) return undefined;
  try {
    const value: unknown = JSON.parse(text);
    return value !== null && typeof value === "object" && !Array.isArray(value)
      ? value as Record<string, unknown>
      : undefined;
  } catch {
    return undefined;
  }
}
