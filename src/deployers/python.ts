/**
 * Python apps: a venv in the release, filled from requirements.txt or pyproject.toml.
 * @module
 */
import { type Deployer, noCommand } from "./deployer.ts";

const SCRIPTS = ["app.py", "main.py", "server.py"];

/** The python app type. */
export const python: Deployer = {
  detect: ["requirements.txt", "pyproject.toml"],
  // Not in the design's list: a standard-library Python app has nothing but its script.
  detectLast: SCRIPTS,
  build(facts, inRelease) {
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
  },
  start(facts) {
    const script = SCRIPTS.find((f) => facts.files.has(f));
    if (!script) throw noCommand("there is no app.py, main.py or server.py to run", "python app.py");
    return ["python", script];
  },
  pathDirs: ["venv/bin"],
  env: { PYTHONUNBUFFERED: "1" },
  healthCheckRequired: true,
  init: {
    command: () => "# command: python app.py   # set this: no app.py, main.py or server.py was found",
    health: "/health",
  },
};
