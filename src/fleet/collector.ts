/**
 * The collector: every `interval`, pulls every server at once (at most `concurrency` at a time)
 * and ingests what changed. A server still being pulled from an earlier cycle is skipped, so a
 * slow or unreachable one never holds up the others; each keeps its error and its last
 * successful contact. After a gap in the collector's own run (a laptop that slept), judgement
 * is held: servers are not called stale or unreachable until a cycle after the resumed one.
 * Whatever a server sends, a pull stays within the limits of ./limits.ts; what they refused or
 * cut is the outcome's `limits`, kept with the server (the API, `fleet list`) and alerted.
 * @module
 */
import { readAtMost } from "../fsutil.ts";
import { forTerminal } from "../terminal.ts";
import type { FleetConfig, FleetServer } from "./config.ts";
import { ingestCertificates, ingestFile } from "./ingest.ts";
import {
  capLimits,
  capText,
  FIELD,
  MAX_CRON_JOBS,
  MAX_NEW_BYTES_PER_FILE,
  MAX_NEW_BYTES_PER_SERVER,
  MAX_NEW_LINES_PER_SERVER,
  MAX_PROCESSES,
  MAX_STATUS_BYTES,
  size,
} from "./limits.ts";
import {
  CAP_CHECK_MINUTES,
  capRequestRows,
  downsample,
  MAX_REQUEST_ROWS,
  storedSinceCheck,
  storeServerSample,
} from "./metric_store.ts";
import { MAX_DELTA_GAP_MS } from "./server_sample.ts";
import { Slots } from "./slots.ts";
import { type Source, sourceFor } from "./source.ts";
import type { FreshnessView } from "./views.ts";
import type { AppStatusJson, FleetStore } from "./store.ts";

/** A status change seen in a cycle. */
export interface StatusChange {
  server: string;
  app: string;
  status?: string;
  healthy?: boolean;
  version?: string;
}

/** One server's pull. */
export interface ServerOutcome {
  server: string;
  ok: boolean;
  error?: string;
  durationMs: number;
  bytes: number;
  apps: number;
  lines: number;
  deployments: number;
  gaps: number;
  /** What the limits (./limits.ts) refused or cut in this pull, one line each: the server is marked. */
  limits?: string[];
}

/** One cycle. */
export interface CycleSummary {
  cycle: number;
  at: string;
  durationMs: number;
  servers: ServerOutcome[];
  /** Servers still being pulled by an earlier cycle. */
  skipped: string[];
  changes: StatusChange[];
  /** Lines removed by retention. */
  retained: number;
  holding: boolean;
}

/** Where the collector keeps its mirror and ssh state. */
export interface CollectorHome {
  mirror: (server: string) => string;
  knownHosts: string;
  sockets: string;
}

/** Pulls the fleet into the store. */
export class Collector {
  cycles = 0;
  errors = 0;
  lastCycleMs = 0;
  private readonly inFlight = new Set<string>();
  private readonly sources = new Map<string, Source>();
  /** Pulls running now, across cycles: never more than `concurrency`. */
  private readonly pulls: Slots;
  private lastStart?: number;
  private holdCycles = 0;
  private gapMs = 0;

  constructor(
    readonly store: FleetStore,
    readonly config: FleetConfig,
    private readonly home: CollectorHome,
    private readonly clock: () => number = Date.now,
    /** `metrics: false`: no server metrics are read (only to measure what they cost: bench/fleet.ts). */
    private readonly options: { metrics?: boolean } = {},
  ) {
    this.pulls = new Slots(config.concurrency);
  }

  /** How long without a cycle means the collector itself did not run (a laptop asleep). */
  private get gapLimit(): number {
    return 2 * this.config.interval + 5_000;
  }

  /**
   * The freshness view for the API. Judgement is held for two cycles after a gap in the
   * collector's own run, and already while a cycle is overdue (the gap is only seen when the
   * next cycle starts, and timers do not count the time asleep).
   */
  view(): FreshnessView {
    const now = this.clock();
    const overdue = this.lastStart !== undefined && now - this.lastStart > this.gapLimit;
    return { now, intervalMs: this.config.interval, holding: this.holdCycles > 0 || overdue, gapMs: this.gapMs };
  }

  /** Collector figures for /metrics. */
  stats() {
    return { cycles: this.cycles, errors: this.errors, lastCycleMs: this.lastCycleMs };
  }

