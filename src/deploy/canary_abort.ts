/**
 * `canary <app> promote|abort` (src/commands/canary.ts), with the effects of context.ts so the
 * pipeline tests run it: a live deploy gets the decision file (./canary_decision.ts) and the
 * command says what became of it; a canary a killed deploy left is ended under the app's lock
 * (`abort`, as blue-green's `recover` ends it) or refused (`promote`).
 * @module
 */
import { loadServerConfig } from "../config/server_config.ts";
import type { ServerConfig } from "../config/schema.ts";
import { managerNamed } from "../managers/mod.ts";
import { type AppPaths, appPaths } from "../paths.ts";
import { type Decision, decisionOutcome, findCanary, requestDecision } from "./canary_decision.ts";
import { type Effects, realEffects, type SwitchContext } from "./context.ts";
import { Journal } from "./journal.ts";
import { acquireLock } from "./lock.ts";
import { currentRelease, readReleaseMeta } from "./releases.ts";
import { endLeftCanary } from "./strategies/blue_green.ts";

/** Decides the canary of `app`; returns the exit code. `waitMs`: how long to wait for the deploy to take it. */
export async function decideCanary(
  app: string,
  decision: Decision,
  effects: Effects = realEffects(),
  waitMs = 5000,
): Promise<number> {
  const paths = appPaths(app, effects.root);
  const config = await loadServerConfig(paths);
  if (decision === "promote" || await findCanary(paths) !== "left") {
    effects.print(await requestDecision(paths, decision));
    effects.print(await decisionOutcome(paths, waitMs));
    return 0;
  }
  const lock = await acquireLock(
    paths.lock,
    { pid: Deno.pid, commit: "canary abort" },
    () => effects.print(`deploy-paradigm: waiting for the lock of ${app} (a deploy started meanwhile)`),
    () => effects.clock.now(),
  );
  try {
    if (await findCanary(paths, true) !== "left") { // a deploy started and ended it meanwhile
      effects.print(`${app}: no canary is left to abort`);
      return 0;
    }
    const current = await endLeft(
      paths,
      config,
      effects,
      `aborted by hand after its deploy was killed (\`canary ${app} abort\`)`,
    );
    effects.print(
      `${app}: the canary left by a killed deploy is aborted; ${current || "no release"} serves every request. ` +
        "Push again to deploy the new release.",
    );
    return 0;
  } finally {
    lock.release();
  }
}

/**
 * Ends the canary a killed deploy left (see blue-green's `endLeftCanary`), under the app's lock
 * the caller holds. Returns the release that serves, or false when no split was left.
 */
export async function endLeft(
  paths: AppPaths,
  config: ServerConfig,
  effects: Effects,
  reason: string,
): Promise<string | undefined | false> {
  const journal = new Journal(paths.deployLog, paths.app, "", effects.print, undefined, effects.clock);
  const current = await currentRelease(paths);
  const meta = current ? await readReleaseMeta(paths, current) : undefined;
  const ctx: SwitchContext = {
    ...effects,
    paths,
    config,
    journal,
    runner: effects.runner((line) => journal.output(line)),
    inspect: effects.runner(() => {}),
    manager: managerNamed(config.manager, meta?.type === "docker"),
  };
  return await endLeftCanary(ctx, reason) && current;
}
