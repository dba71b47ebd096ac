/**
 * Charts as data, pure (no DOM): scales, ticks, lines broken at gaps, and whole line charts and
 * sparklines as SVG trees `[tag, attributes, ...children]` (a child is a node, a string of text,
 * or a list of them), which dom.js's `svg` turns into elements (text as text nodes: nothing from a
 * server is ever parsed). The unit tests import this module directly
 * (tests/unit/dashboard_charts_test.ts).
 *
 * Series are told apart without colour: each has a dash pattern and a marker shape as well as a
 * colour class (`s0`…; style.css colours them for light, dark and forced colours), and the legend
 * names it with its last value. A chart keeps what it drew readable by tests: its `<svg>` has
 * `data-series` (values by series, null for gaps), `data-ts` (bucket times) and `data-x` (each
 * bucket's x), and each deploy mark `data-ts`, `data-version`, `data-outcome` and its x.
 * @module
 */

/** The time ranges of the picker (the API's `range`), with their labels. */
export const CHART_RANGES = [["1h", "1 h"], ["24h", "24 h"], ["7d", "7 d"], ["30d", "30 d"]];
/** The default range. */
export const DEFAULT_RANGE = "1h";
/** The range a hash's `range` parameter names (anything else: the default). */
export const rangeOf = (value) => (CHART_RANGES.some(([key]) => key === value) ? value : DEFAULT_RANGE);

/**
 * Dash patterns and marker shapes of series: told apart without colour. Series i has dash
 * `i % 5` and marker `(i + ⌊i / 5⌋) % 5`, so the first 25 series all differ (see {@link looks}).
 */
export const DASHES = ["", "6 3", "2 3", "9 3 2 3", "1 5"];
export const MARKERS = ["circle", "square", "triangle", "diamond", "cross"];
/** The dash pattern and marker shape of series `i`. */
export const looks = (i) => ({
  dash: DASHES[i % DASHES.length],
  marker: MARKERS[(i + Math.floor(i / DASHES.length)) % MARKERS.length],
});

/** The plot area of a line chart in its viewBox (width, height, margins). */
export const FRAME = { width: 560, height: 170, left: 56, right: 14, top: 10, bottom: 26 };

const finite = (v) => typeof v === "number" && Number.isFinite(v);

/**
 * A linear map of [d0, d1] onto [r0, r1] (a flat domain maps to the middle).
 * @param {number} d0 @param {number} d1 @param {number} r0 @param {number} r1
 */
export function linear(d0, d1, r0, r1) {
  const span = d1 - d0;
  if (!(span > 0) || !Number.isFinite(span)) return () => (r0 + r1) / 2;
  const k = (r1 - r0) / span;
  return (v) => r0 + (v - d0) * k;
}

/** A "nice" step (1, 2, 2.5 or 5 × 10^n) near `span / count`. */
export function niceStep(span, count) {
  if (!(span > 0) || !Number.isFinite(span)) return 1;
  const raw = span / Math.max(1, count);
  const power = 10 ** Math.floor(Math.log10(raw));
  const f = raw / power;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * power;
}

/**
 * Ticks from 0 (or below, for negative values) up to a nice maximum covering `max`, about `count`
 * of them: `{ max, ticks }`. `floor` is the least maximum (e.g. 100 for percents, 1 otherwise), so
 * a flat zero line still has an axis.
 */
export function yTicks(values, { count = 4, floor = 1, fixed } = {}) {
  let lo = 0;
  let hi = floor;
  for (const v of values) {
    if (!finite(v)) continue;
    if (v > hi) hi = v;
    if (v < lo) lo = v;
  }
  if (fixed !== undefined && hi <= fixed) hi = fixed;
  const step = niceStep(hi - lo, count);
  const min = Math.floor(lo / step) * step;
  const max = Math.ceil(hi / step - 1e-9) * step;
  const ticks = [];
  for (let i = 0, v = min; v <= max + step / 2 && i < 50; i++, v = min + i * step) ticks.push(round(v));
  return { min, max, ticks };
}

const round = (v) => Math.round(v * 1e9) / 1e9;

/** Time steps ticks may use, in ms. */
const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440, 2880, 10080].map((m) => m * 60_000);

/**
 * Time ticks in [from, to]: about `count` multiples of a round step (minutes to a week), aligned
 * in local time by `offsetMs` (the time zone's offset, `-new Date().getTimezoneOffset() * 60000`).
 */
