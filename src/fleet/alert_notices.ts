/**
 * The fleet alerts' notices (./alerts.ts decides when): what each one says, its title, fields and
 * text, for a server unreachable, back or over the collector's limits, a certificate at risk or
 * renewed, a failed or rolled-back deploy, and an alert rule firing or recovered (naming the
 * server, app, mount or job, the value with its unit and the threshold; or why it recovered
 * without a value: its subject gone, its rule removed from the config), and the rest of a rule's
 * transitions past a cycle's cap in one.
 * @module
 */
import type { Notice } from "../notify.ts";
import { issuerLabel } from "../proxy/cert_state.ts";
import type { ServerMemory } from "./alert_memory.ts";
import type { CycleSummary } from "./collector.ts";
import type { CertificateRecord, DeploymentRecord } from "./rows.ts";
import type { CertificateView } from "./views.ts";
import {
  type CertificateRule,
  CRON_TIMED_OUT,
  recoveryPoint,
  ruleUnit,
  type Subject,
  type Transition,
} from "./rules.ts";
import { comparedTo, formatThreshold, formatValue, formatWindow } from "./rule_text.ts";

/** deployments outcomes that alert, and their event. */
const DEPLOY_EVENTS: Record<string, "failed" | "rolled_back"> = {
  failed: "failed",
  rolled_back: "rolled_back",
  rollback_failed: "failed",
};

/** The first line of `text`, at most `max` characters. */
function line(text: string, max = 160): string {
  const first = text.split("\n").find((l) => l.trim())?.trim() ?? "";
  return first.length > max ? first.slice(0, max - 1) + "…" : first;
}

function clip(text: string | undefined | null, max = 1500): string | undefined {
  if (!text) return undefined;
  return text.length > max ? text.slice(0, max - 1) + "…" : text;
}

/** `1h 4m`, `4m 30s`, `12s`. */
export function span(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h ${Math.floor(s / 60) % 60}m`;
  return `${Math.floor(s / 86_400)}d ${Math.floor(s / 3600) % 24}h`;
}

export function unreachableNotice(
  name: string,
  error: string | undefined,
  server: ServerMemory,
  lastOk: number | null | undefined,
  summary: CycleSummary,
): Notice {
  const why = line(error ?? "") || "the pull failed";
  return {
    event: "unreachable",
    ok: false,
    title: `${name} is unreachable: ${why}`,
    fields: {
      server: name,
      "failed pulls": String(server.failures),
      "last contact": lastOk ? new Date(lastOk).toISOString() : undefined,
    },
    text: error && error.trim() !== why ? clip(error) : undefined,
    at: summary.at,
  };
}

export function overLimitNotice(name: string, limits: string[], at: string): Notice {
  return {
    event: "over_limit",
    ok: false,
    title: `${name} went over the fleet collector's limits: ${line(limits[0])}`,
    fields: { server: name, refused: String(limits.length) },
    text: clip(limits.join("\n")),
    at,
  };
}

export function backNotice(name: string, server: ServerMemory, at: string): Notice {
  const down = server.since ? Date.parse(at) - Date.parse(server.since) : undefined;
  return {
    event: "back",
    ok: true,
    title: `${name} is back`,
    fields: {
      server: name,
      "unreachable since": server.since,
      "unreachable for": down === undefined || Number.isNaN(down) ? undefined : span(down),
    },
    at,
  };
}

export function certificateNotice(
  row: CertificateRecord,
  certificate: CertificateView,
  atRisk: boolean,
  at: string,
  rule?: CertificateRule,
): Notice {
  const key = `${row.server}/${row.app}`;
  const { state, daysLeft, notAfter, lastError } = certificate;
  const until = notAfter?.slice(0, 10);
  const title = !atRisk
    ? `certificate of ${key} renewed: valid until ${until}`
    : state === "expired"
    ? `certificate of ${key} expired on ${until}`
    : daysLeft !== null && notAfter
    ? `certificate of ${key} expires in ${daysLeft === 1 ? "1 day" : `${daysLeft} days`} (${until})`
    : `${key} has no certificate: ${line(lastError ?? "") || "none was issued"}`;
  const source = certificate.source === "file" ? "own certificate (config.yml tls)" : certificate.source;
  return {
    event: atRisk ? "certificate_expiring" : "certificate_renewed",
    ok: !atRisk,
    title,
    fields: {
      server: row.server,
      app: row.app,
      names: clip(certificate.names.join(", "), 300),
      issuer: issuerLabel(certificate.issuer) ?? undefined,
      source: source === "acme" ? "ACME" : source ?? undefined,
      "valid until": notAfter ?? undefined,
      "next attempt": atRisk ? certificate.nextAttemptAt ?? undefined : undefined,
      ...(rule ? { rule: rule.name, severity: rule.severity } : {}),
    },
    text: atRisk && lastError ? `last error: ${clip(lastError)}` : undefined,
    at,
  };
}

