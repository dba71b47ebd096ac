/** Command strings are split into argv without a shell: words, quotes, and refused operators. */
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { throws } from "node:assert/strict";
import { splitCommand, toArgv } from "../../src/config/argv.ts";

/** The error message of a refused command. */
function refused(command: string): string {
  const result = splitCommand(command);
  assert("error" in result, `expected ${JSON.stringify(command)} to be refused, got ${JSON.stringify(result)}`);
  return result.error;
}

Deno.test("splitCommand: words are split at spaces, tabs and newlines", () => {
  assertEquals(splitCommand("python app.py"), ["python", "app.py"]);
  assertEquals(splitCommand("  a   b\tc\nd  "), ["a", "b", "c", "d"]);
  assertEquals(splitCommand("node"), ["node"]);
});

Deno.test("splitCommand: characters a shell would expand are kept literally", () => {
  assertEquals(splitCommand("ls *.js ~/x {a,b} a=b #c"), ["ls", "*.js", "~/x", "{a,b}", "a=b", "#c"]);
  // A backslash outside quotes is an ordinary character.
  assertEquals(splitCommand("a\\ b"), ["a\\", "b"]);
});

Deno.test("splitCommand: single quotes keep their content literally", () => {
  assertEquals(splitCommand("echo 'a b'  c"), ["echo", "a b", "c"]);
  assertEquals(splitCommand("'$(rm -rf /)' '|&;<>()`'"), ["$(rm -rf /)", "|&;<>()`"]);
  assertEquals(splitCommand("'a\\\"b'"), ['a\\"b']);
  assertEquals(splitCommand("''"), [""]);
  // Quotes inside a word join with it.
  assertEquals(splitCommand("a'b c'd"), ["ab cd"]);
});

Deno.test('splitCommand: double quotes allow \\" and \\\\ only', () => {
  assertEquals(splitCommand('say "hello world"'), ["say", "hello world"]);
  assertEquals(splitCommand('"a \\"b\\" c"'), ['a "b" c']);
  assertEquals(splitCommand('"back\\\\slash"'), ["back\\slash"]);
  // Other escapes stay as written.
  assertEquals(splitCommand('"a\\nb"'), ["a\\nb"]);
  assertEquals(splitCommand('"$HOME | x"'), ["$HOME | x"]);
  assertEquals(splitCommand('""'), [""]);
  assertEquals(splitCommand('a"b"c'), ["abc"]);
  assertEquals(splitCommand(`"it's" 'say "hi"'`), ["it's", 'say "hi"']);
});

Deno.test("splitCommand: unquoted shell operators are refused with their position", () => {
  const operators = ["|", "&", ";", "<", ">", "(", ")", "$", "`"];
  for (const op of operators) {
    const error = refused(`run a${op}1`);
    assertEquals(
      error,
      `contains the shell operator "${op}" at character 6, but commands are not run by a shell: ` +
        `quote it, write the command as a list, or move it into a script`,
      op,
    );
  }
  assertMatch(refused("echo $(whoami)"), /operator "\$" at character 6/);
  assertMatch(refused("a && b"), /operator "&" at character 3/);
  // A variable gets the fix: nothing is expanded, the app has its environment.
  assertEquals(
    refused("gunicorn app:app --bind 0.0.0.0:$PORT"),
    'contains the variable "$" at character 33, but commands are not run by a shell: nothing is expanded. The app ' +
      "gets PORT and its .env values in its environment (read them there, as gunicorn reads PORT), or move the " +
      "command into a script",
  );
  assertMatch(refused("echo ${HOME}"), /variable "\$" at character 6/);
});

Deno.test("splitCommand: unterminated quotes are refused", () => {
  assertEquals(refused("echo 'abc"), "has an unterminated ' quote at character 6");
  assertEquals(refused('echo "abc'), 'has an unterminated " quote at character 6');
  assertEquals(refused('"a\\"'), 'has an unterminated " quote at character 1');
  assertEquals(refused("'"), "has an unterminated ' quote at character 1");
});

Deno.test("splitCommand: an empty or blank command is refused", () => {
  assertEquals(refused(""), "is empty");
  assertEquals(refused("   \t\n"), "is empty");
});

Deno.test("toArgv: strings are split, lists are copied", () => {
  assertEquals(toArgv("npm run build"), ["npm", "run", "build"]);
  const list = ["python", "-m", "uvicorn", "main:app"];
  const argv = toArgv(list);
  assertEquals(argv, list);
  assert(argv !== list, "toArgv must return a copy");
  argv.push("--reload");
  assertEquals(list.length, 4);
  // A list is used as it is: no splitting, no operator check.
  assertEquals(toArgv(["sh", "-c", "a | b"]), ["sh", "-c", "a | b"]);
});

Deno.test("toArgv: an invalid string throws", () => {
  throws(() => toArgv("a | b"), /invalid command "a \| b": contains the shell operator "\|"/);
  throws(() => toArgv(""), /invalid command "": is empty/);
  throws(() => toArgv("'x"), /unterminated ' quote/);
});
