/**
 * A fake VPS: its own network namespace (a veth pair to this machine, a private /30 in
 * 10.251.0.0/16), its own sshd with its own host key, and its own /root (so its own ~/.pm2),
 * /opt/deployments and /var/log/deployments (seen here as {@link FakeVps.deployments} and
 * {@link FakeVps.logs}), mounted in a private mount namespace. The test is "the laptop": it reaches the host over real
 * SSH. Everything is torn down by {@link FakeVps.close}: the processes of the namespace, the
 * namespace, the link, the files.
 *
 * Options of {@link FakeVps.create} ({@link VpsOptions}), for server metrics: `proc: "synthetic"`
 * bind-mounts files of {@link FakeVps.procDir} over the host's /proc/stat, /proc/meminfo,
 * /proc/loadavg and /proc/uptime (they start with {@link SYNTHETIC_PROC}'s values; rewrite them in
 * place with {@link FakeVps.writeProc} between cycles: a bind mount follows the inode, so never
 * replace them by rename). /proc/net/dev cannot be bound that way (/proc/net is a per-process
 * link): it stays the namespace's real one (its veth and lo). `proc: "hidden"` binds an empty
 * directory over /proc (a host without /proc). `tmpfs: { path, size }` mounts a tmpfs of `size`
 * (e.g. "16m") at `path` on the host (created if missing, left empty like the other mount points),
 * which a test fills over `vps.ssh("fallocate -l 8M /srv/data/x")`. `checkout: dir` makes a checkout
 * of deploy-paradigm (an older commit's, say) the host's binary, {@link FakeVps.bin}, at one path of
 * the host's own; {@link FakeVps.useCheckout} installs another there (an upgrade). All of them are
 * mounts in the host's mount namespace: they go with it.
 */
import { join } from "node:path";
import { addNetns, must, removeNetns, sshAccess } from "./host.ts";
import { BIN, run } from "./server.ts";

/** The options of a fake host (see the module's doc). */
export interface VpsOptions {
  proc?: "synthetic" | "hidden";
  tmpfs?: { path: string; size: string };
  /**
   * A checkout of deploy-paradigm (e.g. an older commit's, with its `deno install` done) to be the
   * host's binary, {@link FakeVps.bin}: bound at one path of the host's own, as `install.sh` puts
   * the binary at /usr/local/bin, so that hooks and services an older version wrote run whatever
   * {@link FakeVps.useCheckout} put there since (the upgrade). Without it the host runs this checkout
   * from its own path ({@link BIN}).
   */
  checkout?: string;
}

/** The synthetic /proc files a host starts with (`proc: "synthetic"`): 2 CPUs, 4 GiB, 1 GiB of swap. */
export const SYNTHETIC_PROC: Record<"stat" | "meminfo" | "loadavg" | "uptime", string> = {
  stat: "cpu  1000 0 1000 8000 0 0 0 0 0 0\ncpu0 500 0 500 4000 0 0 0 0 0 0\ncpu1 500 0 500 4000 0 0 0 0 0 0\n" +
    "intr 0\nctxt 0\nbtime 0\n",
  meminfo: "MemTotal:        4194304 kB\nMemFree:          524288 kB\nMemAvailable:    1048576 kB\n" +
    "SwapTotal:       1048576 kB\nSwapFree:         786432 kB\n",
  loadavg: "0.50 0.25 0.10 1/100 1234\n",
  uptime: "3600.00 7000.00\n",
};

/** Where each host has its own directory (empty mount points on this machine). */
const MOUNT_POINTS = ["/opt/deployments", "/var/log/deployments", "/var/repos"];

/**
 * login.defs lines giving the system users and groups `setup` creates on the host at `address`
 * ids of their own: 20 from 30000 + 20 × (its /30's index in 10.251.0.0/16, modulo 1500). The
 * hosts share this machine's process IDs (not a real VPS's way): with the same uid on two hosts,
 * one host's `kill -1` as its build user would kill the other's build.
 */
