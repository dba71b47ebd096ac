/**
 * A reboot of a real systemd host (systemd-nspawn, booted): a systemd-managed app (deployed twice,
 * so its green slot serves; with a worker and a cron job) and a pm2-managed app (deployed twice
 * too), both behind the proxy, serve again after `systemctl reboot` with the release that served
 * before it: the systemd units are enabled, and pm2's daemon comes back with its saved processes
 * through the boot unit setup installs (deploy-paradigm-pm2.service; here the deploy of a server
 * set up before it), whose daemon it is. The old slots stay stopped, and the worker starts once.
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { pythonApp } from "../helpers/apps.ts";
import { SystemdHost } from "../helpers/nspawn.ts";
import { BIN, run } from "../helpers/server.ts";

/** Writes a `start <version>` line to $HOME/worker.log, then waits for its jobs. */
function worker(version: string): string {
  return `import os, time
with open(os.path.join(os.environ["HOME"], "worker.log"), "a") as f:
    f.write("start ${version}\\n")
while True:
    time.sleep(1)
`;
}

Deno.test("a reboot: the systemd and the pm2 app serve again through the proxy, with the release before", async () => {
  const host = await SystemdHost.create({ pm2: true });
  const works: string[] = [];
  try {
    const sdPort = 18000 + Math.floor(Math.random() * 1000);
    const pmPort = sdPort + 1000;
    for (const [app, port, manager] of [["sd", sdPort, "systemd"], ["pm", pmPort, "pm2"]] as const) {
      const setup = await host.ssh(
        `${BIN} setup ${app} --port ${port} --manager ${manager} --proxy-host ${host.address} --yes`,
      );
      assertEquals(setup.code, 0, setup.output);
      if (manager === "pm2") {
        // No pm2 daemon ran (the proxy is systemd's): the unit started it, and stops it at shutdown (`pm2 kill`).
        assertMatch(
          setup.stdout,
          /✓ \/etc\/systemd\/system\/deploy-paradigm-pm2\.service: pm2 .* \(pm2 started by it\)/,
        );
      }
    }
    const enabled = async () => (await host.ssh("systemctl is-enabled deploy-paradigm-pm2")).stdout.trim();
    assertEquals(await enabled(), "enabled");
    // A server set up before setup installed it, its pm2 daemon started by a deploy (outside the unit): the next
    // deploy installs it (and only that one), and says how to move the daemon under it.
    const unit = "/etc/systemd/system/deploy-paradigm-pm2.service";
    await host.ssh(`systemctl disable --now --quiet deploy-paradigm-pm2 && rm ${unit} && systemctl daemon-reload`);
    assert(await enabled() !== "enabled");
    assertEquals((await host.ssh("pm2 ping")).code, 0);
    const deployYml = (app: string, extra = "") =>
      `name: ${app}\ntype: python\nwatch: 300ms\n` +
      `healthCheck: { path: /health, window: 8s, interval: 200ms, successes: 2 }\n${extra}`;
    const sdExtra = "processes:\n  web: python app.py\n  worker: python worker.py\n" +
      'cron:\n  - { name: tick, schedule: "@daily", command: python worker.py }\n';
    const laptops = [];
    for (const app of ["sd", "pm"]) {
      const work = await Deno.makeTempDir({ prefix: "dp-laptop-" });
      works.push(work);
      laptops.push((await host.laptop(work, app)).push);
    }
    const [sd, pm] = laptops;
    const installed = /✓ boot .*deploy-paradigm-pm2\.service: pm2 and its processes start at boot\s*$/m;
    const outside = /! pm2's daemon runs outside deploy-paradigm-pm2\.service until the next boot.*`pm2 kill && (.*)`/m;
    for (const version of ["v1", "v2"]) {
      await sd({
        "deploy.yml": deployYml("sd", sdExtra),
        "app.py": pythonApp(`sd-${version}`),
        "worker.py": worker(`sd-${version}`),
      }, version);
      const pushed = await pm(
        { "deploy.yml": deployYml("pm", "command: python app.py\n"), "app.py": pythonApp(`pm-${version}`) },
        version,
      );
      assertEquals(installed.test(pushed), version === "v1", pushed);
      assertEquals(outside.test(pushed), version === "v1", pushed);
      if (version === "v1") {
        // What it says to do (the pm2 apps restart: pm2 kill keeps the dump, the unit resurrects it).
        const moved = await host.ssh(`pm2 kill && ${outside.exec(pushed)![1]}`);
        assertEquals(moved.code, 0, moved.output);
      }
    }
    assertEquals(await enabled(), "enabled");
    const active = async (unit: string) => (await host.ssh(`systemctl is-active ${unit}`)).stdout.trim();
    assertEquals(await active("deploy-paradigm-pm2"), "active", "the daemon is the unit's");
    const answer = async (port: number) => {
      try {
        return await (await fetch(`http://${host.address}:${port}/`)).text();
      } catch (error) {
        return String(error);
      }
    };
    assertEquals([await answer(sdPort), await answer(pmPort)], ["sd-v2", "pm-v2"]);
    assertEquals([await active("sd@green"), await active("sd@blue")], ["active", "inactive"]);
    const starts = async () =>
      (await host.ssh("cat /opt/deployments/sd/home/worker.log")).stdout.trim().split("\n").filter(Boolean);
    const before = await starts();
    assertEquals(before.at(-1), "start sd-v2");

    const rebooting = performance.now();
    await host.reboot();
    console.log(`reboot of the systemd host: ${((performance.now() - rebooting) / 1000).toFixed(1)} s`);

    // Both apps answer through the proxy (their processes may take a moment to listen once booted).
    let answers: string[] = [];
    for (let i = 0; i < 100; i++) {
      answers = [await answer(sdPort), await answer(pmPort)];
      if (answers[0] === "sd-v2" && answers[1] === "pm-v2") break;
      await new Promise((r) => setTimeout(r, 100));
    }
    if (answers[1] !== "pm-v2") {
      const unit = await host.ssh(
        "cat /etc/systemd/system/deploy-paradigm-pm2.service; systemctl status --no-pager deploy-paradigm-pm2; " +
          "journalctl --no-pager -b -u deploy-paradigm-pm2; ls -la /root/.pm2; cat /root/.pm2/dump.pm2 | head -c 3000",
      );
      console.log(`pm2 after the reboot:\n${unit.output}`);
    }
    assertEquals(answers, ["sd-v2", "pm-v2"], "the releases that served before the reboot serve again");
    const status = await host.ssh(`${BIN} status`);
    assertEquals(status.code, 0, status.output);
    assert(!/^!/m.test(status.stdout), status.output);
    assertMatch(status.stdout, /sd +processes: web\/1 active pid \d+ · worker\/1 active pid \d+/);
    assertMatch(status.stdout, /^pm +running +yes /m);
    // The old slots stay stopped; the worker started once; the cron job's timer is back.
    assertEquals([await active("sd@green"), await active("sd@blue")], ["active", "inactive"]);
    assertEquals(await active("sd-cron-tick.timer"), "active");
    assertEquals(await active("deploy-paradigm-pm2"), "active", "pm2's daemon runs under its boot unit");
    const pm2 = await host.ssh("pm2 jlist");
    const list = JSON.parse(pm2.stdout.trim().split("\n").at(-1)!) as { name: string; pm2_env: { status: string } }[];
    const names = list.map((p) => `${p.name} ${p.pm2_env.status}`);
    assert(names.includes("pm-green online") && !names.some((n) => n.startsWith("pm-blue")), `pm2 runs ${names}`);
    assertEquals((await host.ssh("pgrep -c -f worker.py")).stdout.trim(), "1");
    assertEquals((await starts()).slice(before.length), ["start sd-v2"]);
  } finally {
    await host.close();
    for (const work of works) await Deno.remove(work, { recursive: true });
  }
});

