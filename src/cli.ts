/**
 * A small declarative command-line parser. Commander was the first choice, but importing it
 * (it pulls in node:fs, node:child_process and node:events) costs more than a bare `deno run`
 * start-up, which breaks the `--help` ≤ 2× start-up target; see README "Design notes".
 *
 * Commands are specs (name, arguments, options) registered in one list; each spec's `run`
 * loads its heavy modules lazily.
 * @module
 */
import { didYouMean, UsageError } from "./errors.ts";

/** A `--long` option, boolean unless it declares a value placeholder. */
export interface OptionSpec {
  /** Long name without dashes, e.g. `dry-run`. */
  name: string;
  /** Single-letter alias, e.g. `f`. */
  short?: string;
  /** Placeholder of the option's value, e.g. `name`. A boolean flag has none. */
  value?: string;
  /** One-line help text. */
  description: string;
  /** Allowed values, checked before the command runs. */
  choices?: readonly string[];
  /** May be given more than once: its value is the list of values given, in order. */
  repeatable?: boolean;
  /** Must be given (an option with a value): shown in the usage line, and its absence is a usage error. */
  required?: boolean;
}

/** A positional argument. */
export interface ArgumentSpec {
  name: string;
  description: string;
  optional?: boolean;
}

/** Parsed command line of one command. */
export interface Invocation {
  args: string[];
  opts: Record<string, string | string[] | boolean | undefined>;
}

/** One subcommand: its interface and its implementation. */
export interface CommandSpec {
  name: string;
  summary: string;
  args?: ArgumentSpec[];
  options?: OptionSpec[];
  /** Runs the command. Returns the exit code (0 when omitted). Failures are thrown as typed errors. */
  run(invocation: Invocation): Promise<number | void>;
}

/** Information shown by the top-level help. */
export interface ProgramSpec {
  name: string;
  version: string;
  summary: string;
  commands: readonly CommandSpec[];
}

const HELP: OptionSpec = { name: "help", short: "h", description: "Show help for this command" };

/** Parses `argv` (without the program name) and runs the chosen command. Returns the exit code. */
export async function runCli(program: ProgramSpec, argv: readonly string[]): Promise<number> {
  const [first, ...rest] = argv;
  if (first === undefined || first === "--help" || first === "-h" || first === "help") {
    const target = first === "help" && rest[0] ? findCommand(program, rest[0]) : undefined;
    console.log(target ? commandHelp(program, target) : programHelp(program));
    if (first !== undefined) return 0;
    console.error(`error: ${program.name} needs a command (listed above)`);
    return 2;
  }
  if (first === "--version" || first === "-V") {
    if (rest.length) {
      throw new UsageError(`${first} takes no arguments (got "${rest[0]}")`, {
        suggestion: `run ${program.name} ${first}`,
      });
    }
    console.log(program.version);
    return 0;
  }
  if (first.startsWith("-")) {
    throw new UsageError(`unknown option "${first}"`, { suggestion: `see ${program.name} --help` });
  }
  const command = findCommand(program, first);
  if (rest.includes("--help") || rest.includes("-h")) {
    console.log(commandHelp(program, command));
    return 0;
  }
  return (await command.run(parseInvocation(program, command, rest))) ?? 0;
}

function findCommand(program: ProgramSpec, name: string): CommandSpec {
  const command = program.commands.find((c) => c.name === name);
  if (command) return command;
  const guess = didYouMean(name, program.commands.map((c) => c.name));
  throw new UsageError(`unknown command "${name}"`, {
    suggestion: guess ? `did you mean "${guess}"? (see ${program.name} --help)` : `see ${program.name} --help`,
  });
}

