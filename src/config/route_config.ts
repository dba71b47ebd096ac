/**
 * config.yml as the proxy reads it: only the keys routing needs. A problem in another key (a typo
 * in `notify:`, a bad `user:`) is refused by deploys and reported by `status`, but must not take
 * the app offline when the proxy restarts: the proxy routes it from these keys alone.
 * @module
 */
import { ConfigError } from "../errors.ts";
import { parseConfig } from "./load.ts";
import { type RouteConfigKeys, routeConfigSchema, ROUTING_KEYS, serverConfigSchema } from "./schema.ts";

export { ROUTING_KEYS };

/** What the proxy routes an app by. */
export type RouteConfig = RouteConfigKeys;

/** An app's config.yml read for routing: the routing keys, and the problems of the other keys when there are some. */
export interface LoadedRouteConfig {
  config: RouteConfig;
  /** config.yml's problems, none of them in a routing key (deploys refuse the file; the proxy routes by it). */
  ignored?: ConfigError;
}

/**
 * Reads config.yml `text` (named `label` in messages) for routing. Throws the whole file's
 * {@link ConfigError} when a routing key (or what could be one misspelled) has a problem, or the
 * file is no YAML mapping; a file whose only problems are in keys routing does not use loads, with
 * those problems in `ignored`.
 */
export function loadRouteConfig(text: string, label: string): LoadedRouteConfig {
  try {
    return { config: parseConfig(text, serverConfigSchema, label) };
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    let config: RouteConfig;
    try {
      config = parseConfig(text, routeConfigSchema, label);
    } catch {
      throw error; // every problem of the file, as deploys say them
    }
    return { config, ignored: error };
  }
}
