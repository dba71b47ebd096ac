/**
 * The rule for commands in deploy.yml (`command`, `build`, `hooks.*`): they are never run by a shell.
 * A list is used as the argv as it is. A string is split into words at whitespace; single quotes keep
 * their content literally, double quotes allow `\"` and `\\`. Nothing is expanded, and unquoted shell
 * operators (`| & ; < > ( ) $ \``) are refused, so a command never means more than it says. Put
 * pipelines and variables in a script in the repo and name the script.
 * @module
 */

const OPERATORS = new Set(["|", "&", ";", "<", ">", "(", ")", "$", "`"]);

/** Splits a command string into argv. Returns an error message instead when the string breaks the rule. */
export function splitCommand(command: string): string[] | { error: string } {
  const words: string[] = [];
  let word = "";
  let inWord = false;
  for (let i = 0; i < command.length; i++) {
    const c = command[i];
    if (c === " " || c === "\t" || c === "\n") {
      if (inWord) words.push(word);
      [word, inWord] = ["", false];
    } else if (c === "'") {
      const end = command.indexOf("'", i + 1);
      if (end < 0) return { error: `has an unterminated ' quote at character ${i + 1}` };
      word += command.slice(i + 1, end);
      [i, inWord] = [end, true];
    } else if (c === '"') {
      let j = i + 1;
      for (; j < command.length && command[j] !== '"'; j++) {
        if (command[j] === "\\" && (command[j + 1] === '"' || command[j + 1] === "\\")) j++;
        word += command[j];
      }
      if (j >= command.length) return { error: `has an unterminated " quote at character ${i + 1}` };
      [i, inWord] = [j, true];
    } else if (c === "$" && /[A-Za-z_{]/.test(command[i + 1] ?? "")) {
      return {
        error:
          `contains the variable "$" at character ${
            i + 1
          }, but commands are not run by a shell: nothing is expanded. ` +
          "The app gets PORT and its .env values in its environment (read them there, as gunicorn reads PORT), " +
          "or move the command into a script",
      };
    } else if (OPERATORS.has(c)) {
      return {
        error: `contains the shell operator "${c}" at character ${i + 1}, but commands are not run by a shell: ` +
          `quote it, write the command as a list, or move it into a script`,
      };
    } else {
      word += c;
      inWord = true;
    }
  }
  if (inWord) words.push(word);
  return words.length ? words : { error: "is empty" };
}

/** Normalizes a validated command (string or list) to argv. */
export function toArgv(command: string | readonly string[]): string[] {
  if (typeof command !== "string") return [...command];
  const argv = splitCommand(command);
  if ("error" in argv) throw new Error(`invalid command ${JSON.stringify(command)}: ${argv.error}`);
  return argv;
}
