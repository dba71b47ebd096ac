/**
 * The read side of the fleet database: what the HTTP API (./api.ts) and the dashboard show.
 * Every function takes a {@link FleetStore}, runs cached prepared statements (`store.sql`) and
 * returns plain JSON-able objects, times as ISO strings.
 *
 * Full-text search walks the FTS5 index newest first (`ORDER BY lines_fts.rowid DESC`, with
 * `lines_fts` as the outer loop) and stops at the page size; ordering by rank would read every
 * match and is about 1000× slower, so it is never used. Paging is by line id (`before`).
 * @module
 */
import { UsageError } from "../errors.ts";
import {
  certificateAtRisk,
  type CertificateCondition,
  certificateCondition,
  type CertificateState,
} from "../proxy/cert_state.ts";
import type { FleetStore } from "./store.ts";

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
  apps: AppView[];
  /** The 20 newest deployments. */
  deployments: DeploymentView[];
  /** The 50 newest lines of the server's error.log files, newest first. */
  errorLines: LineView[];
}

/** A part of a search snippet: render `text` as a text node, emphasized when `hit`. Never HTML. */
export interface SnippetPart {
  text: string;
  hit: boolean;
}

/** One search result. */
export interface SearchResult extends LineView {
  /** Up to 24 tokens around the match, the matched ones marked. */
  snippet: SnippetPart[];
}

/** A search: an FTS5 query and filters. */
export interface SearchParams {
  /** FTS5 syntax: words, "phrases", AND/OR/NOT, prefix*. */
  q: string;
  server?: string;
  app?: string;
  /** A file name as stored with the lines, e.g. `error.log`. */
  file?: string;
  /** Only lines with `ts >= since` (ms). */
  since?: number;
  /** Only lines with `ts <= until` (ms). */
  until?: number;
  /** Page size: default 50, at most 500. */
  limit?: number;
  /** Only lines with an id below this: the previous page's `nextBefore`. */
  before?: number;
}

/** A page of search results, newest first. */
export interface SearchPage {
  results: SearchResult[];
  /** Set when there are older results: pass it as `before` for the next page. */
  nextBefore?: number;
}

/** Which lines a context is asked around. */
export interface ContextParams {
  server: string;
  app: string;
  file: string;
  /** The byte offset of the hit in its file. */
  offset: number;
  /**
   * The hit's line id (a search result's `id`): picks the file generation when a rotated file had
   * a line at the same offset. Without it, the newest generation with a line at `offset` is used.
   */
  id?: number;
  /** Lines before and after the hit: default 20, at most 200. */
  lines?: number;
}

/** The lines around a hit, by offset ascending. */
export interface LogContext {
  server: string;
  app: string;
  file: string;
  /** The file generation the lines come from. */
  fileId: number;
  offset: number;
  lines: Array<LineView & { hit: boolean }>;
}

/** Which deployments to list. */
export interface DeploymentParams {
  server?: string;
  app?: string;
  /** Page size: default 50, at most 500. */
  limit?: number;
  /** Only deployments with an id below this: the previous page's `nextBefore`. */
  before?: number;
}

/** A page of deployments, newest first. */
export interface DeploymentPage {
  deployments: DeploymentView[];
  nextBefore?: number;
}

/** The collector's own counters, for {@link metrics}. */
export interface CollectorStats {
  /** Cycles run since the collector started. */
  cycles: number;
  /** How long the last cycle took, if one ran. */
  lastCycleMs?: number | null;
  /** Failed pulls since the collector started. */
  errors: number;
}

/** The page size limits of {@link searchLogs} and {@link deployments}. */
export const PAGE = { default: 50, max: 500 } as const;
/** The context size limits of {@link logContext}. */
export const CONTEXT_LINES = { default: 20, max: 200 } as const;

/** How FTS5 queries are written, for error messages. */
export const SEARCH_SYNTAX_HELP = "Searches use SQLite FTS5 syntax: words match whole words anywhere in a line " +
  '(timeout refused = both), "double quotes" match a phrase, AND/OR/NOT (upper case) and parentheses combine, ' +
  "a trailing * matches a prefix (conn*). Any other character (/ . : - ' etc.) must be inside double quotes: " +
  'write "GET /api" or "db.example.com"; a double quote inside a phrase is written twice.';

