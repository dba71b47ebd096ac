/**
 * `proxy status [--json]`: what the running proxy serves, as it answers on its control socket
 * (`status`): each app's public port or domains, its target, requests in flight, its certificate's
 * expiry, and what the proxy says it could not do. Light: no YAML, schema or prompt library.
 * @module
 */
import { proxyStartCommand } from "../managers/mod.ts";
import { prefix } from "../paths.ts";
import { columns, forTerminal, jsonForTerminal } from "../terminal.ts";
import { control, olderProxy, ProxyNotRunning } from "./client.ts";
import { describeTarget, type RouteTarget } from "./routes.ts";

/** One route as the control socket's `status` has it (src/proxy/server.ts `RouteStatus`). */
interface RouteRow {
  app: string;
  port: number;
  domains: string[];
  target: RouteTarget | null;
  inFlight: number;
  listening: boolean;
  listenError?: string;
  maintenance?: true;
}

/** The control socket's `status` reply, as this view reads it. */
export interface ProxyStatus {
  host?: string;
  routes: RouteRow[];
  problems: Record<string, string>;
  shared?: { http: number | null; https: number | null };
  certificates: Record<string, { notAfter?: string | null; source?: string | null; lastError?: string | null }>;
}

/** The lines of `proxy status` for `reply`, `now` (ms) to say how far off an expiry is. */
export function proxyStatusLines(reply: ProxyStatus, now: number): string[] {
  const safe = (text: string) => forTerminal(text, { oneLine: true });
  const shared = reply.shared;
  const ports = [shared?.http != null && `HTTP :${shared.http}`, shared?.https != null && `HTTPS :${shared.https}`]
    .filter(Boolean).join(", ");
  const lines = [
    `the proxy listens on ${safe(reply.host ?? "?")}; ${reply.routes.length} app${
      reply.routes.length === 1 ? "" : "s"
    }; shared ports: ${ports || "closed (no app has domains)"}`,
  ];
  const rows: string[][] = [["APP", "SERVES ON", "TARGET", "IN FLIGHT", "CERTIFICATE", "STATE"]];
  for (const route of reply.routes) {
    const certificate = reply.certificates[route.app];
    const expires = certificate?.notAfter ? Date.parse(certificate.notAfter) : NaN;
    const cert = !certificate
      ? "-"
      : Number.isFinite(expires)
      ? `expires ${certificate.notAfter!.slice(0, 10)} (${Math.floor((expires - now) / 86_400_000)} days)`
      : certificate.lastError
      ? "none yet (failing)"
      : "none yet";
    rows.push([
      route.app,
      route.domains.length ? route.domains.join(", ") : `:${route.port}`,
      describeTarget(route.target ?? undefined),
      String(route.inFlight),
      cert,
      route.maintenance ? "maintenance" : route.listening ? "listening" : "not listening",
    ].map(safe));
  }
  lines.push(...columns(rows).lines);
  const said = [
    ...Object.values(reply.problems),
    ...reply.routes.flatMap((route) => route.listenError ? [`${route.app}: ${route.listenError}`] : []),
  ].flatMap((text) => text.split("\n"));
  // Why an app has no certificate (or its renewal fails): "failing" alone sent one to --json.
  const certificateErrors = reply.routes.flatMap((route) => {
    const error = reply.certificates[route.app]?.lastError;
    return error ? [`${route.app}: certificate: ${error}`] : [];
  });
  if (said.length || certificateErrors.length) {
    lines.push("", ...said.map((line) => `! ${safe(line)}`), ...certificateErrors.map((line) => `! ${safe(line)}`));
  }
  return lines;
}

/** Prints what the running proxy serves (a table, or `--json`). Returns 0, or 1 when it reports problems. */
export async function showProxyStatus(json: boolean): Promise<number> {
  const root = prefix();
  let reply: ProxyStatus;
  try {
    const answer = await control(root, { op: "status" }, 5000);
    reply = {
      host: typeof answer.host === "string" ? answer.host : undefined,
      // A proxy of an older version may leave fields out (before domains: no `domains`).
      routes: Array.isArray(answer.routes)
        ? (answer.routes as RouteRow[]).map((route) => ({ ...route, domains: route.domains ?? [] }))
        : [],
      problems: (answer.problems ?? {}) as Record<string, string>,
      shared: answer.shared as ProxyStatus["shared"],
      certificates: (answer.certificates ?? {}) as ProxyStatus["certificates"],
    };
  } catch (error) {
    if (!(error instanceof ProxyNotRunning)) throw error;
    throw new ProxyNotRunning(error.message, {
      suggestion: `start it with \`${await proxyStartCommand(root)}\``,
      cause: error,
    });
  }
  const problems = Object.keys(reply.problems).length > 0 || reply.routes.some((route) => route.listenError);
  if (json) console.log(jsonForTerminal(reply, 2));
  else for (const line of proxyStatusLines(reply, Date.now())) console.log(line);
  if (!json && await olderProxy(root)) {
    console.log(
      `! the proxy runs an older version of deploy-paradigm: restart it to run this one's ` +
        "(`deploy-paradigm setup <app>` restarts it)",
    );
  }
  return problems ? 1 : 0;
}
