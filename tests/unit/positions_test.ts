/**
 * A docker deploy's refusals say where: a `.env` value holding a newline at its `file:line:column`,
 * as other `.env` problems are, and a missing Dockerfile at deploy.yml's `dockerfile:` key.
 */
import { join } from "node:path";
import { assert, assertMatch } from "../helpers/assert.ts";
import { deploy, git, withWorld, type World } from "../helpers/pipeline_world.ts";
import { UsageError } from "../../src/errors.ts";

/** Commits a docker app (deploy.yml with `extra` lines, and `files`) and returns its sha. */
async function dockerCommit(w: World, extra: string[], files: Record<string, string>): Promise<string> {
  await Deno.writeTextFile(
    join(w.work, "deploy.yml"),
    ["name: alpha", "type: docker", "healthCheck: /health", ...extra, ""].join("\n"),
  );
  for (const [file, text] of Object.entries(files)) {
    await Deno.mkdir(join(w.work, file, ".."), { recursive: true });
    await Deno.writeTextFile(join(w.work, file), text);
  }
  await git(w.work, "add", "-A");
  await git(w.work, "commit", "-q", "-m", "docker");
  await git(w.work, "push", "-q", w.repo, "HEAD:refs/heads/incoming", "--force");
  return await git(w.work, "rev-parse", "HEAD");
}

async function refusal(w: World, sha: string): Promise<string> {
  try {
    await deploy(w, sha);
  } catch (error) {
    assert(error instanceof UsageError, String(error));
    return error.message;
  }
  throw new Error("the deploy was not refused");
}

Deno.test("positions: a docker .env value with a newline is refused at its file:line:column", async () => {
  await withWorld("restart", async (w) => {
    const env = w.paths.envFile("production");
    await Deno.writeTextFile(env, 'LOG_LEVEL=info # public\nexport CERT="-----BEGIN\\nEND-----"\n');
    const sha = await dockerCommit(w, [], { Dockerfile: "FROM scratch\n" });
    const message = await refusal(w, sha);
    assertMatch(message, new RegExp(`^${env.replaceAll(".", "\\.")}:2:13: CERT holds a newline`), message);
  });
});

Deno.test("positions: a Dockerfile missing from the commit is refused at deploy.yml's dockerfile: key", async () => {
  await withWorld("restart", async (w) => {
    const sha = await dockerCommit(w, ["dockerfile: docker/Missing.Dockerfile"], { README: "x\n" });
    assertMatch(
      await refusal(w, sha),
      /^deploy\.yml:4:1: the docker app has no docker\/Missing\.Dockerfile in the commit/,
    );
    const bare = await dockerCommit(w, [], {});
    assertMatch(await refusal(w, bare), /^deploy\.yml: the docker app has no Dockerfile in the commit/);
  });
});
