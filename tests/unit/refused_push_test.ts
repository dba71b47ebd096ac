/**
 * A deploy refused before anything changes (an invalid deploy.yml, config.yml or `.env`): exit 2 as
 * before, and recorded as an outcome: a `refused` event in deploy.log, status.json's lastDeploy
 * (what serves unchanged) and the `notify:` targets; when config.yml itself is invalid, the push
 * says its targets cannot be read.
 */
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { commit, deploy, entries, logLength, status, withWorld } from "../helpers/pipeline_world.ts";
import { receiver } from "../helpers/receiver.ts";
import { UsageError } from "../../src/errors.ts";

/** The error `fn` rejects with, which must be a `type` whose message includes `includes`. */
async function assertRejects<E extends Error>(
  fn: () => Promise<unknown>,
  type: new (...args: never[]) => E,
  includes = "",
): Promise<E> {
  try {
    await fn();
  } catch (error) {
    assert(error instanceof type, `expected a ${type.name}, got ${error}`);
    assert(error.message.includes(includes), error.message);
    return error;
  }
  throw new Error(`expected a ${type.name}, nothing was thrown`);
}

Deno.test("refused push: an invalid deploy.yml is recorded in deploy.log and status.json and notified; what serves stays", async () => {
  const hooks = await receiver();
  try {
    await withWorld("restart", async (w) => {
      await Deno.writeTextFile(w.paths.config, `notify: [{ type: webhook, url: "${hooks.base}/hook" }]\n`, {
        append: true,
      });
      assert((await deploy(w, await commit(w, "ok"))).ok);
      const before = await status(w);
      const from = await logLength(w);
      hooks.got.length = 0;
      const bad = await commit(w, "ok", ["helthCheck: /x"]);
      await assertRejects(() => deploy(w, bad), UsageError, "helthCheck");
      const log = await entries(w, from);
      assertEquals(log.filter((e) => e.event !== "notify").map((e) => [e.event, e.ok, e.commit]), [
        ["refused", false, bad],
      ]);
      assertMatch(log[0].message!, /deploy\.yml:\d+:\d+: .*helthCheck/);
      const after = await status(w);
      assertEquals([after.release, after.commit, after.healthy, after.status], [
        before.release,
        before.commit,
        before.healthy,
        before.status,
      ]);
      assertEquals([after.lastDeploy.outcome, after.lastDeploy.version], ["refused", bad.slice(0, 7)]);
      assertMatch(after.lastDeploy.message!, /helthCheck/);
      assertEquals(hooks.at("/hook").map((line) => line.split(" ")[0]), ["refused"]);
      assertMatch(hooks.at("/hook")[0], new RegExp(`^refused alpha ${bad.slice(0, 7)} refused on `));
      // A dry run of it records nothing.
      const length = await logLength(w);
      await assertRejects(() => deploy(w, bad, { dryRun: true }), UsageError);
      assertEquals(await logLength(w), length);
    });
  } finally {
    await hooks.close();
  }
});

Deno.test("refused push: an invalid config.yml is recorded, and the push says its notify targets cannot be read", async () => {
  await withWorld("restart", async (w) => {
    assert((await deploy(w, await commit(w, "ok"))).ok);
    await Deno.writeTextFile(w.paths.config, "portt: 1\n", { append: true });
    const sha = await commit(w, "ok");
    const from = await logLength(w);
    const printedFrom = w.printed.length;
    await assertRejects(() => deploy(w, sha), UsageError, "portt");
    assertEquals((await entries(w, from)).map((e) => e.event), ["refused"]);
    assertEquals((await status(w)).lastDeploy.outcome, "refused");
    assert(
      w.printed.slice(printedFrom).some((line) => /config\.yml does not load.*not notified/.test(line)),
      w.printed.slice(printedFrom).join("\n"),
    );
  });
});
