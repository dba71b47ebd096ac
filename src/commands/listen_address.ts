import { UsageError } from "../errors.ts";

/**
 * `proxy --host` and `setup --proxy-host`: an IP address to listen on, checked before anything
 * runs (a typo would otherwise surface only when the proxy fails to start, or not at all when one
 * runs already). Loads the proxy's address parser only when given.
 */
export async function listenAddress(flag: string, value: string | undefined): Promise<string | undefined> {
  if (value === undefined) return undefined;
  const { parseIp } = await import("../proxy/config.ts");
  if (!parseIp(value) || /[[\]%]/.test(value)) {
    throw new UsageError(`--${flag} must be an IP address to listen on (got "${value}")`, {
      suggestion: "0.0.0.0 (every IPv4 address), 127.0.0.1 (this machine only), :: (every address), or one of the " +
        "server's own addresses",
    });
  }
  return value;
}