export function timeTicks(from, to, count = 5, offsetMs = 0) {
  if (!(to > from)) return [];
  const step = TIME_STEPS.find((s) => (to - from) / s <= count) ?? TIME_STEPS.at(-1);
  const ticks = [];
  let t = Math.ceil((from + offsetMs) / step) * step - offsetMs;
  for (; t <= to && ticks.length < 50; t += step) ticks.push(t);
  return ticks;
}

/**
 * The runs of consecutive finite values: `[[i, j], …]` index ranges (inclusive). A null (or any
 * value not a finite number) breaks the line.
 */
export function runs(values) {
  const out = [];
  let start = -1;
  for (let i = 0; i <= values.length; i++) {
    const ok = i < values.length && finite(values[i]);
    if (ok && start < 0) start = i;
    if (!ok && start >= 0) {
      out.push([start, i - 1]);
      start = -1;
    }
  }
  return out;
}

/**
 * An SVG path of `values` at `xs`, through `y`: a move at the start of every run (gaps break the
 * line). Single points (a run of one) are not in the path (see {@link lonePoints}).
 */
export function linePath(xs, values, y) {
  let d = "";
  for (const [i, j] of runs(values)) {
    if (i === j) continue;
    d += `M${fix(xs[i])} ${fix(y(values[i]))}`;
    for (let k = i + 1; k <= j; k++) d += `L${fix(xs[k])} ${fix(y(values[k]))}`;
  }
  return d;
}

/** The indices of values with a gap on both sides (drawn as markers: a path could not show them). */
export const lonePoints = (values) => runs(values).filter(([i, j]) => i === j).map(([i]) => i);

/** A coordinate with one decimal. */
export const fix = (n) => String(Math.round(n * 10) / 10);

/** The last finite value of a series, or null. */
export function lastValue(values) {
  for (let i = values.length - 1; i >= 0; i--) if (finite(values[i])) return values[i];
  return null;
}

/** The largest finite value of a series, or null. */
export function maxValue(values) {
  let max = null;
  for (const v of values) if (finite(v) && (max === null || v > max)) max = v;
  return max;
}

/** Numbers with at most 3 significant digits: 0.123, 1.23, 12.3, 123, 1230. */
export function short(v) {
  if (!finite(v)) return "—";
  const a = Math.abs(v);
  if (a === 0) return "0";
  const digits = a >= 100 ? 0 : a >= 10 ? 1 : a >= 1 ? 2 : 3;
  return String(Number(v.toFixed(digits)));
}

const BYTE_UNITS = ["B", "KB", "MB", "GB", "TB"];
/** Units of the charts: value → text with its unit. */
export const UNITS = {
  percent: { label: "%", text: (v) => `${short(v)} %` },
  ratio: { label: "%", text: (v) => `${short(v * 100)} %` },
  bytesPerSecond: {
    label: "bytes/s",
    text(v) {
      if (!finite(v)) return "—";
      let i = 0;
      let n = Math.abs(v);
      while (n >= 1024 && i < BYTE_UNITS.length - 1) {
        n /= 1024;
        i++;
      }
      return `${short(Math.sign(v) * n)} ${BYTE_UNITS[i]}/s`;
    },
  },
  ms: { label: "ms", text: (v) => `${short(v)} ms` },
  perMinute: { label: "per minute", text: (v) => `${short(v)}/min` },
  load: { label: "", text: (v) => short(v) },
};

/** A time tick's label: the clock for ranges up to two days, else the date. */
export function timeLabel(t, spanMs, offsetMs = 0) {
  const d = new Date(t + offsetMs);
  const two = (n) => String(n).padStart(2, "0");
  if (spanMs <= 2 * 86_400_000) return `${two(d.getUTCHours())}:${two(d.getUTCMinutes())}`;
  return `${d.getUTCDate()}/${d.getUTCMonth() + 1}`;
}

/** A marker of `shape` at (x, y) (its class and title given by the caller). */
export function marker(shape, x, y, attrs = {}) {
  const r = 3;
  if (shape === "circle") return ["circle", { cx: fix(x), cy: fix(y), r, ...attrs }];
  if (shape === "square") return ["rect", { x: fix(x - r), y: fix(y - r), width: 2 * r, height: 2 * r, ...attrs }];
  const points = shape === "triangle"
    ? [[x, y - r - 1], [x + r + 1, y + r], [x - r - 1, y + r]]
    : shape === "diamond"
    ? [[x, y - r - 1], [x + r + 1, y], [x, y + r + 1], [x - r - 1, y]]
    : null;
  if (points) return ["polygon", { points: points.map((p) => p.map(fix).join(",")).join(" "), ...attrs }];
  return ["path", {
    d: `M${fix(x - r)} ${fix(y - r)}L${fix(x + r)} ${fix(y + r)}M${fix(x + r)} ${fix(y - r)}L${fix(x - r)} ${
      fix(y + r)
    }`,
    ...attrs,
  }];
}