/** Parses the arguments of one command, enforcing its spec. */
export function parseInvocation(program: ProgramSpec, command: CommandSpec, argv: readonly string[]): Invocation {
  const options = command.options ?? [];
  const usage = `see ${program.name} ${command.name} --help`;
  const opts: Invocation["opts"] = {};
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const token = argv[i];
    if (token === "--") {
      args.push(...argv.slice(i + 1));
      break;
    }
    if (!token.startsWith("-") || token === "-") {
      args.push(token);
      continue;
    }
    const [flag, inline] = token.startsWith("--") ? splitOnce(token.slice(2), "=") : [token.slice(1), undefined];
    const option = options.find((o) => (token.startsWith("--") ? o.name === flag : o.short === flag));
    if (!option) {
      const guess = didYouMean(flag, options.map((o) => o.name));
      throw new UsageError(`unknown option "${token}" for "${command.name}"`, {
        suggestion: guess ? `did you mean "--${guess}"? (${usage})` : usage,
      });
    }
    if (!option.value) {
      if (inline !== undefined) throw new UsageError(`option --${option.name} takes no value`, { suggestion: usage });
      opts[option.name] = true;
      continue;
    }
    const value = inline ?? argv[++i];
    if (value === undefined) {
      throw new UsageError(`option --${option.name} needs a value <${option.value}>`, { suggestion: usage });
    }
    if (option.choices && !option.choices.includes(value)) {
      throw new UsageError(`option --${option.name} must be one of ${option.choices.join(", ")} (got "${value}")`);
    }
    const before = opts[option.name];
    if (before !== undefined && !option.repeatable) {
      throw new UsageError(`option --${option.name} is given twice ("${before}", then "${value}")`, {
        suggestion: `give it once (${usage})`,
      });
    }
    opts[option.name] = option.repeatable ? [...(Array.isArray(before) ? before : []), value] : value;
  }
  const missing = options.find((o) => o.required && opts[o.name] === undefined);
  if (missing) {
    throw new UsageError(`"${command.name}" needs --${missing.name} <${missing.value}>`, { suggestion: usage });
  }
  const specs = command.args ?? [];
  const required = specs.filter((a) => !a.optional).length;
  if (args.length < required) {
    throw new UsageError(`"${command.name}" needs <${specs[args.length].name}>`, { suggestion: usage });
  }
  if (args.length > specs.length) {
    const most = specs.length === 0 ? "no arguments" : `at most ${specs.length} argument${specs.length > 1 ? "s" : ""}`;
    throw new UsageError(`"${command.name}" takes ${most}, got ${args.length}`, { suggestion: usage });
  }
  return { args, opts };
}

function splitOnce(text: string, separator: string): [string, string | undefined] {
  const at = text.indexOf(separator);
  return at < 0 ? [text, undefined] : [text.slice(0, at), text.slice(at + 1)];
}

function usageLine(program: ProgramSpec, command: CommandSpec): string {
  const args = (command.args ?? []).map((a) => (a.optional ? `[${a.name}]` : `<${a.name}>`));
  const options = command.options ?? [];
  const required = options.filter((o) => o.required).map((o) => `--${o.name} <${o.value}>`);
  const others = options.some((o) => !o.required) ? ["[options]"] : [];
  return [program.name, command.name, ...args, ...required, ...others].join(" ");
}

function table(rows: [string, string][]): string[] {
  const width = Math.max(...rows.map(([left]) => left.length));
  return rows.map(([left, right]) => `  ${left.padEnd(width)}  ${right}`);
}

/** Help text of the whole program. */
export function programHelp(program: ProgramSpec): string {
  return [
    `${program.name} ${program.version}: ${program.summary}`,
    "",
    `Usage: ${program.name} <command> [arguments] [options]`,
    "",
    "Commands:",
    ...table(program.commands.map((c) => [c.name, c.summary])),
    "",
    "Options:",
    "  -h, --help     Show this help",
    "  -V, --version  Print the version",
    "",
    `Run "${program.name} <command> --help" for a command's arguments and options.`,
    "Exit codes: 0 success, 1 failure (deploy failed, rolled back), 2 usage or configuration error.",
  ].join("\n");
}

/** Help text of one command. */
export function commandHelp(program: ProgramSpec, command: CommandSpec): string {
  const lines = [`Usage: ${usageLine(program, command)}`, "", command.summary];
  if (command.args?.length) {
    lines.push("", "Arguments:", ...table(command.args.map((a) => [a.name, a.description])));
  }
  const options = [...(command.options ?? []), HELP].map((o): [string, string] => [
    `${o.short ? `-${o.short}, ` : "    "}--${o.name}${o.value ? ` <${o.value}>` : ""}`,
    o.description + (o.choices ? ` (${o.choices.join("|")})` : "") + (o.required ? " (required)" : ""),
  ]);
  lines.push("", "Options:", ...table(options));
  return lines.join("\n");
}
