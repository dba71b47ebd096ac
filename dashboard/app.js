/**
 * The fleet dashboard: plain DOM, no framework, no build step. Hash routes:
 *
 * - `#/`: the overview (counts, what needs attention, the what-runs-where matrix, every app);
 * - `#/server/NAME[?app=&since=]`: one server (its apps, deployments, error lines, Netdata);
 * - `#/search?q=&server=&app=&file=&range=&since=&until=`: log search;
 * - `#/deployments?server=&app=`: deployment history.
 *
 * Data comes from the fleet API (/api/...); `cycle` events on /api/events refresh the view on
 * screen in place. When the API wants a token, a login form keeps it in sessionStorage.
 *
 * Safety: every value from the API reaches the page as text (text nodes, textContent, attribute
 * values); no HTML is ever parsed from data, and links are built here (`#/…`) or checked to be
 * http(s) (Netdata).
 * @module
 */

performance.mark("app-start");
const TOKEN_KEY = "fleet-monitor-token";
/** App states, most urgent first (and where a certificate at risk ranks in "Needs attention"). */
const SEVERITY = { unreachable: 0, unhealthy: 1, certificate: 1, stale: 2, fresh: 3 };
const STATE_LABEL = { fresh: "healthy", unhealthy: "unhealthy", stale: "stale", unreachable: "unreachable" };
const STATE_GLYPH = { fresh: "", unhealthy: "✕", stale: "◷", unreachable: "⊘" };
const OUTCOME = {
  success: ["success", "ok"],
  failed: ["failed", "bad"],
  rolled_back: ["rolled back", "warn"],
  rollback_failed: ["rollback failed", "bad"],
  cancelled: ["cancelled", "neutral"],
  refused: ["refused", "neutral"],
};
const RANGES = { "15m": 15 * 60_000, "1h": 3_600_000, "24h": 86_400_000, "7d": 7 * 86_400_000 };
const PAGE_SIZE = 50;
/** A log line that starts with its own timestamp (as the collector recognizes them). */
const OWN_TIME = /^\[?\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d/;

const main = /** @type {HTMLElement} */ (document.getElementById("main"));
const live = /** @type {HTMLElement} */ (document.getElementById("live"));
const logout = /** @type {HTMLButtonElement} */ (document.getElementById("logout"));
const quick = /** @type {HTMLFormElement} */ (document.getElementById("quick-search"));

// ---------------------------------------------------------------------------------------------
// DOM helpers: data only ever becomes text nodes or attribute values.

/**
 * Creates an element. `props`: `class`, `text`, `on<event>` (a function), `dataset`, or any
 * attribute (true → empty value; null/undefined/false → not set). Children: nodes or text.
 * @param {string} tag
 * @param {Record<string, any>} [props]
 * @param {...any} children
 * @returns {HTMLElement}
 */
function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const key in props) {
    const value = props[key];
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = String(value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  add(el, children);
  return el;
}

/** Appends nodes and text (as text nodes) to `el`, nested arrays flattened; null, undefined, false and "" skipped. */
function add(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false || child === "") continue;
    if (Array.isArray(child)) add(el, child);
    else el.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces the children of `el` (as {@link add} takes them). */
function put(el, ...children) {
  el.replaceChildren();
  add(el, children);
}

/** A hash link: `#/path?k=v`, empty values left out. */
function route(path, params = {}) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) if (value) query.set(key, String(value));
  const text = query.toString();
  return `#${path}${text ? `?${text}` : ""}`;
}

const enc = encodeURIComponent;
const serverHref = (name, params) => route(`/server/${enc(name)}`, params);

// ---------------------------------------------------------------------------------------------
// Formatting.

