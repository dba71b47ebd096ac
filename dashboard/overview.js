/**
 * The overview (`#/[?range=]`): counts, what needs attention, version skew, the what-runs-where
 * matrix, each app's requests over `range` as a sparkline (fetched apart: one request for all) and
 * every app. Filters (state buttons, text) hide rows without re-rendering; what changed since the
 * last render is marked for a moment.
 * @module
 */
import { h, put } from "./dom.js";
import { api, orLogin, rememberFleet, Unauthorized } from "./api.js";
import { rangeOf } from "./charts.js";
import { rangePicker, sparklineTable } from "./chart_views.js";
import { STATE_GLYPH, STATE_LABEL } from "./format.js";
import {
  appKey,
  appText,
  attentionItems,
  byUrgency,
  changes,
  filterWords,
  placed,
  rowShown,
  serverStates,
  serverText,
  versionSkew,
} from "./fleet.js";
import { route, serverHref } from "./routes.js";
import { appCells, certificateBadge, errorBox, processesCell, stateBadge, stateList, table, when } from "./widgets.js";

/** At most this many lines of "Needs attention". */
const ATTENTION_LINES = 12;
/** Above this many apps, the first render builds "Every app" after the first screen is painted. */
const LATE_TABLE = 200;

/** The overview view. */
export function overviewView() {
  const heading = h("h1", { tabindex: "-1", text: "Fleet" });
  const summary = h("p", { class: "summary" });
  const updated = h("p", { class: "muted small" });
  const counts = h("div", { class: "counts", role: "group", "aria-label": "Apps by state: click to filter" });
  const filter = h("input", {
    type: "search",
    class: "filter",
    placeholder: "Filter servers, apps, versions",
    "aria-label": "Filter servers, apps and versions",
    oninput: () => applyFilter(),
  });
  const attention = h("div");
  const skew = h("div");
  const matrix = h("div");
  const everything = h("div");
  const notices = h("div");
  const sparks = h("div", { class: "muted", text: "Loading request metrics…" });
  const sparkRanges = h("div");
  const el = h(
    "div",
    { class: "view overview" },
    h("div", { class: "view-head" }, heading, updated),
    summary,
    notices,
    counts,
    attention,
    skew,
    h(
      "section",
      { class: "panel" },
      h("div", { class: "panel-head" }, h("h2", { text: "What runs where" }), filter),
      matrix,
    ),
    h(
      "section",
      { class: "panel spark-panel" },
      h("div", { class: "panel-head" }, h("h2", { text: "Requests per app" }), sparkRanges),
      sparks,
    ),
    h("section", { class: "panel every" }, h("h2", { text: "Every app" }), everything),
  );
  /** @type {string | null} */
  let state = null;
  /** @type {{ el: HTMLElement, text: string, states: Set<string> }[]} */
  let rows = [];
  /** Each app's state and version at the last render, to mark what changed. */
  let before = null;
  let renders = 0;
  let range = rangeOf(null);
  let sparkRenders = 0;

  /**
   * The sparklines over `range` from `answer` (one request for all; a failure shows in their panel
   * only): not awaited by the page, and an older answer never replaces a newer one. The first
   * render records its times on <html> (read by the tests and `deno task bench fleet`):
   * `data-sparks-ms` to build their DOM, `data-sparks-render-ms` from then to painted (layout and
   * paint included), `data-sparks-paint-ms` from navigation start to painted.
   */
  async function renderSparks(answer = api("/api/metrics/overview", { range })) {
    const generation = ++sparkRenders;
    put(sparkRanges, rangePicker(range, (key) => route("/", { range: key })));
    let data;
    try {
      data = await answer;
    } catch (error) {
      if (error instanceof Unauthorized) throw error;
      if (generation === sparkRenders) put(sparks, errorBox(error));
      return;
    }
    if (generation !== sparkRenders) return;
    const start = performance.now();
    put(sparks, sparklineTable(data, range));
    sparks.className = "";
    const root = document.documentElement;
    if (!root.dataset.sparksMs) {
      root.dataset.sparksMs = (performance.now() - start).toFixed(1);
      requestAnimationFrame(() =>
        setTimeout(() => {
          root.dataset.sparksRenderMs = (performance.now() - start).toFixed(1);
          root.dataset.sparksPaintMs = performance.now().toFixed(1);
        })
      );
    }
  }

  function applyFilter() {
    const words = filterWords(filter.value);
    for (const row of rows) row.el.hidden = !rowShown(row, state, words);
    for (const button of counts.querySelectorAll("button")) {
      button.setAttribute("aria-pressed", String(button.dataset.state === state));
    }
  }

  /** @param {any} data the /api/fleet answer */
  function render(data) {
    const now = Date.parse(data.generatedAt) || Date.now();
    const servers = data.servers;
    const { all, appNames } = placed(servers);
    put(notices);
    put(
      updated,
      "Updated ",
      when(data.generatedAt),
      ` · ${count(servers.length, "server")}, ${count(all.length, "app")}`,
    );

    const c = data.counts;
    const problems = c.unhealthy + c.stale + c.unreachable;
    const rules = data.rules ?? [];
    const firing = rules.filter((rule) => rule.state === "firing").length;
    summary.className = `summary ${problems || firing ? "bad" : "ok"}`;
    summary.textContent = !servers.length
      ? "No servers yet: add one with `deploy-paradigm fleet add <name> <user@host>`."
      : (problems
        ? `${problems} of ${count(all.length, "app")} need attention.`
        : `All ${count(all.length, "app")} on ${count(servers.length, "server")} are healthy.`) +
        (firing ? ` ${firing === 1 ? "1 alert rule is" : `${firing} alert rules are`} firing.` : "");
    put(
      counts,
      ...["fresh", "unhealthy", "stale", "unreachable"].map((key) =>
        h(
          "button",
          {
            type: "button",
            class: `count state-${key}`,
            dataset: { state: key },
            "aria-pressed": "false",
            onclick: () => {
              state = state === key ? null : key;
              applyFilter();
            },
          },
          h("span", { class: "n", text: c[key === "fresh" ? "healthy" : key] }),
          h("span", { class: "label", text: STATE_LABEL[key] }),
        )
      ),
    );
    put(attention, attentionPanel(attentionItems(servers, rules), now));
    const { skewed, majority } = versionSkew(all);
    put(skew, skewPanel(skewed));
    const { snapshot, changed } = changes(before, all);
    before = snapshot;
    const isChanged = (server, app) => changed.has(appKey(server.name, app.app));

    // The matrix: servers × apps, each cell the version, coloured by state; skew outlined.
    rows = [];
    const matrixRows = servers.map((server) => {
      const byApp = new Map(server.apps.map((app) => [app.app, app]));
      const tr = h(
        "tr",
        {},
        h(
          "th",
          { scope: "row" },
          h("a", { href: serverHref(server.name), text: server.name }),
          server.state !== "fresh" ? [" ", stateBadge(server.state, true)] : null,
        ),
        appNames.map((name) => matrixCell(server, name, byApp.get(name), majority, isChanged)),
      );
      rows.push({ el: tr, text: serverText(server), states: serverStates(server) });
      return tr;
    });
    put(matrix, servers.length ? matrixTable(appNames, skewed, matrixRows) : noServers());

    // Every app, most urgent first. It starts below the fold: on the first render it is built
    // after the first screen is painted, so a large fleet shows its counts and matrix sooner.
    const build = () => {
      const appRows = byUrgency(all).map((placedApp) => {
        const tr = appRow(placedApp, now, isChanged(placedApp.server, placedApp.app));
        rows.push({ el: tr, text: appText(placedApp), states: new Set([placedApp.app.state]) });
        return tr;
      });
      put(
        everything,
        all.length
          ? table(
            ["Server", "App", "Health", "Freshness", "Version", "Deployed", "Last check", "Processes", "Certificate"],
            appRows,
            "apps",
          )
          : h("p", { class: "muted", text: "No apps yet." }),
      );
      applyFilter();
    };
    const generation = ++renders;
    if (generation > 1 || all.length <= LATE_TABLE) return build();
    put(everything, h("p", { class: "muted", text: `Listing ${all.length} apps…` }));
    applyFilter();
    // After the next frame, and one task after navigate()'s paint marker.
    requestAnimationFrame(() =>
      setTimeout(() =>
        setTimeout(() => {
          if (generation !== renders) return; // a newer render built its own
          build();
          document.documentElement.dataset.tableMs = performance.now().toFixed(1);
        })
      )
    );
  }

  async function refresh() {
    // Asked for at once; drawn after the fleet's overview, which shows first.
    const sparkAnswer = api("/api/metrics/overview", { range });
    sparkAnswer.catch(() => {}); // renderSparks handles it, unless /api/fleet fails first
    const data = await api("/api/fleet");
    performance.mark("fleet-data");
    rememberFleet(data);
    render(data);
    performance.mark("fleet-rendered");
    renderSparks(sparkAnswer).catch(orLogin);
  }

  return {
    el,
    heading,
    title: "Fleet",
    async show(params) {
      const wanted = rangeOf(params?.get("range"));
      const changed = wanted !== range;
      range = wanted;
      if (!before) await refresh();
      else if (changed) renderSparks().catch(orLogin);
    },
    refresh,
    notice(error) {
      put(notices, errorBox(error));
    },
  };
}

