/**
 * Reads YAML config files and validates them in one pass: every problem at once, each with
 * `file:line:column`, its key path, and a "did you mean" for unknown keys.
 * @module
 */
import { isMap, isPair, isScalar, LineCounter, type Node, parseDocument } from "../yaml.ts";
import type { z } from "zod";
import { ConfigError, didYouMean } from "../errors.ts";
import { MISPLACED } from "./misplaced.ts";

/** Files larger than this are refused before parsing. */
export const MAX_CONFIG_BYTES = 64 * 1024;
const MAX_ALIASES = 50;
/** More problems than this are counted, not listed: a broken file can have thousands. */
const MAX_PROBLEMS = 50;
/** The parser's messages that speak to its programmer rather than to the file's author. */
const SYNTAX: Record<string, string> = {
  MULTIPLE_DOCS: "the file holds more than one YAML document (a line `---` starts another); it must be one mapping",
};
const TOO_DEEP = "YAML syntax error: lists and mappings are nested too deeply";

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
    const listed = problems.length > MAX_PROBLEMS
      ? [...problems.slice(0, MAX_PROBLEMS), `${label}: ${problems.length - MAX_PROBLEMS} more problems not shown`]
      : problems;
    throw new ConfigError(`Cannot read ${label}${context ? ` from ${context}` : ""}${count}:`, listed);
  };
  const bytes = text.length > MAX_CONFIG_BYTES / 4 ? new TextEncoder().encode(text).length : text.length;
  if (bytes > MAX_CONFIG_BYTES) {
    fail([`${label}: file is ${bytes} bytes; config files are limited to ${MAX_CONFIG_BYTES} bytes`]);
  }
  if (text.includes("\uFFFD")) fail([`${label}: file is not valid UTF-8 text`]);
  const lines = new LineCounter();
  const at = (offset: number) => {
    // The end of the file (where the parser found something unclosed) is the end of its last line, not the line after.
    if (offset >= text.length && text.endsWith("\n")) offset = text.length - (text.endsWith("\r\n") ? 2 : 1);
    const { line, col } = lines.linePos(offset);
    return `${label}:${line}:${col}`;
  };
  let doc: ReturnType<typeof parseDocument>;
  try {
    doc = parseDocument(text, { lineCounter: lines, uniqueKeys: true, prettyErrors: false, strict: true });
  } catch (error) {
    if (error instanceof RangeError) fail([`${label}: ${TOO_DEEP}`]); // the parser ran out of stack
    throw error;
  }
  if (doc.errors.length) {
    // The parser catches running out of stack on deep nesting, once per level: report it once.
    const deep = doc.errors.find((e) => e.code === "RESOURCE_EXHAUSTION");
    if (deep) fail([`${at(deep.pos[0])}: ${TOO_DEEP}`]);
    const lines = new Set<number>();
    fail(doc.errors.flatMap((e) => {
      // An unquoted value starting with `*` (a cron schedule) reads as YAML aliases: one problem, and the fix.
      const start = text.lastIndexOf("\n", e.pos[0] - 1) + 1;
      const end = text.indexOf("\n", e.pos[0]);
      const line = text.slice(start, end < 0 ? undefined : end);
      const star = /^(\s*(?:-\s+)?[^\s:#][^:#]*:\s+)(\*[^#]*?)\s*(#.*)?$/.exec(line);
      if (star && e.message.startsWith("Unexpected alias")) {
        if (lines.has(start)) return [];
        lines.add(start);
        return [
          `${at(start + star[1].length)}: YAML reads a value that starts with * as an alias: quote it, ` +
          `e.g. ${JSON.stringify(star[2])}`,
        ];
      }
      // The duplicate key named (the parser only says "Map keys must be unique").
      const key = e.code === "DUPLICATE_KEY"
        ? /^\s*(?:-\s+)?("[^"]*"|'[^']*'|[^:#]+?)\s*:/.exec(text.slice(e.pos[0]))?.[1]
        : "";
      const why = key ? `the key ${key} appears twice in the same mapping (keep one)` : undefined;
      return [`${at(e.pos[0])}: YAML syntax error: ${why ?? SYNTAX[e.code] ?? e.message.split("\n")[0]}`];
    }));
  }
  const { complexKeys, aliases } = scan(doc.contents);
  // A list or mapping as a key is never a config key, and turning nested ones into text takes
  // exponential time (a 2 KB file of `? ? ? …` took minutes): refuse them before that.
  if (complexKeys.length) {
    fail(complexKeys.map((key) => `${at(key.range?.[0] ?? 0)}: a key must be a plain name, not a list or mapping`));
  }
  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: MAX_ALIASES });
  } catch (error) {
    if (error instanceof RangeError) fail([`${label}: ${TOO_DEEP}`]);
    const message = (error as Error).message;
    const name = /^Unresolved alias.*: (.*)$/.exec(message)?.[1];
    const alias = aliases.find((node) => name !== undefined && (node as { source?: string }).source === name);
    if (alias) {
      const shown = shorten(visible(name!));
      fail([`${at(alias.range?.[0] ?? 0)}: YAML syntax error: alias *${shown} names no anchor &${shown} before it`]);
    }
    const limit = message.includes("alias count") ? ` (YAML aliases are limited to ${MAX_ALIASES})` : "";
    fail([`${label}: YAML error: ${message}${limit}`]);
  }
  if (data === null || data === undefined) fail([`${label}: file is empty; it must be a YAML mapping of keys`]);
  if (typeof data !== "object" || Array.isArray(data)) {
    fail([`${at(0)}: the file must be a YAML mapping of keys (key: value), not ${describe(data)}`]);
  }
  const result = schema.safeParse(data);
  if (result.success) return result.data;
  const checked = new Set<string>();
  const problems = withoutFractions(schema, data, result.error.issues).flatMap(unwrapUnion).flatMap((issue) => {
    // A value failing its type also fails its range checks (1e20 is no whole number, nor up to 65535): say it once.
    if (issue.code !== "unrecognized_keys" && issue.code !== "custom") {
      const where = JSON.stringify(issue.path);
      if (checked.has(where)) return [];
      checked.add(where);
    }
    const keys = issue.code === "unrecognized_keys" ? issue.keys : [undefined];
    return keys.map((key) => {
      const path = key === undefined ? issue.path as Path : [...issue.path as Path, key];
      // A custom problem about a key itself (not its value, `params.atKey`) is at the key.
      const atKey = issue.code === "custom" && (issue.params as { atKey?: boolean } | undefined)?.atKey === true;
      let offset = offsetOf(doc.contents, path, key !== undefined || atKey);
      // A custom problem may point inside a one-line string value: `params.column` (from 1) in its text.
      const column = issue.code === "custom" ? (issue.params as { column?: number } | undefined)?.column : undefined;
      if (column !== undefined) offset += (/["']/.test(text[offset] ?? "") ? 1 : 0) + column - 1;
      // A custom problem may name another key (`params.ref`) where its text says `{ref}`: by key path and position.
      const ref = issue.code === "custom" ? (issue.params as { ref?: Path } | undefined)?.ref : undefined;
      const named = ref ? `"${ref.join(".")}" (${at(offsetOf(doc.contents, ref, false))})` : "";
      return { offset, text: explain(issue, path, schema, data).replace("{ref}", named) };
    });
  });
  fail(problems.sort((a, b) => a.offset - b.offset).map((p) => `${at(p.offset)}: ${p.text}`));
  throw new Error("unreachable");
}

/**
 * A fraction where a whole number goes is the one problem after which zod skips the checks across
 * keys (./cross_checks.ts): parsed again with those values as text (a wrong type, which does not
 * stop them, and keeps the checks that read those keys from running on a default), what else is
 * wrong is added, so that every problem is found in one pass.
 */
function withoutFractions(schema: z.ZodType, data: unknown, issues: z.core.$ZodIssue[]): z.core.$ZodIssue[] {
  const fractions = issues.filter((issue) =>
    issue.code === "invalid_type" && "format" in issue && typeof valueAt(data, issue.path as Path) === "number"
  ).map((issue) => issue.path);
  if (!fractions.length) return issues;
  const copy = structuredClone(data);
  for (const path of fractions) {
    const holder = valueAt(copy, path.slice(0, -1) as Path) as Record<PropertyKey, unknown>;
    holder[path.at(-1)!] = String(holder[path.at(-1)!]);
  }
  const again = schema.safeParse(copy);
  if (again.success) return issues;
  const seen = new Set(issues.map((issue) => JSON.stringify([issue.path, issue.message])));
  const under = (path: PropertyKey[], prefix: PropertyKey[]) => prefix.every((key, i) => path[i] === key);
  return [
    ...issues,
    ...again.error.issues.filter((issue) =>
      !seen.has(JSON.stringify([issue.path, issue.message])) && !fractions.some((path) => under(issue.path, path))
    ),
  ];
}

/**
 * A value matching no option of a union: when exactly one option got past the value's own type
 * (its problems are all inside the value), those problems say what is wrong; else the union's.
 */
function unwrapUnion(issue: z.core.$ZodIssue): z.core.$ZodIssue[] {
  if (issue.code !== "invalid_union") return [issue];
  const inside = issue.errors.filter((errors) => errors.length && errors.every((e) => e.path.length > 0));
  if (inside.length !== 1) return [issue];
  return inside[0].map((e) => ({ ...e, path: [...issue.path, ...e.path] })).flatMap(unwrapUnion);
}

function explain(issue: z.core.$ZodIssue, path: Path, schema: z.ZodType, data: unknown): string {
  const key = path.length ? `"${shorten(visible(path.join(".")))}"` : "the file";
  if (issue.code === "unrecognized_keys") {
    const known = knownKeys(schema, path.slice(0, -1));
    const hints = path.length === 1 ? MISPLACED.get(schema) : undefined;
    // Own keys only: `constructor:` is no other file's key either.
    const elsewhere = hints && Object.hasOwn(hints, path[0]) ? hints[String(path[0])] : undefined;
    if (elsewhere) return `${key} is not a key of this file: ${elsewhere()}`;
    const guess = didYouMean(String(path.at(-1)), known);
    return `${key} is not a known key` + (guess ? `; did you mean "${guess}"?` : `; known keys: ${known.join(", ")}`);
  }
  const value = valueAt(data, path);
  if (value === undefined && (issue.code === "invalid_type" || issue.code === "invalid_value")) {
    return `${key} is required` + (issue.code === "invalid_value" ? ` and ${issue.message}` : "");
  }
  const message = issue.code === "invalid_type" && issue.message.startsWith("Invalid input")
    ? `must be ${EXPECTED[issue.expected] ?? issue.expected}`
    : issue.message;
  // A custom problem about a whole item of a list (a rule needs…) says what is wrong with it: not "(got a mapping)".
  const whole = issue.code === "custom" && typeof path.at(-1) === "number" && typeof value === "object" &&
    value !== null;
  // A list too long or too short says how many it has.
  const counted = Array.isArray(value) && (issue.code === "too_big" || issue.code === "too_small")
    ? `${value.length} ${value.length === 1 ? "item" : "items"}`
    : undefined;
  // A problem of the key itself (a name a mapping cannot have) is not about its value.
  const ofKey = issue.code === "custom" && (issue.params as { atKey?: boolean } | undefined)?.atKey === true;
  const got = value === undefined || message.includes("(got") || whole || ofKey
    ? ""
    : ` (got ${counted ?? describe(value)})`;
  return `${key} ${message}${got}`;
}

const EXPECTED: Record<string, string> = {
  int: "a whole number",
  number: "a number",
  string: "a string",
  object: "a mapping (key: value)",
  array: "a list",
  record: "a mapping (key: value)",
  boolean: "true or false",
};

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "a list";
  if (value instanceof Uint8Array) return "binary data (!!binary)";
  if (value instanceof Date) return `a date (${Number.isNaN(value.getTime()) ? "invalid" : value.toISOString()})`;
  if (value instanceof Set) return "a set";
  if (typeof value === "object") return "a mapping";
  if (typeof value === "string" && value.length === 0) return "an empty string";
  if (typeof value === "number" && !Number.isFinite(value)) return String(value);
  return shorten(visible(JSON.stringify(value) ?? String(value)));
}