/** Intl formatters, made on first use (making one costs milliseconds). */
const formats = {};
const absolute =
  () => (formats.absolute ??= new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" }));
const clock = () => (formats.clock ??= new Intl.DateTimeFormat(undefined, {
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
}));

/** "3 min ago" (or "in 3 min") for a time in ms. */
function ago(ms, now = Date.now()) {
  const seconds = Math.round((ms - now) / 1000);
  const abs = Math.abs(seconds);
  if (abs < 10) return "just now";
  const text = abs < 60
    ? `${abs} s`
    : abs < 3600
    ? `${Math.round(abs / 60)} min`
    : abs < 86_400
    ? `${Math.round(abs / 3600)} h`
    : `${Math.round(abs / 86_400)} d`;
  return seconds < 0 ? `${text} ago` : `in ${text}`;
}

/** A `<time>` showing how long ago `iso` was; hovering shows the exact time (see the listener below). */
function when(iso, now = Date.now()) {
  if (!iso) return h("span", { class: "muted", text: "—" });
  const ms = Date.parse(iso);
  if (Number.isNaN(ms)) return h("span", { text: iso });
  return h("time", { datetime: iso }, ago(ms, now));
}

// The exact time of a `<time>` as its tooltip, made when the pointer gets there (not for every cell).
document.addEventListener("mouseover", (event) => {
  const time = event.target instanceof Element ? event.target.closest("time[datetime]:not([title])") : null;
  const ms = time ? Date.parse(time.getAttribute("datetime") ?? "") : NaN;
  if (time && !Number.isNaN(ms)) time.setAttribute("title", absolute().format(ms));
});

/** A `<time>` with the date and time of `iso` (for log lines). */
function stamp(iso) {
  const ms = Date.parse(iso);
  if (Number.isNaN(ms)) return h("span", { class: "ts", text: iso ?? "" });
  const date = new Date(ms);
  const today = new Date().toDateString() === date.toDateString();
  return h("time", { class: "ts", datetime: iso }, today ? clock().format(ms) : absolute().format(ms));
}

function duration(ms) {
  if (typeof ms !== "number") return "—";
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
}

function bytes(n) {
  if (typeof n !== "number") return "—";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

/** An app's state as a badge; a server's (`server`) says "fresh" rather than "healthy": its apps may not be. */
const stateBadge = (state, server = false) =>
  h(
    "span",
    { class: `badge state-${state}` },
    STATE_GLYPH[state] ? `${STATE_GLYPH[state]} ` : "",
    server && state === "fresh" ? "fresh" : STATE_LABEL[state],
  );

function healthBadge(app) {
  const label = app.healthy === null ? "unknown" : app.healthy ? "healthy" : "unhealthy";
  const kind = app.healthy === null ? "neutral" : app.healthy ? "ok" : "bad";
  return [
    h("span", { class: `badge ${kind}`, text: label }),
    app.status && app.status !== "running" ? h("span", { class: "muted small", text: ` ${app.status}` }) : null,
  ];
}

function freshness(app) {
  return app.freshness === "fresh" ? h("span", { class: "muted", text: "fresh" }) : stateBadge(app.freshness);
}

function outcomeBadge(outcome) {
  const [label, kind] = OUTCOME[outcome] ?? [outcome, "neutral"];
  return h("span", { class: `badge ${kind}`, text: label });
}

/** Certificate states (see the API's CertificateView) as badge kinds: red when expiring, expired or failed. */
const CERTIFICATE_KIND = { valid: "ok", expiring: "bad", expired: "bad", error: "bad", pending: "neutral" };

/** A certificate in one line: names, issuer, expiry, last error. */
function certificateText(cert) {
  return [
    Array.isArray(cert.names) ? cert.names.join(", ") : "",
    cert.issuer,
    cert.notAfter ? `valid until ${String(cert.notAfter).slice(0, 10)}` : "no certificate yet",
    cert.lastError ? `last error: ${cert.lastError}` : "",
  ].filter(Boolean).join(" · ");
}

/** An app's certificate as a badge: days left (`88 d`), `expired`, `failed` or `pending`; `!` after a failed renewal. */
function certificateBadge(cert) {
  if (!cert) return h("span", { class: "muted", text: "—" });
  const days = typeof cert.daysLeft === "number" ? cert.daysLeft : null;
  const label = cert.state === "expired"
    ? "expired"
    : days === null
    ? (cert.state === "error" ? "failed" : "pending")
    : `${days} d${cert.state === "error" ? " !" : ""}`;
  return h("span", {
    class: `badge cert ${CERTIFICATE_KIND[cert.state] ?? "neutral"}`,
    title: certificateText(cert),
    text: label,
  });
}

const code = (text, title) => text ? h("code", { title, text }) : h("span", { class: "muted", text: "—" });

// ---------------------------------------------------------------------------------------------
// The API.

class Unauthorized extends Error {}

class ApiError extends Error {
  /** @param {number} status @param {string} message @param {string} [hint] */
  constructor(status, message, hint) {
    super(message);
    this.status = status;
    this.hint = hint;
  }
}

/**
 * GETs an API path with the stored token; throws {@link Unauthorized} on 401 and
 * {@link ApiError} with the API's `{error, hint}` on other failures.
 * @param {string} path
 * @param {Record<string, unknown>} [params]
 */
async function api(path, params = {}) {
  const url = new URL(path, location.origin);
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, String(value));
  }
  const token = sessionStorage.getItem(TOKEN_KEY);
  let response;
  try {
    response = await fetch(url, { headers: token ? { authorization: `Bearer ${token}` } : {}, cache: "no-store" });
  } catch (error) {
    throw new ApiError(0, `the fleet monitor does not answer (${error instanceof Error ? error.message : error})`);
  }
  if (response.status === 401) throw new Unauthorized("token required");
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    throw new ApiError(response.status, body?.error ?? `${response.status} ${response.statusText}`, body?.hint);
  }
  if (!events) connectEvents();
  return body;
}

