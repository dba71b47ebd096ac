/**
 * `rollout`'s pure parts: its options and their errors, the servers of an app (fleet servers and
 * git remotes) and their push URLs, the servers picked, the waves; and the run's decisions (stop
 * at a failure, roll back, interrupt, decline) against a scripted git, written into a real
 * (in-memory) fleet database and read back through the read side (src/fleet/rollouts.ts). The
 * real pushes are in tests/e2e/rollout_test.ts.
 */
import { throws } from "node:assert/strict";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { UsageError } from "../../src/errors.ts";
import { FleetStore } from "../../src/fleet/store.ts";
import { rolloutById } from "../../src/fleet/rollouts.ts";
import {
  type FleetHost,
  isLocalPath,
  isServerRepo,
  noAliases,
  parseSshUrl,
  pickTargets,
  pointsAtApp,
  pushFailure,
  type Resolver,
  rolloutOptions,
  rolloutTargets,
  shellWord,
  type Target,
  waves,
} from "../../src/rollout/plan.ts";
import { claimApp, RolloutRecord } from "../../src/rollout/record.ts";
import { REREADS, runWaves, type ServerGit } from "../../src/rollout/run.ts";
import { ask } from "../../src/rollout/ask.ts";
import { cleanLine, LocalRepo } from "../../src/rollout/git.ts";
import { preflight } from "../../src/rollout/rollout.ts";
import { ProcessRunner } from "../../src/runner.ts";

function usageError(fn: () => unknown, message: RegExp): void {
  throws(fn, (error: unknown) => {
    assert(error instanceof UsageError, `expected a UsageError, got ${error}`);
    assertEquals(error.exitCode, 2);
    assertMatch(error.message, message);
    return true;
  });
}

Deno.test("rollout options: defaults, and every bad option a clear usage error", () => {
  assertEquals(rolloutOptions("web", { all: true }, false), {
    app: "web",
    servers: undefined,
    parallel: 1,
    confirm: false,
    yes: false,
    ref: "HEAD",
    onFailure: "rollback",
    force: false,
  });
  const picked = rolloutOptions("web", { servers: "b, a", parallel: "3", ref: "v1.2", "on-failure": "stop" }, false);
  assertEquals([picked.servers, picked.parallel, picked.ref, picked.onFailure], [["b", "a"], 3, "v1.2", "stop"]);
  assertEquals(rolloutOptions("web", { all: true, confirm: true, yes: true }, false).yes, true);
  assertEquals(rolloutOptions("web", { all: true, confirm: true }, true).confirm, true);

  usageError(() => rolloutOptions("Web", { all: true }, false), /"Web" is not a valid app name/);
  usageError(() => rolloutOptions("web", {}, false), /say which servers: --servers a,b or --all/);
  usageError(() => rolloutOptions("web", { all: true, servers: "a" }, false), /not both/);
  usageError(() => rolloutOptions("web", { servers: "a,,b" }, false), /names separated by commas/);
  usageError(() => rolloutOptions("web", { servers: "a,b,a" }, false), /names "a" twice/);
  for (const bad of ["0", "-1", "1.5", "x", "33", ""]) {
    usageError(() => rolloutOptions("web", { all: true, parallel: bad }, false), /--parallel must be a whole number/);
  }
  usageError(() => rolloutOptions("web", { all: true, ref: "--upload-pack=x" }, false), /--ref must name a commit/);
  usageError(() => rolloutOptions("web", { all: true, ref: "a b" }, false), /--ref must name a commit/);
  usageError(() => rolloutOptions("web", { all: true, "on-failure": "pray" }, false), /--on-failure must be one of/);
  usageError(() => rolloutOptions("web", { all: true, confirm: true }, false), /no terminal to ask on/);
  usageError(() => rolloutOptions("web", { all: true, yes: true }, true), /without --confirm nothing is asked/);
});

