/**
 * The charts on the pages: a server's (CPU, memory and swap, disk per mount, network, load), an
 * app's (requests, error rate, latency, with a mark at every deployment) and the overview's
 * sparklines (requests per app, erring stretches drawn thick and dashed), the time range picker,
 * and the tooltip of the deploy marks (on hover and on keyboard focus; each mark has an SVG
 * `<title>` too). The charts themselves are pure data (charts.js) made into elements by dom.js's
 * `svg`: names, mount points and versions from servers stay text.
 * @module
 */
import { h, put, svg } from "./dom.js";
import { absolute, stampText, visible } from "./format.js";
import { CHART_RANGES, DASHES, deployText, lineChart, marker, SPARK, sparkShape, sparkText } from "./charts.js";
import { serverHref } from "./routes.js";
import { code, table } from "./widgets.js";

/** The local time zone's offset now, in ms (for the time axes). */
const zoneOffset = () => -new Date().getTimezoneOffset() * 60_000;

/** The range picker: a link per range (`hrefFor(range)`), the current one marked. */
export function rangePicker(current, hrefFor) {
  return h(
    "nav",
    { class: "ranges", "aria-label": "Time range" },
    CHART_RANGES.map(([key, label]) =>
      h("a", {
        href: hrefFor(key),
        class: "range",
        dataset: { range: key },
        "aria-current": key === current ? "true" : null,
        text: label,
      })
    ),
  );
}

/**
 * A chart in a figure: its heading, the SVG, the legend (each series' line sample, label and last
 * value) and the deploy marks' tooltip.
 * @param {string} name the chart's name in `data-chart` (tests find it by that)
 * @param {import("./charts.js").ChartSpec} spec
 */
export function chartFigure(name, spec) {
  const { svg: tree, legend, caption } = lineChart({ ...spec, offsetMs: zoneOffset() });
  const hasData = legend.some((entry) => entry.last !== null);
  return h(
    "figure",
    { class: "chart-box", dataset: { chart: name } },
    h("figcaption", { text: caption }),
    svg(tree),
    h(
      "ul",
      { class: "legend plain" },
      legend.map((entry) =>
        h(
          "li",
          { dataset: { key: entry.key, last: entry.last === null ? "" : String(entry.last) } },
          svg(swatch(entry)),
          h("span", { class: "label", text: entry.label }),
          " ",
          h("span", { class: "last", text: entry.last === null ? "no data" : entry.text }),
        )
      ),
      !hasData ? h("li", { class: "muted", text: "No samples in this range." }) : null,
    ),
    spec.note ? h("p", { class: "muted small note", text: spec.note }) : null,
    h("div", { class: "chart-tip", role: "tooltip", hidden: true }),
  );
}

/** A legend's line sample: the series' dash pattern and marker. */
const swatch = (entry) => [
  "svg",
  {
    class: `swatch s${entry.index % DASHES.length}`,
    viewBox: "0 0 28 10",
    width: 28,
    height: 10,
    "aria-hidden": "true",
  },
  ["line", { class: "line", x1: 1, x2: 27, y1: 5, y2: 5, "stroke-dasharray": entry.dash || null }],
  marker(entry.marker, 14, 5, { class: "marker" }),
];

/** The span of a series answer. */
const frame = (s) => ({ ts: s.ts, from: s.from, to: s.to });

