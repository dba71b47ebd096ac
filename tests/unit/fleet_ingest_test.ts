/** The fleet's ledger decisions and file ingestion, on real files and a real SQLite store. */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { CHUNK, cronRunOf, decide, deploymentOf, hashHex, ingestFile, lineTime } from "../../src/fleet/ingest.ts";
import { jsonObjectOf } from "../../src/fleet/json_line.ts";
import { type FileLedger, FleetStore, HISTORY_ROWS, HISTORY_ROWS_PER_SERVER } from "../../src/fleet/store.ts";
import { MIGRATIONS } from "../../src/fleet/migrations.ts";
import { databaseAt, withStore } from "../helpers/fleet_store.ts";
import { notTimes } from "../helpers/server_times.ts";
import { MARK_CLOSE, MARK_OPEN, searchLogs } from "../../src/fleet/log_queries.ts";
import { countMatches, WINDOW_FIRST_LINE } from "../../src/fleet/rule_inputs.ts";
import { LINE_AHEAD_MS, zonedTime } from "../../src/fleet/server_time.ts";
import {
  FIELD,
  MAX_NEW_BYTES_PER_FILE,
  MAX_NEW_BYTES_PER_SERVER,
  MAX_NEW_LINES_PER_SERVER,
} from "../../src/fleet/limits.ts";

const bytes = (text: string) => new TextEncoder().encode(text);

async function ledgerOf(head: string, offset: number, ino: number | null): Promise<FileLedger> {
  return {
    id: 1,
    server: "s",
    path: "a/access.log",
    generation: 1,
    ino,
    headHash: await hashHex(bytes(head)),
    headLen: head.length,
    offset,
  };
}

Deno.test("decide: growth, first sight, rotation, copytruncate, replacement", async () => {
  const ledger = await ledgerOf("hello\n", 12, 7);
  const facts = (text: string, ino: number | null) => ({ size: text.length, ino, head: bytes(text.slice(0, 4096)) });
  assertEquals(await decide(undefined, facts("x\n", 7), undefined), { kind: "new" });
  assertEquals(await decide(ledger, facts("hello\nworld\nmore\n", 7), undefined), { kind: "grow", from: 12 });
  assertEquals(await decide(ledger, facts("hello\nworld\nmore\n", null), undefined), { kind: "grow", from: 12 });
  // Renamed to .1 (its inode went with it), a new file in its place.
  const rotated = await decide(ledger, facts("new\n", 8), facts("hello\nworld\nmore\n", 7));
  assertEquals(rotated, { kind: "rotated", restFrom: 12 });
  // Copied to .1 and truncated in place: same inode, the copy has the old head.
  const copied = await decide(ledger, facts("new\n", 7), facts("hello\nworld\nmore\n", 9));
  assert(copied.kind === "rotated" && /copytruncate/.test(copied.gap ?? ""), JSON.stringify(copied));
  // Truncated, no copy: restart with a gap; replaced, no .1: restart with a gap.
  const truncated = await decide(ledger, facts("new\n", 7), undefined);
  assert(truncated.kind === "restart" && /truncated in place/.test(truncated.gap), JSON.stringify(truncated));
  const replaced = await decide(ledger, facts("other content\n", 8), undefined);
  assert(replaced.kind === "restart" && /replaced/.test(replaced.gap), JSON.stringify(replaced));
  // Same inode, same size, other content (rewritten): not growth.
  assertEquals((await decide(ledger, facts("HELLO\nworld\n", 7), undefined)).kind, "restart");
});

Deno.test("lineTime: PM2's, ISO and metrics.log timestamps at the start of a line; none → undefined", () => {
  const now = Date.UTC(2026, 11, 6);
  assertEquals(lineTime("2026-11-29T07:00:01: GET /", now), Date.UTC(2026, 10, 29, 7, 0, 1));
  assertEquals(lineTime("2026-11-29 07:00:01.250+01:00 x", now), Date.UTC(2026, 10, 29, 6, 0, 1, 250));
  assertEquals(lineTime("[2026-11-29T07:00:01Z] x", now), Date.UTC(2026, 10, 29, 7, 0, 1));
  // The proxy's metrics.log: one JSON object per app per minute, its time first.
  assertEquals(lineTime('{"ts":"2026-11-29T07:01:00.000Z","app":"shop"}', now), Date.UTC(2026, 10, 29, 7, 1, 0));
  assertEquals(lineTime("GET / 200", now), undefined);
});

