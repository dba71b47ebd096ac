/**
 * The proxy's own answers: short plain-text pages that name nothing internal (no app, port or
 * address: those go to the proxy's log).
 * @module
 */
import { REASONS } from "./wire.ts";

/** A short plain-text answer. */
export function textResponse(status: number, text: string, headers: Record<string, string> = {}): Response {
  return new Response(text + "\n", {
    status,
    headers: { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store", ...headers },
  });
}

/** The plain page of an HTTP status, e.g. `502 Bad Gateway`: the same for every app and cause. */
export function errorPage(status: number, headers: Record<string, string> = {}): Response {
  return textResponse(status, `${status} ${REASONS[status] ?? "Error"}`, headers);
}

/** Longest request path a log line shows: a client's path may be 64 KiB, and one request is one short line. */
const LOGGED_PATH = 200;

/** `target` without its query, cut for the log. */
export function loggedPath(target: string): string {
  const path = target.split("?")[0];
  return path.length > LOGGED_PATH ? `${path.slice(0, LOGGED_PATH)}… (${path.length} characters)` : path;
}

/** The message of an error (or the value in words). */
export function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** The messages of `error` and its causes, joined (for the log). */
export function errorChain(error: unknown): string {
  const parts: string[] = [];
  for (let e = error, depth = 0; e !== undefined && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    parts.push(message(e));
    if (!(e instanceof Error)) break;
  }
  return parts.join(": ");
}
