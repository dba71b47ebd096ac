/**
 * The git a rollout runs: in the current repository (the ref resolved to a commit once, its
 * deploy.yml read from that commit, the remotes), and against each server (`git ls-remote` of
 * the deploy branch, `git push <url> <commit>:refs/heads/<branch>`). Every command is an argv
 * array run in a session of its own (setsid, through the runner's timeout), so a Ctrl-C on the
 * terminal never reaches a push: a push that started finishes. A fleet server is reached with the
 * fleet's ssh options (../fleet/ssh_source.ts: its known_hosts, strict host keys, its identity,
 * its master connection), given to git as GIT_SSH_COMMAND with every word shell-quoted.
 * @module
 */
import { parseConfig } from "../config/load.ts";
import { deployFileSchema } from "../config/schema.ts";
import { UsageError } from "../errors.ts";
import type { FleetServer } from "../fleet/config.ts";
import { SshSource } from "../fleet/ssh_source.ts";
import { type CmdResult, ProcessRunner } from "../runner.ts";
import { forTerminal } from "../terminal.ts";
import { noAliases, type Resolved, type Resolver, shellWord, type Target } from "./plan.ts";

/** A push or an ls-remote that has no answer after this long is killed. */
const PUSH_TIMEOUT_MS = 30 * 60_000;
const LS_REMOTE_TIMEOUT_MS = 60_000;
/** A push keeps this many of its last lines (each line still streams). */
const KEEP_LINES = 200;
/** The longest line of a push's output shown or kept. */
const MAX_LINE = 2000;

/** A line of a server's output, safe for a terminal and not too long. */
export function cleanLine(line: string): string {
  const safe = forTerminal(line, { oneLine: true }).trimEnd();
  return safe.length > MAX_LINE ? `${safe.slice(0, MAX_LINE)}…` : safe;
}

/** The current repository. */
export class LocalRepo {
  constructor(readonly cwd: string) {}

  private git(args: string[]): Promise<CmdResult> {
    return new ProcessRunner().run({
      argv: ["git", ...args],
      cwd: this.cwd,
      quiet: true,
      allowFailure: true,
      timeoutMs: 60_000,
    });
  }

  /** The commit `ref` names (resolved once: the rollout pushes that commit everywhere). */
  async resolve(ref: string): Promise<string> {
    const result = await this.git(["rev-parse", "--verify", "--quiet", "--end-of-options", `${ref}^{commit}`]);
    if (result.code === 0 && /^[0-9a-f]{40,64}$/.test(result.output.trim())) return result.output.trim();
    const inside = await this.git(["rev-parse", "--git-dir"]);
    if (inside.code !== 0) {
      throw new UsageError(`${this.cwd} is not in a git repository: run rollout in the app's repository`);
    }
    if ((await this.git(["rev-parse", "--verify", "--quiet", "HEAD"])).code !== 0) {
      throw new UsageError(`the repository in ${this.cwd} has no commit yet: nothing to deploy`, {
        suggestion: "commit the app with its deploy.yml first (deploy-paradigm init writes one)",
      });
    }
    throw new UsageError(`--ref ${ref} names no commit in this repository`, {
      suggestion: "give a branch, a tag or a commit (git log --oneline shows them)",
    });
  }

  /** How to name `ref` in the record: HEAD as the branch it is on (when it is on one). */
  async refName(ref: string): Promise<string> {
    if (ref !== "HEAD") return ref;
    const branch = await this.git(["symbolic-ref", "--short", "-q", "HEAD"]);
    return branch.code === 0 && branch.output.trim() ? branch.output.trim() : ref;
  }

  /** The deploy.yml of `commit`, checked: its `name` must be `app`; returns its deploy branch. */
  async deployBranch(commit: string, app: string): Promise<string> {
    const shown = await this.git(["show", `${commit}:deploy.yml`]);
    if (shown.code !== 0) {
      throw new UsageError(`commit ${commit.slice(0, 7)} has no deploy.yml: nothing there to deploy`, {
        suggestion: "write one with deploy-paradigm init, commit it, and run rollout again",
      });
    }
    const config = parseConfig(shown.output + "\n", deployFileSchema, "deploy.yml", `commit ${commit.slice(0, 7)}`);
    if (config.name !== app) {
      throw new UsageError(`the deploy.yml of commit ${commit.slice(0, 7)} is app "${config.name}", not "${app}"`, {
        suggestion: `run rollout in ${app}'s repository, or name the app: deploy-paradigm rollout ${config.name}`,
      });
    }
    return config.branch;
  }

  /** Whether `sha` is a commit of this repository. */
  async hasCommit(sha: string): Promise<boolean> {
    return (await this.git(["cat-file", "-e", "--end-of-options", `${sha}^{commit}`])).code === 0;
  }

  /** Whether `ancestor` is `commit` or behind it (a push of `commit` over it is a fast-forward). */
  async isAncestor(ancestor: string, commit: string): Promise<boolean> {
    return (await this.git(["merge-base", "--is-ancestor", "--end-of-options", ancestor, commit])).code === 0;
  }

  /** The remotes and their push URLs. */
  async remotes(): Promise<{ name: string; url: string }[]> {
    const result = await this.git(["remote", "-v"]);
    if (result.code !== 0) return [];
    return result.output.split("\n").flatMap((line) => {
      const match = /^(\S+)\t(.+) \(push\)$/.exec(line);
      return match ? [{ name: match[1], url: match[2] }] : [];
    });
  }
}

