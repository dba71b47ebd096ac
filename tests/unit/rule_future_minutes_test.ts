/**
 * Attacks the upper bound of an app rule's window (src/fleet/series.ts appRequestWindow, used by
 * rule_inputs.ts appObservations): a request minute dated in the future (a server's clock ahead,
 * or a compromised server: requestMinuteOf accepts `ts` up to a day past the pull) was counted by
 * every app rule's window until that time came, because the window had no upper bound. Now it
 * ends at the cycle's time plus the log rules' small allowance (LINE_AHEAD_MS).
 */
import { assertEquals } from "../helpers/assert.ts";
import { cycleSummary, withStore } from "../helpers/fleet_store.ts";
import { parseConfig } from "../../src/config/load.ts";
import { Alerter } from "../../src/fleet/alerts.ts";
import { fleetConfigSchema } from "../../src/fleet/config.ts";
import { requestMinuteOf, storeRequestMinutes } from "../../src/fleet/metric_store.ts";

Deno.test("rules: an app rule's 5-minute window does not count a minute dated 20 hours ahead", async () => {
  await withStore("dp-review-", (store) => {
    const config = parseConfig(
      "servers:\n  - { name: web1, host: 10.0.0.1 }\nrules:\n" +
        "  - { name: api 5xx, metric: app.error_percent, above: 10, app: api, within: 5m, minRequests: 10 }\n",
      fleetConfigSchema,
      "config.yml",
    );
    const alerter = new Alerter([], { rules: config.rules, servers: ["web1"] });
    const now = Date.UTC(2026, 0, 1, 12);
    store.upsertApp("web1", "api", { status: "running", healthy: true, version: "v1" }, now);
    // What the server really served in the last minute: 100 requests, no error.
    const real = { ts: now - 60_000, requests: 100, errors: 0, other: 100, p50: 5, p95: 9 };
    // A hostile metrics.log line, dated 20 h ahead: accepted by the parser (within a day).
    const future = requestMinuteOf({
      offset: 0,
      ts: now,
      text: JSON.stringify({
        ts: new Date(now + 20 * 3_600_000).toISOString(),
        app: "api",
        requests: 1000,
        status: { "5xx": 1000 },
      }),
    }, now);
    storeRequestMinutes(store, "web1", "api", [real, future!]);
    const titles = alerter.notices(cycleSummary(now, { web1: true }), store).map((n) => n.title);
    assertEquals(titles, [], "no 5xx in the last 5 minutes: nothing fires");
  });
});
