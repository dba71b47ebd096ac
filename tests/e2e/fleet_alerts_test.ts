/**
 * The fleet's alerts end to end: the real `deploy-paradigm fleet collect --once` (one process per
 * cycle, the memory in between kept in the home) and the real `deploy-paradigm fleet`, on this
 * machine's own deployments (`host: local` under a temp DEPLOY_PARADIGM_PREFIX), alerting a
 * receiver on loopback that records what it gets. A server "goes down" when its log directory
 * turns into a file (the pull fails) and comes back when it is a directory again.
 */
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { receiver } from "../helpers/receiver.ts";
import { BIN, freePort, run, spawnCapturing } from "../helpers/server.ts";

/** A laptop's fleet home watching this machine's deployments under a temp prefix. */
class Local {
  readonly env: Record<string, string>;
  constructor(readonly dir: string) {
    this.env = { FLEET_MONITOR_HOME: join(dir, "home"), DEPLOY_PARADIGM_PREFIX: join(dir, "root"), NO_COLOR: "1" };
  }

  static async create(config: string): Promise<Local> {
    const local = new Local(await Deno.makeTempDir({ prefix: "dp-fleet-alerts-" }));
    await Deno.mkdir(join(local.dir, "home"), { recursive: true });
    await Deno.writeTextFile(join(local.dir, "home", "config.yml"), config);
    await Deno.mkdir(local.logs, { recursive: true });
    return local;
  }

  get logs(): string {
    return join(this.dir, "root", "var", "log", "deployments");
  }

  async status(app: string, healthy: boolean) {
    const dir = join(this.dir, "root", "opt", "deployments", app);
    await Deno.mkdir(dir, { recursive: true });
    const status = { name: app, status: healthy ? "running" : "failed", healthy, version: "1a2b3c4", type: "node" };
    await Deno.writeTextFile(join(dir, "status.json"), JSON.stringify(status));
  }

  /** The proxy's `.tls/certificates.json`: `app` → days its certificate has left, with the last error. */
  async certificate(app: string, days: number, lastError: string | null = null) {
    const dir = join(this.dir, "root", "opt", "deployments", ".tls");
    await Deno.mkdir(dir, { recursive: true });
    const notAfter = new Date(Date.now() + days * 86_400_000 + 3_600_000).toISOString();
    const certificates = { [app]: { names: [`${app}.test`], source: "acme", notAfter, lastError } };
    await Deno.writeTextFile(join(dir, "certificates.json"), JSON.stringify({ updatedAt: notAfter, certificates }));
  }

  async deployed(app: string, event: string, step?: string, time: unknown = new Date().toISOString()) {
    const line = {
      time,
      app,
      event,
      commit: "1a2b3c4".padEnd(40, "0"),
      ok: event === "success",
      duration: 4200,
      message: step ? `${step}: it broke` : undefined,
    };
    await this.log(app, "deploy.log", JSON.stringify(line));
  }

  /** Appends `lines` to the app's log file `name`. */
  async log(app: string, name: string, ...lines: string[]) {
    await Deno.mkdir(join(this.logs, app), { recursive: true });
    await Deno.writeTextFile(join(this.logs, app, name), lines.map((line) => line + "\n").join(""), { append: true });
  }

  /** The pull fails: the log directory is a file. */
  async down() {
    await Deno.rename(this.logs, this.logs + ".away");
    await Deno.writeTextFile(this.logs, "not a directory\n");
  }

  async up() {
    await Deno.remove(this.logs);
    await Deno.rename(this.logs + ".away", this.logs);
  }

  collect() {
    return run([BIN, "fleet", "collect", "--once"], { env: this.env });
  }

