/** The fleet database's read side, called directly: freshness rules, snippets, limits and edge cases. */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { UsageError } from "../../src/errors.ts";
import {
  checkSearchQuery,
  logContext,
  QUERY_LIMITS,
  queryShape,
  searchLogs,
  SearchSyntaxError,
} from "../../src/fleet/log_queries.ts";
import { escapeLabel, metrics } from "../../src/fleet/metrics.ts";
import { deployments, fleetOverview } from "../../src/fleet/queries.ts";
import { type FreshnessView, serverFreshness } from "../../src/fleet/views.ts";
import { FleetStore } from "../../src/fleet/store.ts";

const NOW = Date.parse("2026-11-29T07:00:00Z");
const VIEW: FreshnessView = { now: NOW, intervalMs: 60_000, holding: false, gapMs: 0 };

async function withStore(fn: (store: FleetStore) => void | Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "fleet-queries-" });
  const store = await FleetStore.open(join(dir, "fleet.db"));
  try {
    await fn(store);
  } finally {
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
}

function ingest(store: FleetStore, server: string, app: string, file: string, texts: string[]): number[] {
  const path = `/logs/${app}/${file}`;
  const ledger = store.ledger(server, path) ?? store.newGeneration(server, path, null, "head", 4);
  const offsets: number[] = [];
  const lines = texts.map((text) => {
    offsets.push(ledger.offset);
    const line = { offset: ledger.offset, text, ts: NOW };
    ledger.offset += text.length + 1;
    return line;
  });
  store.ingestLines(ledger, app, file, lines);
  return offsets;
}

Deno.test("serverFreshness: unreachable after a failed pull, stale after 3 intervals minus sleep, held fresh", () => {
  const ok = (ageMs: number) => ({ last_attempt: NOW - ageMs, last_ok: NOW - ageMs, last_error: null });
  assertEquals(serverFreshness(ok(0), VIEW), "fresh");
  assertEquals(serverFreshness(ok(180_000), VIEW), "fresh", "exactly 3 intervals is still fresh");
  assertEquals(serverFreshness(ok(180_001), VIEW), "stale");
  assertEquals(serverFreshness(ok(600_000), { ...VIEW, gapMs: 500_000 }), "fresh");
  assertEquals(serverFreshness(ok(600_000), { ...VIEW, holding: true }), "fresh");
  const failed = { last_attempt: NOW - 1000, last_ok: NOW - 60_000, last_error: "timeout" };
  assertEquals(serverFreshness(failed, VIEW), "unreachable");
  assertEquals(serverFreshness({ ...failed, last_ok: null }, VIEW), "unreachable", "never reached");
  assertEquals(serverFreshness(failed, { ...VIEW, holding: true }), "fresh");
});

Deno.test("fleetOverview: an empty database; an app without a health field counts as healthy when fresh", async () => {
  await withStore((store) => {
    assertEquals(fleetOverview(store, VIEW), {
      generatedAt: "2026-11-29T07:00:00.000Z",
      counts: { healthy: 0, unhealthy: 0, stale: 0, unreachable: 0 },
      servers: [],
    });
    store.recordContact("alpha", "a", { at: NOW, ok: true, durationMs: 1, bytes: 1 });
    store.upsertApp("alpha", "web", { status: "running" }, NOW);
    const overview = fleetOverview(store, VIEW);
    assertEquals(overview.counts.healthy, 1);
    const app = overview.servers[0].apps[0];
    assertEquals([app.healthy, app.state, app.lastDeploy, app.port], [null, "fresh", null, null]);
    // An app whose server row is gone (keepServers) is not shown.
    store.upsertApp("ghost", "web", { healthy: false }, NOW);
    assertEquals(fleetOverview(store, VIEW).servers.map((s) => s.name), ["alpha"]);
  });
});

Deno.test("searchLogs: snippets cannot be forged by control characters or markup in a line", async () => {
  await withStore((store) => {
    ingest(store, "alpha", "web", "out.log", ["\u0002fake\u0003 <b>bold</b> needle & more"]);
    const [result] = searchLogs(store, { q: "needle" }).results;
    assertEquals(result.snippet, [
      { text: "\u0002fake\u0003 <b>bold</b> ", hit: false },
      { text: "needle", hit: true },
      { text: " & more", hit: false },
    ]);
    const [fake] = searchLogs(store, { q: "fake" }).results;
    assertEquals(fake.snippet.filter((part) => part.hit).map((part) => part.text), ["fake"]);
  });
});

Deno.test("searchLogs: lines of thousands of hits each (a hostile server's) give a short snippet, in linear time", async () => {
  await withStore((store) => {
    ingest(store, "evil", "web", "out.log", Array.from({ length: 60 }, () => "a ".repeat(8_000).trimEnd()));
    const started = performance.now();
    const page = searchLogs(store, { q: "a" });
    const ms = performance.now() - started;
    assertEquals(page.results.length, 50);
    for (const { snippet } of page.results) {
      const text = snippet.map((part) => part.text).join("");
      // Cut from highlight()'s marked line (200 characters and the ellipsis), not FTS5's snippet() (24 tokens).
      assertEquals([text.length, text.endsWith("…")], [201, true], text);
      assertEquals(snippet[0], { text: "a", hit: true });
    }
    console.log(`figures: a page of 50 lines of 8,000 hits each in ${ms.toFixed(0)} ms (FTS5 snippet(): 21.5 s)`);
  });
});

