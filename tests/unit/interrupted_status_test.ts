/**
 * A blue-green deploy killed midway, as `status` shows it and the next deploy records it: what the
 * proxy routes to (route.json, the slot's link) serves, whatever status.json still names
 * (src/deploy/slots.ts routedSlot, src/deploy/outcome.ts routedHealth and interruptedStatus), and
 * the warning naming the killed deploy, what serves and what finishes it (src/status_view.ts).
 */
import { join } from "node:path";
import { assertEquals } from "../helpers/assert.ts";
import { appPaths } from "../../src/paths.ts";
import { routedSlot } from "../../src/deploy/slots.ts";
import { writeReleaseMeta } from "../../src/deploy/releases.ts";
import { interruptedStatus, interruptionMessage, routedHealth } from "../../src/deploy/outcome.ts";
import type { AppStatus } from "../../src/deploy/status.ts";
import { interruptionWarning } from "../../src/status_view.ts";

const V1 = "e4487e3" + "1".repeat(33);
const V2 = "529d5fd" + "2".repeat(33);
const SLOTS = { blue: 46100, green: 46101 };
const KILLED = { commit: V2, pid: 4242, since: "2026-12-06T10:00:00.000Z" };
const REPO = "/var/repos/web1.git";

/** status.json as the deploy of v1 wrote it: blue serves release `r1`. */
const WRITTEN: AppStatus = {
  name: "web1",
  type: "python",
  manager: "pm2",
  port: 46000,
  strategy: "blue-green",
  status: "running",
  healthy: true,
  version: V1.slice(0, 7),
  commit: V1,
  release: "r1",
  slot: "blue",
  slotPort: SLOTS.blue,
  lastDeploy: { outcome: "success", release: "r1", commit: V1, version: V1.slice(0, 7), at: "t1", duration: 1 },
};

/** An app dir under a temp prefix with releases r1 (v1) and r2 (v2), `slots/<slot>` linked as `links` says. */
async function withApp(
  links: Record<string, string>,
  route: object | undefined,
  fn: (paths: ReturnType<typeof appPaths>) => Promise<void>,
): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "dp-interrupted-" });
  try {
    const paths = appPaths("web1", root);
    for (const [id, commit] of [["r1", V1], ["r2", V2]]) {
      await Deno.mkdir(paths.release(id), { recursive: true });
      await writeReleaseMeta(paths, { id, commit, type: "python", createdAt: "t" });
    }
    await Deno.mkdir(join(paths.dir, "slots"), { recursive: true });
    for (const [slot, release] of Object.entries(links)) {
      await Deno.symlink(`../releases/${release}`, join(paths.dir, "slots", slot));
    }
    if (route) await Deno.writeTextFile(join(paths.dir, "route.json"), JSON.stringify(route) + "\n");
    await fn(paths);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

Deno.test("routedSlot: the slot of route.json's first port and the release its link names; none without a slot's port", async () => {
  await withApp({ blue: "r1", green: "r2" }, { ports: [SLOTS.green, 46102] }, async (paths) => {
    assertEquals(await routedSlot(paths, SLOTS), { slot: "green", slotPort: SLOTS.green, release: "r2" });
    assertEquals(await routedSlot(paths, undefined), {}, "no slots in config.yml");
  });
  await withApp({ blue: "gone" }, { port: SLOTS.blue }, async (paths) => {
    assertEquals(await routedSlot(paths, SLOTS), { slot: "blue", slotPort: SLOTS.blue }, "a link without metadata");
  });
  await withApp({}, { dir: "/srv/static" }, async (paths) => assertEquals(await routedSlot(paths, SLOTS), {}));
  await withApp({}, undefined, async (paths) => assertEquals(await routedSlot(paths, SLOTS), {}));
});

Deno.test("killed after its switch: status follows the release routed to (v2 from green), not status.json's v1 in blue", async () => {
  await withApp({ blue: "r1", green: "r2" }, { port: SLOTS.green }, async (paths) => {
    const routed = await routedSlot(paths, SLOTS);
    const meta = { id: "r2", commit: V2, type: "python", createdAt: "t" };
    const message = interruptionMessage(KILLED, "r2", meta);
    assertEquals(
      message,
      "the deploy of 529d5fd (pid 4242, since 2026-12-06T10:00:00.000Z) was interrupted; release r2 (529d5fd) serves",
    );
    const shown = interruptedStatus(WRITTEN, {
      current: "r2",
      meta,
      health: routedHealth(routed),
      killedCommit: V2,
      message,
      at: KILLED.since,
    });
    assertEquals(
      [shown.release, shown.version, shown.previous, shown.slot, shown.slotPort, shown.status, shown.healthy],
      ["r2", "529d5fd", "r1", "green", SLOTS.green, "running", true],
    );
    assertEquals([shown.lastDeploy.outcome, shown.lastDeploy.version, shown.lastDeploy.step], [
      "cancelled",
      "529d5fd",
      "interrupted",
    ]);

    assertEquals(
      interruptionWarning("web1", KILLED, shown, { switched: true, repo: REPO }),
      "web1: a deploy of 529d5fd (pid 4242, since 2026-12-06T10:00:00.000Z) was interrupted after its switch; it " +
        "serves (release r2, the green slot); what follows the switch (workers, cron jobs, the postDeploy hook, " +
        "cleanup) may not have run: the next deploy records the interruption and does it (push a new commit, or " +
        `redeploy this one: \`deploy-paradigm execute ${REPO} ${V2}\`)`,
    );
    // Killed in the watch window: the old slot still runs the release before.
    const idle = { slot: "blue" as const, name: "web1-blue", pid: 77, commit: V1 };
    assertEquals(
      interruptionWarning("web1", KILLED, shown, { switched: true, idle, repo: REPO }).split("; ").slice(1, 3),
      ["it serves (release r2, the green slot)", "the blue slot still runs e4487e3 (web1-blue, pid 77)"],
    );
  });
});

Deno.test("killed before its switch: v1 still serves, the idle slot runs the killed commit; the next push cleans up", () => {
  const shown = interruptedStatus(WRITTEN, {
    current: "r1",
    meta: { id: "r1", commit: V1, type: "python", createdAt: "t" },
    health: routedHealth({ slot: "blue", slotPort: SLOTS.blue, release: "r1" }),
    killedCommit: V2,
    message: "m",
    at: KILLED.since,
  });
  assertEquals([shown.release, shown.version, shown.slot], ["r1", "e4487e3", "blue"], "status.json's, still true");
  const idle = { slot: "green" as const, name: "web1-green", pid: 88, commit: V2 };
  assertEquals(
    interruptionWarning("web1", { pid: 4242 }, { ...shown, healthy: false }, { switched: false, repo: REPO }),
    "web1: a deploy of an unknown commit (pid 4242) was interrupted; nothing healthy serves; the next push records " +
      "the interruption and cleans up what it left (it replaces the idle slot and removes the release that never served)",
  );
  assertEquals(
    interruptionWarning("web1", KILLED, shown, { switched: false, idle, repo: REPO }),
    "web1: a deploy of 529d5fd (pid 4242, since 2026-12-06T10:00:00.000Z) was interrupted; the green slot still " +
      "runs it (web1-green, pid 88); e4487e3 still serves; the next push records the interruption and cleans up " +
      "what it left (it replaces the idle slot and removes the release that never served)",
  );
});
