/**
 * The fleet monitor's alerts (`alerts:` in the fleet config): after each cycle, what changed
 * goes to the targets (a plain webhook, Slack or Discord), once per transition and not once per
 * cycle: an app unhealthy or recovered, a server unreachable (after `graceCycles` failed cycles
 * in a row) or back, a deploy that failed or rolled back, an app's certificate at risk
 * (`certificate_expiring`: less than 14 days left or expired, or none and obtaining it failed)
 * or renewed (`certificate_renewed`).
 *
 * First sight is not news: an app or a server seen for the first time, and the deploy history
 * found in the database (or on a server the first time it answers), alert nothing. A server that
 * never answered is a setup problem (each cycle's line says so), not an outage. While the
 * collector holds judgement after a pause in its own run (a laptop that woke up), failed pulls
 * are not counted, so waking up alerts nothing. A certificate at risk is the exception: it is a
 * deadline, not a past event, so it alerts when first seen too; it is judged only on servers
 * pulled in the cycle (an unreachable server's may have been renewed meanwhile). A renewal that
 * fails with weeks left alerts nothing (the proxy retries; the dashboard shows the error), and
 * the error is in the notice once the 14 days are reached. A server whose pull goes over the
 * collector's limits (./limits.ts: a status.json too big, log bytes skipped…) alerts `over_limit`
 * once, and again only after a pull within them.
 *
 * Alert rules (`rules:` in the fleet config; ./rules.ts judges them on what ./rule_inputs.ts reads)
 * alert `rule_firing` and `rule_recovered` the same way, their states kept with the rest (and the
 * rules as they were, so that one removed from the config while firing recovers once); the
 * certificate rule (`{ certificate: expiring, days: 14 }`) sets the days of the certificate alert
 * above for the apps it matches (its `server:`, `app:`), 14 for the others. A cycle sends at most
 * {@link MAX_RULE_NOTICES} notices per rule of each kind, and one for the rest; its states keep
 * every subject.
 *
 * The memory of what was last seen is small and kept in `<home>/data/alerts.json` (version 2: the
 * rules' states added; a version 1 file is read as one without them), so
 * `fleet collect --once` (one process per cycle) and a restarted `fleet` alert on what changed
 * since the last run, not on everything or on nothing (its shape and reading: ./alert_memory.ts;
 * kept after each cycle by ./fleet_alerts.ts). What each notice says: ./alert_notices.ts.
 * @module
 */
import { type Delivery, type Notice, NOTIFY_TIMEOUT_MS, notifyAll, type Target, wants } from "../notify.ts";
import { forTerminal } from "../terminal.ts";
import type { CycleSummary } from "./collector.ts";
import {
  backNotice,
  certificateNotice,
  deployNotice,
  moreRulesNotice,
  overLimitNotice,
  ruleNotice,
  unreachableNotice,
} from "./alert_notices.ts";
import type { AlertMemory } from "./alert_memory.ts";
import { CERTIFICATE_COLUMNS, type CertificateRecord, DEPLOYMENT_COLUMNS, type DeploymentRecord } from "./rows.ts";
import { type CertificateView, certificateView } from "./views.ts";
import type { FleetStore } from "./store.ts";
import { observe } from "./rule_inputs.ts";
import { Slots } from "./slots.ts";
import {
  type CertificateRule,
  evaluate,
  type Rule,
  ruleUnit,
  SEVERITIES,
  type Severity,
  type Subject,
  subjectKey,
  type SubjectState,
  type Transition,
} from "./rules.ts";
import { comparedTo, describeRule, formatValue } from "./rule_text.ts";

/** A rule's subject as `fleet alerts` and /metrics show it. */
export interface RuleStateView extends SubjectState {
  rule: Rule;
}

/** A rule's subject on /metrics (`fleet_alert_firing`): the subject's own labels only. */
export type FiringView = { rule: string; firing: boolean } & Subject;

