/**
 * A notification receiver on 127.0.0.1 for tests of alerts and notices: it records every request
 * (path and JSON body); `/hang…` never answers (until {@link Receiver.close}), `/fail…` answers
 * 500, the rest 200.
 */

/** One request that arrived. */
export interface Received {
  path: string;
  body: Record<string, unknown>;
}

/** A running receiver. */
export interface Receiver {
  /** `http://127.0.0.1:<port>`. */
  base: string;
  got: Received[];
  /** What arrived at paths starting with `prefix`, as `event title`. */
  at(prefix: string): string[];
  close(): Promise<void>;
}

/** Starts a receiver on a free loopback port. */
export async function receiver(): Promise<Receiver> {
  const got: Received[] = [];
  const hanging: (() => void)[] = [];
  const listening = Promise.withResolvers<number>();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: ({ port }) => listening.resolve(port) }, async (
    request,
  ) => {
    const path = new URL(request.url).pathname;
    got.push({ path, body: await request.json() });
    if (path.startsWith("/hang")) {
      await new Promise<void>((resolve) => hanging.push(resolve));
      return new Response("late");
    }
    return new Response(null, { status: path.startsWith("/fail") ? 500 : 200 });
  });
  const base = `http://127.0.0.1:${await listening.promise}`;
  return {
    base,
    got,
    at: (prefix) => got.filter((r) => r.path.startsWith(prefix)).map((r) => `${r.body.event} ${r.body.title}`),
    async close() {
      for (const resolve of hanging) resolve();
      await server.shutdown();
    },
  };
}
