/**
 * What the read side of the fleet database (./queries.ts, ./log_queries.ts, ./metrics.ts) returns
 * and how a stored row becomes it: the JSON-able views (times as ISO strings), a server's
 * freshness, and the page sizes. The rows and columns as stored: ./rows.ts; an app's processes:
 * ./process_views.ts.
 * @module
 */
import {
  certificateAtRisk,
  type CertificateCondition,
  certificateCondition,
  type CertificateState,
} from "../proxy/cert_state.ts";
import { type CanaryView, canaryView } from "./canary_status.ts";
import { type ProcessesView, processesView } from "./process_views.ts";
import {
  type AppRow,
  type CertificateRecord,
  type CronRunRecord,
  type DeploymentRecord,
  iso,
  type LineRow,
  parseJson,
  type ServerRow,
} from "./rows.ts";

/** How fresh the collector's data is judged: the clock, the pull interval, and sleep of the machine. */
export interface FreshnessView {
  /** Now, in milliseconds since 1970. */
  now: number;
  /** The collector's pull interval. */
  intervalMs: number;
  /** The collector just resumed (e.g. after the laptop slept): report what was last known as fresh. */
  holding: boolean;
  /** How long the collector was not running (slept), subtracted from a server's age. */
  gapMs: number;
}

/** How current a server's data is. */
export type Freshness = "fresh" | "stale" | "unreachable";

/** An app's state: its server's freshness, else `unhealthy` when its last health check failed. */
export type AppState = Freshness | "unhealthy";

/** One app of a server, as its last pulled status.json says. */
export interface AppView {
  app: string;
  type: string | null;
  status: string | null;
  healthy: boolean | null;
  version: string | null;
  commit: string | null;
  deployed: string | null;
  lastHealthCheck: string | null;
  port: number | null;
  strategy: string | null;
  /** status.json's `lastDeploy`, parsed. */
  lastDeploy: unknown;
  fetchedAt: string;
  freshness: Freshness;
  state: AppState;
  /** Its certificate, as the server's `.tls/certificates.json` said at the last pull; null without one. */
  certificate: CertificateView | null;
  /** Its maintenance mode, as its status.json said at the last pull; absent when off. */
  maintenance?: MaintenanceView;
  /**
   * Its processes (web instances and workers) as its status.json listed them at the last pull,
   * counted by type (`list`: each one, on the server page only); null when it listed none.
   */
  processes: ProcessesView | null;
  /** Its canary release, as its status.json said at the last pull (./canary_status.ts); absent without one. */
  canary?: CanaryView;
}

/** An app of a {@link ServerDetail}: with each process, and the last run of each cron job. */
export interface AppDetail extends AppView {
  /** The last run of each cron job (from its cron.log), by job name. */
  cron: CronRunView[];
}

/** The last run of one cron job (see ../cron/log.ts's CronRun), every field checked. */
export interface CronRunView {
  job: string;
  release: string | null;
  /** ISO 8601 in UTC; null when cron.log's was not a time from 2000 to a day past its pull (./ingest.ts's cronRunOf). */
  start: string | null;
  end: string | null;
  exitCode: number | null;
  durationMs: number | null;
  /** ok, failed, timeout, skipped (anything else as sent). */
  outcome: string;
  /** Why it was skipped or could not start. */
  reason: string | null;
}

/** An app in maintenance (the proxy answers 503 but to the allowed addresses), or why its maintenance.json is not valid. */
export interface MaintenanceView {
  since: string | null;
  message: string | null;
  allow: string[];
  retryAfter: number | null;
  error?: string;
}

/** An app's certificate, judged at the view's `now`. */
export interface CertificateView extends CertificateState {
  /** `expiring`: less than 14 days left; `error`: the last attempt to issue or renew failed. */
  state: CertificateCondition;
  /** Whole days to `notAfter`, negative once expired; null without a certificate. */
  daysLeft: number | null;
  /** Expiring, expired, or none and obtaining it failed: what the fleet alerts on (`certificate_expiring`). */
  atRisk: boolean;
}

/** One server and how its pulls went. */
export interface ServerView {
  name: string;
  host: string;
  lastAttempt: string | null;
  lastOk: string | null;
  lastError: string | null;
  lastDurationMs: number | null;
  lastBytes: number | null;
  /**
   * What the collector's limits refused or cut in the last pull (a status.json over 64 KiB, a log
   * file over its size, new log bytes skipped…), one line each; empty when nothing was.
   */
  limits: string[];
  state: Freshness;
  apps: AppView[];
}

/** The whole fleet: every server with its apps, and apps counted by state. */
export interface FleetOverview {
  generatedAt: string;
  /** Apps by state; `healthy` counts the apps whose state is `fresh`. */
  counts: { healthy: number; unhealthy: number; stale: number; unreachable: number };
  servers: ServerView[];
}

/** One deploy outcome. */
export interface DeploymentView {
  id: number;
  server: string;
  app: string;
  at: string;
  outcome: string;
  release: string | null;
  commit: string | null;
  version: string | null;
  durationMs: number | null;
  step: string | null;
  message: string | null;
}

/** One stored log line. */
export interface LineView {
  id: number;
  server: string;
  app: string;
  file: string;
  offset: number;
  ts: string;
  kind: string;
  text: string;
}

/** One server in detail (the API adds `netdata` from the config). */
export interface ServerDetail extends Omit<ServerView, "apps"> {
  pulls: number;
  errors: number;
  /** Its apps, each with its processes and the last run of its cron jobs. */
  apps: AppDetail[];
  /** The 20 newest deployments. */
  deployments: DeploymentView[];
  /** The 50 newest lines of the server's error.log files, newest first. */
  errorLines: LineView[];
}