Deno.test("lineTime: a time past the pull by more than a minute, or before 2000, is none (the line takes the pull's)", () => {
  const now = Date.UTC(2026, 11, 6, 12);
  assertEquals(lineTime("2026-12-06T12:01:00Z clocks differ", now), now + LINE_AHEAD_MS);
  for (
    const text of [
      "9999-12-31T23:59:59Z FATAL",
      "[9999-12-31 23:59:59.999+14:00] FATAL",
      '{"ts":"9999-12-31T23:59:59Z"}',
      "2026-12-06T12:01:00.001Z a minute and a millisecond ahead",
      "2026-12-07T12:00:00Z a day ahead",
      "1970-01-01T00:00:00Z a clock never set",
    ]
  ) assertEquals(lineTime(text, now), undefined, text);
});

Deno.test("ingestFile: a line dated 9999 is stored at the pull's time: retention removes it, and a log rule's window counts it", async () => {
  await withStore("dp-ingest-", async (store, dir) => {
    const path = join(dir, "error.log");
    const now = Date.UTC(2026, 11, 6, 12);
    await Deno.writeTextFile(path, "9999-12-31T23:59:59Z FATAL forever\n2026-12-06T11:59:00Z FATAL honest\n");
    await ingestFile(store, "web1", { rel: "api/error.log", path, ino: null }, undefined, now);
    const rows = store.sql("SELECT ts, text FROM lines ORDER BY id").all() as { ts: number; text: string }[];
    assertEquals(rows.map((r) => [r.ts, r.text]), [
      [now, "9999-12-31T23:59:59Z FATAL forever"],
      [now - 60_000, "2026-12-06T11:59:00Z FATAL honest"],
    ]);
    assertEquals(countMatches(store, "FATAL", undefined, now - 300_000, now + LINE_AHEAD_MS).get("web1"), 2);
    // The window's first line is the line's own: a line dated 9999 no longer makes every window start at it.
    const first = (since: number) => (store.sql(WINDOW_FIRST_LINE).get(since) as { id: number | null }).id;
    assertEquals(first(now + 2 * LINE_AHEAD_MS), null);
    assertEquals(await store.retain({ days: 30, now: now + 31 * 86_400_000 }), 2);
  });
});

Deno.test("jsonObjectOf: a JSON object, or undefined for anything else (deploy.log, cron.log, metrics.log read it)", () => {
  assertEquals(jsonObjectOf('{"a":1}'), { a: 1 });
  for (const text of ["", "not json", "[1]", "null", "5", '"x"', "{broken", ' {"a":1}']) {
    assertEquals(jsonObjectOf(text), undefined, text);
    assertEquals(deploymentOf({ offset: 0, ts: 0, text }, 0), undefined, text);
    assertEquals(cronRunOf({ offset: 0, ts: 0, text }, 0), undefined, text);
  }
});

Deno.test("deploymentOf: outcome events of deploy.log, with the failing step", () => {
  const row = deploymentOf({
    offset: 10,
    ts: 0,
    text: JSON.stringify({
      time: "2026-11-29T07:00:00Z",
      event: "failed",
      commit: "a".repeat(40),
      ok: false,
      duration: 5,
      message: "health: 500",
    }),
  }, Date.UTC(2026, 11, 6));
  assertEquals(row?.outcome, "failed");
  assertEquals(row?.step, "health");
  assertEquals(row?.offset, 10);
  assertEquals(row?.at, "2026-11-29T07:00:00.000Z");
  assertEquals(deploymentOf({ offset: 0, ts: 0, text: '{"event":"build","ok":true}' }, 0), undefined);
  assertEquals(deploymentOf({ offset: 0, ts: 0, text: "not json" }, 0), undefined);
});

Deno.test("deploymentOf: a `time` that is not an ISO instant with its zone, from 2000 to a day ahead, is when it was pulled", () => {
  const now = Date.UTC(2026, 11, 6, 12);
  const pulled = new Date(now).toISOString();
  const at = (time: unknown) =>
    deploymentOf({ offset: 0, ts: now, text: JSON.stringify({ event: "failed", ok: false, time }) }, now)?.at;
  assertEquals(at("2026-12-06T11:00:00.250Z"), "2026-12-06T11:00:00.250Z");
  assertEquals(at("2026-12-06T13:00:00+02:00"), "2026-12-06T11:00:00.000Z", "in UTC, as ISO");
  assertEquals(at("2026-12-07T12:00:00Z"), "2026-12-07T12:00:00.000Z", "a day ahead: clocks differ");
  for (const time of notTimes(now)) assertEquals(at(time), pulled, JSON.stringify(time));
  // Not the line's own time either: a `{"ts":…}` prefix says nothing of the deploy.
  const line = { offset: 0, ts: Date.UTC(9999, 0), text: '{"ts":"9999-01-01T00:00:00Z","event":"failed"}' };
  assertEquals(deploymentOf(line, now)?.at, pulled);
});

