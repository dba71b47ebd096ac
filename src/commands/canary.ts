/**
 * `canary <app> promote|abort`: decides the running canary of an app by hand (root only, like
 * `rollback`), then says what the deploy did with it (src/deploy/canary_abort.ts); `abort` also
 * ends a canary a killed deploy left.
 * @module
 */
import type { CommandSpec } from "../cli.ts";
import { UsageError } from "../errors.ts";
import { rootOnly } from "./root_only.ts";

/** `canary <app> promote|abort`. */
export const canaryCommand: CommandSpec = {
  name: "canary",
  summary: "Promote or abort the canary of a running deploy now (abort also ends one a killed deploy left)",
  args: [
    { name: "app", description: "The app whose deploy runs a canary" },
    { name: "decision", description: "promote (all traffic to the new release now) or abort (revert it)" },
  ],
  async run({ args }) {
    const [app, decision] = args;
    const [{ requireAppName, swappedWords }, { appPaths }] = await Promise.all([
      import("../config/names.ts"),
      import("../paths.ts"),
    ]);
    if (await swappedWords(args, ["promote", "abort"], (name) => appPaths(name).config)) {
      throw new UsageError(`canary takes the app first, then "${app}"`, {
        suggestion: `deploy-paradigm canary ${decision} ${app}`,
      });
    }
    requireAppName(app);
    if (decision !== "promote" && decision !== "abort") {
      throw new UsageError(`canary takes "promote" or "abort" after the app, got "${decision}"`, {
        suggestion: `deploy-paradigm canary ${app} promote   (or abort)`,
      });
    }
    const { decideCanary } = await import("../deploy/canary_abort.ts");
    try {
      return await decideCanary(app, decision);
    } catch (error) {
      throw rootOnly(error, `canary ${app} ${decision}`);
    }
  },
};
