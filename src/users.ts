/**
 * Apps as their own users. Each app runs and runs its hooks as an unprivileged system user:
 * `app-<name>` (created by `setup`), or the existing user named by `user:` in config.yml; its
 * releases are built by another one, `build-<app>`. The deploy itself (git, the proxy's
 * routes, the process manager, docker) stays root's.
 *
 * Ownership model (on a real server, deploying as root):
 * - `/opt/deployments/<app>/` and its `releases/`: root:<app group> 0751: the app may list them,
 *   others (other apps, the build user) may only pass through to a path they know, where the
 *   entry's own mode decides (nothing there is theirs to read but the build user's own release
 *   and home); its `.env.<env>`, config.yml and pm2 files stay root's.
 * - `/opt/deployments/<app>/home/`: the app user's, 0700: its HOME, the one place it may write
 *   (the app's own data, the caches of its hooks).
 * - `releases/<id>/`: while it builds, the build user's (`build-<app>`, not in the app's group:
 *   `npm install`, `pip install`, the build command write only there, and the running app, which
 *   under PM2 has no sandbox, cannot change what its next push builds), then root:<app group>
 *   0750, not group-writable: read-only for the app. Its `.env` is root:<app group> 0640: the app
 *   may read it; no other app and no build can.
 * - `/opt/deployments/<app>/build-home/`: the build user's, 0700: its HOME, new and empty at each
 *   build (nothing a build leaves there reaches the next).
 * - `/var/log/deployments/<app>/`: root:<app group> 0750 (written by systemd, pm2 and the
 *   deploy, all root); the proxy's keys (`.tls/`) stay root's 0700.
 * @module
 */
import { join } from "node:path";
import { UsageError } from "./errors.ts";
import { narrowMode } from "./fsutil.ts";
import { type AppPaths, prefix } from "./paths.ts";
import type { Cmd, Runner } from "./runner.ts";

/** The user an app runs as. */
export interface AppUser {
  name: string;
  uid: number;
  gid: number;
  /** The name of its primary group. */
  group: string;
  /** The app's writable home, `/opt/deployments/<app>/home` (whatever passwd says). */
  home: string;
  /**
   * Whether it is the user setup creates for this app only (`app-<name>`, see defaultUserName),
   * not one the operator chose (`user: www-data`), which other programs may run as.
   */
  own?: boolean;
}

/** The group whose members may push and use the proxy's control socket (`DEPLOY_PARADIGM_GROUP`). */
export function deployGroup(): string {
  return Deno.env.get("DEPLOY_PARADIGM_GROUP") || "deploy";
}

/**
 * The default user of an app: `app-<name>`, or for names too long for a user name (32
 * characters), `app-<first 19 characters>-<8 hex digits of a hash of the name>`.
 */
export function defaultUserName(app: string): string {
  return userName("app-", app);
}

/**
 * The user that builds app `app`'s releases: `build-<app>` (shortened as {@link defaultUserName}
 * does), one per app whatever user it runs as. Never the runtime user: a running app (under PM2
 * not in a sandbox) could otherwise rewrite the release its next push builds; and never shared:
 * after each build every process it has is killed (killAllOf). No app's user is named so: those
 * setup creates begin with `app-`.
 */
export function buildUserName(app: string): string {
  return userName("build-", app);
}

/** `<prefix><name>`, or for one longer than a user name may be (32), `<prefix><start>-<8 hex digits of a hash>`. */
function userName(prefix: string, name: string): string {
  if (prefix.length + name.length <= 32) return prefix + name;
  let hash = 0x811c9dc5; // FNV-1a
  for (const byte of new TextEncoder().encode(name)) hash = Math.imul(hash ^ byte, 0x01000193) >>> 0;
  return `${prefix}${name.slice(0, 32 - prefix.length - 9).replace(/-+$/, "")}-${hash.toString(16).padStart(8, "0")}`;
}

const cache = new Map<string, string[] | undefined>();

