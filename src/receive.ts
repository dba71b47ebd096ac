/**
 * `receive <git-dir>`: the proc-receive side of `git push` (see `src/hook.ts` for why).
 * Speaks git's pkt-line protocol on stdin/stdout; progress goes to stderr, which the pusher
 * sees as `remote:` lines. Each pushed branch is answered `ok` or `ng <reason>`.
 * @module
 */
import { basename, resolve } from "node:path";
import { NAME_PATTERN } from "./config/names.ts";
import { readStatus } from "./deploy/status.ts";
import { DeployParadigmError, describeError, UsageError } from "./errors.ts";
import { configFlag, isAncestor, isRefName, updateRef } from "./git.ts";
import { appPaths } from "./paths.ts";
import { forTerminal } from "./terminal.ts";

const ZERO = /^0+$/;
const encoder = new TextEncoder();
/** What to do when `receive` gets no git protocol on its input: someone ran it by hand. */
const BY_HOOK_ONLY = "receive is run by the repository's proc-receive hook during a git push; to deploy a commit " +
  "by hand, run `deploy-paradigm execute <git-dir> <commit>`";

/** The longest pkt-line, its 4 length digits included. */
const MAX_PKT_LENGTH = 65520;

/** Reads pkt-lines: a string per data line (newline chomped), null for a flush packet. */
export class PktReader {
  private buffer = new Uint8Array(0);
  /** Whether any byte came: none means no git at the other end (someone ran receive by hand). */
  private started = false;

  constructor(private readonly source: { read(p: Uint8Array): Promise<number | null> }) {}

  private async take(n: number): Promise<Uint8Array> {
    while (this.buffer.length < n) {
      const chunk = new Uint8Array(65536);
      const read = await this.source.read(chunk);
      if (read === null) {
        if (this.started) throw new DeployParadigmError("git closed the connection in the middle of the protocol");
        throw new UsageError("nothing came from git on the input", { suggestion: BY_HOOK_ONLY });
      }
      this.started = true;
      const joined = new Uint8Array(this.buffer.length + read);
      joined.set(this.buffer);
      joined.set(chunk.subarray(0, read), this.buffer.length);
      this.buffer = joined;
    }
    const out = this.buffer.slice(0, n);
    this.buffer = this.buffer.slice(n);
    return out;
  }

  /** The next packet: its text, or null for a flush. */
  async read(): Promise<string | null> {
    const head = new TextDecoder().decode(await this.take(4));
    // Four hex digits: 0000 (a flush) or the packet's length with them, 4 to 65520 (git's pkt-line format).
    const length = /^[0-9a-f]{4}$/.test(head) ? parseInt(head, 16) : NaN;
    if (!(length === 0 || (length >= 4 && length <= MAX_PKT_LENGTH))) {
      // Bad input, as a malformed command line is: exit 2, nothing changed.
      throw new UsageError(`malformed pkt-line from git (length ${JSON.stringify(head)})`, {
        suggestion: BY_HOOK_ONLY,
      });
    }
    if (length === 0) return null;
    return new TextDecoder().decode(await this.take(length - 4)).replace(/\n$/, "");
  }

  /** Every packet up to the next flush. */
  /** The lines up to the next flush; more than `max` of them: `tooMany` is thrown. */
  async readSection(max = Infinity, tooMany?: () => Error): Promise<string[]> {
    const lines: string[] = [];
    for (let line = await this.read(); line !== null; line = await this.read()) {
      if (lines.length === max) throw tooMany?.() ?? new Error(`more than ${max} lines`);
      lines.push(line);
    }
    return lines;
  }
}

/** Encodes one pkt-line (or a flush for null). */
export function pkt(line: string | null): Uint8Array {
  if (line === null) return encoder.encode("0000");
  const body = encoder.encode(line);
  return new Uint8Array([...encoder.encode((body.length + 4).toString(16).padStart(4, "0")), ...body]);
}

async function writeAll(data: Uint8Array): Promise<void> {
  for (let done = 0; done < data.length;) done += await Deno.stdout.write(data.subarray(done));
}

