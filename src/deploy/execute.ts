/**
 * `execute <git-dir> <commit>`: the deploy itself, as run by the git hook.
 *
 * 1. Validate everything first (prepare.ts: deploy.yml, config.yml, .env, the start command): bad
 *    input changes nothing and exits 2.
 * 2. Under the app's lock (and its crash marker, reconcile.ts), walk the deploy's steps
 *    (steps/): prepare the release (extract, build, resolve the program, install `.env`,
 *    preDeploy), where a failure switches nothing; then the switch strategy (strategies/) brings
 *    it into service, health-checked, and moves the branch, switching back when that fails
 *    (failure.ts); then the deploy stands: postDeploy and cleanup, whose failures are reported,
 *    never rolled back. status.json is built in outcome.ts.
 * 3. `--dry-run` walks the same steps with the DryRunner: each says what it would do.
 * @module
 */
import { UsageError } from "../errors.ts";
import { exists } from "../fsutil.ts";
import { maintenancePath } from "../proxy/maintenance.ts";
import { isAncestor, refTip } from "../git.ts";
import { managerNamed } from "../managers/mod.ts";
import { DryRunner } from "../runner.ts";
import { narrowedLine, ownAppDirs } from "../users.ts";
import { Cancellation } from "./cancel.ts";
import { canaryWaitNote } from "./canary_decision.ts";
import { type DeployContext, type Effects, isoNow } from "./context.ts";
import { secretsOf } from "./dotenv.ts";
import { type ExecuteResult, failed } from "./failure.ts";
import { Journal, narrowLogs } from "./journal.ts";
import { acquireLock, waitingLine } from "./lock.ts";
import { notifyOutcome } from "./notify_outcome.ts";
import { deployedStatus, saveStatus, servedUrl } from "./outcome.ts";
import { discardPrefetch, type Prefetch } from "./prefetch.ts";
import { type Deployment, prepare, releaseMeta } from "./prepare.ts";
import { withDeployMarker } from "./reconcile.ts";
import { notifyRefusal } from "./refusal.ts";
import { currentRelease, newReleaseId, readReleaseMeta } from "./releases.ts";
import { userOf } from "./runtime.ts";
import { readStatus } from "./status.ts";
import { DEPLOY, type Release, walk } from "./steps/mod.ts";

/** Arguments of `execute`. */
export interface ExecuteOptions {
  gitDir: string;
  commit: string;
  /**
   * The pushed branch (`refs/heads/main`) and its value before the push (`old`, zeros for a new
   * branch). When given, the branch must still be at `old` once the lock is held (or at an
   * ancestor of the commit: a rollback by hand moved it back meanwhile), and is moved
   * to the commit after the health check, under the lock; if that fails, the deploy is rolled back.
   */
  ref?: string;
  old?: string;
  /** Print the plan, change nothing. */
  dryRun?: boolean;
  /** An extraction of the commit already under way (see prefetch.ts). */
  prefetch?: Prefetch;
  /** Cancels the deploy (default: SIGINT, SIGTERM and SIGHUP do). */
  cancellation?: Cancellation;
  /** The side effects (runner, proxy, clock, root, where progress lines go), built once by the command. */
  effects: Effects;
}

/** Runs a deploy. Throws a usage error, before changing anything, for bad input. */
export async function execute(options: ExecuteOptions): Promise<ExecuteResult> {
  const own = options.cancellation === undefined && !options.dryRun ? new Cancellation().watchSignals() : undefined;
  const { effects } = options;
  try {
    const plan = await prepare(options, effects.root).catch(async (error) => {
      // Refused before anything changed: still recorded and notified (a CI push is seen refused).
      if (!options.dryRun && error instanceof UsageError) await notifyRefusal(options, effects, error);
      throw error;
    });
    const cancellation = options.cancellation ?? own ?? new Cancellation();
    return await (options.dryRun ? dryRun : deploy)(plan, effects, cancellation, options);
  } finally {
    own?.dispose();
    await discardPrefetch(options.prefetch); // a no-op once the deploy renamed it into place
  }
}

/** The deploy's context; `dry`: commands are printed, not run, and nothing is recorded. */
function contextOf(plan: Deployment, effects: Effects, cancellation: Cancellation, dry: boolean): DeployContext {
  const { paths, config, deploy } = plan;
  const journal = new Journal(
    dry ? "/dev/null" : paths.deployLog,
    deploy.name,
    plan.commit,
    effects.print,
    cancellation,
    effects.clock,
  );
  return {
    ...effects,
    plan,
    paths,
    config,
    journal,
    runner: dry ? new DryRunner(effects.print) : effects.runner((line) => journal.output(line)),
    inspect: effects.runner(() => {}),
    manager: managerNamed(config.manager, deploy.type === "docker"),
    cancellation,
    dry,
  };
}

/** Prints what a deploy would do, step by step. */
async function dryRun(plan: Deployment, effects: Effects, cancellation: Cancellation): Promise<ExecuteResult> {
  const ctx = contextOf(plan, effects, cancellation, true);
  ctx.print(`deploy-paradigm: dry run of ${plan.deploy.name} ${plan.short}; nothing is changed`);
  const release = {
    id: "<new>",
    dir: plan.paths.release("<new>"),
    meta: releaseMeta(plan, "<new>", isoNow(ctx.clock)),
  };
  await walk(ctx, release, DEPLOY);
  return { ok: true };
}