  async close() {
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

Deno.test("fleet collect --once: one alert per transition across runs, to a webhook and a Slack receiver", async () => {
  const hooks = await receiver();
  const local = await Local.create(`interval: 30s
alerts:
  - { type: webhook, url: "${hooks.base}/hook/secret-token" }
  - { type: slack, url: "${hooks.base}/slack/T0/B0/secret-token", events: [unreachable, back] }
servers:
  - { name: here, host: local }
`);
  try {
    await local.status("api", true);
    await local.deployed("api", "failed", "build"); // history
    const collect = async (code = 0) => {
      const result = await local.collect();
      assertEquals(result.code, code, result.output);
      assert(!result.output.includes("secret-token"), result.output);
      return result;
    };

    await collect();
    assertEquals(hooks.got.length, 0, "first sight and history: nothing");
    assertEquals(JSON.parse(await Deno.readTextFile(join(local.env.FLEET_MONITOR_HOME, "data", "alerts.json"))).apps, {
      "here/api": true,
    });

    await local.status("api", false);
    await local.deployed("api", "rolled_back", "health");
    await collect();
    await collect();
    assertEquals(hooks.at("/hook"), [
      "unhealthy here/api is unhealthy (failed)",
      "rolled_back deploy of here/api 1a2b3c4 rolled back at health",
    ], "once each, not once per cycle");
    assertEquals(hooks.at("/slack"), [], "Slack wants only unreachable and back");
    const rolled = hooks.got[1].body;
    assertEquals([rolled.server, rolled.app, rolled.step, rolled.duration, rolled.text], [
      "here",
      "api",
      "health",
      "4.2 s",
      "health: it broke",
    ]);

    // A certificate 10 days before expiry, its renewal failing: alerted once; renewed: once.
    hooks.got.length = 0;
    await local.certificate("api", 10, "rateLimited: too many certificates");
    await collect();
    await collect();
    await local.certificate("api", 90);
    await collect();
    const [expiring, renewed] = hooks.got.map((r) => r.body);
    assertEquals(hooks.got.length, 2, hooks.at("/hook").join("\n"));
    assertMatch(
      `${expiring.event} ${expiring.title}`,
      /^certificate_expiring certificate of here\/api expires in 10 days/,
    );
    assertEquals(expiring.text, "last error: rateLimited: too many certificates");
    assertMatch(
      `${renewed.event} ${renewed.title}`,
      /^certificate_renewed certificate of here\/api renewed: valid until/,
    );

    // An outage of 3 cycles: exactly one alert and one recovery message.
    hooks.got.length = 0;
    await local.down();
    for (let i = 0; i < 3; i++) await collect(1);
    await local.up();
    await local.status("api", true);
    await collect();
    await collect();
    assertEquals(hooks.at("/hook").map((t) => t.replace(/:.*/, "")), [
      "unreachable here is unreachable",
      "back here is back",
      "recovered here/api recovered (running)",
    ]);
    assertMatch(hooks.at("/hook")[0], /Not a directory/);
    const slack = hooks.got.filter((r) => r.path.startsWith("/slack")).map((r) => r.body.text);
    assertEquals(slack.length, 2);
    assertMatch(String(slack[0]), /^❌ here is unreachable: /);
    assertEquals(slack[1], "✅ here is back");
  } finally {
    await local.close();
    await hooks.close();
  }
});

Deno.test("fleet: a receiver that hangs and one that answers 500 delay no cycle; reported, and awaited at shutdown", async () => {
  const hooks = await receiver();
  const local = await Local.create(`interval: 1s
graceCycles: 2
alerts:
  - { type: webhook, url: "${hooks.base}/hang/secret-token" }
  - { type: discord, url: "${hooks.base}/fail/secret-token" }
  - { type: webhook, url: "${hooks.base}/hook" }
servers:
  - { name: here, host: local }
`);
  let log = "";
  const child = spawnCapturing([BIN, "fleet", "--port", String(freePort())], local.env, (text) => log += text);
  const cycles = () => Math.max(0, ...[...log.matchAll(/cycle (\d+):/g)].map((m) => Number(m[1])));
  const until = async (what: string, ok: () => boolean, seconds = 20) => {
    for (let i = 0; i < seconds * 10 && !ok(); i++) await new Promise((r) => setTimeout(r, 100));
    assert(ok(), `${what}; output:\n${log}`);
  };
  try {
    await local.status("api", true);
    await until("a first cycle", () => cycles() >= 1);
    await local.down();
    await until("the unreachable alert", () => hooks.at("/hook").length === 1);
    assertMatch(hooks.at("/hook")[0], /^unreachable here is unreachable: /);
    const hung = cycles();
    const since = performance.now();
    // The hanging receiver holds its request for 5 s (the timeout): the cycles go on meanwhile.
    await until("two more cycles", () => cycles() >= hung + 2, 4);
    assert(performance.now() - since < 4_000);
    await local.up();
    await until("the back alert", () => hooks.at("/hook").length === 2);
    assertEquals(hooks.at("/hook")[1], "back here is back");
    // Each failed delivery is reported when it fails: the 500s at once, the hanging one after the timeout.
    await until("the 500s reported", () => (log.match(/! alert to discord/g) ?? []).length === 2, 3);
    assertMatch(log, /! alert to discord http:\/\/127\.0\.0\.1:\d+\/… failed: 500 in \d+ ms/);
    await until("the unreachable's hanging delivery reported", () => log.includes("no answer within"), 10);
    assertMatch(log, /! alert to webhook http:\/\/127\.0\.0\.1:\d+\/… failed: no answer within 5000 ms/);
    assert(!log.includes("secret-token"), log);
    assertEquals(hooks.at("/hook").length, 2, "one unreachable and one back, for all those cycles");
    // Stopped while the `back` to the hanging receiver is under way: it is awaited, within the timeout.
    assertEquals(log.match(/no answer within/g)?.length, 1);
    const stopping = performance.now();
    child.kill("SIGTERM");
    assertEquals((await child.status).code, 0, log);
    const took = performance.now() - stopping;
    assertEquals(log.match(/no answer within/g)?.length, 2, log);
    assert(took < 8_000, `stopped in ${Math.round(took)} ms`);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* already ended */ }
    await child.status;
    await local.close();
    await hooks.close();
  }
});

Deno.test("fleet collect --once: a deploy.log `time` that is Slack markup is the time it was pulled in every alert", async () => {
  const hooks = await receiver();
  const local = await Local.create(`interval: 30s
alerts:
  - { type: webhook, url: "${hooks.base}/hook" }
  - { type: slack, url: "${hooks.base}/slack/T0/B0/x" }
  - { type: discord, url: "${hooks.base}/discord/1/x" }
servers:
  - { name: here, host: local }
`);
  try {
    await local.status("api", true);
    await local.deployed("api", "success");
    assertEquals((await local.collect()).code, 0, "first sight: history");
    const evil = "<!channel> <https://evil.example/login|Re-authenticate>";
    await local.deployed("api", "failed", "build", evil);
    const before = Date.now();
    const result = await local.collect();
    assertEquals(result.code, 0, result.output);
    assertEquals(hooks.got.length, 3, JSON.stringify(hooks.got));
    const by = (path: string) => hooks.got.find((r) => r.path.startsWith(path))!.body;
    const inTheCycle = (iso: unknown) => {
      assertMatch(String(iso), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      assert(Math.abs(Date.parse(String(iso)) - before) < 60_000, `${iso}: not when it was pulled`);
    };
    const hook = by("/hook");
    assertEquals(`${hook.event} ${hook.title}`, "failed deploy of here/api 1a2b3c4 failed at build");
    inTheCycle(hook.at);
    const slack = JSON.stringify(by("/slack"));
    assert(!slack.includes("<!channel>") && !slack.includes("<https://") && !slack.includes("evil"), slack);
    const discord = by("/discord") as { embeds: { timestamp: string }[] };
    inTheCycle(discord.embeds[0].timestamp);
    assertEquals(discord.embeds[0].timestamp, hook.at, "the deploy's time, not the time of sending");
  } finally {
    await local.close();
    await hooks.close();
  }
});

Deno.test("fleet collect --once: a log line dated 9999 is stored at the pull's time, so a log rule counts it and alerts", async () => {
  const hooks = await receiver();
  const local = await Local.create(`interval: 30s
alerts:
  - { type: webhook, url: "${hooks.base}/hook" }
rules:
  - { name: fatal, query: FATAL, atLeast: 1, within: 5m }
servers:
  - { name: here, host: local }
`);
  try {
    await local.status("api", true);
    await local.log("api", "error.log", `${new Date().toISOString()} started`);
    assertEquals((await local.collect()).code, 0);
    assertEquals(hooks.at("/hook"), []);
    await local.log("api", "error.log", "9999-12-31T23:59:59Z FATAL forever");
    const result = await local.collect();
    assertEquals(result.code, 0, result.output);
    assertEquals(hooks.at("/hook"), ["rule_firing here: 1 line matching FATAL within 5m"]);
    using db = new DatabaseSync(join(local.env.FLEET_MONITOR_HOME, "data", "fleet.db"), { readOnly: true });
    const { ts } = db.prepare("SELECT ts FROM lines WHERE text LIKE '%FATAL forever'").get() as { ts: number };
    assert(ts <= Date.now() && ts > Date.now() - 60_000, `stored at ${new Date(ts).toISOString()}`);
  } finally {
    await local.close();
    await hooks.close();
  }
});

Deno.test("fleet collect --once: 20 apps × 50 cron jobs failing are 11 notices per target, at most 4 at once; fleet alerts lists all 1,000", async () => {
  const hooks = await receiver();
  const local = await Local.create(`interval: 30s
alerts:
  - { type: webhook, url: "${hooks.base}/slow/hook" }
  - { type: slack, url: "${hooks.base}/slow/slack" }
rules:
  - { name: cron, cron: failed }
servers:
  - { name: here, host: local }
`);
  try {
    const runs = async (outcome: string) => {
      for (let a = 0; a < 20; a++) {
        const jobs = Array.from({ length: 50 }, (_, j) => `job${String(j).padStart(2, "0")}`);
        const start = new Date().toISOString();
        await local.log(
          `app${String(a).padStart(2, "0")}`,
          "cron.log",
          ...jobs.map((job) => JSON.stringify({ job, start, end: start, exitCode: 1, durationMs: 5, outcome })),
        );
      }
    };
    await runs("failed");
    const fired = await local.collect();
    assertEquals(fired.code, 0, fired.output);
    assertMatch(fired.output, /rules: 1000 firing\n(.*\n){10}\s+and 990 more/);
    for (const target of ["/slow/hook", "/slow/slack"]) {
      assertEquals(hooks.got.filter((r) => r.path === target).length, 11, target);
      assert(hooks.peak(target) <= 4, `${target}: ${hooks.peak(target)} requests at once`);
    }
    const more = hooks.at("/slow/hook").filter((t) => / more /.test(t));
    assertEquals(more.length, 1);
    assertMatch(more[0], /^rule_firing 990 more subjects of rule cron are firing: here\/app00 job job10, /);
    const listed = await run([BIN, "fleet", "alerts", "--json"], { env: local.env });
    const { rules } = JSON.parse(listed.output);
    assertEquals(rules[0].subjects.filter((s: { state: string }) => s.state === "firing").length, 1000);

    hooks.got.length = 0;
    await runs("ok");
    assertEquals((await local.collect()).code, 0);
    assertEquals(hooks.at("/slow/hook").length, 11);
    assertMatch(hooks.at("/slow/hook")[10], /^rule_recovered 990 more subjects of rule cron recovered: /);
  } finally {
    await local.close();
    await hooks.close();
  }
});