for (const manager of ["systemd", "pm2"] as const) {
  Deno.test(`the proxy under ${manager} is never given up on: its address comes up late (as at boot), it listens then`, async () => {
    const host = await SystemdHost.create({ pm2: manager === "pm2" });
    try {
      // An address of the host's own that is not there yet when the proxy starts (DHCP after network.target, say).
      const late = "10.253.7.9";
      const port = 18000 + Math.floor(Math.random() * 1000);
      // In the host's network namespace, from here (the container may not change its own network).
      const address = async (verb: "add" | "del") =>
        assertEquals((await run(["ip", "-n", host.name, "addr", verb, `${late}/32`, "dev", "lo"])).code, 0);
      await address("add");
      const setup = await host.ssh(`${BIN} setup web --port ${port} --manager ${manager} --proxy-host ${late} --yes`);
      assertEquals(setup.code, 0, setup.output);
      const state = async () =>
        manager === "systemd"
          ? (await host.ssh("systemctl show -p ActiveState -p Result -p NRestarts deploy-paradigm-proxy")).stdout
          : (await host.ssh(
            `pm2 jlist | tail -n 1 | python3 -c "import json, sys
p = [p for p in json.load(sys.stdin) if p['name'] == 'deploy-paradigm-proxy'][0]['pm2_env']
print(p['status'], 'restarts', p['restart_time'])"`,
          )).stdout;
      await address("del");
      const restart = manager === "systemd"
        ? "systemctl restart deploy-paradigm-proxy"
        : "pm2 restart deploy-paradigm-proxy";
      const restarted = await host.ssh(restart);
      assertEquals(restarted.code, 0, restarted.output);
      // Long enough for either manager's default limit (systemd: 5 starts in 10 s; pm2: 16 exits of
      // under a second in its first 16 s) to have stopped it for good.
      await new Promise((r) => setTimeout(r, 17_000));
      const failing = await state();
      assertMatch(
        failing,
        manager === "systemd" ? /NRestarts=[1-9]/ : /^(online|launching|waiting restart) restarts [1-9]/,
        failing,
      );
      await address("add");
      // It listens there within a try or two: an HTTP answer from the proxy (no release yet: 503).
      const ask = `python3 -c "import urllib.request as u, urllib.error as e
try: u.urlopen('http://${late}:${port}/', timeout=2)
except e.HTTPError as x: print(x.code)
except Exception as x: print(x)"`;
      let answer = "";
      for (let i = 0; i < 100 && !/^\d{3}$/.test(answer); i++) {
        answer = (await host.ssh(ask)).stdout.trim();
        if (!/^\d{3}$/.test(answer)) await new Promise((r) => setTimeout(r, 200));
      }
      assertMatch(answer, /^5\d\d$/, `${answer}\n${await state()}`);
      assertMatch(await state(), manager === "systemd" ? /ActiveState=active/ : /^online/);
    } finally {
      await host.close();
    }
  });
}

