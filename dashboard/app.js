/**
 * The fleet dashboard's boot module: plain DOM, no framework, no build step. The only module that
 * does anything on load: it routes the hash to a view (routes.js), shows the login when the API
 * wants a token, opens the live updates and wires the header (quick search, `/`, "Forget token").
 *
 * Data comes from the fleet API (api.js); `cycle` events on /api/events refresh the view on
 * screen in place (live.js). Views: overview.js, server.js, search.js, deployments.js, rollouts.js; each is
 * `{ el, heading, title, show(params), refresh(), notice(error) }`.
 *
 * Safety: every value from the API reaches the page as text (text nodes, textContent, attribute
 * values: dom.js), its control and bidi characters escaped as on the terminal; no HTML is ever
 * parsed from data, and links are built here (`#/…`) or checked to be http(s) (Netdata).
 *
 * src/fleet/dashboard.ts serves these modules under content-hashed names, rewriting the
 * `./name.js` specifiers below to them.
 * @module
 */
import { byId, fromTemplate, pageTitle, put } from "./dom.js";
import { afterAnswer, ApiError, forgetToken, keepToken, onUnauthorized, orLogin, rememberFleet, token } from "./api.js";
import { coalesce, liveUpdates } from "./live.js";
import { parseHash, route } from "./routes.js";
import { errorBox, installTooltips } from "./widgets.js";
import { installChartTips } from "./chart_views.js";
import { overviewView } from "./overview.js";
import { serverView } from "./server.js";
import { searchView } from "./search.js";
import { deploymentsView } from "./deployments.js";
import { rolloutsView, rolloutView } from "./rollouts.js";

performance.mark("app-start");

/** Each view's factory, by the name routes.js gives it. */
const VIEWS = {
  overview: () => overviewView(),
  server: (target) => serverView(target.server),
  search: () => searchView(),
  deployments: () => deploymentsView(),
  rollouts: () => rolloutsView(),
  rollout: (target) => rolloutView(target.rollout),
};

const main = byId("main");
const logout = /** @type {HTMLButtonElement} */ (byId("logout"));
const quick = /** @type {HTMLFormElement} */ (byId("quick-search"));

/** @type {{ key: string, view: any } | null} */
let current = null;
let navigations = 0;

/**
 * A view that could not load because the monitor did not answer (a dropped connection, the
 * monitor restarting) or failed (5xx) is tried again this often, until it loads or the user goes
 * elsewhere: live updates cannot refresh a view that never showed.
 */
const RELOAD_MS = 3_000;

/** Refreshes the view on screen (one at a time; a cycle during a refresh runs one more). */
const refresh = coalesce(async () => {
  rememberFleet(null);
  const view = current?.view;
  try {
    await view?.refresh?.();
  } catch (error) {
    if (!orLogin(error)) view?.notice?.(error);
  }
});

const live = liveUpdates({ indicator: byId("live"), refresh, paused: () => main.dataset.ready === "login" });
afterAnswer(() => live.ensure());
onUnauthorized(showLogin);

/** Shows the view the hash names: a new one, or the one on screen with new parameters. */
async function navigate() {
  const target = parseHash(location.hash);
  const first = navigations++ === 0;
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link instanceof HTMLElement && link.dataset.nav === target.nav) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const fresh = !current || current.key !== target.key;
  if (fresh) current = { key: target.key, view: VIEWS[target.view](target) };
  const view = current.view;
  pageTitle(view.title);
  document.body.dataset.view = target.view;
  try {
    await view.show(target.params);
  } catch (error) {
    if (current?.view !== view) return;
    if (orLogin(error)) return;
    current = null;
    put(main, errorBox(error, () => navigate()));
    if (error instanceof ApiError && (error.status === 0 || error.status >= 500)) {
      const failed = navigations;
      setTimeout(() => {
        if (navigations === failed && current === null && main.dataset.ready !== "login") navigate();
      }, RELOAD_MS);
    }
    return;
  }
  if (current?.view !== view) return; // another navigation won
  if (fresh) {
    put(main, view.el);
    if (!first && !view.el.contains(document.activeElement)) view.heading.focus({ preventScroll: true });
    scrollTo(0, 0);
  }
  if (target.key === "overview" && !document.documentElement.dataset.renderMs) {
    // The first render of the overview, from navigation start (read by the performance test):
    // in the DOM now, and painted by the next frame.
    const root = document.documentElement;
    root.dataset.renderMs = performance.now().toFixed(1);
    requestAnimationFrame(() => setTimeout(() => (root.dataset.paintMs = performance.now().toFixed(1))));
  }
  main.dataset.ready = target.key;
}

/** The login form: the token is kept in sessionStorage (this tab only). */
function showLogin() {
  const refused = token() !== null;
  forgetToken();
  logout.hidden = true;
  live.close();
  current = null;
  document.title = "Token required · Fleet";
  put(main, fromTemplate("login-template"));
  main.dataset.ready = "login";
  const form = /** @type {HTMLFormElement} */ (main.querySelector(".login-form"));
  const input = /** @type {HTMLInputElement} */ (form.elements.namedItem("token"));
  const message = /** @type {HTMLElement} */ (main.querySelector(".login-error"));
  if (refused) {
    message.textContent = "That token was refused.";
    message.hidden = false;
  }
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = input.value.trim();
    if (!value) return;
    keepToken(value);
    logout.hidden = false;
    navigate();
  });
  input.focus();
}

logout.hidden = token() === null;
logout.addEventListener("click", () => {
  forgetToken();
  showLogin();
});

quick.addEventListener("submit", (event) => {
  event.preventDefault();
  const input = /** @type {HTMLInputElement} */ (quick.elements.namedItem("q"));
  location.hash = route("/search", { q: input.value.trim() });
  input.value = "";
});

// "/" focuses the query box (the view's, else the header's), unless typing somewhere.
document.addEventListener("keydown", (event) => {
  if (event.key !== "/" || event.ctrlKey || event.metaKey || event.altKey) return;
  const target = event.target;
  if (target instanceof Element && target.closest("input, textarea, select, [contenteditable]")) return;
  event.preventDefault();
  const input = main.querySelector("input[name=q]") ?? quick.elements.namedItem("q");
  if (input instanceof HTMLInputElement) {
    input.focus();
    input.select();
  }
});

installTooltips();
installChartTips();
addEventListener("hashchange", () => navigate());
navigate();
