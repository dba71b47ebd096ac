/**
 * Who listens on a TCP port: the LISTEN sockets of /proc/net/tcp and /proc/net/tcp6 (this
 * network namespace's), with the uid that created each. The deploy's health check and the proxy
 * use it to refuse a port that another user's process holds (an app that took another app's port
 * the moment its owner let go of it: a restart, a crash). Light on purpose (the proxy loads it).
 * @module
 */

/** One listening TCP socket. */
export interface Listener {
  /** The local address, `127.0.0.1`, `0.0.0.0`, `::`, `::1`, `::ffff:127.0.0.1`. */
  address: string;
  port: number;
  uid: number;
  /** The socket's inode: which process holds it (see {@link holders}). */
  inode: number;
}

/** The state column's value of a listening socket (TCP_LISTEN). */
const LISTEN = "0A";

/**
 * The LISTEN sockets of the text of /proc/net/tcp or /proc/net/tcp6 (header line skipped;
 * malformed lines too). Addresses are in the kernel's byte order: each 32-bit word little-endian
 * (the machines this runs on).
 */
export function parseListeners(text: string): Listener[] {
  const found: Listener[] = [];
  // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid …: only LISTEN
  // lines are split (a busy proxy's table is mostly connections; " 0A " is only ever the state).
  let at = text.indexOf(` ${LISTEN} `);
  while (at >= 0) {
    const start = text.lastIndexOf("\n", at) + 1;
    let end = text.indexOf("\n", at);
    if (end < 0) end = text.length;
    const fields = text.slice(start, end).trim().split(/\s+/);
    at = text.indexOf(` ${LISTEN} `, end);
    if (fields.length < 8 || fields[3] !== LISTEN || !fields[0].endsWith(":")) continue;
    const [hex, portHex] = fields[1].split(":");
    const port = parseInt(portHex ?? "", 16);
    const uid = Number(fields[7]);
    const inode = Number(fields[9] ?? 0);
    const address = decodeAddress(hex);
    if (address === undefined || !(port > 0 && port < 65536) || !Number.isInteger(uid) || uid < 0) continue;
    found.push({ address, port, uid, inode: Number.isInteger(inode) && inode > 0 ? inode : 0 });
  }
  return found;
}

/** 8 hex digits (IPv4) or 32 (IPv6), each 32-bit word little-endian, as text. */
function decodeAddress(hex: string | undefined): string | undefined {
  if (!hex || !/^(?:[0-9A-Fa-f]{8}){1,4}$/.test(hex) || hex.length === 16 || hex.length === 24) return undefined;
  const bytes: number[] = [];
  for (let word = 0; word < hex.length; word += 8) {
    for (let i = 6; i >= 0; i -= 2) bytes.push(parseInt(hex.slice(word + i, word + i + 2), 16));
  }
  if (bytes.length === 4) return bytes.join(".");
  if (bytes.slice(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff) {
    return `::ffff:${bytes.slice(12).join(".")}`;
  }
  const groups = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] << 8) | bytes[i + 1]).toString(16));
  // The longest run of two or more zero groups becomes `::`.
  let best = [-1, 0];
  for (let i = 0; i < 8; i++) {
    let j = i;
    while (j < 8 && groups[j] === "0") j++;
    if (j - i > best[1] && j - i > 1) best = [i, j - i];
    if (j > i) i = j;
  }
  if (best[0] < 0) return groups.join(":");
  return `${groups.slice(0, best[0]).join(":")}::${groups.slice(best[0] + best[1]).join(":")}`;
}

/** The LISTEN sockets of this network namespace now (IPv4 and IPv6); none of a family /proc does not have. */
export async function readListeners(): Promise<Listener[]> {
  const texts = await Promise.all(["/proc/net/tcp", "/proc/net/tcp6"].map((path) => listenPart(path).catch(() => "")));
  return texts.flatMap(parseListeners);
}

/**
 * The start of a /proc/net/tcp{,6} file up to its first socket that does not listen: the kernel
 * lists the listening sockets first (its listening hash, then the established one), and makes the
 * file as it is read, so a busy server's thousands of connections are neither made nor read.
 */
async function listenPart(path: string): Promise<string> {
  using file = await Deno.open(path);
  const decoder = new TextDecoder();
  const buffer = new Uint8Array(64 * 1024);
  let text = "";
  for (let n; (n = await file.read(buffer)) !== null;) {
    text += decoder.decode(buffer.subarray(0, n), { stream: true });
    // Each line after the header: `sl local rem st …`; the first whose state is not LISTEN ends it.
    const other = /^\s*\d+: \S+ \S+ (?!0A )[0-9A-F]{2} /m.exec(text);
    if (other) return text.slice(0, other.index);
  }
  return text;
}

