import { selfCommand } from "../paths.ts";
import { UsageError } from "../errors.ts";

/**
 * `error` of a command only root can run (`rollback`, `status`, `releases`, `canary`, `cron`,
 * `maintenance`: they read the apps' directories), when it is a permission denied for another
 * user, as a usage error saying so: members of the deploy group may push, nothing more; what to
 * run instead. Any other error as it is.
 */
export function rootOnly(error: unknown, command: string): unknown {
  if (Deno.uid() === 0) return error;
  for (let cause = error; cause instanceof Error; cause = cause.cause) {
    if (cause instanceof Deno.errors.PermissionDenied || /permission denied/i.test(cause.message)) {
      return new UsageError(`\`${command.split(" ")[0]}\` needs root (${cause.message.split("\n")[0]})`, {
        suggestion: `run \`sudo ${selfCommand()} ${command}\` or run it as root: members of the deploy group ` +
          "may push (git push), but not run the commands that read the apps' directories, such as this one",
        cause: error,
      });
    }
  }
  return error;
}
