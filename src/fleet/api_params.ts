/**
 * The fleet API's query parameters, checked (lengths, integers, times, choices, servers and apps the
 * database knows), and the refusal a bad one gets ({@link HttpError}: a status and a JSON body
 * `{ error, hint? }`, written by ./api.ts).
 * @module
 */
import type { FleetStore } from "./store.ts";

/** Longest `q` accepted (its cost is bounded by its shape: QUERY_LIMITS in ./log_queries.ts). */
export const MAX_QUERY_LENGTH = 1000;
/** Longest value of any other parameter accepted. */
export const MAX_PARAM_LENGTH = 200;

/** A request the API refuses: status and JSON body `{ error, hint? }`. */
export class HttpError extends Error {
  constructor(readonly status: number, message: string, readonly hint?: string) {
    super(message);
  }
}

/** Query parameters, checked: lengths, integers, times. */
export class Params {
  constructor(private readonly url: URL) {
    for (const [key, value] of url.searchParams) {
      if (key === "token") continue;
      const max = key === "q" ? MAX_QUERY_LENGTH : MAX_PARAM_LENGTH;
      if (key.length > MAX_PARAM_LENGTH) {
        throw new HttpError(400, `a parameter name is ${key.length} characters long; at most ${MAX_PARAM_LENGTH}`);
      }
      if (value.length > max) {
        throw new HttpError(400, `parameter ${key} is ${value.length} characters long; at most ${max} are accepted`);
      }
    }
  }

  /** A parameter's value; an empty one counts as absent. */
  string(name: string): string | undefined {
    const value = this.url.searchParams.get(name);
    return value === null || value === "" ? undefined : value;
  }

  required(name: string): string {
    return this.string(name) ?? this.missing(name);
  }

  missing(name: string): never {
    throw new HttpError(400, `missing parameter ${name}`);
  }

  integer(name: string, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
    const text = this.string(name);
    if (text === undefined) return undefined;
    const value = /^-?\d+$/.test(text) ? Number(text) : NaN;
    if (!Number.isSafeInteger(value) || value < min || value > max) {
      const range = max === Number.MAX_SAFE_INTEGER ? `an integer ≥ ${min}` : `an integer from ${min} to ${max}`;
      throw new HttpError(400, `parameter ${name} must be ${range}, not ${JSON.stringify(text)}`);
    }
    return value;
  }

  /** One of `allowed` (undefined when absent). */
  oneOf<T extends string>(name: string, allowed: readonly T[]): T | undefined {
    const text = this.string(name);
    if (text === undefined || (allowed as readonly string[]).includes(text)) return text as T | undefined;
    throw new HttpError(400, `parameter ${name} must be one of ${allowed.join(", ")}, not ${JSON.stringify(text)}`);
  }

  /** An ISO date or milliseconds since 1970. */
  time(name: string): number | undefined {
    const text = this.string(name);
    if (text === undefined) return undefined;
    const value = /^\d+$/.test(text) ? Number(text) : /^\d{4}-\d{2}-\d{2}/.test(text) ? Date.parse(text) : NaN;
    if (!Number.isSafeInteger(value)) {
      throw new HttpError(
        400,
        `parameter ${name} must be an ISO date (2026-11-29T07:00:00Z) or milliseconds since 1970, ` +
          `not ${JSON.stringify(text)}`,
      );
    }
    return value;
  }
}

/**
 * `server` (and `app` on it) as named by required parameters, when the fleet database knows them;
 * else a 404 that names what is missing.
 */
export function knownTarget(store: FleetStore, params: Params, withApp: boolean): { server: string; app: string } {
  const server = params.required("server");
  const app = withApp ? params.required("app") : "";
  if (store.sql("SELECT 1 FROM servers WHERE name = ?").get(server) === undefined) {
    throw new HttpError(404, `no server ${JSON.stringify(server)} in the fleet database`);
  }
  if (withApp && store.sql("SELECT 1 FROM apps WHERE server = ? AND app = ?").get(server, app) === undefined) {
    throw new HttpError(404, `no app ${JSON.stringify(app)} on server ${JSON.stringify(server)} in the fleet database`);
  }
  return { server, app };
}
