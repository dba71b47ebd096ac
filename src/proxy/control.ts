/**
 * The proxy's control socket (see ./client.ts for the other end): one JSON object per line,
 * one reply line each. {@link controlReply} is the pure part (a line → a reply); the
 * {@link ControlServer} binds the socket (one proxy per server) and serves it.
 *
 * Who may use it: Deno gives no SO_PEERCRED, so the kernel decides, by owner, group and mode.
 * The socket is root:deploy 0660 in a directory root:deploy 0750 (the deploy group, see
 * users.ts: `DEPLOY_PARADIGM_GROUP`, default `deploy`), so root and the group's members may
 * connect and nobody else can even reach it; without such a group, 0600 in 0700: root only.
 * @module
 */
import { dirname, join } from "node:path";
import { NAME_PATTERN } from "../config/names.ts";
import { DeployParadigmError } from "../errors.ts";
import { ifExists } from "../fsutil.ts";
import { message } from "./pages.ts";
import { MAX_INSTANCES } from "./routes.ts";
import { deployGroup, lookupGroup } from "../users.ts";

/** Longest control line accepted. */
export const MAX_CONTROL_LINE = 64 * 1024;
/** Longest `drain` accepted over the control socket. */
const MAX_DRAIN_MS = 60 * 60 * 1000;

/** What the control socket can ask of a proxy. */
export interface ControlOps {
  reload(): Promise<number>;
  /** Waits for the requests in flight to `port`, or to every one of a list of ports (a slot's instances). */
  drain(port: number | number[], timeoutMs: number): Promise<{ drained: boolean; inFlight: number }>;
  status(): unknown;
  /** The address the proxy listens on (`--host`), which `status` replies with. */
  host?(): string;
  /** What keeps apps (keyed by name) or the proxy (other keys) from being served as configured, for `status`. */
  problems?(): Record<string, string>;
  /** The shared HTTP and HTTPS ports while they are open (null: closed), for `status`. */
  shared?(): { http: number | null; https: number | null };
  /** Each app's certificate (./cert_state.ts `CertificateState`), by app, for `status`. */
  certificates?(): Record<string, unknown>;
  /** Renews an app's certificate now. */
  renew?(app: string): Promise<unknown>;
  /** An app's canary figures (./canary_stats.ts `CanaryStats`), null when it has no canary; throws for an unknown app. */
  canary?(app: string): unknown;
  /** Why an app's canary.json is refused (its `canary` figures are null then), undefined when it is not. */
  canaryProblem?(app: string): string | undefined;
}

type Reply = Record<string, unknown>;

/** The reply to one control line: `{ok: true, ...}` or `{ok: false, error}`. Never throws. */
export async function controlReply(line: string, ops: ControlOps): Promise<Reply> {
  let request: unknown;
  try {
    request = JSON.parse(line);
  } catch {
    return { ok: false, error: "not a JSON object" };
  }
  if (request === null || typeof request !== "object" || Array.isArray(request)) {
    return { ok: false, error: "not a JSON object" };
  }
  const { op, port, ports, timeoutMs, app } = request as Record<string, unknown>;
  try {
    switch (op) {
      case "reload":
        return { ok: true, routes: await ops.reload() };
      case "drain": {
        // `port`, or `ports`: a slot's instances, drained together.
        if (ports !== undefined && port !== undefined) return { ok: false, error: 'give "port" or "ports", not both' };
        if (ports === undefined && !isPort(port)) {
          return { ok: false, error: '"port" must be a whole number from 1 to 65535' };
        }
        if (ports !== undefined && !(Array.isArray(ports) && ports.length <= MAX_INSTANCES && ports.every(isPort))) {
          return { ok: false, error: `"ports" must be a list of up to ${MAX_INSTANCES} whole numbers from 1 to 65535` };
        }
        if (timeoutMs !== undefined && (typeof timeoutMs !== "number" || !(timeoutMs >= 0))) {
          return { ok: false, error: '"timeoutMs" must be a number of milliseconds ≥ 0' };
        }
        const drained = (ports ?? port) as number | number[];
        const result = await ops.drain(drained, Math.min((timeoutMs as number | undefined) ?? 30_000, MAX_DRAIN_MS));
        return { ok: true, ...result };
      }
      case "status":
        return {
          ok: true,
          routes: ops.status(),
          host: ops.host?.(),
          problems: ops.problems?.(),
          shared: ops.shared?.(),
          certificates: ops.certificates?.(),
        };
      case "renew":
        if (!ops.renew) return { ok: false, error: "this proxy has no certificates to renew" };
        if (typeof app !== "string") return { ok: false, error: '"app" must be an app name' };
        return { ok: true, certificate: await ops.renew(app) };
      case "canary":
        if (!ops.canary) return { ok: false, error: "this proxy has no canary figures" };
        if (typeof app !== "string" || !NAME_PATTERN.test(app)) {
          return { ok: false, error: `"app" must be an app name (got ${JSON.stringify(app)?.slice(0, 80)})` };
        }
        return canaryReply(ops.canary(app), ops.canaryProblem?.(app));
      default:
        return { ok: false, error: `unknown op ${JSON.stringify(op)} (reload, drain, status, renew, canary)` };
    }
  } catch (error) {
    return { ok: false, error: message(error) };
  }
}

