/**
 * Reading commits from the bare repository. Always `--git-dir`, never the hook's GIT_DIR.
 * @module
 */
import { UsageError } from "./errors.ts";
import { baseEnv } from "./runner.ts";

async function git(gitDir: string, args: string[]): Promise<{ code: number; stdout: Uint8Array; stderr: string }> {
  const { code, stdout, stderr } = await new Deno.Command("git", {
    args: ["--git-dir", gitDir, ...args],
    env: baseEnv(),
    clearEnv: true,
    stdin: "null",
  }).output();
  return { code, stdout, stderr: new TextDecoder().decode(stderr).trim() };
}

/** The full sha of `rev`, which must name a commit. */
export async function resolveCommit(gitDir: string, rev: string): Promise<string> {
  if (!/^[\w./^~@{}-]+$/.test(rev) || rev.startsWith("-")) throw new UsageError(`"${rev}" is not a commit name`);
  const out = await git(gitDir, ["rev-parse", "--verify", "--quiet", `${rev}^{commit}`]);
  if (out.code !== 0) {
    const exists = await git(gitDir, ["rev-parse", "--git-dir"]);
    throw new UsageError(
      exists.code === 0 ? `commit "${rev}" not found in ${gitDir}` : `${gitDir} is not a git repository`,
      { suggestion: "execute is called by the post-receive hook as: execute <git-dir> <commit>" },
    );
  }
  return new TextDecoder().decode(out.stdout).trim();
}

/** The bytes of `path` at `commit`, or undefined when the commit has no such file. */
export async function readAtCommit(gitDir: string, commit: string, path: string): Promise<Uint8Array | undefined> {
  const out = await git(gitDir, ["cat-file", "blob", `${commit}:${path}`]);
  if (out.code === 0) return out.stdout;
  if (/does not exist|not a valid object name|exists on disk, but not in/.test(out.stderr)) return undefined;
  throw new Error(`git cat-file ${commit}:${path} failed: ${out.stderr}`);
}

/** Names of the top-level entries of `commit`. */
export async function topLevelFiles(gitDir: string, commit: string): Promise<Set<string>> {
  const out = await git(gitDir, ["ls-tree", "--name-only", "-z", commit]);
  if (out.code !== 0) throw new Error(`git ls-tree ${commit} failed: ${out.stderr}`);
  return new Set(new TextDecoder().decode(out.stdout).split("\0").filter(Boolean));
}

/** The commit `ref` points at now, or undefined when it does not exist. */
export async function refTip(gitDir: string, ref: string): Promise<string | undefined> {
  const out = await git(gitDir, ["rev-parse", "--verify", "--quiet", `${ref}^{commit}`]);
  return out.code === 0 ? new TextDecoder().decode(out.stdout).trim() : undefined;
}

/** Extracts the tree of `commit` into the existing directory `dest`: `git archive | tar -x`. */
export async function extractCommit(gitDir: string, commit: string, dest: string): Promise<void> {
  const archive = new Deno.Command("git", {
    args: ["--git-dir", gitDir, "archive", "--format=tar", commit],
    env: baseEnv(),
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const tar = new Deno.Command("tar", {
    args: ["-x", "-f", "-", "-C", dest],
    stdin: "piped",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const [archiveStatus, archiveErr, tarOut] = await Promise.all([
    archive.status,
    new Response(archive.stderr).text(),
    tar.output(),
    archive.stdout.pipeTo(tar.stdin),
  ]);
  if (archiveStatus.code !== 0) throw new Error(`git archive ${commit} failed: ${archiveErr.trim()}`);
  if (tarOut.code !== 0) {
    throw new Error(`tar -x into ${dest} failed: ${new TextDecoder().decode(tarOut.stderr).trim()}`);
  }
}
