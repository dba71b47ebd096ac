/**
 * Reads YAML config files and validates them in one pass: every problem at once, each with
 * `file:line:column`, its key path, and a "did you mean" for unknown keys.
 * @module
 */
import { isMap, isPair, isScalar, LineCounter, type Node, parseDocument } from "../yaml.ts";
import type { z } from "zod";
import { ConfigError, didYouMean } from "../errors.ts";

/** Files larger than this are refused before parsing. */
export const MAX_CONFIG_BYTES = 64 * 1024;
const MAX_ALIASES = 50;

type Path = (string | number)[];

/**
 * Parses and validates YAML `text` against `schema`. `label` names the file in messages
 * (`deploy.yml:3:7: …`); `context` says where it came from (`commit abc1234`). Throws
 * {@link ConfigError} listing every problem.
 */
export function parseConfig<S extends z.ZodType>(
  text: string,
  schema: S,
  label: string,
  context?: string,
): z.output<S> {
  const fail = (problems: string[]): never => {
    const count = problems.length === 1 ? "" : ` (${problems.length} problems)`;
    throw new ConfigError(`Cannot read ${label}${context ? ` from ${context}` : ""}${count}:`, problems);
  };
  const bytes = text.length > MAX_CONFIG_BYTES / 4 ? new TextEncoder().encode(text).length : text.length;
  if (bytes > MAX_CONFIG_BYTES) {
    fail([`${label}: file is ${bytes} bytes; config files are limited to ${MAX_CONFIG_BYTES} bytes`]);
  }
  if (text.includes("\uFFFD")) fail([`${label}: file is not valid UTF-8 text`]);
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, uniqueKeys: true, prettyErrors: false, strict: true });
  const at = (offset: number) => {
    const { line, col } = lines.linePos(offset);
    return `${label}:${line}:${col}`;
  };
  if (doc.errors.length) {
    fail(doc.errors.map((e) => `${at(e.pos[0])}: YAML syntax error: ${e.message.split("\n")[0]}`));
  }
  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: MAX_ALIASES });
  } catch (error) {
    fail([`${label}: ${(error as Error).message} (YAML aliases are limited to ${MAX_ALIASES})`]);
  }
  if (data === null || data === undefined) fail([`${label}: file is empty; it must be a YAML mapping of keys`]);
  if (typeof data !== "object" || Array.isArray(data)) {
    fail([`${at(0)}: the file must be a YAML mapping of keys (key: value), not ${describe(data)}`]);
  }
  const result = schema.safeParse(data);
  if (result.success) return result.data;
  const problems = result.error.issues.flatMap((issue) => {
    const keys = issue.code === "unrecognized_keys" ? issue.keys : [undefined];
    return keys.map((key) => {
      const path = key === undefined ? issue.path as Path : [...issue.path as Path, key];
      return { offset: offsetOf(doc.contents, path, key !== undefined), text: explain(issue, path, schema, data) };
    });
  });
  fail(problems.sort((a, b) => a.offset - b.offset).map((p) => `${at(p.offset)}: ${p.text}`));
  throw new Error("unreachable");
}

function explain(issue: z.core.$ZodIssue, path: Path, schema: z.ZodType, data: unknown): string {
  const key = path.length ? `"${path.join(".")}"` : "the file";
  if (issue.code === "unrecognized_keys") {
    const known = knownKeys(schema, path.slice(0, -1));
    const guess = didYouMean(String(path.at(-1)), known);
    return `${key} is not a known key` + (guess ? `; did you mean "${guess}"?` : `; known keys: ${known.join(", ")}`);
  }
  const value = valueAt(data, path);
  if (value === undefined && (issue.code === "invalid_type" || issue.code === "invalid_value")) {
    return `${key} is required` + (issue.code === "invalid_value" ? ` and ${issue.message}` : "");
  }
  const message = issue.code === "invalid_type" && issue.message.startsWith("Invalid input")
    ? `must be ${issue.expected === "int" ? "a whole number" : issue.expected}`
    : issue.message;
  const got = value === undefined || message.includes("(got") ? "" : ` (got ${describe(value)})`;
  return `${key} ${message}${got}`;
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "object") return "a mapping";
  if (typeof value === "string" && value.length === 0) return "an empty string";
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

function valueAt(data: unknown, path: Path): unknown {
  let value = data;
  for (const key of path) {
    if (value === null || typeof value !== "object") return undefined;
    value = (value as Record<string | number, unknown>)[key];
  }
  return value;
}

/** Offset of the node at `path` (its key when `atKey`), or of the nearest ancestor that exists. */
function offsetOf(root: unknown, path: Path, atKey: boolean): number {
  let node = root as Node | null;
  let offset = node?.range?.[0] ?? 0;
  for (const [i, key] of path.entries()) {
    if (!node || !("items" in node)) break;
    const items = (node as { items: unknown[] }).items;
    const item = isMap(node)
      ? items.find((pair) => isPair(pair) && isScalar(pair.key) && pair.key.value === key)
      : items[key as number];
    if (!item) break;
    if (isPair(item)) {
      const keyNode = item.key as Node;
      const valueNode = item.value as Node | null;
      offset = (i === path.length - 1 && atKey) || !valueNode?.range ? keyNode.range![0] : valueNode.range[0];
      node = valueNode;
    } else {
      node = item as Node;
      offset = node.range?.[0] ?? offset;
    }
  }
  return offset;
}

/** The keys an object schema accepts at `path`, for "did you mean". */
function knownKeys(schema: z.ZodType, path: Path): string[] {
  let current: unknown = schema;
  for (let depth = 0; depth < 20 && current; depth++) {
    const def = (current as { _zod: { def: Record<string, unknown> } })._zod.def;
    if (def.type === "object") {
      const shape = def.shape as Record<string, unknown>;
      if (path.length === 0) return Object.keys(shape);
      current = shape[String(path.shift())];
    } else if (def.type === "union") {
      current = (def.options as unknown[]).find((o) =>
        (o as { _zod: { def: { type: string } } })._zod.def.type !== "string"
      );
    } else {
      current = def.innerType ?? def.in;
    }
  }
  return [];
}
