/**
 * Server metrics (src/fleet/server_metrics.ts, server_sample.ts): the script's output as parsed, hostile output
 * (never a throw, never a non-finite or negative value, at most 64 filesystems), the filesystems
 * kept, CPU and network rates from deltas, and none after a counter reset or a reboot. And the
 * script itself, run here with `sh -c` as `host: local` runs it.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { assert, assertEquals } from "../helpers/assert.ts";
import { Collector } from "../../src/fleet/collector.ts";
import { fleetConfigSchema, fleetPaths } from "../../src/fleet/config.ts";
import { storeServerSample } from "../../src/fleet/metric_store.ts";
import { metrics } from "../../src/fleet/metrics.ts";
import { latestServerMetrics } from "../../src/fleet/server_latest.ts";
import { FleetStore } from "../../src/fleet/store.ts";
import { LISTING, LISTING_WITH_METRICS, parseListing } from "../../src/fleet/pull_plan.ts";
import { listingOf, PullFailed } from "../../src/fleet/ssh_source.ts";
import {
  DF_TIMEOUT_S,
  MAX_FILESYSTEMS,
  METRICS_SCRIPT,
  NO_PROC,
  parseMetrics,
  splitMetrics,
} from "../../src/fleet/server_metrics.ts";
import { MAX_DELTA_GAP_MS, sampleOf } from "../../src/fleet/server_sample.ts";

/** What the script prints on a small host (GNU df). */
const OUTPUT = `M stat
cpu  1000 0 1000 8000 0 0 0 0 0 0
2
M loadavg
0.50 0.25 0.10 1/100 1234
M meminfo
MemTotal:        4194304 kB
MemAvailable:    1048576 kB
SwapTotal:       1048576 kB
SwapFree:         786432 kB
M netdev
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:  999999      46    0    0    0     0          0         0   999999      42    0    0    0     0       0          0
  eth0:   10000      46    0    0    0     0          0         0     5000      42    0    0    0     0       0          0
  eth1:    2000      46    0    0    0     0          0         0     1000      42    0    0    0     0       0          0
 veth1a2b: 9999      46    0    0    0     0          0         0     9999      42    0    0    0     0       0          0
 docker0:  9999      46    0    0    0     0          0         0     9999      42    0    0    0     0       0          0
 br-5f2e:  9999      46    0    0    0     0          0         0     9999      42    0    0    0     0       0          0
M uptime
3600.00 7000.00
M mounts
/ ext4
/proc proc
/srv/my\\040data tmpfs
/var/lib/docker/overlay2/abc/merged overlay
/dev devtmpfs
/sys/fs/cgroup tmpfs
/var/lib/bound ext4
M df
Filesystem     1024-blocks     Used Available Capacity Mounted on
/dev/vda1         1000000   250000    750000      25% /var/lib/bound
tmpfs               16384        0     16384       0% /sys/fs/cgroup
/dev/vda1         1000000   250000    750000      25% /
tmpfs               16384     8192      8192      50% /srv/my data
overlay           1000000   250000    750000      25% /var/lib/docker/overlay2/abc/merged
devtmpfs          1000000        0   1000000       0% /dev
/dev/vda1         1000000   250000    750000      25% /
M dfi
Filesystem      Inodes  IUsed   IFree IUse% Mounted on
/dev/vda1        1000     100     900   10% /
tmpfs            4096    1024    3072   25% /srv/my data
`;

