/**
 * Issue 16, part 5, end to end: a fake VPS (its own network namespace and sshd) whose apps list
 * their processes in status.json and whose cron runs are recorded by the real cron log writer;
 * the real `deploy-paradigm fleet` pulls it over SSH, and headless Chromium shows the overview's
 * process summary and the server page's processes and cron jobs, then a later cron run and a
 * recovered worker arriving live. Hostile names (markup) are shown as text.
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { openPage, screenshot, withBrowser } from "../helpers/browser.ts";
import { serve, withFleet, writeStatus } from "../helpers/fleet.ts";
import type { FakeVps } from "../helpers/vps.ts";
import { appPaths } from "../../src/paths.ts";
import { type CronRun, recordRun } from "../../src/cron/log.ts";

// deno-lint-ignore no-explicit-any
declare const document: any;

const HTML = `<img src=x onerror="window.__xss='cron'">`;

/** A cron run recorded in the host's cron.log by the cron runner's own writer. */
async function cronRun(
  vps: FakeVps,
  app: string,
  run: Partial<CronRun> & { job: string; outcome: CronRun["outcome"] },
) {
  const paths = { ...appPaths(app, "/nonexistent"), dir: join(vps.deployments, app), logDir: join(vps.logs, app) };
  const start = Date.now() - (run.durationMs ?? 1000) - 5000;
  await recordRun(paths, {
    release: "20261203-150000-000",
    start: new Date(start).toISOString(),
    end: new Date(start + (run.durationMs ?? 1000)).toISOString(),
    exitCode: 0,
    durationMs: 1000,
    pid: 4242,
    ...run,
  });
}

const process = (type: string, instance: number, state: string, restarts = 0, pid = 1000 + instance) => ({
  type,
  instance,
  name: `shop-${type}-${instance}`,
  pid: state === "online" ? pid : 0,
  state,
  restarts,
});

