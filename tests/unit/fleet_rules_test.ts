/**
 * Alert rules: the pure state machine of ./src/fleet/rules.ts (for-count, hysteresis, one alert
 * per burst, missing data holds, a subject gone or a rule removed recovers once), the config's rule
 * schema (every problem at its file:line:column, "did you mean", app.error_rate refused for
 * app.error_percent), and the Alerter over a real SQLite store (metrics samples, request minutes
 * and FTS log lines as the collector stores them) with its memory file (version 1 read as version
 * 2): a mount held while df fails, app rules only where the app runs, a certificate rule scoped to a
 * server, the log rules' window found through the ts index.
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { cycleSummary, withStore } from "../helpers/fleet_store.ts";
import { parseConfig } from "../../src/config/load.ts";
import { ConfigError, UsageError } from "../../src/errors.ts";
import { readMemory } from "../../src/fleet/alert_memory.ts";
import { Alerter, cappedRuleNotices, MAX_RULE_NOTICES } from "../../src/fleet/alerts.ts";
import { ingestFile } from "../../src/fleet/ingest.ts";
import { FleetAlerts, ruleLines } from "../../src/fleet/fleet_alerts.ts";
import { addServer, fleetConfigSchema } from "../../src/fleet/config.ts";
import { storeRequestMinutes, storeServerSample } from "../../src/fleet/metric_store.ts";
import { countMatches, WINDOW_FIRST_LINE } from "../../src/fleet/rule_inputs.ts";
import { SEARCH_SYNTAX_HELP } from "../../src/fleet/log_queries.ts";
import type { CertificateState } from "../../src/proxy/cert_state.ts";
import type { Notice } from "../../src/notify.ts";
import { APP_METRICS, DISK_METRICS, SERVER_METRICS } from "../../src/fleet/server_metrics.ts";
import { ruleNotice } from "../../src/fleet/alert_notices.ts";
import { cycleLines } from "../../src/fleet/cli.ts";
import { rulesChanged } from "../../src/fleet/cli_alerts.ts";
import {
  CRON_FAILED,
  CRON_TIMED_OUT,
  evaluate,
  margin,
  type Observation,
  type Rule,
  RULE_METRICS,
  type RuleMemory,
  type ThresholdRule,
  type Transition,
} from "../../src/fleet/rules.ts";
import { describeRule, formatThreshold, formatValue } from "../../src/fleet/rule_text.ts";

const disk: ThresholdRule = {
  kind: "threshold",
  name: "disk",
  severity: "warning",
  metric: "disk.used_percent",
  op: "above",
  threshold: 90,
  forCycles: 2,
  withinMs: 300_000,
  minRequests: 20,
};

/**
 * Runs `rule` over cycles of observations (`null`: held, the server unreachable; "gone": its server
 * observed without it); the transitions as text (`ended` ones as `i:gone:last value`).
 */
function run(rule: Rule, cycles: (number | null | "gone")[], subject = { server: "web1", mount: "/data" }) {
  let memory: RuleMemory = {};
  const out: string[] = [];
  cycles.forEach((value, i) => {
    const observations: Observation[] = value === null || value === "gone" ? [] : [{ subject, value }];
    const held = new Set(value === null ? [subject.server] : []);
    const result = evaluate([rule], memory, {
      at: new Date(Date.UTC(2026, 0, 1, 0, i)).toISOString(),
      observed: new Map([[rule.name, { observations, held }]]),
    });
    memory = result.memory;
    for (const t of result.transitions) out.push(`${i}:${t.ended ?? (t.firing ? "fire" : "recover")}:${t.value}`);
  });
  return { out, memory };
}

Deno.test("rules: a threshold fires once after `for` cycles over it, and recovers once after as many clear past the margin", () => {
  assertEquals(margin(disk), 4.5); // above 90 % → recovers below 85.5 %
  assertEquals(run(disk, [50, 91, 50, 91, 92, 95, 99, 93]).out, ["4:fire:92"], "one cycle over, then clear: no alert");
  // Hovering around the threshold after firing does not recover: 88 and 89 are not past 85.5.
  assertEquals(run(disk, [91, 92, 88, 89, 91, 88, 80, 90, 80, 80, 95, 95]).out, [
    "1:fire:92",
    "9:recover:80",
    "11:fire:95",
  ]);
  const { memory } = run(disk, [91, 92, 80]);
  const state = Object.values(memory.disk)[0];
  assertEquals([state.state, state.count, state.value, state.subject], ["firing", 1, 80, {
    server: "web1",
    mount: "/data",
  }]);
  assertEquals(run(disk, [91]).memory.disk[Object.keys(run(disk, [91]).memory.disk)[0]].state, "pending");
  // below:, with a percentage's 2-point floor and a margin never past the scale's end.
  const low: ThresholdRule = { ...disk, metric: "memory.used_percent", op: "below", threshold: 10, forCycles: 1 };
  assertEquals(margin(low), 2);
  assertEquals(run(low, [50, 9, 11, 11.9, 12.5]).out, ["1:fire:9", "4:recover:12.5"]);
  assertEquals(margin({ ...disk, threshold: 1 }), 0.5);
  assertEquals(margin({ ...disk, metric: "load.per_core", threshold: 2 }), 0.1);
  assertEquals(margin({ ...disk, margin: 0 }), 0);
});

Deno.test("rules: an unreachable server holds its states (no recovery from missing data); a subject gone recovers once", () => {
  assertEquals(run(disk, [95, null, null, 95, 50, null, 50]).out, ["3:fire:95", "6:recover:50"]);
  // Absent from GONE_AFTER (3) observations of its server in a row: dropped, and its firing recovers once.
  const { out, memory } = run(disk, [95, 95, "gone", "gone", "gone", "gone"]);
  assertEquals([out, memory], [["1:fire:95", "4:gone:95"], { disk: {} }]);
  // Absent less than that (or held meanwhile), it is the same incident: no recovery, no second alert.
  assertEquals(run(disk, [95, 95, "gone", "gone", null, 95, 95]).out, ["1:fire:95"]);
  assertEquals(run(disk, [95, 95, "gone", "gone", 95, "gone", "gone", 95]).out, ["1:fire:95"]);
  assertEquals(run(disk, [95, "gone", "gone", "gone"]).out, [], "a pending one ends silently");
  // A value that is not a number (too few requests to judge) keeps the state as it is.
  assertEquals(run(disk, [95, 95, Number.NaN, 50, 50]).out, ["1:fire:95", "4:recover:50"]);
});

