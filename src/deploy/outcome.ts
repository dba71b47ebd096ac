/**
 * Every status.json ({@link AppStatus}) and {@link LastDeploy} a deploy or a rollback writes, in
 * one place: a deploy that stands, one that failed (with or without a switch back), one killed
 * and found by the next deploy, and a rollback by hand.
 * @module
 */
import type { ServerConfig } from "../config/schema.ts";
import type { HealthResult } from "./health.ts";
import type { SwitchContext } from "./context.ts";
import type { Deployment } from "./prepare.ts";
import { readReleaseMeta, type ReleaseMeta } from "./releases.ts";
import { jobsOf } from "../cron/job.ts";
import { type AppStatus, type LastDeploy, type Outcome, readStatus, writeStatus } from "./status.ts";
import { listProcesses, withContainer } from "./process_list.ts";
import { PROXIED } from "./strategies/names.ts";
import type { DeployMarker } from "./canary_decision.ts";
import type { RoutedSlot } from "./slots.ts";

/** The proxy's shared ports (proxy.yml `http`, `https`) and whether it has a certificate to get (`acme:`). */
export interface FrontDoor {
  http: number;
  https: number;
  acme: boolean;
}

/** proxy.yml's {@link FrontDoor} under `root`; the defaults (80, 443, no ACME) when it cannot be read. */
export async function frontDoor(root: string): Promise<FrontDoor> {
  const { loadProxyConfig } = await import("../proxy/config.ts");
  const proxy = await loadProxyConfig(root).catch(() => undefined);
  return { http: proxy?.http ?? 80, https: proxy?.https ?? 443, acme: proxy?.acme !== undefined };
}

/**
 * Where the app answers: its first domain when the proxy serves it, else its own port. Over HTTPS
 * when it has a certificate to serve (its own `tls:`, or ACME in proxy.yml), else plain HTTP; with
 * the port when it is not the scheme's.
 */
export function appUrl(config: ServerConfig, front: FrontDoor = { http: 80, https: 443, acme: false }): string {
  const domain = PROXIED[config.strategy] ? config.domains.find((d) => !d.startsWith("*.")) : undefined;
  if (!domain) return `http://127.0.0.1:${config.port}/`;
  const https = config.tls !== undefined || front.acme;
  const port = https ? (front.https === 443 ? "" : `:${front.https}`) : (front.http === 80 ? "" : `:${front.http}`);
  return `${https ? "https" : "http"}://${domain}${port}/`;
}

/** Where the deployed app answers: undefined for static files under `strategy: restart` (nothing serves them). */
export function servedUrl(plan: Deployment): string | undefined {
  return plan.runs || PROXIED[plan.config.strategy] ? appUrl(plan.config, plan.front) : undefined;
}

/** The fields of status.json that come from deploy.yml and config.yml. */
function statusBase(plan: Deployment) {
  const { deploy, config } = plan;
  const url = servedUrl(plan);
  return {
    name: deploy.name,
    type: deploy.type,
    manager: config.manager,
    port: config.port,
    strategy: config.strategy,
    ...(url ? { url } : {}),
  };
}

/** How a deploy (or a rollback) of `commit` as release `release` ended: every status.json's `lastDeploy`. */
export function lastDeploy(
  outcome: Outcome,
  release: string,
  commit: string,
  at: string,
  duration: number,
  failure?: { step: string; message: string },
): LastDeploy {
  return { outcome, release, commit, version: commit.slice(0, 7), at, duration, ...failure };
}

/** A deploy that stands: release `id` serves. */
export function deployedStatus(
  plan: Deployment,
  r: {
    id: string;
    previous?: string;
    health: HealthResult;
    strategy: Partial<AppStatus>;
    at: string;
    duration: number;
  },
): AppStatus {
  return {
    ...statusBase(plan),
    status: "running",
    version: plan.short,
    commit: plan.commit,
    release: r.id,
    previous: r.previous,
    deployed: r.at,
    lastHealthCheck: r.health.checkedAt,
    healthy: true,
    branch: plan.deploy.branch,
    strategy: plan.config.strategy,
    ...r.strategy,
    lastDeploy: lastDeploy("success", r.id, plan.commit, r.at, r.duration),
  };
}

