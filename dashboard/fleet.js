/**
 * What the views compute from the API's answers, pure (no DOM): the overview's attention list,
 * version skew, changes between renders and filters; the server page's error filter; the search's
 * query. Tested in tests/unit/dashboard_fleet_test.ts.
 * @module
 */
import { certificateText, outcomeLabel, RANGES, SEVERITY, withoutStep } from "./format.js";
import { serverHref } from "./routes.js";

/**
 * @typedef {{ server: any, app: any }} Placed An app with the server it runs on.
 */

/**
 * Every app of `servers` with its server, and the apps' names (sorted).
 * @returns {{ all: Placed[], appNames: string[] }}
 */
export function placed(servers) {
  const all = servers.flatMap((server) => server.apps.map((app) => ({ server, app })));
  return { all, appNames: [...new Set(all.map(({ app }) => app.app))].sort() };
}

/** An app's last deploy when it is a record (older status.json files have a string), else null. */
export const lastDeploy = (app) => (app.lastDeploy && typeof app.lastDeploy === "object" ? app.lastDeploy : null);

/**
 * The alert rules' subjects firing or pending (the API's `rules`), as attention items: kind `rule`
 * (firing) or `pending`; the subject linked to its server (and app), the rule, what it watches,
 * the last value and since when.
 * @param {any[]} rules
 * @returns {{ kind: string, parts: any[] }[]}
 */
export function ruleItems(rules) {
  return rules.map((rule) => ({
    kind: rule.state === "firing" ? "rule" : "pending",
    parts: [
      {
        href: serverHref(rule.server, rule.app ? { app: rule.app } : {}),
        text: [rule.server, rule.app].filter(Boolean).join(" / ") + (rule.mount ? ` ${rule.mount}` : "") +
          (rule.job ? ` job ${rule.job}` : ""),
      },
      ` ${rule.state === "firing" ? "firing" : "pending"}: ${rule.rule} (${rule.severity})`,
      {
        muted: [
          ` · ${rule.condition}`,
          rule.valueText ? ` · is ${rule.valueText}` : "",
          rule.since ? [" · since ", { time: rule.since }] : "",
        ],
      },
    ],
  }));
}

/**
 * What needs attention, most urgent first (stable): unreachable and stale servers (with why),
 * servers over the collector's limits, unhealthy apps, apps with a process not running, certificates
 * at risk, alert rules firing or pending ({@link ruleItems}). Each item is its
 * kind and its text as data (see widgets.js's `rich`): strings, `{href, text}`, `{time}`, `{muted}`.
 * @param {any[]} servers
 * @param {any[]} [rules] the API's `rules`
 * @returns {{ kind: string, parts: any[] }[]}
 */
export function attentionItems(servers, rules = []) {
  const items = [];
  const item = (kind, ...parts) => items.push({ kind, parts });
  const serverLink = (server) => ({ href: serverHref(server.name), text: server.name });
  const appLink = ({ server, app }) => ({
    href: serverHref(server.name, { app: app.app }),
    text: `${server.name} / ${app.app}`,
  });
  for (const server of servers) {
    if (server.state === "unreachable") {
      item("unreachable", serverLink(server), " unreachable: ", server.lastError ?? "no answer", {
        muted: [" · last contact ", { time: server.lastOk }],
      });
    } else if (server.state === "stale") {
      item("stale", serverLink(server), " stale: last contact ", { time: server.lastOk });
    }
    if (server.limits?.length) {
      item(
        "stale",
        serverLink(server),
        " over the collector's limits: ",
        server.limits[0],
        server.limits.length > 1 ? { muted: [` · and ${server.limits.length - 1} more`] } : null,
      );
    }
  }
  const { all } = placed(servers);
  for (const placedApp of all) {
    const { app } = placedApp;
    if (app.state !== "unhealthy") continue;
    const last = lastDeploy(app);
    item(
      "unhealthy",
      appLink(placedApp),
      ` unhealthy${app.status ? ` (${app.status})` : ""}`,
      last?.outcome && last.outcome !== "success"
        ? {
          muted: [
            ` · last deploy ${outcomeLabel(last.outcome)[0]}`,
            last.step ? ` at ${last.step}` : "",
            last.message ? `: ${withoutStep(last.step, last.message)}` : "",
          ],
        }
        : null,
    );
  }
  for (const placedApp of all) {
    const processes = placedApp.app.processes;
    if (!processes?.down) continue;
    const down = processes.groups.filter((g) => g.up < g.count)
      .map((g) => `${g.type} ${g.count - g.up} of ${g.count} ${g.down.join("/") || "not running"}`);
    item(
      "unhealthy",
      appLink(placedApp),
      ` ${processes.down} process${processes.down === 1 ? "" : "es"} not running`,
      { muted: [` · ${down.join(", ")}`] },
    );
  }
  for (const placedApp of all) {
    const cert = placedApp.app.certificate;
    if (!cert?.atRisk) continue;
    item(
      "certificate",
      appLink(placedApp),
      cert.state === "expired"
        ? " certificate expired"
        : cert.state === "expiring"
        ? ` certificate expires in ${cert.daysLeft} d`
        : " has no certificate",
      { muted: [` · ${certificateText(cert)}`] },
    );
  }
  items.push(...ruleItems(rules));
  return items.sort((a, b) => SEVERITY[a.kind] - SEVERITY[b.kind]);
}

