/**
 * The collector's limits (src/fleet/limits.ts) and terminal safety (src/terminal.ts), on real
 * files and a real SQLite store: what a pull takes of a listing, what ingestion reads of a file
 * that grew too much, what is stored of oversized or odd status.json fields, and how foreign
 * text is printed.
 */
import { join } from "node:path";
import { databaseAt, withStore } from "../helpers/fleet_store.ts";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { readStatusFile } from "../../src/fleet/collector.ts";
import { ingestFile } from "../../src/fleet/ingest.ts";
import { searchLogs } from "../../src/fleet/log_queries.ts";
import {
  FIELD,
  MAX_APPS,
  MAX_LOG_FILE_BYTES,
  MAX_LOG_FILES,
  MAX_MIRROR_BYTES,
  MAX_STATUS_BYTES,
} from "../../src/fleet/limits.ts";
import { fleetOverview } from "../../src/fleet/queries.ts";
import { type ListedFile, nextBatch, parseListing, planPull } from "../../src/fleet/pull_plan.ts";
import { SshSource } from "../../src/fleet/ssh_source.ts";
import { readAtMost } from "../../src/fsutil.ts";
import { ProcessRunner } from "../../src/runner.ts";
import { FleetStore } from "../../src/fleet/store.ts";
import { MIGRATIONS } from "../../src/fleet/migrations.ts";
import { forTerminal, jsonForTerminal } from "../../src/terminal.ts";

const VIEW = { now: Date.UTC(2026, 11, 3, 9), intervalMs: 30_000, holding: false, gapMs: 0 };

Deno.test("forTerminal: OSC 52, OSC 0, CSI, C1, DEL, CR and bidi controls are shown, not obeyed", () => {
  const hostile =
    "ok\x1b]52;c;cm0gLXJmIH4=\x07 title\x1b]0;pwned\x1b\\ red\x1b[31m\x1b[2J c1\u009b31m\u009d0;x\u009c " +
    "del\x7f cr\rbs\b nul\x00 bidi\u202e\u2066 tab\tnewline\nend é 日本";
  const shown = forTerminal(hostile);
  assertEquals(
    shown,
    "ok\\x1b]52;c;cm0gLXJmIH4=\\x07 title\\x1b]0;pwned\\x1b\\ red\\x1b[31m\\x1b[2J c1\\x9b31m\\x9d0;x\\x9c " +
      "del\\x7f cr\\x0dbs\\x08 nul\\x00 bidi\\u202e\\u2066 tab\tnewline\nend é 日本",
  );
  // deno-lint-ignore no-control-regex
  assert(!/[\x00-\x08\x0b-\x1f\x7f-\x9f]/.test(shown));
  assertEquals(forTerminal("a\nb\tc", { oneLine: true }), "a\\x0ab\tc");
  assertEquals(forTerminal("plain text: 100% [ok] — ✓"), "plain text: 100% [ok] — ✓");
  // JSON: what JSON.stringify leaves raw (DEL, C1, bidi) becomes \u escapes, and reads back the same.
  const value = { s: "\x1b]52;c;x\x07 \u009b2J \x7f \u202e" };
  const json = jsonForTerminal(value, 2);
  // deno-lint-ignore no-control-regex
  assert(!/[\x00-\x09\x0b-\x1f\x7f-\x9f\u202e]/.test(json), json);
  assertEquals(JSON.parse(json), value);
});

