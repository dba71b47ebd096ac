/**
 * The fleet database (`~/.fleet-monitor/data/fleet.db`, SQLite through node:sqlite, WAL): servers,
 * apps with their status history and certificates, deployments from deploy.log, and every log
 * line with a full-text index (an FTS5 external-content table filled by explicit inserts in the
 * same transaction: triggers are 4× slower). Log lines are keyed on (file, offset), and a file's
 * ledger (where ingestion stopped) moves in the same transaction as its lines, so the same bytes
 * are never ingested twice. The tables' history is ./migrations.ts.
 *
 * One file on purpose (over 400 lines): {@link FleetStore} is the database's one writer, and its
 * methods share the connection, the prepared-statement cache and the transactions that keep a
 * file's ledger and its lines together.
 * @module
 */
import { DatabaseSync, type StatementSync } from "node:sqlite";
import { dirname } from "node:path";
import type { CertificateState } from "../proxy/cert_state.ts";
import { canaryJson } from "./canary_status.ts";
import { capLimits, capText, FIELD, MAX_CRON_JOBS, MAX_PROCESSES } from "./limits.ts";
import { MIGRATIONS } from "./migrations.ts";
import { JOB_NAME, JOB_NAME_MAX } from "../cron/job.ts";
import type { CronRunView } from "./views.ts";

/** A string value cut to `max` characters; anything else (a number, an object) → null. */
const str = (value: unknown, max: number = FIELD.short) => capText(value, max);

/** Allow-list entries of an app in maintenance kept (then `and N more`). */
const MAX_ALLOW_SHOWN = 20;

/**
 * status.json's `maintenance` (hostile input, like the rest) as stored: `{since, message, allow,
 * retryAfter}` with each field checked and cut to the field limits, or `{error}`; null when the
 * app is not in maintenance (or the value is not an object).
 */
export function maintenanceJson(value: unknown): string | null {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return null;
  const record = value as Record<string, unknown>;
  if (record.error !== undefined) return JSON.stringify({ error: str(record.error, FIELD.message) ?? "not valid" });
  const allow = Array.isArray(record.allow) ? record.allow.filter((entry) => typeof entry === "string") : [];
  const shown = allow.slice(0, MAX_ALLOW_SHOWN).map((entry) => str(entry)!);
  if (allow.length > MAX_ALLOW_SHOWN) shown.push(`and ${allow.length - MAX_ALLOW_SHOWN} more`);
  const retryAfter = Number.isSafeInteger(record.retryAfter) ? record.retryAfter : null;
  return JSON.stringify({
    since: str(record.since),
    message: str(record.message, FIELD.message),
    allow: shown,
    retryAfter,
  });
}

/** A whole number (pid, instance, restarts) from hostile input: a safe integer ≥ 0, else null. */
const count = (value: unknown): number | null =>
  Number.isSafeInteger(value) && (value as number) >= 0 ? value as number : null;

/** One process as stored (see {@link processesJson}). */
export interface ProcessRecord {
  /** `web` or the worker's type; `?` when status.json gave none. */
  type: string;
  instance: number | null;
  name: string | null;
  pid: number | null;
  /** The manager's word (online, errored; active, failed…); `unknown` when status.json gave none. */
  state: string;
  restarts: number | null;
}

/**
 * status.json's `processes` (hostile input: a compromised server writes what it likes) as stored:
 * `{list, total}` with at most {@link MAX_PROCESSES} entries, each field type-checked and cut to
 * the field limits (entries that are not objects are dropped), `total` the length of the list it
 * sent; null when it sent no list (an older deploy-paradigm, or a manager that cannot say).
 */
export function processesJson(value: unknown): string | null {
  if (!Array.isArray(value)) return null;
  const list: ProcessRecord[] = [];
  for (const entry of value) {
    if (list.length >= MAX_PROCESSES) break;
    if (entry === null || typeof entry !== "object" || Array.isArray(entry)) continue;
    const p = entry as Record<string, unknown>;
    list.push({
      type: str(p.type) ?? "?",
      instance: count(p.instance),
      name: str(p.name),
      pid: count(p.pid),
      state: str(p.state) ?? "unknown",
      restarts: count(p.restarts),
    });
  }
  return JSON.stringify({ list, total: value.length });
}

