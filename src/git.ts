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

/**
 * Extracts the tree of `commit` into the existing directory `dest`: `git archive | tar -x`,
 * joined by a named pipe rather than through this process, so the bytes never wait for our
 * event loop (which may be busy loading modules while a prefetch runs).
 */
export async function extractCommit(gitDir: string, commit: string, dest: string): Promise<void> {
  const fifo = `${dest}.tar-pipe`;
  const mkfifo = await new Deno.Command("mkfifo", { args: ["-m", "600", fifo], stderr: "piped" }).output();
  if (mkfifo.code !== 0) throw new Error(`mkfifo ${fifo} failed: ${new TextDecoder().decode(mkfifo.stderr).trim()}`);
  try {
    const spawn = (cmd: string, args: string[], env?: Record<string, string>) =>
      new Deno.Command(cmd, { args, env, clearEnv: env !== undefined, stdin: "null", stdout: "null", stderr: "piped" })
        .spawn();
    const archive = spawn("git", ["--git-dir", gitDir, "archive", "--format=tar", "-o", fifo, commit], baseEnv());
    const tar = spawn("tar", ["-x", "-f", fifo, "-C", dest]);
    // If one side fails before opening the pipe, the other would wait on it forever: stop it.
    const watch = (self: Deno.ChildProcess, other: Deno.ChildProcess) =>
      self.output().then((out) => {
        if (out.code !== 0) {
          try {
            other.kill("SIGKILL");
          } catch { /* it has ended too */ }
        }
        return out;
      });
    const [archiveOut, tarOut] = await Promise.all([watch(archive, tar), watch(tar, archive)]);
    const text = (out: Deno.CommandOutput) => new TextDecoder().decode(out.stderr).trim();
    if (archiveOut.code !== 0 && archiveOut.signal === null) {
      throw new Error(`git archive ${commit} failed: ${text(archiveOut)}`);
    }
    if (tarOut.code !== 0) throw new Error(`tar -x into ${dest} failed: ${text(tarOut) || `signal ${tarOut.signal}`}`);
    if (archiveOut.code !== 0) throw new Error(`git archive ${commit} failed: signal ${archiveOut.signal}`);
  } finally {
    await Deno.remove(fifo).catch(() => {});
  }
}
