/**
 * The deployments view (`#/deployments?server=&app=`): the history newest first, filtered by
 * server and app, with "Load more". Its rows are the server page's "Recent deployments" too.
 * @module
 */
import { add, h, put } from "./dom.js";
import { api, fleetNames, orLogin, PAGE_SIZE } from "./api.js";
import { byTime, duration, withoutStep } from "./format.js";
import { route, serverHref } from "./routes.js";
import { code, errorBox, nameFilters, outcomeBadge, table, when } from "./widgets.js";

export const DEPLOYMENT_COLUMNS = [
  "When",
  "Server",
  "App",
  "Outcome",
  "Version",
  "Release",
  "Duration",
  "Step / message",
  "",
];

/**
 * Rows of a deployments table, newest first by time (the API pages by id, which is the order of
 * ingestion: deploys of several servers pulled in one cycle interleave). `isNew` marks rows.
 */
export function deploymentRows(list, withServer = true, isNew = () => false) {
  return byTime(list, (d) => d.at).map((d) =>
    h(
      "tr",
      { class: isNew(d) ? "changed" : null },
      h("td", {}, when(d.at)),
      withServer ? h("td", {}, h("a", { href: serverHref(d.server), text: d.server })) : null,
      h("td", { class: "app", text: d.app }),
      h("td", {}, outcomeBadge(d.outcome)),
      h("td", {}, code(d.version, d.commit ?? undefined)),
      h("td", {}, code(d.release)),
      h("td", { class: "num", text: duration(d.durationMs) }),
      h(
        "td",
        { class: "message" },
        d.step ? h("strong", { text: `${d.step}: ` }) : null,
        withoutStep(d.step, d.message ?? ""),
      ),
      h(
        "td",
        {},
        h("a", {
          href: serverHref(d.server, { app: d.app, since: d.at }),
          "aria-label": `Errors of ${d.app} on ${d.server} after this deploy`,
          text: "errors after →",
        }),
      ),
    )
  );
}

/** The deployments view. */
export function deploymentsView() {
  const heading = h("h1", { tabindex: "-1", text: "Deployments" });
  const filters = h("form", { class: "filters-row", "aria-label": "Filter deployments" });
  const body = h("tbody");
  const wrap = table(DEPLOYMENT_COLUMNS, [], "deployments", body);
  const status = h("div", { class: "status", role: "status" });
  const more = h("button", { type: "button", class: "more", hidden: true, text: "Load more" });
  const el = h(
    "div",
    { class: "view deployments" },
    h("div", { class: "view-head" }, heading),
    filters,
    status,
    wrap,
    more,
  );
  let params = { server: "", app: "" };
  let nextBefore = null;
  let pages = 0;
  let newest = null;

  filters.addEventListener("change", () => {
    const data = new FormData(filters);
    location.hash = route("/deployments", {
      server: String(data.get("server") ?? ""),
      app: String(data.get("app") ?? ""),
    });
  });

  /** Loads the first page (marking rows newer than the last first page when `markNew`), or the next. */
  async function load(next = false, markNew = false) {
    const page = await api("/api/deployments", { ...params, limit: PAGE_SIZE, before: next ? nextBefore : undefined });
    const seen = newest;
    if (!next) {
      put(body);
      pages = 0;
      newest = page.deployments[0]?.id ?? null;
    }
    add(body, deploymentRows(page.deployments, true, (d) => markNew && seen !== null && d.id > seen));
    pages++;
    nextBefore = page.nextBefore ?? null;
    more.hidden = nextBefore === null;
    wrap.hidden = body.childElementCount === 0;
    status.textContent = body.childElementCount ? "" : "No deployments recorded yet.";
  }
  more.addEventListener("click", () => load(true).catch((error) => orLogin(error) || put(status, errorBox(error))));

  return {
    el,
    heading,
    title: "Deployments · Fleet",
    async show(p) {
      params = { server: p.get("server") ?? "", app: p.get("app") ?? "" };
      put(filters, nameFilters(await fleetNames(), params.server, params.app));
      await load();
    },
    async refresh() {
      if (pages <= 1) await load(false, true); // keep pages the user loaded
    },
    notice(error) {
      put(status, errorBox(error));
    },
  };
}
