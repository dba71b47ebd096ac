import { UsageError } from "../errors.ts";

/**
 * `proxy --host` and `setup --proxy-host`: an IP address to listen on, checked before anything
 * runs (a typo would otherwise surface only when the proxy fails to start, or not at all when one
 * runs already). An address other than every interface's (0.0.0.0, ::) must be one of this
 * machine's: setup would otherwise restart the running proxy there, where it cannot listen, and
 * every app behind it would go unserved. Loads the proxy's address parser only when given.
 */
export async function listenAddress(flag: string, value: string | undefined): Promise<string | undefined> {
  if (value === undefined) return undefined;
  const { parseIp } = await import("../proxy/config.ts");
  const address = parseIp(value);
  if (!address || /[[\]%]/.test(value)) {
    throw new UsageError(`--${flag} must be an IP address to listen on (got "${value}")`, {
      suggestion: "0.0.0.0 (every IPv4 address), 127.0.0.1 (this machine only), :: (every address), or one of the " +
        "server's own addresses",
    });
  }
  if (address.every((byte) => byte === 0)) return value; // every interface: nothing to bind to check
  try {
    // Port 0: any free port, closed at once; only whether the address is this machine's counts.
    Deno.listen({ hostname: value, port: 0 }).close();
  } catch (error) {
    if (!(error instanceof Deno.errors.AddrNotAvailable)) throw error;
    throw new UsageError(`--${flag} ${value} is not an address of this machine (${error.message})`, {
      suggestion: "give one of the server's own addresses (`ip -brief address` lists them), 127.0.0.1 (this " +
        "machine only), or 0.0.0.0 (every IPv4 address)",
    });
  }
  return value;
}
