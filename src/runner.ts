/**
 * The one place that executes things. Deployers and process managers build {@link Cmd}s and
 * {@link Plan}s as data; a {@link Runner} runs them (or prints them, with `--dry-run`).
 * Nothing here ever goes through a shell: every command is an argv array.
 * @module
 */
import { DeployParadigmError } from "./errors.ts";
import { dirname } from "node:path";
import { writeFileAtomic } from "./fsutil.ts";
import { killOnSpawn } from "./deploy/cancel.ts";

/** One command, as data. */
export interface Cmd {
  argv: string[];
  cwd?: string;
  /** Added to the runner's base environment. */
  env?: Record<string, string>;
  /** A non-zero exit is a result, not an error. */
  allowFailure?: boolean;
  /** Do not stream the output (it is still captured). */
  quiet?: boolean;
  /** Kill the command (SIGKILL) after this many milliseconds. */
  timeoutMs?: number;
  /** Kill the command (its process group: SIGTERM, then SIGKILL) when this aborts; it then fails. */
  cancel?: AbortSignal;
  /**
   * Keep at most this many bytes of output (stdout and stderr together, counted as they arrive):
   * more, and the command (its process group) is killed and the result says `overflow`.
   */
  maxOutputBytes?: number;
  /**
   * Keep only the last this many lines of output (each line still goes to the sink as it comes):
   * `output` is then those lines, for a long command whose output need not be kept whole.
   */
  keepLines?: number;
  /** `env` is the whole environment: nothing of the runner's base environment is added. */
  clearEnv?: boolean;
  /**
   * Run in a session of its own, and once it ends, kill (SIGKILL) whatever of it is left (a
   * build's or a hook's background processes); their hold on its output is not waited for.
   */
  reap?: boolean;
  /**
   * The docker build the deploy creates itself (buildPlan): it stays the deploying user's. Never
   * set on a command from deploy.yml (`build:`, hooks), which always run as the app's user.
   */
  engine?: boolean;
}

/** A file a plan writes (atomically) before running its commands. */
export interface FileWrite {
  path: string;
  content: string;
  mode?: number;
}

/** What a deployer or process manager wants done, in order. */
export interface Plan {
  files: FileWrite[];
  commands: Cmd[];
  /** A lock file held while the plan runs, for tools that break when run concurrently (pm2). */
  lock?: string;
  /** Files removed after the commands ran. */
  remove?: string[];
}

/** The outcome of one command. */
export interface CmdResult {
  code: number;
  /** The whole output (stdout and stderr interleaved by line). */
  output: string;
  /** Its last lines, for error messages. */
  tail: string[];
  /** It printed more than {@link Cmd}.maxOutputBytes and was killed (then `code` is 125 unless it had ended). */
  overflow?: boolean;
}

/** A command stopped because its deploy was cancelled. */
export class CommandCancelled extends DeployParadigmError {
  constructor(readonly cmd: Cmd, readonly why: string) {
    super(`\`${displayArgv(cmd.argv)}\` was stopped: ${why}`);
  }
}

/** A command that exited non-zero. */
export class CommandFailed extends DeployParadigmError {
  constructor(readonly cmd: Cmd, readonly result: CmdResult) {
    super(
      `\`${displayArgv(cmd.argv)}\` exited with code ${result.code}` +
        (result.tail.length ? `; its last lines:\n${result.tail.map((l) => `    ${l}`).join("\n")}` : ""),
    );
  }
}

/** Receives each line a streamed command prints. */
export type LineSink = (line: string) => void;

/** Runs commands and plans. */
export interface Runner {
  run(cmd: Cmd): Promise<CmdResult>;
  apply(plan: Plan): Promise<void>;
}

const TAIL_LINES = 15;
/** The longest line {@link readLines} passes on whole (characters); a longer one comes in pieces. */
const MAX_LINE = 64 * 1024;

/** A command line for display only (shell-quoted where needed); never executed. */
export function displayArgv(argv: readonly string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replaceAll("'", `'\\''`)}'`)).join(" ");
}

/**
 * The environment children inherit: ours without the variables git sets for hooks, which
 * would otherwise make every git call in a build or an app act on the deploy repository.
 */
