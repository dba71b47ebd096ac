/**
 * The canary's edge cases in the deploy pipeline, with the fake world of
 * tests/helpers/pipeline_world.ts: a canary a killed deploy left (`canary <app> abort|promote`,
 * `rollback`, the next deploy), a proxy that does not apply canary.json or does not answer for a
 * while, a gate failing at a canary step, a split the clients make all-or-nothing, what
 * status.json says at each step. The main paths: tests/unit/canary_pipeline_test.ts.
 * @module
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import {
  APP,
  commit,
  deploy,
  entries,
  events,
  logLength,
  releases,
  status,
  withWorld,
  type World,
} from "../helpers/pipeline_world.ts";
import { Cancellation } from "../../src/deploy/cancel.ts";
import { decideCanary } from "../../src/deploy/canary_abort.ts";
import { canaryWaitNote, DECISION_FILE, decisionOutcome } from "../../src/deploy/canary_decision.ts";
import { GATE_OUTPUT_LIMIT } from "../../src/deploy/gates.ts";
import { rollback } from "../../src/deploy/rollback.ts";
import { type AppStatus, writeStatus } from "../../src/deploy/status.ts";
import { canaryCommand } from "../../src/commands/canary.ts";
import { UsageError } from "../../src/errors.ts";
import { readCanary } from "../../src/proxy/canary_file.ts";
import { readRoute } from "../../src/proxy/routes.ts";
import { statusLines } from "../../src/status_view.ts";

const CANARY = "canary: { steps: [5, 25, 50], interval: 10s, minRequests: 50, maxWait: 30s }";

/** A pid that ran and ended (no process has it now, for a while). */
async function deadPid(): Promise<number> {
  const child = new Deno.Command("true").spawn();
  await child.status;
  return child.pid;
}

/**
 * After a good first deploy (blue): what a deploy SIGKILLed mid-canary leaves: its marker (a dead
 * pid), canary.json at 25 % to green, green running, status.json's canary "running".
 */
async function killedCanary(w: World): Promise<string> {
  assert((await deploy(w, await commit(w, "ok"))).ok);
  const killed = "f".repeat(40);
  await Deno.writeTextFile(join(w.paths.dir, ".deploying"), JSON.stringify({ commit: killed, pid: await deadPid() }));
  const [first] = await releases(w);
  await w.apps.start(w.slots.green, w.paths.release(first));
  await Deno.writeTextFile(
    join(w.paths.dir, "canary.json"),
    JSON.stringify({ target: { port: w.slots.green }, slot: "green", percent: 25, since: new Date().toISOString() }),
  );
  const s = await status(w);
  const canary = {
    state: "running" as const,
    release: "20990101-000000",
    version: killed.slice(0, 7),
    percent: 25,
    step: 2,
    steps: [5, 25, 50],
    since: "2026-01-01T00:00:00.000Z",
    at: "2026-01-01T00:00:00.000Z",
  };
  await writeStatus(w.paths.status, { ...s, canary });
  w.fake.calls.length = 0;
  w.printed.length = 0;
  w.proxied.length = 0;
  return killed;
}

