/**
 * A real systemd host (systemd-nspawn, booted): `setup --manager systemd` over SSH, a git push
 * over SSH, the app served through the proxy by a systemd template unit; then the zero-failed-
 * requests run with systemd as the manager: deploys, a failing one, and a rollback, under load.
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { pythonApp } from "../helpers/apps.ts";
import { LoadGenerator } from "../helpers/load.ts";
import { SystemdHost } from "../helpers/nspawn.ts";
import { BIN, run } from "../helpers/server.ts";

Deno.test("a systemd host over SSH: setup, push, served by systemd through the proxy; zero failed requests", async () => {
  const host = await SystemdHost.create();
  const work = await Deno.makeTempDir({ prefix: "dp-laptop-" });
  let load: LoadGenerator | undefined;
  try {
    const port = 18000 + Math.floor(Math.random() * 1000);
    const started = performance.now();
    const setup = await host.ssh(
      `${BIN} setup web --port ${port} --manager systemd --proxy-host ${host.address} --yes`,
    );
    assertEquals(setup.code, 0, setup.output);
    assertMatch(setup.stdout, /✓ the proxy runs \(systemd\)/);
    assertMatch((await host.ssh("systemctl is-active deploy-paradigm-proxy")).stdout, /^active/);
    assertMatch(await Deno.readTextFile(join(host.rootfs, "etc/systemd/system/web@.service")), /slots\/%i/);

    const git = (...args: string[]) => run(["git", ...args], { cwd: work, env: host.env });
    await git("init", "--quiet", "-b", "main");
    await git("remote", "add", "production", `root@${host.address}:/var/repos/web.git`);
    const deployYml = (window = "8s") =>
      `name: web\ntype: python\ncommand: python app.py\nwatch: 300ms\n` +
      `healthCheck: { path: /health, window: ${window}, interval: 200ms, successes: 2 }\n`;
    const release = async (version: string, mode: "ok" | "500" = "ok") => {
      await Deno.writeTextFile(join(work, "deploy.yml"), deployYml(mode === "ok" ? "8s" : "2s"));
      await Deno.writeTextFile(join(work, "app.py"), pythonApp(version, mode));
      await git("add", "-A");
      await git("commit", "--quiet", "-m", version);
      return await git("push", "production", "main");
    };
    const first = await release("sd-v1");
    assertEquals(first.code, 0, first.output);
    console.log(
      `setup to first healthy deploy on the systemd host: ${((performance.now() - started) / 1000).toFixed(1)} s`,
    );
    const url = `http://${host.address}:${port}/`;
    assertEquals(await (await fetch(url)).text(), "sd-v1");
    assertMatch((await host.ssh("systemctl is-active web@blue.service")).stdout, /^active/);
    assertMatch(await Deno.readTextFile(join(host.rootfs, "etc/systemd/system/web@.service")), /slots\/%i/);

    // Under load: two deploys, a failing one, one more, and a rollback; nothing may fail.
    const generator = new LoadGenerator(url, 3).start();
    load = generator;
    const steps: { version: string; start: number; end: number }[] = [];
    const step = async (version: string, action: () => Promise<void>) => {
      const start = performance.now();
      await action();
      steps.push({ version, start, end: performance.now() });
    };
    for (const version of ["sd-v2", "sd-v3"]) {
      await step(version, async () => assertEquals((await release(version)).code, 0));
    }
    await step("sd-v3", async () => {
      const broken = await release("sd-broken", "500");
      assert(broken.code !== 0, broken.output);
      await git("reset", "--quiet", "--hard", "HEAD~1");
    });
    await step("sd-v4", async () => assertEquals((await release("sd-v4")).code, 0));
    await step("sd-v3", async () => {
      const rollback = await host.ssh(`${BIN} rollback web`);
      assertEquals(rollback.code, 0, rollback.output);
    });
    await new Promise((r) => setTimeout(r, 500));
    load = undefined;
    await generator.stop();
    const failures = generator.failures();
    assertEquals(failures.length, 0, `failed requests: ${JSON.stringify(failures.slice(0, 5))}`);
    for (const [i, { version, end }] of steps.entries()) {
      // Once a step is over, until the next one starts, only its version answers.
      const seen = [...generator.bodiesBetween(end, steps[i + 1]?.start ?? Infinity)];
      assert(seen.every((v) => v === version), `after step ${i + 1} (${version}) answers came from ${seen}`);
    }
    console.log(`systemd zero-downtime run: ${generator.samples.length} requests, 0 failed`);
  } finally {
    await load?.stop();
    await host.close();
    await Deno.remove(work, { recursive: true });
  }
});
