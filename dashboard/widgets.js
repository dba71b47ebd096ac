/**
 * Small pieces of page shared by the views: times, badges, tables, selects, error boxes.
 * @module
 */
import { h } from "./dom.js";
import { ApiError } from "./api.js";
import { canaryBadge } from "./canary.js";
import {
  absolute,
  ago,
  CERTIFICATE_KIND,
  certificateLabel,
  certificateText,
  cronOutcomeLabel,
  maintenanceText,
  outcomeLabel,
  processSummary,
  stampText,
  STATE_GLYPH,
  STATE_LABEL,
} from "./format.js";

const dash = () => h("span", { class: "muted", text: "—" });

/** A `<time>` showing how long ago `iso` was; hovering shows the exact time (see {@link installTooltips}). */
export function when(iso, now = Date.now()) {
  if (!iso) return dash();
  const ms = Date.parse(iso);
  if (Number.isNaN(ms)) return h("span", { text: iso });
  return h("time", { datetime: iso }, ago(ms, now));
}

/** Shows the exact time of a `<time>` as its tooltip, made when the pointer gets there (not for every cell). */
export function installTooltips() {
  document.addEventListener("mouseover", (event) => {
    const time = event.target instanceof Element ? event.target.closest("time[datetime]:not([title])") : null;
    const ms = time ? Date.parse(time.getAttribute("datetime") ?? "") : NaN;
    if (time && !Number.isNaN(ms)) time.setAttribute("title", absolute().format(ms));
  });
}

/** A `<time>` with the date and time of `iso` (for log lines). */
export function stamp(iso) {
  const ms = Date.parse(iso);
  if (Number.isNaN(ms)) return h("span", { class: "ts", text: iso ?? "" });
  return h("time", { class: "ts", datetime: iso }, stampText(ms));
}

/** An app's state as a badge; a server's (`server`) says "fresh" rather than "healthy": its apps may not be. */
export const stateBadge = (state, server = false) =>
  h(
    "span",
    { class: `badge state-${state}` },
    STATE_GLYPH[state] ? `${STATE_GLYPH[state]} ` : "",
    server && state === "fresh" ? "fresh" : STATE_LABEL[state],
  );

/**
 * An app's health check as a badge, its process status when it is not "running", and badges while in
 * maintenance and for its canary release.
 */
export function healthBadge(app) {
  const label = app.healthy === null ? "unknown" : app.healthy ? "healthy" : "unhealthy";
  const kind = app.healthy === null ? "neutral" : app.healthy ? "ok" : "bad";
  return [
    h("span", { class: `badge ${kind}`, text: label }),
    app.status && app.status !== "running" ? h("span", { class: "muted small", text: ` ${app.status}` }) : null,
    app.maintenance ? [" ", maintenanceBadge(app.maintenance)] : null,
    app.canary ? [" ", canaryBadge(app.canary)] : null,
  ];
}

/** An app in maintenance (its status.json's `maintenance`) as a badge; the details as its tooltip. */
export const maintenanceBadge = (m) =>
  h("span", { class: `badge maintenance ${m.error ? "bad" : "warn"}`, title: maintenanceText(m), text: "maintenance" });

/** "fresh" (muted), or the app's state as a badge. */
export const freshness = (app) =>
  app.freshness === "fresh" ? h("span", { class: "muted", text: "fresh" }) : stateBadge(app.freshness);

/** The cells of an app's row that the overview and the server page share: health to last check. */
export const appCells = (app, now) => [
  h("td", {}, healthBadge(app)),
  h("td", {}, freshness(app)),
  h("td", {}, code(app.version, app.commit ?? undefined)),
  h("td", {}, when(app.deployed, now)),
  h("td", {}, when(app.lastHealthCheck, now)),
];

/** A deploy outcome as a badge. */
export function outcomeBadge(outcome) {
  const [label, kind] = outcomeLabel(outcome);
  return h("span", { class: `badge ${kind}`, text: label });
}

/** A cron run's outcome as a badge (failed and timeout red); its reason, if any, as the tooltip. */
export function cronOutcomeBadge(run) {
  const [label, kind] = cronOutcomeLabel(run.outcome);
  return h("span", { class: `badge ${kind}`, title: run.reason ?? undefined, text: label });
}

/** An app's processes in a few words (see format.js's processSummary), red when one does not run; else a dash. */
export function processesCell(app) {
  const summary = processSummary(app.processes);
  if (!summary) return dash();
  return h("span", {
    class: `processes-summary ${summary.bad ? "bad" : "ok"}`,
    title: summary.title,
    text: summary.text,
  });
}

/** An app's certificate as a badge (see {@link certificateLabel}), its details as the tooltip. */
export function certificateBadge(cert) {
  if (!cert) return dash();
  return h("span", {
    class: `badge cert ${CERTIFICATE_KIND[cert.state] ?? "neutral"}`,
    title: certificateText(cert),
    text: certificateLabel(cert),
  });
}

/** `text` as code (a version, a release), or a dash. */
export const code = (text, title) => text ? h("code", { title, text }) : dash();

/** An error box: the message and the API's hint, and a "Try again" button when `retry` is given. */
export function errorBox(error, retry) {
  const message = error instanceof Error ? error.message : String(error);
  return h(
    "div",
    { class: "error", role: "alert" },
    h("p", { text: message }),
    error instanceof ApiError && error.hint ? h("p", { class: "hint", text: error.hint }) : null,
    retry ? h("button", { type: "button", onclick: retry, text: "Try again" }) : null,
  );
}

/** A table: `head` are column names; rows are `<tr>`s (or `body`, a `<tbody>` to fill later). */
export function table(head, rows, className = "", body = h("tbody", {}, rows)) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: className },
      h("thead", {}, h("tr", {}, head.map((name) => h("th", { scope: "col", text: name })))),
      body,
    ),
  );
}

/** A `<select>` of `values` after an "any" option, `selected` chosen (kept even when unknown). */
export function select(name, label, anyText, values, selected) {
  const list = selected && !values.includes(selected) ? [...values, selected] : values;
  return h(
    "label",
    { class: "field" },
    h("span", { text: label }),
    h(
      "select",
      { name },
      h("option", { value: "", text: anyText }),
      list.map((value) => h("option", { value, selected: value === selected, text: value })),
    ),
  );
}

/** The server and app filters of the search and deployments views. */
export const nameFilters = (names, server, app) => [
  select("server", "Server", "every server", names.servers, server),
  select("app", "App", "every app", names.apps, app),
];

/**
 * Text as data (see fleet.js's attention items) made into nodes: strings as text, `{href, text}`
 * as a link, `{time}` as {@link when}, `{muted: parts}` as a muted span.
 * @param {any} part
 * @param {number} [now]
 * @returns {any}
 */
export function rich(part, now) {
  if (part === null || typeof part !== "object") return part;
  if (Array.isArray(part)) return part.map((p) => rich(p, now));
  if ("href" in part) return h("a", { href: part.href, text: part.text });
  if ("time" in part) return when(part.time, now);
  return h("span", { class: "muted" }, rich(part.muted, now));
}

/**
 * Attention items (fleet.js's `attentionItems`, `ruleItems`) as a list, each line marked by its kind.
 * @param {{ kind: string, parts: any[] }[]} items
 * @param {number} [now]
 */
export function stateList(items, now) {
  return h(
    "ul",
    { class: "plain" },
    items.map(({ kind, parts }) => h("li", { class: `state-line state-${kind}` }, rich(parts, now))),
  );
}
