/**
 * What the push says matches what happened: a dry run counts "1 value", and a docker deploy says
 * docker started the container (the process manager runs only its log follower).
 */
import { join } from "node:path";
import { assert, assertEquals } from "../helpers/assert.ts";
import { commit, deploy, git, withWorld, type World } from "../helpers/pipeline_world.ts";

Deno.test("output: a dry run with one .env value says 1 value", async () => {
  await withWorld("restart", async (w) => {
    await Deno.writeTextFile(w.paths.envFile("production"), "LOG_LEVEL=info # public\n");
    const sha = await commit(w, "ok");
    assertEquals(await deploy(w, sha, { dryRun: true }), { ok: true });
    const line = w.printed.find((l) => l.startsWith("would copy"));
    assert(line?.endsWith("(0600, 1 value)"), w.printed.join("\n"));
  });
});

Deno.test("output: a docker deploy says docker started the container, and that the manager follows its logs", async () => {
  await withWorld("blue-green", async (w) => {
    w.fake.on(["docker", "version"], { output: "27.1.0" });
    await Deno.writeTextFile(join(w.work, "deploy.yml"), "name: alpha\ntype: docker\nhealthCheck: /health\n");
    await Deno.writeTextFile(join(w.work, "Dockerfile"), "FROM scratch\n");
    await Deno.writeTextFile(join(w.work, "server"), "ok\n");
    await git(w.work, "add", "-A");
    await git(w.work, "commit", "-q", "-m", "docker");
    await git(w.work, "push", "-q", w.repo, "HEAD:refs/heads/incoming");
    const sha = await git(w.work, "rev-parse", "HEAD");
    await deploy(w, sha);
    const start = w.printed.find((l) => l.startsWith("✓ start") || l.startsWith("✗ start"));
    const said = start ?? "";
    assert(said.includes("docker started alpha:"), w.printed.join("\n"));
    assert(said.includes("in the blue slot") && said.includes("systemd follows its logs"), said);
  });
});

/** The world's app run as `nobody` (config.yml 0600, as setup writes it). */
async function asNobody(w: World): Promise<void> {
  const config = await Deno.readTextFile(w.paths.config);
  await Deno.writeTextFile(w.paths.config, config.replace("user: root", "user: nobody"), { mode: 0o600 });
  await Deno.chmod(w.paths.config, 0o600);
}

Deno.test({
  name: "output: the env line says the mode the release's .env has: 0640, for the app's group, under an app user",
  ignore: Deno.uid() !== 0, // only root runs an app as another user
  fn: async () => {
    await withWorld("restart", async (w) => {
      await asNobody(w);
      await Deno.writeTextFile(w.paths.envFile("production"), "TOKEN=s3cr3t-value\n", { mode: 0o600 });
      const sha = await commit(w, "ok");
      // The release's .env as the app gets it: read when the manager is told to start it (the
      // health check then fails here, as the fake app is root's, and the release goes).
      let mode: number | undefined;
      w.fake.on(["systemctl", "daemon-reload"], {
        effect: async () => void (mode = (await Deno.stat(join(w.paths.current, ".env"))).mode! & 0o777),
      });
      await deploy(w, sha);
      assertEquals(mode, 0o640);
      const line = w.printed.find((l) => l.startsWith("✓ env"));
      assert(line?.endsWith("(0640, 1 value)"), w.printed.join("\n"));
    });
  },
});

Deno.test({
  name: "output: a deploy says what of the app's directory it took from others (an older version left it open)",
  ignore: Deno.uid() !== 0, // only root runs an app as another user
  fn: async () => {
    await withWorld("restart", async (w) => {
      await asNobody(w);
      const old = join(w.paths.dir, "route.json");
      await Deno.writeTextFile(old, "{}\n", { mode: 0o644 });
      await Deno.chmod(old, 0o644); // as versions before wrote it
      const sha = await commit(w, "ok");
      await deploy(w, sha);
      assertEquals((await Deno.stat(old)).mode! & 0o777, 0o640);
      const said = w.printed.filter((line) => line.includes("open to others"));
      assertEquals(said, [
        `! ${w.paths.dir}: route.json was open to others (nothing in an app's directory is theirs): narrowed`,
      ]);
      // Said once: the next deploy finds nothing to narrow.
      w.printed.length = 0;
      await deploy(w, await commit(w, "ok"));
      assertEquals(w.printed.filter((line) => line.includes("open to others")), []);
    });
  },
});
