/**
 * One server (`#/server/NAME[?app=&since=&range=]`): its metrics charts and those of one app (`app`,
 * else its first) over `range` (chart_views.js), its apps and their canary releases, each app's
 * processes and the last run of each of its cron jobs, deployments, error lines (optionally of one
 * app since a deploy), Netdata, and its alert rules firing or pending.
 * @module
 */
import { h, pageTitle, put } from "./dom.js";
import { api, ApiError, orLogin, Unauthorized } from "./api.js";
import { rangeOf } from "./charts.js";
import { appCharts, rangePicker, serverCharts } from "./chart_views.js";
import { bytes, duration } from "./format.js";
import { errorLinesFor, lastDeploy, ruleItems } from "./fleet.js";
import { lineItem, lineMeta } from "./lines.js";
import { httpUrl, route, serverHref } from "./routes.js";
import { DEPLOYMENT_COLUMNS, deploymentRows } from "./deployments.js";
import { canaryPanel } from "./canary.js";
import {
  appCells,
  certificateBadge,
  code,
  cronOutcomeBadge,
  errorBox,
  outcomeBadge,
  processesCell,
  stateBadge,
  stateList,
  table,
  when,
} from "./widgets.js";

/** The server view of `name`. */
export function serverView(name) {
  const heading = h("h1", { tabindex: "-1", text: name });
  const badge = h("span");
  const facts = h("dl", { class: "facts" });
  const problem = h("div");
  const apps = h("div");
  const canaries = h("div");
  const work = h("div");
  const deploys = h("div");
  const errorsTitle = h("h2", { text: "Recent errors" });
  const errorsNote = h("p", { class: "muted small" });
  const errors = h("div");
  const netdata = h("div");
  const notices = h("div");
  const ranges = h("div");
  const serverBox = h("div", { class: "muted", text: "Loading charts…" });
  const appTitle = h("h2", { text: "App metrics" });
  const appPicker = h("nav", { class: "app-picker", "aria-label": "App" });
  const appBox = h("div");
  const el = h(
    "div",
    { class: "view server" },
    h("p", { class: "crumbs" }, h("a", { href: "#/", text: "← Overview" })),
    h("div", { class: "view-head" }, heading, badge),
    notices,
    facts,
    problem,
    h(
      "section",
      { class: "panel metrics", dataset: { charts: "server" } },
      h("div", { class: "panel-head" }, h("h2", { text: "Server metrics" }), ranges),
      serverBox,
    ),
    h(
      "section",
      { class: "panel metrics", dataset: { charts: "app" } },
      h("div", { class: "panel-head" }, appTitle, appPicker),
      appBox,
    ),
    h("section", { class: "panel" }, h("h2", { text: "Apps" }), apps),
    canaries,
    h("section", { class: "panel work" }, h("h2", { text: "Processes and cron jobs" }), work),
    h("section", { class: "panel" }, h("h2", { text: "Recent deployments" }), deploys),
    h("section", { class: "panel" }, errorsTitle, errorsNote, errors),
    netdata,
  );
  let detail = null;
  let filter = { app: "", since: "" };
  let range = rangeOf(null);
  /** What the charts on screen show: `range app`; and how many times they were asked for. */
  let charted = "";
  let chartRenders = 0;
  let netdataUrl = null;

  /**
   * The server's and the chosen app's charts over `range` (a failure shows in its panel only), once
   * their answers arrive: not awaited by the page, and an older answer never replaces a newer one.
   */
  function drawCharts() {
    renderCharts().catch(orLogin);
  }

  async function renderCharts() {
    const generation = ++chartRenders;
    const app = filter.app || detail?.apps[0]?.app || "";
    const link = (params) => serverHref(name, { app: filter.app, since: filter.since, range, ...params });
    put(ranges, rangePicker(range, (key) => link({ range: key })));
    put(appTitle, app ? `Metrics of ${app}` : "App metrics");
    put(
      appPicker,
      (detail?.apps ?? []).map((a) =>
        h("a", { href: link({ app: a.app, since: "" }), "aria-current": a.app === app ? "true" : null, text: a.app })
      ),
    );
    charted = `${range} ${app}`;
    const [server, appSeries] = await Promise.allSettled([
      api("/api/metrics/server", { server: name, range }),
      app ? api("/api/metrics/app", { server: name, app, range }) : Promise.resolve(null),
    ]);
    for (const result of [server, appSeries]) {
      if (result.status === "rejected" && result.reason instanceof Unauthorized) throw result.reason;
    }
    if (generation !== chartRenders) return;
    put(serverBox, server.status === "fulfilled" ? serverCharts(server.value) : errorBox(server.reason));
    serverBox.className = "";
    put(
      appBox,
      appSeries.status === "rejected"
        ? errorBox(appSeries.reason)
        : appSeries.value
        ? appCharts(appSeries.value)
        : h("p", { class: "muted", text: "No apps on this server." }),
    );
  }

  function renderErrors() {
    if (errors.querySelector(".line-item.open")) return; // keep an open context
    const lines = errorLinesFor(detail.errorLines, filter);
    if (filter.app || filter.since) {
      put(errorsTitle, `Errors of ${filter.app || "every app"}` + (filter.since ? " after the deploy" : ""));
      put(
        errorsNote,
        filter.since ? ["error.log lines since ", when(filter.since), " (from this server's 50 newest). "] : "",
        h("a", { href: serverHref(name), text: "Show every app's errors" }),
        " · ",
        h("a", {
          href: route("/search", {
            server: name,
            app: filter.app,
            file: "error.log",
            since: filter.since,
            range: filter.since ? "custom" : "",
          }),
          text: "search its error.log",
        }),
      );
    } else {
      errorsTitle.textContent = "Recent errors";
      errorsNote.textContent =
        "The 50 newest error.log lines of this server, newest first. Click a line for its context.";
    }
    put(
      errors,
      lines.length
        ? h(
          "ol",
          { class: "lines plain" },
          lines.map((line) => lineItem(line, [lineMeta(line, false), h("span", { class: "text", text: line.text })])),
        )
        : h("p", { class: "muted", text: "No error lines." }),
    );
  }

  function render() {
    const d = detail;
    pageTitle(`${d.name} · Fleet`);
    put(badge, stateBadge(d.state, true));
    put(
      facts,
      ...[
        ["Host", d.host],
        ["Last contact", when(d.lastOk)],
        ["Last attempt", when(d.lastAttempt)],
        ["Last pull", `${duration(d.lastDurationMs)}, ${bytes(d.lastBytes)}`],
        ["Pulls", `${d.pulls} (${d.errors} failed)`],
      ].map(([term, value]) => h("div", {}, h("dt", { text: term }), h("dd", {}, value))),
    );
    put(
      problem,
      d.lastError && d.state === "unreachable"
        ? h("div", { class: "error", role: "alert" }, h("p", { text: `The last pull failed: ${d.lastError}` }))
        : "",
      d.limits?.length
        ? h(
          "div",
          { class: "error", role: "status" },
          h("p", { text: "The last pull went over the collector's limits:" }),
          h("ul", {}, d.limits.map((line) => h("li", { text: line }))),
        )
        : "",
      d.rules?.length
        ? h(
          "section",
          { class: "panel attention", dataset: { rules: "" } },
          h("h2", { text: "Alert rules firing or pending" }),
          stateList(ruleItems(d.rules)),
        )
        : "",
    );
    put(
      apps,
      d.apps.length
        ? table(
          [
            "App",
            "Health",
            "Freshness",
            "Version",
            "Deployed",
            "Last check",
            "Last deploy",
            "Processes",
            "Certificate",
          ],
          d.apps.map((app) => appRow(d.name, app)),
        )
        : h("p", { class: "muted", text: "No apps (no status.json) on this server." }),
    );
    put(canaries, canaryPanel(d.apps, when));
    const working = d.apps.filter((app) => app.processes?.list?.length || app.cron?.length);
    put(
      work,
      working.length
        ? working.map((app) => appWork(app))
        : h("p", { class: "muted", text: "No app lists its processes or has run a cron job." }),
    );
    put(
      deploys,
      d.deployments.length
        ? [
          table(DEPLOYMENT_COLUMNS.filter((c) => c !== "Server"), deploymentRows(d.deployments, false)),
          h(
            "p",
            { class: "small" },
            h("a", { href: route("/deployments", { server: d.name }), text: "All deployments of this server →" }),
          ),
        ]
        : h("p", { class: "muted", text: "No deployments in deploy.log yet." }),
    );
    renderErrors();
    renderNetdata(d.netdata);
  }

  /** The Netdata iframe, made once (a refresh must not reload it). */
  function renderNetdata(url) {
    if (url === netdataUrl) return;
    netdataUrl = url;
    const safe = httpUrl(url);
    if (!safe) return put(netdata);
    const link = () => h("a", { href: safe, target: "_blank", rel: "noopener noreferrer", text: "open Netdata" });
    put(
      netdata,
      h(
        "section",
        { class: "panel netdata" },
        h("div", { class: "panel-head" }, h("h2", { text: "Netdata" }), h("span", { class: "small" }, link(), " ↗")),
        h(
          "p",
          { class: "muted small note" },
          "If the charts stay blank, Netdata refuses to be framed (X-Frame-Options or frame-ancestors); ",
          link(),
          " in its own tab instead.",
        ),
        h("iframe", {
          src: safe,
          title: `Netdata of ${name}`,
          loading: "lazy",
          referrerpolicy: "no-referrer",
          sandbox: "allow-scripts allow-same-origin allow-popups",
        }),
      ),
    );
  }

  async function refresh() {
    try {
      detail = await api(`/api/servers/${encodeURIComponent(name)}`);
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        detail = null;
        put(
          el,
          h("div", { class: "view-head" }, heading),
          errorBox(error),
          h("p", {}, h("a", { href: "#/", text: "Back to the overview" })),
        );
        return;
      }
      throw error;
    }
    put(notices);
    render();
    drawCharts();
  }

  return {
    el,
    heading,
    title: `${name} · Fleet`,
    async show(params) {
      filter = { app: params.get("app") ?? "", since: params.get("since") ?? "" };
      range = rangeOf(params.get("range"));
      if (!detail) return await refresh();
      renderErrors();
      if (charted !== `${range} ${filter.app || detail.apps[0]?.app || ""}`) drawCharts();
    },
    refresh,
    notice(error) {
      put(notices, errorBox(error));
    },
  };
}