Deno.test("searchLogs: a snippet cuts a long matched word too, and never half of a character", async () => {
  await withStore((store) => {
    ingest(store, "alpha", "web", "out.log", [`x${"y".repeat(5_000)} tail`, `needle ${"😀".repeat(150)}`]);
    const [word] = searchLogs(store, { q: "x*" }).results;
    assertEquals(word.snippet.map((part) => [part.text.length, part.hit]), [[200, true], [1, false]]);
    const [emoji] = searchLogs(store, { q: "needle" }).results;
    const text = emoji.snippet.map((part) => part.text).join("");
    assert(text.endsWith("😀…"), text.slice(-4));
    assert(!/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(text), "a lone surrogate");
  });
});

Deno.test("searchLogs: long lines are cut to a snippet with ellipses; page size is clamped to 500", async () => {
  await withStore((store) => {
    const long = `${"alpha ".repeat(40)}needle${" omega".repeat(40)}`;
    ingest(store, "alpha", "web", "out.log", [long]);
    const [result] = searchLogs(store, { q: "needle" }).results;
    assertEquals(result.text, long);
    assert(result.snippet[0].text.startsWith("…"), JSON.stringify(result.snippet));
    assert(result.snippet[result.snippet.length - 1].text.endsWith("…"));
    assertEquals(result.snippet.filter((part) => part.hit), [{ text: "needle", hit: true }]);

    ingest(store, "alpha", "web", "many.log", Array.from({ length: 620 }, (_, i) => `row ${i}`));
    const page = searchLogs(store, { q: "row", limit: 10_000 });
    assertEquals(page.results.length, 500);
    assertEquals(page.results[0].text, "row 619");
    assertEquals(searchLogs(store, { q: "row", before: page.nextBefore }).results.length, 50, "default 50");
    assertEquals(searchLogs(store, { q: "row", before: page.nextBefore, limit: 500 }).results.length, 120);
  });
});

Deno.test("searchLogs: an FTS5 syntax error is a SearchSyntaxError (UsageError) explaining the syntax", async () => {
  await withStore((store) => {
    ingest(store, "alpha", "web", "out.log", ["db.example.com refused"]);
    for (const q of ["db.example.com", "a AND", "NOT", "*", "(open", "", "   "]) {
      try {
        searchLogs(store, { q });
        throw new Error(`no error for ${JSON.stringify(q)}`);
      } catch (error) {
        assert(error instanceof SearchSyntaxError, `${JSON.stringify(q)}: ${error}`);
        assert(error instanceof UsageError);
        assertEquals(error.query, q);
        assertMatch(error.message, new RegExp(`^cannot search for ${JSON.stringify(q).replace(/[.*()]/g, "\\$&")}`));
        assertMatch(error.suggestion ?? "", /"double quotes" match a phrase/);
      }
    }
    assertEquals(searchLogs(store, { q: '"db.example.com"' }).results.length, 1);
  });
});

Deno.test("queryShape: prefix terms, words (in barewords and phrases) and the largest NEAR distance", () => {
  const cases: [string, { prefixes: number; terms: number; near: number }][] = [
    ["timeout", { prefixes: 0, terms: 1, near: 0 }],
    ['conn* AND "db.example.com" OR NOT x*', { prefixes: 2, terms: 5, near: 0 }],
    ['"a b"* text:c', { prefixes: 1, terms: 3, near: 0 }],
    ["NEAR(a b)", { prefixes: 0, terms: 2, near: 10 }],
    ['NEAR("a,b" c ,5) NEAR(d e, 30) f', { prefixes: 0, terms: 6, near: 30 }],
    ['"say ""NEAR(x, 99)"" twice"', { prefixes: 0, terms: 5, near: 0 }],
    ["x86_64 überfluß 日本", { prefixes: 0, terms: 4, near: 0 }],
  ];
  for (const [q, shape] of cases) assertEquals(queryShape(q), shape, q);
});

