/**
 * A fleet database on a temp file for unit tests (or one at an older schema version), and cycle summaries as the collector makes them
 * (src/fleet/collector.ts), for the alerts and rules that judge them.
 */
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import type { CycleSummary } from "../../src/fleet/collector.ts";
import { MIGRATIONS } from "../../src/fleet/migrations.ts";
import { FleetStore } from "../../src/fleet/store.ts";

/** Runs `fn` with a store on a temp file; closes and removes it after, even on failure. */
export async function withStore(
  prefix: string,
  fn: (store: FleetStore, dir: string) => Promise<void> | void,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix });
  const store = await FleetStore.open(join(dir, "fleet.db"));
  try {
    await fn(store, dir);
  } finally {
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
}

/** A cycle at `at` (epoch ms): each server's pull worked (`true`) or failed (`false`, or its error). */
export function cycleSummary(
  at: number,
  servers: Record<string, boolean | string>,
  options: { cycle?: number; holding?: boolean } = {},
): CycleSummary {
  return {
    cycle: options.cycle ?? 1,
    at: new Date(at).toISOString(),
    durationMs: 5,
    servers: Object.entries(servers).map(([server, result]) => ({
      server,
      ok: result === true,
      error: result === true ? undefined : result || "the pull failed",
      durationMs: 5,
      bytes: 0,
      apps: 0,
      lines: 0,
      deployments: 0,
      gaps: 0,
    })),
    skipped: [],
    changes: [],
    retained: 0,
    holding: options.holding ?? false,
  };
}

/**
 * A database at schema version `version`, as a monitor of that version left it: only the first
 * `version` migrations applied. The caller fills it with SQL and closes it; FleetStore.open then
 * migrates it.
 */
export function databaseAt(path: string, version: number): DatabaseSync {
  const db = new DatabaseSync(path);
  for (const migration of MIGRATIONS.slice(0, version)) db.exec(migration);
  db.exec(`PRAGMA user_version = ${version}`);
  return db;
}