/** The last overview fetched: server and app names for the filters. */
let fleet = null;

async function fleetNames() {
  fleet ??= await api("/api/fleet");
  const servers = fleet.servers.map((s) => s.name);
  const apps = [...new Set(fleet.servers.flatMap((s) => s.apps.map((a) => a.app)))].sort();
  return { servers, apps };
}

/** A `<select>` of `values` after an "any" option, `selected` chosen (kept even when unknown). */
function select(name, label, anyText, values, selected) {
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

// ---------------------------------------------------------------------------------------------
// Live updates.

/** @type {EventSource | null} */
let events = null;

/** Opens the event stream (`?token=`: EventSource cannot send headers); refreshes the view on each cycle. */
function connectEvents() {
  events?.close();
  const token = sessionStorage.getItem(TOKEN_KEY);
  const source = new EventSource(`/api/events${token ? `?token=${enc(token)}` : ""}`);
  events = source;
  let dropped = false;
  setLive("connecting", "connecting…");
  source.addEventListener("open", () => {
    setLive("live", "live");
    if (dropped) refresh(); // cycles may have been missed
    dropped = false;
  });
  source.addEventListener("error", () => {
    dropped = true;
    if (source.readyState === EventSource.CLOSED) {
      setLive("off", "offline");
      retryEvents();
    } else setLive("connecting", "reconnecting…"); // EventSource retries by itself
  });
  source.addEventListener("cycle", (event) => {
    let summary = null;
    try {
      summary = JSON.parse(event.data);
    } catch { /* refresh anyway */ }
    const at = summary?.at ? Date.parse(summary.at) : Date.now();
    setLive("live", `live · ${clock().format(at)}`);
    refresh();
  });
}

/**
 * After the stream was refused (an HTTP error: EventSource gives up), tries a plain API call
 * every 10 s: it reopens the stream when it works, and asks for the token on a 401.
 */
function retryEvents() {
  events = null;
  setTimeout(async () => {
    if (events || main.dataset.ready === "login") return;
    try {
      await api("/api/fleet"); // reopens the stream
      refresh();
    } catch (error) {
      if (error instanceof Unauthorized) showLogin();
      else retryEvents();
    }
  }, 10_000);
}

function setLive(state, text) {
  live.dataset.state = state;
  live.textContent = text;
  live.title = state === "live" ? "Updates arrive after every collector cycle" : "";
}

let refreshing = null;
let refreshAgain = false;

/** Refreshes the view on screen (one at a time; a cycle during a refresh runs one more). */
async function refresh() {
  if (refreshing) {
    refreshAgain = true;
    return;
  }
  refreshing = (async () => {
    do {
      refreshAgain = false;
      fleet = null;
      const view = current?.view;
      try {
        await view?.refresh?.();
      } catch (error) {
        if (error instanceof Unauthorized) showLogin();
        else view?.notice?.(error);
      }
    } while (refreshAgain);
  })();
  await refreshing;
  refreshing = null;
}

// ---------------------------------------------------------------------------------------------
// Views. Each: { el, heading, show(params), refresh(), notice(error) }.

/** An error box: the message and the API's hint. */
function errorBox(error, retry) {
  const message = error instanceof Error ? error.message : String(error);
  return h(
    "div",
    { class: "error", role: "alert" },
    h("p", { text: message }),
    error instanceof ApiError && error.hint ? h("p", { class: "hint", text: error.hint }) : null,
    retry ? h("button", { type: "button", onclick: retry, text: "Try again" }) : null,
  );
}

/** A table: `head` are column names; rows are `<tr>`s. */
function table(head, rows, className = "") {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: className },
      h("thead", {}, h("tr", {}, head.map((name) => h("th", { scope: "col", text: name })))),
      h("tbody", {}, rows),
    ),
  );
}

/**
 * The overview: counts, what needs attention, version skew, the what-runs-where matrix and every
 * app. Filters (state buttons, text) hide rows without re-rendering.
 */