/** `1 server`, `2 servers`. */
const count = (n, noun) => `${n} ${noun}${n === 1 ? "" : "s"}`;

const noServers = () => h("p", { class: "muted", text: "No server has been pulled yet." });

/** "Needs attention" (nothing when nothing does): the first lines of `items`, and how many more. */
function attentionPanel(items, now) {
  if (!items.length) return "";
  const shown = items.slice(0, ATTENTION_LINES);
  return h(
    "section",
    { class: "panel attention" },
    h("h2", { text: "Needs attention" }),
    stateList(shown, now),
    items.length > shown.length
      ? h("p", { class: "muted small", text: `and ${items.length - shown.length} more: see the tables below` })
      : null,
  );
}

/** "Version skew" (nothing without skew): each skewed app's versions and where they run. */
function skewPanel(skewed) {
  if (!skewed.length) return "";
  return h(
    "section",
    { class: "panel skew" },
    h("h2", { text: "Version skew" }),
    h(
      "ul",
      { class: "plain" },
      skewed.map(([name, sorted]) =>
        h(
          "li",
          {},
          h("strong", { text: name }),
          " runs ",
          sorted.map(([version, on], i) => [
            i ? ", " : "",
            h("code", { text: version }),
            ` on ${on.length <= 4 ? on.join(", ") : `${on.length} servers`}`,
          ]),
        )
      ),
    ),
  );
}