/** The deploy under the app's lock, once the branch is where the push found it. */
async function deploy(
  plan: Deployment,
  effects: Effects,
  cancellation: Cancellation,
  { ref, old = "" }: ExecuteOptions,
): Promise<ExecuteResult> {
  const { deploy, paths, commit, config } = plan;
  await Deno.mkdir(paths.logDir, { recursive: true });
  const user = userOf(paths, config);
  // The ownership model (users.ts), also for servers set up before it: what it narrowed is said after the first line.
  const narrowed = narrowedLine(paths, user ? await ownAppDirs(paths, user) : []);
  const ctx = contextOf(plan, effects, cancellation, false);
  const { journal, print } = ctx;
  journal.redact([...secretsOf(plan.secrets, plan.public), ...config.notify.map((target) => target.url)]);
  const lock = await acquireLock(
    paths.lock,
    { pid: Deno.pid, commit },
    (holder) => print(waitingLine(deploy.name, holder) + canaryWaitNote(paths)),
    () => ctx.clock.now(),
  );
  try {
    if (cancellation.cancelled) {
      const reason = `cancelled before it started (${cancellation.why})`;
      journal.say(`✗ ${reason}`);
      await journal.record("cancelled", { ok: false, message: reason });
      return { ok: false, reason };
    }
    const refused = async (reason: string): Promise<ExecuteResult> => {
      print(`✗ ${reason}`);
      await journal.record("refused", { ok: false, message: reason });
      return { ok: false, reason };
    };
    let branchOld = old;
    if (ref !== undefined) {
      // The deploy branch was decided before the lock: a rollback meanwhile may have made it another.
      const deployBranch = (await readStatus(paths.status).catch(() => undefined))?.branch ?? "main";
      if (ref !== `refs/heads/${deployBranch}`) {
        return await refused(
          `the deploy branch became ${deployBranch} while this push waited: push to ${deployBranch}`,
        );
      }
      const tip = await refTip(plan.gitDir, ref);
      // Moved while this push waited: refused unless the pushed commit contains where it is now
      // (a rollback by hand moved it back to an older commit).
      if (tip && tip !== old && await isAncestor(plan.gitDir, tip, commit)) branchOld = tip;
      else if ((tip ?? "") !== old.replace(/^0+$/, "")) {
        return await refused(
          `${ref.replace("refs/heads/", "")} moved to ${tip?.slice(0, 7)} while this push waited; ` +
            `fetch, merge and push again`,
        );
      }
    }
    const branch = ref === undefined ? undefined : { ref, old: branchOld };
    const result = await withDeployMarker(ctx, () => deployLocked(ctx, branch, narrowed));
    lock.release();
    // Told once the deploy is over and recorded, outside the lock: a slow receiver holds nothing.
    const last = (await readStatus(paths.status).catch(() => undefined))?.lastDeploy;
    if (last && last.commit === commit) await notifyOutcome(journal, config, deploy.name, last);
    return result;
  } catch (error) {
    throw journal.cleanError(error); // printed by the hook: a command's last lines may hold a secret
  } finally {
    lock.release();
  }
}

/** The deploy proper: the steps, then its outcome. */
async function deployLocked(
  ctx: DeployContext,
  branch: Release["branch"],
  narrowed: string | undefined,
): Promise<ExecuteResult> {
  const { plan, paths, config, journal, clock } = ctx;
  const started = clock.elapsed();
  const before = await readStatus(paths.status);
  const previous = await currentRelease(paths);
  const previousMeta = previous ? await readReleaseMeta(paths, previous) : undefined;
  await Deno.mkdir(paths.releases, { recursive: true });
  const id = await newReleaseId(paths, clock.now());
  journal.release = id;
  // For a docker app, or one that was: the manager also starts and removes containers.
  ctx.manager = managerNamed(config.manager, plan.deploy.type === "docker" || previousMeta?.type === "docker");
  const where = plan.runs ? `${config.manager}, port ${config.port}` : "static files";
  journal.say(`deploy-paradigm: deploying ${plan.deploy.name} ${plan.short} as release ${id} (${where})`);
  if (narrowed) journal.say(narrowed);
  for (const line of await narrowLogs(paths.logDir)) journal.say(line); // logs an older version left open
  await journal.record("begin", { message: `${plan.deploy.type} app, ${where}` });
  const meta = releaseMeta(plan, id, isoNow(clock));
  const release: Release = { id, dir: paths.release(id), meta, previous, previousMeta, branch };
  try {
    await walk(ctx, release, DEPLOY);
  } catch (error) {
    return await failed(ctx, error, release, { started, before });
  }
  const duration = Math.round(clock.elapsed() - started);
  const { health, status } = release.active!;
  const at = isoNow(clock);
  await saveStatus(ctx, deployedStatus(plan, { id, previous, health, strategy: status, at, duration }));
  await journal.record("success", { ok: true, duration, message: `${plan.short} serves as release ${id}` });
  const served = servedUrl(plan);
  const url = served ? `: ${served}` : "";
  journal.say(`✓ deployed ${plan.deploy.name} ${plan.short} (release ${id}) in ${(duration / 1000).toFixed(1)}s${url}`);
  const app = plan.deploy.name;
  if (await exists(maintenancePath(paths.dir))) {
    journal.say(`! ${app} is in maintenance: the proxy answers 503 until \`maintenance ${app} off\``);
  }
  return { ok: true };
}
