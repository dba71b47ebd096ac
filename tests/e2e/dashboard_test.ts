/**
 * The fleet dashboard in real headless Chromium (Debian's, driven by npm:playwright-core), over
 * data from the real collector pipeline: each server is a directory tree as on a VPS
 * (opt/deployments/<app>/status.json, var/log/deployments/<app>/*.log), read by the collector's
 * LocalSource (what `host: local` uses), ingested into a real SQLite store and served by the real
 * API handler with the dashboard hook. Screenshots of every page go to tests/artifacts/.
 */
import { join } from "node:path";
import type { Page } from "playwright-core";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { openPage, screenshot, withBrowser } from "../helpers/browser.ts";
import { BIN, freePort, spawnCapturing } from "../helpers/server.ts";
import { LocalFleet } from "../helpers/local_fleet.ts";
import { contentSecurityPolicy, dashboardFiles } from "../../src/fleet/dashboard.ts";

// Globals of the page, used inside page.evaluate callbacks (this file is checked without the DOM library).
// deno-lint-ignore no-explicit-any
declare const document: any;
declare const innerWidth: number;

const MINUTE = 60_000;
const iso = (ms: number) => new Date(ms).toISOString();

/** A stand-in for Netdata: a page that may be framed, or one that refuses (X-Frame-Options: DENY). */
function fakeNetdata(refuse: boolean) {
  const stop = new AbortController();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: stop.signal, onListen: () => {} },
    () =>
      new Response(`<!doctype html><title>netdata</title><h1>fake netdata ${refuse ? "(refuses)" : "dashboard"}</h1>`, {
        headers: { "content-type": "text/html; charset=utf-8", ...(refuse ? { "x-frame-options": "DENY" } : {}) },
      }),
  );
  return {
    url: `http://127.0.0.1:${server.addr.port}/`,
    async close() {
      stop.abort();
      await server.finished;
    },
  };
}

/** A deploy.log line as the deploy engine writes it. */
function deployEvent(app: string, at: number, event: string, fields: Record<string, unknown> = {}): string {
  return JSON.stringify({ time: iso(at), app, event, release: "", commit: "", ...fields });
}

/** A whole deploy in deploy.log: begin, a few steps, and its outcome. */
function deployLines(
  app: string,
  at: number,
  commit: string,
  outcome: string,
  extra: { message?: string; step?: string; duration?: number } = {},
): string[] {
  const time = iso(at); // 20261129-070000-722, as the deploy engine names releases
  const release = `${time.slice(0, 10).replaceAll("-", "")}-${time.slice(11, 19).replaceAll(":", "")}-${
    time.slice(20, 23)
  }`;
  const base = { release, commit };
  const duration = extra.duration ?? 27_300;
  const ok = outcome === "success";
  return [
    deployEvent(app, at, "begin", base),
    deployEvent(app, at + 100, "fetch", { ...base, ok: true, duration: 40 }),
    deployEvent(app, at + 4_000, "build", { ...base, ok: true, duration: 3_900 }),
    deployEvent(app, at + duration, outcome, {
      ...base,
      ok,
      duration,
      message: extra.message ?? (ok ? `${commit.slice(0, 7)} serves as release ${release}` : undefined),
    }),
  ];
}

/** What the overview's "Every app" table shows: server, app, health, freshness, version. */
function appTable(page: Page): Promise<string[][]> {
  return page.$$eval(
    "table.apps tbody tr",
    (rows) => rows.map((row) => [...row.querySelectorAll("td")].slice(0, 5).map((td) => td.textContent!.trim())),
  );
}

/**
 * alpha: web healthy 1.4.0 with a certificate for 60 days, api unhealthy after a failed deploy,
 * its certificate expiring in 5 days after a failed renewal, hostile markup in api's error.log and
 * in its certificate's error, Netdata that allows framing. beta: web 1.3.9 (version skew) with a deploy that was rolled back
 * and an error after it, worker healthy, Netdata that refuses framing.
 */
