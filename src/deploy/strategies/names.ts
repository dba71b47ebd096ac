/**
 * The names of the switch strategies (config.yml `strategy`), the first the default. The
 * registry (./mod.ts) must implement each: a name without an implementation fails `deno check`.
 * Kept apart from the implementations so that the config schema loads none of them.
 * @module
 */
export const STRATEGIES = ["blue-green", "restart"] as const;

/** A switch strategy's name. */
export type Strategy = typeof STRATEGIES[number];
