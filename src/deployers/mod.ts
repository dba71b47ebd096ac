/**
 * The app types, by name: one file per type, one line here. A name in {@link APP_TYPES} without
 * a deployer fails `deno check`; deploy.yml's `type`, `init`'s detection and `--type` choices
 * come from here.
 * @module
 */
import type { Deployer } from "./deployer.ts";
import { docker } from "./docker.ts";
import { node } from "./node.ts";
import { python } from "./python.ts";
import { staticSite } from "./static.ts";

export type { BuildTarget, Deployer, RepoFacts } from "./deployer.ts";

/** The app types, in the order messages list them. */
export const APP_TYPES = ["python", "node", "docker", "static"] as const;

/** An app type. */
export type AppType = typeof APP_TYPES[number];

/** Every app type's deployer. */
export const DEPLOYERS: Readonly<Record<AppType, Deployer>> = {
  python,
  node,
  docker,
  static: staticSite,
};

/**
 * `init`'s detection order: a project is of the first type here with one of its `detect` files
 * (a Dockerfile wins over a package.json); then of the first with one of its `detectLast` files.
 */
export const DETECTION = ["docker", "python", "node", "static"] as const satisfies readonly AppType[];

// Every app type is in DETECTION: a type left out fails `deno check` here.
type Undetected = Exclude<AppType, typeof DETECTION[number]>;
true satisfies [Undetected] extends [never] ? true : { notInDetection: Undetected };

/** Every file some app type reads from a commit before it is extracted (see {@link Deployer.reads}). */
export const READS: readonly string[] = [...new Set(Object.values(DEPLOYERS).flatMap((d) => d.reads?.files ?? []))];

/** The deployer of `type`; undefined for a name that is none (an old release's metadata, say). */
export function deployerOf(type: string): Deployer | undefined {
  return Object.hasOwn(DEPLOYERS, type) ? DEPLOYERS[type as AppType] : undefined;
}
