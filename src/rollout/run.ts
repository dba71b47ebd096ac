/**
 * A rollout's run, wave after wave: each server of a wave gets `git push <url>
 * <commit>:refs/heads/<branch>` (its usual health-gated deploy; the server moves the branch only
 * after a healthy one), its outcome from the push's exit status, the server's `✓ deployed` line
 * and the branch read back. It stops at the first failure (the wave's other pushes finish), and
 * with `--on-failure rollback` pushes each server it switched back to the commit it had before (a
 * forced push of that commit: the same health-gated deploy, with no more right than the push
 * itself, and the server's branch names what serves again; back on the same proof as a deploy).
 * `--confirm` asks before each wave. A stop (Ctrl-C, SIGTERM) lets the running pushes finish and
 * starts no new one. Every change goes to the record as it happens.
 * @module
 */
import type { CmdResult } from "../runner.ts";
import { type OnFailure, pushFailure, type Target } from "./plan.ts";
import type { RolloutOutcome, RolloutRecord } from "./record.ts";

/** Git against the servers (./git.ts). */
export interface ServerGit {
  head(target: Target, branch: string): Promise<string | null>;
  push(target: Target, refspec: string, onLine: (line: string) => void): Promise<CmdResult>;
}

/** What a run needs. */
export interface RunInput {
  app: string;
  commit: string;
  branch: string;
  waves: Target[][];
  /** Each server's commit before the rollout (null: no branch yet). */
  before: ReadonlyMap<string, string | null>;
  parallel: number;
  onFailure: OnFailure;
  /** Push the commit as a forced update (`--force`: over a branch it is not ahead of). */
  force?: boolean;
  /** Ask before each wave (false: go on). */
  ask?: (question: string) => Promise<boolean>;
  git: ServerGit;
  record: RolloutRecord;
  print: (line: string) => void;
  now: () => number;
  /** Waits between the reads of a branch after a failed push (the tries: {@link REREADS}). */
  sleep?: (ms: number) => Promise<void>;
  /** Aborts on Ctrl-C/SIGTERM/SIGHUP: no new push starts. */
  stop: AbortSignal;
}

/** How a run ended. */
export interface RunResult {
  outcome: Exclude<RolloutOutcome, "running">;
  message?: string;
}

/** After a failed push, the branch is read again after these waits (~20 s in all) until it answers. */
export const REREADS = [0, 2000, 6000, 12000];

/** The 7-character version of a commit (as status.json's `version`). */
export const short = (commit: string | null | undefined) => commit ? commit.slice(0, 7) : null;

/** `a`, `a and b`, `a, b and c`. */
export const names = (list: readonly string[]) =>
  list.length < 2 ? list.join("") : `${list.slice(0, -1).join(", ")} and ${list[list.length - 1]}`;

/** A server's branch after its push: its commit, null (no branch), or undefined (it could not be read). */
type After = { head: string | null; stored?: boolean } | { error: string };

/** Runs the waves; returns how the rollout ended (the caller finishes the record). */
export async function runWaves(input: RunInput): Promise<RunResult> {
  const { waves, record, print, stop } = input;
  const failures: string[] = [];
  const after = new Map<string, After>();
  let declined = false;
  for (const [i, wave] of waves.entries()) {
    if (stop.aborted) break;
    const label = `wave ${i + 1}/${waves.length} (${wave.map((t) => t.name).join(", ")})`;
    if (input.ask && !(await input.ask(`${label}: deploy ${short(input.commit)}? [y/N] `))) {
      if (!stop.aborted) declined = true;
      break;
    }
    if (stop.aborted) break;
    print(`→ ${label}`);
    const results = await Promise.all(wave.map((target) => deployOne(input, target, after)));
    results.forEach((failure, j) => failure && failures.push(`${wave[j].name}: ${failure}`));
    if (failures.length) break;
  }
  for (const target of waves.flat()) {
    if (record.row(target.name)?.outcome !== "pending") continue;
    record.server(target.name, {
      outcome: stop.aborted ? "interrupted" : "skipped",
      versionAfter: short(input.before.get(target.name)),
      message: stop.aborted
        ? "not started: the rollout was interrupted"
        : declined
        ? "not started: the rollout was stopped at the confirmation"
        : "not started: an earlier server failed",
    });
  }
  const all = waves.flat();
  const unknown = all.filter((t) => "error" in (after.get(t.name) ?? { head: null })).map((t) => t.name);
  const stateUnknown = unknown.length ? `; state unknown on ${names(unknown)}: check ${input.branch} there` : "";
  // The servers that switched: their branch names the commit after the push, whatever the push said.
  const switched = all.filter((t) => {
    const a = after.get(t.name);
    return a && "head" in a && !a.stored && a.head === input.commit && input.before.get(t.name) !== input.commit;
  });
  if (all.every((t) => record.row(t.name)?.outcome === "success")) return { outcome: "success" };
  if (stop.aborted && !failures.length) {
    const left = all.filter((t) => record.row(t.name)?.outcome === "interrupted").map((t) => t.name);
    return {
      outcome: "interrupted",
      message: `stopped by a signal (Ctrl-C, SIGTERM or SIGHUP); not started: ${names(left)}; run the same ` +
        `rollout again to finish (the servers already at ${short(input.commit)} are left as they are)`,
    };
  }
  if (declined) return { outcome: "stopped", message: "stopped at the confirmation" };
  const failed = failures.join("; ");
  if (input.onFailure === "stop") {
    const stay = switched.length
      ? `--on-failure stop: ${names(switched.map((t) => t.name))} stay on ${short(input.commit)}`
      : "no server had switched";
    for (const t of switched) note(record, t.name, "not rolled back: --on-failure stop");
    return { outcome: "failed", message: `${failed}; ${stay}${stateUnknown}` };
  }
  const back = await rollBack(input, switched);
  // rolled_back: some servers had switched and all of them went back; nothing switched is a plain failure.
  const outcome = back.ok && switched.length && !unknown.length ? "rolled_back" : "failed";
  return { outcome, message: `${failed}; ${back.message}${stateUnknown}` };
}

