/**
 * The fleet monitor's HTTP API over a real fleet database (a temporary SQLite file filled through
 * the store's write methods): every endpoint, the token rule, Server-Sent Events and serveFleet.
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { UsageError } from "../../src/errors.ts";
import { createFleetHandler, type FleetHandler, type FleetHandlerOptions, serveFleet } from "../../src/fleet/api.ts";
import { checkBinding, isLoopback, listenError } from "../../src/fleet/api_binding.ts";
import { FleetEvents } from "../../src/fleet/events.ts";
import type { FreshnessView } from "../../src/fleet/views.ts";
import type { CertificateState } from "../../src/proxy/cert_state.ts";
import { type DeploymentRow, FleetStore } from "../../src/fleet/store.ts";

const NOW = Date.parse("2026-11-29T07:00:00Z");
const MINUTE = 60_000;
const VIEW: FreshnessView = { now: NOW, intervalMs: MINUTE, holding: false, gapMs: 0 };

/** Appends lines to a file's current generation (a new one when there is none). */
function ingest(store: FleetStore, server: string, app: string, file: string, texts: string[], ts: number): void {
  const path = `/var/log/deployments/${app}/${file}`;
  const ledger = store.ledger(server, path) ?? store.newGeneration(server, path, null, "head", 4);
  const lines = texts.map((text, i) => {
    const line = { offset: ledger.offset, text, ts: ts + i * 1000 };
    ledger.offset += new TextEncoder().encode(text).length + 1;
    return line;
  });
  store.ingestLines(ledger, app, file, lines);
}

function deploy(store: FleetStore, server: string, app: string, rows: Omit<DeploymentRow, "offset">[]): void {
  const path = `/var/log/deployments/${app}/deploy.log`;
  const ledger = store.ledger(server, path) ?? store.newGeneration(server, path, null, "head", 4);
  const withOffsets = rows.map((row) => {
    const offset = ledger.offset;
    ledger.offset += 100;
    return { ...row, offset };
  });
  store.ingestDeployments(ledger, app, withOffsets);
}

/**
 * alpha: pulled 10 s ago, web healthy and api unhealthy; bravo: last pulled 10 min ago (stale);
 * charlie: pulled 10 min ago, failed 5 s ago (unreachable).
 */
function fill(store: FleetStore): void {
  store.recordContact("alpha", "alpha.example", { at: NOW - 10_000, ok: true, durationMs: 120.4, bytes: 2048 });
  store.recordContact("bravo", "bravo.example", { at: NOW - 10 * MINUTE, ok: true, durationMs: 80, bytes: 512 });
  store.recordContact("charlie", "charlie.example", { at: NOW - 10 * MINUTE, ok: true, durationMs: 90, bytes: 1 });
  store.recordContact("charlie", "charlie.example", {
    at: NOW - 5000,
    ok: false,
    error: "ssh: connect to host charlie.example port 22: Connection refused",
    durationMs: 3000,
    bytes: 0,
  });
  const status = {
    type: "node",
    status: "running",
    healthy: true,
    version: "1.4.0",
    commit: "0123456789abcdef",
    deployed: "2026-11-28T12:00:00Z",
    lastHealthCheck: "2026-11-29T06:59:50Z",
    port: 3000,
    strategy: "blue-green",
    lastDeploy: { outcome: "success", release: "20261128-120000" },
  };
  store.upsertApp("alpha", "web", status, NOW - 10_000);
  store.upsertApp("alpha", "api", { ...status, healthy: false, status: "failing", port: 3001 }, NOW - 10_000);
  store.upsertApp("bravo", "web", status, NOW - 10 * MINUTE);
  store.upsertApp("charlie", "web", status, NOW - 10 * MINUTE);

  const t0 = NOW - 60 * MINUTE;
  ingest(store, "alpha", "web", "access.log", ["GET / 200", "GET /login 200", "GET /api/users 500"], t0);
  ingest(store, "alpha", "web", "error.log", [
    "Error: upstream timeout after 30s",
    "retrying the database",
    "Error: timeout again",
  ], t0 + 10_000);
  ingest(store, "bravo", "web", "error.log", ["bravo: timeout talking to redis", "bravo: recovered"], t0 + 20_000);
  ingest(store, "alpha", "api", "access.log", ["POST /orders 201 timeout=5"], t0 + 30_000);

  deploy(store, "alpha", "web", [
    { at: "2026-11-27T10:00:00Z", outcome: "success", release: "r1", commit: "aaaaaaa1111", duration: 5000 },
    { at: "2026-11-28T10:00:00Z", outcome: "failed", release: "r2", step: "health", message: "no answer" },
    { at: "2026-11-28T12:00:00Z", outcome: "success", release: "r3", commit: "bbbbbbb2222", duration: 4000 },
  ]);
  deploy(store, "bravo", "web", [{ at: "2026-11-28T11:00:00Z", outcome: "success", release: "b1" }]);
}

interface Fixture {
  store: FleetStore;
  events: FleetEvents;
  handler: FleetHandler;
  get: (path: string, init?: RequestInit) => Promise<Response>;
}

