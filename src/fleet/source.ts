/**
 * Where a server's files come from: `host: local` reads this machine's deployment dirs directly
 * ({@link LocalSource}); any other host is pulled over ssh with rsync into a mirror
 * (./ssh_source.ts), taking what ./pull_plan.ts allows within the limits of ./limits.ts.
 * @module
 */
import { join } from "node:path";
import { deploymentsRoot, logsRoot, prefix } from "../paths.ts";
import { certificatesPath } from "../proxy/cert_state.ts";
import { type FleetServer, LOCAL } from "./config.ts";
import type { SourceFile } from "./ingest.ts";
import { SAFE_NAME } from "./limits.ts";
import { LOG_FILE } from "./pull_plan.ts";
import { ProcessRunner } from "../runner.ts";
import { MAX_METRICS_BYTES, METRICS_SCRIPT, parseMetrics, type RawMetrics, splitMetrics } from "./server_metrics.ts";
import { SshSource } from "./ssh_source.ts";

/** What one pull of a server found. */
export interface Pulled {
  /** `<app>` → its status.json, readable here. */
  statuses: Map<string, string>;
  /** The proxy's `.tls/certificates.json`, readable here; undefined when the server has none. */
  certificates?: string;
  /** Log files by `<app>/<name>` (rotated `.1` siblings included), readable here. */
  logs: Map<string, SourceFile>;
  /** Bytes received over the network. */
  bytes: number;
  /** What failed after the status files came (the logs' transfer): the server counts as failed. */
  error?: string;
  /** What was refused or cut by the limits (./limits.ts), one line each. */
  limits: string[];
  /** The server's metrics as read in this pull (./server_metrics.ts); undefined when not read. */
  metrics?: RawMetrics;
}

/** A server's files. */
export interface Source {
  pull(): Promise<Pulled>;
  /** Ends what the source keeps open (the ssh master connection). */
  close(): Promise<void>;
}

/**
 * The source of a configured server; `metrics: false` reads no server metrics (only to measure
 * what they cost: bench/fleet.ts).
 */
export function sourceFor(
  server: FleetServer,
  home: { mirror: string; knownHosts: string; sockets: string },
  metrics = true,
): Source {
  return server.host === LOCAL ? new LocalSource(prefix(), metrics) : new SshSource(server, home, metrics);
}

/** This machine's own deployments (under DEPLOY_PARADIGM_PREFIX when set). */
export class LocalSource implements Source {
  constructor(readonly root: string, private readonly metrics = true) {}

  async pull(): Promise<Pulled> {
    const statuses = new Map<string, string>();
    for (const app of (await dirs(deploymentsRoot(this.root))).filter((name) => SAFE_NAME.test(name))) {
      const path = join(deploymentsRoot(this.root), app, "status.json");
      if (await isFile(path)) statuses.set(app, path);
    }
    const certificates = certificatesPath(deploymentsRoot(this.root));
    const logs = new Map<string, SourceFile>();
    const root = logsRoot(this.root);
    for (const app of (await dirs(root)).filter((name) => SAFE_NAME.test(name))) {
      for await (const entry of Deno.readDir(join(root, app))) {
        const rel = `${app}/${entry.name}`;
        if (!entry.isFile || !LOG_FILE.test(rel) || !SAFE_NAME.test(entry.name)) continue;
        const path = join(root, rel);
        logs.set(rel, { rel, path, ino: "here" });
      }
    }
    return {
      statuses,
      ...(await isFile(certificates) ? { certificates } : {}),
      logs,
      bytes: 0,
      limits: [],
      ...(this.metrics ? { metrics: await localMetrics() } : {}),
    };
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** This machine's metrics: the same constant script an ssh pull runs, with `sh -c`. */
async function localMetrics(): Promise<RawMetrics> {
  const result = await new ProcessRunner().run({
    argv: ["sh", "-c", METRICS_SCRIPT],
    quiet: true,
    allowFailure: true,
    timeoutMs: 30_000,
    maxOutputBytes: 2 * MAX_METRICS_BYTES,
  });
  return parseMetrics(splitMetrics(result.output).metrics ?? "");
}

function isFile(path: string): Promise<boolean> {
  return Deno.stat(path).then((s) => s.isFile, () => false);
}

async function dirs(path: string): Promise<string[]> {
  const names: string[] = [];
  try {
    for await (const entry of Deno.readDir(path)) {
      if (entry.isDirectory && !entry.name.startsWith(".")) names.push(entry.name);
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  return names.sort();
}
