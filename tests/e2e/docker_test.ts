/**
 * Docker apps on a real Docker-API engine (podman's, behind the real docker CLI): images built
 * FROM scratch by real pushes, one container per slot behind the proxy, under load.
 */
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { AppRepo } from "../helpers/apps.ts";
import { commitDockerApp, dockerAppFiles, type DockerEngine, withEngine } from "../helpers/docker.ts";
import { LoadGenerator } from "../helpers/load.ts";
import { freePort, get, type TestServer, withServer } from "../helpers/server.ts";
import { deployLog, releases, status } from "../helpers/state.ts";

/** A server whose deploys (and their log followers) use `engine`. */
async function withDockerServer(fn: (server: TestServer, engine: DockerEngine) => Promise<void>) {
  await withEngine(async (engine) => {
    await withServer(async (server) => {
      Object.assign(server.env, engine.env);
      await fn(server, engine);
    });
  });
}

async function body(url: string): Promise<string> {
  const answer = await get(url);
  return "body" in answer ? answer.body.trim() : answer.error;
}

/** Waits until `check` holds (up to 10 s); returns its last value. */
async function eventually<T>(what: () => Promise<T>, check: (value: T) => boolean): Promise<T> {
  let value = await what();
  for (let i = 0; i < 100 && !check(value); i++) {
    await new Promise((r) => setTimeout(r, 100));
    value = await what();
  }
  return value;
}