Deno.test("rules: a burst of 100 matching lines is one alert; recovery when the window falls under half of atLeast", () => {
  const log: Rule = {
    kind: "log",
    name: "tracebacks",
    severity: "critical",
    query: '"Traceback" OR FATAL',
    atLeast: 5,
    withinMs: 300_000,
    forCycles: 1,
  };
  assertEquals(run(log, [0, 100, 100, 100, 4, 3, 2, 2, 100]).out, ["1:fire:100", "6:recover:2", "8:fire:100"]);
  const cron: Rule = { kind: "cron", name: "cron", severity: "warning", forCycles: 1 };
  assertEquals(run(cron, [0, 1, 1, 0, 0], { server: "web1", app: "api", job: "backup" } as never).out, [
    "1:fire:1",
    "3:recover:0",
  ]);
  // A run stopped at its timeout fires too, and its notice says so.
  assertEquals(run(cron, [0, CRON_TIMED_OUT, 0]).out, ["1:fire:2", "2:recover:0"]);
  const job = { server: "web1", app: "api", job: "backup" };
  const notice = (value: number) =>
    ruleNotice({ rule: cron, subject: job, firing: true, value, since: "2026-01-01T00:00:00.000Z", at: "x" }).title;
  assertEquals(
    [notice(CRON_FAILED), notice(CRON_TIMED_OUT)],
    ["cron job backup of web1/api failed", "cron job backup of web1/api timed out"],
  );
});

Deno.test("rules: values are formatted with their units", () => {
  assertEquals(
    [formatValue(93.24, "%"), formatValue(1.5, ""), formatValue(340.4, "ms"), formatValue(1536, "B/s")],
    ["93.2 %", "1.5", "340 ms", "1.5 KB/s"],
  );
  assertEquals([formatValue(1, "lines"), formatValue(100, "lines"), formatValue(12, "/min")], [
    "1 line",
    "100 lines",
    "12/min",
  ]);
});

Deno.test("rules: thresholds are printed as written, values with the digits to compare them", () => {
  const rule: Rule = {
    kind: "threshold",
    name: "errors",
    severity: "warning",
    metric: "app.error_percent",
    op: "above",
    threshold: 0.05,
    withinMs: 300_000,
    minRequests: 20,
    forCycles: 1,
  };
  assertEquals(describeRule(rule), "app.error_percent above 0.05 % over 5m");
  assertEquals([formatThreshold(0.05, "%"), formatThreshold(1048576, "B/s"), formatThreshold(90 - 4.5, "%")], [
    "0.05 %",
    "1048576 B/s",
    "85.5 %",
  ]);
  assertEquals([formatValue(0.07, "%"), formatValue(0.0734, "%"), formatValue(62.5, "%")], [
    "0.07 %",
    "0.073 %",
    "62.5 %",
  ]);
  assertEquals([formatValue(50.04, "%", 50), formatValue(50.04, "%"), formatValue(49.99, "%", 50)], [
    "50.04 %",
    "50 %",
    "49.99 %",
  ]);
  assertEquals(formatValue(1.0004 * 1024 * 1024, "B/s", 1024 * 1024), "1.0004 MB/s");
  const notice = ruleNotice({
    rule,
    subject: { server: "web1", app: "api" },
    firing: true,
    value: 0.07,
    since: "2026-01-01T00:00:00.000Z",
    at: "2026-01-01T00:01:00.000Z",
  });
  assertEquals(notice.title, "web1/api: app.error_percent is 0.07 %, above 0.05 %");
  assertEquals([notice.fields.value, notice.fields.threshold], ["0.07 %", "above 0.05 %"]);
});

const SERVERS = "servers:\n  - { name: web1, host: 10.0.0.1 }\n  - { name: web2, host: 10.0.0.2 }\n";

function problems(rules: string): string[] {
  try {
    parseConfig(SERVERS + "rules:\n" + rules, fleetConfigSchema, "config.yml");
  } catch (error) {
    assert(error instanceof ConfigError, String(error));
    return error.problems;
  }
  throw new Error("the rules were accepted");
}

Deno.test("fleet config: rules are parsed with defaults, names derived, `for:` in cycles or as a duration", () => {
  const config = parseConfig(
    `interval: 30s\n${SERVERS}rules:
  - { metric: disk.used_percent, above: 90, for: 2 cycles, mount: /data }
  - { metric: load.per_core, above: 2, for: 2m, server: web2, severity: critical }
  - { metric: app.error_percent, above: 5, app: api }
  - { query: '"Traceback" OR FATAL', app: api, atLeast: 5, within: 5m }
  - { name: certs, certificate: expiring, days: 30 }
  - { cron: failed, app: api }
`,
    fleetConfigSchema,
    "config.yml",
  );
  assertEquals(config.rules.map((r) => [r.name, r.kind, r.forCycles, r.severity]), [
    ["disk.used_percent above 90 at /data", "threshold", 2, "warning"],
    ["load.per_core above 2 on web2", "threshold", 4, "critical"],
    ["app.error_percent above 5 for api", "threshold", 1, "warning"],
    ['log "Traceback" OR FATAL ×5 for api', "log", 1, "warning"],
    ["certs", "certificate", 1, "warning"],
    ["cron failed for api", "cron", 1, "warning"],
  ]);
  const errorRate = config.rules[2] as ThresholdRule;
  assertEquals([errorRate.withinMs, errorRate.minRequests], [300_000, 20]);
  assertEquals(parseConfig(SERVERS, fleetConfigSchema, "config.yml").rules, []);
});