/** `getent <db> <key>`. */
function getentCommand(db: "passwd" | "group", key: string): Deno.Command {
  return new Deno.Command("getent", { args: [db, key], stdout: "piped", stderr: "null" });
}

/** The entry getent printed, split at colons; undefined when there is none. */
function entryOf(out: Deno.CommandOutput): string[] | undefined {
  const line = new TextDecoder().decode(out.stdout).split("\n")[0];
  return out.code === 0 && line ? line.split(":") : undefined;
}

/** One `getent <db> <key>` entry, split at colons; undefined when there is none. */
function getent(db: "passwd" | "group", key: string): string[] | undefined {
  const id = `${db}:${key}`;
  if (!cache.has(id)) {
    let fields: string[] | undefined;
    try {
      fields = entryOf(getentCommand(db, key).outputSync());
    } catch {
      fields = undefined; // no getent: no such user as far as we can tell
    }
    cache.set(id, fields);
  }
  return cache.get(id);
}

/**
 * The uid of user `name`, asked now without blocking the event loop (the proxy's: a user database
 * behind the network, LDAP say, may take seconds to answer); undefined when there is none.
 */
export async function uidOfUser(name: string): Promise<number | undefined> {
  try {
    const entry = entryOf(await getentCommand("passwd", name).output());
    return entry ? Number(entry[2]) : undefined;
  } catch {
    return undefined; // no getent
  }
}

/** Forgets what was looked up (after setup created a user). */
export function forgetUsers(): void {
  cache.clear();
}

/** The passwd entry of `name`: uid, gid, and its primary group's name (`fresh`: asked again, not remembered). */
export function lookupUser(name: string, fresh = false): Omit<AppUser, "home"> | undefined {
  if (fresh) cache.delete(`passwd:${name}`);
  const entry = getent("passwd", name);
  if (!entry) return undefined;
  const uid = Number(entry[2]);
  const gid = Number(entry[3]);
  return { name: entry[0], uid, gid, group: getent("group", String(gid))?.[0] ?? String(gid) };
}

/** The name of the user with uid `uid`, if there is one. */
export function userNameOf(uid: number): string | undefined {
  return getent("passwd", String(uid))?.[0];
}

/** The home directory passwd gives the user with uid `uid`, if there is one. */
export function homeOf(uid: number): string | undefined {
  return getent("passwd", String(uid))?.[5] || undefined;
}

/** The gid of group `name`, if there is such a group. */
export function lookupGroup(name: string): number | undefined {
  const entry = getent("group", name);
  return entry ? Number(entry[2]) : undefined;
}

function isRoot(): boolean {
  return Deno.uid() === 0;
}

/**
 * The user app `paths.app` runs as, or undefined when it runs as the deploying user (as root,
 * or anyone else): with `user: root` in config.yml; when the deploy does not run as root (it
 * cannot switch users); and on a server under `DEPLOY_PARADIGM_PREFIX` (tests, the demo) whose
 * default user does not exist. Throws a usage error for a `user:` that names no user, and on a
 * real server whose default user is missing (setup creates it).
 */
export function appUser(paths: AppPaths, configured?: string): AppUser | undefined {
  const name = configured ?? defaultUserName(paths.app);
  if (name === "root" || !isRoot()) return undefined;
  const found = lookupUser(name);
  if (!found) {
    if (configured !== undefined) {
      throw new UsageError(`${where(paths.config, "user")}: "user" names no user of this server: "${configured}"`, {
        suggestion: `create it (useradd --system ${configured}), or remove "user" to run the app as ${
          defaultUserName(paths.app)
        }`,
      });
    }
    if (Deno.env.get("DEPLOY_PARADIGM_PREFIX")) return undefined;
    throw new UsageError(`the user ${name} that ${paths.app} runs as does not exist on this server`, {
      suggestion: `run \`deploy-paradigm setup ${paths.app}\` (it creates it), or name an existing user in ` +
        `${paths.config} (user: NAME; user: root runs the app as root)`,
    });
  }
  if (found.uid === 0) return undefined;
  return { ...found, home: join(paths.dir, "home"), own: name === defaultUserName(paths.app) };
}

