/**
 * A server pulled over ssh with rsync into `~/.fleet-monitor/mirror/<server>/`, through
 * one ControlMaster connection per server that later cycles reuse. Commands are argv arrays; the
 * one command line the remote shell runs is a constant. A pull lists the server's files first,
 * plans what to take within the limits of ./limits.ts (./pull_plan.ts), then rsyncs exactly
 * those files (`--files-from`, `--max-size`, and RLIMIT_FSIZE on the local rsync where `prlimit`
 * exists) and removes anything else from the mirror: the status.json files in one rsync,
 * certificates.json in another, the logs in as few as keep their total within the mirror's limit
 * whatever the listing says; the real sizes are measured after each. What a server prints is
 * read only up to a limit.
 * @module
 */
import { join } from "node:path";
import { CERTIFICATES_FILE } from "../proxy/cert_state.ts";
import { type CmdResult, findInPath, ProcessRunner } from "../runner.ts";
import type { FleetServer } from "./config.ts";
import type { SourceFile } from "./ingest.ts";
import {
  MAX_APPS,
  MAX_CERTIFICATES_FILE_BYTES,
  MAX_LISTING_BYTES,
  MAX_LOG_FILE_BYTES,
  MAX_MIRROR_BYTES,
  MAX_STATUS_BYTES,
  size,
} from "./limits.ts";
import {
  type ListedFile,
  LISTING,
  LISTING_WITH_METRICS,
  nextBatch,
  parseListing,
  planPull,
  STATUS_FILE,
} from "./pull_plan.ts";
import { parseMetrics, splitMetrics } from "./server_metrics.ts";
import type { Pulled, Source } from "./source.ts";

/** A server that could not be pulled: ssh or rsync failed. */
export class PullFailed extends Error {}

/** `prlimit`, to cap the size of any file the local rsync writes (RLIMIT_FSIZE), where there is one. */
const PRLIMIT = findInPath("prlimit");

/** The file under `local` that rsync could not write for RLIMIT_FSIZE (`write failed on "…": File too large`). */
function tooLarge(output: string, local: string): string | undefined {
  const path = /write failed on "([^"]+)": File too large/.exec(output)?.[1];
  return path?.startsWith(`${local}/`) ? JSON.stringify(path.slice(local.length + 1)).slice(1, -1) : undefined;
}

/** The real size of each of `rels` that is a regular file in `dir`; anything else there under those names is removed. */
async function measure(dir: string, rels: readonly string[]): Promise<Map<string, number>> {
  const sizes = new Map<string, number>();
  for (const rel of rels) {
    const info = await Deno.lstat(join(dir, rel)).catch(() => undefined);
    if (info?.isFile) sizes.set(rel, info.size);
    else if (info) await Deno.remove(join(dir, rel), { recursive: true });
  }
  return sizes;
}

/** A server pulled over ssh + rsync. */
export class SshSource implements Source {
  private readonly mirror: string;