Deno.test("fleet config: bad rules are refused with their positions, key paths and a did-you-mean", () => {
  assertEquals(problems("  - { metric: disk.usedpercent, above: 90 }\n"), [
    'config.yml:5:15: "rules.0.metric" "disk.usedpercent" is not a metric; did you mean "disk.used_percent"? ' +
    '(got "disk.usedpercent")',
  ]);
  // The charts' app.error_rate is 0-1; a rule's is in percent under another name, and the refusal says why.
  assertEquals(problems("  - { metric: app.error_rate, above: 0.05, app: api }\n"), [
    'config.yml:5:15: "rules.0.metric" "app.error_rate" is not a rule metric; did you mean "app.error_percent" ' +
    "(percent of responses that were 5xx, 0-100)? Rules take the 5xx share in percent: above: 5 is 5 % " +
    '(got "app.error_rate")',
  ]);
  // An FTS5 query SQLite cannot parse: the column of the token it names, inside the quoted value.
  const [query] = problems(`  - { query: '"Traceback" OR GET /api', atLeast: 5 }\n`);
  assertMatch(query, /^config\.yml:5:34: "rules\.0\.query" cannot search for .*fts5: syntax error near "\/"/);
  assertMatch(query, /write "GET \/api"/);
  // The keys' own types first (with them wrong, nothing else is judged) …
  assertEquals(
    problems(`  - { severity: high, metric: swap.used_percent, below: 5 }
  - { name: b, certificate: expiring, days: 0 }
  - { frequency: 3, metric: cpu.percent, above: 1 }
`),
    [
      'config.yml:5:17: "rules.0.severity" must be one of info, warning, critical (got "high")',
      'config.yml:6:45: "rules.1.days" must be a whole number of days from 1 to 365 (got 0)',
      'config.yml:7:7: "rules.2.frequency" is not a known key; known keys: name, severity, metric, above, below, ' +
      "margin, for, within, minRequests, query, atLeast, certificate, days, cron, server, app, mount, job",
    ],
  );
  // … then every rule against the others and the servers, all at once.
  assertEquals(
    problems(`  - { metric: memory.used_percent, above: 190, atLeast: 3 }
  - { cron: failed, server: web3 }
  - { metric: cpu.percent, for: soon }
  - { query: FATAL }
  - { metric: swap.used_percent, below: 5, mount: / }
  - { metric: disk.used_percent, above: 90 }
  - { metric: disk.used_percent, above: 90 }
  - { name: a, certificate: expiring }
  - { name: b, certificate: expiring, days: 20 }
  - { metric: cpu.percent, above: 90, query: x }
`),
    [
      'config.yml:5:43: "rules.0.above" memory.used_percent is a percentage: the threshold must be from 0 to 100 ' +
      "(5 for 5 %) (got 190)",
      'config.yml:5:57: "rules.0.atLeast" atLeast: does not apply to a metric: rule (it is for query: rules) (got 3)',
      'config.yml:6:29: "rules.1.server" no server "web3" among the servers; did you mean "web1"? (got "web3")',
      'config.yml:7:15: "rules.2.metric" a threshold rule needs one of above: or below: (a number) (got "cpu.percent")',
      'config.yml:7:33: "rules.2.for" must be a count like "2 cycles" or a duration like "2m" (got "soon")',
      'config.yml:8:5: "rules.3" a query: rule needs atLeast: (how many matching lines in the window fire it)',
      'config.yml:9:51: "rules.4.mount" mount: is for the disk.* metrics (got "/")',
      'config.yml:11:5: "rules.6" the rule name "disk.used_percent above 90" is taken by "rules.5" (config.yml:10:5): ' +
      "give one of them a name:",
      'config.yml:13:29: "rules.8.certificate" there is one certificate: rule (its days: apply to the apps it ' +
      'matches, 14 days to the others); remove this one (got "expiring")',
      'config.yml:14:46: "rules.9.query" a rule is one of metric:, query:, certificate: or cron:, not metric and query ' +
      '(got "x")',
    ],
  );
});

Deno.test("fleet config: every problem of the rules in one pass, even with other keys wrong; friendlier wording", () => {
  assertEquals(
    problems(`  - { severity: high, metric: cpu.percent, above: 90, mount: /, for: 0 }
  - { query: '"user_id:42', within: 5 }
  - { metric: load.1, above: -1, below: 2 }
  - { metric: load.1, above: -1 }
  - { metric: error_rate, above: 5 }
  - { metric: used_percent, above: 5 }
  - { metric: cpu.percent, above: 1.5, for: 2.5 }
interval: fast
`),
    [
      'config.yml:5:17: "rules.0.severity" must be one of info, warning, critical (got "high")',
      'config.yml:5:62: "rules.0.mount" mount: is for the disk.* metrics (got "/")',
      'config.yml:5:70: "rules.0.for" must be at least "1 cycle" (got 0)',
      'config.yml:6:5: "rules.1" a query: rule needs atLeast: (how many matching lines in the window fire it)',
      'config.yml:6:14: "rules.1.query" cannot search for "\\"user_id:42": unterminated string. A double quote ' +
      "opens a phrase that must be closed. " + SEARCH_SYNTAX_HELP +
      ` To search for the text as it is, write it in single quotes: '"""user_id:42"' (got "\\"user_id:42")`,
      'config.yml:6:37: "rules.1.within" must be from 10s to 24h (got 5: a bare number is seconds; write "5m" for 5 ' +
      "minutes)",
      'config.yml:7:41: "rules.2.below" a threshold rule takes above: or below:, not both (two rules for two ' +
      "thresholds) (got 2)",
      'config.yml:8:30: "rules.3.above" must be 0 or more: load.1 is never negative (got -1)',
      'config.yml:9:15: "rules.4.metric" "error_rate" is not a rule metric; did you mean "app.error_percent" ' +
      "(percent of responses that were 5xx, 0-100)? Rules take the 5xx share in percent: above: 5 is 5 % " +
      '(got "error_rate")',
      'config.yml:10:15: "rules.5.metric" "used_percent" is not a metric; did you mean "memory.used_percent"? ' +
      '(got "used_percent")',
      'config.yml:11:45: "rules.6.for" must be a whole number of cycles (got 2.5)',
      'config.yml:12:11: "interval" must be a duration like "500ms", "2s", "1m" or "1h" (units: ms, s, m, h) (got ' +
      '"fast")',
    ],
  );
});

Deno.test("fleet config: a key refused by its own check is not also said to be missing (atLeast: 0 is not 'needs atLeast:')", () => {
  for (const query of ["x", '"x']) {
    const said = problems(`  - { query: '${query}', atLeast: 0 }\n`);
    assert(said.some((line) => /"rules\.0\.atLeast" must be a whole number from 1 to 100000 \(got 0\)/.test(line)));
    assertEquals(said.filter((line) => /needs atLeast/.test(line)), [], said.join("\n"));
    assertEquals(said.length, query === "x" ? 1 : 2, said.join("\n"));
  }
  assertMatch(problems("  - { query: x }\n").join("\n"), /a query: rule needs atLeast:/);
});

Deno.test("fleet config: a rule with problems still takes its name: a duplicate is said at it, whatever else is wrong", () => {
  const taken = (line: number, rule: number) =>
    `config.yml:${line}:13: "rules.${rule}.name" the rule name "hot" is taken by "rules.${rule - 1}" ` +
    `(config.yml:${line - 1}:5): give another name: (got "hot")`;
  // Rules that cannot be judged: an unknown metric, two thresholds, two kinds, none.
  assertEquals(
    problems(`  - { name: hot, metric: cpu.percent, above: 90 }
  - { name: hot, metric: cpu.percnt, above: 95 }
  - { name: hot, metric: cpu.percent, above: 1, below: 2 }
  - { name: hot, query: x, cron: failed }
  - { name: hot }
`).filter((problem) => problem.includes("is taken by")),
    [taken(6, 1), taken(7, 2), taken(8, 3), taken(9, 4)],
  );
  // Rules that do not parse (a key's type wrong), the config's other problems said in the same pass.
  assertEquals(
    problems(`  - { name: hot, metric: cpu.percent, above: 90 }
  - { name: hot, metric: 5, above: 1 }
  - { name: hot, certificate: soon }
  - { name: hot, metric: load.1, above: x }
`),
    [
      taken(6, 1),
      'config.yml:6:26: "rules.1.metric" must be a string (got 5)',
      taken(7, 2),
      'config.yml:7:31: "rules.2.certificate" must be "expiring" (got "soon")',
      taken(8, 3),
      'config.yml:8:41: "rules.3.above" must be a number (got "x")',
    ],
  );
});

