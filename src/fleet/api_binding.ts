/**
 * Where the fleet API may listen, checked before anything is opened: a valid port, beyond
 * loopback only with a token ({@link checkBinding}), the address free ({@link checkAddressFree}),
 * and a failure to listen said in one line ({@link listenError}). Used by ./api.ts's `serveFleet`
 * and by `fleet` (./cli.ts).
 * @module
 */
import { UsageError } from "../errors.ts";

/**
 * Checks that the API's address is free (listens and closes at once), before anything is opened:
 * taken, a {@link UsageError} in one line that names it (see {@link listenError}).
 */
export function checkAddressFree(host: string, port: number): void {
  if (port === 0) return;
  try {
    Deno.listen({ hostname: host, port }).close();
  } catch (error) {
    throw listenError(error, host, port);
  }
}

/** A failure to listen on `host:port`, for people: in use or not permitted is a usage error, in one line. */
export function listenError(error: unknown, host: string, port: number): unknown {
  const address = `${host.includes(":") ? `[${host}]` : host}:${port}`;
  if (error instanceof Deno.errors.AddrInUse) {
    return new UsageError(`${address} is in use by another process: choose another port with --port`);
  }
  if (error instanceof Deno.errors.PermissionDenied || error instanceof Deno.errors.AddrNotAvailable) {
    return new UsageError(`cannot listen on ${address} (${(error as Error).message}): choose another --host or --port`);
  }
  return error;
}

/**
 * Checks where the API may listen: a valid port, and beyond loopback (127.0.0.1, ::1, localhost)
 * only with a token. Throws a {@link UsageError} that says why and what to do.
 */
export function checkBinding(host: string, port: number, token: string | undefined): void {
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new UsageError(`invalid port ${port} for the fleet API`, { suggestion: "use a port from 1 to 65535" });
  }
  if (token !== undefined && token.length === 0) {
    throw new UsageError("the fleet API token is empty", { suggestion: "set a long random token, or none" });
  }
  if (!isLoopback(host)) {
    if (token === undefined) {
      throw new UsageError(
        `refusing to serve the fleet API on ${host} without a token: anyone who can reach it could read every log`,
        {
          suggestion: `listen on 127.0.0.1 and reach it through SSH (ssh -L ${port || 8080}:127.0.0.1:${port} ...), ` +
            "or set a token, which clients then send as Authorization: Bearer <token>",
        },
      );
    }
  }
}

/** Whether `host` is a loopback address or `localhost`. */
export function isLoopback(host: string): boolean {
  const bare = host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
  return bare === "localhost" || bare === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(bare);
}