Deno.test("FleetStore: a deployment stored before its time was checked goes if it is not one (migration 12); the others in UTC", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dp-ingest-migrate-" });
  const path = join(dir, "fleet.db");
  try {
    const now = Date.now();
    const hourAgo = new Date(now - 3_600_000).toISOString(); // as ingestion stores a time
    const east = new Date(now - 3_600_000 + 7_200_000).toISOString().slice(0, 19); // its wall clock at +02:00
    const times = [
      hourAgo,
      `${east}+02:00`,
      `${east}+0200`,
      `${hourAgo.slice(0, 16)}Z`,
      new Date(now + 82_800_000).toISOString(), // a day ahead less an hour: clocks differ
      // The migration takes its own time, later: an hour's slack on either side of the limit.
      ...notTimes(now, 3_600_000).filter((time) => typeof time === "string"),
    ];
    const db = databaseAt(path, 11);
    const deployment = db.prepare(
      "INSERT INTO deployments (server, app, at, outcome, file_id, offset) VALUES ('s1', 'shop', ?, 'failed', 1, ?)",
    );
    const run = db.prepare(
      "INSERT INTO cron_runs (server, app, job, start_at, end_at, outcome, file_id, offset) VALUES ('s1', 'shop', ?, ?, ?, 'ok', 2, ?)",
    );
    times.forEach((time, i) => {
      deployment.run(time, i);
      run.run(`job-${i}`, time, time, i);
    });
    db.close();
    const store = await FleetStore.open(path);
    try {
      assertEquals(store.version, MIGRATIONS.length);
      // As deploy.log's and cron.log's times are now checked, at the migration's time (a row's pull is not stored).
      const checked = times.map((time) => zonedTime(time, now)).map((ms) => ms && new Date(ms).toISOString());
      assertEquals(checked.map((at) => at !== undefined), times.map((_, i) => i < 5), "the first five are times");
      const deployments = store.sql("SELECT offset, at FROM deployments ORDER BY offset").all().map((r) => ({ ...r }));
      assertEquals(
        deployments,
        checked.flatMap((at, offset) => at ? [{ offset, at }] : []),
        "a deployment without a time is removed: its pull's time is not known",
      );
      const runs = store.sql("SELECT offset, start_at, end_at FROM cron_runs ORDER BY offset").all()
        .map((r) => ({ ...r }));
      assertEquals(runs, checked.map((at, offset) => ({ offset, start_at: at ?? null, end_at: at ?? null })));
    } finally {
      store.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ingestFile: new complete lines once each across growth, a partial line, rotation and replacement", async () => {
  await withStore("dp-ingest-", async (store, dir) => {
    const path = join(dir, "access.log");
    const file = async () => ({ rel: "web/access.log", path, ino: (await Deno.stat(path)).ino ?? null });
    const rotatedFile = async () => ({
      rel: "web/access.log.1",
      path: `${path}.1`,
      ino: (await Deno.stat(`${path}.1`)).ino ?? null,
    });
    const texts = () =>
      (store.sql("SELECT text FROM lines WHERE kind = 'line' ORDER BY id").all() as { text: string }[]).map((r) =>
        r.text
      );
    await Deno.writeTextFile(path, "one\ntwo\nthr");
    assertEquals((await ingestFile(store, "s", await file(), undefined)).lines, 2);
    await Deno.writeTextFile(path, "ee\nfour\n", { append: true });
    assertEquals((await ingestFile(store, "s", await file(), undefined)).lines, 2);
    assertEquals((await ingestFile(store, "s", await file(), undefined)).lines, 0, "nothing new");
    await Deno.writeTextFile(path, "five\n", { append: true });
    await Deno.rename(path, `${path}.1`);
    await Deno.writeTextFile(path, "six\n");
    const rotated = await ingestFile(store, "s", await file(), await rotatedFile());
    assertEquals([rotated.lines, rotated.gaps], [2, 0]);
    await Deno.remove(path);
    await Deno.writeTextFile(path, "seven\n");
    const replaced = await ingestFile(store, "s", await file(), undefined);
    assertEquals([replaced.lines, replaced.gaps], [1, 1]);
    assertEquals(texts(), ["one", "two", "three", "four", "five", "six", "seven"]);
    const [gap] = store.sql("SELECT text FROM lines WHERE kind = 'gap'").all() as { text: string }[];
    // (the new file may reuse the old inode number: then it reads as a truncation; a gap either way)
    assertMatch(gap.text, /gap possible: access.log (replaced|truncated in place)/);
    // Searchable through the full-text index.
    assertEquals(
      (store.sql("SELECT count(*) AS n FROM lines_fts WHERE lines_fts MATCH 'three'").get() as { n: number }).n,
      1,
    );
  });
});

Deno.test("ingestFile: a flood of tiny lines goes in small transactions, and the event loop runs between them", async () => {
  await withStore("dp-ingest-flood-", async (store, dir) => {
    const path = join(dir, "flood.log");
    await Deno.writeTextFile(path, "a\n".repeat(200_000)); // 2-byte lines, as a hostile server sends them
    const batches: number[] = [];
    const ingestLines = store.ingestLines.bind(store);
    store.ingestLines = (...args) => (batches.push(args[3].length), ingestLines(...args));
    let ticks = 0;
    const timer = setInterval(() => ticks++, 0);
    try {
      const file = { rel: "x/flood.log", path, ino: (await Deno.stat(path)).ino ?? null };
      assertEquals((await ingestFile(store, "evil", file, undefined)).lines, 200_000);
    } finally {
      clearInterval(timer);
    }
    assertEquals(Math.max(...batches), CHUNK / 2, "a transaction holds one chunk's lines");
    assert(ticks > 0, `timers ran ${ticks} times across ${batches.length} transactions`); // not held for the whole file
  });
});

Deno.test("ingestFile: a line longer than a chunk is one line at its offset, whatever chunks it spans", async () => {
  await withStore("dp-ingest-long-", async (store, dir) => {
    const path = join(dir, "long.log");
    await Deno.writeTextFile(path, `s1\n${"L".repeat(5 * CHUNK / 2)}\ns2\npartial`);
    const file = { rel: "x/long.log", path, ino: (await Deno.stat(path)).ino ?? null };
    assertEquals((await ingestFile(store, "s", file, undefined)).lines, 3);
    const rows = store.sql("SELECT offset, length(text) AS n, substr(text, 1, 2) AS head FROM lines ORDER BY id").all();
    assertEquals(rows.map((r) => [r.offset, r.n, r.head]), [[0, 2, "s1"], [3, FIELD.line, "LL"], [
      3 + 5 * CHUNK / 2 + 1,
      2,
      "s2",
    ]]);
    assertEquals(store.ledger("s", "x/long.log")?.offset, 3 + 5 * CHUNK / 2 + 4, "the partial line waits");
  });
});

Deno.test("ingestFile: a .1 left from an earlier rotation is never read again", async () => {
  await withStore("dp-ingest-", async (store, dir) => {
    const path = join(dir, "x.log");
    const here = (p: string, rel: string) => ({ rel, path: p, ino: "here" as const });
    const ingest = () => ingestFile(store, "s", here(path, "a/x.log"), here(`${path}.1`, "a/x.log.1"));
    await Deno.writeTextFile(path, "old a\nold b\n");
    await ingest();
    await Deno.rename(path, `${path}.1`);
    await Deno.writeTextFile(path, ""); // rotated, the new file still empty
    await ingest();
    await Deno.remove(path);
    await Deno.writeTextFile(path, "new 1\n"); // replaced
    await ingest();
    const texts = (store.sql("SELECT text FROM lines WHERE kind = 'line' ORDER BY id").all() as { text: string }[])
      .map((r) => r.text);
    assertEquals(texts, ["old a", "old b", "new 1"]);
  });
});

Deno.test("FleetStore: retention by age and by count removes lines and their index entries", async () => {
  await withStore("dp-retain-", async (store) => {
    const ledger = store.newGeneration("s", "a/access.log", null, "x", 0);
    const day = 86_400_000;
    const now = Date.UTC(2026, 10, 29);
    store.ingestLines(
      ledger,
      "a",
      "access.log",
      Array.from({ length: 3000 }, (_, i) => ({
        offset: i * 10,
        text: `line ${i} ${i < 1000 ? "ancient" : "recent"}`,
        ts: i < 1000 ? now - 40 * day : now,
      })),
    );
    assertEquals(await store.retain({ days: 30, now }), 1000);
    assertEquals(await store.retain({ maxLines: 1500, now }), 500);
    const count = (sql: string) => (store.sql(sql).get() as { n: number }).n;
    assertEquals(count("SELECT count(*) AS n FROM lines"), 1500);
    assertEquals(count("SELECT count(*) AS n FROM lines_fts WHERE lines_fts MATCH 'ancient'"), 0);
    assertEquals(count("SELECT count(*) AS n FROM lines_fts WHERE lines_fts MATCH 'recent'"), 1500);
    assertEquals(store.version, MIGRATIONS.length);

    // A server that floods its logs trims its own lines, never another's: a quiet server keeps all of its own.
    const fill = (server: string, file: string, count: number) =>
      store.ingestLines(
        store.newGeneration(server, `a/${file}`, null, server, 0),
        "a",
        file,
        Array.from({ length: count }, (_, i) => ({ offset: i, text: `${server}${i}`, ts: now })),
      );
    fill("quiet", "error.log", 100);
    fill("loud", "access.log", 3000);
    await store.retain({ maxLines: 2000, now });
    const perServer = store.sql(
      "SELECT server, count(*) AS n, min(text) AS first FROM lines GROUP BY server ORDER BY server",
    )
      .all();
    // 2,000 in all: quiet keeps its 100, s and loud (1,500 and 3,000) get 950 each, their newest.
    assertEquals(perServer.map((r) => [r.server, r.n]), [["loud", 950], ["quiet", 100], ["s", 950]]);
    assertEquals(
      count("SELECT count(*) AS n FROM lines WHERE server = 'loud' AND text = 'loud2999'"),
      1,
      "the newest kept",
    );

    // Deployments and status changes: each app's newest HISTORY_ROWS, whatever another app (or server) floods.
    for (const [server, app, rows] of [["loud", "x", HISTORY_ROWS + 500], ["quiet", "y", 10]] as const) {
      for (let i = 0; i < rows; i++) {
        store.sql(
          "INSERT INTO deployments (server, app, at, outcome, file_id, offset) VALUES (?, ?, 'now', 'failed', ?, ?)",
        ).run(server, app, server === "loud" ? 1 : 2, i);
        store.sql("INSERT INTO status_history (server, app, at, status) VALUES (?, ?, ?, 'running')").run(
          server,
          app,
          i,
        );
      }
    }
    await store.retain({ now });
    for (const table of ["deployments", "status_history"]) {
      const rows = store.sql(
        `SELECT server, count(*) AS n, max(id) - min(id) + 1 AS span FROM ${table} GROUP BY server`,
      )
        .all();
      assertEquals(rows.map((r) => [r.server, r.n, r.span]), [["loud", HISTORY_ROWS, HISTORY_ROWS], ["quiet", 10, 10]]);
    }

    // A server that makes up new app names (a deploy.log each): its newest HISTORY_ROWS_PER_SERVER in all.
    const perApp = HISTORY_ROWS / 2;
    const apps = 2 * HISTORY_ROWS_PER_SERVER / perApp; // twice the cap
    store.transaction(() => {
      const deployment = store.sql(
        "INSERT INTO deployments (server, app, at, outcome, file_id, offset) VALUES ('loud', ?, 'now', 'failed', 3, ?)",
      );
      const change = store.sql("INSERT INTO status_history (server, app, at, status) VALUES ('loud', ?, 0, 'x')");
      for (let a = 0; a < apps; a++) {
        for (let i = 0; i < perApp; i++) {
          deployment.run(`a${a}`, a * perApp + i);
          change.run(`a${a}`);
        }
      }
    });
    await store.retain({ now });
    for (const table of ["deployments", "status_history"]) {
      const loud = store.sql(`SELECT count(*) AS n FROM ${table} WHERE server = 'loud'`).get();
      assertEquals(loud!.n, HISTORY_ROWS_PER_SERVER, table);
      assertEquals(count(`SELECT count(*) AS n FROM ${table} WHERE server = 'loud' AND app = 'a${apps - 1}'`), perApp);
      assertEquals(
        count(`SELECT count(*) AS n FROM ${table} WHERE server = 'loud' AND app = 'a0'`),
        0,
        "the oldest go",
      );
      assertEquals(count(`SELECT count(*) AS n FROM ${table} WHERE server = 'quiet'`), 10, "another server's stay");
    }
  });
});

Deno.test("ingestFile: past the server's budget of lines a file stops at a line and goes on next cycle, rotation too; nothing twice, nothing lost", async () => {
  await withStore("dp-ingest-lines-", async (store, dir) => {
    const path = join(dir, "x.log");
    const here = (p: string, rel: string) => ({ rel, path: p, ino: "here" as const });
    const line = (i: number) => `line ${String(i).padStart(5, "0")}\n`; // 11 bytes: 1,489 to a chunk
    const lines = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => line(from + i)).join("");
    const cycle = async (budget = { perFile: 1 << 30, left: 1 << 30, lines: 1_000 }) =>
      await ingestFile(store, "s", here(path, "a/x.log"), here(`${path}.1`, "a/x.log.1"), 0, budget);
    await Deno.writeTextFile(path, lines(0, 5_000));
    const first = await cycle();
    assertEquals([first.stopped, first.lines], [true, Math.floor(CHUNK / 11)], "one chunk: past the budget, it stops");
    assertEquals(store.ledger("s", "a/x.log")!.offset, first.lines * 11, "at a line's start");
    // Spent: the next file of the cycle is not begun; one with nothing new does not count as waiting.
    const spent = { perFile: 1 << 30, left: 1 << 30, lines: 0 };
    assertEquals([(await cycle(spent)).stopped, (await cycle(spent)).lines], [true, 0]);
    const idle = join(dir, "idle.log");
    await Deno.writeTextFile(idle, "one\n");
    await ingestFile(store, "s", here(idle, "a/idle.log"), undefined, 0);
    assertEquals((await ingestFile(store, "s", here(idle, "a/idle.log"), undefined, 0, spent)).stopped, undefined);
    // Rotated with a rest left: the rest of the .1 first, stopping in it keeps the ledger there.
    await Deno.writeTextFile(path, lines(5_000, 6_000), { append: true });
    await Deno.rename(path, `${path}.1`);
    await Deno.writeTextFile(path, lines(6_000, 7_000));
    let stops = 0;
    for (let i = 0; i < 20; i++) {
      const result = await cycle();
      if (!result.stopped) break;
      stops++;
    }
    assert(stops >= 4, `${stops} cycles stopped`);
    const texts = (store.sql("SELECT text FROM lines WHERE kind = 'line' AND file = 'x.log' ORDER BY id").all() as {
      text: string;
    }[])
      .map((r) => r.text + "\n").join("");
    assertEquals(texts, lines(0, 7_000));
    assertEquals((store.sql("SELECT count(*) AS n FROM lines WHERE kind = 'gap'").get() as { n: number }).n, 0);
  });
});