async function withFleet(
  fn: (fixture: Fixture) => Promise<void>,
  options: Partial<FleetHandlerOptions> = {},
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "fleet-api-" });
  const store = await FleetStore.open(join(dir, "fleet.db"));
  try {
    fill(store);
    const events = new FleetEvents();
    const handler = createFleetHandler({
      store,
      events,
      view: () => VIEW,
      collectorStats: () => ({ cycles: 7, lastCycleMs: 1250, errors: 2 }),
      servers: () => [{ name: "alpha", netdata: "http://alpha.example:19999" }, { name: "bravo" }, { name: "charlie" }],
      log: () => {},
      ...options,
    });
    const get = (path: string, init?: RequestInit) => handler(new Request(`http://127.0.0.1:8750${path}`, init));
    await fn({ store, events, handler, get });
  } finally {
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
}

async function getJson(response: Response, status = 200): Promise<Record<string, unknown>> {
  const body = await response.text();
  assertEquals(response.status, status, body);
  assertEquals(response.headers.get("content-type"), "application/json; charset=utf-8");
  assertEquals(response.headers.get("cache-control"), "no-store");
  assertEquals(response.headers.get("x-content-type-options"), "nosniff");
  return JSON.parse(body);
}

// deno-lint-ignore no-explicit-any
type Any = any;

Deno.test("fleet API: /api/fleet reports fresh, stale, unreachable and unhealthy apps, and counts them", async () => {
  await withFleet(async ({ get }) => {
    const body = await getJson(await get("/api/fleet")) as Any;
    assertEquals(body.generatedAt, "2026-11-29T07:00:00.000Z");
    assertEquals(body.counts, { healthy: 1, unhealthy: 1, stale: 1, unreachable: 1 });
    const servers = Object.fromEntries(body.servers.map((s: Any) => [s.name, s]));
    assertEquals(Object.keys(servers), ["alpha", "bravo", "charlie"]);
    assertEquals(servers.alpha.state, "fresh");
    assertEquals(servers.alpha.netdata, "http://alpha.example:19999");
    assertEquals(servers.alpha.lastOk, "2026-11-29T06:59:50.000Z");
    assertEquals(servers.alpha.lastDurationMs, 120);
    assertEquals(servers.alpha.lastBytes, 2048);
    assertEquals(servers.bravo.state, "stale");
    assertEquals(servers.charlie.state, "unreachable");
    assertMatch(servers.charlie.lastError, /Connection refused/);
    assertEquals(servers.charlie.lastOk, "2026-11-29T06:50:00.000Z");
    const [api, web] = servers.alpha.apps;
    assertEquals([api.app, api.state, api.freshness, api.healthy], ["api", "unhealthy", "fresh", false]);
    assertEquals(web, {
      app: "web",
      type: "node",
      status: "running",
      healthy: true,
      version: "1.4.0",
      commit: "0123456789abcdef",
      deployed: "2026-11-28T12:00:00Z",
      lastHealthCheck: "2026-11-29T06:59:50Z",
      port: 3000,
      strategy: "blue-green",
      lastDeploy: { outcome: "success", release: "20261128-120000" },
      fetchedAt: "2026-11-29T06:59:50.000Z",
      freshness: "fresh",
      state: "fresh",
      certificate: null,
      processes: null,
    });
    assertEquals(servers.bravo.apps[0].state, "stale");
    assertEquals(servers.charlie.apps[0].state, "unreachable");
  });
});

Deno.test("fleet API: while holding (after sleep) the last known state is kept; a sleep gap is no age", async () => {
  let view: FreshnessView = { ...VIEW, holding: true };
  await withFleet(async ({ get }) => {
    const held = await getJson(await get("/api/fleet")) as Any;
    assertEquals(held.counts, { healthy: 3, unhealthy: 1, stale: 0, unreachable: 0 });
    assertEquals(held.servers.map((s: Any) => s.state), ["fresh", "fresh", "fresh"]);

    view = { ...VIEW, gapMs: 9 * MINUTE }; // bravo's 10 min minus 9 min asleep: 1 min old
    const gap = await getJson(await get("/api/fleet")) as Any;
    assertEquals(gap.servers.map((s: Any) => s.state), ["fresh", "fresh", "unreachable"]);
    assertEquals(gap.counts, { healthy: 2, unhealthy: 1, stale: 0, unreachable: 1 });
  }, { view: () => view });
});

Deno.test("fleet API: /api/servers/:name: apps, deployments, error.log lines, netdata; unknown: 404", async () => {
  await withFleet(async ({ get }) => {
    const alpha = await getJson(await get("/api/servers/alpha")) as Any;
    assertEquals([alpha.name, alpha.host, alpha.state, alpha.pulls, alpha.errors], [
      "alpha",
      "alpha.example",
      "fresh",
      1,
      0,
    ]);
    assertEquals(alpha.netdata, "http://alpha.example:19999");
    assertEquals(alpha.apps.map((a: Any) => a.app), ["api", "web"]);
    assertEquals(alpha.deployments.map((d: Any) => d.release), ["r3", "r2", "r1"]);
    assertEquals(alpha.deployments[1].step, "health");
    assertEquals(alpha.errorLines.map((l: Any) => l.text), [
      "Error: timeout again",
      "retrying the database",
      "Error: upstream timeout after 30s",
    ]);
    assert(alpha.errorLines.every((l: Any) => l.file === "error.log" && l.server === "alpha"));

    const charlie = await getJson(await get("/api/servers/charlie")) as Any;
    assertEquals([charlie.state, charlie.errors, charlie.netdata], ["unreachable", 1, null]);

    assertEquals(alpha.rules, [], "no alert rules given: none");

    const unknown = await getJson(await get("/api/servers/zulu"), 404) as Any;
    assertMatch(unknown.error, /zulu/);
    await getJson(await get("/api/servers/%E0%A4%A"), 400);
  });
});

