/**
 * A real terminal for e2e tests: a detached tmux session running one shell command (with an
 * environment, each value shell-quoted), its screen read back, waited on for a pattern, and keys
 * sent to it, as a person at a terminal would.
 * @module
 */
import { run } from "./server.ts";

/** One word for `sh`: single-quoted, any `'` in it escaped. */
export const shellQuote = (word: string) => `'${word.replaceAll("'", `'\\''`)}'`;

/** `env K='v' …` for a shell command line (names checked: only letters, digits and `_`). */
export function envWords(env: Record<string, string>): string {
  return Object.entries(env).map(([k, v]) => {
    if (!/^[A-Za-z_]\w*$/.test(k)) throw new Error(`not an environment variable name: ${JSON.stringify(k)}`);
    return `${k}=${shellQuote(v)}`;
  }).join(" ");
}

/** A tmux session. */
export class Terminal {
  private constructor(
    readonly session: string,
    private readonly options: { tries: number; history: boolean },
  ) {}

  /**
   * Starts `command` (a shell command line) in a new session `width`×`height`. `history`: the
   * screen read includes the scrollback, wrapped lines joined; `tries`: waits of 100 ms for a pattern.
   */
  static async start(
    prefix: string,
    command: string,
    options: { width: number; height: number; tries?: number; history?: boolean },
  ): Promise<Terminal> {
    const session = `${prefix}-${crypto.randomUUID().slice(0, 8)}`;
    const started = await tmux(
      "new-session",
      "-d",
      "-s",
      session,
      "-x",
      String(options.width),
      "-y",
      String(options.height),
      command,
    );
    if (started.code !== 0) throw new Error(`tmux new-session failed: ${started.output}`);
    return new Terminal(session, { tries: options.tries ?? 150, history: options.history ?? false });
  }

  /** What the terminal shows. */
  async screen(): Promise<string> {
    const history = this.options.history ? ["-J", "-S", "-200"] : [];
    return (await tmux("capture-pane", "-p", ...history, "-t", this.session)).stdout;
  }

  /** The screen once it matches `pattern` (else throws, showing it). */
  async waitFor(pattern: RegExp): Promise<string> {
    for (let i = 0; i < this.options.tries; i++) {
      const text = await this.screen();
      if (pattern.test(text)) return text;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`the terminal never showed ${pattern}:\n${await this.screen()}`);
  }

  /** Types `keys` (tmux key names: "Enter", "C-u", or text). */
  async keys(...keys: string[]): Promise<void> {
    await tmux("send-keys", "-t", this.session, ...keys);
  }

  /** Ends the session. */
  async close(): Promise<void> {
    await tmux("kill-session", "-t", this.session);
  }
}

const tmux = (...args: string[]) => run(["tmux", ...args]);