Deno.test("server metrics: the script's output as a sample; CPU and network from the deltas", () => {
  const raw = parseMetrics(OUTPUT);
  assertEquals(raw.missing, []);
  assertEquals(
    raw.counters,
    { cpuTotal: 10000, cpuBusy: 2000, netRx: 12000, netTx: 6000, uptime: 3600 },
    "lo, veth*, docker*, br-* not counted: their traffic is the real interfaces' too",
  );
  assertEquals(
    raw.filesystems,
    [
      { mount: "/", used: 25, inodes: 10 },
      { mount: "/srv/my data", used: 50, inodes: 25 },
    ],
    "proc, overlay, devtmpfs and /sys dropped, tmpfs kept, a mount point (or a device's bind mount, as busybox " +
      "lists them) once, spaces unescaped",
  );
  const first = sampleOf(raw, 1_000_000);
  assertEquals(first.values, {
    "load.1": 0.5,
    "load.5": 0.25,
    "load.15": 0.1,
    "load.per_core": 0.25,
    "memory.used_percent": 75,
    "swap.used_percent": 25,
    "uptime.seconds": 3600,
  }, "no CPU or network on the first sample");
  const later = parseMetrics(
    OUTPUT.replace("cpu  1000 0 1000 8000", "cpu  1600 0 1400 9000").replace("10000      46", "40000      46")
      .replace("3600.00", "3630.00"),
  );
  const second = sampleOf(later, 1_030_000, { ts: 1_000_000, counters: raw.counters });
  assertEquals(second.values["cpu.percent"], 50, "1000 busy ticks of 2000");
  assertEquals(second.values["net.rx_bytes_per_s"], 1000, "30000 bytes in 30 s");
  assertEquals(second.values["net.tx_bytes_per_s"], 0);
  assertEquals(second.filesystems[1], {
    mount: "/srv/my data",
    values: { "disk.used_percent": 50, "disk.inodes_used_percent": 25 },
  });
});

Deno.test("server metrics: stat -f's figures give df's: used against used + available, bind mounts once", () => {
  const df = OUTPUT.slice(
    OUTPUT.indexOf("M df\n"),
    OUTPUT.indexOf("M netdev") > OUTPUT.indexOf("M df\n") ? OUTPUT.indexOf("M netdev") : OUTPUT.length,
  );
  // `%i %S %b %f %a %c %d %n`: 4 KiB blocks here; /var/lib/bound is / bound (one id); a zero id (tmpfs on an
  // older kernel) is never merged with another; a line that is not statfs's is ignored.
  const statfs = "M statfs\n" +
    "f06de071cd6ff623 4096 250000 187500 187500 1000 900 /var/lib/bound\n" +
    "56c7a3f7b483fab6 4096 4096 4096 4096 100 100 /sys/fs/cgroup\n" +
    "f06de071cd6ff623 4096 250000 187500 187500 1000 900 /\n" +
    "0 4096 4096 2048 2048 4096 3072 /srv/my data\n" +
    "0 4096 4096 4096 4096 10 10 /tmp/other\n" +
    "stat: cannot read file system information for '/gone': No such file or directory\n";
  const raw = parseMetrics(
    OUTPUT.replace(df, statfs).replace("/var/lib/bound ext4\n", "/var/lib/bound ext4\n/tmp/other tmpfs\n"),
  );
  assertEquals(raw.missing, []);
  assertEquals(raw.filesystems, [
    { mount: "/", used: 25, inodes: 10 },
    { mount: "/srv/my data", used: 50, inodes: 25 },
    { mount: "/tmp/other", used: 0, inodes: 0 },
  ]);
});

Deno.test("server metrics: a counter that went back (reset, wrap) or a reboot gives no rate that cycle", () => {
  const raw = parseMetrics(OUTPUT);
  const before = { ts: 0, counters: { ...raw.counters, cpuTotal: 20000, cpuBusy: 1000, netRx: 50000 } };
  const values = sampleOf(raw, 30_000, before).values;
  assertEquals(values["cpu.percent"], undefined);
  assertEquals(values["net.rx_bytes_per_s"], undefined);
  assertEquals(values["net.tx_bytes_per_s"], 0, "the counter that did not go back still counts");
  const rebooted = sampleOf(raw, 30_000, {
    ts: 0,
    counters: { ...raw.counters, cpuTotal: 1, cpuBusy: 0, uptime: 9e6 },
  });
  assertEquals(rebooted.values["cpu.percent"], undefined, "uptime went back: counters restarted");
  assertEquals(sampleOf(raw, 0, { ts: 0, counters: {} }).values["cpu.percent"], undefined, "no time passed");
  // After a long gap (a laptop asleep for 8 h), no rate: it would be an 8-hour average.
  const asleep = { ts: 0, counters: { ...raw.counters, cpuTotal: 0, cpuBusy: 0, netRx: 0, netTx: 0 } };
  const woke = sampleOf(raw, 8 * 3_600_000, asleep).values;
  assertEquals([woke["cpu.percent"], woke["net.rx_bytes_per_s"]], [undefined, undefined]);
  assertEquals(sampleOf(raw, MAX_DELTA_GAP_MS, asleep).values["cpu.percent"], 20, "within the gap allowed: a rate");
  assertEquals(sampleOf(raw, 90_000, asleep, 60_000).values["cpu.percent"], undefined, "the collector's own limit");
});

