/**
 * The deploy engine when the proxy refuses canary.json (src/deploy/canary.ts): the control op
 * `canary` answers `{ok: true, stats: null, problem}` (src/proxy/control.ts): the deploy fails at
 * once, nothing switched, naming the proxy's problem; without one, the "no canary" message. The fake world of
 * tests/helpers/pipeline_world.ts, its proxy wrapped to refuse.
 * @module
 */
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { commit, deploy, entries, status, withWorld, type World } from "../helpers/pipeline_world.ts";

const CANARY = "canary: { steps: [5, 50], interval: 10s, minRequests: 50, maxWait: 30s }";
const PROBLEM = 'canary.json is ignored: its target (127.0.0.1:41005) is not slot "green" (fix: …)';

/** A good first release, then one with a canary whose `canary` ops the proxy answers with `stats: null` and `problem`. */
async function refusedCanary(w: World, problem: string | undefined) {
  assert((await deploy(w, await commit(w, "ok"))).ok);
  const sha = await commit(w, "ok", [CANARY]);
  const proxy = w.effects.proxy;
  w.effects.proxy = async (request) => {
    if ((request as { op?: string }).op !== "canary") return await proxy(request);
    return problem === undefined ? { ok: true, stats: null } : { ok: true, stats: null, problem };
  };
  w.printed.length = 0;
  return await deploy(w, sha);
}

Deno.test("canary refused by the proxy: the deploy fails at once, not switched, naming the proxy's problem", async () => {
  await withWorld("blue-green", async (w) => {
    // Nothing took traffic: a failed deploy (no revert, the release not marked bad), the old release serving.
    assertEquals(await refusedCanary(w, PROBLEM), { ok: false, reason: "deploy failed at canary" });
    const s = await status(w);
    assertEquals([s.status, s.lastDeploy.outcome, s.lastDeploy.step], ["running", "failed", "canary"]);
    assertEquals(
      (await entries(w)).at(-1)!.message,
      `canary: the proxy did not apply canary step 1/2 (5%): the proxy refuses the canary: ${PROBLEM}`,
    );
    assert(w.printed.some((line) => line.includes("nothing was switched")), w.printed.join("\n"));
  });
});

Deno.test("canary gone from the proxy (no problem said): the revert says so, pointing to its log", async () => {
  await withWorld("blue-green", async (w) => {
    assertEquals((await refusedCanary(w, undefined)).ok, false);
    assertMatch((await entries(w)).at(-1)!.message!, /the proxy reports no canary for the app \(see its log\)$/);
  });
});
