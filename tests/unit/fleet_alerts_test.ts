/**
 * The fleet's alerts: transitions computed from synthetic cycles over a real SQLite store (one
 * notice per transition, the grace before `unreachable`, nothing while judgement is held after a
 * pause, no alert on first sight or history), and delivery to a real HTTP receiver on loopback
 * that records each request: the payload of each format, a receiver that hangs costs the timeout
 * and one that answers 500 is reported, never thrown. The rules' states as /metrics shows them
 * (`fleet_alert_firing`).
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { cycleSummary } from "../helpers/fleet_store.ts";
import { receiver } from "../helpers/receiver.ts";
import { Alerter, type AlerterOptions, MAX_DELIVERIES_PER_TARGET } from "../../src/fleet/alerts.ts";
import { FleetAlerts } from "../../src/fleet/fleet_alerts.ts";
import type { CycleSummary } from "../../src/fleet/collector.ts";
import { fleetConfigSchema } from "../../src/fleet/config.ts";
import { parseConfig } from "../../src/config/load.ts";
import { storeServerSample } from "../../src/fleet/metric_store.ts";
import { metrics } from "../../src/fleet/metrics.ts";
import { type DeploymentRow, FleetStore } from "../../src/fleet/store.ts";
import type { Notice, Target } from "../../src/notify.ts";
import type { CertificateState } from "../../src/proxy/cert_state.ts";

const COMMIT = "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b";

/** A fleet store on a temp file and a clock; each `cycle` records the servers' pulls as the collector does. */
class Fleet {
  now = Date.UTC(2026, 10, 29, 8);
  private cycles = 0;
  private ledgers = new Map<string, ReturnType<FleetStore["newGeneration"]>>();
  private offset = 0;

  private constructor(readonly dir: string, readonly store: FleetStore, public alerter: Alerter) {}

  static async create(options: AlerterOptions = {}): Promise<Fleet> {
    const dir = await Deno.makeTempDir({ prefix: "dp-alerts-" });
    const store = await FleetStore.open(join(dir, "fleet.db"));
    return new Fleet(dir, store, new Alerter([], { log: () => {}, ...options }));
  }

  /** A cycle: `true` for a good pull, a string for a failed one (its error). */
  summary(servers: Record<string, true | string>, holding = false): CycleSummary {
    const at = this.now;
    for (const [name, result] of Object.entries(servers)) {
      this.store.recordContact(name, `${name}.example`, {
        at,
        ok: result === true,
        error: result === true ? undefined : result,
        durationMs: 5,
        bytes: 0,
      });
    }
    const summary = cycleSummary(at, servers, { cycle: ++this.cycles, holding });
    this.now += 30_000;
    return summary;
  }

  /** A cycle's notices, as `event title` strings. */
  cycle(servers: Record<string, true | string>, holding = false): string[] {
    return this.alerter.notices(this.summary(servers, holding), this.store).map((n) => `${n.event} ${n.title}`);
  }

  app(server: string, app: string, healthy: boolean | undefined, status = healthy ? "running" : "failed") {
    this.store.upsertApp(server, app, { status, healthy, version: "1a2b3c4", commit: COMMIT }, this.now);
  }

  deploy(server: string, app: string, row: Partial<DeploymentRow> & { outcome: string }) {
    let ledger = this.ledgers.get(`${server}/${app}`);
    if (!ledger) {
      ledger = this.store.newGeneration(server, `${app}/deploy.log`, null, "00", 0);
      this.ledgers.set(`${server}/${app}`, ledger);
    }
    this.offset += 100;
    ledger.offset = this.offset;
    this.store.ingestDeployments(ledger, app, [{ at: new Date(this.now).toISOString(), offset: this.offset, ...row }]);
  }

  async close() {
    this.store.close();
    await Deno.remove(this.dir, { recursive: true });
  }
}

async function withFleet(fn: (fleet: Fleet) => Promise<void> | void, options?: AlerterOptions) {
  const fleet = await Fleet.create(options);
  try {
    await fn(fleet);
  } finally {
    await fleet.close();
  }
}