/**
 * The `canary` op's answer: the figures, or null with the problem when canary.json is refused
 * (`{ok: true, stats: null, problem}`), so the engine can tell "refused" from "no canary".
 */
function canaryReply(stats: unknown, problem: string | undefined): Reply {
  return stats === null && problem !== undefined ? { ok: true, stats, problem } : { ok: true, stats };
}

/** Whether `port` is a TCP port number. */
function isPort(port: unknown): boolean {
  return typeof port === "number" && Number.isInteger(port) && port >= 1 && port <= 65535;
}

/**
 * `path` owned by root and `group` with `mode` (its group bits kept only with a group), or our
 * own and owner-only when there is no such group.
 */
async function restrict(path: string, group: number | undefined, mode: number): Promise<void> {
  if (group === undefined) return await Deno.chmod(path, mode & 0o700);
  await Deno.chown(path, 0, group);
  await Deno.chmod(path, mode);
}

/** The control socket of a running proxy. */
export class ControlServer {
  readonly path: string;
  readonly #ops: ControlOps;
  readonly #log: (line: string) => void;
  #listener?: Deno.Listener<Deno.UnixConn, Deno.UnixAddr>;
  #ino?: number | null;
  #loop?: Promise<void>;
  #conns = new Set<Deno.UnixConn>();
  /** Held for the proxy's lifetime: one proxy per server, even when two start at the same moment. */
  #instanceLock?: Deno.FsFile;
  #closing = false;

  constructor(path: string, ops: ControlOps, log: (line: string) => void) {
    this.path = path;
    this.#ops = ops;
    this.#log = log;
  }

  /** Takes the one-proxy lock and binds the socket (0600 before it is reachable). */
  async open(): Promise<void> {
    try {
      await this.#bind();
    } catch (error) {
      this.#instanceLock?.close();
      this.#instanceLock = undefined;
      if (!(error instanceof Deno.errors.PermissionDenied)) throw error;
      throw new DeployParadigmError(`cannot create the control socket ${this.path}: permission denied`, {
        suggestion: "run the proxy as root (setup installs it as a service)",
        cause: error,
      });
    }
    this.#loop = this.#accept(this.#listener!);
  }

