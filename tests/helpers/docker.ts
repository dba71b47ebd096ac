/**
 * A real Docker-API engine for tests: podman's Docker-compatible service (runc, the vfs storage
 * driver) with its own storage, run dir and socket in a temp dir, so a test sees only its own
 * images and containers and removes all of them. The docker CLI talks to it via DOCKER_HOST.
 * Images are built `FROM scratch` around the static busybox (no registry is reachable).
 */
import { join } from "node:path";
import type { AppRepo } from "./apps.ts";
import { run, spawnCapturing } from "./server.ts";

/** podman's settings: runc (crun refuses this machine's cgroup layout), rlimits it may set. */
const CONTAINERS_CONF = `[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
[engine]
runtime = "runc"
`;

/** The static busybox the test images are made of. */
export const BUSYBOX = "/bin/busybox";

/** One podman service with its own storage. */
export class DockerEngine {
  private service?: Deno.ChildProcess;
  private log = "";

  private constructor(readonly dir: string) {}

  /** `DOCKER_HOST` of this engine. */
  get host(): string {
    return `unix://${join(this.dir, "podman.sock")}`;
  }

  /** Environment for the docker CLI (and so for deploys) against this engine. */
  get env(): Record<string, string> {
    return { DOCKER_HOST: this.host };
  }

  /** Starts an engine in a new temp dir. */
  static async start(): Promise<DockerEngine> {
    for (const tool of ["podman", "docker", "runc"]) {
      if ((await run(["sh", "-c", `command -v ${tool}`])).code !== 0) {
        throw new Error(`${tool} is not installed: the docker tests need podman, runc and the docker CLI`);
      }
    }
    if (!(await Deno.stat(BUSYBOX).then((s) => s.isFile, () => false))) {
      throw new Error(`${BUSYBOX} is missing: install busybox-static`);
    }
    const engine = new DockerEngine(await Deno.makeTempDir({ prefix: "dp-docker-" }));
    await Deno.writeTextFile(join(engine.dir, "containers.conf"), CONTAINERS_CONF);
    await engine.resume();
    return engine;
  }

  /** Starts (again) the API service on the same storage. */
  async resume(): Promise<void> {
    const d = this.dir;
    const storage = ["--root", join(d, "storage"), "--runroot", join(d, "run"), "--storage-driver", "vfs"];
    this.service = spawnCapturing(
      ["podman", ...storage, "system", "service", "--time=0", this.host],
      { CONTAINERS_CONF: join(d, "containers.conf") },
      (text) => this.log += text,
    );
    for (let i = 0; i < 100; i++) {
      if ((await this.docker(["version", "--format", "{{.Server.Version}}"])).code === 0) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`podman's API service did not answer:\n${this.log}`);
  }

  /** Stops the API service (containers keep running, as with a stopped dockerd's live restore). */
  async pause(): Promise<void> {
    if (!this.service) return;
    try {
      this.service.kill("SIGTERM");
    } catch { /* gone */ }
    await this.service.status;
    this.service = undefined;
  }

  /** Runs the docker CLI against this engine. */
  docker(args: string[]) {
    return run(["docker", ...args], { env: this.env });
  }

  /** Lines of a docker command's output; throws when it fails. */
  async lines(args: string[]): Promise<string[]> {
    const result = await this.docker(args);
    if (result.code !== 0) throw new Error(`docker ${args.join(" ")}: ${result.output}`);
    return result.stdout.split("\n").map((line) => line.trim()).filter(Boolean);
  }

  /** Names of all containers, running or not. */
  containers(): Promise<string[]> {
    return this.lines(["ps", "--all", "--format", "{{.Names}}"]);
  }

  /** Tags of an app's images. */
  async tags(app: string): Promise<string[]> {
    const images = await this.lines(["images", "--filter", `label=deploy-paradigm.app=${app}`, "--format", "{{.Tag}}"]);
    return images.sort();
  }