async function fill(fleet: LocalFleet, now: number): Promise<void> {
  const lastCheck = iso(now - 20_000);
  const webStatus = {
    type: "node",
    status: "running",
    healthy: true,
    port: 3000,
    strategy: "blue-green",
    lastHealthCheck: lastCheck,
  };
  await fleet.status("alpha", "web", {
    ...webStatus,
    version: "1.4.0",
    commit: "7c913b6a2e8836d1",
    deployed: iso(now - 2 * 3_600_000),
    lastDeploy: { outcome: "success", at: iso(now - 2 * 3_600_000) },
  });
  await fleet.status("alpha", "api", {
    type: "python",
    status: "failed",
    healthy: false,
    version: "2.0.1",
    commit: "41f3c9b0d1e2f3a4",
    deployed: iso(now - 30 * MINUTE),
    lastHealthCheck: lastCheck,
    lastDeploy: {
      outcome: "failed",
      step: "health",
      message: "health: /health answered 500",
      at: iso(now - 5 * MINUTE),
    },
  });
  await fleet.status("beta", "web", {
    ...webStatus,
    status: "rolled_back",
    version: "1.3.9",
    commit: "a2e8836f00112233",
    deployed: iso(now - 26 * 3_600_000),
    lastDeploy: { outcome: "rolled_back", at: iso(now - 10 * MINUTE) },
  });
  await fleet.status("beta", "worker", {
    type: "node",
    status: "running",
    healthy: true,
    version: "0.9.0",
    deployed: iso(now - 3 * 86_400_000),
    lastHealthCheck: lastCheck,
  });

  const certificate = (names: string[], days: number) => ({
    names,
    source: "acme",
    issuer: "C=US, O=Let's Encrypt, CN=R11",
    notBefore: iso(now - 30 * 86_400_000),
    notAfter: iso(now + days * 86_400_000 + 3_600_000),
    lastError: null,
    lastErrorAt: null,
    nextAttemptAt: null,
  });
  await fleet.certificates("alpha", {
    web: certificate(["web.test", "www.web.test"], 60),
    api: {
      ...certificate(["api.test"], 5),
      lastError: `rateLimited <img src=x onerror="window.__xss='cert'">`,
      lastErrorAt: iso(now - 3_600_000),
    },
  });

  const t = (ago: number) => iso(now - ago).replace(/\.\d+Z$/, "Z");
  await fleet.log("alpha", "web", "access.log", [
    ...Array.from({ length: 12 }, (_, i) => `${t(120_000 - i * 1000)}: GET /orders/${100 + i} 200 ${8 + i}ms`),
    `${t(100_000)}: GET /checkout zebracorn 200 31ms from alpha`,
    ...Array.from({ length: 8 }, (_, i) => `${t(99_000 - i * 1000)}: GET /health 200 1ms`),
  ]);
  await fleet.log("alpha", "api", "error.log", [
    `${t(6 * MINUTE)}: Error: connect ECONNREFUSED db.internal:5432`,
    `${t(5 * MINUTE)}: <img src=x onerror="window.__xss='img'"> hostile-image`,
    `${t(5 * MINUTE - 1000)}: <script>window.__xss='script'</script> hostile-script`,
    `${t(4 * MINUTE)}: Error: connect ECONNREFUSED db.internal:5432 (retry 3)`,
  ]);
  await fleet.log("alpha", "web", "deploy.log", deployLines("web", now - 2 * 3_600_000, "7c913b6a2e8836d1", "success"));
  await fleet.log(
    "alpha",
    "api",
    "deploy.log",
    deployLines("api", now - 5 * MINUTE, "41f3c9b0d1e2f3a4", "failed", {
      message: "health: http://127.0.0.1:21001/health did not answer 2xx 3 times in a row within 30s",
      duration: 34_100,
    }),
  );
  await fleet.log("beta", "web", "access.log", [
    `${t(90_000)}: GET / 200 4ms`,
    `${t(80_000)}: POST /checkout zebracorn 201 48ms from beta`,
    `${t(70_000)}: GET / 200 3ms`,
  ]);
  await fleet.log("beta", "web", "deploy.log", [
    ...deployLines("web", now - 26 * 3_600_000, "a2e8836f00112233", "success"),
    ...deployLines("web", now - 10 * MINUTE, "c0ffee1234567890", "rolled_back", {
      message: "watch: /health answered 500 after the switch; traffic moved back to a2e8836",
      duration: 48_200,
    }),
  ]);
  await fleet.log("beta", "web", "error.log", [
    `${t(9 * MINUTE)}: TypeError: Cannot read properties of undefined (reading 'cart')`,
  ]);
  await fleet.log(
    "beta",
    "worker",
    "access.log",
    Array.from({ length: 120 }, (_, i) => `${t(200_000 - i * 1000)}: job ${i} done in 1.2s`),
  );
}

