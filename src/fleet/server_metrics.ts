/**
 * Server metrics without an agent: {@link METRICS_SCRIPT}, a constant POSIX sh script that the
 * pull's listing (./pull_plan.ts) runs in the same ssh command (and `host: local` runs with `sh -c`),
 * prints /proc/stat's first line and CPU count, /proc/loadavg, /proc/meminfo's memory and swap,
 * /proc/uptime, the local storage mounts of /proc/self/mounts (point and type: `df -P` has no
 * types, and busybox has no `df -T`), `df -P -k` and `df -P -i` of those (GNU and busybox), and
 * /proc/net/dev, as `M <section>` sections, bounded by lines (and the parser reads
 * {@link MAX_METRICS_BYTES}); shell builtins but for `stat -f` and `timeout`, so it costs a few
 * milliseconds.
 * {@link parseMetrics} reads it as hostile input (a compromised server prints anything: every
 * number checked finite, ≥ 0 and within bounds, at most {@link MAX_FILESYSTEMS} filesystems, never
 * throws), and sampleOf (./server_sample.ts) turns it into a sample: CPU % and network bytes/s
 * come from the deltas against the previous raw counters (none on the first sample, after a
 * reboot or a counter reset). The metric names are the ones alert rules and charts use.
 * @module
 */

/** What the parser reads of the script's output (the script bounds itself by lines: well under this). */
export const MAX_METRICS_BYTES = 64 << 10;
/** Filesystems kept per sample (the first ones df lists, after the pseudo ones are dropped). */
export const MAX_FILESYSTEMS = 64;
/** Mount points longer than this are not read (they keep the output small). */
export const MAX_MOUNT_CHARS = 256;

/** The line that starts the metrics in the listing's output. */
export const METRICS_MARK = "#metrics";

/** Mount points given to df at most (local storage ones, in /proc/self/mounts' order). */
export const MAX_DF_MOUNTS = 96;
/** Seconds each df may take where `timeout` exists (a stuck filesystem must not hold the pull). */
export const DF_TIMEOUT_S = 4;

/**
 * Filesystem types the script never gives df: network ones (a hung server would hang df) and
 * pseudo ones (no storage). Kept as a shell `case` pattern.
 */
const NOT_DF = "nfs|nfs4|cifs|smb3|smbfs|ncpfs|fuse.sshfs|sshfs|ceph|fuse.ceph|glusterfs|fuse.glusterfs|9p|afs|" +
  "lustre|gfs2|ocfs2|davfs|fuse.s3fs|fuse.rclone|fuse.lxcfs|proc|sysfs|cgroup|cgroup2|devpts|devtmpfs|mqueue|" +
  "debugfs|tracefs|securityfs|pstore|bpf|configfs|fusectl|binfmt_misc|autofs|nsfs|overlay|squashfs|hugetlbfs|" +
  "efivarfs|rpc_pipefs|selinuxfs|ramfs|nfsd";

/**
 * The constant script. `[ -r /proc/stat ]` tells whether /proc is there; each file is read on its
 * own (with shell builtins: `p FILE N` prints its first N lines), so what can be read is printed.
 * The small sections come first and /proc/net/dev last, so a cut by the parser can only shorten
 * that one; mount points longer than {@link MAX_MOUNT_CHARS} are skipped, so at most 96 mounts stay
 * well within it. No pipe (no `head`): every exec costs, see below. `stat -f` (the one command run: each exec costs a millisecond or more on a small VPS, and
 * the cycle's time is the target; GNU and busybox) is given the local storage mount points of
 * /proc/self/mounts only (at most {@link MAX_DF_MOUNTS}; no network filesystem, which could hang
 * it; `\040` unescaped, other escaped names skipped) and prints each one's filesystem id, block
 * size, blocks, free, available, inodes and free inodes; each mount's point and type is printed
 * for the parser; without /proc, `df -l` (GNU) or plain df, twice. They run under `timeout` where
 * there is one (`command -v`, no probe). Errors go nowhere and the exit code is always 0: metrics
 * never fail a pull.
 */
