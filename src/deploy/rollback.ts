/**
 * `rollback <app> [--to <release>]` and `releases <app>`: back to the previous good release (or a
 * named one) through the same health-gated switch as a deploy, with that release's own `.env`
 * snapshot and command; the release rolled back from is marked bad and skipped next time.
 * @module
 */
import { parseConfig } from "../config/load.ts";
import { NAME_PATTERN } from "../config/names.ts";
import { serverConfigSchema } from "../config/schema.ts";
import { DeployParadigmError, UsageError } from "../errors.ts";
import { readTextOrUndefined } from "../fsutil.ts";
import { requireEngine, requireImage } from "../managers/docker.ts";
import { managerNamed } from "../managers/mod.ts";
import { appPaths, prefix } from "../paths.ts";
import { ProcessRunner } from "../runner.ts";
import { activateBlueGreen, ActivationFailed } from "./bluegreen.ts";
import { Journal } from "./journal.ts";
import { acquireLock } from "./lock.ts";
import { notifyOutcome } from "./notify_outcome.ts";
import { currentRelease, listReleases, markBad, readReleaseMeta, type ReleaseMeta, usableRelease } from "./releases.ts";
import { envSnapshot, secretValues } from "./runtime.ts";
import { type InPlace, restartInPlace } from "./restart.ts";
import { readStatus, writeStatus } from "./status.ts";

/** One release, as `releases` lists it. */
export interface ReleaseRow {
  id: string;
  commit?: string;
  createdAt?: string;
  current: boolean;
  bad: boolean;
  command?: string;
}

async function loadApp(app: string) {
  if (!NAME_PATTERN.test(app)) throw new UsageError(`"${app}" is not a valid app name`);
  const paths = appPaths(app);
  const text = await readTextOrUndefined(paths.config);
  if (text === undefined) {
    throw new UsageError(`app "${app}" is not set up on this server: ${paths.config} does not exist`);
  }
  return { paths, config: parseConfig(text, serverConfigSchema, paths.config) };
}

/** The releases of an app, oldest first. */
export async function listAppReleases(app: string): Promise<ReleaseRow[]> {
  const { paths } = await loadApp(app);
  const current = await currentRelease(paths);
  const rows: ReleaseRow[] = [];
  for (const id of await listReleases(paths)) {
    const meta = await readReleaseMeta(paths, id);
    rows.push({
      id,
      commit: meta?.commit,
      createdAt: meta?.createdAt,
      current: id === current,
      bad: meta?.bad === true,
      command: meta?.argv?.join(" "),
    });
  }
  return rows;
}

/** Prints `releases` as a table (or JSON). */
export async function showReleases(app: string, json: boolean): Promise<number> {
  const rows = await listAppReleases(app);
  if (json) {
    console.log(JSON.stringify(rows, null, 2));
    return 0;
  }
  if (!rows.length) {
    console.log(`${app} has no releases yet.`);
    return 0;
  }
  const table = [
    ["", "RELEASE", "COMMIT", "CREATED", "STATE"],
    ...rows.map((r) => [
      r.current ? "*" : "",
      r.id,
      r.commit?.slice(0, 7) ?? "-",
      r.createdAt ?? "-",
      r.current ? "serving" : r.bad ? "bad (rolled back from)" : "good",
    ]),
  ];
  const widths = table[0].map((_, i) => Math.max(...table.map((row) => row[i].length)));
  for (const row of table) console.log(row.map((cell, i) => cell.padEnd(widths[i])).join("  ").trimEnd());
  return 0;
}

