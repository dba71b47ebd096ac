/**
 * The fleet database's schema (./store.ts): one migration per version, applied in order and
 * counted in `PRAGMA user_version`. Append only: a database already past a version never runs that
 * version's migration again.
 * @module
 */
import { FIELD } from "./limits.ts";
import { EARLIEST, RECORD_AHEAD_MS } from "./server_time.ts";

/**
 * SQL: the Julian day of the time a server wrote in `column` when it is one ./server_time.ts's
 * zonedTime takes now (the migration's time): an ISO 8601 instant with its zone (`+0200` read as
 * `+02:00`), as SQLite reads it, from {@link EARLIEST} to {@link RECORD_AHEAD_MS} past now; else NULL.
 */
function plausibleDay(column: string): string {
  const digits = (n: number) => "[0-9]".repeat(n);
  const zoned = `CASE WHEN ${column} GLOB '*[+-]${digits(4)}'
    THEN substr(${column}, 1, length(${column}) - 2) || ':' || substr(${column}, -2) ELSE ${column} END`;
  const shape = `${column} GLOB '${digits(4)}-${digits(2)}-${digits(2)}T${digits(2)}:${digits(2)}*'
    AND (${column} GLOB '*Z' OR ${column} GLOB '*[+-]${digits(2)}:${digits(2)}' OR ${column} GLOB '*[+-]${digits(4)}')`;
  const earliest = EARLIEST / 86_400_000 + 2_440_587.5; // the Unix epoch is Julian day 2440587.5
  return `(SELECT day FROM (SELECT CASE WHEN ${shape} THEN julianday(${zoned}) END AS day)
    WHERE day BETWEEN ${earliest} AND julianday('now') + ${RECORD_AHEAD_MS / 86_400_000})`;
}

/** SQL: {@link plausibleDay} as ISO in UTC (`2026-12-06T11:00:00.000Z`, as ingestion stores it), else NULL. */
const plausibleIso = (column: string) => `strftime('%Y-%m-%dT%H:%M:%fZ', ${plausibleDay(column)})`;