Deno.test("alerts: an outage of 3 cycles is exactly one unreachable and one back", async () => {
  await withFleet((fleet) => {
    const down = "ssh: connect to host web1.example port 22: Connection refused";
    const seen = [
      fleet.cycle({ web1: true, web2: true }),
      fleet.cycle({ web1: down, web2: true }),
      fleet.cycle({ web1: down, web2: true }),
      fleet.cycle({ web1: down, web2: true }),
      fleet.cycle({ web1: true, web2: true }),
      fleet.cycle({ web1: true, web2: true }),
    ];
    assertEquals(seen, [
      [],
      [],
      [`unreachable web1 is unreachable: ${down}`],
      [],
      ["back web1 is back"],
      [],
    ]);
  });
});

Deno.test("alerts: the notices' fields: unreachable with its last contact, back with how long", async () => {
  await withFleet((fleet) => {
    const notices: Notice[] = [];
    const started = fleet.now;
    for (const result of [true, "Permission denied (publickey).\nmore detail", "timeout", true] as const) {
      notices.push(...fleet.alerter.notices(fleet.summary({ web1: result }), fleet.store));
    }
    assertEquals(notices.map((n) => [n.event, n.ok]), [["unreachable", false], ["back", true]]);
    assertEquals(notices[0].title, "web1 is unreachable: timeout");
    assertEquals(notices[0].fields, {
      server: "web1",
      "failed pulls": "2",
      "last contact": new Date(started).toISOString(),
    });
    assertEquals(notices[0].at, new Date(started + 60_000).toISOString());
    assertEquals(notices[1].fields, {
      server: "web1",
      "unreachable since": new Date(started + 30_000).toISOString(),
      "unreachable for": "1m 0s",
    });
  });
});

Deno.test("alerts: failures within the grace (flapping) alert nothing; graceCycles 1 and 3", async () => {
  await withFleet((fleet) => {
    const seen = [fleet.cycle({ web1: true })];
    for (let i = 0; i < 5; i++) seen.push(fleet.cycle({ web1: "refused" }), fleet.cycle({ web1: true }));
    assertEquals(seen.flat(), []);
  });
  await withFleet((fleet) => {
    assertEquals(
      [fleet.cycle({ web1: true }), fleet.cycle({ web1: "refused" }), fleet.cycle({ web1: true })],
      [[], ["unreachable web1 is unreachable: refused"], ["back web1 is back"]],
    );
  }, { graceCycles: 1 });
  await withFleet((fleet) => {
    const seen = [fleet.cycle({ web1: true }), fleet.cycle({ web1: "x" }), fleet.cycle({ web1: "x" })];
    seen.push(fleet.cycle({ web1: true }), fleet.cycle({ web1: "x" }), fleet.cycle({ web1: "x" }));
    assertEquals(seen.flat(), [], "two failures in a row are within a grace of 3");
    assertEquals(fleet.cycle({ web1: "x" }), ["unreachable web1 is unreachable: x"]);
  }, { graceCycles: 3 });
});

Deno.test("alerts: while judgement is held (just woke up) failures neither alert nor count", async () => {
  await withFleet((fleet) => {
    const seen = [fleet.cycle({ web1: true, web2: true })];
    // The laptop wakes: the network is not up yet for two cycles.
    seen.push(fleet.cycle({ web1: "no route", web2: "no route" }, true));
    seen.push(fleet.cycle({ web1: "no route", web2: "no route" }, true));
    seen.push(fleet.cycle({ web1: true, web2: true }));
    assertEquals(seen.flat(), []);
    // A failure before the pause and one after it are not two in a row of the grace… until a third.
    assertEquals(fleet.cycle({ web1: "refused" }), []);
    assertEquals(fleet.cycle({ web1: "refused" }, true), []);
    assertEquals(fleet.cycle({ web1: "refused" }), ["unreachable web1 is unreachable: refused"]);
    assertEquals(fleet.cycle({ web1: "refused" }, true), [], "already alerted");
    assertEquals(fleet.cycle({ web1: true }, true), ["back web1 is back"], "good news is not held back");
  });
});

Deno.test("alerts: first sight is not news: a server never reached; one reached before this run", async () => {
  await withFleet((fleet) => {
    // Never answered (a typo in its host, an untrusted key): a setup problem, not an outage.
    const seen = Array.from({ length: 4 }, () => fleet.cycle({ typo: "Could not resolve hostname" }));
    assertEquals(seen.flat(), []);
    assertEquals(fleet.cycle({ typo: true }), [], "its first answer is not a `back`");
    assertEquals([fleet.cycle({ typo: "refused" }), fleet.cycle({ typo: "refused" })].flat(), [
      "unreachable typo is unreachable: refused",
    ]);
  });
  await withFleet((fleet) => {
    // The database knows it answered before (an earlier run without alerts): down is down.
    fleet.store.recordContact("web1", "web1.example", { at: fleet.now - 3_600_000, ok: true, durationMs: 5, bytes: 0 });
    assertEquals([fleet.cycle({ web1: "refused" }), fleet.cycle({ web1: "refused" })].flat(), [
      "unreachable web1 is unreachable: refused",
    ]);
  });
});