/**
 * The user that builds `paths.app`'s releases ({@link buildUserName}) when the app has a user and
 * that one exists, with its build home `/opt/deployments/<app>/build-home` (out of the running
 * app's reach, and emptied before each build: see ensureBuildUser); undefined otherwise.
 */
export function buildUser(paths: AppPaths, runtime: AppUser | undefined): AppUser | undefined {
  const found = runtime && lookupUser(buildUserName(paths.app));
  return found && found.uid !== 0 ? { ...found, home: join(paths.dir, "build-home"), own: true } : undefined;
}

/**
 * The user that builds `paths.app`'s releases, ready to build: on a real server created when it is
 * missing (a server set up before builds had a user of their own), and out of the app user's
 * group (versions before made it a member: a build could then read every release's `.env`; it
 * reaches its release through `/opt/deployments/<app>` and `releases/`, 0751); none of its
 * processes running (what a deploy killed midway left), and its build home new, the
 * user's, 0700: nothing an earlier build left is read by this one (a `.npmrc` a malicious
 * dependency wrote would run the next build's scripts through its own shell), so no package
 * cache either. Under DEPLOY_PARADIGM_PREFIX (tests, the demo) nothing is created: without a
 * build user there, the app's user builds. A user it creates is said (`say`). Undefined without an app user.
 */
export async function ensureBuildUser(
  paths: AppPaths,
  runtime: AppUser | undefined,
  runner: Runner,
  say: (line: string) => void,
): Promise<AppUser | undefined> {
  if (!runtime) return undefined;
  const name = buildUserName(paths.app);
  const real = !Deno.env.get("DEPLOY_PARADIGM_PREFIX");
  if (real && !lookupUser(name, true)) {
    await runner.run(useraddCmd(name, join(paths.dir, "build-home")));
    forgetUsers();
    say(`✓ user ${name}, which builds ${paths.app}'s releases (in no group but its own)`);
  }
  const user = buildUser(paths, runtime);
  if (!user) return runtime;
  const member = real && (getent("group", runtime.group)?.[3] ?? "").split(",").includes(name);
  if (member) {
    await runner.run({ argv: ["gpasswd", "--delete", name, runtime.group], timeoutMs: 60_000 });
    forgetUsers();
    say(`✓ ${name} is out of the group ${runtime.group} (its builds could read the app's .env files)`);
  }
  await killAllOf(user, runner);
  if (member) {
    const found = (await runner.run(regroupCmd(user, runtime.gid))).output.split("\n");
    const regrouped = found.filter((line) => line.startsWith("/")); // not find's own complaints
    if (regrouped.length) {
      say(
        `✓ ${regrouped.length} file${regrouped.length === 1 ? "" : "s"} of ${name}'s in the group ${runtime.group} ` +
          `(set-group-ID ones would read the app's .env files for anyone) given to its own group: ` +
          regrouped.slice(0, 5).join(", ") + (regrouped.length > 5 ? ", …" : ""),
      );
    }
  }
  await sweepShared(user, runner);
  await Deno.remove(user.home, { recursive: true }).catch((error) => {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  });
  await Deno.mkdir(user.home);
  await own(user.home, user.uid, user.gid, 0o700);
  return user;
}

/** `file:line:column` of a top-level key of a YAML file (the file alone when not found). */
function where(file: string, key: string): string {
  try {
    const lines = Deno.readTextFileSync(file).split("\n");
    const line = lines.findIndex((text) => text.startsWith(`${key}:`));
    return line < 0 ? file : `${file}:${line + 1}:1`;
  } catch {
    return file;
  }
}