Deno.test({
  name: "dashboard: overview, a live change over SSE, search and context, drill-down with Netdata, deployments",
  // playwright-core keeps its connection's resources until the browser is closed, in `finally`.
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const framed = fakeNetdata(false);
    const refusing = fakeNetdata(true);
    const fleet = await LocalFleet.start([
      { name: "alpha", netdata: framed.url },
      { name: "beta", netdata: refusing.url },
    ]);
    try {
      const now = Date.now();
      await fill(fleet, now);
      const first = await fleet.cycle();
      assertEquals(first.servers.map((s) => [s.server, s.apps]), [["alpha", 2], ["beta", 2]]);

      await withBrowser(async (browser) => {
        const { page, problems } = await openPage(browser);
        const expectedProblems = (list: string[]) =>
          // Expected: Chromium refusing to frame the refusing Netdata, and the 400 of a bad query.
          list.filter((p) => !/Refused to display .* in a frame|x-frame-options|status of 400/i.test(p));

        await t.step("the overview shows every app with the right health, skew and counts", async () => {
          await page.goto(`${fleet.base}/`);
          await page.waitForSelector("main[data-ready=overview]");
          assertEquals((await appTable(page)).sort(), [
            ["alpha", "api", "unhealthy failed", "fresh", "2.0.1"],
            ["alpha", "web", "healthy", "fresh", "1.4.0"],
            ["beta", "web", "healthy rolled_back", "fresh", "1.3.9"],
            ["beta", "worker", "healthy", "fresh", "0.9.0"],
          ]);
          const counts = await page.$$eval(
            ".count",
            (buttons) =>
              buttons.map((b) => `${b.querySelector(".label")!.textContent}=${b.querySelector(".n")!.textContent}`),
          );
          assertEquals(counts, ["healthy=3", "unhealthy=1", "stale=0", "unreachable=0"]);
          // Certificates: days left, red when under 14 days; at risk ones need attention.
          const certificates = await page.$$eval("table.apps tbody tr", (rows) =>
            rows.map((row) => {
              const badge = row.querySelector("td:last-child .badge");
              return `${row.querySelector("td")!.textContent}/${row.querySelector("td.app")!.textContent} ` +
                `${row.querySelector("td:last-child")!.textContent} ${badge?.classList.contains("bad") ? "red" : ""}`;
            }));
          assertEquals(certificates.sort(), [
            "alpha/api 5 d red",
            "alpha/web 60 d ",
            "beta/web — ",
            "beta/worker — ",
          ]);
          assertMatch(
            await page.textContent(".attention") ?? "",
            /alpha \/ api certificate expires in 5 d · api\.test · C=US, O=Let's Encrypt, CN=R11 · valid until/,
          );
          assertMatch(await page.textContent(".summary") ?? "", /1 of 4 apps need attention/);
          assertMatch(
            await page.textContent(".attention") ?? "",
            /alpha \/ api unhealthy \(failed\).*failed at health/,
          );
          // Version skew: web runs 1.4.0 on alpha and 1.3.9 on beta.
          assertMatch(
            await page.textContent(".skew") ?? "",
            /web runs 1\.3\.9 on beta, 1\.4\.0 on alpha|web runs 1\.4\.0 on alpha, 1\.3\.9 on beta/,
          );
          assertEquals(await page.locator(".matrix td.skewed").count(), 2, "one server each: both marked");
          assertEquals(await page.locator(".matrix thead th.skewed").textContent(), "web ≠");
          assertEquals(await page.locator(".matrix td.state-unhealthy").textContent(), "✕2.0.1");
          // Filters: the "unhealthy" count shows only alpha/api.
          await page.click(".count.state-unhealthy");
          assertEquals(
            await page.$$eval("table.apps tbody tr:not([hidden]) td.app", (tds) => tds.map((td) => td.textContent)),
            ["api"],
          );
          await page.click(".count.state-unhealthy");
          await screenshot(page, "overview");
        });

        await t.step("a status change reaches the open page over SSE, without a reload", async () => {
          await page.waitForSelector("#live[data-state=live]");
          await page.evaluate(() => Object.assign(globalThis, { __sameDocument: true }));
          await fleet.status("beta", "worker", {
            type: "node",
            status: "failed",
            healthy: false,
            version: "0.9.1",
            deployed: iso(Date.now()),
            lastHealthCheck: iso(Date.now()),
          });
          const summary = await fleet.cycle();
          assertEquals(summary.changes.map((c) => `${c.server}/${c.app}`), ["beta/worker"]);
          await page.waitForFunction(() =>
            [...document.querySelectorAll("table.apps tbody tr")].some((row) =>
              row.textContent!.includes("worker") && row.classList.contains("state-unhealthy")
            )
          );
          assert(await page.evaluate(() => "__sameDocument" in globalThis), "the page was not reloaded");
          const counts = await page.$$eval(".count .n", (ns) => ns.map((n) => n.textContent));
          assertEquals(counts, ["2", "2", "0", "0"]);
          assert(await page.locator("table.apps tr.changed").count() >= 1, "the changed row is marked");
          assertMatch(await page.textContent("#live") ?? "", /^live · /);
          await screenshot(page, "overview-after-change");
        });

        await t.step("a search finds a line from each server, highlighted; a click opens its context", async () => {
          await page.keyboard.press("/");
          assertEquals(
            await page.evaluate(() => document.activeElement?.getAttribute("aria-label")),
            "Search logs (press / to focus)",
          );
          await page.keyboard.type("zebracorn");
          await page.keyboard.press("Enter");
          await page.waitForSelector("main[data-ready=search] .results li");
          const results = await page.$$eval(".results > li", (items) =>
            items.map((item) => ({
              meta: item.querySelector(".meta")!.textContent,
              marks: [...item.querySelectorAll("mark")].map((m) => m.textContent),
            })));
          // (Newest first by ingestion: both servers were pulled in the same cycle, in either order.)
          assertEquals(results.map((r) => /alpha|beta/.exec(r.meta!)?.[0]).sort(), ["alpha", "beta"]);
          for (const result of results) assertMatch(result.meta!, /web\/access\.log/);
          for (const result of results) assertEquals(result.marks, ["zebracorn"]);
          assertMatch(await page.textContent(".status") ?? "", /2 matches, newest first/);
          // The query box of the view has the query; the hash can be shared.
          assertEquals(await page.inputValue("input.q"), "zebracorn");
          assertMatch(page.url(), /#\/search\?q=zebracorn$/);

          const alpha = page.locator(".results > li", { hasText: "from alpha" });
          await alpha.locator("button.line").click();
          await page.waitForSelector(".context .ctx-lines li.hit");
          const context = await page.$$eval(
            ".context .ctx-lines li",
            (items) =>
              items.map((li) => ({ hit: li.classList.contains("hit"), text: li.querySelector(".text")!.textContent })),
          );
          assertEquals(context.filter((l) => l.hit).map((l) => l.text), [
            context.find((l) => l.hit)!.text,
          ]);
          assertMatch(context.find((l) => l.hit)!.text!, /GET \/checkout zebracorn 200 31ms from alpha/);
          assertEquals(context.length, 21, "the 12 lines before and the 8 after (up to 15 each way)");
          assertMatch(context[0].text!, /GET \/orders\/100 /);
          assertEquals(await alpha.locator("button.line").getAttribute("aria-expanded"), "true");
          await screenshot(page, "search-context");
          // Escape closes the context and gives the focus back to the result.
          await page.focus(".context .link-button");
          await page.keyboard.press("Escape");
          assertEquals(await page.locator(".context").count(), 0);
          assertEquals(await alpha.locator("button.line").getAttribute("aria-expanded"), "false");
          assert(await alpha.locator("button.line").evaluate((button) => button === document.activeElement));

          // A syntax error answers with the API's explanation.
          await page.fill("input.q", "GET /api");
          await page.press("input.q", "Enter");
          await page.waitForSelector(".status .error");
          assertMatch(await page.textContent(".status .error") ?? "", /cannot search for "GET \/api".*double quotes/s);
          // Filters: server, file.
          await page.goto(`${fleet.base}/#/search?q=ECONNREFUSED&server=beta`);
          await page.waitForSelector("main[data-ready=search]");
          await page.waitForFunction(() => document.querySelector(".status")?.textContent === "No matches.");
          await page.selectOption("select[name=server]", "alpha");
          await page.press("input.q", "Enter");
          await page.waitForFunction(() => document.querySelector(".status")?.textContent?.startsWith("2 matches"));
          // Time range: a preset, and a custom range before any line.
          await page.goto(`${fleet.base}/#/search?q=zebracorn&range=15m`);
          await page.waitForFunction(() => document.querySelector(".status")?.textContent?.startsWith("2 matches"));
          await page.goto(
            `${fleet.base}/#/search?q=zebracorn&range=custom&since=2000-01-01T00%3A00%3A00.000Z&until=2000-01-02T00%3A00%3A00.000Z`,
          );
          await page.waitForFunction(() => document.querySelector(".status")?.textContent === "No matches.");
          assert(await page.isVisible("input[name=since]"), "the custom range's inputs are shown");
          // Load more: 120 matches, 50 at a time, newest first.
          await page.goto(`${fleet.base}/#/search?q=job&server=beta`);
          await page.waitForFunction(() =>
            document.querySelector(".status")?.textContent === "50 matches so far, newest first."
          );
          await page.click("button.more");
          await page.waitForFunction(() => document.querySelectorAll(".results > li").length === 100);
          await page.click("button.more");
          await page.waitForFunction(() =>
            document.querySelector(".status")?.textContent === "120 matches, newest first."
          );
          assert(await page.isHidden("button.more"));
          const jobs = await page.$$eval(
            ".results .text",
            (spans) => spans.map((s) => /job (\d+)/.exec(s.textContent!)![1]),
          );
          assertEquals(jobs.map(Number), Array.from({ length: 120 }, (_, i) => 119 - i));
        });

        await t.step("markup in log lines is shown as text and runs nothing", async () => {
          await page.goto(`${fleet.base}/#/search?q=hostile*`);
          await page.waitForSelector("main[data-ready=search] .results li");
          const texts = await page.$$eval(".results .text", (spans) => spans.map((s) => s.textContent));
          assertEquals(texts.length, 2);
          assert(texts.some((text) => text!.includes(`<img src=x onerror="window.__xss='img'">`)), texts.join("\n"));
          assert(texts.some((text) => text!.includes("<script>window.__xss='script'</script>")), texts.join("\n"));
          await page.click(".results > li:first-child button.line");
          await page.waitForSelector(".context .ctx-lines li.hit");
          await page.goto(`${fleet.base}/#/server/alpha`);
          await page.waitForSelector("main[data-ready='server:alpha'] .lines li");
          const errorLines = await page.$$eval(".lines .text", (spans) => spans.map((s) => s.textContent).join("\n"));
          assertMatch(errorLines, /<img src=x onerror=/);
          assertEquals(
            await page.textContent(".cert-error"),
            `rateLimited <img src=x onerror="window.__xss='cert'">`,
            "a certificate's error is text too",
          );
          assertEquals(await page.evaluate(() => document.querySelectorAll("main img, main script").length), 0);
          assertEquals(await page.evaluate(() => (globalThis as { __xss?: string }).__xss), undefined);
        });

        await t.step("the drill-down shows apps, deployments, errors and the Netdata iframe", async () => {
          await page.goto(`${fleet.base}/#/server/alpha`);
          await page.waitForSelector("main[data-ready='server:alpha']");
          assertEquals(await page.textContent("h1"), "alpha");
          const apps = await page.$$eval(".server table tbody tr td.app", (tds) => tds.map((td) => td.textContent));
          assertEquals(apps.slice(0, 2), ["api", "web"]);
          assertMatch(await page.textContent(".server") ?? "", /ECONNREFUSED db\.internal:5432/);
          const panel = (title: string) =>
            page.locator("section.panel", { has: page.locator("h2", { hasText: title }) });
          assertEquals(
            await panel("Recent deployments").locator("tbody tr td:nth-child(3)").allTextContents(),
            ["failed", "success"],
          );
          assertEquals(await panel("Recent errors").locator("li.line-item").count(), 4);
          const frame = page.locator(".netdata iframe");
          assertEquals(await frame.getAttribute("src"), framed.url);
          await frame.scrollIntoViewIfNeeded();
          assertEquals(
            await page.frameLocator(".netdata iframe").locator("h1").textContent(),
            "fake netdata dashboard",
          );
          assertEquals(await page.getAttribute(".netdata .note a", "href"), framed.url);
          // A cycle refreshes the page in place, and the Netdata frame is not loaded again.
          await frame.evaluate((iframe) => Object.assign(iframe, { kept: true }));
          await fleet.cycle();
          await page.waitForFunction(() => /^3 /.test(document.querySelector(".facts div:last-child dd")?.textContent));
          assertEquals(await frame.evaluate((iframe) => "kept" in iframe), true);
          await screenshot(page, "server-alpha");

          await page.goto(`${fleet.base}/#/server/beta`);
          await page.waitForSelector("main[data-ready='server:beta']");
          const refused = page.locator(".netdata iframe");
          assertEquals(await refused.getAttribute("src"), refusing.url);
          await refused.scrollIntoViewIfNeeded();
          assertMatch(
            await page.textContent(".netdata .note") ?? "",
            /refuses to be framed.*open Netdata in its own tab/,
          );
          await page.waitForTimeout(300);
          await screenshot(page, "server-beta-netdata-refused");
        });

        await t.step(
          "the deployment history shows the rolled-back deploy; it links to the errors after it",
          async () => {
            await page.click("nav a[data-nav=deployments]");
            await page.waitForSelector("main[data-ready=deployments] tbody tr");
            const rows = await page.$$eval(
              ".deployments tbody tr",
              (trs) => trs.map((tr) => [...tr.querySelectorAll("td")].map((td) => td.textContent!.trim())),
            );
            // Newest first: when, server, app, outcome, version, release, duration, step / message.
            assertEquals(rows.map((row) => row.slice(1, 5).concat(row[6])), [
              ["alpha", "api", "failed", "41f3c9b", "34.1 s"],
              ["beta", "web", "rolled back", "c0ffee1", "48.2 s"],
              ["alpha", "web", "success", "7c913b6", "27.3 s"],
              ["beta", "web", "success", "a2e8836", "27.3 s"],
            ]);
            for (const row of rows) assertMatch(row[5], /^\d{8}-\d{6}-\d{3}$/);
            assertMatch(rows[0][7], /^health: http:\/\/127\.0\.0\.1:21001\/health did not answer/);
            assertMatch(rows[1][7], /^watch: \/health answered 500 after the switch/);
            await screenshot(page, "deployments");
            const rolledBack = page.locator(".deployments tbody tr", { hasText: "rolled back" });
            await rolledBack.locator("a[aria-label^='Errors of web on beta']").click();
            await page.waitForSelector("main[data-ready='server:beta']");
            assertMatch(await page.textContent(".server h2:has-text('Errors of web')") ?? "", /after the deploy/);
            const lines = await page.$$eval(".lines .text", (spans) => spans.map((s) => s.textContent));
            assertEquals(lines, [lines[0]]);
            assertMatch(lines[0]!, /TypeError: Cannot read properties of undefined/);
            await screenshot(page, "server-beta-errors-after-deploy");
            // Filtered by server.
            await page.goto(`${fleet.base}/#/deployments?server=alpha`);
            await page.waitForFunction(() => document.querySelectorAll(".deployments tbody tr").length === 2);
          },
        );

        await t.step("dark scheme and a narrow screen", async () => {
          const dark = await openPage(browser, { colorScheme: "dark" });
          try {
            await dark.page.goto(`${fleet.base}/`);
            await dark.page.waitForSelector("main[data-ready=overview]");
            await screenshot(dark.page, "overview-dark");
            await dark.page.goto(`${fleet.base}/#/search?q=ECONNREFUSED`);
            await dark.page.waitForSelector(".results li");
            await dark.page.click(".results > li:first-child button.line");
            await dark.page.waitForSelector(".context li.hit");
            await screenshot(dark.page, "search-dark");
            await dark.page.goto(`${fleet.base}/#/deployments`);
            await dark.page.waitForSelector("main[data-ready=deployments] tbody tr");
            await screenshot(dark.page, "deployments-dark");
            assertEquals(dark.problems, []);
          } finally {
            await dark.context.close();
          }
          const narrow = await openPage(browser, { viewport: { width: 390, height: 844 } });
          try {
            await narrow.page.goto(`${fleet.base}/`);
            await narrow.page.waitForSelector("main[data-ready=overview]");
            const overflow = await narrow.page.evaluate(() => document.documentElement.scrollWidth - innerWidth);
            assertEquals(overflow, 0, "the page itself does not scroll sideways (tables scroll in their box)");
            await screenshot(narrow.page, "overview-narrow");
            assertEquals(narrow.problems, []);
          } finally {
            await narrow.context.close();
          }
        });

        assertEquals(expectedProblems(problems), [], "no page error, console error or CSP violation");
      });
    } finally {
      await fleet.close();
      await framed.close();
      await refusing.close();
    }
  },
});

