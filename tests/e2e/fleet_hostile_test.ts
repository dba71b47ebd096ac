/**
 * A compromised server against the real fleet monitor, over real ssh and rsync into real SQLite:
 * a 100 MB status.json, a 500 MB log, floods of log lines and terminal escape sequences. The
 * collector stays within its limits (src/fleet/limits.ts: mirror and database growth measured),
 * the normal server next to it is pulled on time, the API answers small responses, the hostile
 * server is marked and alerted, and what it says reaches the terminal escaped. The figures are
 * printed (`figures:` lines) for the closing note.
 */
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { append, serve, withFleet, writeStatus } from "../helpers/fleet.ts";
import { BIN } from "../helpers/server.ts";
import type { FakeVps } from "../helpers/vps.ts";
import {
  MAX_LOG_FILE_BYTES,
  MAX_MIRROR_BYTES,
  MAX_NEW_BYTES_PER_FILE,
  MAX_NEW_BYTES_PER_SERVER,
  MAX_NEW_LINES_PER_SERVER,
  MAX_STATUS_BYTES,
} from "../../src/fleet/limits.ts";
import { CHUNK } from "../../src/fleet/ingest.ts";

const MiB = 1 << 20;

/** Writes `bytes` bytes of `text` repeated (a 1 MiB buffer at a time: fast) to `path`. */
async function fill(path: string, bytes: number, prefix = "", pattern = "x", suffix = "") {
  await Deno.mkdir(join(path, ".."), { recursive: true });
  using file = await Deno.open(path, { write: true, create: true, truncate: true });
  const encoder = new TextEncoder();
  await file.write(encoder.encode(prefix));
  const chunk = encoder.encode(pattern.repeat(Math.ceil(MiB / pattern.length)).slice(0, MiB));
  let left = bytes - prefix.length - suffix.length;
  while (left > 0) {
    const n = await file.write(chunk.subarray(0, Math.min(chunk.length, left)));
    left -= n;
  }
  await file.write(encoder.encode(suffix));
}

/** Log lines of about 1 KiB (few distinct words, as a flood would be). */
const LINE = `flood ${"spam ".repeat(200)}\n`;

/** Every file under `dir` and its size (apparent). */
async function walk(dir: string): Promise<Map<string, number>> {
  const files = new Map<string, number>();
  for (const entry of await Array.fromAsync(Deno.readDir(dir)).catch(() => [])) {
    const path = join(dir, entry.name);
    if (entry.isDirectory) { for (const [p, s] of await walk(path)) files.set(p, s); }
    else files.set(path, (await Deno.lstat(path)).size);
  }
  return files;
}

const sum = (sizes: Map<string, number>) => [...sizes.values()].reduce((a, b) => a + b, 0);
const mib = (bytes: number) => `${(bytes / MiB).toFixed(1)} MiB`;

/** A receiver of webhook alerts on loopback. */
function receiver() {
  const got: { event: string; title: string }[] = [];
  const ready = Promise.withResolvers<number>();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: ({ port }) => ready.resolve(port) },
    async (r) => {
      got.push(await r.json());
      return new Response(null);
    },
  );
  return { got, port: ready.promise, close: () => server.shutdown() };
}

async function hostileFiles(vps: FakeVps) {
  // 100 MB status.json (valid JSON: it would be parsed and stored whole without a limit).
  await fill(
    join(vps.deployments, "big", "status.json"),
    100_000_000,
    '{"name":"big","status":"running","pad":"',
    "x",
    '"}',
  );
  // A status.json within 64 KiB with a field far over its limit.
  await writeStatus(vps, "small", { status: "running", healthy: true, version: "v".repeat(60_000) });
  // 500 MB log (sparse: made at once).
  await Deno.mkdir(join(vps.logs, "big"), { recursive: true });
  using huge = await Deno.open(join(vps.logs, "big", "huge.log"), { write: true, create: true });
  await huge.truncate(500_000_000);
  // 20 MiB of lines in one file (over the 8 MiB a file may bring per cycle), and 4 × 7 MiB (past the server's 32).
  await fill(join(vps.logs, "big", "flood.log"), 20 * MiB, "", LINE);
  for (const i of [1, 2, 3, 4]) await fill(join(vps.logs, "big", `f${i}.log`), 7 * MiB, "", LINE);
  // 2,000,000 lines of 2 bytes (~10 µs each to store): at most MAX_NEW_LINES_PER_SERVER a cycle.
  await fill(join(vps.logs, "big", "tiny.log"), 4_000_000, "", "a\n");
}