/**
 * `cmd` run as `user`: through `setpriv` (util-linux), with the user's groups, no way back to
 * more privileges (no_new_privs: setuid programs such as sudo do not elevate), and HOME, USER
 * and LOGNAME of the user. Without a user, `cmd` as is.
 */
export function asUser(cmd: Cmd, user: AppUser | undefined): Cmd {
  if (!user) return cmd;
  return {
    ...cmd,
    argv: [
      "setpriv",
      `--reuid=${user.uid}`,
      `--regid=${user.gid}`,
      "--init-groups",
      "--no-new-privs",
      "--",
      ...cmd.argv,
    ],
    env: { ...cmd.env, HOME: user.home, USER: user.name, LOGNAME: user.name },
  };
}

/**
 * What a build user made its app's group's while a member of it (as versions before made it),
 * anywhere but /proc and /sys, given to its own group (printed, one a line): a set-group-ID
 * program of the app's group it left in /tmp, say, would otherwise let anyone who runs it read
 * the app's `.env` files after the build user left the group (chgrp takes that bit off a
 * program, chown(2)). Run once its processes are gone; `-execdir`, not `-exec`: a process that
 * still runs as that user (through a set-user-ID program it left) cannot swap a directory of a
 * path found for a link, and so have another file of the server change group.
 */
export function regroupCmd(build: AppUser, appGid: number): Cmd {
  const [uid, gid] = [String(build.uid), String(appGid)];
  return {
    argv: ["find", "/", "(", "-path", "/proc", "-o", "-path", "/sys", ")", "-prune", "-o", "-user", uid, "-group", gid]
      .concat(["-print", "-execdir", "chgrp", "--no-dereference", String(build.gid), "--", "{}", "+"]),
    env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" }, // -execdir refuses a PATH with a relative directory
    allowFailure: true, // a file gone meanwhile or an unreadable mount: find says so and goes on
    quiet: true,
    timeoutMs: 600_000,
  };
}

/** The server's directories anyone may write to (sticky): where a build could leave something for later. */
const SHARED_TMP = ["/tmp", "/var/tmp", "/dev/shm", "/run/lock"];

/**
 * Deletes the set-user-ID and set-group-ID files the build user has in the server's shared
 * temporary directories, once its processes are gone (before each build, and after each build
 * command: see killAllOf). A set-user-ID copy of python a build left in /var/tmp would let anyone
 * (another app's user, the running app, which under PM2 has no sandbox) run as the build user
 * during a later build and rewrite that release before its seal. Only those: other files may be
 * anything's (a test server's whole tree lives under /tmp). As root: `find -delete` works in the
 * directory's descriptor and follows no link; on each directory's own filesystem.
 */
export function sweepCmd(build: AppUser): Cmd {
  return {
    argv: ["find", ...SHARED_TMP, "-xdev", "-user", String(build.uid), "-type", "f", "-perm", "/6000", "-delete"],
    allowFailure: true, // a directory a server does not have
    quiet: true,
    timeoutMs: 120_000,
  };
}

/**
 * {@link sweepCmd}, on a real server only: under DEPLOY_PARADIGM_PREFIX (tests, the demo) the
 * server's own tree may live under /tmp, its release being built with it.
 */
export async function sweepShared(build: AppUser, runner: Runner): Promise<void> {
  if (prefix() === "/") await runner.run(sweepCmd(build));
}

/**
 * The `useradd` that creates an app's user, or its build user: a system user with its own group
 * only, the app's home (not created: setup makes it with the right owner), and no login shell.
 */
export function useraddCmd(name: string, home: string): Cmd {
  return {
    argv: [
      "useradd",
      "--system",
      "--user-group",
      "--home-dir",
      home,
      "--no-create-home",
      "--shell",
      "/usr/sbin/nologin",
      "--comment",
      "deploy-paradigm app",
      name,
    ],
    timeoutMs: 60_000,
  };
}