/** A search query FTS5 cannot parse. The message quotes the query; `suggestion` explains the syntax. */
export class SearchSyntaxError extends UsageError {
  /** The query as given. */
  readonly query: string;
  /** What SQLite said. */
  readonly detail: string;

  constructor(query: string, detail: string) {
    super(`cannot search for ${JSON.stringify(query)}: ${detail}`, { suggestion: explain(query, detail) });
    this.query = query;
    this.detail = detail;
  }
}

function explain(query: string, detail: string): string {
  const quoted = `"${query.replaceAll('"', '""')}"`;
  const specific = /^no such column: /.test(detail)
    ? `A word followed by ":" names a column (the only one is "text"), and a leading "-" is a column filter too. `
    : /^unterminated string/.test(detail)
    ? "A double quote opens a phrase that must be closed. "
    : /^unknown special query/.test(detail)
    ? "A * must follow a word (conn*). "
    : "";
  const literal = query.trim() ? ` To search for the text as it is, quote it: ${quoted}` : "";
  return `${specific}${SEARCH_SYNTAX_HELP}${literal}`;
}

/** SQLite errors that mean the MATCH expression is invalid (rather than a bug). */
const FTS_QUERY_ERROR = /^(fts5: |no such column: |unterminated string|unknown special query)/;

