/**
 * The browser harness against what this machine does to it: while other tests add and remove
 * their network namespaces' links, Chromium cuts the requests waiting for a connection
 * (net::ERR_NETWORK_CHANGED). A module of a page's graph cut that way stays failed, and the page
 * never starts. Here a real namespace comes and goes (as tests/helpers/host.ts makes them) while
 * a page of 21 modules loads: the harness's `goto` loads it again, and the page starts.
 */
import { assert, assertEquals } from "../helpers/assert.ts";
import { openPage, withBrowser } from "../helpers/browser.ts";
import { addNetns, removeNetns } from "../helpers/host.ts";

// The page's document, used inside a page function (this file is checked without the DOM library).
declare const document: { querySelector(selector: string): { dataset: Record<string, string> } | null };

/** Modules the entry imports at once: more than Chromium's 6 connections per host, so some wait. */
const MODULES = 20;
/** How long each module takes: the load lasts long enough for a network change to fall in it. */
const MODULE_DELAY_MS = 300;

/** A page whose entry module imports {@link MODULES} slow modules, then marks `main` ready. */
function slowModulePage() {
  const stop = new AbortController();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: stop.signal, onListen: () => {} },
    async (req) => {
      const path = new URL(req.url).pathname;
      if (path === "/") {
        return new Response(`<!doctype html><main>slow</main><script type=module src="/entry.js"></script>`, {
          headers: { "content-type": "text/html; charset=utf-8" },
        });
      }
      const body = path === "/entry.js"
        ? Array.from({ length: MODULES }, (_, i) => `import "/m${i}.js";\n`).join("") +
          `document.querySelector("main").dataset.ready = "yes";\n`
        : "";
      await new Promise((resolve) => setTimeout(resolve, MODULE_DELAY_MS));
      return new Response(body, { headers: { "content-type": "text/javascript", "cache-control": "no-store" } });
    },
  );
  return {
    url: `http://127.0.0.1:${server.addr.port}/`,
    async close() {
      stop.abort();
      await server.finished;
    },
  };
}

Deno.test({
  name: "browser harness: a page load cut by a network namespace coming and going is loaded again, and starts",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const site = slowModulePage();
    const netns = `dpbr${Deno.pid % 10_000}`;
    try {
      await withBrowser(async (browser) => {
        const { page, problems } = await openPage(browser);
        let cuts = 0;
        page.on("requestfailed", (request) => {
          if (request.failure()?.errorText === "net::ERR_NETWORK_CHANGED") cuts++;
        });
        const loading = page.goto(site.url);
        loading.catch(() => {}); // awaited below, after the links came and went
        // Links come and go, as other tests' hosts do, until a request of the first load is cut.
        for (let round = 0; cuts === 0 && round < 20; round++) {
          await addNetns(netns, "10.219");
          await removeNetns(netns);
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
        await loading;
        assert(cuts > 0, "a network change cut requests of the first load (else this test shows nothing)");
        const ready = await page.evaluate(() => document.querySelector("main")?.dataset.ready ?? "");
        assertEquals(ready, "yes", `the page started after ${cuts} cut request(s)`);
        assertEquals(problems, []);
      });
    } finally {
      await removeNetns(netns);
      await site.close();
    }
  },
});
