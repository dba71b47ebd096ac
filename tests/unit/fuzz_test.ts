/**
 * Property test of the config parser (issue 8): random mutations of valid deploy.yml and
 * config.yml files (characters and lines deleted, duplicated, swapped; YAML specials, tags,
 * anchors and alias bombs inserted; values swapped for other types; long strings, deep nesting,
 * unicode, bad bytes) never make `parseConfig` fail with anything but a {@link UsageError} (exit
 * code 2). A TypeError, a RangeError or a stack overflow is a crash, and so is a problem that does
 * not start with `<file>:` or `<file>:<line>:<column>:`, one that leaks a library's words
 * ("Invalid input", "Maximum call stack", "[object"), and a parse longer than 5 s. A file that is
 * still accepted must give a value that the schema accepts again (but for durations, in ms, read
 * again as seconds: past their maximum when long).
 *
 * Seeded: each run takes a new seed (CI: a fixed one) unless `FUZZ_SEED=<n>` replays one; `FUZZ_ITERATIONS=<n>`
 * sets its length (default 20,000). Prints `fuzz: N iterations, 0 crashes (seed S)`.
 */
import { FULL_DEPLOY_YML } from "../helpers/configs.ts";
import { assert, assertEquals } from "../helpers/assert.ts";
import { MAX_CONFIG_BYTES, parseConfig } from "../../src/config/load.ts";
import { deployFileSchema, serverConfigSchema } from "../../src/config/schema.ts";
import { ConfigError, UsageError } from "../../src/errors.ts";

/** mulberry32: a small, fast, seedable PRNG. */
function prng(seed: number) {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  const pick = <T>(items: readonly T[]): T => items[int(items.length)];
  return { next, int, pick };
}
type Random = ReturnType<typeof prng>;

const DEPLOY_FILES = [
  "name: site\ntype: static\n",
  "name: api\ntype: python\nhealthCheck: /health\ncommand: python -m uvicorn main:app --port 8000\n",
  "# yaml-language-server: $schema=https://example.invalid/deploy.schema.json\n" +
  FULL_DEPLOY_YML.replace("name: web-2", "name: web-2 # the app"),
  [
    "name: my-api",
    "type: docker",
    "healthCheck: { path: /health, window: 30s, interval: 1s, successes: 3, timeout: 2s }",
    "containerPort: 8000",
    "dockerfile: docker/Dockerfile",
    "buildArgs: { NODE_ENV: production, WORKERS: 2, DEBUG: false }",
    'command: ["serve", "--workers", "2"]',
    "",
  ].join("\n"),
  "name: quoted\ntype: node\nhealthCheck: '/'\ncommand: \"node 'a b' \\\"c\\\"\"\nwatch: 20s\n",
];

const CONFIG_FILES = [
  "port: 8000\nmanager: systemd\n",
  "port: 8000 # public\nmanager: pm2\nenv: production\nstrategy: blue-green\nslots: { blue: 21001, green: 21002 }\n" +
  "drainTimeout: 30s\n",
  "port: 443\nmanager: systemd\nenv: staging.eu-1\nstrategy: restart\nslots:\n  blue: 1024\n  green: 65535\n",
];

const ALL_FILES = [...DEPLOY_FILES, ...CONFIG_FILES];

/** Characters and fragments that mean something to YAML, or to a terminal, or to nobody. */
const SPECIALS = [
  ..."&*!?:-[]{}|>%@`#'\",\\\t\n\r\0 ~=<",
  "\uFEFF",
  "\uFFFD",
  "\u2028",
  "\u0085",
  "\u202E",
  "\u200B",
  "\uD800",
  "\uDFFF",
  "é",
  "😀",
  "&a ",
  "*a",
  "&a",
  "!!binary ",
  "!!str ",
  "!!int ",
  "!!float ",
  "!!map ",
  "!!seq ",
  "!!set ",
  "!!omap ",
  "!!timestamp ",
  "!!null ",
  "!local ",
  "!<tag:yaml.org,2002:str> ",
  "? ",
  ": ",
  "- ",
  "<<: ",
  "--- ",
  "...",
  "%YAML 1.2\n---\n",
  "%TAG ! tag:x,2000:\n---\n",
  "|-\n  ",
  ">+\n  ",
  "${HOME}",
  "$(id)",
  "`id`",
  "; rm -rf /",
  "../",
  "__proto__",
  "constructor",
  "toString",
  "0x1F",
  "0o17",
  "1e400",
  "-1e400",
  ".inf",
  "-.inf",
  ".nan",
  "9007199254740993",
  "-0",
  "null",
  "~",
  "true",
  "2001-12-14t21:59:43.10-05:00",
];