function shorten(text: string): string {
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

/** Escapes what a terminal would not show (controls, zero-width and direction marks, odd spaces). */
function visible(text: string): string {
  return text.replace(
    /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Zs}\p{Co}\p{Cs}\p{Cn}]/gu,
    (c) => c === " " ? c : `\\u${c.codePointAt(0)!.toString(16).padStart(4, "0")}`,
  );
}

function valueAt(data: unknown, path: Path): unknown {
  let value = data;
  for (const key of path) {
    if (value === null || typeof value !== "object") return undefined;
    value = (value as Record<string | number, unknown>)[key];
  }
  return value;
}

/**
 * Where the key at `path` is in YAML `text` (a file {@link parseConfig} took): `label:line:column`,
 * or `label` alone when the key is not in it (a value from elsewhere, a default). For problems
 * found past the file's own checks (what a server refuses of a deploy.yml).
 */
export function positionIn(text: string, label: string, path: Path): string {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines });
  if (!doc.hasIn(path)) return label;
  const { line, col } = lines.linePos(offsetOf(doc.contents, path, true));
  return `${label}:${line}:${col}`;
}

/** Offset of the node at `path` (its key when `atKey`), or of the nearest ancestor that exists. */
function offsetOf(root: unknown, path: Path, atKey: boolean): number {
  let node = root as Node | null;
  let offset = node?.range?.[0] ?? 0;
  for (const [i, key] of path.entries()) {
    if (!node || !("items" in node)) break;
    const items = (node as { items: unknown[] }).items;
    const item = isMap(node)
      ? items.find((pair) => isPair(pair) && isScalar(pair.key) && String(pair.key.value ?? "") === String(key))
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

/**
 * The keys that are lists or mappings, and the aliases, of a document: walked with a stack of
 * its own, as the document may be nested as deeply as the parser could go.
 */
function scan(root: unknown): { complexKeys: Node[]; aliases: Node[] } {
  const complexKeys: Node[] = [];
  const aliases: Node[] = [];
  const stack = [root];
  while (stack.length) {
    const node = stack.pop();
    if (!node || typeof node !== "object") continue;
    if (isPair(node)) {
      const key = node.key as Node | null;
      if (key && typeof key === "object" && "items" in key) complexKeys.push(key);
      else stack.push(key);
      stack.push(node.value);
    } else if ("items" in node) {
      for (const item of (node as { items: unknown[] }).items) stack.push(item);
    } else if ("source" in node && !isScalar(node)) {
      aliases.push(node as Node);
    }
  }
  const byOffset = (a: Node, b: Node) => (a.range?.[0] ?? 0) - (b.range?.[0] ?? 0);
  return { complexKeys: complexKeys.sort(byOffset), aliases: aliases.sort(byOffset) };
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
    } else if (def.type === "array") {
      if (path.length === 0) return [];
      path.shift(); // an element's index
      current = def.element;
    } else if (def.type === "record") {
      if (path.length === 0) return [];
      path.shift(); // a key of the mapping
      current = def.valueType;
    } else if (def.type === "pipe" && (def.in as { _zod: { def: { type: string } } })._zod.def.type === "transform") {
      current = def.out; // a preprocess: the schema it feeds
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
