/**
 * Where a server's files come from: `host: local` reads this machine's deployment dirs directly;
 * any other host is pulled over ssh with rsync into `~/.fleet-monitor/mirror/<server>/`, through
 * one ControlMaster connection per server that later cycles reuse. Commands are argv arrays; the
 * one command line the remote shell runs is a constant. The small files (each app's status.json
 * and the proxy's `.tls/certificates.json`) come in one rsync that skips any file over 1 MiB.
 * @module
 */
import { join } from "node:path";
import { deploymentsRoot, logsRoot, prefix } from "../paths.ts";
import { CERTIFICATES_FILE, certificatesPath, MAX_CERTIFICATES_BYTES } from "../proxy/cert_state.ts";
import { type Cmd, ProcessRunner } from "../runner.ts";
import { type FleetServer, LOCAL } from "./config.ts";
import type { SourceFile } from "./ingest.ts";

/** What one pull of a server found. */
export interface Pulled {
  /** `<app>` → its status.json, readable here. */
  statuses: Map<string, string>;
  /** The proxy's `.tls/certificates.json`, readable here; undefined when the server has none. */
  certificates?: string;
  /** Log files by `<app>/<name>` (rotated `.1` siblings included), readable here. */
  logs: Map<string, SourceFile>;
  /** Bytes received over the network. */
  bytes: number;
  /** What failed after the status files came (the logs' transfer): the server counts as failed. */
  error?: string;
}

/** A server that could not be pulled: ssh or rsync failed. */
export class PullFailed extends Error {}

/** Log files the collector reads: `<app>/<name>.log`, and `<name>.log.1` for rotation. */
const LOG_FILE = /^[^/]+\/[^/]+\.log(\.1)?$/;

/** A server's files. */
export interface Source {
  pull(): Promise<Pulled>;
  /** Ends what the source keeps open (the ssh master connection). */
  close(): Promise<void>;
}

/** The source of a configured server. */
export function sourceFor(server: FleetServer, home: { mirror: string; knownHosts: string; sockets: string }): Source {
  return server.host === LOCAL ? new LocalSource(prefix()) : new SshSource(server, home);
}

/** This machine's own deployments (under DEPLOY_PARADIGM_PREFIX when set). */
export class LocalSource implements Source {
  constructor(readonly root: string) {}