/** Values for type swaps: scalars of every YAML type, collections, and edge cases. */
const VALUES = [
  "",
  "~",
  "null",
  "true",
  "no",
  "0",
  "-1",
  "65536",
  "1.5",
  "1e400",
  ".nan",
  "-.inf",
  "0x10",
  "[]",
  "{}",
  "[a, b]",
  "{ a: 1 }",
  "[1, 2]",
  "''",
  '""',
  '"\\u0000"',
  '"\\ud800"',
  "!!binary aGVsbG8=",
  "!!timestamp 2001-12-14",
  "!!set { a }",
  "!!omap [ a: 1 ]",
  "!!float 1",
  "!!str 3",
  "&x [*x]",
  "*missing",
  "|\n  block\n",
  "$(whoami)",
  "echo `id` | sh",
  "../../etc/passwd",
  "a/b",
  "my app",
  "café",
  "\u202Eppa",
  "1h",
  "99999999999999999999999999h",
  "-5s",
];

const KEYS = [
  "name",
  "type",
  "healthCheck",
  "command",
  "build",
  "hooks",
  "keepReleases",
  "branch",
  "dockerfile",
  "buildArgs",
  "containerPort",
  "watch",
  "port",
  "manager",
  "env",
  "strategy",
  "slots",
  "drainTimeout",
  "path",
  "window",
  "interval",
  "successes",
  "timeout",
  "preDeploy",
  "postDeploy",
  "blue",
  "green",
  "unknownKey",
  "nmae",
  "__proto__",
  "",
];