/** The page size limits of {@link searchLogs} and {@link deployments}. */
export const PAGE = { default: 50, max: 500 } as const;

/**
 * A server's freshness: `unreachable` when its last pull failed, `stale` when its last good pull is
 * older than 3 intervals (not counting `gapMs`), else `fresh`. While `holding`, `fresh` for a
 * server that was ever reached.
 */
export function serverFreshness(
  row: { last_attempt: number | null; last_ok: number | null; last_error: string | null },
  view: FreshnessView,
): Freshness {
  // Held judgement (the collector just woke up): what was known stands; never reached stays so.
  if (view.holding) return row.last_ok !== null ? "fresh" : row.last_error !== null ? "unreachable" : "stale";
  const failed = row.last_error !== null && (row.last_ok === null || (row.last_attempt ?? 0) > row.last_ok);
  if (failed) return "unreachable";
  if (row.last_ok === null) return "stale";
  return view.now - row.last_ok - view.gapMs > 3 * view.intervalMs ? "stale" : "fresh";
}

export function serverView(row: ServerRow, view: FreshnessView): Omit<ServerView, "apps"> {
  return {
    name: row.name,
    host: row.host,
    lastAttempt: iso(row.last_attempt),
    lastOk: iso(row.last_ok),
    lastError: row.last_error,
    lastDurationMs: row.last_duration_ms,
    lastBytes: row.last_bytes,
    limits: limitLines(row.limits),
    state: serverFreshness(row, view),
  };
}

/** A servers row's `limits` (a JSON array of lines), as a list. */
export function limitLines(text: string | null): string[] {
  const value = text === null ? [] : parseJson(text);
  return Array.isArray(value) ? value.filter((line) => typeof line === "string") : [];
}

/** A stored certificate, judged at `now`. */
export function certificateView(row: CertificateRecord, now: number): CertificateView {
  const names = parseJson(row.names);
  const certificate: CertificateState = {
    names: Array.isArray(names) ? names : [],
    source: row.source,
    issuer: row.issuer,
    notBefore: row.not_before,
    notAfter: row.not_after,
    lastError: row.last_error,
    lastErrorAt: row.last_error_at,
    nextAttemptAt: row.next_attempt_at,
  };
  return { ...certificate, ...certificateCondition(certificate, now), atRisk: certificateAtRisk(certificate, now) };
}

/** Certificate views by `server\0app`. */
export function certificatesBy(rows: CertificateRecord[], now: number): Map<string, CertificateView> {
  return new Map(rows.map((row) => [`${row.server}\0${row.app}`, certificateView(row, now)]));
}

/**
 * An app as the API gives it; `withList`: with each of its processes (the server page), else
 * only their counts (the overview).
 */
export function appView(
  row: AppRow,
  freshness: Freshness,
  certificates: Map<string, CertificateView>,
  withList = false,
): AppView {
  return {
    app: row.app,
    type: row.type,
    status: row.status,
    healthy: row.healthy === null ? null : row.healthy !== 0,
    version: row.version,
    commit: row.commit_sha,
    deployed: row.deployed,
    lastHealthCheck: row.last_health_check,
    port: row.port,
    strategy: row.strategy,
    lastDeploy: parseJson(row.last_deploy),
    fetchedAt: iso(row.fetched_at)!,
    freshness,
    state: freshness !== "fresh" ? freshness : row.healthy === 0 ? "unhealthy" : "fresh",
    certificate: certificates.get(`${row.server}\0${row.app}`) ?? null,
    ...maintenanceView(row.maintenance),
    processes: processesView(row.processes, withList),
    ...canaryView(row.canary),
  };
}

/** A stored cron run as the API gives it. */
export function cronRunView(row: CronRunRecord): CronRunView {
  return {
    job: row.job,
    release: row.release,
    start: row.start_at,
    end: row.end_at,
    exitCode: row.exit_code,
    durationMs: row.duration_ms,
    outcome: row.outcome,
    reason: row.reason,
  };
}

/** A stored maintenance (see store.ts's `maintenanceJson`) as the API gives it: `{maintenance}`, or `{}` when off. */
function maintenanceView(text: string | null): { maintenance?: MaintenanceView } {
  const value = parseJson(text) as Partial<MaintenanceView> | null;
  if (value === null || typeof value !== "object") return {};
  const view: MaintenanceView = {
    since: typeof value.since === "string" ? value.since : null,
    message: typeof value.message === "string" ? value.message : null,
    allow: Array.isArray(value.allow) ? value.allow.filter((entry) => typeof entry === "string") : [],
    retryAfter: typeof value.retryAfter === "number" ? value.retryAfter : null,
  };
  return { maintenance: typeof value.error === "string" ? { ...view, error: value.error } : view };
}

export function deploymentView(row: DeploymentRecord): DeploymentView {
  return {
    id: row.id,
    server: row.server,
    app: row.app,
    at: row.at,
    outcome: row.outcome,
    release: row.release,
    commit: row.commit_sha,
    version: row.version,
    durationMs: row.duration_ms,
    step: row.step,
    message: row.message,
  };
}

export function lineView(row: LineRow): LineView {
  return {
    id: row.id,
    server: row.server,
    app: row.app,
    file: row.file,
    offset: row.offset,
    ts: iso(row.ts)!,
    kind: row.kind,
    text: row.text,
  };
}

export function clamp(value: number | undefined, fallback: number, max: number, min = 1): number {
  if (value === undefined || !Number.isFinite(value)) return fallback;
  return Math.min(Math.max(min, Math.trunc(value)), max);
}