Deno.test("planPull: status.json over 64 KiB refused, log files over their size or past the mirror's total not pulled, odd names skipped", () => {
  const listed = (kind: "status" | "log", rel: string, size: number, ino = 1): ListedFile => ({ kind, ino, size, rel });
  const plan = planPull([
    listed("status", "web/status.json", 900),
    listed("status", "big/status.json", 100 << 20),
    listed("status", ".tls/certificates.json", 2000),
    listed("status", "we\x1b]0;x\x07b/status.json", 10),
    listed("log", "web/access.log", 10 << 20),
    listed("log", "web/huge.log", 500 << 20),
    listed("log", "web/deploy.log", 1000),
    listed("log", "web/../x.log", 1000),
    ...Array.from({ length: 5 }, (_, i) => listed("log", `fill/f${i}.log`, 60 << 20)),
  ]);
  assertEquals(plan.status, ["web/status.json", ".tls/certificates.json"].sort((a, b) => a.localeCompare(b)));
  // deploy.log first; then by name while they fit in the mirror's total: f4 does not, access.log still does.
  assertEquals(plan.logs, [
    "web/deploy.log",
    ...["fill/f0.log", "fill/f1.log", "fill/f2.log", "fill/f3.log"],
    "web/access.log",
  ]);
  const limits = plan.limits.join("\n");
  assertMatch(limits, /big\/status\.json is 100 MiB, over the 64 KiB allowed: refused/);
  assertMatch(limits, /web\/huge\.log is 500 MiB, over the 64 MiB a log file may have/);
  assertMatch(limits, /1 log file\(s\) \(60 MiB\) not pulled/);
  assertMatch(limits, /2 file\(s\) with names that are not plain skipped/);
  assert(4 * (60 << 20) + (10 << 20) + 1000 <= MAX_MIRROR_BYTES && 60 << 20 <= MAX_LOG_FILE_BYTES);

  // Too many apps, too many files.
  const many = planPull([
    ...Array.from({ length: MAX_APPS + 5 }, (_, i) => listed("status", `a${i}/status.json`, 10)),
    ...Array.from({ length: MAX_LOG_FILES + 3 }, (_, i) => listed("log", `a/f${i}.log`, 10)),
  ]);
  assertEquals([many.status.length, many.logs.length], [MAX_APPS, MAX_LOG_FILES]);
  assertMatch(many.limits.join("\n"), /205 apps, over the 200 allowed: 5 not pulled/);
  assertMatch(many.limits.join("\n"), /3 log file\(s\) .* not pulled/);
});

Deno.test("parseListing: status and log lines; a name with a newline cannot forge another entry's inode", () => {
  const files = parseListing("S 11 120 ./web/status.json\nL 12 5 ./web/access.log\nnoise\nL x 5 ./a/b.log\n");
  assertEquals(files, [
    { kind: "status", ino: 11, size: 120, rel: "web/status.json" },
    { kind: "log", ino: 12, size: 5, rel: "web/access.log" },
  ]);
  // "evil\nL 99 5 ./web/access.log" as a file name: two lines, the first not a plain name, the second a duplicate.
  const forged = planPull(parseListing("L 12 5 ./web/access.log\nL 13 5 ./x/evil\nL 99 5 ./web/access.log.log\n"));
  assertEquals(forged.logs, ["web/access.log", "web/access.log.log"]);
});