Deno.test("ingestFile: a flood of 2-byte lines stores at most the server's budget of lines in a cycle", async () => {
  await withStore("dp-ingest-tiny-", async (store, dir) => {
    const path = join(dir, "tiny.log");
    await Deno.writeTextFile(path, "a\n".repeat(1_000_000)); // 2 MB: 1,000,000 lines, as a hostile server sends them
    const file = { rel: "x/tiny.log", path, ino: (await Deno.stat(path)).ino ?? null };
    const budget = { perFile: MAX_NEW_BYTES_PER_FILE, left: MAX_NEW_BYTES_PER_SERVER, lines: MAX_NEW_LINES_PER_SERVER };
    const started = performance.now();
    const result = await ingestFile(store, "evil", file, undefined, 0, budget);
    const ms = performance.now() - started;
    assert(result.stopped, JSON.stringify(result));
    assert(
      result.lines >= MAX_NEW_LINES_PER_SERVER && result.lines < MAX_NEW_LINES_PER_SERVER + CHUNK / 2,
      `${result.lines} lines`,
    );
    assertEquals(store.ledger("evil", "x/tiny.log")!.offset, result.lines * 2);
    // Blank lines are not stored, but reading them counts: a flood of them stops as well.
    const blank = join(dir, "blank.log");
    await Deno.writeTextFile(blank, "\n".repeat(1_000_000));
    const spent = { perFile: MAX_NEW_BYTES_PER_FILE, left: MAX_NEW_BYTES_PER_SERVER, lines: MAX_NEW_LINES_PER_SERVER };
    const blanks = await ingestFile(store, "evil", { rel: "x/blank.log", path: blank, ino: 1 }, undefined, 0, spent);
    assertEquals([blanks.stopped, blanks.lines], [true, 0]);
    const offset = store.ledger("evil", "x/blank.log")!.offset;
    assert(offset >= MAX_NEW_LINES_PER_SERVER && offset < MAX_NEW_LINES_PER_SERVER + CHUNK, `${offset}`);
    console.log(`figures: ${result.lines} of 1,000,000 2-byte lines stored in one cycle, in ${ms.toFixed(0)} ms`);
  });
});