/** Sets owner, group and mode of `path` (not following a symlink there). */
async function own(path: string, uid: number, gid: number, mode: number): Promise<void> {
  const stat = await Deno.lstat(path);
  if (stat.isSymlink) throw new Error(`${path} is a symbolic link; refusing to change its owner`);
  await Deno.chown(path, uid, gid);
  await Deno.chmod(path, mode);
}

/**
 * The app's directories as the ownership model says (see the module): its dir and `releases/`
 * root:<group> 0751, its home the user's 0700, its log dir root:<group> 0750. What else is in
 * them loses any permission for others (versions before wrote status.json, route.json, … 0644
 * and released 0755 behind a 0750 dir; others may now pass through it): returns those it
 * narrowed (relative to the app's dir), to say ({@link narrowedLine}). Idempotent.
 */
export async function ownAppDirs(paths: AppPaths, user: AppUser): Promise<string[]> {
  const narrowed: string[] = [];
  const home = join(paths.dir, "home");
  await Deno.mkdir(home, { recursive: true });
  await Deno.mkdir(paths.releases, { recursive: true });
  await Deno.mkdir(paths.logDir, { recursive: true });
  await own(paths.dir, 0, user.gid, 0o751);
  await own(paths.releases, 0, user.gid, 0o751);
  await own(home, user.uid, user.gid, 0o700);
  await own(paths.logDir, 0, user.gid, 0o750);
  for (const dir of [paths.dir, paths.releases]) {
    for await (const entry of Deno.readDir(dir)) {
      if (entry.isSymlink || (dir === paths.dir && entry.name === "releases")) continue;
      // Run before the push takes the lock: what a deploy that holds it writes and cleans may go meanwhile.
      const keep = dir === paths.dir && entry.name === "slots" ? 0o001 : 0; // see linkSlot
      if (await narrowMode(join(dir, entry.name), 0o007 & ~keep) !== undefined) {
        narrowed.push(dir === paths.dir ? entry.name : `releases/${entry.name}`);
      }
    }
  }
  return narrowed;
}

/** The line that says what {@link ownAppDirs} took from others, if it took anything. */
export function narrowedLine(paths: AppPaths, narrowed: string[]): string | undefined {
  if (!narrowed.length) return undefined;
  const shown = narrowed.length > 4 ? [...narrowed.slice(0, 3), `${narrowed.length - 3} more`] : narrowed;
  return `! ${paths.dir}: ${shown.join(", ")} ${narrowed.length === 1 ? "was" : "were"} open to others ` +
    "(nothing in an app's directory is theirs): narrowed";
}

/** Hands a freshly extracted release to the app's user, for its build. */
export function handOver(releaseDir: string, user: AppUser): Cmd {
  return { argv: ["chown", "-R", "--no-dereference", `${user.uid}:${user.gid}`, "--", releaseDir], timeoutMs: 300_000 };
}

/**
 * After the build: the release becomes root's, readable by the app's group and writable by
 * nobody else, with no set-user-ID or set-group-ID bit (symbolic links are neither followed nor
 * changed). Write permission and those bits go first, while the build's user still owns it all:
 * a file the build left group-writable (git archive extracts 0664) would otherwise be the app's
 * to write between the chown and the chmod, and a setgid file without group execute (2745: the
 * chown keeps the bit) a program of the app's group for anyone who can reach it, through a hard
 * link the build made outside, say, once the chmod adds group execute.
 */
export function sealCmds(releaseDir: string, user: AppUser): Cmd[] {
  return [
    { argv: ["chmod", "-R", "go-w,ug-s", "--", releaseDir], timeoutMs: 300_000 },
    { argv: ["chown", "-R", "--no-dereference", `0:${user.gid}`, "--", releaseDir], timeoutMs: 300_000 },
    { argv: ["chmod", "-R", "g+rX,ug-s", "--", releaseDir], timeoutMs: 300_000 },
  ];
}

