/**
 * deploy-paradigm's entry point: the only place that catches errors and exits.
 * @module
 */
import { runCli } from "./src/cli.ts";
import { program } from "./src/commands/mod.ts";
import { describeError } from "./src/errors.ts";

try {
  Deno.exit(await runCli(program, Deno.args));
} catch (error) {
  const { text, exitCode } = describeError(error);
  console.error(text);
  Deno.exit(exitCode);
}
