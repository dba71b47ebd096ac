/**
 * Maintenance mode: while an app is in maintenance, the proxy answers its requests itself with
 * `503 Service Unavailable`, `Retry-After` and a plain page, except for the clients on its allow
 * list, whose requests go to the app as usual.
 *
 * The state is `<appDir>/maintenance.json` (written by `deploy-paradigm maintenance`, atomically;
 * no file: not in maintenance), so it survives proxy restarts and deploys (which never touch it):
 *
 *     {"since": "2026-12-03T15:00:00.000Z", "message": "Back at 16:00", "allow": ["10.0.0.0/8"], "retryAfter": 60}
 *
 * The proxy reads it with the routes (./table.ts: on `reload` and every 2 s); a file that is not
 * valid is logged and the app keeps what it had, as with route.json. The page is the serving
 * release's own `maintenance.html` (the `current` release's root; at most
 * {@link MAX_PAGE_BYTES}, nothing outside the release), read when the state is loaded, else a
 * built-in page with the message. `status`, status.json and the fleet show the state
 * ({@link maintenanceForStatus}).
 * @module
 */
import { join, relative, sep } from "node:path";
import { DeployParadigmError } from "../errors.ts";
import { ifExists, openChecked, readAtMost } from "../fsutil.ts";
import { isTrusted, parseRange } from "./config.ts";
import { readJsonFile, writeJsonFile } from "./routes.ts";

/** The state file in an app's directory. */
export const MAINTENANCE_FILE = "maintenance.json";
/** The release's own page, at its root. */
export const MAINTENANCE_PAGE = "maintenance.html";
/** The largest maintenance.html served; a larger one is logged and the built-in page served. */
export const MAX_PAGE_BYTES = 256 * 1024;
/** How long reading the release's maintenance.html may take. */
const PAGE_READ_MS = 2000;
/** `Retry-After` when none is given, in seconds. */
export const DEFAULT_RETRY_AFTER = 60;
/** The longest `Retry-After` accepted, in seconds (a day). */
export const MAX_RETRY_AFTER = 86_400;
/** The longest message, in characters. */
export const MAX_MESSAGE = 1000;
/** The most allow-list entries. */
export const MAX_ALLOW = 100;

/** An app's maintenance, as maintenance.json holds it. */
export interface MaintenanceState {
  /** When maintenance began (ISO 8601); kept when `on` is run again. */
  since: string;
  /** Shown on the built-in page (HTML-escaped). */
  message?: string;
  /** IP addresses and CIDR ranges (IPv4, IPv6) whose requests still go to the app. */
  allow: string[];
  /** Seconds, for `Retry-After`. */
  retryAfter: number;
}

/** The state as the proxy serves it: with its page. */
export interface Maintenance extends MaintenanceState {
  /** The page's bytes (HTML). */
  page: Uint8Array;
  /** Whether the page is the release's own maintenance.html. */
  custom: boolean;
}

// ---------------------------------------------------------------------------------------------
// Values

/** What is wrong with an allow-list entry, or undefined when it is an IP address or a CIDR range. */
export function checkAllowEntry(entry: string): string | undefined {
  const range = parseRange(entry);
  return typeof range === "string" ? `"${entry}" ${range}` : undefined;
}

/**
 * The `/0` ranges of an allow list, and whom they let through, or undefined when it has none. A
 * range matches its own family only (as proxy.yml `trustedProxies` does: `::/0` trusting every
 * IPv4 peer too would widen trust nobody wrote), so `::/0` alone lets IPv4 clients get 503.
 */
export function everyoneOf(allow: string[]): string | undefined {
  const families = new Map<string, number>();
  for (const entry of allow) {
    const range = parseRange(entry);
    if (typeof range !== "string" && range.bits === 0) families.set(entry, range.bytes.length);
  }
  if (!families.size) return undefined;
  const v4 = [...families.values()].includes(4);
  const v6 = [...families.values()].includes(16);
  const whom = v4 && v6
    ? "every client through"
    : v4
    ? "every IPv4 client through (IPv6 clients still get 503: add ::/0 for them)"
    : "every IPv6 client through (IPv4 clients still get 503: add 0.0.0.0/0 for them)";
  return `${[...families.keys()].join(", ")} ${families.size > 1 ? "let" : "lets"} ${whom}`;
}

