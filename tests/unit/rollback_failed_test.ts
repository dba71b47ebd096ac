/**
 * A rollback by hand that fails (here: a docker release whose image was removed by hand) is
 * notified as `failed` at step rollback, records `rollback_failed` with the step's own words (no
 * "Error: " prefix), and says which older release `--to` can go to, since `rollback` alone would
 * pick the same release again.
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { APP, commit, deploy, entries, logLength, releases, withWorld } from "../helpers/pipeline_world.ts";
import { receiver } from "../helpers/receiver.ts";
import { RELEASE_META } from "../../src/deploy/releases.ts";
import { rollback } from "../../src/deploy/rollback.ts";

Deno.test("rollback failed: notified, recorded without an Error prefix, and the hint names the older release for --to", async () => {
  const hooks = await receiver();
  try {
    await withWorld("restart", async (w) => {
      await Deno.writeTextFile(w.paths.config, `notify: [{ type: webhook, url: "${hooks.base}/hook" }]\n`, {
        append: true,
      });
      for (let i = 0; i < 3; i++) assert((await deploy(w, await commit(w, "ok"))).ok);
      const [first, second] = await releases(w);
      // The release rollback picks ran as a docker image, since removed by hand.
      const metaFile = join(w.paths.release(second), RELEASE_META);
      const meta = JSON.parse(await Deno.readTextFile(metaFile));
      await Deno.chmod(metaFile, 0o644).catch(() => {});
      await Deno.writeTextFile(metaFile, JSON.stringify({ ...meta, image: `alpha:${second}` }));
      w.fake.on(["docker", "version"], { output: "27.0.0" });
      w.fake.fail(["docker", "image", "inspect"], "Error: No such image");
      hooks.got.length = 0;
      const from = await logLength(w);
      const printedFrom = w.printed.length;
      assertEquals(await rollback(APP, undefined, w.effects), 1);
      const last = (await entries(w, from)).filter((e) => e.event !== "notify").at(-1)!;
      assertEquals(last.event, "rollback_failed");
      assertEquals(last.message, `the image alpha:${second} of release ${second} is gone (removed by hand?)`);
      const printed = w.printed.slice(printedFrom);
      assert(
        printed.some((line) => line.includes(`rollback ${APP} --to ${first}`) && line.includes(second)),
        printed.join("\n"),
      );
      const got = hooks.at("/hook");
      assertEquals(got.length, 1, got.join("\n"));
      assertMatch(got[0], new RegExp(`^failed ${APP}: rollback by hand to release ${second} \\(\\w{7}\\) failed on `));
      assertEquals(hooks.got[0].body.step, "rollback");
    });
  } finally {
    await hooks.close();
  }
});