/** A page on another web site: an image, a fetch and a form aimed at the fleet API, and a link to its dashboard. */
function otherSite(fleetBase: string) {
  const api = `${fleetBase}/api/search?q=zebracorn`;
  const page = `<!doctype html><title>elsewhere</title>
<img id="probe" src="${api}&via=img">
<script>fetch(${JSON.stringify(`${api}&via=fetch`)}, { mode: "no-cors" }).catch(() => {});</script>
<a id="go" href="${fleetBase}/#/search?q=zebracorn">the fleet</a>`;
  const stop = new AbortController();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: stop.signal, onListen: () => {} },
    () => new Response(page, { headers: { "content-type": "text/html; charset=utf-8" } }),
  );
  return {
    port: server.addr.port,
    async close() {
      stop.abort();
      await server.finished;
    },
  };
}

Deno.test({
  name: "dashboard: another site's page cannot use the API (its image and fetch get 403); its link opens the dashboard",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const fleet = await LocalFleet.start([{ name: "solo" }]);
    const elsewhere = otherSite(fleet.base);
    try {
      await fleet.status("solo", "web", { status: "running", healthy: true, version: "3.0.0" });
      await fleet.log("solo", "web", "access.log", [`${iso(Date.now() - 60_000)}: GET /checkout zebracorn 200 31ms`]);
      await fleet.cycle();
      await withBrowser(async (browser) => {
        const { page, problems } = await openPage(browser);
        // What the fleet answered, from Chromium's network log: Opaque Response Blocking hides the
        // image's answer from the page (and from Playwright's response events), not from the log.
        const cdp = await page.context().newCDPSession(page);
        await cdp.send("Network.enable");
        const urls = new Map<string, string>();
        const statuses = new Map<string, number>();
        cdp.on("Network.requestWillBeSent", (event) => urls.set(event.requestId, event.request.url));
        cdp.on("Network.responseReceivedExtraInfo", (event) => statuses.set(event.requestId, event.statusCode));
        const answers = () =>
          [...statuses].flatMap(([id, status]) => {
            const url = new URL(urls.get(id) ?? "about:blank");
            return url.origin === fleet.base ? [`${url.pathname}${url.search} ${status}`] : [];
          }).sort();
        // localhost and 127.0.0.1 are two sites; two ports of 127.0.0.1, one site (Sec-Fetch-Site: same-site).
        for (const site of [`http://localhost:${elsewhere.port}/`, `http://127.0.0.1:${elsewhere.port}/`]) {
          statuses.clear();
          await page.goto(site);
          await page.waitForFunction(() => document.getElementById("probe").complete);
          await page.waitForTimeout(300); // the fetch's answer
          assertEquals(answers(), [
            "/api/search?q=zebracorn&via=fetch 403",
            "/api/search?q=zebracorn&via=img 403",
          ], site);
        }
        // The operator follows the other site's link: the dashboard opens and its own requests are answered.
        statuses.clear();
        await page.click("#go");
        await page.waitForSelector("main[data-ready=search] .results li");
        assertMatch(await page.textContent(".results .text") ?? "", /GET \/checkout zebracorn/);
        assert(answers().some((a) => a.startsWith("/api/search?q=zebracorn")), answers().join("\n"));
        assertEquals(answers().filter((a) => !/ (200|304)$/.test(a)), [], answers().join("\n"));
        // A search beyond the cost limits says them (src/fleet/log_queries.ts).
        await page.fill("input.q", "a* b* c* d* e*");
        await page.press("input.q", "Enter");
        await page.waitForSelector(".status .error");
        assertMatch(await page.textContent(".status") ?? "", /5 prefix terms \(x\*\); at most 4 .*Narrow it/s);
        assertEquals(
          problems.filter((p) => !/status of (403|400)/.test(p)),
          [],
          "only the other site's refused requests and the costly search's 400 were logged",
        );
      });
    } finally {
      await elsewhere.close();
      await fleet.close();
    }
  },
});