/**
 * @typedef {object} SeriesSpec
 * @property {string} key the name in `data-series`
 * @property {string} label the legend's text (may come from a server: it stays text)
 * @property {(number | null)[]} values
 */

/**
 * @typedef {object} ChartSpec
 * @property {string} title what the chart shows (its `<title>`)
 * @property {string} unit a key of {@link UNITS}
 * @property {number[]} ts bucket starts, epoch ms
 * @property {number} from the range's start
 * @property {number} to its end
 * @property {SeriesSpec[]} series
 * @property {{ ts: number, version: string | null, outcome: string }[]} [deploys] vertical marks
 * @property {number} [floor] the least y maximum (percent charts: 100)
 * @property {number} [offsetMs] the local time zone's offset, for the time axis
 * @property {string} [note] a line under the legend (what the chart leaves out)
 */

/**
 * A line chart: `{ svg, legend, caption }`, the SVG tree, the legend's entries
 * (`{ key, label, last, text, dash, marker, index }`, last being the last value and text it with
 * its unit) and the caption: the title with the unit (the y ticks carry it too).
 * @param {ChartSpec} spec
 * @returns {{ svg: any, legend: any[], caption: string }}
 */
export function lineChart(spec) {
  const { width, height, left, right, top, bottom } = FRAME;
  const unit = UNITS[spec.unit] ?? UNITS.load;
  const scaleOf = spec.unit === "ratio" ? 100 : 1;
  const all = spec.series.flatMap((s) => s.values);
  const { min, max, ticks } = yTicks(all.map((v) => (finite(v) ? v * scaleOf : v)), {
    floor: spec.floor ?? 1,
  });
  const y = linear(min / scaleOf, max / scaleOf, height - bottom, top);
  const x = linear(spec.from, spec.to, left, width - right);
  const xs = spec.ts.map(x);
  const span = spec.to - spec.from;
  const offset = spec.offsetMs ?? 0;
  const axis = [
    ticks.map((t) => {
      const ty = fix(y(t / scaleOf));
      return ["g", { class: "tick y" }, ["line", { x1: left, x2: width - right, y1: ty, y2: ty }], [
        "text",
        { x: left - 4, y: ty, dy: "0.32em", "text-anchor": "end" },
        unit.text(t / scaleOf),
      ]];
    }),
    timeTicks(spec.from, spec.to, 5, offset).map((t) => {
      const tx = fix(x(t));
      return ["g", { class: "tick x" }, ["line", { x1: tx, x2: tx, y1: height - bottom, y2: height - bottom + 4 }], [
        "text",
        { x: tx, y: height - 6, "text-anchor": "middle" },
        timeLabel(t, span, offset),
      ]];
    }),
    ["line", { class: "axis", x1: left, x2: width - right, y1: height - bottom, y2: height - bottom }],
  ];
  const legend = [];
  const lines = spec.series.map((s, index) => {
    const { dash, marker: shape } = looks(index);
    const last = lastValue(s.values);
    legend.push({ key: s.key, label: s.label, last, text: unit.text(last), dash, marker: shape, index });
    const cls = `series s${index % DASHES.length}`;
    const lastAt = last === null ? -1 : s.values.lastIndexOf(last);
    const points = [...new Set([...lonePoints(s.values), ...(lastAt >= 0 ? [lastAt] : [])])];
    return ["g", { class: cls, "data-key": s.key }, [
      "path",
      { class: "line", d: linePath(xs, s.values, y), "stroke-dasharray": dash || null, fill: "none" },
    ], points.map((i) => marker(shape, xs[i], y(s.values[i]), { class: "marker" }))];
  });
  const deploys = (spec.deploys ?? []).filter((d) => finite(d.ts) && d.ts >= spec.from && d.ts <= spec.to).map(
    (d) => {
      const dx = fix(x(d.ts));
      const text = deployText(d);
      return [
        "g",
        {
          class: `deploy outcome-${outcomeClass(d.outcome)}`,
          tabindex: "0",
          role: "img",
          "aria-label": text,
          "data-ts": d.ts,
          "data-x": dx,
          "data-version": d.version ?? "",
          "data-outcome": d.outcome,
        },
        ["title", {}, text],
        ["line", { class: "mark", x1: dx, x2: dx, y1: top, y2: height - bottom, "stroke-dasharray": "4 2" }],
        ["path", { class: "flag", d: `M${dx} ${top}l6 3l-6 3z` }],
        ["rect", { class: "hit", x: fix(x(d.ts) - 5), y: top, width: 10, height: height - bottom - top }],
      ];
    },
  );
  const data = {};
  for (const s of spec.series) data[s.key] = s.values.map((v) => (finite(v) ? v : null));
  const svg = [
    "svg",
    {
      class: "chart",
      viewBox: `0 0 ${width} ${height}`,
      role: "img",
      "aria-label": `${spec.title}: ${legend.map((l) => `${l.label} ${l.text}`).join(", ") || "no data"}`,
      "data-series": JSON.stringify(data),
      "data-ts": JSON.stringify(spec.ts),
      "data-x": JSON.stringify(xs.map((v) => Number(fix(v)))),
    },
    ["title", {}, unit.label ? `${spec.title} (${unit.label})` : spec.title],
    axis,
    lines,
    deploys,
  ];
  return { svg, legend, caption: unit.label ? `${spec.title} (${unit.label})` : spec.title };
}

