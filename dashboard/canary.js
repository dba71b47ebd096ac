/**
 * An app's canary release (its status.json's `canary`, as the API gives it) on the page: a badge
 * next to its health wherever the app is listed, and the server page's "Canary releases" panel
 * (state, share of requests, step k of n, the last figures of the new release against the old).
 * Every value becomes text (dom.js).
 * @module
 */
import { h } from "./dom.js";
import { CANARY_KIND, canaryFigures, canaryLabel, canaryStep, canaryText, percentText } from "./rollout_format.js";

/** A canary as a badge; its progress and figures as the tooltip. */
export const canaryBadge = (canary) =>
  h("span", {
    class: `badge canary ${CANARY_KIND[canary.state] ?? "neutral"}`,
    title: canaryText(canary),
    text: canaryLabel(canary),
  });

/** The server page's panel of its apps' canaries; "" when none has one. */
export function canaryPanel(apps, when) {
  const withCanary = apps.filter((app) => app.canary);
  if (!withCanary.length) return "";
  return h(
    "section",
    { class: "panel canaries" },
    h("h2", { text: "Canary releases" }),
    withCanary.map((app) => canaryBlock(app.app, app.canary, when)),
  );
}

/** One app's canary: what it is at, a bar of its share, and the last figures. */
function canaryBlock(name, canary, when) {
  const figures = canaryFigures(canary);
  const percent = typeof canary.percent === "number" ? canary.percent : 0;
  return h(
    "div",
    { class: "canary-block", dataset: { app: name, state: canary.state } },
    h("h3", {}, name, " ", canaryBadge(canary)),
    h(
      "p",
      { class: "canary-line" },
      h("span", { class: "canary-percent", text: `${percentText(canary.percent)} of requests` }),
      canaryStep(canary) ? [" · ", h("span", { class: "canary-step", text: canaryStep(canary) })] : null,
      canary.version ? [" · new ", h("code", { text: canary.version })] : null,
      canary.since ? [" · since ", when(canary.since)] : null,
      canary.at ? [" · updated ", when(canary.at)] : null,
    ),
    h("progress", { max: "100", value: String(percent), "aria-label": `Share of requests on the canary of ${name}` }),
    canary.reason ? h("p", { class: "canary-reason", text: canary.reason }) : null,
    figures.length
      ? h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "canary-figures" },
          h("caption", {
            class: "muted small",
            text: `${
              typeof canary.figures.step === "number" && canary.figures.step !== canary.step
                ? `Step ${canary.figures.step}, as last judged`
                : "This step so far"
            }${
              typeof canary.figures.share === "number"
                ? ` (observed split: ${percentText(canary.figures.share * 100)} new)`
                : ""
            }`,
          }),
          h(
            "thead",
            {},
            h("tr", {}, ["Release", "Requests", "5xx rate", "p95"].map((t) => h("th", { scope: "col", text: t }))),
          ),
          h(
            "tbody",
            {},
            figures.map(([side, ...cells]) =>
              h(
                "tr",
                { dataset: { side } },
                h("th", { scope: "row", text: side }),
                cells.map((text) => h("td", { class: "num", text })),
              )
            ),
          ),
        ),
      )
      : h("p", { class: "muted small", text: "No interval judged yet." }),
  );
}
