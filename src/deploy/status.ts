/**
 * `status.json`: what serves now, and how the last deploy ended. Written atomically.
 * @module
 */
import { readTextOrUndefined, writeFileAtomic } from "../fsutil.ts";

/** How a deploy ended. */
export type Outcome = "success" | "failed" | "rolled_back" | "skipped";

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

/** The content of /opt/deployments/<app>/status.json. */
export interface AppStatus {
  name: string;
  /** `running`: the deployed release is healthy; `rolled_back`: the last deploy failed and the previous release serves; `failed`: nothing healthy serves. */
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
  url?: string;
  lastDeploy: LastDeploy;
}

/** Reads status.json, or undefined before the first deploy. */
export async function readStatus(path: string): Promise<AppStatus | undefined> {
  const text = await readTextOrUndefined(path);
  return text === undefined ? undefined : JSON.parse(text) as AppStatus;
}

/** Writes status.json atomically. */
export async function writeStatus(path: string, status: AppStatus): Promise<void> {
  await writeFileAtomic(path, JSON.stringify(status, null, 2) + "\n");
}
