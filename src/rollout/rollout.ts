/**
 * `deploy-paradigm rollout <app>`: one commit to every server that runs the app, from the
 * laptop. Everything is checked before anything changes (the ref, the commit's deploy.yml, the
 * fleet config, the servers picked, each server's branch read over ssh: an unreachable one stops
 * it here, exit 1, with no record; a push that would not be a fast-forward, without `--force`;
 * with `--on-failure rollback`, each commit to go back to present here); then the record is
 * opened in the fleet database (refused while another rollout of the app runs) and the waves run
 * (./run.ts). Whatever ends the run, the record is finished. Exit 0 only when every server got
 * the commit (a server whose branch names it while the fleet saw it serve another version is
 * refused before anything is pushed: a push would change nothing there).
 * @module
 */
import { hostname } from "node:os";
import { exists } from "../fsutil.ts";
import { DeployParadigmError, UsageError } from "../errors.ts";
import { fleetPaths, loadFleetConfig } from "../fleet/config.ts";
import { FleetStore } from "../fleet/store.ts";
import { appPaths } from "../paths.ts";
import { forTerminal } from "../terminal.ts";
import { LocalRepo, RemoteGit, resolveHosts } from "./git.ts";
import { parseSshUrl, pickTargets, type RolloutOptions, rolloutTargets, type Target, waves } from "./plan.ts";
import { claimApp, RolloutRecord } from "./record.ts";
import { cleanMessage, names, runWaves, short } from "./run.ts";