/** One random change of `text`. */
function mutate(text: string, r: Random, others: readonly string[]): string {
  const at = r.int(text.length + 1);
  const lines = text.split("\n");
  const line = r.int(lines.length);
  switch (r.int(17)) {
    case 0: // delete a character or a run of them
      return text.slice(0, at) + text.slice(at + 1 + (r.int(4) === 0 ? r.int(20) : 0));
    case 1: // insert a special
      return text.slice(0, at) + r.pick(SPECIALS) + text.slice(at);
    case 2: { // duplicate a run of characters
      const end = at + r.int(30);
      return text.slice(0, end) + text.slice(at, end) + text.slice(end);
    }
    case 3: { // swap two characters
      const b = r.int(text.length + 1);
      const chars = [...text];
      [chars[at], chars[b]] = [chars[b] ?? "", chars[at] ?? ""];
      return chars.join("");
    }
    case 4: // delete a line
      lines.splice(line, 1);
      return lines.join("\n");
    case 5: // duplicate a line
      lines.splice(line, 0, lines[line]);
      return lines.join("\n");
    case 6: { // swap two lines
      const other = r.int(lines.length);
      [lines[line], lines[other]] = [lines[other], lines[line]];
      return lines.join("\n");
    }
    case 7: { // re-indent a line
      const indent = r.pick(["", " ", "  ", "   ", "    ", "\t", " \t", "        "]);
      lines[line] = indent + lines[line].trimStart();
      return lines.join("\n");
    }
    case 8: { // swap a value for one of another type
      const colon = lines[line].indexOf(": ");
      const value = r.pick(VALUES);
      lines[line] = colon < 0 ? `${lines[line]}: ${value}` : `${lines[line].slice(0, colon)}: ${value}`;
      return lines.join("\n");
    }
    case 9: { // rename a key, or add a key
      const key = r.pick(KEYS);
      const colon = lines[line].indexOf(":");
      if (colon < 0 || r.int(3) === 0) {
        lines.splice(line, 0, `${" ".repeat(r.int(3) * 2)}${key}: ${r.pick(VALUES)}`);
      } else {
        lines[line] = lines[line].replace(/^(\s*)[^:]*/, `$1${key}`);
      }
      return lines.join("\n");
    }
    case 10: { // a very long string: sometimes past the size limit
      const huge = r.int(20) === 0; // rarely: around the size limit (slower to parse)
      const length = huge
        ? r.pick([MAX_CONFIG_BYTES - text.length, MAX_CONFIG_BYTES + 1])
        : r.pick([10, 100, 1000, 5000]);
      const unit = r.pick(["x", "é", "😀", " ", "a ", "\\", "'"]);
      return text.slice(0, at) + unit.repeat(Math.max(0, Math.ceil(length / unit.length))) + text.slice(at);
    }
    case 11: { // deep nesting
      // Rarely deeper than the parser's stack: running out of it takes ~100 ms each time.
      const depth = r.int(100) === 0 ? r.pick([1000, 5000, 20_000]) : r.pick([2, 5, 20, 100, 300]);
      const [open, close] = r.pick([
        ["[", "]"],
        ["{", "}"],
        ["{a: ", "}"],
        ["[{a: ", "}]"],
        ["- ", ""],
        [
          "? ",
          "",
        ],
        ["&a [", "]"],
        ["!!seq [", "]"],
      ]);
      const closed = r.int(2) === 0;
      const nest = open.repeat(depth) + "x" + (closed ? close.repeat(depth) : "");
      const row = r.int(2) === 0 ? `${r.pick(KEYS)}: ${nest}` : `${r.pick(KEYS)}:\n${nest}`;
      lines.splice(line, 0, row);
      return lines.join("\n");
    }
    case 12: { // an alias bomb
      const width = 2 + r.int(10);
      const levels = 2 + r.int(8);
      const rows = [`a0: &a0 [${Array(width).fill("x").join(", ")}]`];
      for (let i = 1; i < levels; i++) rows.push(`a${i}: &a${i} [${Array(width).fill(`*a${i - 1}`).join(", ")}]`);
      lines.splice(line, 0, ...rows);
      return lines.join("\n");
    }
    case 13: { // random unicode, including lone surrogates and controls
      let chars = "";
      for (let i = 1 + r.int(8); i > 0; i--) {
        chars += r.int(3) === 0 ? String.fromCharCode(r.int(0x10000)) : String.fromCodePoint(r.int(0x110000));
      }
      return text.slice(0, at) + chars + text.slice(at);
    }
    case 14: { // splice in part of another valid file
      const other = r.pick(others);
      const from = r.int(other.length);
      return text.slice(0, at) + other.slice(from, from + r.int(80)) + text.slice(at);
    }
    case 15: // line endings
      return text.replaceAll("\n", r.pick(["\r\n", "\r", "\n\n", " \n", "\n# c\n", "\u2028"]));
    default: { // a byte of its UTF-8 changed: as execute decodes a commit's file, bad bytes become U+FFFD
      const bytes = new TextEncoder().encode(text);
      if (bytes.length) bytes[r.int(bytes.length)] = r.int(256);
      return new TextDecoder().decode(bytes);
    }
  }
}

/** A problem line names the file first, with line:column when it has a position. */
function wellFormed(problem: string, label: string): boolean {
  return problem.startsWith(`${label}: `) || new RegExp(`^${label.replaceAll(".", "\\.")}:\\d+:\\d+: `).test(problem);
}