Deno.test("fleet API: each app's certificate, judged at the view's now (days left, state, at risk)", async () => {
  await withFleet(async ({ store, get }) => {
    const certificate: CertificateState = {
      names: ["a.test", "www.a.test"],
      source: "acme",
      issuer: "C=US, O=Let's Encrypt, CN=R11",
      notBefore: "2026-11-01T00:00:00.000Z",
      notAfter: "2027-01-30T00:00:00.000Z",
      lastError: null,
      lastErrorAt: null,
      nextAttemptAt: null,
    };
    const failing: CertificateState = {
      ...certificate,
      names: ["api.test"],
      notAfter: "2026-12-05T00:00:00.000Z",
      lastError: "rateLimited: too many certificates",
      lastErrorAt: "2026-11-29T06:00:00.000Z",
      nextAttemptAt: "2026-11-29T08:00:00.000Z",
    };
    store.replaceCertificates("alpha", new Map([["web", certificate], ["api", failing], ["idle", certificate]]), NOW);
    const fleet = await getJson(await get("/api/fleet")) as Any;
    const [api, web] = fleet.servers[0].apps;
    assertEquals(web.certificate, { ...certificate, state: "valid", daysLeft: 61, atRisk: false });
    assertEquals(api.certificate, { ...failing, state: "expiring", daysLeft: 5, atRisk: true });
    assertEquals(fleet.servers[1].apps[0].certificate, null, "bravo has none");
    assertEquals(fleet.servers[0].apps.length, 2, "a certificate without a status.json adds no app");
    const alpha = await getJson(await get("/api/servers/alpha")) as Any;
    assertEquals(alpha.apps.map((a: Any) => a.certificate?.state), ["expiring", "valid"]);
  });
});

Deno.test("fleet API: search across two servers, newest first, with highlighted parts and cursor paging", async () => {
  await withFleet(async ({ get }) => {
    const all = await getJson(await get("/api/search?q=timeout")) as Any;
    assertEquals(all.nextBefore, undefined);
    assertEquals(all.results.map((r: Any) => `${r.server}/${r.app}/${r.file}: ${r.text}`), [
      "alpha/api/access.log: POST /orders 201 timeout=5",
      "bravo/web/error.log: bravo: timeout talking to redis",
      "alpha/web/error.log: Error: timeout again",
      "alpha/web/error.log: Error: upstream timeout after 30s",
    ]);
    const ids = all.results.map((r: Any) => r.id);
    assertEquals(ids, [...ids].sort((a: number, b: number) => b - a));
    const bravo = all.results[1];
    assertEquals(bravo.snippet, [
      { text: "bravo: ", hit: false },
      { text: "timeout", hit: true },
      { text: " talking to redis", hit: false },
    ]);
    assertEquals(bravo.kind, "line");
    assertEquals(bravo.offset, 0);
    assertEquals(bravo.ts, new Date(NOW - 60 * MINUTE + 20_000).toISOString());

    const first = await getJson(await get("/api/search?q=timeout&limit=3")) as Any;
    assertEquals(first.results.map((r: Any) => r.id), ids.slice(0, 3));
    assertEquals(first.nextBefore, ids[2]);
    const second = await getJson(await get(`/api/search?q=timeout&limit=3&before=${first.nextBefore}`)) as Any;
    assertEquals(second.results.map((r: Any) => r.id), ids.slice(3));
    assertEquals(second.nextBefore, undefined);

    // FTS syntax: phrases, prefixes, boolean operators.
    const phrase = await getJson(await get(`/api/search?q=${encodeURIComponent('"GET /login"')}`)) as Any;
    assertEquals(phrase.results.map((r: Any) => r.text), ["GET /login 200"]);
    assertEquals(phrase.results[0].snippet, [{ text: "GET /login", hit: true }, { text: " 200", hit: false }]);
    const prefix = await getJson(await get("/api/search?q=retr*")) as Any;
    assertEquals(prefix.results.map((r: Any) => r.text), ["retrying the database"]);
    const boolean = await getJson(await get("/api/search?q=timeout%20NOT%20Error")) as Any;
    assertEquals(boolean.results.length, 2);
  });
});

Deno.test("fleet API: search filters by server, app, file and time (ISO or ms)", async () => {
  await withFleet(async ({ get }) => {
    const texts = async (query: string) =>
      ((await getJson(await get(`/api/search?q=timeout&${query}`))) as Any).results.map((r: Any) => r.text);
    assertEquals(await texts("server=bravo"), ["bravo: timeout talking to redis"]);
    assertEquals(await texts("app=api"), ["POST /orders 201 timeout=5"]);
    assertEquals(await texts("server=alpha&file=error.log"), [
      "Error: timeout again",
      "Error: upstream timeout after 30s",
    ]);
    assertEquals(await texts("server=alpha&app=web&file=access.log"), []);
    const t0 = NOW - 60 * MINUTE;
    assertEquals(await texts(`since=${t0 + 20_000}`), [
      "POST /orders 201 timeout=5",
      "bravo: timeout talking to redis",
    ]);
    assertEquals(await texts(`until=${new Date(t0 + 10_000).toISOString()}`), ["Error: upstream timeout after 30s"]);
    assertEquals(await texts(`since=${t0 + 11_000}&until=${t0 + 20_000}`), [
      "bravo: timeout talking to redis",
      "Error: timeout again",
    ]);
    assertEquals(await texts(`since=${t0 + 13_000}&until=${t0 + 19_000}`), []);
    assertEquals(await texts("server="), await texts(""), "an empty parameter is no filter");
  });
});