/** Adds a note to a server's message. */
function note(record: RolloutRecord, name: string, text: string): void {
  const message = record.row(name)?.message;
  record.server(name, { message: message ? `${message}; ${text}` : text });
}

/** Deploys the commit to one server; returns why it failed, or undefined. */
async function deployOne(input: RunInput, target: Target, afters: Map<string, After>): Promise<string | undefined> {
  const { record, print, commit, branch, app } = input;
  const startedAt = input.now();
  const before = input.before.get(target.name);
  record.server(target.name, { outcome: "deploying", startedAt, message: null });
  const refspec = `${input.force ? "+" : ""}${commit}:refs/heads/${branch}`;
  print(`[${target.name}] git push ${target.url} ${input.force ? "+" : ""}${short(commit)}:refs/heads/${branch}`);
  const { pushed, deployed, onlyDeploys } = await pushWatched(input, target, refspec, "");
  const after = await readAfter(input, target, pushed.code === 0 ? 1 : REREADS.length);
  afters.set(target.name, onlyDeploys !== undefined && "head" in after ? { ...after, stored: true } : after);
  const durationMs = input.now() - startedAt;
  const head = "head" in after ? after.head : undefined;
  const unknown = "error" in after ? `state unknown: ${branch} could not be read after the push (${after.error})` : "";
  let failure: string | undefined;
  if (onlyDeploys !== undefined) {
    failure = nothingDeployed(target, onlyDeploys, branch);
  } else if (pushed.code !== 0) {
    const reason = cleanMessage(pushFailure(pushed.tail, pushed.code));
    failure = head === commit && before !== commit
      ? `${reason}; the connection was lost after it deployed (${branch} names ${short(commit)} there)`
      : unknown
      ? `${reason}; ${unknown}`
      : reason;
  } else if (unknown) {
    failure = unknown;
  } else if (head !== commit) {
    failure = `the push ended well but ${branch} names ${short(head) ?? "nothing"} on the server`;
  } else if (!deployed && before !== commit) {
    failure = neverSaid(app, commit);
  }
  record.server(target.name, {
    outcome: failure ? "failed" : "success",
    durationMs,
    versionAfter: head === undefined ? null : short(head),
    message: failure ?? (before === commit ? "already at this commit" : null),
  });
  print(`[${target.name}] ${failure ? `✗ failed: ${failure}` : `✓ ${short(commit)}`} (${seconds(durationMs)})`);
  return failure;
}

/** A push's result, with what the server said of it: the deploy of the commit, or only stored (its branch). */
interface Watched {
  pushed: CmdResult;
  deployed: boolean;
  onlyDeploys?: string;
}

/**
 * Pushes `refspec` (its commit: before the colon, after a `+`) and watches the server's lines for
 * "✓ deployed <app> <short>" and "<branch> stored; only X deploys"; each line printed after `mark`.
 */
async function pushWatched(input: RunInput, target: Target, refspec: string, mark: string): Promise<Watched> {
  const deployedMark = `✓ deployed ${input.app} ${short(refspec.replace(/^\+/, "").split(":")[0])}`;
  const watched: Omit<Watched, "pushed"> = { deployed: false };
  const pushed = await input.git.push(target, refspec, (line) => {
    if (line.includes(deployedMark)) watched.deployed = true;
    const stored = /(refs\/heads\/\S+) stored; only (\S+) deploys/.exec(line);
    if (stored?.[1] === `refs/heads/${input.branch}`) watched.onlyDeploys ??= stored[2];
    input.print(`[${target.name}] ${mark}${line}`);
  });
  return { pushed, ...watched };
}