/** The matrix's table: a column per app (skewed ones marked), `rows` a `<tr>` per server. */
function matrixTable(appNames, skewed, rows) {
  const skewNames = new Set(skewed.map(([name]) => name));
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "matrix" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          h("th", { scope: "col", text: "Server" }),
          appNames.map((name) =>
            h(
              "th",
              { scope: "col", class: skewNames.has(name) ? "skewed" : null },
              name,
              skewNames.has(name) ? h("span", { class: "glyph", title: "versions differ", text: " ≠" }) : null,
            )
          ),
        ),
      ),
      h("tbody", {}, rows),
    ),
  );
}

/** A matrix cell: the version of `app` (named `name`; absent: a dot), coloured by state, outlined when skewed. */
function matrixCell(server, name, app, majority, isChanged) {
  if (!app) return h("td", { class: "cell absent", text: "·", title: `${name} does not run on ${server.name}` });
  const most = majority.get(name);
  const odd = majority.has(name) && app.version && app.version !== most;
  return h(
    "td",
    {
      class: `cell state-${app.state}${odd ? " skewed" : ""}${isChanged(server, app) ? " changed" : ""}`,
      title: `${name} on ${server.name}: ${app.version ?? "no version"} · ${STATE_LABEL[app.state]}` +
        (odd ? (most ? ` (most servers run ${most})` : " (versions differ)") : ""),
    },
    STATE_GLYPH[app.state] ? h("span", { class: "glyph", text: STATE_GLYPH[app.state] }) : null,
    app.version ?? "—",
  );
}

/** A row of "Every app". */
function appRow({ server, app }, now, changed) {
  return h(
    "tr",
    { class: `state-row state-${app.state}${changed ? " changed" : ""}` },
    h("td", {}, h("a", { href: serverHref(server.name), text: server.name })),
    h("td", { class: "app", text: app.app }),
    appCells(app, now),
    h("td", { class: "processes" }, processesCell(app)),
    h("td", {}, certificateBadge(app.certificate)),
  );
}
