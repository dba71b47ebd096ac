/**
 * The fleet alerts' memory of what was last seen (./alerts.ts moves it on after each cycle), kept
 * in `<home>/data/alerts.json`: its shape (version 2: the rules' states added), and reading it
 * back as hostile input (a version 1 file is read as one without rule states; rule states that
 * are not well-formed are dropped; an unreadable file is a fresh start).
 * @module
 */
import { readTextOrUndefined } from "../fsutil.ts";
import { forTerminal } from "../terminal.ts";
import { type Rule, type RuleMemory, SEVERITIES } from "./rules.ts";

/** What the alerter knows of a server. */
export interface ServerMemory {
  /** Whether a pull of it ever worked. */
  reached: boolean;
  /** Failed cycles in a row (those under hold not counted). */
  failures: number;
  /** The start of the first of those cycles. */
  since?: string;
  /** An `unreachable` notice went out: its first good pull sends `back`. */
  alerted: boolean;
  /** Its last pull went over the collector's limits (an `over_limit` notice went out). */
  limited?: boolean;
}

/** What the alerter last saw: the transitions are computed against it. */
export interface AlertMemory {
  version: 2;
  /** Each app's last known health (`server/app`): null when its status.json does not say. */
  apps: Record<string, boolean | null>;
  servers: Record<string, ServerMemory>;
  /** Whether each certificate (`server/app`) was last seen at risk (and alerted). */
  certificates?: Record<string, boolean>;
  /** Since when each certificate has been as `certificates` says (ISO). */
  certificateSince?: Record<string, string>;
  /** The newest deployments row already considered. */
  deployment?: number;
  /** Each rule's states by subject (./rules.ts). */
  rules?: RuleMemory;
  /** The rules (certificate aside) as they were when `rules` was judged, by name. */
  ruleDefs?: Record<string, Rule>;
  /** Each server's latest metrics sample already judged by the rules (its ts). */
  judged?: Record<string, number>;
  /** `false`: no target took `rule_firing` notices in the run that saved this memory. */
  targeted?: false;
}

/**
 * The memory kept at `path`: undefined when absent or unreadable (a fresh start; unreadable, `log`
 * is told so in one line: everything failing now alerts again).
 */
export async function readMemory(
  path: string,
  log: (line: string) => void = console.log,
): Promise<AlertMemory | undefined> {
  try {
    const text = await readTextOrUndefined(path);
    return text ? parseMemory(text) : undefined;
  } catch (error) {
    const why = forTerminal(error instanceof Error ? error.message : String(error), { oneLine: true });
    log(`! ${path} was unreadable (${why}): alert states start afresh`);
    return undefined;
  }
}

/**
 * A memory file's content; throws, saying why, when it is not one. Version 1 (before rules) is
 * read as version 2 without rule states; rule states that are not well-formed are dropped (a
 * fresh start for the rules only).
 */
function parseMemory(text: string): AlertMemory {
  const fail = (why: string): never => {
    throw new Error(why);
  };
  const value = JSON.parse(text);
  const record = (v: unknown) => typeof v === "object" && v !== null && !Array.isArray(v);
  if (!record(value) || (value.version !== 1 && value.version !== 2)) {
    return fail("not an alert memory, version 1 or 2");
  }
  if (!record(value.apps) || !record(value.servers)) return fail("no apps or servers");
  value.version = 2;
  const all = (v: unknown, ok: (x: unknown) => boolean) => record(v) && Object.values(v as object).every(ok);
  if (value.rules !== undefined && !validRules(value.rules)) delete value.rules;
  if (value.ruleDefs !== undefined && !all(value.ruleDefs, validRuleDef)) delete value.ruleDefs;
  if (value.judged !== undefined && !all(value.judged, Number.isFinite)) delete value.judged;
  if (value.certificateSince !== undefined && !all(value.certificateSince, (v) => typeof v === "string")) {
    delete value.certificateSince;
  }
  if (value.deployment !== undefined && !Number.isInteger(value.deployment)) return fail("a bad deployment");
  if (
    value.certificates !== undefined &&
    (!record(value.certificates) || Object.values(value.certificates).some((v) => typeof v !== "boolean"))
  ) return fail("bad certificates");
  for (const server of Object.values(value.servers) as ServerMemory[]) {
    if (!record(server) || !Number.isInteger(server.failures) || typeof server.reached !== "boolean") {
      return fail("a bad server");
    }
  }
  return value as AlertMemory;
}

/** A rule kept in the memory, well-formed enough for its recovery notice (./alert_notices.ts ruleNotice). */
function validRuleDef(rule: unknown): boolean {
  if (typeof rule !== "object" || rule === null) return false;
  const r = rule as Record<string, unknown>;
  const number = (v: unknown) => typeof v === "number" && Number.isFinite(v);
  const kinds: Record<string, boolean> = {
    threshold: typeof r.metric === "string" && (r.op === "above" || r.op === "below") && number(r.threshold) &&
      number(r.withinMs) && (r.margin === undefined || number(r.margin)),
    log: typeof r.query === "string" && number(r.atLeast) && number(r.withinMs),
    cron: r.job === undefined || typeof r.job === "string",
  };
  return typeof r.name === "string" && (SEVERITIES as readonly unknown[]).includes(r.severity) &&
    number(r.forCycles) && kinds[r.kind as string] === true;
}

function validRules(rules: unknown): boolean {
  const record = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
  if (!record(rules)) return false;
  return Object.values(rules).every((states) =>
    record(states) &&
    Object.values(states).every((s) =>
      record(s) && record(s.subject) && typeof s.subject.server === "string" &&
      ["ok", "pending", "firing"].includes(s.state as string) && Number.isInteger(s.count) &&
      typeof s.since === "string" && (s.absent === undefined || Number.isInteger(s.absent))
    )
  );
}
