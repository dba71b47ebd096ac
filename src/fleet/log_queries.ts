/**
 * Log search and context over the fleet database's stored lines.
 *
 * Full-text search walks the FTS5 index newest first (`ORDER BY lines_fts.rowid DESC`, with
 * `lines_fts` as the outer loop) and stops at the page size; ordering by rank would read every
 * match and is about 1000× slower, so it is never used. Paging is by line id (`before`).
 * @module
 */
import { UsageError } from "../errors.ts";
import type { FleetStore } from "./store.ts";
import { LINE_COLUMNS, type LineRow } from "./rows.ts";
import { clamp, type LineView, lineView, PAGE } from "./views.ts";

/** A part of a search snippet: render `text` as a text node, emphasized when `hit`. Never HTML. */
export interface SnippetPart {
  text: string;
  hit: boolean;
}

/** One search result. */
export interface SearchResult extends LineView {
  /** Up to 24 tokens around the match, the matched ones marked. */
  snippet: SnippetPart[];
}

/** A search: an FTS5 query and filters. */
export interface SearchParams {
  /** FTS5 syntax: words, "phrases", AND/OR/NOT, prefix*. */
  q: string;
  server?: string;
  app?: string;
  /** A file name as stored with the lines, e.g. `error.log`. */
  file?: string;
  /** Only lines with `ts >= since` (ms). */
  since?: number;
  /** Only lines with `ts <= until` (ms). */
  until?: number;
  /** Page size: default 50, at most 500. */
  limit?: number;
  /** Only lines with an id below this: the previous page's `nextBefore`. */
  before?: number;
}

/** A page of search results, newest first. */
export interface SearchPage {
  results: SearchResult[];
  /** Set when there are older results: pass it as `before` for the next page. */
  nextBefore?: number;
}

/** Which lines a context is asked around. */
export interface ContextParams {
  server: string;
  app: string;
  file: string;
  /** The byte offset of the hit in its file. */
  offset: number;
  /**
   * The hit's line id (a search result's `id`): picks the file generation when a rotated file had
   * a line at the same offset. Without it, the newest generation with a line at `offset` is used.
   */
  id?: number;
  /** Lines before and after the hit: default 20, at most 200. */
  lines?: number;
}

/** The lines around a hit, by offset ascending. */
export interface LogContext {
  server: string;
  app: string;
  file: string;
  /** The file generation the lines come from. */
  fileId: number;
  offset: number;
  lines: Array<LineView & { hit: boolean }>;
}

/** The context size limits of {@link logContext}. */
export const CONTEXT_LINES = { default: 20, max: 200 } as const;

/** How FTS5 queries are written, for error messages. */
export const SEARCH_SYNTAX_HELP = "Searches use SQLite FTS5 syntax: words match whole words anywhere in a line " +
  '(timeout refused = both), "double quotes" match a phrase, AND/OR/NOT (upper case) and parentheses combine, ' +
  "a trailing * matches a prefix (conn*). Any other character (/ . : - ' etc.) must be inside double quotes: " +
  'write "GET /api" or "db.example.com"; a double quote inside a phrase is written twice.';

/**
 * A search query FTS5 cannot parse, or one beyond {@link QUERY_LIMITS}. The message quotes the
 * query; `suggestion` explains the syntax, or the limits and how to narrow the search.
 */
export class SearchSyntaxError extends UsageError {
  /** The query as given. */
  readonly query: string;
  /** What SQLite said. */
  readonly detail: string;

  constructor(query: string, detail: string, suggestion = explain(query, detail)) {
    super(`cannot search for ${JSON.stringify(query)}: ${detail}`, { suggestion });
    this.query = query;
    this.detail = detail;
  }
}

function explain(query: string, detail: string): string {
  const quoted = `"${query.replaceAll('"', '""')}"`;
  const specific = /^no such column: /.test(detail)
    ? `A word followed by ":" names a column (the only one is "text"), and a leading "-" is a column filter too. `
    : /^unterminated string/.test(detail)
    ? "A double quote opens a phrase that must be closed. "
    : /^unknown special query/.test(detail)
    ? "A * must follow a word (conn*). "
    : "";
  const literal = query.trim() ? ` To search for the text as it is, quote it: ${quoted}` : "";
  return `${specific}${SEARCH_SYNTAX_HELP}${literal}`;
}

