/**
 * Where the fleet API may listen, checked before anything is opened: an address, a valid port,
 * beyond loopback only with a token of {@link MIN_TOKEN_LENGTH} characters or more
 * ({@link checkBinding}), the address free ({@link checkAddressFree}),
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

/** The shortest API token that may guard the API beyond loopback (a short one is guessed). */
export const MIN_TOKEN_LENGTH = 16;

/** How to make a token, said where one is refused. */
const MAKE_TOKEN = "make one with `openssl rand -hex 32` and give it with --token-file FILE (mode 0600) or " +
  "FLEET_MONITOR_TOKEN";

/** A host name, an IPv4 address, or an IPv6 address (bare or in brackets). */
const ADDRESS =
  /^([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*|\[?[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*\]?)$/;

/** `--host`, when it is no address at all: what to give instead. */
const notAnAddress = (host: string) =>
  new UsageError(`--host ${JSON.stringify(host)} is not an address to listen on`, {
    suggestion: "give an IP address of this machine (127.0.0.1, ::1, or one of its network's) or a host name " +
      "that resolves to one",
  });

/**
 * A failure to listen on `host:port`, for people: in use, not permitted, or no such address is a
 * usage error, in one line.
 */
export function listenError(error: unknown, host: string, port: number): unknown {
  const address = `${host.includes(":") && !host.startsWith("[") ? `[${host}]` : host}:${port}`;
  if (error instanceof Deno.errors.AddrInUse) {
    return new UsageError(`${address} is in use by another process: choose another port with --port`);
  }
  if (error instanceof Deno.errors.PermissionDenied || error instanceof Deno.errors.AddrNotAvailable) {
    return new UsageError(`cannot listen on ${address} (${(error as Error).message}): choose another --host or --port`);
  }
  if (error instanceof URIError) return notAnAddress(host);
  if (error instanceof Error && /failed to lookup address/.test(error.message)) {
    return new UsageError(`cannot listen on ${address}: ${host} is no address of this machine (${error.message})`, {
      suggestion: "give --host an IP address of this machine (127.0.0.1, ::1) or a host name that resolves to one",
    });
  }
  return error;
}

/**
 * Checks where the API may listen: an address, a valid port, and beyond loopback (127.0.0.1, ::1,
 * localhost) only with a token of {@link MIN_TOKEN_LENGTH} characters or more. Throws a
 * {@link UsageError} that says why and what to do.
 */
export function checkBinding(host: string, port: number, token: string | undefined): void {
  if (!ADDRESS.test(host)) throw notAnAddress(host);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new UsageError(`invalid port ${port} for the fleet API`, { suggestion: "use a port from 1 to 65535" });
  }
  if (token !== undefined && token.length === 0) {
    throw new UsageError("the fleet API token is empty", { suggestion: `${MAKE_TOKEN}; or give none` });
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
    if (token.length < MIN_TOKEN_LENGTH) {
      throw new UsageError(
        `the fleet API token is too short (${token.length} characters) to serve on ${host}: ` +
          `it needs ${MIN_TOKEN_LENGTH} or more, or it can be guessed`,
        { suggestion: MAKE_TOKEN },
      );
    }
  }
}

/** Whether `host` is a loopback address or `localhost`. */
export function isLoopback(host: string): boolean {
  const bare = host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
  return bare === "localhost" || bare === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(bare);
}
