/**
 * Gates and the canary in the deploy pipeline (src/deploy/gates.ts, canary.ts, the blue-green
 * activation), with the fake world of tests/helpers/pipeline_world.ts: a fake runner, a fake proxy
 * that honours canary.json and answers the `canary` op from a script, a fake clock whose sleeps
 * take no time. The real proxy and processes: tests/e2e/canary_test.ts.
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
  git,
  logLength,
  releases,
  status,
  withWorld,
  type World,
} from "../helpers/pipeline_world.ts";
import { Cancellation } from "../../src/deploy/cancel.ts";
import { UsageError } from "../../src/errors.ts";
import { DECISION_FILE, requestDecision } from "../../src/deploy/canary_decision.ts";
import { readReleaseMeta } from "../../src/deploy/releases.ts";
import { readCanary } from "../../src/proxy/canary_file.ts";
import { readRoute } from "../../src/proxy/routes.ts";
import { listAppReleases, rollback } from "../../src/deploy/rollback.ts";

const CANARY = "canary: { steps: [5, 25, 50], interval: 10s, minRequests: 50, maxWait: 30s }";

/** Deploys a first good release (blue), then commits the next with `extra` lines; returns its sha and the log length. */
async function secondRelease(w: World, server: "ok" | "500", extra: string[]) {
  assert((await deploy(w, await commit(w, "ok"))).ok);
  const from = await logLength(w);
  w.fake.calls.length = 0;
  w.proxied.length = 0;
  w.printed.length = 0;
  return { sha: await commit(w, server, extra), from };
}

/** The percents canary.json had, in order, as the fake proxy read them. */
const percents = (w: World) => [...new Set(w.canary.readings.map((r) => r.percent))];

Deno.test("canary pipeline: a good release goes through 3 steps and is promoted; status.json keeps the canary", async () => {
  await withWorld("blue-green", async (w) => {
    const { sha, from } = await secondRelease(w, "ok", [CANARY]);
    assertEquals(await deploy(w, sha), { ok: true });
    assertEquals(percents(w), [5, 25, 50]);
    assertEquals(await readCanary(w.paths.dir), undefined);
    assertEquals(await readRoute(w.paths.dir), { port: w.slots.green });
    const log = await events(w, from);
    assertEquals(log.filter((e) => e === "canary").length, 7); // a start and a judgement per step, the promotion
    assertEquals(log.slice(log.indexOf("switch")), ["switch", "drain", "stop", "cleanup", "success"]);
    const s = await status(w);
    const [, second] = await releases(w);
    assertEquals([s.status, s.release, s.canary?.state, s.canary?.release, s.canary?.step], [
      "running",
      second,
      "promoted",
      second,
      3,
    ]);
    assertEquals(s.canary?.figures?.new.requests, 100);
    assertEquals(s.canary?.figures?.old.errorRate, 0);
    const judged = w.printed.filter((line) => /^✓ canary +\d+% passed/.test(line));
    assertEquals(judged.length, 3);
    assertMatch(judged[0], /new 100 req, 5xx 0%, p95 10 ms; old 1000 req, 5xx 0%, p95 10 ms/);
    // A rollback to the release before drops it from status.json (it was the promoted release's)...
    assertEquals(await rollback(APP, undefined, w.effects), 0);
    assertEquals((await status(w)).canary, undefined);
    // ...and going back to the promoted release by name does not bring it back from nowhere.
    assertEquals(await rollback(APP, second, w.effects), 0);
    assertEquals((await status(w)).canary, undefined);
    // The next deploy without a canary has none either.
    assertEquals(await deploy(w, await commit(w, "ok")), { ok: true });
    assertEquals((await status(w)).canary, undefined);
  });
});

Deno.test("canary pipeline: 10 % 5xx on the new side reverts at the first step; release bad, figures named", async () => {
  await withWorld("blue-green", async (w) => {
    const { sha, from } = await secondRelease(w, "ok", [CANARY]);
    w.canary.script = () => ({ canary: { requests: 100, errors: 10 }, stable: { requests: 1000, errors: 1 } });
    const result = await deploy(w, sha);
    assertEquals(result, { ok: false, reason: "deploy failed at canary; rolled back" });
    assertEquals(percents(w), [5]);
    assertEquals(await readCanary(w.paths.dir), undefined);
    assertEquals(await readRoute(w.paths.dir), { port: w.slots.blue });
    const log = await events(w, from);
    assertEquals(log.slice(log.indexOf("health") + 1), [
      "canary",
      "canary✗",
      "revert",
      "drain",
      "stop",
      "rolled_back✗",
    ]);
    const last = (await entries(w)).at(-1)!;
    assertMatch(last.message!, /^canary: reverted at 5%: 5xx rate 10% on the new release against 0.1% on the old/);
    const [first, second] = await releases(w);
    assertEquals((await readReleaseMeta(w.paths, second))?.bad, true);
    const s = await status(w);
    assertEquals([s.status, s.release, s.canary?.state, s.canary?.release], ["rolled_back", first, "reverted", second]);
    assertEquals([s.lastDeploy.outcome, s.lastDeploy.step], ["rolled_back", "canary"]);
    assert(w.printed.some((line) => /^✗ canary +5% fails: 5xx rate 10%/.test(line)), w.printed.join("\n"));
    assert(w.fake.lines().includes("systemctl disable --now --quiet alpha@green.service"));
  });
});