/**
 * What a search may ask for. A search runs synchronously (node:sqlite's DatabaseSync has no
 * progress handler and no interrupt, so a query that started cannot be stopped) and holds the
 * collector and the API until it ends; its cost grows with the lines and with the query's shape:
 * each prefix term (`x*`) merges the index entries of every word it starts, and each term and
 * NEAR group walks its words' entries. These limits are the bound, checked before a query runs.
 */
export const QUERY_LIMITS = { prefixes: 4, terms: 16, near: 20 } as const;

/** How to stay within {@link QUERY_LIMITS}, for the error of a query beyond them. */
const QUERY_LIMITS_HELP = `A search may have at most ${QUERY_LIMITS.prefixes} prefix terms (conn*), ` +
  `${QUERY_LIMITS.terms} words in all, and a NEAR distance of at most ${QUERY_LIMITS.near}: each one adds to ` +
  "what a search reads, and the collector waits while it runs. Narrow it: write whole words or longer prefixes " +
  '(connection or conn*, not c*), keep the few words that pick out the lines ("upstream timeout"), or search ' +
  "twice.";

/**
 * A query's lexemes as FTS5 reads them: a "string" (`""` inside it is a quote; unterminated to the
 * end), a bareword (ASCII letters, digits, `_`, U+001A and any non-ASCII character), or one other
 * character.
 */
// deno-lint-ignore no-control-regex
const LEXEME = /"(?:[^"]|"")*"?|[\w\x1a\u0080-\u{10FFFF}]+|\S/gu;
/** The words of a string or bareword, as the unicode61 tokenizer splits them. */
const WORD = /[\p{L}\p{N}\p{M}\p{Co}]+/gu;
/** NEAR's distance when none is given. */
const NEAR_DEFAULT = 10;

/** What bounds a query's cost: its prefix terms, its words (barewords and phrases), its largest NEAR distance. */
export interface QueryShape {
  prefixes: number;
  terms: number;
  near: number;
}

/** The {@link QueryShape} of `q` (as far as FTS5 can parse it; FTS5 refuses the rest itself). */
export function queryShape(q: string): QueryShape {
  const shape = { prefixes: 0, terms: 0, near: 0 };
  const lexemes = q.match(LEXEME) ?? [];
  let near: number | undefined; // the distance of the NEAR group being read
  const endNear = () => {
    shape.near = Math.max(shape.near, near ?? 0);
    near = undefined;
  };
  for (let i = 0; i < lexemes.length; i++) {
    const lexeme = lexemes[i];
    const next = lexemes[i + 1];
    if (lexeme === "*") shape.prefixes++;
    else if (lexeme === "NEAR" && next === "(") {
      near = NEAR_DEFAULT;
      i++;
    } else if (near !== undefined && lexeme === ",") {
      near = Number(next) || 0;
      i++;
    } else if (near !== undefined && lexeme === ")") endNear();
    else if (lexeme !== "AND" && lexeme !== "OR" && lexeme !== "NOT" && next !== ":") { // not an operator or column
      shape.terms += lexeme.match(WORD)?.length ?? 0;
    }
  }
  endNear();
  return shape;
}

/** Why `q` is beyond {@link QUERY_LIMITS} (a {@link SearchSyntaxError} that says the limit), or undefined. */
function checkQueryShape(q: string): SearchSyntaxError | undefined {
  const shape = queryShape(q);
  const over = shape.prefixes > QUERY_LIMITS.prefixes
    ? `it has ${shape.prefixes} prefix terms (x*); at most ${QUERY_LIMITS.prefixes} are searched`
    : shape.terms > QUERY_LIMITS.terms
    ? `it has ${shape.terms} words; at most ${QUERY_LIMITS.terms} are searched`
    : shape.near > QUERY_LIMITS.near
    ? `its NEAR distance is ${shape.near}; at most ${QUERY_LIMITS.near} is searched`
    : undefined;
  return over === undefined ? undefined : new SearchSyntaxError(q, over, QUERY_LIMITS_HELP);
}

/** SQLite errors that mean the MATCH expression is invalid (rather than a bug). */
const FTS_QUERY_ERROR = /^(fts5: |no such column: |unterminated string|unknown special query)/;

/** An empty FTS5 table in memory, to check queries without a database (config rules at start). */
let checker: import("node:sqlite").StatementSync | undefined;

/**
 * Why FTS5 cannot parse `q` (a {@link SearchSyntaxError}: its `column`, from 1, where SQLite points
 * at a token), or undefined when it can: the same check as a search, without a database.
 */
