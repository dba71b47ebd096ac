/**
 * Workers and web instances under a real systemd (a booted systemd-nspawn host, over SSH): the
 * worker template `<app>-<type>@.service` with its instances, SIGTERM and TimeoutStopSec; each
 * deploy restarts them from the new release after the switch; two web instances per slot
 * (`<app>@<slot>`, `<app>@<slot>-2`) behind the proxy; a release without workers stops them.
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { portApp } from "../helpers/apps.ts";
import { SystemdHost } from "../helpers/nspawn.ts";
import { BIN } from "../helpers/server.ts";

/** Writes `start` and, on SIGTERM after a 1 s "job", `stopped` lines to $HOME/worker.log. */
function worker(version: string): string {
  return `import os, signal, sys, time
VERSION = ${JSON.stringify(version)}
LOG = os.path.join(os.environ["HOME"], "worker.log")
def say(what):
    with open(LOG, "a") as f:
        f.write("%s %s %s %s\\n" % (what, VERSION, os.environ.get("INSTANCE"), os.environ.get("PROCESS_TYPE")))
def stop(signum, frame):
    time.sleep(1)  # the job in hand
    say("stopped")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
say("start")
while True:
    time.sleep(1)
`;
}

Deno.test("systemd: worker instances from a template unit, restarted by each deploy; two web instances per slot", async () => {
  const host = await SystemdHost.create();
  const work = await Deno.makeTempDir({ prefix: "dp-laptop-" });
  try {
    const port = 18000 + Math.floor(Math.random() * 1000);
    const setup = await host.ssh(`${BIN} setup wp --port ${port} --manager systemd --proxy-host ${host.address} --yes`);
    assertEquals(setup.code, 0, setup.output);
    const { push } = await host.laptop(work, "wp");
    const release = (version: string, workers = true) => {
      const processes = "processes:\n  web: { command: python app.py, instances: 2 }\n" +
        (workers ? "  worker: { command: python worker.py, instances: 2, stopTimeout: 5s }\n" : "");
      return push({
        "deploy.yml": "name: wp\ntype: python\nwatch: 300ms\n" +
          "healthCheck: { path: /health, window: 8s, interval: 200ms, successes: 2 }\n" + processes,
        "app.py": portApp(version),
        "worker.py": worker(version),
      }, version);
    };
    const active = async (unit: string) => (await host.ssh(`systemctl is-active ${unit}`)).stdout.trim();
    const workerLog = async () => (await host.ssh("cat ~app-wp/worker.log")).stdout.trim().split("\n");
    const url = `http://${host.address}:${port}/`;
    const answeringPorts = async () => {
      const seen = new Set<string>();
      for (let i = 0; i < 20; i++) seen.add(await (await fetch(url)).text());
      return [...seen].sort();
    };

    const first = await release("v1");
    assertMatch(first, /started the blue slot instance 2\/2/);
    assertMatch(first, /workers: worker ×2 \(python worker\.py\)/);
    assertEquals([await active("wp@blue"), await active("wp@blue-2")], ["active", "active"]);
    assertEquals([await active("wp-worker@1"), await active("wp-worker@2")], ["active", "active"]);
    // status asks systemd: each web instance and worker, with its pid.
    assertMatch(
      (await host.ssh(`${BIN} status wp`)).stdout,
      /wp +processes: web\/1 active pid \d+ · web\/2 active pid \d+ · worker\/1 active pid \d+ · worker\/2 active pid \d+/,
    );
    const template = await Deno.readTextFile(join(host.rootfs, "etc/systemd/system/wp-worker@.service"));
    for (const line of ["KillSignal=SIGTERM", "TimeoutStopSec=5s", "User=app-wp", 'ExecStart="'] as const) {
      assert(template.includes(line), `${line} in:\n${template}`);
    }
    assertEquals((await answeringPorts()).length, 2, "both web instances answer");
    assert((await answeringPorts()).every((answer) => answer.startsWith("v1 ")));

    await release("v2");
    assertEquals([await active("wp@green"), await active("wp@green-2")], ["active", "active"]);
    assertEquals(
      [await active("wp@blue"), await active("wp@blue-2")],
      ["inactive", "inactive"],
      "the old slot stopped",
    );
    const log = await workerLog();
    for (const instance of ["1", "2"]) {
      assert(
        log.includes(`stopped v1 ${instance} worker`),
        `v1's worker ${instance} finished its job:\n${log.join("\n")}`,
      );
      assert(log.includes(`start v2 ${instance} worker`), `v2's worker ${instance} started:\n${log.join("\n")}`);
    }
    const answers = await answeringPorts();
    assertEquals(answers.length, 2);
    assert(answers.every((answer) => answer.startsWith("v2 ")), answers.join(", "));

    const third = await release("v3", false);
    assertMatch(third, /stopped wp-worker@1, wp-worker@2/);
    assertEquals([await active("wp-worker@1"), await active("wp-worker@2")], ["inactive", "inactive"]);
    assert((await workerLog()).includes("stopped v2 1 worker"));
  } finally {
    await host.close();
    await Deno.remove(work, { recursive: true });
  }
});