/** A rule's subject that is firing or pending, as the API and dashboard show it (`rules` of /api/fleet). */
export interface ActiveRuleView extends Subject {
  rule: string;
  severity: Severity;
  state: "firing" | "pending";
  /** The last value observed, and as text with its unit (none for cron and certificate rules). */
  value?: number;
  valueText?: string;
  /** What the rule watches, in words (./rule_text.ts describeRule). */
  condition: string;
  /** When the state began (ISO). */
  since: string;
}

/** Subjects in {@link Alerter.activeRules} at most (the firing first). */
export const MAX_ACTIVE_RULES = 200;

/** Options of an {@link Alerter}. */
export interface AlerterOptions {
  /** Failed cycles in a row before `unreachable` (default 2). */
  graceCycles?: number;
  /** The longest one delivery may take (default {@link NOTIFY_TIMEOUT_MS}). */
  timeoutMs?: number;
  /** Where the failed deliveries are reported (default console.log). */
  log?: (line: string) => void;
  /** The memory of an earlier run. */
  memory?: AlertMemory;
  /** The alert rules (default none: the certificate alert at 14 days). */
  rules?: readonly Rule[];
  /** The configured servers' names (the rules' subjects of others are forgotten). */
  servers?: readonly string[];
}

const DAY_MS = 86_400_000;

/** Whether the certificate rule is about this app (its `server:` and `app:`, when given). */
const governs = (rule: CertificateRule | undefined, server: string, app: string): rule is CertificateRule =>
  rule !== undefined && (rule.server ?? server) === server && (rule.app ?? app) === app;

/**
 * Whether a certificate is at risk with `days` of warning: it expires within them (or has), or
 * there is none and obtaining it failed. With 14 days: the certificates' own `atRisk`.
 */
export function certificateAtRiskWithin(certificate: CertificateView, now: number, days: number): boolean {
  const left = certificate.notAfter === null ? NaN : Date.parse(certificate.notAfter) - now;
  return Number.isNaN(left) ? certificate.state === "error" : left < days * DAY_MS;
}

/**
 * Deploy notices per server and cycle at most (a deploy.log replaced by an old copy is not a flood
 * of alerts; a server that floods them never crowds out another's).
 */
const MAX_DEPLOY_NOTICES = 10;

/**
 * Notices per rule and cycle at most of each kind (firing, recovered); past them, one more names
 * the rest (a server with 1,000 failing cron jobs is 11 notices, not 1,000). Every subject's state
 * is kept whatever is sent, so each recovers, and the dashboard and `fleet alerts` show them all.
 */
export const MAX_RULE_NOTICES = 10;

/**
 * Deliveries to one target at once at most; the others wait their turn (a burst of notices is not
 * thousands of requests at once, each timing out).
 */
export const MAX_DELIVERIES_PER_TARGET = 4;

/** Turns cycles into notices (transitions against its memory) and sends them. */
export class Alerter {
  readonly graceCycles: number;
  readonly timeoutMs: number;
  private readonly log: (line: string) => void;
  private readonly memory: AlertMemory;
  readonly rules: readonly Rule[];
  private readonly servers: readonly string[];
  private readonly certificateRule?: CertificateRule;
  /** The start of the cycle whose pull of each server was taken last (this run's: an older cycle ending late is ignored). */
  private readonly lastPull = new Map<string, string>();
  /** Each target's deliveries under way, across cycles (by index in `targets`). */
  private readonly deliveries: Slots[];

  constructor(readonly targets: readonly Target[], options: AlerterOptions = {}) {
    this.graceCycles = options.graceCycles ?? 2;
    this.timeoutMs = options.timeoutMs ?? NOTIFY_TIMEOUT_MS;
    this.log = options.log ?? console.log;
    this.memory = options.memory ? structuredClone(options.memory) : { version: 2, apps: {}, servers: {} };
    this.rules = options.rules ?? [];
    this.servers = options.servers ?? [];
    this.certificateRule = this.rules.find((rule) => rule.kind === "certificate");
    this.deliveries = targets.map(() => new Slots(MAX_DELIVERIES_PER_TARGET));
    // Targets added since the last run: what fires now was never sent, so its recovery will not be.
    const targeted = targets.some((target) => wants(target, "rule_firing"));
    if (this.memory.targeted === false && targeted) {
      for (const states of Object.values(this.memory.rules ?? {})) {
        for (const state of Object.values(states)) if (state.state === "firing") state.unsent = true;
      }
    }
    if (targeted || !this.rules.length) delete this.memory.targeted;
    else this.memory.targeted = false;
  }

