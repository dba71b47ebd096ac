/**
 * What the alert rules (./rules.ts) are judged on after a cycle, read from the fleet database:
 * each server's latest metrics sample (./series.ts; judged once: a sample already judged, or none,
 * holds the server's states; one without filesystems, or whose df failed, holds its mounts'), an
 * app's requests over the rule's window (./series.ts; only on the servers that run the app, and
 * not judged for an app that never logged a request: no proxy metrics is not "no traffic"), the
 * count of log lines matching a rule's query in its window (FTS5, as the search), and each cron
 * job's last run. Only servers pulled in the cycle are observed; the other configured ones are
 * held (their states kept: no recovery from missing data). Every number read is checked (finite,
 * in range): a compromised server's are not trusted.
 * @module
 */
import type { CycleSummary } from "./collector.ts";
import {
  CRON_FAILED,
  CRON_TIMED_OUT,
  type Cycle,
  MAX_SUBJECTS,
  type Observation,
  type Rule,
  RULE_METRICS,
  type ThresholdRule,
} from "./rules.ts";
import { appRequestWindow } from "./series.ts";
import { latestServerMetrics, type ServerLatest } from "./server_latest.ts";
import { LINE_AHEAD_MS } from "./server_time.ts";
import type { FleetStore } from "./store.ts";

/** Matching lines counted at most per rule and cycle (a flood costs a bounded query). */
export const MAX_COUNTED_LINES = 100_000;

/**
 * The lowest line id dated from `?` on. INDEXED BY: left to itself, SQLite walks the whole table
 * in id order for MIN(id) (39 ms per million lines, every cycle, for every log rule).
 */
export const WINDOW_FIRST_LINE = "SELECT MIN(id) AS id FROM lines INDEXED BY lines_ts WHERE ts >= ?";

/**
 * The observations of every rule (certificate rules aside) after `summary`'s cycle. `judged`:
 * each server's last sample already judged (its ts), moved on in place.
 */
export function observe(
  rules: readonly Rule[],
  store: FleetStore,
  summary: CycleSummary,
  servers: readonly string[],
  judged: Record<string, number>,
): Cycle {
  const now = Date.parse(summary.at) + Math.max(0, summary.durationMs);
  const pulled = new Set(summary.servers.filter((s) => s.ok).map((s) => s.server).filter((s) => servers.includes(s)));
  const unpulled = new Set(servers.filter((s) => !pulled.has(s)));
  // Each server's new sample, read once for all rules.
  const samples = new Map<string, ServerLatest>();
  if (rules.some((rule) => rule.kind === "threshold" && RULE_METRICS[rule.metric]?.scope !== "app")) {
    for (const server of pulled) {
      const latest = latestServerMetrics(store, server);
      if (latest && latest.ts !== judged[server]) {
        samples.set(server, latest);
        judged[server] = latest.ts;
      }
    }
  }
  for (const server of Object.keys(judged)) if (!servers.includes(server)) delete judged[server];
  const observed: Cycle["observed"] = new Map();
  for (const rule of rules) {
    if (rule.kind === "certificate") continue;
    const from = [...pulled].filter((server) => rule.server === undefined || rule.server === server);
    let observations: Observation[];
    let held = unpulled;
    if (rule.kind === "threshold" && RULE_METRICS[rule.metric]?.scope !== "app") {
      const mounts = RULE_METRICS[rule.metric]?.scope === "mount";
      held = new Set(servers.filter((server) => !samples.has(server) || (mounts && !sawMounts(samples.get(server)!))));
      observations = from.flatMap((server) =>
        samples.has(server) ? metricObservations(rule, server, samples.get(server)!) : []
      );
    } else if (rule.kind === "threshold") {
      observations = from.flatMap((server) => appObservations(store, rule, server, now));
    } else if (rule.kind === "log") {
      // Lines dated a little past the cycle count (clocks differ): ingestion dates none later than that.
      const counts = countMatches(store, rule.query, rule.app, now - rule.withinMs, now + LINE_AHEAD_MS);
      observations = from.map((server) => ({
        subject: { server, ...(rule.app === undefined ? {} : { app: rule.app }) },
        value: counts.get(server) ?? 0,
      }));
    } else {
      observations = from.flatMap((server) => cronObservations(store, rule.app, rule.job, server));
    }
    observed.set(rule.name, { observations: observations.slice(0, MAX_SUBJECTS), held });
  }
  return { at: new Date(now).toISOString(), observed };
}

/** Whether a sample tells which filesystems are mounted (df worked, and listed some). */
const sawMounts = (sample: ServerLatest) => sample.filesystems.length > 0 && !/\bdf\b/.test(sample.missing ?? "");

/** A percentage read from a server: within 0-100, else not judged. */
const percent = (value: number | undefined) =>
  value !== undefined && Number.isFinite(value) && value >= 0 && value <= 100.0001 ? Math.min(value, 100) : null;

