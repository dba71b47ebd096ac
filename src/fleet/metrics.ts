/**
 * The fleet and the collector in the Prometheus text format, served by the API (./api.ts) at
 * /metrics.
 * @module
 */
import { fleetOverview } from "./queries.ts";
import { latestServerMetrics, type ServerLatest } from "./server_latest.ts";
import { DISK_METRICS, SERVER_METRICS } from "./server_metrics.ts";
import type { FleetStore } from "./store.ts";
import { SERVER_COLUMNS, type ServerRow } from "./rows.ts";
import type { FreshnessView } from "./views.ts";

/** The collector's own counters, for {@link metrics}. */
export interface CollectorStats {
  /** Cycles run since the collector started. */
  cycles: number;
  /** How long the last cycle took, if one ran. */
  lastCycleMs?: number | null;
  /** Failed pulls since the collector started. */
  errors: number;
  /** The alert rules' subjects (./alerts.ts), for `fleet_alert_firing`. */
  alerts?: { rule: string; server: string; app?: string; mount?: string; job?: string; firing: boolean }[];
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
  const latest = servers.map((row) => ({ server: row.name, sample: latestServerMetrics(store, row.name) }))
    .filter((l): l is { server: string; sample: ServerLatest } => l.sample !== undefined);
  for (const name of SERVER_METRICS) {
    const metric = promName(name);
    family(
      metric,
      "gauge",
      `The server's ${name} in its latest sample.`,
      latest.filter((l) => l.sample.values[name] !== undefined).map((l) =>
        sample(metric, { server: l.server }, l.sample.values[name])
      ),
    );
  }
  for (const name of DISK_METRICS) {
    const metric = promName(name);
    family(
      metric,
      "gauge",
      `The filesystem's ${name} in the server's latest sample.`,
      latest.flatMap((l) =>
        l.sample.filesystems.filter((f) => f.values[name] !== undefined).map((f) =>
          sample(metric, { server: l.server, mount: f.mount }, f.values[name])
        )
      ),
    );
  }
  family(
    "fleet_server_metrics_age_seconds",
    "gauge",
    "How old the server's latest metrics sample is.",
    latest.map((l) =>
      sample("fleet_server_metrics_age_seconds", { server: l.server }, (view.now - l.sample.ts) / 1000)
    ),
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
  if (collector.alerts) {
    family(
      "fleet_alert_firing",
      "gauge",
      "Whether the alert rule fires (1) or not (0) for the server (and app, mount or cron job).",
      collector.alerts.map(({ rule, firing, ...subject }) =>
        sample("fleet_alert_firing", { rule, ...subject }, firing ? 1 : 0)
      ),
    );
  }
  return out.join("\n") + "\n";
}

/** The gauge of a server metric: `cpu.percent` → `fleet_server_cpu_percent`, `…_per_s` → `…_per_second`. */
function promName(name: string): string {
  return `fleet_server_${name.replaceAll(".", "_").replace(/_per_s$/, "_per_second")}`;
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
