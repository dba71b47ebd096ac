/**
 * `init` (src/init.ts) in real folders: it refuses a subdirectory of a git work tree (deploys read
 * the repository's top), writes a Docker template whose suggestions a Docker deploy takes, warns
 * what really happens to a static app without index.html, and names every file detection reads.
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { init } from "../../src/init.ts";
import { parseConfig } from "../../src/config/load.ts";
import { deployFileSchema } from "../../src/config/schema.ts";
import { usageMessage } from "../helpers/usage.ts";

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "dp-init-unit-" });
  try {
    await fn(root);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

Deno.test("init: below the top of a git work tree it refuses (deploys read deploy.yml at the top); at the top it writes", async () => {
  await withDir(async (root) => {
    await Deno.mkdir(join(root, ".git"));
    const web = join(root, "web");
    await Deno.mkdir(web);
    await Deno.writeTextFile(join(web, "index.html"), "hi");
    const message = await usageMessage(() => init({ dir: web }));
    assertMatch(
      message,
      /is inside the git repository .*, whose deploys read deploy\.yml at its top, not web\/deploy\.yml/,
    );
    assertEquals(await Deno.lstat(join(web, "deploy.yml")).then(() => "written", () => "not written"), "not written");
    await Deno.writeTextFile(join(root, "index.html"), "hi");
    assertEquals((await init({ dir: root, name: "site" })).type, "static");
  });
});

Deno.test("init: the docker template's optional keys, uncommented, are a valid docker deploy.yml (no build:, no workers)", async () => {
  await withDir(async (dir) => {
    await Deno.writeTextFile(join(dir, "Dockerfile"), "FROM scratch\n");
    await init({ dir, name: "box" });
    const text = await Deno.readTextFile(join(dir, "deploy.yml"));
    const [head, optional] = text.split("# Optional:\n");
    assert(optional, text);
    const uncommented = optional.split("\n").map((line) => line.replace(/^# /, "")).join("\n");
    const parsed = parseConfig(head + uncommented, deployFileSchema, "deploy.yml");
    assertEquals([parsed.type, parsed.processes, parsed.build], ["docker", undefined, undefined]);
    assertEquals(parsed.dockerfile, "Dockerfile");
  });
});

Deno.test("init: --type static without index.html warns that the deploy fails its health check", async () => {
  await withDir(async (dir) => {
    const { warnings } = await init({ dir, name: "site", type: "static" });
    assertEquals(warnings.length, 1);
    assertMatch(warnings[0], /has no index\.html: a deploy fails at its health check/);
  });
});

Deno.test("init: the undetectable project's error names every file detection reads, app.py and main.py included", async () => {
  await withDir(async (dir) => {
    const message = await usageMessage(() => init({ dir, name: "x" }));
    for (const file of ["Dockerfile", "requirements.txt", "package.json", "index.html", "app.py", "main.py"]) {
      assert(message.includes(file), message);
    }
    await Deno.writeTextFile(join(dir, "main.py"), "");
    assertEquals((await init({ dir, name: "x" })).type, "python");
  });
});