  /** Runs one cycle over every server not still busy from an earlier one. */
  async cycle(): Promise<CycleSummary> {
    const started = this.clock();
    if (this.lastStart !== undefined && started - this.lastStart > this.gapLimit) {
      this.gapMs += started - this.lastStart - this.config.interval;
      this.holdCycles = 2; // this cycle, and the next one judges
    }
    if (this.lastStart === undefined) this.store.keepServers(this.config.servers.map((s) => s.name));
    this.lastStart = started;
    const outcomes: ServerOutcome[] = [];
    const changes: StatusChange[] = [];
    const skipped: string[] = [];
    // Each server takes a slot of the collector-wide limit, and is skipped when a pull of it
    // (from this or an earlier cycle) is under way when its turn comes.
    await Promise.all(this.config.servers.map((server) =>
      this.pulls.run(async () => {
        if (this.inFlight.has(server.name)) skipped.push(server.name);
        else outcomes.push(await this.pullServer(server, changes));
      })
    ));
    const ended = this.clock();
    // A cycle that spanned a gap (the laptop slept during a pull): its failures are not judged.
    if (ended - started > this.gapLimit && outcomes.some((o) => !o.ok)) this.holdCycles = 2;
    const holding = this.holdCycles > 0;
    const retained = await this.store.retain({ ...this.config.retention, now: ended });
    downsample(this.store, ended, this.config.retention.days);
    this.cycles++;
    this.errors += outcomes.filter((o) => !o.ok).length;
    this.lastCycleMs = this.clock() - started;
    if (this.holdCycles > 0 && --this.holdCycles === 0) this.gapMs = 0;
    return {
      cycle: this.cycles,
      at: new Date(started).toISOString(),
      durationMs: this.lastCycleMs,
      servers: outcomes.sort((a, b) => a.server.localeCompare(b.server)),
      skipped: skipped.sort(),
      changes,
      retained,
      holding,
    };
  }

  /** Pulls one server and ingests its status files, certificates and logs; records the contact either way. */
  async pullServer(server: FleetServer, changes: StatusChange[] = []): Promise<ServerOutcome> {
    if (this.inFlight.has(server.name)) throw new Error(`${server.name} is being pulled already`);
    this.inFlight.add(server.name);
    const started = this.clock();
    const outcome: ServerOutcome & { limits: string[] } = {
      server: server.name,
      ok: false,
      durationMs: 0,
      bytes: 0,
      apps: 0,
      lines: 0,
      deployments: 0,
      gaps: 0,
      limits: [],
    };
    try {
      const pulled = await this.source(server).pull();
      outcome.bytes = pulled.bytes;
      outcome.limits.push(...pulled.limits);
      if (pulled.metrics) {
        // rates over at most 3 intervals: after a longer gap (a sleep), an average over hours means nothing
        const maxGapMs = Math.max(3 * this.config.interval, MAX_DELTA_GAP_MS);
        storeServerSample(this.store, server.name, pulled.metrics, started, maxGapMs);
      }
      const apps: string[] = [];
      for (const [app, path] of pulled.statuses) {
        const status = await readStatusFile(path);
        if (typeof status === "string") outcome.limits.push(`${app}/status.json ${status}`);
        else apps.push(app); // a half-written one keeps the app's last state; a refused one drops it
        if (typeof status !== "object") continue;
        outcome.apps++;
        if (Array.isArray(status.processes) && status.processes.length > MAX_PROCESSES) {
          outcome.limits.push(
            `${app}/status.json lists ${status.processes.length} processes, over the ${MAX_PROCESSES} kept: ` +
              "the rest are not shown",
          );
        }
        if (this.store.upsertApp(server.name, app, status, started)) {
          changes.push({
            server: server.name,
            app,
            status: capText(status.status, FIELD.short) ?? undefined,
            healthy: typeof status.healthy === "boolean" ? status.healthy : undefined,
            version: capText(status.version, FIELD.short) ?? undefined,
          });
        }
      }
      this.store.keepApps(server.name, apps);
      await ingestCertificates(this.store, server.name, pulled.certificates, started);
      // New log bytes and lines per server per cycle are bounded: the files past the budget wait for
      // the next cycle, and each cycle starts at another file so that none waits for ever.
      const files = [...pulled.logs.keys()].filter((rel) => !rel.endsWith(".1")).sort();
      const first = files.length ? this.cycles % files.length : 0;
      const budget = {
        perFile: MAX_NEW_BYTES_PER_FILE,
        left: MAX_NEW_BYTES_PER_SERVER,
        lines: MAX_NEW_LINES_PER_SERVER,
      };
      let waiting = 0;
      let stopped = 0;
      this.store.touchLedgers(server.name, files, started); // before reading them: whatever happens then
      for (const rel of [...files.slice(first), ...files.slice(0, first)]) {
        const result = await ingestFile(
          this.store,
          server.name,
          pulled.logs.get(rel)!,
          pulled.logs.get(`${rel}.1`),
          started,
          budget,
        );
        outcome.lines += result.lines;
        outcome.deployments += result.deployments;
        outcome.gaps += result.gaps;
        if (result.deferred) waiting++;
        if (result.stopped) stopped++;
        if (result.cronForgotten) {
          outcome.limits.push(
            `${rel}: the last runs of ${result.cronForgotten} cron job(s) forgotten, over the ${MAX_CRON_JOBS} an ` +
              "app may keep",
          );
        }
        if (result.skipped) {
          outcome.limits.push(
            `${rel}: ${size(result.skipped)} skipped, over the ${size(MAX_NEW_BYTES_PER_FILE)} a log file may bring ` +
              "in one cycle",
          );
        }
      }
      if (stopped) {
        outcome.limits.push(
          `${stopped} log file(s) wait for the next cycle: over the ` +
            `${MAX_NEW_LINES_PER_SERVER.toLocaleString("en-US")} new log lines a server may bring in one cycle`,
        );
      }
      if (waiting) {
        outcome.limits.push(
          `${waiting} log file(s) wait for the next cycle: over the ${size(MAX_NEW_BYTES_PER_SERVER)} of new log ` +
            "lines a server may bring in one cycle",
        );
      }
      // Many request windows at once: the server's caps now, not at the next 5-minute pass.
      const capped = storedSinceCheck(this.store, server.name) >= CAP_CHECK_MINUTES
        ? capRequestRows(this.store, server.name)
        : 0;
      if (capped) {
        outcome.limits.push(
          `${capped.toLocaleString("en-US")} of its oldest request rows removed: over the ${
            Object.values(MAX_REQUEST_ROWS).map((n) => n.toLocaleString("en-US")).join(" / ")
          } request rows (by the minute / of 5 minutes / rollups) a server may keep`,
        );
      }
      if (pulled.error) throw new Error(pulled.error); // the statuses (and logs) that came are kept
      outcome.ok = true;
    } catch (error) {
      outcome.error = capText(error instanceof Error ? error.message : String(error), FIELD.message)!;
    } finally {
      this.inFlight.delete(server.name);
    }
    outcome.durationMs = this.clock() - started;
    outcome.limits = capLimits(outcome.limits);
    this.store.recordContact(server.name, server.host, {
      at: started,
      ok: outcome.ok,
      error: outcome.error,
      durationMs: outcome.durationMs,
      bytes: outcome.bytes,
      limits: outcome.limits,
    });
    return outcome;
  }

