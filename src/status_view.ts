/**
 * `status`: a table or JSON of the apps' status.json files, with each app's certificate as the
 * proxy's `.tls/certificates.json` has it now and its maintenance as its maintenance.json has it now.
 * @module
 */
import { sharedPortConflicts } from "./config/domains.ts";
import { NAME_PATTERN, requireAppName } from "./config/names.ts";
import { canaryStatusText } from "./deploy/canary_judge.ts";
import { type AppStatus, readStatus } from "./deploy/status.ts";
import { DeployParadigmError, UsageError } from "./errors.ts";
import { readTextOrUndefined } from "./fsutil.ts";
import { certificateCondition, type CertificateState, issuerLabel, readCertificates } from "./proxy/cert_state.ts";
import { type AppPaths, appPaths, deploymentsRoot } from "./paths.ts";
import { describeMaintenance, maintenanceForStatus } from "./proxy/maintenance.ts";
import { columns, forTerminal, jsonForTerminal } from "./terminal.ts";
import { parseConfig } from "./config/load.ts";
import { type ServerConfig, serverConfigSchema } from "./config/schema.ts";
import { loadRouteConfig, type RouteConfig, ROUTING_KEYS } from "./config/route_config.ts";
import { listProcesses, type ProcessInfo, RUNNING_STATES } from "./deploy/process_list.ts";
import { managerNamed } from "./managers/mod.ts";
import { ProcessRunner } from "./runner.ts";
import { PROXIED } from "./deploy/strategies/names.ts";
import { control } from "./proxy/client.ts";
import { PROXY_SERVICE } from "./proxy/routes.ts";
import { loadProxyConfig } from "./proxy/config.ts";
import { prefix } from "./paths.ts";
import { type ContainerState, containerState } from "./managers/docker.ts";
import { processName } from "./managers/pm2.ts";
import {
  appUrl,
  describeKilled,
  type FrontDoor,
  frontDoor,
  interruptedStatus,
  interruptionMessage,
  routedHealth,
} from "./deploy/outcome.ts";
import { deployAlive, type DeployMarker, leftMarker } from "./deploy/canary_decision.ts";
import { readReleaseMeta } from "./deploy/releases.ts";
import { otherSlot, type RoutedSlot, routedSlot, slotRelease } from "./deploy/slots.ts";
import type { Slot } from "./managers/mod.ts";

/** What status.json (written on this server, but by deploys of code anyone may push) says, safe on one line. */
const safe = (text: string) => forTerminal(text, { oneLine: true });

/**
 * Status of every deployed app, by name; the apps set up but never deployed (a config.yml, no
 * status.json); the problems that stop an app from being served or shown: a config.yml the
 * proxy cannot read (it skips the app), a status.json that is not JSON, nothing healthy serving
 * (status `failed`), no web process (a docker app's: its container) running; and the warnings
 * about an app that is served: a deploy that was killed midway (its app shown as the next deploy
 * will write status.json: what the proxy routes to serves), a docker app's log follower
 * stopped, config.yml's port changed under restart. One line per problem or warning, starting
 * with the app.
 */
