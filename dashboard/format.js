/**
 * Formatting: labels, times, sizes and deploy messages as text. Pure (no DOM), so the unit tests
 * import it directly (tests/unit/dashboard_format_test.ts).
 * @module
 */

/** App states, most urgent first (and where a certificate at risk ranks in "Needs attention"). */
export const SEVERITY = { unreachable: 0, unhealthy: 1, certificate: 1, rule: 1, stale: 2, pending: 2, fresh: 3 };
export const STATE_LABEL = { fresh: "healthy", unhealthy: "unhealthy", stale: "stale", unreachable: "unreachable" };
export const STATE_GLYPH = { fresh: "", unhealthy: "✕", stale: "◷", unreachable: "⊘" };
/** Deploy outcomes, and those of rollouts and their servers: [label, badge kind]. */
export const OUTCOME = {
  success: ["success", "ok"],
  failed: ["failed", "bad"],
  rolled_back: ["rolled back", "warn"],
  rollback_failed: ["rollback failed", "bad"],
  cancelled: ["cancelled", "neutral"],
  refused: ["refused", "neutral"],
  running: ["running", "warn"],
  stopped: ["stopped", "bad"],
  interrupted: ["interrupted", "bad"],
  pending: ["pending", "neutral"],
  deploying: ["deploying", "warn"],
  skipped: ["skipped", "neutral"],
};
/** Certificate states (see the API's CertificateView) as badge kinds: red when expiring, expired or failed. */
export const CERTIFICATE_KIND = { valid: "ok", expiring: "bad", expired: "bad", error: "bad", pending: "neutral" };
/** The search's preset time ranges, in ms. */
export const RANGES = { "15m": 15 * 60_000, "1h": 3_600_000, "24h": 86_400_000, "7d": 7 * 86_400_000 };
/** A log line that starts with its own timestamp (as the collector recognizes them). */
export const OWN_TIME = /^\[?\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d/;

/**
 * The characters {@link visible} escapes: C0 controls but tab and newline, DEL, C1 controls, and
 * the bidirectional marks, embeddings, overrides and isolates (U+200E/F, U+202A–U+202E,
 * U+2066–U+2069). The CLI's rule (src/terminal.ts, forTerminal), which a unit test holds them to.
 */
// deno-lint-ignore no-control-regex
const UNSAFE = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

/**
 * Text from a server (status.json, a log line) as shown: each of those characters as `\xNN`
 * (`\uNNNN` beyond U+00FF), as the CLI prints them. Shown raw, a bidi override reorders the rest of
 * its line (a version "\u202e3.2.1v" reads "v1.2.3"); escaped, it is seen for what it is. dom.js
 * passes every text and shown attribute through it.
 * @param {string} text
 */
export const visible = (text) =>
  text.replace(UNSAFE, (char) => {
    const code = char.charCodeAt(0);
    return code <= 0xff ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16).padStart(4, "0")}`;
  });

/** Intl formatters, made on first use (making one costs milliseconds). */
const formats = {};
/** Date and time, medium style, in the browser's locale. */
export const absolute =
  () => (formats.absolute ??= new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" }));
/** Hours, minutes and seconds. */
export const clock = () => (formats.clock ??= new Intl.DateTimeFormat(undefined, {
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
}));

/**
 * "3 min ago" (or "in 3 min") for a time in ms; under 10 s either way is "just now".
 * @param {number} ms
 * @param {number} [now]
 */
export function ago(ms, now = Date.now()) {
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

/**
 * A log line's time: the clock time when it is today (by `now`), else the date and time.
 * @param {number} ms
 * @param {number} [now]
 */
export function stampText(ms, now = Date.now()) {
  const today = new Date(now).toDateString() === new Date(ms).toDateString();
  return today ? clock().format(ms) : absolute().format(ms);
}

/** "850 ms", "3.2 s", "2 min 5 s"; "—" when not a number. */
export function duration(ms) {
  if (typeof ms !== "number") return "—";
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
}

/** "512 B", "1.5 KB", "2.0 MB"; "—" when not a number. */
export function bytes(n) {
  if (typeof n !== "number") return "—";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

/** "2026-11-29T07:00" (a datetime-local value, in local time) for an ISO time; "" when not a time. */
export function localInput(iso) {
  const ms = Date.parse(iso);
  if (Number.isNaN(ms)) return "";
  const date = new Date(ms - new Date(ms).getTimezoneOffset() * 60_000);
  return date.toISOString().slice(0, 16);
}

/** An ISO time for a datetime-local value (read as local time); "" for "". */
export const fromLocalInput = (value) => (value ? new Date(value).toISOString() : "");

/** A deploy message without its leading "<step>: " (the step is shown on its own). */
export const withoutStep = (step, message) =>
  step && typeof message === "string" && message.startsWith(`${step}: `) ? message.slice(step.length + 2) : message;

/**
 * `list` newest first by the ISO time `at(item)` gives (stable: equal times keep their order;
 * items without a valid time last).
 * @template T
 * @param {T[]} list
 * @param {(item: T) => string} at
 * @returns {T[]}
 */
export function byTime(list, at) {
  const time = (item) => Date.parse(at(item)) || 0;
  return [...list].sort((a, b) => time(b) - time(a));
}

/** An outcome's label and badge kind; an unknown outcome is its own label, neutral. */
export const outcomeLabel = (outcome) => Object.hasOwn(OUTCOME, outcome) ? OUTCOME[outcome] : [outcome, "neutral"];

/** A certificate in one line: names, issuer, expiry, last error. */
export function certificateText(cert) {
  return [
    Array.isArray(cert.names) ? cert.names.join(", ") : "",
    cert.issuer,
    cert.notAfter ? `valid until ${String(cert.notAfter).slice(0, 10)}` : "no certificate yet",
    cert.lastError ? `last error: ${cert.lastError}` : "",
  ].filter(Boolean).join(" · ");
}

/** An app's maintenance mode in words (a badge's tooltip): since when, Retry-After, who may pass, the message. */
export function maintenanceText(m) {
  if (m.error) return `maintenance.json is not valid: ${m.error}`;
  return [
    "In maintenance: the proxy answers 503",
    m.since ? `since ${String(m.since).slice(0, 16).replace("T", " ")} UTC` : "",
    m.retryAfter ? `Retry-After ${m.retryAfter} s` : "",
    Array.isArray(m.allow) && m.allow.length ? `allowed: ${m.allow.join(", ")}` : "no address allowed",
    m.message ? `message: ${m.message}` : "",
  ].filter(Boolean).join(" · ");
}

/** A certificate's badge text: days left (`88 d`), `expired`, `failed` or `pending`; `!` after a failed renewal. */
export function certificateLabel(cert) {
  const days = typeof cert.daysLeft === "number" ? cert.daysLeft : null;
  if (cert.state === "expired") return "expired";
  if (days === null) return cert.state === "error" ? "failed" : "pending";
  return `${days} d${cert.state === "error" ? " !" : ""}`;
}

/** Cron run outcomes: [label, badge kind]; failed and timeout in red. */
export const CRON_OUTCOME = {
  ok: ["ok", "ok"],
  failed: ["failed", "bad"],
  timeout: ["timeout", "bad"],
  skipped: ["skipped", "warn"],
};

/** A cron run's outcome label and badge kind; an unknown one is its own label, neutral. */
export const cronOutcomeLabel = (outcome) =>
  Object.hasOwn(CRON_OUTCOME, outcome) ? CRON_OUTCOME[outcome] : [String(outcome), "neutral"];

/**
 * An app's processes (the API's ProcessesView) in a few words, and whether any does not run:
 * `web ×2, worker ×2 online · 3 restarts`, or `web ×1 online, worker ×2: 1 errored · 3 restarts`.
 * Null without processes.
 * @param {any} processes
 * @returns {{ text: string, bad: boolean, title: string } | null}
 */
export function processSummary(processes) {
  if (!processes || !Array.isArray(processes.groups) || !processes.groups.length) return null;
  const bad = processes.down > 0;
  const groups = processes.groups.map((g) => {
    const name = `${g.type} ×${g.count}`;
    if (g.up === g.count) return bad ? `${name} online` : name;
    const down = g.count - g.up;
    const states = Array.isArray(g.down) && g.down.length ? g.down.join("/") : "not online";
    return `${name}: ${down} ${states}`;
  });
  const text = groups.join(", ") + (bad ? "" : " online") +
    (processes.restarts ? ` · ${processes.restarts} restart${processes.restarts === 1 ? "" : "s"}` : "") +
    (processes.omitted ? ` · ${processes.omitted} more not kept` : "");
  const title = `${processes.up} of ${processes.total - processes.omitted} running (online, active or running)` +
    (processes.omitted ? `; ${processes.total} listed, ${processes.omitted} not kept` : "");
  return { text, bad, title };
}