Deno.test({
  name: "dashboard: bidi overrides and control characters from a server are shown escaped, as on the terminal",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const fleet = await LocalFleet.start([{ name: "solo" }]);
    try {
      // Shown raw, "\u202e3.2.1v" reads "v1.2.3", and the RLO reverses the rest of the log line's cell.
      await fleet.status("solo", "web", {
        status: "running",
        healthy: false,
        version: "\u202e3.2.1v",
        lastDeploy: { outcome: "failed", message: "health: \u2066isolated\u2069 \u200fmark", at: iso(Date.now()) },
      });
      const at = iso(Date.now() - 60_000).replace(/\.\d+Z$/, "Z");
      await fleet.log("solo", "web", "error.log", [`${at}: Error: bidicheck user \u202etxt.exe\u202c \x1b[31mred`]);
      await fleet.cycle();
      await withBrowser(async (browser) => {
        const { page, problems } = await openPage(browser);
        // Every text node, shown attribute and the title, for a raw bidi or control character.
        const raw = () =>
          page.evaluate(() => {
            // deno-lint-ignore no-control-regex
            const unsafe = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]/;
            const found: string[] = [];
            const walker = document.createTreeWalker(document.body, 4 /* NodeFilter.SHOW_TEXT */);
            for (let node = walker.nextNode(); node; node = walker.nextNode()) {
              if (unsafe.test(node.data)) found.push(`text: ${JSON.stringify(node.data)}`);
            }
            for (const el of document.querySelectorAll("[title], [aria-label]")) {
              for (const name of ["title", "aria-label"]) {
                const value = el.getAttribute(name) ?? "";
                if (unsafe.test(value)) found.push(`${name}: ${JSON.stringify(value)}`);
              }
            }
            if (unsafe.test(document.title)) found.push(`title: ${JSON.stringify(document.title)}`);
            return found;
          });
        await page.goto(`${fleet.base}/`);
        await page.waitForSelector("main[data-ready=overview]");
        assertEquals((await appTable(page)).map((row) => row[4]), ["\\u202e3.2.1v"]);
        // "Needs attention" says why: the last deploy's message.
        assertMatch(await page.textContent("main") ?? "", /failed: health: \\u2066isolated\\u2069 \\u200fmark/);
        assertEquals(await raw(), []);
        await screenshot(page, "bidi-overview");

        await page.goto(`${fleet.base}/#/search?q=bidicheck`);
        await page.waitForSelector("main[data-ready=search] .results li");
        assertMatch(
          await page.textContent(".results .text") ?? "",
          /Error: bidicheck user \\u202etxt\.exe\\u202c \\x1b\[31mred$/,
        );
        await page.click(".results > li:first-child button.line");
        await page.waitForSelector(".context .ctx-lines li.hit");
        assertEquals(await raw(), []);

        await page.goto(`${fleet.base}/#/server/solo`);
        await page.waitForSelector("main[data-ready='server:solo'] .lines li");
        const shown = await page.textContent("main") ?? "";
        assertMatch(shown, /\\u202e3\.2\.1v/);
        assertMatch(shown, /bidicheck user \\u202etxt\.exe\\u202c/);
        assertEquals(await raw(), []);
        await screenshot(page, "bidi-server");
        assertEquals(problems, []);
      });
    } finally {
      await fleet.close();
    }
  },
});