Deno.test("alerts: a cycle that ends after a later one does not undo what the later one saw", async () => {
  await withFleet((fleet) => {
    fleet.cycle({ web1: true });
    const slow = fleet.summary({ web1: "refused" });
    const a = fleet.summary({ web1: "refused" });
    const b = fleet.summary({ web1: true });
    const notices = [a, b, slow].map((s) => fleet.alerter.notices(s, fleet.store).map((n) => n.event));
    assertEquals(notices, [[], [], []]);
    assertEquals(fleet.cycle({ web1: "refused" }), [], "the late failure was not counted after the later success");
  });
});

Deno.test("alerts: an app unhealthy then recovered: one notice each, not one per cycle", async () => {
  await withFleet((fleet) => {
    fleet.app("web1", "api", true);
    fleet.app("web1", "new", false);
    fleet.app("web1", "plain", undefined, "running");
    assertEquals(fleet.cycle({ web1: true }), [], "first sight, even unhealthy, is not news");
    fleet.app("web1", "api", false);
    const seen = [fleet.cycle({ web1: true }), fleet.cycle({ web1: true }), fleet.cycle({ web1: true })];
    assertEquals(seen, [["unhealthy web1/api is unhealthy (failed)"], [], []]);
    fleet.store.upsertApp("web1", "api", { status: "failed", healthy: false, version: "2b3c4d5" }, fleet.now);
    assertEquals(fleet.cycle({ web1: true }), [], "another version, still unhealthy");
    fleet.app("web1", "api", true, "rolled_back");
    fleet.app("web1", "new", true);
    assertEquals(fleet.cycle({ web1: true }), [
      "recovered web1/api recovered (rolled_back)",
      "recovered web1/new recovered (running)",
    ]);
    assertEquals(fleet.cycle({ web1: true }), []);
    fleet.app("web1", "plain", false);
    assertEquals(fleet.cycle({ web1: true }), [], "from unknown health to unhealthy is first sight of its health");
  });
});

Deno.test("alerts: the unhealthy notice's fields", async () => {
  await withFleet((fleet) => {
    fleet.app("web1", "api", true);
    fleet.cycle({ web1: true });
    fleet.app("web1", "api", false);
    const [notice] = fleet.alerter.notices(fleet.summary({ web1: true }), fleet.store);
    assertEquals(notice.ok, false);
    assertEquals(notice.fields, { server: "web1", app: "api", status: "failed", version: "1a2b3c4", commit: COMMIT });
  });
});

Deno.test("alerts: deploys failed or rolled back: one notice per new row; history and new servers are not news", async () => {
  await withFleet((fleet) => {
    fleet.deploy("web1", "api", { outcome: "failed", commit: COMMIT, message: "build: npm ci exited 1" });
    fleet.deploy("web1", "api", { outcome: "success", commit: COMMIT });
    assertEquals(fleet.cycle({ web1: true }), [], "what the database held at first sight is history");
    fleet.deploy("web1", "api", {
      outcome: "rolled_back",
      commit: COMMIT,
      release: "20261129-080000-000",
      duration: 4200,
      step: "health",
      message: "health: /health answered 500",
    });
    fleet.deploy("web1", "api", { outcome: "success", commit: COMMIT });
    fleet.deploy("web1", "web", { outcome: "cancelled" });
    const [notice, ...rest] = fleet.alerter.notices(fleet.summary({ web1: true }), fleet.store);
    assertEquals(rest, []);
    assertEquals(notice, {
      event: "rolled_back",
      ok: false,
      title: "deploy of web1/api 1a2b3c4 rolled back at health",
      fields: {
        server: "web1",
        app: "api",
        version: "1a2b3c4",
        commit: COMMIT,
        release: "20261129-080000-000",
        duration: "4.2 s",
        step: "health",
      },
      text: "health: /health answered 500",
      at: new Date(fleet.now - 30_000).toISOString(),
    });
    assertEquals(fleet.cycle({ web1: true }), [], "once");
    fleet.deploy("web1", "api", { outcome: "failed", commit: COMMIT, step: "build", message: "build: exit 1" });
    fleet.deploy("web1", "api", { outcome: "rollback_failed", message: "nothing healthy" });
    // A server added to the config: its deploy.log's history arrives with its first answer.
    fleet.deploy("web9", "api", { outcome: "failed", commit: COMMIT });
    assertEquals(fleet.cycle({ web1: true, web9: true }), [
      "failed deploy of web1/api 1a2b3c4 failed at build",
      "failed rollback of web1/api failed",
    ]);
    fleet.deploy("web9", "api", { outcome: "failed", commit: COMMIT });
    assertEquals(fleet.cycle({ web1: true, web9: true }), ["failed deploy of web9/api 1a2b3c4 failed"]);
  });
});