/** Rolls `app` back to `to`, or to the newest good release before the serving one. Returns the exit code. */
export async function rollback(app: string, to?: string): Promise<number> {
  const { paths, config } = await loadApp(app);
  const lock = await acquireLock(
    paths.lock,
    { pid: Deno.pid, commit: "rollback" },
    (holder) =>
      console.log(`deploy-paradigm: waiting for another deploy of ${app}` + (holder ? ` (pid ${holder.pid})` : "")),
  );
  try {
    const from = await currentRelease(paths);
    const ids = await listReleases(paths);
    let target = to;
    if (target === undefined) {
      for (const id of ids.filter((id) => from === undefined || id < from).reverse()) {
        if (await usableRelease(paths, id)) {
          target = id;
          break;
        }
      }
      if (!target) {
        throw new UsageError(`${app} has no good release before ${from ?? "the serving one"} to roll back to`, {
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
    return await switchTo(app, paths, config, meta, from);
  } finally {
    lock.release();
  }
}

async function switchTo(
  app: string,
  paths: ReturnType<typeof appPaths>,
  config: Awaited<ReturnType<typeof loadApp>>["config"],
  meta: ReleaseMeta,
  from: string | undefined,
): Promise<number> {
  const started = performance.now();
  await Deno.mkdir(paths.logDir, { recursive: true });
  const journal = new Journal(paths.deployLog, app, meta.commit, (line) => console.log(line));
  journal.release = meta.id;
  const runner = new ProcessRunner((line) => journal.output(line));
  const fromMeta = from ? await readReleaseMeta(paths, from) : undefined;
  const manager = managerNamed(config.manager, meta.type === "docker" || fromMeta?.type === "docker");
  const secrets = await envSnapshot(paths, meta);
  journal.redact([...await secretValues(paths, meta), ...config.notify.map((target) => target.url)]);
  if (fromMeta) journal.redact(await secretValues(paths, fromMeta));
  const ctx: InPlace = { paths, config, journal, runner, manager };
  journal.say(`deploy-paradigm: rolling ${app} back to release ${meta.id} (${meta.commit.slice(0, 7)})`);
  await journal.record("rollback", { message: `from ${from ?? "nothing"} to ${meta.id}` });
  const before = await readStatus(paths.status);
  let extra = {};
  let checkedAt: string;
  try {
    if (meta.image) {
      await journal.step("docker", async () => {
        const version = await requireEngine(runner);
        await requireImage(runner, meta.image!, meta.id);
        return version;
      }, (version) => `docker engine ${version}; ${meta.image} is there`);
    }
    if (config.strategy === "blue-green") {
      const active = await activateBlueGreen({
        app,
        root: prefix(),
        paths,
        config,
        manager,
        runner,
        journal,
        meta,
        secrets,
        watchMs: 0,
      });
      checkedAt = active.health.checkedAt;
      extra = { slot: active.slot, slotPort: active.port, switchMs: active.switchMs, watch: active.watch };
    } else {
      checkedAt = (await restartInPlace(ctx, meta, secrets, fromMeta)).checkedAt;
    }
  } catch (error) {
    const message = error instanceof ActivationFailed ? error.failure.message : String(error);
    let back = from ?? "nothing";
    if (config.strategy === "restart" && from && (await currentRelease(paths)) !== from) {
      // The switch happened: put the release that served back, with its own command and .env.
      const restored = fromMeta
        ? await restartInPlace(ctx, fromMeta, await envSnapshot(paths, fromMeta), meta).then(
          () => true,
          () => false,
        )
        : false;
      if (!restored) back = "nothing healthy";
    }
    await journal.record("rollback_failed", { ok: false, message });
    journal.say(`✗ rollback of ${app} to ${meta.id} failed; ${back} serves`);
    return 1;
  }
  if (from) await markBad(paths, from);
  const duration = Math.round(performance.now() - started);
  const version = meta.commit.slice(0, 7);
  await writeStatus(paths.status, {
    name: app,
    type: meta.type,
    manager: config.manager,
    port: config.port,
    ...before,
    ...extra,
    strategy: config.strategy,
    status: "running",
    healthy: true,
    version,
    commit: meta.commit,
    release: meta.id,
    previous: from,
    deployed: new Date().toISOString(),
    lastHealthCheck: checkedAt,
    lastDeploy: {
      outcome: "rolled_back",
      release: from ?? meta.id,
      commit: before?.commit ?? meta.commit,
      version: before?.version ?? version,
      at: new Date().toISOString(),
      duration,
      step: "rollback",
      message: `rolled back by hand to release ${meta.id} (${version})`,
    },
  });
  await journal.record("rolled_back", { ok: true, duration, message: `${version} serves again as release ${meta.id}` });
  journal.say(
    `↺ rolled back ${app} to release ${meta.id} (${version}) in ${(duration / 1000).toFixed(1)}s` +
      (from ? `; release ${from} is marked bad` : ""),
  );
  await notifyOutcome(journal, config, app, {
    outcome: "rolled_back",
    release: meta.id,
    commit: meta.commit,
    version,
    at: new Date().toISOString(),
    duration,
    step: "rollback",
    message: `rolled back by hand to release ${meta.id} (${version})`,
  });
  return 0;
}
