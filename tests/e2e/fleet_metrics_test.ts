/**
 * Server and request metrics over real ssh from fake VPS hosts (tests/helpers/vps.ts): a host with
 * a synthetic /proc (values a test sets) and a 16 MiB tmpfs that fills between cycles, and a host
 * without /proc. The first cycle is the real `fleet collect --once` (a process of its own: the
 * counters for the deltas come from the database), the next ones an in-process collector whose
 * clock is 5 minutes later, so the charts' buckets differ. The stored sample, the series and
 * /metrics show the values exactly; a proxy's real metrics.log lines become request minutes,
 * windows and per-release figures.
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { append, Laptop, writeStatus } from "../helpers/fleet.ts";
import { metricsLogLines } from "../helpers/metrics_log.ts";
import { FakeVps } from "../helpers/vps.ts";
import { Collector } from "../../src/fleet/collector.ts";
import { fleetConfigSchema, fleetPaths } from "../../src/fleet/config.ts";
import { metrics } from "../../src/fleet/metrics.ts";
import { appRequestWindow, appSeries, serverSeries } from "../../src/fleet/series.ts";
import { latestServerMetrics } from "../../src/fleet/server_latest.ts";
import { NO_PROC } from "../../src/fleet/server_metrics.ts";
import { FleetStore } from "../../src/fleet/store.ts";

Deno.test("fleet metrics: synthetic /proc, a filling disk and a host without /proc, over ssh", async () => {
  const hosts: FakeVps[] = [];
  const laptop = await Laptop.create();
  let store: FleetStore | undefined;
  let collector: Collector | undefined;
  try {
    hosts.push(
      ...await Promise.all([
        FakeVps.create({ proc: "synthetic", tmpfs: { path: "/srv/data", size: "16m" } }),
        FakeVps.create({ proc: "hidden" }),
      ]),
    );
    const [a, b] = hosts;
    await laptop.addHost("a", a);
    await laptop.addHost("b", b);
    await writeStatus(a, "shop", { status: "running", healthy: true, version: "v2" });

    // The proxy's real minute lines: 10 minutes of 20 requests; the second release (deployed at
    // minute 5) answers 500 to half of them.
    const start = Math.floor(Date.now() / 60_000) * 60_000 - 12 * 60_000;
    const lines = metricsLogLines("shop", start, 10, 5);
    await append(a, "shop", "metrics.log", lines.join("\n") + "\n");
    const deploy = (minutes: number, commit: string) =>
      JSON.stringify({
        event: "success",
        time: new Date(start + minutes * 60_000).toISOString(),
        release: commit,
        commit,
      });
    await append(a, "shop", "deploy.log", `${deploy(-60, "1111111aaaa")}\n${deploy(5.5, "2222222bbbb")}\n`);

    const first = await laptop.collect();
    assertEquals(first.code, 0, first.output);

    // Between the cycles: 500 busy and 1500 idle ticks (25 %), 30 s of uptime, half the tmpfs filled.
    await a.writeProc("stat", "cpu  1250 0 1250 9500 0 0 0 0 0 0\ncpu0 1 0 0 0\ncpu1 1 0 0 0\n");
    await a.writeProc("uptime", "3630.00 7000.00\n");
    const fill = await a.ssh("fallocate -l 8M /srv/data/fill || dd if=/dev/zero of=/srv/data/fill bs=1M count=8");
    assertEquals(fill.code, 0, fill.stderr);

    const paths = fleetPaths(laptop.home);
    const config = fleetConfigSchema.parse({
      servers: hosts.map((vps, i) => ({
        name: ["a", "b"][i],
        host: vps.address,
        identityFile: join(vps.dir, "client_key"),
      })),
    });
    store = await FleetStore.open(paths.db);
    const now = () => Date.now() + 5 * 60_000;
    collector = new Collector(store, config, paths, now);
    const cycle = await collector.cycle();
    assertEquals(cycle.servers.map((s) => [s.server, s.ok, s.error]), [["a", true, undefined], ["b", true, undefined]]);

    const latest = latestServerMetrics(store, "a")!;
    assertEquals(latest.missing, undefined);
    const { "net.rx_bytes_per_s": rx, "net.tx_bytes_per_s": tx, ...values } = latest.values;
    assertEquals(values, {
      "cpu.percent": 25,
      "load.1": 0.5,
      "load.5": 0.25,
      "load.15": 0.1,
      "load.per_core": 0.25,
      "memory.used_percent": 75,
      "swap.used_percent": 25,
      "uptime.seconds": 3630,
    });
    assert(rx >= 0 && tx >= 0 && Number.isFinite(rx + tx), "the namespace's real /proc/net/dev: its veth");
    const data = latest.filesystems.find((f) => f.mount === "/srv/data");
    assertEquals(data?.values["disk.used_percent"], 50);
    assert(latest.filesystems.every((f) => !["/proc", "/sys", "/dev/pts"].includes(f.mount)));

    // The chart shows the rise: 0 % in the first cycle's bucket, 50 % five minutes later.
    const series = serverSeries(store, "a", "1h", now());
    const disk = series.disks.find((d) => d.mount === "/srv/data")!;
    assertEquals(disk.used.filter((v) => v !== null), [0, 50]);
    assertEquals(series.cpu.filter((v) => v !== null), [25]);

    // The host without /proc says so; what it could read (nothing else here) is stored anyway.
    const none = latestServerMetrics(store, "b")!;
    assertEquals(none.missing, NO_PROC);
    assertEquals(none.values, {});
    assertEquals(serverSeries(store, "b", "1h", now()).missing, NO_PROC);

    const text = metrics(store, collector.view(), collector.stats());
    assertMatch(text, /^fleet_server_cpu_percent\{server="a"\} 25$/m);
    assertMatch(text, /^fleet_server_memory_used_percent\{server="a"\} 75$/m);
    assertMatch(text, /^fleet_server_load_per_core\{server="a"\} 0\.25$/m);
    assertMatch(text, /^fleet_server_disk_used_percent\{server="a",mount="\/srv\/data"\} 50$/m);
    assertMatch(text, /^fleet_server_metrics_age_seconds\{server="a"\} \d/m);
    assertMatch(text, /^fleet_server_metrics_age_seconds\{server="b"\} \d/m);
    assert(!/fleet_server_cpu_percent\{server="b"\}/.test(text), "no value for what it could not read");

    // The metrics.log lines, pulled as a log through the ledger (in the first cycle).
    const window = appRequestWindow(store, "a", "shop", start, now());
    assertEquals([window.requests, window.errors5xx], [200, 50]);
    assert(window.p95Ms !== null && window.p95Ms > 0);
    const app = appSeries(store, "a", "shop", "1h", now());
    assertEquals(app.releases.map((r) => [r.version, r.requests, r.errorRate]), [
      ["1111111", 100, 0],
      ["2222222", 100, 0.5],
    ]);
    assertEquals(app.releases[1].from, start + 5.5 * 60_000);
    assertEquals(
      (store.sql("SELECT COUNT(*) AS n FROM lines WHERE file = 'metrics.log'").get() as { n: number }).n,
      0,
      "metrics.log lines are request minutes only",
    );
    const shown = app.errorRate.filter((v) => v !== null);
    assertEquals(shown, [0, 0, 0, 0, 0, 0.5, 0.5, 0.5, 0.5, 0.5]);
    assertEquals(app.requests.filter((v) => v !== null).every((v) => v === 20), true);
    assertEquals(app.deploys.map((d) => d.version), ["2222222"]);
  } finally {
    await collector?.close();
    store?.close();
    await laptop.close();
    await Promise.all(hosts.map((vps) => vps.close()));
  }
});
