/**
 * The read side of rollouts (`deploy-paradigm rollout`, ../rollout/record.ts writes them): the
 * `rollouts` and `rollout_servers` tables of migration 7 as the API (./api_rollouts.ts) and the
 * dashboard show them, newest first, times as ISO strings, each rollout with its servers in the
 * order they were deployed (wave, then start).
 * @module
 */
import type { RolloutOutcome, ServerOutcome } from "../rollout/record.ts";
import type { FleetStore } from "./store.ts";

/** One server of a rollout. */
export interface RolloutServerView {
  server: string;
  /** 1 is the first wave (one server), then the rest N at a time. */
  wave: number;
  /** A {@link ServerOutcome} (anything else as recorded). */
  outcome: ServerOutcome | string;
  startedAt: string | null;
  durationMs: number | null;
  /** The app's version on that server before the rollout, and after it. */
  versionBefore: string | null;
  versionAfter: string | null;
  message: string | null;
}

/** One rollout of an app to several servers. */
export interface RolloutView {
  id: number;
  app: string;
  /** The ref given (`--ref`, else the branch), and the commit it named. */
  ref: string;
  commit: string;
  startedAt: string;
  finishedAt: string | null;
  /** A {@link RolloutOutcome} (anything else as recorded). */
  outcome: RolloutOutcome | string;
  message: string | null;
  /** The options it ran with (servers, parallel, on-failure…), as recorded. */
  options: Record<string, unknown>;
  servers: RolloutServerView[];
}

/** Which rollouts to list. */
export interface RolloutParams {
  app?: string;
  /** How many, newest first: default {@link ROLLOUT_PAGE}.default, at most its max. */
  limit?: number;
}

/** The page size limits of {@link listRollouts}. */
export const ROLLOUT_PAGE = { default: 20, max: 200 } as const;

interface RolloutRow {
  id: number;
  app: string;
  ref: string;
  commit_sha: string;
  started_at: number;
  finished_at: number | null;
  outcome: string;
  options: string;
  message: string | null;
}

interface RolloutServerRow {
  rollout: number;
  server: string;
  wave: number;
  outcome: string;
  started_at: number | null;
  duration_ms: number | null;
  version_before: string | null;
  version_after: string | null;
  message: string | null;
}

const ROLLOUT_COLUMNS = "id, app, ref, commit_sha, started_at, finished_at, outcome, options, message";
const SERVER_COLUMNS =
  "rollout, server, wave, outcome, started_at, duration_ms, version_before, version_after, message";
const SERVER_ORDER = "ORDER BY rollout, wave, started_at IS NULL, started_at, server";

/** Rollouts, newest first, each with its servers. */
export function listRollouts(store: FleetStore, params: RolloutParams = {}): RolloutView[] {
  const limit = Math.min(Math.max(1, Math.trunc(params.limit ?? ROLLOUT_PAGE.default)), ROLLOUT_PAGE.max);
  const rows =
    (params.app === undefined
      ? store.sql(`SELECT ${ROLLOUT_COLUMNS} FROM rollouts ORDER BY id DESC LIMIT ?`).all(limit)
      : store.sql(`SELECT ${ROLLOUT_COLUMNS} FROM rollouts WHERE app = ? ORDER BY id DESC LIMIT ?`).all(
        params.app,
        limit,
      )) as unknown as RolloutRow[];
  if (!rows.length) return [];
  const servers = store.sql(
    `SELECT ${SERVER_COLUMNS} FROM rollout_servers WHERE rollout IN (SELECT value FROM json_each(?)) ${SERVER_ORDER}`,
  ).all(JSON.stringify(rows.map((row) => row.id))) as unknown as RolloutServerRow[];
  const byRollout = new Map<number, RolloutServerView[]>();
  for (const row of servers) {
    const list = byRollout.get(row.rollout) ?? byRollout.set(row.rollout, []).get(row.rollout)!;
    list.push(serverView(row));
  }
  return rows.map((row) => rolloutView(row, byRollout.get(row.id) ?? []));
}

/** One rollout with its servers; undefined when there is none with this id. */
export function rolloutById(store: FleetStore, id: number): RolloutView | undefined {
  const row = store.sql(`SELECT ${ROLLOUT_COLUMNS} FROM rollouts WHERE id = ?`).get(id) as RolloutRow | undefined;
  if (!row) return undefined;
  const servers = store.sql(`SELECT ${SERVER_COLUMNS} FROM rollout_servers WHERE rollout = ? ${SERVER_ORDER}`)
    .all(id) as unknown as RolloutServerRow[];
  return rolloutView(row, servers.map(serverView));
}

function rolloutView(row: RolloutRow, servers: RolloutServerView[]): RolloutView {
  return {
    id: row.id,
    app: row.app,
    ref: row.ref,
    commit: row.commit_sha,
    startedAt: iso(row.started_at) ?? "",
    finishedAt: iso(row.finished_at),
    outcome: row.outcome,
    message: row.message,
    options: options(row.options),
    servers,
  };
}

function serverView(row: RolloutServerRow): RolloutServerView {
  return {
    server: row.server,
    wave: row.wave,
    outcome: row.outcome,
    startedAt: iso(row.started_at),
    durationMs: row.duration_ms,
    versionBefore: row.version_before,
    versionAfter: row.version_after,
    message: row.message,
  };
}

/** The recorded options: a JSON object, else `{}`. */
function options(text: string): Record<string, unknown> {
  try {
    const value = JSON.parse(text);
    return value !== null && typeof value === "object" && !Array.isArray(value) ? value : {};
  } catch {
    return {};
  }
}

function iso(ms: number | null): string | null {
  if (ms === null || !Number.isFinite(ms)) return null;
  const date = new Date(ms);
  return Number.isNaN(date.getTime()) ? null : date.toISOString();
}