/** A server's charts (an /api/metrics/server answer), after what could not be read there. */
export function serverCharts(s) {
  const f = frame(s);
  const disks = Array.isArray(s.disks) ? s.disks : [];
  return [
    s.missing ? h("p", { class: "muted small missing", text: `Not read on this server: ${s.missing}.` }) : null,
    h(
      "div",
      { class: "charts" },
      chartFigure("cpu", {
        ...f,
        title: "CPU busy",
        unit: "percent",
        floor: 100,
        series: [series("cpu", "CPU", s.cpu)],
      }),
      chartFigure("memory", {
        ...f,
        title: "Memory and swap used",
        unit: "percent",
        floor: 100,
        series: [series("memory", "memory", s.memory), series("swap", "swap", s.swap)],
      }),
      chartFigure("disk", {
        ...f,
        title: "Disk used, per mount",
        unit: "percent",
        floor: 100,
        series: disks.map((d, i) => series(`disk${i}`, String(d.mount), d.used)),
        note: Number.isInteger(s.moreMounts) && s.moreMounts > 0
          ? `The ${disks.length} fullest mounts of ${disks.length + s.moreMounts} in this range.`
          : undefined,
      }),
      chartFigure("network", {
        ...f,
        title: "Network",
        unit: "bytesPerSecond",
        series: [series("rx", "received", s.netRx), series("tx", "sent", s.netTx)],
      }),
      chartFigure("load", { ...f, title: "Load (1 min)", unit: "load", series: [series("load", "load 1", s.load)] }),
    ),
  ];
}

/** An app's charts (an /api/metrics/app answer), each with the deploy marks. */
export function appCharts(s) {
  const f = { ...frame(s), deploys: Array.isArray(s.deploys) ? s.deploys : [] };
  return h(
    "div",
    { class: "charts" },
    chartFigure("requests", {
      ...f,
      title: "Requests",
      unit: "perMinute",
      series: [series("requests", "requests", s.requests)],
    }),
    chartFigure("errors", {
      ...f,
      title: "Error rate (5xx)",
      unit: "ratio",
      series: [series("errorRate", "5xx share", s.errorRate)],
    }),
    chartFigure("latency", {
      ...f,
      title: "Latency",
      unit: "ms",
      series: [series("p50", "p50", s.p50), series("p95", "p95", s.p95)],
    }),
    releaseTable(Array.isArray(s.releases) ? s.releases : []),
  );
}

/** A figure as a table cell: "–" when it is not a finite number. */
const figure = (value, text) => typeof value === "number" && Number.isFinite(value) ? text(value) : "–";

/**
 * An app's figures per release in the range (the release serving each minute), newest first:
 * what each deploy changed, in numbers.
 * @param {{ version: string | null, from: number, to: number, requests: number, errorRate: number | null, p95: number | null }[]} releases
 */
export function releaseTable(releases) {
  if (!releases.length) return null;
  const rows = releases.slice().reverse().map((r) =>
    h(
      "tr",
      { dataset: { version: String(r.version ?? "") } },
      h("td", {}, code(r.version ?? "unknown")),
      h("td", { text: `${figure(r.from, stampText)} – ${figure(r.to, stampText)}` }),
      h("td", { class: "num", text: figure(r.requests, (n) => String(Math.round(n))) }),
      h("td", { class: "num", text: figure(r.errorRate, (n) => `${(n * 100).toFixed(n < 0.1 ? 2 : 1)} %`) }),
      h("td", { class: "num", text: figure(r.p95, (n) => `${Math.round(n)} ms`) }),
    )
  );
  return h(
    "div",
    { class: "releases-box", "data-chart": "releases" },
    h("h3", { text: "Per release, in this range" }),
    table(["release", "serving", "requests", "5xx", "p95"], rows, "releases"),
  );
}

/** A series of an answer: its values when a list, else none. */
const series = (key, label, values) => ({ key, label, values: Array.isArray(values) ? values : [] });

/**
 * The overview's sparklines (an /api/metrics/overview answer): a row per server, a column per
 * app, each cell the app's requests (erring stretches thick and dashed) linking to its charts.
 * @param {{ sparklines: { server: string, app: string, requests: any[], errorRate: any[] }[] }} data
 * @param {string} range
 */
