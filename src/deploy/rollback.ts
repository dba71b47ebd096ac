/**
 * `rollback <app> [--to <release>]` and `releases <app>`: back to the previous good release (or a
 * named one) through the same health-gated switch as a deploy, with that release's own `.env`
 * snapshot and command; the release rolled back from is marked bad and skipped next time.
 * @module
 */
import { columns } from "../terminal.ts";
import { loadServerConfig, notSetUp } from "../config/server_config.ts";
import { readTextOrUndefined } from "../fsutil.ts";
import { requireAppName } from "../config/names.ts";
import { ConfigError, DeployParadigmError, UsageError } from "../errors.ts";
import { requireEngine, requireImage } from "../managers/docker.ts";
import { managerNamed } from "../managers/mod.ts";
import { type AppPaths, appPaths } from "../paths.ts";
import { type Effects, isoNow, realEffects, type SwitchContext } from "./context.ts";
import { endLeft } from "./canary_abort.ts";
import { Cancellation } from "./cancel.ts";
import { Journal, narrowLogs } from "./journal.ts";
import { acquireLock } from "./lock.ts";
import { notifyOutcome } from "./notify_outcome.ts";
import { lastDeploy, rollbackFailed, rolledBack, withProcesses } from "./outcome.ts";
import {
  currentRelease,
  listReleases,
  readReleaseMeta,
  type ReleaseMeta,
  runsProcess,
  setBad,
  usableRelease,
} from "./releases.ts";
import { envSnapshot, secretValues, userOf } from "./runtime.ts";
import { readStatus, writeStatus } from "./status.ts";
import { ActivationFailed, strategyOf } from "./strategies/mod.ts";
import { hasWorkers, syncWorkers } from "./workers.ts";
import { hasCron, syncCron } from "../cron/sync.ts";
import { sealOlder } from "../users.ts";
import { refTip, updateRef } from "../git.ts";

/** One release, as `releases` lists it. */
interface ReleaseRow {
  id: string;
  commit?: string;
  createdAt?: string;
  current: boolean;
  bad: boolean;
  command?: string;
  /** What `rollback` makes of it: `good` and `bad` ones can be gone back to (bad ones by name). */
  state: "serving" | "good" | "bad" | "never served" | "incomplete" | "unreadable";
  /** Why it is `incomplete` or `unreadable`. */
  problem?: string;
}

const STATE_TEXT: Record<ReleaseRow["state"], string> = {
  serving: "serving",
  good: "good",
  bad: "bad (rolled back from)",
  "never served": "never served (a deploy of it was interrupted)",
  incomplete: "incomplete (no metadata: it cannot be started)",
  unreadable: "unreadable metadata (see below)",
};

async function loadApp(app: string, root?: string) {
  requireAppName(app);
  const paths = appPaths(app, root);
  return { paths, config: await loadServerConfig(paths) };
}

/**
 * The releases of an app (under the server root `root`, by default the one of this process), oldest
 * first. Needs no value of config.yml, only that it exists (the app is set up here).
 */
export async function listAppReleases(app: string, root?: string): Promise<ReleaseRow[]> {
  requireAppName(app);
  const paths = appPaths(app, root);
  if (await readTextOrUndefined(paths.config).catch(() => "") === undefined) throw notSetUp(paths);
  const current = await currentRelease(paths);
  const rows: ReleaseRow[] = [];
  for (const id of await listReleases(paths)) {
    // One release whose metadata cannot be read does not hide the others.
    const read = await readReleaseMeta(paths, id).then((meta) => ({ meta }), (error: Error) => ({ error }));
    const meta = "meta" in read ? read.meta : undefined;
    const state = id === current
      ? "serving"
      : "error" in read
      ? "unreadable"
      : !meta
      ? "incomplete"
      : meta.pending
      ? "never served"
      : meta.bad
      ? "bad"
      : "good";
    rows.push({
      id,
      commit: meta?.commit,
      createdAt: meta?.createdAt,
      current: id === current,
      bad: meta?.bad === true,
      command: meta?.argv?.join(" "),
      state,
      ...("error" in read ? { problem: read.error.message } : {}),
    });
  }
  return rows;
}