Deno.test("ingestFile: a line cannot hold the search's hit markers (U+FFFE, U+FFFF): they become U+FFFD, so no hit is forged", async () => {
  await withStore("dp-ingest-marks-", async (store, dir) => {
    const path = join(dir, "x.log");
    await Deno.writeTextFile(path, `${MARK_OPEN}fake${MARK_CLOSE} needle ${MARK_CLOSE}after\n`);
    await ingestFile(store, "s", { rel: "a/x.log", path, ino: 1 }, undefined, 0);
    const [result] = searchLogs(store, { q: "needle" }).results;
    assertEquals(result.text, "\uFFFDfake\uFFFD needle \uFFFDafter");
    assertEquals(result.snippet, [
      { text: "\uFFFDfake\uFFFD ", hit: false },
      { text: "needle", hit: true },
      { text: " \uFFFDafter", hit: false },
    ]);
  });
});

Deno.test("FleetStore: a ledger is forgotten only when absent from good pulls for an hour and nothing refers to it; ids are never reused", async () => {
  await withStore("dp-ledgers-", async (store, dir) => {
    const T0 = Date.UTC(2026, 11, 5, 12);
    const HOUR = 3_600_000;
    const contact = (at: number, ok: boolean) => store.recordContact("s", "h", { at, ok, durationMs: 1, bytes: 0 });
    const paths = () =>
      (store.sql("SELECT path FROM files ORDER BY id").all() as { path: string }[]).map((r) => r.path);
    // deploy.log: its deployments, no lines; an empty log; a log whose lines retention removed.
    const deployLog = join(dir, "deploy.log");
    await Deno.writeTextFile(
      deployLog,
      JSON.stringify({ time: new Date(T0).toISOString(), app: "web", event: "success", commit: "abc1234", ok: true }) +
        "\n",
    );
    await ingestFile(store, "s", { rel: "web/deploy.log", path: deployLog, ino: null }, undefined, T0);
    const empty = join(dir, "empty.log");
    await Deno.writeTextFile(empty, "");
    await ingestFile(store, "s", { rel: "web/empty.log", path: empty, ino: null }, undefined, T0);
    assertEquals(paths(), ["web/deploy.log", "web/empty.log"]);
    assertEquals((store.sql("SELECT count(*) AS n FROM deployments").get() as { n: number }).n, 1);

    // The server is not reached for 2 hours: nothing is forgotten (its last good pull did not move).
    contact(T0, true);
    contact(T0 + 2 * HOUR, false);
    await store.retain({ now: T0 + 2 * HOUR });
    assertEquals(paths(), ["web/deploy.log", "web/empty.log"]);
    // Reached again, both files gone for 2 hours: the empty log's ledger goes; deploy.log's stays (its deployment).
    contact(T0 + 2 * HOUR, true);
    await store.retain({ now: T0 + 2 * HOUR });
    assertEquals(paths(), ["web/deploy.log"]);
    // deploy.log read again: its deployment once, not twice.
    await ingestFile(store, "s", { rel: "web/deploy.log", path: deployLog, ino: null }, undefined, T0 + 2 * HOUR);
    assertEquals((store.sql("SELECT count(*) AS n FROM deployments").get() as { n: number }).n, 1);

    // The newest ledger forgotten: the next one gets a new id, so no row of another file is taken for its own.
    const last = store.newGeneration("s", "web/last.log", null, "x", 0, undefined, T0);
    contact(T0 + 4 * HOUR, true);
    await store.retain({ now: T0 + 4 * HOUR });
    assert(!paths().includes("web/last.log"));
    assert(store.newGeneration("s", "web/next.log", null, "y", 0).id > last.id);
  });
});
