/**
 * A laptop's fleet monitor against fake VPS hosts (tests/helpers/vps.ts): its home, the real
 * `deploy-paradigm fleet` commands, and the files a test writes on a host.
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "./assert.ts";
import { BIN, freePort, type Ran, run, spawnCapturing } from "./server.ts";
import { FakeVps } from "./vps.ts";

/** A laptop's fleet monitor home with `hosts` in its config. */
export class Laptop {
  /**
   * `env`: FLEET_MONITOR_HOME=`home` unless given; `wrap`: what runs each command (e.g. a shell
   * that sets the umask first).
   */
  constructor(
    readonly home: string,
    readonly env: Record<string, string> = { FLEET_MONITOR_HOME: home, NO_COLOR: "1" },
    readonly wrap: string[] = [],
  ) {}

  static async create(): Promise<Laptop> {
    return new Laptop(await Deno.makeTempDir({ prefix: "dp-fleet-" }));
  }

  /** `deploy-paradigm fleet ...args`. */
  argv(...args: string[]): string[] {
    return [...this.wrap, BIN, "fleet", ...args];
  }

  fleet(...args: string[]): Promise<Ran> {
    return run(this.argv(...args), { env: this.env });
  }

  /** `fleet add` + `fleet trust --fingerprint` (the host key's real fingerprint). */
  async addHost(name: string, vps: FakeVps, trusted = true): Promise<void> {
    const add = await this.fleet("add", name, `root@${vps.address}`, "--identity", join(vps.dir, "client_key"));
    assertEquals(add.code, 0, add.output);
    if (!trusted) return;
    const fingerprint = (await run(["ssh-keygen", "-lf", join(vps.dir, "host_key.pub")])).stdout.split(" ")[1];
    const trust = await this.fleet("trust", name, "--fingerprint", fingerprint);
    assertEquals(trust.code, 0, trust.output);
    assertMatch(trust.output, new RegExp(`${fingerprint.replace(/[+/]/g, "\\$&")}[\\s\\S]*trusted`));
  }

  async collect(): Promise<Ran> {
    return await this.fleet("collect", "--once");
  }

  /** Ends the ssh master connections the collector left for later cycles. */
  async close(): Promise<void> {
    const sockets = join(this.home, "ssh");
    for (const entry of await Array.fromAsync(Deno.readDir(sockets)).catch(() => [])) {
      await run(["ssh", "-o", `ControlPath=${join(sockets, entry.name)}`, "-O", "exit", "x"]);
    }
    await Deno.remove(this.home, { recursive: true }).catch(() => {});
  }
}

/** Writes an app's status.json on a host. */
export async function writeStatus(vps: FakeVps, app: string, status: Record<string, unknown>) {
  await Deno.mkdir(join(vps.deployments, app), { recursive: true });
  await Deno.writeTextFile(join(vps.deployments, app, "status.json"), JSON.stringify({ name: app, ...status }));
}

/** Appends to a log file of a host. */
export async function append(vps: FakeVps, app: string, file: string, text: string) {
  await Deno.mkdir(join(vps.logs, app), { recursive: true });
  await Deno.writeTextFile(join(vps.logs, app, file), text, { append: true });
}

/** A running `deploy-paradigm fleet` serving the API. */
export async function serve(laptop: Laptop, args: string[] = []) {
  const port = freePort();
  let log = "";
  const child = spawnCapturing(laptop.argv("--port", String(port), ...args), laptop.env, (t) => log += t);
  for (let i = 0; i < 100 && !log.includes("API on"); i++) await new Promise((r) => setTimeout(r, 100));
  assert(log.includes("API on"), log);
  const base = `http://127.0.0.1:${port}`;
  return {
    base,
    log: () => log,
    async json(path: string, headers: Record<string, string> = {}) {
      const response = await fetch(base + path, { headers });
      return { status: response.status, body: await response.json() };
    },
    async stop() {
      child.kill("SIGTERM");
      await child.status;
    },
  };
}

export async function withFleet(
  count: number,
  fn: (hosts: FakeVps[], laptop: Laptop) => Promise<void>,
  laptop?: Laptop,
) {
  const hosts: FakeVps[] = [];
  laptop ??= await Laptop.create();
  try {
    for (const vps of await Promise.all(Array.from({ length: count }, () => FakeVps.create()))) hosts.push(vps);
    await fn(hosts, laptop);
  } finally {
    await laptop.close();
    await Promise.all(hosts.map((vps) => vps.close()));
  }
}
