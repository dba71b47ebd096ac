/**
 * The deploy's two records: live progress lines for the person pushing (they appear as
 * `remote:` lines in `git push`), and one JSON line per step in deploy.log for the fleet monitor.
 * @module
 */
import { join } from "node:path";
import { narrowMode } from "../fsutil.ts";
import { CommandFailed, displayArgv } from "../runner.ts";
import { type Clock, isoNow } from "./context.ts";
import { type Cancellation, killPoint } from "./cancel.ts";
import { Redactor } from "./redact.ts";
import { forTerminal } from "../terminal.ts";

/** Steps that take a deploy forward: none of them starts once the deploy is cancelled. */
const FORWARD = new Set([
  "boot",
  "docker",
  "fetch",
  "build",
  "command",
  "env",
  "preDeploy",
  "start",
  "health",
  "gate",
  "switch",
  "watch",
  "branch",
]);

/** One line of deploy.log. */
export interface DeployEvent {
  time: string;
  app: string;
  event: string;
  release?: string;
  commit?: string;
  /** Milliseconds. */
  duration?: number;
  ok?: boolean;
  message?: string;
}

/** Thrown by {@link Journal.step}: the failure of a named step. */
export class StepFailed extends Error {
  constructor(readonly step: string, readonly error: unknown) {
    super(error instanceof Error ? error.message : String(error));
  }
}

/**
 * Appends one line whole or not at all: a write cut short (a full disk) is truncated away, and a
 * line left without its newline by a crash gets one first, so deploy.log stays JSON lines. A new
 * file is 0600, as the app's other logs: a failed step's message carries the tail of its output.
 */
export async function appendLine(path: string, line: string): Promise<void> {
  using file = await Deno.open(path, { read: true, write: true, create: true, mode: 0o600 });
  const size = (await file.stat()).size;
  let prefix = "";
  if (size > 0) {
    const last = new Uint8Array(1);
    await file.seek(size - 1, Deno.SeekMode.Start);
    await file.read(last);
    if (last[0] !== 10) prefix = "\n";
  }
  const bytes = new TextEncoder().encode(`${prefix}${line}\n`);
  await file.seek(size, Deno.SeekMode.Start);
  try {
    for (let done = 0; done < bytes.length;) done += await file.write(bytes.subarray(done));
  } catch (error) {
    await file.truncate(size).catch(() => {});
    throw error;
  }
}

/**
 * The app's log files (deploy.log, access.log, error.log, cron and metrics logs) that group or
 * others may read, as older versions created deploy.log (0644), narrowed to their owner: a line
 * per file narrowed, to say. Links are left alone (never followed).
 */
export async function narrowLogs(logDir: string): Promise<string[]> {
  const said: string[] = [];
  for await (const entry of Deno.readDir(logDir)) {
    if (!entry.isFile) continue;
    const path = join(logDir, entry.name);
    const mode = await narrowMode(path, 0o077); // undefined also when gone meanwhile: a cron run rotated it
    if (mode === undefined) continue;
    said.push(`! ${path} was ${octal(mode)}, open to group or others: narrowed to ${octal(mode & ~0o077)}`);
  }
  return said;
}

const octal = (mode: number) => mode.toString(8).padStart(4, "0");

const seconds = (ms: number) => `${(ms / 1000).toFixed(2)}s`;

/** Prints progress and appends events to deploy.log (whose directory must exist). */
export class Journal {
  release?: string;
  /** Values never to print or record (the deploy's secrets), in every form they may take. */
  private readonly secrets = new Redactor();
  private recordFailed = false;
  /** Events not written yet (the disk was full): written before the next one. */
  private unwritten: string[] = [];

  constructor(
    private readonly logPath: string,
    readonly app: string,
    readonly commit: string,
    private readonly print: (line: string) => void,
    /** The deploy's cancellation: forward steps check it before they start. */
    public cancellation: Cancellation | undefined,
    /** Event times, step durations, and the times its steps record (health checks). */
    readonly clock: Clock,
  ) {}

  /**
   * Secrets to replace by `[redacted]` in every line printed and every event recorded (so in the
   * push, deploy.log, status.json and notifications), also URL-encoded, JSON-escaped, in base64 or
   * hex (see redact.ts).
   */
  redact(values: Iterable<string>): void {
    this.secrets.add(values);
  }

  /** `text` with the deploy's secrets replaced by `[redacted]`. */
  clean(text: string): string {
    return this.secrets.clean(text);
  }