function uidRange(address: string): string {
  const [, , third, fourth] = address.split(".").map(Number);
  const base = 30_000 + ((third * 64 + (fourth >> 2)) % 1500) * 20;
  return ["SYS_UID_MIN", "SYS_GID_MIN"].map((key) => `${key} ${base}\n`).join("") +
    ["SYS_UID_MAX", "SYS_GID_MAX"].map((key) => `${key} ${base + 19}\n`).join("");
}

/** One fake VPS host. */
export class FakeVps {
  /** Environment for git and ssh on the laptop side. */
  readonly env: Record<string, string>;
  /** `ssh` with this host's key and known_hosts, strict host key checking, never a prompt. */
  private readonly sshArgv: string[];
  private sshd?: Deno.ChildProcess;

  private constructor(readonly name: string, readonly dir: string, readonly options: VpsOptions = {}) {
    ({ sshArgv: this.sshArgv, env: this.env } = sshAccess(dir));
  }

  /** The host's address, once booted. */
  address = "";

  /** Where the host's `checkout` is bound (an empty directory on this machine). */
  private get installed(): string {
    return join(this.dir, "installed");
  }

  /** The host's deploy-paradigm: the `checkout`'s launcher at the host's own path, else {@link BIN}. */
  get bin(): string {
    return this.options.checkout ? join(this.installed, "bin", "deploy-paradigm") : BIN;
  }

  /**
   * Installs another checkout as the host's binary (the operator's `install.sh` again): from now on
   * {@link FakeVps.bin}, the hooks and the services run it. Processes already running keep the code
   * they started with, as with a binary replaced on disk.
   */
  async useCheckout(checkout: string): Promise<void> {
    if (!this.options.checkout) throw new Error("useCheckout: the host was created without a checkout");
    const remount = await this.ssh(`umount -l ${this.installed} && mount --bind ${checkout} ${this.installed}`);
    if (remount.code !== 0) throw new Error(`cannot install ${checkout} on the host: ${remount.output}`);
    this.options.checkout = checkout;
  }

  /** Boots a host: namespace, link, keys, sshd (and the mounts of `options`). */
  static async create(options: VpsOptions = {}): Promise<FakeVps> {
    const id = crypto.randomUUID().replaceAll("-", "").slice(0, 6);
    const dir = await Deno.makeTempDir({ prefix: "dp-vps-" });
    const vps = new FakeVps(`dpv${id}`, dir, options);
    try {
      await vps.boot();
    } catch (error) {
      await vps.close();
      throw error;
    }
    return vps;
  }

