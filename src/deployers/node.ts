/**
 * Node apps: `npm ci` (or `npm install`) without dev dependencies; started by their start script.
 * @module
 */
import { splitCommand } from "../config/argv.ts";
import { UsageError } from "../errors.ts";
import { type Deployer, noCommand } from "./deployer.ts";

/** The node app type. */
export const node: Deployer = {
  detect: ["package.json"],
  reads: {
    files: ["package.json"],
    facts(texts, where) {
      const text = texts.get("package.json");
      if (text === undefined) return {};
      try {
        return { packageJson: JSON.parse(text) };
      } catch (error) {
        throw new UsageError(`package.json in ${where} is not valid JSON: ${(error as Error).message}`);
      }
    },
  },
  build(facts, inRelease) {
    if (!facts.files.has("package.json")) return [];
    const lockfile = facts.files.has("package-lock.json") || facts.files.has("npm-shrinkwrap.json");
    return [inRelease(["npm", lockfile ? "ci" : "install", "--omit=dev", "--no-audit", "--no-fund"])];
  },
  start(facts) {
    const start = facts.packageJson?.scripts?.start;
    if (start) {
      // Run a plain start script directly (no npm and no shell in between, so signals reach
      // the app); only a script that needs a shell goes through `npm start`.
      const argv = splitCommand(start);
      return "error" in argv || /^[A-Za-z_]\w*=/.test(argv[0]) ? ["npm", "start"] : argv;
    }
    const main = facts.packageJson?.main ?? ["server.js", "index.js", "app.js"].find((f) => facts.files.has(f));
    if (!main) {
      const why = facts.files.has("package.json")
        ? 'package.json has no "start" script and there is no server.js, index.js or app.js'
        : "there is no package.json, server.js, index.js or app.js";
      throw noCommand(why, "node server.js");
    }
    return ["node", main];
  },
  pathDirs: ["node_modules/.bin"],
  healthCheckRequired: true,
  init: {
    command: () => "# command: node server.js   # set this: no start script, main, server.js, index.js or app.js",
    health: "/health",
  },
};
