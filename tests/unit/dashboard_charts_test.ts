/**
 * The dashboard's chart math and chart trees (dashboard/charts.js), imported directly as the
 * browser loads them: scales, ticks, gaps, markers, deploy marks, sparklines, and that text from a
 * server stays text in the tree (dom.js's `svg` makes text nodes of it, never markup).
 */
import { assert, assertEquals } from "../helpers/assert.ts";
import {
  deployText,
  FRAME,
  lastValue,
  linear,
  lineChart,
  linePath,
  lonePoints,
  niceStep,
  rangeOf,
  runs,
  short,
  SPARK,
  sparkShape,
  sparkText,
  timeLabel,
  timeTicks,
  UNITS,
  yTicks,
} from "../../dashboard/charts.js";

const MINUTE = 60_000;
const T0 = Date.parse("2026-12-03T12:00:00Z");

// deno-lint-ignore no-explicit-any
type Tree = any;

/** Every node of a tree `[tag, attrs, ...children]` (lists flattened), depth first. */
function nodes(tree: Tree): Tree[] {
  if (tree === null || tree === undefined || tree === false || typeof tree === "string") return [];
  if (Array.isArray(tree) && typeof tree[0] !== "string") return tree.flatMap(nodes);
  return [tree, ...tree.slice(2).flatMap(nodes)];
}

/** The text children of every node of a tree. */
const texts = (tree: Tree): string[] =>
  nodes(tree).flatMap((node) => node.slice(2).filter((c: unknown) => typeof c === "string"));

Deno.test("dashboard charts: linear scales map the domain, a flat domain maps to the middle", () => {
  const x = linear(0, 10, 100, 200);
  assertEquals([x(0), x(5), x(10)], [100, 150, 200]);
  const y = linear(0, 100, 150, 10); // inverted, as SVG's y
  assertEquals([y(0), y(100)], [150, 10]);
  assertEquals(linear(5, 5, 0, 10)(5), 5);
  assertEquals(linear(0, Infinity, 0, 10)(1), 5);
});

Deno.test("dashboard charts: nice steps and y ticks from zero to a nice maximum", () => {
  assertEquals(niceStep(100, 4), 25);
  assertEquals(niceStep(7, 4), 2);
  assertEquals(niceStep(0.03, 4), 0.01);
  assertEquals(yTicks([12, 37, null, 99.5], { floor: 100 }).ticks, [0, 25, 50, 75, 100]);
  assertEquals(yTicks([0, 0], { floor: 1 }).ticks, [0, 0.25, 0.5, 0.75, 1]);
  const big = yTicks([1_234_567], {});
  assertEquals(big.max, 1_500_000);
  assert(big.ticks.length >= 3 && big.ticks.length <= 6, String(big.ticks));
  // A hostile value (NaN, Infinity, a string) is no value; a huge one still gives a bounded axis.
  assertEquals(yTicks([NaN, Infinity, "50" as unknown as number], { floor: 100 }).ticks, [0, 25, 50, 75, 100]);
  assert(yTicks([1e300], {}).ticks.length <= 50);
  assertEquals(yTicks([-5, 10], {}).ticks[0], -5);
});

Deno.test("dashboard charts: time ticks are round local times inside the range", () => {
  const ticks = timeTicks(T0 - 60 * MINUTE + 20_000, T0 + 20_000, 5);
  assertEquals(ticks.length, 4);
  assert(ticks.every((t) => t % (15 * MINUTE) === 0), String(ticks));
  // A time zone 30 minutes off UTC aligns hours to its own clock.
  const half = timeTicks(T0 - 6 * 60 * MINUTE, T0, 5, 30 * MINUTE);
  assert(half.every((t) => (t + 30 * MINUTE) % (60 * MINUTE) === 0), String(half));
  assertEquals(timeTicks(T0, T0), []);
  assertEquals(timeLabel(T0 + 5 * MINUTE, 3600_000), "12:05");
  assertEquals(timeLabel(T0, 7 * 86_400_000), "3/12");
  assert(timeTicks(0, 1e15, 5).length <= 50);
});

