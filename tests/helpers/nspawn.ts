/**
 * A real systemd host: a Debian bookworm tree (debootstrap, cached in
 * /var/cache/deploy-paradigm-tests and rebuilt when absent) booted with systemd-nspawn on a
 * copy-on-write overlay, in its own network namespace (a veth pair, a private /30 in
 * 10.252.0.0/16), with its sshd. The project and Deno are bind-mounted read-only, so the host
 * runs this checkout. {@link SystemdHost.close} powers it off and removes everything.
 */
import { join } from "node:path";
import { addNetns, must, removeNetns, sshAccess } from "./host.ts";
import { run } from "./server.ts";

/** The absolute path of `program` in this process's PATH. */
async function which(program: string): Promise<string> {
  const found = await run(["sh", "-c", 'command -v "$1"', "sh", program]);
  if (found.code !== 0) throw new Error(`${program} is not installed here`);
  return found.stdout.trim();
}

const CACHE = "/var/cache/deploy-paradigm-tests";
const TREE = join(CACHE, "bookworm");
const PACKAGES = "systemd,systemd-sysv,dbus,openssh-server,git,python3,python3-venv,iproute2,procps,ca-certificates";
const ROOT = join(import.meta.dirname!, "..", "..");

/** The cached Debian tree, built once (about a minute) under a lock. */
async function ensureTree(): Promise<string> {
  await Deno.mkdir(CACHE, { recursive: true });
  const lock = await Deno.open(join(CACHE, ".lock"), { create: true, write: true });
  await lock.lock(true);
  try {
    if (await Deno.stat(join(TREE, "usr", "bin", "python3")).then(() => true, () => false)) return TREE;
    const temp = `${TREE}.tmp`;
    await Deno.remove(temp, { recursive: true }).catch(() => {});
    await must([
      "debootstrap",
      "--variant=minbase",
      `--include=${PACKAGES}`,
      "bookworm",
      temp,
      "http://deb.debian.org/debian",
    ]);
    await Deno.rename(temp, TREE);
    return TREE;
  } finally {
    lock.close();
  }
}

/** One booted systemd host. */
export class SystemdHost {
  readonly env: Record<string, string>;
  private readonly sshArgv: string[];
  private nspawn?: Deno.ChildProcess;
  private mounted = false;

  private constructor(readonly name: string, readonly dir: string) {
    ({ sshArgv: this.sshArgv, env: this.env } = sshAccess(dir));
  }

  /** The host's address, once booted. */
  address = "";

  /** The root of the host's filesystem, as seen from here. */
  get rootfs(): string {
    return join(this.dir, "merged");
  }

  /**
   * Builds (or reuses) the tree and boots a host; waits until systemd runs and ssh answers. With
   * `pm2`, this machine's node and global pm2 package are bind-mounted read-only (the tree has no
   * node; both run on bookworm's libc), with `pm2` on the host's PATH (/usr/local/bin).
   */
  static async create(options: { pm2?: boolean } = {}): Promise<SystemdHost> {
    const tree = await ensureTree();
    const id = crypto.randomUUID().replaceAll("-", "").slice(0, 6);
    const dir = await Deno.makeTempDir({ prefix: "dp-systemd-" });
    const host = new SystemdHost(`dps${id}`, dir);
    try {
      await host.prepare(tree, options.pm2 ?? false);
      await host.start();
    } catch (error) {
      await host.close();
      throw error;
    }
    return host;
  }

