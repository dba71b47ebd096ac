/**
 * A fleet monitor over local server trees for the dashboard's end-to-end tests: the real Collector
 * (one LocalSource per server: each server is a directory tree as on a VPS,
 * opt/deployments/<app>/status.json and var/log/deployments/<app>/*.log), a real SQLite FleetStore
 * (tests may write to it too), the real API handler with the dashboard hook, served on a free
 * loopback port; cycles run when the test says, announced to open pages as `runFleet` does.
 */
import { join } from "node:path";
import { assert } from "./assert.ts";
import { serveFleet } from "../../src/fleet/api.ts";
import { FleetEvents } from "../../src/fleet/events.ts";
import { collectorHandler } from "../../src/fleet/cli.ts";
import { Collector, type CycleSummary } from "../../src/fleet/collector.ts";
import { fleetConfigSchema, fleetPaths } from "../../src/fleet/config.ts";
import { LocalSource, type Source } from "../../src/fleet/source.ts";
import { FleetStore } from "../../src/fleet/store.ts";

const iso = (ms: number) => new Date(ms).toISOString();

/** A server of a {@link LocalFleet}. */
export interface ServerSpec {
  name: string;
  netdata?: string;
}

/**
 * A fleet monitor over local server trees: the real Collector (one LocalSource per server),
 * FleetStore, API handler and dashboard, served on a free loopback port.
 */
export class LocalFleet {
  private constructor(
    readonly dir: string,
    readonly events: FleetEvents,
    readonly store: FleetStore,
    readonly collector: Collector,
    private readonly server: Deno.HttpServer<Deno.NetAddr>,
    private readonly stop: AbortController,
  ) {}

  static async start(servers: ServerSpec[], options: { token?: string } = {}): Promise<LocalFleet> {
    const dir = await Deno.makeTempDir({ prefix: "dp-dashboard-" });
    const paths = fleetPaths(join(dir, "home"));
    let store: FleetStore | undefined;
    try {
      store = await FleetStore.open(paths.db);
      const config = fleetConfigSchema.parse({
        interval: "30s",
        servers: servers.map((s) => ({ name: s.name, host: "local", ...(s.netdata ? { netdata: s.netdata } : {}) })),
      });
      const collector = new Collector(store, config, paths);
      // `host: local` reads DEPLOY_PARADIGM_PREFIX, one tree per process; here each server has its own.
      const sources = (collector as unknown as { sources: Map<string, Source> }).sources;
      for (const s of servers) sources.set(s.name, new LocalSource(join(dir, "servers", s.name)));
      const events = new FleetEvents();
      const api = await collectorHandler(collector, events, { token: options.token, heartbeatMs: 1000 });
      const stop = new AbortController();
      const server = serveFleet(api, { host: "127.0.0.1", port: 0, token: options.token, signal: stop.signal });
      return new LocalFleet(dir, events, store, collector, server, stop);
    } catch (error) {
      store?.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      throw error;
    }
  }

  get base(): string {
    return `http://127.0.0.1:${this.server.addr.port}`;
  }

  /** Writes `status.json` of `app` on `server`. */
  async status(server: string, app: string, status: Record<string, unknown>): Promise<void> {
    const dir = join(this.dir, "servers", server, "opt", "deployments", app);
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeTextFile(join(dir, "status.json"), JSON.stringify({ name: app, ...status }));
  }

  /** Writes the proxy's `opt/deployments/.tls/certificates.json` on `server`. */
  async certificates(server: string, certificates: Record<string, unknown>): Promise<void> {
    const dir = join(this.dir, "servers", server, "opt", "deployments", ".tls");
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeTextFile(
      join(dir, "certificates.json"),
      JSON.stringify({ updatedAt: iso(Date.now()), certificates }),
    );
  }

  /** Appends lines to `var/log/deployments/<app>/<file>` on `server`. */
  async log(server: string, app: string, file: string, lines: string[]): Promise<void> {
    const dir = join(this.dir, "servers", server, "var", "log", "deployments", app);
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeTextFile(join(dir, file), lines.map((line) => line + "\n").join(""), { append: true });
  }

  /** One collector cycle, announced to the open pages as `runFleet` does. */
  async cycle(): Promise<CycleSummary> {
    const summary = await this.collector.cycle();
    assert(summary.servers.every((s) => s.ok), JSON.stringify(summary.servers));
    this.events.emit("cycle", summary);
    return summary;
  }

  async close(): Promise<void> {
    this.stop.abort();
    await this.server.finished.catch(() => {});
    await this.collector.close();
    this.store.close();
    await Deno.remove(this.dir, { recursive: true });
  }
}
