/**
 * The runtime's floor, for the proxy benchmark (./proxy.ts): a bare Deno TCP relay (bytes copied
 * both ways, one connection to the app per client connection, no HTTP at all). It makes the same
 * four socket calls per request as ours, so what it adds over direct is what Deno and this
 * machine's loopback cost any proxy written on it; the rest of ours' figure is ours.
 *
 * Usage: `deno run --no-config --allow-net=127.0.0.1 relay_floor.ts <port> <app port>`.
 * @module
 */

import { closeBoth, serveFloor } from "./floor_server.ts";

async function pump(from: Deno.Conn, to: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(16384);
  try {
    for (let n; (n = await from.read(buf)) !== null;) {
      for (let done = 0; done < n;) done += await to.write(buf.subarray(done, n));
    }
  } catch { /* either side closed */ }
  closeBoth(from, to);
}

await serveFloor((client, upstream) => {
  pump(client, upstream);
  pump(upstream, client);
});
