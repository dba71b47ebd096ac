/**
 * A deploy refused before anything changes (an invalid deploy.yml, config.yml or `.env`): exit 2 as
 * before, nothing written (deploy.log and status.json unchanged), and the `notify:` targets hear of
 * it; when config.yml itself is invalid, the push says its targets cannot be read.
 */
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { commit, deploy, logLength, withWorld } from "../helpers/pipeline_world.ts";
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

Deno.test("refused push: an invalid deploy.yml is notified as refused; nothing is written, what serves stays", async () => {
  const hooks = await receiver();
  try {
    await withWorld("restart", async (w) => {
      await Deno.writeTextFile(w.paths.config, `notify: [{ type: webhook, url: "${hooks.base}/hook" }]\n`, {
        append: true,
      });
      assert((await deploy(w, await commit(w, "ok"))).ok);
      const before = await Deno.readTextFile(w.paths.status);
      const from = await logLength(w);
      hooks.got.length = 0;
      const bad = await commit(w, "ok", ["helthCheck: /x"]);
      await assertRejects(() => deploy(w, bad), UsageError, "helthCheck");
      assertEquals(await logLength(w), from, "deploy.log unchanged");
      assertEquals(await Deno.readTextFile(w.paths.status), before, "status.json unchanged");
      assertEquals(hooks.at("/hook").map((line) => line.split(" ")[0]), ["refused"]);
      assertMatch(hooks.at("/hook")[0], new RegExp(`^refused alpha ${bad.slice(0, 7)} refused on `));
      assert(w.printed.some((line) => /^✓ notified webhook /.test(line)), w.printed.join("\n"));
      // A dry run of it notifies nothing.
      hooks.got.length = 0;
      await assertRejects(() => deploy(w, bad, { dryRun: true }), UsageError);
      assertEquals(hooks.at("/hook"), []);
    });
  } finally {
    await hooks.close();
  }
});

Deno.test("refused push: an invalid config.yml writes nothing, and the push says its notify targets cannot be read", async () => {
  await withWorld("restart", async (w) => {
    assert((await deploy(w, await commit(w, "ok"))).ok);
    await Deno.writeTextFile(w.paths.config, "portt: 1\n", { append: true });
    const sha = await commit(w, "ok");
    const from = await logLength(w);
    const before = await Deno.readTextFile(w.paths.status);
    const printedFrom = w.printed.length;
    await assertRejects(() => deploy(w, sha), UsageError, "portt");
    assertEquals(await logLength(w), from);
    assertEquals(await Deno.readTextFile(w.paths.status), before);
    assert(
      w.printed.slice(printedFrom).some((line) => /config\.yml does not load.*not notified/.test(line)),
      w.printed.slice(printedFrom).join("\n"),
    );
  });
});
