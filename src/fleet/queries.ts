/**
 * The read side of the fleet database: what the HTTP API (./api.ts) and the dashboard show.
 * Every function takes a {@link FleetStore}, runs cached prepared statements (`store.sql`) and
 * returns plain JSON-able objects, times as ISO strings (the shapes: ./views.ts).
 *
 * Here: the fleet, one server, and deployments. Log search and context are ./log_queries.ts, the
 * Prometheus text ./metrics.ts.
 * @module
 */
import type { FleetStore } from "./store.ts";
import {
  APP_COLUMNS,
  type AppRow,
  CERTIFICATE_COLUMNS,
  type CertificateRecord,
  CRON_RUN_COLUMNS,
  type CronRunRecord,
  DEPLOYMENT_COLUMNS,
  type DeploymentRecord,
  LINE_COLUMNS,
  type LineRow,
  SERVER_COLUMNS,
  type ServerRow,
} from "./rows.ts";
import {
  appView,
  certificatesBy,
  clamp,
  type CronRunView,
  cronRunView,
  type DeploymentView,
  deploymentView,
  type FleetOverview,
  type FreshnessView,
  lineView,
  PAGE,
  type ServerDetail,
  serverView,
} from "./views.ts";

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

/**
 * One server with its apps (each with its processes and the last run of its cron jobs), 20 newest
 * deployments and 50 newest error.log lines; undefined when unknown.
 */
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
  const cron = new Map<string, CronRunView[]>();
  const runs = store.sql(`SELECT ${CRON_RUN_COLUMNS} FROM cron_runs WHERE server = ? ORDER BY app, job`).all(
    name,
  ) as unknown as CronRunRecord[];
  for (const run of runs) {
    const list = cron.get(run.app);
    if (list) list.push(cronRunView(run));
    else cron.set(run.app, [cronRunView(run)]);
  }
  return {
    ...server,
    pulls: row.pulls,
    errors: row.errors,
    apps: apps.map((app) => ({ ...appView(app, server.state, certificates, true), cron: cron.get(app.app) ?? [] })),
    deployments: deployed.map(deploymentView),
    errorLines: errorLines.map(lineView),
  };
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