Deno.test("alerts: a burst of failed deploys alerts the server's newest 10, and never crowds out another server's", async () => {
  const logged: string[] = [];
  await withFleet((fleet) => {
    fleet.cycle({ web1: true, web2: true });
    fleet.deploy("web2", "api", { outcome: "failed", release: "real outage" });
    for (let i = 0; i < 25; i++) fleet.deploy("web1", "api", { outcome: "failed", release: `r${i}` });
    const notices = fleet.alerter.notices(fleet.summary({ web1: true, web2: true }), fleet.store);
    assertEquals(
      notices.map((n) => n.fields.release),
      ["real outage", ...Array.from({ length: 10 }, (_, i) => `r${i + 15}`)],
    );
    assertEquals(logged, ["! web1: more than 10 failed deploys at once: alerting the newest 10"]);
  }, { log: (line) => logged.push(line) });
});

Deno.test("alerts: certificates: expiring 14 days before (with the error), once; renewed; none and failing", async () => {
  await withFleet((fleet) => {
    const DAY = 86_400_000;
    const start = fleet.now;
    const date = (days: number) => new Date(start + days * DAY).toISOString();
    const day = (days: number) => date(days).slice(0, 10);
    const cert = (days: number | null, lastError: string | null = null): CertificateState => ({
      names: ["a.test", "www.a.test"],
      source: "acme",
      issuer: "C=US, O=Let's Encrypt, CN=R11",
      notBefore: null,
      notAfter: days === null ? null : date(days),
      lastError,
      lastErrorAt: null,
      nextAttemptAt: lastError ? date(8) : null,
    });
    const set = (at: number, certificates: Record<string, CertificateState>) => {
      fleet.now = start + at * DAY; // the clock the cycles run at
      fleet.store.replaceCertificates("web1", new Map(Object.entries(certificates)), fleet.now);
    };
    set(0, { shop: cert(20), blog: cert(10), fresh: cert(null) });
    assertEquals(fleet.cycle({ web1: true }), [
      `certificate_expiring certificate of web1/blog expires in 10 days (${day(10)})`,
    ], "at risk when first seen: a deadline, not history; a certificate not issued yet is not");
    assertEquals(fleet.cycle({ web1: true }), [], "once");

    set(7, { shop: cert(20, "rateLimited: too many certificates"), blog: cert(97), fresh: cert(null) });
    const notices = fleet.alerter.notices(fleet.summary({ web1: true }), fleet.store);
    assertEquals(notices.map((n) => `${n.event} ${n.title}`), [
      `certificate_renewed certificate of web1/blog renewed: valid until ${day(97)}`,
      `certificate_expiring certificate of web1/shop expires in 13 days (${day(20)})`,
    ]);
    assertEquals(notices[1].ok, false);
    assertEquals(notices[1].fields, {
      server: "web1",
      app: "shop",
      names: "a.test, www.a.test",
      issuer: "Let's Encrypt R11",
      source: "ACME",
      "valid until": date(20),
      "next attempt": date(8),
    });
    assertEquals(notices[1].text, "last error: rateLimited: too many certificates");

    set(21, { shop: cert(20, "rateLimited"), blog: cert(97), fresh: cert(null) });
    assertEquals(fleet.cycle({ web1: true }), [], "expiring then expired is one alert");

    set(22, { shop: cert(110), blog: cert(97), fresh: cert(null, "DNS problem: NXDOMAIN looking up A for new.test") });
    assertEquals(fleet.cycle({ web1: "refused" }), [], "a server not pulled this cycle is not judged");
    assertEquals(fleet.cycle({ web1: true }), [
      "certificate_expiring web1/fresh has no certificate: DNS problem: NXDOMAIN looking up A for new.test",
      `certificate_renewed certificate of web1/shop renewed: valid until ${day(110)}`,
    ]);
    set(23, { blog: cert(97), fresh: cert(null) });
    assertEquals(fleet.cycle({ web1: true }), [], "retrying without a certificate yet stays at risk");
    // The next run remembers; an app whose certificate is gone is forgotten.
    fleet.alerter = new Alerter([], { log: () => {}, memory: JSON.parse(JSON.stringify(fleet.alerter.snapshot())) });
    assertEquals(Object.keys(fleet.alerter.snapshot().certificates!), ["web1/blog", "web1/fresh"]);
    set(24, { blog: cert(97), fresh: cert(90) });
    assertEquals(fleet.cycle({ web1: true }), [
      `certificate_renewed certificate of web1/fresh renewed: valid until ${day(90)}`,
    ]);
  });
});