Deno.test("setup of a systemd app with the proxy under pm2 and no pm2 daemon: pm2 starts through its boot unit; the proxy comes back after a reboot", async () => {
  const host = await SystemdHost.create({ pm2: true });
  const work = await Deno.makeTempDir({ prefix: "dp-laptop-" });
  try {
    const pmPort = 21000 + Math.floor(Math.random() * 400);
    const sdPort = pmPort + 400;
    const setup = async (app: string, port: number, manager: string) => {
      const done = await host.ssh(
        `${BIN} setup ${app} --port ${port} --manager ${manager} --proxy-host ${host.address} --yes`,
      );
      assertEquals(done.code, 0, done.output);
      return done.stdout;
    };
    await setup("pm", pmPort, "pm2"); // the proxy's service is pm2's from here on
    // A server set up before the boot unit, its pm2 daemon stopped: no daemon, no proxy.
    const unit = "/etc/systemd/system/deploy-paradigm-pm2.service";
    await host.ssh(`systemctl disable --now --quiet deploy-paradigm-pm2 && rm ${unit} && systemctl daemon-reload`);
    const daemons = async () => (await host.ssh("pgrep -c -f 'PM2 v.*God Daemon'")).stdout.trim();
    assertEquals(await daemons(), "0");

    const said = await setup("sd", sdPort, "systemd");
    // pm2's unit is installed and starts the daemon, then the proxy starts under it (pm2's, as installed).
    assertMatch(said, /✓ \/etc\/systemd\/system\/deploy-paradigm-pm2\.service: pm2 .* \(pm2 started by it\)/);
    assert(!/runs outside/.test(said), said);
    assertMatch(said, /✓ the proxy runs/);
    const active = async (name: string) => (await host.ssh(`systemctl is-active ${name}`)).stdout.trim();
    assertEquals(await active("deploy-paradigm-pm2"), "active");
    assertEquals(await daemons(), "1");
    const cgroup = await host.ssh("cat /proc/$(cat /root/.pm2/pm2.pid)/cgroup");
    assertMatch(cgroup.stdout, /\/deploy-paradigm-pm2\.service/, "the daemon is the unit's");

    const { push } = await host.laptop(work, "sd");
    await push({
      "deploy.yml":
        "name: sd\ntype: python\ncommand: python app.py\nhealthCheck: { path: /health, window: 8s, interval: 200ms, successes: 2 }\n",
      "app.py": pythonApp("sd-v1"),
    }, "v1");
    const answer = async () => await fetch(`http://${host.address}:${sdPort}/`).then((r) => r.text(), String);
    assertEquals(await answer(), "sd-v1");

    await host.reboot();
    // The proxy (pm2's, resurrected by the unit) serves the systemd app again.
    let answered = "";
    for (let i = 0; i < 100 && answered !== "sd-v1"; i++) {
      answered = await answer();
      if (answered !== "sd-v1") await new Promise((r) => setTimeout(r, 100));
    }
    assertEquals(answered, "sd-v1", "the proxy is back after the reboot");
    assertEquals(await active("deploy-paradigm-pm2"), "active");
  } finally {
    await host.close();
    await Deno.remove(work, { recursive: true });
  }
});

