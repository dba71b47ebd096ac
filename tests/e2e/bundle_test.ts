/**
 * The binary's equivalent, offline: `deno compile` needs to download Deno's runtime, which these
 * machines cannot, so the CLI is bundled into one JavaScript file, copied alone into an empty
 * temp dir, and used for real: --help, init, schema, and a whole git push whose hook runs the
 * bundle (templates and the engine are inside it; nothing is read from beside the source).
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { AppRepo } from "../helpers/apps.ts";
import { freePort, get, run, withServer } from "../helpers/server.ts";

const ROOT = join(import.meta.dirname!, "..", "..");

Deno.test("the bundled CLI works alone: help, init, schema, and a deploy through its own hook", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dp-bundle-" });
  try {
    const bundle = join(dir, "deploy-paradigm.js");
    const built = await run([Deno.execPath(), "bundle", "--quiet", "--output", bundle, join(ROOT, "main.ts")], {
      cwd: ROOT,
    });
    assertEquals(built.code, 0, built.output);
    // A launcher like the installed binary: the bundle and nothing else.
    const bin = join(dir, "deploy-paradigm");
    await Deno.writeTextFile(bin, `#!/bin/sh\nexec ${Deno.execPath()} run --allow-all --no-config "${bundle}" "$@"\n`, {
      mode: 0o755,
    });
    const help = await run([bin, "--help"], { cwd: dir });
    assertEquals(help.code, 0, help.output);
    assertMatch(help.stdout, /\n {2}execute /);
    const project = join(dir, "site");
    await Deno.mkdir(project);
    await Deno.writeTextFile(join(project, "index.html"), "<h1>bundled</h1>\n");
    const init = await run([bin, "init"], { cwd: project });
    assertEquals(init.code, 0, init.output);
    assertMatch(await Deno.readTextFile(join(project, "deploy.yml")), /# yaml-language-server: \$schema=/);
    const schema = await run([bin, "schema"], { cwd: dir });
    assertEquals(JSON.parse(schema.stdout).properties.type.enum, ["python", "node", "docker", "static"]);

    await withServer(async (server) => {
      const port = freePort();
      // setup run by the bundle: its hook calls the bundle.
      const setup = await run(
        [bin, "setup", "bundled", "--port", String(port), "--manager", "pm2", "--strategy", "restart", "--yes"],
        { env: { ...server.env, DEPLOY_PARADIGM_SELF: bin } },
      );
      assertEquals(setup.code, 0, setup.output);
      const repoPath = server.paths("bundled").repo;
      const hook = await Deno.readTextFile(join(repoPath, "hooks", "proc-receive"));
      assert(hook.includes(bin), hook);
      const repo = await AppRepo.create(server, "bundled", repoPath);
      await repo.python("bundled", "from-the-bundle");
      const push = await repo.pushOk();
      assertMatch(push.output, /✓ deployed bundled/);
      assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: "from-the-bundle" });
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
