/**
 * The canary split as the proxy applies it: which side (stable or canary) a request goes to, the
 * cookie that keeps a client on its side, and the per-side figures the deploy engine judges.
 *
 * - An app's route (./table.ts) gets a {@link Canary} while its canary.json (./canary_file.ts) is
 *   loaded and valid: the stable route itself (route.json's target) and a *variant* of it with the
 *   canary's target and slot (so metrics count each side under its own slot), both pointing to the
 *   same {@link Canary}.
 * - A client's bucket (0..9999) is its `dp_canary` cookie when that is a whole number from 0 to
 *   9999, else FNV-1a of its address as the proxy knows it (`clientIp`, as the access log and the
 *   maintenance allow list). Buckets below `percent * 100` go to the canary, so a client on the
 *   canary at 5 % stays on it at 25 %. A request without a valid cookie is answered with
 *   `Set-Cookie: dp_canary=<bucket>` (Route.setCookie, on a per-request copy of its side), so the
 *   client keeps its side when its address changes.
 * - Figures ({@link SideStats}) are counted for apps with a canary only, from when the proxy loaded
 *   the canary; a new target (either side's) starts them again, a new percent does not. Each
 *   request counts at its answer's head ({@link measureSide}) on HTTP/1.1 and HTTP/2 alike, so a
 *   download, a stream or a WebSocket's session is no latency (a 101 is counted, not timed).
 * - A canary.json that cannot apply leaves the app on its stable target with the reason on its
 *   route (`canaryProblem`, ./table.ts), which the control op `canary` returns with `stats: null`.
 *
 * Apps without a canary never reach this module per request: `route.canary` is undefined.
 * @module
 */
import { canaryPath, type CanarySplit, readCanary } from "./canary_file.ts";
import { type CanaryStats, countRequest, emptySide, type SideStats } from "./canary_stats.ts";
import { type Client, clientIp, type HeaderSource } from "./forward.ts";
import { ifExists } from "../fsutil.ts";
import { describeTarget, type Route, type RouteTarget, targetPorts } from "./routes.ts";

/** The cookie that keeps a client on its side. */
export const CANARY_COOKIE = "dp_canary";
/** Buckets: 0 to BUCKETS - 1. */
export const BUCKETS = 10_000;
/** The cookie's attributes after its value. */
const COOKIE_ATTRIBUTES = "; Path=/; Max-Age=86400; HttpOnly; SameSite=Lax";
const COOKIE_PREFIX = `${CANARY_COOKIE}=`;

/** A running canary as the proxy has it, shared by the stable route and its canary variant. */
export interface Canary {
  readonly split: CanarySplit;
  /** Buckets below this go to the canary: `percent * 100`. */
  readonly threshold: number;
  /** The stable side: the app's route in the table. */
  readonly stable: Route;
  /** The canary side: the route with the canary's target and slot. */
  readonly variant: Route;
  /** Figures since the proxy loaded the canary. */
  readonly stats: { readonly stable: SideStats; readonly canary: SideStats };
}

/** Throws when a file must not be trusted (see ./table.ts). */
type TrustCheck = (path: string) => Promise<void>;

/**
 * The canary split of the app in `appDir`, or undefined when none runs. Throws when canary.json
 * is not trusted (route.json's rules) or not valid.
 */
export async function loadCanarySplit(appDir: string, trust: TrustCheck): Promise<CanarySplit | undefined> {
  const path = canaryPath(appDir);
  if (!(await ifExists(Deno.lstat(path)))) return undefined;
  await trust(path);
  return await readCanary(appDir);
}

/** The fix said with a refused canary.json. */
const REFUSED_FIX = " (fix: a deploy with `canary:` writes it naming the new release's slot and its port in " +
  "config.yml's `slots`; remove it to end the canary)";

/**
 * `route` with `split` applied (a {@link Canary} on it and on its variant), or why the split
 * cannot apply (no stable target, the canary's target is the stable one or shares a port with
 * it, or, when config.yml has `slots`, the target lacks the port of the slot canary.json names).
 * The figures of `before` (the app's route until now) go on when neither side's target nor slot
 * changed.
 */
export function withCanary(
  route: Route,
  split: CanarySplit,
  before: Route | undefined,
  slots?: Readonly<Record<string, number>>,
): Route | { problem: string } {
  const refused = (why: string) => ({ problem: `canary.json is ignored: ${why}${REFUSED_FIX}` });
  const stableTarget = route.target;
  if (!stableTarget) return refused("the app has no route.json (no stable release) yet");
  if (sameTarget(stableTarget, split.target)) {
    return refused(`its target is route.json's (${describeTarget(stableTarget)})`);
  }
  const stablePorts = targetPorts(stableTarget);
  const canaryPorts = targetPorts(split.target);
  const shared = canaryPorts.find((port) => stablePorts.includes(port));
  if (shared !== undefined) return refused(`its target shares port ${shared} with route.json's`);
  if (slots) {
    const port = Object.hasOwn(slots, split.slot) ? slots[split.slot] : undefined;
    if (port === undefined) {
      return refused(`config.yml's slots have no slot "${split.slot}" (${Object.keys(slots).join(", ")})`);
    }
    if (!canaryPorts.includes(port)) {
      return refused(
        `its target (${describeTarget(split.target)}) is not slot "${split.slot}" (port ${port} in config.yml's slots)`,
      );
    }
  }
  const stableSlot = route.slot ?? "-";
  const old = before?.canary;
  const keep = old && sameTarget(old.stable.target, stableTarget) && old.stats.stable.slot === stableSlot &&
    sameTarget(old.split.target, split.target) && old.split.slot === split.slot;
  const stats = keep ? old.stats : { stable: emptySide(stableSlot), canary: emptySide(split.slot) };
  const canary = { split, threshold: split.percent * 100, stats } as { -readonly [K in keyof Canary]: Canary[K] };
  const stable: Route = { ...route, canary };
  canary.stable = stable;
  canary.variant = { ...stable, target: split.target, slot: split.slot };
  return stable;
}