export const METRICS_SCRIPT =
  `echo '${METRICS_MARK}'; { t=; command -v timeout >/dev/null && t='timeout ${DF_TIMEOUT_S}'; ` +
  "if [ -r /proc/stat ]; then " +
  'p() { n=0; while [ $n -lt $2 ] && IFS= read -r l; do echo "$l"; n=$((n+1)); done < "$1"; }; ' +
  "echo 'M stat'; n=0; f=; while read -r a b; do case $a in " +
  'cpu) [ -n "$f" ] || echo "$a $b"; f=1 ;; cpu[0-9]*) n=$((n+1)) ;; *) break ;; esac; done < /proc/stat; ' +
  "echo $n; echo 'M loadavg'; p /proc/loadavg 1; echo 'M meminfo'; c=0; while read -r k v; do case $k in " +
  'MemTotal:|MemAvailable:|SwapTotal:|SwapFree:) echo "$k $v"; c=$((c+1)); [ $c -lt 4 ] || break ;; esac; ' +
  "done < /proc/meminfo; " +
  "echo 'M uptime'; p /proc/uptime 1; echo 'M mounts'; set --; while read -r d m y r; do " +
  `case $y in ${NOT_DF}) continue ;; esac; [ $# -lt ${MAX_DF_MOUNTS} ] || break; u=; s=$m; ` +
  "while :; do case $s in *'\\040'*) u=\"$u${s%%'\\040'*} \"; s=${s#*'\\040'} ;; *) break ;; esac; done; " +
  `u="$u$s"; case $u in *\\\\*) continue ;; esac; [ \${#u} -le ${MAX_MOUNT_CHARS} ] || continue; ` +
  'echo "$m $y"; set -- "$@" "$u"; done < /proc/self/mounts; ' +
  "if [ $# -gt 0 ]; then echo 'M statfs'; $t stat -f -c '%i %S %b %f %a %c %d %n' \"$@\"; fi; " +
  "echo 'M netdev'; p /proc/net/dev 258; " +
  "else echo 'M noproc'; echo 'M df'; $t df -P -k -l || $t df -P -k; echo 'M dfi'; $t df -P -i -l || $t df -P -i; fi; " +
  "} 2>/dev/null; true";

/** Server-wide metric names. */
export const SERVER_METRICS = [
  "cpu.percent",
  "load.1",
  "load.5",
  "load.15",
  "load.per_core",
  "memory.used_percent",
  "swap.used_percent",
  "net.rx_bytes_per_s",
  "net.tx_bytes_per_s",
  "uptime.seconds",
] as const;
/** Per-filesystem metric names (labelled by mount point). */
export const DISK_METRICS = ["disk.used_percent", "disk.inodes_used_percent"] as const;
/** Per-app request metric names (per minute, from the proxy's metrics.log). */
export const APP_METRICS = ["app.requests", "app.error_rate", "app.p50_ms", "app.p95_ms"] as const;
export type ServerMetric = typeof SERVER_METRICS[number];
export type DiskMetric = typeof DISK_METRICS[number];
export type AppMetric = typeof APP_METRICS[number];

/** The "no /proc" reason a sample keeps. */
export const NO_PROC = "no /proc on this host";

/** Filesystem types that are not storage (kept: ext*, xfs, btrfs, zfs, tmpfs, vfat, … anything else). */
const PSEUDO = new Set([
  "proc",
  "sysfs",
  "cgroup",
  "cgroup2",
  "devtmpfs",
  "devpts",
  "mqueue",
  "overlay",
  "squashfs",
  "nsfs",
  "tracefs",
  "debugfs",
  "securityfs",
  "pstore",
  "bpf",
  "configfs",
  "fusectl",
  "hugetlbfs",
  "autofs",
  "binfmt_misc",
  "efivarfs",
  "rpc_pipefs",
  "selinuxfs",
  "ramfs",
  "nfsd",
  "fuse.lxcfs",
  "fuse.snapfuse",
  "fuse.gvfsd-fuse",
  "fuse.portal",
  "devfs",
  "none",
  "shm",
  "udev",
]);

