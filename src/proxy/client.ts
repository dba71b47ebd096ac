/**
 * Talks to a running proxy over its control socket (see {@link controlSocketPath}): one JSON
 * object per line, one reply line each. Light: deploys import it to switch routes.
 * @module
 */
import { DeployParadigmError } from "../errors.ts";
import { exists } from "../fsutil.ts";
import { controlSocketPath, legacyControlSocketPath, PROXY_LOG } from "./routes.ts";

/** Longest reply line accepted. */
const MAX_REPLY_BYTES = 1024 * 1024;

/** Nothing answers on the control socket: the proxy is not running (so nothing is in flight through it). */
export class ProxyNotRunning extends DeployParadigmError {}

/**
 * Whether the proxy {@link control} reaches is one an older version started: no socket at the
 * path, one at the path it used (setup restarts it, to run this version's code).
 */
export async function olderProxy(root: string): Promise<boolean> {
  return !(await exists(controlSocketPath(root))) && await exists(legacyControlSocketPath(root));
}

/**
 * Sends `request` (e.g. `{op: "reload"}`, `{op: "drain", port, timeoutMs}`, `{op: "status"}`)
 * to the proxy of the server under `root` and returns its reply (`{ok: true, ...}` or
 * `{ok: false, error}`). Throws {@link DeployParadigmError} when no proxy runs or it does not
 * answer within `timeoutMs` (for a `drain`: at least its own `timeoutMs` plus 5 s). When there
 * is no socket at its path, a proxy an older version started is asked at the path it used
 * ({@link legacyControlSocketPath}), so deploys keep working until that proxy is restarted.
 */
export async function control(
  root: string,
  request: object,
  timeoutMs = 10_000,
): Promise<Record<string, unknown>> {
  const path = controlSocketPath(root);
  let conn: Deno.UnixConn;
  try {
    conn = await Deno.connect({ transport: "unix", path }).catch((error) =>
      error instanceof Deno.errors.NotFound
        ? Deno.connect({ transport: "unix", path: legacyControlSocketPath(root) }).catch(() => Promise.reject(error))
        : Promise.reject(error)
    );
  } catch (error) {
    const suggestion = "start it with `deploy-paradigm proxy` (setup installs it as a service)";
    if (error instanceof Deno.errors.NotFound) {
      throw new ProxyNotRunning(`the proxy is not running (no ${path})`, { suggestion, cause: error });
    }
    if (error instanceof Deno.errors.ConnectionRefused) {
      throw new ProxyNotRunning(`the proxy is not running (nothing answers on ${path})`, {
        suggestion,
        cause: error,
      });
    }
    if (error instanceof Deno.errors.PermissionDenied) {
      throw new DeployParadigmError(`cannot use the proxy's control socket ${path}: permission denied`, {
        suggestion: "run this as root, or as a member of the deploy group (setup creates it)",
        cause: error,
      });
    }
    throw error;
  }
  // A drain may take as long as it asks for: wait for it a little longer than that.
  const { op, timeoutMs: drainMs } = request as { op?: unknown; timeoutMs?: unknown };
  const wait = op === "drain" && typeof drainMs === "number" ? Math.max(timeoutMs, drainMs + 5_000) : timeoutMs;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(
        new DeployParadigmError(`the proxy did not answer ${JSON.stringify(request)} within ${wait} ms`, {
          suggestion: `check ${PROXY_LOG}`,
        }),
      );
      try {
        conn.close();
      } catch { /* already closed */ }
    }, wait);
  });
  try {
    return await Promise.race([exchange(conn, request), timeout]);
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch { /* closed by the timeout */ }
  }
}

async function exchange(conn: Deno.UnixConn, request: object): Promise<Record<string, unknown>> {
  await conn.write(new TextEncoder().encode(JSON.stringify(request) + "\n"));
  const decoder = new TextDecoder();
  const buffer = new Uint8Array(64 * 1024);
  let text = "";
  while (!text.includes("\n")) {
    // After a timeout closes the connection this read rejects; Promise.race has already settled.
    const n = await conn.read(buffer);
    if (n === null) {
      throw new DeployParadigmError("the proxy closed its control connection without answering", {
        suggestion: `check ${PROXY_LOG}`,
      });
    }
    text += decoder.decode(buffer.subarray(0, n), { stream: true });
    if (text.length > MAX_REPLY_BYTES) throw new DeployParadigmError("the proxy's reply is too long");
  }
  const line = text.slice(0, text.indexOf("\n"));
  let reply: unknown;
  try {
    reply = JSON.parse(line);
  } catch {
    throw new DeployParadigmError(`the proxy answered something that is not JSON: ${line.slice(0, 200)}`);
  }
  if (reply === null || typeof reply !== "object" || Array.isArray(reply)) {
    throw new DeployParadigmError(`the proxy answered something that is not a JSON object: ${line.slice(0, 200)}`);
  }
  if ((reply as { ok?: unknown }).ok !== true) {
    throw new DeployParadigmError(
      `the proxy refused ${JSON.stringify(request)}: ${(reply as { error?: unknown }).error}`,
    );
  }
  return reply as Record<string, unknown>;
}