export function baseEnv(env: Record<string, string> = Deno.env.toObject()): Record<string, string> {
  const clean = Object.fromEntries(Object.entries(env).filter(([k]) => !k.startsWith("GIT_")));
  // git also puts its exec dir (/usr/lib/git-core) in front of PATH for hooks.
  if (clean.PATH && env.GIT_EXEC_PATH) {
    clean.PATH = clean.PATH.split(":").filter((dir) => dir !== env.GIT_EXEC_PATH).join(":");
  }
  return clean;
}

/** The absolute path of `program` found in `path` (a PATH value), if any. */
export function findInPath(program: string, path = Deno.env.get("PATH") ?? ""): string | undefined {
  for (const dir of path.split(":").filter(Boolean)) {
    try {
      const info = Deno.statSync(`${dir}/${program}`);
      if (info.isFile && (info.mode ?? 0) & 0o111) return `${dir}/${program}`;
    } catch { /* not here */ }
  }
  return undefined;
}

/**
 * The program `cmd` runs: a name with a slash as is; root looks a bare name up in its own PATH,
 * never in the command's (where a release's venv/bin may come first); any other user runs the
 * command as itself (no privilege to lose), so in the command's PATH, as a shell would.
 */
export function programOf(cmd: Cmd, uid: number | null = Deno.uid()): string | undefined {
  if (cmd.argv[0].includes("/")) return cmd.argv[0];
  return findInPath(cmd.argv[0], (uid !== 0 ? cmd.env?.PATH : undefined) ?? baseEnv().PATH);
}

/** Runs commands for real, streaming each output line to `sink`. */
export class ProcessRunner implements Runner {
  constructor(private readonly sink: LineSink = () => {}) {}