export function checkSearchQuery(q: string): (SearchSyntaxError & { column?: number }) | undefined {
  if (!q.trim()) return new SearchSyntaxError(q, "the query is empty");
  const costly = checkQueryShape(q);
  if (costly) return costly;
  if (!checker) {
    const { DatabaseSync } = process.getBuiltinModule("node:sqlite") as typeof import("node:sqlite");
    const db = new DatabaseSync(":memory:");
    db.exec("CREATE VIRTUAL TABLE q USING fts5(text)");
    checker = db.prepare("SELECT rowid FROM q WHERE q MATCH ?");
  }
  try {
    checker.all(q);
    return undefined;
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    if (!FTS_QUERY_ERROR.test(message)) throw error;
    const near = /near "(.*)"$/.exec(message)?.[1];
    const at = near === undefined ? -1 : near === "" ? q.trimEnd().length : q.indexOf(near); // "": at the end
    return Object.assign(new SearchSyntaxError(q, message), at < 0 ? {} : { column: at + 1 });
  }
}

/**
 * Full-text search of the log lines, newest first, `limit` per page (default 50, at most 500).
 * Throws {@link SearchSyntaxError} when FTS5 cannot parse `q` or it is beyond {@link QUERY_LIMITS}.
 */
export function searchLogs(store: FleetStore, params: SearchParams): SearchPage {
  const q = params.q;
  if (!q.trim()) throw new SearchSyntaxError(q, "the query is empty");
  const costly = checkQueryShape(q);
  if (costly) throw costly;
  const limit = clamp(params.limit, PAGE.default, PAGE.max);
  const where = ["lines_fts MATCH :q"];
  const values: Record<string, string | number> = { q, open: MARK_OPEN, close: MARK_CLOSE, limit: limit + 1 };
  // Bounds on lines_fts.rowid are given to FTS5 itself, which then starts its walk there.
  if (params.before !== undefined) {
    where.push("lines_fts.rowid < :before");
    values.before = params.before;
  }
  for (const key of ["server", "app", "file"] as const) {
    const value = params[key];
    if (value !== undefined) {
      where.push(`lines.${key} = :${key}`);
      values[key] = value;
    }
  }
  // `+` keeps SQLite from driving the query by the lines_ts index (then sorting every match).
  if (params.since !== undefined) {
    where.push("+lines.ts >= :since");
    values.since = params.since;
  }
  if (params.until !== undefined) {
    where.push("+lines.ts <= :until");
    values.until = params.until;
  }
  const statement = store.sql(
    `SELECT ${LINE_COLUMNS}, highlight(lines_fts, 0, :open, :close) AS snippet
     FROM lines_fts CROSS JOIN lines ON lines.id = lines_fts.rowid
     WHERE ${where.join(" AND ")}
     ORDER BY lines_fts.rowid DESC LIMIT :limit`,
  );
  let rows: Array<LineRow & { snippet: string }>;
  try {
    rows = statement.all(values) as unknown as Array<LineRow & { snippet: string }>;
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    if (FTS_QUERY_ERROR.test(message)) throw new SearchSyntaxError(q, message);
    throw error;
  }
  const more = rows.length > limit;
  const results = rows.slice(0, limit).map((row) => ({
    ...lineView(row),
    snippet: snippetParts(row.snippet),
  }));
  return more ? { results, nextBefore: results[results.length - 1].id } : { results };
}

/**
 * The lines around `offset` in one file generation: up to `lines` before and after (default 20, at
 * most 200), by offset ascending, the hit marked. Undefined when no stored line starts at `offset`.
 */