/** How a failed deploy left traffic. */
export interface FailedSwitch {
  /** Traffic had moved to the new release. */
  switched: boolean;
  /** The strategy moved it back itself (the proxy's route): what served before serves, when `serving`. */
  reverted: boolean;
  serving: boolean;
  /** What serves after a switch back in place (see SwitchStrategy.revert). */
  back?: Partial<AppStatus>;
  /** The failure was in the watch window. */
  watchFailed: boolean;
}

/** A failed deploy: what serves now, and how the deploy ended. */
export function failedStatus(
  plan: Deployment,
  before: AppStatus | undefined,
  last: LastDeploy,
  f: FailedSwitch,
): AppStatus {
  if (!f.switched) {
    // What it had stopped did not come back (see SwitchStrategy.revert): nothing healthy serves.
    const lost = f.back?.healthy === false ? { status: "failed" as const, healthy: false } : {};
    return before
      ? { ...before, ...lost, lastDeploy: last }
      : { ...statusBase(plan), status: "failed", healthy: false, lastDeploy: last };
  }
  if (f.reverted) {
    const watch = f.watchFailed ? { watch: "failed" as const } : {};
    return f.serving && before
      ? { ...before, ...watch, status: "rolled_back", lastDeploy: last }
      : { ...statusBase(plan), ...before, ...watch, status: "failed", healthy: false, lastDeploy: last };
  }
  const healthy = f.back?.healthy === true;
  return {
    ...statusBase(plan),
    ...before,
    ...f.back,
    status: healthy ? "rolled_back" : "failed",
    healthy,
    lastDeploy: last,
  };
}

/** The deploy a marker left by a kill names: `1a2b3c4 (pid 4242, since <time>)`. */
export function describeKilled(killed: DeployMarker): string {
  return `${killed.commit?.slice(0, 7) ?? "an unknown commit"} (pid ${killed.pid ?? "?"}` +
    `${killed.since ? `, since ${killed.since}` : ""})`;
}

/** What a killed deploy's `interrupted` event (and status.json's lastDeploy) says: which deploy, what serves. */
export function interruptionMessage(killed: DeployMarker, current?: string, meta?: ReleaseMeta): string {
  return `the deploy of ${describeKilled(killed)} was interrupted; ` +
    (meta ? `release ${current} (${meta.commit.slice(0, 7)}) serves` : "no release serves");
}

/**
 * Blue-green after a killed deploy: the health fields of status.json for the release the proxy
 * routes to (`routed`, ./slots.ts routedSlot): it passed its health check before its switch, and
 * serves from its slot. None when it routes to no slot.
 */
export function routedHealth(routed: RoutedSlot): Partial<AppStatus> {
  return routed.slot ? { status: "running", healthy: true, slot: routed.slot, slotPort: routed.slotPort } : {};
}

/** After a killed deploy: status.json follows what serves (`current`, `meta`); `health` as the strategy found it. */
export function interruptedStatus(
  status: AppStatus,
  r: {
    current?: string;
    meta?: ReleaseMeta;
    health: Partial<AppStatus>;
    killedCommit?: string;
    message: string;
    at: string;
  },
): AppStatus {
  const { current, meta } = r;
  const version = meta?.commit.slice(0, 7);
  return {
    ...status,
    ...(meta && status.release !== current
      ? { release: current, commit: meta.commit, version, previous: status.release, ...r.health }
      : {}),
    lastDeploy: lastDeploy("cancelled", current ?? "", r.killedCommit ?? meta?.commit ?? "", r.at, 0, {
      step: "interrupted",
      message: r.message,
    }),
  };
}

/**
 * A rollback by hand that failed (or was cancelled): status.json as it was, with its last deploy
 * saying so; when nothing healthy serves after it, failed.
 */
export function rollbackFailed(
  before: AppStatus,
  r: { meta: ReleaseMeta; outcome: "failed" | "cancelled"; at: string; duration: number; message: string },
  healthy: boolean,
): AppStatus {
  const last = lastDeploy(r.outcome, r.meta.id, r.meta.commit, r.at, r.duration, {
    step: "rollback",
    message: r.message,
  });
  return { ...before, ...(healthy ? {} : { status: "failed", healthy: false }), lastDeploy: last };
}

/**
 * A rollback by hand to `meta`'s release, from `from`: status.json (whose lastDeploy names the
 * release rolled back from) and what the notification says (the release gone back to).
 */