Deno.test("Alerter: disk, error-rate and log rules over a real store: one notice per transition, naming value and threshold", async () => {
  await withStore("dp-rules-", async (store, dir) => {
    const config = parseConfig(
      `${SERVERS}rules:
  - { metric: disk.used_percent, above: 90, for: 2 cycles }
  - { name: api 5xx, metric: app.error_percent, above: 10, app: api, within: 5m, minRequests: 10 }
  - { name: tracebacks, query: '"Traceback" OR FATAL', atLeast: 5, within: 5m }
`,
      fleetConfigSchema,
      "config.yml",
    );
    const alerter = new Alerter([], { rules: config.rules, servers: ["web1", "web2"] });
    let now = Date.UTC(2026, 0, 1, 12);
    const ledger = store.newGeneration("web1", "api/error.log", null, "00", 0);
    let offset = 0;
    const cycle = (disk: number, minute?: { requests: number; errors: number }, lines = 0, web1 = true) => {
      now += 30_000;
      if (web1) {
        storeServerSample(store, "web1", {
          counters: {},
          filesystems: [{ mount: "/", used: 40 }, { mount: "/data", used: disk }],
          missing: [],
        }, now);
      }
      if (minute) {
        storeRequestMinutes(store, "web1", "api", [{
          ts: now - (now % 60_000),
          requests: minute.requests,
          errors: minute.errors,
          other: minute.requests - minute.errors,
          p50: 10,
          p95: 40,
        }]);
      }
      const text = Array.from({ length: lines }, (_, i) => ({ offset: offset += 100, ts: now, text: `FATAL ${i}` }));
      if (lines) {
        ledger.offset = offset + 100;
        store.ingestLines(ledger, "api", "error.log", text);
      }
      return alerter.notices(cycleSummary(now, { web1, web2: false }), store).map((n) => `${n.event} ${n.title}`);
    };
    assertEquals(cycle(80), []);
    assertEquals(cycle(93), []);
    assertEquals(cycle(95, undefined, 100), [
      "rule_firing web1 /data: disk.used_percent is 95 %, above 90 % for 2 cycles",
      'rule_firing web1: 100 lines matching "Traceback" OR FATAL within 5m',
    ]);
    assertEquals(cycle(97, undefined, 3), [], "still firing: nothing");
    assertEquals(cycle(50, undefined, 0, false), [], "web1 unreachable: its states are held");
    assertEquals(cycle(50, { requests: 40, errors: 20 }), [
      "rule_firing web1/api: app.error_percent is 50 %, above 10 %",
    ]);
    assertEquals(cycle(50), [
      "rule_recovered web1 /data: disk.used_percent recovered: 50 %, below 85.5 %",
    ]);
    const notices = alerter.notices(cycleSummary(now + 400_000, { web1: true }), store);
    assertEquals(notices.map((n) => n.event), ["rule_recovered"], "the burst left the window");
    assertEquals(notices[0].fields.rule, "tracebacks");
    assertEquals(notices[0].fields.value, "0 lines");
    const states = alerter.ruleStates().map((s) =>
      `${s.rule.name} ${s.subject.server}${s.subject.mount ?? ""} ${s.state}`
    );
    assertEquals(states, [
      "disk.used_percent above 90 web1/ ok",
      "disk.used_percent above 90 web1/data ok",
      "api 5xx web1 firing",
      "tracebacks web1 ok",
    ]);

    // The memory file keeps the states for the next process; a version 1 file is read as version 2.
    const path = join(dir, "alerts.json");
    const opened = (await FleetAlerts.open({ ...config, alerts: [] }, path))!;
    await opened.after(cycleSummary(now + 430_000, { web1: true }), store);
    const saved = await readMemory(path);
    assertEquals(saved?.version, 2);
    assertEquals(Object.keys(saved?.rules ?? {}), ["disk.used_percent above 90", "api 5xx", "tracebacks"]);
    await Deno.writeTextFile(path, JSON.stringify({ version: 1, apps: { "web1/api": true }, servers: {} }));
    assertEquals(await readMemory(path), { version: 2, apps: { "web1/api": true }, servers: {} });
  });
});

Deno.test("countMatches: FTS5 over the window only, per server, bounded by app", async () => {
  await withStore("dp-rules-", (store) => {
    const now = Date.UTC(2026, 0, 1, 12);
    const files: [string, string, number][] = [["web1", "api", now - 600_000], ["web1", "api", now], [
      "web1",
      "web",
      now,
    ]];
    for (const [server, app, ts] of files) {
      const ledger = store.newGeneration(server, `${app}/error.log`, null, `${ts}`, 0);
      ledger.offset = 1000;
      store.ingestLines(ledger, app, "error.log", [
        { offset: 0, ts, text: "Traceback (most recent call last)" },
        { offset: 100, ts, text: "all fine" },
      ]);
    }
    assertEquals([...countMatches(store, '"Traceback"', undefined, now - 300_000, now + 60_000)], [["web1", 2]]);
    assertEquals([...countMatches(store, '"Traceback"', "api", now - 300_000, now + 60_000)], [["web1", 1]]);
    assertEquals([...countMatches(store, '"Traceback"', "api", now - 900_000, now + 60_000)], [["web1", 2]]);
    assertEquals([...countMatches(store, "nothing", undefined, now - 900_000, now + 60_000)], []);
  });
});

const CERT_NOW = Date.UTC(2026, 0, 1, 12);

/** An ACME certificate with `days` left at {@link CERT_NOW}. */
const cert = (days: number): CertificateState => ({
  names: ["a.test"],
  source: "acme",
  issuer: null,
  notBefore: null,
  notAfter: new Date(CERT_NOW + days * 86_400_000).toISOString(),
  lastError: null,
  lastErrorAt: null,
  nextAttemptAt: null,
});

Deno.test("Alerter: the certificate rule sets the days of the certificate alert (14 without one)", async () => {
  await withStore("dp-rules-", (store) => {
    const now = CERT_NOW;
    store.replaceCertificates("web1", new Map([["shop", cert(20)], ["blog", cert(40)]]), now);
    const titles = (alerter: Alerter) => alerter.notices(cycleSummary(now, { web1: true }), store).map((n) => n.title);
    assertEquals(titles(new Alerter([])), [], "20 days left: not within the default 14");
    const config = parseConfig(
      `${SERVERS}rules:\n  - { name: certs, certificate: expiring, days: 30, severity: critical }\n`,
      fleetConfigSchema,
      "config.yml",
    );
    const alerter = new Alerter([], { rules: config.rules, servers: ["web1", "web2"] });
    const notices = alerter.notices(cycleSummary(now, { web1: true }), store);
    assertEquals(notices.map((n) => `${n.event} ${n.title}`), [
      "certificate_expiring certificate of web1/shop expires in 20 days (2026-01-21)",
    ]);
    assertEquals([notices[0].fields.rule, notices[0].fields.severity], ["certs", "critical"]);
    assertEquals(alerter.ruleStates().map((s) => `${s.rule.name} ${s.subject.app} ${s.state}`), [
      "certs blog ok",
      "certs shop firing",
    ]);
  });
});

