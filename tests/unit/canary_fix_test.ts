/**
 * What the canary and gates say to an operator (the fake world of tests/helpers/pipeline_world.ts):
 * a gate killed for its timeout or its output cap, a canary promoted without traffic, a canary
 * left by a killed deploy and ended later, `rollback` with such a canary, a waiting canary's way
 * out, the messages of a revert and of bad steps, status.json's step and figures.
 * @module
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import {
  APP,
  commit,
  deploy,
  entries,
  logLength,
  releases,
  status,
  withWorld,
  type World,
} from "../helpers/pipeline_world.ts";
import { decideCanary } from "../../src/deploy/canary_abort.ts";
import { readReleaseMeta, writeReleaseMeta } from "../../src/deploy/releases.ts";
import { rollback } from "../../src/deploy/rollback.ts";
import { writeStatus } from "../../src/deploy/status.ts";
import { readCanary } from "../../src/proxy/canary_file.ts";
import { readRoute } from "../../src/proxy/routes.ts";

/** Deploys a first good release (blue), then commits the next with `extra` lines; returns its sha and the log length. */
async function secondRelease(w: World, extra: string[]) {
  assert((await deploy(w, await commit(w, "ok"))).ok);
  const from = await logLength(w);
  w.fake.calls.length = 0;
  w.printed.length = 0;
  return { sha: await commit(w, "ok", extra), from };
}

Deno.test("gates: a gate killed for its timeout or its output cap says so on its push line", async () => {
  for (
    const [output, code, said, overflow] of [
      ["waiting\n(killed: no result after 5s)", 124, /^✗ gate +[\d.]+s {2}`.*\.\/smoke\.sh` timed out after 5s$/],
      [
        "(killed: more than 1048576 bytes of output)",
        137,
        /^✗ gate +[\d.]+s {2}`.*\.\/smoke\.sh` stopped: printed more than 1 MiB$/,
        true,
      ],
      // A script that prints such a line itself and fails: its exit code, not a timeout.
      [
        "(killed: no result after 5s)",
        1,
        /^✗ gate +[\d.]+s {2}`.*\.\/smoke\.sh` exited with code 1 \(its output is above\)$/,
      ],
      [
        "smoke: /api answered 500",
        1,
        /^✗ gate +[\d.]+s {2}`.*\.\/smoke\.sh` exited with code 1 \(its output is above\)$/,
      ],
    ] as const
  ) {
    await withWorld("blue-green", async (w) => {
      const { sha } = await secondRelease(w, ["gates: [./smoke.sh]"]);
      w.fake.on((argv) => argv.includes("./smoke.sh"), { code, output, overflow: overflow === true });
      assertEquals(await deploy(w, sha), { ok: false, reason: "deploy failed at gate" });
      const line = w.printed.find((l) => l.startsWith("✗ gate"));
      assertMatch(line ?? w.printed.join("\n"), said);
    });
  }
});

Deno.test("canary: onLowTraffic promote without traffic says it promoted without a judgement", async () => {
  await withWorld("blue-green", async (w) => {
    const { sha, from } = await secondRelease(w, [
      "canary: { steps: [10, 50], interval: 10s, minRequests: 10, maxWait: 30s, onLowTraffic: promote }",
    ]);
    w.canary.script = () => ({ canary: { requests: 0 }, stable: { requests: 0 } });
    assertEquals(await deploy(w, sha), { ok: true });
    const said = w.printed.filter((line) => line.startsWith("✓ canary"));
    assertEquals(said, [
      "✓ canary     passed without a judgement at 10% (low traffic: 0 of 10 requests in 30s; onLowTraffic: promote)",
      "✓ canary     promoted without a judgement at 50% (low traffic: 0 of 10 requests in 30s; onLowTraffic: promote)",
      "✓ canary     promoted after 2 steps (10%, 50%), 2 of them without enough requests to judge (onLowTraffic: promote)",
    ]);
    const reason =
      "promoted after 2 steps (10%, 50%), 2 of them without enough requests to judge (onLowTraffic: promote)";
    assertEquals((await status(w)).canary?.reason, reason);
    const log = (await entries(w, from)).filter((e) => e.event === "canary").map((e) => e.message);
    assertEquals(log.at(-1), reason);
    assert(!log.some((m) => m?.includes("every step passed")), log.join("\n"));
  });
});

const LEFT = "20990101-000000-000";
const KILLED = "c".repeat(40);

/**
 * What a deploy SIGKILLed mid-canary leaves, after two good releases (A on blue, B serving on
 * green): release {@link LEFT} (pending, never switched to) running in blue with 25 % of the
 * clients, its marker (a dead pid), status.json's canary running. Returns A and B.
 */