function overviewView() {
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
    h("section", { class: "panel every" }, h("h2", { text: "Every app" }), everything),
  );
  /** @type {string | null} */
  let state = null;
  /** @type {{ el: HTMLElement, text: string, states: Set<string> }[]} */
  let rows = [];
  /** Each app's state and version at the last render, to mark what changed. */
  let before = null;
  let renders = 0;

  function applyFilter() {
    const words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    for (const row of rows) {
      row.el.hidden = (state !== null && !row.states.has(state)) || !words.every((word) => row.text.includes(word));
    }
    for (const button of counts.querySelectorAll("button")) {
      button.setAttribute("aria-pressed", String(button.dataset.state === state));
    }
  }

  /** @param {any} data the /api/fleet answer */
  function render(data) {
    const now = Date.parse(data.generatedAt) || Date.now();
    const servers = data.servers;
    const all = servers.flatMap((server) => server.apps.map((app) => ({ server, app })));
    const appNames = [...new Set(all.map(({ app }) => app.app))].sort();
    put(notices);
    put(updated, "Updated ", when(data.generatedAt), ` · ${servers.length} servers, ${all.length} apps`);

    const c = data.counts;
    const problems = c.unhealthy + c.stale + c.unreachable;
    summary.className = `summary ${problems ? "bad" : "ok"}`;
    summary.textContent = !servers.length
      ? "No servers yet: add one with `deploy-paradigm fleet add <name> <user@host>`."
      : problems
      ? `${problems} of ${all.length} apps need attention.`
      : `All ${all.length} apps on ${servers.length} servers are healthy.`;
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

    // What needs attention: unreachable and stale servers (with why), unhealthy apps.
    const items = [];
    for (const server of servers) {
      if (server.state === "unreachable") {
        items.push([
          "unreachable",
          h("a", { href: serverHref(server.name), text: server.name }),
          " unreachable: ",
          server.lastError ?? "no answer",
          h("span", { class: "muted" }, " · last contact ", when(server.lastOk, now)),
        ]);
      } else if (server.state === "stale") {
        items.push([
          "stale",
          h("a", { href: serverHref(server.name), text: server.name }),
          " stale: last contact ",
          when(server.lastOk, now),
        ]);
      }
      if (server.limits?.length) {
        items.push([
          "stale",
          h("a", { href: serverHref(server.name), text: server.name }),
          " over the collector's limits: ",
          server.limits[0],
          server.limits.length > 1 ? h("span", { class: "muted" }, ` · and ${server.limits.length - 1} more`) : null,
        ]);
      }
    }
    for (const { server, app } of all) {
      if (app.state !== "unhealthy") continue;
      const last = app.lastDeploy && typeof app.lastDeploy === "object" ? app.lastDeploy : null;
      items.push([
        "unhealthy",
        h("a", { href: serverHref(server.name, { app: app.app }), text: `${server.name} / ${app.app}` }),
        ` unhealthy${app.status ? ` (${app.status})` : ""}`,
        last?.outcome && last.outcome !== "success"
          ? h(
            "span",
            { class: "muted" },
            ` · last deploy ${OUTCOME[last.outcome]?.[0] ?? last.outcome}`,
            last.step ? ` at ${last.step}` : "",
            last.message ? `: ${withoutStep(last.step, last.message)}` : "",
          )
          : null,
      ]);
    }
    for (const { server, app } of all) {
      const cert = app.certificate;
      if (!cert?.atRisk) continue;
      items.push([
        "certificate",
        h("a", { href: serverHref(server.name, { app: app.app }), text: `${server.name} / ${app.app}` }),
        cert.state === "expired"
          ? " certificate expired"
          : cert.state === "expiring"
          ? ` certificate expires in ${cert.daysLeft} d`
          : " has no certificate",
        h("span", { class: "muted" }, ` · ${certificateText(cert)}`),
      ]);
    }
    const shown = items.sort((a, b) => SEVERITY[a[0]] - SEVERITY[b[0]]).slice(0, 12);
    put(
      attention,
      items.length
        ? h(
          "section",
          { class: "panel attention" },
          h("h2", { text: "Needs attention" }),
          h(
            "ul",
            { class: "plain" },
            shown.map(([kind, ...parts]) => h("li", { class: `state-line state-${kind}` }, parts)),
          ),
          items.length > shown.length
            ? h("p", { class: "muted small", text: `and ${items.length - shown.length} more: see the tables below` })
            : null,
        )
        : "",
    );

    // Version skew: an app running different versions on different servers.
    const versions = new Map(appNames.map((name) => [name, new Map()]));
    for (const { server, app } of all) {
      if (!app.version) continue;
      const byVersion = versions.get(app.app);
      byVersion.set(app.version, [...(byVersion.get(app.version) ?? []), server.name]);
    }
    /** Skewed app → the version most servers run (null on a tie: every cell is marked). */
    const majority = new Map();
    const skewed = [];
    for (const [name, byVersion] of versions) {
      const sorted = [...byVersion].sort((a, b) => b[1].length - a[1].length || a[0].localeCompare(b[0]));
      if (sorted.length < 2) continue;
      skewed.push([name, sorted]);
      majority.set(name, sorted[0][1].length > sorted[1][1].length ? sorted[0][0] : null);
    }
    put(
      skew,
      skewed.length
        ? h(
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
        )
        : "",
    );

    // What changed since the last render (state or version), to mark it for a moment.
    const previous = before;
    before = new Map();
    const changedKeys = new Set();
    for (const { server, app } of all) {
      const key = `${server.name}\u0000${app.app}`;
      const value = `${app.state}\u0000${app.version}`;
      before.set(key, value);
      if (previous !== null && previous.get(key) !== value) changedKeys.add(key);
    }
    const changed = (server, app) => changedKeys.has(`${server}\u0000${app.app}`);

    // The matrix: servers × apps, each cell the version, coloured by state; skew outlined.
    rows = [];
    const matrixRows = servers.map((server) => {
      const byApp = new Map(server.apps.map((app) => [app.app, app]));
      const states = new Set(server.apps.map((app) => app.state));
      if (server.state !== "fresh") states.add(server.state);
      const tr = h(
        "tr",
        {},
        h(
          "th",
          { scope: "row" },
          h("a", { href: serverHref(server.name), text: server.name }),
          server.state !== "fresh" ? [" ", stateBadge(server.state, true)] : null,
        ),
        appNames.map((name) => {
          const app = byApp.get(name);
          if (!app) {
            return h("td", { class: "cell absent", text: "·", title: `${name} does not run on ${server.name}` });
          }
          const most = majority.get(name);
          const odd = majority.has(name) && app.version && app.version !== most;
          return h(
            "td",
            {
              class: `cell state-${app.state}${odd ? " skewed" : ""}${changed(server.name, app) ? " changed" : ""}`,
              title: `${name} on ${server.name}: ${app.version ?? "no version"} · ${STATE_LABEL[app.state]}` +
                (odd ? (most ? ` (most servers run ${most})` : " (versions differ)") : ""),
            },
            STATE_GLYPH[app.state] ? h("span", { class: "glyph", text: STATE_GLYPH[app.state] }) : null,
            app.version ?? "—",
          );
        }),
      );
      rows.push({
        el: tr,
        text: [server.name, server.host, ...server.apps.flatMap((app) => [app.app, app.version ?? ""])].join(" ")
          .toLowerCase(),
        states,
      });
      return tr;
    });
    const skewNames = new Set(skewed.map(([name]) => name));
    put(
      matrix,
      servers.length
        ? h(
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
            h("tbody", {}, matrixRows),
          ),
        )
        : h("p", { class: "muted", text: "No server has been pulled yet." }),
    );

    // Every app, most urgent first. It starts below the fold: on the first render it is built
    // after the first screen is painted, so a large fleet shows its counts and matrix sooner.
    const build = () => {
      const sorted = [...all].sort((a, b) =>
        SEVERITY[a.app.state] - SEVERITY[b.app.state] || a.server.name.localeCompare(b.server.name) ||
        a.app.app.localeCompare(b.app.app)
      );
      put(
        everything,
        all.length
          ? table(
            ["Server", "App", "Health", "Freshness", "Version", "Deployed", "Last check", "Certificate"],
            sorted.map(appRow),
            "apps",
          )
          : h("p", { class: "muted", text: "No apps yet." }),
      );
      applyFilter();
    };
    const appRow = ({ server, app }) => {
      const tr = h(
        "tr",
        { class: `state-row state-${app.state}${changed(server.name, app) ? " changed" : ""}` },
        h("td", {}, h("a", { href: serverHref(server.name), text: server.name })),
        h("td", { class: "app", text: app.app }),
        h("td", {}, healthBadge(app)),
        h("td", {}, freshness(app)),
        h("td", {}, code(app.version, app.commit ?? undefined)),
        h("td", {}, when(app.deployed, now)),
        h("td", {}, when(app.lastHealthCheck, now)),
        h("td", {}, certificateBadge(app.certificate)),
      );
      const names = Array.isArray(app.certificate?.names) ? app.certificate.names.join(" ") : "";
      rows.push({
        el: tr,
        text: `${server.name} ${server.host} ${app.app} ${app.version ?? ""} ${app.status ?? ""} ${names}`
          .toLowerCase(),
        states: new Set([app.state]),
      });
      return tr;
    };
    const generation = ++renders;
    if (generation > 1 || all.length <= 200) return build();
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
    const data = await api("/api/fleet");
    performance.mark("fleet-data");
    fleet = data;
    render(data);
    performance.mark("fleet-rendered");
  }

  return {
    el,
    heading,
    title: "Fleet",
    async show() {
      if (!before) await refresh();
    },
    refresh,
    notice(error) {
      put(notices, errorBox(error));
    },
  };
}

