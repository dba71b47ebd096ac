/**
 * `deploy-paradigm fleet alerts [--json]`: the alert rules of the fleet config and where each
 * stands for each subject, read from the alert memory the collector keeps (./alerts.ts), and how
 * the config's rules differ from those it last judged. The other fleet actions: ./cli.ts.
 * @module
 */
import { forTerminal, jsonForTerminal } from "../terminal.ts";
import { readMemory } from "./alert_memory.ts";
import { Alerter } from "./alerts.ts";
import { subjectLabel } from "./alert_notices.ts";
import { type FleetOptions, readConfig } from "./cli.ts";
import { fleetPaths } from "./config.ts";
import { type Rule, ruleUnit } from "./rules.ts";
import { comparedTo, describeRule, formatValue } from "./rule_text.ts";

/** A server's text on one line of the terminal. */
const safe = (text: string) => forTerminal(text, { oneLine: true });

/**
 * `fleet alerts [--json]`: each alert rule and where it stands for each subject (firing, pending
 * or ok, since when, the last value), from the alert memory the collector keeps; a line first when
 * the config's rules are not those the collector last judged (a running `fleet` reads them when it
 * starts). A bad config is refused as by the other commands; nothing is written.
 */
export async function listAlerts(options: FleetOptions & { json?: boolean }): Promise<number> {
  const paths = fleetPaths();
  const { configPath, config } = await readConfig(options, paths);
  const memory = await readMemory(paths.alerts, console.error);
  const changed = rulesChanged(config.rules, memory?.ruleDefs ?? (await judgedNone(paths, memory) ? {} : undefined));
  if (changed) {
    (options.json ? console.error : console.log)(
      `! the rules in ${configPath} are not those last judged (${changed}): the collector reads them when it ` +
        "starts: restart `fleet` after editing them",
    );
  }
  const alerter = new Alerter([], {
    memory,
    rules: config.rules,
    servers: config.servers.map((server) => server.name),
  });
  const states = alerter.ruleStates();
  /** A rule edited since it was judged: its states are the old condition's, said beside the new one. */
  const condition = (rule: Rule) => {
    const judged = memory?.ruleDefs?.[rule.name];
    return judged && !sameRule(rule, judged)
      ? `${describeRule(judged)} (as judged; the config now says ${describeRule(rule)})`
      : describeRule(rule);
  };
  const rules = config.rules.map((rule) => ({
    name: rule.name,
    kind: rule.kind,
    severity: rule.severity,
    condition: condition(rule),
    subjects: states.filter((state) => state.rule === rule).map(({ subject, state, since, value }) => ({
      ...subject,
      state,
      since: since || undefined,
      value,
      valueText: value === undefined || rule.kind === "cron"
        ? undefined
        : formatValue(value, ruleUnit(rule), comparedTo(rule)),
    })),
  }));
  if (options.json) {
    console.log(jsonForTerminal({ rules }, 2));
    return 0;
  }
  if (!rules.length) {
    console.log(
      `No alert rules in ${configPath}. Add some, e.g.:\n` +
        "rules:\n  - { metric: disk.used_percent, above: 90, for: 2 cycles }\n" +
        "  - { query: '\"Traceback\" OR FATAL', atLeast: 5, within: 5m }",
    );
    return 0;
  }
  const order = { firing: 0, pending: 1, ok: 2 };
  const table = [["RULE", "SEVERITY", "SUBJECT", "STATE", "SINCE (UTC)", "VALUE", "CONDITION"]];
  for (const rule of rules) {
    const subjects = [...rule.subjects].sort((a, b) => order[a.state] - order[b.state]);
    if (!subjects.length) table.push([safe(rule.name), rule.severity, "-", "no data", "-", "-", safe(rule.condition)]);
    for (const subject of subjects) {
      table.push([
        safe(rule.name),
        rule.severity,
        safe(subjectLabel(subject)),
        subject.state === "firing" ? "FIRING" : subject.state,
        subject.since ?? "-",
        subject.valueText ?? "-",
        safe(rule.condition),
      ]);
    }
  }
  const widths = table[0].map((_, i) => Math.max(...table.map((row) => row[i].length)));
  for (const row of table) console.log(row.map((cell, i) => cell.padEnd(widths[i])).join("  ").trimEnd());
  return 0;
}

/**
 * Whether the collector judged without any rules: it ran (its memory is there, or its database)
 * but kept no rule (a cycle without rules keeps none, and writes no memory without alert targets).
 */
async function judgedNone(paths: ReturnType<typeof fleetPaths>, memory: unknown): Promise<boolean> {
  return memory !== undefined || await Deno.stat(paths.db).then(() => true, () => false);
}

/**
 * How the config's rules differ from those the collector last judged (`ruleDefs` of its memory;
 * certificate rules are not kept there): `added x; removed y; changed z`, or undefined when they
 * do not (or nothing was judged yet).
 */
export function rulesChanged(rules: readonly Rule[], judged: Record<string, Rule> | undefined): string | undefined {
  if (!judged) return undefined;
  const now = new Map(rules.filter((rule) => rule.kind !== "certificate").map((rule) => [rule.name, rule]));
  const names = (list: string[]) => list.map((name) => JSON.stringify(name)).join(", ");
  const parts = [
    ["added", [...now.keys()].filter((name) => !(name in judged))],
    ["removed", Object.keys(judged).filter((name) => !now.has(name))],
    ["changed", [...now].filter(([name, rule]) => name in judged && !sameRule(rule, judged[name])).map(([n]) => n)],
  ] as const;
  const said = parts.filter(([, list]) => list.length).map(([what, list]) => `${what} ${names([...list])}`);
  return said.length ? safe(said.join("; ")) : undefined;
}

/** Whether two rules say the same (as kept in JSON: undefined keys left out, in any order). */
function sameRule(a: Rule, b: Rule): boolean {
  const canonical = (rule: Rule) =>
    JSON.stringify(Object.entries(JSON.parse(JSON.stringify(rule))).sort(([x], [y]) => x < y ? -1 : 1));
  return canonical(a) === canonical(b);
}