Deno.test("rules: every metric a rule can watch is one the collector keeps (./server_metrics.ts)", () => {
  const kept: string[] = [...SERVER_METRICS, ...DISK_METRICS, ...APP_METRICS];
  // app.error_percent is the collector's app.error_rate (0-1) in percent.
  for (const metric of Object.keys(RULE_METRICS)) {
    assert(kept.includes(metric === "app.error_percent" ? "app.error_rate" : metric), metric);
  }
});

/** A config of SERVERS with `rules` (YAML lines). */
const rulesOf = (rules: string) =>
  parseConfig(`${SERVERS}rules:${rules ? `\n${rules}` : " []\n"}`, fleetConfigSchema, "config.yml").rules;

Deno.test("Alerter: a sample whose df failed holds the mounts' states; a mount gone from 3 good samples recovers once", async () => {
  await withStore("dp-rules-", (store) => {
    const alerter = new Alerter([], {
      rules: rulesOf("  - { name: disk, metric: disk.used_percent, above: 90, for: 2 cycles }\n"),
      servers: ["web1", "web2"],
    });
    let now = Date.UTC(2026, 0, 1, 12);
    const cycle = (filesystems: { mount: string; used: number }[], missing: string[] = []) => {
      now += 30_000;
      storeServerSample(store, "web1", { counters: {}, filesystems, missing }, now);
      return alerter.notices(cycleSummary(now, { web1: true, web2: true }), store);
    };
    const titles = (notices: Notice[]) => notices.map((n) => `${n.event} ${n.title}`);
    const both = [{ mount: "/", used: 40 }, { mount: "/data", used: 95 }];
    assertEquals(titles(cycle(both)), []);
    assertEquals(titles(cycle(both)), ["rule_firing web1 /data: disk.used_percent is 95 %, above 90 % for 2 cycles"]);
    for (let i = 0; i < 4; i++) {
      assertEquals(titles(cycle([], ["no df"])), [], "df failed: its mounts are held, not gone");
    }
    assertEquals(titles(cycle(both)), [], "the same incident: no second alert");
    assertEquals(titles(cycle(both)), []);
    // /data unmounted (df worked): the same incident for 2 samples, then gone, and its recovery says so.
    const root = [{ mount: "/", used: 40 }];
    assertEquals([...titles(cycle(root)), ...titles(cycle(root))], []);
    const gone = cycle(root);
    assertEquals(titles(gone), [
      "rule_recovered web1 /data: disk.used_percent recovered: no longer reported by its server (rule disk)",
    ]);
    assertEquals(
      [gone[0].fields.mount, gone[0].fields["last value"], gone[0].fields.value, gone[0].fields.reason],
      ["/data", "95 %", undefined, "no longer reported by its server"],
    );
    assertEquals(titles(cycle(root)), []);
    assertEquals(alerter.ruleStates().map((s) => `${s.subject.mount} ${s.state}`), ["/ ok"]);
  });
});

Deno.test("Alerter: app.requests with app: is judged only on servers running the app; an app never logged is not judged", async () => {
  await withStore("dp-rules-", (store) => {
    const alerter = new Alerter([], {
      rules: rulesOf(
        "  - { name: api traffic, metric: app.requests, below: 1, app: api, within: 5m }\n" +
          "  - { name: traffic, metric: app.requests, below: 1, within: 5m }\n",
      ),
      servers: ["web1", "web2"],
    });
    let now = Date.UTC(2026, 0, 1, 12);
    const running = { status: "running", healthy: true, version: "v1" };
    store.upsertApp("web1", "api", running, now);
    store.upsertApp("web2", "worker", running, now); // no HTTP: the proxy never logs a minute of it
    const minute = { ts: now - 60_000, requests: 100, errors: 0, other: 100, p50: 5, p95: 9 };
    storeRequestMinutes(store, "web1", "api", [minute]);
    const cycle = () => alerter.notices(cycleSummary(now, { web1: true, web2: true }), store).map((n) => n.title);
    assertEquals(cycle(), [], "100 requests in the window; web2 runs no api, its worker never logged one");
    now += 10 * 60_000;
    assertEquals(cycle(), [
      "web1/api: app.requests is 0/min, below 1/min",
      "web1/api: app.requests is 0/min, below 1/min",
    ]);
    assertEquals(
      alerter.ruleStates().map((s) => `${s.rule.name} ${s.subject.server}/${s.subject.app} ${s.state} ${s.value}`),
      ["api traffic web1/api firing 0", "traffic web1/api firing 0", "traffic web2/worker ok undefined"],
    );
  });
});

Deno.test("Alerter: a rule removed from the config while firing recovers once, from the memory of the last run", async () => {
  await withStore("dp-rules-", async (store, dir) => {
    let now = Date.UTC(2026, 0, 1, 12);
    const path = join(dir, "alerts.json");
    /** One process per cycle: the memory file read, a cycle at 95 %, the memory written back. */
    const run = async (rules: string) => {
      now += 30_000;
      storeServerSample(store, "web1", { counters: {}, filesystems: [{ mount: "/data", used: 95 }], missing: [] }, now);
      const alerter = new Alerter([], { memory: await readMemory(path), rules: rulesOf(rules), servers: ["web1"] });
      const titles = alerter.notices(cycleSummary(now, { web1: true }), store).map((n) => `${n.event} ${n.title}`);
      await Deno.writeTextFile(path, JSON.stringify(alerter.snapshot()));
      return titles;
    };
    const v1 = "  - { metric: disk.used_percent, above: 90 }\n  - { name: cron, cron: failed }\n";
    assertEquals(await run(v1), ["rule_firing web1 /data: disk.used_percent is 95 %, above 90 %"]);
    assertEquals(await run(v1), []);
    // Its threshold edited, without a name: another rule. The old incident is closed, the new one opened.
    const v2 = "  - { metric: disk.used_percent, above: 80 }\n";
    assertEquals(await run(v2), [
      "rule_firing web1 /data: disk.used_percent is 95 %, above 80 %",
      "rule_recovered web1 /data: disk.used_percent recovered: rule removed from the config " +
      "(rule disk.used_percent above 90)",
    ]);
    assertEquals(await run(v2), [], "once");
    // Every rule removed (the alerts' targets kept): the firing one still recovers.
    assertEquals(await run(""), [
      "rule_recovered web1 /data: disk.used_percent recovered: rule removed from the config " +
      "(rule disk.used_percent above 80)",
    ]);
    assertEquals(await run(""), []);
    const saved = await readMemory(path);
    assertEquals([saved?.rules, saved?.ruleDefs], [undefined, undefined]);
    // A memory file whose rule definitions are not well-formed: those rules end silently, the rest is kept.
    await run(v2);
    const broken = JSON.parse(await Deno.readTextFile(path));
    broken.ruleDefs["disk.used_percent above 80"].op = "over";
    await Deno.writeTextFile(path, JSON.stringify(broken));
    assertEquals(Object.keys((await readMemory(path))?.rules ?? {}), ["disk.used_percent above 80"]);
    assertEquals(await run(""), []);
  });
});

