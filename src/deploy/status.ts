/**
 * `status.json`: what serves now, and how the last deploy ended. Written atomically.
 * @module
 */
import { basename, dirname } from "node:path";
import { readJsonObject, type Shape, writeFileAtomic } from "../fsutil.ts";
import type { ProcessInfo } from "./process_list.ts";
import type { ServerConfig } from "../config/schema.ts";
import { type CertificateState, readCertificates } from "../proxy/cert_state.ts";
import { maintenanceForStatus, type MaintenanceStatus } from "../proxy/maintenance.ts";

/** How a deploy ended (`refused`: its commit or the server's files did not validate; nothing changed). */
export type Outcome = "success" | "failed" | "rolled_back" | "cancelled" | "refused";

/** The last deploy attempt, whatever its outcome. */
export interface LastDeploy {
  outcome: Outcome;
  release: string;
  commit: string;
  version: string;
  at: string;
  /** Milliseconds. */
  duration: number;
  /** The step that failed. */
  step?: string;
  message?: string;
}

/** One side of a canary's figures since its step began: the new release's or the old one's. */
export interface CanarySide {
  requests: number;
  /** 5xx answers over requests, 0 to 1. */
  errorRate: number;
  p95Ms: number | null;
}

/** A deploy's canary (deploy.yml `canary:`), written at each step and left with its final state until the next deploy. */
export interface CanaryStatus {
  state: "running" | "promoted" | "reverted" | "aborted";
  /** The new release and its short sha. */
  release: string;
  version: string;
  /** The share of clients sent to the new release now (last); 100 once promoted. */
  percent: number;
  /** The step (1-based) of `steps`. */
  step: number;
  steps: number[];
  since: string;
  /** When the current step began. */
  stepSince?: string;
  /** When this was written. */
  at: string;
  /**
   * What each side answered since step `step` began, as last judged (until the current step's first
   * judgement, the figures of the step before, named by their `step`); `share`: the new side's share
   * of the requests (new ÷ both, 0-1), null without any.
   */
  figures?: { new: CanarySide; old: CanarySide; share?: number | null; step?: number };
  /** Why it ended as it did (the figures that failed, by hand, cancelled). */
  reason?: string;
}

/** The content of /opt/deployments/<app>/status.json. */
export interface AppStatus {
  name: string;
  /**
   * `running`: the release deployed last serves and is healthy (a deploy that failed before the
   * switch leaves this as it was); `rolled_back`: the last deploy failed after the switch and the
   * previous release serves again; `failed`: nothing healthy serves.
   */
  status: "running" | "rolled_back" | "failed";
  /** Short sha of what serves. */
  version?: string;
  commit?: string;
  release?: string;
  previous?: string;
  /** When the serving release was deployed. */
  deployed?: string;
  lastHealthCheck?: string;
  healthy: boolean;
  type: string;
  manager: string;
  port: number;
  /** Where the app answers; absent for a static app without a process. */
  url?: string;
  /** The branch that deploys (from the serving release's deploy.yml); pushes to others are only stored. */
  branch?: string;
  /** How deploys switch traffic: blue-green (through the proxy) or restart. */
  strategy?: ServerConfig["strategy"];
  /** Blue-green: the slot and port that take traffic (none for a static release, which the proxy serves). */
  slot?: "blue" | "green";
  slotPort?: number;
  /** Blue-green: the last deploy's watch window. */
  watch?: "passed" | "failed" | "off";
  /** Blue-green: milliseconds from "the new slot is healthy" to "the proxy routes to it". */
  switchMs?: number;
  lastDeploy: LastDeploy;
  /**
   * The app's certificate as the proxy's `.tls/certificates.json` said when this file was written
   * (absent for an app without one); `status` reads the file itself for the current state.
   */
  certificate?: CertificateState;
  /** Every process that should run (web instances, workers) as the manager reported it when this file was written. */
  processes?: ProcessInfo[];
  /**
   * The names of the serving release's cron jobs (deploy.yml `cron:`): the fleet judges only these
   * (a job removed stops being watched); absent when the release's metadata cannot be read.
   */
  cronJobs?: string[];
  /** The app's maintenance (../proxy/maintenance.ts) when this file was written; absent when off. */
  maintenance?: MaintenanceStatus;
  /** The last deploy's canary, when it had one (see {@link CanaryStatus}). */
  canary?: CanaryStatus;
}

/**
 * The fields of status.json the readers rely on, with their JSON types (`?`: checked when present): a
 * file without them was not written by a deploy, and would fail a reader later.
 */
const SHAPE: Shape = [
  ["name", "string"],
  ["status", "string"],
  ["healthy", "boolean"],
  ["type", "string"],
  ["manager", "string"],
  ["port", "number"],
  ["lastDeploy", "object"],
  ["lastDeploy.outcome", "string"],
  ["lastDeploy.version", "string"],
  ...["release", "commit", "at", "step", "message"].map((key): [string, string] => [`lastDeploy.${key}`, "string?"]),
  ["lastDeploy.duration", "number?"],
  ...["version", "commit", "release", "previous", "deployed", "lastHealthCheck", "url", "branch", "strategy", "slot"]
    .map((key): [string, string] => [key, "string?"]),
  ["slotPort", "number?"],
  ["processes", "array?"],
  ["cronJobs", "array?"],
  ["canary", "object?"],
];

/**
 * Reads status.json, or undefined before the first deploy; one that is not JSON, or without the
 * fields a deploy writes, is an error naming it.
 */
export async function readStatus(path: string): Promise<AppStatus | undefined> {
  const remedy = "deploys write this file: restore it from a backup, or remove it (the next deploy writes it again)";
  return await readJsonObject(path, remedy, { shape: SHAPE, what: "a status written by a deploy" }) as
    | AppStatus
    | undefined;
}

/**
 * Writes status.json (`<root>/<app>/status.json`) atomically, with the app's certificate as
 * `<root>/.tls/certificates.json` has it now and its maintenance as `<root>/<app>/maintenance.json`
 * has it now (an older copy of either in `status` is replaced or dropped).
 */
export async function writeStatus(path: string, status: AppStatus): Promise<void> {
  const { certificate: _, maintenance: _m, ...rest } = status;
  const appDir = dirname(path);
  const certificate = (await readCertificates(dirname(appDir))).get(basename(appDir));
  const maintenance = await maintenanceForStatus(appDir);
  const value = { ...rest, ...(certificate ? { certificate } : {}), ...(maintenance ? { maintenance } : {}) };
  await writeFileAtomic(path, JSON.stringify(value, null, 2) + "\n");
}