Deno.test("canary pipeline: a p95 above maxLatencyRatio × the old one reverts; tiny latencies count as the floor", async () => {
  await withWorld("blue-green", async (w) => {
    const { sha } = await secondRelease(w, "ok", [CANARY]);
    // 3 ms against 1 ms passes (both under the floor); then 90 ms against 30 ms fails.
    w.canary.script = ({ percent }) =>
      percent === 5
        ? { canary: { requests: 100, ms: 3 }, stable: { requests: 1000, ms: 1 } }
        : { canary: { requests: 100, ms: 90 }, stable: { requests: 1000, ms: 30 } };
    assertEquals(await deploy(w, sha), { ok: false, reason: "deploy failed at canary; rolled back" });
    assertEquals(percents(w), [5, 25]);
    const s = await status(w);
    assertEquals(s.canary?.state, "reverted");
    assertMatch(s.canary!.reason!, /reverted at 25%: p95 latency \d+ ms on the new release against \d+ ms on the old/);
    assertEquals(await readRoute(w.paths.dir), { port: w.slots.blue });
  });
});

Deno.test("canary pipeline: too few requests waits up to maxWait, then onLowTraffic decides", async () => {
  for (const policy of ["revert", "promote"] as const) {
    await withWorld("blue-green", async (w) => {
      const { sha } = await secondRelease(w, "ok", [
        `canary: { steps: [10, 50], interval: 10s, minRequests: 50, maxWait: 30s, onLowTraffic: ${policy} }`,
      ]);
      w.canary.script = () => ({ canary: { requests: 4 }, stable: { requests: 100 } });
      const result = await deploy(w, sha);
      const waits = w.printed.filter((line) => line.startsWith("… canary"));
      assertMatch(waits[0], /10% waits: 4 of 50 requests on the new release/);
      if (policy === "revert") {
        assertEquals(result.ok, false);
        assertEquals(percents(w), [10]);
        assertMatch((await status(w)).canary!.reason!, /only 12 of 50 requests .* onLowTraffic is revert/);
      } else {
        assertEquals(result.ok, true);
        assertEquals(percents(w), [10, 50]);
        assertEquals((await status(w)).canary?.state, "promoted");
      }
    });
  }
});

Deno.test("canary pipeline: `canary <app> promote` and `abort` decide the running canary", async () => {
  for (const decision of ["promote", "abort"] as const) {
    await withWorld("blue-green", async (w) => {
      const { sha } = await secondRelease(w, "ok", [CANARY]);
      let said = "";
      w.onSleep = async () => {
        if (!said && (await readCanary(w.paths.dir))?.percent === 25) {
          said = await requestDecision(w.paths, decision);
        }
      };
      const result = await deploy(w, sha);
      assertMatch(said, new RegExp(`canary at 25%, step 2/3\\) will ${decision === "promote" ? "promote" : "abort"}`));
      assertEquals(percents(w), [5, 25]);
      assertEquals(await Deno.stat(join(w.paths.dir, DECISION_FILE)).then(() => true, () => false), false);
      const s = await status(w);
      if (decision === "promote") {
        assertEquals(result, { ok: true });
        assertEquals([s.canary?.state, s.canary?.reason], ["promoted", "promoted by hand at 25%"]);
        assertEquals(await readRoute(w.paths.dir), { port: w.slots.green });
      } else {
        assertEquals(result, { ok: false, reason: "deploy failed at canary; rolled back" });
        assertEquals(s.canary?.state, "aborted");
        assertMatch(s.canary!.reason!, /^aborted by hand at 25%/);
        assertEquals(await readRoute(w.paths.dir), { port: w.slots.blue });
      }
      // Refused when no canary runs.
      const refused = await requestDecision(w.paths, decision).catch((e) => e.message);
      assertEquals(refused, `no canary of ${APP} runs now`);
    });
  }
});

