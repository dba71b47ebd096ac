/**
 * Static sites: the files of the commit (or deploy.yml's `root:` of them, after the build), served
 * as they are; nothing to build or run.
 * @module
 */
import type { Deployer } from "./deployer.ts";

/** The static app type. */
export const staticSite: Deployer = {
  detect: ["index.html"],
  healthCheckRequired: false,
  keys: ["root"],
  init: {
    command: () => "# command: (none: the static files are served as they are)",
    health: "/",
    withoutDetected: "a deploy fails at its health check (healthCheck: / needs the file) until one is committed",
  },
};