/**
 * status.json's `cronJobs` as stored: a JSON list of the job names (at most {@link MAX_CRON_JOBS},
 * each a job name, JOB_NAME: anything else dropped), null when it sent no list (an older
 * deploy-paradigm: every job with a run is then judged).
 */
export function cronJobsJson(value: unknown): string | null {
  if (!Array.isArray(value)) return null;
  const names = value.filter((name) => typeof name === "string" && name.length <= JOB_NAME_MAX && JOB_NAME.test(name));
  return JSON.stringify(names.slice(0, MAX_CRON_JOBS));
}

/** The last run of a cron job, from one line of an app's cron.log (see ./ingest.ts's cronRunOf), and the line's byte offset in its file. */
export type CronRunRow = CronRunView & { offset: number };

/** A file's ledger that nothing refers to is forgotten once the file was absent from good pulls this long (retain). */
export const LEDGER_UNSEEN_MS = 3_600_000;
/** Lines removed per transaction by retention. */
const RETAIN_BATCH = 10_000;
/** Deployments and status changes kept per app of a server (the newest): a server that floods them trims its own. */
export const HISTORY_ROWS = 1_000;
/**
 * ...and per server, all its apps together (the newest): app names come from the server, so one
 * that makes up new ones each cycle would otherwise grow them without end.
 */
export const HISTORY_ROWS_PER_SERVER = 20 * HISTORY_ROWS;
/** The tables {@link HISTORY_ROWS} bounds. */
const HISTORY_TABLES = ["deployments", "status_history"] as const;
type HistoryTable = (typeof HISTORY_TABLES)[number];

/** The tables of a server's metrics (migration 6), removed with the server. */
const METRIC_TABLES = [
  "server_counters",
  "fs_mounts",
  "request_rollups",
  ...["server_samples", "fs_samples", "request_minutes"].flatMap((t) => [t, `${t}_5m`]),
];

/** Where ingestion of one file stopped: its generation (a new one after rotation or truncation). */
export interface FileLedger {
  id: number;
  server: string;
  path: string;
  generation: number;
  /** The inode where the source has meaningful ones (this machine's files), else null. */
  ino: number | null;
  /** SHA-256 (hex) of the first `headLen` bytes (at most 4 KiB): the file's identity. */
  headHash: string;
  headLen: number;
  /** Bytes ingested: the start of the first line not ingested yet. */
  offset: number;
}

/** One complete log line at `offset` of its file. */
export interface LogLine {
  offset: number;
  text: string;
  /** Milliseconds since 1970: the line's own timestamp, else when it was ingested. */
  ts: number;
}

/** One deploy outcome from deploy.log. */
export interface DeploymentRow {
  offset: number;
  at: string;
  outcome: string;
  release?: string;
  commit?: string;
  duration?: number;
  step?: string;
  message?: string;
}

/** The status.json fields the fleet keeps. */
export interface AppStatusJson {
  name?: string;
  type?: string;
  status?: string;
  healthy?: boolean;
  version?: string;
  commit?: string;
  deployed?: string;
  lastHealthCheck?: string;
  port?: number;
  strategy?: string;
  lastDeploy?: unknown;
  /** While the app is in maintenance (../proxy/maintenance.ts): `{since, message, allow, retryAfter}` or `{error}`. */
  maintenance?: unknown;
  /** Every process of the app (../deploy/process_list.ts's ProcessInfo): see {@link processesJson}. */
  processes?: unknown;
  /** A canary release's progress (../deploy/status.ts's CanaryStatus): see ./canary_status.ts. */
  canary?: unknown;
  /** The serving release's cron jobs, by name (../deploy/status.ts): see {@link cronJobsJson}. */
  cronJobs?: unknown;
}

/** The outcome of one pull of one server. */
export interface ContactResult {
  at: number;
  ok: boolean;
  error?: string;
  durationMs: number;
  bytes: number;
  /** What the limits refused or cut (none: the server is not marked). */
  limits?: string[];
}