  /**
   * Every rule's subjects and where each stands (certificates: at risk is firing), by rule; those of
   * servers no longer configured left out (the next cycle forgets them).
   */
  ruleStates(): RuleStateView[] {
    const configured = (state: RuleStateView) => !this.servers.length || this.servers.includes(state.subject.server);
    return this.rules.flatMap((rule): RuleStateView[] => {
      if (rule.kind !== "certificate") {
        return Object.values(this.memory.rules?.[rule.name] ?? {}).map((state) => ({ rule, ...state }));
      }
      return Object.entries(this.memory.certificates ?? {}).flatMap(([key, atRisk]) => {
        const [server, app] = [key.slice(0, key.indexOf("/")), key.slice(key.indexOf("/") + 1)];
        if (!governs(rule, server, app)) return [];
        const since = this.memory.certificateSince?.[key] ?? "";
        return [{ rule, subject: { server, app }, state: atRisk ? "firing" : "ok", count: 0, since } as RuleStateView];
      });
    }).filter(configured);
  }

  /** Every rule's subjects, firing or not, as `fleet_alert_firing` labels them. */
  firing(): FiringView[] {
    return this.ruleStates().map(({ rule, subject, state }) => {
      const labels = Object.fromEntries(Object.entries(subject).filter(([, value]) => typeof value === "string"));
      return { rule: rule.name, ...labels as Subject, firing: state === "firing" };
    });
  }

  /**
   * The subjects firing or pending, firing first, then by severity (critical first), at most
   * {@link MAX_ACTIVE_RULES}: what /api/fleet's `rules` shows.
   */
  activeRules(): ActiveRuleView[] {
    const rank = (view: ActiveRuleView) => (view.state === "firing" ? 0 : 3) + (2 - SEVERITIES.indexOf(view.severity));
    return this.ruleStates().flatMap(({ rule, subject, state, since, value }): ActiveRuleView[] => {
      if (state === "ok") return [];
      const shown = value !== undefined && Number.isFinite(value) && rule.kind !== "cron" ? value : undefined;
      return [{
        rule: rule.name,
        severity: rule.severity,
        state,
        ...subject,
        value: shown,
        valueText: shown === undefined ? undefined : formatValue(shown, ruleUnit(rule), comparedTo(rule)),
        condition: describeRule(rule),
        since,
      }];
    }).sort((a, b) => rank(a) - rank(b)).slice(0, MAX_ACTIVE_RULES);
  }

  /** A copy of the memory, to keep for the next run. */
  snapshot(): AlertMemory {
    return structuredClone(this.memory);
  }

