/**
 * The corpus of malformed config files (issue 8): every file under tests/fixtures/config/deploy/
 * (deploy.yml) and tests/fixtures/config/server/ (config.yml), and the huge and non-UTF-8 files
 * generated here, gives exactly the problems of its `.expect` file, exit code 2, and changes
 * nothing on disk. Checked twice:
 *
 * - `parseConfig` throws a ConfigError (a UsageError: exit code 2) with those problems;
 * - end to end, `deploy-paradigm execute <bare repo> <commit>` on a server in a temp prefix: one
 *   bare repository holds a commit per deploy.yml fixture; each config.yml fixture is the
 *   config.yml of an app of its own, deploying a valid commit. Every run exits 2 and prints the
 *   problems, and the prefix is the same file for file (size, mtime) before and after.
 *
 * Fixtures are named `NN-what.yml.in` (`deno fmt` formats `.yml` files, and cannot parse these).
 * A `.expect` file lists the problems in order, one a line, with the file named `deploy.yml` or
 * `config.yml`; a line starting with `~ ` is a regular expression instead of the exact text.
 * Prints `corpus: N/N files handled`.
 */
import { join, resolve } from "node:path";
import { assert, assertEquals } from "../helpers/assert.ts";
import { BIN, run, TestServer } from "../helpers/server.ts";
import { snapshot } from "../helpers/state.ts";
import { MAX_CONFIG_BYTES, parseConfig } from "../../src/config/load.ts";
import { deployFileSchema, serverConfigSchema } from "../../src/config/schema.ts";
import { ConfigError } from "../../src/errors.ts";

const FIXTURES = resolve(import.meta.dirname!, "../fixtures/config");

type Kind = "deploy" | "server";

/** One malformed file and the problems it must produce. */
interface Case {
  kind: Kind;
  /** The fixture's name, e.g. `deploy/01-tab-indentation`. */
  name: string;
  bytes: Uint8Array;
  expect: string[];
}

const LABEL: Record<Kind, string> = { deploy: "deploy.yml", server: "config.yml" };

/** The committed fixtures, in name order. */
async function committed(kind: Kind): Promise<Case[]> {
  const dir = join(FIXTURES, kind);
  const names = [];
  for await (const entry of Deno.readDir(dir)) {
    if (entry.name.endsWith(".yml.in")) names.push(entry.name.slice(0, -".yml.in".length));
  }
  return await Promise.all(
    names.sort().map(async (name) => {
      const expectation = await Deno.readTextFile(join(dir, `${name}.expect`));
      return {
        kind,
        name: `${kind}/${name}`,
        bytes: await Deno.readFile(join(dir, `${name}.yml.in`)),
        expect: expectation.split("\n").filter((line) => line !== ""),
      };
    }),
  );
}

/** Files too big to commit, or not text: made here, and counted with the others. */
function generated(kind: Kind): Case[] {
  const label = LABEL[kind];
  const cases: Case[] = [];
  const add = (name: string, bytes: Uint8Array, problem: string) =>
    cases.push({ kind, name: `${kind}/generated-${name}`, bytes, expect: [problem] });
  const utf8 = (text: string) => new TextEncoder().encode(text);
  const tooBig = (text: string) =>
    `${label}: file is ${text.length} bytes; config files are limited to ${MAX_CONFIG_BYTES} bytes`;
  const notUtf8 = `${label}: file is not valid UTF-8 text`;
  const valid = kind === "deploy" ? "name: corpus\ntype: static\n" : "port: 8000\nmanager: pm2\n";

  // A valid file one byte over the limit, padded with a comment.
  const over = valid + "#" + "x".repeat(MAX_CONFIG_BYTES - valid.length - 2) + "\n\n";
  add("huge-one-byte-over", utf8(over), tooBig(over));
  // 4 MB of list items: the size is checked before anything is parsed.
  const huge = valid + "hooks:\n  preDeploy:\n" + "    - x\n".repeat(512 * 1024);
  add("huge-4-mb", utf8(huge), tooBig(huge));
  // Latin-1, as an editor elsewhere might save it.
  add("latin-1", Uint8Array.from(valid.replace("\n", " # caf\u00e9\n"), (c) => c.charCodeAt(0)), notUtf8);
  // UTF-16 with its byte order mark.
  add("utf-16", Uint8Array.from([0xff, 0xfe, ...[...valid].flatMap((c) => [c.charCodeAt(0), 0])]), notUtf8);
  // Binary garbage.
  add("binary", new Uint8Array(4096).map((_, i) => (i * 2654435761) >>> 24), notUtf8);
  return cases;
}

/** The whole corpus: deploy.yml files, then config.yml files. */
async function corpus(): Promise<Case[]> {
  return [...await committed("deploy"), ...generated("deploy"), ...await committed("server"), ...generated("server")];
}

/** Why `problems` are not the expected ones, or undefined when they are. */
function mismatch(problems: string[], expect: string[]): string | undefined {
  const lines = (list: string[]) => list.map((line) => `    ${line}`).join("\n");
  const same = problems.length === expect.length &&
    expect.every((want, i) =>
      want.startsWith("~ ") ? new RegExp(want.slice(2)).test(problems[i]) : want === problems[i]
    );
  return same ? undefined : `expected:\n${lines(expect)}\n  got:\n${lines(problems)}`;
}