  /** `error` with the deploy's secrets taken out of its message and stack, for whoever prints it. */
  cleanError(error: unknown): unknown {
    if (!(error instanceof Error)) return typeof error === "string" ? this.clean(error) : error;
    error.message = this.clean(error.message);
    if (error.stack) error.stack = this.clean(error.stack);
    return error;
  }

  /** Every line for the pusher's terminal: secrets redacted, control characters escaped (terminal.ts). */
  private show(line: string): void {
    this.print(forTerminal(this.clean(line)));
  }

  /** Prints a line (secrets redacted, control characters escaped). */
  say(line: string): void {
    this.show(line);
  }

  /** Prints a line of a command's output, indented under its step. */
  output(line: string): void {
    this.show(`    ${line}`);
  }

  /**
   * Appends one event to deploy.log (of this deploy's release and commit unless `fields` name
   * others). A failure to write (a full disk) is reported once and never
   * stops the deploy or its clean-up; the event is written with the next one that can be.
   */
  async record(event: string, fields: Omit<DeployEvent, "time" | "app" | "event"> = {}) {
    const entry: DeployEvent = {
      time: isoNow(this.clock),
      app: this.app,
      event,
      release: this.release,
      commit: this.commit,
      ...fields,
      ...(fields.message === undefined ? {} : { message: this.clean(fields.message) }),
    };
    this.unwritten.push(JSON.stringify(entry));
    try {
      while (this.unwritten.length) {
        await appendLine(this.logPath, this.unwritten[0]);
        this.unwritten.shift();
      }
    } catch (error) {
      if (!this.recordFailed) this.show(`! cannot write ${this.logPath} for now: ${(error as Error).message}`);
      this.recordFailed = true;
    }
  }

  /**
   * Runs one step: prints `▸ name` (when `announce` is given) and then `✓`/`✗` with its duration,
   * and records it. A failure is rethrown as {@link StepFailed}.
   */
  async step<T>(name: string, fn: () => Promise<T>, done?: (value: T) => string, announce?: string): Promise<T> {
    if (FORWARD.has(name)) {
      try {
        this.cancellation?.check();
      } catch (error) {
        throw new StepFailed(name, error);
      }
    }
    killPoint(`before:${name}`);
    if (announce) this.show(`▸ ${name.padEnd(10)} ${announce}`);
    const started = this.clock.elapsed();
    try {
      const value = await fn();
      killPoint(`after:${name}`);
      const duration = Math.round(this.clock.elapsed() - started);
      const message = done?.(value) ?? "";
      this.show(`✓ ${name.padEnd(10)} ${seconds(duration).padStart(7)}  ${message}`.trimEnd());
      await this.record(name, { ok: true, duration, message: message || undefined });
      return value;
    } catch (error) {
      const duration = Math.round(this.clock.elapsed() - started);
      const message = error instanceof Error ? error.message : String(error);
      // A streamed command's output is already on screen: print only its first line again.
      const shown = error instanceof CommandFailed && !error.cmd.quiet ? streamedFailure(error) : message;
      this.show(`✗ ${name.padEnd(10)} ${seconds(duration).padStart(7)}  ${shown}`);
      await this.record(name, { ok: false, duration, message });
      throw error instanceof StepFailed ? error : new StepFailed(name, error);
    }
  }
}

/**
 * The push line of a streamed command that failed (its output is on screen already): its first
 * line, or what stopped it when the runner killed it (its timeout, its output cap).
 */
export function streamedFailure(error: CommandFailed): string {
  const command = `\`${displayArgv(error.cmd.argv)}\``;
  const last = error.result.tail.at(-1) ?? "";
  // The runner's own facts decide (a script may print such a line itself); the line gives the figures.
  const timeout = error.result.code === 124 && /^\(killed: no result after (.+)\)$/.exec(last);
  if (timeout) return `${command} timed out after ${timeout[1]}`;
  const cap = error.result.overflow && /^\(killed: more than (\d+) bytes of output\)$/.exec(last);
  if (cap) return `${command} stopped: printed more than ${byteSize(Number(cap[1]))}`;
  return error.message.split("\n")[0].replace(/; its last lines:$/, " (its output is above)");
}

function byteSize(bytes: number): string {
  if (bytes >= 1 << 20 && bytes % (1 << 20) === 0) return `${bytes / (1 << 20)} MiB`;
  if (bytes >= 1 << 10 && bytes % (1 << 10) === 0) return `${bytes / (1 << 10)} KiB`;
  return `${bytes} bytes`;
}