/** Prints `releases` as a table (or JSON). */
export async function showReleases(app: string, json: boolean): Promise<number> {
  const rows = await listAppReleases(app);
  const problems = rows.filter((r) => r.problem).map((r) => `! release ${r.id}: ${r.problem}`);
  // A config.yml that does not load does not keep the list from being shown (nothing in it is needed): one
  // warning. One a user other than root may not read says that `releases` needs root (commands/releases.ts).
  const warning = await loadServerConfig(appPaths(app)).then(
    () => undefined,
    (error: Error) => {
      const text = error instanceof ConfigError ? error.problems.join("; ") : error.message;
      if (Deno.uid() !== 0 && /permission denied/i.test(text)) throw new Deno.errors.PermissionDenied(text);
      return `! config.yml does not load (listed without it; deploys and rollback refuse it until it is fixed): ${text}`;
    },
  );
  if (json) {
    console.log(JSON.stringify(rows, null, 2));
    for (const line of problems) console.error(line);
    if (warning) console.error(warning);
    return problems.length ? 1 : 0;
  }
  if (!rows.length) {
    console.log(`${app} has no releases yet.`);
    if (warning) console.log(warning);
    return 0;
  }
  const table = [
    ["", "RELEASE", "COMMIT", "CREATED", "STATE"],
    ...rows.map((r) => [
      r.current ? "*" : "",
      r.id,
      r.commit?.slice(0, 7) ?? "-",
      r.createdAt ?? "-",
      STATE_TEXT[r.state],
    ]),
  ];
  for (const line of columns(table).lines) console.log(line);
  for (const line of problems) console.log(line);
  if (warning) console.log(warning);
  return problems.length ? 1 : 0;
}

/**
 * Rolls `app` back to `to`, or to the newest good release before the serving one, with
 * `effects` (the real ones by default, see context.ts). Once it holds the app's lock, Ctrl-C,
 * SIGTERM and SIGHUP stop it as they stop a deploy (`cancellation`): the slot it started is
 * stopped, traffic stays where it was, `cancelled` is recorded. While it waits for the lock they
 * end the process as usual: nothing has started. Returns the exit code.
 */
export async function rollback(
  app: string,
  to?: string,
  effects: Effects = realEffects(),
  cancellation = new Cancellation(),
): Promise<number> {
  const { paths, config } = await loadApp(app, effects.root);
  // What the switch needs, first (as a deploy checks it): with the proxy down, the rollback would
  // start the release, fail at the switch and say that the one before "serves", which nothing does.
  await strategyOf(config).preflight({ ...effects, runner: effects.runner(() => {}) });
  const lock = await acquireLock(
    paths.lock,
    { pid: Deno.pid, commit: "rollback" },
    (holder) =>
      effects.print(`deploy-paradigm: waiting for another deploy of ${app}` + (holder ? ` (pid ${holder.pid})` : "")),
    () => effects.clock.now(),
  );
  cancellation.watchSignals();
  try {
    const from = await currentRelease(paths);
    // A killed deploy's canary still split: ending it is the rollback (--to goes on; see endLeftCanary).
    if (to === undefined) {
      const left = (await readStatus(paths.status).catch(() => undefined))?.canary;
      const reason = "ended by a rollback by hand";
      if (await endLeft(paths, config, effects, reason) !== false) {
        effects.print(
          `↺ the canary of ${
            left?.state === "running" || left?.state === "promoted"
              ? `release ${left.release} (${left.version})`
              : "a killed deploy"
          }` +
            ` is ended; ${from ?? "no release"} keeps serving every request. ` +
            `\`deploy-paradigm rollback ${app}\` again goes back further.`,
        );
        return 0;
      }
    }
    const ids = await listReleases(paths);
    let target = to;
    if (target === undefined) {
      for (const id of ids.filter((id) => from === undefined || id < from).reverse()) {
        if (await usableRelease(paths, id)) {
          target = id;
          break;
        }
      }
      if (!target && from === undefined) {
        throw new UsageError(`${app} has no serving release to roll back from`, {
          suggestion: ids.length
            ? `see \`deploy-paradigm releases ${app}\`; --to <release> starts one`
            : `it was never deployed: push to deploy it`,
        });
      }
      if (!target) {
        throw new UsageError(`${app} has no good release before ${from} to roll back to`, {
          suggestion: `see \`deploy-paradigm releases ${app}\`; --to <release> picks one`,
        });
      }
    } else if (!ids.includes(target)) {
      throw new UsageError(`${app} has no release "${target}"`, {
        suggestion: `see \`deploy-paradigm releases ${app}\``,
      });
    } else if (target === from) {
      throw new UsageError(`release ${target} already serves ${app}`);
    }
    const meta = await readReleaseMeta(paths, target);
    if (!meta) throw new DeployParadigmError(`release ${target} has no metadata; it cannot be started`);
    if (meta.pending) {
      throw new UsageError(`release ${target} never served: a deploy of it was interrupted before its switch`, {
        suggestion: `push its commit again, or pick another release (see \`deploy-paradigm releases ${app}\`)`,
      });
    }
    return await switchTo(effects, paths, config, meta, from, cancellation);
  } finally {
    cancellation.dispose();
    lock.release();
  }
}

