/**
 * The fleet API client: GETs with the token kept in sessionStorage, typed failures, and the last
 * overview fetched (for the filters' names). Browser globals are only touched when called.
 * @module
 */

const TOKEN_KEY = "fleet-monitor-token";
/** Rows per page of the paged lists (search results, deployments). */
export const PAGE_SIZE = 50;

/** The stored token, or null. */
export const token = () => sessionStorage.getItem(TOKEN_KEY);
/** Stores the token (this tab only). */
export const keepToken = (value) => sessionStorage.setItem(TOKEN_KEY, value);
/** Forgets the token. */
export const forgetToken = () => sessionStorage.removeItem(TOKEN_KEY);

/** The API wants a (valid) token. */
export class Unauthorized extends Error {}

/** Any other failure: the HTTP status (0: no answer), the API's error and hint. */
export class ApiError extends Error {
  /** @param {number} status @param {string} message @param {string} [hint] */
  constructor(status, message, hint) {
    super(message);
    this.status = status;
    this.hint = hint;
  }
}

let answered = () => {};
let unauthorized = () => {};

/** Calls `fn` after every successful API answer (the boot module opens the event stream then). */
export function afterAnswer(fn) {
  answered = fn;
}

/** Sets what {@link orLogin} does with an {@link Unauthorized} error (the boot module shows the login). */
export function onUnauthorized(fn) {
  unauthorized = fn;
}

/** Handles `error` when it is {@link Unauthorized} (shows the login) and says so; false for any other error. */
export function orLogin(error) {
  if (!(error instanceof Unauthorized)) return false;
  unauthorized();
  return true;
}

/**
 * The URL of an API call: `path` on `origin` with `params` as its query (undefined, null and ""
 * left out).
 * @param {string} path
 * @param {Record<string, unknown>} params
 * @param {string} origin
 */
export function apiUrl(path, params, origin) {
  const url = new URL(path, origin);
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, String(value));
  }
  return url;
}

/**
 * GETs an API path with the stored token; throws {@link Unauthorized} on 401 and
 * {@link ApiError} with the API's `{error, hint}` on other failures.
 * @param {string} path
 * @param {Record<string, unknown>} [params]
 */
export async function api(path, params = {}) {
  const url = apiUrl(path, params, location.origin);
  const stored = token();
  let response;
  try {
    response = await fetch(url, { headers: stored ? { authorization: `Bearer ${stored}` } : {}, cache: "no-store" });
  } catch (error) {
    throw new ApiError(0, `the fleet monitor does not answer (${error instanceof Error ? error.message : error})`);
  }
  if (response.status === 401) throw new Unauthorized("token required");
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    throw new ApiError(response.status, body?.error ?? `${response.status} ${response.statusText}`, body?.hint);
  }
  answered();
  return body;
}

/** The last overview fetched: server and app names for the filters. */
let fleet = null;

/** Keeps `data` (an /api/fleet answer) as the last overview; null forgets it (a cycle changed it). */
export function rememberFleet(data) {
  fleet = data;
}

/** The servers' and apps' names (sorted apps) of an /api/fleet answer. */
export function namesOf(data) {
  const servers = data.servers.map((s) => s.name);
  const apps = [...new Set(data.servers.flatMap((s) => s.apps.map((a) => a.app)))].sort();
  return { servers, apps };
}

/** The servers' and apps' names, from the last overview or a new one. */
export async function fleetNames() {
  fleet ??= await api("/api/fleet");
  return namesOf(fleet);
}