  /**
   * The notices of a cycle that just ended (`store` holds what it pulled), and the memory moved
   * on: servers first, then apps, then deploys.
   */
  notices(summary: CycleSummary, store: FleetStore): Notice[] {
    const notices: Notice[] = [];
    const memory = this.memory;
    const contacts = new Map(
      (store.sql("SELECT name, last_ok FROM servers").all() as { name: string; last_ok: number | null }[])
        .map((row) => [row.name, row.last_ok]),
    );
    for (const name of Object.keys(memory.servers)) if (!contacts.has(name)) delete memory.servers[name];
    // Deploys are news only from servers that had answered before this cycle (else: their history).
    const answeredBefore = new Set(Object.keys(memory.servers).filter((name) => memory.servers[name].reached));

    for (const outcome of summary.servers) {
      const last = this.lastPull.get(outcome.server);
      if (last !== undefined && last > summary.at) continue; // a later cycle's pull of it is known already
      this.lastPull.set(outcome.server, summary.at);
      const server = memory.servers[outcome.server] ??= {
        reached: contacts.get(outcome.server) != null,
        failures: 0,
        alerted: false,
      };
      const limits = outcome.limits ?? [];
      if (limits.length && !server.limited) notices.push(overLimitNotice(outcome.server, limits, summary.at));
      if (limits.length || outcome.ok) server.limited = limits.length > 0;
      if (outcome.ok) {
        if (server.alerted) notices.push(backNotice(outcome.server, server, summary.at));
        server.reached = true;
        server.failures = 0;
        server.alerted = false;
        delete server.since;
      } else if (!summary.holding) {
        server.failures++;
        server.since ??= summary.at;
        if (server.reached && !server.alerted && server.failures >= this.graceCycles) {
          server.alerted = true;
          notices.push(unreachableNotice(outcome.server, outcome.error, server, contacts.get(outcome.server), summary));
        }
      }
    }

    const apps = store.sql("SELECT server, app, status, healthy, version, commit_sha FROM apps ORDER BY server, app")
      .all() as {
        server: string;
        app: string;
        status: string | null;
        healthy: number | null;
        version: string | null;
        commit_sha: string | null;
      }[];
    const present = new Set<string>();
    for (const row of apps) {
      const key = `${row.server}/${row.app}`;
      present.add(key);
      const healthy = row.healthy === null ? null : row.healthy === 1;
      const before = memory.apps[key];
      memory.apps[key] = healthy;
      if (before === undefined || before === null || healthy === null || before === healthy) continue;
      notices.push({
        event: healthy ? "recovered" : "unhealthy",
        ok: healthy,
        title: healthy
          ? `${key} recovered${row.status ? ` (${row.status})` : ""}`
          : `${key} is unhealthy${row.status ? ` (${row.status})` : ""}`,
        fields: {
          server: row.server,
          app: row.app,
          status: row.status ?? undefined,
          version: row.version ?? undefined,
          commit: row.commit_sha ?? undefined,
        },
        at: summary.at,
      });
    }
    for (const key of Object.keys(memory.apps)) if (!present.has(key)) delete memory.apps[key];
    notices.push(...this.certificateNotices(summary, store));
    try {
      notices.push(...this.ruleNotices(summary, store));
    } catch (error) {
      // The rules' reads failing (a database from another version?) costs their cycle, not the other alerts.
      this.log(`! alert rules not judged in this cycle: ${error instanceof Error ? error.message : error}`);
    }

    const newest = (store.sql("SELECT MAX(id) AS id FROM deployments").get() as { id: number | null }).id ?? 0;
    if (memory.deployment === undefined || memory.deployment > newest) {
      memory.deployment = newest; // first sight (or another database): history, not news
    } else if (newest > memory.deployment) {
      const failed = store.sql(
        `SELECT ${DEPLOYMENT_COLUMNS} FROM deployments WHERE server = ? AND id > ? AND id <= ?
         AND outcome IN ('failed', 'rolled_back', 'rollback_failed') ORDER BY id DESC LIMIT ?`,
      );
      const rows: DeploymentRecord[] = [];
      for (const server of [...answeredBefore].sort()) {
        const found = failed.all(
          server,
          memory.deployment,
          newest,
          MAX_DEPLOY_NOTICES + 1,
        ) as unknown as DeploymentRecord[];
        if (found.length > MAX_DEPLOY_NOTICES) {
          this.log(
            `! ${server}: more than ${MAX_DEPLOY_NOTICES} failed deploys at once: alerting the newest ${MAX_DEPLOY_NOTICES}`,
          );
        }
        rows.push(...found.slice(0, MAX_DEPLOY_NOTICES));
      }
      memory.deployment = newest;
      for (const row of rows.sort((a, b) => a.id - b.id)) notices.push(deployNotice(row));
    }
    return notices;
  }