/**
 * After {@link sealCmds}: prints the first entry of the release that is not root's, or that the
 * group or others may write, or that is set-user-ID or set-group-ID (not a symbolic link), if
 * any. Sealed, there is none; one means a process of the build kept running through the seal and
 * made it.
 */
export function unsealedCmd(releaseDir: string): Cmd {
  return {
    argv: [
      "find",
      releaseDir,
      "(",
      "!",
      "-user",
      "0",
      "-o",
      "!",
      "-type",
      "l",
      "-perm",
      "/6022",
      ")",
      "-print",
      "-quit",
    ],
    timeoutMs: 300_000,
    quiet: true,
  };
}

/**
 * A release an older version built (as root before apps had users, its `.env` root's 0600) made
 * what this version requires before it runs again (a rollback to it): sealed ({@link sealCmds},
 * which also gives its `.env` to the app's group, 0640). Returns what was not so, to say; undefined
 * when nothing was (nothing is changed then).
 */
export async function sealOlder(releaseDir: string, user: AppUser, runner: Runner): Promise<string | undefined> {
  const quiet = (cmd: Cmd) => runner.run(cmd).then((out) => out.output.trim());
  const env = await Deno.lstat(join(releaseDir, ".env")).catch(() => undefined);
  const unshared = env?.isFile && (env.gid !== user.gid || !(env.mode! & 0o040)) ? join(releaseDir, ".env") : "";
  const open = await quiet(unsealedCmd(releaseDir)) || unshared;
  if (!open) return undefined;
  for (const cmd of sealCmds(releaseDir, user)) await runner.run(cmd);
  const still = await quiet(unsealedCmd(releaseDir));
  if (still) {
    throw new Error(`${releaseDir} cannot be sealed: ${still} is not root's, or is writable by others than root`);
  }
  return open;
}

/** A file of the release the app may read but not change (its `.env`): root:<group> 0640. */
export async function shareWithApp(path: string, user: AppUser | undefined): Promise<void> {
  if (!user) return;
  await Deno.chown(path, 0, user.gid);
  await Deno.chmod(path, 0o640);
}

/**
 * /proc/<pid>/status fields: the real uid and the parent pid; undefined for a zombie, unless only
 * its leader is one: a leader that exited alone (SYS_exit) leaves its other threads running.
 */
function procStatus(pid: number): { uid: number; ppid: number; thread: number } | undefined {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const uid = /^Uid:\s+(\d+)/m.exec(status);
    const ppid = /^PPid:\s+(\d+)/m.exec(status);
    // A live thread of it: the leader, or another one when only the leader is a zombie.
    let thread = pid;
    if (/^State:\s+Z/m.test(status)) {
      thread = Number([...Deno.readDirSync(`/proc/${pid}/task`)].find((t) => t.name !== `${pid}`)?.name);
      if (!thread) return undefined;
    }
    return uid && ppid ? { uid: Number(uid[1]), ppid: Number(ppid[1]), thread } : undefined;
  } catch {
    return undefined; // it has just ended
  }
}

function readOr(path: string, read: (path: string) => string): string | undefined {
  try {
    return read(path);
  } catch {
    return undefined;
  }
}

/** Seconds since boot (/proc/uptime), what process start times count from; undefined without /proc. */
export function uptime(): number | undefined {
  const text = readOr("/proc/uptime", Deno.readTextFileSync);
  return text === undefined ? undefined : Number(text.split(" ")[0]);
}

/** When process `pid` started, in seconds since boot (/proc/<pid>/stat, in USER_HZ: 100 a second). */
function startedAt(pid: number): number | undefined {
  const stat = readOr(`/proc/${pid}/stat`, Deno.readTextFileSync);
  return stat === undefined ? undefined : Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19]) / 100;
}

