/**
 * Alert rules (`rules:` in the fleet config, ./config.ts): what each rule watches and the state
 * machine that turns what was observed in each cycle into transitions, pure (inputs in,
 * transitions out; the inputs are gathered by ./rule_inputs.ts, the notices said by
 * ./alert_notices.ts, the memory kept by ./alerts.ts).
 *
 * Per rule and per subject (a server, a server's mount, a server's app, a server's app's cron
 * job), with hysteresis: a subject fires once after its condition held `for` consecutive
 * evaluations (`pending` meanwhile), and recovers once only after it has been clear for the same
 * count, where clear is stricter than "not firing": a threshold must go back past a margin
 * ({@link margin}: above 90 % recovers below 85.5 %), a log pattern must fall under half of
 * `atLeast` in its window. A subject not observed in a cycle (its server unreachable, too few
 * requests to judge) keeps its state as it is: no recovery from missing data. A subject that is
 * gone (absent from {@link GONE_AFTER} observations of its server in a row: a mount unmounted, an
 * app removed, its server removed from the config) is forgotten, and if it was firing its recovery
 * is sent once, saying why; so is a firing subject's of a rule removed from the config (an edited
 * rule without `name:` is another rule: the old one recovers, the new one judges afresh).
 * Certificates are judged by ./alerts.ts (the certificate rule sets its `days`). Rules and values
 * in words (names, conditions, values with their unit): ./rule_text.ts.
 * @module
 */

/** How a threshold metric is observed: per server, per mounted filesystem, or per app. */
export type MetricScope = "server" | "mount" | "app";

/** The metrics a threshold rule can watch, with their scope and unit (names from ./server_metrics.ts). */
export const RULE_METRICS: Record<string, { scope: MetricScope; unit: Unit }> = {
  "cpu.percent": { scope: "server", unit: "%" },
  "load.1": { scope: "server", unit: "" },
  "load.5": { scope: "server", unit: "" },
  "load.15": { scope: "server", unit: "" },
  "load.per_core": { scope: "server", unit: "" },
  "memory.used_percent": { scope: "server", unit: "%" },
  "swap.used_percent": { scope: "server", unit: "%" },
  "net.rx_bytes_per_s": { scope: "server", unit: "B/s" },
  "net.tx_bytes_per_s": { scope: "server", unit: "B/s" },
  "uptime.seconds": { scope: "server", unit: "s" },
  "disk.used_percent": { scope: "mount", unit: "%" },
  "disk.inodes_used_percent": { scope: "mount", unit: "%" },
  /** 5xx share of the requests in the rule's `within` window, in percent (0-100); `app.error_rate` elsewhere is 0-1. */
  "app.error_percent": { scope: "app", unit: "%" },
  /** The 95th percentile latency over the window. */
  "app.p95_ms": { scope: "app", unit: "ms" },
  /** Requests per minute over the window (e.g. `below: 1`: traffic stopped). */
  "app.requests": { scope: "app", unit: "/min" },
};

/** Names a rule does not take, with what to write instead (./rule_config.ts says so). */
export const RULE_METRIC_HINTS: Record<string, string> = {
  "app.error_rate": 'did you mean "app.error_percent" (percent of responses that were 5xx, 0-100)? ' +
    "Rules take the 5xx share in percent: above: 5 is 5 %",
};

/** A value's unit, for notices. */
export type Unit = "%" | "" | "B/s" | "s" | "ms" | "/min" | "lines";

/** `info`, `warning` (default) or `critical`: passed along in the notice. */
export const SEVERITIES = ["info", "warning", "critical"] as const;
export type Severity = typeof SEVERITIES[number];

interface RuleBase {
  /** Unique; derived from the rule when not given (see ruleName in ./rule_text.ts). */
  name: string;
  severity: Severity;
  /** Only this server (a configured one). */
  server?: string;
  /** Only this app. */
  app?: string;
  /** Consecutive evaluations to fire, and to recover. */
  forCycles: number;
}

/** `{ metric: disk.used_percent, above: 90, for: 2 cycles }`. */
export interface ThresholdRule extends RuleBase {
  kind: "threshold";
  metric: string;
  op: "above" | "below";
  threshold: number;
  /** How far back past the threshold a value must go to recover (default {@link margin}). */
  margin?: number;
  /** Only this mount point (disk.* metrics). */
  mount?: string;
  /** app.* metrics: the window of requests judged, in ms (default 5 minutes). */
  withinMs: number;
  /** app.* metrics: fewer requests in the window are not judged (default 20). */
  minRequests: number;
}

