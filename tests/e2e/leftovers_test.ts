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

/** A process whose thread-group leader has exited alone (SYS_exit): /proc says zombie, its thread runs on. */
const ZOMBIE_LEADER = `
import ctypes, os, sys, threading, time
if os.fork():
    os._exit(0)
os.setsid()
print(os.getpid(), flush=True)
null = os.open("/dev/null", os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(null, fd)
threading.Thread(target=lambda: time.sleep(30)).start()
ctypes.CDLL(None).syscall(60, 0)
`;

Deno.test("leftovers: a process whose leader exited alone (its thread runs on, /proc says zombie) is found", async () => {
  if (Deno.build.os !== "linux") return;
  const since = Number((await Deno.readTextFile("/proc/uptime")).split(" ")[0]) - 0.01;
  const out = await new Deno.Command("python3", { args: ["-c", ZOMBIE_LEADER], stderr: "null" }).output();
  const pid = Number(new TextDecoder().decode(out.stdout).trim());
  assert(pid > 0, "the survivor said its pid");
  try {
    await new Promise((resolve) => setTimeout(resolve, 200)); // its leader has exited by now
    assert(/^State:\s+Z/m.test(await Deno.readTextFile(`/proc/${pid}/status`)), "its leader is a zombie");
    const me = { ...USER, uid: Deno.uid() ?? 0, own: true };
    assert(leftovers(me, undefined, since).some((p) => p.pid === pid), "the survivor is found");
  } finally {
    try {
      Deno.kill(pid, "SIGKILL");
    } catch { /* gone */ }
  }
});
