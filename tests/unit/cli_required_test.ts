/** A required option (`docker-logs --state`) is in the usage line, not only under the options, and enforced. */
import { assertEquals, assertMatch } from "../helpers/assert.ts";
import { throws } from "node:assert/strict";
import { commandHelp, parseInvocation } from "../../src/cli.ts";
import { program } from "../../src/commands/mod.ts";
import { UsageError } from "../../src/errors.ts";

const dockerLogs = program.commands.find((c) => c.name === "docker-logs")!;

Deno.test("cli: docker-logs --help shows --state <file> as required in the usage line", () => {
  const help = commandHelp(program, dockerLogs);
  assertEquals(help.split("\n")[0], "Usage: deploy-paradigm docker-logs <container> --state <file>");
  assertMatch(help, /--state <file> +Where the follower keeps its place across restarts \(required\)/);
});

Deno.test("cli: a required option left out is a usage error naming it", () => {
  throws(() => parseInvocation(program, dockerLogs, ["web-blue"]), (error: unknown) => {
    return error instanceof UsageError && error.message === '"docker-logs" needs --state <file>';
  });
  assertEquals(parseInvocation(program, dockerLogs, ["web-blue", "--state", "/s"]).opts.state, "/s");
});
