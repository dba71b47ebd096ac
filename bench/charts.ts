/**
 * The dashboard's charts at fleet scale (part of `deno task bench fleet`): a fleet database filled
 * through the collector's own functions with an hour of server samples and request minutes of
 * 100 servers × 10 apps, served by the real API handler and dashboard, and the overview (one
 * sparkline per app, 1,000, from one request) loaded in headless Chromium. Prints, as the page
 * records them (performance.now() read back from `<html data-sparks-…>`): the render time, from
 * the start of building the sparklines' DOM (their answer in hand) to them painted, layout and
 * paint included (target ≤ 300 ms), of which the DOM build; and from navigation start to them
 * painted (page start-up, both requests and the fleet's own overview first); and the bytes a page load transfers (the dashboard's files; target < 200 KB)
 * and the overview's JSON. The end-to-end test tests/e2e/dashboard_charts_test.ts runs the same
 * code at a smaller size.
 * @module
 */
import { join } from "node:path";
import { serveFleet } from "../src/fleet/api.ts";
import { collectorHandler } from "../src/fleet/cli.ts";
import { Collector } from "../src/fleet/collector.ts";
import { fleetConfigSchema, fleetPaths } from "../src/fleet/config.ts";
import { FleetEvents } from "../src/fleet/events.ts";
import { type RequestMinute, storeRequestMinutes, storeServerSample } from "../src/fleet/metric_store.ts";
import { FleetStore } from "../src/fleet/store.ts";
import { openPage, withBrowser } from "../tests/helpers/browser.ts";

// The page's document, inside page.evaluate callbacks (this file is checked without the DOM library).
declare const document: { documentElement: { dataset: Record<string, string | undefined> } };

const MINUTE = 60_000;
/** Page loads measured (the median is printed). */
const RUNS = 5;

/** A fleet monitor served on a loopback port over a database of `servers` × `apps` with an hour of series. */
export interface ChartFleet {
  base: string;
  close(): Promise<void>;
}

/**
 * Fills a fleet database in `dir` with `servers` × `apps` (status and contact as a cycle records
 * them; an hour of one-minute server samples and request minutes, every 7th app erring after
 * half an hour) and serves it with the real handler and dashboard.
 */
export async function chartFleet(dir: string, servers: number, apps: number): Promise<ChartFleet> {
  const paths = fleetPaths(join(dir, "home"));
  const store = await FleetStore.open(paths.db);
  try {
    const now = Date.now();
    const start = Math.floor(now / MINUTE) * MINUTE - 59 * MINUTE;
    for (let s = 0; s < servers; s++) {
      const server = `web-${String(s).padStart(3, "0")}`;
      store.recordContact(server, `10.0.${s >> 8}.${s & 255}`, { at: now, ok: true, durationMs: 80, bytes: 1000 });
      for (let i = 0; i < 60; i++) {
        storeServerSample(store, server, {
          counters: {
            cpuBusy: 100 * i * (1 + (s % 5)),
            cpuTotal: 1000 * i,
            netRx: 1e5 * i,
            netTx: 4e4 * i,
            uptime: 60 * i,
          },
          cpus: 2,
          load: [0.3 + (i % 10) / 10, 0.4, 0.4],
          memory: { total: 4e9, available: 2e9 },
          swap: { total: 0, free: 0 },
          filesystems: [{ mount: "/", used: 30 + i / 2, inodes: 10 }],
          missing: [],
        }, start + i * MINUTE);
      }
      for (let a = 0; a < apps; a++) {
        const app = `app-${a}`;
        store.upsertApp(server, app, { type: "node", status: "running", healthy: true, version: `2.${a}.1` }, now);
        const minutes: RequestMinute[] = [];
        for (let i = 0; i < 60; i++) {
          const requests = 50 + ((s * 7 + a * 13 + i * 3) % 40);
          const errors = (s + a) % 7 === 0 && i >= 30 ? Math.round(requests / 10) : 0;
          minutes.push({ ts: start + i * MINUTE, requests, errors, other: requests - errors, p50: 20, p95: 90 });
        }
        storeRequestMinutes(store, server, app, minutes);
      }
    }
  } catch (error) {
    store.close();
    throw error;
  }
  const collector = new Collector(store, fleetConfigSchema.parse({ interval: "30s", servers: [] }), paths);
  const events = new FleetEvents();
  const handler = await collectorHandler(collector, events);
  const stop = new AbortController();
  const server = serveFleet(handler, { host: "127.0.0.1", port: 0, signal: stop.signal });
  return {
    base: `http://127.0.0.1:${server.addr.port}`,
    async close() {
      stop.abort();
      await server.finished.catch(() => {});
      await collector.close();
      store.close();
    },
  };
}