Deno.test("canary abort after a killed deploy: the lock is free, so it ends the left canary itself", async () => {
  await withWorld("blue-green", async (w) => {
    await killedCanary(w);
    // promote is refused: nothing would health-check that release.
    const refused = await decideCanary(APP, "promote", w.effects, 0).then(() => undefined, (e) => e);
    assert(refused instanceof UsageError, String(refused));
    assertMatch(refused.message, /was left by a deploy that was killed: nothing can promote it/);
    assertMatch(refused.suggestion!, /canary alpha abort` ends it .* then push again/);
    assertEquals(await Deno.stat(join(w.paths.dir, DECISION_FILE)).then(() => true, () => false), false);
    // abort ends it: canary.json gone, reload, drain of the canary's port, green stopped, status aborted.
    assertEquals(await decideCanary(APP, "abort", w.effects, 0), 0);
    assertEquals(await readCanary(w.paths.dir), undefined);
    assertEquals(w.proxied.map((r) => r.op), ["reload", "drain"]);
    assertEquals(w.proxied[1].port, w.slots.green);
    assertEquals(w.fake.lines(), ["systemctl disable --now --quiet alpha@green.service"]);
    const s = await status(w);
    assertEquals(s.canary?.state, "aborted");
    assertMatch(s.canary!.reason!, /^aborted by hand after its deploy was killed/);
    assert(w.printed.some((line) => /the canary left by a killed deploy is aborted; \S+ serves/.test(line)));
    // Nothing left to abort now.
    const again = await decideCanary(APP, "abort", w.effects, 0).then(() => undefined, (e) => e);
    assertEquals(again?.message, `no canary of ${APP} runs now`);
  });
});

Deno.test("a killed canary: the next deploy records interrupted and keeps the canary as aborted", async () => {
  await withWorld("blue-green", async (w) => {
    const killed = await killedCanary(w);
    const from = await logLength(w);
    // status.json as the deploy goes on (the fake manager is asked what runs at each status write).
    const seen: AppStatus["canary"][] = [];
    w.fake.on(["systemctl", "show"], {
      output: "0",
      effect: async () => void seen.push((await status(w)).canary),
    });
    assert((await deploy(w, await commit(w, "ok"))).ok);
    const log = await entries(w, from);
    assertEquals(log[0].event, "interrupted");
    assertMatch(log[0].message!, new RegExp(`^the deploy of ${killed.slice(0, 7)} .* was interrupted`));
    const kept = seen.find((c) => c?.state === "aborted");
    assertEquals([kept?.version, kept?.reason], [killed.slice(0, 7), "the deploy was interrupted"]);
    assertEquals(seen.some((c) => c?.state === "running"), false);
    assertEquals(await readCanary(w.paths.dir), undefined);
    assertEquals((await status(w)).canary, undefined); // the next deploy (no canary) stands: it goes
  });
});

Deno.test("rollback --to after a killed canary: canary.json goes first (reload, drain), status keeps it as aborted", async () => {
  await withWorld("blue-green", async (w) => {
    assert((await deploy(w, await commit(w, "ok"))).ok);
    await killedCanary(w); // a second good release serves (green), a killed canary to blue
    // Without --to, a rollback only ends the canary (tests/unit/canary_fix_test.ts).
    assertEquals(await rollback(APP, (await releases(w))[0], w.effects), 0);
    assertEquals(await readCanary(w.paths.dir), undefined);
    // (after the check that the proxy answers, as a deploy's)
    assertEquals(w.proxied.slice(0, 3).map((r) => r.op), ["status", "reload", "drain"]);
    const s = await status(w);
    assertEquals(s.canary?.state, "aborted");
    assertEquals(s.canary?.reason, "ended by a rollback by hand");
    assertEquals(s.lastDeploy.outcome, "rolled_back");
  });
});

/** Deploys a first good release, then commits the next with a canary (and `extra`). */
async function withCanary(w: World, extra: string[] = []) {
  assert((await deploy(w, await commit(w, "ok"))).ok);
  const from = await logLength(w);
  w.canary.readings.length = 0;
  w.printed.length = 0;
  return { sha: await commit(w, "ok", [CANARY, ...extra]), from };
}

Deno.test("canary: a proxy that does not apply canary.json fails at once, not switched, release not bad", async () => {
  await withWorld("blue-green", async (w) => {
    const { sha, from } = await withCanary(w);
    const proxy = w.effects.proxy;
    w.effects.proxy = (request) =>
      (request as { op: string }).op === "canary"
        ? Promise.resolve({ ok: true, stats: null, problem: 'canary.json: "slot" must be blue or green' })
        : proxy(request);
    const result = await deploy(w, sha);
    assertEquals(result, { ok: false, reason: "deploy failed at canary" });
    const last = (await entries(w)).at(-1)!;
    assertMatch(
      last.message!,
      /the proxy did not apply canary step 1\/3 \(5%\): the proxy refuses the canary: canary\.json: "slot" must be/,
    );
    assertEquals(await readCanary(w.paths.dir), undefined);
    assertEquals(await readRoute(w.paths.dir), { port: w.slots.blue });
    const log = await events(w, from);
    assertEquals(log.slice(log.indexOf("health") + 1), ["stop", "failed✗"]); // no revert: nothing moved
    assertEquals((await releases(w)).length, 1); // the half-made release went, not marked bad and kept
    assertEquals((await status(w)).status, "running");
  });
});

Deno.test("canary: the proxy refusing step 2's canary.json: the split reverted and drained, release not bad", async () => {
  await withWorld("blue-green", async (w) => {
    const { sha, from } = await withCanary(w);
    const proxy = w.effects.proxy;
    w.effects.proxy = async (request) =>
      (request as { op: string }).op === "canary" && (await readCanary(w.paths.dir))?.percent === 25
        ? { ok: true, stats: null, problem: "canary.json: too big" }
        : await proxy(request);
    assertEquals(await deploy(w, sha), { ok: false, reason: "deploy failed at canary" });
    const log = await events(w, from);
    assertEquals(log.slice(log.indexOf("health") + 1).slice(-5), ["revert", "drain", "canary✗", "stop", "failed✗"]);
    const s = await status(w);
    assertEquals(s.canary?.state, "aborted");
    assertMatch(
      s.canary!.reason!,
      /the proxy did not apply canary step 2\/3 \(25%\): the proxy refuses the canary: canary\.json: too big/,
    );
    assertEquals(await readRoute(w.paths.dir), { port: w.slots.blue });
    assertEquals((await releases(w)).length, 1);
  });
});

Deno.test("canary: the proxy away for a few seconds mid-canary is waited for; away for good fails after 10s", async () => {
  for (const away of [3, Infinity]) {
    await withWorld("blue-green", async (w) => {
      const { sha } = await withCanary(w);
      const proxy = w.effects.proxy;
      let failing = 0;
      w.effects.proxy = async (request) => {
        if ((await readCanary(w.paths.dir))?.percent === 25 && (request as { op: string }).op === "canary") {
          if (failing++ < away * 2) throw new Error("connect ENOENT /run/deploy-paradigm/proxy.sock");
        }
        return await proxy(request);
      };
      const result = await deploy(w, sha);
      if (away === 3) {
        assertEquals(result, { ok: true });
        assertEquals((await status(w)).canary?.state, "promoted");
      } else {
        assertEquals(result, { ok: false, reason: "deploy failed at canary; rolled back" });
        const last = (await entries(w)).at(-1)!;
        assertMatch(last.message!, /the proxy did not answer for 10s: connect ENOENT/);
        assertEquals(await readRoute(w.paths.dir), { port: w.slots.blue });
      }
    });
  }
});

Deno.test("canary: a gate failing at step 2 reverts it; status.json and deploy.log say the gate's reason", async () => {
  await withWorld("blue-green", async (w) => {
    const { sha, from } = await withCanary(w, ["gates: [./smoke.sh]"]);
    let runs = 0;
    let limit: number | undefined;
    w.fake.on((argv) => argv.includes("./smoke.sh"), {
      effect: (cmd) => {
        limit = cmd.maxOutputBytes;
        if (++runs === 2) throw new Error("smoke: /api answered 500");
      },
    });
    const result = await deploy(w, sha);
    assertEquals(result, { ok: false, reason: "deploy failed at gate; rolled back" });
    assertEquals(limit, GATE_OUTPUT_LIMIT);
    const log = await events(w, from);
    assertEquals(log.slice(log.indexOf("gate✗")), ["gate✗", "revert", "drain", "canary✗", "stop", "rolled_back✗"]);
    const s = await status(w);
    assertEquals([s.canary?.state, s.canary?.step], ["reverted", 1]);
    assertMatch(s.canary!.reason!, /^a gate failed: .*smoke: \/api answered 500/);
    assertEquals([s.lastDeploy.outcome, s.lastDeploy.step], ["rolled_back", "gate"]);
    assertEquals(await readCanary(w.paths.dir), undefined);
  });
});

Deno.test("canary: each step starts with the last figures named by their step; promotion says 100%; a stale decision file is ignored", async () => {
  await withWorld("blue-green", async (w) => {
    const { sha } = await withCanary(w);
    await Deno.writeTextFile(join(w.paths.dir, DECISION_FILE), JSON.stringify({ decision: "abort" }));
    const seen: { percent: number; step: number; figuresOf?: number; stepSince: boolean }[] = [];
    w.onSleep = async () => {
      const canary = (JSON.parse(await Deno.readTextFile(w.paths.status)) as AppStatus).canary;
      if (canary && !seen.some((s) => s.percent === canary.percent)) {
        seen.push({
          percent: canary.percent,
          step: canary.step,
          figuresOf: canary.figures?.step,
          stepSince: typeof canary.stepSince === "string",
        });
      }
    };
    assertEquals(await deploy(w, sha), { ok: true });
    assertEquals(seen, [
      { percent: 5, step: 1, figuresOf: undefined, stepSince: true },
      { percent: 25, step: 2, figuresOf: 1, stepSince: true },
      { percent: 50, step: 3, figuresOf: 2, stepSince: true },
    ]);
    const s = await status(w);
    assertEquals([s.canary?.state, s.canary?.percent, s.canary?.figures?.share], ["promoted", 100, 100 / 1100]);
  });
});

Deno.test("canary: a split far from the step's percent says the clients are few (a CDN?)", async () => {
  await withWorld("blue-green", async (w) => {
    const { sha } = await withCanary(w);
    w.canary.script = ({ percent }) =>
      percent === 5
        ? { canary: { requests: 100 }, stable: { requests: 0 } }
        : { canary: { requests: percent * 10 }, stable: { requests: 1000 - percent * 10 } };
    assertEquals(await deploy(w, sha), { ok: true });
    const judged = w.printed.filter((line) => /^✓ canary +\d+% passed/.test(line));
    assertMatch(
      judged[0],
      /split 100% new\); the new release got 100% of the requests, not 5%: the requests come from few clients \(a CDN or load balancer\?\)/,
    );
    assert(!judged[1].includes("few clients"), judged[1]);
  });
});

Deno.test("canary: a cancellation after promotion (in the watch window) ends the canary aborted", async () => {
  await withWorld("blue-green", async (w) => {
    assert((await deploy(w, await commit(w, "ok"))).ok);
    const cancellation = new Cancellation();
    // Cancelled once the canary is promoted: in the watch window (real time, no fake sleeps).
    const sha = await commit(w, "ok", [CANARY], "2s");
    const watching = (async () => {
      for (let i = 0; i < 400 && !cancellation.cancelled; i++) {
        if ((await status(w).catch(() => undefined))?.canary?.state === "promoted") {
          cancellation.cancel("interrupted by a signal");
        }
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    })();
    const result = await deploy(w, sha, { cancellation });
    await watching;
    assertEquals(result.ok, false);
    const s = await status(w);
    assertEquals(s.canary?.state, "aborted");
    assertMatch(s.canary!.reason!, /^cancelled after it passed/);
    assertEquals(await readRoute(w.paths.dir), { port: w.slots.blue });
  });
});

Deno.test("canary command: a wrong word is a usage error naming both", async () => {
  const error = await canaryCommand.run({ args: [APP, "maybe"], opts: {} } as never).then(() => undefined, (e) => e);
  assert(error instanceof UsageError, String(error));
  assertEquals(error.message, 'canary takes "promote" or "abort" after the app, got "maybe"');
  assertMatch(error.suggestion!, /deploy-paradigm canary alpha promote {3}\(or abort\)/);
});

Deno.test("canary: the CLI's decision says the deploy has not taken it yet; a waiting deploy names the canary", async () => {
  await withWorld("blue-green", async (w) => {
    const { sha } = await withCanary(w);
    const said: string[] = [];
    let note = "";
    w.onSleep = async () => {
      if (!said.length && (await readCanary(w.paths.dir))?.percent === 25) {
        const effects = { ...w.effects, print: (line: string) => void said.push(line) };
        assertEquals(await decideCanary(APP, "abort", effects, 0), 0);
        note = canaryWaitNote(w.paths);
      }
    };
    assertEquals((await deploy(w, sha)).ok, false);
    assertMatch(said[0], /canary at 25%, step 2\/3\) will abort it and revert/);
    assertEquals(said[1], "the deploy has not taken it yet (it is in step 2/3, 25%); see `status alpha`");
    assertMatch(note, /its push stays open until the canary ends .*`deploy-paradigm canary alpha promote` or `abort`/);
    assertEquals(canaryWaitNote(w.paths), "");
    assertMatch(await decisionOutcome(w.paths, 0), /^the canary of \w{7} is aborted: aborted by hand at 25%/);
  });
});

Deno.test("status: a line per app with a canary: its step, how it ended, or left by a killed deploy", () => {
  const canary = {
    state: "running" as const,
    release: "r",
    version: "abc1234",
    percent: 25,
    step: 2,
    steps: [5, 25, 50],
    since: "2026-12-03T15:00:00.000Z",
    at: "2026-12-03T15:01:00.000Z",
  };
  const base = {
    name: APP,
    status: "running" as const,
    healthy: true,
    type: "python",
    manager: "systemd",
    port: 8000,
    lastDeploy: {
      outcome: "success" as const,
      release: "r",
      commit: "abc1234",
      version: "abc1234",
      at: "",
      duration: 0,
    },
  };
  const lines = (c: AppStatus["canary"], left = false) =>
    statusLines([{ ...base, canary: c }], new Map(), {
      now: 0,
      color: false,
      leftCanaries: new Set(left ? [APP] : []),
    }).at(-1);
  assertEquals(lines(canary), "alpha  canary of abc1234: 25%, step 2/3 since 2026-12-03T15:00:00.000Z");
  assertEquals(
    lines(canary, true),
    "alpha  canary of abc1234 left by a killed deploy at 25%: run `deploy-paradigm canary alpha abort`",
  );
  assertEquals(
    lines({ ...canary, state: "promoted", reason: "every step passed" }),
    "alpha  canary of abc1234: promoted (every step passed)",
  );
});
