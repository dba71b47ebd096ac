/**
 * The deploy's two records: live progress lines for the person pushing (they appear as
 * `remote:` lines in `git push`), and one JSON line per step in deploy.log for the fleet monitor.
 * @module
 */
import { CommandFailed } from "../runner.ts";

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

const seconds = (ms: number) => `${(ms / 1000).toFixed(2)}s`;

/** Prints progress and appends events to deploy.log (whose directory must exist). */
export class Journal {
  release?: string;

  constructor(
    private readonly logPath: string,
    readonly app: string,
    readonly commit: string,
    private readonly print: (line: string) => void,
  ) {}

  /** Prints a line as it is. */
  say(line: string): void {
    this.print(line);
  }

  /** Prints a line of a command's output, indented under its step. */
  output(line: string): void {
    this.print(`    ${line}`);
  }

  /** Appends one event to deploy.log. */
  async record(event: string, fields: Omit<DeployEvent, "time" | "app" | "event" | "release" | "commit"> = {}) {
    const entry: DeployEvent = {
      time: new Date().toISOString(),
      app: this.app,
      event,
      release: this.release,
      commit: this.commit,
      ...fields,
    };
    await Deno.writeTextFile(this.logPath, JSON.stringify(entry) + "\n", { append: true });
  }

  /**
   * Runs one step: prints `▸ name` (when `announce` is given) and then `✓`/`✗` with its duration,
   * and records it. A failure is rethrown as {@link StepFailed}.
   */
  async step<T>(name: string, fn: () => Promise<T>, done?: (value: T) => string, announce?: string): Promise<T> {
    if (announce) this.print(`▸ ${name.padEnd(10)} ${announce}`);
    const started = performance.now();
    try {
      const value = await fn();
      const duration = Math.round(performance.now() - started);
      const message = done?.(value) ?? "";
      this.print(`✓ ${name.padEnd(10)} ${seconds(duration).padStart(7)}  ${message}`.trimEnd());
      await this.record(name, { ok: true, duration, message: message || undefined });
      return value;
    } catch (error) {
      const duration = Math.round(performance.now() - started);
      const message = error instanceof Error ? error.message : String(error);
      // A streamed command's output is already on screen: print only its first line again.
      const shown = error instanceof CommandFailed && !error.cmd.quiet
        ? message.split("\n")[0].replace(/; its last lines:$/, " (its output is above)")
        : message;
      this.print(`✗ ${name.padEnd(10)} ${seconds(duration).padStart(7)}  ${shown}`);
      await this.record(name, { ok: false, duration, message });
      throw error instanceof StepFailed ? error : new StepFailed(name, error);
    }
  }
}
