/**
 * A real ACME server for tests: Debian's `pebble` plus `pebble-challtestsrv` as its DNS (every name → 127.0.0.1),
 * on free loopback ports in a temp dir. Pebble's own HTTPS API uses a CA made here with openssl; HTTP-01 validations
 * go to `httpPort` on 127.0.0.1, where the test's responder answers. Both processes are stopped by PID.
 * @module
 */
import { join } from "node:path";
import { createSocket } from "node:dgram";
import { freePort, run } from "./server.ts";

/** What {@link startPebble} takes. */
export interface PebbleOptions {
  /** The port pebble sends HTTP-01 validation requests to (on 127.0.0.1). */
  httpPort: number;
  /** Lifetime of issued certificates in seconds (pebble's `certificateValidityPeriod`); pebble's default otherwise. */
  validitySeconds?: number;
}

/** A running pebble + challtestsrv. */
export interface Pebble {
  /** The temp dir holding configs, certificates and logs. */
  dir: string;
  /** The ACME directory URL. */
  directory: string;
  /** Path of the PEM (a CA made for the test) that pebble's HTTPS API chains to: trust it for {@link directory}. */
  caCertificate: string;
  /** The root pebble issues under (new on every start of pebble), fetched from its management port. */
  root: string;
  /** Path of a file holding {@link root}. */
  rootFile: string;
  /** Stops pebble only (challtestsrv keeps running): the ACME server becomes unreachable. */
  stopPebble(): Promise<void>;
  /** pebble's and challtestsrv's output so far (for failure messages). */
  logs(): string;
  /** Stops both processes and removes the temp dir. */
  close(): Promise<void>;
}

const READY_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 5_000;

/** A started process whose output is collected; {@link stop} ends it by PID and waits for it. */
class Process {
  readonly #child: Deno.ChildProcess;
  readonly #piped: Promise<unknown>;
  readonly #output: string[];
  readonly #status: Promise<Deno.CommandStatus>;
  #exitStatus?: Deno.CommandStatus;