export function deployNotice(row: DeploymentRecord): Notice {
  const key = `${row.server}/${row.app}`;
  const version = row.version ?? row.commit_sha?.slice(0, 7);
  const step = row.step ? ` at ${row.step}` : "";
  const title = row.outcome === "rollback_failed"
    ? `rollback of ${key} failed`
    : `deploy of ${key}${version ? ` ${version}` : ""} ${
      row.outcome === "rolled_back" ? "rolled back" : "failed"
    }${step}`;
  return {
    event: DEPLOY_EVENTS[row.outcome],
    ok: false,
    title,
    fields: {
      server: row.server,
      app: row.app,
      version: version ?? undefined,
      commit: row.commit_sha ?? undefined,
      release: row.release ?? undefined,
      duration: row.duration_ms === null ? undefined : `${(row.duration_ms / 1000).toFixed(1)} s`,
      step: row.step ?? undefined,
    },
    text: clip(row.message),
    at: row.at,
  };
}

/** `web1`, `web1 /data`, `web1/api`, `web1/api job backup`: what a rule's state is about. */
export function subjectLabel(subject: Subject): string {
  return subject.server + (subject.mount ? ` ${subject.mount}` : "") + (subject.app ? `/${subject.app}` : "") +
    (subject.job ? ` job ${subject.job}` : "");
}

/** Why a subject recovered without a value (./rules.ts `ended`). */
const ENDED = {
  gone: "no longer reported by its server",
  removed: "rule removed from the config",
};

/** A rule that fired (`rule_firing`) or recovered (`rule_recovered`). */
export function ruleNotice(transition: Transition): Notice {
  const { rule, subject, firing, since, at, ended } = transition;
  const value = transition.value ?? NaN;
  const unit = ruleUnit(rule);
  const where = subjectLabel(subject);
  const recovery = recoveryPoint(rule);
  let title: string;
  let threshold: string | undefined;
  if (ended) {
    const what = rule.kind === "threshold"
      ? rule.metric
      : rule.kind === "log"
      ? line(rule.query, 100)
      : rule.kind === "cron"
      ? `cron job ${subject.job}`
      : "certificate";
    title = `${where}: ${what} recovered: ${ENDED[ended]} (rule ${rule.name})`;
  } else if (rule.kind === "threshold") {
    threshold = `${rule.op} ${formatThreshold(rule.threshold, unit)}`;
    const back = `${rule.op === "above" ? "below" : "above"} ${formatThreshold(recovery!, unit)}`;
    title = firing
      ? `${where}: ${rule.metric} is ${formatValue(value, unit, rule.threshold)}, ${threshold}` +
        (rule.forCycles > 1 ? ` for ${rule.forCycles} cycles` : "")
      : `${where}: ${rule.metric} recovered: ${formatValue(value, unit, recovery)}, ${back}`;
  } else if (rule.kind === "log") {
    threshold = `at least ${formatValue(rule.atLeast, unit)} within ${formatWindow(rule.withinMs)}`;
    title = firing
      ? `${where}: ${formatValue(value, unit)} matching ${line(rule.query, 100)} within ${formatWindow(rule.withinMs)}`
      : `${where}: ${line(rule.query, 100)} recovered: ${formatValue(value, unit)} within ${
        formatWindow(rule.withinMs)
      }, under ${recovery}`;
  } else {
    title = firing
      ? `cron job ${subject.job} of ${subject.server}/${subject.app} ${
        value === CRON_TIMED_OUT ? "timed out" : "failed"
      }`
      : `cron job ${subject.job} of ${subject.server}/${subject.app} ran ok again`;
  }
  const lasted = Date.parse(at) - Date.parse(since);
  return {
    event: firing ? "rule_firing" : "rule_recovered",
    ok: !firing,
    title,
    fields: {
      rule: rule.name,
      severity: rule.severity,
      server: subject.server,
      app: subject.app,
      mount: subject.mount,
      job: subject.job,
      [ended ? "last value" : "value"]: rule.kind === "cron" || Number.isNaN(value)
        ? undefined
        : formatValue(value, unit, ended ? undefined : firing ? comparedTo(rule) : recovery),
      threshold,
      reason: ended ? ENDED[ended] : undefined,
      "firing since": firing ? undefined : since,
      "firing for": firing || Number.isNaN(lasted) ? undefined : span(lasted),
    },
    at,
  };
}

/**
 * One notice for the rule transitions past a cycle's cap (./alerts.ts MAX_RULE_NOTICES), all of one
 * rule and kind: how many more subjects fire (or recovered), naming them (`12 more subjects of rule
 * cron are firing: web1/api job a, …`); `subjects` says how many.
 */
export function moreRulesNotice(transitions: readonly Transition[]): Notice {
  const [{ rule, firing, at }] = transitions;
  const n = transitions.length;
  const subjects = transitions.map((transition) => subjectLabel(transition.subject));
  const what = n === 1
    ? `1 more subject of rule ${rule.name} ${firing ? "is firing" : "recovered"}`
    : `${n} more subjects of rule ${rule.name} ${firing ? "are firing" : "recovered"}`;
  return {
    event: firing ? "rule_firing" : "rule_recovered",
    ok: !firing,
    title: line(`${what}: ${subjects.join(", ")}`),
    fields: { rule: rule.name, severity: rule.severity, subjects: String(n) },
    text: clip(subjects.join("\n")),
    at,
  };
}