Deno.test("alerts: the memory carries over to the next run (one process per cycle)", async () => {
  await withFleet((fleet) => {
    fleet.app("web1", "api", true);
    fleet.cycle({ web1: true });
    fleet.cycle({ web1: "refused" });
    fleet.deploy("web1", "api", { outcome: "failed", commit: COMMIT });
    // The next run: a new alerter from the memory of the last one.
    fleet.alerter = new Alerter([], { log: () => {}, memory: JSON.parse(JSON.stringify(fleet.alerter.snapshot())) });
    fleet.app("web1", "api", false);
    assertEquals(fleet.cycle({ web1: "refused" }), [
      "unreachable web1 is unreachable: refused",
      "unhealthy web1/api is unhealthy (failed)",
      "failed deploy of web1/api 1a2b3c4 failed",
    ]);
    fleet.alerter = new Alerter([], { log: () => {}, memory: fleet.alerter.snapshot() });
    assertEquals(fleet.cycle({ web1: true }), ["back web1 is back"]);
  });
});

Deno.test("FleetAlerts: no alerts configured → none; the memory file is written, read back, and a broken one is a fresh start", async () => {
  await withFleet(async (fleet) => {
    const path = join(fleet.dir, "data", "alerts.json");
    const config = (alerts: unknown[]) => fleetConfigSchema.parse({ alerts });
    assertEquals(await FleetAlerts.open(config([]), path), undefined);
    // A target nobody listens to: port 9 (discard) on loopback refuses at once.
    const targets = [{ type: "webhook", url: "http://127.0.0.1:9/hook", events: ["back"] }];
    const alerts = (await FleetAlerts.open(config(targets), path, { log: () => {} }))!;
    assertEquals(alerts.alerter.graceCycles, 2);
    fleet.app("web1", "api", true);
    await alerts.after(fleet.summary({ web1: true }), fleet.store);
    const saved = JSON.parse(await Deno.readTextFile(path));
    assertEquals(saved.apps, { "web1/api": true });
    assertEquals(saved.servers.web1.reached, true);
    assertEquals((await Deno.stat(path)).mode! & 0o777, 0o600);
    const again = (await FleetAlerts.open(config(targets), path))!;
    assertEquals(again.alerter.snapshot(), saved);
    const said: string[] = [];
    await Deno.writeTextFile(path, "{not json");
    const fresh = (await FleetAlerts.open(config(targets), path, { log: (line) => said.push(line) }))!;
    assertEquals(fresh.alerter.snapshot(), { version: 2, apps: {}, servers: {} });
    await Deno.writeTextFile(path, JSON.stringify({ ...saved, certificates: { "web1/shop": "yes" } }));
    const badCertificates = (await FleetAlerts.open(config(targets), path, { log: (line) => said.push(line) }))!;
    assertEquals(badCertificates.alerter.snapshot(), { version: 2, apps: {}, servers: {} });
    assertEquals(said.length, 2, said.join("\n"));
    assertMatch(said[0], /^! \S+alerts\.json was unreadable \(.*JSON.*\): alert states start afresh$/);
    assertEquals(said[1], `! ${path} was unreadable (bad certificates): alert states start afresh`);
  });
});

