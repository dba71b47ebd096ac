/**
 * The switch strategies, by the name config.yml gives them: a name without an implementation
 * fails `deno check`.
 * @module
 */
import type { ServerConfig } from "../../config/schema.ts";
import { blueGreen } from "./blue_green.ts";
import { restart } from "./restart.ts";
import type { Strategy, SwitchStrategy } from "./strategy.ts";

export type { Activated } from "./strategy.ts";
export { ActivationFailed } from "./strategy.ts";

/** Every switch strategy. */
export const STRATEGY: Record<Strategy, SwitchStrategy> = {
  "blue-green": blueGreen,
  restart,
};

/** The strategy config.yml names. */
export function strategyOf(config: Pick<ServerConfig, "strategy">): SwitchStrategy {
  return STRATEGY[config.strategy];
}