Deno.test({
  name: "dashboard: with a token, a login asks for it once and keeps it in session storage",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const token = "s3cret-token-for-the-fleet";
    const fleet = await LocalFleet.start([{ name: "solo" }], { token });
    try {
      await fleet.status("solo", "web", { status: "running", healthy: true, version: "3.0.0" });
      await fleet.cycle();
      await withBrowser(async (browser) => {
        const { page, problems } = await openPage(browser);
        await page.goto(`${fleet.base}/`);
        await page.waitForSelector("main[data-ready=login]");
        assertEquals(await page.evaluate(() => document.activeElement?.id), "login-token");
        await page.keyboard.type("wrong");
        await page.keyboard.press("Enter");
        await page.waitForSelector(".login-error:not([hidden])");
        assertEquals(await page.textContent(".login-error"), "That token was refused.");
        await screenshot(page, "login");
        await page.fill("#login-token", token);
        await page.press("#login-token", "Enter");
        await page.waitForSelector("main[data-ready=overview]");
        assertEquals((await appTable(page)).map((row) => row[1]), ["web"]);
        assertEquals(await page.evaluate(() => sessionStorage.getItem("fleet-monitor-token")), token);
        // The event stream takes the token as ?token= (EventSource cannot send headers).
        await page.waitForSelector("#live[data-state=live]");
        await page.reload();
        await page.waitForSelector("main[data-ready=overview]");
        assert(await page.isVisible("#logout"));
        await page.click("#logout");
        await page.waitForSelector("main[data-ready=login]");
        assertEquals(await page.evaluate(() => sessionStorage.getItem("fleet-monitor-token")), null);
        // Only the wrong token's 401s were logged by the browser.
        assertEquals(problems.filter((p) => !/status of 401/.test(p)), []);
      });
    } finally {
      await fleet.close();
    }
  },
});