/** A deploy mark's text: "deploy 1.4.0: success, 29 Nov 12:00". */
export function deployText(d, format = (t) => new Date(t).toISOString().slice(0, 16).replace("T", " ")) {
  return `deploy ${d.version ?? "(no version)"}: ${String(d.outcome).replaceAll("_", " ")}, ${format(d.ts)}`;
}

/** A deploy outcome as a class suffix: known ones, else "other". */
const outcomeClass = (outcome) =>
  ["success", "failed", "rolled_back", "rollback_failed", "cancelled", "refused"].includes(outcome) ? outcome : "other";

/** Error rates at or above this are drawn as "errors" on a sparkline (0-1). */
export const ERROR_LEVEL = 0.01;
/** A sparkline's size. */
export const SPARK = { width: 96, height: 24 };

/**
 * A sparkline of requests per minute, as the paths to draw: `line` (requests; a lone point as a
 * short dash), `errors` (the buckets whose error rate is at least {@link ERROR_LEVEL}, with their
 * neighbours, to overdraw thick and dashed; "" when none) and `level`, the worst error rate as a
 * class (`ok`, `warn` ≥ 1 %, `bad` ≥ 5 %). Drawn in a {@link SPARK}-sized box.
 * @param {(number | null)[]} requests
 * @param {(number | null)[]} errorRate
 */
export function sparkShape(requests, errorRate) {
  const { width, height } = SPARK;
  const n = requests.length;
  const xs = new Array(n);
  const step = n > 1 ? (width - 2) / (n - 1) : 0;
  for (let i = 0; i < n; i++) xs[i] = 1 + i * step;
  const top = maxValue(requests) ?? 0;
  const y = linear(0, top > 0 ? top : 1, height - 2, 2);
  const worst = maxValue(errorRate) ?? 0;
  const level = worst >= 0.05 ? "bad" : worst >= ERROR_LEVEL ? "warn" : "ok";
  const bad = (i) => i >= 0 && i < n && finite(errorRate[i]) && errorRate[i] >= ERROR_LEVEL;
  const errors = worst >= ERROR_LEVEL
    ? linePath(xs, requests.map((v, i) => (bad(i) || bad(i - 1) || bad(i + 1) ? v : null)), y)
    : "";
  let line = linePath(xs, requests, y);
  for (const i of lonePoints(requests)) line += `M${fix(xs[i] - 0.75)} ${fix(y(requests[i]))}h1.5`;
  return { line, errors, level };
}

/** A sparkline's words: "12/min, 5xx up to 7.2 %" (last requests, worst error rate in the range), for its label. */
export function sparkText(requests, errorRate) {
  const last = lastValue(requests);
  const worst = maxValue(errorRate);
  return `${last === null ? "no requests" : UNITS.perMinute.text(last)}` +
    (worst !== null && worst >= ERROR_LEVEL ? `, 5xx up to ${UNITS.ratio.text(worst)}` : "");
}
