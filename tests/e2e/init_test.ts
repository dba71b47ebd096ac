/**
 * `init` and `schema` through the real CLI, in real project folders.
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { BIN, run } from "../helpers/server.ts";
import { parseConfig } from "../../src/config/load.ts";
import { deployFileSchema } from "../../src/config/schema.ts";

async function project(name: string, files: Record<string, string>): Promise<string> {
  const root = await Deno.makeTempDir({ prefix: "dp-init-" });
  const dir = join(root, name);
  await Deno.mkdir(dir);
  for (const [file, content] of Object.entries(files)) await Deno.writeTextFile(join(dir, file), content);
  return dir;
}

Deno.test("init detects the type, names the app after the folder, and writes a valid commented deploy.yml", async () => {
  const cases: { folder: string; files: Record<string, string>; type: string; command?: string }[] = [
    { folder: "My_API", files: { "requirements.txt": "", "app.py": "" }, type: "python", command: "python app.py" },
    {
      folder: "web",
      files: { "package.json": '{"scripts":{"start":"node s.js"}}' },
      type: "node",
      command: "node s.js",
    },
    { folder: "site", files: { "index.html": "<h1>hi</h1>" }, type: "static", command: undefined },
    {
      folder: "box",
      files: { "Dockerfile": "FROM scratch\nEXPOSE 9090\n", "package.json": "{}" },
      type: "docker",
      command: undefined,
    },
  ];
  for (const c of cases) {
    const dir = await project(c.folder, c.files);
    try {
      const result = await run([BIN, "init"], { cwd: dir });
      assertEquals(result.code, 0, result.output);
      assertEquals(result.stderr, "", "a detected type has what it needs: no warning");
      const text = await Deno.readTextFile(join(dir, "deploy.yml"));
      assertMatch(text, /^# yaml-language-server: \$schema=https:\/\/\S+deploy\.schema\.json\n/);
      const parsed = parseConfig(text, deployFileSchema, "deploy.yml");
      assertEquals(parsed.name, c.folder.toLowerCase().replace("_", "-"));
      assertMatch(text, new RegExp(`\ntype: ${c.type}\n`));
      if (c.command) assertEquals(parsed.command, c.command);
      if (c.type === "docker") assertEquals(parsed.containerPort, 9090, "from the Dockerfile's EXPOSE");
    } finally {
      await Deno.remove(join(dir, ".."), { recursive: true });
    }
  }
});

Deno.test("init never overwrites without --force, and rejects bad names and undetectable projects", async () => {
  const dir = await project("app", { "index.html": "" });
  try {
    assertEquals((await run([BIN, "init"], { cwd: dir })).code, 0);
    await Deno.writeTextFile(join(dir, "deploy.yml"), "mine\n");
    const again = await run([BIN, "init"], { cwd: dir });
    assertEquals(again.code, 2);
    assertMatch(again.stderr, /deploy\.yml already exists/);
    assertMatch(again.stderr, /hint: use --force/);
    assertEquals(await Deno.readTextFile(join(dir, "deploy.yml")), "mine\n");
    const forced = await run([BIN, "init", "--force", "--name", "other", "--type", "node"], { cwd: dir });
    assertEquals(forced.code, 0, forced.output);
    assertMatch(await Deno.readTextFile(join(dir, "deploy.yml")), /\nname: other\n(#.*\n)*type: node\n/);
    const badName = await run([BIN, "init", "--force", "--name", "../etc"], { cwd: dir });
    assertEquals(badName.code, 2);
    assertMatch(badName.stderr, /--name "\.\.\/etc" is not a valid app name/);
    const reserved = await run([BIN, "init", "--force", "--name", "deploy-paradigm-proxy"], { cwd: dir });
    assertEquals(reserved.code, 2, reserved.output);
    assertMatch(reserved.stderr, /--name "deploy-paradigm-proxy" is reserved: the tool's own services/);
    const badType = await run([BIN, "init", "--force", "--type", "rust"], { cwd: dir });
    assertEquals(badType.code, 2);
    assertMatch(badType.stderr, /--type must be one of python, node, docker, static \(got "rust"\)/);
    // A type given without what its deploy uses: deploy.yml is written (the file may come next), with a warning.
    const docker = await run([BIN, "init", "--force", "--name", "box", "--type", "docker"], { cwd: dir });
    assertEquals(docker.code, 0, docker.output);
    assertEquals(
      docker.stderr.trim(),
      `warning: ${dir} has no Dockerfile: a deploy builds the image from it (or from the file deploy.yml's dockerfile: names)`,
    );
    assertMatch(await Deno.readTextFile(join(dir, "deploy.yml")), /\ntype: docker\n/);
    await Deno.remove(join(dir, "index.html"));
    const bare = await run([BIN, "init", "--force", "--type", "static"], { cwd: dir });
    assertEquals(bare.code, 0, bare.output);
    assertEquals(
      bare.stderr.trim(),
      `warning: ${dir} has no index.html: a deploy fails at its health check (healthCheck: / needs the file) until one is committed`,
    );
    await Deno.writeTextFile(join(dir, "index.html"), "");
    // A directory or a link where deploy.yml goes is refused even with --force (a link would be written through).
    const elsewhere = join(dir, "..", "elsewhere.yml");
    await Deno.remove(join(dir, "deploy.yml"));
    for (
      const [what, make] of [["a directory", () => Deno.mkdir(join(dir, "deploy.yml"))], [
        "a symbolic link",
        () => Deno.symlink(elsewhere, join(dir, "deploy.yml")),
      ]] as const
    ) {
      await make();
      const refused = await run([BIN, "init", "--force"], { cwd: dir });
      assertEquals(refused.code, 2, refused.output);
      assertMatch(refused.stderr, new RegExp(`deploy\\.yml is ${what}, not a file\nhint: remove or rename it`));
      assert(!/\n\s+at /.test(refused.stderr), refused.stderr);
      await Deno.remove(join(dir, "deploy.yml"));
    }
    assertEquals(await Deno.lstat(elsewhere).then(() => "written", () => "not written"), "not written");
    await Deno.remove(join(dir, "index.html"));
    const unknown = await run([BIN, "init"], { cwd: dir });
    assertEquals(unknown.code, 2);
    assertMatch(unknown.stderr, /cannot tell the app type/);
  } finally {
    await Deno.remove(join(dir, ".."), { recursive: true });
  }
});

Deno.test("schema prints the JSON Schema of deploy.yml; --help and bad usage", async () => {
  const schema = await run([BIN, "schema"]);
  assertEquals(schema.code, 0);
  const json = JSON.parse(schema.stdout);
  assertEquals(json.properties.type.enum, ["python", "node", "docker", "static"]);
  assertEquals(json.required.sort(), ["name", "type"]);
  const help = await run([BIN, "--help"]);
  assertEquals(help.code, 0);
  for (const cmd of ["init", "execute", "receive", "status", "schema"]) {
    assertMatch(help.stdout, new RegExp(`\n  ${cmd} `));
  }
  const typo = await run([BIN, "exec"]);
  assertEquals(typo.code, 2);
  assertMatch(typo.stderr, /unknown command "exec"\nhint: did you mean "execute"\?/);
  const option = await run([BIN, "status", "--jsn"]);
  assertEquals(option.code, 2);
  assertMatch(option.stderr, /did you mean "--json"\?/);
  assert((await run([BIN, "--version"])).stdout.trim().length > 0);
});
