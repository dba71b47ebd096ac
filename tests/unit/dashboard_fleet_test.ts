/**
 * What the dashboard computes from the API's answers (dashboard/fleet.js), its API client's pure
 * parts (api.js), live updates' coalescing (live.js) and the search form (search.js), imported
 * directly; and that no module but the boot module touches the page when it is imported.
 */
import { assert, assertEquals } from "../helpers/assert.ts";
import {
  appKey,
  appText,
  attentionItems,
  byUrgency,
  changes,
  errorLinesFor,
  filterWords,
  placed,
  rowShown,
  ruleItems,
  searchQuery,
  serverStates,
  serverText,
  versionSkew,
} from "../../dashboard/fleet.js";
import { apiUrl, namesOf } from "../../dashboard/api.js";
import { coalesce, cycleTime } from "../../dashboard/live.js";
import { formParams } from "../../dashboard/search.js";

const LAST_OK = "2026-11-29T11:00:00.000Z";

/** alpha: web 1.4.0, api unhealthy with a certificate at risk; beta unreachable (web 1.3.9); gamma stale, over limits. */
function servers() {
  return [
    {
      name: "alpha",
      host: "10.0.0.1",
      state: "fresh",
      apps: [
        { app: "web", state: "fresh", status: "running", version: "1.4.0" },
        {
          app: "api",
          state: "unhealthy",
          status: "failed",
          version: "2.0.1",
          lastDeploy: { outcome: "failed", step: "health", message: "health: /health answered 500" },
          certificate: { atRisk: true, state: "expiring", daysLeft: 5, names: ["api.test"], notAfter: "2026-12-04" },
        },
      ],
    },
    {
      name: "beta",
      host: "10.0.0.2",
      state: "unreachable",
      lastError: "ssh: timeout",
      lastOk: LAST_OK,
      apps: [{ app: "web", state: "unreachable", version: "1.3.9" }],
    },
    {
      name: "gamma",
      host: "10.0.0.3",
      state: "stale",
      lastOk: LAST_OK,
      limits: ["error.log over 10 MB", "too many apps"],
      apps: [{ app: "web", state: "stale", version: "1.4.0" }],
    },
  ];
}

Deno.test("dashboard fleet: every app placed on its server, app names sorted and unique", () => {
  const { all, appNames } = placed(servers());
  assertEquals(all.map(({ server, app }) => `${server.name}/${app.app}`), [
    "alpha/web",
    "alpha/api",
    "beta/web",
    "gamma/web",
  ]);
  assertEquals(appNames, ["api", "web"]);
  assertEquals(byUrgency(all).map(({ server, app }) => `${server.name}/${app.app}`), [
    "beta/web",
    "alpha/api",
    "gamma/web",
    "alpha/web",
  ]);
});

Deno.test("dashboard fleet: what needs attention, most urgent first, as text data", () => {
  const items = attentionItems(servers());
  assertEquals(items.map((item) => item.kind), ["unreachable", "unhealthy", "certificate", "stale", "stale"]);
  assertEquals(items[0].parts, [
    { href: "#/server/beta", text: "beta" },
    " unreachable: ",
    "ssh: timeout",
    { muted: [" · last contact ", { time: LAST_OK }] },
  ]);
  assertEquals(items[1].parts, [
    { href: "#/server/alpha?app=api", text: "alpha / api" },
    " unhealthy (failed)",
    { muted: [" · last deploy failed", " at health", ": /health answered 500"] },
  ]);
  assertEquals(items[2].parts, [
    { href: "#/server/alpha?app=api", text: "alpha / api" },
    " certificate expires in 5 d",
    { muted: [" · api.test · valid until 2026-12-04"] },
  ]);
  assertEquals(items[3].parts, [{ href: "#/server/gamma", text: "gamma" }, " stale: last contact ", { time: LAST_OK }]);
  assertEquals(items[4].parts, [
    { href: "#/server/gamma", text: "gamma" },
    " over the collector's limits: ",
    "error.log over 10 MB",
    { muted: [" · and 1 more"] },
  ]);
  assertEquals(attentionItems([]), []);
});

