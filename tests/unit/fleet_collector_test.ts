/**
 * The collector's cycle on this machine's own deployments (`host: local`) and on a server that
 * refuses connections (loopback port 1), with a clock the test moves: a laptop that slept is not
 * a fleet outage.
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { MAX_NEW_LINES_PER_SERVER } from "../../src/fleet/limits.ts";
import { MAX_REQUEST_ROWS } from "../../src/fleet/metric_store.ts";
import { Collector } from "../../src/fleet/collector.ts";
import { fleetConfigSchema, fleetPaths } from "../../src/fleet/config.ts";
import { LocalSource } from "../../src/fleet/source.ts";
import { fleetOverview } from "../../src/fleet/queries.ts";
import { FleetStore } from "../../src/fleet/store.ts";
import { Slots } from "../../src/fleet/slots.ts";

Deno.test("collector: a pause of the collector holds judgement for a cycle; then a dead server is unreachable", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dp-collector-" });
  const paths = fleetPaths(join(dir, "home"));
  const store = await FleetStore.open(paths.db);
  let now = Date.UTC(2026, 10, 29, 8);
  const config = fleetConfigSchema.parse({
    interval: "30s",
    servers: [{ name: "gone", host: "127.0.0.1", port: 1, identityFile: join(dir, "none") }],
  });
  const collector = new Collector(store, config, paths, () => now);
  try {
    const state = () => fleetOverview(store, collector.view()).servers[0].state;
    const first = await collector.cycle();
    assertEquals([first.servers[0].ok, first.holding, state()], [false, false, "unreachable"]);
    now += 30_000;
    await collector.cycle();
    // It had answered before the laptop went to sleep.
    store.recordContact("gone", "127.0.0.1", { at: now, ok: true, durationMs: 5, bytes: 0 });
    assertEquals(state(), "fresh");
    now += 8 * 3_600_000; // the laptop slept
    assertEquals(state(), "fresh", "overdue cycles: judgement held already before the next cycle runs");
    const resumed = await collector.cycle();
    assertEquals(resumed.holding, true);
    assertEquals(state(), "fresh", "no verdict right after waking up");
    now += 30_000;
    const judged = await collector.cycle();
    assertEquals(judged.holding, true, "the cycle after the resumed one still runs under hold");
    assertEquals(state(), "unreachable", "then the verdict is back");
    assertEquals(collector.view().gapMs, 0);
  } finally {
    await collector.close();
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("LocalSource: status.json of each app and its *.log and *.log.1 files", async () => {
  const root = await Deno.makeTempDir({ prefix: "dp-local-" });
  try {
    await Deno.mkdir(join(root, "opt/deployments/web"), { recursive: true });
    await Deno.mkdir(join(root, "opt/deployments/idle"), { recursive: true });
    await Deno.writeTextFile(join(root, "opt/deployments/web/status.json"), "{}");
    await Deno.mkdir(join(root, "var/log/deployments/web"), { recursive: true });
    for (const name of ["access.log", "access.log.1", "access.log.2.gz", "notes.txt"]) {
      await Deno.writeTextFile(join(root, "var/log/deployments/web", name), "x\n");
    }
    const pulled = await new LocalSource(root).pull();
    assertEquals([...pulled.statuses.keys()], ["web"]);
    assertEquals([...pulled.logs.keys()].sort(), ["web/access.log", "web/access.log.1"]);
    assertEquals(pulled.logs.get("web/access.log")?.ino, "here", "its inode is read from the file once opened");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

/**
 * A collector of one `host: local` server, `self`, over a temp server tree (`logs`: its
 * var/log/deployments, with an app dir `evil`), with a clock the test moves (`clock.now`).
 */
