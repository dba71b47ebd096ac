/**
 * Rollouts and canary releases in the fleet dashboard, in real headless Chromium over the real
 * collector, SQLite store, API and dashboard (tests/helpers/local_fleet.ts): rollouts recorded by
 * `deploy-paradigm rollout`'s own record (src/rollout/record.ts), apps' status.json as
 * the deploy engine writes them. The Rollouts view lists the rollouts; a rollout's page shows each
 * server's wave, outcome, version before → after and message, and a running one moves on with the
 * live updates; markup in a server name or a message stays text. The overview's version-skew
 * matrix shows skew after a stopped rollout and none after a good one. An app with a canary shows
 * its progress (badge, step k of n, figures new vs old), and its end arrives live.
 */
import type { Page } from "playwright-core";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { openPage, screenshot, withBrowser } from "../helpers/browser.ts";
import { LocalFleet } from "../helpers/local_fleet.ts";
import { RolloutRecord } from "../../src/rollout/record.ts";

// Globals of the page, used inside page.evaluate callbacks (this file is checked without the DOM library).
// deno-lint-ignore no-explicit-any
declare const document: any;

const iso = (ms: number) => new Date(ms).toISOString();
const HOSTILE = `<img src=x onerror="window.__xss='rollout'">`;

/** web as status.json says it on a server: running `version`, and `canary` when one is given. */
function web(version: string, canary?: Record<string, unknown>): Record<string, unknown> {
  return {
    type: "node",
    status: "running",
    healthy: true,
    version,
    commit: `${version}000`,
    strategy: "blue-green",
    deployed: iso(Date.now() - 60_000),
    lastHealthCheck: iso(Date.now()),
    ...(canary ? { canary } : {}),
  };
}

/** The rows of a table as the texts of their cells. */
function rows(page: Page, selector: string): Promise<string[][]> {
  return page.$$eval(
    `${selector} tbody tr`,
    (trs) => trs.map((tr) => [...tr.querySelectorAll("td")].map((td) => td.textContent!.trim())),
  );
}