Deno.test({
  name: "fleet dashboard: workers on the overview, processes and cron jobs on the server page, live",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await withFleet(1, async ([vps], laptop) => {
      const shop = (worker2: string, restarts: number) => ({
        status: "running",
        healthy: true,
        version: "abc1234",
        processes: [
          process("web", 1, "online"),
          process("worker", 1, "online"),
          process("worker", 2, worker2, restarts),
          { type: HTML, instance: 1, name: HTML, pid: 0, state: "online", restarts: 0 },
        ],
      });
      await writeStatus(vps, "shop", shop("errored", 15));
      await writeStatus(vps, "calm", {
        status: "running",
        healthy: true,
        version: "def5678",
        processes: [{ type: "web", instance: 1, name: "calm", pid: 77, state: "active", restarts: 0 }],
      });
      await cronRun(vps, "shop", { job: "report", outcome: "ok", durationMs: 850 });
      await cronRun(vps, "shop", { job: "cleanup", outcome: "failed", exitCode: 3, durationMs: 2500 });
      await cronRun(vps, "shop", { job: HTML, outcome: "timeout", exitCode: null, durationMs: 60_000 });

      await laptop.addHost("solo", vps);
      const config = join(laptop.home, "config.yml");
      await Deno.writeTextFile(config, "interval: 1s\n" + await Deno.readTextFile(config));
      const api = await serve(laptop);
      try {
        await withBrowser(async (browser) => {
          const { page, problems } = await openPage(browser);
          await page.goto(`${api.base}/`);
          await page.waitForSelector("main[data-ready=overview] table.apps td.processes");
          await page.waitForFunction(() => document.querySelectorAll("table.apps tbody tr").length === 2);
          const summaries = await page.$$eval("table.apps tbody tr", (rows) =>
            rows.map((row) => {
              const cell = row.querySelector("td.processes .processes-summary");
              return `${row.querySelector("td.app")!.textContent}: ${cell?.textContent} ${
                cell?.classList.contains("bad") ? "red" : "ok"
              }`;
            }));
          assertEquals(summaries.sort(), [
            "calm: web ×1 online ok",
            `shop: web ×1 online, ${HTML} ×1 online, worker ×2: 1 errored · 15 restarts red`,
          ]);
          assertMatch(
            await page.textContent(".attention") ?? "",
            /solo \/ shop 1 process not running · worker 1 of 2 errored/,
          );
          await screenshot(page, "fleet-processes-overview");

          await page.goto(`${api.base}/#/server/solo`);
          await page.waitForSelector(".app-work[data-app=shop] table.cron");
          const processes = await page.$$eval(
            ".app-work[data-app=shop] table.processes tbody tr",
            (rows) => rows.map((row) => [...row.querySelectorAll("td")].map((td) => td.textContent!.trim())),
          );
          assertEquals(processes, [
            ["web", "1", "shop-web-1", "online", "1001", "0"],
            ["worker", "1", "shop-worker-1", "online", "1001", "0"],
            ["worker", "2", "shop-worker-2", "errored", "—", "15"],
            [HTML, "1", HTML, "online", "—", "0"],
          ]);
          assertEquals(
            await page.$$eval(
              ".app-work[data-app=shop] table.processes .badge.bad",
              (b) => b.map((x) => x.textContent),
            ),
            ["errored"],
          );
          const cron = await page.$$eval(".app-work[data-app=shop] table.cron tbody tr", (rows) =>
            rows.map((row) => {
              const cells = [...row.querySelectorAll("td")].map((td) => td.textContent!.trim());
              const red = row.querySelector(".badge.bad") ? "red" : "";
              return [cells[0], cells[2], red, cells[3], cells[4], cells[5]];
            }));
          assertEquals(cron, [
            [HTML, "timeout", "red", "1 min 0 s", "—", "20261203-150000-000"],
            ["cleanup", "failed", "red", "2.5 s", "3", "20261203-150000-000"],
            ["report", "ok", "", "850 ms", "0", "20261203-150000-000"],
          ]);
          assertMatch(
            await page.textContent(".app-work[data-app=shop] table.cron tbody tr:nth-child(2) td:nth-child(2)") ?? "",
            /(s ago|just now)$/, // the run is seconds old: "just now" under 10 s
          );
          assertEquals(
            await page.$$eval(".app-work[data-app=calm] table", (tables) => tables.map((t) => t.className)),
            ["processes"],
            "calm ran no cron job: only its processes",
          );
          assertEquals(await page.evaluate(() => document.querySelectorAll("main img, main script").length), 0);
          assertEquals(await page.evaluate(() => (globalThis as { __xss?: string }).__xss), undefined);
          await screenshot(page, "fleet-processes-server");

          // A later run of the failed job, and the worker back: the open page follows the next cycle.
          await cronRun(vps, "shop", { job: "cleanup", outcome: "ok", exitCode: 0, durationMs: 400 });
          await writeStatus(vps, "shop", shop("online", 16));
          await page.waitForFunction(
            () =>
              [...document.querySelectorAll(".app-work[data-app=shop] table.cron tbody tr")].some((row) =>
                row.textContent.startsWith("cleanup") && row.textContent.includes("400 ms")
              ),
            undefined,
            { timeout: 20_000 },
          );
          // The server page's apps table: shop's summary is green again.
          const shopRow = page.locator(".server table tbody tr", { has: page.locator("td.app", { hasText: "shop" }) });
          await shopRow.locator("td.processes .processes-summary.ok").waitFor();
          assertEquals(
            await shopRow.locator("td.processes").textContent(),
            `web ×1, ${HTML} ×1, worker ×2 online · 16 restarts`,
          );
          assert(
            await page.locator(".app-work[data-app=shop] table.cron tbody tr", { hasText: "cleanup" }).locator(
              ".badge.ok",
            ).count() === 1,
          );
          assertEquals(problems, [], "no page error, console error or CSP violation");
        });
      } finally {
        await api.stop();
      }
    });
  },
});