/**
 * One log line (an error line or a search result) as a button that opens the lines around it.
 * @param {any} line a LineView
 * @param {any[]} content what the button shows
 */
function lineItem(line, content) {
  const panelId = `ctx-${line.id}`;
  const button = h(
    "button",
    { type: "button", class: "line", "aria-expanded": "false", "aria-controls": panelId },
    content,
  );
  const item = h("li", { class: "line-item" }, button);
  /** @type {HTMLElement | null} */
  let panel = null;
  const close = () => {
    panel?.remove();
    panel = null;
    button.setAttribute("aria-expanded", "false");
    item.classList.remove("open");
  };
  button.addEventListener("click", async () => {
    if (panel) return close();
    panel = h(
      "div",
      { class: "context", id: panelId, role: "region", "aria-label": "Surrounding lines" },
      h("p", { class: "muted", text: "Loading…" }),
    );
    button.setAttribute("aria-expanded", "true");
    item.classList.add("open");
    item.append(panel);
    const mine = panel;
    try {
      const context = await api("/api/logs/context", {
        server: line.server,
        app: line.app,
        file: line.file,
        offset: line.offset,
        id: line.id,
        lines: 15,
      });
      if (panel !== mine) return;
      // Lines that start with their own timestamp need no second one beside them.
      const own = context.lines.every((l) => OWN_TIME.test(l.text));
      const list = h(
        "ol",
        { class: `ctx-lines${own ? " own-time" : ""}` },
        context.lines.map((l) =>
          h("li", { class: l.hit ? "hit" : null }, own ? null : stamp(l.ts), h("span", { class: "text", text: l.text }))
        ),
      );
      put(
        mine,
        h(
          "div",
          { class: "ctx-head" },
          h("span", {
            text:
              `${context.server} · ${context.app}/${context.file} · ${context.lines.length} lines around offset ${context.offset}`,
          }),
          h("button", {
            type: "button",
            class: "link-button",
            text: "Close",
            onclick: () => (close(), button.focus()),
          }),
        ),
        list,
      );
      const hit = list.querySelector(".hit");
      if (hit instanceof HTMLElement) list.scrollTop = hit.offsetTop - list.clientHeight / 2 + hit.clientHeight / 2;
    } catch (error) {
      if (error instanceof Unauthorized) return showLogin();
      if (panel === mine) put(mine, errorBox(error));
    }
  });
  item.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && panel) {
      close();
      button.focus();
    }
  });
  return item;
}

