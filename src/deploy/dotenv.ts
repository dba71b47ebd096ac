/**
 * The server-side `.env.<env>` file: `KEY=value` lines, `#` comments, optional `export `,
 * single quotes (literal) or double quotes (with \n, \" and \\ escapes). Nothing is expanded.
 *
 * Every non-empty value is a secret (redacted from all deploy output, see redact.ts) unless its line
 * ends with the comment `# public`. A secret shorter than 6 characters cannot be redacted safely:
 * setup and deploys refuse it, naming the key and where it is.
 * @module
 */
import { ConfigError } from "../errors.ts";
import { readTextOrUndefined } from "../fsutil.ts";
import { MIN_SECRET_LENGTH } from "./redact.ts";

const LINE = /^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$/d;

/** The comment that marks a value as not secret: `LOG_LEVEL=info # public`. */
const PUBLIC_MARK = /^#\s*public\s*$/i;
/** How a release's snapshot lists the keys marked public (a comment line for every reader). */
const PUBLIC_LINE = /^#\s*public:\s*(.*)$/i;

/** A parsed .env file. */
export interface Dotenv {
  values: Record<string, string>;
  /**
   * Keys whose value is not a secret: marked `# public` at the end of their line (or named on a
   * `# public: KEY …` line, as release snapshots record them). Every other value is a secret.
   */
  public: Set<string>;
  /** Where each key's value is, `line:column` (1-based), for messages. */
  at: Record<string, string>;
}

/** Parses a .env file. Throws {@link ConfigError} naming every bad line. */
export function parseDotenv(text: string, label: string): Record<string, string> {
  return readDotenv(text, label).values;
}

/** Parses a .env file with its public marks. Throws {@link ConfigError} naming every bad line. */
export function readDotenv(text: string, label: string): Dotenv {
  const { env, problems } = dotenvLines(text, label);
  if (problems.length) throw new ConfigError(`Cannot read ${label}:`, problems);
  return env;
}

/**
 * The .env file a deploy uses: {@link readDotenv}, then {@link refuseShortSecrets}; with bad lines,
 * the lines that parse are checked for short secrets too, and both kinds of problem are named at once.
 */
export function readDeployDotenv(text: string, label: string): Dotenv {
  const { env, problems } = dotenvLines(text, label);
  const short = shortSecrets(env, label);
  if (!problems.length && !short) return env;
  if (!problems.length) throw short;
  if (!short) throw new ConfigError(`Cannot read ${label}:`, problems);
  throw new ConfigError(`Cannot use ${label}:`, [...problems, ...short.problems], { suggestion: short.suggestion });
}