function metricObservations(rule: ThresholdRule, server: string, sample: ServerLatest): Observation[] {
  const check = (value: number | undefined) =>
    RULE_METRICS[rule.metric].unit === "%"
      ? percent(value)
      : value !== undefined && Number.isFinite(value) && value >= 0
      ? value
      : null;
  if (RULE_METRICS[rule.metric].scope === "server") {
    return [{ subject: { server }, value: check(sample.values[rule.metric]) }];
  }
  return sample.filesystems.filter((fs) => rule.mount === undefined || fs.mount === rule.mount)
    .slice(0, MAX_SUBJECTS)
    .map((fs) => ({ subject: { server, mount: fs.mount }, value: check(fs.values[rule.metric]) }));
}

/** The apps of a server (or `app` only, if it runs it): in its status.json, or with requests in the window. */
function appsOf(store: FleetStore, server: string, since: number, app: string | undefined): string[] {
  return (store.sql(
    `SELECT app FROM apps WHERE server = :server AND (:app IS NULL OR app = :app)
     UNION SELECT DISTINCT app FROM request_minutes WHERE server = :server AND ts >= :since AND (:app IS NULL OR app = :app)
     ORDER BY 1 LIMIT ${MAX_SUBJECTS}`,
  ).all({ server, since, app: app ?? null }) as { app: string }[]).map((row) => row.app);
}

/** Whether the proxy logged a request of the app in the retention period (its raw or 5-minute rows). */
function everLogged(store: FleetStore, server: string, app: string): boolean {
  return store.sql(
    `SELECT 1 FROM request_minutes WHERE server = :server AND app = :app
     UNION ALL SELECT 1 FROM request_minutes_5m WHERE server = :server AND app = :app LIMIT 1`,
  ).get({ server, app }) !== undefined;
}

function appObservations(store: FleetStore, rule: ThresholdRule, server: string, now: number): Observation[] {
  const since = now - rule.withinMs;
  return appsOf(store, server, since, rule.app).map((app) => {
    const window = appRequestWindow(store, server, app, since, now);
    const requests = Number.isFinite(window.requests) && window.requests >= 0 ? window.requests : 0;
    const enough = requests > 0 && requests >= rule.minRequests;
    let value: number | null = null;
    if (rule.metric === "app.requests") {
      value = requests > 0 || everLogged(store, server, app) ? requests / (rule.withinMs / 60_000) : null;
    } else if (enough && rule.metric === "app.error_percent") value = percent((100 * window.errors5xx) / requests);
    else if (enough && rule.metric === "app.p95_ms") {
      value = window.p95Ms !== null && Number.isFinite(window.p95Ms) && window.p95Ms >= 0 ? window.p95Ms : null;
    }
    return { subject: { server, app }, value };
  });
}

/**
 * Lines matching the FTS5 `query` with `since <= ts <= until` (and of `app`), per server, each count
 * at most {@link MAX_COUNTED_LINES}. The query was checked at start (./config.ts).
 */
export function countMatches(
  store: FleetStore,
  query: string,
  app: string | undefined,
  since: number,
  until: number,
): Map<string, number> {
  // The window's lowest line id bounds the FTS walk (ids grow with ingestion; the ts index finds it).
  const first = (store.sql(WINDOW_FIRST_LINE).get(since) as { id: number | null }).id;
  if (first === null) return new Map();
  const rows = store.sql(
    `SELECT server, COUNT(*) AS n FROM (
       SELECT lines.server AS server FROM lines_fts CROSS JOIN lines ON lines.id = lines_fts.rowid
       WHERE lines_fts MATCH :q AND lines_fts.rowid >= :first AND +lines.ts >= :since AND +lines.ts <= :until
         ${app === undefined ? "" : "AND lines.app = :app"}
       LIMIT ${MAX_COUNTED_LINES})
     GROUP BY server`,
  ).all({ q: query, first, since, until, ...(app === undefined ? {} : { app }) }) as { server: string; n: number }[];
  return new Map(rows.map((row) => [row.server, row.n]));
}

/**
 * Each cron job's last run: 0 ok, CRON_FAILED, CRON_TIMED_OUT, null otherwise (skipped: nothing to
 * judge). Only the jobs the app still has, when its status.json names them: a job removed from the
 * app never runs again, so its last failed run would fire for ever; unobserved, its subject is gone
 * after GONE_AFTER cycles and a firing alert recovers ("no longer reported by its server").
 */
function cronObservations(
  store: FleetStore,
  app: string | undefined,
  job: string | undefined,
  server: string,
): Observation[] {
  const rows = store.sql(
    `SELECT app, job, outcome FROM cron_runs AS runs WHERE server = :server
       AND (:app IS NULL OR app = :app) AND (:job IS NULL OR job = :job)
       AND NOT EXISTS (SELECT 1 FROM apps WHERE apps.server = runs.server AND apps.app = runs.app
         AND apps.cron_jobs IS NOT NULL AND runs.job NOT IN (SELECT value FROM json_each(apps.cron_jobs)))
     ORDER BY app, job LIMIT ${MAX_SUBJECTS}`,
  ).all({ server, app: app ?? null, job: job ?? null }) as { app: string; job: string; outcome: string }[];
  return rows.map((row) => ({
    subject: { server, app: row.app, job: row.job },
    value: row.outcome === "failed"
      ? CRON_FAILED
      : row.outcome === "timeout"
      ? CRON_TIMED_OUT
      : row.outcome === "ok"
      ? 0
      : null,
  }));
}