/** Search-result and error-line metadata: time, where. */
const lineMeta = (line, server = true) =>
  h(
    "span",
    { class: "meta" },
    stamp(line.ts),
    server ? h("span", { class: "where", text: line.server }) : null,
    h("span", { class: "where", text: `${line.app}/${line.file}` }),
    line.kind === "gap" ? h("span", { class: "badge warn", text: "gap" }) : null,
  );

/** A deploy message without its leading "<step>: " (the step is shown on its own). */
const withoutStep = (step, message) =>
  step && typeof message === "string" && message.startsWith(`${step}: `) ? message.slice(step.length + 2) : message;

/** `list` newest first by the ISO time `at(item)` gives (stable: equal times keep their order). */
function byTime(list, at) {
  const time = (item) => Date.parse(at(item)) || 0;
  return [...list].sort((a, b) => time(b) - time(a));
}

/**
 * Rows of a deployments table, newest first by time (the API pages by id, which is the order of
 * ingestion: deploys of several servers pulled in one cycle interleave).
 */
function deploymentRows(list, withServer = true, isNew = () => false) {
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

const DEPLOYMENT_COLUMNS = ["When", "Server", "App", "Outcome", "Version", "Release", "Duration", "Step / message", ""];

/** One server: its apps, deployments, error lines (optionally of one app since a deploy) and Netdata. */
function serverView(name) {
  const heading = h("h1", { tabindex: "-1", text: name });
  const badge = h("span");
  const facts = h("dl", { class: "facts" });
  const problem = h("div");
  const apps = h("div");
  const deploys = h("div");
  const errorsTitle = h("h2", { text: "Recent errors" });
  const errorsNote = h("p", { class: "muted small" });
  const errors = h("div");
  const netdata = h("div");
  const notices = h("div");
  const el = h(
    "div",
    { class: "view server" },
    h("p", { class: "crumbs" }, h("a", { href: "#/", text: "← Overview" })),
    h("div", { class: "view-head" }, heading, badge),
    notices,
    facts,
    problem,
    h("section", { class: "panel" }, h("h2", { text: "Apps" }), apps),
    h("section", { class: "panel" }, h("h2", { text: "Recent deployments" }), deploys),
    h("section", { class: "panel" }, errorsTitle, errorsNote, errors),
    netdata,
  );
  let detail = null;
  let filter = { app: "", since: "" };
  let netdataUrl = null;

  function renderErrors() {
    if (errors.querySelector(".line-item.open")) return; // keep an open context
    const since = filter.since ? Date.parse(filter.since) : NaN;
    const lines = detail.errorLines.filter((line) =>
      (!filter.app || line.app === filter.app) && (Number.isNaN(since) || Date.parse(line.ts) >= since)
    );
    if (filter.app || filter.since) {
      errorsTitle.textContent = `Errors of ${filter.app || "every app"}` + (filter.since ? " after the deploy" : "");
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
    document.title = `${d.name} · Fleet`;
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
    );
    put(
      apps,
      d.apps.length
        ? table(
          ["App", "Health", "Freshness", "Version", "Deployed", "Last check", "Last deploy", "Certificate"],
          d.apps.map((app) => {
            const last = app.lastDeploy && typeof app.lastDeploy === "object" ? app.lastDeploy : null;
            return h(
              "tr",
              { class: `state-row state-${app.state}` },
              h(
                "td",
                { class: "app" },
                h("a", {
                  href: route("/deployments", { server: d.name, app: app.app }),
                  title: `Deployments of ${app.app}`,
                  text: app.app,
                }),
              ),
              h("td", {}, healthBadge(app)),
              h("td", {}, freshness(app)),
              h("td", {}, code(app.version, app.commit ?? undefined)),
              h("td", {}, when(app.deployed)),
              h("td", {}, when(app.lastHealthCheck)),
              h("td", {}, last?.outcome ? [outcomeBadge(last.outcome), " ", when(last.at)] : "—"),
              h(
                "td",
                { class: "cert" },
                certificateBadge(app.certificate),
                app.certificate?.lastError
                  ? h("div", {
                    class: "small cert-error",
                    title: app.certificate.lastError,
                    text: app.certificate.lastError,
                  })
                  : null,
              ),
            );
          }),
        )
        : h("p", { class: "muted", text: "No apps (no status.json) on this server." }),
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
    let safe = null;
    try {
      const parsed = new URL(url);
      if (parsed.protocol === "http:" || parsed.protocol === "https:") safe = parsed.href;
    } catch { /* not a URL */ }
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
      detail = await api(`/api/servers/${enc(name)}`);
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
  }

  return {
    el,
    heading,
    title: `${name} · Fleet`,
    async show(params) {
      filter = { app: params.get("app") ?? "", since: params.get("since") ?? "" };
      if (!detail) await refresh();
      else renderErrors();
    },
    refresh,
    notice(error) {
      put(notices, errorBox(error));
    },
  };
}

/** "2026-11-29T07:00" (a datetime-local value) for an ISO time. */
function localInput(iso) {
  const ms = Date.parse(iso);
  if (Number.isNaN(ms)) return "";
  const date = new Date(ms - new Date(ms).getTimezoneOffset() * 60_000);
  return date.toISOString().slice(0, 16);
}

/** Log search: the query, filters, results newest first with 'load more'; a result opens its context. */
function searchView() {
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
  const range = h(
    "select",
    { name: "range" },
    [
      ["", "Any time"],
      ["15m", "Last 15 minutes"],
      ["1h", "Last hour"],
      ["24h", "Last 24 hours"],
      ["7d", "Last 7 days"],
      [
        "custom",
        "Between…",
      ],
    ].map(([value, text]) => h("option", { value, text })),
  );
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
  const help = /** @type {HTMLTemplateElement} */ (document.getElementById("syntax-template")).content.cloneNode(true);
  const status = h("div", { class: "status", role: "status" });
  const results = h("ol", { class: "lines plain results" });
  const more = h("button", { type: "button", class: "more", hidden: true, text: "Load more" });
  const el = h(
    "div",
    { class: "view search" },
    h("div", { class: "view-head" }, heading),
    form,
    help,
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
    const value = (key) => String(data.get(key) ?? "").trim();
    const params = {
      q: value("q"),
      server: value("server"),
      app: value("app"),
      file: value("file"),
      range: value("range"),
    };
    if (params.range === "custom") {
      const toIso = (v) => (v ? new Date(v).toISOString() : "");
      Object.assign(params, { since: toIso(value("since")), until: toIso(value("until")) });
    }
    const target = route("/search", params);
    if (location.hash === target) navigate(); // the same search again (a time range moves with the clock)
    else location.hash = target;
  });
  more.addEventListener("click", () => run(true).catch((error) => error instanceof Unauthorized && showLogin()));

  /** Fills the form from the hash's parameters. */
  async function fill(params) {
    const names = await fleetNames().catch((error) => {
      if (error instanceof Unauthorized) throw error;
      return { servers: [], apps: [] };
    });
    put(
      filters,
      select("server", "Server", "every server", names.servers, params.get("server") ?? ""),
      select("app", "App", "every app", names.apps, params.get("app") ?? ""),
    );
    q.value = params.get("q") ?? "";
    file.value = params.get("file") ?? "";
    range.value = params.get("range") ?? "";
    custom.hidden = range.value !== "custom";
    since.value = params.get("since") ? localInput(params.get("since")) : "";
    until.value = params.get("until") ? localInput(params.get("until")) : "";
    const r = range.value;
    query = {
      q: q.value,
      server: params.get("server") ?? "",
      app: params.get("app") ?? "",
      file: file.value,
      since: r === "custom" ? params.get("since") ?? "" : RANGES[r] ? Date.now() - RANGES[r] : "",
      until: r === "custom" ? params.get("until") ?? "" : "",
    };
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

/** Deployment history, newest first, filtered by server and app, with 'load more'. */
function deploymentsView() {
  const heading = h("h1", { tabindex: "-1", text: "Deployments" });
  const filters = h("form", { class: "filters-row", "aria-label": "Filter deployments" });
  const body = h("tbody");
  const wrap = h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "deployments" },
      h("thead", {}, h("tr", {}, DEPLOYMENT_COLUMNS.map((c) => h("th", { scope: "col", text: c })))),
      body,
    ),
  );
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
  more.addEventListener(
    "click",
    () =>
      load(true).catch((
        error,
      ) => (error instanceof Unauthorized ? showLogin() : put(status, errorBox(error)))),
  );

  return {
    el,
    heading,
    title: "Deployments · Fleet",
    async show(p) {
      params = { server: p.get("server") ?? "", app: p.get("app") ?? "" };
      const names = await fleetNames();
      put(
        filters,
        select("server", "Server", "every server", names.servers, params.server),
        select("app", "App", "every app", names.apps, params.app),
      );
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

// ---------------------------------------------------------------------------------------------
// Router, login, keyboard.

/** @type {{ key: string, view: any } | null} */
let current = null;
let navigations = 0;

/** Which view a hash names. */
function resolve(hash) {
  const raw = hash.replace(/^#/, "") || "/";
  const at = raw.indexOf("?");
  const path = at < 0 ? raw : raw.slice(0, at);
  const params = new URLSearchParams(at < 0 ? "" : raw.slice(at + 1));
  const server = /^\/server\/([^/]+)$/.exec(path);
  if (server) {
    let name;
    try {
      name = decodeURIComponent(server[1]);
    } catch {
      name = server[1];
    }
    return { nav: "overview", key: `server:${name}`, params, make: () => serverView(name) };
  }
  if (path === "/search") return { nav: "search", key: "search", params, make: searchView };
  if (path === "/deployments") return { nav: "deployments", key: "deployments", params, make: deploymentsView };
  return { nav: "overview", key: "overview", params, make: overviewView };
}

/** Shows the view the hash names: a new one, or the one on screen with new parameters. */
async function navigate() {
  const target = resolve(location.hash);
  const first = navigations++ === 0;
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link instanceof HTMLElement && link.dataset.nav === target.nav) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const fresh = !current || current.key !== target.key;
  if (fresh) current = { key: target.key, view: target.make() };
  const view = current.view;
  document.title = view.title;
  document.body.dataset.view = target.key.split(":")[0];
  try {
    await view.show(target.params);
  } catch (error) {
    if (current?.view !== view) return;
    if (error instanceof Unauthorized) return showLogin();
    current = null;
    put(main, errorBox(error, () => navigate()));
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
  const refused = sessionStorage.getItem(TOKEN_KEY) !== null;
  sessionStorage.removeItem(TOKEN_KEY);
  logout.hidden = true;
  events?.close();
  events = null;
  setLive("off", "offline");
  current = null;
  document.title = "Token required · Fleet";
  const fragment = /** @type {HTMLTemplateElement} */ (document.getElementById("login-template")).content.cloneNode(
    true,
  );
  put(main, fragment);
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
    const token = input.value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    logout.hidden = false;
    navigate();
  });
  input.focus();
}

logout.hidden = sessionStorage.getItem(TOKEN_KEY) === null;
logout.addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  showLogin();
});

quick.addEventListener("submit", (event) => {
  event.preventDefault();
  const input = /** @type {HTMLInputElement} */ (quick.elements.namedItem("q"));
  location.hash = route("/search", { q: input.value.trim() });
  input.value = "";
});

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

addEventListener("hashchange", () => navigate());
navigate();
