/**
 * A fake {@link Runner} for unit tests of the deploy engine: it records every command and plan
 * (argv arrays, files a plan would write) and answers from a script instead of spawning anything.
 * A script entry matches a command by argv prefix or predicate, and gives its result (output,
 * exit code), makes it fail, or runs an effect first (start a tiny HTTP server for a health
 * check, cancel the deploy, …). Unmatched commands succeed with no output.
 * @module
 */
import {
  type Cmd,
  type CmdResult,
  CommandCancelled,
  CommandFailed,
  type LineSink,
  type Plan,
  type Runner,
} from "../../src/runner.ts";

/** Which commands a script entry answers. */
export type Match = string[] | ((argv: string[]) => boolean);

/** What a matched command does. */
export interface Answer {
  /** Its output (lines are also streamed to the sink unless the command is quiet). */
  output?: string;
  /** Its exit code (default 0); non-zero throws CommandFailed unless the command allows failure. */
  code?: number;
  /** The runner stopped it for printing more than its cap (as ProcessRunner says it). */
  overflow?: boolean;
  /** Runs before the result is given (may throw, as a failing program would). */
  effect?: (cmd: Cmd) => void | Promise<void>;
  /** Answer only this many times (then the next matching entry answers). */
  times?: number;
}

interface Entry extends Answer {
  match: Match;
}

/** Whether `argv` starts with `prefix`. */
export function startsWith(argv: readonly string[], prefix: readonly string[]): boolean {
  return prefix.every((word, i) => argv[i] === word);
}

/** A runner that records and answers from a script. */
export class FakeRunner implements Runner {
  /** Every command run, in order (those of plans too), as argv. */
  readonly calls: string[][] = [];
  /** Every plan applied, in order. */
  readonly plans: Plan[] = [];
  readonly #script: Entry[] = [];

  /** Answers commands that match `match` (entries added later win). */
  on(match: Match, answer: Answer = {}): this {
    this.#script.unshift({ ...answer, match });
    return this;
  }

  /** Makes commands matching `match` exit with `code` and print `output`. */
  fail(match: Match, output = "failed", code = 1): this {
    return this.on(match, { code, output });
  }

  /**
   * The runner as the deploy gets it (context.ts Effects.runner): a runner of its own whose lines
   * go to `sink`, sharing this one's script and record.
   */
  withSink = (sink: LineSink): Runner => ({
    run: (cmd) => this.#run(cmd, sink),
    apply: (plan) => this.#apply(plan, sink),
  });

  /** The commands run whose argv starts with `prefix`. */
  ran(prefix: string[]): string[][] {
    return this.calls.filter((argv) => startsWith(argv, prefix));
  }

  /** The calls as lines (`argv.join(" ")`), for assertions. */
  lines(): string[] {
    return this.calls.map((argv) => argv.join(" "));
  }

  /** Runs `cmd` with its lines going nowhere. */
  run(cmd: Cmd): Promise<CmdResult> {
    return this.#run(cmd, () => {});
  }

  apply(plan: Plan): Promise<void> {
    return this.#apply(plan, () => {});
  }

  async #run(cmd: Cmd, sink: LineSink): Promise<CmdResult> {
    this.calls.push([...cmd.argv]);
    if (cmd.cancel?.aborted) throw new CommandCancelled(cmd, String(cmd.cancel.reason));
    const entry = this.#script.find((e) =>
      (e.times === undefined || e.times > 0) &&
      (typeof e.match === "function" ? e.match(cmd.argv) : startsWith(cmd.argv, e.match))
    );
    if (entry?.times !== undefined) entry.times--;
    await entry?.effect?.(cmd);
    if (cmd.cancel?.aborted) throw new CommandCancelled(cmd, String(cmd.cancel.reason));
    const lines = (entry?.output ?? "").split("\n").filter((line) => line.trim());
    if (!cmd.quiet) lines.forEach((line) => sink(line));
    const result = {
      code: entry?.code ?? 0,
      output: lines.join("\n"),
      tail: lines.slice(-15),
      ...(entry?.overflow ? { overflow: true } : {}),
    };
    if (result.code !== 0 && !cmd.allowFailure) throw new CommandFailed(cmd, result);
    return result;
  }

  async #apply(plan: Plan, sink: LineSink): Promise<void> {
    this.plans.push(plan);
    for (const cmd of plan.commands) await this.#run(cmd, sink);
  }
}