Deno.test("Alerter: a certificate rule with server: sets the days of that server's apps; the others keep 14 days", async () => {
  await withStore("dp-rules-", (store) => {
    const now = CERT_NOW;
    store.replaceCertificates("web1", new Map([["shop", cert(20)], ["blog", cert(40)]]), now);
    store.replaceCertificates("web2", new Map([["shop", cert(20)], ["blog", cert(10)]]), now);
    const alerter = new Alerter([], {
      rules: rulesOf("  - { name: certs, certificate: expiring, days: 30, server: web1, severity: critical }\n"),
      servers: ["web1", "web2"],
    });
    const notices = alerter.notices(cycleSummary(now, { web1: true, web2: true }), store);
    assertEquals(notices.map((n) => [n.title, n.fields.rule, n.fields.severity]), [
      ["certificate of web1/shop expires in 20 days (2026-01-21)", "certs", "critical"],
      ["certificate of web2/blog expires in 10 days (2026-01-11)", undefined, undefined],
    ]);
    assertEquals(alerter.ruleStates().map((s) => `${s.rule.name} ${s.subject.server}/${s.subject.app} ${s.state}`), [
      "certs web1/blog ok",
      "certs web1/shop firing",
    ]);
    assertEquals(alerter.snapshot().certificates, {
      "web1/blog": false,
      "web1/shop": true,
      "web2/blog": true,
      "web2/shop": false,
    });
    assertEquals(alerter.notices(cycleSummary(now + 30_000, { web1: true, web2: true }), store), [], "once");
  });
});

Deno.test("countMatches: the window's first line is found through the ts index, not a walk of the whole table", async () => {
  await withStore("dp-rules-", (store) => {
    const plan = store.sql(`EXPLAIN QUERY PLAN ${WINDOW_FIRST_LINE}`).all(0) as { detail: string }[];
    assertEquals(plan.map((row) => row.detail), ["SEARCH lines USING COVERING INDEX lines_ts (ts>?)"]);
  });
});

Deno.test("Alerter: activeRules lists the subjects firing or pending, firing and critical first, with value and condition", () => {
  const rule = (name: string, severity: "warning" | "critical", threshold: number): Rule => ({
    kind: "threshold",
    name,
    severity,
    metric: "disk.used_percent",
    op: "above",
    threshold,
    withinMs: 300_000,
    minRequests: 20,
    forCycles: 2,
  });
  const state = (mount: string, s: "ok" | "pending" | "firing", value: number) => ({
    [mount]: { subject: { server: "web1", mount }, state: s, count: 1, since: "2026-01-01T00:00:00.000Z", value },
  });
  const alerter = new Alerter([], {
    rules: [rule("disk", "warning", 50), rule("full", "critical", 90)],
    servers: ["web1"],
    memory: {
      version: 2,
      apps: {},
      servers: {},
      rules: {
        disk: { ...state("/", "ok", 10), ...state("/srv", "pending", 50.04) },
        full: state("/data", "firing", 93.25),
      },
    },
  });
  assertEquals(alerter.activeRules(), [
    {
      rule: "full",
      severity: "critical",
      state: "firing",
      server: "web1",
      mount: "/data",
      value: 93.25,
      valueText: "93.3 %",
      condition: "disk.used_percent above 90 % for 2 cycles",
      since: "2026-01-01T00:00:00.000Z",
    },
    {
      rule: "disk",
      severity: "warning",
      state: "pending",
      server: "web1",
      mount: "/srv",
      value: 50.04,
      valueText: "50.04 %",
      condition: "disk.used_percent above 50 % for 2 cycles",
      since: "2026-01-01T00:00:00.000Z",
    },
  ]);
});

Deno.test("Alerter: a rule that fired while no target was configured does not send its recovery once targets are added", async () => {
  await withStore("dp-rules-", async (store, dir) => {
    const path = join(dir, "alerts.json");
    const config = rulesOf("  - { name: disk, metric: disk.used_percent, above: 90 }\n");
    let now = Date.UTC(2026, 0, 1, 12);
    const cycle = (alerter: Alerter, used: number) => {
      now += 30_000;
      storeServerSample(store, "web1", { counters: {}, filesystems: [{ mount: "/", used }], missing: [] }, now);
      return alerter.notices(cycleSummary(now, { web1: true }), store).map((n) => n.event);
    };
    const hook = [{ type: "webhook" as const, url: "http://127.0.0.1:9/hook" }];
    const alone = new Alerter([], { rules: config, servers: ["web1"] });
    assertEquals(cycle(alone, 95), ["rule_firing"], "fired with no target: nobody was told");
    await Deno.writeTextFile(path, JSON.stringify(alone.snapshot()));
    const targeted = new Alerter(hook, { memory: await readMemory(path), rules: config, servers: ["web1"] });
    assertEquals(cycle(targeted, 95), []);
    assertEquals(cycle(targeted, 10), [], "its recovery is not news either");
    assertEquals(cycle(targeted, 95), ["rule_firing"], "the next incident is");
    assertEquals(cycle(targeted, 10), ["rule_recovered"]);
  });
});

Deno.test("Alerter: 1,000 cron jobs failing at once are 10 notices and one for the other 990; every state is kept, each recovers", async () => {
  await withStore("dp-rules-", async (store, dir) => {
    let now = Date.UTC(2026, 0, 1, 12);
    /** Each of 20 apps' cron.log gets a run of its 50 jobs, as the collector ingests them. */
    const runs = async (outcome: string) => {
      now += 30_000;
      for (let a = 0; a < 20; a++) {
        const app = `app${String(a).padStart(2, "0")}`;
        const path = join(dir, `${app}-cron.log`);
        const lines = Array.from(
          { length: 50 },
          (_, j) => JSON.stringify({ job: `job${String(j).padStart(2, "0")}`, outcome }) + "\n",
        );
        await Deno.writeTextFile(path, lines.join(""), { append: true });
        await ingestFile(store, "web1", { rel: `${app}/cron.log`, path, ino: null }, undefined, now);
      }
    };
    const alerter = new Alerter([], { rules: rulesOf("  - { name: cron, cron: failed }\n"), servers: ["web1"] });
    const cycle = () => alerter.notices(cycleSummary(now, { web1: true }), store);
    await runs("failed");
    const fired = cycle();
    assertEquals(fired.length, MAX_RULE_NOTICES + 1);
    assertEquals(fired.slice(0, 2).map((n) => n.title), [
      "cron job job00 of web1/app00 failed",
      "cron job job01 of web1/app00 failed",
    ]);
    const more = fired.at(-1)!;
    assertEquals([more.event, more.ok, more.fields], [
      "rule_firing",
      false,
      { rule: "cron", severity: "warning", subjects: "990" },
    ]);
    assertMatch(
      more.title,
      /^990 more subjects of rule cron are firing: web1\/app00 job job10, web1\/app00 job job11, .*…$/,
    );
    assert(more.text!.startsWith("web1/app00 job job10\nweb1/app00 job job11\n") && more.text!.length <= 1500);
    assertEquals(ruleLines(fired)[0], "  rules: 1000 firing");
    assertEquals(ruleLines(fired).at(-1), "    and 990 more");
    // What is firing is every subject, whatever was sent: the dashboard, `fleet alerts` and /metrics show them all.
    assertEquals(alerter.ruleStates().filter((s) => s.state === "firing").length, 1000);
    assertEquals(alerter.firing().filter((f) => f.firing).length, 1000);
    await runs("failed");
    assertEquals(cycle(), [], "still failing: nothing");
    await runs("ok");
    const recovered = cycle();
    assertEquals(recovered.map((n) => n.event), Array(MAX_RULE_NOTICES + 1).fill("rule_recovered"));
    assertEquals(recovered.at(-1)!.fields.subjects, "990");
    assertMatch(recovered.at(-1)!.title, /^990 more subjects of rule cron recovered: web1\/app00 job job10, /);
    assertEquals(ruleLines(recovered)[0], "  rules: 1000 recovered");
    assertEquals(alerter.ruleStates().filter((s) => s.state === "firing").length, 0);
  });
});