async function withLocalCollector(
  config: Record<string, unknown>,
  fn: (c: { collector: Collector; store: FleetStore; logs: string; clock: { now: number } }) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "dp-collector-" });
  const before = Deno.env.get("DEPLOY_PARADIGM_PREFIX");
  const paths = fleetPaths(join(dir, "home"));
  const store = await FleetStore.open(paths.db);
  const clock = { now: Date.UTC(2026, 11, 5, 12) };
  const parsed = fleetConfigSchema.parse({ servers: [{ name: "self", host: "local" }], ...config });
  const collector = new Collector(store, parsed, paths, () => clock.now);
  try {
    Deno.env.set("DEPLOY_PARADIGM_PREFIX", join(dir, "server"));
    const logs = join(dir, "server/var/log/deployments");
    await Deno.mkdir(join(logs, "evil"), { recursive: true });
    await fn({ collector, store, logs, clock });
  } finally {
    if (before === undefined) Deno.env.delete("DEPLOY_PARADIGM_PREFIX");
    else Deno.env.set("DEPLOY_PARADIGM_PREFIX", before);
    await collector.close();
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("collector: a server that stores many request windows in a cycle has its caps checked right after it, and is marked", async () => {
  await withLocalCollector({ interval: "30s" }, async ({ collector, store, logs, clock }) => {
    // Windows a millisecond apart, each its own row: 10,000 past the cap, over two cycles (100,000 lines a cycle).
    const total = MAX_REQUEST_ROWS.request_minutes + 10_000;
    const first = clock.now - 3_600_000;
    await Deno.writeTextFile(
      join(logs, "evil", "metrics.log"),
      Array.from({ length: total }, (_, i) => `{"ts":"${new Date(first + i).toISOString()}","requests":1}\n`).join(""),
    );
    const rows = () =>
      (store.sql("SELECT COUNT(*) AS n FROM request_minutes WHERE server = 'self'").get() as { n: number }).n;
    const one = await collector.cycle();
    assertEquals(one.servers[0].ok, true);
    const firstRows = rows(); // the line budget, and the rest of the chunk where it ran out
    assert(firstRows >= MAX_NEW_LINES_PER_SERVER && firstRows < MAX_NEW_LINES_PER_SERVER + 1_000, `${firstRows}`);
    const two = await collector.cycle();
    assertEquals(rows(), MAX_REQUEST_ROWS.request_minutes, "capped right after the cycle, not 5 minutes later");
    assertMatch(
      (two.servers[0].limits ?? []).join("\n"),
      /10,000 of its oldest request rows removed: over the 150,000 \/ 450,000 \/ 60,000 request rows/,
    );
  });
});

Deno.test("collector: a server making up log file names each cycle: the ledgers of files gone, their lines removed, are forgotten after an hour; a file still there keeps its own", async () => {
  await withLocalCollector({ retention: { maxLines: 1000 } }, async ({ collector, store, logs, clock }) => {
    await Deno.writeTextFile(join(logs, "evil", "steady.log"), "a line that stays\n".repeat(5));
    const ledgers = () => (store.sql("SELECT path, id FROM files WHERE server = 'self' ORDER BY path").all() as {
      path: string;
      id: number;
    }[]);
    let steadyId: number | undefined;
    const names = (cycle: number) => Array.from({ length: 10 }, (_, k) => `evil/made-up-${cycle}-${k}.log`);
    for (let cycle = 0; cycle < 12; cycle++) {
      // Last cycle's names gone, 10 new ones of 100 lines each: the newest 1,000 lines are all that is kept.
      if (cycle) { for (const rel of names(cycle - 1)) await Deno.remove(join(logs, rel)); }
      for (const rel of names(cycle)) await Deno.writeTextFile(join(logs, rel), `line of ${rel}\n`.repeat(100));
      assertEquals((await collector.cycle()).servers[0].ok, true);
      steadyId ??= ledgers().find((l) => l.path === "evil/steady.log")?.id;
      clock.now += 20 * 60_000;
    }
    // Kept: steady.log (still there), and the names of the cycles up to an hour before the last (4 cycles).
    const expected = ["evil/steady.log", ...[8, 9, 10, 11].flatMap(names)].sort();
    assertEquals(ledgers().map((l) => l.path), expected, "not one ledger per name ever made up (120)");
    assertEquals(ledgers().find((l) => l.path === "evil/steady.log")?.id, steadyId, "steady.log's ledger stays");
    const steadyLines = store.sql("SELECT COUNT(*) AS n FROM lines WHERE file = 'steady.log'").get() as { n: number };
    assertEquals(steadyLines.n, 0, "its lines, removed by retention, are not read again");
  });
});

Deno.test("Slots: at most the limit at once, in turn; a released slot goes to the next in line, never to a newcomer", async () => {
  const slots = new Slots(2);
  let running = 0;
  let peak = 0;
  const order: number[] = [];
  const task = (i: number) =>
    slots.run(async () => {
      peak = Math.max(peak, ++running);
      await new Promise((resolve) => setTimeout(resolve, 5));
      order.push(i);
      running--;
    });
  await Promise.all(Array.from({ length: 10 }, (_, i) => task(i)));
  assertEquals(peak, 2);
  assertEquals(order.length, 10);
  // Released and taken in the same tick: the one waiting gets it, the newcomer waits.
  const held = await slots.take();
  const other = await slots.take();
  const got: string[] = [];
  const waiting = slots.take().then((release) => (got.push("waiting"), release));
  held();
  held(); // a second release changes nothing
  const newcomer = slots.take().then((release) => (got.push("newcomer"), release));
  (await waiting)();
  other();
  (await newcomer)();
  assertEquals(got, ["waiting", "newcomer"]);
  await Promise.all([task(10), task(11), task(12)]);
  assertEquals(peak, 2, "the double release freed nothing more");
});

Deno.test("collector: a status.json that is whole JSON but no object ([]) is refused and marked, not kept as the app's state", async () => {
  // It was taken for half-written: the app kept its last state, shown fresh, for ever, and nothing was marked.
  await withLocalCollector({}, async ({ collector, store, logs }) => {
    const app = join(logs, "../../../opt/deployments/web");
    await Deno.mkdir(app, { recursive: true });
    await Deno.writeTextFile(join(app, "status.json"), JSON.stringify({ status: "running", healthy: true }));
    await collector.cycle();
    await Deno.writeTextFile(join(app, "status.json"), "[]");
    const summary = await collector.cycle();
    const apps = store.sql("SELECT app, status FROM apps").all() as { app: string; status: string }[];
    assertEquals(
      { marked: (summary.servers[0].limits ?? []).some((l) => l.startsWith("web/status.json")), kept: apps },
      { marked: true, kept: [] },
    );
  });
});