Deno.test("rollout: git ssh URLs parsed, and which point at the app", () => {
  assertEquals(parseSshUrl("root@10.0.0.5:/var/repos/web.git"), {
    user: "root",
    host: "10.0.0.5",
    path: "/var/repos/web.git",
  });
  assertEquals(parseSshUrl("ssh://deploy@[2001:db8::1]:2222/var/repos/web.git"), {
    user: "deploy",
    host: "2001:db8::1",
    port: 2222,
    path: "/var/repos/web.git",
  });
  assertEquals(parseSshUrl("host.example:repos/web"), { user: undefined, host: "host.example", path: "repos/web" });
  assertEquals(parseSshUrl("https://github.com/x/web.git"), undefined);
  assertEquals(parseSshUrl("/srv/web.git"), undefined);
  assertEquals(parseSshUrl("./web.git"), undefined);
  for (const bad of ["ext::sh -c touch% /tmp/x", "fd::3", "-oProxyCommand=x:/var/repos/web.git"]) {
    assertEquals(parseSshUrl(bad), undefined, bad);
  }
  assertEquals(parseSshUrl("ssh://-oProxyCommand=x/var/repos/web.git"), undefined);
  assertEquals(parseSshUrl("-l@host:/var/repos/web.git"), undefined);
  assert(isServerRepo("/tmp/dp-x/var/repos/web.git", "web"));
  assert(!isServerRepo("/var/repos/code/web.git", "web"));
  assert(pointsAtApp("/var/repos/web.git", "web"));
  assert(pointsAtApp("repos/web/", "web"));
  assert(!pointsAtApp("/var/repos/webshop.git", "web"));
});

const fleet: FleetHost[] = [
  { name: "alpha", host: "10.0.0.1", user: "root", port: 22 },
  { name: "beta", host: "10.0.0.2", user: "deploy", port: 2222, identityFile: "~/.ssh/beta" },
  { name: "gamma", host: "10.0.0.3", user: "root", port: 22 },
  { name: "home", host: "local", user: "root", port: 22 },
];

Deno.test("rollout targets: fleet servers (runs: in the database, or a remote points there), then server remotes", () => {
  const remotes = [
    { name: "origin", url: "git@github.com:me/web.git" }, // a code host: never a server
    { name: "code", url: "root@code:/var/repos/code/web.git" }, // nor a repository server's web.git
    { name: "prod-b", url: "ssh://deploy@10.0.0.2:2222/srv/git/web.git" }, // on a fleet host: that server
    { name: "edge", url: "root@edge.example:/var/repos/web.git" },
    { name: "edge-again", url: "root@edge.example:/var/repos/web.git" },
    { name: "other", url: "root@10.0.0.9:/var/repos/api.git" },
  ];
  const targets = rolloutTargets("web", fleet, new Set(["alpha", "home"]), remotes, "/var/repos/web.git");
  assertEquals(targets.map((t) => [t.name, t.url, t.fleet !== undefined, t.runs]), [
    ["alpha", "ssh://root@10.0.0.1:22/var/repos/web.git", true, true],
    ["beta", "ssh://deploy@10.0.0.2:2222/srv/git/web.git", true, true], // not in the database, but its remote says
    ["gamma", "ssh://root@10.0.0.3:22/var/repos/web.git", true, false], // for --servers only
    ["home", "/var/repos/web.git", true, true],
    ["edge", "root@edge.example:/var/repos/web.git", false, true],
  ]);
  assertEquals(
    rolloutTargets("web", [{ name: "v6", host: "2001:db8::1", user: "root", port: 22 }], new Set(["v6"]), [], "")[0]
      .url,
    "ssh://root@[2001:db8::1]:22/var/repos/web.git",
  );
  usageError(
    () =>
      rolloutTargets("web", fleet, new Set(["alpha"]), [{ name: "alpha", url: "root@1.2.3.4:/var/repos/web.git" }], ""),
    /the git remote "alpha" .* has the name of the fleet server "alpha"/,
  );
});

Deno.test("rollout targets: ssh aliases resolved, one repository pushed once", () => {
  const resolve: Resolver = (host, port, user) =>
    host === "prod-a" ? { host: "10.0.0.1", port: 22, user: "root" } : noAliases(host, port, user);
  const remotes = [{ name: "a-alias", url: "prod-a:/var/repos/web.git" }];
  const twice = [...fleet, { name: "alpha2", host: "10.0.0.1", user: "root", port: 22 }];
  const targets = rolloutTargets("web", twice, new Set(["alpha", "alpha2"]), remotes, "", resolve);
  assertEquals(targets.filter((t) => t.name.startsWith("a")).map((t) => [t.name, t.remote]), [
    ["alpha", "a-alias"],
    ["alpha2", undefined],
  ]);
  const all = pickTargets(targets, rolloutOptions("web", { all: true }, false));
  assertEquals(all.map((t) => t.name), ["alpha"], "alpha2 is alpha's repository; the alias is alpha");
  const some = pickTargets(targets, rolloutOptions("web", { servers: "alpha2,alpha,beta" }, false));
  assertEquals(some.map((t) => t.name), ["alpha2", "beta"]);
});