Deno.test({
  name: "dashboard rollouts: list, per-server outcomes and versions, live progress, skew, canary progress",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const fleet = await LocalFleet.start([{ name: "alpha" }, { name: "beta" }, { name: "gamma" }]);
    try {
      const now = Date.now();
      // A rollout of web stopped at beta's failure: alpha runs c0ffee1, beta and gamma still 1.0.0.
      for (const server of ["beta", "gamma"]) await fleet.status(server, "web", web("1.0.0"));
      await fleet.status("alpha", "web", web("c0ffee1"));
      const first = RolloutRecord.start(fleet.store, {
        app: "web",
        ref: "main",
        commit: "c0ffee1234567890",
        startedAt: now - 600_000,
        options: { servers: ["alpha", "beta", "gamma"], parallel: 2, onFailure: "stop" },
        servers: [["alpha", 1], ["beta", 2], [HOSTILE, 2]].map(([name, wave]) => ({
          name: String(name),
          wave: Number(wave),
          versionBefore: "1.0.0",
        })),
      });
      first.server("alpha", {
        outcome: "success",
        startedAt: now - 600_000,
        durationMs: 21_000,
        versionAfter: "c0ffee1",
      });
      first.server("beta", {
        outcome: "failed",
        startedAt: now - 570_000,
        durationMs: 30_500,
        versionAfter: "1.0.0",
        message: "health: /health answered 500",
      });
      first.server(HOSTILE, { outcome: "skipped", message: HOSTILE });
      first.finish("stopped", now - 540_000, `beta: health check failed <script>window.__xss='message'</script>`);
      const stopped = first.id;
      await fleet.cycle();

      await withBrowser(async (browser) => {
        const { page, problems } = await openPage(browser);

        await t.step("after a stopped rollout the overview shows web's skew", async () => {
          await page.goto(`${fleet.base}/`);
          await page.waitForSelector("main[data-ready=overview]");
          assertMatch(await page.textContent(".skew") ?? "", /web runs 1\.0\.0 on beta, gamma, c0ffee1 on alpha/);
          assertEquals(await page.locator(".matrix td.skewed").count(), 1, "alpha is the odd one");
          assertEquals(await page.locator(".matrix thead th.skewed").textContent(), "web ≠");
        });

        await t.step("the Rollouts view lists the rollout; its page shows each server, markup as text", async () => {
          await page.click("nav.views a[data-nav=rollouts]");
          await page.waitForSelector("main[data-ready=rollouts] table.rollouts");
          assertEquals(await page.getAttribute("a[data-nav=rollouts]", "aria-current"), "page");
          const list = await rows(page, "table.rollouts");
          assertEquals(list.length, 1);
          const [id, app, commit, , duration, outcome, done, message] = list[0];
          assertEquals(
            [id, app, commit, duration, outcome, done],
            [`#${stopped}`, "web", "c0ffee1", "1 min 0 s", "stopped", "1 / 3"],
          );
          assertEquals(message, `beta: health check failed <script>window.__xss='message'</script>`);
          await page.click(`table.rollouts a[href="#/rollouts/${stopped}"]`);
          await page.waitForSelector(`main[data-ready="rollout:${stopped}"] table.rollout-servers`);
          assertEquals(await page.textContent("main h1"), `Rollout #${stopped} of web`);
          const servers = await rows(page, "table.rollout-servers");
          assertEquals(servers.map((r) => r.toSpliced(4, 1)), [
            ["1", "alpha", "success", "1.0.0 → c0ffee1", "21.0 s", ""],
            ["2", "beta", "failed", "1.0.0", "30.5 s", "health: /health answered 500"],
            ["2", HOSTILE, "skipped", "1.0.0", "—", HOSTILE],
          ]);
          assertEquals(servers.map((r) => /^\d+ min ago$/.test(r[4]) || r[4]), [true, true, "—"], "started");
          assertMatch(
            await page.textContent(".facts") ?? "",
            /Optionsservers: alpha, beta, gamma · parallel: 2 · onFailure: stop/,
          );
          assertEquals(await page.evaluate(() => document.querySelectorAll("main img, main script").length), 0);
          assertEquals(await page.evaluate(() => (globalThis as { __xss?: string }).__xss), undefined);
          await screenshot(page, "rollout-stopped");
        });

        await t.step("a running rollout moves on with the live updates, then the skew is gone", async () => {
          await page.waitForSelector("#live[data-state=live]");
          const started = Date.now();
          const record = RolloutRecord.start(fleet.store, {
            app: "web",
            ref: "v2",
            commit: "feedbee1234567890",
            startedAt: started,
            options: { all: true, parallel: 2, onFailure: "rollback" },
            servers: [
              { name: "alpha", wave: 1, versionBefore: "c0ffee1" },
              { name: "beta", wave: 2, versionBefore: "1.0.0" },
              { name: "gamma", wave: 2, versionBefore: "1.0.0" },
            ],
          });
          record.server("alpha", { outcome: "deploying", startedAt: started });
          const running = record.id;
          await fleet.cycle();
          await page.goto(`${fleet.base}/#/rollouts`);
          await page.waitForFunction(
            (id: number) =>
              document.querySelector(`table.rollouts tr[data-id="${id}"] .outcome`)?.textContent === "running",
            running,
          );
          assertEquals((await rows(page, "table.rollouts")).map((r) => [r[0], r[5], r[6]]), [
            [`#${running}`, "running", "0 / 3"],
            [`#${stopped}`, "stopped", "1 / 3"],
          ]);
          await page.click(`a[href="#/rollouts/${running}"]`);
          await page.waitForSelector(`main[data-ready="rollout:${running}"] table.rollout-servers`);
          await page.evaluate(() => Object.assign(globalThis, { __sameDocument: true }));
          assertEquals((await rows(page, "table.rollout-servers")).map((r) => r.slice(0, 4)), [
            ["1", "alpha", "deploying", "c0ffee1"],
            ["2", "beta", "pending", "1.0.0"],
            ["2", "gamma", "pending", "1.0.0"],
          ]);
          assertEquals(await page.textContent(".view-head .badge"), "running");

          // alpha done, beta and gamma in the second wave: the page follows each cycle.
          record.server("alpha", { outcome: "success", durationMs: 12_000, versionAfter: "feedbee" });
          for (const server of ["beta", "gamma"]) {
            record.server(server, { outcome: "deploying", startedAt: started + 12_000 });
          }
          await fleet.cycle();
          await page.waitForFunction(() =>
            document.querySelector("table.rollout-servers tr[data-server=gamma] .outcome")?.textContent === "deploying"
          );
          assertEquals((await rows(page, "table.rollout-servers")).map((r) => r.slice(0, 4)), [
            ["1", "alpha", "success", "c0ffee1 → feedbee"],
            ["2", "beta", "deploying", "1.0.0"],
            ["2", "gamma", "deploying", "1.0.0"],
          ]);

          for (const server of ["beta", "gamma"]) {
            record.server(server, { outcome: "success", durationMs: 15_000, versionAfter: "feedbee" });
          }
          record.finish("success", started + 27_000);
          for (const server of ["alpha", "beta", "gamma"]) await fleet.status(server, "web", web("feedbee"));
          await fleet.cycle();
          await page.waitForFunction(() => document.querySelector(".view-head .badge")?.textContent === "success");
          assertEquals((await rows(page, "table.rollout-servers")).map((r) => r.slice(0, 4)), [
            ["1", "alpha", "success", "c0ffee1 → feedbee"],
            ["2", "beta", "success", "1.0.0 → feedbee"],
            ["2", "gamma", "success", "1.0.0 → feedbee"],
          ]);
          assertMatch(await page.textContent(".facts") ?? "", /Duration27\.0 s/);
          assertMatch(await page.textContent(".facts") ?? "", /Servers ok3 \/ 3/);
          assert(await page.evaluate(() => "__sameDocument" in globalThis), "the page was not reloaded");
          await screenshot(page, "rollout-success");

          await page.click("nav.views a[data-nav=overview]");
          await page.waitForSelector("main[data-ready=overview]");
          assertEquals(await page.locator(".skew").count(), 0, "no version skew after a good rollout");
          assertEquals(await page.locator(".matrix td.skewed, .matrix th.skewed").count(), 0);
          assertEquals(
            await page.$$eval(".matrix tbody td", (tds) => tds.map((td) => td.textContent)),
            ["feedbee", "feedbee", "feedbee"],
          );
        });

        await t.step("an app's canary shows its progress where the app is shown, and ends live", async () => {
          const canary = {
            state: "running",
            release: "20261203-100000-000",
            version: "c0ffee2",
            percent: 25,
            step: 2,
            steps: [5, 25, 50],
            since: iso(Date.now() - 120_000),
            at: iso(Date.now() - 5_000),
            figures: {
              new: { requests: 120, errorRate: 0.0083, p95Ms: 41.5 },
              old: { requests: 360, errorRate: 0, p95Ms: 38.2 },
            },
            secret: "unknown keys are not kept",
          };
          await fleet.status("alpha", "web", web("feedbee", canary));
          await fleet.cycle();
          await page.goto(`${fleet.base}/#/server/alpha`);
          await page.waitForSelector("main[data-ready='server:alpha'] .canaries .canary-block");
          assertEquals(await page.textContent(".panel:not(.canaries) table .badge.canary"), "canary 25 %");
          const block = page.locator(".canary-block[data-app=web]");
          assertEquals(await block.getAttribute("data-state"), "running");
          assertEquals(await block.locator(".canary-percent").textContent(), "25 % of requests");
          assertEquals(await block.locator(".canary-step").textContent(), "step 2 of 3 (5 → 25 → 50 %)");
          assertEquals(await block.locator("progress").getAttribute("value"), "25");
          assertEquals(await rows(page, ".canary-figures"), [
            ["120", "0.83 %", "41.5 ms"],
            ["360", "0 %", "38.2 ms"],
          ]);
          assertEquals(await page.$$eval(".canary-figures tbody th", (ths) => ths.map((th) => th.textContent)), [
            "new",
            "old",
          ]);
          await screenshot(page, "server-canary");

          // The deploy reverts it: the next cycle brings the end and its reason to the open page.
          await fleet.status(
            "alpha",
            "web",
            web("feedbee", {
              ...canary,
              state: "reverted",
              reason: `5xx rate 10 % > 1 % ${HOSTILE}`,
            }),
          );
          await fleet.cycle();
          await page.waitForFunction(() =>
            document.querySelector(".canary-block[data-app=web]")?.dataset.state === "reverted"
          );
          assertEquals(await block.locator(".canary-reason").textContent(), `5xx rate 10 % > 1 % ${HOSTILE}`);
          assertEquals(await page.textContent(".panel:not(.canaries) table .badge.canary"), "canary reverted");
          // The overview's "Every app" shows it too.
          await page.click("nav.views a[data-nav=overview]");
          await page.waitForSelector("main[data-ready=overview] table.apps");
          assertEquals(await page.locator("table.apps .badge.canary").count(), 1);
          assertMatch(
            await page.getAttribute("table.apps .badge.canary", "title") ?? "",
            /Canary reverted of c0ffee2 .* reason: 5xx rate/,
          );
          assertEquals(await page.evaluate(() => document.querySelectorAll("main img, main script").length), 0);
          assertEquals(await page.evaluate(() => (globalThis as { __xss?: string }).__xss), undefined);
        });

        assertEquals(problems, []);
      });
    } finally {
      await fleet.close();
    }
  },
});