/**
 * Version skew: the apps that run different versions on different servers, each with its
 * versions (most servers first, then by version) and the servers running each; `majority` maps a
 * skewed app to the version most servers run (null on a tie: every cell is marked).
 * @param {Placed[]} all
 * @returns {{ skewed: [string, [string, string[]][]][], majority: Map<string, string | null> }}
 */
export function versionSkew(all) {
  /** @type {Map<string, Map<string, string[]>>} */
  const versions = new Map();
  for (const { server, app } of all) {
    if (!app.version) continue;
    const byVersion = versions.get(app.app) ?? versions.set(app.app, new Map()).get(app.app);
    byVersion.set(app.version, [...(byVersion.get(app.version) ?? []), server.name]);
  }
  const majority = new Map();
  const skewed = [];
  for (const name of [...versions.keys()].sort()) {
    const sorted = [...versions.get(name)].sort((a, b) => b[1].length - a[1].length || a[0].localeCompare(b[0]));
    if (sorted.length < 2) continue;
    skewed.push([name, sorted]);
    majority.set(name, sorted[0][1].length > sorted[1][1].length ? sorted[0][0] : null);
  }
  return { skewed, majority };
}

/**
 * Each app's state and version (`snapshot`), and the apps whose state or version differs from
 * `previous` (a snapshot of the last render; null: nothing has changed yet).
 * @param {Map<string, string> | null} previous
 * @param {Placed[]} all
 */
export function changes(previous, all) {
  const snapshot = new Map();
  const changed = new Set();
  for (const { server, app } of all) {
    const key = appKey(server.name, app.app);
    const value = `${app.state}\u0000${app.version}`;
    snapshot.set(key, value);
    if (previous !== null && previous.get(key) !== value) changed.add(key);
  }
  return { snapshot, changed };
}

/** An app's key in {@link changes}' sets. */
export const appKey = (server, app) => `${server}\u0000${app}`;

/** Apps most urgent first, then by server and app name. */
export function byUrgency(all) {
  return [...all].sort((a, b) =>
    SEVERITY[a.app.state] - SEVERITY[b.app.state] || a.server.name.localeCompare(b.server.name) ||
    a.app.app.localeCompare(b.app.app)
  );
}

/** The lower-case words of a filter box. */
export const filterWords = (text) => text.toLowerCase().split(/\s+/).filter(Boolean);

/**
 * Whether a row (its lower-case `text` and its `states`) passes the state button (`state`, null:
 * any) and every word of the filter box.
 * @param {{ text: string, states: Set<string> }} row
 * @param {string | null} state
 * @param {string[]} words
 */
export const rowShown = (row, state, words) =>
  (state === null || row.states.has(state)) && words.every((word) => row.text.includes(word));

/** A matrix row's filter text: the server, its host, and its apps with their versions. */
export const serverText = (server) =>
  [server.name, server.host, ...server.apps.flatMap((app) => [app.app, app.version ?? ""])].join(" ").toLowerCase();

/** An app row's filter text: server, host, app, version, status and certificate names. */
export function appText({ server, app }) {
  const names = Array.isArray(app.certificate?.names) ? app.certificate.names.join(" ") : "";
  return `${server.name} ${server.host} ${app.app} ${app.version ?? ""} ${app.status ?? ""} ${names}`.toLowerCase();
}

/** A matrix row's states: its apps' states, and the server's own when it is not fresh. */
export function serverStates(server) {
  const states = new Set(server.apps.map((app) => app.state));
  if (server.state !== "fresh") states.add(server.state);
  return states;
}

/**
 * A server's error lines of one app (`filter.app`, "" for every app) since a time
 * (`filter.since`, ISO; "" for any time).
 * @param {any[]} lines
 * @param {{ app: string, since: string }} filter
 */
export function errorLinesFor(lines, filter) {
  const since = filter.since ? Date.parse(filter.since) : NaN;
  return lines.filter((line) =>
    (!filter.app || line.app === filter.app) && (Number.isNaN(since) || Date.parse(line.ts) >= since)
  );
}

/**
 * The /api/search parameters of a search page's hash parameters: a preset `range` becomes a
 * `since` in ms before `now`; `custom` keeps the hash's `since` and `until`.
 * @param {URLSearchParams} params
 * @param {number} [now]
 */
export function searchQuery(params, now = Date.now()) {
  const range = params.get("range") ?? "";
  const custom = range === "custom";
  return {
    q: params.get("q") ?? "",
    server: params.get("server") ?? "",
    app: params.get("app") ?? "",
    file: params.get("file") ?? "",
    since: custom ? params.get("since") ?? "" : RANGES[range] ? now - RANGES[range] : "",
    until: custom ? params.get("until") ?? "" : "",
  };
}