Deno.test("docker: v1 → v2 under load with zero failed requests; a failing health check never takes traffic; rollback reuses the image; cleanup keeps keepReleases images", async () => {
  await withDockerServer(async (server, engine) => {
    const port = freePort();
    const remote = await server.setupApp("dk", { port, dotenv: "GREETING='hello from .env'\n" });
    const repo = await AppRepo.create(server, "dk", remote);
    const extra = "keepReleases: 2\n";

    // v1: built, started in the blue slot, switched to.
    await commitDockerApp(repo, "dk", "v1", "ok", extra);
    const first = await repo.pushOk();
    assertMatch(first.output, /docker engine \d/);
    assertMatch(first.output, /Successfully (built|tagged)/, "the build's output reaches the push");
    assertEquals(await body(`http://127.0.0.1:${port}/`), "v1");
    assertEquals(await body(`http://127.0.0.1:${port}/cgi-bin/greeting`), "hello from .env", "--env-file");
    const v1 = await status(server, "dk");
    assertEquals([v1.type, v1.slot, v1.healthy], ["docker", "blue", true]);
    assertEquals(await engine.containers(), ["dk-blue"]);
    const [v1Release] = await releases(server, "dk");
    assertEquals(await engine.tags("dk"), [v1Release]);
    const inspect = await engine.lines(["inspect", "--format", "{{json .Config.Labels}}", `dk:${v1Release}`]);
    const labels = JSON.parse(inspect[0]);
    assertEquals([labels["deploy-paradigm.app"], labels["deploy-paradigm.release"]], ["dk", v1Release]);
    assertMatch(labels["deploy-paradigm.commit"], /^[0-9a-f]{40}$/);
    const policy = await engine.lines(["inspect", "--format", "{{.HostConfig.RestartPolicy.Name}}", "dk-blue"]);
    // `always`: what podman's boot service starts (podman-restart.service: `start --all --filter
    // restart-policy=always`; not `unless-stopped`), as Docker Engine does when it starts.
    assertEquals(policy, ["always"]);
    const ports = await engine.lines(["port", "dk-blue"]);
    assertEquals(ports, [`8080/tcp -> 127.0.0.1:${v1.slotPort}`], "published on loopback only");

    // v2 under load: zero failed requests, then only v2 answers.
    const load = new LoadGenerator(`http://127.0.0.1:${port}/`, 3).start();
    await new Promise((r) => setTimeout(r, 300));
    await commitDockerApp(repo, "dk", "v2", "ok", extra);
    await repo.pushOk();
    await new Promise((r) => setTimeout(r, 300));
    const switched = performance.now();
    await new Promise((r) => setTimeout(r, 300));

    // v3 fails its health check: traffic never leaves v2, its container is removed.
    await commitDockerApp(repo, "dk", "v3", "nohealth", extra);
    const failedStart = performance.now();
    const bad = await repo.push();
    const failedEnd = performance.now();
    assert(bad.code !== 0, bad.output);
    assertMatch(bad.output, /deploy failed at health/);
    await repo.git(["reset", "--quiet", "--hard", "HEAD~1"]);
    await new Promise((r) => setTimeout(r, 300));
    await load.stop();
    assertEquals(load.failures().length, 0, JSON.stringify(load.failures().slice(0, 5)));
    assert(load.samples.length > 100, `too few requests: ${load.samples.length}`);
    assertEquals([...load.bodiesBetween(switched, performance.now())], ["v2"]);
    assertEquals([...load.bodiesBetween(failedStart, failedEnd)], ["v2"], "v3 never took traffic");
    assertEquals(await engine.containers(), ["dk-green"], "the failed v3 container is gone, v1's stopped");
    const afterFail = await releases(server, "dk");
    assertEquals(await engine.tags("dk"), afterFail, "v3's image is removed with its release");
    assertEquals(afterFail.length, 2);

    // rollback to v1: its kept image, no build.
    const rollback = await server.cli(["rollback", "dk"]);
    assertEquals(rollback.code, 0, rollback.output);
    assert(!/docker build|Successfully built/.test(rollback.output), rollback.output);
    assertEquals(await body(`http://127.0.0.1:${port}/`), "v1");
    assertEquals(await body(`http://127.0.0.1:${port}/cgi-bin/greeting`), "hello from .env");
    assertEquals((await status(server, "dk")).release, v1Release);
    assertEquals(await engine.containers(), ["dk-blue"]);

    // Two more deploys: exactly keepReleases (2) images stay, those of the kept releases.
    for (const version of ["v4", "v5"]) {
      await commitDockerApp(repo, "dk", version, "ok", extra);
      await repo.pushOk();
    }
    assertEquals(await body(`http://127.0.0.1:${port}/`), "v5");
    const kept = await releases(server, "dk");
    assertEquals(kept.length, 2);
    assertEquals(await engine.tags("dk"), kept);

    // The container's output reaches access.log and error.log through the follower.
    const paths = server.paths("dk");
    const access = await eventually(() => Deno.readTextFile(paths.accessLog), (t) => t.includes("started v5"));
    for (const version of ["v1", "v2", "v3", "v5"]) assertMatch(access, new RegExp(`started ${version}\\b`));
    const errors = await Deno.readTextFile(paths.errorLog);
    assertMatch(errors, /response:200/, "busybox httpd's request log (stderr) is in error.log");
    const events = (await deployLog(server, "dk")).map((e) => e.event);
    assert(events.includes("rolled_back") && events.includes("success"), events.join(" "));

    // A dry run names the engine, the idle slot and the env file, and changes nothing.
    const head = (await repo.git(["rev-parse", "HEAD"])).stdout.trim();
    const dry = await server.cli(["execute", "--dry-run", server.paths("dk").repo, head]);
    assertEquals(dry.code, 0, dry.output);
    const v5 = await status(server, "dk");
    const idle = v5.slot === "blue" ? "green" : "blue";
    assertMatch(dry.stdout, /docker engine \S+ answers/);
    assertMatch(dry.stdout, new RegExp(`idle ${idle} slot[\\s\\S]*docker run .*--name dk-${idle} .*--env-file`));
    assertEquals(await engine.containers(), [`dk-${v5.slot}`]);

    // A rollback to a release whose image is gone says so, and changes nothing.
    const [older] = kept;
    await engine.lines(["rmi", `dk:${older}`]);
    const gone = await server.cli(["rollback", "dk"]);
    assertEquals(gone.code, 1, gone.output);
    assertMatch(gone.output, new RegExp(`the image dk:${older} of release ${older} is gone`));
    assertEquals(await body(`http://127.0.0.1:${port}/`), "v5");
  });
});

Deno.test("docker: the log follower writes each line once across container restarts and its own restart", async () => {
  await withDockerServer(async (server, engine) => {
    const port = freePort();
    const repo = await AppRepo.create(server, "dl", await server.setupApp("dl", { port }));
    await commitDockerApp(repo, "dl", "v1");
    await repo.pushOk();
    const { accessLog } = server.paths("dl");
    const count = async (text: string) => (await Deno.readTextFile(accessLog)).split(text).length - 1;
    assertEquals(await eventually(() => count("started v1"), (n) => n === 1), 1);

    // The server ends: the restart policy brings the container back; the follower reconnects.
    await get(`http://127.0.0.1:${port}/cgi-bin/crash`); // the container dies: no answer is expected
    assertEquals(await eventually(() => count("started v1"), (n) => n >= 2), 2, "the restart's line, once");
    // The line comes as the container starts, a moment before its server listens: ask until it answers.
    assertEquals(await eventually(() => body(`http://127.0.0.1:${port}/`), (text) => text === "v1"), "v1");
    assertEquals(await engine.containers(), ["dl-blue"]);

    // The follower itself restarts (pm2): it goes on where it stopped, writing nothing twice.
    const pm2 = await new Deno.Command("pm2", { args: ["restart", "dl-blue"], env: server.env }).output();
    assert(pm2.success, new TextDecoder().decode(pm2.stderr));
    await get(`http://127.0.0.1:${port}/cgi-bin/crash`); // the container dies: no answer is expected
    assertEquals(await eventually(() => count("started v1"), (n) => n >= 3), 3);
    await new Promise((r) => setTimeout(r, 1000));
    assertEquals(await count("started v1"), 3, "no line written twice");
    assertEquals(await count("server ended"), 0, "stderr lines go to error.log, not access.log");
    const errors = await Deno.readTextFile(server.paths("dl").errorLog);
    assertEquals(errors.split("server ended").length - 1, 2);
  });
});