/**
 * Progress to the pusher, and whether the pusher is still there. When the ssh connection of a
 * push drops, git-receive-pack (our parent) lives on, re-parented, and stops reading our stderr:
 * writes then block once the pipe is full, or fail. So progress is written without blocking the
 * deploy (a queue, written off the event loop; a reader too slow loses lines, not its deploy),
 * and the push counts as gone when receive-pack's parent changes or receive-pack disappears, or
 * when a write fails.
 */
export class PusherWatch {
  private queue: Uint8Array[] = [];
  private queued = 0;
  private writing?: Promise<void>;
  private lost = false;
  private dropped = 0;
  private readonly parent = receivePack();
  private readonly grandparent = knownPid(parentOf(this.parent));
  private readonly timer: ReturnType<typeof setInterval>;

  constructor(private readonly onLost: (why: string) => void) {
    this.timer = setInterval(() => this.check(), 500);
  }

  /** Queues a line for the pusher. */
  print(line: string): void {
    if (this.lost) return;
    const bytes = encoder.encode(line + "\n");
    if (this.queued > 1 << 20) {
      this.dropped++; // a slow reader (a pager, a slow link) loses lines, not its deploy
      return;
    }
    if (this.dropped) {
      const note = encoder.encode(`(${this.dropped} lines of progress not shown: they were not read in time)\n`);
      this.queue.push(note);
      this.queued += note.length;
      this.dropped = 0;
    }
    this.queue.push(bytes);
    this.queued += bytes.length;
    this.writing ??= this.pump().finally(() => this.writing = undefined);
  }

  private async pump(): Promise<void> {
    while (this.queue.length && !this.lost) {
      const bytes = this.queue.shift()!;
      this.queued -= bytes.length;
      try {
        for (let done = 0; done < bytes.length;) done += await Deno.stderr.write(bytes.subarray(done));
      } catch {
        return this.gone("its progress can no longer be written");
      }
    }
  }

  private check(): void {
    if (this.lost || this.grandparent === undefined) return;
    const now = parentOf(this.parent);
    if (now === "gone" || (typeof now === "number" && now !== this.grandparent)) {
      this.gone("git-receive-pack lost its session");
    }
  }

  private gone(why: string): void {
    if (this.lost) return;
    this.lost = true;
    this.queue = [];
    this.onLost(`the push's connection was lost (${why})`);
  }

  /** Waits (up to `ms`) for the queued progress to be written. */
  async flush(ms: number): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([this.writing, new Promise((resolve) => timer = setTimeout(resolve, ms))]);
    clearTimeout(timer);
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

/** git-receive-pack: our parent, or sudo's when the hook went through sudo (a deploy-group pusher). */
function receivePack(): number {
  return sudoParent() ? knownPid(parentOf(Deno.ppid)) ?? Deno.ppid : Deno.ppid;
}

/** Whether our parent is sudo (false without /proc). */
function sudoParent(): boolean {
  try {
    return Deno.readTextFileSync(`/proc/${Deno.ppid}/comm`).trim() === "sudo";
  } catch {
    return false;
  }
}

/**
 * Whether this receive runs through sudo (a member of the deploy group pushing): root, started
 * by sudo, with SUDO_USER set. SUDO_USER alone is any environment variable a pusher can set.
 */
function throughSudo(): boolean {
  return Deno.uid() === 0 && Deno.env.get("SUDO_USER") !== undefined && sudoParent();
}

/** The parent pid of `pid` (Linux /proc); "gone" when the process is; undefined when unknown. */
function parentOf(pid: number): number | "gone" | undefined {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
  } catch (error) {
    return error instanceof Deno.errors.NotFound && PROCFS ? "gone" : undefined;
  }
}

const PROCFS = (() => {
  try {
    return Deno.statSync("/proc/self").isDirectory;
  } catch {
    return false;
  }
})();

function knownPid(pid: number | "gone" | undefined): number | undefined {
  return typeof pid === "number" ? pid : undefined;
}

/** One pushed ref. */
export interface RefUpdate {
  old: string;
  new: string;
  ref: string;
}

/** Decides and applies one ref update. Returns undefined for ok, or the reason it was refused. */
export type RefHandler = (update: RefUpdate) => Promise<string | undefined>;