Deno.test("fleet: a hostile server (100 MB status.json, 500 MB log, floods) stays within the limits; the normal server is pulled on time", async () => {
  const alerts = receiver();
  try {
    await withFleet(2, async ([hostile, normal], laptop) => {
      await writeStatus(normal, "shop", { status: "running", healthy: true, version: "abc1234" });
      await append(normal, "shop", "access.log", "GET /checkout 200\n".repeat(100));
      await hostileFiles(hostile);
      await laptop.addHost("hostile", hostile);
      await laptop.addHost("normal", normal);
      await fastCyclesAlertingTo(laptop, await alerts.port);

      const api = await serve(laptop);
      const started = Date.now();
      type Server = { name: string; lastOk: string | null; lastDurationMs: number; limits: string[] };
      const servers = async () => {
        const response = await fetch(`${api.base}/api/fleet`);
        const text = await response.text();
        const body = JSON.parse(text);
        return { bytes: text.length, byName: new Map<string, Server>(body.servers.map((s: Server) => [s.name, s])) };
      };
      // The normal server's pulls while the hostile one is pulled: its last contact is never much older than 2 intervals.
      let worstAge = 0;
      let hostileDone = 0;
      const longest = { hostile: 0, normal: 0 };
      try {
        // Until 6 s past the hostile server's first good pull, and its flood's cycle (later on a loaded machine).
        const flooded = () => /big\/flood\.log: \d+ MiB skipped/.test(api.log());
        for (let i = 0; i < 60 && (!hostileDone || Date.now() - hostileDone < 6_000 || !flooded()); i++) {
          await new Promise((r) => setTimeout(r, 500));
          const { byName } = await servers();
          const shop = byName.get("normal");
          if (shop?.lastOk) worstAge = Math.max(worstAge, Date.now() - Date.parse(shop.lastOk));
          for (const name of ["hostile", "normal"] as const) {
            longest[name] = Math.max(longest[name], byName.get(name)?.lastDurationMs ?? 0);
          }
          if (!hostileDone && byName.get("hostile")?.lastOk) hostileDone = Date.now();
        }
        assert(hostileDone, api.log());
        const { bytes: fleetBytes, byName } = await servers();
        const [bad, good] = [byName.get("hostile")!, byName.get("normal")!];
        const detail = await (await fetch(`${api.base}/api/servers/hostile`)).text();
        const search = await (await fetch(`${api.base}/api/search?q=flood&limit=50`)).text();
        const cycles = api.log().split("\n").filter((line) => / cycle \d+:/.test(line));

        // Marked, each limit named.
        const limits = bad.limits.join("\n");
        assertMatch(limits, /big\/status\.json is 95\.4 MiB, over the 64 KiB allowed: refused/);
        assertMatch(limits, /big\/huge\.log is 476\.8 MiB, over the 64 MiB a log file may have/);
        // The floods, in the cycles that brought them (the mark is the last pull's).
        const said = api.log().split("\n").filter((line) => /! hostile: over a limit/.test(line));
        // (How many wait depends on the file each cycle starts at: the cycle count when the floods arrive.)
        assert(
          said.some((line) =>
            /[1-5] log file\(s\) wait for the next cycle: over the 32 MiB of new log lines/.test(line)
          ),
          said.join("\n"),
        );
        assert(said.some((line) => /big\/flood\.log: 12 MiB skipped, over the 8 MiB/.test(line)), said.join("\n"));
        assert(
          said.some((line) => /\d log file\(s\) wait for the next cycle: over the 100,000 new log lines/.test(line)),
          said.join("\n"),
        );
        assertEquals(good.limits, []);
        const apps = (await api.json("/api/fleet")).body.servers.find((s: { name: string }) => s.name === "hostile")
          .apps;
        assertEquals(apps.map((a: { app: string }) => a.app), ["small"], "the 100 MB status.json is refused");
        assertEquals(apps[0].version.length, 200, "a field over its limit is cut");

        // Bounded: the mirror, the database, the API's answers.
        const mirror = await walk(join(laptop.home, "mirror", "hostile"));
        const data = await walk(join(laptop.home, "data"));
        assert(
          ![...mirror.keys()].some((path) => /huge\.log$|big\/status\.json$/.test(path)),
          [...mirror.keys()].join(),
        );
        assert(sum(mirror) <= MAX_MIRROR_BYTES + 4 * MAX_STATUS_BYTES, mib(sum(mirror)));
        assert(Math.max(...mirror.values()) <= MAX_LOG_FILE_BYTES);
        // Lines of a server: at most MAX_NEW_BYTES_PER_SERVER of text per pull; the database about twice that (index).
        const db = new DatabaseSync(join(laptop.home, "data", "fleet.db"), { readOnly: true });
        const stored = db.prepare(
          "SELECT sum(length(text)) AS n, count(*) AS lines FROM lines WHERE server = 'hostile'",
        )
          .get() as { n: number; lines: number };
        const { pulls } = db.prepare("SELECT pulls FROM servers WHERE name = 'hostile'").get() as { pulls: number };
        db.close();
        assert(stored.n <= pulls * MAX_NEW_BYTES_PER_SERVER, `${mib(stored.n)} in ${pulls} pulls`);
        // ...and at most MAX_NEW_LINES_PER_SERVER lines (past it by the rest of one chunk at most).
        assert(
          stored.lines <= pulls * (MAX_NEW_LINES_PER_SERVER + CHUNK / 2),
          `${stored.lines} lines in ${pulls} pulls`,
        );
        // (Each row costs some bytes of its own, whatever its text: the tiny lines.)
        assert(
          sum(data) <= 3 * stored.n + 256 * stored.lines + 8 * MiB,
          `${mib(sum(data))} for ${stored.lines} lines, ${mib(stored.n)} of text`,
        );
        const cycleCount = cycles.length;
        assert(fleetBytes < 16 << 10, `/api/fleet: ${fleetBytes} bytes`);
        assert(detail.length < 64 << 10, `/api/servers/hostile: ${detail.length} bytes`);
        // Within 2 intervals and some slack for a loaded machine (the suite runs in parallel); the figure is printed.
        assert(worstAge <= 2 * 2_000 + 6_000, `the normal server's last contact was ${worstAge} ms old`);
        assert(
          alerts.got.some((a) => a.event === "over_limit" && /hostile went over/.test(a.title)),
          JSON.stringify(alerts.got),
        );
        assert(!alerts.got.some((a) => a.event === "over_limit" && /normal/.test(a.title)));

        console.log(
          [
            `figures: hostile server: 100,000,000-byte status.json, 500,000,000-byte log, ${
              mib(20 * MiB + 28 * MiB)
            } of log lines, 2,000,000 2-byte lines`,
            `figures: mirror of the hostile server: ${mib(sum(mirror))} in ${mirror.size} files ` +
            `(limits: ${mib(MAX_MIRROR_BYTES)} in all, ${mib(MAX_LOG_FILE_BYTES)} a file)`,
            `figures: fleet.db + -wal + -shm + alerts.json after ${cycleCount} cycles (${pulls} pulls of the hostile ` +
            `server): ${mib(sum(data))}, holding ${stored.lines} of its lines, ${mib(stored.n)} of text ` +
            `(limits: ${mib(MAX_NEW_BYTES_PER_SERVER)} per server, ${mib(MAX_NEW_BYTES_PER_FILE)} per file per cycle)`,
            `figures: longest pull seen: hostile ${longest.hostile} ms, normal ${longest.normal} ms; normal server's ` +
            `last contact at most ${worstAge} ms old over ${
              ((Date.now() - started) / 1000).toFixed(0)
            } s (interval 2 s)`,
            `figures: /api/fleet ${fleetBytes} bytes; /api/servers/hostile ${detail.length} bytes; ` +
            `/api/search?q=flood&limit=50 ${search.length} bytes`,
            ...[...new Set(said.map((line) => line.trim()))].map((line) => `figures: ${line}`),
            ...cycles.slice(0, 4).map((line) => `figures: ${line}`),
          ].join("\n"),
        );
      } finally {
        await api.stop();
      }

      // `fleet list` marks it; `fleet collect` names each limit.
      const list = await laptop.fleet("list");
      assertMatch(list.stdout, /hostile .*OVER \(\d+\)/);
      assertMatch(list.stdout, /! hostile: over a limit: big\/status\.json is 95\.4 MiB/);
      assert(!/! normal:/.test(list.stdout), list.stdout);
      const collect = await laptop.collect();
      assertEquals(collect.code, 0, collect.output);
      assertMatch(collect.stdout, /! hostile: over a limit: big\/huge\.log is 476\.8 MiB/);
    });
  } finally {
    await alerts.close();
  }
});

