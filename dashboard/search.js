/**
 * Log search (`#/search?q=&server=&app=&file=&range=&since=&until=`): the query, filters, results
 * newest first with "Load more"; a result opens its context.
 * @module
 */
import { add, fromTemplate, h, put } from "./dom.js";
import { api, fleetNames, orLogin, PAGE_SIZE, Unauthorized } from "./api.js";
import { byTime, fromLocalInput, localInput } from "./format.js";
import { searchQuery } from "./fleet.js";
import { lineItem, lineMeta } from "./lines.js";
import { route } from "./routes.js";
import { errorBox, nameFilters } from "./widgets.js";

const RANGE_OPTIONS = [
  ["", "Any time"],
  ["15m", "Last 15 minutes"],
  ["1h", "Last hour"],
  ["24h", "Last 24 hours"],
  ["7d", "Last 7 days"],
  ["custom", "Between…"],
];

/**
 * The hash parameters of a submitted search form (`value(name)`: a field's trimmed value): a
 * custom range's local times become ISO times.
 * @param {(name: string) => string} value
 */
export function formParams(value) {
  const params = {
    q: value("q"),
    server: value("server"),
    app: value("app"),
    file: value("file"),
    range: value("range"),
  };
  if (params.range !== "custom") return params;
  return { ...params, since: fromLocalInput(value("since")), until: fromLocalInput(value("until")) };
}

/** The search view. */
export function searchView() {
  const heading = h("h1", { tabindex: "-1", text: "Logs" });
  const q = h("input", {
    type: "search",
    name: "q",
    class: "q",
    placeholder: 'timeout, "GET /api", conn*, error NOT health',
    "aria-label": "Search query",
    autocomplete: "off",
    spellcheck: "false",
  });
  const filters = h("div", { class: "filters" });
  const range = h("select", { name: "range" }, RANGE_OPTIONS.map(([value, text]) => h("option", { value, text })));
  const since = h("input", { type: "datetime-local", name: "since", "aria-label": "From" });
  const until = h("input", { type: "datetime-local", name: "until", "aria-label": "Until" });
  const custom = h("span", { class: "custom", hidden: true }, since, h("span", { text: "to" }), until);
  range.addEventListener("change", () => (custom.hidden = range.value !== "custom"));
  const file = h("input", { name: "file", list: "files", placeholder: "any file", "aria-label": "File", size: "10" });
  const form = h(
    "form",
    { class: "search-form", role: "search" },
    h("div", { class: "query-row" }, q, h("button", { type: "submit", text: "Search" })),
    h(
      "div",
      { class: "filters-row" },
      filters,
      h("label", { class: "field" }, h("span", { text: "File" }), file),
      h("label", { class: "field" }, h("span", { text: "Time" }), range),
      custom,
    ),
    h("datalist", { id: "files" }, ["access.log", "error.log"].map((value) => h("option", { value }))),
  );
  const status = h("div", { class: "status", role: "status" });
  const results = h("ol", { class: "lines plain results" });
  const more = h("button", { type: "button", class: "more", hidden: true, text: "Load more" });
  const el = h(
    "div",
    { class: "view search" },
    h("div", { class: "view-head" }, heading),
    form,
    fromTemplate("syntax-template"),
    status,
    results,
    more,
  );
  let query = null;
  let nextBefore = null;
  let shown = 0;
  let runs = 0;

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const target = route("/search", formParams((key) => String(data.get(key) ?? "").trim()));
    // The same search again (a time range moves with the clock): navigate as if the hash changed.
    if (location.hash === target) dispatchEvent(new HashChangeEvent("hashchange"));
    else location.hash = target;
  });
  more.addEventListener("click", () => run(true).catch(orLogin));

  /** Fills the form from the hash's parameters. */
  async function fill(params) {
    const names = await fleetNames().catch((error) => {
      if (error instanceof Unauthorized) throw error;
      return { servers: [], apps: [] };
    });
    put(filters, nameFilters(names, params.get("server") ?? "", params.get("app") ?? ""));
    q.value = params.get("q") ?? "";
    file.value = params.get("file") ?? "";
    range.value = params.get("range") ?? "";
    custom.hidden = range.value !== "custom";
    since.value = params.get("since") ? localInput(params.get("since")) : "";
    until.value = params.get("until") ? localInput(params.get("until")) : "";
    query = searchQuery(params);
  }

  /**
   * Runs the query (the next page when `next`). The API pages by line id (the order lines were
   * collected in); each page is shown newest first by the lines' own times.
   */
  async function run(next = false) {
    const mine = ++runs;
    if (!query?.q.trim()) {
      put(results);
      more.hidden = true;
      status.textContent = 'Type a query: words, "phrases", OR, NOT, prefix*.';
      return;
    }
    if (!next) {
      put(results);
      nextBefore = null;
      shown = 0;
    }
    status.textContent = "Searching…";
    more.disabled = true;
    let page;
    try {
      page = await api("/api/search", { ...query, limit: PAGE_SIZE, before: next ? nextBefore : undefined });
    } catch (error) {
      if (mine !== runs) return;
      more.disabled = false;
      if (error instanceof Unauthorized) throw error;
      put(status, errorBox(error));
      more.hidden = true;
      return;
    }
    if (mine !== runs) return; // a newer search started
    more.disabled = false;
    add(
      results,
      byTime(page.results, (r) => r.ts).map((r) =>
        lineItem(r, [
          lineMeta(r),
          h("span", { class: "text" }, r.snippet.map((part) => part.hit ? h("mark", { text: part.text }) : part.text)),
        ])
      ),
    );
    shown += page.results.length;
    nextBefore = page.nextBefore ?? null;
    more.hidden = nextBefore === null;
    status.textContent = shown
      ? `${shown} ${shown === 1 ? "match" : "matches"}${nextBefore ? " so far" : ""}, newest first.`
      : "No matches.";
  }

  return {
    el,
    heading,
    title: "Logs · Fleet",
    async show(params) {
      await fill(params);
      await run();
    },
    refresh: () => Promise.resolve(), // a search stays as it was run
    notice(error) {
      put(status, errorBox(error));
    },
  };
}
