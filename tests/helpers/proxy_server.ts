/**
 * A {@link ProxyServer} in the test's own process over a temp server root (its log lines kept,
 * its in-flight counts readable), for tests/e2e/proxy_test.ts and tests/e2e/websocket_test.ts.
 * @module
 */
import { join } from "node:path";
import { proxyConfigPath } from "../../src/proxy/config.ts";
import { type RouteTarget, writeRoute } from "../../src/proxy/routes.ts";
import { ProxyServer } from "../../src/proxy/server.ts";
import { deploymentsRoot } from "../../src/paths.ts";
import { freePort } from "./server.ts";

/** What {@link withProxy} gives its function. */
export interface ProxyContext {
  root: string;
  proxy: ProxyServer;
  logs: string[];
  /** Sets up an app: config.yml with a free public port, route.json when `target` is given. Returns the port. */
  app(name: string, target?: RouteTarget): Promise<number>;
  url(port: number, path?: string): string;
}

/**
 * A server root (with `proxyYml` as its proxy.yml when given) with a proxy over it, not started;
 * everything is torn down after `fn`, even on failure.
 */
export async function withProxy(
  fn: (ctx: ProxyContext) => Promise<void>,
  options: { proxyYml?: string; maxServerNames?: number } = {},
): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "dp-proxy-" });
  const logs: string[] = [];
  const proxy = new ProxyServer({
    root,
    host: "127.0.0.1",
    log: (line) => logs.push(line),
    maxServerNames: options.maxServerNames,
  });
  try {
    if (options.proxyYml !== undefined) {
      await Deno.mkdir(deploymentsRoot(root), { recursive: true });
      await Deno.writeTextFile(proxyConfigPath(root), options.proxyYml);
    }
    const app = async (name: string, target?: RouteTarget) => {
      const dir = join(deploymentsRoot(root), name);
      await Deno.mkdir(dir, { recursive: true });
      const port = freePort();
      await Deno.writeTextFile(join(dir, "config.yml"), `port: ${port}\nmanager: pm2\nenv: production\n`);
      if (target) await writeRoute(dir, target);
      return port;
    };
    await fn({ root, proxy, logs, app, url: (port, path = "/") => `http://127.0.0.1:${port}${path}` });
  } finally {
    await proxy.close();
    await Deno.remove(root, { recursive: true });
  }
}