Deno.test("rollout: --all, --servers in the order given (any fleet server), unknown names refused", () => {
  const targets = rolloutTargets("web", fleet, new Set(["alpha", "beta"]), [], "");
  const options = rolloutOptions("web", { all: true }, false);
  assertEquals(pickTargets(targets, options).map((t) => t.name), ["alpha", "beta"]);
  const some = rolloutOptions("web", { servers: "gamma,alpha" }, false);
  assertEquals(pickTargets(targets, some).map((t) => t.name), ["gamma", "alpha"], "gamma: just set up");
  usageError(
    () => pickTargets(targets, rolloutOptions("web", { servers: "alpah" }, false)),
    /"alpah" is not in the fleet config, nor a git remote here .*; the known servers: alpha, beta, gamma, home/,
  );
  usageError(() => pickTargets([], options), /no server is known to run web/);
  throws(
    () => pickTargets(rolloutTargets("web", fleet, new Set(), [], ""), options),
    (e: Error & { suggestion?: string }) => /add --servers|--servers NAME/.test(e.suggestion ?? "") || false,
  );
});

Deno.test("rollout --servers NAME: a git remote that is a local path (or not a server's) is said to be one, not missing", () => {
  const remotes = [
    { name: "production", url: "/tmp/x/var/repos/web.git" },
    { name: "staging", url: "file:///tmp/x/var/repos/web.git" },
    { name: "sibling", url: "../web.git" },
    { name: "origin", url: "https://bot:s3cret@github.com/acme/web.git" },
  ];
  const targets = rolloutTargets("web", fleet, new Set(["alpha"]), remotes, "/var/repos/web.git");
  for (const remote of remotes.slice(0, 3)) {
    usageError(
      () => pickTargets(targets, rolloutOptions("web", { servers: remote.name }, false), remotes),
      new RegExp(
        `^the git remote "${remote.name}" is a path on this machine \\(${
          JSON.stringify(remote.url).replaceAll(".", "\\.").replaceAll("/", "\\/")
        }\\), not a server: rollout deploys to servers over ssh$`,
      ),
    );
  }
  throws(
    () => pickTargets(targets, rolloutOptions("web", { servers: "production" }, false), remotes),
    (e: Error & { suggestion?: string }) =>
      /fleet add here local, then deploy-paradigm rollout web --servers here/.test(e.suggestion ?? ""),
  );
  usageError(
    () => pickTargets(targets, rolloutOptions("web", { servers: "origin" }, false), remotes),
    /^the git remote "origin" \("https:\/\/bot:…@github\.com\/acme\/web\.git"\) is not a server's repository of web/,
  );
  assertEquals(["/a/b", "./a", "a", "file:///a", "C/x:y"].map(isLocalPath), [true, true, true, true, true]);
  assertEquals(["host:a", "u@h:/a", "ssh://h/a", "https://h/a", "ext::cmd"].map(isLocalPath), [
    false,
    false,
    false,
    false,
    false,
  ]);
});

Deno.test("rollout waves: the first server alone, then the rest N at a time", () => {
  assertEquals(waves([], 2), []);
  assertEquals(waves(["a"], 2), [["a"]]);
  assertEquals(waves(["a", "b", "c", "d", "e"], 2), [["a"], ["b", "c"], ["d", "e"]]);
  assertEquals(waves(["a", "b", "c", "d"], 1), [["a"], ["b"], ["c"], ["d"]]);
  assertEquals(waves(["a", "b", "c"], 10), [["a"], ["b", "c"]]);
});