/** Whether a filesystem of `type` (or, when its type is unknown, of device `device`) is storage. */
export function isStorage(type: string | undefined, device: string): boolean {
  if (type !== undefined) return !PSEUDO.has(type) && !type.startsWith("cgroup");
  return !PSEUDO.has(device) && !device.startsWith("cgroup");
}

/** Counters as read (monotonic; deltas give rates). */
export interface Counters {
  /** CPU time that was not idle or iowait, and all of it (USER_HZ ticks). */
  cpuBusy?: number;
  cpuTotal?: number;
  /** Bytes received and sent, all interfaces but lo and virtual ones (veth, docker, bridges…). */
  netRx?: number;
  netTx?: number;
  /** Seconds since boot (it going back = a reboot: counters restarted). */
  uptime?: number;
}

/** What the script's output says, checked and bounded. */
export interface RawMetrics {
  counters: Counters;
  cpus?: number;
  load?: [number, number, number];
  memory?: { total: number; available: number };
  swap?: { total: number; free: number };
  filesystems: { mount: string; used?: number; inodes?: number }[];
  /** What could not be read, one phrase each. */
  missing: string[];
}

/** The largest counter or size taken (beyond: not a real value). */
const MAX_NUMBER = Number.MAX_SAFE_INTEGER;

/** A number as printed: digits (and a fraction) only, finite, within [0, max]; else undefined. */
function num(text: string | undefined, max = MAX_NUMBER): number | undefined {
  if (text === undefined || !/^\d{1,20}(\.\d{1,9})?$/.test(text)) return undefined;
  const value = Number(text);
  return Number.isFinite(value) && value >= 0 && value <= max ? value : undefined;
}

/**
 * A listing's output split at the line {@link METRICS_MARK}: the files' part, and the metrics'
 * (bounded to {@link MAX_METRICS_BYTES}; undefined when there is none).
 */
export function splitMetrics(output: string): { listing: string; metrics?: string } {
  const lead = `${METRICS_MARK}\n`;
  const at = output.startsWith(lead) ? 0 : (output.indexOf(`\n${lead}`) + 1 || -1);
  if (at < 0) return { listing: output };
  const start = at + lead.length;
  return { listing: output.slice(0, at), metrics: output.slice(start, start + MAX_METRICS_BYTES) };
}

/** Parses the script's output (hostile input); never throws. */
export function parseMetrics(output: string): RawMetrics {
  const sections = new Map<string, string[]>();
  let current: string[] | undefined;
  for (const line of output.slice(0, MAX_METRICS_BYTES + 64).split("\n")) {
    const section = /^M ([a-z]+)$/.exec(line)?.[1];
    if (section) {
      if (!sections.has(section)) sections.set(section, current = []);
      else current = undefined; // a section twice: the first counts
    } else if (current && current.length < 2048) current.push(line);
  }
  const raw: RawMetrics = { counters: {}, filesystems: [], missing: [] };
  if (sections.has("noproc")) raw.missing.push(NO_PROC);
  else {
    readStat(sections.get("stat"), raw);
    readLoad(sections.get("loadavg"), raw);
    readMemory(sections.get("meminfo"), raw);
    readNet(sections.get("netdev"), raw);
    const uptime = num(sections.get("uptime")?.[0]?.trim().split(/\s+/)[0], 1e11);
    if (uptime !== undefined) raw.counters.uptime = uptime;
    else raw.missing.push("no /proc/uptime");
  }
  readDisks(sections.get("mounts"), sections, raw);
  return raw;
}

function readStat(lines: string[] | undefined, raw: RawMetrics): void {
  const fields = lines?.[0]?.trim().split(/\s+/) ?? [];
  const ticks = fields.slice(1, 9).map((f) => num(f));
  const cpus = num(lines?.[1]?.trim(), 1 << 16);
  if (fields[0] !== "cpu" || ticks.length < 4 || ticks.some((t) => t === undefined)) {
    raw.missing.push("no /proc/stat");
    return;
  }
  const [user, nice, system, idle, iowait = 0, irq = 0, softirq = 0, steal = 0] = ticks as number[];
  const total = user + nice + system + idle + iowait + irq + softirq + steal;
  if (total > MAX_NUMBER) return;
  raw.counters.cpuTotal = total;
  raw.counters.cpuBusy = total - idle - iowait;
  if (cpus !== undefined && cpus >= 1) raw.cpus = cpus;
}

