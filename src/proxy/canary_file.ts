/**
 * The canary split's file, shared by the deploy engine (which writes it) and the proxy (which
 * reads it with the routes). Light on purpose, like ./routes.ts: no YAML or zod.
 *
 * `<appDir>/canary.json` exists only while a canary runs; route.json keeps naming the stable
 * (old) target, and requests whose client bucket (0..9999) is below `percent * 100` go to the
 * canary's target instead (./canary.ts):
 *
 *     {"target": {"port": 41002}, "slot": "green", "percent": 25, "since": "2026-12-03T15:00:00.000Z"}
 *
 * Written atomically; removed when the canary is promoted (route.json names the new target) or
 * reverted. The proxy reads it on `reload` and every 2 s, with route.json's trust rules.
 * @module
 */
import { join } from "node:path";
import { DeployParadigmError } from "../errors.ts";
import { ifExists } from "../fsutil.ts";
import { parseRouteTarget, readJsonFile, type RouteTarget, writeJsonFile } from "./routes.ts";

/** The file in the app's directory that holds its canary split, while one runs. */
export const CANARY_FILE = "canary.json";

/** A slot name: lowercase letters, digits and dashes (blue, green). */
const SLOT_PATTERN = /^[a-z][a-z0-9-]{0,31}$/;

/** A running canary: the share of requests that goes to its target. */
export interface CanarySplit {
  /** Where the canary's requests go (the new release's slot). */
  target: RouteTarget;
  /** The slot `target` belongs to (blue, green): the proxy's metrics and statistics count under it. */
  slot: string;
  /** The share of clients sent to `target`, in percent: 0 < percent < 100 (may be fractional). */
  percent: number;
  /** When the canary began (ISO 8601); kept when the percent changes. */
  since: string;
}

/**
 * Validates canary.json's content. Throws {@link DeployParadigmError} naming `source` and what
 * is wrong when it is not a valid split.
 */
export function parseCanary(value: unknown, source: string = CANARY_FILE): CanarySplit {
  const fail = (why: string): never => {
    throw new DeployParadigmError(`${source}: ${why}`, {
      suggestion: "it is written by a deploy with `canary:` in deploy.yml; it must be " +
        '{"target": {"port": <port>}, "slot": "blue"|"green", "percent": <more than 0, less than 100>, ' +
        '"since": "<ISO time>"}; remove the file to send every request to the stable release',
    });
  };
  if (value === null || typeof value !== "object" || Array.isArray(value)) return fail("not a JSON object");
  const record = value as Record<string, unknown>;
  const unknown = Object.keys(record).filter((key) => !["target", "slot", "percent", "since"].includes(key));
  if (unknown.length) return fail(`unknown key ${unknown.map((key) => JSON.stringify(key)).join(", ")}`);
  const { target, slot, percent, since } = record;
  if (target === undefined) return fail('"target" is missing');
  const valid = parseRouteTarget(target, `${source}: "target"`);
  if (typeof slot !== "string" || !SLOT_PATTERN.test(slot)) {
    return fail(`"slot" must be a slot name such as "green" (got ${JSON.stringify(slot)})`);
  }
  if (typeof percent !== "number" || !Number.isFinite(percent) || percent <= 0 || percent >= 100) {
    return fail(`"percent" must be a number more than 0 and less than 100 (got ${JSON.stringify(percent)})`);
  }
  if (typeof since !== "string" || Number.isNaN(Date.parse(since))) {
    return fail(`"since" must be a time such as "2026-12-03T15:00:00Z" (got ${JSON.stringify(since)})`);
  }
  return { target: valid, slot, percent, since };
}

/** `<appDir>/canary.json`. */
export function canaryPath(appDir: string): string {
  return join(appDir, CANARY_FILE);
}

/** The app's canary split, or undefined when none runs (no canary.json). Throws when the file is not valid. */
export function readCanary(appDir: string): Promise<CanarySplit | undefined> {
  return readJsonFile(canaryPath(appDir), parseCanary);
}

/** Starts or changes the app's canary: canary.json (validated first) replaced atomically. */
export function writeCanary(appDir: string, split: CanarySplit): Promise<void> {
  return writeJsonFile(canaryPath(appDir), split, parseCanary);
}

/** Ends the app's canary (every request to route.json's target after the proxy's reload); no error when none runs. */
export async function removeCanary(appDir: string): Promise<void> {
  await ifExists(Deno.remove(canaryPath(appDir)));
}