/**
 * A server whose listing lies: a `stat` first on its PATH (the listing runs `find … -exec stat`)
 * says every file is 3 bytes. 50 log files are listed (4.8 GiB if each could be 64 MiB, 1 GiB
 * real): 40 of 24 MiB and 10 of 5 MiB; and a 100 KB status.json.
 */
async function lyingFiles(vps: FakeVps) {
  const bin = join(vps.dir, "root", "fakebin");
  await Deno.mkdir(bin, { recursive: true });
  await Deno.writeTextFile(
    join(bin, "stat"),
    "#!/bin/sh\n/usr/bin/stat \"$@\" | sed -E 's/^([SL] [0-9]+) [0-9]+ /\\1 3 /'\n",
    { mode: 0o755 },
  );
  await Deno.writeTextFile(join(vps.dir, "root", ".bashrc"), "export PATH=/root/fakebin:$PATH\n");
  await fill(join(vps.deployments, "big", "status.json"), 100_000, '{"name":"big","pad":"', "x", '"}');
  await writeStatus(vps, "web", { status: "running", healthy: true, version: "v1" });
  const sparse = async (rel: string, bytes: number) => {
    await Deno.mkdir(join(vps.logs, rel, ".."), { recursive: true });
    using file = await Deno.open(join(vps.logs, rel), { write: true, create: true });
    await file.write(new TextEncoder().encode("a line\n"));
    await file.truncate(bytes);
  };
  for (let i = 0; i < 40; i++) await sparse(`web/h${String(i).padStart(2, "0")}.log`, 24 * MiB);
  for (let i = 0; i < 10; i++) await sparse(`web/s${i}.log`, 5 * MiB);
}