Deno.test("dashboard charts: null breaks the line; a lone point is a marker, not a path", () => {
  const values = [1, 2, null, 4, null, 6, 7, undefined, NaN];
  assertEquals(runs(values), [[0, 1], [3, 3], [5, 6]]);
  assertEquals(lonePoints(values), [3]);
  const xs = values.map((_, i) => i * 10);
  const path = linePath(xs, values, (v: number) => 100 - v);
  assertEquals(path, "M0 99L10 98M50 94L60 93");
  assertEquals(linePath([], [], (v: number) => v), "");
  assertEquals(lastValue([1, 2, null, 3, null]), 3);
  assertEquals(lastValue([null]), null);
});

Deno.test("dashboard charts: units and short numbers", () => {
  assertEquals(short(0.12345), "0.123");
  assertEquals(short(12.345), "12.3");
  assertEquals(short(1234.5), "1235");
  assertEquals(short(null as unknown as number), "—");
  assertEquals(UNITS.percent.text(42), "42 %");
  assertEquals(UNITS.ratio.text(0.072), "7.2 %");
  assertEquals(UNITS.bytesPerSecond.text(1536), "1.5 KB/s");
  assertEquals(UNITS.bytesPerSecond.text(3 * 1024 ** 3), "3 GB/s");
  assertEquals(UNITS.ms.text(250), "250 ms");
  assertEquals(rangeOf("7d"), "7d");
  assertEquals(rangeOf("<script>"), "1h");
  assertEquals(rangeOf(null), "1h");
});

Deno.test("dashboard charts: a line chart keeps its data, draws gaps, names series without colour only", () => {
  const ts = [0, 1, 2, 3, 4].map((i) => T0 + i * MINUTE);
  const { svg, legend, caption } = lineChart({
    title: "Disk used",
    unit: "percent",
    floor: 100,
    ts,
    from: ts[0],
    to: ts[4],
    series: [
      { key: "a", label: "/", values: [10, 20, null, 40, 50] },
      { key: "b", label: "/data", values: [5, null, 7, null, null] },
    ],
  });
  assertEquals(svg[0], "svg");
  assertEquals(JSON.parse(svg[1]["data-series"]), { a: [10, 20, null, 40, 50], b: [5, null, 7, null, null] });
  assertEquals(JSON.parse(svg[1]["data-ts"]), ts);
  const xs = JSON.parse(svg[1]["data-x"]);
  assertEquals(xs[0], FRAME.left);
  assertEquals(xs[4], FRAME.width - FRAME.right);
  const paths = nodes(svg).filter((n) => n[0] === "path" && n[1].class === "line");
  assertEquals(paths.length, 2);
  assertEquals(paths[0][1].d.match(/M/g).length, 2, "the gap starts a new subpath");
  assertEquals(paths[0][1]["stroke-dasharray"], null, "the first series is solid");
  assertEquals(paths[1][1]["stroke-dasharray"], "6 3", "the second is dashed");
  assertEquals(paths[1][1].d, "", "no two neighbours: no line, markers instead");
  assertEquals(nodes(svg).filter((n) => n[1]?.class === "marker").length, 3, "a's last; b's two lone points");
  assertEquals(legend.map((l) => [l.label, l.text]), [["/", "50 %"], ["/data", "7 %"]]);
  assert(texts(svg).includes("100 %"), "y ticks carry the unit");
  assertEquals(caption, "Disk used (%)");
  assert(texts(svg).includes(timeLabel(ts[2], 4 * MINUTE, 0)) || texts(svg).length > 5);
});