export function rolledBack(
  config: ServerConfig,
  before: AppStatus | undefined,
  r: {
    app: string;
    meta: ReleaseMeta;
    from?: string;
    /** Back to an older release, or forward (`--to` a newer one). */
    way: "back" | "forward";
    health: HealthResult;
    strategy: Partial<AppStatus>;
    at: string;
    duration: number;
  },
): { status: AppStatus; notice: LastDeploy } {
  const { meta, from, at, duration } = r;
  const version = meta.commit.slice(0, 7);
  // A canary still "running" in status.json was left by a killed deploy: the rollback ended it.
  const left = before?.canary?.state === "running" ? before.canary : undefined;
  // Any other canary is of one release: shown while that release serves, not after going to another.
  const canary = left
    ? { ...left, state: "aborted" as const, reason: "ended by a rollback by hand", at }
    : before?.canary?.release === meta.id
    ? before.canary
    : undefined;
  const { canary: _, ...kept } = before ?? {};
  const message = `rolled ${r.way} by hand to release ${meta.id} (${version})`;
  // Back: the release rolled away from is rolled back. Forward: the newer release serves, as after its deploy.
  const event = (release: string, commit: string) =>
    r.way === "back"
      ? lastDeploy("rolled_back", release, commit, at, duration, { step: "rollback", message })
      : lastDeploy("success", meta.id, meta.commit, at, duration, { step: "rollback", message });
  return {
    status: {
      name: r.app,
      type: meta.type,
      manager: config.manager,
      port: config.port,
      ...kept,
      ...r.strategy,
      ...(canary ? { canary } : {}),
      strategy: config.strategy,
      status: "running",
      healthy: true,
      version,
      commit: meta.commit,
      release: meta.id,
      // The deploy branch is the serving deploy.yml's (as after a push of it); older releases did not record it.
      ...(meta.branch ? { branch: meta.branch } : {}),
      previous: from,
      deployed: at,
      lastHealthCheck: r.health.checkedAt,
      lastDeploy: event(from ?? meta.id, before?.commit ?? meta.commit),
    },
    notice: event(meta.id, meta.commit),
  };
}

/**
 * Writes status.json; a failure to (a full disk) is reported and does not change how the deploy
 * ended: deploy.log has its outcome already.
 */
export async function saveStatus(ctx: StatusContext, status: AppStatus): Promise<void> {
  const { journal, paths } = ctx;
  try {
    // The canary of the deploy this status is about stays (as written during it; for a killed
    // deploy, found by its commit); any other goes.
    const { canary: carried, ...rest } = status;
    const last = status.lastDeploy;
    const ours = (c: AppStatus["canary"]) =>
      c !== undefined && (c.release === last?.release || (last?.step === "interrupted" && c.version === last.version));
    const canary = [(await readStatus(paths.status).catch(() => undefined))?.canary, carried].find(ours);
    await writeStatus(paths.status, await withProcesses(ctx, canary ? { ...rest, canary } : rest));
  } catch (error) {
    journal.say(`! cannot write ${paths.status}: ${(error as Error).message}`);
  }
}

/** What {@link saveStatus} needs besides the status. */
export type StatusContext = Pick<SwitchContext, "journal" | "paths" | "config" | "manager" | "inspect">;

/**
 * `status` with its processes as the manager reports them now (left out when it cannot say; a
 * docker app's web process as the engine reports its container), and the serving release's cron
 * jobs (left out when its metadata cannot be read).
 */
export async function withProcesses(ctx: StatusContext, status: AppStatus): Promise<AppStatus> {
  const { processes: _, cronJobs: __, ...rest } = status;
  const listed = await listProcesses(ctx.paths, ctx.config, ctx.manager, ctx.inspect, status.slot);
  // (its container is `<app>-<slot>` under blue-green: not named without the slot)
  const proxied = PROXIED[ctx.config.strategy];
  const processes = listed && status.type === "docker" && (!proxied || status.slot)
    ? await withContainer(listed, ctx.paths.app, ctx.inspect, proxied ? status.slot : undefined)
    : listed;
  const meta = status.release ? await readReleaseMeta(ctx.paths, status.release).catch(() => undefined) : undefined;
  const cronJobs = meta ? jobsOf(meta).map((job) => job.name) : undefined;
  return { ...rest, ...(processes ? { processes } : {}), ...(cronJobs ? { cronJobs } : {}) };
}