  constructor(
    readonly server: FleetServer,
    private readonly home: { mirror: string; knownHosts: string; sockets: string },
    /** Whether the first listing also reads the server's metrics (off only to measure their cost). */
    private readonly metrics = true,
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

  /** Runs `argv`, keeping at most `maxOutputBytes` of what it prints (more: killed). */
  private run(argv: string[], maxOutputBytes: number, timeoutMs: number): Promise<CmdResult> {
    return new ProcessRunner().run({ argv, quiet: true, allowFailure: true, timeoutMs, maxOutputBytes });
  }

  /**
   * The server's listing (at most {@link MAX_LISTING_BYTES} of it), and with `metrics` the output
   * of its metrics script (the same command: {@link LISTING_WITH_METRICS}; a failure after the
   * listing ended, in the metrics, fails nothing: what they printed is taken).
   */
  private async listing(metrics = false): Promise<{ files: ListedFile[]; metrics?: string }> {
    const command = metrics ? LISTING_WITH_METRICS : LISTING;
    const result = await this.run([...this.sshArgv(), "--", this.server.host, command], MAX_LISTING_BYTES, 30_000);
    return listingOf(this.server, result, metrics);
  }

  /** The rsync argv that pulls `files` (paths under `remote`) into `local`, each at most `maxSize` bytes. */
  rsyncArgv(remote: string, local: string, list: string, maxSize: number): string[] {
    return [
      ...(PRLIMIT ? [PRLIMIT, `--fsize=${maxSize}`] : []),
      "rsync",
      ...["--times", "--inplace", "--stats", "--timeout=20", `--files-from=${list}`, `--max-size=${maxSize}`],
      "--info=skip1", // names each file over --max-size
      "--chmod=D700,F600", // the mirror is the operator's alone, whatever the server's modes
      ...["-e", this.sshArgv().map(rsyncWord).join(" ")],
      "--",
      `${this.server.host.includes(":") ? `[${this.server.host}]` : this.server.host}:${remote}`,
      `${local}/`,
    ];
  }

  /**
   * One rsync of `files` (paths under `remote`, a directory with a trailing slash) into `local`,
   * none bigger than `maxSize`. Returns the bytes received and the files rsync found over `maxSize`.
   */
  private async rsync(
    remote: string,
    local: string,
    files: string[],
    maxSize: number,
  ): Promise<{ received: number; over: Set<string> }> {
    const list = `${local}.files`;
    await Deno.writeTextFile(list, files.map((f) => f + "\n").join(""), { mode: 0o600 });
    // A stalled transfer ends by --timeout; the bytes are bounded by RLIMIT_FSIZE, so is the time.
    const result = await this.run(this.rsyncArgv(remote, local, list, maxSize), 64 << 10, 10 * 60_000);
    // 23/24: some files vanished or could not be read (a log rotated mid-transfer): the next cycle gets them.
    if (result.code !== 0 && result.code !== 23 && result.code !== 24) {
      const why = result.overflow
        ? `rsync printed over ${size(64 << 10)}: transfer stopped`
        : /File too large|File size limit|SIGXFSZ/i.test(result.output)
        ? `it sent ${tooLarge(result.output, local) ?? "a file"} bigger than ${size(maxSize)} (not what its listing ` +
          "said): transfer stopped"
        : sshError(this.server, result.tail, result.code);
      throw new PullFailed(why);
    }
    const stats = /Total bytes received: ([\d,.]+)/.exec(result.output)?.[1];
    const named = new Set(files);
    const over = result.output.split("\n").map((line) => /^(.+) is over max-size$/.exec(line)?.[1])
      .filter((rel): rel is string => rel !== undefined && named.has(rel));
    return { received: stats ? Number(stats.replace(/[,.]/g, "")) : 0, over: new Set(over) };
  }

  /**
   * Pulls `files` (listed under `remote`) into `local` in as few rsyncs as {@link nextBatch} allows,
   * measuring the real sizes after each: a file over its transfer's limit (where RLIMIT_FSIZE could
   * not stop it) or found by rsync to be bigger than listed is removed and named in `out.limits`.
   * So, whatever the listing says, no file is over `cap` and all are within `budget`. Returns the
   * files pulled; the other `files` are not left in the mirror. Throws PullFailed when a transfer fails.
   */
  private async transfer(
    remote: string,
    local: string,
    files: readonly ListedFile[],
    limits: { cap: number; budget: number; what: string },
    out: { bytes: number; limits: string[] },
  ): Promise<Set<string>> {
    await Deno.mkdir(local, { recursive: true, mode: 0o700 });
    const mirrored = await measure(local, files.map((f) => f.rel));
    let pending = [...files].sort((a, b) => a.size - b.size || a.rel.localeCompare(b.rel));
    const taken = new Set<string>();
    try {
      while (pending.length) {
        const batch = nextBatch(pending, limits.cap, limits.budget, mirrored);
        if (!batch) {
          out.limits.push(
            `${pending.length} ${limits.what} not pulled: the ${size(limits.budget)} the mirror may hold of them ` +
              "are used up (the server's files are bigger than its listing said)",
          );
          break;
        }
        const rels = pending.slice(0, batch.count).map((f) => f.rel);
        const listed = new Map(pending.slice(0, batch.count).map((f) => [f.rel, f.size]));
        pending = pending.slice(batch.count);
        let over = new Set<string>();
        let failed: unknown;
        try {
          const result = await this.rsync(remote, local, rels, batch.maxSize);
          out.bytes += result.received;
          over = result.over;
        } catch (error) {
          failed = error;
        }
        const real = await measure(local, rels);
        for (const rel of rels) {
          const bytes = real.get(rel);
          const said = `its listing said ${size(listed.get(rel)!)}`;
          if (over.has(rel)) {
            out.limits.push(`${rel} is bigger than the ${size(batch.maxSize)} it could have (${said}): not pulled`);
          } else if (bytes !== undefined && bytes > batch.maxSize) {
            out.limits.push(
              `${rel} came as ${size(bytes)}, over the ${size(batch.maxSize)} it could have (${said}): removed`,
            );
          } else if (bytes !== undefined && failed === undefined) {
            mirrored.set(rel, bytes);
            taken.add(rel);
            continue;
          }
          mirrored.delete(rel);
          await Deno.remove(join(local, rel)).catch(() => {});
        }
        if (failed !== undefined) {
          const why = failed instanceof Error ? failed.message : String(failed);
          if (/not what its listing said/.test(why)) {
            out.limits.push(`${limits.what}: ${why}: what came of this transfer is removed`);
          }
          throw failed;
        }
      }
    } finally {
      for (const file of files) if (!taken.has(file.rel)) await Deno.remove(join(local, file.rel)).catch(() => {});
    }
    return taken;
  }

  async pull(): Promise<Pulled> {
    await Deno.mkdir(this.home.sockets, { recursive: true, mode: 0o700 });
    await Deno.mkdir(this.mirror, { recursive: true, mode: 0o700 });
    const initial = await this.listing(this.metrics);
    const before = initial.files;
    const plan = planPull(before);
    const out = { bytes: 0, limits: plan.limits };
    const listed = (kind: ListedFile["kind"], rels: string[]) =>
      [...new Set(rels)].map((rel) => before.find((f) => f.kind === kind && f.rel === rel)!);
    // status.json files and certificates.json in their own transfers, each with its own limit.
    const statusDir = join(this.mirror, "status");
    await Deno.mkdir(statusDir, { recursive: true, mode: 0o700 });
    await keepOnly(statusDir, new Set(plan.status));
    const apps = plan.status.filter((rel) => rel !== CERTIFICATES_FILE);
    const took = await this.transfer("/opt/deployments/", statusDir, listed("status", apps), {
      cap: MAX_STATUS_BYTES,
      budget: MAX_APPS * MAX_STATUS_BYTES,
      what: "status.json file(s)",
    }, out);
    if (plan.status.includes(CERTIFICATES_FILE)) {
      const tls = await this.transfer("/opt/deployments/", statusDir, listed("status", [CERTIFICATES_FILE]), {
        cap: MAX_CERTIFICATES_FILE_BYTES,
        budget: MAX_CERTIFICATES_FILE_BYTES,
        what: "certificates file",
      }, out);
      for (const rel of tls) took.add(rel);
    }
    await keepOnly(statusDir, took);
    const statuses = new Map<string, string>();
    for (const rel of apps.filter((rel) => took.has(rel))) {
      statuses.set(STATUS_FILE.exec(rel)![1], join(statusDir, rel));
    }
    const certificates = join(statusDir, CERTIFICATES_FILE);
    const tls = took.has(CERTIFICATES_FILE) ? { certificates } : {};
    const logs = new Map<string, SourceFile>();
    const metrics = initial.metrics === undefined ? {} : { metrics: parseMetrics(initial.metrics) };
    const pulled = { statuses, ...tls, logs, limits: out.limits, ...metrics };
    const logDir = join(this.mirror, "logs");
    let logsTaken = new Set<string>();
    try {
      await Deno.mkdir(logDir, { recursive: true, mode: 0o700 });
      await keepOnly(logDir, new Set(plan.logs));
      logsTaken = await this.transfer("/var/log/deployments/", logDir, listed("log", plan.logs), {
        cap: MAX_LOG_FILE_BYTES,
        budget: MAX_MIRROR_BYTES,
        what: "log file(s)",
      }, out);
      const inodes = (files: ListedFile[]) => new Map(files.filter((f) => f.kind === "log").map((f) => [f.rel, f.ino]));
      const [first, after] = [inodes(before), inodes((await this.listing()).files)];
      for (const rel of plan.logs.filter((rel) => logsTaken.has(rel))) {
        // A file replaced while rsync ran may hold either version: it waits for the next cycle.
        if (first.get(rel) !== after.get(rel)) continue;
        logs.set(rel, { rel, path: join(logDir, rel), ino: after.get(rel)! });
      }
    } catch (error) {
      return { ...pulled, bytes: out.bytes, error: `logs: ${error instanceof Error ? error.message : error}` };
    } finally {
      await keepOnly(logDir, logsTaken);
    }
    return { ...pulled, bytes: out.bytes };
  }

  /** Ends the master connection (`ssh -O exit`). */
  async close(): Promise<void> {
    await new ProcessRunner().run({
      argv: [...this.sshArgv(), "-O", "exit", "--", this.server.host],
      quiet: true,
      allowFailure: true,
      timeoutMs: 10_000,
    });
  }
}

/**
 * What a listing command's `result` gives: its files, and with `metrics` what the metrics script
 * printed. The metrics' mark is printed only once the listing worked: whatever happened after it
 * (a df that hung until the timeout, the connection lost), the listing stands and the metrics are
 * what came. Throws PullFailed when the listing itself failed or was too big.
 */
export function listingOf(
  server: FleetServer,
  result: CmdResult,
  metrics: boolean,
): { files: ListedFile[]; metrics?: string } {
  if (result.overflow) {
    throw new PullFailed(`its file listing is over ${size(MAX_LISTING_BYTES)}: too many files to pull`);
  }
  const { listing, metrics: part } = metrics ? splitMetrics(result.output) : { listing: result.output };
  if (result.code !== 0 && part === undefined) {
    const errors = result.tail.filter((line) => !/^[SL] \d+ \d+ /.test(line));
    throw new PullFailed(sshError(server, errors, result.code));
  }
  return { files: parseListing(listing), ...(part === undefined ? {} : { metrics: part }) };
}

/**
 * Removes from `dir` (two levels: `<app>/<file>`) every file not in `keep` and every empty
 * directory, so the mirror holds what the last plan took and nothing more.
 */
async function keepOnly(dir: string, keep: ReadonlySet<string>): Promise<void> {
  for (const top of await Array.fromAsync(Deno.readDir(dir)).catch(() => [])) {
    const path = join(dir, top.name);
    if (!top.isDirectory) {
      if (!keep.has(top.name)) await Deno.remove(path, { recursive: true });
      continue;
    }
    let left = 0;
    for (const entry of await Array.fromAsync(Deno.readDir(path))) {
      if (entry.isFile && keep.has(`${top.name}/${entry.name}`)) left++;
      else await Deno.remove(join(path, entry.name), { recursive: true });
    }
    if (!left) await Deno.remove(path, { recursive: true });
  }
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