Deno.test("server metrics: no /proc says so, and the disks that could be read are kept", () => {
  const raw = parseMetrics("M noproc\nM df\n/dev/vda1 1000 500 500 50% /\nM dfi\n");
  assertEquals(raw.missing, [NO_PROC]);
  assertEquals(raw.filesystems, [{ mount: "/", used: 50 }], "without /proc/self/mounts: by device name");
  const sample = sampleOf(raw, 1);
  assertEquals(sample.missing, NO_PROC);
  assertEquals(sample.values, {});
});

Deno.test("server metrics: hostile output never throws nor gives a value that is not a finite, sane number", () => {
  const hostile = [
    "",
    "M stat\ncpu NaN Infinity -5 1e400\nx\nM loadavg\n-1 1e999 NaN\nM meminfo\nMemTotal: -5 kB\nMemAvailable: 99 kB",
    "M stat\ncpu 99999999999999999999 1 1 1\n99999999\nM uptime\n1e308\nM netdev\n eth0: -1 0 0 0 0 0 0 0 -1\n",
    "M meminfo\nMemTotal: 0 kB\nMemAvailable: 10 kB\nSwapTotal: 10 kB\nSwapFree: 99999 kB\n",
    "M meminfo\nMemTotal: 100 kB\nMemAvailable: 999999 kB\n",
    "M df\n" + "/dev/x 10 20 -5 50% /a\n/dev/y 0 0 0 0% /b\n/dev/z 10 99999999999999999999999 1 1% /c\n",
    "M df\n" + Array.from({ length: 100_000 }, (_, i) => `/dev/x${i} 100 50 50 50% /m${i}`).join("\n"),
    "M stat\nM stat\n".repeat(10_000) + "\u0000\uFFFF".repeat(100_000),
  ];
  for (const text of hostile) {
    const raw = parseMetrics(text);
    assert(raw.filesystems.length <= MAX_FILESYSTEMS);
    const sample = sampleOf(raw, 60_000, { ts: 0, counters: { cpuBusy: 0, cpuTotal: 0, netRx: 0, netTx: 0 } });
    const numbers = [
      ...Object.values(sample.values),
      ...sample.filesystems.flatMap((f) => Object.values(f.values)),
    ];
    for (const n of numbers) assert(Number.isFinite(n) && n >= 0, `${n} from ${JSON.stringify(text.slice(0, 80))}`);
    for (const [name, value] of Object.entries(sample.values)) {
      if (name.endsWith("percent")) assert(value <= 100, `${name} ${value}`);
    }
  }
  const many = parseMetrics(hostile[6]);
  assertEquals(many.filesystems.length, MAX_FILESYSTEMS);
  assert(many.missing.some((m) => m.includes(`over the ${MAX_FILESYSTEMS} kept`)), many.missing.join());
  const memory = sampleOf(parseMetrics(hostile[4]), 0).values["memory.used_percent"];
  assertEquals(memory, 0, "more available than total: none used, not negative");
});

Deno.test("server metrics: the listing with metrics is split, and its files parsed as before", () => {
  const output = "S 12 34 ./web/status.json\nL 56 78 ./web/access.log\n#metrics\nM stat\ncpu 1 2 3 4\n";
  const { listing, metrics } = splitMetrics(output);
  assertEquals(parseListing(listing).map((f) => f.rel), ["web/status.json", "web/access.log"]);
  assertEquals(metrics, "M stat\ncpu 1 2 3 4\n");
  assertEquals(splitMetrics("S 1 2 a/status.json\n"), { listing: "S 1 2 a/status.json\n" });
  assert(LISTING_WITH_METRICS.startsWith(`{ ${LISTING}; } && `), "the listing comes first, unchanged");
});