/** A row of the server's apps table; the app links to its deployments. */
function appRow(server, app) {
  const last = lastDeploy(app);
  return h(
    "tr",
    { class: `state-row state-${app.state}` },
    h(
      "td",
      { class: "app" },
      h("a", {
        href: route("/deployments", { server, app: app.app }),
        title: `Deployments of ${app.app}`,
        text: app.app,
      }),
    ),
    appCells(app),
    h("td", {}, last?.outcome ? [outcomeBadge(last.outcome), " ", when(last.at)] : "—"),
    h("td", { class: "processes" }, processesCell(app)),
    h(
      "td",
      { class: "cert" },
      certificateBadge(app.certificate),
      app.certificate?.lastError
        ? h("div", { class: "small cert-error", title: app.certificate.lastError, text: app.certificate.lastError })
        : null,
    ),
  );
}

/** An app's processes (as its status.json listed them) and the last run of each of its cron jobs. */
function appWork(app) {
  const list = app.processes?.list ?? [];
  const cron = app.cron ?? [];
  const number = (n) => (typeof n === "number" ? String(n) : "—");
  return h(
    "div",
    { class: "app-work", dataset: { app: app.app } },
    h("h3", { text: app.app }),
    list.length
      ? table(
        ["Process", "Instance", "Name", "State", "PID", "Restarts"],
        list.map((p) =>
          h(
            "tr",
            { class: p.up ? "up" : "down" },
            h("td", { text: p.type }),
            h("td", { text: number(p.instance) }),
            h("td", {}, code(p.name)),
            h("td", {}, h("span", { class: `badge ${p.up ? "ok" : "bad"}`, text: p.state })),
            h("td", { text: p.pid ? String(p.pid) : "—" }),
            h("td", { text: number(p.restarts) }),
          )
        ),
        "processes",
      )
      : h("p", { class: "muted small", text: "No processes listed in its status.json." }),
    app.processes?.omitted
      ? h("p", {
        class: "muted small",
        text: `and ${app.processes.omitted} more listed in its status.json, not kept (over the collector's limit)`,
      })
      : null,
    cron.length
      ? table(
        ["Cron job", "Last run", "Outcome", "Duration", "Exit code", "Release"],
        cron.map((run) =>
          h(
            "tr",
            { class: `cron-${["ok", "failed", "timeout", "skipped"].includes(run.outcome) ? run.outcome : "other"}` },
            h("td", { text: run.job }),
            h("td", {}, when(run.start ?? run.end)),
            h(
              "td",
              {},
              cronOutcomeBadge(run),
              run.reason ? h("div", { class: "small muted cron-reason", title: run.reason, text: run.reason }) : null,
            ),
            h("td", { text: duration(run.durationMs) }),
            h("td", { text: number(run.exitCode) }),
            h("td", {}, code(run.release)),
          )
        ),
        "cron",
      )
      : null,
  );
}