Deno.test("docker: a failed build shows its last lines and leaves no container; a stopped engine is named", async () => {
  await withDockerServer(async (server, engine) => {
    const port = freePort();
    const repo = await AppRepo.create(server, "db", await server.setupApp("db", { port }));
    await commitDockerApp(repo, "db", "v1");
    await repo.pushOk();

    await commitDockerApp(repo, "db", "v2", "brokenbuild");
    const broken = await repo.push();
    assert(broken.code !== 0, broken.output);
    assertMatch(broken.output, /deploy failed at build/);
    assertMatch(broken.output, /no-such-file[^\n]*no such file or directory[\s\S]*✗ build .* exited with code/);
    assertEquals(await engine.containers(), ["db-blue"]);
    assertEquals(await body(`http://127.0.0.1:${port}/`), "v1");
    await repo.git(["reset", "--quiet", "--hard", "HEAD~1"]);

    // A Dockerfile that is a symbolic link to a root-only file, committed or made by a build step:
    // refused before the engine (root's) reads it; not a line of the file reaches the push.
    const secret = `${server.root}/root-only`;
    const word = `SECRET${crypto.randomUUID().slice(0, 8)}`;
    await Deno.writeTextFile(secret, `${word} first line\n${word} second\n`, { mode: 0o600 });
    await Deno.chmod(secret, 0o600);
    const dockerfile = `${repo.dir}/Dockerfile`;
    const linked = {
      committed: async () => {
        await Deno.remove(dockerfile);
        await Deno.symlink(secret, dockerfile);
        await repo.git(["add", "--all"]);
        await repo.git(["commit", "--quiet", "-m", "Dockerfile -> a root-only file"]);
      },
      built: () => commitDockerApp(repo, "db", "v2", "ok", `build: [ln, -sf, ${secret}, Dockerfile]\n`),
    };
    for (const [how, make] of Object.entries(linked)) {
      await make();
      const refused = await repo.push();
      assert(refused.code !== 0, `${how}: ${refused.output}`);
      assertMatch(refused.output, /deploy failed at build/, how);
      assertMatch(refused.output, /the Dockerfile Dockerfile of the release is reached through a symbolic link/, how);
      assert(!refused.output.includes(word), `${how}: ${refused.output}`);
      assertEquals(await engine.containers(), ["db-blue"], how);
      assertEquals(await body(`http://127.0.0.1:${port}/`), "v1", how);
      await repo.git(["reset", "--quiet", "--hard", "HEAD~1"]);
    }

    await engine.pause();
    await commitDockerApp(repo, "db", "v3");
    const down = await repo.push();
    assert(down.code !== 0, down.output);
    assertMatch(down.output, new RegExp(`docker engine not reachable at ${engine.host.replaceAll("/", "\\/")}`));
    assertEquals((await status(server, "db")).lastDeploy?.outcome, "failed");
    assertEquals((await status(server, "db")).version?.length, 7);
    assertEquals(await body(`http://127.0.0.1:${port}/`), "v1", "the running container keeps serving");
    await engine.resume();
  });
});

Deno.test("docker: the restart strategy runs one container named after the app on the public port", async () => {
  await withDockerServer(async (server, engine) => {
    const port = freePort();
    const repo = await AppRepo.create(server, "dr", await server.setupApp("dr", { port, strategy: "restart" }));
    // deploy.yml's dockerfile and buildArgs reach the build.
    await Deno.mkdir(`${repo.dir}/ops`, { recursive: true });
    const dockerfile = dockerAppFiles("dr", "v1").Dockerfile.replace(
      "FROM scratch",
      "FROM scratch\nARG FLAVOUR\nLABEL flavour=$FLAVOUR",
    );
    await Deno.writeTextFile(`${repo.dir}/ops/app.Dockerfile`, dockerfile);
    await commitDockerApp(repo, "dr", "v1", "ok", "dockerfile: ops/app.Dockerfile\nbuildArgs: { FLAVOUR: vanilla }\n");
    await repo.pushOk();
    assertEquals(await body(`http://127.0.0.1:${port}/`), "v1");
    assertEquals(await engine.containers(), ["dr"]);
    const [release] = await releases(server, "dr");
    assertEquals(await engine.lines(["inspect", "--format", "{{.Config.Labels.flavour}}", `dr:${release}`]), [
      "vanilla",
    ]);
    // On every address (podman says ":port", Docker "0.0.0.0:port").
    assertMatch((await engine.lines(["port", "dr"]))[0], new RegExp(`^8080/tcp -> (0\\.0\\.0\\.0)?:${port}$`));
    await commitDockerApp(repo, "dr", "v2", "nohealth");
    const bad = await repo.push();
    assert(bad.code !== 0, bad.output);
    assertMatch(bad.output, /rolled back/);
    assertEquals(await body(`http://127.0.0.1:${port}/`), "v1", "the previous image runs again");
    assertEquals(await engine.containers(), ["dr"]);
  });
});