/** Runs the proc-receive protocol with git on stdin/stdout. */
export async function receive(
  gitDir: string,
  handle: RefHandler = (u) => handleRef(resolve(gitDir), u),
): Promise<number> {
  refuseForeignRepo(gitDir);
  await refuseNonRepository(gitDir);
  await refuseRootBuilds(gitDir);
  const reader = new PktReader(Deno.stdin);
  const [version = ""] = await reader.readSection(); // "version=1\0<git's capabilities>"
  await writeAll(new Uint8Array([...pkt("version=1"), ...pkt(null)]));
  const lines = await reader.readSection(
    MAX_REFS,
    () =>
      new UsageError(`a push updates at most ${MAX_REFS} refs; this one updates more, so none was applied`, {
        suggestion: "push the refs in several pushes",
      }),
  );
  const updates = lines.map((line) => {
    const [old, next, ref] = line.split(" ");
    return { old, new: next, ref };
  });
  // Through sudo these lines are the pusher's own, not git's: all of them well-formed, or none applied.
  const problems: (string | undefined)[] = [];
  for (const line of lines) problems.push(await commandProblem(line)); // one git at a time
  if (problems.some((problem) => problem !== undefined)) {
    problems.forEach((problem, i) => {
      if (problem) {
        console.error(`error: refused "${forTerminal(lines[i].slice(0, 200), { oneLine: true })}": ${problem}`);
      }
    });
    const refused = updates.map((u, i) =>
      pkt(`ng ${u.ref ?? ""} ${problems[i] ?? "another ref of this push is malformed"}`)
    );
    await writeAll(new Uint8Array([...refused.flatMap((r) => [...r]), ...pkt(null)]));
    return 2;
  }
  const atomic = /\batomic\b/.test(version.split("\0")[1] ?? "");
  const replies: Uint8Array[] = [];
  for (const update of updates) {
    let reason: string | undefined;
    if (atomic && updates.length > 1) {
      reason = "atomic pushes of several branches are not supported: push the deploy branch on its own";
    } else {
      try {
        reason = await handle(update);
      } catch (error) {
        const { text } = describeError(error);
        console.error(text);
        const [first, detail = ""] = text.replace(/^error: /, "").split("\n");
        reason = `${first} ${detail.startsWith("hint:") ? "" : detail.trim()}`.trim().slice(0, 300);
      }
    }
    replies.push(pkt(reason === undefined ? `ok ${update.ref}` : `ng ${update.ref} ${reason.replaceAll("\n", " ")}`));
  }
  await writeAll(new Uint8Array([...replies.flatMap((r) => [...r]), ...pkt(null)]));
  return 0;
}

/** The most refs one push may update (each is checked by a git check-ref-format, one at a time). */
export const MAX_REFS = 1000;

const OBJECT_NAME = /^(?:[0-9a-f]{40}|[0-9a-f]{64})$/;

/**
 * Why one command line, `<old> <new> <ref>`, is not what git sends, if it is not: object names
 * of 40 or 64 lowercase hex digits (zeros allowed), a ref under refs/ that `git check-ref-format`
 * accepts (argv, no shell). What passes cannot be read as an option by git (`-d`, `--no-deref`).
 */
async function commandProblem(line: string): Promise<string | undefined> {
  const fields = line.split(" ");
  if (fields.length !== 3) return "expected <old> <new> <ref>";
  const [old, next, ref] = fields;
  for (const [what, name] of [["old", old], ["new", next]]) {
    if (!OBJECT_NAME.test(name)) return `the ${what} object name is not 40 or 64 hex digits`;
  }
  if (!ref.startsWith("refs/")) return "the ref is not under refs/";
  return await isRefName(ref) ? undefined : "not a valid ref name (git check-ref-format)";
}

/**
 * Through sudo (a member of the deploy group pushing; see setup_users.ts), only an app's own
 * repository, `/var/repos/<app>.git`: root moves no refs in any other.
 */