Deno.test("rollout: ssh words quoted for GIT_SSH_COMMAND; a rejected push's reason", () => {
  assertEquals(shellWord("UserKnownHostsFile=/a/b c"), `'UserKnownHostsFile=/a/b c'`);
  assertEquals(shellWord("it's"), `'it'\\''s'`);
  assertEquals(shellWord("-p"), "-p");
  assertEquals(
    pushFailure(["To ssh://x/web.git", " ! [remote rejected] abc -> main (deploy failed at health)"], 1),
    "deploy failed at health",
  );
  assertEquals(
    pushFailure(["ssh: connect to host 10.0.0.1 port 22: No route to host", "fatal: Could not read"], 128),
    "fatal: Could not read",
  );
  assertEquals(pushFailure([], 128), "git push exited with code 128");
});

// ---------------------------------------------------------------- the run against a scripted git

const OLD = "a".repeat(40);
const NEW = "b".repeat(40);

/**
 * What a scripted server does with a push of the new commit: `fail` rejects it (health); `stored`
 * stores it on another branch (deploys none); `drop` deploys it and loses the connection; `lost`
 * loses the connection and then cannot be read; `silent` moves the branch without deploying.
 */
type Script = "fail" | "stored" | "drop" | "lost" | "silent";

/** Servers whose pushes do what `script` says; any other push moves the branch and deploys. */
function scriptedGit(script: Record<string, Script>, onPush: (name: string) => void = () => {}) {
  const heads = new Map<string, string | null>();
  const pushes: string[] = [];
  const unreadable = new Set<string>();
  const fails = (tail: string[], code = 1) => Promise.resolve({ code, output: tail.join("\n"), tail });
  const git: ServerGit = {
    head: (t) =>
      unreadable.has(t.name) ? Promise.reject(new Error("ssh: connect: timed out")) : Promise.resolve(
        heads.has(t.name) ? heads.get(t.name)! : OLD,
      ),
    push(t, refspec, onLine) {
      pushes.push(`${t.name} ${refspec.slice(0, 2)}`);
      onPush(t.name);
      const commit = refspec.replace(/^\+/, "").split(":")[0];
      const what = commit === NEW ? script[t.name] : undefined;
      if (what === "fail") {
        onLine(" ! [remote rejected] x -> main (deploy failed at health)");
        return fails([" ! [remote rejected] x -> main (deploy failed at health)"]);
      }
      if (what === "stored") {
        onLine("remote: deploy-paradigm: refs/heads/main stored; only production deploys");
        return fails([], 0);
      }
      if (what === "lost") {
        unreadable.add(t.name);
        return fails(
          ["mux_client_request_session: read from master failed: Broken pipe", "fatal: the remote hung up"],
          255,
        );
      }
      heads.set(t.name, commit);
      if (what === "drop") return fails(["Connection to x closed by remote host.", "fatal: the remote hung up"], 255);
      if (what !== "silent") onLine(`remote: ✓ deployed web ${commit.slice(0, 7)} (release 3) in 2.0s`);
      return fails([], 0);
    },
  };
  return { git, heads, pushes };
}

async function run(
  onFailure: "rollback" | "stop",
  script: Record<string, Script> | Set<string>,
  extra: {
    stop?: AbortController;
    ask?: (q: string) => Promise<boolean>;
    onPush?: (name: string) => void;
    force?: boolean;
  } = {},
) {
  const store = await FleetStore.open(":memory:");
  const targets: Target[] = ["a", "b", "c", "d"].map((name) => ({ name, url: `ssh://${name}/web.git` }));
  const plan = waves(targets, 2);
  const before = new Map(targets.map((t) => [t.name, OLD]));
  const record = RolloutRecord.start(store, {
    app: "web",
    ref: "HEAD",
    commit: NEW,
    startedAt: 1000,
    options: { parallel: 2 },
    servers: plan.flatMap((w, i) => w.map((t) => ({ name: t.name, wave: i + 1, versionBefore: "aaaaaaa" }))),
  });
  const scripted = script instanceof Set ? Object.fromEntries([...script].map((n) => [n, "fail" as const])) : script;
  const { git, heads, pushes } = scriptedGit(scripted, extra.onPush);
  let clock = 1000;
  const printed: string[] = [];
  const sleeps: number[] = [];
  const result = await runWaves({
    app: "web",
    commit: NEW,
    branch: "main",
    waves: plan,
    before,
    parallel: 2,
    onFailure,
    force: extra.force,
    ask: extra.ask,
    git,
    record,
    print: (line) => printed.push(line),
    now: () => clock += 100,
    sleep: (ms) => Promise.resolve(void sleeps.push(ms)),
    stop: (extra.stop ?? new AbortController()).signal,
  });
  record.finish(result.outcome, clock, result.message);
  const view = rolloutById(store, record.id)!;
  store.close();
  const outcomes = view.servers.map((s) => `${s.server}:${s.outcome}`);
  const message = (name: string) => view.servers.find((s) => s.server === name)?.message ?? "";
  return { result, view, heads, pushes, outcomes, printed, sleeps, message };
}