  private async boot(): Promise<void> {
    const { name, dir } = this;
    this.address = await addNetns(name, "10.251");

    await Deno.mkdir(join(dir, "root"));
    await Deno.mkdir(this.deployments, { recursive: true });
    await Deno.mkdir(this.logs, { recursive: true });
    await Deno.mkdir(join(dir, "var-repos"), { recursive: true });
    await Deno.mkdir(this.procDir, { recursive: true });
    await Deno.mkdir(this.installed);
    if (this.options.proc === "synthetic") {
      for (const [file, text] of Object.entries(SYNTHETIC_PROC)) {
        await Deno.writeTextFile(join(this.procDir, file), text);
      }
    }
    for (const point of MOUNT_POINTS) await Deno.mkdir(point, { recursive: true });
    await Deno.mkdir("/run/sshd", { recursive: true });
    await must(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", join(dir, "host_key")]);
    await must(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", join(dir, "client_key")]);
    await Deno.copyFile(join(dir, "client_key.pub"), join(dir, "authorized_keys"));
    const hostKey = (await Deno.readTextFile(join(dir, "host_key.pub"))).trim().split(" ").slice(0, 2).join(" ");
    await Deno.writeTextFile(join(dir, "known_hosts"), `${this.address} ${hostKey}\n`);
    await Deno.writeTextFile(
      join(dir, "sshd_config"),
      [
        `ListenAddress ${this.address}`,
        `HostKey ${join(dir, "host_key")}`,
        `AuthorizedKeysFile ${join(dir, "authorized_keys")}`,
        "PidFile none",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        "UsePAM no",
        "StrictModes no",
        `SetEnv PATH=${Deno.env.get("PATH") ?? "/usr/local/bin:/usr/bin:/bin"}`, // deno and pm2 where this machine has them
        "",
      ].join("\n"),
    );
    await this.startSshd();
  }

  /** The host's /opt/deployments, from this machine. */
  get deployments(): string {
    return join(this.dir, "opt-deployments");
  }

  /** The files bound over the host's /proc (`proc: "synthetic"`; empty, over /proc itself, with "hidden"). */
  get procDir(): string {
    return join(this.dir, "proc");
  }

  /** Rewrites a synthetic /proc file in place (the bind mount follows its inode). */
  async writeProc(file: keyof typeof SYNTHETIC_PROC, text: string): Promise<void> {
    await Deno.writeTextFile(join(this.procDir, file), text);
  }

  /** The host's /var/log/deployments, from this machine. */
  get logs(): string {
    return join(this.dir, "var-log-deployments");
  }

  /**
   * Starts sshd, with its own /root (so its own ~/.pm2), /opt/deployments, /var/log/deployments,
   * /var/repos and /etc (a copy of this machine's, made once: `setup` as root creates users and
   * groups and writes /etc/gitconfig, which must stay the host's), in a private mount namespace
   * that sshd and every session and hook inherit.
   */
  async startSshd(): Promise<void> {
    const { name, dir } = this;
    if (!(await Deno.stat(join(dir, "etc")).then(() => true, () => false))) {
      await must(["cp", "-a", "/etc", join(dir, "etc")]);
      await Deno.writeTextFile(join(dir, "etc/login.defs"), uidRange(this.address), { append: true });
    }
    this.sshd = new Deno.Command("ip", {
      args: [
        "netns",
        "exec",
        name,
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        'mount --bind "$1" /root && mount --bind "$4" /opt/deployments && mount --bind "$5" /var/log/deployments && ' +
        'mount --bind "$6" /var/repos && mount --bind "$7" /etc && ' +
        'if [ -n "${10}" ]; then mkdir -p "${10}" && mount -t tmpfs -o "size=${11}" tmpfs "${10}" || exit 1; fi && ' +
        'case "$9" in synthetic) for f in stat meminfo loadavg uptime; do mount --bind "$8/$f" "/proc/$f" || exit 1; ' +
        'done ;; hidden) mount --bind "$8" /proc || exit 1 ;; esac && ' +
        'if [ -n "${12}" ]; then mount --bind "${12}" "${13}" || exit 1; fi && exec /usr/sbin/sshd -D -f "$2" -E "$3"',
        "sh",
        join(dir, "root"),
        join(dir, "sshd_config"),
        join(dir, "sshd.log"),
        this.deployments,
        this.logs,
        join(dir, "var-repos"),
        join(dir, "etc"),
        this.procDir,
        this.options.proc ?? "",
        this.options.tmpfs?.path ?? "",
        this.options.tmpfs?.size ?? "",
        this.options.checkout ?? "",
        this.installed,
      ],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    for (let i = 0; i < 100; i++) {
      if ((await this.ssh("true")).code === 0) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`sshd did not come up:\n${await Deno.readTextFile(join(dir, "sshd.log")).catch(() => "")}`);
  }

  /** Runs a shell command line on the host over ssh. */
  ssh(command: string) {
    return run([...this.sshArgv, `root@${this.address}`, command]);
  }

  /** The host goes down: every process of its namespace ends (sshd and its sessions). */
  async down(): Promise<void> {
    const pids = await run(["ip", "netns", "pids", this.name]);
    for (const pid of pids.stdout.split("\n").map(Number).filter((p) => p > 1)) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* gone */ }
    }
    if (this.sshd) {
      try {
        this.sshd.kill("SIGKILL");
      } catch { /* gone */ }
      await this.sshd.status;
      this.sshd = undefined;
    }
  }

  /** Stops every process of the host's namespace, then removes the namespace, the link and the files. */
  async close(): Promise<void> {
    await this.ssh("pm2 kill").catch(() => {});
    await this.down();
    await removeNetns(this.name);
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}