Deno.test("cappedRuleNotices: per rule and kind: one rule's burst hides no other rule's notices, nor its own recoveries", () => {
  const rule = (name: string): Rule => ({ kind: "cron", name, severity: "critical", forCycles: 1 });
  const [a, b] = [rule("a"), rule("b")];
  const at = "2026-01-01T00:00:00.000Z";
  const burst = (r: Rule, firing: boolean, n: number, from = 0): Transition[] =>
    Array.from({ length: n }, (_, i) => ({
      rule: r,
      subject: { server: "web1", app: "api", job: `j${from + i}` },
      firing,
      value: firing ? 1 : 0,
      since: at,
      at,
    }));
  const notices = cappedRuleNotices([
    ...burst(a, true, 11),
    ...burst(b, true, 2),
    ...burst(a, false, 12, 100),
  ]);
  assertEquals(notices.length, 10 + 2 + 10 + 2);
  assertEquals(notices.slice(10, 12).map((n) => n.title), [
    "cron job j0 of web1/api failed",
    "cron job j1 of web1/api failed",
  ]);
  assertEquals(notices.slice(-2).map((n) => [n.event, n.title, n.fields.subjects]), [
    ["rule_firing", "1 more subject of rule a is firing: web1/api job j10", "1"],
    ["rule_recovered", "2 more subjects of rule a recovered: web1/api job j110, web1/api job j111", "2"],
  ]);
  assertEquals(
    cappedRuleNotices(burst(a, true, MAX_RULE_NOTICES)).length,
    MAX_RULE_NOTICES,
    "at the cap: each its own",
  );
});

Deno.test("fleet alerts: says how the config's rules differ from those the collector last judged", () => {
  const judged = rulesOf(
    "  - { name: disk, metric: disk.used_percent, above: 90 }\n  - { name: old, cron: failed }\n" +
      "  - { certificate: expiring, days: 20 }\n",
  );
  const defs = JSON.parse(JSON.stringify(Object.fromEntries(
    judged.filter((rule) => rule.kind !== "certificate").map((rule) => [rule.name, rule]),
  )));
  assertEquals(rulesChanged(judged, defs), undefined, "the same rules (certificate rules are not kept)");
  assertEquals(rulesChanged(judged, undefined), undefined, "nothing judged yet");
  const edited = rulesOf(
    "  - { name: new, query: FATAL, atLeast: 5 }\n  - { name: disk, metric: disk.used_percent, above: 80 }\n",
  );
  assertEquals(rulesChanged(edited, defs), 'added "new"; removed "old"; changed "disk"');
});

Deno.test("fleet collect: `--once` is not numbered; a cycle's rule transitions are counted and listed under its line", () => {
  const summary = cycleSummary(Date.UTC(2026, 0, 1, 12), { web1: true });
  assertMatch(cycleLines(summary, true)[0], /^\[12:00:00\] collected: 1\/1 servers, 0 apps/);
  assertMatch(cycleLines(summary)[0], /^\[12:00:00\] cycle 1: 1\/1 servers/);
  const notice = (event: string, title: string): Notice => ({ event, ok: false, title, fields: {}, at: "" });
  assertEquals(ruleLines([notice("unhealthy", "web1/api is unhealthy")]), []);
  assertEquals(
    ruleLines([
      notice("rule_firing", "web1 /data: disk.used_percent is 95 %, above 90 %"),
      notice("unhealthy", "web1/api is unhealthy"),
      notice("rule_recovered", "web1/api: \x1b[31mFATAL recovered"),
    ]),
    [
      "  rules: 1 firing, 1 recovered",
      "    firing: web1 /data: disk.used_percent is 95 %, above 90 %",
      "    recovered: web1/api: \\x1b[31mFATAL recovered",
    ],
  );
});