Deno.test("rollout run: all good; a failure in wave 2 rolls back the switched servers, or stops", async () => {
  const good = await run("rollback", new Set());
  assertEquals(good.result.outcome, "success");
  assertEquals(good.view.outcome, "success");
  assertEquals(good.outcomes, ["a:success", "b:success", "c:success", "d:success"]);
  assertEquals(good.view.servers.map((s) => [s.versionBefore, s.versionAfter]), Array(4).fill(["aaaaaaa", "bbbbbbb"]));
  assert(good.view.servers.every((s) => s.durationMs! > 0 && s.startedAt), JSON.stringify(good.view.servers));

  const back = await run("rollback", new Set(["c"]));
  assertEquals(back.result.outcome, "rolled_back");
  assertEquals(back.outcomes, ["a:rolled_back", "b:rolled_back", "c:failed", "d:skipped"]);
  assertEquals([...back.heads.values()].every((h) => h === OLD), true);
  assertEquals(back.pushes, ["a bb", "b bb", "c bb", "a +a", "b +a"]);
  assertMatch(back.view.message ?? "", /c: deploy failed at health; rolled back a and b/);
  assertEquals(back.view.servers.find((s) => s.server === "c")?.message, "deploy failed at health");
  assertEquals(back.view.servers.map((s) => s.versionAfter), ["aaaaaaa", "aaaaaaa", "aaaaaaa", "aaaaaaa"]);

  const first = await run("rollback", new Set(["a"]));
  assertEquals(first.result.outcome, "failed", "the first server failed: nothing had switched, nothing to roll back");
  assertEquals(first.outcomes, ["a:failed", "b:skipped", "c:skipped", "d:skipped"]);
  assertMatch(first.view.message ?? "", /^a: deploy failed at health; no server had switched/);
  assertEquals(first.pushes, ["a bb"]);

  const stop = await run("stop", new Set(["b"]));
  assertEquals(stop.result.outcome, "failed");
  assertEquals(stop.outcomes, ["a:success", "b:failed", "c:success", "d:skipped"], "c was in b's wave: it ran");
  assertEquals(stop.pushes.length, 3);
});

Deno.test("rollout run: interrupted during the first wave; declined at the second wave's question", async () => {
  const stop = new AbortController();
  const interrupted = await run("rollback", new Set(), { stop, onPush: () => stop.abort() });
  assertEquals(interrupted.result.outcome, "interrupted");
  assertEquals(interrupted.outcomes, ["a:success", "b:interrupted", "c:interrupted", "d:interrupted"]);
  assertEquals(interrupted.pushes, ["a bb"], "the running push finished, no other started, nothing rolled back");

  const questions: string[] = [];
  const declined = await run("rollback", new Set(), {
    ask: (q) => Promise.resolve(questions.push(q) === 1),
  });
  assertEquals(declined.result.outcome, "stopped");
  assertEquals(declined.outcomes, ["a:success", "b:skipped", "c:skipped", "d:skipped"]);
  assertEquals(questions, ["wave 1/3 (a): deploy bbbbbbb? [y/N] ", "wave 2/3 (b, c): deploy bbbbbbb? [y/N] "]);
});