Deno.test("fleet config: alerts and graceCycles are checked", () => {
  const parsed = fleetConfigSchema.parse({
    graceCycles: 3,
    alerts: [{
      type: "slack",
      url: "https://hooks.slack.com/services/T/B/x",
      events: ["unreachable", "back", "certificate_expiring", "certificate_renewed"],
    }],
  });
  assertEquals([parsed.graceCycles, parsed.alerts.length], [3, 1]);
  assertEquals(fleetConfigSchema.parse({}).graceCycles, 2);
  for (
    const bad of [
      { alerts: [{ type: "email", url: "https://x" }] },
      { alerts: [{ type: "webhook", url: "ftp://x" }] },
      { alerts: [{ type: "webhook", url: "https://x", events: ["success"] }] },
      { alerts: [{ type: "webhook", url: "https://x", extra: 1 }] },
      { graceCycles: 0 },
      { graceCycles: 1.5 },
    ]
  ) {
    assert(!fleetConfigSchema.safeParse(bad).success, JSON.stringify(bad));
  }
});

/** A real HTTP server on loopback recording each request; `/hang` never answers, `/fail…` answers 500. */
async function withReceiver(
  fn: (base: string, got: { path: string; headers: Headers; body: unknown }[]) => Promise<void>,
) {
  const got: { path: string; headers: Headers; body: unknown }[] = [];
  const hanging: (() => void)[] = [];
  const listening = Promise.withResolvers<number>();
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: ({ port }) => listening.resolve(port),
  }, async (request) => {
    const path = new URL(request.url).pathname;
    got.push({ path, headers: request.headers, body: await request.json() });
    if (path.startsWith("/hang")) {
      await new Promise<void>((resolve) => hanging.push(resolve));
      return new Response("late");
    }
    if (path.startsWith("/fail")) return new Response("nope", { status: 500 });
    return new Response(null, { status: path.startsWith("/discord") ? 204 : 200 });
  });
  try {
    await fn(`http://127.0.0.1:${await listening.promise}`, got);
  } finally {
    for (const resolve of hanging) resolve();
    await server.shutdown();
  }
}

/** A rolled-back deploy, as the alerter makes it. */
async function rolledBack(): Promise<Notice> {
  let notice: Notice | undefined;
  await withFleet((fleet) => {
    fleet.cycle({ web1: true });
    fleet.deploy("web1", "api", {
      outcome: "rolled_back",
      commit: COMMIT,
      duration: 4200,
      step: "health",
      message: "health: /health answered 500 <!channel>",
    });
    [notice] = fleet.alerter.notices(fleet.summary({ web1: true }), fleet.store);
  });
  return notice!;
}