function readLoad(lines: string[] | undefined, raw: RawMetrics): void {
  const load = (lines?.[0]?.trim().split(/\s+/) ?? []).slice(0, 3).map((f) => num(f, 1e6));
  if (load.length === 3 && load.every((l) => l !== undefined)) raw.load = load as [number, number, number];
  else raw.missing.push("no /proc/loadavg");
}

function readMemory(lines: string[] | undefined, raw: RawMetrics): void {
  const kb = new Map<string, number>();
  for (const line of lines ?? []) {
    const match = /^(MemTotal|MemAvailable|SwapTotal|SwapFree):\s+(\d{1,20})(?: kB)?$/.exec(line.trim());
    const value = num(match?.[2]);
    if (match && value !== undefined && !kb.has(match[1])) kb.set(match[1], value);
  }
  const [total, available] = [kb.get("MemTotal"), kb.get("MemAvailable")];
  if (total !== undefined && available !== undefined && total > 0) {
    raw.memory = { total, available: Math.min(available, total) };
  } else raw.missing.push("no memory in /proc/meminfo");
  const [swapTotal, swapFree] = [kb.get("SwapTotal"), kb.get("SwapFree")];
  if (swapTotal !== undefined) raw.swap = { total: swapTotal, free: Math.min(swapFree ?? swapTotal, swapTotal) };
}

/**
 * Interfaces not counted: loopback, and the virtual ones of containers and VMs (veth pairs and
 * bridges carry traffic that the real interface carries too: it would count two or three times).
 */
const VIRTUAL_INTERFACE = /^(lo$|veth|docker|br-|virbr|cni|flannel)/;

function readNet(lines: string[] | undefined, raw: RawMetrics): void {
  let rx = 0;
  let tx = 0;
  let seen = 0;
  for (const line of lines ?? []) {
    const match = /^\s*([^\s:]{1,64}):\s*(.*)$/.exec(line);
    if (!match || VIRTUAL_INTERFACE.test(match[1])) continue;
    const fields = match[2].trim().split(/\s+/);
    const [r, t] = [num(fields[0]), num(fields[8])];
    if (r === undefined || t === undefined) continue;
    rx += r;
    tx += t;
    seen++;
  }
  if (!lines) raw.missing.push("no /proc/net/dev");
  else if (seen && rx <= MAX_NUMBER && tx <= MAX_NUMBER) Object.assign(raw.counters, { netRx: rx, netTx: tx });
}

/** A mount point as /proc/self/mounts writes it (`\040` for a space…), as df prints it. */
function unescapeMount(text: string): string {
  return text.replace(/\\([0-7]{3})/g, (_, octal) => String.fromCharCode(parseInt(octal, 8)));
}

/** `df -P` lines: device, total, used, available, percent, mount point (which may hold spaces). */
const DF_LINE = /^(\S+)\s+(\d{1,20})\s+(\d{1,20})\s+(\d{1,20})\s+(?:\d{1,3}%|-)\s+(\/.{0,4095})$/;

/** `stat -f -c '%i %S %b %f %a %c %d %n'` lines: fs id, block size, blocks, free, available, inodes, free inodes, the mount point. */
const STATFS_LINE =
  /^([0-9a-f]{1,32}) (\d{1,20}) (\d{1,20}) (\d{1,20}) (\d{1,20}) (\d{1,20}) (\d{1,20}) (\/.{0,4095})$/;

/** One filesystem as df or statfs saw it: space used and available (any unit), inodes used as a percent. */
interface Disk {
  mount: string;
  /** The same filesystem under another mount point has the same (a block device, a statfs id); none: never merged. */
  same?: string;
  /** What its type is judged by when /proc/self/mounts does not say (df's device column). */
  device: string;
  used: number;
  available: number;
  inodes?: number;
}