Deno.test("dashboard charts: deploy marks sit at their time, with a title, in range only", () => {
  const ts = [0, 1, 2, 3].map((i) => T0 + i * 10 * MINUTE);
  const deploy = { ts: T0 + 15 * MINUTE, version: "2.0.0", outcome: "success" };
  const { svg, legend } = lineChart({
    title: "Error rate",
    unit: "ratio",
    ts,
    from: ts[0],
    to: ts[3],
    series: [{ key: "errorRate", label: "5xx", values: [0, 0, 0.5, 0.5] }],
    deploys: [deploy, { ts: T0 - MINUTE, version: "1.0.0", outcome: "success" }],
  });
  const marks = nodes(svg).filter((n) => n[0] === "g" && String(n[1].class).startsWith("deploy"));
  assertEquals(marks.length, 1, "the deploy before the range is left out");
  const xs = JSON.parse(svg[1]["data-x"]);
  const x = Number(marks[0][1]["data-x"]);
  assert(xs[1] < x && x < xs[2], `${xs[1]} < ${x} < ${xs[2]}`);
  assertEquals(marks[0][1]["data-version"], "2.0.0");
  assertEquals(marks[0][1].tabindex, "0");
  assertEquals(texts(marks[0])[0], deployText(deploy));
  assertEquals(legend[0].text, "50 %", "ratios are shown as percents");
  assert(texts(svg).includes("60 %"), texts(svg).join());
});

Deno.test("dashboard charts: text from a server stays text, never markup or an attribute name", () => {
  const hostile = `</title><script>alert(1)</script>" onload="alert(2)`;
  const { svg, legend } = lineChart({
    title: `Disk of ${hostile}`,
    unit: "percent",
    ts: [T0],
    from: T0 - MINUTE,
    to: T0,
    series: [{ key: "disk0", label: hostile, values: [1] }],
    deploys: [{ ts: T0, version: hostile, outcome: hostile }],
  });
  assertEquals(legend[0].label, hostile);
  for (const node of nodes(svg)) {
    assert(/^[a-z]+$/.test(node[0]), `tag ${node[0]}`);
    for (const key of Object.keys(node[1])) assert(/^[a-z][a-z0-9-]*$/i.test(key), `attribute ${key}`);
    assert(!/^(script|foreignObject)$/i.test(node[0]));
  }
  const mark = nodes(svg).find((n) => n[1]["data-version"] !== undefined);
  assertEquals(mark[1]["data-version"], hostile);
  assertEquals(mark[1].class, "deploy outcome-other", "an unknown outcome is no class name");
  assert(texts(svg).includes(`Disk of ${hostile} (%)`));
});

Deno.test("dashboard charts: sparklines overdraw erring stretches and say the worst error rate", () => {
  const quiet = sparkShape([10, 12, null, 11], [0, 0, null, 0]);
  assertEquals(quiet.level, "ok");
  assertEquals(quiet.errors, "");
  assertEquals(quiet.line.match(/M/g)?.length, 2, "the gap breaks the line; the lone last point is a dash");
  assert(quiet.line.endsWith("h1.5"), quiet.line);
  const erring = sparkShape([10, 10, 10, 10, 10], [0, 0, 0.5, 0, 0]);
  assertEquals(erring.level, "bad");
  assertEquals(erring.errors.match(/L/g)?.length, 2, "the erring bucket and its neighbours");
  assertEquals(sparkShape([1], [0.02]).level, "warn");
  assertEquals(sparkShape([], []), { line: "", errors: "", level: "ok" });
  // Coordinates stay in the box whatever the values.
  const wild = sparkShape([1e300, -5, Infinity, 0], [NaN, 2, null, 0]);
  for (const n of wild.line.match(/-?[\d.]+/g)!.map(Number)) assert(n >= -5 && n <= SPARK.width, wild.line);
  assertEquals(sparkText([10, 20], [0, 0.072]), "20/min, 5xx up to 7.2 %");
  assertEquals(sparkText([null], [null]), "no requests");
});
