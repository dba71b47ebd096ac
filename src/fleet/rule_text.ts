/**
 * Alert rules in words (./rules.ts says what they are): a rule's default name, what it watches
 * (`disk.used_percent above 90 %`), values with their unit (as many digits as it takes to show on
 * which side of the threshold they are), thresholds as written and windows, for notices
 * (./alert_notices.ts), `fleet alerts` and the API.
 * @module
 */
import { type Rule, RULE_METRICS, type RuleDraft, ruleUnit, type Unit } from "./rules.ts";

/** A default rule name: stable (from what the rule says) and readable. */
export function ruleName(rule: RuleDraft): string {
  const where = [
    rule.server && `on ${rule.server}`,
    rule.kind === "threshold" && rule.mount && `at ${rule.mount}`,
    rule.app && `for ${rule.app}`,
    rule.kind === "cron" && rule.job && `job ${rule.job}`,
  ].filter(Boolean).join(" ");
  const what = rule.kind === "threshold"
    ? `${rule.metric} ${rule.op} ${rule.threshold}`
    : rule.kind === "log"
    ? `log ${rule.query.length > 60 ? rule.query.slice(0, 59) + "…" : rule.query} ×${rule.atLeast}`
    : rule.kind === "certificate"
    ? `certificate expiring ${rule.days}d`
    : "cron failed";
  return where ? `${what} ${where}` : what;
}

/**
 * A value with its unit: `93.2 %`, `1.52`, `340 ms`, `1.2 MB/s`, `12 lines`; under 1, two significant
 * digits (`0.07 %`, not `0.1 %`). With `compared` (the threshold it is judged against), as many
 * more digits as it takes (up to 6) to show on which side of it the value is: `50.04 %`, above `50 %`.
 */
export function formatValue(value: number, unit: Unit, compared?: number): string {
  if (!Number.isFinite(value)) return String(value);
  const side = (n: number) => compared === undefined ? 0 : Math.sign(n - compared);
  let shown = valueText(value, unit, 0);
  for (let extra = 1; extra <= 6 && side(shown.value) !== side(value); extra++) shown = valueText(value, unit, extra);
  return shown.text;
}

/** {@link formatValue} with `extra` digits: the text, and the value it shows (in the value's unit). */
function valueText(value: number, unit: Unit, extra: number): { text: string; value: number } {
  const round = (n: number, digits: number, scale = 1) => {
    const small = n !== 0 && Math.abs(n) < 1 ? 1 - Math.floor(Math.log10(Math.abs(n))) : 0;
    const shown = Number(n.toFixed(Math.min(20, Math.max(digits, small) + extra)));
    return { text: shown.toString(), value: shown * scale };
  };
  const suffixed = (r: { text: string; value: number }, suffix: string) => ({ ...r, text: r.text + suffix });
  switch (unit) {
    case "%":
      return suffixed(round(value, 1), " %");
    case "ms":
      return suffixed(round(value, value < 10 ? 1 : 0), " ms");
    case "B/s": {
      const units = ["B/s", "KB/s", "MB/s", "GB/s"];
      let n = value;
      let i = 0;
      while (Math.abs(n) >= 1024 && i < units.length - 1) [n, i] = [n / 1024, i + 1];
      return suffixed(round(n, i ? 1 : 0, 1024 ** i), ` ${units[i]}`);
    }
    case "s":
      return suffixed(round(value, 0), " s");
    case "/min":
      return suffixed(round(value, 1), "/min");
    case "lines":
      return { text: `${value} line${value === 1 ? "" : "s"}`, value };
    default:
      return round(value, 2);
  }
}

/** The number a rule's value is judged against to fire (threshold rules only). */
export const comparedTo = (rule: Rule): number | undefined => rule.kind === "threshold" ? rule.threshold : undefined;

/** A threshold as it was written in the config, with its unit: `0.05 %`, `1048576 B/s`, `1.5`. */
export function formatThreshold(threshold: number, unit: Unit): string {
  // A recovery point is computed (90 - 4.5): float noise is not part of what was written.
  const text = Number(threshold.toPrecision(12)).toString();
  if (unit === "" || unit === "lines") return unit ? formatValue(threshold, unit) : text;
  return unit === "/min" ? `${text}/min` : `${text} ${unit}`;
}

/** `2m`, `5m`, `1h 30m`, `45s`: a window for people. */
export function formatWindow(ms: number): string {
  const s = Math.round(ms / 1000);
  if (s % 3600 === 0) return `${s / 3600}h`;
  if (s >= 3600) return `${Math.floor(s / 3600)}h ${Math.round((s % 3600) / 60)}m`;
  if (s % 60 === 0) return `${s / 60}m`;
  return `${s}s`;
}

/** What a rule watches, in words: `disk.used_percent above 90 %`, `≥ 5 lines matching … within 5m`. */
export function describeRule(rule: Rule): string {
  switch (rule.kind) {
    case "threshold":
      return `${rule.metric} ${rule.op} ${formatThreshold(rule.threshold, ruleUnit(rule))}` +
        (RULE_METRICS[rule.metric]?.scope === "app" ? ` over ${formatWindow(rule.withinMs)}` : "") +
        (rule.forCycles > 1 ? ` for ${rule.forCycles} cycles` : "");
    case "log":
      return `≥ ${rule.atLeast} lines matching ${rule.query} within ${formatWindow(rule.withinMs)}`;
    case "certificate":
      return `certificate expiring within ${rule.days} days`;
    case "cron":
      return `cron job${rule.job ? ` ${rule.job}` : ""} failed`;
  }
}