/** Why a push that the server only stored failed. */
const nothingDeployed = (target: Target, onlyDeploys: string, branch: string) =>
  `nothing deployed: ${target.name} deploys ${onlyDeploys}, the commit's deploy.yml says ${branch}`;

/** Why a push that ended well without the server's "✓ deployed" line failed. */
const neverSaid = (app: string, commit: string) =>
  `the push ended well but the server never said "✓ deployed ${app} ${short(commit)}"`;

/** The server's branch after a push, read up to `tries` times (a server that dropped the connection may be busy). */
async function readAfter(input: RunInput, target: Target, tries: number): Promise<After> {
  let last: After = { error: "not read" };
  for (let i = 0; i < tries; i++) {
    if (REREADS[i]) await (input.sleep ?? delay)(REREADS[i]);
    last = await input.git.head(target, input.branch).then(
      (head) => ({ head }),
      (error) => ({ error: cleanMessage(String(error?.message ?? error)) }),
    );
    if ("head" in last) return last;
  }
  return last;
}

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** A message from git or ssh without its noise: ssh's mux chatter, `Error: ` prefixes. */
export function cleanMessage(text: string): string {
  return text.split("\n").filter((line) => !/mux_client_request_session|^\s*$/.test(line))
    .map((line) => line.replace(/^(?:remote:\s*)?(?:error|Error|fatal): /, "").trim()).join(" ").trim() || text.trim();
}

/** Pushes each switched server back to its commit before; `ok` when all went back. */
async function rollBack(input: RunInput, switched: Target[]): Promise<{ ok: boolean; message: string }> {
  const { record, print, branch, stop } = input;
  if (!switched.length) return { ok: true, message: "no server had switched: nothing to roll back" };
  print(`↩ rolling back ${names(switched.map((t) => t.name))}`);
  const back: string[] = [];
  const left: string[] = [];
  const cancelled: string[] = [];
  for (let i = 0; i < switched.length; i += input.parallel) {
    await Promise.all(
      switched.slice(i, i + input.parallel).map(async (target) => {
        const before = input.before.get(target.name) ?? null;
        if (stop.aborted) cancelled.push(target.name);
        const why = stop.aborted
          ? "the rollback was cancelled (Ctrl-C) before it"
          : before === null
          ? `no version before to go back to (${branch} did not exist)`
          : await pushBack(input, target, before);
        if (why === undefined) return back.push(target.name);
        left.push(target.name);
        note(record, target.name, `not rolled back: ${why}`);
        print(`[${target.name}] ✗ not rolled back: ${why}`);
      }),
    );
  }
  const serves = (list: string[]) => `${names(list)} still serve${list.length === 1 ? "s" : ""} ${short(input.commit)}`;
  const message = [
    back.length ? `rolled back ${names(back)}` : "",
    cancelled.length
      ? `the rollback was cancelled: ${serves(left)}`
      : left.length
      ? `NOT rolled back: ${serves(left)}`
      : "",
    ...left.flatMap((name) => {
      const before = input.before.get(name);
      return before
        ? [`to put ${name} back: deploy-paradigm rollout ${input.app} --servers ${name} --ref ${before} --force`]
        : [];
    }),
  ].filter(Boolean).join("; ");
  return { ok: left.length === 0, message };
}

/**
 * Pushes `before` back to a server; returns why that failed, or undefined. Back only as deployOne
 * counts a deploy: the push ended well, the branch names `before` and the server said it deployed it.
 */
async function pushBack(input: RunInput, target: Target, before: string): Promise<string | undefined> {
  const startedAt = input.now();
  const { pushed, deployed, onlyDeploys } = await pushWatched(
    input,
    target,
    `+${before}:refs/heads/${input.branch}`,
    "↩ ",
  );
  const head = await input.git.head(target, input.branch).catch(() => undefined);
  if (onlyDeploys !== undefined) return nothingDeployed(target, onlyDeploys, input.branch);
  if (pushed.code !== 0) return cleanMessage(pushFailure(pushed.tail, pushed.code));
  if (head !== before) return `${input.branch} names ${short(head) ?? "something unknown"} after the push`;
  if (!deployed) return neverSaid(input.app, before);
  const row = input.record.row(target.name);
  input.record.server(target.name, {
    outcome: "rolled_back",
    versionAfter: short(before),
    message: `${row?.message ? `${row.message}; ` : ""}deployed ${short(input.commit)} in ${
      seconds(row?.durationMs ?? 0)
    }, then rolled back to ${short(before)} in ${seconds(input.now() - startedAt)}`,
  });
  input.print(`[${target.name}] ↩ back on ${short(before)}`);
  return undefined;
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)}s`;