  private source(server: FleetServer): Source {
    let source = this.sources.get(server.name);
    if (!source) {
      source = sourceFor(server, { ...this.home, mirror: this.home.mirror(server.name) }, this.options.metrics);
      this.sources.set(server.name, source);
    }
    return source;
  }

  /**
   * Runs a cycle every `interval` until `signal` aborts, calling `onCycle` after each. A cycle
   * does not wait for the one before: busy servers are skipped instead.
   */
  async run(signal: AbortSignal, onCycle: (summary: CycleSummary) => void): Promise<void> {
    const running = new Set<Promise<void>>();
    while (!signal.aborted) {
      const cycle = this.cycle().then(
        onCycle,
        (error) => console.error(`fleet: cycle failed: ${forTerminal(String(error))}`),
      );
      running.add(cycle);
      cycle.finally(() => running.delete(cycle));
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          signal.removeEventListener("abort", done);
          resolve();
        };
        const timer = setTimeout(done, this.config.interval);
        signal.addEventListener("abort", done, { once: true });
      });
    }
    await Promise.all(running);
  }

  /** Closes the ssh master connections. */
  async close(): Promise<void> {
    await Promise.all([...this.sources.values()].map((source) => source.close()));
    this.sources.clear();
  }
}

/**
 * An app's status.json: the object, or why it is refused (over {@link MAX_STATUS_BYTES}: at most
 * that many bytes are read; a whole JSON value that is not an object), or undefined when it cannot
 * be read or is not JSON (half-written: the next cycle reads it again).
 */
export async function readStatusFile(path: string): Promise<AppStatusJson | string | undefined> {
  let value: unknown;
  try {
    const bytes = await readAtMost(path, MAX_STATUS_BYTES);
    if (bytes.length > MAX_STATUS_BYTES) return `is over the ${size(MAX_STATUS_BYTES)} allowed: refused`;
    value = JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return undefined;
  }
  if (typeof value === "object" && value !== null && !Array.isArray(value)) return value as AppStatusJson;
  return `is ${jsonKind(value)}, not a JSON object: refused`;
}

/** What a JSON value that is not an object is, for a refusal: `an array`, `null`, `a string`, … */
const jsonKind = (value: unknown) => value === null ? "null" : Array.isArray(value) ? "an array" : `a ${typeof value}`;