Deno.test("rollout run: success needs the server's '✓ deployed' and the branch; 'stored; only main deploys' fails", async () => {
  const stored = await run("rollback", { a: "stored" });
  assertEquals(stored.result.outcome, "failed");
  assertEquals(stored.outcomes, ["a:failed", "b:skipped", "c:skipped", "d:skipped"]);
  assertEquals(stored.message("a"), "nothing deployed: a deploys production, the commit's deploy.yml says main");
  const silent = await run("stop", { a: "silent" });
  assertEquals(silent.outcomes[0], "a:failed");
  assertMatch(silent.message("a"), /the server never said "✓ deployed web bbbbbbb"/);
  const forced = await run("rollback", {}, { force: true });
  assertEquals(forced.pushes, ["a +b", "b +b", "c +b", "d +b"], "--force: forced updates");
});

Deno.test("rollout run: a push that dropped after the switch is rolled back; an unreadable one is 'state unknown'", async () => {
  const dropped = await run("rollback", { b: "drop" });
  assertEquals(dropped.result.outcome, "rolled_back");
  assertEquals(
    dropped.outcomes,
    ["a:rolled_back", "b:rolled_back", "c:success", "d:skipped"].map((o) => o === "c:success" ? "c:rolled_back" : o),
  );
  assertMatch(dropped.message("b"), /the connection was lost after it deployed/);
  assert(!/mux_client|fatal: /.test(dropped.view.message ?? ""), dropped.view.message ?? "");
  assertEquals([...dropped.heads.values()].every((h) => h === OLD), true);

  const lost = await run("rollback", { b: "lost" });
  assertEquals(lost.result.outcome, "failed", "never rolled_back while a server's state is unknown");
  assertMatch(lost.view.message ?? "", /state unknown on b/);
  assertMatch(lost.message("b"), /state unknown: main could not be read after the push/);
  assertEquals(lost.sleeps, REREADS.filter(Boolean), "read again a few times before giving up");
  assertEquals(lost.outcomes, ["a:rolled_back", "b:failed", "c:rolled_back", "d:skipped"]);
});

Deno.test("rollout run: stop names the servers that stay; Ctrl-C before the rollback keeps them 'success'", async () => {
  const stop = await run("stop", { c: "fail" });
  assertMatch(stop.view.message ?? "", /c: deploy failed at health; --on-failure stop: a and b stay on bbbbbbb$/);

  const ctrlC = new AbortController();
  const cancelled = await run("rollback", { c: "fail" }, { stop: ctrlC, onPush: (n) => n === "c" && ctrlC.abort() });
  assertEquals(cancelled.result.outcome, "failed");
  assertEquals(cancelled.outcomes, ["a:success", "b:success", "c:failed", "d:interrupted"]);
  assertMatch(cancelled.message("a"), /not rolled back: the rollback was cancelled/);
  assertMatch(cancelled.view.message ?? "", /the rollback was cancelled: a and b still serve bbbbbbb/);

  const interrupted = new AbortController();
  const again = await run("rollback", {}, { stop: interrupted, onPush: () => interrupted.abort() });
  assertMatch(again.view.message ?? "", /not started: b, c and d; run the same rollout again to finish/);
});

Deno.test("rollout record: a running rollout of the app is refused while its pid lives, else marked interrupted", async () => {
  const store = await FleetStore.open(":memory:");
  try {
    const start = (pid: number) =>
      RolloutRecord.start(store, {
        app: "web",
        ref: "main",
        commit: NEW,
        startedAt: 1,
        options: { pid, hostname: "laptop" },
        servers: [{ name: "a", wave: 1, versionBefore: null }],
      });
    const first = start(111);
    first.server("a", { outcome: "deploying", startedAt: 5 });
    assertEquals(claimApp(store, "web", 9, "laptop", () => true), { id: first.id, pid: 111, hostname: "laptop" });
    assertEquals(claimApp(store, "api", 9, "laptop", () => true), undefined, "another app");
    assertEquals(claimApp(store, "web", 9, "laptop", () => false), undefined);
    const view = rolloutById(store, first.id)!;
    assertEquals([view.outcome, view.servers[0].outcome], ["interrupted", "interrupted"]);
    assertMatch(view.servers[0].message ?? "", /the laptop lost track of it/);

    const second = start(222);
    second.server("a", { outcome: "deploying", startedAt: 5 });
    assertEquals(second.lostTrack(20), ["a"]);
    assertEquals(second.row("a")?.outcome, "interrupted");
  } finally {
    store.close();
  }
});

