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
    const [, key, value] = match;
    if (value.startsWith("'") && value.endsWith("'") && value.length >= 2) values[key] = value.slice(1, -1);
    else if (value.startsWith('"') && value.endsWith('"') && value.length >= 2) {
      values[key] = value.slice(1, -1).replace(/\\([n"\\])/g, (_, c) => (c === "n" ? "\n" : c));
    } else values[key] = value.replace(/\s+#.*$/, "");
  });
  if (problems.length) throw new ConfigError(`Cannot read ${label}:`, problems);
  return values;
}