function sameTarget(a: RouteTarget | undefined, b: RouteTarget | undefined): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * The side a request of an app with a canary goes to: the canary's variant or the stable route
 * as they are (the client sent a valid cookie), or a copy of one with `setCookie` set.
 */
export function chooseSide(canary: Canary, headers?: HeaderSource, client?: Client): Route {
  if (!headers || !client) return canary.stable;
  let bucket = cookieBucket(headers.get("cookie"));
  if (bucket >= 0) return bucket < canary.threshold ? canary.variant : canary.stable;
  bucket = addressBucket(clientIp(headers, client));
  const side = bucket < canary.threshold ? canary.variant : canary.stable;
  return { ...side, setCookie: COOKIE_PREFIX + bucket + COOKIE_ATTRIBUTES };
}

/**
 * The bucket a `Cookie` header names: the first `dp_canary` cookie's value when it is a whole
 * number from 0 to 9999 (at most 4 digits), else -1 (none, or a value that is not one: too long,
 * negative, quoted, not a number).
 */
export function cookieBucket(header: string | null): number {
  if (header === null) return -1;
  let at = header.indexOf(COOKIE_PREFIX);
  while (at > 0 && !isSeparator(header.charCodeAt(at - 1))) at = header.indexOf(COOKIE_PREFIX, at + 1);
  if (at < 0) return -1;
  let value = 0;
  let i = at + COOKIE_PREFIX.length;
  const start = i;
  for (; i < header.length; i++) {
    const c = header.charCodeAt(i);
    if (c < 48 || c > 57) break;
    value = value * 10 + (c - 48);
  }
  if (i === start || i - start > 4) return -1;
  while (i < header.length && isBlank(header.charCodeAt(i))) i++;
  if (i < header.length && header.charCodeAt(i) !== 59 && header.charCodeAt(i) !== 44) return -1;
  return value;
}

/** Before a cookie's name: `;`, `,` (cookies joined from several fields), space or tab. */
function isSeparator(c: number): boolean {
  return c === 59 || c === 44 || isBlank(c);
}

function isBlank(c: number): boolean {
  return c === 32 || c === 9;
}

/** The bucket of a client address: FNV-1a (32 bits) of its text, modulo {@link BUCKETS}. */
export function addressBucket(ip: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < ip.length; i++) {
    hash ^= ip.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return (hash >>> 0) % BUCKETS;
}

/** Ends a measured request: its status and body bytes (as ./metrics.ts's `EndRequest`). */
type EndRequest = (status: number, bytesIn: number, bytesOut: number) => void;

/**
 * A canary request's end ({@link EndRequest}), with {@link SideEnd.head}: its answer's head came
 * (or was sent), which is when its side's figures count it.
 */
export interface SideEnd extends EndRequest {
  head(status: number): void;
}

/**
 * Measures a request of an app with a canary: `measure`'s (the proxy's metrics, under the side's
 * slot, as for any app) and its side's figures. The figures count it once, at the first of
 * {@link SideEnd.head} (the app's answer head, on HTTP/1.1 ./h1.ts) and its end (the handler's
 * HTTP/2 path ends at the head; the proxy's own answers, a 502, at their end), so a long body or
 * a WebSocket's session is no latency. Calls after the first of each do nothing.
 */
export function measureSide(
  canary: Canary,
  route: Route,
  measure: ((app: string, slot: string) => EndRequest) | undefined,
  now: () => number = Date.now,
): SideEnd {
  const end = measure?.(route.app, route.slot ?? "-");
  const side = route.target === canary.variant.target ? canary.stats.canary : canary.stats.stable;
  const started = now();
  let counted = false;
  let ended = false;
  const head = (status: number) => {
    if (counted) return;
    counted = true;
    countRequest(side, Math.max(0, now() - started), status);
  };
  const done = ((status, bytesIn, bytesOut) => {
    if (ended) return;
    ended = true;
    end?.(status, bytesIn, bytesOut);
    head(status);
  }) as SideEnd;
  done.head = head;
  return done;
}

/** The head of the answer to a request `measureSide` measures came: `done` is its {@link SideEnd}. */
export function headSent(done: EndRequest | undefined, status: number): void {
  (done as SideEnd | undefined)?.head(status);
}

/** The figures of an app's canary for the control op `canary`: null when the app has none. */
export function canaryStats(route: Route | undefined): CanaryStats | null {
  const canary = route?.canary;
  if (!canary) return null;
  const copy = (side: SideStats): SideStats => ({ ...side, histogram: [...side.histogram] });
  return {
    percent: canary.split.percent,
    since: canary.split.since,
    stable: copy(canary.stats.stable),
    canary: copy(canary.stats.canary),
  };
}

/** A canary in words: `canary: 25 % of clients → 127.0.0.1:41002 (green)`. */
export function describeCanary(canary: Canary | undefined): string {
  if (!canary) return "no canary";
  return `canary: ${canary.split.percent} % of clients → ${describeTarget(canary.split.target)} (${canary.split.slot})`;
}

/** A change of an app's canary in words, for the proxy's log; undefined when nothing changed. */
export function canaryChange(before: Canary | undefined, after: Canary | undefined): string | undefined {
  const [was, is] = [describeCanary(before), describeCanary(after)];
  if (was === is) return undefined;
  if (!after) return "canary ended: every request goes to the stable target";
  return before && before.stats !== after.stats ? `${is} (figures start again)` : is;
}