Deno.test({
  name: "dashboard: a first load the monitor did not answer shows why, then loads by itself (no click)",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const fleet = await LocalFleet.start([{ name: "solo" }]);
    try {
      await fleet.status("solo", "web", { status: "running", healthy: true, version: "3.0.0" });
      await fleet.cycle();
      await withBrowser(async (browser) => {
        const { page, problems } = await openPage(browser);
        // The first two answers are lost on the way (Chromium's own network error, as on a dropped connection).
        let asked = 0;
        await page.route((url) => url.pathname === "/api/fleet", (route) => {
          return asked++ < 2 ? route.abort("internetdisconnected") : route.continue();
        });
        await page.goto(`${fleet.base}/`);
        await page.waitForSelector("main .error[role=alert]");
        assertMatch(await page.textContent("main .error") ?? "", /the fleet monitor does not answer/);
        await page.waitForSelector("main[data-ready=overview]", { timeout: 15_000 });
        assertEquals(asked, 3);
        assertEquals((await appTable(page)).map((row) => row[1]), ["web"]);
        assertEquals(await page.$$("main .error"), []);
        assertEquals(problems.filter((p) => !/net::ERR_INTERNET_DISCONNECTED$/.test(p)), []);
      });
    } finally {
      await fleet.close();
    }
  },
});

