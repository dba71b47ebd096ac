/**
 * Who listens on a port (src/listeners.ts): /proc/net/tcp and /proc/net/tcp6 parsed from fixture
 * text, and the message that names who holds an app's port.
 */
import { assertEquals, assertMatch } from "../helpers/assert.ts";
import {
  foreignListeners,
  heldBy,
  heldOutside,
  holders,
  type Listener,
  parseListeners,
  readListeners,
} from "../../src/listeners.ts";

// Lines as the kernel writes them (trailing columns trimmed): LISTEN is state 0A; 06 is TIME_WAIT, 01 ESTABLISHED.
const TCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 23 1 00000000ab663576 100 0 0 10 0
   1: 0100007F:46B0 00000000:0000 0A 00000000:00000000 00:00000000 00000000   998        0 4411 1 0000000000000000 100 0 0 10 0
   2: 0100007F:83F1 0100007F:46B0 06 00000000:00000000 03:00001270 00000000     0        0 0 3 000000004fcf0b3a
   3: 0100007F:46B0 0100007F:D880 01 00000000:00000000 00:00000000 00000000   997        0 4412 1 0000000000000000 20 4 30 10 -1
   4: 0500000A:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1001        0 4413 1 0000000000000000 100 0 0 10 0
`;
const TCP6 =
  `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:46B1 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000   997        0 5511 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:46B2 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000   996        0 5512 1 0000000000000000 100 0 0 10 0
   2: 0000000000000000FFFF00000100007F:46B3 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000   995        0 5513 1 0000000000000000 100 0 0 10 0
   3: B80D0120000000000000000001000000:46B4 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000   994        0 5514 1 0000000000000000 100 0 0 10 0