/**
 * What to do after a rollback to `failed` failed: `rollback` alone would pick that release again
 * (it is not marked bad: its failure may be the server's, and it stays a target by name), so the
 * hint names the next older release to go to with `--to`, when there is one.
 */
async function nextTry(paths: AppPaths, failed: string, from: string | undefined): Promise<string> {
  const app = paths.app;
  const older = (await listReleases(paths)).filter((id) => id < failed && id !== from).reverse();
  for (const id of older) {
    if (await usableRelease(paths, id)) {
      return `  hint: \`deploy-paradigm rollback ${app}\` picks release ${failed} again; ` +
        `\`deploy-paradigm rollback ${app} --to ${id}\` goes to the good release before it`;
    }
  }
  return `  hint: \`deploy-paradigm rollback ${app}\` picks release ${failed} again, and no good release is older: ` +
    `fix what stopped it, or push a fix (see \`deploy-paradigm releases ${app}\`)`;
}

/** Whether going from release `from` to release `to` goes back (to an older one) or forward (`--to` a newer one). */
function rollWay(from: string | undefined, to: string): "back" | "forward" {
  return from !== undefined && to > from ? "forward" : "back";
}

/**
 * The deploy branch follows what serves, as after a push: from `from`, the commit rolled away
 * from, to `commit`, so pushing `from` again deploys it. A branch that is elsewhere (moved since) stays.
 */
async function followBranch(
  journal: Journal,
  paths: AppPaths,
  branch: string,
  from: string,
  commit: string,
): Promise<void> {
  const ref = `refs/heads/${branch}`;
  const tip = await refTip(paths.repo, ref).catch(() => undefined);
  if (tip === undefined || tip === commit) return; // never pushed (deployed by `execute`), or there already
  if (tip !== from) {
    journal.say(
      `! ${branch} stays at ${tip.slice(0, 7)}: it is not at ${from.slice(0, 7)}, the commit rolled away from`,
    );
    return;
  }
  await journal.step(
    "branch",
    () => updateRef(paths.repo, ref, commit, from),
    () => `${branch} → ${commit.slice(0, 7)}`,
  )
    .catch(() => journal.say(`! ${branch} stays at ${from.slice(0, 7)}`));
}