Deno.test("canary pipeline: a release whose canary reverted or was aborted served: bad, not never served", async () => {
  for (const end of ["revert", "abort"] as const) {
    await withWorld("blue-green", async (w) => {
      const { sha } = await secondRelease(w, "ok", [CANARY]);
      if (end === "revert") {
        w.canary.script = () => ({ canary: { requests: 100, errors: 10 }, stable: { requests: 1000, errors: 1 } });
      }
      let pendingAtFirstStep: boolean | undefined = true;
      w.onSleep = async () => {
        if (pendingAtFirstStep && (await readCanary(w.paths.dir))?.percent === 5) {
          pendingAtFirstStep = (await readReleaseMeta(w.paths, (await releases(w)).at(-1)!))?.pending;
          if (end === "abort") await requestDecision(w.paths, "abort");
        }
      };
      assertEquals(await deploy(w, sha), { ok: false, reason: "deploy failed at canary; rolled back" });
      // Once the first split takes traffic, the release has served.
      assertEquals(pendingAtFirstStep, undefined, end);
      const [, second] = await releases(w);
      const meta = await readReleaseMeta(w.paths, second);
      assertEquals([meta?.bad, meta?.pending], [true, undefined], end);
      const row = (await listAppReleases(APP, w.root)).find((r) => r.id === second);
      assertEquals([row?.state, row?.bad], ["bad", true], end);
      // Gone back to by name, as a bad release can be (not refused as never served).
      assertEquals(await rollback(APP, second, w.effects), 0, end);
      assertEquals((await readReleaseMeta(w.paths, second))?.bad, undefined, end);
    });
  }
});

Deno.test("canary pipeline: a cancelled push mid-canary reverts it; the release goes", async () => {
  await withWorld("blue-green", async (w) => {
    const { sha } = await secondRelease(w, "ok", [CANARY]);
    const cancellation = new Cancellation();
    w.onSleep = async () => {
      if ((await readCanary(w.paths.dir))?.percent === 25) cancellation.cancel("interrupted by a signal");
    };
    const result = await deploy(w, sha, { cancellation });
    assertEquals(result, { ok: false, reason: "deploy cancelled at canary; rolled back" });
    assertEquals(await readCanary(w.paths.dir), undefined);
    assertEquals(await readRoute(w.paths.dir), { port: w.slots.blue });
    assertEquals((await status(w)).canary?.state, "aborted");
    assertEquals((await releases(w)).length, 1);
  });
});

Deno.test("gates: a failing gate fails the deploy at step gate, nothing switched, the new slot stopped", async () => {
  await withWorld("blue-green", async (w) => {
    const { sha, from } = await secondRelease(w, "ok", [
      "gates: [./smoke.sh, { command: [./check, --fast], timeout: 5s }]",
    ]);
    let env: Record<string, string> | undefined;
    w.fake.on((argv) => argv.includes("./check"), {
      code: 1,
      output: "smoke: /api answered 500",
      effect: (cmd) => void (env = cmd.env),
    });
    const result = await deploy(w, sha);
    assertEquals(result, { ok: false, reason: "deploy failed at gate" });
    const log = await events(w, from);
    assertEquals(log.slice(log.indexOf("health") + 1), ["gate", "gate✗", "stop", "failed✗"]);
    const gates = w.fake.calls.filter((argv) => argv.includes("./smoke.sh") || argv.includes("./check"));
    assertEquals(gates.length, 2);
    assertEquals(env?.DEPLOY_URL, `http://127.0.0.1:${w.slots.green}`);
    assertEquals(await readRoute(w.paths.dir), { port: w.slots.blue });
    assert(w.printed.some((line) => line.includes("smoke: /api answered 500")), w.printed.join("\n"));
    assert(w.fake.lines().includes("systemctl disable --now --quiet alpha@green.service"));
    assertEquals((await releases(w)).length, 1);
  });
});

Deno.test("gates: they run before the switch and before each canary step, with DEPLOY_URL", async () => {
  await withWorld("blue-green", async (w) => {
    const { sha } = await secondRelease(w, "ok", ["gates: [./smoke.sh]", CANARY]);
    assertEquals(await deploy(w, sha), { ok: true });
    const announced = w.printed.filter((line) => line.startsWith("▸ gate"));
    assertEquals(announced.map((line) => line.replace(/.*, before /, "")), [
      "canary step 1/3 (5%)",
      "canary step 2/3 (25%)",
      "canary step 3/3 (50%)",
      "the switch",
    ]);
    assertMatch(announced[0], new RegExp(`\\./smoke\\.sh against http://127\\.0\\.0\\.1:${w.slots.green}`));
  });
});

