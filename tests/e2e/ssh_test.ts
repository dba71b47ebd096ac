/**
 * Over real SSH into a fake VPS (network namespace + sshd + its own /root and PM2): `setup` run
 * remotely, then `git remote add` + `git push` from the laptop, and the app served by the proxy
 * on the host's address; a broken push is refused and the app keeps answering.
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { pythonApp } from "../helpers/apps.ts";
import { BIN, run } from "../helpers/server.ts";
import { FakeVps } from "../helpers/vps.ts";

Deno.test("a PM2 host over SSH: setup, git push, served through the proxy; a broken push is refused", async () => {
  const vps = await FakeVps.create();
  const work = await Deno.makeTempDir({ prefix: "dp-laptop-" });
  try {
    const prefix = join(vps.dir, "server");
    const port = 18000 + Math.floor(Math.random() * 1000);
    const started = performance.now();
    const setup = await vps.ssh(
      `DEPLOY_PARADIGM_PREFIX=${prefix} ${BIN} setup web --port ${port} --manager pm2 ` +
        `--proxy-host ${vps.address} --yes`,
    );
    assertEquals(setup.code, 0, setup.output);
    const [remoteAdd, push] = setup.stdout.trim().split("\n").slice(-2);
    assertMatch(remoteAdd, new RegExp(`^git remote add production root@\\S+:${prefix}/var/repos/web\\.git$`));
    assertEquals(push, "git push production main");

    const git = (...args: string[]) => run(["git", ...args], { cwd: work, env: vps.env });
    await git("init", "--quiet", "-b", "main");
    // The line setup printed, with the host's address for the hostname it cannot resolve here.
    await git("remote", "add", "production", `root@${vps.address}:${prefix}/var/repos/web.git`);
    const deployYml = "name: web\ntype: python\ncommand: python app.py\nwatch: 300ms\n" +
      "healthCheck: { path: /health, window: 8s, interval: 200ms, successes: 2 }\n";
    await Deno.writeTextFile(join(work, "deploy.yml"), deployYml);
    await Deno.writeTextFile(join(work, "app.py"), pythonApp("over-ssh-v1"));
    await git("add", "-A");
    await git("commit", "--quiet", "-m", "v1");
    const first = await git("push", "production", "main");
    assertEquals(first.code, 0, first.output);
    assertMatch(first.output, /remote: ✓ deployed web/);
    console.log(`setup to first healthy deploy over SSH: ${((performance.now() - started) / 1000).toFixed(1)} s`);
    const url = `http://${vps.address}:${port}/`;
    assertEquals(await (await fetch(url)).text(), "over-ssh-v1");

    await Deno.writeTextFile(join(work, "app.py"), pythonApp("broken", "500"));
    await Deno.writeTextFile(join(work, "deploy.yml"), deployYml.replace("window: 8s", "window: 2s"));
    await git("commit", "--quiet", "-am", "broken");
    const broken = await git("push", "production", "main");
    assert(broken.code !== 0, broken.output);
    assertMatch(broken.output, /\[remote rejected\] main -> main \(deploy failed at health\)/);
    assertEquals(await (await fetch(url)).text(), "over-ssh-v1");
    const status = await vps.ssh(`DEPLOY_PARADIGM_PREFIX=${prefix} ${BIN} status web --json`);
    assertEquals(JSON.parse(status.stdout).lastDeploy.outcome, "failed");
  } finally {
    await vps.close();
    await Deno.remove(work, { recursive: true });
  }
});