/**
 * The listeners on `port` created by a uid other than `uid` (or than all of `uid`'s): any local
 * address counts (the loopback and wildcard ones take the proxy's and the health check's
 * connections; a specific one has no business on an app's port either).
 */
export function foreignListeners(
  listeners: readonly Listener[],
  port: number,
  uid: number | readonly number[],
): Listener[] {
  const own = typeof uid === "number" ? [uid] : uid;
  return listeners.filter((l) => l.port === port && !own.includes(l.uid));
}

/**
 * Why `port` is not `owner`'s (uid `uid`), in words, or undefined when no other uid listens on
 * it: `port 18072 is held by app-alpha (uid 998), not app-beta: another process took it`.
 * `nameOf` gives a uid's user name.
 */
export function heldBy(
  listeners: readonly Listener[],
  port: number,
  uid: number | readonly number[],
  owner: string,
  nameOf: (uid: number) => string | undefined,
): string | undefined {
  const foreign = foreignListeners(listeners, port, uid);
  if (!foreign.length) return undefined;
  const uids = [...new Set(foreign.map((l) => l.uid))];
  const who = uids.map((id) => {
    const name = nameOf(id);
    return name ? `${name} (uid ${id})` : `uid ${id}`;
  }).join(" and ");
  return `port ${port} is held by ${who}, not ${owner}: another process took it`;
}

/**
 * The processes that hold each of the sockets `inodes` (their descriptors link to `socket:[inode]`),
 * among the processes of `uid` (one user's: a few, not the whole server's); pids by inode. Root
 * sees every process's descriptors; a process gone meanwhile is skipped.
 */
export async function holders(inodes: readonly number[], uid: number, proc = "/proc"): Promise<Map<number, number[]>> {
  const wanted = new Map(inodes.filter((inode) => inode > 0).map((inode) => [`socket:[${inode}]`, inode]));
  const found = new Map<number, number[]>();
  if (!wanted.size) return found;
  for await (const entry of Deno.readDir(proc)) {
    const pid = Number(entry.name);
    if (!Number.isInteger(pid) || pid <= 0) continue;
    try {
      if ((await Deno.stat(`${proc}/${pid}`)).uid !== uid) continue;
      for await (const fd of Deno.readDir(`${proc}/${pid}/fd`)) {
        const inode = wanted.get(await Deno.readLink(`${proc}/${pid}/fd/${fd.name}`).catch(() => ""));
        if (inode !== undefined) found.set(inode, [...(found.get(inode) ?? []), pid]);
      }
    } catch { /* gone, or not ours to read */ }
  }
  return found;
}

/** Whether process `pid` is `root` or one of its descendants (its parents by /proc/<pid>/stat). */
export async function descendsFrom(pid: number, root: number, proc = "/proc"): Promise<boolean> {
  for (let at = pid, depth = 0; at > 1 && depth < 256; depth++) {
    if (at === root) return true;
    const stat = await Deno.readTextFile(`${proc}/${at}/stat`).catch(() => "");
    // pid (comm) state ppid …: comm may hold spaces and parentheses, so from the last ")".
    at = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    if (!Number.isInteger(at)) return false;
  }
  return false;
}

/**
 * Why `port` is not held by process `pid` of `owner` (uid `uid`) or its descendants, in words, or
 * undefined when every listener there of that uid is theirs: another process of the same user
 * (what a compromised release left running, say) would answer the health check and get the
 * traffic. `started` names the process, e.g. `beta-green`. Other uids are {@link heldBy}'s.
 */
export async function heldOutside(
  listeners: readonly Listener[],
  port: number,
  uid: number,
  pid: number,
  started: string,
  proc = "/proc",
): Promise<string | undefined> {
  const own = listeners.filter((l) => l.port === port && l.uid === uid);
  const pids = await holders(own.map((l) => l.inode), uid, proc);
  const outside: number[] = [];
  for (const listener of own) {
    const by = pids.get(listener.inode) ?? [];
    const theirs = await Promise.all(by.map((holder) => descendsFrom(holder, pid, proc)));
    if (by.length && !theirs.some(Boolean)) outside.push(...by);
  }
  if (!outside.length) return undefined;
  const list = [...new Set(outside)].sort((a, b) => a - b).join(", ");
  return `port ${port} is held by pid ${list}, not by ${started} (pid ${pid}) nor a process it started: ` +
    "another process of the app's user took it";
}