  async run(cmd: Cmd): Promise<CmdResult> {
    if (cmd.cancel?.aborted) throw new CommandCancelled(cmd, String(cmd.cancel.reason));
    // Commands that may be killed get a session of their own (setsid between fork and exec), so
    // the whole group can be killed, and a Ctrl-C on ours never reaches them, not even at spawn.
    const group = cmd.timeoutMs !== undefined || cmd.cancel !== undefined || cmd.maxOutputBytes !== undefined ||
      cmd.reap === true;
    const program = programOf(cmd);
    let child: Deno.ChildProcess;
    try {
      if (program === undefined) throw new Deno.errors.NotFound(cmd.argv[0]);
      child = new Deno.Command(program, {
        args: cmd.argv.slice(1),
        detached: group,
        cwd: cmd.cwd,
        env: cmd.clearEnv ? { ...cmd.env } : { ...baseEnv(), ...cmd.env },
        clearEnv: true,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
      const result = { code: 127, output: "", tail: [`${cmd.argv[0]}: command not found`] };
      if (cmd.allowFailure) return result;
      throw new CommandFailed(cmd, result);
    }
    killOnSpawn(cmd.argv); // the crash tests' hook (DEPLOY_PARADIGM_TEST_KILL=spawned:…)
    const lines: string[] = [];
    const onLine = (line: string) => {
      if (line.trim() === "") return;
      lines.push(line);
      if (cmd.keepLines !== undefined && lines.length > cmd.keepLines) lines.shift();
      if (!cmd.quiet) this.sink(line);
    };
    let timedOut = false;
    let killed: (() => void) | undefined;
    let grace: ReturnType<typeof setTimeout> | undefined;
    const afterKill = new Promise<void>((resolve) => killed = resolve);
    const kill = (signal: Deno.Signal) => {
      try {
        if (group) Deno.kill(-child.pid, signal);
        else child.kill(signal);
      } catch { /* it has just ended */ }
    };
    // A process outside the group may hold the pipes: after a kill, stop waiting for them.
    const stopReading = (ms: number) => grace ??= setTimeout(killed!, ms);
    const timer = cmd.timeoutMs === undefined ? undefined : setTimeout(() => {
      timedOut = true;
      kill("SIGKILL");
      stopReading(2000);
    }, cmd.timeoutMs);
    let hard: ReturnType<typeof setTimeout> | undefined;
    const onCancel = () => {
      kill("SIGTERM");
      hard = setTimeout(() => kill("SIGKILL"), 3000);
      stopReading(5000);
    };
    cmd.cancel?.addEventListener("abort", onCancel, { once: true });
    let overflow = false;
    const limit = cmd.maxOutputBytes === undefined ? undefined : {
      left: cmd.maxOutputBytes,
      over: () => {
        overflow = true;
        kill("SIGKILL");
        stopReading(2000);
      },
    };
    const reading = Promise.all([readLines(child.stdout, onLine, limit), readLines(child.stderr, onLine, limit)]);
    const status = await child.status;
    if (group && cmd.reap) {
      kill("SIGKILL"); // what it left in its group; what left the group: see killLeftovers (users.ts)
      stopReading(1000);
    }
    await Promise.race([reading, afterKill]);
    cmd.cancel?.removeEventListener("abort", onCancel);
    clearTimeout(hard);
    clearTimeout(timer);
    clearTimeout(grace);
    // Cancelled or timed out: whatever of its group outlived the lead process (a daemon that
    // ignored SIGTERM) is killed too, before the deploy goes on to remove its directory.
    if (group && (cmd.cancel?.aborted || timedOut || overflow)) kill("SIGKILL");
    if (cmd.cancel?.aborted) throw new CommandCancelled(cmd, String(cmd.cancel.reason));
    if (timedOut) lines.push(`(killed: no result after ${cmd.timeoutMs! / 1000}s)`);
    if (overflow) lines.push(`(killed: more than ${cmd.maxOutputBytes} bytes of output)`);
    const code = timedOut ? 124 : overflow && status.code === 0 ? 125 : status.code;
    const result = {
      code,
      output: lines.join("\n"),
      tail: lines.slice(-TAIL_LINES),
      ...(overflow ? { overflow } : {}),
    };
    if (code !== 0 && !cmd.allowFailure) throw new CommandFailed(cmd, result);
    return result;
  }

  async apply(plan: Plan): Promise<void> {
    const lock = plan.lock === undefined ? undefined : await lockFile(plan.lock);
    try {
      for (const file of plan.files) await writeFileAtomic(file.path, file.content, file.mode);
      for (const cmd of plan.commands) await this.run(cmd);
      for (const path of plan.remove ?? []) await Deno.remove(path).catch(() => {});
    } finally {
      lock?.close();
    }
  }
}

/** Opens and flock(2)s `path` (created if needed); closing the file frees the lock. */
export async function lockFile(path: string): Promise<Deno.FsFile> {
  await Deno.mkdir(dirname(path), { recursive: true });
  const file = await Deno.open(path, { read: true, write: true, create: true, mode: 0o600 });
  await file.lock(true);
  return file;
}

/** Prints what would run instead of running it. */
export class DryRunner implements Runner {
  constructor(private readonly sink: LineSink) {}

  run(cmd: Cmd): Promise<CmdResult> {
    this.sink(`would run: ${displayArgv(cmd.argv)}${cmd.cwd ? `  (in ${cmd.cwd})` : ""}`);
    return Promise.resolve({ code: 0, output: "", tail: [] });
  }

  async apply(plan: Plan): Promise<void> {
    for (const file of plan.files) this.sink(`would write: ${file.path}`);
    for (const cmd of plan.commands) await this.run(cmd);
    for (const path of plan.remove ?? []) this.sink(`would remove: ${path}`);
  }
}

/**
 * Calls `onLine` for every complete line of `stream` (and a final unterminated one). With `limit`
 * (shared by streams), past `left` bytes it calls `over` and stops reading (the rest is not kept).
 */
export async function readLines(
  stream: ReadableStream<Uint8Array>,
  onLine: (line: string) => void,
  limit?: { left: number; over: () => void },
): Promise<void> {
  const decoder = new TextDecoder();
  let pending = "";
  for await (const bytes of stream) {
    if (limit && (limit.left -= bytes.length) < 0) {
      limit.over();
      break;
    }
    const parts = (pending + decoder.decode(bytes, { stream: true })).split("\n");
    pending = parts.pop()!;
    for (const part of parts) onLine(part.replace(/\r$/, ""));
    // A line without end comes in pieces of MAX_LINE: it never fills memory.
    for (; pending.length > MAX_LINE; pending = pending.slice(MAX_LINE)) onLine(pending.slice(0, MAX_LINE));
  }
  pending += decoder.decode();
  if (pending) onLine(pending);
}
