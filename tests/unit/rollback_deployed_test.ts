/**
 * Attacks the rollback push's proof (src/rollout/run.ts pushBack): a forward push counts as a
 * success only when the server said "✓ deployed <app> <short>" (deployOne), but a rollback push
 * counted as rolled back on its exit status and the branch alone: a server that moved the branch
 * back without deploying (here it said "stored; only production deploys") was reported
 * `rolled_back`, though it still serves the new commit. Now it stays as it was (its deploy a
 * success), named "not rolled back", and the rollout ends `failed`.
 */
import { assertEquals, assertMatch } from "../helpers/assert.ts";
import { FleetStore } from "../../src/fleet/store.ts";
import { rolloutById } from "../../src/fleet/rollouts.ts";
import { type Target, waves } from "../../src/rollout/plan.ts";
import { RolloutRecord } from "../../src/rollout/record.ts";
import { runWaves, type ServerGit } from "../../src/rollout/run.ts";

const OLD = "a".repeat(40);
const NEW = "b".repeat(40);

Deno.test("rollout: a rollback push that deployed nothing is not 'rolled_back'; the rollout fails", async () => {
  // The server only stored the commit back (its deploy branch is another)...
  await rollbackSaying(
    "remote: deploy-paradigm: refs/heads/main stored; only production deploys",
    /not rolled back: nothing deployed: a deploys production/,
  );
  // ... or moved the branch back and never said it deployed.
  await rollbackSaying(
    "remote: ok",
    /not rolled back: the push ended well but the server never said "✓ deployed web aaaaaaa"/,
  );
});

/** A rollout where b fails and a's rollback push says `line` (and ends well): a not rolled back, as `why`. */
async function rollbackSaying(line: string, why: RegExp): Promise<void> {
  const store = await FleetStore.open(":memory:");
  const targets: Target[] = ["a", "b"].map((name) => ({ name, url: `ssh://${name}/web.git` }));
  const plan = waves(targets, 1);
  const heads = new Map<string, string>(targets.map((t) => [t.name, OLD]));
  const git: ServerGit = {
    head: (t) => Promise.resolve(heads.get(t.name)!),
    push(t, refspec, onLine) {
      const commit = refspec.replace(/^\+/, "").split(":")[0];
      if (t.name === "b") {
        onLine(" ! [remote rejected] x -> main (deploy failed at health)");
        return Promise.resolve({
          code: 1,
          output: "",
          tail: [" ! [remote rejected] x -> main (deploy failed at health)"],
        });
      }
      heads.set(t.name, commit);
      if (commit === NEW) onLine(`remote: ✓ deployed web ${commit.slice(0, 7)} (release 3) in 2.0s`);
      else onLine(line); // nothing deployed
      return Promise.resolve({ code: 0, output: "", tail: [] });
    },
  };
  const record = RolloutRecord.start(store, {
    app: "web",
    ref: "HEAD",
    commit: NEW,
    startedAt: 1000,
    options: {},
    servers: plan.flatMap((w, i) => w.map((t) => ({ name: t.name, wave: i + 1, versionBefore: "aaaaaaa" }))),
  });
  let clock = 1000;
  const result = await runWaves({
    app: "web",
    commit: NEW,
    branch: "main",
    waves: plan,
    before: new Map(targets.map((t) => [t.name, OLD])),
    parallel: 1,
    onFailure: "rollback",
    git,
    record,
    print: () => {},
    now: () => clock += 100,
    sleep: () => Promise.resolve(),
    stop: new AbortController().signal,
  });
  record.finish(result.outcome, clock, result.message);
  const view = rolloutById(store, record.id)!;
  store.close();
  const a = view.servers.find((s) => s.server === "a")!;
  assertEquals(
    [result.outcome, a.outcome],
    ["failed", "success"],
    `a's rollback deployed nothing (it still serves bbbbbbb); got: ${a.message}`,
  );
  assertMatch(a.message ?? "", why);
  assertMatch(result.message ?? "", /NOT rolled back: a still serves bbbbbbb/);
}