export async function collectStatus(
  only?: string,
): Promise<{ statuses: AppStatus[]; undeployed: string[]; problems: string[]; warnings: string[] }> {
  const names: string[] = [];
  if (only !== undefined) {
    requireAppName(only);
    names.push(only);
  } else {
    try {
      for await (const entry of Deno.readDir(deploymentsRoot())) {
        if (entry.isDirectory && !entry.name.startsWith(".")) names.push(entry.name); // not .tls
      }
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
  }
  const statuses: AppStatus[] = [];
  const undeployed: string[] = [];
  const problems: string[] = [];
  const warnings: string[] = [];
  /** proxy.yml's ports, read once for every app's URL (when one is proxied). */
  let front: Promise<FrontDoor> | undefined;
  /** Apps whose config.yml does not load (the proxy skips them: said here once). */
  const unloaded = new Set<string>();
  let proxied = false;
  for (const name of names.sort()) {
    const paths = appPaths(name);
    let config: ServerConfig | undefined;
    let text: string | undefined;
    try {
      text = await readTextOrUndefined(paths.config);
      if (text !== undefined) config = parseConfig(text, serverConfigSchema, paths.config);
    } catch (error) {
      if (error instanceof Deno.errors.PermissionDenied) throw error; // not root: status says so (root_only.ts)
      unloaded.add(name);
      // The proxy routes an app whose only problems are in keys it does not use (a typo in notify:).
      let routing: RouteConfig | undefined;
      try {
        if (text !== undefined) routing = loadRouteConfig(text, paths.config).config;
      } catch { /* a routing key's problem: the proxy skips the app */ }
      if (routing && PROXIED[routing.strategy]) proxied = true;
      const proxy = !routing
        ? "; the proxy keeps the route it had, none after it restarts"
        : PROXIED[routing.strategy]
        ? `; the proxy still serves it from its routing keys, ${ROUTING_KEYS.join(", ")}`
        : "";
      problems.push(`${name}: config.yml does not load (deploys refuse it${proxy}): ${(error as Error).message}`);
    }
    let status: AppStatus | undefined;
    try {
      status = await readStatus(paths.status);
    } catch (error) {
      if (!(error instanceof DeployParadigmError) || only !== undefined) throw error;
      problems.push(`${name}: ${error.message}${error.suggestion ? ` (${error.suggestion})` : ""}`);
      continue;
    }
    if (config && PROXIED[config.strategy]) proxied = true; // (restart apps are never behind it, domains or not)
    if (status) {
      // A deploy killed midway (after its switch too) wrote no status.json: shown as the next deploy
      // will write it, with what the proxy routes to serving.
      const killed = await leftMarker(paths);
      const routed = config && PROXIED[config.strategy] ? await routedSlot(paths, config.slots) : {};
      const shown = killed ? await afterKill(paths, status, killed, routed) : status;
      // Maintenance as maintenance.json has it now, not as it was when status.json was written.
      const { maintenance: _, processes: written, ...rest } = shown;
      const maintenance = await maintenanceForStatus(paths.dir);
      // The processes as the manager reports them now (as written, when it cannot say), of the slot routed to.
      const slot = routed.slot ?? shown.slot;
      const live = config && await liveProcesses(paths, config, slot);
      let processes = live ?? written;
      let web = live?.filter((p) => p.type === "web") ?? [];
      let restart = `start it by that name with ${config?.manager}, or deploy again`;
      if (config && shown.type === "docker") {
        // The manager runs the container's log follower, not the app: the engine says whether the container runs.
        const checked = await containerWeb(name, config, slot, live?.filter((p) => p.type === "web"));
        warnings.push(...checked.warnings);
        if (checked.container) {
          web = [checked.container];
          processes = [checked.container, ...(processes ?? []).filter((p) => p.type !== "web")];
          restart = `\`docker start ${checked.container.name}\`, or deploy again`;
        } else web = [];
      }
      if (shown.status === "failed" || !shown.healthy) {
        const last = shown.lastDeploy;
        problems.push(
          `${name}: nothing healthy serves (status ${shown.status}; the last deploy, of ${last.version}, ended ` +
            `${last.outcome}${last.step ? ` at ${last.step}` : ""}): deploy again once it is fixed`,
        );
      } else if (web.length && !web.some((p) => RUNNING_STATES.has(p.state))) {
        problems.push(
          `${name}: no web process runs (${web.map((p) => `${p.name} ${p.state}`).join(", ")}): the app is not ` +
            `served, whatever its last health check said (${restart})`,
        );
      }
      if (killed) warnings.push(await interruptedDeploy(paths, config, killed, { written: status, shown, slot }));
      // Where it answers as config.yml says now (`setup --port`, `--domain` change it before any deploy).
      const address = config ? await currentAddress(config, shown, () => front ??= frontDoor(prefix())) : {};
      if (address.warning) warnings.push(`${name}: ${address.warning}`);
      statuses.push({
        ...rest,
        ...(address.port !== undefined ? { port: address.port } : {}),
        ...(address.url !== undefined ? { url: address.url } : {}),
        ...(processes ? { processes } : {}),
        ...(maintenance ? { maintenance } : {}),
      });
    } else if (text !== undefined) undeployed.push(name);
    else if (only !== undefined) {
      throw new UsageError(`app "${only}" is not set up on this server`, {
        suggestion: `deploy-paradigm setup ${only} sets it up (\`status\` lists the apps that are)`,
      });
    }
  }
  return {
    statuses,
    undeployed,
    problems: [...problems, ...await proxyProblems(proxied, unloaded, only)],
    warnings,
  };
}

/**
 * What keeps the proxy from serving the apps behind it (`proxied`: some app is): a proxy.yml it
 * cannot load (it would not start again), no answer on its control socket (it is down), and what
 * it says it could not do (an app skipped for a port or host name another app has, a port it
 * cannot listen on), but of the apps whose config.yml does not load (`unloaded`: said already),
 * and with `only`, of that app and the proxy itself.
 */
async function proxyProblems(proxied: boolean, unloaded: Set<string>, only?: string): Promise<string[]> {
  const problems: string[] = [];
  try {
    await loadProxyConfig(prefix());
  } catch (error) {
    if (error instanceof Deno.errors.PermissionDenied) throw error;
    problems.push(
      "proxy: proxy.yml does not load (the proxy keeps the settings it started with, and cannot start again until " +
        `it is fixed): ${(error as Error).message}`,
    );
  }
  // A shared port of proxy.yml that an app listens on too: one of them is not served.
  for (const line of await sharedPortConflicts(prefix())) {
    if (only === undefined || line.includes(`app "${only}"`)) problems.push(`proxy: ${line}`);
  }
  if (!proxied) return problems;
  const reply = await control(prefix(), { op: "status" }, 2000).catch(() => undefined);
  if (!reply) {
    problems.push(
      "proxy: it does not answer on its control socket, so the apps behind it are not served (see " +
        `\`pm2 logs ${PROXY_SERVICE}\` or \`journalctl -u ${PROXY_SERVICE}\`)`,
    );
    return problems;
  }
  const said = new Set<string>();
  const say = (app: string | undefined, text: string) => {
    if (app !== undefined && (unloaded.has(app) || (only !== undefined && app !== only))) return;
    for (const line of text.split("\n")) said.add(`proxy: ${line}`);
  };
  // Keys that are app names are the apps'; the others (`*`, `:80`, `#metrics`) the proxy's own.
  for (const [key, text] of Object.entries(reply.problems as Record<string, string> | undefined ?? {})) {
    say(NAME_PATTERN.test(key) ? key : undefined, String(text));
  }
  for (const route of reply.routes as { app: string; listenError?: string }[] | undefined ?? []) {
    if (route.listenError) say(route.app, `${route.app}: ${route.listenError}`);
  }
  return [...problems, ...said];
}

/** The app's processes with their states now (undefined when its manager cannot say). */
async function liveProcesses(
  paths: AppPaths,
  config: ServerConfig,
  slot: AppStatus["slot"],
): Promise<ProcessInfo[] | undefined> {
  try {
    return await listProcesses(paths, config, managerNamed(config.manager), new ProcessRunner(() => {}), slot);
  } catch {
    return undefined;
  }
}

/**
 * A docker app's web process: its container as the engine reports it now (`<app>-<slot>` of the
 * slot the proxy routes to, `routed`; `<app>` under restart), since the manager's web process is
 * only the container's log follower; and a warning when the follower (`followers`, as the manager
 * reports them) does not run while the container does (the app is served, its output no longer
 * reaches its logs), or when the engine cannot be asked. No container when it cannot be named or asked.
 */
async function containerWeb(
  app: string,
  config: ServerConfig,
  routed: AppStatus["slot"],
  followers: ProcessInfo[] | undefined,
): Promise<{ container?: ProcessInfo; warnings: string[] }> {
  const slot = PROXIED[config.strategy] ? routed : undefined;
  if (PROXIED[config.strategy] && !slot) return { warnings: [] };
  const name = processName(app, slot);
  let state: ContainerState;
  try {
    state = await containerState(new ProcessRunner(() => {}), name);
  } catch (error) {
    return { warnings: [`${app}: ${(error as Error).message}; whether its container ${name} runs is not known`] };
  }
  const warnings: string[] = [];
  const stopped = followers?.filter((p) => !RUNNING_STATES.has(p.state)) ?? [];
  if (RUNNING_STATES.has(state.state) && stopped.length) {
    warnings.push(
      `${app}: its container ${name} runs and serves, but its log follower does not (` +
        `${stopped.map((p) => `${p.name} ${p.state}`).join(", ")}): the container's output no longer reaches ` +
        `access.log and error.log (start the follower by that name with ${config.manager}, or deploy again)`,
    );
  }
  return { container: { type: "web", instance: 1, name, ...state }, warnings };
}

/**
 * status.json as the next deploy will write it on finding the marker `killed` left (see
 * ../deploy/reconcile.ts): its last deploy interrupted, and under blue-green the release the
 * proxy routes to (`routed`) serving from its slot, whatever release status.json names.
 */
async function afterKill(
  paths: AppPaths,
  status: AppStatus,
  killed: DeployMarker,
  routed: RoutedSlot,
): Promise<AppStatus> {
  const current = routed.release ?? status.release;
  const meta = current ? await readReleaseMeta(paths, current).catch(() => undefined) : undefined;
  return interruptedStatus(status, {
    current,
    meta,
    health: routedHealth(routed),
    killedCommit: killed.commit,
    message: interruptionMessage(killed, current, meta),
    at: killed.since ?? status.lastDeploy.at,
  });
}

/**
 * What a deploy killed midway left (its marker `.deploying` is there, its pid gone: `killed`): see
 * {@link interruptionWarning}; `written` is status.json, `shown` as {@link afterKill} has it, `slot`
 * the slot the proxy routes to. The other slot is asked whether it still runs, and what.
 */
async function interruptedDeploy(
  paths: AppPaths,
  config: ServerConfig | undefined,
  killed: DeployMarker,
  r: { written: AppStatus; shown: AppStatus; slot: AppStatus["slot"] },
): Promise<string> {
  const app = paths.app;
  let idle: IdleSlot | undefined;
  if (config && PROXIED[config.strategy] && r.slot) {
    const slot = otherSlot(r.slot);
    const runner = new ProcessRunner(() => {});
    try {
      let runs: { name: string; pid: number } | undefined;
      if (r.shown.type === "docker") {
        const name = processName(app, slot);
        const state = await containerState(runner, name);
        if (RUNNING_STATES.has(state.state)) runs = { name, pid: state.pid };
      } else {
        const manager = managerNamed(config.manager);
        const name = manager.nameOf(app, slot);
        const state = (await manager.states?.(runner, paths.root, [name]))?.get(name);
        if (state && RUNNING_STATES.has(state.state)) runs = { name, pid: state.pid };
      }
      const release = await slotRelease(paths, slot);
      const meta = runs && release ? await readReleaseMeta(paths, release).catch(() => undefined) : undefined;
      if (runs) idle = { slot, ...runs, ...(meta ? { commit: meta.commit } : {}) };
    } catch { /* the manager or engine cannot say */ }
  }
  // Its release serves: it switched (a release of its commit that status.json does not name yet).
  const switched = killed.commit !== undefined && r.shown.commit === killed.commit &&
    r.shown.release !== r.written.release;
  return interruptionWarning(app, killed, r.shown, { switched, idle, repo: paths.repo });
}

/** A slot that takes no traffic and still runs: its manager's name and pid, and the commit of its release. */
export interface IdleSlot {
  slot: Slot;
  name: string;
  pid: number;
  commit?: string;
}

/**
 * The warning about a deploy killed midway (`killed`, its marker), with what serves (`shown`, as
 * {@link afterKill} has it) and what the other slot still runs (`idle`). Killed before its switch:
 * the release before still serves, and the next push cleans up (it replaces the idle slot and
 * removes the release that never served). Killed after its switch (`switched`): its release serves,
 * and what follows the switch may not have run: a push of its commit is up to date, so a new
 * commit or `execute` of this one (`repo`) finishes it.
 */
export function interruptionWarning(
  app: string,
  killed: DeployMarker,
  shown: AppStatus,
  r: { switched: boolean; idle?: IdleSlot; repo: string },
): string {
  const what = `a deploy of ${describeKilled(killed)} was interrupted${r.switched ? " after its switch" : ""}`;
  const { idle } = r;
  const runs = !idle
    ? ""
    : `; the ${idle.slot} slot still runs ${
      idle.commit === undefined ? "a release" : idle.commit === killed.commit ? "it" : idle.commit.slice(0, 7)
    } (${idle.name}${idle.pid ? `, pid ${idle.pid}` : ""})`;
  if (r.switched) {
    return `${app}: ${what}; it serves (release ${shown.release}${shown.slot ? `, the ${shown.slot} slot` : ""})` +
      `${runs}; what follows the switch (workers, cron jobs, the postDeploy hook, cleanup) may not have run: the ` +
      `next deploy records the interruption and does it (push a new commit, or redeploy this one: ` +
      `\`deploy-paradigm execute ${r.repo} ${killed.commit}\`)`;
  }
  const serves = shown.healthy && shown.version ? `${shown.version} still serves` : "nothing healthy serves";
  return `${app}: ${what}${runs}; ${serves}; the next push records the interruption and cleans up what it left` +
    ` (it replaces the idle slot and removes the release that never served)`;
}

/**
 * The app's public port and URL as config.yml has them now. Blue-green: the proxy serves the
 * app where config.yml says (it re-reads it), so those. Restart: the app's own process listens
 * on the port it was started with until the next deploy: status.json's, with a warning when
 * config.yml says another.
 */
async function currentAddress(
  config: ServerConfig,
  status: AppStatus,
  front: () => Promise<FrontDoor>,
): Promise<{ port?: number; url?: string; warning?: string }> {
  if (PROXIED[config.strategy]) return { port: config.port, url: appUrl(config, await front()) };
  // (A static app under restart runs no process: no port was started, whatever config.yml says.)
  if (config.port === status.port || status.type === "static") return {};
  return {
    warning: `config.yml says port ${config.port}, but the serving release was started on port ${status.port} ` +
      "(config.yml changed since the last deploy): the next deploy moves it",
  };
}

/**
 * Prints the status table (or JSON), with each app's current certificate, then each problem (on
 * stderr with --json), then each warning. Returns 0, or 1 when there is a problem (warnings alone: 0).
 */
export async function showStatus(only: string | undefined, json: boolean): Promise<number> {
  const { statuses, undeployed, problems, warnings } = await collectStatus(only);
  const code = problems.length ? 1 : 0;
  const report = (print: (line: string, warning: boolean) => void) => {
    for (const problem of problems) print(forTerminal(`! ${problem}`), false);
    for (const warning of warnings) print(forTerminal(`! ${warning}`), true);
  };
  const certificates = await readCertificates(deploymentsRoot());
  if (json) {
    // The certificate as the proxy has it now, not as it was when status.json was written.
    const current: object[] = statuses.map(({ certificate: _, ...status }) => {
      const certificate = certificates.get(status.name);
      return certificate ? { ...status, certificate } : status;
    });
    // Set up, never deployed: a row as the table has (no status.json to show).
    current.push(...undeployed.map((name) => ({ name, status: "set up", deployed: null })));
    console.log(jsonForTerminal(only !== undefined ? current[0] : current, 2));
    report((line) => console.error(line));
    return code;
  }
  const color = Deno.stdout.isTerminal() && !Deno.env.get("NO_COLOR");
  const leftCanaries = new Set<string>();
  for (const { name, canary } of statuses) {
    if (canary?.state === "running" && !await deployAlive(appPaths(name))) leftCanaries.add(name);
  }
  if (statuses.length || undeployed.length || !problems.length) {
    const options = { now: Date.now(), color, leftCanaries, undeployed };
    for (const line of statusLines(statuses, certificates, options)) console.log(line);
    if (problems.length || warnings.length) console.log("");
  }
  report((line, warning) => console.log(color ? `\x1b[${warning ? 33 : 31}m${line}\x1b[0m` : line));
  return code;
}

/**
 * The status table, then a line per app with a certificate (names, issuer, expiry) and, after a
 * failed attempt to issue or renew, a line with the error marked `!`. Red (with `color`) when
 * it expires within 14 days (cert_state.ts's EXPIRY_WARNING_DAYS), has expired, or failed.
 * Then a line per app with a canary (status.json's: its step and figures, how it ended, or red:
 * left by a killed deploy, with what to run), and a line per app in maintenance (red with
 * `color`): since when, Retry-After, who is allowed, the message. The apps set up but never
 * deployed (`undeployed`) have a row of their own: `set up`, `never deployed`.
 */
export function statusLines(
  statuses: AppStatus[],
  certificates: ReadonlyMap<string, CertificateState>,
  /** `leftCanaries`: the apps whose running canary no deploy runs any more (killed). */
  options: { now: number; color: boolean; leftCanaries?: ReadonlySet<string>; undeployed?: readonly string[] },
): string[] {
  const undeployed = options.undeployed ?? [];
  if (!statuses.length && !undeployed.length) return ["No app has been deployed on this server yet."];
  const rows = [
    ["APP", "STATUS", "HEALTHY", "VERSION", "RELEASE", "DEPLOYED", "LAST DEPLOY"],
    ...[
      ...statuses.map((s) => [
        s.name,
        s.status,
        s.healthy ? "yes" : "no",
        s.version ?? "-",
        s.release ?? "-",
        s.deployed ?? "-",
        lastDeployText(s.lastDeploy),
      ]),
      ...undeployed.map((name) => [name, "set up", "-", "-", "-", "-", "never deployed (push to deploy it)"]),
    ].sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0).map((row) => row.map((cell) => safe(String(cell)))),
  ];
  const { lines, widths } = columns(rows);
  const red = (text: string) => options.color ? `\x1b[31m${text}\x1b[0m` : text;
  const withCertificate = statuses.filter((s) => certificates.has(s.name));
  if (withCertificate.length) lines.push("");
  for (const { name } of withCertificate) {
    const certificate = certificates.get(name)!;
    const { state, daysLeft } = certificateCondition(certificate, options.now);
    const indent = " ".repeat(widths[0] + 2);
    const issuer = issuerLabel(certificate.issuer);
    const expiry = daysLeft === null
      ? "none yet"
      : state === "expired"
      ? `EXPIRED on ${day(certificate.notAfter!)} (${days(-daysLeft)} ago)`
      : `valid until ${day(certificate.notAfter!)} (${days(daysLeft)})${state === "expiring" ? " — expires soon" : ""}`;
    const parts = [
      certificate.names.join(", ") || "(no names)",
      ...(issuer ? [`${issuer}${certificate.source === "file" ? " (config.yml tls)" : ""}`] : []),
      expiry,
    ];
    const line = safe(`${name.padEnd(widths[0])}  certificate: ${parts.join(" — ")}`);
    lines.push(state === "expiring" || state === "expired" ? red(line) : line);
    const next = certificate.nextAttemptAt ? `next attempt ${minute(certificate.nextAttemptAt)}` : "";
    if (certificate.lastError) {
      const at = certificate.lastErrorAt ? ` ${minute(certificate.lastErrorAt)}` : "";
      lines.push(red(safe(`${indent}! last error${at}: ${certificate.lastError}${next ? `; ${next}` : ""}`)));
    } else if (next && daysLeft === null) {
      lines.push(safe(`${indent}${next}`));
    }
  }
  // A line per app that runs more than its one web process, or whose processes do not all run.
  for (const { name, processes } of statuses) {
    if (!processes?.length || (processes.length === 1 && RUNNING_STATES.has(processes[0].state))) continue;
    const each = processes.map((p) =>
      `${p.type}/${p.instance} ${p.state}${p.pid ? ` pid ${p.pid}` : ""}` +
      (p.restarts ? ` (${p.restarts} restart${p.restarts === 1 ? "" : "s"})` : "")
    );
    const line = safe(`${name.padEnd(widths[0])}  processes: ${each.join(" · ")}`);
    lines.push(processes.every((p) => RUNNING_STATES.has(p.state)) ? line : red(line));
  }
  // A line per app with a canary: how far it is, how it ended, or that a killed deploy left it.
  for (const { name, canary } of statuses) {
    if (!canary || typeof canary !== "object" || !Array.isArray(canary.steps)) continue;
    const left = options.leftCanaries?.has(name) === true;
    const line = safe(`${name.padEnd(widths[0])}  ${canaryStatusText(name, canary, left)}`);
    lines.push(left || canary.state === "reverted" ? red(line) : line);
  }
  const inMaintenance = statuses.filter((s) => s.maintenance);
  if (inMaintenance.length) lines.push("");
  for (const { name, maintenance } of inMaintenance) {
    const text = "error" in maintenance! ? `maintenance.json is not valid: ${maintenance.error}` : [
      describeMaintenance(maintenance!).replace(/^maintenance/, "IN MAINTENANCE"),
      ...(maintenance!.message ? [`message: ${maintenance!.message}`] : []),
    ].join(" — ");
    lines.push(red(safe(`${name.padEnd(widths[0])}  ${text}`)));
  }
  return lines;
}

/** `2027-03-01`. */
/**
 * "success 1a2b3c4", "failed 1a2b3c4 at health"; a rollback by hand says which way, and that its
 * version is the one rolled away from (the VERSION column has the one that serves).
 */
function lastDeployText(last: AppStatus["lastDeploy"]): string {
  if (last.outcome === "success" && last.step === "rollback") return `rolled forward ${last.version}`;
  if (last.outcome === "rolled_back" && last.step === "rollback") return `rolled back from ${last.version} by hand`;
  return `${last.outcome} ${last.version}${last.step ? ` at ${last.step}` : ""}`;
}

function day(iso: string): string {
  return iso.slice(0, 10);
}

/** `2027-03-01 10:00 UTC`. */
function minute(iso: string): string {
  return `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC`;
}

/** `88 days`, `1 day`, `less than a day`. */
function days(n: number): string {
  return n <= 0 ? "less than a day" : `${n} day${n === 1 ? "" : "s"}`;
}
