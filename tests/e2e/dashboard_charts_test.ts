/**
 * The dashboard's charts in real headless Chromium, served by the real `deploy-paradigm fleet`
 * over a real SQLite fleet database. The series come from {@link DATA_SOURCE}: an hour of server
 * samples and request minutes stored through the collector's own functions (metric_store.ts's
 * storeServerSample, requestMinuteOf and storeRequestMinutes) before the monitor starts, while its
 * real cycles read server `alpha` (`host: local`): web's status.json and its deploy.log (two
 * deployments, the second one erring on half its requests). Read back from the DOM: the disk
 * chart's rise, the error-rate step at the second deploy's mark, the overview's sparklines, the
 * range picker, and the page's weight. Screenshots, light, dark and forced colours, go to
 * tests/artifacts/. Last, the measurement `deno task bench fleet` makes at 100 servers × 10 apps
 * (bench/charts.ts), at a smaller size.
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { openPage, screenshot, withBrowser } from "../helpers/browser.ts";
import { chartData, openChart } from "../helpers/charts.ts";
import { BIN, freePort, spawnCapturing } from "../helpers/server.ts";
import { chartFleet, measureOverview } from "../../bench/charts.ts";
import { fleetPaths } from "../../src/fleet/config.ts";
import { requestMinuteOf, storeRequestMinutes, storeServerSample } from "../../src/fleet/metric_store.ts";
import type { RawMetrics } from "../../src/fleet/server_metrics.ts";
import { FleetStore } from "../../src/fleet/store.ts";
import { MAX_CHART_MOUNTS } from "../../src/fleet/series.ts";

// Globals of the page, used inside page.evaluate callbacks (this file is checked without the DOM library).
// deno-lint-ignore no-explicit-any
declare const document: any;
// deno-lint-ignore no-explicit-any
declare const getComputedStyle: (element: any) => { stroke: string };

const MINUTE = 60_000;
const iso = (ms: number) => new Date(ms).toISOString();

/** The filling file system's mount point, and a hostile one (markup as a mount point). */
const FILLING = "/srv/fill";
const HOSTILE_MOUNT = `/mnt/<img src=x onerror="document.title='pwned'">`;
/** Nearly empty mounts: with them the disk chart has more than it draws (the fullest only). */
const SPARE_MOUNTS = Array.from({ length: 12 }, (_, k) => `/srv/spare${String(k).padStart(2, "0")}`);

/** What the charts are expected to show. */
interface Story {
  /** The first and second deployments of web (the second errs on half its requests). */
  deploys: { ts: number; version: string }[];
}

/**
 * Where the series come from: fills the database at `db` (and the server tree at `prefix`, which
 * the monitor's cycles read) with the last hour of `alpha` and its app `web`. Swap this function to
 * drive the charts otherwise (e.g. through real cycles over a fake VPS).
 */
type DataSource = (db: string, prefix: string, now: number) => Promise<Story>;