/** The fleet database. */
export class FleetStore {
  readonly db: DatabaseSync;
  private readonly statements = new Map<string, StatementSync>();

  private constructor(readonly path: string) {
    this.db = new DatabaseSync(path);
    this.db.exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;");
    this.db.exec("PRAGMA foreign_keys = ON; PRAGMA cache_size = -32000;");
    this.migrate();
  }

  /**
   * Opens (creating) the database at `path`, migrated to the current schema. Its directory is
   * created 0700 and the file 0600 before SQLite opens it (SQLite gives its -wal and -shm files the
   * database file's mode); a database (or -wal, -shm) left wider by an older version is narrowed.
   */
  static async open(path: string): Promise<FleetStore> {
    if (path !== ":memory:") {
      await Deno.mkdir(dirname(path), { recursive: true, mode: 0o700 });
      (await Deno.open(path, { read: true, write: true, create: true, mode: 0o600 })).close();
      for (const file of [path, `${path}-wal`, `${path}-shm`]) {
        const mode = await Deno.stat(file).then((info) => info.mode ?? 0, () => 0);
        if (mode & 0o077) await Deno.chmod(file, 0o600);
      }
    }
    return new FleetStore(path);
  }

  /** The schema version. */
  get version(): number {
    return (this.db.prepare("PRAGMA user_version").get() as { user_version: number }).user_version;
  }

  private migrate(): void {
    const from = this.version;
    if (from > MIGRATIONS.length) {
      throw new Error(
        `${this.path} has schema version ${from}, newer than this deploy-paradigm knows (${MIGRATIONS.length}); ` +
          "upgrade deploy-paradigm",
      );
    }
    for (let version = from; version < MIGRATIONS.length; version++) {
      this.transaction(() => {
        this.db.exec(MIGRATIONS[version]);
        this.db.exec(`PRAGMA user_version = ${version + 1}`);
      });
    }
  }

  /** A cached prepared statement. */
  sql(text: string): StatementSync {
    let statement = this.statements.get(text);
    if (!statement) {
      statement = this.db.prepare(text);
      this.statements.set(text, statement);
    }
    return statement;
  }

  /** Runs `fn` in one transaction. */
  transaction<T>(fn: () => T): T {
    this.db.exec("BEGIN IMMEDIATE");
    try {
      const value = fn();
      this.db.exec("COMMIT");
      return value;
    } catch (error) {
      this.db.exec("ROLLBACK");
      throw error;
    }
  }

  close(): void {
    this.db.close();
  }

  /** Records a pull of `server`: when, whether it worked, what it cost. */
  recordContact(server: string, host: string, result: ContactResult): void {
    const limits = capLimits(result.limits ?? []);
    this.sql(
      `INSERT INTO servers (name, host, last_attempt, last_ok, last_error, last_duration_ms, last_bytes, pulls, errors,
         limits)
       VALUES (:name, :host, :at, :ok, :error, :duration, :bytes, 1, :failed, :limits)
       ON CONFLICT (name) DO UPDATE SET host = :host, last_attempt = :at,
         last_ok = COALESCE(:ok, last_ok), last_error = :error, last_duration_ms = :duration, last_bytes = :bytes,
         pulls = pulls + 1, errors = errors + :failed, limits = :limits`,
    ).run({
      name: server,
      host,
      at: result.at,
      ok: result.ok ? result.at : null,
      error: result.ok ? null : str(result.error ?? "failed", FIELD.message),
      limits: limits.length ? JSON.stringify(limits) : null,
      duration: Math.round(result.durationMs),
      bytes: result.bytes,
      failed: result.ok ? 0 : 1,
    });
  }