export function sparklineTable(data, range) {
  const list = Array.isArray(data.sparklines) ? data.sparklines : [];
  if (!list.length) return h("p", { class: "muted", text: "No request metrics yet." });
  const apps = [...new Set(list.map((s) => s.app))].sort();
  const byServer = new Map();
  for (const s of list) {
    let row = byServer.get(s.server);
    if (!row) byServer.set(s.server, row = new Map());
    row.set(s.app, s);
  }
  const servers = [...byServer.keys()].sort();
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "sparks" },
      h(
        "thead",
        {},
        h("tr", {}, h("th", { scope: "col", text: "Server" }), apps.map((app) => h("th", { scope: "col", text: app }))),
      ),
      h(
        "tbody",
        {},
        servers.map((server) => {
          const row = byServer.get(server);
          return h(
            "tr",
            {},
            h("th", { scope: "row" }, h("a", { href: serverHref(server, { range }), text: server })),
            apps.map((app) => sparkCell(server, app, row.get(app), range)),
          );
        }),
      ),
    ),
  );
}

/** A sparkline's cell, made once and cloned for each (1,000 of them must take milliseconds). */
let sparkProto = null;

/** The cell of `app` on `server` (`s` its sparkline, or none): a link to its charts. */
function sparkCell(server, app, s, range) {
  if (!s) return h("td", { class: "absent", text: "·" });
  sparkProto ??= h(
    "td",
    { class: "spark-cell" },
    h(
      "a",
      {},
      svg([
        "svg",
        {
          viewBox: `0 0 ${SPARK.width} ${SPARK.height}`,
          width: SPARK.width,
          height: SPARK.height,
          "aria-hidden": "true",
        },
        ["path", { class: "line" }],
        ["path", { class: "errors", "stroke-dasharray": "3 1" }],
      ]),
      h("span"),
    ),
  );
  const requests = Array.isArray(s.requests) ? s.requests : [];
  const errorRate = Array.isArray(s.errorRate) ? s.errorRate : [];
  const shape = sparkShape(requests, errorRate);
  const text = sparkText(requests, errorRate);
  const td = /** @type {HTMLElement} */ (sparkProto.cloneNode(true));
  td.dataset.server = server;
  td.dataset.app = app;
  const a = /** @type {HTMLAnchorElement} */ (td.firstChild);
  a.href = serverHref(server, { app, range });
  a.title = visible(`${app} on ${server}: ${text}`);
  const chart = /** @type {SVGSVGElement} */ (a.firstChild);
  chart.setAttribute("class", `spark ${shape.level}`);
  chart.setAttribute("data-v", JSON.stringify(requests));
  /** @type {SVGPathElement} */ (chart.firstChild).setAttribute("d", shape.line);
  /** @type {SVGPathElement} */ (chart.lastChild).setAttribute("d", shape.errors);
  const span = /** @type {HTMLElement} */ (a.lastChild);
  span.className = `spark-text ${shape.level}`;
  span.textContent = text;
  return td;
}

/** Shows a deploy mark's text in its chart's tooltip on hover and focus; hides it after. Installed once. */
export function installChartTips() {
  const show = (event) => {
    const mark = event.target instanceof Element ? event.target.closest("g.deploy") : null;
    const box = mark?.closest(".chart-box");
    const tip = box?.querySelector(".chart-tip");
    const chart = box?.querySelector("svg.chart");
    if (!mark || !(tip instanceof HTMLElement) || !chart) return;
    const ts = Number(mark.getAttribute("data-ts"));
    put(
      tip,
      deployText(
        { ts, version: mark.getAttribute("data-version") || null, outcome: mark.getAttribute("data-outcome") ?? "" },
        (t) => absolute().format(t),
      ),
    );
    const scale = chart.getBoundingClientRect().width / chart.viewBox.baseVal.width;
    tip.hidden = false;
    // Centred on the mark, kept inside the figure.
    const half = tip.offsetWidth / 2;
    const x = Number(mark.getAttribute("data-x")) * scale;
    tip.style.left = `${Math.max(half, Math.min(box.clientWidth - half, x))}px`;
  };
  const hide = (event) => {
    const mark = event.target instanceof Element ? event.target.closest("g.deploy") : null;
    const tip = mark?.closest(".chart-box")?.querySelector(".chart-tip");
    if (tip instanceof HTMLElement) tip.hidden = true;
  };
  document.addEventListener("mouseover", show);
  document.addEventListener("focusin", show);
  document.addEventListener("mouseout", hide);
  document.addEventListener("focusout", hide);
}