Deno.test("server metrics: a failure after the listing (metrics cut by the timeout) does not fail the pull", () => {
  const server = fleetConfigSchema.parse({ servers: [{ name: "a", host: "10.0.0.1" }] }).servers[0];
  const output = "L 12 34 ./web/access.log\n#metrics\nM stat\ncpu 1 2 3 4\n0\nM df\n";
  const cut = listingOf(server, { code: 124, output, tail: ["(killed: no result after 30s)"] }, true);
  assertEquals(cut.files.map((f) => f.rel), ["web/access.log"]);
  assertEquals(cut.metrics, "M stat\ncpu 1 2 3 4\n0\nM df\n");
  let failed: unknown;
  try {
    listingOf(server, { code: 124, output: "L 12 34 ./web/access.log\n", tail: ["find: hung"] }, true);
  } catch (error) {
    failed = error;
  }
  assert(failed instanceof PullFailed && failed.message.includes("find: hung"), String(failed));
});

Deno.test("server metrics: the script run here (as host: local runs it) gives a full sample", async () => {
  const out = await new Deno.Command("sh", { args: ["-c", METRICS_SCRIPT], stdout: "piped" }).output();
  assert(out.success);
  const raw = parseMetrics(splitMetrics(new TextDecoder().decode(out.stdout)).metrics ?? "");
  assertEquals(raw.missing, []);
  assert(raw.cpus! >= 1 && raw.counters.cpuTotal! > 0 && raw.memory!.total > 0 && raw.load !== undefined);
  assert(raw.filesystems.some((f) => f.mount === "/"), JSON.stringify(raw.filesystems));
});

/** Runs the script with `sh -c` (env: PATH only, when given), its metrics parsed, and how long it took. */
async function runScript(env?: Record<string, string>, argv = ["sh", "-c", METRICS_SCRIPT]) {
  const started = Date.now();
  const out = await new Deno.Command(argv[0], {
    args: argv.slice(1),
    stdout: "piped",
    ...(env ? { env, clearEnv: true } : {}),
  }).output();
  assert(out.success);
  const text = new TextDecoder().decode(out.stdout);
  return { text, raw: parseMetrics(splitMetrics(text).metrics ?? ""), ms: Date.now() - started };
}