/** Words that mean a message leaked from a library or a bug instead of explaining the file. */
const UNCLEAR = /Maximum call stack|\[object |undefined|Invalid input|unreachable|parseAllDocuments/;

/** Outside the quoted keys and values of the file, which may hold any of those words. */
const unclear = (problem: string) => UNCLEAR.test(problem.replace(/"(?:[^"\\]|\\.)*"/g, '""'));

/** Longer than this for one parse is a hang (a 2 KB file of nested `? ` keys once took minutes). */
const SLOW_MS = 5000;

interface Crash {
  schema: string;
  text: string;
  error: string;
}

/** Parses one mutated text; returns a crash, or whether the text was accepted (true) or refused (false). */
function check(text: string, which: "deploy" | "config"): Crash | boolean {
  const schema = which === "deploy" ? deployFileSchema : serverConfigSchema;
  const label = which === "deploy" ? "deploy.yml" : "config.yml";
  const crash = (error: string): Crash => ({ schema: which, text, error });
  let value: unknown;
  try {
    value = parseConfig(text, schema, label);
  } catch (error) {
    if (!(error instanceof UsageError) || error.exitCode !== 2) {
      return crash(error instanceof Error ? (error.stack ?? error.message) : String(error));
    }
    if (error instanceof ConfigError) {
      if (!error.problems.length) return crash(`a ConfigError without problems: ${error.message}`);
      const bad = error.problems.find((p) => !wellFormed(p, label) || unclear(p));
      if (bad) return crash(`unclear problem: ${bad}`);
    }
    return false;
  }
  const again = schema.safeParse(value);
  // A duration comes out in milliseconds and is read again as seconds (a bare number): a thousand
  // times longer, past its maximum (596h at most, what a timer can wait) when it was over ~36 min.
  const issues = again.success
    ? []
    : again.error.issues.filter((issue) =>
      !/^must be at most \d+(ms|s|m|h)\b.*\(got \d+(\.\d+)?\)$/.test(issue.message)
    );
  if (issues.length) {
    return crash(`accepted, but its value does not validate again: ${JSON.stringify(issues, null, 2)}`);
  }
  try {
    JSON.stringify(value);
  } catch (error) {
    return crash(`accepted, but its value is not serializable: ${error}`);
  }
  return true;
}

Deno.test("fuzz: mutated deploy.yml and config.yml files are refused with a ConfigError, never a crash", () => {
  // CI replays one fixed seed (a red CI must be reproducible); elsewhere each run explores a new one.
  const fixed = Deno.env.get("CI") === "true" ? "20261129" : undefined;
  const seed = Number(Deno.env.get("FUZZ_SEED") ?? fixed ?? crypto.getRandomValues(new Uint32Array(1))[0]);
  const iterations = Number(Deno.env.get("FUZZ_ITERATIONS") ?? 20_000);
  assert(Number.isInteger(seed) && Number.isInteger(iterations), "FUZZ_SEED and FUZZ_ITERATIONS are whole numbers");
  const r = prng(seed);
  const crashes: Crash[] = [];
  let accepted = 0;
  let parsing = 0;
  let slowest = { ms: 0, text: "" };
  const started = performance.now();
  for (let i = 0; i < iterations; i++) {
    const which = r.int(3) === 0 ? "config" : "deploy";
    let text = r.pick(which === "deploy" ? DEPLOY_FILES : CONFIG_FILES);
    for (let n = 1 + r.int(4); n > 0; n--) text = mutate(text, r, ALL_FILES);
    const t0 = performance.now();
    const result = check(text, which);
    const ms = performance.now() - t0;
    parsing += ms;
    if (ms > slowest.ms) slowest = { ms, text };
    if (typeof result === "object") crashes.push(result);
    else if (ms > SLOW_MS) crashes.push({ schema: which, text, error: `took ${ms.toFixed(0)} ms` });
    else if (result) accepted++;
  }
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  console.log(
    `fuzz: ${iterations} iterations, ${crashes.length} crashes (seed ${seed}); ${accepted} still valid; ` +
      `${seconds} s (${(parsing / 1000).toFixed(1)} s parsing), slowest parse ${slowest.ms.toFixed(0)} ms`,
  );
  // One example of each kind of crash (numbers and quoted values aside).
  const kinds = new Map<string, Crash>();
  for (const crash of crashes) {
    kinds.set(crash.error.replace(/\d+/g, "N").replace(/"[^"]*"/g, '""').slice(0, 120), crash);
  }
  for (const crash of [...kinds.values()].slice(0, 20)) {
    const text = JSON.stringify(crash.text);
    console.log(`--- ${crash.schema}: ${text.length > 600 ? `${text.slice(0, 600)}…` : text}\n${crash.error}`);
  }
  assertEquals(crashes.length, 0, `replay with FUZZ_SEED=${seed}`);
});
