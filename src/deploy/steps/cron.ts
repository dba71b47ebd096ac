/**
 * The `cron` step: once the release serves, the server runs its cron jobs (and no longer those of
 * jobs it dropped); see src/cron/sync.ts. A failure is reported; the deploy stands.
 * @module
 */
import { hasCron, syncCron } from "../../cron/sync.ts";
import type { Step } from "./step.ts";

/** The serving release's cron jobs, on the server's timers or its scheduler. */
export const cron: Step = {
  name: "cron",
  when: (ctx, release) => hasCron(ctx, release.meta, release.previousMeta),
  tolerate: "! the cron jobs were not updated; the deploy stands (see the lines above)",
  run: (ctx, release) => syncCron(ctx, release.meta, release.previousMeta),
  async dry(ctx, release) {
    ctx.print(
      `would make the server run the cron jobs of the release: ${await syncCron(
        ctx,
        release.meta,
        release.previousMeta,
      )}`,
    );
  },
};