Deno.test("the boot unit a deploy installs resurrects the server's pm2 home, not the PM2_HOME of the push", async () => {
  const host = await SystemdHost.create({ pm2: true });
  const work = await Deno.makeTempDir({ prefix: "dp-laptop-" });
  try {
    await beforeTheUnit(host, work, "{ path: /health, window: 8s, interval: 200ms, successes: 2 }");
    // Pushes that carry a PM2_HOME of their own (sshd accepts it).
    const sshd = await host.ssh("echo 'AcceptEnv PM2_HOME' >> /etc/ssh/sshd_config && systemctl reload ssh");
    assertEquals(sshd.code, 0, sshd.output);
    const ssh = `${host.env.GIT_SSH_COMMAND} -o SetEnv=PM2_HOME=/root/.pm2-push`;
    const push = await run(["git", "push", "production", "main"], {
      cwd: work,
      env: { ...host.env, GIT_SSH_COMMAND: ssh },
    });
    const environment = await host.ssh("systemctl show -p Environment --value deploy-paradigm-pm2");
    assertMatch(environment.stdout, /(^| )PM2_HOME=\/root\/\.pm2( |$)/m, environment.output);
    assertEquals(push.code, 0, push.output);
    const pushed = push.output;
    assertMatch(pushed, /✓ boot .*deploy-paradigm-pm2\.service: pm2 and its processes start at boot/);
    assert((await host.ssh("test -d /root/.pm2-push")).code === 0, "the push's pm2 commands had its PM2_HOME");
  } finally {
    await host.close();
    await Deno.remove(work, { recursive: true });
  }
});

Deno.test("a deploy cancelled before its step boot ends there: no boot unit installed", async () => {
  const host = await SystemdHost.create({ pm2: true });
  const work = await Deno.makeTempDir({ prefix: "dp-laptop-" });
  try {
    // No pm2 daemon: step boot has something to do.
    const { port, git } = await beforeTheUnit(host, work, "/health");
    const pushed = await git("push", "production", "main:later"); // stored, not deployed
    assertEquals(pushed.code, 0, pushed.output);
    const sha = (await git("rev-parse", "HEAD")).stdout.trim();
    // status.json a FIFO: the deploy's first read once it holds the lock waits for what this writer
    // writes; the deploy is cancelled (SIGINT) meanwhile, then gets a status: its next step is boot.
    const status = JSON.stringify({
      name: "pm",
      status: "failed",
      healthy: false,
      type: "python",
      manager: "pm2",
      port,
      lastDeploy: { outcome: "failed", version: "none" },
    });
    const quote = (text: string) => `'${text.replaceAll("'", `'\\''`)}'`;
    const script = "status=/opt/deployments/pm/status.json; rm -f $status && mkfifo -m 600 $status && " +
      `(setsid ${BIN} execute /var/repos/pm.git ${sha} >/root/execute.out 2>&1 </dev/null & echo $! >/root/execute.pid) && ` +
      // Once read, status.json is a file again (the failure path reads it too).
      `exec 3>$status && kill -INT $(cat /root/execute.pid) && sleep 1 && printf '%s' '${status}' >$status.new && ` +
      `mv $status.new $status && printf '%s' '${status}' >&3 && exec 3>&- && ` +
      "while kill -0 $(cat /root/execute.pid) 2>/dev/null; do sleep 0.1; done; cat /root/execute.out";
    const started = await host.ssh(`timeout 120 bash -c ${quote(script)}`);
    assertMatch(started.stdout, /cancelled at step "boot"/, started.output);
    assert(!/✓ boot/.test(started.stdout), started.output);
    assert((await host.ssh(`test -e ${PM2_UNIT}`)).code !== 0, "no boot unit installed");
  } finally {
    await host.close();
    await Deno.remove(work, { recursive: true });
  }
});

const PM2_UNIT = "/etc/systemd/system/deploy-paradigm-pm2.service";

/**
 * A pm2 app `pm` on a server set up before pm2's boot unit (the unit removed, no pm2 daemon), under
 * the restart strategy (these tests are of the unit, not of the proxy), and a laptop's work tree in
 * `work` with its v1 committed (deploy.yml's `healthCheck`); its port and git.
 */
async function beforeTheUnit(host: SystemdHost, work: string, healthCheck: string) {
  const port = 21000 + Math.floor(Math.random() * 800);
  const setup = await host.ssh(`${BIN} setup pm --port ${port} --manager pm2 --strategy restart --yes`);
  assertEquals(setup.code, 0, setup.output);
  await host.ssh(`systemctl disable --now --quiet deploy-paradigm-pm2 && rm ${PM2_UNIT} && systemctl daemon-reload`);
  const { git } = await host.laptop(work, "pm");
  const files = {
    "deploy.yml": `name: pm\ntype: python\ncommand: python app.py\nhealthCheck: ${healthCheck}\n`,
    "app.py": pythonApp("pm-v1"),
  };
  for (const [path, content] of Object.entries(files)) await Deno.writeTextFile(join(work, path), content);
  await git("add", "-A");
  await git("commit", "--quiet", "-m", "v1");
  return { port, git };
}