/** What is wrong with a message, or undefined. */
export function checkMessage(message: string): string | undefined {
  if (!message.trim()) return "is empty";
  if ([...message].length > MAX_MESSAGE) return `is longer than ${MAX_MESSAGE} characters`;
  // deno-lint-ignore no-control-regex
  if (/[\x00-\x1f\x7f-\x9f\u2028\u2029]/.test(message)) return "has a control character (a line break, a tab…)";
  return undefined;
}

/** What is wrong with a Retry-After value, or undefined. */
export function checkRetryAfter(seconds: unknown): string | undefined {
  return typeof seconds === "number" && Number.isInteger(seconds) && seconds >= 1 && seconds <= MAX_RETRY_AFTER
    ? undefined
    : `must be a whole number of seconds from 1 to ${MAX_RETRY_AFTER}`;
}

/**
 * Validates maintenance.json's content. Throws {@link DeployParadigmError} naming `source` and
 * every problem, each with its key path (`"allow.2"`, as the config loaders name them), when it is
 * not a valid state.
 */
export function parseMaintenance(value: unknown, source = MAINTENANCE_FILE): MaintenanceState {
  const problems = maintenanceProblems(value);
  if (problems.length) {
    const listed = problems.length === 1 ? problems[0] : `${problems.length} problems: ${problems.join("; ")}`;
    throw new DeployParadigmError(`${source}: ${listed}`, {
      suggestion: `run \`deploy-paradigm maintenance <app> on|off\` instead of editing it; it must be ` +
        `{"since": "<ISO time>", "message": "…", "allow": ["<IP or CIDR>", …], "retryAfter": <seconds>}`,
    });
  }
  const { since, message, allow, retryAfter } = value as MaintenanceState;
  return { since, ...(message !== undefined ? { message } : {}), allow, retryAfter };
}

/** What is wrong with maintenance.json's content, in one pass: a line per problem, none when it is valid. */
function maintenanceProblems(value: unknown): string[] {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return ["not a JSON object"];
  const record = value as Record<string, unknown>;
  const problems: string[] = [];
  const unknown = Object.keys(record).filter((key) => !["since", "message", "allow", "retryAfter"].includes(key));
  if (unknown.length) problems.push(`unknown key ${unknown.map((key) => JSON.stringify(key)).join(", ")}`);
  const { since, message, allow, retryAfter } = record;
  if (typeof since !== "string" || Number.isNaN(Date.parse(since))) {
    problems.push(`"since" must be a time such as "2026-12-03T15:00:00Z" (got ${JSON.stringify(since)})`);
  }
  if (message !== undefined) {
    const wrong = typeof message === "string" ? checkMessage(message) : "is not a string";
    if (wrong) problems.push(`"message" ${wrong}`);
  }
  if (!Array.isArray(allow)) {
    problems.push(`"allow" must be a list of IP addresses or CIDR ranges (got ${typeof allow})`);
  } else if (allow.length > MAX_ALLOW) {
    problems.push(`"allow" has more than ${MAX_ALLOW} entries`);
  } else {
    allow.forEach((entry, i) => {
      const wrong = typeof entry === "string" ? checkAllowEntry(entry) : `${JSON.stringify(entry)} is not a string`;
      if (wrong) problems.push(`"allow.${i}": ${wrong}`);
    });
  }
  const wrongRetry = checkRetryAfter(retryAfter);
  if (wrongRetry) problems.push(`"retryAfter" ${wrongRetry} (got ${JSON.stringify(retryAfter)})`);
  return problems;
}

// ---------------------------------------------------------------------------------------------
// The file