/**
 * Where ssh takes each host (`ssh -G [-p port] [-l user] host`: hostname, port, user), so an
 * alias of a fleet host is known as that host. A host ssh cannot resolve stays as it is.
 */
export async function resolveHosts(
  hosts: readonly { host: string; port?: number; user?: string }[],
): Promise<Resolver> {
  const keyOf = (h: { host: string; port?: number; user?: string }) => `${h.host}\0${h.port ?? ""}\0${h.user ?? ""}`;
  const known = new Map<string, Resolved>();
  await Promise.all(hosts.map(async (h) => {
    if (h.host.startsWith("-") || h.user?.startsWith("-") || known.has(keyOf(h))) return;
    known.set(keyOf(h), { host: h.host, port: h.port ?? 22, user: h.user });
    const result = await new ProcessRunner().run({
      argv: ["ssh", "-G", ...(h.port ? ["-p", String(h.port)] : []), ...(h.user ? ["-l", h.user] : []), "--", h.host],
      quiet: true,
      allowFailure: true,
      timeoutMs: 10_000,
      maxOutputBytes: 256 << 10,
    });
    if (result.code !== 0) return;
    const field = (name: string) => new RegExp(`^${name} (\\S+)$`, "m").exec(result.output)?.[1];
    const port = Number(field("port"));
    known.set(keyOf(h), {
      host: field("hostname") ?? h.host,
      port: Number.isInteger(port) && port > 0 ? port : h.port ?? 22,
      user: field("user") ?? h.user,
    });
  }));
  return (host, port, user) => known.get(keyOf({ host, port, user })) ?? noAliases(host, port, user);
}

/** A commit id as ls-remote must answer it (sha-1 or sha-256); anything else is not taken. */
const SHA = /^[0-9a-f]{40}([0-9a-f]{24})?$/;

/** What a push or ls-remote needs of the fleet's home. */
export interface FleetSsh {
  knownHosts: string;
  sockets: string;
}

/** The environment of git against `target`: GIT_SSH_COMMAND from the fleet for a fleet server, else the user's own. */
export function gitEnv(target: Target, fleet: FleetSsh): Record<string, string> {
  const env: Record<string, string> = { GIT_TERMINAL_PROMPT: "0", LC_ALL: "C" };
  if (target.fleet && target.fleet.host !== "local") {
    const source = new SshSource(target.fleet as FleetServer, { mirror: "", ...fleet });
    env.GIT_SSH_COMMAND = source.sshArgv().map(shellWord).join(" ");
  } else {
    // The runner leaves out GIT_* (a hook's); the user's own ssh command for git is theirs to keep.
    const own = Deno.env.get("GIT_SSH_COMMAND") ?? Deno.env.get("GIT_SSH");
    if (own) env[Deno.env.get("GIT_SSH_COMMAND") ? "GIT_SSH_COMMAND" : "GIT_SSH"] = own;
  }
  return env;
}

/** Git against the servers. */
export class RemoteGit {
  constructor(private readonly cwd: string, private readonly fleet: FleetSsh) {}

  /** The commit the server's `branch` names (null: no such branch yet), or throws with git's reason. */
  async head(target: Target, branch: string): Promise<string | null> {
    const result = await new ProcessRunner().run({
      argv: ["git", "ls-remote", "--end-of-options", target.url, `refs/heads/${branch}`],
      cwd: this.cwd,
      env: gitEnv(target, this.fleet),
      quiet: true,
      allowFailure: true,
      timeoutMs: LS_REMOTE_TIMEOUT_MS,
      maxOutputBytes: 64 << 10,
    });
    if (result.code !== 0) {
      const text = result.tail.filter((l) => l.trim()).join(" ").trim() || `exit code ${result.code}`;
      throw new Error(
        /Host key verification failed|No .* host key is known|REMOTE HOST IDENTIFICATION HAS CHANGED/i.test(text) &&
          target.fleet
          ? `its host key is not trusted (${text}); check it and run \`deploy-paradigm fleet trust ${target.name}\``
          : text,
      );
    }
    const line = result.output.split("\n").find((l) => l.endsWith(`\trefs/heads/${branch}`));
    if (!line) return null;
    const sha = line.split("\t")[0];
    if (!SHA.test(sha)) {
      throw new Error(`it answered ${JSON.stringify(sha.slice(0, 80))} for ${branch}, not a commit id`);
    }
    return sha;
  }

  /**
   * `git push <url> <refspec>`, each line of its output (made safe for a terminal, cut at
   * {@link MAX_LINE} characters) to `onLine`; its exit code and last {@link KEEP_LINES} lines
   * (a server may be compromised: its output is not kept whole for the half hour a push may take).
   */
  push(target: Target, refspec: string, onLine: (line: string) => void): Promise<CmdResult> {
    return new ProcessRunner((line) => onLine(cleanLine(line))).run({
      keepLines: KEEP_LINES,
      argv: ["git", "push", "--end-of-options", target.url, refspec],
      cwd: this.cwd,
      env: gitEnv(target, this.fleet),
      allowFailure: true,
      timeoutMs: PUSH_TIMEOUT_MS,
    });
  }
}
