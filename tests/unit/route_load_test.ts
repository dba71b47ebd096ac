/**
 * loadRoutes (src/proxy/table.ts) racing a canary's promotion on real files: the switch writes
 * route.json (the new slot), then removes canary.json. Whichever file read of one load it comes
 * between, the canary's clients (bucket 0) must stay on the new release: never back on the old one.
 * @module
 */
import { join } from "node:path";
import { assert, assertEquals } from "../helpers/assert.ts";
import { removeCanary, writeCanary } from "../../src/proxy/canary_file.ts";
import { type Route, writeRoute } from "../../src/proxy/routes.ts";
import { loadRoutes } from "../../src/proxy/table.ts";
import { deploymentsRoot } from "../../src/paths.ts";

const BLUE = 41001;
const GREEN = 41002;

/** Where the canary's clients go: the split's target while there is one, else route.json's. */
function canaryPort(route: Route): number | undefined {
  const target = route.canary?.split.target ?? route.target;
  return target && "port" in target ? target.port : undefined;
}

Deno.test("loadRoutes during a promotion: the canary's clients never go back to the old release", async () => {
  const root = await Deno.makeTempDir({ prefix: "dp-routes-" });
  try {
    const dir = join(deploymentsRoot(root), "shop");
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeTextFile(
      join(dir, "config.yml"),
      `port: 8000\nmanager: pm2\nstrategy: blue-green\nslots: { blue: ${BLUE}, green: ${GREEN} }\n`,
    );
    const during = async () => {
      await writeRoute(dir, { port: BLUE });
      await writeCanary(dir, { target: { port: GREEN }, slot: "green", percent: 50, since: new Date().toISOString() });
    };
    const promote = async () => {
      await writeRoute(dir, { port: GREEN });
      await removeCanary(dir);
    };
    await during();
    const before = (await loadRoutes(root, new Map(), async () => {})).routes[0];
    assertEquals([before.target, canaryPort(before)], [{ port: BLUE }, GREEN]);
    const previous = new Map([["shop", before]]);
    // The promotion at each file check of one load in turn (a check comes before each read).
    const seen: (number | undefined)[] = [];
    for (let at = 0;; at++) {
      await during();
      let checks = 0;
      const loaded = await loadRoutes(root, previous, async () => {
        if (checks++ === at) await promote();
      });
      if (at >= checks) break;
      seen.push(canaryPort(loaded.routes[0]));
    }
    assert(seen.length >= 3, `file checks in one load: ${seen.length}`);
    assertEquals(seen, seen.map(() => GREEN));
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("loadRoutes with a slow user database (LDAP, say): the proxy's event loop runs on while it asks who owns an app's ports", async () => {
  const root = await Deno.makeTempDir({ prefix: "dp-routes-" });
  const path = Deno.env.get("PATH") ?? "";
  try {
    // A getent that takes a second to answer, first in PATH.
    const bin = join(root, "bin");
    await Deno.mkdir(bin);
    await Deno.writeTextFile(join(bin, "getent"), '#!/bin/sh\nsleep 1\necho "$2:x:4242:4242::/:/bin/false"\n', {
      mode: 0o755,
    });
    Deno.env.set("PATH", `${bin}:${path}`);
    const dir = join(deploymentsRoot(root), "shop");
    await Deno.mkdir(dir, { recursive: true });
    const user = `slow${crypto.randomUUID().slice(0, 8)}`;
    await Deno.writeTextFile(join(dir, "config.yml"), `port: 8000\nmanager: pm2\nuser: ${user}\n`);
    await writeRoute(dir, { port: BLUE });
    let ticks = 0;
    const timer = setInterval(() => ticks++, 50);
    try {
      const loaded = await loadRoutes(root, new Map(), async () => {});
      assertEquals(loaded.routes[0].owner, { uids: [4242, 0], name: user });
    } finally {
      clearInterval(timer);
    }
    // Blocking (outputSync), no timer would have fired during the second the lookups took.
    assert(ticks >= 5, `the event loop ran ${ticks} times in the lookup`);
  } finally {
    Deno.env.set("PATH", path);
    await Deno.remove(root, { recursive: true });
  }
});