/** What loading the overview took, as the page recorded it, and what it transferred. */
export interface OverviewLoad {
  /** Building the sparklines' DOM, ms. */
  buildMs: number;
  /** From the start of that build to them painted, ms. */
  renderMs: number;
  /** From navigation start to the sparklines painted, ms. */
  paintMs: number;
  /** Sparklines drawn. */
  sparklines: number;
  /** Bytes of the dashboard's files (everything but /api/). */
  pageBytes: number;
  /** Bytes of the API's answers. */
  apiBytes: number;
  /** Page errors, console errors and CSP violations. */
  problems: string[];
}

/** Loads the overview of `base` `runs` times, each in a fresh context (nothing cached). */
export async function measureOverview(base: string, runs: number): Promise<OverviewLoad[]> {
  return await withBrowser(async (browser) => {
    const loads: OverviewLoad[] = [];
    for (let run = 0; run < runs; run++) {
      const { context, page, problems } = await openPage(browser);
      try {
        const sizes: Promise<[string, number]>[] = [];
        page.on("response", (response) => {
          const path = new URL(response.url()).pathname;
          if (path === "/api/events") return; // a stream that does not end
          sizes.push(response.body().then((body) => [path, body.byteLength], () => [path, 0]));
        });
        await page.goto(`${base}/`);
        await page.waitForSelector("html[data-sparks-paint-ms]", { state: "attached", timeout: 60_000 });
        const times = await page.evaluate(() => {
          const data = document.documentElement.dataset;
          return {
            build: Number(data.sparksMs),
            render: Number(data.sparksRenderMs),
            paint: Number(data.sparksPaintMs),
          };
        });
        const sparklines = await page.locator("svg.spark").count();
        let pageBytes = 0;
        let apiBytes = 0;
        for (const [path, bytes] of await Promise.all(sizes)) {
          if (path.startsWith("/api/")) apiBytes += bytes;
          else pageBytes += bytes;
        }
        loads.push({
          buildMs: times.build,
          renderMs: times.render,
          paintMs: times.paint,
          sparklines,
          pageBytes,
          apiBytes,
          problems,
        });
      } finally {
        await context.close();
      }
    }
    return loads;
  });
}

/** The median of `values`. */
const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

/** Runs the charts benchmark in `tmp`: 100 servers × 10 apps. */
export async function benchCharts(tmp: string): Promise<void> {
  const dir = join(tmp, "charts");
  const fleet = await chartFleet(dir, 100, 10);
  try {
    const loads = await measureOverview(fleet.base, RUNS);
    const render = median(loads.map((l) => l.renderMs));
    console.log(
      `fleet charts: overview of 100 servers × 10 apps (${loads[0].sparklines} sparklines), median of ${RUNS} ` +
        `loads: rendered (DOM built, laid out, painted) in ${render.toFixed(0)} ms (target ≤ 300 ms: ` +
        `${render <= 300 ? "met" : "MISSED"}; per load ${loads.map((l) => l.renderMs.toFixed(0)).join(", ")} ms), ` +
        `of which building the DOM ${median(loads.map((l) => l.buildMs)).toFixed(0)} ms; painted ` +
        `${median(loads.map((l) => l.paintMs)).toFixed(0)} ms from navigation start`,
    );
    const bytes = loads[0].pageBytes;
    console.log(
      `fleet charts: a page load transfers ${(bytes / 1024).toFixed(1)} KB of dashboard files ` +
        `(target < 200 KB: ${bytes < 200 * 1024 ? "met" : "MISSED"}) and ${(loads[0].apiBytes / 1024).toFixed(0)} KB ` +
        `of API answers`,
    );
    const problems = loads.flatMap((l) => l.problems);
    if (problems.length) console.log(`fleet charts: problems in the page: ${problems.join("; ")}`);
  } finally {
    await fleet.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}