/** The disks of `df -P -k` and `df -P -i` output (the host without /proc). */
function dfDisks(df: string[], dfi: string[] | undefined): Disk[] {
  const inodes = new Map<string, number>();
  for (const line of dfi ?? []) {
    const match = DF_LINE.exec(line.trimEnd());
    const [total, used, free] = [num(match?.[2]), num(match?.[3]), num(match?.[4])];
    if (match && total && used !== undefined && free !== undefined && used + free > 0) {
      inodes.set(match[5], Math.min(100, used / (used + free) * 100));
    }
  }
  const disks: Disk[] = [];
  for (const line of df) {
    const match = DF_LINE.exec(line.trimEnd());
    if (!match) continue;
    const [total, used, available] = [num(match[2]), num(match[3]), num(match[4])];
    if (!total || used === undefined || available === undefined) continue; // pseudo: no blocks
    const [device, mount] = [match[1], match[5]];
    disks.push({ mount, device, same: device.startsWith("/") ? device : undefined, used, available });
    if (inodes.has(mount)) disks.at(-1)!.inodes = inodes.get(mount);
  }
  return disks;
}

/** The disks of `stat -f` output (df's figures: used = blocks − free, against used + available). */
function statfsDisks(lines: string[]): Disk[] {
  const disks: Disk[] = [];
  for (const line of lines) {
    const match = STATFS_LINE.exec(line.trimEnd());
    if (!match) continue;
    const [size, blocks, free, available, files, freeFiles] = match.slice(2, 8).map((text) => num(text));
    if (!size || !blocks || free === undefined || available === undefined || free > blocks) continue; // no blocks
    // A zero id (tmpfs on older kernels) names no filesystem: never merged.
    const same = /^0+$/.test(match[1]) ? undefined : `fs:${match[1]}`;
    const disk: Disk = { mount: match[8], device: "", same, used: blocks - free, available };
    if (files && freeFiles !== undefined && freeFiles <= files) disk.inodes = (files - freeFiles) / files * 100;
    disks.push(disk);
  }
  return disks;
}

function readDisks(mounts: string[] | undefined, sections: Map<string, string[]>, raw: RawMetrics): void {
  const types = new Map<string, string>();
  for (const line of mounts ?? []) {
    const [point, type] = line.split(" "); // `<mount point, escaped> <type>`
    if (point && type) types.set(unescapeMount(point), type); // the last mount over a point is the one seen
  }
  const statfs = sections.get("statfs");
  const df = sections.get("df");
  if (!statfs && !df) return void raw.missing.push("no df");
  const disks = statfs ? statfsDisks(statfs) : dfDisks(df!, sections.get("dfi"));
  const seen = new Set<string>();
  /** A filesystem, once: at its shortest mount point (as GNU df does; busybox lists bind mounts). */
  const same = new Map<string, RawMetrics["filesystems"][number]>();
  let dropped = 0;
  for (const disk of disks) {
    const { mount } = disk;
    if (disk.used + disk.available <= 0) continue;
    if (!isStorage(mounts ? types.get(mount) : undefined, disk.device) || seen.has(mount)) continue;
    if (/^\/(proc|sys)(\/|$)/.test(mount)) continue;
    seen.add(mount);
    const other = disk.same ? same.get(disk.same) : undefined;
    if (other) {
      if (mount.length < other.mount.length) {
        Object.assign(other, { mount }, disk.inodes !== undefined ? { inodes: disk.inodes } : {});
      }
      continue;
    }
    if (raw.filesystems.length >= MAX_FILESYSTEMS) {
      dropped++;
      continue;
    }
    const fs: RawMetrics["filesystems"][number] = {
      mount,
      used: Math.min(100, disk.used / (disk.used + disk.available) * 100),
      ...(disk.inodes !== undefined ? { inodes: Math.min(100, disk.inodes) } : {}),
    };
    if (disk.same) same.set(disk.same, fs);
    raw.filesystems.push(fs);
  }
  if (dropped) raw.missing.push(`${dropped} filesystem(s) over the ${MAX_FILESYSTEMS} kept`);
}