Deno.test("readStatusFile: at most 64 KiB read; bigger or not an object is refused with a reason; broken JSON is nothing", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dp-status-" });
  try {
    const path = join(dir, "status.json");
    await Deno.writeTextFile(path, JSON.stringify({ status: "running", pad: "x".repeat(MAX_STATUS_BYTES - 40) }));
    assertEquals(typeof await readStatusFile(path), "object");
    await Deno.writeTextFile(path, JSON.stringify({ status: "running", pad: "x".repeat(MAX_STATUS_BYTES) }));
    assertMatch(String(await readStatusFile(path)), /over the 64 KiB allowed: refused/);
    await Deno.truncate(path, 100 << 20); // sparse: 100 MiB, read only up to the limit
    assertMatch(String(await readStatusFile(path)), /refused/);
    // A whole JSON value that is not an object is bad input, not a half-written file.
    for (const [text, kind] of [["[1,2]", "an array"], ["1", "a number"], ['"x"', "a string"], ["null", "null"]]) {
      await Deno.writeTextFile(path, text);
      assertEquals(await readStatusFile(path), `is ${kind}, not a JSON object: refused`);
    }
    await Deno.writeTextFile(path, '{"half": ');
    assertEquals(await readStatusFile(path), undefined);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("FleetStore: status.json fields are cut to their limits, odd types dropped; the API never returns more", async () => {
  await withStore("dp-limits-", (store) => {
    store.upsertApp("s1", "web", {
      status: "running",
      healthy: "yes" as unknown as boolean,
      version: "v".repeat(60_000),
      type: { nested: "object" } as unknown as string,
      port: 1e300,
      commit: ["a"] as unknown as string,
      lastDeploy: { message: "m".repeat(50_000) },
    }, VIEW.now);
    store.recordContact("s1", "10.0.0.1", {
      at: VIEW.now,
      ok: false,
      error: "e".repeat(1 << 20),
      durationMs: 5,
      bytes: 0,
      limits: Array.from({ length: 50 }, (_, i) => `limit ${i} ${"x".repeat(1000)}`),
    });
    const server = fleetOverview(store, VIEW).servers[0];
    const app = server.apps[0];
    assertEquals(app.version!.length, FIELD.short);
    assertMatch(app.version!, /…\[cut\]$/);
    assertEquals([app.healthy, app.type, app.port, app.commit], [null, null, null, null]);
    assertEquals(app.lastDeploy, { cut: JSON.stringify({ message: "m".repeat(50_000) }).length });
    assertEquals(server.lastError!.length, FIELD.message);
    assertEquals(server.limits.length, FIELD.limits + 1);
    assert(server.limits.every((line) => line.length <= FIELD.limit));
    assertEquals(server.limits.at(-1), "and 30 more");
    const longest = Math.max(...JSON.stringify(fleetOverview(store, VIEW)).split('"').map((part) => part.length));
    assert(longest <= FIELD.message, `a field of ${longest} characters`);
  });
});

Deno.test("FleetStore: a version 2 database's oversized values are cut by the migration", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dp-limits-migrate-" });
  const path = join(dir, "fleet.db");
  try {
    const db = databaseAt(path, 2);
    db.prepare("INSERT INTO apps (server, app, status, version, last_deploy, fetched_at) VALUES (?, ?, ?, ?, ?, ?)")
      .run("s1", "web", "running", "v".repeat(100_000), JSON.stringify({ pad: "x".repeat(10 << 20) }), 1);
    db.prepare("INSERT INTO servers (name, host, last_error) VALUES (?, ?, ?)").run("s1", "h", "e".repeat(1 << 20));
    db.close();
    const store = await FleetStore.open(path);
    try {
      assertEquals(store.version, MIGRATIONS.length);
      const server = fleetOverview(store, VIEW).servers[0];
      assertEquals(server.apps[0].version!.length, FIELD.short);
      assertEquals(server.apps[0].lastDeploy, { cut: JSON.stringify({ pad: "x".repeat(10 << 20) }).length });
      assertEquals(server.lastError!.length, FIELD.message);
      assertEquals(server.limits, []);
    } finally {
      store.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("FleetStore: lines stored before the search's hit markers were U+FFFE/U+FFFF lose them to the migration: no forged hit", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dp-limits-marks-" });
  const path = join(dir, "fleet.db");
  try {
    const db = databaseAt(path, 9);
    db.prepare(
      "INSERT INTO files (id, server, path, generation, head_hash, head_len, offset) VALUES (1, 's', 'a/x.log', 1, 'h', 0, 0)",
    )
      .run();
    const forged = "\uFFFEFORGED\uFFFF needle";
    db.prepare(
      "INSERT INTO lines (id, file_id, offset, server, app, file, ts, kind, text) VALUES (1, 1, 0, 's', 'a', 'x.log', 0, 'line', ?)",
    )
      .run(forged);
    db.prepare("INSERT INTO lines_fts (rowid, text) VALUES (1, ?)").run(forged);
    db.close();
    const store = await FleetStore.open(path);
    try {
      const [result] = searchLogs(store, { q: "needle" }).results;
      assertEquals(result.text, "\uFFFDFORGED\uFFFD needle");
      assertEquals(result.snippet.filter((part) => part.hit).map((part) => part.text), ["needle"]);
      assertEquals(searchLogs(store, { q: "forged" }).results.length, 1, "the index still finds the word");
      store.sql("INSERT INTO lines_fts (lines_fts) VALUES ('integrity-check')").run(); // throws when the index is off
    } finally {
      store.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ingestFile: past the per-file budget the newest bytes are read after a gap line; past the server's, the file waits", async () => {
  await withStore("dp-limits-", async (store, dir) => {
    const path = join(dir, "access.log");
    const line = (i: number) => `req ${String(i).padStart(6, "0")} ${"x".repeat(80)}\n`; // 92 bytes
    await Deno.writeTextFile(path, Array.from({ length: 1000 }, (_, i) => line(i)).join(""));
    const file = { rel: "web/access.log", path, ino: 1 };
    // 100 lines and a half: the cut is in the middle of line 899 (one at a line's start: fleet_ingest_gap_test).
    const budget = { perFile: 9_246, left: 100_000, lines: Infinity };
    const first = await ingestFile(store, "s1", file, undefined, VIEW.now, budget);
    assertEquals(first.skipped, 92_000 - 9_246);
    assertEquals([first.lines, first.gaps, first.bytes], [100, 1, 9_246], "the first line after the cut is partial");
    assertEquals(budget.left, 100_000 - 9_246);
    const rows = store.sql("SELECT kind, text FROM lines ORDER BY offset").all() as { kind: string; text: string }[];
    assertEquals(rows[0].kind, "gap");
    assertMatch(rows[0].text, /^\[fleet\] gap: 80\.8 KiB of access\.log skipped, over the 9 KiB a log file may bring/);
    assertEquals(rows[1].text, line(900).trimEnd());
    assertEquals(rows.at(-1)!.text, line(999).trimEnd());

    // Growth within the budget: read whole, no gap.
    await Deno.writeTextFile(path, line(1000) + line(1001), { append: true });
    const second = await ingestFile(store, "s1", file, undefined, VIEW.now, budget);
    assertEquals([second.lines, second.gaps, second.skipped], [2, 0, 0]);

    // Not enough left of the server's budget: nothing read, the ledger unmoved, for the next cycle.
    await Deno.writeTextFile(path, line(1002), { append: true });
    const offset = store.ledger("s1", "web/access.log")!.offset;
    const deferred = await ingestFile(store, "s1", file, undefined, VIEW.now, {
      perFile: 9_200,
      left: 10,
      lines: Infinity,
    });
    assertEquals(deferred.deferred, true);
    assertEquals(store.ledger("s1", "web/access.log")!.offset, offset);
    const later = await ingestFile(store, "s1", file, undefined, VIEW.now, {
      perFile: 9_200,
      left: 10_000,
      lines: Infinity,
    });
    assertEquals(later.lines, 1);
  });
});

Deno.test("SshSource: the rsync argv pulls only the planned files, none over the limit, into a mirror only its owner reads", () => {
  const server = { name: "web1", host: "10.0.0.5", user: "root", port: 2222 };
  const source = new SshSource(server, { mirror: "/h/mirror/web1", knownHosts: "/h/known_hosts", sockets: "/h/ssh" });
  const argv = source.rsyncArgv("/var/log/deployments/", "/h/mirror/web1/logs", "/h/mirror/web1/logs.files", 1 << 26);
  const rsync = argv.indexOf("rsync");
  const limit = argv.slice(0, rsync);
  assert(limit.length === 0 || (limit[0].endsWith("/prlimit") && limit[1] === "--fsize=67108864"), limit.join(" "));
  assertEquals(argv.slice(rsync + 1, rsync + 9), [
    "--times",
    "--inplace",
    "--stats",
    "--timeout=20",
    "--files-from=/h/mirror/web1/logs.files",
    "--max-size=67108864",
    "--info=skip1",
    "--chmod=D700,F600",
  ]);
  assert(!argv.includes("--delete") && !argv.includes("--recursive"), "nothing but the listed files");
  assertEquals(argv.slice(-3), ["--", "10.0.0.5:/var/log/deployments/", "/h/mirror/web1/logs/"]);
});

Deno.test("SshSource: an IPv6 host (::1) reaches ssh bare and rsync's remote path in brackets; rsync pulls through it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dp-fleet-ipv6-" });
  try {
    // ssh, faked: records its words, then runs the remote command here (what sshd would run).
    const ssh = join(dir, "ssh");
    await Deno.writeTextFile(
      ssh,
      `#!/bin/sh\nprintf '%s\\n' "$@" > ${dir}/ssh.args\nwhile [ "$1" != "::1" ]; do shift; done\nshift\nexec "$@"\n`,
      { mode: 0o755 },
    );
    await Deno.mkdir(join(dir, "remote"));
    await Deno.writeTextFile(join(dir, "remote", "app.log"), "a line\n");
    await Deno.mkdir(join(dir, "local"));
    await Deno.writeTextFile(join(dir, "list"), "app.log\n");
    const server = { name: "web1", host: "::1", user: "root", port: 22 };
    const source = new SshSource(server, {
      mirror: join(dir, "m"),
      knownHosts: join(dir, "kh"),
      sockets: join(dir, "s"),
    });
    const argv = source.rsyncArgv(`${dir}/remote/`, join(dir, "local"), join(dir, "list"), 1 << 20);
    assertEquals(argv.slice(-2, -1), [`[::1]:${dir}/remote/`]);
    argv[argv.indexOf("-e") + 1] = ssh;
    const out = await new Deno.Command(argv[0], { args: argv.slice(1), stdout: "piped", stderr: "piped" }).output();
    assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
    assertEquals(await Deno.readTextFile(join(dir, "local", "app.log")), "a line\n");
    assert((await Deno.readTextFile(join(dir, "ssh.args"))).split("\n").includes("::1"), "ssh got the bare address");
    assertEquals(source.sshArgv().includes("[::1]"), false);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

const MiB = 1 << 20;
const logFile = (rel: string, size: number): ListedFile => ({ kind: "log", ino: 1, size, rel });

Deno.test("nextBatch: honest files in as few rsyncs as fit; a listing that lies cannot make one rsync write past the mirror's limit", () => {
  // 30 small files and a big one: the small ones together (room to grow each), then the big one alone.
  const pending = [
    ...Array.from({ length: 30 }, (_, i) => logFile(`a/f${i}.log`, MiB)),
    logFile("a/big.log", 60 * MiB),
  ];
  const first = nextBatch(pending, MAX_LOG_FILE_BYTES, MAX_MIRROR_BYTES, new Map())!;
  assertEquals(first, { count: 30, maxSize: Math.floor(MAX_MIRROR_BYTES / 30) });
  const mirrored = new Map(pending.slice(0, 30).map((f) => [f.rel, f.size]));
  assertEquals(nextBatch(pending.slice(30), MAX_LOG_FILE_BYTES, MAX_MIRROR_BYTES, mirrored), {
    count: 1,
    maxSize: MAX_LOG_FILE_BYTES,
  });
  // Every file listed as 3 bytes (64 × 64 MiB = 4 GiB if each could be 64 MiB): 4 MiB each, 256 MiB in all.
  const liars = Array.from({ length: MAX_LOG_FILES }, (_, i) => logFile(`a/l${i}.log`, 3));
  assertEquals(nextBatch(liars, MAX_LOG_FILE_BYTES, MAX_MIRROR_BYTES, new Map()), {
    count: MAX_LOG_FILES,
    maxSize: MAX_MIRROR_BYTES / MAX_LOG_FILES,
  });
  // The mirror is full of what came before: nothing fits.
  assertEquals(
    nextBatch(liars, MAX_LOG_FILE_BYTES, MAX_MIRROR_BYTES, new Map([["a/x.log", MAX_MIRROR_BYTES]])),
    undefined,
  );
  // Whatever the listing and the mirror: the files outside the batch plus count × maxSize stay within the budget.
  for (let round = 0; round < 2000; round++) {
    const n = 1 + Math.floor(Math.random() * MAX_LOG_FILES);
    const files = Array.from({ length: n }, (_, i) => logFile(`a/r${i}.log`, Math.floor(Math.random() ** 3 * 70 * MiB)))
      .sort((a, b) => a.size - b.size);
    const mirror = new Map(
      files.filter(() => Math.random() < 0.5).map((f) => [f.rel, Math.floor(Math.random() * 8 * MiB)]),
    );
    const batch = nextBatch(files, MAX_LOG_FILE_BYTES, MAX_MIRROR_BYTES, mirror);
    if (!batch) continue;
    const inside = new Set(files.slice(0, batch.count).map((f) => f.rel));
    const outside = [...mirror].filter(([rel]) => !inside.has(rel)).reduce((sum, [, size]) => sum + size, 0);
    assert(batch.maxSize <= MAX_LOG_FILE_BYTES && batch.count >= 1, JSON.stringify(batch));
    assert(outside + batch.count * batch.maxSize <= MAX_MIRROR_BYTES, JSON.stringify({ batch, outside }));
    assert(files.slice(0, batch.count).every((f) => f.size <= batch.maxSize), "each listed file fits");
  }
});

Deno.test("readAtMost: at most max + 1 bytes of a path or an open file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dp-readatmost-" });
  try {
    const path = join(dir, "f");
    await Deno.writeTextFile(path, "0123456789");
    assertEquals(new TextDecoder().decode(await readAtMost(path, 4)), "01234");
    assertEquals((await readAtMost(path, 10)).length, 10);
    assertEquals((await readAtMost(path, 100)).length, 10);
    using file = await Deno.open(path);
    await file.seek(8, Deno.SeekMode.Start);
    assertEquals(new TextDecoder().decode(await readAtMost(file, 4)), "89");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ProcessRunner: output past maxOutputBytes kills the command's whole group; what is kept stays within it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dp-runner-cap-" });
  try {
    const pidFile = join(dir, "child.pid");
    // A child in the background keeps running unless its group is killed; the parent floods stdout.
    const started = Date.now();
    const result = await new ProcessRunner().run({
      argv: ["sh", "-c", 'sleep 60 & echo $! > "$1"; yes flood', "sh", pidFile],
      quiet: true,
      allowFailure: true,
      timeoutMs: 30_000,
      maxOutputBytes: 64 << 10,
    });
    assert(Date.now() - started < 10_000, `${Date.now() - started} ms`);
    assertEquals(result.overflow, true);
    assert(result.code !== 0, String(result.code));
    assert(result.output.length <= (64 << 10) + 100, String(result.output.length));
    assertMatch(result.tail.at(-1)!, /killed: more than 65536 bytes of output/);
    const child = Number((await Deno.readTextFile(pidFile)).trim());
    let alive = true;
    for (let i = 0; i < 50 && alive; i++) {
      alive = await Deno.stat(`/proc/${child}`).then(() => true, () => false);
      if (alive) await new Promise((r) => setTimeout(r, 100));
    }
    assert(!alive, "the background child was killed with its group");
    // Within the limit: as before.
    const small = await new ProcessRunner().run({ argv: ["echo", "hi"], quiet: true, maxOutputBytes: 64 });
    assertEquals([small.code, small.output, small.overflow], [0, "hi", undefined]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
