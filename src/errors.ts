/**
 * Typed errors. Only `main.ts` catches them and turns them into an exit code:
 * {@link UsageError} (bad arguments, bad config) exits 2, every other error exits 1.
 * @module
 */

/** Options shared by every error of the tool. */
export interface ErrorOptions {
  /** What the user can do about it, printed as a `hint:` line. */
  suggestion?: string;
  cause?: unknown;
}

/** A failure of the tool: exit code 1. */
export class DeployParadigmError extends Error {
  /** The process exit code `main.ts` uses for this error. */
  readonly exitCode: number = 1;
  /** What the user can do about it. */
  readonly suggestion?: string;

  constructor(message: string, options: ErrorOptions = {}) {
    super(message, { cause: options.cause });
    this.name = new.target.name;
    this.suggestion = options.suggestion;
  }
}

/** Bad command-line usage or bad configuration: exit code 2, nothing was changed. */
export class UsageError extends DeployParadigmError {
  override readonly exitCode: number = 2;
}

/** A configuration file that does not validate. Carries every problem found, each with its location. */
export class ConfigError extends UsageError {
  /** One line per problem: `file:line:col: message`. */
  readonly problems: string[];

  constructor(header: string, problems: string[], options: ErrorOptions = {}) {
    super([header, ...problems.map((p) => `  ${p}`)].join("\n"), options);
    this.problems = problems;
  }
}

/** Formats any thrown value for the terminal and picks its exit code. */
export function describeError(error: unknown): { text: string; exitCode: number } {
  if (error instanceof DeployParadigmError) {
    const hint = error.suggestion ? `\nhint: ${error.suggestion}` : "";
    return { text: `error: ${error.message}${hint}`, exitCode: error.exitCode };
  }
  const text = error instanceof Error ? (error.stack ?? error.message) : String(error);
  return { text: `error: unexpected failure: ${text}`, exitCode: 1 };
}

/** Closest candidate to `word` by edit distance, if it is close enough to be a likely typo. */
export function didYouMean(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of candidates) {
    const d = editDistance(word.toLowerCase(), candidate.toLowerCase());
    if (d < bestDistance) [best, bestDistance] = [candidate, d];
  }
  const prefixed = candidates.find((c) => word.length >= 2 && c.startsWith(word));
  if (prefixed) return prefixed;
  // Two edits of a word of three letters leave one: "foo" is not a typo of "root".
  const most = word.length <= 3 ? 1 : Math.max(2, Math.floor(word.length / 3));
  return best !== undefined && bestDistance <= most ? best : undefined;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = row;
  }
  return prev[b.length];
}
