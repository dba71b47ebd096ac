/**
 * Headless Chromium (Debian's `chromium` package) driven by npm:playwright-core, for the
 * dashboard's end-to-end tests. Playwright's own browser downloads are never used: the browser is
 * the system's, at /usr/bin/chromium (or `$CHROMIUM`). Pages record what went wrong in them (page
 * errors, console errors, Content-Security-Policy violations) so tests can assert there was none.
 */
import { join, resolve } from "node:path";
import { type Browser, type BrowserContext, chromium, type Page } from "playwright-core";

// The page's document, used inside an init script (this file is checked without the DOM library).
declare const document: {
  documentElement: { scrollHeight: number };
  addEventListener(type: string, listener: (event: { violatedDirective: string; blockedURI: string }) => void): void;
};

/** The Chromium executable. */
export const CHROMIUM = Deno.env.get("CHROMIUM") ?? "/usr/bin/chromium";

/** Where tests write screenshots (tests/artifacts/). */
export const ARTIFACTS = resolve(import.meta.dirname!, "../artifacts");

const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--no-first-run",
  "--disable-component-update",
  "--disable-sync",
];

/** Runs `fn` with a fresh headless Chromium, always closed afterwards. */
export async function withBrowser<T>(fn: (browser: Browser) => Promise<T>): Promise<T> {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, timeout: 30_000 });
  try {
    return await fn(browser);
  } finally {
    await browser.close();
  }
}

/** A page and what went wrong in it. */
export interface WatchedPage {
  context: BrowserContext;
  page: Page;
  /** Page errors, console errors and CSP violations, as they happened. */
  problems: string[];
}

/** Options of {@link openPage}. */
export interface PageOptions {
  colorScheme?: "light" | "dark";
  viewport?: { width: number; height: number };
}

/** The console error of a request Chromium cut because an interface came or went. */
const NETWORK_CHANGED = /^Failed to load resource: net::ERR_NETWORK_CHANGED$/;
/** The same cut, as a failed request's error text. */
const NETWORK_CHANGED_FAILURE = "net::ERR_NETWORK_CHANGED";
/** Loads of a page (`goto`) before a load cut by network changes is left as it is. */
const LOAD_ATTEMPTS = 5;

/**
 * A new page in its own context (its own session storage) that records page errors, console
 * errors and every `securitypolicyviolation` event into `problems`.
 */
export async function openPage(browser: Browser, options: PageOptions = {}): Promise<WatchedPage> {
  const context = await browser.newContext({
    colorScheme: options.colorScheme ?? "light",
    viewport: options.viewport ?? { width: 1280, height: 900 },
  });
  context.setDefaultTimeout(10_000);
  const problems: string[] = [];
  await context.exposeBinding("__reportViolation", (_source, text: string) => {
    problems.push(`CSP violation: ${text}`);
  });
  await context.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (event) => {
      const report = (globalThis as unknown as { __reportViolation: (text: string) => void }).__reportViolation;
      report(`${event.violatedDirective} blocked ${event.blockedURI || "(inline)"}`);
    });
  });
  const page = await context.newPage();
  reloadWhenCut(page);
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    // Chromium aborts the requests in flight when the machine's interfaces change, as they do
    // while other tests add and remove their network namespaces' links: the test machine, not the page.
    if (message.type() === "error" && !NETWORK_CHANGED.test(message.text())) {
      problems.push(`console error: ${message.text()}`);
    }
  });
  return { context, page, problems };
}

/**
 * Makes `page.goto` load the page again when a request of the load (a module of the dashboard's
 * graph, say) was cut by a network change: Chromium keeps a module that failed to load as failed,
 * so the page would stay without its script for good, and the test would wait for a view that never
 * comes. Other tests add and remove network namespaces' links all the time; that is the machine,
 * not the page. A load that fails with no cut in it is left to the test.
 */
function reloadWhenCut(page: Page): void {
  let cuts = 0;
  page.on("requestfailed", (request) => {
    if (request.failure()?.errorText === NETWORK_CHANGED_FAILURE) cuts++;
  });
  const goto = page.goto.bind(page);
  page.goto = async (url, options) => {
    const start = cuts;
    for (let attempt = 1;; attempt++) {
      const before = cuts;
      // A load cut that way may also fail as a whole (its document cut, or Chromium's error page or a reload
      // taking over): then it is loaded again too. The cut's event may come just after the failure.
      let failed = false;
      const response = await goto(url, options).catch(async (error: Error) => {
        await new Promise((resolve) => setTimeout(resolve, 200));
        if (attempt === LOAD_ATTEMPTS || cuts === start) throw error;
        failed = true;
        return null;
      });
      if ((!failed && cuts === before) || attempt === LOAD_ATTEMPTS) return response;
      console.log(`browser: ${url} loaded again: ${cuts - before} request(s) cut by a network change`);
    }
  };
}

/**
 * Writes a PNG of `page` (the whole page, or the viewport with `fullPage: false`) to
 * tests/artifacts/<name>.png. The whole page is taken with the viewport grown to the page's
 * height: the sticky header stays on top, and cross-origin frames (Netdata) are on screen, so
 * painted.
 */
export async function screenshot(page: Page, name: string, options: { fullPage?: boolean } = {}): Promise<string> {
  await Deno.mkdir(ARTIFACTS, { recursive: true });
  const path = join(ARTIFACTS, `${name}.png`);
  const viewport = page.viewportSize();
  const height = await page.evaluate(() => document.documentElement.scrollHeight);
  const grow = (options.fullPage ?? true) && viewport !== null && height > viewport.height;
  if (grow) await page.setViewportSize({ width: viewport.width, height: Math.min(height, 16_000) });
  try {
    await page.waitForTimeout(200);
    await page.screenshot({ path, animations: "disabled", caret: "hide" });
  } finally {
    if (grow) await page.setViewportSize(viewport);
  }
  return path;
}