/**
 * The processes a build or hook left behind (Linux /proc), to kill once it has ended, each with
 * its start time (seconds since boot):
 * - with an app user setup created for the app alone (`own`; never a `user:` the operator chose,
 *   whose other programs run as it too): every process of that user started since `since`
 *   (seconds since boot, when the build or hook started) in the deploy's own cgroup, whose
 *   ancestors up to pid 1 are all that user's: an orphan, daemonized (`setsid cmd &`) by a build
 *   or hook. The running app's processes are never such orphans: under systemd they are in their
 *   unit's cgroup (which the app's user cannot leave), under PM2 the root daemon is their parent,
 *   a container's is the engine's monitor (conmon, containerd-shim);
 * - with `releaseDir` (before anything runs from the new release): every process, of any user,
 *   whose working directory is inside it (also what a build run as root left).
 */
export function leftovers(
  user: AppUser | undefined,
  releaseDir?: string,
  since = 0,
): { pid: number; start: number | undefined }[] {
  const dir = releaseDir === undefined ? undefined : readOr(releaseDir, Deno.realPathSync);
  const cgroup = readOr("/proc/self/cgroup", Deno.readTextFileSync);
  const scan = user?.own === true ? user : undefined;
  const table = new Map<number, { uid: number; ppid: number; thread: number }>();
  try {
    for (const entry of Deno.readDirSync("/proc")) {
      const pid = Number(entry.name);
      if (!Number.isInteger(pid)) continue;
      const status = procStatus(pid);
      if (status) table.set(pid, status); // ours too: a chain through us is no orphan
    }
  } catch {
    return []; // no /proc
  }
  const orphan = (pid: number) => {
    for (let p = pid, hops = 0; p > 1 && hops < 4096; hops++) {
      const status = table.get(p);
      if (!status) return true; // gone, or outside our pid namespace: the chain ends here
      if (status.uid !== scan!.uid) return false;
      p = status.ppid;
    }
    return true;
  };
  const inside = (pid: number) => {
    const cwd = readOr(`/proc/${pid}/task/${table.get(pid)!.thread}/cwd`, Deno.readLinkSync);
    return cwd !== undefined && (cwd === dir || cwd.startsWith(`${dir}/`));
  };
  return [...table.keys()].filter((pid) =>
    pid !== Deno.pid && (
      (scan !== undefined && table.get(pid)!.uid === scan.uid && orphan(pid) &&
        // (a zombie leader's own cgroup file reads as the root's: its live thread's is the process's)
        readOr(`/proc/${pid}/task/${table.get(pid)!.thread}/cgroup`, Deno.readTextFileSync) === cgroup &&
        (startedAt(pid) ?? 0) >= since) ||
      (dir !== undefined && inside(pid))
    )
  ).map((pid) => ({ pid, start: startedAt(pid) }));
}

/**
 * Kills (SIGKILL) what {@link leftovers} finds, until nothing is found; returns how many were
 * killed. A pid whose start time changed since it was found (it ended, and the pid was reused)
 * is left alone.
 */
