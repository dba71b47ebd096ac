/**
 * The write side of a rollout's record in the fleet database (migration 7's `rollouts` and
 * `rollout_servers`; ../fleet/rollouts.ts reads them): one rollouts row, `running` until it ends,
 * and one row per server, `pending` → `deploying` → its outcome, each change written as it
 * happens (so the dashboard shows a rollout while it runs). Times are epoch milliseconds;
 * versions are 7-character commit abbreviations, as the fleet's `version` elsewhere.
 * @module
 */
import type { FleetStore } from "../fleet/store.ts";

/** How a rollout ended (`running` until then). */
export type RolloutOutcome = "running" | "success" | "failed" | "rolled_back" | "stopped" | "interrupted";
/** How one server of a rollout went. */
export type ServerOutcome = "pending" | "deploying" | "success" | "failed" | "rolled_back" | "skipped" | "interrupted";

/** A server's row, as it changes. */
export interface ServerRow {
  wave: number;
  outcome: ServerOutcome;
  startedAt?: number | null;
  durationMs?: number | null;
  versionBefore?: string | null;
  versionAfter?: string | null;
  message?: string | null;
}

/** What starts a rollout's record. */
export interface RolloutStart {
  app: string;
  ref: string;
  commit: string;
  startedAt: number;
  options: Record<string, unknown>;
  servers: { name: string; wave: number; versionBefore: string | null }[];
}

/** The longest message kept (a push's last line, an error). */
const MAX_MESSAGE = 2000;
const cut = (text: string | null | undefined) => text == null ? null : text.slice(0, MAX_MESSAGE);

/** A rollout of the app still `running` in the database, and what became of its process. */
export interface RunningRollout {
  id: number;
  pid?: number;
  hostname?: string;
}

/**
 * Before a rollout of `app` starts (inside the transaction that starts it): a `running` record
 * whose process is alive on this host is returned (two rollouts of one app must not race); one
 * whose process is gone (or of a record without a pid) is marked `interrupted` (the laptop lost
 * track of it). `alive`: whether a pid runs here; a record of another host is left as it is and
 * returned.
 */
export function claimApp(
  store: FleetStore,
  app: string,
  at: number,
  host: string,
  alive: (pid: number) => boolean,
): RunningRollout | undefined {
  const rows = store.sql("SELECT id, options FROM rollouts WHERE app = ? AND outcome = 'running'").all(app) as {
    id: number;
    options: string | null;
  }[];
  for (const row of rows) {
    let options: { pid?: unknown; hostname?: unknown } = {};
    try {
      options = JSON.parse(row.options ?? "{}") ?? {};
    } catch { /* an unreadable record: lost */ }
    const pid = typeof options.pid === "number" ? options.pid : undefined;
    const hostname = typeof options.hostname === "string" ? options.hostname : undefined;
    if (pid !== undefined && (hostname !== undefined && hostname !== host || alive(pid))) {
      return { id: row.id, pid, hostname };
    }
    const lost = "the laptop lost track of it; check the server";
    store.sql(
      `UPDATE rollout_servers SET outcome = 'interrupted', message = ? WHERE rollout = ? AND outcome IN
         ('deploying', 'pending')`,
    ).run(lost, row.id);
    store.sql("UPDATE rollouts SET outcome = 'interrupted', finished_at = ?, message = ? WHERE id = ?")
      .run(at, `${lost} (its process ended without finishing the record)`, row.id);
  }
  return undefined;
}

/** One rollout's record. */
export class RolloutRecord {
  private readonly rows = new Map<string, ServerRow>();

  private constructor(private readonly store: FleetStore, readonly id: number) {}

  /**
   * Writes the rollout (`running`) and its servers (`pending`) in one transaction, after `first`
   * (in it too: see {@link claimApp}; it throws to start nothing).
   */
  static start(store: FleetStore, start: RolloutStart, first: () => void = () => {}): RolloutRecord {
    return store.transaction(() => {
      first();
      const { lastInsertRowid } = store.sql(
        `INSERT INTO rollouts (app, ref, commit_sha, started_at, outcome, options) VALUES (?, ?, ?, ?, 'running', ?)`,
      ).run(start.app, start.ref, start.commit, start.startedAt, JSON.stringify(start.options));
      const record = new RolloutRecord(store, Number(lastInsertRowid));
      for (const server of start.servers) {
        record.server(server.name, { wave: server.wave, outcome: "pending", versionBefore: server.versionBefore });
      }
      return record;
    });
  }

  /** Changes a server's row (the fields given; the others stay). */
  server(name: string, change: Partial<ServerRow>): void {
    const row = { ...this.rows.get(name) ?? { wave: 0, outcome: "pending" }, ...change } as ServerRow;
    this.rows.set(name, row);
    this.store.sql(
      `INSERT OR REPLACE INTO rollout_servers (rollout, server, wave, outcome, started_at, duration_ms, version_before,
         version_after, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ).run(
      this.id,
      name,
      row.wave,
      row.outcome,
      row.startedAt ?? null,
      row.durationMs == null ? null : Math.round(row.durationMs),
      row.versionBefore ?? null,
      row.versionAfter ?? null,
      cut(row.message),
    );
  }

  /** A server's row as last written. */
  row(name: string): ServerRow | undefined {
    return this.rows.get(name);
  }

  /** The servers still `deploying` (a run that ended by an exception): the laptop lost track of them. */
  lostTrack(at: number): string[] {
    const lost = [...this.rows].filter(([, row]) => row.outcome === "deploying").map(([name]) => name);
    for (const name of lost) {
      const row = this.rows.get(name)!;
      this.server(name, {
        outcome: "interrupted",
        durationMs: row.startedAt == null ? null : at - row.startedAt,
        message: "the laptop lost track of it; check the server (deploy-paradigm fleet collect --once, or its status)",
      });
    }
    for (const [name, row] of this.rows) {
      if (row.outcome === "pending") this.server(name, { outcome: "interrupted", message: "not started" });
    }
    return lost;
  }

  /** Ends the rollout. */
  finish(outcome: Exclude<RolloutOutcome, "running">, at: number, message?: string): void {
    this.store.sql("UPDATE rollouts SET outcome = ?, finished_at = ?, message = ? WHERE id = ?")
      .run(outcome, at, cut(message), this.id);
  }
}