Deno.test("fleet: a server whose listing lies (every file 3 bytes) stays within the mirror's limits, is marked and alerted; the other server is on time", async () => {
  const alerts = receiver();
  try {
    await withFleet(2, async ([liar, normal], laptop) => {
      await lyingFiles(liar);
      const listing = await liar.ssh(
        "cd /var/log/deployments && find . -name 'h00.log' -exec stat -c 'L %i %s %n' {} +",
      );
      assertMatch(listing.stdout, /^L \d+ 3 \.\/web\/h00\.log$/m); // the lie, as the collector's listing sees it
      await writeStatus(normal, "shop", { status: "running", healthy: true, version: "abc1234" });
      await append(normal, "shop", "access.log", "GET / 200\n".repeat(100));
      await laptop.addHost("liar", liar);
      await laptop.addHost("normal", normal);
      await fastCyclesAlertingTo(laptop, await alerts.port);
      const api = await serve(laptop);
      try {
        type Server = { name: string; lastOk: string | null; lastContact: string | null; limits: string[] };
        let worstAge = 0;
        let liarDone = 0;
        for (let i = 0; i < 60 && (!liarDone || Date.now() - liarDone < 5_000); i++) {
          await new Promise((r) => setTimeout(r, 500));
          const body = (await api.json("/api/fleet")).body;
          const byName = new Map<string, Server>(body.servers.map((s: Server) => [s.name, s]));
          const shop = byName.get("normal");
          if (shop?.lastOk) worstAge = Math.max(worstAge, Date.now() - Date.parse(shop.lastOk));
          if (!liarDone && byName.get("liar")?.limits.length) liarDone = Date.now();
        }
        assert(liarDone, api.log());
        const servers = (await api.json("/api/fleet")).body.servers as (Server & { apps: { app: string }[] })[];
        const bad = servers.find((s) => s.name === "liar")!;
        const limits = bad.limits.join("\n");
        assertMatch(limits, /big\/status\.json is bigger than the 64 KiB it could have \(its listing said 3 B\)/);
        assertMatch(limits, /web\/h00\.log is bigger than the 5\.1 MiB it could have \(its listing said 3 B\)/);
        assertEquals(bad.apps.map((a) => a.app), ["web"], "the lying status.json is not taken");
        assertEquals(servers.find((s) => s.name === "normal")!.limits, []);

        const mirror = await walk(join(laptop.home, "mirror", "liar"));
        const logs = [...mirror].filter(([path]) => path.includes("/logs/"));
        assertEquals(
          logs.map(([path]) => path.split("/").pop()!).sort(),
          Array.from({ length: 10 }, (_, i) => `s${i}.log`),
        );
        assert(sum(mirror) <= MAX_MIRROR_BYTES + 4 * MAX_STATUS_BYTES, mib(sum(mirror)));
        assert(Math.max(...mirror.values()) <= MAX_LOG_FILE_BYTES);
        assert(
          alerts.got.some((a) => a.event === "over_limit" && /liar went over/.test(a.title)),
          JSON.stringify(alerts.got),
        );
        assert(!alerts.got.some((a) => a.event === "over_limit" && /normal/.test(a.title)));
        assert(worstAge <= 2 * 2_000 + 6_000, `the normal server's last contact was ${worstAge} ms old`);
        console.log(
          `figures: lying server: 50 log files listed as 3 B (1,010 MiB real): mirror ${mib(sum(mirror))} in ` +
            `${mirror.size} files; normal server's last contact at most ${worstAge} ms old (interval 2 s)`,
        );
      } finally {
        await api.stop();
      }
    });
  } finally {
    await alerts.close();
  }
});