  constructor(argv: string[], env: Record<string, string>, output: string[]) {
    this.#output = output;
    this.#child = new Deno.Command(argv[0], {
      args: argv.slice(1),
      env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#status = this.#child.status.then((status) => this.#exitStatus = status);
    const name = argv[0];
    this.#piped = Promise.all(
      [this.#child.stdout, this.#child.stderr].map((stream) =>
        stream.pipeThrough(new TextDecoderStream()).pipeTo(
          new WritableStream({ write: (chunk) => void this.#output.push(`[${name}] ${chunk}`) }),
        ).catch(() => {})
      ),
    );
  }

  /** The exit status, once the process has exited (undefined while it runs). */
  get exitStatus(): Deno.CommandStatus | undefined {
    return this.#exitStatus;
  }

  /** SIGTERM, then SIGKILL after {@link STOP_TIMEOUT_MS}; waits for the exit and the end of its output. */
  async stop(): Promise<void> {
    if (!this.#exitStatus) {
      try {
        this.#child.kill("SIGTERM");
      } catch { /* already gone */ }
      let timer: ReturnType<typeof setTimeout> | undefined;
      const killed = new Promise<void>((resolve) => {
        timer = setTimeout(() => {
          try {
            this.#child.kill("SIGKILL");
          } catch { /* already gone */ }
          resolve();
        }, STOP_TIMEOUT_MS);
      });
      await Promise.race([this.#status, killed]);
      clearTimeout(timer);
      await this.#status;
    }
    await this.#piped;
  }
}

/** A free port on 127.0.0.1 for both TCP and UDP (challtestsrv's DNS serves both). */
async function freeDnsPort(): Promise<number> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const port = freePort();
    const socket = createSocket("udp4");
    const free = await new Promise<boolean>((resolve) => {
      socket.once("error", () => resolve(false));
      socket.bind(port, "127.0.0.1", () => resolve(true));
    });
    await new Promise<void>((resolve) => socket.close(() => resolve()));
    if (free) return port;
  }
  throw new Error("no free TCP+UDP port for challtestsrv's DNS");
}

/** A CA and a certificate for localhost/127.0.0.1 signed by it, for pebble's own HTTPS listeners. */
async function makeApiCertificate(dir: string): Promise<{ ca: string; cert: string; key: string }> {
  const path = (name: string) => join(dir, name);
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  await Deno.writeTextFile(
    path("ext.cnf"),
    "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n" +
      "extendedKeyUsage=serverAuth\n",
  );
  const commands = [
    ["req", "-x509", ...ec, "-keyout", path("ca.key"), "-out", path("ca.pem"), "-days", "2", "-subj", "/CN=test CA"],
    ["req", ...ec, "-keyout", path("key.pem"), "-out", path("api.csr"), "-subj", "/CN=localhost"],
    ["x509", "-req", "-in", path("api.csr"), "-CA", path("ca.pem"), "-CAkey", path("ca.key"), "-CAcreateserial"],
  ];
  commands[2].push("-out", path("cert.pem"), "-days", "2", "-extfile", path("ext.cnf"));
  for (const args of commands) {
    const ran = await run(["openssl", ...args]);
    if (ran.code !== 0) throw new Error(`openssl ${args[0]} failed:\n${ran.output}`);
  }
  return { ca: path("ca.pem"), cert: path("cert.pem"), key: path("key.pem") };
}

/** GETs `url` over HTTPS trusting `ca` until it answers 200 (bounded); returns the body. */
async function fetchWhenReady(url: string, ca: string, deadline: number, alive: () => boolean) {
  const client = Deno.createHttpClient({ caCerts: [ca] });
  try {
    let lastError: unknown;
    while (Date.now() < deadline) {
      if (!alive()) throw new Error(`a pebble process exited before ${url} answered`);
      try {
        const response = await fetch(url, { client, signal: AbortSignal.timeout(2_000) });
        const body = await response.text();
        if (response.ok) return body;
        lastError = new Error(`HTTP ${response.status}`);
      } catch (error) {
        lastError = error;
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    throw new Error(`${url} did not answer in ${READY_TIMEOUT_MS} ms: ${lastError}`);
  } finally {
    client.close();
  }
}

/** Starts challtestsrv (DNS only) and pebble on free loopback ports; resolves once pebble's directory answers. */
export async function startPebble(options: PebbleOptions): Promise<Pebble> {
  const dir = await Deno.makeTempDir({ prefix: "dp-pebble-" });
  const output: string[] = [];
  const processes: Process[] = [];
  const close = async () => {
    for (const process of processes.reverse()) await process.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  try {
    const api = await makeApiCertificate(dir);
    const dnsPort = await freeDnsPort();
    const [acmePort, managementPort, challManagementPort] = [freePort(), freePort(), freePort()];
    const config = {
      pebble: {
        listenAddress: `127.0.0.1:${acmePort}`,
        managementListenAddress: `127.0.0.1:${managementPort}`,
        certificate: api.cert,
        privateKey: api.key,
        httpPort: options.httpPort,
        tlsPort: freePort(),
        ocspResponderURL: "",
        externalAccountBindingRequired: false,
        ...(options.validitySeconds ? { certificateValidityPeriod: options.validitySeconds } : {}),
      },
    };
    await Deno.writeTextFile(join(dir, "pebble-config.json"), JSON.stringify(config, null, 2));
    const dns = new Process(
      [
        "pebble-challtestsrv",
        ...["-defaultIPv4", "127.0.0.1", "-defaultIPv6", "", "-dns01", `127.0.0.1:${dnsPort}`],
        ...["-http01", "", "-https01", "", "-tlsalpn01", "", "-management", `127.0.0.1:${challManagementPort}`],
      ],
      {},
      output,
    );
    processes.push(dns);
    const pebble = new Process(
      ["pebble", "-config", join(dir, "pebble-config.json"), "-dnsserver", `127.0.0.1:${dnsPort}`],
      { PEBBLE_VA_NOSLEEP: "1", PEBBLE_VA_ALWAYS_VALID: "0", PEBBLE_AUTHZREUSE: "0" },
      output,
    );
    processes.push(pebble);
    const caPem = await Deno.readTextFile(api.ca);
    const deadline = Date.now() + READY_TIMEOUT_MS;
    const alive = () => !dns.exitStatus && !pebble.exitStatus;
    const directory = `https://127.0.0.1:${acmePort}/dir`;
    await fetchWhenReady(directory, caPem, deadline, alive);
    const root = await fetchWhenReady(`https://127.0.0.1:${managementPort}/roots/0`, caPem, deadline, alive);
    const rootFile = join(dir, "issuing-root.pem");
    await Deno.writeTextFile(rootFile, root);
    return {
      dir,
      directory,
      caCertificate: api.ca,
      root,
      rootFile,
      stopPebble: () => pebble.stop(),
      logs: () => output.join(""),
      close,
    };
  } catch (error) {
    const logs = output.join("");
    await close();
    throw new Error(`pebble did not start: ${error instanceof Error ? error.message : error}\n${logs}`);
  }
}