/** `{ query: '"Traceback" OR FATAL', app: api, atLeast: 5, within: 5m }`. */
export interface LogRule extends RuleBase {
  kind: "log";
  /** FTS5 syntax, as the fleet's search (./log_queries.ts). */
  query: string;
  atLeast: number;
  withinMs: number;
}

/** `{ certificate: expiring, days: 14 }`: judged by ./alerts.ts. */
export interface CertificateRule extends RuleBase {
  kind: "certificate";
  days: number;
}

/**
 * `{ cron: failed }`: a cron job whose last run failed (or timed out). Its observations: 0 ran ok,
 * {@link CRON_FAILED}, {@link CRON_TIMED_OUT}.
 */
export interface CronRule extends RuleBase {
  kind: "cron";
  job?: string;
}

/** A cron job's last run failed (a cron rule's observation; it fires at 1 or more). */
export const CRON_FAILED = 1;
/** A cron job's last run was stopped at its timeout. */
export const CRON_TIMED_OUT = 2;

/** A validated rule (./rule_config.ts). */
export type Rule = ThresholdRule | LogRule | CertificateRule | CronRule;

/** A rule before it is named. */
export type RuleDraft =
  | Omit<ThresholdRule, "name">
  | Omit<LogRule, "name">
  | Omit<CertificateRule, "name">
  | Omit<
    CronRule,
    "name"
  >;

/** What a rule's state is about. */
export interface Subject {
  server: string;
  app?: string;
  mount?: string;
  job?: string;
}

/** One subject's value in a cycle; `null`: it exists, but there is nothing to judge (state kept). */
export interface Observation {
  subject: Subject;
  value: number | null;
}

/** Where a rule stands for one subject. */
export interface SubjectState {
  subject: Subject;
  state: "ok" | "pending" | "firing";
  /** Consecutive evaluations towards the next transition (hits while ok/pending, clears while firing). */
  count: number;
  /** When the current state began (ISO). */
  since: string;
  /** The last value observed. */
  value?: number;
  /** Observations of its server in a row without it (it is dropped at {@link GONE_AFTER}). */
  absent?: number;
  /** It fired while no target was configured (./alerts.ts): its recovery is not news either. */
  unsent?: boolean;
}

/** Every rule's states, by rule name then {@link subjectKey}. */
export type RuleMemory = Record<string, Record<string, SubjectState>>;

/** A rule that fired or recovered for a subject. */
export interface Transition {
  rule: Rule;
  subject: Subject;
  firing: boolean;
  /** The value that moved it (for an `ended` recovery: the last one observed, if any). */
  value?: number;
  /** When the state that ended began (for a recovery: when it fired). */
  since: string;
  at: string;
  /** A recovery because the subject is gone (see {@link GONE_AFTER}) or its rule was removed from the config. */
  ended?: "gone" | "removed";
}

/** Observations of a server in a row without one of its subjects after which the subject is gone. */
export const GONE_AFTER = 3;

/** Subjects per rule kept at most (a server reporting thousands of mounts is not thousands of states). */
export const MAX_SUBJECTS = 1000;

/** A subject's key in the memory. */
export function subjectKey(subject: Subject): string {
  return [subject.server, subject.app ?? "", subject.mount ?? "", subject.job ?? ""].join("\u0000");
}

/** The unit of a rule's values. */
export function ruleUnit(rule: Rule): Unit {
  return rule.kind === "threshold" ? RULE_METRICS[rule.metric]?.unit ?? "" : rule.kind === "log" ? "lines" : "";
}

/**
 * The default recovery margin of a threshold: 5 % of the threshold, and for a percentage at least
 * 2 points (above 90 → recovers below 85.5; above 20 → below 18), never more than half the way
 * to the end of the scale (a percentage stays in 0-100; a threshold of 0 has none).
 */
export function margin(rule: Pick<ThresholdRule, "metric" | "op" | "threshold" | "margin">): number {
  if (rule.margin !== undefined) return rule.margin;
  const t = Math.abs(rule.threshold);
  if (RULE_METRICS[rule.metric]?.unit !== "%") return t * 0.05;
  const room = rule.op === "above" ? rule.threshold : 100 - rule.threshold;
  return Math.max(0, Math.min(Math.max(2, t * 0.05), room / 2));
}

/** Whether `value` meets the rule's condition (fires after `for` of them in a row). */
export function fires(rule: Rule, value: number): boolean {
  switch (rule.kind) {
    case "threshold":
      return rule.op === "above" ? value > rule.threshold : value < rule.threshold;
    case "log":
      return value >= rule.atLeast;
    default:
      return value >= 1;
  }
}

