/**
 * The alert rules of the fleet config (`rules:` in config.yml, ./config.ts): the keys a rule
 * takes, and the checks of the rules against each other and the rest of the config (each problem
 * at its key), turning them into {@link Rule}s (what they watch and how they are judged:
 * ./rules.ts); with {@link salvage}, the rules of a config that has other problems are checked too.
 * @module
 */
import { z } from "zod";
import { parseDuration } from "../config/fields.ts";
import { NAME_PATTERN } from "../config/names.ts";
import { JOB_NAME, JOB_NAME_MAX } from "../cron/job.ts";
import { didYouMean } from "../errors.ts";
import { checkSearchQuery } from "./log_queries.ts";
import { margin, type Rule, RULE_METRIC_HINTS, RULE_METRICS, type RuleDraft, SEVERITIES } from "./rules.ts";
import { ruleName } from "./rule_text.ts";

/** The keys of a rule, each kind's own and the common ones; what a rule is, is decided in {@link checkRules}. */
export const ruleSchema = z.strictObject({
  name: z.string()
    .min(1, "must not be empty: give the rule a name, or leave name: out for one made of what it says")
    .max(100, "must be at most 100 characters")
    // deno-lint-ignore no-control-regex
    .regex(/^[^\x00-\x1f\x7f]+$/, "must be text on one line").optional(),
  severity: z.enum(SEVERITIES, { error: `must be one of ${SEVERITIES.join(", ")}` }).default("warning"),
  metric: z.string().optional(),
  above: z.number().finite().optional(),
  below: z.number().finite().optional(),
  margin: z.number().finite().min(0, "must be 0 or more (how far back past the threshold recovers)").optional(),
  for: z.union([z.number(), z.string()], { error: 'must be a count like "2 cycles" or a duration like "2m"' })
    .optional(),
  within: z.union([z.string(), z.number()]).optional(),
  minRequests: z.int({ error: "must be a whole number from 1 to 1000000" }).min(1).max(1_000_000).optional(),
  query: z.string().max(500, "must be at most 500 characters").optional(),
  atLeast: z.int({ error: "must be a whole number from 1 to 100000" }).min(1).max(100_000).optional(),
  certificate: z.literal("expiring", { error: 'must be "expiring"' }).optional(),
  days: z.int({ error: "must be a whole number of days from 1 to 365" }).min(1).max(365).optional(),
  cron: z.literal("failed", { error: 'must be "failed"' }).optional(),
  server: z.string().optional(),
  // An app's name is its directory on the server: a name it cannot have never matches.
  app: z.string().regex(
    NAME_PATTERN,
    "is not an app name: app names are 1-63 lowercase letters, digits or dashes, starting with a letter or digit",
  ).optional(),
  mount: z.string().min(1).max(4096, "must be at most 4096 characters")
    .regex(/^\//, "must be a mount point (an absolute path)").optional(),
  job: z.string().max(JOB_NAME_MAX, `must be at most ${JOB_NAME_MAX} characters (a cron job's name)`)
    .regex(JOB_NAME, "is not a cron job name: a lowercase letter, then lowercase letters, digits and -").optional(),
});
/** A rule as parsed; `refused`: the keys {@link salvage} left out, their problems said already. */
type RuleInput = z.output<typeof ruleSchema> & { refused?: readonly string[] };

/**
 * A rule of a config with other problems that does not parse (see {@link salvage}): its problems
 * are said already and it is not judged, but its name (when that parses) is taken all the same.
 */
interface Unparsed {
  unparsed: true;
  name?: string;
}

/** Which keys each kind of rule takes (beyond name, severity, server, app). */
const RULE_KEYS = {
  metric: ["metric", "above", "below", "margin", "for", "within", "minRequests", "mount"],
  query: ["query", "atLeast", "within", "for"],
  certificate: ["certificate", "days"],
  cron: ["cron", "job"],
} as const;
const RULE_KINDS = Object.keys(RULE_KEYS) as (keyof typeof RULE_KEYS)[];
const COMMON_KEYS = ["name", "severity", "server", "app"];

/** `for:` as a count of cycles: `2`, `"2 cycles"`, or a duration (`"2m"`: rounded up to whole intervals). */
function forCycles(value: number | string | undefined, intervalMs: number): number | string {
  if (value === undefined) return 1;
  const count = typeof value === "number" ? [, String(value)] : /^\s*(\d{1,4})\s*(cycles?)?\s*$/.exec(value);
  if (count) {
    const n = Number(count[1]);
    if (!Number.isInteger(n)) return `must be a whole number of cycles (got ${n})`;
    return n < 1 ? 'must be at least "1 cycle"' : n > 1000 ? "must be at most 1000 cycles" : n;
  }
  const ms = parseDuration(value);
  if (ms === undefined || ms <= 0) {
    return `must be a count like "2 cycles" or a duration like "2m" (got ${JSON.stringify(value)})`;
  }
  const cycles = Math.ceil(ms / intervalMs);
  return cycles > 1000 ? "must be at most 1000 cycles" : cycles;
}

/** A window (`within:`): a duration from `minMs` to 24 hours. */
function windowMs(value: string | number | undefined, minMs: number): number | string {
  if (value === undefined) return 5 * 60_000;
  const ms = parseDuration(value);
  if (ms === undefined) return `must be a duration like "5m" (got ${JSON.stringify(value)})`;
  if (ms < minMs || ms > 86_400_000) {
    return `must be from ${minMs / 1000}s to 24h` +
      (typeof value === "number" ? ` (got ${value}: a bare number is seconds; write "5m" for 5 minutes)` : "");
  }
  return ms;
}

/**
 * Why a threshold rule with this `margin` could never recover, or undefined when it can: it
 * recovers below `above - margin` (no rule metric is negative) or above `below + margin` (a
 * percentage is at most 100).
 */
function unreachableMargin(
  metric: string,
  op: "above" | "below",
  threshold: number,
  given: number,
  percent: boolean,
): string | undefined {
  const point = op === "above" ? threshold - given : threshold + given;
  if (op === "above" ? point > 0 : !percent || point < 100) return undefined;
  const fallback = margin({ metric, op, threshold });
  const room = op === "above" ? `under ${threshold}` : `under ${100 - threshold} (100 - ${threshold})`;
  return `can never be reached: the rule recovers once ${metric} is ${op === "above" ? "below" : "above"} ` +
    `${op === "above" ? `${threshold} - ${given}` : `${threshold} + ${given}`}, and it is never ` +
    `${op === "above" ? "negative" : "above 100"}, so a firing alert would never end; give a margin ${room}, ` +
    `or leave margin: out (${+fallback.toFixed(6)} for this threshold)`;
}

/**
 * A search hint for a query written in YAML: its `quote it: "a:b"` as the YAML to write,
 * `'"a:b"'` (YAML's own double quotes are not part of the query).
 */
function yamlQuoted(suggestion: string): string {
  return suggestion.replace(
    /quote it: (".*")$/s,
    (_, quoted: string) => `write it in single quotes: '${quoted.replaceAll("'", "''")}'`,
  );
}

/**
 * Checks the rules against each other and the rest of the config (each problem at its key) and
 * turns them into {@link Rule}s; undefined when there were problems.
 */
export function checkRules(
  config: { interval: number; servers: { name: string }[]; rules: (RuleInput | Unparsed)[] },
  ctx: z.RefinementCtx,
): Rule[] | undefined {
  let ok = true;
  /** `ref`: another key, named in the message where it says `{ref}` (src/config/load.ts). */
  const problem = (i: number, key: string | undefined, message: string, column?: number, ref?: (string | number)[]) => {
    ok = false;
    ctx.addIssue({
      code: "custom",
      path: key === undefined ? ["rules", i] : ["rules", i, key],
      message,
      ...(column === undefined && !ref ? {} : { params: { column, ref } }),
    });
  };
  const servers = config.servers.map((s) => s.name);
  const names = new Map<string, number>();
  const rules: Rule[] = [];
  /** What rule `i` says, its problems reported; undefined when it cannot be judged (its kind or threshold wrong). */
  const draftOf = (input: RuleInput, i: number): RuleDraft | undefined => {
    const given = RULE_KINDS.filter((kind) => input[kind] !== undefined);
    if (given.length !== 1) {
      if (given.length > 1) {
        problem(i, given[1], `a rule is one of metric:, query:, certificate: or cron:, not ${given.join(" and ")}`);
      } else {problem(
          i,
          undefined,
          "a rule needs one of metric: (a threshold), query: (a log pattern), certificate: expiring or cron: failed",
        );}
      return;
    }
    const kind = given[0];
    for (const key of Object.keys(input) as (keyof RuleInput)[]) {
      if (
        input[key] === undefined || key === "refused" || COMMON_KEYS.includes(key) ||
        (RULE_KEYS[kind] as readonly string[]).includes(key)
      ) continue;
      const owner = RULE_KINDS.find((k) => (RULE_KEYS[k] as readonly string[]).includes(key));
      problem(i, key, `${key}: does not apply to a ${kind}: rule${owner ? ` (it is for ${owner}: rules)` : ""}`);
    }
    if (input.server !== undefined && !servers.includes(input.server)) {
      const guess = didYouMean(input.server, servers);
      problem(
        i,
        "server",
        `no server "${input.server}" among the servers` +
          (guess ? `; did you mean "${guess}"?` : servers.length ? `; they are ${servers.join(", ")}` : ""),
      );
    }
    const cycles = forCycles(input.for, config.interval);
    if (typeof cycles === "string") problem(i, "for", cycles);
    const base = {
      severity: input.severity,
      server: input.server,
      app: input.app,
      forCycles: typeof cycles === "number" ? cycles : 1,
    };
    let rule: RuleDraft;
    if (kind === "metric") {
      const metric = input.metric!;
      const known = RULE_METRICS[metric];
      if (!known) {
        const names = Object.keys(RULE_METRICS);
        // Without its prefix (error_rate, used_percent): the metric it names, or its hint.
        const hint = RULE_METRIC_HINTS[metric] ??
          Object.entries(RULE_METRIC_HINTS).find(([name]) => name.endsWith(`.${metric}`))?.[1];
        const guess = didYouMean(metric, names) ?? names.find((name) => name.endsWith(`.${metric}`));
        problem(
          i,
          "metric",
          hint ? `"${metric}" is not a rule metric; ${hint}` : `"${metric}" is not a metric` +
            (guess ? `; did you mean "${guess}"?` : `; the metrics are ${Object.keys(RULE_METRICS).join(", ")}`),
        );
        return;
      }
      if ((input.above === undefined) === (input.below === undefined)) {
        problem(
          i,
          input.below === undefined ? "metric" : "below",
          input.below === undefined
            ? "a threshold rule needs one of above: or below: (a number)"
            : "a threshold rule takes above: or below:, not both (two rules for two thresholds)",
        );
        return;
      }
      if (input.mount !== undefined && known.scope !== "mount") problem(i, "mount", "mount: is for the disk.* metrics");
      if (input.app !== undefined && known.scope !== "app") {
        problem(i, "app", "app: is for the app.* metrics (and query: and cron: rules)");
      }
      for (const key of ["within", "minRequests"] as const) {
        if (input[key] !== undefined && known.scope !== "app") problem(i, key, `${key}: is for the app.* metrics`);
      }
      const threshold = input.above ?? input.below!;
      if (known.unit === "%" && (threshold < 0 || threshold > 100)) {
        problem(
          i,
          input.above === undefined ? "below" : "above",
          `${metric} is a percentage: the threshold must be from 0 to 100 (5 for 5 %)`,
        );
      } else if (threshold < 0) {
        // No rule metric is ever negative: above a negative number always fires, below it never does.
        problem(i, input.above === undefined ? "below" : "above", `must be 0 or more: ${metric} is never negative`);
      }
      const op = input.above === undefined ? "below" : "above";
      if (input.margin !== undefined && (op === "above" ? threshold > 0 : known.unit !== "%" || threshold < 100)) {
        const unreachable = unreachableMargin(metric, op, threshold, input.margin, known.unit === "%");
        if (unreachable) problem(i, "margin", unreachable);
      }
      const within = windowMs(input.within, 60_000);
      if (typeof within === "string") problem(i, "within", within);
      rule = {
        kind: "threshold",
        ...base,
        metric,
        op: input.above === undefined ? "below" : "above",
        threshold,
        margin: input.margin,
        mount: input.mount,
        withinMs: typeof within === "number" ? within : 0,
        minRequests: input.minRequests ?? 20,
      };
    } else if (kind === "query") {
      const query = input.query!;
      const error = checkSearchQuery(query);
      if (error) problem(i, "query", `${error.message}. ${yamlQuoted(error.suggestion ?? "")}`.trim(), error.column);
      if (input.atLeast === undefined && !input.refused?.includes("atLeast")) {
        problem(i, undefined, "a query: rule needs atLeast: (how many matching lines in the window fire it)");
      }
      const within = windowMs(input.within, 10_000);
      if (typeof within === "string") problem(i, "within", within);
      rule = {
        kind: "log",
        ...base,
        query,
        atLeast: input.atLeast ?? 1,
        withinMs: typeof within === "number" ? within : 0,
      };
    } else if (kind === "certificate") {
      if (config.rules.findIndex((r) => !("unparsed" in r) && r.certificate !== undefined) !== i) {
        problem(
          i,
          "certificate",
          "there is one certificate: rule (its days: apply to the apps it matches, 14 days to the others); " +
            "remove this one",
        );
      }
      rule = { kind: "certificate", ...base, days: input.days ?? 14 };
    } else {
      rule = { kind: "cron", ...base, job: input.job };
    }
    return rule;
  };
  config.rules.forEach((input, i) => {
    const draft = "unparsed" in input ? undefined : draftOf(input, i);
    // Every rule takes its name, one with problems too: its name:, else the default name of what it says.
    const name = input.name ?? (draft && ruleName(draft));
    if (name === undefined) return;
    const first = names.get(name);
    if (first !== undefined) {
      problem(
        i,
        input.name === undefined ? undefined : "name",
        `the rule name "${name}" is taken by {ref}: give ${
          input.name === undefined ? "one of them a name:" : "another name:"
        }`,
        undefined,
        ["rules", first],
      );
    }
    names.set(name, i);
    if (draft) rules.push({ ...draft, name } as Rule);
  });
  return ok ? rules : undefined;
}

/**
 * What can be judged of a config that has problems: its interval (else the default), its servers'
 * names, and each rule that parses once the keys with problems are left out (those are reported;
 * a rule whose kind or threshold has one is left out: it cannot be judged). The others are
 * {@link Unparsed} placeholders, not checked but for their name (their index kept: problems are
 * said at their keys).
 */
export function salvage(config: unknown): Parameters<typeof checkRules>[0] {
  const value = (config ?? {}) as Record<string, unknown>;
  const list = (v: unknown) => Array.isArray(v) ? v : [];
  const servers = list(value.servers).filter((s) => typeof s?.name === "string") as { name: string }[];
  const rules = list(value.rules).map((raw): RuleInput | Unparsed => {
    if (typeof raw !== "object" || raw === null) return { unparsed: true };
    const name = ruleSchema.shape.name.safeParse((raw as Record<string, unknown>).name);
    const unparsed: Unparsed = { unparsed: true, name: name.success ? name.data : undefined };
    const loose = ruleSchema.strip();
    const first = loose.safeParse(raw);
    if (first.success) return first.data;
    const bad = new Set(first.error.issues.map((issue) => String(issue.path[0])));
    if ([...RULE_KINDS, "above", "below", "undefined"].some((key) => bad.has(key))) return unparsed;
    const again = loose.safeParse(Object.fromEntries(Object.entries(raw).filter(([key]) => !bad.has(key))));
    return again.success ? { ...again.data, refused: [...bad] } : unparsed;
  });
  const interval = typeof value.interval === "number" ? value.interval : 30_000;
  return { interval, servers, rules };
}