/** An hour of samples, one a minute: the disk at FILLING fills from 10 % to 95 %. */
const storedHour: DataSource = async (db, prefix, now) => {
  const start = Math.floor(now / MINUTE) * MINUTE - 59 * MINUTE;
  // deploy.log names commits; the fleet shows a deployment's version as its commit's first 7 characters.
  const deploys = [
    { ts: start + 10 * MINUTE + 20_000, version: "c0ffee1" },
    { ts: start + 35 * MINUTE + 20_000, version: "badc0de" },
  ];
  const app = join(prefix, "opt", "deployments", "web");
  const logs = join(prefix, "var", "log", "deployments", "web");
  await Deno.mkdir(app, { recursive: true });
  await Deno.mkdir(logs, { recursive: true });
  await Deno.writeTextFile(
    join(app, "status.json"),
    JSON.stringify({
      name: "web",
      status: "running",
      healthy: true,
      version: "2.0.0",
      commit: "badc0de99",
      deployed: iso(deploys[1].ts),
    }),
  );
  await Deno.writeTextFile(
    join(logs, "deploy.log"),
    deploys.flatMap(({ ts, version }) =>
      ["begin", "success"].map((event) =>
        JSON.stringify({ time: iso(ts), app: "web", event, release: `r-${version}`, commit: `${version}99`, ok: true })
      )
    ).join("\n") + "\n",
  );
  // The proxy's metrics.log minutes: 120 requests; after the second deploy half of them 5xx.
  const lines: string[] = [];
  for (let i = 0; i < 60; i++) {
    const ts = start + i * MINUTE;
    const erring = ts >= deploys[1].ts;
    lines.push(JSON.stringify({
      ts: iso(ts),
      app: "web",
      requests: 120,
      status: erring ? { "2xx": 60, "5xx": 60 } : { "2xx": 120 },
      p50_ms: erring ? 30 : 20,
      p95_ms: erring ? 200 : 80,
    }));
  }
  await Deno.writeTextFile(join(logs, "metrics.log"), lines.join("\n") + "\n");
  const store = await FleetStore.open(db);
  try {
    storeRequestMinutes(
      store,
      "alpha",
      "web",
      lines.flatMap((text, offset) => requestMinuteOf({ offset, text, ts: now }, now) ?? []),
    );
    let busy = 1000;
    for (let i = 0; i < 60; i++) {
      const raw: RawMetrics = {
        counters: {
          cpuBusy: busy += 3000 * (0.3 + 0.25 * Math.sin(i / 5)),
          cpuTotal: 10_000 + i * 3000,
          netRx: 1e6 + i * 60 * 200_000,
          netTx: 1e6 + i * 60 * 50_000,
          uptime: 10_000 + i * 60,
        },
        cpus: 2,
        load: [0.5 + i / 60, 0.5, 0.4],
        memory: { total: 4e9, available: 2.4e9 - i * 1e7 },
        swap: { total: 1e9, free: 9e8 },
        filesystems: [
          { mount: "/", used: 41, inodes: 12 },
          { mount: FILLING, used: 10 + i * (85 / 59), inodes: 1 },
          { mount: HOSTILE_MOUNT, used: 90, inodes: 1 },
          ...SPARE_MOUNTS.map((mount, k) => ({ mount, used: 1 + k / 10, inodes: 1 })),
        ],
        missing: [],
      };
      if (i === 30) continue; // a missed cycle: a gap in every line
      storeServerSample(store, "alpha", raw, start + i * MINUTE);
    }
  } finally {
    store.close();
  }
  return { deploys };
};

/** The data source of these tests. */
const DATA_SOURCE: DataSource = storedHour;

/** `deploy-paradigm fleet` over a home and a server tree filled by {@link DATA_SOURCE}. */
async function startFleet(dir: string) {
  const home = join(dir, "home");
  const prefix = join(dir, "server");
  await Deno.mkdir(home, { recursive: true });
  await Deno.writeTextFile(join(home, "config.yml"), "servers:\n  - { name: alpha, host: local }\n");
  const story = await DATA_SOURCE(fleetPaths(home).db, prefix, Date.now());
  const port = freePort();
  let output = "";
  const child = spawnCapturing(
    [BIN, "fleet", "--port", String(port)],
    { FLEET_MONITOR_HOME: home, DEPLOY_PARADIGM_PREFIX: prefix, NO_COLOR: "1" },
    (text) => output += text,
  );
  for (let i = 0; i < 300 && !/cycle 1:/.test(output); i++) await new Promise((r) => setTimeout(r, 100));
  assertMatch(output, /cycle 1: 1\/1 servers, 1 apps/);
  return { child, base: `http://127.0.0.1:${port}`, story, output: () => output };
}