Deno.test("docker: an app changes type python → docker → python, under restart and under blue-green", async () => {
  await withDockerServer(async (server, engine) => {
    await Promise.all((["restart", "blue-green"] as const).map(async (strategy) => {
      const name = strategy === "restart" ? "tr" : "tb";
      const port = freePort();
      const repo = await AppRepo.create(server, name, await server.setupApp(name, { port, strategy }));
      await repo.python(name, `${name}-py1`);
      await repo.pushOk();
      assertEquals(await body(`http://127.0.0.1:${port}/`), `${name}-py1`);
      await commitDockerApp(repo, name, `${name}-dk2`);
      await repo.pushOk();
      assertEquals(await body(`http://127.0.0.1:${port}/`), `${name}-dk2`);
      await repo.python(name, `${name}-py3`);
      await repo.pushOk();
      assertEquals(await body(`http://127.0.0.1:${port}/`), `${name}-py3`, "the container no longer answers");
      assertEquals((await status(server, name)).type, "python");
    }));
    assertEquals(await engine.containers(), [], "no container of either app is left");
  });
});

Deno.test("docker: status and status.json ask the engine about the container, not the log follower: a stopped container is not served (exit 1), a stopped follower is a warning", async () => {
  await withDockerServer(async (server, engine) => {
    const port = freePort();
    const repo = await AppRepo.create(server, "ds", await server.setupApp("ds", { port }));
    await commitDockerApp(repo, "ds", "v1");
    await repo.pushOk();
    const state = async () => {
      const shown = await server.cli(["status", "ds", "--json"]);
      return { ...shown, row: JSON.parse(shown.stdout) as { processes: { name: string; state: string }[] } };
    };
    const up = await state();
    assertEquals(up.code, 0, up.output);
    assertEquals([up.row.processes[0].name, up.row.processes[0].state], ["ds-blue", "running"]);
    // status.json (what the fleet reads) too: the container as the engine says ("running"), not its
    // log follower as pm2 does ("online").
    const written = JSON.parse(await Deno.readTextFile(server.paths("ds").status)) as typeof up.row;
    assertEquals(written.processes.map((p) => [p.name, p.state]), [["ds-blue", "running"]]);

    // The follower stopped, the container serves: a warning that its output is not followed, exit 0.
    const pm2 = (args: string[]) => new Deno.Command("pm2", { args, env: server.env }).output();
    assert((await pm2(["stop", "ds-blue"])).success);
    assertEquals(await body(`http://127.0.0.1:${port}/`), "v1");
    const unfollowed = await server.cli(["status", "ds"]);
    assertEquals(unfollowed.code, 0, unfollowed.output);
    assertMatch(unfollowed.stdout, /\nds +running +yes /);
    assertMatch(
      unfollowed.stdout,
      /\n! ds: its container ds-blue runs and serves, but its log follower does not \(ds-blue stopped\): the container's output no longer reaches access\.log/,
    );
    assert(!unfollowed.stdout.includes("no web process runs"), unfollowed.stdout);
    assert((await pm2(["start", "ds-blue"])).success);

    // The container stopped, the follower runs: the app is not served, exit 1.
    await engine.lines(["stop", "ds-blue"]);
    assert("error" in await get(`http://127.0.0.1:${port}/`) || await body(`http://127.0.0.1:${port}/`) !== "v1");
    const stopped = await state();
    assertEquals(stopped.code, 1, stopped.output);
    assertEquals([stopped.row.processes[0].name, stopped.row.processes[0].state], ["ds-blue", "exited"]);
    assertMatch(
      stopped.stderr,
      /^! ds: no web process runs \(ds-blue exited\): the app is not served, .*\(`docker start ds-blue`, or deploy again\)/m,
    );
    await engine.lines(["start", "ds-blue"]);
    assertEquals(await eventually(() => body(`http://127.0.0.1:${port}/`), (text) => text === "v1"), "v1");
    assertEquals((await state()).code, 0);
  });
});