Deno.test("searchLogs: a query beyond the cost limits is refused before it runs; the costliest one within is measured on 100,000 lines", async () => {
  await withStore((store) => {
    // Lines as a web server logs them: 16 words on every line, then 10 of 20,000 others.
    let seed = 7;
    const random = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
    const vocabulary = Array.from(
      { length: 20_000 },
      () =>
        Array.from({ length: 3 + Math.floor(random() * 8) }, () => String.fromCharCode(97 + random() * 26)).join(""),
    );
    const common = "GET HTTP 200 Mozilla X11 Linux x86 64 AppleWebKit 537 36 KHTML like Gecko Chrome Safari".split(" ");
    for (let batch = 0; batch < 100; batch++) {
      ingest(
        store,
        "alpha",
        ["web", "api"][batch % 2],
        "access.log",
        Array.from(
          { length: 1000 },
          (_, i) =>
            `GET /orders/${batch * 1000 + i} HTTP/1.1 200 Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 ` +
            `(KHTML, like Gecko) Chrome/120.0 Safari/537.36 ` +
            Array.from({ length: 10 }, () => vocabulary[Math.floor(random() * vocabulary.length)]).join(" "),
        ),
      );
    }
    const time = (q: string) => {
      const started = performance.now();
      try {
        searchLogs(store, { q, app: "none" }); // no line matches the app: every match is read
        return { ms: performance.now() - started };
      } catch (error) {
        return { ms: performance.now() - started, error };
      }
    };
    // The tester's query (4.8 s on their 133k lines) is refused without reading a line.
    let tester = "NEAR(";
    for (let i = 0; tester.length < 964; i++) tester += `${"xyzabcdefghijklmnopqrstuvw"[i % 26]}* `;
    tester += ", 99999)";
    const refused = time(tester);
    assert(refused.error instanceof SearchSyntaxError, `accepted, ran ${refused.ms.toFixed(0)} ms`);
    assertMatch(refused.error.message, /it has 320 prefix terms \(x\*\); at most 4 are searched$/);
    assertMatch(refused.error.suggestion ?? "", /Narrow it/);
    assert(refused.ms < 50, `${refused.ms} ms`);
    // A rule's query is checked the same way at start.
    assertMatch(checkSearchQuery(tester)?.message ?? "", /320 prefix terms/);

    // The costliest shapes within the limits: 4 one-letter prefixes and 12 words on every line, or 16 such words.
    const { prefixes, terms, near } = QUERY_LIMITS;
    const letters = ["a", "b", "c", "d"].slice(0, prefixes).map((letter) => `${letter}*`);
    const words = common.slice(0, terms - prefixes);
    const within = [
      `${letters.join(" OR ")} OR ${words.join(" OR ")}`,
      `${letters.join(" ")} ${words.join(" ")}`,
      `NEAR(${letters.join(" ")} ${words.join(" ")}, ${near})`,
      `(${letters.join(" OR ")}) NOT (${words.join(" OR ")})`,
      common.slice(0, terms).join(" OR "),
      `"${common.slice(0, terms).join(" ")}"`,
    ];
    const costs = within.map((q) => ({ q, ...time(q) }));
    for (const { q, error } of costs) assertEquals(error, undefined, q);
    const worst = costs.reduce((a, b) => (b.ms > a.ms ? b : a));
    console.log(
      `figures: 100,000 lines, the tester's query refused in ${refused.ms.toFixed(1)} ms; the costliest within ` +
        `the limits ${worst.ms.toFixed(0)} ms (${worst.q}); all: ${costs.map((c) => c.ms.toFixed(0)).join(", ")} ms; ` +
        `a single word on every line: ${time("GET").ms.toFixed(0)} ms`,
    );
    assert(worst.ms < 2000, `${worst.q}: ${worst.ms} ms`);
  });
});

Deno.test("logContext: lines 0 is the hit alone; an id of another file is not used", async () => {
  await withStore((store) => {
    const offsets = ingest(store, "alpha", "web", "out.log", ["one", "two", "three"]);
    ingest(store, "alpha", "api", "out.log", ["other app"]);
    const context = logContext(store, { server: "alpha", app: "web", file: "out.log", offset: offsets[1], lines: 0 });
    assertEquals(context?.lines.map((l) => [l.text, l.hit]), [["two", true]]);
    const other = searchLogs(store, { q: "other" }).results[0];
    assertEquals(
      logContext(store, { server: "alpha", app: "web", file: "out.log", offset: other.offset, id: other.id }),
      undefined,
    );
    assertEquals(logContext(store, { server: "alpha", app: "web", file: "nope.log", offset: 0 }), undefined);
  });
});

Deno.test("deployments and metrics: paging by id; families without data are empty", async () => {
  await withStore((store) => {
    const ledger = store.newGeneration("alpha", "/logs/web/deploy.log", null, "h", 1);
    const rows = Array.from(
      { length: 60 },
      (_, i) => ({ offset: i * 10, at: `2026-11-${10 + (i % 20)}`, outcome: "success" }),
    );
    store.ingestDeployments(ledger, "web", rows);
    const page = deployments(store);
    assertEquals(page.deployments.length, 50);
    assertEquals(deployments(store, { before: page.nextBefore }).deployments.length, 10);
    assertEquals(deployments(store, { app: "api" }), { deployments: [] });

    const text = metrics(store, VIEW, { cycles: 0, errors: 0 });
    assert(!text.includes("fleet_collector_last_cycle_seconds"), "no cycle yet");
    assertMatch(text, /^fleet_deployments_total\{server="alpha",app="web",outcome="success"\} 60$/m);
    assertMatch(text, /^fleet_log_lines 0$/m);
    assertEquals(escapeLabel('a"b\\c\nd'), 'a\\"b\\\\c\\nd');
  });
});