  /** The overlay on the tree, the network namespace, ssh keys, and the arguments of systemd-nspawn. */
  private async prepare(tree: string, pm2: boolean): Promise<void> {
    const { name, dir } = this;
    for (const sub of ["upper", "work", "merged"]) await Deno.mkdir(join(dir, sub));
    await must([
      "mount",
      "-t",
      "overlay",
      "overlay",
      "-o",
      `lowerdir=${tree},upperdir=${join(dir, "upper")},workdir=${join(dir, "work")}`,
      this.rootfs,
    ]);
    this.mounted = true;
    this.address = await addNetns(name, "10.252");

    await must(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", join(dir, "client_key")]);
    const ssh = join(this.rootfs, "root", ".ssh");
    await Deno.mkdir(ssh, { recursive: true, mode: 0o700 });
    await Deno.copyFile(join(dir, "client_key.pub"), join(ssh, "authorized_keys"));
    const hostKey = (await Deno.readTextFile(join(this.rootfs, "etc", "ssh", "ssh_host_ed25519_key.pub")))
      .trim().split(" ").slice(0, 2).join(" ");
    await Deno.writeTextFile(join(dir, "known_hosts"), `${this.address} ${hostKey}\n`);
    const deno = await Deno.realPath(Deno.execPath());
    const binds = [`--bind-ro=${ROOT}`, `--bind-ro=${deno}:/usr/local/bin/deno`];
    if (pm2) {
      const node = await Deno.realPath(await which("node"));
      // bin/pm2 of the global package: the package is its parent's parent.
      const pkg = join(await Deno.realPath(await which("pm2")), "..", "..");
      binds.push(`--bind-ro=${node}:/usr/bin/node`, `--bind-ro=${pkg}`);
      await Deno.symlink(join(pkg, "bin", "pm2"), join(this.rootfs, "usr", "local", "bin", "pm2"));
    }
    this.nspawnArgs = [
      "systemd-nspawn",
      "-q",
      "-D",
      this.rootfs,
      "-b",
      "--register=no",
      "--keep-unit",
      `--machine=${name}`,
      `--network-namespace-path=/run/netns/${name}`,
      "--console=pipe",
      ...binds,
    ];
  }

  private nspawnArgs: string[] = [];

  /** Boots the container on its overlay; waits until systemd runs and ssh answers. */
  private async start(): Promise<void> {
    this.nspawn = new Deno.Command("setsid", {
      args: this.nspawnArgs,
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    for (let i = 0; i < 300; i++) {
      if ((await this.ssh("systemctl is-system-running")).stdout.match(/running|degraded/)) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`the systemd host ${this.name} did not boot`);
  }

  /**
   * Reboots the host: `systemctl reboot` inside, then systemd-nspawn exits (with 133, its code for
   * a container that asked to be rebooted), and the host boots again on the same overlay, in the
   * same network namespace; waits until systemd runs and ssh answers.
   */
  async reboot(): Promise<void> {
    const nspawn = this.nspawn!;
    await this.ssh("systemctl reboot").catch(() => {});
    const status = await Promise.race([
      nspawn.status,
      new Promise<undefined>((r) => setTimeout(r, 90_000, undefined)),
    ]);
    if (status === undefined) throw new Error(`the systemd host ${this.name} did not shut down for its reboot`);
    this.nspawn = undefined;
    if (status.code !== 133) throw new Error(`systemd-nspawn exited with ${status.code}, not 133 (a reboot)`);
    await this.start();
  }

  /**
   * A laptop's work tree in `work` whose `production` remote is `app`'s repository on this host.
   * `push` writes the files, commits them and pushes over SSH; it throws with the output when the
   * push fails, and returns the output.
   */
  async laptop(work: string, app: string) {
    const git = (...args: string[]) => run(["git", ...args], { cwd: work, env: this.env });
    await git("init", "--quiet", "-b", "main");
    await git("remote", "add", "production", `root@${this.address}:/var/repos/${app}.git`);
    const push = async (files: Record<string, string>, message: string) => {
      for (const [path, content] of Object.entries(files)) await Deno.writeTextFile(join(work, path), content);
      await git("add", "-A");
      await git("commit", "--quiet", "-m", message);
      const pushed = await git("push", "production", "main");
      if (pushed.code !== 0) throw new Error(`git push failed (${pushed.code}):\n${pushed.output}`);
      return pushed.output;
    };
    return { git, push };
  }

  /** Runs a command line on the host over ssh. */
  ssh(command: string) {
    return run([...this.sshArgv, `root@${this.address}`, command]);
  }

  /** Powers the host off, then removes its overlay, namespace and files. */
  async close(): Promise<void> {
    if (this.nspawn) {
      await this.ssh("systemctl poweroff").catch(() => {});
      const off = await Promise.race([
        this.nspawn.status.then(() => true),
        new Promise<boolean>((r) => setTimeout(r, 15_000, false)),
      ]);
      if (!off) {
        try {
          Deno.kill(-this.nspawn.pid, "SIGKILL"); // setsid made it a process group
        } catch { /* gone */ }
        await this.nspawn.status;
      }
    }
    if (this.mounted && (await run(["umount", this.rootfs])).code !== 0) await run(["umount", "-l", this.rootfs]);
    await removeNetns(this.name);
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}