Deno.test("canary pipeline: a first deploy has no canary (said); a killed canary is ended by the next deploy", async () => {
  await withWorld("blue-green", async (w) => {
    assert((await deploy(w, await commit(w, "ok", [CANARY]))).ok);
    assert(w.printed.some((line) => line.includes("canary: none for this first deploy")));
    assertEquals(percents(w), []);
    // A deploy killed mid-canary leaves its marker, canary.json and the green slot running.
    await Deno.writeTextFile(join(w.paths.dir, ".deploying"), JSON.stringify({ commit: "f".repeat(40), pid: 1 }));
    await Deno.writeTextFile(
      join(w.paths.dir, "canary.json"),
      JSON.stringify({ target: { port: w.slots.green }, slot: "green", percent: 25, since: new Date().toISOString() }),
    );
    w.fake.calls.length = 0;
    w.printed.length = 0;
    assert((await deploy(w, await commit(w, "ok"))).ok);
    assert(w.printed.some((line) => line.includes("the interrupted deploy's canary ended")), w.printed.join("\n"));
    assertEquals(w.fake.lines()[0], "systemctl disable --now --quiet alpha@green.service");
    assertEquals(await readCanary(w.paths.dir), undefined);
  });
});

Deno.test("canary pipeline: a dry run shows the canary and the gates", async () => {
  await withWorld("blue-green", async (w) => {
    assert((await deploy(w, await commit(w, "ok"))).ok);
    w.printed.length = 0;
    const sha = await commit(w, "ok", [CANARY, "gates: [./smoke.sh]"]);
    assertEquals(await deploy(w, sha, { dryRun: true }), { ok: true });
    const text = w.printed.join("\n");
    assertMatch(
      text,
      /canary: would send 5%, 25%, 50% of clients to it, 10s a step, reverting when its 5xx rate is more than 1% above/,
    );
    assertMatch(text, /would run 1 gate against the healthy new slot .* before the switch and before each canary step/);
    assertMatch(text, /would run: \.\/smoke\.sh/);
    assertEquals(await readCanary(w.paths.dir), undefined);
  });
});

Deno.test("gates and canary are refused with strategy restart or a static app: exit 2, nothing changed", async () => {
  await withWorld("restart", async (w) => {
    const sha = await commit(w, "ok", ["gates: [./smoke.sh]"]);
    const error = await deploy(w, sha).then(() => undefined, (e) => e);
    assert(error instanceof UsageError, String(error));
    assertMatch(error.message, /^deploy\.yml:6:1: `gates` needs the blue-green strategy .* has strategy: restart$/);
    assertMatch(error.suggestion!, /set strategy: blue-green in config\.yml/);
    assertEquals(await Deno.stat(w.paths.releases).then(() => true, () => false), false);
    // With another problem of the same kind: both at once, each with its fix.
    const both = await commit(w, "ok", ["gates: [./smoke.sh]", "processes:", "  web: { instances: 2 }"]);
    const two = await deploy(w, both).then(() => undefined, (e) => e);
    assert(two instanceof UsageError, String(two));
    assertMatch(
      two.message,
      /^2 problems stop this deploy:\n {2}deploy\.yml:8:10: processes\.web\.instances is 2, but .* has strategy: restart\n {4}fix: several web processes need the proxy .*\n {2}deploy\.yml:6:1: `gates` needs the blue-green .*\n {4}fix: set strategy: blue-green/,
    );
    assertEquals(await Deno.stat(w.paths.releases).then(() => true, () => false), false);
  });
  await withWorld("blue-green", async (w) => {
    await Deno.writeTextFile(join(w.work, "deploy.yml"), `name: ${APP}\ntype: static\ncanary: true\ngates: [./s]\n`);
    await git(w.work, "add", "-A");
    await git(w.work, "commit", "-q", "-m", "static");
    await git(w.work, "push", "-q", w.repo, "HEAD:refs/heads/incoming", "--force");
    const error = await deploy(w, await git(w.work, "rev-parse", "HEAD")).then(() => undefined, (e) => e);
    assert(error instanceof UsageError, String(error));
    assertMatch(
      error.message,
      /^deploy\.yml:4:1: `gates` and `canary` need the blue-green .* serves static files only$/,
    );
    assertEquals(await Deno.stat(w.paths.releases).then(() => true, () => false), false);
  });
});

Deno.test("canary pipeline: a canary that passed but whose release fails its watch window ends reverted", async () => {
  await withWorld("blue-green", async (w) => {
    assert((await deploy(w, await commit(w, "ok"))).ok);
    const result = await deploy(w, await commit(w, "flaky", [CANARY], "1s"));
    assertEquals(result, { ok: false, reason: "deploy failed at watch; rolled back" });
    assertEquals(percents(w), [5, 25, 50]);
    const s = await status(w);
    assertEquals([s.status, s.canary?.state], ["rolled_back", "reverted"]);
    assertMatch(s.canary!.reason!, /^reverted after it passed: failed in the watch window/);
    assertEquals(await readRoute(w.paths.dir), { port: w.slots.blue });
  });
});
