/**
 * Attacks the collector's reading of status.json (src/fleet/collector.ts readStatusFile,
 * pullServer): a status.json that is valid JSON but not an object (`[]`, `"x"`, `1`, `null`) was
 * taken for a half-written file: the app kept its last state, shown fresh, for ever, and the pull
 * named no limit or error. Only text that does not parse can be half-written; a whole JSON value
 * of the wrong shape is refused and marked like an oversized file (the app dropped).
 */
import { join } from "node:path";
import { assertEquals } from "../helpers/assert.ts";
import { Collector } from "../../src/fleet/collector.ts";
import { fleetConfigSchema, fleetPaths } from "../../src/fleet/config.ts";
import { FleetStore } from "../../src/fleet/store.ts";

Deno.test("collector: a status.json that is a JSON array is refused and marked, not kept as the app's state", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dp-review-" });
  const before = Deno.env.get("DEPLOY_PARADIGM_PREFIX");
  const paths = fleetPaths(join(dir, "home"));
  const store = await FleetStore.open(paths.db);
  const config = fleetConfigSchema.parse({ servers: [{ name: "self", host: "local" }] });
  const collector = new Collector(store, config, paths, () => Date.UTC(2026, 11, 5, 12), { metrics: false });
  try {
    Deno.env.set("DEPLOY_PARADIGM_PREFIX", join(dir, "server"));
    const status = join(dir, "server/opt/deployments/web/status.json");
    await Deno.mkdir(join(dir, "server/opt/deployments/web"), { recursive: true });
    await Deno.writeTextFile(status, JSON.stringify({ status: "running", healthy: true, version: "v1" }));
    await collector.cycle();
    await Deno.writeTextFile(status, "[]"); // whole, valid JSON, and not a status
    const summary = await collector.cycle();
    const apps = store.sql("SELECT app, status FROM apps").all() as { app: string; status: string }[];
    assertEquals(
      { marked: (summary.servers[0].limits ?? []).some((l) => l.startsWith("web/status.json")), kept: apps },
      { marked: true, kept: [] },
    );
  } finally {
    if (before === undefined) Deno.env.delete("DEPLOY_PARADIGM_PREFIX");
    else Deno.env.set("DEPLOY_PARADIGM_PREFIX", before);
    await collector.close();
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
});