Deno.test("fleet API: invalid searches are 400 with an explanation", async () => {
  await withFleet(async ({ get }) => {
    const syntax = await getJson(await get(`/api/search?q=${encodeURIComponent("GET /api")}`), 400) as Any;
    assertMatch(syntax.error, /"GET \/api"/);
    assertMatch(syntax.error, /syntax error/);
    assertMatch(syntax.hint, /double quotes/);
    assertMatch(syntax.hint, /AND\/OR\/NOT/);
    assertMatch(syntax.hint, /prefix/);
    assertMatch(syntax.hint, /"GET \/api"$/, "suggests the query quoted");

    const column = await getJson(await get(`/api/search?q=${encodeURIComponent("host:db")}`), 400) as Any;
    assertMatch(column.error, /no such column/);
    assertMatch(column.hint, /names a column/);
    const unterminated = await getJson(await get(`/api/search?q=${encodeURIComponent('"oops')}`), 400) as Any;
    assertMatch(unterminated.hint, /must be closed/);
    assertMatch(unterminated.hint, /"""oops"$/);

    const missing = await getJson(await get("/api/search"), 400) as Any;
    assertMatch(missing.error, /missing q/);
    assertMatch(missing.hint, /FTS5/);
    await getJson(await get("/api/search?q=%20%20"), 400);

    const long = await getJson(await get(`/api/search?q=${"a".repeat(1001)}`), 400) as Any;
    assertMatch(long.error, /q is 1001 characters long; at most 1000/);
    await getJson(await get(`/api/search?q=${"a".repeat(1000)}`));
    const longServer = await getJson(await get(`/api/search?q=a&server=${"s".repeat(201)}`), 400) as Any;
    assertMatch(longServer.error, /server is 201 characters/);
    await getJson(await get(`/api/search?q=a&${"k".repeat(201)}=1`), 400);

    for (
      const [query, pattern] of [
        ["limit=abc", /limit must be an integer from 1 to 500, not "abc"/],
        ["limit=0", /limit must be/],
        ["limit=501", /limit must be/],
        ["limit=1.5", /limit must be/],
        ["before=-3", /before must be an integer ≥ 1/],
        ["before=99999999999999999999", /before must be/],
        ["since=yesterday", /since must be an ISO date/],
        ["until=2026-13-45", /until must be an ISO date/],
      ] as const
    ) {
      const body = await getJson(await get(`/api/search?q=timeout&${query}`), 400) as Any;
      assertMatch(body.error, pattern);
    }
  });
});

Deno.test("fleet API: a search beyond the cost limits (prefixes, words, NEAR distance) is 400 and says the limit", async () => {
  await withFleet(async ({ get }) => {
    const search = async (q: string, status?: number): Promise<Any> =>
      getJson(await get(`/api/search?app=web&q=${encodeURIComponent(q)}`), status);
    // The tester's query: 320 one-letter prefixes in a NEAR group within 99,999, 973 characters (4.8 s on 133k lines).
    let tester = "NEAR(";
    for (let i = 0; tester.length < 964; i++) tester += `${"xyzabcdefghijklmnopqrstuvw"[i % 26]}* `;
    tester += ", 99999)";
    const refused = await search(tester, 400);
    assertMatch(refused.error, /^cannot search for "NEAR\(x\* y\* .*": it has 320 prefix terms \(x\*\); at most 4 /);
    assertMatch(refused.hint, /at most 4 prefix terms \(conn\*\), 16 words in all, and a NEAR distance of at most 20/);
    assertMatch(refused.hint, /Narrow it: write whole words or longer prefixes/);
    for (
      const [q, pattern] of [
        ["a* b* c* d* e*", /it has 5 prefix terms \(x\*\); at most 4 are searched$/],
        [Array.from({ length: 17 }, (_, i) => `w${i}`).join(" OR "), /it has 17 words; at most 16 are searched$/],
        ['"a b c d e f g h i" j k l m n o p q', /it has 17 words/],
        ["NEAR(timeout error, 21)", /its NEAR distance is 21; at most 20 is searched$/],
        ["NEAR(timeout error, 99999)", /its NEAR distance is 99999/],
      ] as const
    ) {
      assertMatch((await search(q, 400)).error, pattern);
    }
    // At the limits, answered.
    await search("a* b* c* d*");
    await search(Array.from({ length: 16 }, (_, i) => `w${i}`).join(" OR "));
    await search("NEAR(timeout error, 20)");
    assertEquals((await search("NEAR(upstream timeout)")).results.length, 1);
  });
});

Deno.test("fleet API: /api/logs/context returns the lines around a hit in the same file generation", async () => {
  await withFleet(async ({ store, get }) => {
    const texts = Array.from({ length: 30 }, (_, i) => `line ${i}${i === 12 ? " needle" : ""}`);
    ingest(store, "alpha", "web", "out.log", texts, NOW - MINUTE);
    const hit = ((await getJson(await get("/api/search?q=needle"))) as Any).results[0];
    const context = await getJson(
      await get(`/api/logs/context?server=alpha&app=web&file=out.log&offset=${hit.offset}&lines=3`),
    ) as Any;
    assertEquals(context.lines.map((l: Any) => l.text), [
      "line 9",
      "line 10",
      "line 11",
      "line 12 needle",
      "line 13",
      "line 14",
      "line 15",
    ]);
    assertEquals(context.lines.map((l: Any) => l.hit), [false, false, false, true, false, false, false]);
    const offsets = context.lines.map((l: Any) => l.offset);
    assertEquals(offsets, [...offsets].sort((a: number, b: number) => a - b));
    assertEquals([context.server, context.app, context.file, context.offset], ["alpha", "web", "out.log", hit.offset]);

    // The default (20) stops at the file's start and end.
    const whole = await getJson(await get(`/api/logs/context?server=alpha&app=web&file=out.log&offset=${hit.offset}`));
    assertEquals((whole as Any).lines.length, 30);

    // After a rotation the new generation has a line at offset 0 too: the newest is used, or the one of `id`.
    const first = ((await getJson(await get("/api/search?q=%22line%200%22"))) as Any).results[0];
    store.newGeneration("alpha", "/var/log/deployments/web/out.log", null, "other", 4);
    ingest(store, "alpha", "web", "out.log", ["rotated 0", "rotated 1"], NOW);
    const newest = await getJson(await get("/api/logs/context?server=alpha&app=web&file=out.log&offset=0&lines=1"));
    assertEquals((newest as Any).lines.map((l: Any) => l.text), ["rotated 0", "rotated 1"]);
    const old = await getJson(
      await get(`/api/logs/context?server=alpha&app=web&file=out.log&offset=0&lines=1&id=${first.id}`),
    ) as Any;
    assertEquals(old.lines.map((l: Any) => l.text), ["line 0", "line 1"]);
    assert(old.fileId !== (newest as Any).fileId);

    await getJson(await get("/api/logs/context?server=alpha&app=web&file=out.log&offset=3"), 404);
    await getJson(await get("/api/logs/context?server=bravo&app=web&file=out.log&offset=0"), 404);
    assertMatch(
      ((await getJson(await get("/api/logs/context?server=alpha&app=web&offset=0"), 400)) as Any).error,
      /file/,
    );
    await getJson(await get("/api/logs/context?server=alpha&app=web&file=out.log"), 400);
    await getJson(await get("/api/logs/context?server=alpha&app=web&file=out.log&offset=0&lines=201"), 400);
  });
});

Deno.test("fleet API: /api/deployments lists newest first, filtered and paged", async () => {
  await withFleet(async ({ get }) => {
    const all = await getJson(await get("/api/deployments")) as Any;
    assertEquals(all.deployments.map((d: Any) => `${d.server}/${d.release}`), [
      "bravo/b1",
      "alpha/r3",
      "alpha/r2",
      "alpha/r1",
    ]);
    assertEquals(all.deployments[1], {
      id: all.deployments[1].id,
      server: "alpha",
      app: "web",
      at: "2026-11-28T12:00:00Z",
      outcome: "success",
      release: "r3",
      commit: "bbbbbbb2222",
      version: "bbbbbbb",
      durationMs: 4000,
      step: null,
      message: null,
    });
    const alpha = await getJson(await get("/api/deployments?server=alpha&app=web&limit=2")) as Any;
    assertEquals(alpha.deployments.map((d: Any) => d.release), ["r3", "r2"]);
    const rest = await getJson(await get(`/api/deployments?server=alpha&limit=2&before=${alpha.nextBefore}`)) as Any;
    assertEquals(rest.deployments.map((d: Any) => d.release), ["r1"]);
    assertEquals(rest.nextBefore, undefined);
    await getJson(await get("/api/deployments?limit=x"), 400);
  });
});

Deno.test("fleet API: /metrics is Prometheus text with escaped labels", async () => {
  await withFleet(async ({ store, get }) => {
    deploy(store, "bravo", "web", [{ at: "2026-11-29T00:00:00Z", outcome: 'odd"outcome\\with\nnewline' }]);
    const response = await get("/metrics");
    assertEquals(response.status, 200);
    assertEquals(response.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
    const text = await response.text();
    assert(text.endsWith("\n"));
    const label = String.raw`[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\["\\n])*"`;
    const line = new RegExp(String.raw`^[a-zA-Z_:][a-zA-Z0-9_:]*(\{${label}(,${label})*\})? -?[0-9.e+]+$`);
    const samples = new Map<string, string>();
    for (const row of text.trimEnd().split("\n")) {
      if (row.startsWith("# HELP ") || row.startsWith("# TYPE ")) continue;
      assertMatch(row, line);
      const space = row.lastIndexOf(" ");
      samples.set(row.slice(0, space), row.slice(space + 1));
    }
    const expected: Record<string, string> = {
      'fleet_app_healthy{server="alpha",app="api"}': "0",
      'fleet_app_healthy{server="alpha",app="web"}': "1",
      'fleet_app_state{server="alpha",app="api",state="unhealthy"}': "1",
      'fleet_app_state{server="bravo",app="web",state="stale"}': "1",
      'fleet_app_state{server="charlie",app="web",state="unreachable"}': "1",
      'fleet_server_up{server="alpha"}': "1",
      'fleet_server_up{server="charlie"}': "0",
      'fleet_server_last_pull_duration_seconds{server="alpha"}': "0.12",
      'fleet_server_last_pull_bytes{server="alpha"}': "2048",
      'fleet_server_errors_total{server="charlie"}': "1",
      'fleet_deployments_total{server="alpha",app="web",outcome="success"}': "2",
      'fleet_deployments_total{server="alpha",app="web",outcome="failed"}': "1",
      'fleet_deployments_total{server="bravo",app="web",outcome="odd\\"outcome\\\\with\\nnewline"}': "1",
      "fleet_log_lines": "9",
      "fleet_collector_cycles_total": "7",
      "fleet_collector_last_cycle_seconds": "1.25",
      "fleet_collector_errors_total": "2",
    };
    for (const [key, value] of Object.entries(expected)) assertEquals(samples.get(key), value, key);
    assertMatch(text, /^# TYPE fleet_deployments_total counter$/m);
    assertMatch(text, /^# TYPE fleet_app_healthy gauge$/m);
  });
});

Deno.test("fleet API: /api/events streams events and heartbeats, unsubscribes on cancel or abort", async () => {
  await withFleet(async ({ events, get }) => {
    const decoder = new TextDecoder();
    const response = await get("/api/events");
    assertEquals(response.status, 200);
    assertEquals(response.headers.get("content-type"), "text/event-stream; charset=utf-8");
    assertEquals(response.headers.get("cache-control"), "no-store");
    const reader = response.body!.getReader();
    assertMatch(decoder.decode((await reader.read()).value), /^retry: 5000\n: connected\n\n$/);
    assertEquals(events.size, 1);
    events.emit("cycle", { cycle: 3, text: "two\nlines" });
    // Heartbeats (every 30 ms here) may come first on a slow machine: skip them.
    const next = async () => {
      let chunk = ": heartbeat\n\n";
      while (chunk === ": heartbeat\n\n") chunk = decoder.decode((await reader.read()).value);
      return chunk;
    };
    assertEquals(await next(), 'event: cycle\ndata: {"cycle":3,"text":"two\\nlines"}\n\n');
    assertEquals(decoder.decode((await reader.read()).value), ": heartbeat\n\n");
    await reader.cancel();
    assertEquals(events.size, 0, "a cancelled stream unsubscribes");
    events.emit("cycle", { cycle: 4 }); // nobody listens: no error

    const abort = new AbortController();
    const second = await get("/api/events", { signal: abort.signal });
    assertEquals(events.size, 1);
    abort.abort();
    assertEquals(events.size, 0, "a disconnected client unsubscribes");
    const rest = await new Response(second.body).text();
    assertMatch(rest, /connected/);
  }, { heartbeatMs: 30 });
  const events = new FleetEvents();
  let threw = false;
  try {
    events.emit("bad\nname", {});
  } catch {
    threw = true;
  }
  assert(threw, "an event name with a line break is refused");
});

Deno.test("fleet API: with a token every API request needs it, by header (or ?token= for events)", async () => {
  const token = "s3cret-token-value";
  await withFleet(async ({ get, events, handler }) => {
    assertEquals((await get("/")).status, 404, "the dashboard's files (none here) load without the token");
    for (const path of ["/api/fleet", "/metrics", "/api/events", "/api/nope"]) {
      const response = await get(path);
      assertEquals(response.status, 401, path);
      assertEquals(response.headers.get("www-authenticate"), 'Bearer realm="fleet"');
      await getJson(response, 401);
    }
    await getJson(await get("/api/fleet", { headers: { authorization: "Bearer wrong" } }), 401);
    await getJson(await get("/api/fleet", { headers: { authorization: `Bearer ${token}x` } }), 401);
    await getJson(await get("/api/fleet", { headers: { authorization: `Basic ${token}` } }), 401);
    await getJson(await get("/api/fleet?token=wrong"), 401);
    await getJson(await get(`/api/fleet?token=wrong`, { headers: { authorization: `Bearer ${token}` } }));
    await getJson(await get("/api/fleet", { headers: { authorization: `Bearer ${token}` } }));
    // ?token= only for EventSource: elsewhere it would land in URL logs and history.
    await getJson(await get(`/api/fleet?token=${token}`), 401);
    assertEquals((await get(`/metrics?token=${token}`)).status, 401);
    assertEquals((await get("/metrics", { headers: { authorization: `Bearer ${token}` } })).status, 200);
    const stream = await get(`/api/events?token=${token}`);
    assertEquals(stream.status, 200);
    assertEquals(events.size, 1);
    await stream.body!.cancel();
    assertEquals(events.size, 0);
    // With a token, any host name is fine (the token is what protects).
    const bearer = { headers: { authorization: `Bearer ${token}` } };
    await getJson(await handler(new Request("http://fleet.example/api/fleet", bearer)));
    await getJson(await handler(new Request("http://fleet.example/api/fleet")), 401);
  }, { token });
});

Deno.test("fleet API: without a token only loopback host names are answered (DNS rebinding)", async () => {
  await withFleet(async ({ handler }) => {
    const at = (url: string) => handler(new Request(url));
    await getJson(await at("http://localhost:8750/api/fleet"));
    await getJson(await at("http://[::1]:8750/api/fleet"));
    await getJson(await at("http://fleet.internal/api/fleet"));
    const refused = await getJson(await at("http://attacker.example:8750/api/fleet"), 403) as Any;
    assertMatch(refused.error, /attacker\.example/);
  }, { allowedHosts: ["fleet.internal"] });
});

Deno.test("fleet API: requests from other web sites are refused (Sec-Fetch-Site, Origin); the dashboard's own and curl's are answered", async () => {
  const own = "http://127.0.0.1:8750";
  const refusedFrom = async (get: Fixture["get"], path: string, headers: Record<string, string>) => {
    const body = await getJson(await get(path, { headers }), 403) as Any;
    assertMatch(body.hint, /open the dashboard at http:\/\/127\.0\.0\.1:8750\/, or call the API from a script/);
    return body.error as string;
  };
  await withFleet(async ({ get }) => {
    // What Chromium sends for <img src="http://127.0.0.1:3333/api/search?q=…"> on another site.
    const image = { "sec-fetch-site": "cross-site", "sec-fetch-mode": "no-cors", "sec-fetch-dest": "image" };
    assertMatch(await refusedFrom(get, "/api/search?q=timeout", image), /^a cross-site request is refused: /);
    for (const path of ["/api/fleet", "/api/events", "/metrics", "/api/nope"]) await refusedFrom(get, path, image);
    // Another port of the same host is the same site, not the same origin.
    assertMatch(await refusedFrom(get, "/api/fleet", { "sec-fetch-site": "same-site" }), /same-site request/);
    for (const origin of ["https://evil.example", "null", "http://127.0.0.1:9999", "https://127.0.0.1:8750"]) {
      const error = await refusedFrom(get, "/api/search?q=timeout", { origin });
      assertMatch(error, new RegExp(`^a request from "${origin.replace(/[.]/g, "\\.")}" is refused: `));
    }
    await refusedFrom(get, "/api/fleet", { origin: own, "sec-fetch-site": "cross-site" });
    // The dashboard's fetches (same-origin, with or without Origin), a typed URL (none), curl (neither).
    await getJson(await get("/api/fleet", { headers: { "sec-fetch-site": "same-origin" } }));
    await getJson(await get("/api/fleet", { headers: { "sec-fetch-site": "same-origin", origin: own } }));
    await getJson(await get("/api/search?q=timeout", { headers: { "sec-fetch-site": "none" } }));
    await getJson(await get("/api/search?q=timeout"));
    // The dashboard's files hold no data: a link from another site opens it.
    const page = await get("/", { headers: { "sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate" } });
    assertEquals([page.status, await page.text()], [200, "<!doctype html>"]);
  }, { dashboard: (path) => path === "/" ? new Response("<!doctype html>") : undefined });
  // With a token too: a page elsewhere may hold one (or guess the way in).
  const token = "t0ken";
  await withFleet(async ({ get }) => {
    const authorization = `Bearer ${token}`;
    await refusedFrom(get, "/api/fleet", { authorization, "sec-fetch-site": "cross-site" });
    await refusedFrom(get, "/api/fleet", { authorization, origin: "https://evil.example" });
    await getJson(await get("/api/fleet", { headers: { authorization, "sec-fetch-site": "same-origin" } }));
  }, { token });
});

Deno.test("fleet API: unknown paths 404, other methods 405, HEAD without body, pluggable dashboard", async () => {
  await withFleet(async ({ get }) => {
    assertMatch(((await getJson(await get("/api/nope"), 404)) as Any).error, /no such endpoint: \/api\/nope/);
    await getJson(await get("/"), 404);
    const post = await get("/api/fleet", { method: "POST", body: "{}" });
    assertEquals(post.headers.get("allow"), "GET, HEAD");
    await getJson(post, 405);
    const head = await get("/api/fleet", { method: "HEAD" });
    assertEquals(head.status, 200);
    assertEquals(head.body, null);
    assertEquals(head.headers.get("content-type"), "application/json; charset=utf-8");
  });
  await withFleet(async ({ get }) => {
    const index = await get("/");
    assertEquals([index.status, await index.text()], [200, "<!doctype html>"]);
    await getJson(await get("/missing.js"), 404);
    await getJson(await get("/api/nope"), 404);
  }, { dashboard: (path) => path === "/" ? new Response("<!doctype html>") : undefined });
});

Deno.test("serveFleet: refuses a non-loopback host without a token; serves loopback; drops gone clients", async () => {
  assert(isLoopback("127.0.0.1") && isLoopback("::1") && isLoopback("[::1]") && isLoopback("localhost"));
  assert(!isLoopback("0.0.0.0") && !isLoopback("::") && !isLoopback("192.168.1.5") && !isLoopback("localhost.evil"));
  await withFleet(async ({ handler, events }) => {
    for (const host of ["0.0.0.0", "::", "192.168.1.5"]) {
      try {
        serveFleet(handler, { host, port: 0 });
        throw new Error(`served on ${host}`);
      } catch (error) {
        assert(error instanceof UsageError, String(error));
        assertMatch(error.message, new RegExp(`refusing to serve the fleet API on ${host.replaceAll(".", "\\.")}`));
        assertMatch(error.suggestion ?? "", /127\.0\.0\.1.*token/s);
      }
    }
    let mismatch = "";
    try {
      serveFleet(handler, { host: "0.0.0.0", port: 0, token: "not-what-the-handler-checks" });
    } catch (error) {
      mismatch = String(error);
    }
    assertMatch(mismatch, /does not check the token/);
    let badPort = false;
    try {
      serveFleet(handler, { host: "127.0.0.1", port: 70000 });
    } catch (error) {
      badPort = error instanceof UsageError;
    }
    assert(badPort);

    const stop = new AbortController();
    let port = 0;
    const server = serveFleet(handler, {
      host: "127.0.0.1",
      port: 0,
      signal: stop.signal,
      onListen: (address) => port = address.port,
    });
    try {
      const response = await fetch(`http://127.0.0.1:${port}/api/fleet`);
      assertEquals(((await getJson(response)) as Any).counts.unreachable, 1);
      // A real client that goes away: the server aborts the request, the stream unsubscribes.
      const client = new AbortController();
      const stream = await fetch(`http://127.0.0.1:${port}/api/events`, { signal: client.signal });
      const reader = stream.body!.getReader();
      await reader.read();
      assertEquals(events.size, 1);
      client.abort();
      await reader.cancel().catch(() => {});
      for (let i = 0; i < 100 && events.size > 0; i++) await new Promise((resolve) => setTimeout(resolve, 10));
      assertEquals(events.size, 0);
    } finally {
      stop.abort();
      await server.finished;
    }
  });
});

Deno.test("fleet API: hostile values from servers stay data: no header injection, no path traversal", async () => {
  await withFleet(async ({ store, get }) => {
    const evil = 'x\r\nSet-Cookie: owned=1\r\n\r\n<img src=x onerror="alert(1)">';
    store.upsertApp("alpha", evil, { status: evil, version: evil, healthy: true }, NOW);
    ingest(store, "alpha", evil, "error.log", [`boom ${evil}`], NOW);
    for (const path of ["/api/fleet", "/api/servers/alpha", "/api/search?q=boom", "/metrics"]) {
      const response = await get(path);
      assertEquals(response.headers.get("set-cookie"), null, path);
      const text = await response.text();
      assert(!text.includes("\r\nSet-Cookie"), `${path} carries a raw header line`);
    }
    const { results } = await getJson(await get("/api/search?q=boom")) as { results: { app: string }[] };
    assertEquals(results[0].app, evil, "the value is kept, as data (JSON-escaped)");
    // Parameters are values to look up, never paths: nothing outside the database is read.
    for (
      const path of [
        "/api/servers/..%2F..%2F..%2Fetc%2Fpasswd",
        "/api/logs/context?server=../../..&app=..&file=../../../../etc/passwd&offset=0",
        "/api/deployments?server=..%2F..&app=%2Fetc",
      ]
    ) {
      const response = await get(path);
      const text = await response.text();
      assert(response.status < 500, `${path}: ${response.status}`);
      assert(!text.includes("root:x:0:0"), `${path} read a file`);
    }
  });
});

Deno.test("fleet API: the alert rules firing or pending are in /api/fleet's rules, each server's in its own", async () => {
  const rule = (server: string, state: "firing" | "pending") => ({
    rule: "disk",
    severity: "critical" as const,
    state,
    server,
    mount: "/srv",
    value: 62.5,
    valueText: "62.5 %",
    condition: "disk.used_percent above 50 %",
    since: "2026-11-29T06:00:00.000Z",
  });
  await withFleet(async ({ get }) => {
    const fleet = await getJson(await get("/api/fleet")) as Any;
    assertEquals(fleet.rules, [rule("alpha", "firing"), rule("bravo", "pending")]);
    const alpha = await getJson(await get("/api/servers/alpha")) as Any;
    assertEquals(alpha.rules, [rule("alpha", "firing")]);
  }, { rules: () => [rule("alpha", "firing"), rule("bravo", "pending")] });
});

Deno.test("checkBinding: beyond loopback a token of 16 characters or more; a host that is no address is said to be one", () => {
  const refused = (host: string, token?: string) => {
    try {
      checkBinding(host, 46600, token);
    } catch (error) {
      assert(error instanceof UsageError, String(error));
      return error;
    }
    throw new Error(`${host} with ${token} accepted`);
  };
  const short = refused("192.168.1.5", "abcdef");
  assertMatch(short.message, /token is too short \(6 characters\) to serve on 192\.168\.1\.5: it needs 16 or more/);
  assertMatch(short.suggestion ?? "", /openssl rand -hex 32/);
  checkBinding("192.168.1.5", 46600, "a".repeat(16));
  checkBinding("127.0.0.1", 46600, "short"); // loopback: the token only guards other users of this machine
  for (const token of [undefined, "abcdefabcdefabcdef"]) {
    const host = refused("not a host", token);
    assertEquals(host.message, '--host "not a host" is not an address to listen on');
  }
  for (const host of ["::1", "[::1]", "fe80::1", "fleet.internal", "10.0.0.5"]) {
    checkBinding(host, 46600, "x".repeat(16));
  }
  const uri = listenError(new URIError("invalid host"), "not a host", 46600);
  assert(uri instanceof UsageError && /not an address/.test(uri.message), String(uri));
});