/** Whether `value` is clear enough to count towards recovery. */
export function clears(rule: Rule, value: number): boolean {
  switch (rule.kind) {
    case "threshold": {
      const m = margin(rule);
      return rule.op === "above" ? value < rule.threshold - m : value > rule.threshold + m;
    }
    case "log":
      return value < rule.atLeast / 2;
    default:
      return value < 1;
  }
}

/** The value a rule recovers past, for notices and `fleet alerts` (threshold and log rules). */
export function recoveryPoint(rule: Rule): number | undefined {
  if (rule.kind === "threshold") {
    return rule.op === "above" ? rule.threshold - margin(rule) : rule.threshold + margin(rule);
  }
  if (rule.kind === "log") return rule.atLeast / 2;
  return undefined;
}

/** What {@link evaluate} is given for one cycle. */
export interface Cycle {
  /** The cycle's time (ISO). */
  at: string;
  /**
   * Each rule's observations this cycle, by rule name, and `held`: the configured servers it could
   * not observe (unreachable, no new sample), whose subjects keep their states. A rule absent here
   * observed nothing and held nothing.
   */
  observed: Map<string, { observations: Observation[]; held: ReadonlySet<string> }>;
}

/**
 * One cycle of every rule: the memory moved on (a new object; `memory` is not changed) and the
 * transitions, in the order of the rules then the observations. A subject neither observed nor
 * held counts as absent, and is dropped after {@link GONE_AFTER}; the subjects of rules no longer
 * configured are dropped at once. Either way a firing one recovers (`ended`); `previous`: the
 * rules as they were when `memory` was judged, for those notices (a rule not there ends silently).
 */
export function evaluate(
  rules: readonly Rule[],
  memory: RuleMemory,
  cycle: Cycle,
  previous: Readonly<Record<string, Rule>> = {},
): { memory: RuleMemory; transitions: Transition[] } {
  const next: RuleMemory = {};
  const transitions: Transition[] = [];
  const ended = (rule: Rule, state: SubjectState, why: "gone" | "removed") => {
    if (state.state !== "firing") return;
    const { subject, value, since } = state;
    transitions.push({ rule, subject, firing: false, value, since, at: cycle.at, ended: why });
  };
  for (const rule of rules) {
    if (rule.kind === "certificate") continue;
    const before = memory[rule.name] ?? {};
    const states: Record<string, SubjectState> = {};
    const { observations, held } = cycle.observed.get(rule.name) ?? { observations: [], held: new Set() };
    for (const { subject, value } of observations.slice(0, MAX_SUBJECTS)) {
      const key = subjectKey(subject);
      const state: SubjectState = before[key]
        ? { ...before[key], subject }
        : { subject, state: "ok", count: 0, since: cycle.at };
      delete state.absent;
      states[key] = state;
      if (value === null || !Number.isFinite(value)) continue;
      state.value = value;
      const transition = step(rule, state, value, cycle.at);
      if (transition) transitions.push(transition);
    }
    for (const [key, state] of Object.entries(before)) {
      if (key in states || Object.keys(states).length >= MAX_SUBJECTS) continue;
      const absent = (state.absent ?? 0) + (held.has(state.subject.server) ? 0 : 1);
      if (absent < GONE_AFTER) states[key] = absent ? { ...state, absent } : state;
      else ended(rule, state, "gone");
    }
    next[rule.name] = states;
  }
  const names = new Set(rules.map((rule) => rule.name));
  for (const [name, states] of Object.entries(memory)) {
    const rule = previous[name];
    if (names.has(name) || !rule) continue;
    for (const state of Object.values(states)) ended(rule, state, "removed");
  }
  return { memory: next, transitions };
}

/** Moves one subject's state by one value (in place); the transition, if there is one. */
function step(rule: Rule, state: SubjectState, value: number, at: string): Transition | undefined {
  if (state.state !== "firing") {
    if (!fires(rule, value)) {
      if (state.state === "pending") state.since = at;
      state.state = "ok";
      state.count = 0;
      return undefined;
    }
    if (state.state === "ok") state.since = at;
    state.count++;
    state.state = "pending";
    if (state.count < rule.forCycles) return undefined;
    const since = state.since;
    Object.assign(state, { state: "firing", count: 0, since: at });
    return { rule, subject: state.subject, firing: true, value, since, at };
  }
  if (!clears(rule, value)) {
    state.count = 0;
    return undefined;
  }
  state.count++;
  if (state.count < rule.forCycles) return undefined;
  const since = state.since;
  Object.assign(state, { state: "ok", count: 0, since: at });
  return { rule, subject: state.subject, firing: false, value, since, at };
}
