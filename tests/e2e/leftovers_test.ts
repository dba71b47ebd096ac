/**
 * leftovers' uid sweep on this machine's real process table: it counts a process as an orphan only
 * when every ancestor has its uid, so it needs a test run whose whole chain is one user's (root's,
 * as CI runs it); not a unit test.
 */
import { assert, assertEquals } from "../helpers/assert.ts";
import { type AppUser, leftovers } from "../../src/users.ts";

const USER: AppUser = { name: "app-web", uid: 990, gid: 985, group: "app-web", home: "/srv/opt/deployments/web/home" };

Deno.test("leftovers: the uid sweep only for the user setup created for the app, never a user: the operator chose", async () => {
  const child = new Deno.Command("sleep", { args: ["30"], stdout: "null", stderr: "null" }).spawn();
  try {
    const me = { ...USER, uid: Deno.uid() ?? 0 };
    const found = (own: boolean) => leftovers({ ...me, own }, undefined, 0).map((p) => p.pid);
    if (Deno.build.os === "linux") assert(found(true).includes(child.pid), "an own user's process is swept");
    assertEquals(found(false), [], "an operator's user: nothing outside the release is swept");
    assert(!found(true).includes(Deno.pid), "never the deploy itself");
  } finally {
    child.kill("SIGKILL");
    await child.status;
  }
});
