/**
 * The names of the switch strategies (config.yml `strategy`), the first the default, and whether
 * each serves through the proxy (the app's public port is the proxy's: setup installs the proxy
 * and the slots, and the proxy routes the app). The registry (./mod.ts) must implement each name:
 * one without an implementation fails `deno check`. Kept apart from the implementations so that
 * the config schema, setup and the proxy load none of them.
 * @module
 */
export const STRATEGIES = ["blue-green", "restart"] as const;

/** A switch strategy's name. */
export type Strategy = typeof STRATEGIES[number];

/** Whether an app of that strategy is served through the proxy (blue and green slots behind it). */
export const PROXIED: Readonly<Record<Strategy, boolean>> = { "blue-green": true, restart: false };