`;

Deno.test("parseListeners: LISTEN sockets of /proc/net/tcp and tcp6, their address, port and uid; nothing else", () => {
  assertEquals(parseListeners(TCP), [
    { address: "0.0.0.0", port: 2024, uid: 0, inode: 23 },
    { address: "127.0.0.1", port: 18096, uid: 998, inode: 4411 },
    { address: "10.0.0.5", port: 8080, uid: 1001, inode: 4413 },
  ]);
  assertEquals(parseListeners(TCP6), [
    { address: "::", port: 18097, uid: 997, inode: 5511 },
    { address: "::1", port: 18098, uid: 996, inode: 5512 },
    { address: "::ffff:127.0.0.1", port: 18099, uid: 995, inode: 5513 },
    { address: "2001:db8::1", port: 18100, uid: 994, inode: 5514 },
  ]);
  // Garbage, a header, an empty text, a line cut short: skipped, never thrown.
  assertEquals(parseListeners(""), []);
  assertEquals(
    parseListeners("  sl  local_address\n   0: zz:zz 0 0A 0 0 0 x\n   1: 0100007F:46B0 00000000:0000 0A\n"),
    [],
  );
});

Deno.test("foreignListeners and heldBy: another uid on the app's port is named; the app's own listeners, other ports are not", () => {
  const all: Listener[] = [...parseListeners(TCP), ...parseListeners(TCP6)];
  const names = new Map([[998, "app-alpha"], [997, "app-beta"]]);
  const nameOf = (uid: number) => names.get(uid);
  // Port 18096 (127.0.0.1) is app-alpha's listener: for app-beta it is taken.
  assertEquals(foreignListeners(all, 18096, 997).map((l) => l.uid), [998]);
  assertEquals(
    heldBy(all, 18096, 997, "app-beta", nameOf),
    "port 18096 is held by app-alpha (uid 998), not app-beta: another process took it",
  );
  // Its own: fine. A port nobody listens on: fine (that is the health check's to say). An
  // established connection of another uid on the port is no listener.
  assertEquals(heldBy(all, 18096, 998, "app-alpha", nameOf), undefined);
  assertEquals(heldBy(all, 18200, 997, "app-beta", nameOf), undefined);
  // IPv6 wildcard and loopback count too; a uid with no name is shown as a number.
  assertEquals(
    heldBy(all, 18097, 998, "app-alpha", nameOf),
    "port 18097 is held by app-beta (uid 997), not app-alpha: another process took it",
  );
  assertMatch(heldBy(all, 18098, 998, "app-alpha", nameOf)!, /^port 18098 is held by uid 996, not app-alpha/);
  assertMatch(heldBy(all, 18099, 998, "app-alpha", nameOf)!, /held by uid 995/);
  // Several uids may hold it (the proxy's: the app's user, its own app-<name>, root).
  assertEquals(heldBy(all, 18096, [997, 998, 0], "app-beta", nameOf), undefined);
  assertEquals(foreignListeners(all, 2024, [997, 0]), []);
  assertEquals(foreignListeners(all, 2024, [997]).map((l) => l.address), ["0.0.0.0"]);
});

Deno.test("readListeners: a listener of this process is found with its port and our uid", async () => {
  const server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const port = (server.addr as Deno.NetAddr).port;
    const mine = (await readListeners()).filter((l) => l.port === port);
    assertEquals(mine.map(({ inode: _, ...l }) => l), [{ address: "127.0.0.1", port, uid: Deno.uid()! }]);
    // Its socket is this process's, which descends from itself, not from its parent's child.
    const held = await holders(mine.map((l) => l.inode), Deno.uid()!);
    assertEquals([...held.values()], [[Deno.pid]]);
    assertEquals(await heldOutside(mine, port, Deno.uid()!, Deno.pid, "this test"), undefined);
    assertEquals(await heldOutside(mine, port, Deno.uid()!, Deno.ppid, "its parent"), undefined);
    // Held by a process that does not descend from the one started for the port (a child of ours, here).
    const child = new Deno.Command("sleep", { args: ["30"] }).spawn();
    try {
      assertEquals(
        await heldOutside(mine, port, Deno.uid()!, child.pid, "app-green"),
        `port ${port} is held by pid ${Deno.pid}, not by app-green (pid ${child.pid}) nor a process it started: ` +
          "another process of the app's user took it",
      );
    } finally {
      child.kill();
      await child.status;
    }
  } finally {
    server.close();
  }
});

Deno.test("readListeners reads up to the first socket that does not listen: the same listeners as the whole files", async () => {
  const listeners = [Deno.listen({ hostname: "127.0.0.1", port: 0 }), Deno.listen({ hostname: "127.0.0.1", port: 0 })];
  const accepted: Deno.Conn[] = [];
  const accepting = listeners.map(async (l) => {
    for await (const conn of l) accepted.push(conn);
  });
  const conns: Deno.Conn[] = [];
  try {
    // Connections (two sockets each) between the listeners in the kernel's table, and one listener made after them.
    for (let i = 0; i < 300; i++) {
      conns.push(await Deno.connect({ hostname: "127.0.0.1", port: (listeners[i % 2].addr as Deno.NetAddr).port }));
    }
    listeners.push(Deno.listen({ hostname: "127.0.0.1", port: 0 }));
    const whole = async (path: string) => parseListeners(await Deno.readTextFile(path).catch(() => ""));
    const key = (l: Listener) => `${l.address}:${l.port}:${l.uid}`;
    const wholeFiles = async () => [...await whole("/proc/net/tcp"), ...await whole("/proc/net/tcp6")].map(key).sort();
    // The table is the whole machine's: other processes (a parallel test run) open and close listeners
    // between two reads. Compared on a table that held still: the whole files read before and after
    // readListeners list the same, and readListeners that too (a part cut short would miss some every time).
    const reads: string[][][] = [];
    for (let attempt = 0; attempt < 50; attempt++) {
      const read = [await wholeFiles(), (await readListeners()).map(key).sort(), await wholeFiles()];
      reads.push(read);
      if (read.every((r) => JSON.stringify(r) === JSON.stringify(read[0]))) break;
    }
    const [all, partial] = reads.at(-1)!;
    assertEquals(partial, all, `${reads.length} reads, none the same as the whole files around it`);
    for (const l of listeners) {
      assertEquals(all.filter((k) => k.includes(`:${(l.addr as Deno.NetAddr).port}:`)).length, 1);
    }
  } finally {
    for (const conn of [...conns, ...accepted]) conn.close();
    for (const l of listeners) l.close();
    await Promise.allSettled(accepting);
  }
});