async function leftCanary(w: World): Promise<[string, string]> {
  assert((await deploy(w, await commit(w, "ok"))).ok);
  assert((await deploy(w, await commit(w, "ok"))).ok);
  const [a, b] = await releases(w);
  const child = new Deno.Command("true").spawn();
  await child.status;
  await Deno.writeTextFile(join(w.paths.dir, ".deploying"), JSON.stringify({ commit: KILLED, pid: child.pid }));
  await Deno.mkdir(w.paths.release(LEFT));
  await Deno.copyFile(join(w.paths.release(b), "server"), join(w.paths.release(LEFT), "server"));
  const meta = (await readReleaseMeta(w.paths, b))!;
  await writeReleaseMeta(w.paths, { ...meta, id: LEFT, commit: KILLED, pending: true });
  await w.apps.start(w.slots.blue, w.paths.release(LEFT));
  const since = "2026-01-01T00:00:00.000Z";
  await Deno.writeTextFile(
    join(w.paths.dir, "canary.json"),
    JSON.stringify({ target: { port: w.slots.blue }, slot: "blue", percent: 25, since }),
  );
  const canary = {
    state: "running" as const,
    release: LEFT,
    version: KILLED.slice(0, 7),
    percent: 25,
    step: 2,
    steps: [5, 25, 50],
    since,
    at: since,
  };
  await writeStatus(w.paths.status, { ...await status(w), canary });
  w.fake.calls.length = 0;
  w.printed.length = 0;
  w.proxied.length = 0;
  return [a, b];
}

/** The left release is bad, and deploy.log's `canary` event for ending it names it and its commit. */
async function endedAsBad(w: World, from: number) {
  assertEquals((await readReleaseMeta(w.paths, LEFT))?.bad, true);
  const ended = (await entries(w, from)).filter((e) => e.event === "canary");
  assertEquals(ended.length, 1, JSON.stringify(ended));
  assertEquals([ended[0].ok, ended[0].release, ended[0].commit], [false, LEFT, KILLED]);
  assertMatch(
    ended[0].message!,
    new RegExp(`^the canary of release ${LEFT} left by a killed deploy ended: .*marked bad`),
  );
  assertEquals(await readCanary(w.paths.dir), undefined);
  assertEquals((await status(w)).canary?.state ?? "gone", (await status(w)).canary ? "aborted" : "gone");
}

Deno.test("a canary left by a killed deploy and ended by `canary abort`: its release is bad, the event names it", async () => {
  await withWorld("blue-green", async (w) => {
    const [, b] = await leftCanary(w);
    const from = await logLength(w);
    assertEquals(await decideCanary(APP, "abort", w.effects, 0), 0);
    await endedAsBad(w, from);
    assertEquals((await readReleaseMeta(w.paths, b))?.bad, undefined);
  });
});

// The left release's id is far ahead (2099): this also shows the next release id follows it at once.
Deno.test("a canary left by a killed deploy and ended by the next deploy: its release is gone, the split too", async () => {
  await withWorld("blue-green", async (w) => {
    await leftCanary(w);
    const from = await logLength(w);
    assert((await deploy(w, await commit(w, "ok"))).ok);
    // The killed deploy's release is removed with the rest of what it left (as for any killed deploy), so
    // `releases` cannot list it as good; the split is gone; `interrupted` in deploy.log says what happened.
    assert(!(await releases(w)).includes(LEFT), JSON.stringify(await releases(w)));
    assertEquals(await readCanary(w.paths.dir), undefined);
    assert((await entries(w, from)).some((e) => e.event === "interrupted"));
  });
});

Deno.test("rollback with a killed deploy's canary split: ends the canary and stops there; again goes back further", async () => {
  await withWorld("blue-green", async (w) => {
    const [a, b] = await leftCanary(w);
    const from = await logLength(w);
    assertEquals(await rollback(APP, undefined, w.effects), 0);
    await endedAsBad(w, from);
    assertEquals(await readRoute(w.paths.dir), { port: w.slots.green }); // B serves, untouched
    assertEquals((await readReleaseMeta(w.paths, b))?.bad, undefined);
    const s = await status(w);
    assertEquals([s.release, s.canary?.state, s.canary?.reason], [b, "aborted", "ended by a rollback by hand"]);
    assertEquals(
      w.printed.at(-1),
      `↺ the canary of release ${LEFT} (${KILLED.slice(0, 7)}) is ended; ${b} keeps serving every request. ` +
        `\`deploy-paradigm rollback ${APP}\` again goes back further.`,
    );
    // Again: back to A, as usual (B marked bad); the left release is skipped.
    assertEquals(await rollback(APP, undefined, w.effects), 0);
    assertEquals([(await status(w)).release, (await readReleaseMeta(w.paths, b))?.bad], [a, true]);
  });
});

Deno.test("rollback --to with a killed deploy's canary split: ends the canary, then goes where asked", async () => {
  await withWorld("blue-green", async (w) => {
    const [a] = await leftCanary(w);
    const from = await logLength(w);
    assertEquals(await rollback(APP, a, w.effects), 0);
    assertEquals((await readReleaseMeta(w.paths, LEFT))?.bad, true);
    const ended = (await entries(w, from)).find((e) => e.event === "canary");
    assertEquals([ended?.release, ended?.commit], [LEFT, KILLED]);
    assertEquals((await status(w)).release, a);
  });
});