/** `<appDir>/maintenance.json`. */
export function maintenancePath(appDir: string): string {
  return join(appDir, MAINTENANCE_FILE);
}

/** The app's maintenance, or undefined when it is not in maintenance. Throws when the file is not valid. */
export function readMaintenance(appDir: string): Promise<MaintenanceState | undefined> {
  return readJsonFile(maintenancePath(appDir), parseMaintenance);
}

/** Puts the app in maintenance with `state` (validated first; maintenance.json replaced atomically). */
export function writeMaintenance(appDir: string, state: MaintenanceState): Promise<void> {
  return writeJsonFile(maintenancePath(appDir), state, parseMaintenance);
}

/** Ends the app's maintenance. True when it was in maintenance. */
export async function clearMaintenance(appDir: string): Promise<boolean> {
  return (await ifExists(Deno.remove(maintenancePath(appDir)).then(() => true))) ?? false;
}

/** An app's maintenance as `status`, status.json and the fleet show it: the state, or why the file is not valid. */
export type MaintenanceStatus = MaintenanceState | { error: string };

/**
 * The app's maintenance for `status` and status.json (never throws): its state, `{error}` when
 * maintenance.json is not valid (the proxy keeps what it had), or undefined when it is not in
 * maintenance.
 */
export async function maintenanceForStatus(appDir: string): Promise<MaintenanceStatus | undefined> {
  try {
    return await readMaintenance(appDir);
  } catch (error) {
    return { error: error instanceof Error ? error.message : String(error) };
  }
}

/** Maintenance in words: `maintenance since 2026-12-03 15:00 UTC, Retry-After 60 s, allowed: 10.0.0.0/8`. */
export function describeMaintenance(state: MaintenanceStatus | undefined): string {
  if (!state) return "no maintenance";
  if ("error" in state) return `maintenance.json is not valid: ${state.error}`;
  const since = `${state.since.slice(0, 10)} ${state.since.slice(11, 16)} UTC`;
  const allowed = state.allow.length ? `, allowed: ${state.allow.join(", ")}` : "";
  return `maintenance since ${since}, Retry-After ${state.retryAfter} s${allowed}`;
}

// ---------------------------------------------------------------------------------------------
// The proxy's side

