/**
 * The server-side `.env.<env>` file: `KEY=value` lines, `#` comments, optional `export `,
 * single quotes (literal) or double quotes (with \n, \" and \\ escapes). Nothing is expanded.
 * @module
 */
import { ConfigError } from "../errors.ts";

const LINE = /^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$/;

/** Parses a .env file. Throws {@link ConfigError} naming every bad line. */
export function parseDotenv(text: string, label: string): Record<string, string> {
  const values: Record<string, string> = {};
  const problems: string[] = [];
  text.split("\n").forEach((raw, i) => {
    if (/^\s*(#|$)/.test(raw)) return;
    const match = LINE.exec(raw);
    if (!match) {
      problems.push(`${label}:${i + 1}:1: expected KEY=value (KEY of letters, digits and _)`);
      return;
    }
    const [, key, rawValue] = match;
    const value = unquote(rawValue);
    if (value === undefined) {
      problems.push(
        `${label}:${i + 1}:${raw.indexOf(rawValue) + 1}: unterminated quote, or text after the closing quote`,
      );
    } else values[key] = value;
  });
  if (problems.length) throw new ConfigError(`Cannot read ${label}:`, problems);
  return values;
}

/** A value without its quotes (and without a trailing `# comment`), or undefined when malformed. */
function unquote(value: string): string | undefined {
  const quote = value[0];
  if (quote !== "'" && quote !== '"') return value.replace(/\s+#.*$/, "");
  let out = "";
  let i = 1;
  for (; i < value.length && value[i] !== quote; i++) {
    if (quote === '"' && value[i] === "\\" && /[n"\\]/.test(value[i + 1] ?? "")) {
      i++;
      out += value[i] === "n" ? "\n" : value[i];
    } else out += value[i];
  }
  return i < value.length && /^\s*(#.*)?$/.test(value.slice(i + 1)) ? out : undefined;
}

/**
 * Writes values in the one .env form that systemd's EnvironmentFile, dotenv libraries and
 * {@link parseDotenv} all read the same way: `KEY='value'`, or `KEY="value"` with `\n`, `\"`
 * and `\\` escapes when the value holds a single quote or a newline.
 */
export function serializeDotenv(values: Record<string, string>, header: string): string {
  const lines = Object.entries(values).map(([key, value]) =>
    /['\n\\]/.test(value)
      ? `${key}="${value.replace(/[\\"]/g, (c) => `\\${c}`).replaceAll("\n", "\\n")}"`
      : `${key}='${value}'`
  );
  return [`# ${header}`, ...lines, ""].join("\n");
}

/**
 * Writes values in the form of `docker run --env-file`: `KEY=value`, taken literally (no quotes,
 * no escapes). Such a file cannot hold a newline: callers refuse those values first.
 */
export function serializeDockerEnv(values: Record<string, string>, header: string): string {
  return [`# ${header}`, ...Object.entries(values).map(([key, value]) => `${key}=${value}`), ""].join("\n");
}