Deno.test("server metrics: 1,000 mounts (over 64 KB of /proc/self/mounts) keep the disks: statfs comes first", {
  ignore: Deno.uid() !== 0,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "dp-mounts-" });
  try {
    // A private mount namespace: 1,000 tmpfs (one under a name with a space), then the script.
    const m = `${dir}/a-mount-point-with-a-rather-long-name-$i`;
    const setup = `for i in $(seq 1 1000); do mkdir -p ${m} && mount -t tmpfs -o size=64k tmpfs ${m}; ` +
      `done; mkdir -p '${dir}/with space' && mount -t tmpfs -o size=64k tmpfs '${dir}/with space'; ` +
      `wc -c < /proc/self/mounts; ${METRICS_SCRIPT}`;
    const { text, raw } = await runScript(undefined, ["unshare", "-m", "--propagation", "private", "sh", "-c", setup]);
    assert(Number(text.split("\n")[0]) > 64 << 10, `the mounts are ${text.split("\n")[0]} bytes`);
    assertEquals(raw.missing.filter((m) => !m.includes("kept")), [], raw.missing.join("; "));
    assertEquals(raw.filesystems.length, MAX_FILESYSTEMS);
    assert(raw.filesystems.some((f) => f.mount === "/" && f.used !== undefined && f.inodes !== undefined));
    assert(raw.counters.netRx !== undefined, "/proc/net/dev, last, still fits");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("server metrics: a stat -f that hangs (a stuck filesystem) is cut by timeout; the rest is read", async () => {
  const bin = await Deno.makeTempDir({ prefix: "dp-hung-df-" });
  try {
    await Deno.writeTextFile(join(bin, "stat"), "#!/bin/sh\nexec sleep 60\n", { mode: 0o755 });
    const { raw, ms } = await runScript({ PATH: `${bin}:/usr/bin:/bin` });
    assert(ms < (DF_TIMEOUT_S + 5) * 1000, `${ms} ms`);
    assert(raw.counters.cpuTotal! > 0 && raw.memory !== undefined && raw.counters.netRx !== undefined);
    assertEquals(raw.filesystems, []);
  } finally {
    await Deno.remove(bin, { recursive: true });
  }
});

Deno.test("server metrics: host local stores this machine's sample through the collector's cycle; off, none", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dp-local-metrics-" });
  const before = Deno.env.get("DEPLOY_PARADIGM_PREFIX");
  Deno.env.set("DEPLOY_PARADIGM_PREFIX", dir);
  const paths = fleetPaths(join(dir, "home"));
  const store = await FleetStore.open(paths.db);
  let now = Date.UTC(2026, 11, 1);
  const config = fleetConfigSchema.parse({ servers: [{ name: "here", host: "local" }] });
  const collector = new Collector(store, config, paths, () => now);
  const bareConfig = fleetConfigSchema.parse({ servers: [{ name: "bare", host: "local" }] });
  const bare = new Collector(store, bareConfig, paths, Date.now, { metrics: false });
  try {
    await collector.cycle();
    assertEquals(latestServerMetrics(store, "here")?.values["cpu.percent"], undefined, "the first sample has no CPU");
    now += 30_000;
    await new Promise((resolve) => setTimeout(resolve, 200)); // some CPU ticks pass
    await collector.cycle();
    const latest = latestServerMetrics(store, "here")!;
    assertEquals(latest.ts, now);
    assertEquals(latest.missing, undefined);
    for (const name of ["cpu.percent", "load.1", "load.per_core", "memory.used_percent", "uptime.seconds"]) {
      assert(Number.isFinite(latest.values[name]), `${name}: ${JSON.stringify(latest.values)}`);
    }
    assert(latest.filesystems.some((f) => f.mount === "/"), JSON.stringify(latest.filesystems));
    await bare.cycle();
    assertEquals(latestServerMetrics(store, "bare"), undefined, "metrics: false reads none");
  } finally {
    await collector.close();
    await bare.close();
    store.close();
    if (before === undefined) Deno.env.delete("DEPLOY_PARADIGM_PREFIX");
    else Deno.env.set("DEPLOY_PARADIGM_PREFIX", before);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("server metrics: the script under busybox (sh, head, stat, timeout) gives the same sample's parts", {
  ignore: !existsSync("/usr/bin/busybox") && !existsSync("/bin/busybox"),
}, async () => {
  const busybox = existsSync("/usr/bin/busybox") ? "/usr/bin/busybox" : "/bin/busybox";
  const bin = await Deno.makeTempDir({ prefix: "dp-busybox-" });
  try {
    for (const applet of ["sh", "head", "stat", "timeout"]) await Deno.symlink(busybox, join(bin, applet));
    const out = await new Deno.Command(busybox, {
      args: ["sh", "-c", METRICS_SCRIPT],
      env: { PATH: bin },
      clearEnv: true,
      stdout: "piped",
    }).output();
    assert(out.success);
    const raw = parseMetrics(splitMetrics(new TextDecoder().decode(out.stdout)).metrics ?? "");
    assertEquals(raw.missing, []);
    assert(raw.cpus! >= 1 && raw.counters.cpuTotal! > 0 && raw.counters.uptime! > 0 && raw.memory!.total > 0);
    const root = raw.filesystems.find((f) => f.mount === "/");
    assert(root?.used !== undefined && root.inodes !== undefined, JSON.stringify(raw.filesystems));
    const mounts = raw.filesystems.map((f) => f.mount);
    assertEquals(new Set(mounts).size, mounts.length);
  } finally {
    await Deno.remove(bin, { recursive: true });
  }
});

Deno.test("server metrics: /metrics gauges, labels escaped (a mount point is the server's to name)", async () => {
  const store = await FleetStore.open(":memory:");
  try {
    store.recordContact("a", "h", { at: 1_000, ok: true, durationMs: 1, bytes: 0 });
    const raw = parseMetrics(
      OUTPUT.replace("/srv/my data\n", '/srv/a"b\\c\n').replace("/srv/my data\n", '/srv/a"b\\c\n'),
    );
    storeServerSample(store, "a", raw, 1_000);
    const text = metrics(store, { now: 31_000, intervalMs: 30_000, holding: false, gapMs: 0 }, {
      cycles: 1,
      errors: 0,
    });
    assert(text.includes('fleet_server_disk_used_percent{server="a",mount="/srv/a\\"b\\\\c"} 50'), text);
    assert(text.includes('fleet_server_memory_used_percent{server="a"} 75'), text);
    assert(text.includes('fleet_server_metrics_age_seconds{server="a"} 30'), text);
    assert(!text.includes("fleet_server_cpu_percent{"), "no CPU on a first sample");
  } finally {
    store.close();
  }
});
