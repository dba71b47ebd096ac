/**
 * The git hook, rendered from `templates/proc-receive` (embedded in the binary).
 *
 * Why proc-receive and not post-receive: git ignores a post-receive hook's exit code, so a
 * failed deploy would still print a successful push and leave the branch on the broken commit.
 * A proc-receive hook (git ≥ 2.29) updates the refs itself: the branch moves only after a
 * healthy deploy, under the app's deploy lock, and a failure rejects the push.
 * @module
 */
import template from "../templates/proc-receive" with { type: "text" };
import { join } from "node:path";
import { writeFileAtomic } from "./fsutil.ts";
import { DeployParadigmError } from "./errors.ts";
import { ProcessRunner } from "./runner.ts";

/** Quotes a value for a POSIX shell script (single quotes). */
export function shellQuote(value: string): string {
  return `'${value.replaceAll("'", `'\\''`)}'`;
}

/**
 * The hook's text. `command` is the absolute path of the deploy-paradigm executable; `env`
 * are variables the hook exports (for instance DEPLOY_PARADIGM_PREFIX when set at setup time).
 */
export function renderHook(command: string, env: Record<string, string> = {}): string {
  const exports = Object.entries(env).map(([k, v]) => `export ${k}=${shellQuote(v)}`).join("\n");
  return template.replaceAll("__DEPLOY_PARADIGM__", () => shellQuote(command)).replace("__EXPORTS__", () => exports);
}

/** The oldest git with proc-receive hooks. */
export const MIN_GIT = [2, 29];

/** Refuses a git too old for the hook: there, pushes would never run it, silently. */
export async function checkGitVersion(): Promise<void> {
  const out = await new ProcessRunner().run({ argv: ["git", "--version"], quiet: true });
  const [major = 0, minor = 0] = (/(\d+)\.(\d+)/.exec(out.output) ?? []).slice(1).map(Number);
  if (major < MIN_GIT[0] || (major === MIN_GIT[0] && minor < MIN_GIT[1])) {
    throw new DeployParadigmError(`${out.output.trim()} is too old: deploys need git ${MIN_GIT.join(".")} or newer`, {
      suggestion: "upgrade git on this server (Debian 11 and Ubuntu 22.04 ship new enough versions)",
    });
  }
}

/** Installs the hook into the bare repository `gitDir` and routes branch pushes through it. */
export async function installHook(gitDir: string, command: string, env: Record<string, string> = {}): Promise<string> {
  await checkGitVersion();
  const path = join(gitDir, "hooks", "proc-receive");
  await writeFileAtomic(path, renderHook(command, env), 0o755);
  await new ProcessRunner().run({
    argv: ["git", "--git-dir", gitDir, "config", "receive.procReceiveRefs", "refs/heads"],
  });
  return path;
}