Deno.test("alert delivery: the payloads of a webhook, Slack and Discord, as received", async () => {
  const notice = await rolledBack();
  await withReceiver(async (base, got) => {
    const targets: Target[] = [
      { type: "webhook", url: `${base}/hook` },
      { type: "slack", url: `${base}/slack/T000/B000/secret` },
      { type: "discord", url: `${base}/discord/123/secret` },
      { type: "webhook", url: `${base}/only-back`, events: ["back"] },
    ];
    const logged: string[] = [];
    const alerter = new Alerter(targets, { log: (line) => logged.push(line) });
    const deliveries = await alerter.send([notice]);
    assertEquals(deliveries.map((d) => [d.target, d.ok]), [
      [`webhook ${base}/…`, true],
      [`slack ${base}/…`, true],
      [`discord ${base}/…`, true],
    ]);
    assertEquals(logged, []);
    const by = (path: string) => got.find((r) => r.path.startsWith(path))!;
    assertEquals(got.length, 3, "the target that wants only `back` got nothing");
    for (const request of got) {
      assertEquals(request.headers.get("content-type"), "application/json");
      assertEquals(request.headers.get("user-agent"), "deploy-paradigm");
    }

    assertEquals(by("/hook").body, {
      event: "rolled_back",
      ok: false,
      title: "deploy of web1/api 1a2b3c4 rolled back at health",
      text: "health: /health answered 500 <!channel>",
      at: notice.at,
      server: "web1",
      app: "api",
      version: "1a2b3c4",
      commit: COMMIT,
      duration: "4.2 s",
      step: "health",
    });

    const slack = by("/slack").body as { text: string; blocks: { type: string; text?: { text: string } }[] };
    assertEquals(slack.text, "❌ deploy of web1/api 1a2b3c4 rolled back at health");
    assertEquals(slack.blocks.map((b) => b.type), ["section", "section", "section", "context"]);
    assertEquals(slack.blocks[0].text!.text, "❌ *deploy of web1/api 1a2b3c4 rolled back at health*");
    assertEquals(
      slack.blocks[1].text!.text,
      `*server:* web1  *app:* api  *version:* 1a2b3c4  *commit:* ${COMMIT}  *duration:* 4.2 s  *step:* health`,
    );
    assertMatch(slack.blocks[2].text!.text, /^```health: \/health answered 500/);

    const discord = by("/discord").body as {
      embeds: { title: string; color: number; description: string; fields: unknown[]; footer: { text: string } }[];
      allowed_mentions: unknown;
    };
    assertEquals(discord.embeds.length, 1);
    const [embed] = discord.embeds;
    assertEquals(embed.title, "deploy of web1/api 1a2b3c4 rolled back at health");
    assertEquals(embed.color, 0xc62828);
    assertEquals(embed.description, "health: /health answered 500 <!channel>");
    assertEquals(embed.fields, [
      { name: "server", value: "web1", inline: true },
      { name: "app", value: "api", inline: true },
      { name: "version", value: "1a2b3c4", inline: true },
      { name: "commit", value: COMMIT, inline: true },
      { name: "duration", value: "4.2 s", inline: true },
      { name: "step", value: "health", inline: true },
    ]);
    assertEquals(embed.footer.text, "deploy-paradigm · rolled_back");
    assertEquals(discord.allowed_mentions, { parse: [] });

    // Good news is green, and a target filtered on `back` gets it.
    got.length = 0;
    await alerter.send([{ event: "back", ok: true, title: "web1 is back", fields: { server: "web1" }, at: notice.at }]);
    assertEquals(got.map((r) => r.path).sort(), [
      "/discord/123/secret",
      "/hook",
      "/only-back",
      "/slack/T000/B000/secret",
    ]);
    assertEquals((by("/discord").body as { embeds: { color: number }[] }).embeds[0].color, 0x2e7d32);
    assertEquals((by("/slack").body as { text: string }).text, "✅ web1 is back");
  });
});

Deno.test("alert delivery: a receiver that hangs costs the timeout, one answering 500 is reported; nothing throws", async () => {
  const notice = await rolledBack();
  await withReceiver(async (base, got) => {
    const logged: string[] = [];
    const alerter = new Alerter([
      { type: "slack", url: `${base}/hang/T000/B000/secret-token` },
      { type: "discord", url: `${base}/fail/secret-token` },
      { type: "webhook", url: `${base}/hook` },
    ], { timeoutMs: 300, log: (line) => logged.push(line) });
    // Three notices at once: each delivery in parallel, so the whole costs one timeout.
    const started = performance.now();
    const deliveries = await alerter.send([notice, { ...notice, title: "second" }, { ...notice, title: "third" }]);
    const took = performance.now() - started;
    assert(took >= 280 && took < 1500, `took ${Math.round(took)} ms with a 300 ms timeout`);
    assertEquals(got.length, 9, "every request arrived");
    assertEquals(deliveries.length, 9);
    const failed = deliveries.filter((d) => !d.ok);
    assertEquals(failed.length, 6);
    assertEquals(logged.length, 6);
    for (const line of logged) {
      assertMatch(
        line,
        new RegExp(
          `^! alert to (slack ${base}/… failed: no answer within 300 ms|discord ${base}/… failed: 500 in \\d+ ms)$`,
        ),
      );
      assert(!line.includes("secret-token"), line);
    }
  });
});

Deno.test("alert delivery: a burst of 40 notices is at most 4 requests at once to each target; all arrive", async () => {
  const hooks = await receiver();
  try {
    const alerter = new Alerter([
      { type: "webhook", url: `${hooks.base}/slow/hook` },
      { type: "slack", url: `${hooks.base}/slow/slack` },
      { type: "webhook", url: `${hooks.base}/slow/backs`, events: ["back"] },
    ], { log: () => {} });
    const notices = Array.from({ length: 40 }, (_, i): Notice => ({
      event: "rule_firing",
      ok: false,
      title: `n${i}`,
      fields: {},
      at: new Date().toISOString(),
    }));
    const deliveries = await alerter.send(notices);
    assertEquals([deliveries.length, deliveries.every((d) => d.ok)], [80, true]);
    assertEquals(hooks.at("/slow/hook").sort(), notices.map((n) => `rule_firing ${n.title}`).sort());
    assertEquals(hooks.at("/slow/backs"), [], "a target that does not want them waits for nothing");
    for (const path of ["/slow/hook", "/slow/slack"]) {
      assertEquals(hooks.peak(path), MAX_DELIVERIES_PER_TARGET, `${path}: ${hooks.peak(path)} at once`);
    }
  } finally {
    await hooks.close();
  }
});

Deno.test("alert delivery: a target that refuses the connection is reported, never thrown", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  const logged: string[] = [];
  const alerter = new Alerter([{ type: "webhook", url: `http://127.0.0.1:${port}/secret` }], {
    timeoutMs: 300,
    log: (line) => logged.push(line),
  });
  const deliveries = await alerter.send([{ event: "back", ok: true, title: "x is back", fields: {}, at: "now" }]);
  assertEquals(deliveries.map((d) => d.ok), [false]);
  assertEquals(logged.length, 1);
  assertMatch(logged[0], new RegExp(`^! alert to webhook http://127\\.0\\.0\\.1:${port}/… failed: `));
  assert(!logged[0].includes("secret"), logged[0]);
});

Deno.test("alerts: a server over the collector's limits alerts once, and again only after a pull within them", async () => {
  await withFleet((fleet) => {
    const cycle = (limits: Record<string, string[]>, failed: string[] = []) => {
      const summary = fleet.summary(
        Object.fromEntries(Object.keys(limits).map((name) => [name, failed.includes(name) ? "timeout" : true])),
      );
      for (const server of summary.servers) server.limits = limits[server.server];
      return fleet.alerter.notices(summary, fleet.store).map((n) => `${n.event} ${n.title}`);
    };
    const big = "big/status.json is 95.4 MiB, over the 64 KiB allowed: refused";
    assertEquals(cycle({ web1: [], web2: [big, "big/huge.log is 476.8 MiB"] }), [
      `over_limit web2 went over the fleet collector's limits: ${big}`,
    ]);
    assertEquals(cycle({ web1: [], web2: [big] }), [], "still over: no news");
    assertEquals(cycle({ web1: [], web2: [] }, ["web2"]), [], "a failed pull says nothing of the limits");
    assertEquals(cycle({ web1: [], web2: [big] }), []);
    assertEquals(cycle({ web1: [], web2: [] }), []);
    assertEquals(cycle({ web1: [], web2: ["1 log file(s) wait"] }), [
      "over_limit web2 went over the fleet collector's limits: 1 log file(s) wait",
    ]);
  });
});

Deno.test("/metrics: fleet_alert_firing has one gauge per rule subject, labelled by what the subject has (escaped)", async () => {
  const rules = parseConfig(
    `servers: [{ name: web1, host: 10.0.0.1 }]
rules:
  - { name: 'disk "data"', metric: disk.used_percent, above: 90 }
  - { name: fatal, query: FATAL, atLeast: 1 }
  - { name: certs, certificate: expiring, days: 30, app: shop }
`,
    fleetConfigSchema,
    "config.yml",
  ).rules;
  await withFleet((fleet) => {
    const cert: CertificateState = {
      names: ["shop.test"],
      source: "acme",
      issuer: null,
      notBefore: null,
      notAfter: new Date(fleet.now + 20 * 86_400_000).toISOString(),
      lastError: null,
      lastErrorAt: null,
      nextAttemptAt: null,
    };
    fleet.store.replaceCertificates("web1", new Map([["shop", cert], ["blog", cert]]), fleet.now);
    const filesystems = [{ mount: "/", used: 40 }, { mount: "/data", used: 95 }];
    storeServerSample(fleet.store, "web1", { counters: {}, filesystems, missing: [] }, fleet.now);
    fleet.cycle({ web1: true });
    const text = metrics(fleet.store, { now: fleet.now, intervalMs: 30_000, holding: false, gapMs: 0 }, {
      cycles: 1,
      errors: 0,
      alerts: fleet.alerter.firing(),
    });
    assertEquals(text.split("\n").filter((line) => line.includes("fleet_alert_firing")), [
      "# HELP fleet_alert_firing Whether the alert rule fires (1) or not (0) for the server (and app, mount or cron job).",
      "# TYPE fleet_alert_firing gauge",
      'fleet_alert_firing{rule="disk \\"data\\"",server="web1",mount="/"} 0',
      'fleet_alert_firing{rule="disk \\"data\\"",server="web1",mount="/data"} 1',
      'fleet_alert_firing{rule="fatal",server="web1"} 0',
      'fleet_alert_firing{rule="certs",server="web1",app="shop"} 1',
    ]);
  }, { rules, servers: ["web1"] });
});
