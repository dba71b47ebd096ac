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
 * The repository: reachable by root and `deploy` only (its directory root:deploy 0750: other
 * apps' users cannot read another app's source), its `objects/` group-writable by `deploy` (setgid
 * directories), which is all git-receive-pack writes for the pusher; refs are moved by the hook,
 * as root. `core.sharedRepository=0664`, not 0660: git gives that mode to every file it writes,
 * the refs root writes too (group root: a `deploy` group on refs would let members move them), so
 * members read those as "others", behind the 0750 directory; a fixed mode, not `group`, also
 * keeps a pusher's umask 077 (sudo adds it to root's) from making them unreadable. Its `config`
 * and `hooks/` stay root's and not group-writable: git runs as root in this repository during
 * deploys, so whoever could change them could run commands as root. `receive.autogc` is off (a
 * gc would write outside `objects/`). The system's git config (`/etc/gitconfig`) names the
 * repository a `safe.directory`, as git otherwise refuses to work in a repository owned by
 * another user.
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
  ensureBuildUser,
  forgetUsers,
  lookupGroup,
  lookupUser,
  narrowedLine,
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
      if (user) {
        const narrowed = narrowedLine(paths, await ownAppDirs(paths, user));
        if (narrowed) console.log(narrowed);
        await ensureBuildUser(paths, user, runner, (line) => console.log(line));
      }
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
      await git("config", "core.sharedRepository", "0664");
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
      await shareRepository(repo, lookupGroup(group)!);
      const sudo = await installSudoers(runner, group);
      console.log(
        sudo
          ? `✓ members of the group ${group} may push (${SUDOERS_FILE}; add one: usermod -aG ${group} NAME)`
          : `! sudo is not installed: only root can push (install sudo and run setup again to let the group ${group} push)`,
      );
    },
  };
}

/**
 * The repository for the deploy group and no one else: its directory root:<group> 0750 (other
 * apps' users cannot read another app's source), `objects/` 2770. Both are root's, in directories
 * only root can write, so no member can swap them for a link. What is below `objects/` is changed
 * only while no one but root can have written there: the first time it is shared (`objects/`
 * still root's and writable by no one else). After that it is never walked again, as a member can
 * replace any of it by a symbolic link at any moment; setgid directories and
 * `core.sharedRepository=0664` keep what git adds in the group.
 */
async function shareRepository(repo: string, gid: number): Promise<void> {
  const objects = join(repo, "objects");
  const [top, inner] = [await Deno.lstat(repo), await Deno.lstat(objects)];
  for (const [path, stat] of [[repo, top], [objects, inner]] as const) {
    if (!stat.isDirectory || stat.uid !== 0 || (stat.mode! & 0o002) || (path === repo && !onlyRoot(stat))) {
      throw new DeployParadigmError(`${path} is not a directory of root's that only root (and deploy) can write`, {
        suggestion: "the repository must be root's (setup creates it so); check who changed it",
      });
    }
  }
  if (onlyRoot(inner)) await shareTree(objects, gid); // not shared yet: no one else can have written there
  await Deno.chown(objects, 0, gid);
  await Deno.chmod(objects, 0o2770);
  await Deno.chown(repo, 0, gid);
  await Deno.chmod(repo, 0o750);
}

/** A directory of root's that no one else can write (group-writable only for group root). */
function onlyRoot(stat: Deno.FileInfo): boolean {
  const mode = stat.mode! & 0o7777;
  return stat.isDirectory && stat.uid === 0 && !(mode & 0o002) && !((mode & 0o020) && stat.gid !== 0);
}

/**
 * `dir`'s tree for the group, depth first, each directory made group-writable only after all it
 * holds: until the walk ends no one but root can write anywhere in it (see {@link shareRepository}).
 * Symbolic links, and directories someone else could write in (and so swap what they hold), are
 * left as they are.
 */
async function shareTree(dir: string, gid: number): Promise<void> {
  for await (const entry of Deno.readDir(dir)) {
    const path = join(dir, entry.name);
    const stat = await Deno.lstat(path);
    if (stat.isDirectory) {
      if (onlyRoot(stat)) await shareTree(path, gid);
    } else if (stat.isFile) {
      await Deno.chown(path, null, gid);
      await Deno.chmod(path, (stat.mode! & 0o700) | 0o040);
    }
  }
  await Deno.chown(dir, 0, gid);
  await Deno.chmod(dir, 0o2770);
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