function refuseForeignRepo(gitDir: string): void {
  if (!throughSudo()) return;
  const app = basename(resolve(gitDir)).replace(/\.git$/, "");
  if (!NAME_PATTERN.test(app) || appPaths(app).repo !== resolve(gitDir)) {
    throw new UsageError(`receive through sudo takes an app's repository (${appPaths("<app>").repo}), not ${gitDir}`);
  }
}

/** A path that is no bare repository (objects/ and HEAD): said as such, before any protocol. */
async function refuseNonRepository(gitDir: string): Promise<void> {
  const objects = await Deno.stat(`${gitDir}/objects`).catch(() => undefined);
  const head = await Deno.stat(`${gitDir}/HEAD`).catch(() => undefined);
  if (objects?.isDirectory && head?.isFile) return;
  throw new UsageError(`${gitDir} is not a git repository`, {
    suggestion: `an app's repository is ${appPaths("<app>").repo}, made by \`deploy-paradigm setup <app>\`; ` +
      BY_HOOK_ONLY,
  });
}

/** Through sudo, no app whose builds and hooks run as root (see users.ts refuseRootThroughSudo). */
async function refuseRootBuilds(gitDir: string): Promise<void> {
  if (!throughSudo()) return;
  const paths = appPaths(basename(resolve(gitDir)).replace(/\.git$/, ""));
  const text = await Deno.readTextFile(paths.config).catch(() => undefined);
  if (text === undefined) return; // not set up: the deploy says so
  const { parseConfig } = await import("./config/load.ts");
  const { serverConfigSchema } = await import("./config/schema.ts");
  const { refuseRootThroughSudo } = await import("./users.ts");
  refuseRootThroughSudo(paths, parseConfig(text, serverConfigSchema, paths.config).user);
}

/**
 * One pushed branch. The deploy branch is the server's decision: the `branch` of the deploy.yml
 * that serves now (main before the first deploy), never the pushed commit's. Other branches are
 * stored as pushed; git's receive.denyDeletes and receive.denyNonFastForwards are honoured.
 */
async function handleRef(gitDir: string, update: RefUpdate): Promise<string | undefined> {
  const app = basename(gitDir).replace(/\.git$/, "");
  const deployBranch = (NAME_PATTERN.test(app) ? (await readStatus(appPaths(app).status))?.branch : undefined) ??
    "main";
  const isDeployBranch = update.ref === `refs/heads/${deployBranch}`;
  if (ZERO.test(update.new)) {
    if (isDeployBranch) return `${deployBranch} is the deploy branch of ${app}; deleting it is refused`;
    if (await configFlag(gitDir, "receive.denyDeletes")) return "deletion prohibited (receive.denyDeletes)";
    await updateRef(gitDir, update.ref, update.new, update.old);
    return undefined;
  }
  if (
    !ZERO.test(update.old) && await configFlag(gitDir, "receive.denyNonFastForwards") &&
    !await isAncestor(gitDir, update.old, update.new)
  ) {
    return "non-fast-forward (receive.denyNonFastForwards)";
  }
  if (!isDeployBranch) {
    await updateRef(gitDir, update.ref, update.new, update.old);
    console.error(`deploy-paradigm: ${update.ref} stored; only ${deployBranch} deploys`);
    return undefined;
  }
  const { prefetchCommit } = await import("./deploy/prefetch.ts");
  const prefetch = prefetchCommit(gitDir, update.new); // overlaps loading the engine
  const { Cancellation } = await import("./deploy/cancel.ts");
  const { execute } = await import("./deploy/execute.ts");
  const { realEffects } = await import("./deploy/context.ts"); // loaded by execute.ts anyway
  // A Ctrl-C on `git push`, a lost ssh connection: signals, or the pusher gone (see
  // PusherWatch). Either cancels the deploy, which then puts things back.
  const cancellation = new Cancellation().watchSignals();
  const watch = new PusherWatch((why) => cancellation.cancel(why));
  try {
    const result = await execute({
      prefetch,
      gitDir,
      commit: update.new,
      ref: update.ref,
      old: update.old,
      effects: realEffects({ print: (line) => watch.print(line) }),
      cancellation,
    });
    return result.ok ? undefined : result.reason;
  } finally {
    watch.stop();
    await watch.flush(2000);
    cancellation.dispose();
  }
}