  /** Keeps the configured servers only (a server removed from the config leaves the overview, and its metrics go). */
  keepServers(names: string[]): void {
    const list = JSON.stringify(names);
    this.transaction(() => {
      this.sql("DELETE FROM servers WHERE name NOT IN (SELECT value FROM json_each(?))").run(list);
      this.sql("DELETE FROM apps WHERE server NOT IN (SELECT value FROM json_each(?))").run(list);
      this.sql("DELETE FROM certificates WHERE server NOT IN (SELECT value FROM json_each(?))").run(list);
      this.sql("DELETE FROM cron_runs WHERE server NOT IN (SELECT value FROM json_each(?))").run(list);
      // and its metrics: a server added again starts afresh (no deltas against its old counters)
      for (const table of METRIC_TABLES) {
        this.sql(`DELETE FROM ${table} WHERE server NOT IN (SELECT value FROM json_each(?))`).run(list);
      }
    });
  }

  /** Replaces a server's certificates (by app) with `certificates`, as pulled at `at`, in one transaction. */
  replaceCertificates(server: string, certificates: ReadonlyMap<string, CertificateState>, at: number): void {
    const insert = this.sql(
      `INSERT INTO certificates (server, app, names, source, issuer, not_before, not_after, last_error, last_error_at,
         next_attempt_at, fetched_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    this.transaction(() => {
      this.sql("DELETE FROM certificates WHERE server = ?").run(server);
      for (const [app, c] of certificates) {
        const names = JSON.stringify(c.names.map((name) => str(name)));
        insert.run(
          server,
          str(app),
          names.length > FIELD.names ? "[]" : names,
          str(c.source),
          str(c.issuer),
          str(c.notBefore),
          str(c.notAfter),
          str(c.lastError, FIELD.message),
          str(c.lastErrorAt),
          str(c.nextAttemptAt),
          at,
        );
      }
    });
  }

  /**
   * Stores an app's status.json as pulled at `at`; adds a status-history row when its status,
   * health or version changed. Returns whether it changed.
   */
  upsertApp(server: string, app: string, status: AppStatusJson, at: number): boolean {
    const before = this.sql("SELECT status, healthy, version FROM apps WHERE server = ? AND app = ?").get(
      server,
      app,
    ) as
      | { status: string | null; healthy: number | null; version: string | null }
      | undefined;
    const healthy = typeof status.healthy === "boolean" ? (status.healthy ? 1 : 0) : null;
    const [state, version] = [str(status.status), str(status.version)];
    const changed = !before || before.status !== state || before.healthy !== healthy || before.version !== version;
    const lastDeploy = status.lastDeploy === undefined ? null : JSON.stringify(status.lastDeploy) ?? null;
    this.transaction(() => {
      this.sql(
        `INSERT INTO apps (server, app, type, status, healthy, version, commit_sha, deployed, last_health_check, port,
           strategy, last_deploy, maintenance, processes, canary, cron_jobs, fetched_at)
         VALUES (:server, :app, :type, :status, :healthy, :version, :commit, :deployed, :check, :port, :strategy,
           :lastDeploy, :maintenance, :processes, :canary, :cronJobs, :at)
         ON CONFLICT (server, app) DO UPDATE SET type = :type, status = :status, healthy = :healthy,
           version = :version, commit_sha = :commit, deployed = :deployed, last_health_check = :check, port = :port,
           strategy = :strategy, last_deploy = :lastDeploy, maintenance = :maintenance, processes = :processes,
           canary = :canary, cron_jobs = :cronJobs, fetched_at = :at`,
      ).run({
        server,
        app,
        type: str(status.type),
        status: state,
        healthy,
        version,
        commit: str(status.commit),
        deployed: str(status.deployed),
        check: str(status.lastHealthCheck),
        port: Number.isSafeInteger(status.port) ? status.port! : null,
        strategy: str(status.strategy),
        lastDeploy: lastDeploy !== null && lastDeploy.length > FIELD.lastDeploy
          ? JSON.stringify({ cut: lastDeploy.length })
          : lastDeploy,
        maintenance: maintenanceJson(status.maintenance),
        processes: processesJson(status.processes),
        canary: canaryJson(status.canary),
        cronJobs: cronJobsJson(status.cronJobs),
        at,
      });
      if (changed) {
        this.sql(
          "INSERT INTO status_history (server, app, at, status, healthy, version) VALUES (?, ?, ?, ?, ?, ?)",
        ).run(server, app, at, state, healthy, version);
      }
    });
    return changed;
  }

  /** Forgets apps of `server` whose status.json is gone (and the last runs of their cron jobs). */
  keepApps(server: string, apps: string[]): void {
    this.transaction(() => {
      for (const table of ["apps", "cron_runs"]) {
        this.sql(`DELETE FROM ${table} WHERE server = ? AND app NOT IN (SELECT value FROM json_each(?))`)
          .run(server, JSON.stringify(apps));
      }
    });
  }

  /** The current ledger of a file, if it was ever seen. */
  ledger(server: string, path: string): FileLedger | undefined {
    const row = this.sql(
      `SELECT id, server, path, generation, ino, head_hash AS headHash, head_len AS headLen, offset
       FROM files WHERE server = ? AND path = ? AND current = 1`,
    ).get(server, path) as FileLedger | undefined;
    return row ? { ...row } : undefined;
  }

  /**
   * Starts a new generation of a file (first sight, rotation or truncation) at offset 0, with its
   * "gap possible" marker line when one is given (in the same transaction).
   */
  newGeneration(
    server: string,
    path: string,
    ino: number | null,
    headHash: string,
    headLen: number,
    marker?: { app: string; file: string; line: LogLine },
    seen = Date.now(),
  ): FileLedger {
    return this.transaction(() => {
      const last = this.sql("SELECT MAX(generation) AS g FROM files WHERE server = ? AND path = ?").get(
        server,
        path,
      ) as {
        g: number | null;
      };
      this.sql("UPDATE files SET current = 0 WHERE server = ? AND path = ?").run(server, path);
      const generation = (last.g ?? 0) + 1;
      const { lastInsertRowid } = this.sql(
        `INSERT INTO files (server, path, generation, ino, head_hash, head_len, offset, seen)
         VALUES (?, ?, ?, ?, ?, ?, 0, ?)`,
      ).run(server, path, generation, ino, headHash, headLen, seen);
      const ledger = { id: Number(lastInsertRowid), server, path, generation, ino, headHash, headLen, offset: 0 };
      if (marker) this.insertLines(ledger, marker.app, marker.file, [marker.line], "gap");
      return ledger;
    });
  }

  /**
   * Adds complete lines of a file and moves its ledger to `ledger.offset`, in one transaction.
   * A line already stored at its (file, offset) is skipped. Returns how many were added.
   */
  ingestLines(ledger: FileLedger, app: string, file: string, lines: LogLine[], kind = "line"): number {
    return this.transaction(() => {
      const added = this.insertLines(ledger, app, file, lines, kind);
      this.saveLedger(ledger);
      return added;
    });
  }

  /**
   * Adds complete lines of an app's cron.log like {@link ingestLines} (they are searchable log lines
   * like any other), and keeps each job's last run from `runs` (the lines that are runs), in the
   * same transaction: a run replaces its job's stored one unless that came from a later place in
   * the log (file generation, then offset). At most {@link MAX_CRON_JOBS} jobs are kept per app: past
   * it, the jobs whose last run came earliest in the log are forgotten. Returns the lines added and
   * how many jobs were forgotten.
   */
  ingestCronLines(
    ledger: FileLedger,
    app: string,
    file: string,
    lines: LogLine[],
    runs: CronRunRow[],
  ): { added: number; forgotten: number } {
    const upsert = this.sql(
      `INSERT INTO cron_runs (server, app, job, release, start_at, end_at, exit_code, duration_ms, outcome, reason,
         file_id, offset)
       VALUES (:server, :app, :job, :release, :start, :end, :exitCode, :durationMs, :outcome, :reason, :fileId,
         :offset)
       ON CONFLICT (server, app, job) DO UPDATE SET release = :release, start_at = :start, end_at = :end,
         exit_code = :exitCode, duration_ms = :durationMs, outcome = :outcome, reason = :reason, file_id = :fileId,
         offset = :offset
       WHERE file_id < :fileId OR (file_id = :fileId AND offset <= :offset)`,
    );
    return this.transaction(() => {
      const added = this.insertLines(ledger, app, file, lines, "line");
      for (const run of runs) {
        upsert.run({
          server: ledger.server,
          app,
          job: str(run.job) ?? "?",
          release: str(run.release),
          start: str(run.start),
          end: str(run.end),
          exitCode: Number.isSafeInteger(run.exitCode) ? run.exitCode : null,
          durationMs: count(run.durationMs),
          outcome: str(run.outcome) ?? "?",
          reason: str(run.reason, FIELD.message),
          fileId: ledger.id,
          offset: run.offset,
        });
      }
      let forgotten = 0;
      if (runs.length) {
        forgotten = Number(
          this.sql(
            `DELETE FROM cron_runs WHERE server = :server AND app = :app AND job NOT IN (
               SELECT job FROM cron_runs WHERE server = :server AND app = :app
               ORDER BY file_id DESC, offset DESC LIMIT ${MAX_CRON_JOBS})`,
          ).run({ server: ledger.server, app }).changes,
        );
      }
      this.saveLedger(ledger);
      return { added, forgotten };
    });
  }

  /** Inserts lines and their index entries (inside a transaction); returns how many were new. */
  private insertLines(ledger: FileLedger, app: string, file: string, lines: LogLine[], kind: string): number {
    const insert = this.sql(
      `INSERT OR IGNORE INTO lines (file_id, offset, server, app, file, ts, kind, text) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    const index = this.sql("INSERT INTO lines_fts (rowid, text) VALUES (?, ?)");
    let added = 0;
    for (const line of lines) {
      const result = insert.run(ledger.id, line.offset, ledger.server, app, file, line.ts, kind, line.text);
      if (result.changes) {
        index.run(result.lastInsertRowid, line.text);
        added++;
      }
    }
    return added;
  }

  /** Adds deploy outcomes of a deploy.log and moves its ledger, in one transaction. */
  ingestDeployments(ledger: FileLedger, app: string, rows: DeploymentRow[]): number {
    const insert = this.sql(
      `INSERT OR IGNORE INTO deployments (server, app, at, outcome, release, commit_sha, version, duration_ms, step,
         message, file_id, offset) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    return this.transaction(() => {
      let added = 0;
      for (const row of rows) {
        added += Number(
          insert.run(
            ledger.server,
            app,
            str(row.at),
            str(row.outcome),
            str(row.release),
            str(row.commit),
            str(row.commit?.slice(0, 7)),
            Number.isFinite(row.duration) ? row.duration! : null,
            str(row.step),
            str(row.message, FIELD.message),
            ledger.id,
            row.offset,
          ).changes,
        );
      }
      this.saveLedger(ledger);
      return added;
    });
  }

  /** Marks the current ledgers of `paths` (a server's log files in a pull) as seen at `ts`. */
  touchLedgers(server: string, paths: string[], ts: number): void {
    this.sql("UPDATE files SET seen = ? WHERE server = ? AND current = 1 AND path IN (SELECT value FROM json_each(?))")
      .run(ts, server, JSON.stringify(paths));
  }

  /** Writes a file's ledger (offset and identity). */
  saveLedger(ledger: FileLedger): void {
    this.sql("UPDATE files SET offset = ?, ino = ?, head_hash = ?, head_len = ? WHERE id = ?")
      .run(ledger.offset, ledger.ino, ledger.headHash, ledger.headLen, ledger.id);
  }

  /**
   * Enforces retention: log lines older than `days` (by their timestamp) and, beyond `maxLines` in
   * all, each server's oldest past its share are removed with their full-text entries; and each
   * app's deployments and status changes beyond its newest {@link HISTORY_ROWS}, and each server's
   * beyond its newest {@link HISTORY_ROWS_PER_SERVER}. In batches that
   * let the event loop (the API) run in between. Returns how many lines were removed.
   *
   * The shares are fair, not first come: servers with fewer lines than an equal share keep them
   * all, and the rest of `maxLines` is split equally among the others. So a server that floods its
   * logs trims its own history, never another's.
   */
  async retain(options: { days?: number; maxLines?: number; now?: number }): Promise<number> {
    const now = options.now ?? Date.now();
    let removed = 0;
    /** Removes the rows of `table` that `select` (their ids, oldest first, with `params`) picks, a batch at a time. */
    const batches = async (table: "lines" | HistoryTable, select: string, ...params: (string | number)[]) => {
      while (true) {
        const ids = (this.sql(`${select} LIMIT ${RETAIN_BATCH}`).all(...params) as { id: number }[]).map((r) => r.id);
        if (!ids.length) return;
        const list = JSON.stringify(ids);
        this.transaction(() => {
          if (table === "lines") {
            this.sql(
              `INSERT INTO lines_fts (lines_fts, rowid, text)
               SELECT 'delete', id, text FROM lines WHERE id IN (SELECT value FROM json_each(?))`,
            ).run(list);
          }
          const changes =
            this.sql(`DELETE FROM ${table} WHERE id IN (SELECT value FROM json_each(?))`).run(list).changes;
          if (table === "lines") removed += Number(changes);
        });
        await new Promise((resolve) => setTimeout(resolve, 0));
      }
    };
    if (options.days !== undefined) {
      await batches("lines", "SELECT id FROM lines WHERE ts < ?", now - options.days * 86_400_000);
    }
    if (options.maxLines !== undefined) {
      const counts = this.sql("SELECT server, count(*) AS n FROM lines GROUP BY server ORDER BY n").all() as {
        server: string;
        n: number;
      }[];
      let left = options.maxLines;
      for (const [i, { server, n }] of counts.entries()) {
        const keep = Math.min(n, Math.floor(left / (counts.length - i)));
        left -= keep;
        if (keep === n) continue;
        const cut = this.sql("SELECT id FROM lines WHERE server = ? ORDER BY id DESC LIMIT 1 OFFSET ?")
          .get(server, keep) as { id: number } | undefined;
        if (cut) {
          await batches("lines", "SELECT id FROM lines WHERE server = ? AND id <= ? ORDER BY id", server, cut.id);
        }
      }
    }
    for (const table of HISTORY_TABLES) {
      const apps = this.sql(`SELECT server, app FROM ${table} GROUP BY server, app HAVING count(*) > ?`)
        .all(HISTORY_ROWS) as { server: string; app: string }[];
      for (const { server, app } of apps) {
        const cut = this.sql(`SELECT id FROM ${table} WHERE server = ? AND app = ? ORDER BY id DESC LIMIT 1 OFFSET ?`)
          .get(server, app, HISTORY_ROWS) as { id: number } | undefined;
        const select = `SELECT id FROM ${table} WHERE server = ? AND app = ? AND id <= ? ORDER BY id`;
        if (cut) await batches(table, select, server, app, cut.id);
      }
      const servers = this.sql(`SELECT server FROM ${table} GROUP BY server HAVING count(*) > ?`)
        .all(HISTORY_ROWS_PER_SERVER) as { server: string }[];
      for (const { server } of servers) {
        const cut = this.sql(`SELECT id FROM ${table} WHERE server = ? ORDER BY id DESC LIMIT 1 OFFSET ?`)
          .get(server, HISTORY_ROWS_PER_SERVER) as { id: number } | undefined;
        const select = `SELECT id FROM ${table} WHERE server = ? AND id <= ? ORDER BY id`;
        if (cut) await batches(table, select, server, cut.id);
      }
    }
    // The ledgers of files absent from their server's good pulls for an hour (gone, or older
    // generations) that nothing kept refers to: no line, deployment or cron run. Not while a server
    // is not reached (its last good pull does not move). Ids are never reused (AUTOINCREMENT), so
    // no new ledger takes a forgotten one's rows for its own.
    this.sql(
      `DELETE FROM files WHERE seen < (SELECT last_ok FROM servers WHERE servers.name = files.server) - ?
         AND NOT EXISTS (SELECT 1 FROM lines WHERE lines.file_id = files.id)
         AND NOT EXISTS (SELECT 1 FROM deployments WHERE deployments.file_id = files.id)
         AND NOT EXISTS (SELECT 1 FROM cron_runs WHERE cron_runs.file_id = files.id)`,
    ).run(LEDGER_UNSEEN_MS);
    return removed;
  }
}