Deno.test("rollout pre-flight: behind the server's branch refused unless --force; a missing commit to go back to", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dp-rollout-unit-" });
  try {
    const git = async (...args: string[]) => {
      const out = await new Deno.Command("git", {
        args: ["-c", "user.name=t", "-c", "user.email=t@t", ...args],
        cwd: dir,
        stdout: "piped",
        stderr: "piped",
      }).output();
      assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
      return new TextDecoder().decode(out.stdout).trim();
    };
    await git("init", "-q", "-b", "main");
    await git("commit", "-q", "--allow-empty", "-m", "one");
    const one = await git("rev-parse", "HEAD");
    await git("commit", "-q", "--allow-empty", "-m", "two");
    const two = await git("rev-parse", "HEAD");
    const repo = new LocalRepo(dir);
    const targets: Target[] = [{ name: "a", url: "x" }, { name: "b", url: "y" }];
    const printed: string[] = [];
    const io = {
      cwd: dir,
      print: (l: string) => printed.push(l),
      ask: () => Promise.resolve(false),
      stop: new AbortController().signal,
    };
    const check = (
      force: boolean,
      onFailure: "rollback" | "stop",
      before: Record<string, string | null>,
      commit = one,
    ) =>
      preflight(
        repo,
        { ...rolloutOptions("web", { all: true, "on-failure": onFailure }, false), force },
        targets,
        new Map(Object.entries(before)),
        commit,
        "main",
        new Map(),
        io,
      );
    await rejectsUsage(() => check(false, "stop", { a: two, b: null }), /\w{7} is not ahead of main on a \(at \w{7}\)/);
    await check(true, "stop", { a: two, b: null });
    await check(false, "rollback", { a: one, b: one }, two);
    const unknown = "c".repeat(40);
    await rejectsUsage(
      () => check(false, "rollback", { a: one, b: unknown }, two),
      new RegExp(`the commit to roll back to is not in this repository for b \\(${unknown}\\)`),
    );
    await check(false, "stop", { a: one, b: unknown }, two);
    assertMatch(printed.join("\n"), /note: b has a commit on main unknown here/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

async function rejectsUsage(fn: () => Promise<unknown>, message: RegExp): Promise<void> {
  try {
    await fn();
  } catch (error) {
    assert(error instanceof UsageError, `expected a UsageError, got ${error}`);
    assertMatch(error.message, message);
    return;
  }
  throw new Error(`expected a rejection matching ${message}`);
}

Deno.test("rollout ask: a line y/yes is yes, anything else, the end or a stop is no; no listener left", async () => {
  const fake = (...chunks: (string | null)[]) => {
    const written: string[] = [];
    return {
      written,
      io: {
        write: (b: Uint8Array) => Promise.resolve(written.push(new TextDecoder().decode(b))),
        read: (buffer: Uint8Array) => {
          const next = chunks.shift();
          if (next === undefined) return new Promise<number | null>(() => {});
          if (next === null) return Promise.resolve(null);
          const bytes = new TextEncoder().encode(next);
          buffer.set(bytes);
          return Promise.resolve(bytes.length);
        },
      },
    };
  };
  const never = new AbortController().signal;
  const yes = fake("y", "es\n");
  assertEquals(await ask("go? ", never, yes.io), true);
  assertEquals(yes.written, ["go? "]);
  assertEquals(await ask("go? ", never, fake("no\n").io), false);
  assertEquals(await ask("go? ", never, fake(null).io), false);
  const stop = new AbortController();
  const pending = ask("go? ", stop.signal, fake().io);
  stop.abort();
  assertEquals(await pending, false);
});

Deno.test("runner keepLines: only the last lines kept, every line streamed", async () => {
  const seen: string[] = [];
  const result = await new ProcessRunner((line) => seen.push(line)).run({
    argv: ["sh", "-c", "for i in 1 2 3 4 5; do echo line$i; done"],
    keepLines: 2,
  });
  assertEquals(seen, ["line1", "line2", "line3", "line4", "line5"]);
  assertEquals([result.output, result.tail], ["line4\nline5", ["line4", "line5"]]);
  assertEquals(cleanLine("a\x1b[31mb" + "x".repeat(3000)).length <= 2001, true);
  assert(!cleanLine("a\x1b[31mb").includes("\x1b"));
});