/** Reports which cases failed, prints the count, and fails the test unless every case was handled. */
function report(what: string, cases: Case[], failures: Map<string, string>): void {
  console.log(`corpus: ${cases.length - failures.size}/${cases.length} files handled (${what})`);
  for (const [name, why] of failures) console.log(`✗ ${name}\n  ${why}`);
  assertEquals([...failures.keys()], [], `${failures.size} corpus files were not handled as expected`);
}

Deno.test("corpus: every malformed file is refused by parseConfig with its exact problems (exit code 2)", async () => {
  const cases = await corpus();
  assert(cases.length >= 40, `the corpus has ${cases.length} files`);
  const failures = new Map<string, string>();
  for (const { kind, name, bytes, expect } of cases) {
    const text = new TextDecoder().decode(bytes); // as execute reads a commit's deploy.yml
    try {
      parseConfig(text, kind === "deploy" ? deployFileSchema : serverConfigSchema, LABEL[kind]);
      failures.set(name, "accepted");
    } catch (error) {
      if (!(error instanceof ConfigError) || error.exitCode !== 2) {
        failures.set(name, `not a ConfigError with exit code 2: ${error instanceof Error ? error.stack : error}`);
        continue;
      }
      const why = mismatch(error.problems, expect);
      if (why) failures.set(name, why);
    }
  }
  report("parseConfig", cases, failures);
});

/** Runs `fn` over `items`, `limit` at a time. */
async function eachLimited<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  const queue = [...items];
  await Promise.all(Array.from({ length: limit }, async () => {
    for (let item = queue.shift(); item !== undefined; item = queue.shift()) await fn(item);
  }));
}

/**
 * Commits, each on a branch of its own, whose only file is deploy.yml with the given bytes, made
 * by one `git fast-import`. Returns the commit of each, in order.
 */
async function commitAll(repo: string, files: Uint8Array[], env: Record<string, string>): Promise<string[]> {
  const encoder = new TextEncoder();
  const chunks: Uint8Array[] = [];
  files.forEach((bytes, i) => {
    chunks.push(encoder.encode(`blob\nmark :${i + 1}\ndata ${bytes.length}\n`), bytes, encoder.encode("\n"));
    chunks.push(encoder.encode(
      `commit refs/heads/corpus/${i}\ncommitter Test <test@example.invalid> 1700000000 +0000\ndata 7\ncorpus\n` +
        `M 100644 :${i + 1} deploy.yml\n\n`,
    ));
  });
  const child = new Deno.Command("git", {
    args: ["--git-dir", repo, "fast-import", "--quiet"],
    env,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  for (const chunk of chunks) await writer.write(chunk);
  await writer.close();
  const out = await child.output();
  assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
  const refs = await run([
    "git",
    "--git-dir",
    repo,
    "for-each-ref",
    "--format=%(refname) %(objectname)",
    "refs/heads/corpus/",
  ]);
  const commits = new Map(refs.stdout.trim().split("\n").map((line) => line.split(" ") as [string, string]));
  return files.map((_, i) => commits.get(`refs/heads/corpus/${i}`)!);
}

Deno.test("corpus: `execute` refuses every malformed file with exit code 2, its problems, and no change on disk", async () => {
  const cases = await corpus();
  const server = await TestServer.create();
  try {
    // deploy.yml fixtures: commits of the app "corpus", whose config.yml is valid.
    const repo = await server.setupApp("corpus", { port: 8000, strategy: "restart" });
    const deployCases = cases.filter((c) => c.kind === "deploy");
    const serverCases = cases.filter((c) => c.kind === "server");
    // config.yml fixtures: an app each (srv-0, srv-1, …), deploying a valid commit of the same
    // repository, which /var/repos/srv-N.git links to.
    const serverApp = (i: number) => `srv-${i}`;
    const valid = serverCases.map((_, i) => new TextEncoder().encode(`name: ${serverApp(i)}\ntype: static\n`));
    const commits = await commitAll(repo, [...deployCases.map((c) => c.bytes), ...valid], server.env);
    const runs: { case: Case; commit: string; app: string }[] = deployCases.map((c, i) => ({
      case: c,
      commit: commits[i],
      app: "corpus",
    }));
    for (const [i, c] of serverCases.entries()) {
      const paths = server.paths(serverApp(i));
      await Deno.mkdir(paths.dir, { recursive: true });
      await Deno.writeFile(paths.config, c.bytes);
      await Deno.symlink(repo, paths.repo);
      runs.push({ case: c, commit: commits[deployCases.length + i], app: serverApp(i) });
    }

    const before = await snapshot(server);
    const failures = new Map<string, string>();
    await eachLimited(runs, 4, async ({ case: c, commit, app }) => {
      const ran = await run([BIN, "execute", repo, commit], { env: server.env });
      const config = server.paths(app).config;
      const header = c.kind === "deploy"
        ? `error: Cannot read deploy.yml from commit ${commit.slice(0, 7)}`
        : `error: Cannot read ${config}`;
      const [first, ...rest] = ran.stderr.trimEnd().split("\n");
      // Problems are printed indented under the header; config.yml is named by its full path.
      const problems = rest.filter((line) => line.startsWith("  ")).map((line) =>
        line.slice(2).replace(config, "config.yml")
      );
      const why = ran.code !== 2
        ? `exit code ${ran.code}`
        : !first?.startsWith(header)
        ? `the first line is not "${header}…"`
        : mismatch(problems, c.expect);
      if (why) failures.set(c.name, `${why}\n  output:\n${ran.output.replace(/^/gm, "    ")}`);
    });
    const after = await snapshot(server);
    report("execute", cases, failures);
    assertEquals(after, before, "a refused file changed something on disk");
  } finally {
    await server.close();
  }
});
