/**
 * Rollouts and canaries as text (outcomes: format.js's OUTCOME): servers done, durations, version changes and a
 * canary's progress and figures. Pure (no DOM), so the unit tests import it directly
 * (tests/unit/dashboard_rollouts_test.ts).
 * @module
 */

/** `2 / 3`: the servers of a rollout that now serve its commit, of all it touched. */
export function serversDone(rollout) {
  const servers = Array.isArray(rollout.servers) ? rollout.servers : [];
  return `${servers.filter((s) => s.outcome === "success").length} / ${servers.length}`;
}

/**
 * How long a rollout took (ms): to its end, or to `now` while it runs; null when its times are not
 * valid (or it ended without an end time).
 */
export function rolloutElapsed(rollout, now = Date.now()) {
  const start = Date.parse(rollout.startedAt);
  const end = rollout.finishedAt ? Date.parse(rollout.finishedAt) : rollout.outcome === "running" ? now : NaN;
  return Number.isNaN(start) || Number.isNaN(end) ? null : Math.max(0, end - start);
}

/** A server's version before and after: `1.0.0 → c0ffee1`, `— → c0ffee1`, `1.0.0` (unchanged or no after yet). */
export function versionChange(before, after) {
  if (!after || after === before) return before || "—";
  return `${before || "—"} → ${after}`;
}

/** A rollout's recorded options in one line: `servers: a, b · parallel: 2 · onFailure: stop`; "" without any. */
export function optionsText(options) {
  if (!options || typeof options !== "object") return "";
  return Object.entries(options).map(([key, value]) =>
    `${key}: ${Array.isArray(value) ? value.join(", ") : typeof value === "object" ? JSON.stringify(value) : value}`
  ).join(" · ");
}

/** A commit as shown: its first 7 characters. */
export const shortCommit = (commit) => (typeof commit === "string" ? commit.slice(0, 7) : "");

/** Canary states as badge kinds. */
export const CANARY_KIND = { running: "warn", promoted: "ok", reverted: "bad", aborted: "neutral" };

/** A canary's badge text: `canary 25 %` while it runs, else how it ended. */
export function canaryLabel(canary) {
  if (canary.state === "running") return `canary ${percentText(canary.percent)}`;
  return `canary ${canary.state}`;
}

/** `step 2 of 3 (5 → 25 → 50 %)`, or "" without a step. */
export function canaryStep(canary) {
  const steps = Array.isArray(canary.steps) ? canary.steps : [];
  if (typeof canary.step !== "number") return "";
  const of = steps.length ? ` of ${steps.length} (${steps.join(" → ")} %)` : "";
  return `step ${canary.step}${of}`;
}

/** `25 %`, `0.5 %`; "—" when not a number. */
export function percentText(p) {
  return typeof p === "number" && Number.isFinite(p) ? `${+p.toFixed(2)} %` : "—";
}

/** A 5xx rate (0 to 1) as a percentage: `0.83 %`; "—" when not a number. */
export const rateText = (rate) => (typeof rate === "number" ? percentText(rate * 100) : "—");

/** A latency: `41.5 ms`, `1.2 s`; "—" when not a number. */
export function msText(ms) {
  if (typeof ms !== "number" || !Number.isFinite(ms)) return "—";
  const rounded = +ms.toFixed(1);
  return rounded < 1000 ? `${rounded} ms` : `${+(ms / 1000).toFixed(2)} s`;
}

/** A count, or "—". */
const countText = (n) => (typeof n === "number" ? String(n) : "—");

/**
 * The last interval judged, as table rows: `[side, requests, 5xx rate, p95]` for the new release,
 * then the old; none before the first judgement.
 */
export function canaryFigures(canary) {
  const f = canary.figures;
  if (!f || !f.new || !f.old) return [];
  return [["new", f.new], ["old", f.old]].map(([side, s]) => [
    side,
    countText(s.requests),
    rateText(s.errorRate),
    msText(s.p95Ms),
  ]);
}

/** A canary in one line (a badge's tooltip): state, share, step, figures, reason. */
export function canaryText(canary) {
  const figures = canaryFigures(canary).map(([side, requests, rate, p95]) =>
    `${side}: ${requests} requests, ${rate} 5xx, p95 ${p95}`
  );
  return [
    `Canary ${canary.state}${canary.version ? ` of ${canary.version}` : ""}`,
    canary.state === "running" ? `${percentText(canary.percent)} of requests` : "",
    canaryStep(canary),
    ...figures,
    canary.reason ? `reason: ${canary.reason}` : "",
  ].filter(Boolean).join(" · ");
}
