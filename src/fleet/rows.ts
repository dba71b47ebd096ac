/**
 * The fleet database's rows as the read side selects them (the tables: ./store.ts), the columns
 * of each, and how their stored values read: epoch ms as ISO strings, JSON text leniently (null
 * when it is not JSON). What a row becomes in the API: ./views.ts.
 * @module
 */

export interface ServerRow {
  name: string;
  host: string;
  last_attempt: number | null;
  last_ok: number | null;
  last_error: string | null;
  last_duration_ms: number | null;
  last_bytes: number | null;
  pulls: number;
  errors: number;
  limits: string | null;
}

export interface AppRow {
  server: string;
  app: string;
  type: string | null;
  status: string | null;
  healthy: number | null;
  version: string | null;
  commit_sha: string | null;
  deployed: string | null;
  last_health_check: string | null;
  port: number | null;
  strategy: string | null;
  last_deploy: string | null;
  /** See store.ts's `maintenanceJson`. */
  maintenance: string | null;
  /** See store.ts's `processesJson`. */
  processes: string | null;
  /** See ./canary_status.ts. */
  canary: string | null;
  fetched_at: number;
}

/** A cron_runs row as stored (see store.ts's ingestCronLines). */
export interface CronRunRecord {
  server: string;
  app: string;
  job: string;
  release: string | null;
  start_at: string | null;
  end_at: string | null;
  exit_code: number | null;
  duration_ms: number | null;
  outcome: string;
  reason: string | null;
}

/** A deployments row as stored (see store.ts). */
export interface DeploymentRecord {
  id: number;
  server: string;
  app: string;
  at: string;
  outcome: string;
  release: string | null;
  commit_sha: string | null;
  version: string | null;
  duration_ms: number | null;
  step: string | null;
  message: string | null;
}

/** A certificates row as stored (see store.ts); `names` is a JSON array. */
export interface CertificateRecord {
  server: string;
  app: string;
  names: string;
  source: "acme" | "file" | null;
  issuer: string | null;
  not_before: string | null;
  not_after: string | null;
  last_error: string | null;
  last_error_at: string | null;
  next_attempt_at: string | null;
}

export interface LineRow {
  id: number;
  file_id: number;
  server: string;
  app: string;
  file: string;
  offset: number;
  ts: number;
  kind: string;
  text: string;
}

export const SERVER_COLUMNS =
  "name, host, last_attempt, last_ok, last_error, last_duration_ms, last_bytes, pulls, errors, limits";
export const APP_COLUMNS =
  "server, app, type, status, healthy, version, commit_sha, deployed, last_health_check, port, " +
  "strategy, last_deploy, maintenance, processes, canary, fetched_at";
/** The columns of a {@link CronRunRecord}. */
export const CRON_RUN_COLUMNS = "server, app, job, release, start_at, end_at, exit_code, duration_ms, outcome, reason";
/** The columns of a {@link DeploymentRecord}. */
export const DEPLOYMENT_COLUMNS =
  "id, server, app, at, outcome, release, commit_sha, version, duration_ms, step, message";
/** The columns of a {@link CertificateRecord}. */
export const CERTIFICATE_COLUMNS =
  "server, app, names, source, issuer, not_before, not_after, last_error, last_error_at, " +
  "next_attempt_at";
export const LINE_COLUMNS = "lines.id, lines.file_id, lines.server, lines.app, lines.file, lines.offset, lines.ts, " +
  "lines.kind, lines.text";

/** Epoch ms as an ISO string; null for none or an invalid time. */
export function iso(ms: number | null): string | null {
  if (ms === null) return null;
  const date = new Date(ms);
  return Number.isNaN(date.getTime()) ? null : date.toISOString();
}

/** Stored JSON text parsed; null for none or text that is not JSON. */
export function parseJson(text: string | null): unknown {
  if (text === null) return null;
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}
