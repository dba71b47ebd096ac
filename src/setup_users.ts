/**
 * What `setup` does for users (see users.ts): the app's own user, who owns what, and the
 * `deploy` group, whose members may push without being root.
 *
 * Why sudo for pushes: a deploy starts systemd units or pm2 processes as root and switches the
 * proxy's routes, which a pushing user cannot. The hook of a pusher who is not root runs
 * `sudo -n <deploy-paradigm> receive /var/repos/<app>.git`, allowed to `%deploy` by the drop-in
 * `/etc/sudoers.d/deploy-paradigm` (checked with `visudo -c` before it is installed). That one
 * fixed subcommand only deploys what the pusher could push anyway, and what it runs of the
 * pushed code (builds, hooks, the app) runs as the app's user, never as root. No daemon of our
 * own has to listen for requests (a root service on a socket would be one more thing to secure
 * and keep running); sudo is the standard, audited way, and logs who deployed.
 *
 * The repository: its `objects/` are group-writable by `deploy` (setgid directories,
 * `core.sharedRepository=group`), which is all git-receive-pack writes for the pusher; refs are
 * moved by the hook, as root. Its `config` and `hooks/` stay root's and not group-writable: git
 * runs as root in this repository during deploys, so whoever could change them could run
 * commands as root. `receive.autogc` is off (a gc would write outside `objects/`). The system's
 * git config (`/etc/gitconfig`) names the repository a `safe.directory`, as git otherwise
 * refuses to work in a repository owned by another user.
 * @module
 */
import { join } from "node:path";
import { DeployParadigmError } from "./errors.ts";
import { exists, writeFileAtomic } from "./fsutil.ts";
import type { AppPaths } from "./paths.ts";
import { selfCommand } from "./paths.ts";
import type { ProcessRunner } from "./runner.ts";
import {
  type AppUser,
  appUser,
  defaultUserName,
  deployGroup,
  forgetUsers,
  lookupGroup,
  lookupUser,
  ownAppDirs,
  useraddCmd,
} from "./users.ts";

/** Where setup allows the deploy group its one sudo command. */
export const SUDOERS_FILE = "/etc/sudoers.d/deploy-paradigm";

/** The sudoers drop-in: `%<group>` may run `<command> receive /var/repos/<app>.git` as root, without a password. */
export function sudoersDropIn(command: string, group = deployGroup()): string {
  const escaped = command.replace(/[\\,:=\s]/g, (c) => `\\${c}`);
  return [
    "# Written by deploy-paradigm setup: members of this group may push to /var/repos/<app>.git; the hook",
    "# runs this one command as root (the deploy), which runs what it builds and starts as the app's user.",
    `%${group} ALL=(root) NOPASSWD: ${escaped} receive /var/repos/*.git`,
    "",
  ].join("\n");
}

/** What setup does for users, checked before anything is written ({@link setupUsers}). */
export interface UserSetup {
  /** Creates the app's user when it is the default one and missing; sets owners and modes. */
  apply(runner: ProcessRunner): Promise<AppUser | undefined>;
  /** The deploy group, the repository's group permissions and the sudoers drop-in. */
  pushers(repo: string, runner: ProcessRunner): Promise<void>;
}

/**
 * Checks `configured` (config.yml's `user:`) names a user (else a usage error, before anything
 * is written) and returns what to do. On a server under DEPLOY_PARADIGM_PREFIX, or when setup
 * does not run as root, no user or group is created.
 */
export function setupUsers(paths: AppPaths, configured: string | undefined): UserSetup {
  const real = Deno.uid() === 0 && !Deno.env.get("DEPLOY_PARADIGM_PREFIX");
  if (configured !== undefined) appUser(paths, configured);
  return {
    async apply(runner) {
      const name = defaultUserName(paths.app);
      if (real && configured === undefined && !lookupUser(name)) {
        await runner.run(useraddCmd(name, join(paths.dir, "home")));
        forgetUsers();
        console.log(`✓ user ${name} (a system user with no login shell)`);
      }
      const user = appUser(paths, configured);
      if (user) await ownAppDirs(paths, user);
      return user;
    },
    async pushers(repo, runner) {
      if (!real) return;
      const group = deployGroup();
      if (lookupGroup(group) === undefined) {
        await runner.run({ argv: ["groupadd", "--system", group], timeoutMs: 60_000 });
        forgetUsers();
      }
      const git = (...args: string[]) => runner.run({ argv: ["git", "--git-dir", repo, ...args], quiet: true });
      await git("config", "core.sharedRepository", "group");
      await git("config", "receive.autogc", "false");
      // git refuses a repository another user owns ("dubious ownership") unless the system's
      // config names it: safe here, as its config and hooks are root's and not group-writable.
      const safe = await runner.run({
        argv: ["git", "config", "--system", "--get-all", "safe.directory"],
        quiet: true,
        allowFailure: true,
      });
      if (!safe.output.split("\n").includes(repo)) {
        await runner.run({ argv: ["git", "config", "--system", "--add", "safe.directory", repo], quiet: true });
      }
      await shareObjects(join(repo, "objects"), lookupGroup(group)!);
      const sudo = await installSudoers(runner, group);
      console.log(
        sudo
          ? `✓ members of the group ${group} may push (${SUDOERS_FILE}; add one: usermod -aG ${group} NAME)`
          : `! sudo is not installed: only root can push (install sudo and run setup again to let the group ${group} push)`,
      );
    },
  };
}

/** `objects/` group-writable by `gid`, its directories setgid so what git adds stays in the group. */
async function shareObjects(dir: string, gid: number): Promise<void> {
  const stat = await Deno.lstat(dir);
  if (stat.isSymlink) return;
  await Deno.chown(dir, null, gid);
  if (stat.isDirectory) {
    await Deno.chmod(dir, ((stat.mode ?? 0o755) & 0o777) | 0o2070);
    for await (const entry of Deno.readDir(dir)) await shareObjects(join(dir, entry.name), gid);
  } else {
    await Deno.chmod(dir, ((stat.mode ?? 0o444) & 0o777) | 0o040);
  }
}

/**
 * Writes the sudoers drop-in when sudo is installed: checked with `visudo -cf` first, then put in
 * place 0440. Returns whether it is there.
 */
async function installSudoers(runner: ProcessRunner, group: string): Promise<boolean> {
  const visudo = ["/usr/sbin/visudo", "/sbin/visudo"].find((path) => {
    try {
      return Deno.statSync(path).isFile;
    } catch {
      return false;
    }
  });
  if (!visudo || !(await exists("/etc/sudoers.d"))) return false;
  const temp = await Deno.makeTempFile({ prefix: "deploy-paradigm-sudoers-" });
  try {
    await Deno.writeTextFile(temp, sudoersDropIn(selfCommand(), group), { mode: 0o440 });
    const checked = await runner.run({ argv: [visudo, "-cf", temp], quiet: true, allowFailure: true });
    if (checked.code !== 0) {
      throw new DeployParadigmError(`visudo refused the drop-in for ${SUDOERS_FILE}: ${checked.tail.join(" ")}`, {
        suggestion: "the path of deploy-paradigm must be a plain absolute path; install it to /usr/local/bin",
      });
    }
    await writeFileAtomic(SUDOERS_FILE, await Deno.readTextFile(temp), 0o440);
    return true;
  } finally {
    await Deno.remove(temp).catch(() => {});
  }
}