/** Where a rollout runs: the repository's directory and how it asks (on a terminal). */
export interface RolloutIo {
  cwd: string;
  print: (line: string) => void;
  ask: (question: string, stop: AbortSignal) => Promise<boolean>;
  stop: AbortSignal;
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;

/** Runs a rollout; returns the exit code. */
export async function rollout(options: RolloutOptions, io: RolloutIo): Promise<number> {
  if (options.yes && !options.confirm) io.print("note: --yes only matters with --confirm; nothing is asked without it");
  const repo = new LocalRepo(io.cwd);
  const commit = await repo.resolve(options.ref);
  const branch = await repo.deployBranch(commit, options.app);
  const paths = fleetPaths();
  const config = await loadFleetConfig(paths.config);
  const known = await fleetRows(paths.db, options.app);
  const remotes = await repo.remotes();
  const resolve = await resolveHosts([
    ...config.servers.filter((s) => s.host !== "local").map((s) => ({ host: s.host, port: s.port })),
    ...remotes.flatMap((r) => parseSshUrl(r.url) ?? []),
  ]);
  const targets = rolloutTargets(
    options.app,
    config.servers,
    new Set(known.keys()),
    remotes,
    appPaths(options.app).repo,
    resolve,
  );
  const picked = pickTargets(targets, options, remotes);
  const plan = waves(picked, options.parallel);

  await Deno.mkdir(paths.sockets, { recursive: true, mode: 0o700 });
  const git = new RemoteGit(io.cwd, { knownHosts: paths.knownHosts, sockets: paths.sockets });
  io.print(`reading ${branch} on ${plural(picked.length, "server")}…`);
  const before = await readHeads(git, picked, branch);
  await preflight(repo, options, picked, before, commit, branch, known, io);
  const ref = await repo.refName(options.ref);
  const named = ref === short(commit) || commit.startsWith(ref) ? "" : ` (${ref})`;
  io.print(
    `rollout ${options.app} ${short(commit)}${named} to ${plural(picked.length, "server")}, branch ${branch}: ${
      plan.map((wave) => wave.map((t) => t.name).join(" + ")).join(" → ")
    }; on failure: ${options.onFailure}${options.force ? "; forced" : ""}`,
  );

  if (io.stop.aborted) {
    io.print("interrupted before anything was pushed");
    return 1;
  }
  const store = await FleetStore.open(paths.db);
  try {
    const host = hostname();
    const claim = () => {
      const busy = claimApp(store, options.app, Date.now(), host, pidAlive);
      if (busy) {
        throw new DeployParadigmError(
          `rollout #${busy.id} of ${options.app} is running (pid ${busy.pid}${
            busy.hostname && busy.hostname !== host ? ` on ${busy.hostname}` : ""
          }); nothing was pushed`,
          { suggestion: "wait for it to end (or stop it with Ctrl-C there), then run this one again" },
        );
      }
    };
    const record = RolloutRecord.start(store, {
      app: options.app,
      ref,
      commit,
      startedAt: Date.now(),
      options: {
        servers: picked.map((t) => t.name),
        all: !options.servers,
        parallel: options.parallel,
        onFailure: options.onFailure,
        confirm: options.confirm,
        branch,
        ...(options.force ? { force: true } : {}),
        pid: Deno.pid,
        hostname: host,
      },
      servers: plan.flatMap((wave, i) =>
        wave.map((t) => ({ name: t.name, wave: i + 1, versionBefore: short(before.get(t.name)) }))
      ),
    }, claim);
    let result;
    try {
      result = await runWaves({
        app: options.app,
        commit,
        branch,
        waves: plan,
        before,
        parallel: options.parallel,
        onFailure: options.onFailure,
        force: options.force,
        ask: options.confirm && !options.yes ? (question) => io.ask(question, io.stop) : undefined,
        git,
        record,
        print: (line) => io.print(forTerminal(line, { oneLine: true }).trimEnd()),
        now: Date.now,
        stop: io.stop,
      });
    } catch (error) {
      // Whatever went wrong, the record does not stay `running`.
      const lost = record.lostTrack(Date.now());
      const why = cleanMessage(error instanceof Error ? error.message : String(error));
      record.finish(
        io.stop.aborted ? "interrupted" : "failed",
        Date.now(),
        `the rollout stopped on an error: ${why}` +
          (lost.length ? `; the laptop lost track of ${names(lost)}: check ${lost.length === 1 ? "it" : "them"}` : ""),
      );
      throw error;
    }
    record.finish(result.outcome, Date.now(), result.message);
    for (const target of picked) {
      const row = record.row(target.name)!;
      const took = row.durationMs == null ? "" : ` in ${(row.durationMs / 1000).toFixed(1)}s`;
      io.print(
        `  ${target.name}: ${row.outcome} ${row.versionBefore ?? "-"} → ${row.versionAfter ?? "-"}${took}` +
          (row.message ? ` (${forTerminal(row.message, { oneLine: true })})` : ""),
      );
    }
    const said = result.message ? `: ${forTerminal(result.message, { oneLine: true })}` : "";
    io.print(`rollout ${record.id}: ${result.outcome}${said}`);
    return result.outcome === "success" ? 0 : 1;
  } finally {
    store.close();
  }
}

/** Whether a process of this id runs on this host. */
function pidAlive(pid: number): boolean {
  try {
    Deno.kill(pid, "SIGCONT"); // harmless; throws when there is no such process (or not ours: then it runs)
    return true;
  } catch (error) {
    return error instanceof Deno.errors.PermissionDenied;
  }
}

/**
 * The fleet servers the database says run `app`, with the version it saw (none when there is no
 * database yet); null when a rollout changed that server's version after the fleet last saw it
 * (the fleet's view is older: "run the same rollout again" must not find it diverged).
 */
async function fleetRows(db: string, app: string): Promise<Map<string, string | null>> {
  if (!(await exists(db))) return new Map();
  const store = await FleetStore.open(db);
  try {
    const rows = store.sql(
      `SELECT a.server, CASE WHEN EXISTS (SELECT 1 FROM rollout_servers s JOIN rollouts r ON r.id = s.rollout
         WHERE r.app = a.app AND s.server = a.server AND s.started_at > a.fetched_at
           AND s.version_after IS NOT s.version_before) THEN NULL ELSE a.version END AS version
       FROM apps a WHERE a.app = ?`,
    ).all(app) as {
      server: string;
      version: string | null;
    }[];
    return new Map(rows.map((row) => [row.server, row.version]));
  } finally {
    store.close();
  }
}

/** Each target's branch before anything changes; every server must answer (else nothing is done). */
async function readHeads(git: RemoteGit, targets: Target[], branch: string): Promise<Map<string, string | null>> {
  const heads = await Promise.all(
    targets.map((t) => git.head(t, branch).then((head) => ({ head }), (error) => ({ error: String(error.message) }))),
  );
  const failed = heads.flatMap((h, i) =>
    "error" in h ? [`${targets[i].name} (${targets[i].url}): ${cleanMessage(h.error)}`] : []
  );
  if (failed.length) {
    throw new DeployParadigmError(
      `cannot read ${branch} on ${failed.length === 1 ? "a server" : `${failed.length} servers`}; nothing was ` +
        `pushed:\n  ${failed.map((line) => forTerminal(line, { oneLine: true })).join("\n  ")}`,
      { suggestion: "check that the servers are up and reachable over ssh, or leave them out with --servers" },
    );
  }
  return new Map(heads.map((h, i) => [targets[i].name, "head" in h ? h.head : null]));
}

/**
 * The checks on the branches read, before anything is pushed: each push a fast-forward (else
 * `--force`), each commit to roll back to here (with `--on-failure rollback`), no server whose
 * branch is at the commit while the fleet database saw it serve another version (its branch did
 * not follow a rollback by hand: `deploy-paradigm rollback` moves it, unless it had moved since;
 * the push would change nothing there, so the rollout could not deploy the commit to it).
 */
export async function preflight(
  repo: LocalRepo,
  options: RolloutOptions,
  targets: Target[],
  before: ReadonlyMap<string, string | null>,
  commit: string,
  branch: string,
  known: ReadonlyMap<string, string | null>,
  io: RolloutIo,
): Promise<void> {
  const behind: string[] = [];
  const unchecked: string[] = [];
  const missing: string[] = [];
  const diverged: string[] = [];
  for (const target of targets) {
    const tip = before.get(target.name) ?? null;
    if (tip === null || tip === commit) {
      const seen = known.get(target.name);
      if (tip === commit && seen && target.fleet && seen !== short(commit)) diverged.push(`${target.name} (${seen})`);
      continue;
    }
    const here = await repo.hasCommit(tip);
    if (!here) unchecked.push(target.name);
    else if (!(await repo.isAncestor(tip, commit))) behind.push(`${target.name} (at ${short(tip)})`);
    if (!here && options.onFailure === "rollback") missing.push(`${target.name} (${tip})`);
  }
  if (behind.length && !options.force) {
    throw new UsageError(
      `${short(commit)} is not ahead of ${branch} on ${names(behind)}: the push would not be a fast-forward; ` +
        `nothing was pushed`,
      {
        suggestion: `to replace what is there on purpose (e.g. after a rollout that was NOT rolled back), add ` +
          `--force; else deploy a commit that contains theirs`,
      },
    );
  }
  if (missing.length) {
    throw new UsageError(
      `the commit to roll back to is not in this repository for ${names(missing)}: a rollback could not push ` +
        `it; nothing was pushed`,
      { suggestion: `git fetch it (e.g. git fetch <remote>), or run with --on-failure stop` },
    );
  }
  if (diverged.length) throw divergedError(options.app, diverged, commit, branch);
  if (unchecked.length) {
    io.print(
      `note: ${names(unchecked)} ${unchecked.length === 1 ? "has" : "have"} a commit on ${branch} unknown here: ` +
        `whether ${short(commit)} is ahead of it cannot be checked`,
    );
  }
}

/** The refusal for servers whose branch names the commit while the fleet saw them serve another version. */
function divergedError(app: string, diverged: string[], commit: string, branch: string): DeployParadigmError {
  const one = diverged.length === 1;
  return new DeployParadigmError(
    `${branch} already names ${short(commit)} on ${names(diverged)}, but the fleet saw ${one ? "it" : "them"} ` +
      `serve the version in brackets (a rollback by hand the branch did not follow?): a push changes nothing ` +
      `there, so ${short(commit)} could not be deployed to ${one ? "it" : "them"}; nothing was pushed`,
    {
      suggestion: `on ${one ? "that server" : "each"}, deploy-paradigm releases ${app} then deploy-paradigm rollback ` +
        `${app} --to <the release of ${short(commit)}>; or roll out a newer commit; or leave ` +
        `${one ? "it" : "them"} out with --servers; if the fleet saw ${one ? "it" : "them"} before a deploy by ` +
        `hand, run deploy-paradigm fleet collect --once first`,
    },
  );
}