Deno.test("dashboard fleet: alert rules firing or pending need attention, as text data", () => {
  const rules = [
    {
      rule: "disk",
      severity: "critical",
      state: "firing",
      server: "alpha",
      mount: "/srv/<b>data</b>",
      value: 62.5,
      valueText: "62.5 %",
      condition: "disk.used_percent above 50 %",
      since: LAST_OK,
    },
    {
      rule: "errors",
      severity: "warning",
      state: "pending",
      server: "alpha",
      app: "api",
      valueText: "0.07 %",
      condition: "app.error_percent above 0.05 % over 5m",
      since: LAST_OK,
    },
    {
      rule: "cron failed",
      severity: "warning",
      state: "firing",
      server: "beta",
      app: "web",
      job: "backup",
      condition: "cron job failed",
      since: "",
    },
  ];
  assertEquals(ruleItems(rules), [
    {
      kind: "rule",
      parts: [
        { href: "#/server/alpha", text: "alpha /srv/<b>data</b>" },
        " firing: disk (critical)",
        { muted: [" · disk.used_percent above 50 %", " · is 62.5 %", [" · since ", { time: LAST_OK }]] },
      ],
    },
    {
      kind: "pending",
      parts: [
        { href: "#/server/alpha?app=api", text: "alpha / api" },
        " pending: errors (warning)",
        { muted: [" · app.error_percent above 0.05 % over 5m", " · is 0.07 %", [" · since ", { time: LAST_OK }]] },
      ],
    },
    {
      kind: "rule",
      parts: [
        { href: "#/server/beta?app=web", text: "beta / web job backup" },
        " firing: cron failed (warning)",
        { muted: [" · cron job failed", "", ""] },
      ],
    },
  ]);
  // Among the rest: firing with the unhealthy (after them), pending with the stale.
  assertEquals(attentionItems(servers(), rules).map((item) => item.kind), [
    "unreachable",
    "unhealthy",
    "certificate",
    "rule",
    "rule",
    "stale",
    "stale",
    "pending",
  ]);
});

Deno.test("dashboard fleet: version skew with the majority version, null on a tie", () => {
  const { all } = placed(servers());
  const { skewed, majority } = versionSkew(all);
  assertEquals(skewed, [["web", [["1.4.0", ["alpha", "gamma"]], ["1.3.9", ["beta"]]]]]);
  assertEquals([...majority], [["web", "1.4.0"]]);
  const tie = versionSkew(placed(servers().slice(0, 2)).all);
  assertEquals([...tie.majority], [["web", null]]);
  assertEquals(tie.skewed[0][1].map(([version]) => version), ["1.3.9", "1.4.0"], "a tie sorts by version");
  assertEquals(versionSkew(placed([servers()[0]]).all).skewed, [], "one version each: no skew");
});

Deno.test("dashboard fleet: changes between renders are an app's state or version", () => {
  const first = changes(null, placed(servers()).all);
  assertEquals(first.changed.size, 0, "nothing has changed on the first render");
  const next = servers();
  next[0].apps[0].version = "1.5.0";
  next[2].apps[0].state = "fresh";
  const second = changes(first.snapshot, placed(next).all);
  assertEquals([...second.changed].sort(), [appKey("alpha", "web"), appKey("gamma", "web")]);
  assertEquals(changes(second.snapshot, placed(next).all).changed.size, 0);
});

Deno.test("dashboard fleet: filters match every word and the pressed state", () => {
  const [alpha, beta] = servers();
  const row = { text: serverText(alpha), states: serverStates(alpha) };
  assertEquals(row.text, "alpha 10.0.0.1 web 1.4.0 api 2.0.1");
  assertEquals([...serverStates(beta)].sort(), ["unreachable"]);
  assertEquals([...row.states].sort(), ["fresh", "unhealthy"]);
  assertEquals(filterWords("  API  2.0 "), ["api", "2.0"]);
  assert(rowShown(row, null, []));
  assert(rowShown(row, "unhealthy", filterWords("api 2.0")));
  assert(!rowShown(row, "stale", []));
  assert(!rowShown(row, null, filterWords("api 3.0")));
  assertEquals(appText({ server: alpha, app: alpha.apps[1] }), "alpha 10.0.0.1 api 2.0.1 failed api.test");
});