/** The schema, one migration per version (PRAGMA user_version). */
export const MIGRATIONS: string[] = [
  `CREATE TABLE servers (
     name TEXT PRIMARY KEY,
     host TEXT NOT NULL,
     last_attempt INTEGER,
     last_ok INTEGER,
     last_error TEXT,
     last_duration_ms INTEGER,
     last_bytes INTEGER,
     pulls INTEGER NOT NULL DEFAULT 0,
     errors INTEGER NOT NULL DEFAULT 0
   );
   CREATE TABLE apps (
     server TEXT NOT NULL,
     app TEXT NOT NULL,
     type TEXT,
     status TEXT,
     healthy INTEGER,
     version TEXT,
     commit_sha TEXT,
     deployed TEXT,
     last_health_check TEXT,
     port INTEGER,
     strategy TEXT,
     last_deploy TEXT,
     fetched_at INTEGER NOT NULL,
     PRIMARY KEY (server, app)
   );
   CREATE TABLE status_history (
     id INTEGER PRIMARY KEY,
     server TEXT NOT NULL,
     app TEXT NOT NULL,
     at INTEGER NOT NULL,
     status TEXT,
     healthy INTEGER,
     version TEXT
   );
   CREATE INDEX status_history_app ON status_history (server, app, id);
   CREATE TABLE files (
     id INTEGER PRIMARY KEY,
     server TEXT NOT NULL,
     path TEXT NOT NULL,
     generation INTEGER NOT NULL,
     ino INTEGER,
     head_hash TEXT NOT NULL,
     head_len INTEGER NOT NULL,
     offset INTEGER NOT NULL,
     current INTEGER NOT NULL DEFAULT 1,
     UNIQUE (server, path, generation)
   );
   CREATE TABLE deployments (
     id INTEGER PRIMARY KEY,
     server TEXT NOT NULL,
     app TEXT NOT NULL,
     at TEXT NOT NULL,
     outcome TEXT NOT NULL,
     release TEXT,
     commit_sha TEXT,
     version TEXT,
     duration_ms INTEGER,
     step TEXT,
     message TEXT,
     file_id INTEGER NOT NULL,
     offset INTEGER NOT NULL,
     UNIQUE (file_id, offset)
   );
   CREATE INDEX deployments_app ON deployments (server, app, id);
   CREATE TABLE lines (
     id INTEGER PRIMARY KEY,
     file_id INTEGER NOT NULL,
     offset INTEGER NOT NULL,
     server TEXT NOT NULL,
     app TEXT NOT NULL,
     file TEXT NOT NULL,
     ts INTEGER NOT NULL,
     kind TEXT NOT NULL DEFAULT 'line',
     text TEXT NOT NULL,
     UNIQUE (file_id, offset)
   );
   CREATE INDEX lines_ts ON lines (ts);
   CREATE INDEX lines_server_file ON lines (server, file, id);
   CREATE VIRTUAL TABLE lines_fts USING fts5(text, content='lines', content_rowid='id');`,
  // 2: each app's certificate, from the server's .tls/certificates.json (names: a JSON array).
  `CREATE TABLE certificates (
     server TEXT NOT NULL,
     app TEXT NOT NULL,
     names TEXT NOT NULL,
     source TEXT,
     issuer TEXT,
     not_before TEXT,
     not_after TEXT,
     last_error TEXT,
     last_error_at TEXT,
     next_attempt_at TEXT,
     fetched_at INTEGER NOT NULL,
     PRIMARY KEY (server, app)
   );`,
  // 3: what the collector's limits refused or cut in a server's last pull (a JSON array of lines);
  // and values stored before there were field limits cut to them.
  `ALTER TABLE servers ADD COLUMN limits TEXT;
   UPDATE apps SET last_deploy = json_object('cut', length(last_deploy)) WHERE length(last_deploy) > ${FIELD.lastDeploy};
   ${
    [
      ["servers", "last_error", FIELD.message],
      ...["type", "status", "version", "commit_sha", "deployed", "last_health_check", "strategy"]
        .map((column) => ["apps", column, FIELD.short]),
      ...["status", "version"].map((column) => ["status_history", column, FIELD.short]),
      ...["release", "commit_sha", "version", "step", "at"].map((column) => ["deployments", column, FIELD.short]),
      ["deployments", "message", FIELD.message],
      ["certificates", "last_error", FIELD.message],
      ...["source", "issuer", "not_before", "not_after", "last_error_at", "next_attempt_at"]
        .map((column) => ["certificates", column, FIELD.short]),
    ].map(([table, column, max]) =>
      `UPDATE ${table} SET ${column} = substr(${column}, 1, ${max}) WHERE length(${column}) > ${max};`
    ).join("\n   ")
  }
   UPDATE certificates SET names = '[]' WHERE length(names) > ${FIELD.names};`,
  // 4: each app's maintenance mode, from its status.json (JSON, see store.ts's maintenanceJson; null when off).
  `ALTER TABLE apps ADD COLUMN maintenance TEXT;`,
  // 5: each app's processes, from its status.json (JSON, see store.ts's processesJson; null when it lists none),
  // and the last run of each of its cron jobs, from its cron.log lines as they are ingested (see ingest.ts).
  `ALTER TABLE apps ADD COLUMN processes TEXT;
   CREATE TABLE cron_runs (
     server TEXT NOT NULL,
     app TEXT NOT NULL,
     job TEXT NOT NULL,
     release TEXT,
     start_at TEXT,
     end_at TEXT,
     exit_code INTEGER,
     duration_ms INTEGER,
     outcome TEXT NOT NULL,
     reason TEXT,
     file_id INTEGER NOT NULL,
     offset INTEGER NOT NULL,
     PRIMARY KEY (server, app, job)
   );`,
  // 6: server metrics, one sample per server per pull (./server_metrics.ts; ./metric_store.ts keeps them): raw
  // rows for 48 h, then 5-minute averages (`n` raw rows each) for the retention period; each server's last raw
  // counters (for CPU and network deltas) and the mount points it showed (when last: new ones a day are capped);
  // and the proxy's request windows of each app (metrics.log), keyed by the window's end, downsampled the same
  // way (`n` windows each, keyed by the bucket's end; p50/p95 weighted by requests), and summed per 1, 4 and 12
  // hours as they come (request_rollups: the overview's sparklines read those, a range of (step, ts)). Every
  // other key starts (server, ts), so time ranges of a server, which every query and the downsampling read, are
  // ranges of the key.
  `${
    ["", "_5m"].map((suffix) =>
      `CREATE TABLE server_samples${suffix} (
     server TEXT NOT NULL,
     ts INTEGER NOT NULL,
     cpu REAL, load1 REAL, load5 REAL, load15 REAL, load_per_core REAL, memory REAL, swap REAL,
     net_rx REAL, net_tx REAL, uptime REAL,
     missing TEXT,
     n INTEGER NOT NULL DEFAULT 1,
     PRIMARY KEY (server, ts)
   ) WITHOUT ROWID;
   CREATE TABLE fs_samples${suffix} (
     server TEXT NOT NULL,
     ts INTEGER NOT NULL,
     mount TEXT NOT NULL,
     used REAL, inodes REAL,
     n INTEGER NOT NULL DEFAULT 1,
     PRIMARY KEY (server, ts, mount)
   ) WITHOUT ROWID;
   CREATE TABLE request_minutes${suffix} (
     server TEXT NOT NULL,
     app TEXT NOT NULL,
     ts INTEGER NOT NULL,
     requests INTEGER NOT NULL,
     errors INTEGER NOT NULL,
     other INTEGER NOT NULL,
     p50 REAL, p95 REAL,
     n INTEGER NOT NULL DEFAULT 1,
     PRIMARY KEY (server, ts, app)
   ) WITHOUT ROWID;`
    ).join("\n   ")
  }
   CREATE TABLE request_rollups (
     step INTEGER NOT NULL,
     ts INTEGER NOT NULL,
     server TEXT NOT NULL,
     app TEXT NOT NULL,
     requests INTEGER NOT NULL,
     errors INTEGER NOT NULL,
     PRIMARY KEY (step, ts, server, app)
   ) WITHOUT ROWID;
   CREATE TABLE fs_mounts (
     server TEXT NOT NULL,
     mount TEXT NOT NULL,
     last_ts INTEGER NOT NULL,
     PRIMARY KEY (server, mount)
   ) WITHOUT ROWID;
   CREATE TABLE server_counters (
     server TEXT PRIMARY KEY,
     ts INTEGER NOT NULL,
     cpu_busy REAL, cpu_total REAL, net_rx REAL, net_tx REAL, uptime REAL
   );`,
  // 7: rollouts from this laptop (../rollout/): one row per `rollout` run and one per server it touched (its wave,
  // outcome, durations, the version before and after); and an app's canary as its status.json last said it.
  `CREATE TABLE rollouts (
     id INTEGER PRIMARY KEY,
     app TEXT NOT NULL,
     ref TEXT NOT NULL,
     commit_sha TEXT NOT NULL,
     started_at INTEGER NOT NULL,
     finished_at INTEGER,
     outcome TEXT NOT NULL,
     options TEXT NOT NULL,
     message TEXT
   );
   CREATE INDEX rollouts_app ON rollouts (app, id);
   CREATE TABLE rollout_servers (
     rollout INTEGER NOT NULL,
     server TEXT NOT NULL,
     wave INTEGER NOT NULL,
     outcome TEXT NOT NULL,
     started_at INTEGER,
     duration_ms INTEGER,
     version_before TEXT,
     version_after TEXT,
     message TEXT,
     PRIMARY KEY (rollout, server)
   ) WITHOUT ROWID;
   ALTER TABLE apps ADD COLUMN canary TEXT;`,
  // 8: each server's lines in order, for retention's share of each server (./store.ts retain).
  `CREATE INDEX lines_server ON lines (server, id);`,
  // 9: each server's deployments, status changes and request rollups in order, for the caps per server
  // (./store.ts retain, ./metric_store.ts capRequestRows).
  `CREATE INDEX deployments_server ON deployments (server, id);
   CREATE INDEX status_history_server ON status_history (server, id);
   CREATE INDEX request_rollups_server ON request_rollups (server, ts);`,
  // 10: U+FFFE and U+FFFF mark search hits now (./log_queries.ts): lines stored before lose theirs,
  // as ingestion does to new lines (U+FFFD splits words as they did: the full-text index still holds).
  `UPDATE lines SET text = replace(replace(text, char(65534), char(65533)), char(65535), char(65533))
   WHERE instr(text, char(65534)) > 0 OR instr(text, char(65535)) > 0;`,
  // 11: when each file's ledger was last in a pull (epoch ms; the ones before: now), so that those of
  // files gone that nothing refers to are forgotten (./store.ts retain), or a server making up file
  // names would grow them without end; and ids never reused (AUTOINCREMENT): lines, deployments and
  // cron runs are unique by (file_id, offset), so a new ledger must not take a forgotten one's id.
  `CREATE TABLE files_11 (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     server TEXT NOT NULL,
     path TEXT NOT NULL,
     generation INTEGER NOT NULL,
     ino INTEGER,
     head_hash TEXT NOT NULL,
     head_len INTEGER NOT NULL,
     offset INTEGER NOT NULL,
     current INTEGER NOT NULL DEFAULT 1,
     seen INTEGER NOT NULL DEFAULT 0,
     UNIQUE (server, path, generation)
   );
   INSERT INTO files_11 (id, server, path, generation, ino, head_hash, head_len, offset, current, seen)
     SELECT id, server, path, generation, ino, head_hash, head_len, offset, current,
       CAST(strftime('%s', 'now') AS INTEGER) * 1000 FROM files;
   DROP TABLE files;
   ALTER TABLE files_11 RENAME TO files;`,
  // 12: times stored before they were checked (./ingest.ts's deploymentOf and cronRunOf), checked as they are
  // now, against the migration's time (when a row was pulled is not stored): a deployment whose time is not one
  // (far in the future, before 2000, text such as a Slack mention) is removed (its pull's time, which ingestion
  // takes instead, is not known: any other would be made up, and would place it among the newest deploys); a
  // cron run's start and end become NULL (not known), as ingestion makes them. The others in UTC, as ISO.
  `DELETE FROM deployments WHERE ${plausibleDay("at")} IS NULL;
   UPDATE deployments SET at = coalesce(${plausibleIso("at")}, at); -- one a moment past the limit by now: kept
   UPDATE cron_runs SET start_at = ${plausibleIso("start_at")}, end_at = ${plausibleIso("end_at")};`,
  // 13: each app's cron jobs as its status.json names them (the serving release's; NULL: it does not say),
  // so that the alert rules judge only those (./rule_inputs.ts): a job removed from the app stops being watched.
  `ALTER TABLE apps ADD COLUMN cron_jobs TEXT;`,
];
