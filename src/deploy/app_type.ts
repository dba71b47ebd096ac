/**
 * What each app type means: how a release is built and how the app starts when deploy.yml
 * has no `command`. Pure functions of the commit's files, so plans are testable without spawning.
 * @module
 */
import { splitCommand, toArgv } from "../config/argv.ts";
import type { DeployFile } from "../config/schema.ts";
import { UsageError } from "../errors.ts";
import type { Cmd } from "../runner.ts";
import { buildImage } from "../managers/docker.ts";

/** What the deployer knows about a commit before extracting it. */
export interface RepoFacts {
  /** Top-level file names. */
  files: Set<string>;
  /** Parsed package.json, for node apps. */
  packageJson?: { scripts?: Record<string, string>; main?: string };
}

/**
 * The build commands for release `release.id` (of `release.commit`) in `releaseDir`. A docker
 * app's image is always built (after deploy.yml's `build`, when there is one).
 */
export function buildPlan(
  deploy: DeployFile,
  facts: RepoFacts,
  releaseDir: string,
  release: { id: string; commit: string } = { id: "new", commit: "" },
): Cmd[] {
  const inRelease = (argv: string[]): Cmd => ({ argv, cwd: releaseDir });
  if (deploy.type === "docker") {
    const dockerfile = deploy.dockerfile ?? "Dockerfile";
    if (!facts.files.has(dockerfile.split("/")[0])) {
      throw new UsageError(`the docker app has no ${dockerfile} in the commit`, {
        suggestion: `commit ${dockerfile}, or name the Dockerfile in deploy.yml: dockerfile: path/to/Dockerfile`,
      });
    }
    return [
      ...(deploy.build ? [inRelease(toArgv(deploy.build))] : []),
      { ...buildImage(deploy, releaseDir, release.id, release.commit), engine: true }, // the deploy's own: root's
    ];
  }
  if (deploy.build) return [inRelease(toArgv(deploy.build))];
  switch (deploy.type) {
    case "python": {
      const deps = facts.files.has("requirements.txt")
        ? ["-r", "requirements.txt"]
        : facts.files.has("pyproject.toml")
        ? ["."]
        : undefined;
      if (!deps) return [inRelease(["python3", "-m", "venv", "--without-pip", "venv"])];
      return [
        inRelease(["python3", "-m", "venv", "venv"]),
        inRelease(["venv/bin/python", "-m", "pip", "install", "--disable-pip-version-check", ...deps]),
      ];
    }
    case "node": {
      if (!facts.files.has("package.json")) return [];
      const lockfile = facts.files.has("package-lock.json") || facts.files.has("npm-shrinkwrap.json");
      return [inRelease(["npm", lockfile ? "ci" : "install", "--omit=dev", "--no-audit", "--no-fund"])];
    }
    case "static":
      return [];
  }
}

/** The argv that starts the app, or undefined for a static app without a command (nothing to run). */
export function startArgv(deploy: DeployFile, facts: RepoFacts): string[] | undefined {
  if (deploy.command) return toArgv(deploy.command);
  const missing = (what: string) =>
    new UsageError(`deploy.yml has no "command" and ${what}`, {
      suggestion: 'add a command to deploy.yml, e.g. command: "python app.py"',
    });
  switch (deploy.type) {
    case "python": {
      const script = ["app.py", "main.py", "server.py"].find((f) => facts.files.has(f));
      if (!script) throw missing("there is no app.py, main.py or server.py to run");
      return ["python", script];
    }
    case "node": {
      const start = facts.packageJson?.scripts?.start;
      if (start) {
        // Run a plain start script directly (no npm and no shell in between, so signals reach
        // the app); only a script that needs a shell goes through `npm start`.
        const argv = splitCommand(start);
        return "error" in argv || /^[A-Za-z_]\w*=/.test(argv[0]) ? ["npm", "start"] : argv;
      }
      const main = facts.packageJson?.main ?? ["server.js", "index.js", "app.js"].find((f) => facts.files.has(f));
      if (!main) throw missing('package.json has no "start" script and there is no server.js, index.js or app.js');
      return ["node", main];
    }
    default:
      return undefined;
  }
}