  async pull(): Promise<Pulled> {
    const statuses = new Map<string, string>();
    for (const app of await dirs(deploymentsRoot(this.root))) {
      const path = join(deploymentsRoot(this.root), app, "status.json");
      if (await isFile(path)) statuses.set(app, path);
    }
    const certificates = certificatesPath(deploymentsRoot(this.root));
    const logs = new Map<string, SourceFile>();
    const root = logsRoot(this.root);
    for (const app of await dirs(root)) {
      for await (const entry of Deno.readDir(join(root, app))) {
        const rel = `${app}/${entry.name}`;
        if (!entry.isFile || !LOG_FILE.test(rel)) continue;
        const path = join(root, rel);
        logs.set(rel, { rel, path, ino: "here" });
      }
    }
    return { statuses, ...(await isFile(certificates) ? { certificates } : {}), logs, bytes: 0 };
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

function isFile(path: string): Promise<boolean> {
  return Deno.stat(path).then((s) => s.isFile, () => false);
}

async function dirs(path: string): Promise<string[]> {
  const names: string[] = [];
  try {
    for await (const entry of Deno.readDir(path)) {
      if (entry.isDirectory && !entry.name.startsWith(".")) names.push(entry.name);
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  return names.sort();
}

/**
 * The remote listing: inode, size and path of each log file; a constant command line, for GNU and
 * busybox (`stat -c`). No log directory yet is an empty listing; a failing find or stat fails the pull.
 */
const LISTING = "[ -d /var/log/deployments ] || exit 0; cd /var/log/deployments && find . -mindepth 2 -maxdepth 2 " +
  "-type f \\( -name '*.log' -o -name '*.log.1' \\) -exec stat -c '%i %s %n' {} +";

/** A server pulled over ssh + rsync. */
export class SshSource implements Source {
  private readonly runner = new ProcessRunner();
  private readonly mirror: string;

  constructor(
    readonly server: FleetServer,
    private readonly home: { mirror: string; knownHosts: string; sockets: string },
  ) {
    this.mirror = home.mirror;
  }

  /** ssh's options: batch mode, timeouts, strict host keys from the fleet's known_hosts, one master. */
  sshArgv(): string[] {
    const { server, home } = this;
    const userKnown = join(Deno.env.get("HOME") ?? "/nonexistent", ".ssh", "known_hosts");
    if (/\s/.test(home.knownHosts)) {
      throw new PullFailed(`the fleet's home ${home.sockets} has a space in its path, which ssh options cannot hold`);
    }
    const knownHosts = [home.knownHosts, userKnown].filter((path) => !/\s/.test(path)).join(" ");
    return [
      "ssh",
      ...["-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "StrictHostKeyChecking=yes"],
      ...["-o", `UserKnownHostsFile=${knownHosts}`, "-o", "ControlMaster=auto"],
      ...["-o", `ControlPath=${controlPath(home.sockets, server)}`, "-o", "ControlPersist=300"],
      ...["-o", "ServerAliveInterval=10", "-o", "ServerAliveCountMax=2", "-o", "LogLevel=ERROR"],
      ...["-p", String(server.port), "-l", server.user],
      ...(server.identityFile ? ["-i", expandHome(server.identityFile), "-o", "IdentitiesOnly=yes"] : []),
    ];
  }

  private async ssh(command: string): Promise<string> {
    const result = await this.runner.run({
      argv: [...this.sshArgv(), "--", this.server.host, command],
      quiet: true,
      allowFailure: true,
      timeoutMs: 30_000,
    });
    if (result.code !== 0) throw new PullFailed(sshError(this.server, result.tail, result.code));
    return result.output;
  }

  /**
   * rsync of `remote` (a directory, with a trailing slash) into `local`, only files `include` says
   * (and, with `maxSize`, none bigger than that many bytes).
   */
  private async rsync(remote: string, local: string, include: string[], maxSize?: number): Promise<number> {
    await Deno.mkdir(local, { recursive: true });
    const cmd: Cmd = {
      argv: [
        "rsync",
        ...["--recursive", "--times", "--inplace", "--delete", "--prune-empty-dirs", "--stats", "--timeout=20"],
        ...(maxSize === undefined ? [] : [`--max-size=${maxSize}`]),
        ...include.flatMap((pattern) => ["--include", pattern]),
        ...["--exclude", "*"],
        ...["-e", this.sshArgv().map(rsyncWord).join(" ")],
        "--",
        `${this.server.host.includes(":") ? `[${this.server.host}]` : this.server.host}:${remote}`,
        `${local}/`,
      ],
      quiet: true,
      allowFailure: true,
      timeoutMs: 30 * 60_000, // a stalled transfer ends by --timeout; a big first pull may take long
    };
    const result = await this.runner.run(cmd);
    // 23/24: some files vanished or could not be read (a log rotated mid-transfer): the next cycle gets them.
    if (result.code !== 0 && result.code !== 23 && result.code !== 24) {
      throw new PullFailed(sshError(this.server, result.tail, result.code));
    }
    const received = /Total bytes received: ([\d,.]+)/.exec(result.output)?.[1];
    return received ? Number(received.replace(/[,.]/g, "")) : 0;
  }

  async pull(): Promise<Pulled> {
    await Deno.mkdir(this.home.sockets, { recursive: true, mode: 0o700 });
    // Small files only: a status.json or certificates.json over 1 MiB is not one the tool wrote.
    let bytes = await this.rsync(
      "/opt/deployments/",
      join(this.mirror, "status"),
      ["/*/", "/*/status.json", `/${CERTIFICATES_FILE}`],
      MAX_CERTIFICATES_BYTES,
    );
    const statuses = new Map<string, string>();
    for (const app of await dirs(join(this.mirror, "status"))) {
      const path = join(this.mirror, "status", app, "status.json");
      if (await isFile(path)) statuses.set(app, path);
    }
    const certificates = join(this.mirror, "status", CERTIFICATES_FILE);
    const tls = await isFile(certificates) ? { certificates } : {};
    const logs = new Map<string, SourceFile>();
    try {
      const before = parseListing(await this.ssh(LISTING));
      bytes += await this.rsync("/var/log/deployments/", join(this.mirror, "logs"), ["/*/", "/*/*.log", "/*/*.log.1"]);
      const after = parseListing(await this.ssh(LISTING));
      for (const [rel, ino] of after) {
        // A file replaced while rsync ran may hold either version: it waits for the next cycle.
        if (before.get(rel) !== ino) continue;
        const path = join(this.mirror, "logs", rel);
        if (await isFile(path)) logs.set(rel, { rel, path, ino });
      }
    } catch (error) {
      return { statuses, ...tls, logs, bytes, error: `logs: ${error instanceof Error ? error.message : error}` };
    }
    return { statuses, ...tls, logs, bytes };
  }

  /** Ends the master connection (`ssh -O exit`). */
  async close(): Promise<void> {
    await this.runner.run({
      argv: [...this.sshArgv(), "-O", "exit", "--", this.server.host],
      quiet: true,
      allowFailure: true,
      timeoutMs: 10_000,
    });
  }
}

function parseListing(output: string): Map<string, number> {
  const files = new Map<string, number>();
  for (const line of output.split("\n")) {
    const match = /^(\d+) \d+ (?:\.\/)?(.+)$/.exec(line.trim());
    if (match && LOG_FILE.test(match[2])) files.set(match[2], Number(match[1]));
  }
  return files;
}

/**
 * The ControlMaster socket of a server: a short name (a hash of where it goes) under the fleet's
 * home, or under /tmp when that path would be too long for a unix socket (104 bytes on macOS).
 */
export function controlPath(sockets: string, server: FleetServer): string {
  const digest = fnv1a(`${server.user}@${server.host}:${server.port}`);
  const inHome = join(sockets, digest);
  if (inHome.length + 20 < 100) return inHome; // ssh adds a temporary suffix while it sets up
  const dir = `/tmp/fleet-${Deno.uid() ?? "user"}`;
  Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
  return join(dir, digest);
}

/** A short, stable hex digest (FNV-1a, 64 bits). */
function fnv1a(text: string): string {
  let hash = 0xcbf29ce484222325n;
  for (const byte of new TextEncoder().encode(text)) {
    hash = BigInt.asUintN(64, (hash ^ BigInt(byte)) * 0x100000001b3n);
  }
  return hash.toString(16).padStart(16, "0");
}

/** A word of rsync's `-e` command: rsync splits it at spaces and honours double quotes. */
function rsyncWord(word: string): string {
  return /\s/.test(word) ? `"${word}"` : word;
}

function expandHome(path: string): string {
  return path.startsWith("~/") ? join(Deno.env.get("HOME") ?? "~", path.slice(2)) : path;
}

/** A one-line reason an ssh or rsync call failed, with what to do about a host key. */
export function sshError(server: FleetServer, tail: string[], code: number): string {
  const text = tail.filter((line) => line.trim()).join(" ").trim();
  if (/Host key verification failed|No .* host key is known|REMOTE HOST IDENTIFICATION HAS CHANGED/i.test(text)) {
    return `the host key of ${server.host} is not trusted (${text}); check it and run ` +
      `\`deploy-paradigm fleet trust ${server.name}\``;
  }
  return text || `exit code ${code}`;
}