/** The values of a .env file's lines that parse, and one problem per line that does not. */
function dotenvLines(text: string, label: string): { env: Dotenv; problems: string[] } {
  const env: Dotenv = { values: {}, public: new Set(), at: {} };
  const problems: string[] = [];
  text.split("\n").forEach((raw, i) => {
    addListed(raw, env.public);
    if (/^\s*(#|$)/.test(raw)) return;
    const match = LINE.exec(raw);
    if (!match) {
      problems.push(`${label}:${i + 1}:1: expected KEY=value (KEY of letters, digits and _)`);
      return;
    }
    const [, key, rawValue] = match;
    const column = match.indices![2]![0] + 1; // the value's own, not a match of its text inside the key
    const parsed = unquote(rawValue);
    if (parsed === undefined) {
      problems.push(
        `${label}:${i + 1}:${column}: unterminated quote, or text after the closing quote`,
      );
      return;
    }
    env.values[key] = parsed.value;
    env.at[key] = `${i + 1}:${column}`;
    if (PUBLIC_MARK.test(parsed.comment)) env.public.add(key);
  });
  return { env, problems };
}

/** Adds the keys a `# public: KEY …` line names. */
function addListed(line: string, publicKeys: Set<string>): void {
  PUBLIC_LINE.exec(line.trim())?.[1].split(/[\s,]+/).filter(Boolean).forEach((key) => publicKeys.add(key));
}

/** A value without its quotes, and its trailing `# comment`; undefined when malformed. */
function unquote(value: string): { value: string; comment: string } | undefined {
  const quote = value[0];
  if (quote !== "'" && quote !== '"') {
    const comment = /\s+(#.*)$/.exec(value);
    return { value: comment ? value.slice(0, comment.index) : value, comment: comment?.[1] ?? "" };
  }
  let out = "";
  let i = 1;
  for (; i < value.length && value[i] !== quote; i++) {
    if (quote === '"' && value[i] === "\\" && /[n"\\]/.test(value[i + 1] ?? "")) {
      i++;
      out += value[i] === "n" ? "\n" : value[i];
    } else out += value[i];
  }
  const rest = /^\s*(#.*)?$/.exec(value.slice(i + 1));
  return i < value.length && rest ? { value: out, comment: rest[1] ?? "" } : undefined;
}

/** The values that are secrets: every non-empty value not marked public. */
export function secretsOf(values: Record<string, string>, publicKeys: ReadonlySet<string>): string[] {
  return Object.entries(values).filter(([key, value]) => value !== "" && !publicKeys.has(key)).map(([, v]) => v);
}

/**
 * Refuses secrets too short to be redacted from deploy output (under {@link MIN_SECRET_LENGTH}
 * characters): a {@link ConfigError} naming each key where it is, and the two ways out.
 */
export function refuseShortSecrets(env: Dotenv, label: string): void {
  const short = shortSecrets(env, label);
  if (short) throw short;
}

/** The {@link ConfigError} {@link refuseShortSecrets} throws, or undefined when no secret is too short. */
function shortSecrets(env: Dotenv, label: string): ConfigError | undefined {
  const short = Object.entries(env.values).map(([key, value]) => [key, [...value].length] as const)
    .filter(([key, length]) => length > 0 && length < MIN_SECRET_LENGTH && !env.public.has(key));
  if (!short.length) return undefined;
  const [example] = short[0];
  return new ConfigError(
    `${label}: ${short.length === 1 ? "a secret is" : `${short.length} secrets are`} shorter than ` +
      `${MIN_SECRET_LENGTH} characters, too short to be kept out of deploy output:`,
    short.map(([key, length]) =>
      `${label}:${env.at[key]}: ${key} is ${length} character${length === 1 ? "" : "s"} long; ` +
      `a secret needs at least ${MIN_SECRET_LENGTH}`
    ),
    {
      suggestion: `make each secret at least ${MIN_SECRET_LENGTH} characters long; a value that is not secret ` +
        `(a port, a log level, a flag) can be marked public at the end of its line, e.g. \`${example}=… # public\`: ` +
        "public values are shown as they are",
    },
  );
}

/**
 * The secrets of a release's `.env` snapshot: in our form, or in docker's literal `KEY=value` form
 * (`docker`). Both carry the public marks on a `# public: KEY …` line.
 */
export function snapshotSecrets(text: string, label: string, docker: boolean): string[] {
  if (!docker) {
    const env = readDotenv(text, label);
    return secretsOf(env.values, env.public);
  }
  const env: Dotenv = { values: {}, public: new Set(), at: {} };
  for (const line of text.split("\n")) {
    addListed(line, env.public);
    const match = /^([A-Za-z_]\w*)=(.*)$/.exec(line);
    if (match) env.values[match[1]] = match[2];
  }
  return secretsOf(env.values, env.public);
}

/** Setup's check of an existing `.env.<env>`: it parses, and holds no secret too short to redact. */
export async function checkDotenvFile(path: string): Promise<void> {
  const text = await readTextOrUndefined(path);
  if (text !== undefined) readDeployDotenv(text, path);
}

/** The comment line that carries the public marks into a release's `.env` (empty when none). */
function publicLine(publicKeys: Iterable<string>, values: Record<string, string>): string[] {
  const keys = [...publicKeys].filter((key) => key in values).sort();
  return keys.length ? [`# public: ${keys.join(" ")}`] : [];
}

/**
 * Writes values in the one .env form that systemd's EnvironmentFile, dotenv libraries and
 * {@link parseDotenv} all read the same way: `KEY='value'`, or `KEY="value"` with `\n`, `\"`
 * and `\\` escapes when the value holds a single quote or a newline.
 */
export function serializeDotenv(
  values: Record<string, string>,
  header: string,
  publicKeys: Iterable<string> = [],
): string {
  const lines = Object.entries(values).map(([key, value]) =>
    /['\n\\]/.test(value)
      ? `${key}="${value.replace(/[\\"]/g, (c) => `\\${c}`).replaceAll("\n", "\\n")}"`
      : `${key}='${value}'`
  );
  return [`# ${header}`, ...publicLine(publicKeys, values), ...lines, ""].join("\n");
}

/**
 * Writes values in the form of `docker run --env-file`: `KEY=value`, taken literally (no quotes,
 * no escapes). Such a file cannot hold a newline: callers refuse those values first.
 */
export function serializeDockerEnv(
  values: Record<string, string>,
  header: string,
  publicKeys: Iterable<string> = [],
): string {
  return [
    `# ${header}`,
    ...publicLine(publicKeys, values),
    ...Object.entries(values).map(([key, value]) => `${key}=${value}`),
    "",
  ].join("\n");
}