export async function killLeftovers(user: AppUser | undefined, releaseDir?: string, since = 0): Promise<number> {
  const killed = new Set<number>();
  for (let round = 0; round < 50; round++) {
    const found = leftovers(user, releaseDir, since);
    if (!found.length) break;
    for (const { pid, start } of found) {
      if (start === undefined || startedAt(pid) !== start) continue; // ended (and maybe reused)
      try {
        Deno.kill(pid, "SIGKILL");
        killed.add(pid);
      } catch { /* it has just ended */ }
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return killed.size;
}

/** The live processes whose real uid is `uid` (/proc; none without it). */
function processesOf(uid: number): number[] {
  try {
    return [...Deno.readDirSync("/proc")].map((entry) => Number(entry.name))
      .filter((pid) => Number.isInteger(pid) && procStatus(pid)?.uid === uid);
  } catch {
    return [];
  }
}

/**
 * Kills every process of `user`, an app's build user (see buildUserName: one app's alone), once
 * a build command has ended, and before a build starts: none of its processes has any business
 * running then. kill(-1) as that user reaches all of them in one call, also a chain of processes
 * that each fork the next and exit, which no reading of /proc catches (the live one's pid is not
 * yet listed, or gone by the time it is read; see {@link killLeftovers}); it is sent whatever a
 * reading finds, again while one finds any. Returns how many live processes a reading found before.
 */
export async function killAllOf(user: AppUser, runner: Runner): Promise<number> {
  const found = processesOf(user.uid).length;
  for (let round = 0; round < 10; round++) {
    await runner.run({
      argv: ["setpriv", `--reuid=${user.uid}`, `--regid=${user.gid}`, "--clear-groups", "--", "kill", "-KILL", "-1"],
      allowFailure: true, // (procps' kill says 1 either way)
      quiet: true,
      timeoutMs: 10_000,
    });
    if (!processesOf(user.uid).length) break;
  }
  // A process another user started from a set-user-ID program of this one (one a build left) is this user only by
  // its effective uid: with its saved uid given back to its real one, kill(-1) as this user does not reach it (kill(2)
  // asks for the target's real or saved uid), and it would write the next release as this user. Root kills it.
  for (let round = 0; round < 50; round++) {
    const holders = processesHolding(user.uid);
    if (!holders.length) break;
    for (const { pid, start } of holders) {
      if (startedAt(pid) !== start) continue; // ended (and maybe reused)
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* it has just ended */ }
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  // One that forks and exits without end outruns those readings (the pid read is gone when it is killed): not to be
  // killed so, it is at least seen by one of a few more readings, and what the build made is not deployed.
  for (let look = 0; look < 10; look++) {
    const [holder] = processesHolding(user.uid);
    if (holder) {
      throw new Error(
        `a process of uid ${holder.ruid} runs as ${user.name} (its effective or saved uid: a set-user-ID program of ` +
          `${user.name}'s, run by another user) and could not be killed: it could write what ${user.name} builds, so ` +
          "nothing of this build is deployed; find it with `ps -eo pid,ruid,euid,suid,args` and stop it",
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return found;
}

/**
 * The live processes that are `uid` by their effective, saved or filesystem uid but not their real one (/proc; none
 * without it), each with its start time.
 */
function processesHolding(uid: number): { pid: number; ruid: number; start: number | undefined }[] {
  const held: { pid: number; ruid: number; start: number | undefined }[] = [];
  try {
    for (const entry of Deno.readDirSync("/proc")) {
      const pid = Number(entry.name);
      if (!Number.isInteger(pid) || pid === Deno.pid) continue;
      const status = readOr(`/proc/${pid}/status`, Deno.readTextFileSync);
      const uids = status && /^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)/m.exec(status)?.slice(1).map(Number);
      if (!uids || uids[0] === uid || !uids.includes(uid) || /^State:\s+Z/m.test(status!)) continue;
      held.push({ pid, ruid: uids[0], start: startedAt(pid) });
    }
  } catch { /* no /proc */ }
  return held;
}

/**
 * Through sudo (a member of the deploy group pushing: SUDO_USER is set), refuses an app whose
 * builds and hooks would run as root (`user: root`, or no user of its own): the pushed commit's
 * code would run as root, and the deploy group would be root. Pushes as root stay possible.
 */
export function refuseRootThroughSudo(paths: AppPaths, configured: string | undefined): void {
  const pusher = Deno.env.get("SUDO_USER");
  if (pusher === undefined || appUser(paths, configured) !== undefined) return;
  const why = configured === "root" ? `"user: root" in ${paths.config}` : "it has no user of its own";
  throw new UsageError(
    `${paths.app} builds and runs its hooks as root (${why}): a push by ${pusher} through sudo would run the ` +
      "pushed commit's code as root, so it is refused; nothing was changed",
    {
      suggestion: `push as root (root@<server>:${paths.repo}), or give ${paths.app} a user: remove "user: root" ` +
        `from ${paths.config} (it then runs as ${defaultUserName(paths.app)}, which setup creates) or name one ` +
        "(user: NAME)",
    },
  );
}
