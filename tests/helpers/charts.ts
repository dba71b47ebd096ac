/**
 * The dashboard's charts as a test reads them back from the DOM (dashboard/chart_views.js draws
 * each chart with its data in attributes): values by series, bucket times and xs, the legend and
 * the deploy marks.
 */
import type { Page } from "playwright-core";
import type { WatchedPage } from "./browser.ts";

// Globals of the page, used inside page.evaluate callbacks (this file is checked without the DOM library).
// deno-lint-ignore no-explicit-any
declare const document: any;

/** A chart's drawn data: values by series, bucket times and xs, the legend and the deploy marks. */
export function chartData(page: Page, name: string) {
  return page.$eval(`figure[data-chart="${name}"]`, (figure) => {
    const svg = figure.querySelector("svg.chart");
    return {
      series: JSON.parse(svg.dataset.series) as Record<string, (number | null)[]>,
      ts: JSON.parse(svg.dataset.ts) as number[],
      xs: JSON.parse(svg.dataset.x) as number[],
      legend: [...figure.querySelectorAll(".legend li[data-key]")].map((li) => ({
        key: li.dataset.key as string,
        label: li.querySelector(".label").textContent as string,
        last: li.querySelector(".last").textContent as string,
      })),
      marks: [...svg.querySelectorAll("g.deploy")].map((g) => ({
        ts: Number(g.dataset.ts),
        x: Number(g.dataset.x),
        version: g.dataset.version as string,
        title: g.querySelector("title").textContent as string,
      })),
      note: (figure.querySelector("p.note")?.textContent ?? null) as string | null,
      dashes: [...svg.querySelectorAll("g.series path.line")].map((p) => p.getAttribute("stroke-dasharray")),
      looks: [...figure.querySelectorAll(".legend svg.swatch")].map((s) => [
        s.querySelector(".line").getAttribute("stroke-dasharray"),
        s.querySelector(".marker").tagName,
        s.querySelector(".marker").getAttribute("points") ?? s.querySelector(".marker").getAttribute("d") ?? "",
      ]),
    };
  });
}

/** Opens `hash` and waits for the view to be ready and its charts drawn. */
export async function openChart(watched: WatchedPage, base: string, hash: string, ready: string): Promise<void> {
  await watched.page.goto(`${base}/${hash}`);
  await watched.page.waitForSelector(ready);
}