Deno.test({
  name: "dashboard charts: disk rise, error step at the deploy mark, sparklines, range picker, weight",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const dir = await Deno.makeTempDir({ prefix: "dp-charts-" });
    let fleet: Awaited<ReturnType<typeof startFleet>> | undefined;
    try {
      fleet = await startFleet(dir);
      const { base, story } = fleet;
      await withBrowser(async (browser) => {
        await t.step("the server page's disk chart shows the rise; a hostile mount point stays text", async () => {
          for (const colorScheme of ["light", "dark"] as const) {
            const watched = await openPage(browser, { colorScheme });
            try {
              await openChart(watched, base, "#/server/alpha", 'figure[data-chart="disk"] svg.chart');
              const disk = await chartData(watched.page, "disk");
              const filling = disk.legend.find((l) => l.label === FILLING);
              assert(filling, JSON.stringify(disk.legend));
              const values = disk.series[filling.key].filter((v): v is number => v !== null);
              assert(values.length >= 50, `${values.length} points`);
              assert(values[0] < 15 && values.at(-1)! > 90, JSON.stringify(values));
              for (let i = 1; i < values.length; i++) assert(values[i] >= values[i - 1], "the disk only fills");
              assert(disk.series[filling.key].includes(null), "the missed cycle is a gap");
              assertMatch(filling.last, /^9\d(\.\d)? %$/);
              assert(disk.legend.some((l) => l.label === HOSTILE_MOUNT), "the hostile mount point, as text");
              assertEquals(await watched.page.locator("main img").count(), 0);
              // The test's own mounts, the fullest (the live cycles of this machine add its real ones, and its /).
              const ours = new Set([FILLING, HOSTILE_MOUNT]);
              const looks = disk.looks.filter((_, i) => ours.has(disk.legend[i].label)).map((look) => look.join(" "));
              assertEquals(looks.length, ours.size, JSON.stringify(disk.legend));
              // The spare mounts and this machine's own make more than the chart draws: the fullest, said so.
              assertEquals(disk.legend.length, MAX_CHART_MOUNTS, JSON.stringify(disk.legend));
              assertMatch(
                disk.note ?? "",
                new RegExp(`^The ${MAX_CHART_MOUNTS} fullest mounts of \\d+ in this range\\.$`),
              );
              assert(!disk.legend.some((l) => l.label === SPARE_MOUNTS[0]), "the emptiest is left out");
              assertEquals(new Set(looks).size, looks.length, `each mount its own dashes and marker: ${looks}`);
              for (const name of ["cpu", "memory", "network", "load"]) {
                const chart = await chartData(watched.page, name);
                assert(chart.legend.every((l) => l.last !== "no data"), `${name}: ${JSON.stringify(chart.legend)}`);
              }
              assertEquals(await watched.page.title(), "alpha · Fleet");
              await screenshot(watched.page, `charts-server${colorScheme === "dark" ? "-dark" : ""}`);
              assertEquals(watched.problems, []);
            } finally {
              await watched.context.close();
            }
          }
        });

        await t.step(
          "an app's error-rate chart steps at the second deploy's mark; the mark explains itself",
          async () => {
            for (const colorScheme of ["light", "dark"] as const) {
              const watched = await openPage(browser, { colorScheme });
              const { page } = watched;
              try {
                await openChart(watched, base, "#/server/alpha?app=web", 'figure[data-chart="errors"] svg.chart');
                const errors = await chartData(page, "errors");
                assertEquals(errors.marks.map((m) => m.version), ["c0ffee1", "badc0de"]);
                const mark = errors.marks[1];
                assertEquals(mark.ts, story.deploys[1].ts);
                const rates = errors.series.errorRate;
                const before = errors.ts.findLastIndex((ts) => ts <= mark.ts);
                assert(errors.xs[before] <= mark.x && mark.x <= errors.xs[before + 1], JSON.stringify(errors.xs));
                assert(rates.slice(0, before).every((v) => v === null || v === 0), JSON.stringify(rates));
                const after = rates.slice(before + 1).filter((v) => v !== null);
                assert(after.length >= 20 && after.every((v) => v === 0.5), JSON.stringify(rates));
                assertMatch(mark.title, /^deploy badc0de: success, /);
                // Hover and keyboard focus show the same words in a visible tooltip.
                const tip = page.locator('figure[data-chart="errors"] .chart-tip');
                await page.locator('figure[data-chart="errors"] g.deploy[data-version="badc0de"] rect.hit').hover();
                await tip.waitFor({ state: "visible" });
                assertMatch(await tip.textContent() ?? "", /^deploy badc0de: success, /);
                await page.mouse.move(0, 0);
                await tip.waitFor({ state: "hidden" });
                await page.locator('figure[data-chart="errors"] g.deploy[data-version="c0ffee1"]').focus();
                await tip.waitFor({ state: "visible" });
                assertMatch(await tip.textContent() ?? "", /^deploy c0ffee1: success, /);
                const latency = await chartData(page, "latency");
                assertEquals(latency.legend.map((l) => [l.label, l.last]), [["p50", "30 ms"], ["p95", "200 ms"]]);
                assertEquals(latency.dashes, [null, "6 3"], "p50 solid, p95 dashed");
                assertEquals((await chartData(page, "requests")).legend[0].last, "120/min");
                await screenshot(page, `charts-app${colorScheme === "dark" ? "-dark" : ""}`);
                assertEquals(watched.problems, []);
              } finally {
                await watched.context.close();
              }
            }
          },
        );

        await t.step("without colour (forced colours): series keep their dash patterns and labels", async () => {
          const watched = await openPage(browser);
          try {
            await watched.page.emulateMedia({ forcedColors: "active" });
            await openChart(watched, base, "#/server/alpha?app=web", 'figure[data-chart="latency"] svg.chart');
            const strokes = await watched.page.$$eval(
              'figure[data-chart="memory"] g.series path.line',
              (paths) => paths.map((p) => [getComputedStyle(p).stroke, p.getAttribute("stroke-dasharray")]),
            );
            assertEquals(strokes.length, 2);
            assertEquals(strokes[0][0], strokes[1][0], "one colour in forced colours");
            assert(strokes[0][1] !== strokes[1][1], "told apart by the dash pattern");
            await screenshot(watched.page, "charts-forced-colors");
            assertEquals(watched.problems, []);
          } finally {
            await watched.context.close();
          }
        });

        await t.step(
          "the overview has a sparkline per app; the range picker keeps its choice in the hash",
          async () => {
            const watched = await openPage(browser);
            const { page } = watched;
            try {
              await openChart(watched, base, "", 'td.spark-cell[data-server="alpha"][data-app="web"] svg.spark');
              const spark = page.locator('td.spark-cell[data-server="alpha"][data-app="web"]');
              const values = JSON.parse(await spark.locator("svg").getAttribute("data-v") ?? "[]");
              assertEquals(values.filter((v: number | null) => v === 120).length >= 55, true, JSON.stringify(values));
              assertEquals(await spark.locator("svg").getAttribute("class"), "spark bad");
              assertMatch(await spark.textContent() ?? "", /120\/min, 5xx up to 50 %/);
              assert(
                await page.locator("html[data-sparks-ms]").count() === 1,
                "the sparklines' render time is recorded",
              );
              await screenshot(page, "charts-overview", { fullPage: false });
              // The buckets of 24 h, as the API cuts them for sparklines and for charts.
              const api = async (query: string) => await (await fetch(`${base}/api/metrics/${query}`)).json();
              const day = (await api("overview?range=24h")).sparklines[0].requests.length;
              const dayChart = (await api("server?server=alpha&range=24h")).ts.length;
              assert(day > 1 && day !== values.length, `${day} buckets in 24 h`);
              await page.locator('.spark-panel .ranges a[data-range="24h"]').click();
              await page.waitForFunction(() => location.hash === "#/?range=24h");
              await page.waitForFunction(
                (n) => JSON.parse(document.querySelector("td.spark-cell svg.spark")?.dataset.v ?? "[]").length === n,
                day,
              );
              assertEquals(await page.locator('.spark-panel .ranges a[aria-current="true"]').textContent(), "24 h");
              await screenshot(page, "charts-overview-24h", { fullPage: false });
              // The chosen range reaches the server page through the link, and is kept on reload.
              await page.locator('table.sparks a[href*="server/alpha"]').first().click();
              await page.waitForSelector('figure[data-chart="disk"] svg.chart');
              assertMatch(await page.evaluate(() => location.hash), /range=24h/);
              assertEquals(await page.locator('.metrics .ranges a[aria-current="true"]').first().textContent(), "24 h");
              assertEquals((await chartData(page, "cpu")).ts.length, dayChart);
              assertEquals(watched.problems, []);
            } finally {
              await watched.context.close();
            }
          },
        );

        await t.step("a page load weighs under 200 KB (dashboard files, every chart module included)", async () => {
          const watched = await openPage(browser);
          const sizes = new Map<string, number>();
          watched.page.on("response", async (response) => {
            const path = new URL(response.url()).pathname;
            if (!path.startsWith("/api/")) sizes.set(path, (await response.body()).byteLength);
          });
          try {
            await openChart(watched, base, "#/server/alpha?app=web", 'figure[data-chart="errors"] svg.chart');
            await watched.page.waitForTimeout(300);
            const total = [...sizes.values()].reduce((a, b) => a + b, 0);
            assert([...sizes.keys()].some((p) => /^\/charts\.[0-9a-f]{8}\.js$/.test(p)), [...sizes.keys()].join());
            console.log(`dashboard charts: a page load serves ${(total / 1024).toFixed(1)} KB in ${sizes.size} files`);
            assert(total < 200 * 1024, `the page weighs ${total} bytes`);
          } finally {
            await watched.context.close();
          }
        });
      });

      await t.step("the API refuses a bad range, an unknown server or app, with a JSON error", async () => {
        const get = async (query: string) => {
          const response = await fetch(`${base}/api/metrics/${query}`);
          return [response.status, (await response.json()).error];
        };
        assertEquals(await get("server?server=alpha&range=2h"), [
          400,
          'parameter range must be one of 1h, 24h, 7d, 30d, not "2h"',
        ]);
        assertEquals(await get("server?range=1h"), [400, "missing parameter server"]);
        assertEquals(await get("server?server=nope"), [404, 'no server "nope" in the fleet database']);
        assertEquals(await get("app?server=alpha&app=nope"), [
          404,
          'no app "nope" on server "alpha" in the fleet database',
        ]);
        const [status] = await get(`overview?range=${"x".repeat(300)}`);
        assertEquals(status, 400);
      });
    } finally {
      if (fleet) {
        fleet.child.kill("SIGTERM");
        await fleet.child.status;
      }
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "dashboard charts: the bench's overview measurement, at 10 servers × 10 apps",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "dp-charts-bench-" });
    try {
      const fleet = await chartFleet(dir, 10, 10);
      try {
        const [load] = await measureOverview(fleet.base, 1);
        assertEquals(load.sparklines, 100);
        assertEquals(load.problems, []);
        assert(
          load.buildMs >= 0 && load.renderMs >= load.buildMs && load.paintMs > load.renderMs,
          JSON.stringify(load),
        );
        assert(load.pageBytes > 50 * 1024 && load.pageBytes < 200 * 1024, `${load.pageBytes} bytes`);
        assert(load.apiBytes > 0);
        console.log(
          `dashboard charts: 100 sparklines built in ${load.buildMs} ms, rendered in ${load.renderMs} ms, ` +
            `painted ${load.paintMs} ms from navigation start`,
        );
      } finally {
        await fleet.close();
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
