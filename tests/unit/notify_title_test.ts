/** The title of a deploy's notification: what happened to which version. */
import { assertEquals } from "../helpers/assert.ts";
import { titleOf } from "../../src/deploy/notify_outcome.ts";
import { lastDeploy } from "../../src/deploy/outcome.ts";

const AT = "2026-12-05T12:00:00.000Z";
const COMMIT = "8bae1f7c0ffee00000000000000000000000000";

Deno.test("notification titles: a deploy, a failure, an automatic rollback name the version pushed; a rollback by hand the release gone to", () => {
  assertEquals(titleOf("shop", lastDeploy("success", "r2", COMMIT, AT, 1000), "vm"), "shop 8bae1f7 deployed on vm");
  assertEquals(
    titleOf("shop", lastDeploy("rolled_back", "r2", COMMIT, AT, 1000, { step: "health", message: "500" }), "vm"),
    "shop 8bae1f7 rolled back at health on vm",
  );
  const byHand = lastDeploy("rolled_back", "r1", COMMIT, AT, 1000, {
    step: "rollback",
    message: "rolled back by hand to release r1 (8bae1f7)",
  });
  assertEquals(titleOf("shop", byHand, "vm"), "shop: rolled back by hand to release r1 (8bae1f7) on vm");
  const forward = lastDeploy("success", "r3", COMMIT, AT, 1000, {
    step: "rollback",
    message: "rolled forward by hand to release r3 (8bae1f7)",
  });
  assertEquals(titleOf("shop", forward, "vm"), "shop: rolled forward by hand to release r3 (8bae1f7) on vm");
});
