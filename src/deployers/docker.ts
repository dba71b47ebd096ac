/**
 * Docker apps: an image built from the commit's Dockerfile, run as a container (see
 * managers/docker.ts); the image's CMD starts it unless deploy.yml has a command.
 * @module
 */
import { join } from "node:path";
import { UsageError } from "../errors.ts";
import { buildImage, DOCKER_NAME_RULE, dockerNameOk } from "../managers/docker.ts";
import type { Deployer } from "./deployer.ts";

/** The docker app type. */
export const docker: Deployer = {
  detect: ["Dockerfile"],
  afterBuild(deploy, facts, release) {
    const dockerfile = deploy.dockerfile ?? "Dockerfile";
    if (!facts.files.has(dockerfile.split("/")[0])) {
      throw new UsageError(`the docker app has no ${dockerfile} in the commit`, {
        suggestion: `commit ${dockerfile}, or name the Dockerfile in deploy.yml: dockerfile: path/to/Dockerfile`,
      });
    }
    // The deploy's own build: root's (it talks to the engine), never the app user's.
    return [{ ...buildImage(deploy, release.dir, release.id, release.commit), engine: true }];
  },
  healthCheckRequired: true,
  keys: ["dockerfile", "buildArgs", "containerPort"],
  nameRule: { ok: dockerNameOk, names: "a docker image and container", rule: DOCKER_NAME_RULE },
  init: {
    command: (containerPort) =>
      "# command: (default: the image's CMD)\n" +
      `containerPort: ${containerPort}   # the port the container listens on (it also gets PORT)`,
    health: "/health",
    withoutDetected: "a deploy builds the image from it (or from the file deploy.yml's dockerfile: names)",
    // No processes: (one web container) and no build: (the Dockerfile builds; a build: would run on the host).
    optional: [
      "# dockerfile: Dockerfile             # the Dockerfile, relative to the repository",
      "# buildArgs: { NODE_ENV: production } # --build-arg values (not secret: they stay in the image)",
    ],
    async containerPort(dir) {
      const dockerfile = await Deno.readTextFile(join(dir, "Dockerfile")).catch(() => "");
      const exposed = Number(/^\s*EXPOSE\s+(\d+)/im.exec(dockerfile)?.[1]);
      return exposed >= 1 && exposed <= 65535 ? exposed : undefined;
    },
  },
};