export function logContext(store: FleetStore, params: ContextParams): LogContext | undefined {
  const count = clamp(params.lines, CONTEXT_LINES.default, CONTEXT_LINES.max, 0);
  let found: LineRow | undefined;
  if (params.id !== undefined) {
    found = store.sql(`SELECT ${LINE_COLUMNS} FROM lines WHERE id = ?`).get(params.id) as LineRow | undefined;
    if (
      found && (found.server !== params.server || found.app !== params.app || found.file !== params.file ||
        found.offset !== params.offset)
    ) found = undefined;
  } else {
    // Through the server's files: each probe is one lookup in the (file_id, offset) index.
    found = store.sql(
      `SELECT ${LINE_COLUMNS} FROM lines
       WHERE file_id IN (SELECT id FROM files WHERE server = :server) AND offset = :offset AND server = :server
         AND app = :app AND file = :file
       ORDER BY file_id DESC LIMIT 1`,
    ).get({ server: params.server, app: params.app, file: params.file, offset: params.offset }) as
      | LineRow
      | undefined;
  }
  if (!found) return undefined;
  const hit = found;
  const before = store.sql(
    `SELECT ${LINE_COLUMNS} FROM lines WHERE file_id = ? AND offset < ? ORDER BY offset DESC LIMIT ?`,
  ).all(hit.file_id, hit.offset, count) as unknown as LineRow[];
  const after = store.sql(
    `SELECT ${LINE_COLUMNS} FROM lines WHERE file_id = ? AND offset > ? ORDER BY offset LIMIT ?`,
  ).all(hit.file_id, hit.offset, count) as unknown as LineRow[];
  const lines = [...before.reverse(), hit, ...after].map((row) => ({ ...lineView(row), hit: row.id === hit.id }));
  return { server: hit.server, app: hit.app, file: hit.file, fileId: hit.file_id, offset: hit.offset, lines };
}

/**
 * The snippet markers: one character each (highlight()'s cost grows with what it writes: random
 * 36-character markers made a page of 50 lines of 8,000 hits take 3 s, these 0.25 s), and two no
 * stored line holds: ingestion turns them into U+FFFD (./ingest.ts), so a line cannot forge a hit.
 */
export const MARK_OPEN = "\uFFFE";
export const MARK_CLOSE = "\uFFFF";

/** A snippet shows this much of the line before its first hit, and this much in all (characters). */
const SNIPPET_BEFORE = 60;
const SNIPPET_CHARS = 200;

/**
 * The snippet of a line as FTS5's highlight() marked it: from a little before its first hit, as
 * many parts (the matched ones with `hit`) as fit in {@link SNIPPET_CHARS}, `…` where it is cut.
 * highlight() and this are linear in the line; FTS5's snippet() weighed every window against every
 * hit, quadratic (a line of 8,000 one-letter words took 21 s for a page of 50).
 */
function snippetParts(marked: string): SnippetPart[] {
  const parts: SnippetPart[] = [];
  let hit = false;
  let from = 0;
  for (
    let at = marked.indexOf(MARK_OPEN);
    from < marked.length;
    at = marked.indexOf(hit ? MARK_CLOSE : MARK_OPEN, from)
  ) {
    const end = at < 0 ? marked.length : at;
    if (end > from) parts.push({ text: marked.slice(from, end), hit });
    if (at < 0) break;
    from = at + 1;
    hit = !hit;
  }
  return cut(parts);
}

/** `parts` from a little before the first hit, at most {@link SNIPPET_CHARS} of them, `…` where cut. */
function cut(parts: SnippetPart[]): SnippetPart[] {
  const first = Math.max(0, parts.findIndex((part) => part.hit));
  const out: SnippetPart[] = [];
  const lead = first > 0 ? parts[first - 1].text : "";
  if (lead) out.push({ text: lead.length > SNIPPET_BEFORE ? `…${tail(lead, SNIPPET_BEFORE)}` : lead, hit: false });
  let used = out[0]?.text.length ?? 0;
  let at = first;
  for (; at < parts.length && used < SNIPPET_CHARS; at++) {
    const part = parts[at];
    const room = SNIPPET_CHARS - used;
    if (part.text.length > room) { // a hit too: a prefix query can match a word of thousands of characters
      if (part.hit) out.push({ text: head(part.text, room), hit: true }, { text: "…", hit: false });
      else out.push({ text: `${head(part.text, room)}…`, hit: false });
      return out;
    }
    out.push(part);
    used += part.text.length;
  }
  if (at < parts.length) out.push({ text: "…", hit: false });
  return out;
}

/** The first `n` UTF-16 units of `text`, one fewer rather than half of a surrogate pair. */
function head(text: string, n: number): string {
  return text.slice(0, n > 0 && /[\uD800-\uDBFF]/.test(text[n - 1] ?? "") ? n - 1 : n);
}

/** The last `n` UTF-16 units of `text`, one fewer rather than half of a surrogate pair. */
function tail(text: string, n: number): string {
  const start = text.length - n;
  return text.slice(/[\uDC00-\uDFFF]/.test(text[start] ?? "") ? start + 1 : start);
}