Deno.test("dashboard fleet: a server's error lines of one app since a deploy", () => {
  const lines = [
    { app: "web", ts: "2026-11-29T10:00:00Z" },
    { app: "api", ts: "2026-11-29T11:00:00Z" },
    { app: "web", ts: "2026-11-29T12:00:00Z" },
  ];
  assertEquals(errorLinesFor(lines, { app: "", since: "" }), lines);
  assertEquals(errorLinesFor(lines, { app: "web", since: "" }), [lines[0], lines[2]]);
  assertEquals(errorLinesFor(lines, { app: "web", since: "2026-11-29T11:00:00Z" }), [lines[2]]);
  assertEquals(errorLinesFor(lines, { app: "", since: "2026-11-29T11:00:00Z" }), [lines[1], lines[2]]);
  assertEquals(errorLinesFor(lines, { app: "", since: "garbage" }), lines, "a bad time filters nothing");
});

Deno.test("dashboard fleet: a search's API query from its hash, and its hash from the form", () => {
  const now = Date.parse("2026-11-29T12:00:00Z");
  assertEquals(searchQuery(new URLSearchParams("q=timeout&server=alpha&range=1h"), now), {
    q: "timeout",
    server: "alpha",
    app: "",
    file: "",
    since: now - 3_600_000,
    until: "",
  });
  const custom = "q=x&range=custom&since=2000-01-01T00:00:00.000Z&until=2000-01-02T00:00:00.000Z";
  assertEquals(searchQuery(new URLSearchParams(custom), now), {
    q: "x",
    server: "",
    app: "",
    file: "",
    since: "2000-01-01T00:00:00.000Z",
    until: "2000-01-02T00:00:00.000Z",
  });
  assertEquals(searchQuery(new URLSearchParams("q=x&range=2h&since=2000-01-01"), now).since, "", "unknown range");

  const form = (fields: Record<string, string>) => (name: string) => fields[name] ?? "";
  assertEquals(formParams(form({ q: "x", range: "1h", since: "2026-11-29T07:00" })), {
    q: "x",
    server: "",
    app: "",
    file: "",
    range: "1h",
  });
  assertEquals(formParams(form({ q: "x", range: "custom", since: "2026-11-29T07:00", until: "" })), {
    q: "x",
    server: "",
    app: "",
    file: "",
    range: "custom",
    since: new Date("2026-11-29T07:00").toISOString(), // local time, as the input shows it
    until: "",
  });
});

Deno.test("dashboard api: URLs leave empty parameters out; names come from an overview", () => {
  const url = apiUrl("/api/search", { q: "a b", server: "", app: null, before: undefined, limit: 50 }, "http://h:1");
  assertEquals(url.href, "http://h:1/api/search?q=a+b&limit=50");
  assertEquals(namesOf({ servers: servers() }), { servers: ["alpha", "beta", "gamma"], apps: ["api", "web"] });
});

Deno.test("dashboard live: refreshes run one at a time; calls meanwhile make one more run", async () => {
  let runs = 0;
  let release = () => {};
  const refresh = coalesce(async () => {
    runs++;
    await new Promise<void>((resolve) => (release = resolve));
  });
  const first = refresh();
  assertEquals(runs, 1);
  await Promise.all([refresh(), refresh(), refresh()]);
  assertEquals(runs, 1, "still the first run");
  release();
  await new Promise((resolve) => setTimeout(resolve, 0));
  assertEquals(runs, 2, "one more run for the three calls");
  release();
  await first;
  assertEquals(runs, 2);
  const again = refresh();
  assertEquals(runs, 3, "a later call runs at once");
  release();
  await again;
});

Deno.test("dashboard live: a cycle's time is its summary's, else now", () => {
  assertEquals(cycleTime('{"at":"2026-11-29T12:00:00.000Z"}', 5), Date.parse("2026-11-29T12:00:00.000Z"));
  assertEquals(cycleTime("not json", 5), 5);
  assertEquals(cycleTime('{"at":"garbage"}', 5), 5);
  assertEquals(cycleTime("{}", 5), 5);
});

Deno.test("dashboard modules: only the boot module touches the page when imported", async () => {
  const dir = new URL("../../dashboard/", import.meta.url);
  const names = [...Deno.readDirSync(dir)].map((entry) => entry.name).filter((name) => name.endsWith(".js"));
  assert(names.includes("app.js") && names.length > 5, names.join(", "));
  assertEquals("document" in globalThis, false);
  for (const name of names.filter((name) => name !== "app.js")) await import(new URL(name, dir).href);
});
