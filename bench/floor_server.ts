/**
 * What the proxy benchmark's two floors (./relay_floor.ts, ./http_floor.ts) share: their accept
 * loop on 127.0.0.1:<port> (arguments `<port> <app port>`), one connection to the app per client
 * connection, and closing both.
 * @module
 */

/** Accepts clients until the process ends and hands each, with its own connection to the app, to `serve`. */
export async function serveFloor(serve: (client: Deno.TcpConn, upstream: Deno.TcpConn) => void): Promise<void> {
  const [port, app] = Deno.args.map(Number);
  for await (const client of Deno.listen({ hostname: "127.0.0.1", port })) {
    Deno.connect({ hostname: "127.0.0.1", port: app }).then((upstream) => {
      client.setNoDelay(true);
      upstream.setNoDelay(true);
      serve(client, upstream);
    }, () => client.close());
  }
}

/** Closes both connections (either may be closed already). */
export function closeBoth(a: Deno.Conn, b: Deno.Conn): void {
  for (const conn of [a, b]) {
    try {
      conn.close();
    } catch { /* already closed */ }
  }
}