  /** Removes every container and the service, its mounts and its files. */
  async close(): Promise<void> {
    if (!this.service) await this.resume().catch(() => {});
    const ids = await this.lines(["ps", "--all", "--quiet"]).catch(() => []);
    if (ids.length) await this.docker(["rm", "--force", ...ids]);
    await this.pause();
    const mounts = (await Deno.readTextFile("/proc/mounts")).split("\n").map((line) => line.split(" ")[1])
      .filter((path) => path?.startsWith(this.dir + "/")).sort().reverse();
    for (const mount of mounts) await run(["umount", "-l", mount]);
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

/** Runs `fn` with a fresh engine, always closing it. */
export async function withEngine(fn: (engine: DockerEngine) => Promise<void>): Promise<void> {
  const engine = await DockerEngine.start();
  try {
    await fn(engine);
  } finally {
    await engine.close();
  }
}

/**
 * The image's server: busybox httpd, and the container ends (exit 1, as a crash) when /crash
 * appears. (Not a signal trap: podman's restart policy starts the container with SIGUSR1 ignored.)
 */
const SERVE = "/bin/busybox rm -f /crash; /bin/busybox httpd -f -v -p 8080 -h /www & " +
  "while [ ! -e /crash ]; do /bin/busybox sleep 0.1; done; echo server ended >&2; exit 1";

/** What a test image does. */
export type ImageMode = "ok" | "nohealth" | "brokenbuild";

/**
 * The files of a docker app at `version`: a FROM-scratch image of busybox httpd on port 8080
 * serving the version at `/`, `/health` (absent in "nohealth" mode), the value of GREETING from
 * the env file at /cgi-bin/greeting, and /cgi-bin/crash, which ends the container's main process so
 * the restart policy has to bring the container back. It prints `started <version>` on stdout when it starts.
 */
export function dockerAppFiles(
  app: string,
  version: string,
  mode: ImageMode = "ok",
  extra = "",
): Record<string, string> {
  const cgi = (body: string) => `#!/bin/busybox sh\necho "Content-Type: text/plain"\necho\n${body}\n`;
  return {
    "deploy.yml": `name: ${app}\ntype: docker\ncontainerPort: 8080\n` +
      `healthCheck: { path: /health, window: 4s, interval: 150ms, successes: 2, timeout: 1s }\nwatch: 300ms\n${extra}`,
    "Dockerfile": [
      "FROM scratch",
      "COPY busybox /bin/busybox",
      "COPY www /www",
      mode === "brokenbuild" ? "COPY no-such-file /nowhere" : "",
      "STOPSIGNAL SIGKILL",
      `ENTRYPOINT ["/bin/busybox", "sh", "-c", "echo started ${version}; ${SERVE}"]`,
      "",
    ].join("\n"),
    "www/index.html": version,
    ...(mode === "nohealth" ? {} : { "www/health": "ok\n" }),
    "www/cgi-bin/greeting": cgi('echo "$GREETING"'),
    "www/cgi-bin/crash": cgi("echo bye; : > /crash"),
  };
}

/** Commits the docker app at `version` (see {@link dockerAppFiles}) with busybox; returns the sha. */
export async function commitDockerApp(
  repo: AppRepo,
  app: string,
  version: string,
  mode: ImageMode = "ok",
  extra = "",
): Promise<string> {
  await Deno.remove(join(repo.dir, "www"), { recursive: true }).catch(() => {});
  for (const [path, content] of Object.entries(dockerAppFiles(app, version, mode, extra))) {
    const full = join(repo.dir, path);
    await Deno.mkdir(join(full, ".."), { recursive: true });
    await Deno.writeTextFile(full, content, { mode: path.includes("cgi-bin") ? 0o755 : 0o644 });
  }
  await Deno.copyFile(BUSYBOX, join(repo.dir, "busybox"));
  return await repo.commit({}, `${version} (${mode})`);
}
