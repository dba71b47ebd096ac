/**
 * A notification receiver on 127.0.0.1 for tests of alerts and notices: it records every request
 * (path and JSON body, and when it was under way); `/hang…` never answers (until
 * {@link Receiver.close}), `/fail…` answers 500, `/slow…` 200 after 50 ms, the rest 200 at once.
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
  /** The most requests to paths starting with `prefix` under way at once. */
  peak(prefix: string): number;
  close(): Promise<void>;
}

/** Starts a receiver on a free loopback port. */
export async function receiver(): Promise<Receiver> {
  const got: Received[] = [];
  const hanging: (() => void)[] = [];
  const spans: { path: string; start: number; end: number }[] = [];
  const listening = Promise.withResolvers<number>();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: ({ port }) => listening.resolve(port) }, async (
    request,
  ) => {
    const path = new URL(request.url).pathname;
    const span = { path, start: performance.now(), end: Infinity };
    spans.push(span);
    got.push({ path, body: await request.json() });
    if (path.startsWith("/hang")) {
      await new Promise<void>((resolve) => hanging.push(resolve));
      return new Response("late");
    }
    if (path.startsWith("/slow")) await new Promise((resolve) => setTimeout(resolve, 50));
    span.end = performance.now();
    return new Response(null, { status: path.startsWith("/fail") ? 500 : 200 });
  });
  const base = `http://127.0.0.1:${await listening.promise}`;
  return {
    base,
    got,
    at: (prefix) => got.filter((r) => r.path.startsWith(prefix)).map((r) => `${r.body.event} ${r.body.title}`),
    peak(prefix) {
      const at = spans.filter((s) => s.path.startsWith(prefix));
      return Math.max(0, ...at.map((s) => at.filter((o) => o.start <= s.start && s.start < o.end).length));
    },
    async close() {
      for (const resolve of hanging) resolve();
      await server.shutdown();
    },
  };
}