  /** The rules' transitions in this cycle (./rules.ts), as notices. */
  private ruleNotices(summary: CycleSummary, store: FleetStore): Notice[] {
    const memory = this.memory;
    const judging = this.rules.filter((rule) => rule.kind !== "certificate");
    const cycle = observe(judging, store, summary, this.servers, memory.judged ??= {});
    // Rules removed since the last cycle: their firing subjects recover once (evaluate ends them).
    const before = memory.rules ?? {};
    const evaluated = evaluate(judging, before, cycle, memory.ruleDefs);
    // A firing that went to no target (see the constructor): its recovery is not news either.
    const transitions = evaluated.transitions.filter(({ rule, subject, firing }) => {
      const key = subjectKey(subject);
      if (firing) delete evaluated.memory[rule.name]?.[key]?.unsent;
      return firing || !before[rule.name]?.[key]?.unsent;
    });
    memory.rules = evaluated.memory;
    memory.ruleDefs = Object.fromEntries(judging.map((rule) => [rule.name, rule]));
    if (!judging.length) {
      delete memory.rules;
      delete memory.ruleDefs;
      delete memory.judged;
    }
    return cappedRuleNotices(transitions);
  }

  /** Certificates that came to be at risk, or out of it, on the servers pulled in this cycle. */
  private certificateNotices(summary: CycleSummary, store: FleetStore): Notice[] {
    const notices: Notice[] = [];
    const memory = this.memory.certificates ??= {};
    const since = this.memory.certificateSince ??= {};
    const rule = this.certificateRule;
    const pulled = new Set(summary.servers.filter((outcome) => outcome.ok).map((outcome) => outcome.server));
    const now = Date.parse(summary.at);
    const rows = store.sql(`SELECT ${CERTIFICATE_COLUMNS} FROM certificates ORDER BY server, app`)
      .all() as unknown as CertificateRecord[];
    const present = new Set<string>();
    for (const row of rows) {
      const key = `${row.server}/${row.app}`;
      present.add(key);
      if (!pulled.has(row.server)) continue;
      const certificate = certificateView(row, now);
      const before = memory[key] ?? false;
      const ruled = governs(rule, row.server, row.app) ? rule : undefined;
      // Without a certificate yet (and no error now), one at risk stays so until one is issued.
      const atRisk = certificateAtRiskWithin(certificate, now, ruled?.days ?? 14) ||
        (before && certificate.notAfter === null);
      memory[key] = atRisk;
      if (atRisk !== before || since[key] === undefined) since[key] = summary.at;
      if (atRisk !== before) notices.push(certificateNotice(row, certificate, atRisk, summary.at, ruled));
    }
    for (const key of Object.keys(memory)) if (!present.has(key)) delete memory[key];
    for (const key of Object.keys(since)) if (!present.has(key)) delete since[key];
    return notices;
  }

  /**
   * Sends each notice to the targets that want it, at most {@link MAX_DELIVERIES_PER_TARGET} at
   * once to each (in order), each delivery bounded by the timeout; prints one line per failed
   * delivery. Never throws.
   */
  async send(notices: readonly Notice[]): Promise<Delivery[]> {
    // One notifyAll per target, so that a failure is reported when it happens, not when the slowest target ends.
    const sent = await Promise.all(notices.flatMap((notice) =>
      this.targets.map(async (target, i) => {
        if (!wants(target, notice.event)) return [];
        const deliveries = await this.deliveries[i].run(() => notifyAll([target], notice, this.timeoutMs));
        for (const delivery of deliveries) {
          if (!delivery.ok) this.log(`! alert to ${delivery.target} failed: ${forTerminal(delivery.detail)}`);
        }
        return deliveries;
      })
    ));
    return sent.flat();
  }
}

/**
 * The notices of a cycle's rule transitions: each one's, up to {@link MAX_RULE_NOTICES} per rule
 * and kind (firing, recovered), then one for the rest of each (./alert_notices.ts moreRulesNotice).
 */
export function cappedRuleNotices(transitions: readonly Transition[]): Notice[] {
  const notices: Notice[] = [];
  const kinds = new Map<string, Transition[]>();
  for (const transition of transitions) {
    const key = `${transition.firing}\u0000${transition.rule.name}`;
    let kind = kinds.get(key);
    if (!kind) kinds.set(key, kind = []);
    kind.push(transition);
    if (kind.length <= MAX_RULE_NOTICES) notices.push(ruleNotice(transition));
  }
  const rests = [...kinds.values()].filter((kind) => kind.length > MAX_RULE_NOTICES);
  return [...notices, ...rests.map((kind) => moreRulesNotice(kind.slice(MAX_RULE_NOTICES)))];
}