interface ServerRow {
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

interface AppRow {
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
  fetched_at: number;
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

interface LineRow {
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

const SERVER_COLUMNS =
  "name, host, last_attempt, last_ok, last_error, last_duration_ms, last_bytes, pulls, errors, limits";
const APP_COLUMNS = "server, app, type, status, healthy, version, commit_sha, deployed, last_health_check, port, " +
  "strategy, last_deploy, fetched_at";
/** The columns of a {@link DeploymentRecord}. */
export const DEPLOYMENT_COLUMNS =
  "id, server, app, at, outcome, release, commit_sha, version, duration_ms, step, message";
/** The columns of a {@link CertificateRecord}. */
export const CERTIFICATE_COLUMNS =
  "server, app, names, source, issuer, not_before, not_after, last_error, last_error_at, " +
  "next_attempt_at";
const LINE_COLUMNS = "lines.id, lines.file_id, lines.server, lines.app, lines.file, lines.offset, lines.ts, " +
  "lines.kind, lines.text";

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

/** Every server with its apps, and apps counted by state. */
export function fleetOverview(store: FleetStore, view: FreshnessView): FleetOverview {
  const servers = store.sql(`SELECT ${SERVER_COLUMNS} FROM servers ORDER BY name`).all() as unknown as ServerRow[];
  const apps = store.sql(`SELECT ${APP_COLUMNS} FROM apps ORDER BY server, app`).all() as unknown as AppRow[];
  const certificates = certificatesBy(
    store.sql(`SELECT ${CERTIFICATE_COLUMNS} FROM certificates`).all() as unknown as CertificateRecord[],
    view.now,
  );
  const byServer = new Map<string, AppRow[]>();
  for (const app of apps) {
    const list = byServer.get(app.server);
    if (list) list.push(app);
    else byServer.set(app.server, [app]);
  }
  const counts = { healthy: 0, unhealthy: 0, stale: 0, unreachable: 0 };
  const views = servers.map((row) => {
    const server = serverView(row, view);
    const appViews = (byServer.get(row.name) ?? []).map((app) => appView(app, server.state, certificates));
    for (const app of appViews) counts[app.state === "fresh" ? "healthy" : app.state]++;
    return { ...server, apps: appViews };
  });
  return { generatedAt: new Date(view.now).toISOString(), counts, servers: views };
}

/** One server with its apps, 20 newest deployments and 50 newest error.log lines; undefined when unknown. */
export function serverDetail(store: FleetStore, name: string, view: FreshnessView): ServerDetail | undefined {
  const row = store.sql(`SELECT ${SERVER_COLUMNS} FROM servers WHERE name = ?`).get(name) as ServerRow | undefined;
  if (!row) return undefined;
  const server = serverView(row, view);
  const apps = store.sql(`SELECT ${APP_COLUMNS} FROM apps WHERE server = ? ORDER BY app`).all(
    name,
  ) as unknown as AppRow[];
  const deployed = store.sql(
    `SELECT ${DEPLOYMENT_COLUMNS} FROM deployments WHERE server = ? ORDER BY id DESC LIMIT 20`,
  ).all(name) as unknown as DeploymentRecord[];
  const errorLines = store.sql(
    `SELECT ${LINE_COLUMNS} FROM lines WHERE server = ? AND file = 'error.log' ORDER BY id DESC LIMIT 50`,
  ).all(name) as unknown as LineRow[];
  const certificates = certificatesBy(
    store.sql(`SELECT ${CERTIFICATE_COLUMNS} FROM certificates WHERE server = ?`).all(
      name,
    ) as unknown as CertificateRecord[],
    view.now,
  );
  return {
    ...server,
    pulls: row.pulls,
    errors: row.errors,
    apps: apps.map((app) => appView(app, server.state, certificates)),
    deployments: deployed.map(deploymentView),
    errorLines: errorLines.map(lineView),
  };
}

/**
 * Full-text search of the log lines, newest first, `limit` per page (default 50, at most 500).
 * Throws {@link SearchSyntaxError} when FTS5 cannot parse `q`.
 */
export function searchLogs(store: FleetStore, params: SearchParams): SearchPage {
  const q = params.q;
  if (!q.trim()) throw new SearchSyntaxError(q, "the query is empty");
  const limit = clamp(params.limit, PAGE.default, PAGE.max);
  const where = ["lines_fts MATCH :q"];
  const values: Record<string, string | number> = { q, open: MARK_OPEN, close: MARK_CLOSE, limit: limit + 1 };
  // Bounds on lines_fts.rowid are given to FTS5 itself, which then starts its walk there.
  if (params.before !== undefined) {
    where.push("lines_fts.rowid < :before");
    values.before = params.before;
  }
  for (const key of ["server", "app", "file"] as const) {
    const value = params[key];
    if (value !== undefined) {
      where.push(`lines.${key} = :${key}`);
      values[key] = value;
    }
  }
  // `+` keeps SQLite from driving the query by the lines_ts index (then sorting every match).
  if (params.since !== undefined) {
    where.push("+lines.ts >= :since");
    values.since = params.since;
  }
  if (params.until !== undefined) {
    where.push("+lines.ts <= :until");
    values.until = params.until;
  }
  const statement = store.sql(
    `SELECT ${LINE_COLUMNS}, snippet(lines_fts, 0, :open, :close, '…', 24) AS snippet
     FROM lines_fts CROSS JOIN lines ON lines.id = lines_fts.rowid
     WHERE ${where.join(" AND ")}
     ORDER BY lines_fts.rowid DESC LIMIT :limit`,
  );
  let rows: Array<LineRow & { snippet: string }>;
  try {
    rows = statement.all(values) as unknown as Array<LineRow & { snippet: string }>;
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    if (FTS_QUERY_ERROR.test(message)) throw new SearchSyntaxError(q, message);
    throw error;
  }
  const more = rows.length > limit;
  const results = rows.slice(0, limit).map((row) => ({ ...lineView(row), snippet: snippetParts(row.snippet) }));
  return more ? { results, nextBefore: results[results.length - 1].id } : { results };
}

/**
 * The lines around `offset` in one file generation: up to `lines` before and after (default 20, at
 * most 200), by offset ascending, the hit marked. Undefined when no stored line starts at `offset`.
 */
export function logContext(store: FleetStore, params: ContextParams): LogContext | undefined {
  const count = clamp(params.lines, CONTEXT_LINES.default, CONTEXT_LINES.max, 0);
  let found: LineRow | undefined;
  if (params.id !== undefined) {
    found = store.sql(`SELECT ${LINE_COLUMNS} FROM lines WHERE id = ?`).get(params.id) as LineRow | undefined;
    if (
      found && (found.server !== params.server || found.app !== params.app || found.file !== params.file ||
        found.offset !== params.offset)
    ) found = undefined;
  } else {
    // Through the server's files: each probe is one lookup in the (file_id, offset) index.
    found = store.sql(
      `SELECT ${LINE_COLUMNS} FROM lines
       WHERE file_id IN (SELECT id FROM files WHERE server = :server) AND offset = :offset AND server = :server
         AND app = :app AND file = :file
       ORDER BY file_id DESC LIMIT 1`,
    ).get({ server: params.server, app: params.app, file: params.file, offset: params.offset }) as
      | LineRow
      | undefined;
  }
  if (!found) return undefined;
  const hit = found;
  const before = store.sql(
    `SELECT ${LINE_COLUMNS} FROM lines WHERE file_id = ? AND offset < ? ORDER BY offset DESC LIMIT ?`,
  ).all(hit.file_id, hit.offset, count) as unknown as LineRow[];
  const after = store.sql(
    `SELECT ${LINE_COLUMNS} FROM lines WHERE file_id = ? AND offset > ? ORDER BY offset LIMIT ?`,
  ).all(hit.file_id, hit.offset, count) as unknown as LineRow[];
  const lines = [...before.reverse(), hit, ...after].map((row) => ({ ...lineView(row), hit: row.id === hit.id }));
  return { server: hit.server, app: hit.app, file: hit.file, fileId: hit.file_id, offset: hit.offset, lines };
}

/** Deployments, newest first, `limit` per page (default 50, at most 500). */
export function deployments(store: FleetStore, params: DeploymentParams = {}): DeploymentPage {
  const limit = clamp(params.limit, PAGE.default, PAGE.max);
  const where: string[] = [];
  const values: Record<string, string | number> = { limit: limit + 1 };
  for (const key of ["server", "app", "before"] as const) {
    const value = params[key];
    if (value === undefined) continue;
    where.push(key === "before" ? "id < :before" : `${key} = :${key}`);
    values[key] = value;
  }
  const rows = store.sql(
    `SELECT ${DEPLOYMENT_COLUMNS} FROM deployments ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
     ORDER BY id DESC LIMIT :limit`,
  ).all(values) as unknown as DeploymentRecord[];
  const list = rows.slice(0, limit).map(deploymentView);
  return rows.length > limit ? { deployments: list, nextBefore: list[list.length - 1].id } : { deployments: list };
}

/** The fleet and the collector in the Prometheus text format (`text/plain; version=0.0.4`). */
export function metrics(store: FleetStore, view: FreshnessView, collector: CollectorStats): string {
  const overview = fleetOverview(store, view);
  const servers = store.sql(`SELECT ${SERVER_COLUMNS} FROM servers ORDER BY name`).all() as unknown as ServerRow[];
  const out: string[] = [];
  const family = (name: string, type: "gauge" | "counter", help: string, samples: string[]) => {
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, ...samples);
  };
  const apps = overview.servers.flatMap((server) => server.apps.map((app) => ({ server: server.name, app })));
  family(
    "fleet_app_healthy",
    "gauge",
    "Whether the app's last health check passed (1) or not (0).",
    apps.filter(({ app }) => app.healthy !== null).map(({ server, app }) =>
      sample("fleet_app_healthy", { server, app: app.app }, app.healthy ? 1 : 0)
    ),
  );
  family(
    "fleet_app_state",
    "gauge",
    "The app's state (fresh, stale, unreachable or unhealthy), as a label.",
    apps.map(({ server, app }) => sample("fleet_app_state", { server, app: app.app, state: app.state }, 1)),
  );
  const states = new Map(overview.servers.map((server) => [server.name, server.state]));
  family(
    "fleet_server_up",
    "gauge",
    "Whether the server's last pull worked (1) or failed (0).",
    servers.map((row) =>
      sample("fleet_server_up", { server: row.name }, states.get(row.name) === "unreachable" ? 0 : 1)
    ),
  );
  family(
    "fleet_server_last_pull_duration_seconds",
    "gauge",
    "How long the server's last pull took.",
    servers.filter((row) => row.last_duration_ms !== null).map((row) =>
      sample("fleet_server_last_pull_duration_seconds", { server: row.name }, row.last_duration_ms! / 1000)
    ),
  );
  family(
    "fleet_server_last_pull_bytes",
    "gauge",
    "Bytes transferred by the server's last pull.",
    servers.filter((row) => row.last_bytes !== null).map((row) =>
      sample("fleet_server_last_pull_bytes", { server: row.name }, row.last_bytes!)
    ),
  );
  family(
    "fleet_server_errors_total",
    "counter",
    "Failed pulls of the server.",
    servers.map((row) => sample("fleet_server_errors_total", { server: row.name }, row.errors)),
  );
  const outcomes = store.sql(
    "SELECT server, app, outcome, COUNT(*) AS n FROM deployments GROUP BY server, app, outcome ORDER BY 1, 2, 3",
  ).all() as unknown as Array<{ server: string; app: string; outcome: string; n: number }>;
  family(
    "fleet_deployments_total",
    "counter",
    "Deployments by outcome, from deploy.log.",
    outcomes.map((row) =>
      sample("fleet_deployments_total", { server: row.server, app: row.app, outcome: row.outcome }, row.n)
    ),
  );
  const lines = (store.sql("SELECT COUNT(*) AS n FROM lines").get() as { n: number }).n;
  family("fleet_log_lines", "gauge", "Log lines stored.", [sample("fleet_log_lines", {}, lines)]);
  family("fleet_collector_cycles_total", "counter", "Collector cycles run.", [
    sample("fleet_collector_cycles_total", {}, collector.cycles),
  ]);
  if (typeof collector.lastCycleMs === "number") {
    family("fleet_collector_last_cycle_seconds", "gauge", "How long the last collector cycle took.", [
      sample("fleet_collector_last_cycle_seconds", {}, collector.lastCycleMs / 1000),
    ]);
  }
  family("fleet_collector_errors_total", "counter", "Failed pulls since the collector started.", [
    sample("fleet_collector_errors_total", {}, collector.errors),
  ]);
  return out.join("\n") + "\n";
}

/** A Prometheus label value, escaped (`\\`, `\"`, `\n`). */
export function escapeLabel(value: string): string {
  return value.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n");
}

function sample(name: string, labels: Record<string, string>, value: number): string {
  const pairs = Object.entries(labels).map(([key, v]) => `${key}="${escapeLabel(v)}"`);
  const text = Number.isFinite(value) ? String(value) : Number.isNaN(value) ? "NaN" : value > 0 ? "+Inf" : "-Inf";
  return `${name}${pairs.length ? `{${pairs.join(",")}}` : ""} ${text}`;
}

/**
 * The snippet markers: control characters around a random token, so a log line that contains
 * control characters itself cannot forge a highlight.
 */
const MARK_TOKEN = crypto.randomUUID().replaceAll("-", "");
const MARK_OPEN = `\u0002${MARK_TOKEN}\u0002`;
const MARK_CLOSE = `\u0003${MARK_TOKEN}\u0003`;

/** Splits a marked snippet into text parts, the matched ones with `hit`. */
function snippetParts(marked: string): SnippetPart[] {
  const parts: SnippetPart[] = [];
  const push = (text: string, hit: boolean) => {
    if (!text) return;
    const last = parts[parts.length - 1];
    if (last && last.hit === hit) last.text += text;
    else parts.push({ text, hit });
  };
  let rest = marked;
  while (rest) {
    const open = rest.indexOf(MARK_OPEN);
    if (open < 0) {
      push(rest, false);
      break;
    }
    push(rest.slice(0, open), false);
    rest = rest.slice(open + MARK_OPEN.length);
    const close = rest.indexOf(MARK_CLOSE);
    push(close < 0 ? rest : rest.slice(0, close), true);
    rest = close < 0 ? "" : rest.slice(close + MARK_CLOSE.length);
  }
  return parts;
}

function serverView(row: ServerRow, view: FreshnessView): Omit<ServerView, "apps"> {
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
function certificatesBy(rows: CertificateRecord[], now: number): Map<string, CertificateView> {
  return new Map(rows.map((row) => [`${row.server}\0${row.app}`, certificateView(row, now)]));
}

function appView(row: AppRow, freshness: Freshness, certificates: Map<string, CertificateView>): AppView {
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
  };
}

function deploymentView(row: DeploymentRecord): DeploymentView {
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

function lineView(row: LineRow): LineView {
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

function iso(ms: number | null): string | null {
  if (ms === null) return null;
  const date = new Date(ms);
  return Number.isNaN(date.getTime()) ? null : date.toISOString();
}

function parseJson(text: string | null): unknown {
  if (text === null) return null;
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

function clamp(value: number | undefined, fallback: number, max: number, min = 1): number {
  if (value === undefined || !Number.isFinite(value)) return fallback;
  return Math.min(Math.max(min, Math.trunc(value)), max);
}
