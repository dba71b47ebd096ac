/**
 * A deploy's (or a rollback's) outcome to config.yml's `notify:` targets.
 * @module
 */
import type { ServerConfig } from "../config/schema.ts";
import type { Journal } from "./journal.ts";
import type { LastDeploy } from "./status.ts";

const VERBS: Record<LastDeploy["outcome"], string> = {
  success: "deployed",
  failed: "failed",
  rolled_back: "rolled back",
  cancelled: "cancelled",
  refused: "refused",
};

/**
 * "shop abc1234 failed at health on vm"; a rollback by hand names the release gone to as such
 * ("shop: rolled back by hand to release … (abc1234) on vm"), not as the one rolled back, and so
 * does one that failed ("shop: rollback by hand to release … (abc1234) failed on vm").
 */
export function titleOf(app: string, last: LastDeploy, server: string): string {
  if ((last.outcome === "rolled_back" || last.outcome === "success") && last.step === "rollback" && last.message) {
    return `${app}: ${last.message} on ${server}`;
  }
  if ((last.outcome === "failed" || last.outcome === "cancelled") && last.step === "rollback") {
    return `${app}: rollback by hand to release ${last.release} (${last.version}) ${
      last.outcome === "failed" ? "failed" : "cancelled"
    } on ${server}`;
  }
  return `${app} ${last.version} ${VERBS[last.outcome]}${last.step ? ` at ${last.step}` : ""} on ${server}`;
}

/**
 * Sends `last` to the targets that want its outcome (at once, each bounded by a timeout) and
 * records each delivery in deploy.log (unless `record` is false: a refused push writes nothing).
 * Never fails the deploy.
 */
export async function notifyOutcome(
  journal: Journal,
  config: ServerConfig,
  app: string,
  last: LastDeploy,
  { record = true } = {},
) {
  if (!config.notify.length) return;
  const { notifyAll } = await import("../notify.ts");
  const server = hostname();
  const deliveries = await notifyAll(config.notify, {
    event: last.outcome,
    ok: last.outcome === "success",
    title: titleOf(app, last, server),
    text: last.message,
    at: last.at,
    fields: {
      app,
      server,
      version: last.version,
      commit: last.commit,
      release: last.release,
      duration: `${(last.duration / 1000).toFixed(1)} s`,
      step: last.step,
    },
  });
  for (const delivery of deliveries) {
    journal.say(`${delivery.ok ? "✓" : "!"} notified ${delivery.target}: ${delivery.detail}`);
    if (record) await journal.record("notify", { ok: delivery.ok, message: `${delivery.target}: ${delivery.detail}` });
  }
}

/** This server's name, for notifications. */
function hostname(): string {
  try {
    return Deno.hostname();
  } catch {
    return "this server";
  }
}