Deno.test("fleet: a file that grows between rsync's file list and its transfer is stopped at its transfer's limit (RLIMIT_FSIZE), removed, marked", async () => {
  await withFleet(1, async ([vps], laptop) => {
    // The server's rsync (first on its PATH): 0.2 s after a log transfer starts, web/z.log (listed
    // and sent in rsync's file list as 10 bytes) becomes 20 MiB; it sends slowly (2 MB/s), so
    // web/a.log (1.5 MiB, first in name order) is still on its way when z.log is opened.
    const bin = join(vps.dir, "root", "fakebin");
    await Deno.mkdir(bin, { recursive: true });
    await Deno.writeTextFile(
      join(bin, "rsync"),
      '#!/bin/sh\ncase "$*" in *var/log/deployments*) ' +
        "(sleep 0.2; truncate -s 20M /var/log/deployments/web/z.log) & ;; esac\n" +
        'exec /usr/bin/rsync --bwlimit=2000 "$@"\n',
      { mode: 0o755 },
    );
    await Deno.writeTextFile(join(vps.dir, "root", ".bashrc"), "export PATH=/root/fakebin:$PATH\n");
    await writeStatus(vps, "web", { status: "running", healthy: true, version: "v1" });
    await fill(join(vps.logs, "web", "a.log"), 1.5 * MiB, "", LINE);
    // 62 small files: 64 in one transfer, so each may have 4 MiB (256 MiB / 64).
    for (let i = 0; i < 62; i++) await append(vps, "web", `f${String(i).padStart(2, "0")}.log`, "line\n");
    await append(vps, "web", "z.log", "123456789\n");
    await laptop.addHost("grower", vps);

    const collect = await laptop.collect();
    assertEquals(collect.code, 1, collect.output);
    assertMatch(collect.output, /grower: logs: it sent web\/z\.log bigger than 4 MiB \(not what its listing said\)/);
    assertMatch(
      collect.output,
      /! grower: over a limit: log file\(s\): it sent web\/z\.log bigger than 4 MiB .*: what came of this transfer is removed/,
    );
    const mirror = await walk(join(laptop.home, "mirror", "grower"));
    assert(![...mirror.keys()].some((path) => path.includes("/logs/")), [...mirror.keys()].join());
    assertEquals((await Deno.stat(join(vps.logs, "web", "z.log"))).size, 20 * MiB, "it did grow");
    const list = await laptop.fleet("list");
    assertMatch(list.stdout, /grower .*OVER/);
    console.log(`figures: a file grown to 20 MiB mid-transfer: mirror ${mib(sum(mirror))} in ${mirror.size} files`);
  });
});

/** The raw bytes a command printed on stdout, and whether any is a control a terminal would obey. */
async function raw(argv: string[], env: Record<string, string>) {
  const out = await new Deno.Command(argv[0], { args: argv.slice(1), env, stdin: "null" }).output();
  const bytes = out.stdout;
  const text = new TextDecoder().decode(bytes);
  // ESC, BEL, CR, BS, DEL, any other C0 but tab and newline; C1 as UTF-8 (C2 80–9F) or as raw bytes 80–9F.
  const unsafe = [...bytes].some((b, i) =>
    (b < 0x20 && b !== 0x09 && b !== 0x0a) || b === 0x7f || (b === 0xc2 && bytes[i + 1] >= 0x80 && bytes[i + 1] <= 0x9f)
  );
  return { code: out.code, text, unsafe, stderr: new TextDecoder().decode(out.stderr) };
}

