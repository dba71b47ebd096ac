import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { baseEnv, CommandFailed, displayArgv, DryRunner, ProcessRunner, readLines } from "../../src/runner.ts";

Deno.test("runner: streams each line to the sink and keeps the output", async () => {
  const seen: string[] = [];
  const result = await new ProcessRunner((l) => seen.push(l)).run({ argv: ["sh", "-c", "echo one; echo two >&2"] });
  assertEquals(result.code, 0);
  assertEquals(seen.sort(), ["one", "two"]);
  assertEquals(result.tail.sort(), ["one", "two"]);
});

Deno.test("runner: a failing command throws CommandFailed naming the command and its last lines", async () => {
  const runner = new ProcessRunner();
  let error: unknown;
  try {
    await runner.run({ argv: ["sh", "-c", "echo boom >&2; exit 4"], quiet: true });
  } catch (e) {
    error = e;
  }
  assert(error instanceof CommandFailed);
  assertMatch(error.message, /`sh -c 'echo boom >&2; exit 4'` exited with code 4/);
  assertMatch(error.message, /boom/);
  assertEquals((await runner.run({ argv: ["sh", "-c", "exit 5"], allowFailure: true })).code, 5);
  assertEquals((await runner.run({ argv: ["no-such-program-xyz"], allowFailure: true })).code, 127);
});

Deno.test("runner: a command past its timeout is killed", async () => {
  const started = performance.now();
  const result = await new ProcessRunner().run({ argv: ["sleep", "20"], timeoutMs: 200, allowFailure: true });
  assertEquals(result.code, 124);
  assertMatch(result.output, /killed: no result after 0.2s/);
  assert(performance.now() - started < 10_000);
});

// (Deno.env is process-wide and test files run in parallel threads: tests never change it.)
Deno.test("runner: children do not inherit git's hook variables", () => {
  assertEquals(baseEnv({ GIT_DIR: ".", GIT_QUARANTINE_PATH: "/q", PATH: "/bin", HOME: "/root" }), {
    PATH: "/bin",
    HOME: "/root",
  });
});

Deno.test("runner: a plan's lock serializes concurrent plans", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const lock = `${dir}/x.lock`;
    const log = `${dir}/log`;
    const step = (name: string) => ({
      files: [],
      lock,
      commands: [{ argv: ["sh", "-c", `echo ${name}-in >> ${log}; sleep 0.2; echo ${name}-out >> ${log}`] }],
    });
    const runner = new ProcessRunner();
    await Promise.all([runner.apply(step("a")), runner.apply(step("b"))]);
    const lines = (await Deno.readTextFile(log)).trim().split("\n");
    assertEquals(lines[0].slice(0, 1), lines[1].slice(0, 1), `plans overlapped: ${lines}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("dry runner: prints instead of running", async () => {
  const seen: string[] = [];
  const runner = new DryRunner((l) => seen.push(l));
  await runner.apply({ files: [{ path: "/x/unit", content: "" }], commands: [{ argv: ["rm", "-rf", "/"], cwd: "/" }] });
  assertEquals(seen, ["would write: /x/unit", "would run: rm -rf /  (in /)"]);
  assertEquals(displayArgv(["a b", "it's", "ok"]), `'a b' 'it'\\''s' ok`);
});

Deno.test("runner: a timeout kills the command's whole process group", async () => {
  const started = performance.now();
  const result = await new ProcessRunner().run({
    argv: ["sh", "-c", "sleep 20 & sleep 20; echo never"],
    timeoutMs: 300,
    allowFailure: true,
  });
  assertEquals(result.code, 124);
  assert(performance.now() - started < 5_000, "the background sleep must not hold the runner");
});

Deno.test("runner: a Ctrl-C flood on our process group never reaches a command being spawned", async () => {
  // The group is made in the child between fork and exec: a `setsid` program in front of the
  // command left a window, from its exec to its setsid(), in which a Ctrl-C killed it.
  const child = new Deno.Command("setsid", {
    args: [Deno.execPath(), "run", "-A", new URL("../fixtures/spawn_under_sigint.ts", import.meta.url).pathname, "100"],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let output = "";
  while (!output.includes("ready")) {
    const { done, value } = await reader.read();
    if (done) throw new Error(`the spawning script ended before it was ready: ${output}`);
    output += value;
  }
  let flooding = true;
  const flood = (async () => {
    while (flooding) {
      try {
        Deno.kill(-child.pid, "SIGINT");
      } catch { /* it has ended */ }
      await new Promise((r) => setTimeout(r, 1));
    }
  })();
  for (let chunk; !(chunk = await reader.read()).done;) output += chunk.value;
  flooding = false;
  await flood;
  assertEquals((await child.status).code, 0, output);
  assertMatch(output, /killed 0 of 100/);
});

Deno.test("readLines: a line without end comes in pieces of 64 KiB (memory stays bounded); short lines whole", async () => {
  const chunks = ["a\nb", "c\n", "x".repeat(100_000), "x".repeat(100_000), "\nend"];
  const stream = ReadableStream.from(chunks.map((chunk) => new TextEncoder().encode(chunk)));
  const lines: string[] = [];
  await readLines(stream, (line) => lines.push(line));
  assertEquals(lines.map((line) => line.length), [1, 2, 65_536, 65_536, 65_536, 3_392, 3]);
  assertEquals(lines.slice(2, 6).join(""), "x".repeat(200_000));
  assertEquals([lines[0], lines[1], lines[6]], ["a", "bc", "end"]);
});

Deno.test("a build printing without end keeps only the tail it is asked to keep (keepLines)", async () => {
  const result = await new ProcessRunner().run({
    argv: ["sh", "-c", "i=0; while [ $i -lt 5000 ]; do echo line $i; i=$((i+1)); done"],
    keepLines: 200,
  });
  assertEquals(result.output.split("\n").length, 200);
  assertMatch(result.output, /line 4999$/);
});
