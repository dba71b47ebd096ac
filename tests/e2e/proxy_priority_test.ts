/**
 * The proxy's scheduling priority (proxy.yml `priority`) on the real command and the real kernel:
 * the event loop's threads at the nice value asked for, said in its ready line, and V8's helper
 * threads (garbage collection, compilation) at 19; without the right to go below 0 (no
 * CAP_SYS_NICE), it serves at the nice value it was started with and says why.
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { startProxy } from "../helpers/proxy_process.ts";
import { withProxy as withInProcessProxy } from "../helpers/proxy_server.ts";
import { freePort } from "../helpers/server.ts";
import { deploymentsRoot } from "../../src/paths.ts";
import { writeRoute } from "../../src/proxy/routes.ts";
import { HELPER_NAME, HELPER_NICE } from "../../src/proxy/process.ts";

/** The nice value of each thread of `pid` (field 19 of /proc/<pid>/task/<tid>/stat), by name. */
function threadNices(pid: number): { name: string; nice: number }[] {
  return [...Deno.readDirSync(`/proc/${pid}/task`)].map((task) => {
    const stat = Deno.readTextFileSync(`/proc/${pid}/task/${task.name}/stat`);
    return {
      name: stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")),
      nice: Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[16]),
    };
  });
}

/**
 * The distinct nice values of `pid`'s threads: V8's helper threads (garbage collection,
 * compilation), and all the others (the event loop's, Deno's). There must be helpers: a V8 that
 * named them otherwise would leave them at the proxy's priority, and this says so.
 */
function nices(pid: number): { others: number[]; helpers: number[] } {
  const threads = threadNices(pid);
  const [others, helpers] = [new Set<number>(), new Set<number>()];
  for (const { name, nice } of threads) (name.startsWith(HELPER_NAME) ? helpers : others).add(nice);
  assert(helpers.size > 0, `no V8 helper thread among ${threads.map((t) => t.name).join(", ")}`);
  return { others: [...others], helpers: [...helpers] };
}

/**
 * Runs the real proxy over a temp root with `proxyYml` (none: undefined) and one app, `wrap`
 * prefixing its command; `check` gets its pid and output once it has served a request.
 */
async function withProxy(
  proxyYml: string | undefined,
  wrap: string[],
  check: (pid: number, output: string) => void,
): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "dp-priority-" });
  const app = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, () => new Response("from the app"));
  try {
    const dir = join(deploymentsRoot(root), "site");
    await Deno.mkdir(dir, { recursive: true });
    if (proxyYml !== undefined) await Deno.writeTextFile(join(deploymentsRoot(root), "proxy.yml"), proxyYml);
    const port = freePort();
    await Deno.writeTextFile(join(dir, "config.yml"), `port: ${port}\nmanager: pm2\nenv: production\n`);
    await writeRoute(dir, { port: app.addr.port });
    const proxy = await startProxy(root, { wrap });
    try {
      assertEquals(await (await fetch(`http://127.0.0.1:${port}/`)).text(), "from the app");
      check(proxy.pid, proxy.output());
    } finally {
      assertEquals(await proxy.stop(), 0, proxy.output());
    }
  } finally {
    await app.shutdown();
    await Deno.remove(root, { recursive: true });
  }
}

Deno.test("proxy priority: the event loop's threads at nice -5 by default, at proxy.yml's priority when set, V8's helpers at 19; the ready line says it", async () => {
  await withProxy(undefined, [], (pid, output) => {
    assertEquals(nices(pid), { others: [-5], helpers: [HELPER_NICE] }, JSON.stringify(threadNices(pid)));
    assertMatch(output, /proxy ready: .*, priority -5\n/);
  });
  await withProxy("priority: 4\n", [], (pid, output) => {
    assertEquals(nices(pid), { others: [4], helpers: [HELPER_NICE] });
    assertMatch(output, /proxy ready: .*, priority 4\n/);
  });
});

Deno.test("proxy priority: without CAP_SYS_NICE the proxy serves at the nice value it got and its ready line says why", async () => {
  const wrap = ["setpriv", "--bounding-set=-sys_nice", "--inh-caps=-sys_nice"];
  const inherited = threadNices(Deno.pid)[0].nice; // (0, unless the tests run niced)
  await withProxy(undefined, wrap, (pid, output) => {
    assertEquals(nices(pid), { others: [inherited], helpers: [HELPER_NICE] });
    assertMatch(
      output,
      new RegExp(
        `proxy ready: .*, priority ${inherited} \\(proxy\\.yml priority -5: not permitted ` +
          `\\(a nice value below 0 needs root or CAP_SYS_NICE\\)\\)\n`,
      ),
    );
  });
  // Going up needs no right at all.
  await withProxy("priority: 19\n", wrap, (pid, output) => {
    assertEquals(nices(pid), { others: [19], helpers: [HELPER_NICE] });
    assertMatch(output, /proxy ready: .*, priority 19\n/);
  });
});

Deno.test("proxy priority: a proxy inside another program (a test) leaves that program's priority alone", async () => {
  const before = threadNices(Deno.pid);
  await withInProcessProxy(async ({ proxy, logs }) => {
    await proxy.start();
    assertMatch(logs.join("\n"), /proxy ready: .*\(open files: \d+\)$/m);
    assertEquals(threadNices(Deno.pid).filter(({ nice }) => nice !== before[0].nice), []);
  }, { proxyYml: "priority: 7\n" });
});