/** What a compromised server puts in its status.json: clipboard write, window title, screen clear, 8-bit CSI. */
const ESCAPES = "\x1b]52;c;cm0gLXJmIH4K\x07\x1b]0;owned\x07\x1b[2J\x1b[31m\u009b1;1H\u009d0;t\u009c\x7f\r\b";

Deno.test("fleet and status: a server's escape sequences (OSC 52, OSC 0, CSI, C1) reach the terminal escaped", async () => {
  await withFleet(1, async ([vps], laptop) => {
    await writeStatus(vps, "web", { status: `running${ESCAPES}`, healthy: false, version: `v1${ESCAPES}` });
    await laptop.addHost("evil", vps);
    const collect = await raw(laptop.argv("collect", "--once"), laptop.env);
    assertEquals(collect.code, 0, collect.text + collect.stderr);
    assert(!collect.unsafe, JSON.stringify(collect.text));
    assertMatch(collect.text, /evil\/web: running\\x1b\]52;c;cm0gLXJmIH4K\\x07\\x1b\]0;owned\\x07\\x1b\[2J/);
    assertMatch(collect.text, /\\x9b1;1H\\x9d0;t\\x9c\\x7f\\x0d\\x08 UNHEALTHY v1\\x1b/);

    // The server's own shell answers with escapes on stderr and fails: the error is printed escaped.
    await Deno.writeTextFile(
      join(vps.dir, "root", ".bashrc"),
      `printf 'denied \\033]52;c;ZXZpbA==\\007\\033]0;pwned\\007\\033[2J\\302\\233H\\n' >&2; exit 3\n`,
    );
    const failed = await raw(laptop.argv("collect", "--once"), laptop.env);
    assertEquals(failed.code, 1, failed.text);
    assert(!failed.unsafe, JSON.stringify(failed.text));
    assertMatch(failed.text, /✗ evil: denied \\x1b\]52;c;ZXZpbA==\\x07\\x1b\]0;pwned\\x07\\x1b\[2J\\x9bH/);
    const list = await raw(laptop.argv("list"), laptop.env);
    assert(!list.unsafe, JSON.stringify(list.text));
    assertMatch(list.text, /denied \\x1b\]52;c;ZXZpbA==/);
    const json = await raw(laptop.argv("list", "--json"), laptop.env);
    assert(!json.unsafe, JSON.stringify(json.text));
    assert(
      JSON.parse(json.text)[0].error.startsWith("denied \x1b]52;c;ZXZpbA==\x07"),
      "the JSON still says what was sent",
    );
  });

  // `status` on a server: its deployments root, prepared.
  const prefix = await Deno.makeTempDir({ prefix: "dp-status-escapes-" });
  try {
    const app = join(prefix, "opt", "deployments", "web");
    await Deno.mkdir(app, { recursive: true });
    await Deno.writeTextFile(
      join(app, "status.json"),
      JSON.stringify({
        name: "web",
        status: `running${ESCAPES}`,
        healthy: true,
        version: `abc${ESCAPES}`,
        release: "20261203-090000-000",
        deployed: "2026-12-03T09:00:00Z",
        type: "node",
        manager: "pm2",
        port: 3000,
        lastDeploy: { outcome: `success${ESCAPES}`, version: "abc", at: "2026-12-03T09:00:00Z" },
      }),
    );
    const env = { DEPLOY_PARADIGM_PREFIX: prefix, NO_COLOR: "1" };
    for (const argv of [[BIN, "status"], [BIN, "status", "--json"], [BIN, "status", "web"]]) {
      const status = await raw(argv, env);
      assertEquals(status.code, 0, status.text + status.stderr);
      assert(!status.unsafe, `${argv.join(" ")}: ${JSON.stringify(status.text)}`);
      assertMatch(status.text, /running\\(x1b|u001b)\]52;c;cm0gLXJmIH4K/);
    }
  } finally {
    await Deno.remove(prefix, { recursive: true });
  }
});

/** The laptop's config.yml with a 2 s interval and alerts to a webhook on 127.0.0.1:`port`. */
async function fastCyclesAlertingTo(laptop: { home: string }, port: number): Promise<void> {
  const config = join(laptop.home, "config.yml");
  await Deno.writeTextFile(
    config,
    `interval: 2s\nalerts: [{ type: webhook, url: "http://127.0.0.1:${port}/" }]\n` + await Deno.readTextFile(config),
  );
}