Deno.test({
  name: "dashboard: first render at 100 servers × 10 apps (printed) and page weight under 200 KB",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const fleet = await LocalFleet.start([]);
    try {
      const now = Date.now();
      const { store } = fleet;
      for (let s = 0; s < 100; s++) {
        const server = `web-${String(s).padStart(3, "0")}`;
        store.recordContact(server, `10.0.${s >> 8}.${s & 255}`, { at: now, ok: true, durationMs: 80, bytes: 1000 });
        for (let a = 0; a < 10; a++) {
          store.upsertApp(server, `app-${a}`, {
            type: "node",
            status: "running",
            healthy: !(s === 42 && a === 3),
            version: s === 7 && a === 5 ? "2.4.0" : `2.${a}.1`,
            commit: "0123456789abcdef",
            deployed: iso(now - (s * 10 + a) * MINUTE),
            lastHealthCheck: iso(now - 10_000),
            port: 3000 + a,
            strategy: "blue-green",
            lastDeploy: { outcome: "success", at: iso(now - (s * 10 + a) * MINUTE) },
          }, now);
        }
      }
      const files = dashboardFiles().filter((file) => !/^\/(app|style)\.(js|css)$|^\/index\.html$/.test(file.path));
      const weight = files.reduce((sum, file) => sum + file.bytes, 0);
      const fleetJson = (await (await fetch(`${fleet.base}/api/fleet`)).text()).length;
      await withBrowser(async (browser) => {
        // Times from navigation start, as the page records them: the first screen (counts,
        // attention, skew, matrix) in the DOM, painted, and the 1000-row table below it built.
        const runs: { render: number; paint: number; table: number }[] = [];
        for (let run = 0; run < 5; run++) {
          const { context, page, problems } = await openPage(browser);
          try {
            await page.goto(`${fleet.base}/`);
            await page.waitForSelector("html[data-paint-ms][data-table-ms]", { state: "attached" });
            const times = await page.evaluate(() => {
              const data = document.documentElement.dataset;
              return { render: Number(data.renderMs), paint: Number(data.paintMs), table: Number(data.tableMs) };
            });
            runs.push(times);
            assertEquals(await page.locator("table.apps tbody tr").count(), 1000);
            assertEquals(await page.locator(".matrix tbody tr").count(), 100);
            assertEquals(await page.locator(".matrix td.skewed").count(), 1);
            assertEquals(problems, []);
            if (run === 0) await screenshot(page, "overview-100x10", { fullPage: false });
          } finally {
            await context.close();
          }
        }
        const median = (key: "render" | "paint" | "table") =>
          runs.map((r) => r[key]).sort((a, b) => a - b)[Math.floor(runs.length / 2)].toFixed(0);
        console.log(
          `dashboard: 100 servers × 10 apps, median of ${runs.length} loads, from navigation start: first screen ` +
            `in the DOM ${median("render")} ms, painted ${median("paint")} ms, the 1000-row table built ` +
            `${median("table")} ms (render per run: ${runs.map((r) => r.render.toFixed(0)).join(", ")} ms); ` +
            `/api/fleet ${(fleetJson / 1024).toFixed(0)} KB`,
        );
      });
      console.log(
        `dashboard: page weight ${(weight / 1024).toFixed(1)} KB (${
          files.map((f) => `${f.path} ${(f.bytes / 1024).toFixed(1)} KB`).join(", ")
        })`,
      );
      assert(weight < 200 * 1024, `the page weighs ${weight} bytes`);
    } finally {
      await fleet.close();
    }
  },
});

Deno.test("dashboard: `deploy-paradigm fleet` serves it with its security headers", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dp-dashboard-cli-" });
  let child: Deno.ChildProcess | undefined;
  try {
    const home = join(dir, "home");
    const prefix = join(dir, "server");
    await Deno.mkdir(home, { recursive: true });
    await Deno.writeTextFile(
      join(home, "config.yml"),
      "servers:\n  - { name: here, host: local, netdata: 'http://127.0.0.1:19999/' }\n",
    );
    await Deno.mkdir(join(prefix, "opt", "deployments", "web"), { recursive: true });
    await Deno.writeTextFile(
      join(prefix, "opt", "deployments", "web", "status.json"),
      JSON.stringify({ name: "web", status: "running", healthy: true, version: "1.0.0" }),
    );
    const port = freePort();
    let output = "";
    child = spawnCapturing(
      [BIN, "fleet", "--port", String(port)],
      { FLEET_MONITOR_HOME: home, DEPLOY_PARADIGM_PREFIX: prefix, NO_COLOR: "1" },
      (text) => output += text,
    );
    for (let i = 0; i < 100 && !/cycle 1:/.test(output); i++) await new Promise((r) => setTimeout(r, 100));
    assertMatch(output, /cycle 1: 1\/1 servers, 1 apps/);
    const base = `http://127.0.0.1:${port}`;

    const page = await fetch(`${base}/`);
    const html = await page.text();
    assertEquals(page.status, 200);
    assertEquals(page.headers.get("content-type"), "text/html; charset=utf-8");
    assertEquals(
      page.headers.get("content-security-policy"),
      contentSecurityPolicy([{ netdata: "http://127.0.0.1:19999/" }]),
    );
    assertMatch(page.headers.get("content-security-policy")!, /frame-src http:\/\/127\.0\.0\.1:19999;/);
    assertMatch(page.headers.get("content-security-policy")!, /script-src 'self'; style-src 'self'/);
    assertEquals(page.headers.get("x-frame-options"), "DENY");
    assertEquals(page.headers.get("x-content-type-options"), "nosniff");
    assertEquals(page.headers.get("referrer-policy"), "no-referrer");
    assertEquals(page.headers.get("cache-control"), "no-cache");
    assert(!/<script>|style=/.test(html), "no inline script or style in index.html");

    const script = /<script type="module" src="(\/app\.[0-9a-f]{8}\.js)">/.exec(html)?.[1];
    const style = /<link rel="stylesheet" href="(\/style\.[0-9a-f]{8}\.css)">/.exec(html)?.[1];
    assert(script && style, html);
    const js = await fetch(base + script);
    assertEquals(js.headers.get("content-type"), "text/javascript; charset=utf-8");
    assertEquals(js.headers.get("cache-control"), "public, max-age=31536000, immutable");
    assert(!(await js.text()).includes("innerHTML"), "the script never parses HTML");
    const css = await fetch(base + style);
    assertEquals(css.headers.get("content-type"), "text/css; charset=utf-8");
    await css.body?.cancel();
    const missing = await fetch(`${base}/nothing-here`);
    assertEquals(missing.status, 404);
    await missing.body?.cancel();
    const api = await fetch(`${base}/api/fleet`);
    assertEquals((await api.json()).servers[0].apps[0].app, "web");
  } finally {
    if (child) {
      child.kill("SIGTERM");
      await child.status;
    }
    await Deno.remove(dir, { recursive: true });
  }
});