async function switchTo(
  effects: Effects,
  paths: AppPaths,
  config: Awaited<ReturnType<typeof loadApp>>["config"],
  meta: ReleaseMeta,
  from: string | undefined,
  cancellation: Cancellation,
): Promise<number> {
  const app = paths.app;
  const { clock } = effects;
  const started = clock.elapsed();
  await Deno.mkdir(paths.logDir, { recursive: true });
  const journal = new Journal(paths.deployLog, app, meta.commit, effects.print, cancellation, clock);
  journal.release = meta.id;
  const runner = effects.runner((line) => journal.output(line));
  const fromMeta = from ? await readReleaseMeta(paths, from) : undefined;
  const manager = managerNamed(config.manager, meta.type === "docker" || fromMeta?.type === "docker");
  const secrets = await envSnapshot(paths, meta);
  journal.redact([...await secretValues(paths, meta), ...config.notify.map((target) => target.url)]);
  if (fromMeta) journal.redact(await secretValues(paths, fromMeta));
  const ctx: SwitchContext = { ...effects, paths, config, journal, runner, inspect: effects.runner(() => {}), manager };
  const strategy = strategyOf(config);
  // `--to` a newer release than the serving one goes forward: the one left is not bad for that.
  const way = rollWay(from, meta.id);
  const before = await readStatus(paths.status); // one that cannot be read stops it here: nothing begun, nothing logged
  journal.say(`deploy-paradigm: rolling ${app} ${way} to release ${meta.id} (${meta.commit.slice(0, 7)})`);
  for (const line of await narrowLogs(paths.logDir)) journal.say(line); // logs an older version left open
  await journal.record("rollback", { message: `from ${from ?? "nothing"} to ${meta.id}` });
  let active;
  try {
    if (meta.image) {
      await journal.step("docker", async () => {
        const version = await requireEngine(runner);
        await requireImage(runner, meta.image!, meta.id);
        return version;
      }, (version) => `docker engine ${version}; ${meta.image} is there`);
    }
    const user = userOf(paths, config);
    const unsealed = user && await sealOlder(paths.release(meta.id), user, ctx.inspect);
    if (unsealed) {
      journal.say(
        `! release ${meta.id} was built by an older version: ${unsealed} was not root:${user.group} and read-only ` +
          `for ${user.name}; sealed now`,
      );
    }
    active = await strategy.activate(ctx, { meta, secrets, replaced: fromMeta, watchMs: 0 });
  } catch (error) {
    // A step's failure (the docker step's "image … is gone") as its own words, not as "Error: …".
    const message = error instanceof ActivationFailed
      ? error.failure.message
      : error instanceof Error
      ? error.message
      : String(error);
    journal.cancellation = undefined; // what follows puts things back: it runs to the end (as a deploy's failure does)
    let back = from ?? "nothing";
    if (error instanceof ActivationFailed && error.switched && !error.reverted && from) {
      // The switch happened: put the release that served back, with its own command and .env
      // (recorded as its `switch`, under this rollback's release; the line below says how it ended).
      const restored = await strategy.revert?.(ctx, {
        to: from,
        from: meta.id,
        runs: runsProcess(meta),
        step: "switch",
        quiet: true,
      }).catch(() => undefined);
      if (restored?.healthy !== true) back = "nothing healthy";
    }
    const how = cancellation.cancelled ? `cancelled (${cancellation.why})` : "failed";
    // Cancelled as a deploy is (the fleet alerts on rollback_failed, not on cancelled).
    await journal.record(cancellation.cancelled ? "cancelled" : "rollback_failed", { ok: false, message });
    // status.json says it too (its last deploy), and what serves.
    if (before) {
      const failure = {
        meta,
        outcome: cancellation.cancelled ? "cancelled" as const : "failed" as const,
        at: isoNow(clock),
        duration: Math.round(clock.elapsed() - started),
        message: `rollback to release ${meta.id} ${how}: ${message}`,
      };
      await writeStatus(paths.status, rollbackFailed(before, failure, back !== "nothing healthy" && back !== "nothing"))
        .catch(() => journal.say(`! ${paths.status} could not be written`));
    }
    journal.say(`✗ rollback of ${app} to ${meta.id} ${how}; ${back} serves`);
    if (!cancellation.cancelled) journal.say(await nextTry(paths, meta.id, from));
    // Told as a deploy's failure is (its own title: a rollback by hand), outside nothing: the lock is the caller's.
    const last = lastDeploy(
      cancellation.cancelled ? "cancelled" : "failed",
      meta.id,
      meta.commit,
      isoNow(clock),
      Math.round(clock.elapsed() - started),
      { step: "rollback", message: `rollback to release ${meta.id} ${how}: ${message}` },
    );
    await notifyOutcome(journal, config, app, last);
    return 1;
  }
  if (from && way === "back") await setBad(paths, from, true);
  if (meta.bad) await setBad(paths, meta.id, false); // chosen by name: it serves, so it is not skipped later
  // The deploy branch is the release gone to's (its deploy.yml's). The same as before: it follows the
  // release; another: said, and neither branch moves (the new one never held the commit rolled away from).
  const branch = meta.branch ?? before?.branch ?? "main";
  if (before?.branch && branch !== before.branch) {
    journal.say(
      `  deploy branch: ${before.branch} → ${branch} (the deploy.yml of release ${meta.id}); pushes to ${branch} deploy`,
    );
  } else if (fromMeta) await followBranch(journal, paths, branch, fromMeta.commit, meta.commit);
  // The release gone back to brings its own workers back (the rollback stands either way).
  if (await hasWorkers(paths.dir, meta)) {
    await journal.step("workers", () => syncWorkers(ctx, meta, secrets), (line) => line)
      .catch(() => journal.say("! the workers of the release gone back to did not all start"));
  }
  // ...and its own cron jobs (its timers; under pm2 the scheduler reads the serving release's).
  if (await hasCron(ctx, meta, fromMeta)) {
    await journal.step("cron", () => syncCron(ctx, meta, fromMeta), (line) => line)
      .catch(() => journal.say("! the cron jobs of the release gone back to were not set up"));
  }
  const duration = Math.round(clock.elapsed() - started);
  const at = isoNow(clock);
  const { status, notice } = rolledBack(config, before, {
    app,
    meta,
    from,
    way,
    health: active.health,
    strategy: active.status,
    at,
    duration,
  });
  await writeStatus(paths.status, await withProcesses(ctx, status));
  await journal.record(notice.outcome, {
    ok: true,
    duration,
    message: `${status.version} serves again as release ${meta.id}`,
  });
  journal.say(
    `↺ rolled ${way} ${app} to release ${meta.id} (${status.version}) in ${(duration / 1000).toFixed(1)}s` +
      (from && way === "back" ? `; release ${from} is marked bad` : ""),
  );
  await notifyOutcome(journal, config, app, notice);
  return 0;
}