/** The HTML-escaped text. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** The built-in page: the message (escaped), or a default sentence. */
export function builtInPage(message: string | undefined): string {
  const text = escapeHtml(message ?? "This site is down for maintenance. Please try again shortly.");
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Down for maintenance</title>
<style>body{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#222}</style>
</head>
<body>
<h1>Down for maintenance</h1>
<p>${text}</p>
</body>
</html>
`;
}

/**
 * The release's own maintenance.html under `release` (the `current` symlink): its bytes, or
 * undefined when it has none, or why it is not served (too big; a symlink out of the release).
 */
export async function releasePage(release: string): Promise<Uint8Array | undefined | { problem: string }> {
  let root: string;
  try {
    root = await Deno.realPath(release);
  } catch {
    return undefined; // no release serves yet
  }
  let real: string;
  try {
    real = await Deno.realPath(join(root, MAINTENANCE_PAGE));
  } catch (error) {
    if (error instanceof Deno.errors.NotFound || error instanceof Deno.errors.NotADirectory) return undefined;
    throw error;
  }
  const inside = relative(root, real);
  if (inside.startsWith("..") || inside.split(sep).some((segment) => segment.startsWith("."))) {
    return { problem: `${MAINTENANCE_PAGE} leads outside the release: the built-in page is served` };
  }
  if (!(await Deno.stat(real)).isFile) {
    return { problem: `${MAINTENANCE_PAGE} is not a file: the built-in page is served` };
  }
  const opened = await openChecked(real, (await Deno.stat(root)).gid);
  if (!opened) return { problem: `${MAINTENANCE_PAGE} changed while it was read: the built-in page is served` };
  using file = opened.file;
  const bytes = await readAtMost(file, MAX_PAGE_BYTES);
  if (bytes.length > MAX_PAGE_BYTES) {
    return {
      problem: `${MAINTENANCE_PAGE} is over the ${MAX_PAGE_BYTES / 1024} KiB a maintenance page may have: ` +
        "the built-in page is served",
    };
  }
  return bytes;
}

/**
 * {@link releasePage} of the app's serving release, as the proxy serves it (`maintenance on` says
 * a problem at once): never throws, and gives up after {@link PAGE_READ_MS}.
 */
export async function servingPage(appDir: string): Promise<Awaited<ReturnType<typeof releasePage>>> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    // The release is the app's: a page that never ends reading (a FIFO swapped in) must not hold up the reloads.
    return await Promise.race([
      releasePage(join(appDir, "current")),
      new Promise<never>((_, reject) => timer = setTimeout(reject, PAGE_READ_MS, new Error("not read within 2 s"))),
    ]);
  } catch (error) {
    return { problem: `${MAINTENANCE_PAGE} cannot be read (${error instanceof Error ? error.message : error})` };
  } finally {
    clearTimeout(timer);
  }
}

/** Throws when a file must not be trusted (see ./table.ts). */
type TrustCheck = (path: string) => Promise<void>;

/**
 * Loads the maintenance of the app in `appDir` for the proxy: undefined when it is not in
 * maintenance. Throws when maintenance.json is not valid or not trusted (the caller keeps what
 * the app had). `problem` says why the release's page is not served, when it is not.
 */
export async function loadMaintenance(
  appDir: string,
  trust: TrustCheck,
): Promise<{ maintenance?: Maintenance; problem?: string }> {
  const path = maintenancePath(appDir);
  if (!(await ifExists(Deno.lstat(path)))) return {};
  await trust(path);
  const state = await readMaintenance(appDir);
  if (!state) return {};
  const own = await servingPage(appDir);
  if (own instanceof Uint8Array) return { maintenance: { ...state, page: own, custom: true } };
  const page = new TextEncoder().encode(builtInPage(state.message));
  return { maintenance: { ...state, page, custom: false }, problem: own?.problem };
}

/** Whether a request from `ip` (the client as the proxy determines it) passes maintenance. */
export function isAllowed(maintenance: MaintenanceState, ip: string): boolean {
  return isTrusted(ip, maintenance.allow);
}

/** The proxy's answer to a request of an app in maintenance. */
export function maintenanceResponse(maintenance: Maintenance): Response {
  return new Response(maintenance.page as Uint8Array<ArrayBuffer>, {
    status: 503,
    headers: {
      "content-type": "text/html; charset=utf-8",
      "content-length": String(maintenance.page.length),
      "retry-after": String(maintenance.retryAfter),
      "cache-control": "no-store",
      "x-content-type-options": "nosniff",
    },
  });
}

/** Whether two loaded maintenances serve the same (so a re-read every 2 s logs nothing). */
export function sameMaintenance(a: Maintenance | undefined, b: Maintenance | undefined): boolean {
  if (!a || !b) return a === b;
  return a.since === b.since && a.message === b.message && a.retryAfter === b.retryAfter &&
    a.allow.join() === b.allow.join() && a.custom === b.custom && a.page.length === b.page.length &&
    a.page.every((byte, i) => byte === b.page[i]);
}

/** A change of an app's maintenance in words, for the proxy's log; undefined when nothing changed. */
export function maintenanceChange(before: Maintenance | undefined, after: Maintenance | undefined): string | undefined {
  if (before === after) return undefined;
  if (!after) return "maintenance off: requests go to the app again";
  const page = after.custom ? `the release's ${MAINTENANCE_PAGE}` : "the built-in page";
  const line = `${describeMaintenance(after)}; requests get 503 with ${page}`;
  if (!before) return line.replace(/^maintenance/, "in maintenance");
  const same = describeMaintenance(before) === describeMaintenance(after) && before.custom === after.custom;
  return same ? `maintenance page changed (${page})` : line.replace(/^maintenance/, "maintenance changed:");
}
