/**
 * Reading commits from the bare repository. Always `--git-dir`, never the hook's GIT_DIR.
 * @module
 */
import { appPaths } from "./paths.ts";
import { DeployParadigmError, UsageError } from "./errors.ts";
import { baseEnv } from "./runner.ts";

async function git(
  gitDir: string,
  args: string[],
  input?: string,
): Promise<{ code: number; stdout: Uint8Array; stderr: string }> {
  const child = new Deno.Command("git", {
    args: ["--git-dir", gitDir, ...args],
    env: baseEnv(),
    clearEnv: true,
    stdin: input === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (input !== undefined) {
    const writer = child.stdin.getWriter();
    // git may exit before reading (not a repository): its exit code says so, not a broken pipe.
    await writer.write(new TextEncoder().encode(input)).then(() => writer.close()).catch(() => {});
  }
  const { code, stdout, stderr } = await child.output();
  return { code, stdout, stderr: new TextDecoder().decode(stderr).trim() };
}

/** What the deploy needs to know of a commit, read in one `git cat-file --batch`. */
export interface CommitFiles {
  /** The full sha. */
  sha: string;
  /** Names of the top-level entries. */
  files: Set<string>;
  /** Contents of the requested top-level files that exist. */
  blobs: Map<string, Uint8Array>;
}

const REV = /^[\w./^~@{}-]+$/;

/**
 * Resolves `rev` to a commit and reads its top-level names and the files `wanted`, with one git
 * process. Throws a usage error when `gitDir` is not a bare repository or `rev` no commit.
 */
export async function readCommit(gitDir: string, rev: string, wanted: string[]): Promise<CommitFiles> {
  if (!REV.test(rev) || rev.startsWith("-")) throw new UsageError(`"${rev}" is not a commit name`);
  const queries = [`${rev}^{commit}`, `${rev}^{tree}`, ...wanted.map((path) => `${rev}:${path}`)];
  const out = await git(gitDir, ["cat-file", "--batch"], queries.join("\n") + "\n");
  const objects = out.code === 0 ? parseBatch(out.stdout) : [];
  const [commit, tree] = objects;
  if (commit?.type !== "commit" || tree?.type !== "tree") throw await notACommit(gitDir, rev);
  const blobs = new Map<string, Uint8Array>();
  wanted.forEach((path, i) => {
    const object = objects[i + 2];
    if (object?.type === "blob") blobs.set(path, object.content);
  });
  return { sha: commit.sha, files: treeNames(tree.content, commit.sha.length / 2), blobs };
}

async function notACommit(gitDir: string, rev: string): Promise<UsageError> {
  const bare = await git(gitDir, ["rev-parse", "--is-bare-repository"]);
  const text = new TextDecoder().decode(bare.stdout).trim();
  const hint = { suggestion: "the git hook runs: deploy-paradigm execute <bare repository> <commit>" };
  if (bare.code !== 0) {
    const workTree = await Deno.stat(`${gitDir}/.git`).then(() => true, () => false);
    return new UsageError(
      workTree
        ? `${gitDir} is a work tree; execute takes the server's bare repository, such as ${appPaths("<app>").repo}`
        : `${gitDir} is not a git repository`,
      hint,
    );
  }
  return new UsageError(text === "true" ? `commit "${rev}" not found in ${gitDir}` : `${gitDir} is not bare`, hint);
}

/** Splits `git cat-file --batch` output into objects (undefined for a missing one). */
function parseBatch(bytes: Uint8Array): ({ sha: string; type: string; content: Uint8Array } | undefined)[] {
  const objects = [];
  const decoder = new TextDecoder();
  for (let at = 0; at < bytes.length;) {
    const eol = bytes.indexOf(10, at);
    const header = decoder.decode(bytes.subarray(at, eol)).split(" ");
    at = eol + 1;
    if (header.length !== 3 || !/^\d+$/.test(header[2])) {
      objects.push(undefined); // "<rev> missing" or "<rev> ambiguous"
      continue;
    }
    const size = Number(header[2]);
    objects.push({ sha: header[0], type: header[1], content: bytes.subarray(at, at + size) });
    at += size + 1;
  }
  return objects;
}

/** Entry names of a raw tree object: `<mode> <name>\0<hash>` repeated. */
function treeNames(tree: Uint8Array, hashBytes: number): Set<string> {
  const names = new Set<string>();
  const decoder = new TextDecoder();
  for (let at = 0; at < tree.length;) {
    const space = tree.indexOf(32, at);
    const nul = tree.indexOf(0, space);
    names.add(decoder.decode(tree.subarray(space + 1, nul)));
    at = nul + 1 + hashBytes;
  }
  return names;
}

/** The commit `ref` points at now, or undefined when it does not exist. */
export async function refTip(gitDir: string, ref: string): Promise<string | undefined> {
  const out = await git(gitDir, ["rev-parse", "--verify", "--quiet", "--end-of-options", `${ref}^{commit}`]);
  return out.code === 0 ? new TextDecoder().decode(out.stdout).trim() : undefined;
}

/**
 * Moves `ref` from `old` (zeros: must not exist) to `next` (zeros: delete), atomically. The names
 * come from the pusher: `--end-of-options` keeps one from being read as an option (`-d`).
 */
export async function updateRef(gitDir: string, ref: string, next: string, old: string): Promise<void> {
  const args = /^0+$/.test(next)
    ? ["update-ref", "-d", "--end-of-options", ref, old]
    : ["update-ref", "--end-of-options", ref, next, old];
  const out = await git(gitDir, args);
  if (out.code !== 0) throw new DeployParadigmError(`git update-ref ${ref} failed: ${out.stderr}`);
}

/** True when `ancestor` is an ancestor of `commit` (a fast-forward). */
export async function isAncestor(gitDir: string, ancestor: string, commit: string): Promise<boolean> {
  return (await git(gitDir, ["merge-base", "--is-ancestor", "--end-of-options", ancestor, commit])).code === 0;
}

/** True when `git check-ref-format` accepts `ref` (a full name, such as refs/heads/main). */
export async function isRefName(ref: string): Promise<boolean> {
  const check = new Deno.Command("git", { args: ["check-ref-format", ref], env: baseEnv(), clearEnv: true });
  return (await check.output()).code === 0;
}

/** A boolean git config value of the repository. */
export async function configFlag(gitDir: string, key: string): Promise<boolean> {
  const out = await git(gitDir, ["config", "--type=bool", "--get", key]);
  return new TextDecoder().decode(out.stdout).trim() === "true";
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
    const archiveArgs = ["--git-dir", gitDir, "archive", "--format=tar", "-o", fifo, "--end-of-options", commit];
    const archive = spawn("git", archiveArgs, baseEnv());
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