Deno.test("fleet add: a bad argument is named by its flag or argument, a missing --identity refused; no file written", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dp-fleet-add-" });
  try {
    const path = join(dir, "home", "config.yml");
    const refused = async (server: Parameters<typeof addServer>[1], expected: RegExp) => {
      const error = await addServer(path, server).then(() => undefined, (error) => error);
      assert(error instanceof UsageError, String(error));
      assertMatch(error.message, expected);
      assertEquals(error.exitCode, 2);
      assertEquals(await Array.fromAsync(Deno.readDir(dir)), [], "nothing written");
    };
    await refused({ name: "bad name", target: "root@h" }, /^fleet add: <name> "bad name" must be lowercase/);
    await refused(
      { name: "s1", target: "root@-oProxyCommand=x" },
      /^fleet add: the host of <user@host> "-oProxyCommand=x" must be a host name/,
    );
    await refused({ name: "s1", target: "h", netdata: "ftp://x" }, /^fleet add: --netdata "ftp:\/\/x" must be an http/);
    await refused(
      { name: "s1", target: "h", identityFile: join(dir, "nokey") },
      /^--identity \S+nokey is no such file$/,
    );
    const keys = await Deno.makeTempDir({ prefix: "dp-fleet-keys-" });
    try {
      await Deno.writeTextFile(join(keys, "id"), "ssh-ed25519 AAAAC3Nza me@laptop\n");
      await Deno.writeTextFile(join(keys, "id_ed25519.pub"), "-----BEGIN OPENSSH PRIVATE KEY-----\n");
      await refused({ name: "s1", target: "h", identityFile: keys }, /^--identity \S+ is a directory, not a key file$/);
      for (const identityFile of [join(keys, "id"), join(keys, "id_ed25519.pub")]) {
        await refused(
          { name: "s1", target: "h", identityFile },
          /^--identity \S+ is a public key: give the private key/,
        );
      }
    } finally {
      await Deno.remove(keys, { recursive: true });
    }
    const key = join(dir, "key");
    await Deno.writeTextFile(key, "not checked beyond existing\n", { mode: 0o600 });
    const added = await addServer(path, { name: "s1", target: "deploy@h", identityFile: key });
    assertEquals([added.name, added.user, added.host, added.identityFile], ["s1", "deploy", "h", key]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("fleet add: the operator's other lines stay as written (a long one-line rule, a comment, a long value)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dp-fleet-add-" });
  try {
    const path = join(dir, "config.yml");
    const rule = "  - { name: shop-down, metric: app.requests, below: 100000, app: shop, within: 2m } # the shop";
    const query = `  - { name: tracebacks, query: "${"Traceback ".repeat(9).trim()}", atLeast: 5, within: 5m }`;
    const before = `servers:\n  - { name: a, host: h }\nrules:\n${rule}\n${query}\n`;
    await Deno.writeTextFile(path, before);
    await addServer(path, { name: "z", target: "root@host" });
    const after = await Deno.readTextFile(path);
    assert(after.includes(`\n${rule}\n${query}\n`), after);
    assert(after.startsWith("servers:\n  - { name: a, host: h }\n  - name: z\n"), after);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("fleet config: a fraction where a whole number goes still lets every other problem be found in one pass", () => {
  assertEquals(
    problems(`  - { name: hot, metric: cpu.percent, above: 900 }
concurrency: 100000
retention: { days: 0, maxLines: 0.5 }
`).map((problem) => problem.split(" ").slice(0, 2).join(" ")),
    [
      'config.yml:5:46: "rules.0.above"',
      'config.yml:6:14: "concurrency"',
      'config.yml:7:20: "retention.days"',
      'config.yml:7:33: "retention.maxLines"',
    ],
  );
  const twice = "servers:\n  - { name: a, host: local }\n  - { name: a, host: local }\ngraceCycles: 1.5\n";
  try {
    parseConfig(twice, fleetConfigSchema, "config.yml");
    throw new Error("accepted");
  } catch (error) {
    assert(error instanceof ConfigError, String(error));
    assertEquals(error.problems.map((problem) => problem.split(" ").slice(0, 2).join(" ")), [
      'config.yml:3:13: "servers.1.name"',
      'config.yml:4:14: "graceCycles"',
    ]);
  }
});

Deno.test("fleet config: a rule that can never match or recover is refused: an app or job no app can have, a margin past the scale's end, an empty name", () => {
  assertEquals(
    problems(`  - { metric: app.p95_ms, above: 100, app: "no such app" }
  - { metric: cpu.percent, above: 53, margin: 200 }
  - { metric: load.1, above: 2, margin: 2 }
  - { metric: memory.used_percent, below: 90, margin: 10 }
  - { cron: failed, job: "Nightly Report" }
  - { name: "", metric: cpu.percent, above: 90 }
`),
    [
      'config.yml:5:44: "rules.0.app" is not an app name: app names are 1-63 lowercase letters, digits or dashes, ' +
      'starting with a letter or digit (got "no such app")',
      'config.yml:6:47: "rules.1.margin" can never be reached: the rule recovers once cpu.percent is below 53 - 200, ' +
      "and it is never negative, so a firing alert would never end; give a margin under 53, or leave margin: out " +
      "(2.65 for this threshold) (got 200)",
      'config.yml:7:41: "rules.2.margin" can never be reached: the rule recovers once load.1 is below 2 - 2, and it ' +
      "is never negative, so a firing alert would never end; give a margin under 2, or leave margin: out (0.1 for " +
      "this threshold) (got 2)",
      'config.yml:8:55: "rules.3.margin" can never be reached: the rule recovers once memory.used_percent is above ' +
      "90 + 10, and it is never above 100, so a firing alert would never end; give a margin under 10 (100 - 90), or " +
      "leave margin: out (4.5 for this threshold) (got 10)",
      'config.yml:9:26: "rules.4.job" is not a cron job name: a lowercase letter, then lowercase letters, digits and ' +
      '- (got "Nightly Report")',
      'config.yml:10:13: "rules.5.name" must not be empty: give the rule a name, or leave name: out for one made of ' +
      "what it says (got an empty string)",
    ],
  );
  // Margins that leave room are taken.
  const { rules } = parseConfig(
    SERVERS + "rules:\n  - { metric: cpu.percent, above: 53, margin: 52 }\n" +
      "  - { metric: memory.used_percent, below: 90, margin: 9.5 }\n  - { metric: app.p95_ms, above: 1, app: api-2 }\n",
    fleetConfigSchema,
    "config.yml",
  );
  assertEquals(rules.map((rule) => rule.kind === "threshold" && [rule.margin, rule.app]), [
    [52, undefined],
    [9.5, undefined],
    [undefined, "api-2"],
  ]);
});

Deno.test("Alerter: a cron job removed from its app (no longer in status.json's cronJobs) recovers once, as gone; the others stay judged", async () => {
  await withStore("dp-rules-", async (store, dir) => {
    let now = Date.UTC(2026, 0, 1, 12);
    const path = join(dir, "shop-cron.log");
    const run = async (job: string, outcome: string) => {
      await Deno.writeTextFile(path, JSON.stringify({ job, outcome }) + "\n", { append: true });
      await ingestFile(store, "web1", { rel: "shop/cron.log", path, ino: null }, undefined, now);
    };
    const status = (cronJobs?: unknown) =>
      store.upsertApp("web1", "shop", { name: "shop", status: "running", healthy: true, cronJobs }, now);
    const alerter = new Alerter([], { rules: rulesOf("  - { name: cronfail, cron: failed }\n"), servers: ["web1"] });
    const cycle = () => {
      now += 30_000;
      return alerter.notices(cycleSummary(now, { web1: true }), store).map((n) => n.title);
    };
    status(); // an older deploy-paradigm: no cronJobs, every job with a run is judged
    await run("failing", "failed");
    await run("nightly", "failed");
    assertEquals(cycle(), ["cron job failing of web1/shop failed", "cron job nightly of web1/shop failed"]);
    status(["nightly", 7, "Bad Name"]); // a deploy without `failing`: it never runs again
    assertEquals(cycle(), []);
    assertEquals(cycle(), []);
    assertEquals(cycle(), [
      "web1/shop job failing: cron job failing recovered: no longer reported by its server (rule cronfail)",
    ]);
    assertEquals(
      alerter.firing().map((f) => [f.job, f.firing]),
      [["nightly", true]],
      "/metrics: the job the app still has is still firing, the removed one is no longer there",
    );
    await run("failing", "failed"); // a stray line of the old job: still not judged
    assertEquals(cycle(), []);
    status(["nightly", "failing"]); // back in a release: judged again
    assertEquals(cycle(), ["cron job failing of web1/shop failed"]);
  });
});