  async #bind(): Promise<void> {
    const path = this.path;
    const dir = dirname(path);
    await Deno.mkdir(dir, { recursive: true });
    const group = Deno.uid() === 0 ? lookupGroup(deployGroup()) : undefined;
    await restrict(dir, group, 0o750);
    const lockFile = await Deno.open(join(dir, ".proxy.lock"), { read: true, write: true, create: true, mode: 0o600 });
    this.#instanceLock = lockFile;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const locked = await Promise.race([
      lockFile.lock(true).then(() => true),
      new Promise<boolean>((resolve) => timer = setTimeout(resolve, 500, false)),
    ]);
    clearTimeout(timer);
    const running = {
      suggestion: "stop it first (the deploy-paradigm-proxy service, under systemd or pm2), or use it",
    };
    if (!locked) {
      throw new DeployParadigmError(`another proxy is already running (it holds ${join(dir, ".proxy.lock")})`, running);
    }
    const existing = await ifExists(Deno.lstat(path));
    if (existing) {
      if (!existing.isSocket) {
        throw new DeployParadigmError(`${path} exists and is not a socket`, { suggestion: "remove it" });
      }
      const live = await Deno.connect({ transport: "unix", path }).then((conn) => {
        conn.close();
        return true;
      }, () => false);
      if (live) throw new DeployParadigmError(`another proxy is already running (${path} answers)`, running);
      await Deno.remove(path);
      this.#log(`removed a stale control socket ${path}`);
    }
    // Bind in a private (0700) directory, restrict (0660 to the group, or 0600), then move into place.
    const temp = await Deno.makeTempDir({ dir, prefix: ".proxy-sock-" });
    try {
      const tempPath = join(temp, "s");
      const listener = Deno.listen({ transport: "unix", path: tempPath });
      try {
        await restrict(tempPath, group, 0o660);
        await Deno.rename(tempPath, path);
        this.#ino = (await Deno.lstat(path)).ino;
      } catch (error) {
        listener.close();
        throw error;
      }
      this.#listener = listener;
    } finally {
      await Deno.remove(temp, { recursive: true }).catch(() => {});
    }
  }

  async #accept(listener: Deno.Listener<Deno.UnixConn, Deno.UnixAddr>): Promise<void> {
    try {
      for await (const conn of listener) {
        this.#conns.add(conn);
        this.#serve(conn).catch(() => {}).finally(() => {
          this.#conns.delete(conn);
          try {
            conn.close();
          } catch { /* already closed */ }
        });
      }
    } catch (error) {
      if (!this.#closing) this.#log(`control socket failed: ${message(error)}`);
    }
  }

  async #serve(conn: Deno.UnixConn): Promise<void> {
    const decoder = new TextDecoder();
    const encoder = new TextEncoder();
    const buffer = new Uint8Array(16 * 1024);
    let pending = "";
    const reply = async (value: unknown) => {
      const bytes = encoder.encode(JSON.stringify(value) + "\n");
      for (let written = 0; written < bytes.length;) written += await conn.write(bytes.subarray(written));
    };
    while (true) {
      const n = await conn.read(buffer);
      if (n === null) return;
      pending += decoder.decode(buffer.subarray(0, n), { stream: true });
      for (let newline = pending.indexOf("\n"); newline >= 0; newline = pending.indexOf("\n")) {
        const line = pending.slice(0, newline).trim();
        pending = pending.slice(newline + 1);
        if (line) await reply(await controlReply(line, this.#ops));
      }
      if (pending.length > MAX_CONTROL_LINE) {
        await reply({ ok: false, error: `request line longer than ${MAX_CONTROL_LINE} bytes` });
        return;
      }
    }
  }

  /** Closes the socket (removing it when it is still ours) and frees the one-proxy lock. */
  async close(): Promise<void> {
    this.#closing = true;
    if (this.#listener) {
      try {
        this.#listener.close();
      } catch { /* already closed */ }
      for (const conn of this.#conns) {
        try {
          conn.close();
        } catch { /* already closed */ }
      }
      await this.#loop;
      const stat = await ifExists(Deno.lstat(this.path)).catch(() => undefined);
      if (stat?.isSocket && stat.ino === this.#ino) await Deno.remove(this.path).catch(() => {});
    }
    this.#instanceLock?.close();
    this.#instanceLock = undefined;
  }
}
