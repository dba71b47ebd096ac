/**
 * Apps as their own users, tried as an attacker would.
 *
 * On a real systemd host (systemd-nspawn, booted): `setup` creates app-alpha and app-beta; as
 * app-alpha, reading beta's `.env`, its logs or the proxy's keys fails, and so does writing
 * outside alpha's home (its own release included); the app runs as its user, in a sandbox whose
 * `systemd-analyze security` exposure is printed before and after. Then pushes by a member of
 * the deploy group (through sudo) deploy, a user outside it cannot push, and the proxy's control
 * socket accepts the member and refuses the other user.
 *
 * On a PM2 server (a temp prefix, the daemon as root): two apps with `user:`; `ps` shows each
 * under its own user, one cannot read the other's `.env`; a malicious npm postinstall (a local
 * package in the repository) cannot write outside its release, and the deploy fails at its build
 * saying why, while the release before keeps serving.
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { AppRepo, nodeApp, pythonApp } from "../helpers/apps.ts";
import { addTestUser, must } from "../helpers/host.ts";
import { SystemdHost } from "../helpers/nspawn.ts";
import { commitDockerApp, withEngine } from "../helpers/docker.ts";
import { BIN, freePort, get, run, type TestServer, withServer } from "../helpers/server.ts";
import { CertificateStore } from "../../src/proxy/certs.ts";
import { buildUserName, defaultUserName, lookupUser } from "../../src/users.ts";
import type { AppPaths } from "../../src/paths.ts";
import { parse as parseYaml } from "../../src/yaml.ts";

/** Runs `command` on the host as `user` (its groups too), through setpriv. */
function asUser(host: SystemdHost, user: string, command: string) {
  return host.ssh(`setpriv --reuid=${user} --regid=${user} --init-groups -- ${command}`);
}

/** `systemd-analyze security` of a unit: its exposure (0 safe … 10 exposed) and verdict. */
async function exposure(host: SystemdHost, unit: string): Promise<{ score: number; verdict: string }> {
  const out = await host.ssh(`systemd-analyze security --no-pager ${unit}`);
  const match = /Overall exposure level for \S+: ([\d.]+) (\w+)/.exec(out.stdout);
  assert(match, `systemd-analyze security ${unit}:\n${out.output}`);
  return { score: Number(match![1]), verdict: match![2] };
}

/** Python's connect to the proxy's control socket and a status request, as `user`. */
function controlAs(host: SystemdHost, user: string) {
  const script = "import socket; s = socket.socket(socket.AF_UNIX); " +
    "s.connect('/opt/deployments/.control/proxy.sock'); s.sendall(b'{\\\"op\\\":\\\"status\\\"}\\n'); " +
    "print(s.recv(65536).decode())";
  return asUser(host, user, `python3 -c "${script}"`);
}

Deno.test("systemd host: each app its own user and sandbox; deploy-group pushes through sudo; socket by group", async () => {
  const host = await SystemdHost.create();
  const work = await Deno.makeTempDir({ prefix: "dp-laptop-" });
  const debs = await Deno.makeTempDir({ prefix: "dp-debs-" });
  try {
    const ports = { alpha: 18000 + Math.floor(Math.random() * 500), beta: 18600 + Math.floor(Math.random() * 500) };
    for (const [app, port] of Object.entries(ports)) {
      const setup = await host.ssh(
        `${BIN} setup ${app} --port ${port} --manager systemd --proxy-host ${host.address} --yes`,
      );
      assertEquals(setup.code, 0, setup.output);
      assertMatch(setup.stdout, new RegExp(`✓ user app-${app} \\(a system user with no login shell\\)`));
      assertMatch(setup.stdout, new RegExp(`✓ user build-${app}, which builds ${app}'s releases`));
      assertMatch(setup.stdout, new RegExp(`✓ ${app} runs and runs its hooks as app-${app}; build-${app} builds`));
      const secret = `${app}-secret-${crypto.randomUUID().slice(0, 8)}`;
      await Deno.writeTextFile(join(host.rootfs, `opt/deployments/${app}/.env.production`), `SECRET=${secret}\n`);
    }
    // setup is idempotent: the user exists, nothing is created twice.
    const again = await host.ssh(`${BIN} setup alpha --yes`);
    assertEquals(again.code, 0, again.output);
    assert(!again.stdout.includes("✓ user "), again.stdout);
    const passwd = (await host.ssh("getent passwd app-alpha app-beta")).stdout.trim().split("\n");
    assertEquals(passwd.map((line) => line.split(":").slice(5).join(":")), [
      "/opt/deployments/alpha/home:/usr/sbin/nologin",
      "/opt/deployments/beta/home:/usr/sbin/nologin",
    ]);
    // The build user: in no group but its own (the app's group would open every release's .env to it).
    assertEquals((await host.ssh("id -nG build-alpha")).stdout.trim(), "build-alpha");
    assertEquals((await host.ssh("id -nG app-alpha")).stdout.trim(), "app-alpha");

    // One repository per app, pushed by root.
    const repos: Record<string, string> = {};
    for (const app of Object.keys(ports)) {
      const dir = join(work, app);
      await Deno.mkdir(dir);
      repos[app] = dir;
      const git = (...args: string[]) => run(["git", ...args], { cwd: dir, env: host.env });
      await git("init", "--quiet", "-b", "main");
      await git("remote", "add", "production", `root@${host.address}:/var/repos/${app}.git`);
    }
    const release = async (app: string, version: string, user = "root", extra = "") => {
      const git = (...args: string[]) => run(["git", ...args], { cwd: repos[app], env: host.env });
      await Deno.writeTextFile(
        join(repos[app], "deploy.yml"),
        `name: ${app}\ntype: python\ncommand: python app.py\nwatch: 300ms\n${extra}` +
          "healthCheck: { path: /health, window: 8s, interval: 200ms, successes: 2 }\n",
      );
      await Deno.writeTextFile(join(repos[app], "app.py"), pythonApp(version));
      await Deno.writeTextFile(join(repos[app], "requirements.txt"), "# standard library only\n");
      await git("add", "-A");
      await git("commit", "--quiet", "-m", version);
      await git("remote", "set-url", "production", `${user}@${host.address}:/var/repos/${app}.git`);
      return await git("push", "production", "main");
    };
    for (const app of Object.keys(ports)) {
      const pushed = await release(app, `${app}-v1`);
      assertEquals(pushed.code, 0, pushed.output);
      // pip ran as the build user: the build's venv was made in a release it owned, then sealed.
      assertMatch(pushed.stderr, /✓ build/);
    }
    assertEquals(await (await fetch(`http://${host.address}:${ports.alpha}/`)).text(), "alpha-v1");
    // A server whose build user is in the app's group (as versions before made it, which let a build read
    // every release's .env): the next deploy takes it out, and its build cannot read the serving release's .env.
    assertEquals((await host.ssh("usermod --append --groups app-alpha build-alpha")).code, 0);
    const second = await release( // the green slot, and a release sealed beside the first
      "alpha",
      "alpha-v2",
      "root",
      "build: python3 -c \"print(open('/opt/deployments/alpha/current/.env').read())\"\n",
    );
    assert(second.code !== 0, second.output);
    assertMatch(
      second.output,
      /PermissionError: \[Errno 13\] Permission denied: '\/opt\/deployments\/alpha\/current\/\.env'/,
    );
    assert(!second.output.includes("alpha-secret-"), second.output);
    assertMatch(
      second.output,
      /✓ build-alpha is out of the group app-alpha \(its builds could read the app's \.env files\)/,
    );
    assertEquals((await host.ssh("id -nG build-alpha")).stdout.trim(), "build-alpha");
    assertEquals(await (await fetch(`http://${host.address}:${ports.alpha}/`)).text(), "alpha-v1");
    const secondAgain = await release("alpha", "alpha-v2");
    assertEquals(secondAgain.code, 0, secondAgain.output);
    // A server set up before builds had a user of their own: the deploy creates it, in no group but its own.
    await host.ssh("userdel build-beta && rm -rf /opt/deployments/beta/build-home");
    const rebuilt = await release("beta", "beta-v2");
    assertEquals(rebuilt.code, 0, rebuilt.output);
    assertEquals((await host.ssh("id -nG build-beta")).stdout.trim(), "build-beta");
    assertEquals(
      (await host.ssh("stat -c '%U %a' /opt/deployments/beta/build-home")).stdout.trim(),
      "build-beta 700",
    );
    assertEquals(await (await fetch(`http://${host.address}:${ports.alpha}/`)).text(), "alpha-v2");

    // A Node app runs in the same sandbox (V8's JIT, /proc, its syscalls): the machine's node, copied in.
    await Deno.copyFile(Deno.realPathSync("/usr/bin/node"), join(host.rootfs, "usr/local/bin/node"));
    await Deno.chmod(join(host.rootfs, "usr/local/bin/node"), 0o755);
    const gammaPort = 19500 + Math.floor(Math.random() * 400);
    const gammaSetup = await host.ssh(`${BIN} setup gamma --port ${gammaPort} --manager systemd --yes`);
    assertEquals(gammaSetup.code, 0, gammaSetup.output);
    const gamma = join(work, "gamma");
    await Deno.mkdir(gamma);
    const gitGamma = (...args: string[]) => run(["git", ...args], { cwd: gamma, env: host.env });
    await gitGamma("init", "--quiet", "-b", "main");
    await Deno.writeTextFile(
      join(gamma, "deploy.yml"),
      "name: gamma\ntype: node\ncommand: node server.js\nwatch: 300ms\n" +
        "healthCheck: { path: /health, window: 8s, interval: 200ms, successes: 2 }\n",
    );
    await Deno.writeTextFile(join(gamma, "server.js"), nodeApp("gamma-v1"));
    await gitGamma("add", "-A");
    await gitGamma("commit", "--quiet", "-m", "v1");
    const gammaPush = await gitGamma("push", `root@${host.address}:/var/repos/gamma.git`, "main");
    assertEquals(gammaPush.code, 0, gammaPush.output);
    assertEquals(await (await fetch(`http://${host.address}:${gammaPort}/`)).text(), "gamma-v1");
    const gammaPid = (await host.ssh("systemctl show -p MainPID --value gamma@blue.service")).stdout.trim();
    assertEquals((await host.ssh(`ps -o user:32=,comm= -p ${gammaPid}`)).stdout.trim().split(/\s+/), [
      "app-gamma",
      "node",
    ]);
    console.log("a Node app (node 20) serves from inside the sandbox as app-gamma");

    // The app runs as its user.
    const pid = (await host.ssh("systemctl show -p MainPID --value alpha@green.service")).stdout.trim();
    assertEquals((await host.ssh(`ps -o user:32= -p ${pid}`)).stdout.trim(), "app-alpha");
    // Who owns what.
    const owners = await host.ssh(
      "stat -c '%n %U:%G %a' /opt/deployments/alpha /opt/deployments/alpha/releases /opt/deployments/alpha/home " +
        "/opt/deployments/alpha/build-home /opt/deployments/alpha/current/ " +
        "/opt/deployments/alpha/current/app.py /opt/deployments/alpha/current/.env /opt/deployments/alpha/.env.production " +
        "/var/log/deployments/alpha /opt/deployments/.control /opt/deployments/.control/proxy.sock",
    );
    console.log(owners.stdout.trim());
    assertEquals(owners.stdout.trim().split("\n").map((line) => line.split(" ").slice(1).join(" ")), [
      "root:app-alpha 751",
      "root:app-alpha 751",
      "app-alpha:app-alpha 700",
      "build-alpha:build-alpha 700",
      "root:app-alpha 750",
      "root:app-alpha 644",
      "root:app-alpha 640",
      "root:root 600",
      "root:app-alpha 750",
      "root:deploy 750",
      "root:deploy 660",
    ]);

    // As app-alpha: its own .env and home yes; beta's secrets, logs, the proxy's keys, writes elsewhere no.
    const store = new CertificateStore(host.rootfs);
    await store.writeAccountKey("-----BEGIN PRIVATE KEY-----\nnot a real key\n-----END PRIVATE KEY-----\n");
    const own = await asUser(host, "app-alpha", "cat /opt/deployments/alpha/current/.env");
    assertEquals(own.code, 0, own.output);
    assertMatch(own.stdout, /SECRET=/);
    assertEquals((await asUser(host, "app-alpha", "touch /opt/deployments/alpha/home/data")).code, 0);
    const refused = [
      "cat /opt/deployments/beta/.env.production",
      "cat /opt/deployments/beta/current/.env",
      "ls /opt/deployments/beta/releases",
      "cat /var/log/deployments/beta/access.log",
      "cat /var/log/deployments/beta/deploy.log",
      "cat /opt/deployments/.tls/account.key",
      "cat /opt/deployments/alpha/.env.production",
      "touch /opt/deployments/alpha/current/app.py",
      "touch /opt/deployments/alpha/current/new-file",
      "touch /opt/deployments/alpha/pwned",
      "touch /opt/deployments/beta/home/pwned",
      "ls /opt/deployments/alpha/build-home",
      "touch /opt/deployments/pwned",
      "touch /var/repos/alpha.git/hooks/proc-receive",
      "touch /etc/systemd/system/pwned.service",
    ];
    for (const command of refused) {
      const result = await asUser(host, "app-alpha", command);
      assert(result.code !== 0, `as app-alpha, \`${command}\` worked:\n${result.output}`);
      assertMatch(result.stderr, /Permission denied/, command);
    }
    console.log(`as app-alpha: ${refused.length} reads and writes outside its own refused (Permission denied)`);

    // Everything of alpha's on disk, walked as root, then tried by another app's user and by alpha's
    // build user (the app's dir and releases/ let them pass through, 0751): neither can list or read
    // any of it, but the build user its own home.
    const tree = await host.ssh("find /opt/deployments/alpha /var/log/deployments/alpha /var/repos/alpha.git");
    assertEquals(tree.code, 0, tree.output);
    await Deno.writeTextFile(join(host.rootfs, "srv/alpha-paths"), tree.stdout);
    const audit = "import os, sys\n" +
      "for path in open('/srv/alpha-paths').read().split():\n" +
      "    try:\n" +
      "        os.listdir(path) if os.path.isdir(path) else open(path, 'rb').read(1)\n" +
      "        print(path)\n" +
      "    except OSError:\n" +
      "        pass\n";
    await Deno.writeTextFile(join(host.rootfs, "srv/audit.py"), audit);
    const paths = tree.stdout.trim().split("\n");
    assert(paths.some((path) => /\/releases\/[^/]+\/\.env$/.test(path)), "no release .env found");
    for (const [user, allowed] of [["app-beta", []], ["build-alpha", ["/opt/deployments/alpha/build-home"]]] as const) {
      const read = await asUser(host, user, "python3 /srv/audit.py");
      assertEquals(read.code, 0, read.output);
      assertEquals(read.stdout.trim().split("\n").filter(Boolean), allowed, `${user} could read these`);
    }
    console.log(`as app-beta and build-alpha: none of alpha's ${paths.length} files and directories readable`);

    // The sandbox: systemd-analyze security of the slot, against the same unit without it.
    const template = await Deno.readTextFile(join(host.rootfs, "etc/systemd/system/alpha@.service"));
    const sandbox =
      /^(User|Group|ReadWritePaths|UMask|NoNewPrivileges|Protect\w+|Private\w+|Restrict\w+|LockPersonality|RemoveIPC|SystemCall\w+|CapabilityBoundingSet|AmbientCapabilities)=/;
    const before = template.split("\n").filter((line) => !sandbox.test(line)).join("\n");
    await Deno.writeTextFile(join(host.rootfs, "etc/systemd/system/dpbefore@.service"), before);
    await Deno.mkdir(join(host.rootfs, "etc/systemd/system/dpbefore@green.service.d"));
    await Deno.copyFile(
      join(host.rootfs, "etc/systemd/system/alpha@green.service.d/exec.conf"),
      join(host.rootfs, "etc/systemd/system/dpbefore@green.service.d/exec.conf"),
    );
    await host.ssh("systemctl daemon-reload");
    const scoreBefore = await exposure(host, "dpbefore@green.service");
    const scoreAfter = await exposure(host, "alpha@green.service");
    console.log(
      `systemd-analyze security alpha@green.service: before ${scoreBefore.score} ${scoreBefore.verdict}, ` +
        `after ${scoreAfter.score} ${scoreAfter.verdict}`,
    );
    assert(scoreAfter.score < scoreBefore.score - 5, JSON.stringify({ scoreBefore, scoreAfter }));
    // And the app still logs through systemd (StandardOutput=append:) from inside it.
    assertMatch(await Deno.readTextFile(join(host.rootfs, "var/log/deployments/alpha/access.log")), /GET \/health/);

    // Pushes by a member of the deploy group go through sudo; sudo is installed here from the
    // machine's Debian package, then setup (run again) writes its drop-in.
    await must(["sh", "-c", `cd ${debs} && apt-get download sudo >/dev/null 2>&1; ls ${debs}`]);
    const deb = [...Deno.readDirSync(debs)].find((entry) => entry.name.endsWith(".deb"))!.name;
    await Deno.copyFile(join(debs, deb), join(host.rootfs, "root/sudo.deb"));
    const installed = await host.ssh("dpkg -i /root/sudo.deb");
    assertEquals(installed.code, 0, installed.output);
    const resetup = await host.ssh(`${BIN} setup alpha --yes`);
    assertEquals(resetup.code, 0, resetup.output);
    assertMatch(resetup.stdout, /✓ members of the group deploy may push \(\/etc\/sudoers\.d\/deploy-paradigm/);
    assertEquals((await host.ssh("visudo -c -f /etc/sudoers.d/deploy-paradigm")).code, 0);
    assertEquals((await host.ssh("stat -c '%U:%G %a' /etc/sudoers.d/deploy-paradigm")).stdout.trim(), "root:root 440");
    const key = (await Deno.readTextFile(join(host.dir, "client_key.pub"))).trim();
    for (const [user, groups] of [["alice", "-G deploy"], ["bob", ""]]) {
      const made = await host.ssh(
        `useradd -m -s /bin/bash ${groups} ${user} && install -d -o ${user} -m 700 /home/${user}/.ssh && ` +
          `echo '${key}' > /home/${user}/.ssh/authorized_keys && chown ${user} /home/${user}/.ssh/authorized_keys`,
      );
      assertEquals(made.code, 0, made.output);
    }
    const byAlice = await release("alpha", "alpha-v3", "alice");
    assertEquals(byAlice.code, 0, byAlice.output);
    assertEquals(await (await fetch(`http://${host.address}:${ports.alpha}/`)).text(), "alpha-v3");
    console.log("a push by alice (group deploy, not root) deployed alpha-v3 through sudo");

    // Her ssh connection lost mid-deploy cancels it, as for root (the watch looks past sudo to git-receive-pack).
    const served = (await host.ssh("git --git-dir /var/repos/alpha.git rev-parse main")).stdout.trim();
    await Deno.writeTextFile(
      join(repos.alpha, "deploy.yml"),
      "name: alpha\ntype: python\ncommand: python app.py\nwatch: 300ms\nhooks: { preDeploy: sleep 41 }\n" +
        "healthCheck: { path: /health, window: 8s, interval: 200ms, successes: 2 }\n",
    );
    await Deno.writeTextFile(join(repos.alpha, "app.py"), pythonApp("alpha-slow"));
    await run(["git", "commit", "--quiet", "-am", "slow"], { cwd: repos.alpha, env: host.env });
    const pushing = new Deno.Command("setsid", {
      args: ["git", "push", "production", "main"],
      cwd: repos.alpha,
      env: host.env,
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    let hooked = false;
    for (let i = 0; i < 150 && !hooked; i++) {
      hooked = (await host.ssh("pgrep -u app-alpha -x sleep")).code === 0;
      if (!hooked) await new Promise((r) => setTimeout(r, 200));
    }
    assert(hooked, "the preDeploy hook never ran");
    Deno.kill(-pushing.pid, "SIGKILL"); // git push and its ssh: the connection drops
    await pushing.status;
    let cancelled = false;
    for (let i = 0; i < 100 && !cancelled; i++) {
      const log = await Deno.readTextFile(join(host.rootfs, "var/log/deployments/alpha/deploy.log"));
      cancelled = JSON.parse(log.trim().split("\n").at(-1)!).event === "cancelled";
      if (!cancelled) await new Promise((r) => setTimeout(r, 200));
    }
    assert(cancelled, "the deploy was not cancelled after the pusher's connection dropped");
    assertEquals((await host.ssh("pgrep -u app-alpha -x sleep")).code, 1, "the hook was not stopped");
    assertEquals((await host.ssh("git --git-dir /var/repos/alpha.git rev-parse main")).stdout.trim(), served);
    assertEquals(await (await fetch(`http://${host.address}:${ports.alpha}/`)).text(), "alpha-v3");
    await run(["git", "reset", "--quiet", "--hard", "HEAD~1"], { cwd: repos.alpha });
    console.log("alice's connection dropped mid-deploy: cancelled, the hook stopped, alpha-v3 still serves");
    const byBob = await release("alpha", "alpha-v4", "bob");
    assert(byBob.code !== 0, byBob.output);
    // The repository is the deploy group's (0750): to bob it is not even there.
    assertMatch(byBob.output, /'\/var\/repos\/alpha\.git' does not appear to be a git repository/);
    assertEquals(await (await fetch(`http://${host.address}:${ports.alpha}/`)).text(), "alpha-v3");
    console.log(`a push by bob (not in deploy) is refused: ${byBob.output.split("\n")[0]}`);
    // Through sudo, only an app's own repository.
    const elsewhere = await host.ssh(
      "git init --quiet --bare /tmp/other.git && chgrp -R deploy /tmp/other.git && " +
        `setpriv --reuid=alice --regid=alice --init-groups -- sudo -n ${BIN} receive /var/repos/../../tmp/other.git </dev/null`,
    );
    assert(elsewhere.code !== 0, elsewhere.output);
    assertMatch(elsewhere.output, /receive through sudo takes an app's repository/);

    // `user: root`: through sudo the pushed commit's build and hooks would run as root, so a
    // member's push is refused (exit 2) before anything changes; root's own push still deploys.
    const alphaConfig = join(host.rootfs, "opt/deployments/alpha/config.yml");
    const configText = await Deno.readTextFile(alphaConfig);
    await Deno.writeTextFile(alphaConfig, `${configText}user: root\n`);
    const state = async () => [
      (await host.ssh("ls /opt/deployments/alpha/releases; readlink /opt/deployments/alpha/current")).stdout,
      (await host.ssh("git --git-dir /var/repos/alpha.git for-each-ref")).stdout,
      await Deno.readTextFile(join(host.rootfs, "var/log/deployments/alpha/deploy.log")),
    ];
    const stateBefore = await state();
    const direct = await host.ssh(
      `setpriv --reuid=alice --regid=alice --init-groups -- sudo -n ${BIN} receive /var/repos/alpha.git </dev/null`,
    );
    assertEquals(direct.code, 2, direct.output);
    assertMatch(
      direct.output,
      /alpha builds and runs its hooks as root \("user: root" in \/opt\/deployments\/alpha\/config\.yml\): a push by alice through sudo would run the pushed commit's code as root, so it is refused/,
    );
    assertMatch(direct.output, /push as root \(root@<server>:\/var\/repos\/alpha\.git\), or give alpha a user/);
    const rootByAlice = await release("alpha", "alpha-root", "alice");
    assert(rootByAlice.code !== 0, rootByAlice.output);
    assertMatch(rootByAlice.output, /remote: .*alpha builds and runs its hooks as root/);
    assertEquals(await state(), stateBefore, "a refused push changed something");
    assertEquals(await (await fetch(`http://${host.address}:${ports.alpha}/`)).text(), "alpha-v3");
    await Deno.writeTextFile(alphaConfig, configText);
    await run(["git", "reset", "--quiet", "--hard", "HEAD~1"], { cwd: repos.alpha });
    console.log(`user: root through sudo: exit 2, ${direct.stderr.split("\n").find((l) => l.includes("as root ("))}`);

    // A member speaking the hook's protocol to `sudo receive` herself: object names that are not
    // 40/64 hex digits, refs that are not refs/… or that git refuses (e.g. an option) are refused,
    // exit 2, and the branch stays where it was ("-d" once deleted it, "--no-deref" rewound it).
    await Deno.writeTextFile(
      join(host.rootfs, "usr/local/share/dp-pkt.py"),
      'import sys\ndef pkt(s):\n    b = s.encode(); return ("%04x" % (len(b) + 4)).encode() + b\n' +
        'out = pkt("version=1\\0atomic-no") + b"0000"\nfor l in sys.argv[1:]: out += pkt(l)\n' +
        'sys.stdout.buffer.write(out + b"0000")\n',
    );
    const tip = (await host.ssh("git --git-dir /var/repos/alpha.git rev-parse main main~1")).stdout.trim().split("\n");
    const zero = "0".repeat(40);
    const injected = [
      [`${tip[0]} refs/heads/main -d`, /the new object name is not 40 or 64 hex digits/],
      [`${tip[1]} refs/heads/main --no-deref`, /the new object name is not 40 or 64 hex digits/],
      [`${tip[0]} ${tip[1]} --no-deref`, /the ref is not under refs\//],
      [`${tip[0]} ${tip[1]} refs/heads/../main`, /not a valid ref name \(git check-ref-format\)/],
      [`${tip[0]} ${zero} refs/heads/main extra`, /expected <old> <new> <ref>/],
      [`${tip[0].toUpperCase()} ${tip[1]} refs/heads/main`, /the old object name is not 40 or 64 hex digits/],
    ] as const;
    for (const [line, why] of injected) {
      const sent = await asUser(
        host,
        "alice",
        `sh -c "python3 /usr/local/share/dp-pkt.py '${line}' | sudo -n ${BIN} receive /var/repos/alpha.git"`,
      );
      assertEquals(sent.code, 2, `${line}: ${sent.output}`);
      assertMatch(sent.stderr, new RegExp(`error: refused ".*": ${why.source}`), line);
      assertEquals((await host.ssh("git --git-dir /var/repos/alpha.git rev-parse main")).stdout.trim(), tip[0], line);
    }
    assertEquals(await (await fetch(`http://${host.address}:${ports.alpha}/`)).text(), "alpha-v3");
    console.log(`alice's ${injected.length} injected protocol lines refused (exit 2), main unchanged`);

    // The repository is the deploy group's, not other apps' users': app-beta cannot read alpha's.
    const repoModes = await host.ssh(
      "stat -c '%U:%G %a' /var/repos/alpha.git /var/repos/alpha.git/objects && " +
        "git --git-dir /var/repos/alpha.git config core.sharedRepository",
    );
    assertEquals(repoModes.stdout.trim().split("\n"), ["root:deploy 750", "root:deploy 2770", "0664"]);
    for (
      const command of ["ls /var/repos/alpha.git", "cat /var/repos/alpha.git/config", "ls /var/repos/alpha.git/objects"]
    ) {
      const read = await asUser(host, "app-beta", command);
      assert(read.code !== 0, `as app-beta, \`${command}\` worked:\n${read.output}`);
      assertMatch(read.stderr, /Permission denied/, command);
    }
    const cloned = await asUser(host, "app-beta", "git clone --quiet --bare /var/repos/alpha.git /tmp/stolen.git");
    assert(cloned.code !== 0, cloned.output);
    // A repository set up by an older version (others may read, sharedRepository=group) is narrowed.
    await host.ssh(
      "chmod 755 /var/repos/beta.git && chmod 2775 /var/repos/beta.git/objects && " +
        "git --git-dir /var/repos/beta.git config core.sharedRepository group",
    );
    assertEquals((await host.ssh(`${BIN} setup beta --yes`)).code, 0);
    const narrowed = await host.ssh(
      "stat -c '%U:%G %a' /var/repos/beta.git /var/repos/beta.git/objects && " +
        "git --git-dir /var/repos/beta.git config core.sharedRepository",
    );
    assertEquals(narrowed.stdout.trim().split("\n"), ["root:deploy 750", "root:deploy 2770", "0664"]);
    console.log("/var/repos/alpha.git: root:deploy 750, objects 2770, sharedRepository 0664; app-beta refused");

    // setup again while alice has replaced an objects/xx directory (and a pack) by symbolic links
    // to root's own files: nothing outside the repository changes.
    const victim = await host.ssh(
      "install -d -m 700 /etc/dp-victim && install -m 600 /dev/null /etc/dp-victim/secret && " +
        "install -m 600 /dev/null /etc/dp-victim-file && " +
        "ls /var/repos/alpha.git/objects | grep -E '^[0-9a-f]{2}$' | head -1",
    );
    const xx = victim.stdout.trim();
    assertMatch(xx, /^[0-9a-f]{2}$/);
    const swapped = await asUser(
      host,
      "alice",
      `sh -c "cd /var/repos/alpha.git/objects && mv ${xx} ${xx}.moved && ln -s /etc/dp-victim ${xx} && ` +
        `ln -s /etc/dp-victim-file pack/pack-0000.pack && install -d -g alice -m 700 zz"`,
    );
    assertEquals(swapped.code, 0, swapped.output);
    const victims = "stat -c '%n %U:%G %a' /etc/dp-victim /etc/dp-victim/secret /etc/dp-victim-file /etc/sudoers.d";
    const untouched = (await host.ssh(victims)).stdout;
    const rerun = await host.ssh(`${BIN} setup alpha --yes`);
    assertEquals(rerun.code, 0, rerun.output);
    assertEquals((await host.ssh(victims)).stdout, untouched);
    assertMatch(untouched, /\/etc\/dp-victim root:root 700/);
    // Not walked at all once shared: a directory of alice's own keeps its group and mode.
    assertEquals(
      (await host.ssh("stat -c '%U:%G %a' /var/repos/alpha.git/objects/zz")).stdout.trim(),
      "alice:alice 2700",
    );
    await host.ssh(
      `cd /var/repos/alpha.git/objects && rm ${xx} pack/pack-0000.pack && rmdir zz && mv ${xx}.moved ${xx} && ` +
        "rm -r /etc/dp-victim /etc/dp-victim-file",
    );
    console.log(`setup with objects/${xx} a link to /etc/dp-victim (by alice): nothing outside the repository changed`);

    // rollback and status are root's: a member is told so (exit 2) and what to run instead.
    for (const command of ["rollback alpha", "status"]) {
      const denied = await asUser(host, "alice", `${BIN} ${command}`);
      assertEquals(denied.code, 2, `${command}: ${denied.output}`);
      assertMatch(denied.stderr, new RegExp(`error: \`${command.split(" ")[0]}\` needs root`), denied.stderr);
      assertMatch(
        denied.stderr,
        new RegExp(`hint: run \`sudo \\S+ ${command}\` or run it as root: members of the deploy group may push`),
      );
    }
    assertEquals(await (await fetch(`http://${host.address}:${ports.alpha}/`)).text(), "alpha-v3");

    // The control socket: the group's member is served, another user cannot even reach it.
    const member = await controlAs(host, "alice");
    assertEquals(member.code, 0, member.output);
    assertMatch(member.stdout, /"ok":true/);
    const outsider = await controlAs(host, "bob");
    assert(outsider.code !== 0, outsider.output);
    assertMatch(outsider.stderr, /Permission denied/);
    const app = await controlAs(host, "app-beta");
    assertMatch(app.stderr, /Permission denied/);
    console.log("control socket: alice (deploy) served; bob and app-beta refused (Permission denied)");
  } finally {
    await host.close();
    await Deno.remove(work, { recursive: true });
    await Deno.remove(debs, { recursive: true });
  }
});

/** A Python app that answers its version, and at /bind/<port> whether it may bind that TCP port; /udp: a UDP send. */
function binderApp(version: string): string {
  return `import http.server, os, socket
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ${JSON.stringify(version)}
        if self.path.startswith("/bind/"):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("127.0.0.1", int(self.path[6:])))
                body = "bound"
            except OSError as error:
                body = "refused: %s" % error.strerror
            finally:
                s.close()
        elif self.path == "/udp":
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.sendto(b"x", ("127.0.0.1", 9))
                body = "sent"
            except OSError as error:
                body = "refused: %s" % error.strerror
            finally:
                s.close()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body.encode())
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
`;
}

Deno.test("systemd host: a setgid program of the app's group a build user left while in it (versions before) is disarmed when it leaves the group; a setuid one a build leaves in /var/tmp or /dev/shm is gone", async () => {
  const host = await SystemdHost.create();
  const work = await Deno.makeTempDir({ prefix: "dp-laptop-" });
  try {
    const port = 18000 + Math.floor(Math.random() * 1000);
    for (const [app, at] of [["alpha", port], ["beta", port + 1000]] as const) {
      const setup = await host.ssh(
        `${BIN} setup ${app} --port ${at} --manager systemd --proxy-host ${host.address} --yes`,
      );
      assertEquals(setup.code, 0, setup.output);
    }
    await Deno.writeTextFile(join(host.rootfs, "opt/deployments/alpha/.env.production"), "SECRET=alpha-secret-1\n");
    const { push } = await host.laptop(work, "alpha");
    const deployYml = "name: alpha\ntype: python\ncommand: python3 app.py\n" +
      "healthCheck: { path: /health, window: 8s, interval: 200ms, successes: 2 }\n";
    await push({ "deploy.yml": deployYml, "app.py": pythonApp("v1"), "requirements.txt": "# none\n" }, "v1");
    // A server a version before set up (build-alpha in app-alpha), where a malicious dependency of a build left a
    // setgid copy of cat of the app's group in a directory anyone may write to (not its home, which each build makes
    // new; not /tmp or /var/tmp, which each build now sweeps: an uploads directory an operator left 1777, say).
    assertEquals(
      (await host.ssh("usermod --append --groups app-alpha build-alpha && install -d -m 1777 /srv/shared")).code,
      0,
    );
    const planted = await asUser(
      host,
      "build-alpha",
      "sh -c 'cp /bin/cat /srv/shared/.cat && chgrp app-alpha /srv/shared/.cat && chmod 2755 /srv/shared/.cat'",
    );
    assertEquals(planted.code, 0, planted.output);
    const pushed = await push({ "app.py": pythonApp("v2") }, "v2");
    // Another app's user (a process of it that deploy-paradigm did not start: no no-new-privileges) runs it: before,
    // it printed alpha's secret.
    const read = await asUser(host, "app-beta", "/srv/shared/.cat /opt/deployments/alpha/current/.env");
    assert(read.code !== 0, read.output);
    assertMatch(read.stderr, /Permission denied/);
    assert(!read.output.includes("alpha-secret-1"), read.output);
    assertMatch(pushed, /✓ build-alpha is out of the group app-alpha/);
    assertMatch(
      pushed,
      /✓ 1 file of build-alpha's in the group app-alpha .* given to its own group: \/srv\/shared\/\.cat/,
    );
    assertEquals((await host.ssh("stat -c '%U:%G %a' /srv/shared/.cat")).stdout.trim(), "build-alpha:build-alpha 755");

    // A build (a malicious dependency) leaves set-user-ID copies of python for later: anyone running one would be
    // build-alpha during the next build and could rewrite that release before its seal. Gone after each build command.
    const plant = "cp /usr/bin/python3 /var/tmp/.py && chmod 6755 /var/tmp/.py\n" +
      "cp /usr/bin/python3 /dev/shm/.py && chmod 6755 /dev/shm/.py\nls -l /var/tmp/.py\n";
    const planting = await push(
      { "deploy.yml": `${deployYml}build: sh plant.sh\n`, "plant.sh": plant, "app.py": pythonApp("v3") },
      "v3",
    );
    assertMatch(planting, /-rwsr-sr-x 1 build-alpha build-alpha .* \/var\/tmp\/\.py/); // it was made
    const left = await host.ssh("find /tmp /var/tmp /dev/shm -user build-alpha");
    assertEquals(left.stdout.trim(), "", "what build-alpha left in the shared temp dirs");
  } finally {
    await host.close();
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
});

Deno.test("systemd host: an app's units may bind only their own port (SocketBindAllow/Deny)", async () => {
  const host = await SystemdHost.create();
  const work = await Deno.makeTempDir({ prefix: "dp-laptop-" });
  try {
    const ports = { alpha: 18000 + Math.floor(Math.random() * 500), beta: 18600 + Math.floor(Math.random() * 500) };
    for (const [app, port] of Object.entries(ports)) {
      const setup = await host.ssh(
        `${BIN} setup ${app} --port ${port} --manager systemd --proxy-host ${host.address} --yes`,
      );
      assertEquals(setup.code, 0, setup.output);
      const dir = join(work, app);
      await Deno.mkdir(dir);
      const git = (...args: string[]) => run(["git", ...args], { cwd: dir, env: host.env });
      await git("init", "--quiet", "-b", "main");
      await Deno.writeTextFile(
        join(dir, "deploy.yml"),
        `name: ${app}\ntype: python\ncommand: python app.py\nwatch: 300ms\n` +
          "healthCheck: { path: /health, window: 8s, interval: 200ms, successes: 2 }\n",
      );
      await Deno.writeTextFile(join(dir, "app.py"), binderApp(`${app}-v1`));
      await Deno.writeTextFile(join(dir, "requirements.txt"), "# standard library only\n");
      await git("add", "-A");
      await git("commit", "--quiet", "-m", "v1");
      const pushed = await git("push", `root@${host.address}:/var/repos/${app}.git`, "main");
      assertEquals(pushed.code, 0, pushed.output);
    }
    const slotPort = async (app: string) =>
      JSON.parse(await Deno.readTextFile(join(host.rootfs, `opt/deployments/${app}/route.json`))).port as number;
    const [alphaSlot, betaSlot] = [await slotPort("alpha"), await slotPort("beta")];
    // The instance's drop-in carries its own slot port; systemd parsed it (252 shows `tcp18042`, `udpany`).
    const shown = await host.ssh("systemctl show -p SocketBindAllow -p SocketBindDeny alpha@blue.service");
    assertEquals(shown.code, 0, shown.output);
    assertMatch(shown.stdout, new RegExp(`^SocketBindAllow=tcp:?${alphaSlot}$`, "m"));
    assertMatch(shown.stdout, /^SocketBindAllow=udp:?(any)?$/m);
    assertMatch(shown.stdout, /^SocketBindDeny=any$/m);
    // Apps still serve from inside it (they bind their PORT), and a UDP send works.
    const ask = async (path: string) => await (await fetch(`http://${host.address}:${ports.alpha}${path}`)).text();
    assertEquals(await ask("/"), "alpha-v1");
    assertEquals(await ask("/udp"), "sent");
    // Whether this systemd enforces it: built with its BPF framework, on cgroup v2.
    const version = (await host.ssh("systemctl --version")).stdout;
    const cgroup = (await host.ssh("stat -fc %T /sys/fs/cgroup")).stdout.trim();
    const enforced = version.includes("+BPF_FRAMEWORK") && cgroup === "cgroup2fs";
    const other = await ask(`/bind/${betaSlot}`);
    const spare = await ask(`/bind/${betaSlot + 1000}`);
    if (enforced) {
      assertMatch(other, /^refused: Operation not permitted/);
      assertMatch(spare, /^refused: Operation not permitted/);
      console.log(`app-alpha binding beta's slot port ${betaSlot}: ${other}; its own port serves`);
    } else {
      // Not enforced here (the README says which systemd enforces it): the bind goes through, and it is the
      // deploy's and the proxy's owner checks (tests below) that keep beta's traffic from alpha.
      assertEquals(spare, "bound");
      assertMatch(other, /^(bound|refused: Address already in use)$/);
      console.log(
        `this systemd does not enforce SocketBind* (${version.split("\n")[0]}, ${
          /[+-]BPF_FRAMEWORK/.exec(version)?.[0]
        }, ${cgroup}): app-alpha binding ${betaSlot}: ${other}; the deploy and proxy checks of the port's owner apply`,
      );
    }
    // systemd-analyze security: no worse than the same instance without the SocketBind lines.
    const dropIn = await Deno.readTextFile(join(host.rootfs, "etc/systemd/system/alpha@green.service.d/exec.conf"))
      .catch(() => Deno.readTextFile(join(host.rootfs, "etc/systemd/system/alpha@blue.service.d/exec.conf")));
    await Deno.writeTextFile(
      join(host.rootfs, "etc/systemd/system/dpbefore@.service"),
      await Deno.readTextFile(join(host.rootfs, "etc/systemd/system/alpha@.service")),
    );
    await Deno.mkdir(join(host.rootfs, "etc/systemd/system/dpbefore@blue.service.d"));
    await Deno.writeTextFile(
      join(host.rootfs, "etc/systemd/system/dpbefore@blue.service.d/exec.conf"),
      dropIn.split("\n").filter((line) => !line.startsWith("SocketBind")).join("\n"),
    );
    await host.ssh("systemctl daemon-reload");
    const [before, after] = [await exposure(host, "dpbefore@blue.service"), await exposure(host, "alpha@blue.service")];
    console.log(`systemd-analyze security: without SocketBind* ${before.score}, with ${after.score} ${after.verdict}`);
    assert(after.score <= before.score, JSON.stringify({ before, after }));
  } finally {
    await host.close();
    await Deno.remove(work, { recursive: true });
  }
});

Deno.test("PM2 server: apps under their own users (ps), no reading another's .env; a malicious postinstall fails the build", async () => {
  const id = crypto.randomUUID().slice(0, 6);
  const users = { alpha: `dpu${id}a`, beta: `dpu${id}b` };
  const removers: (() => Promise<void>)[] = [];
  try {
    for (const user of Object.values(users)) removers.push(await addTestUser(user));
    await withServer(async (server) => {
      // The temp root is 0700 (mkdtemp): let the app users reach their own directories.
      for (const dir of [server.root, server.prefix]) {
        await Deno.mkdir(dir, { recursive: true });
        await Deno.chmod(dir, 0o755);
      }
      const ports = { alpha: 0, beta: 0 };
      const repos: Record<string, AppRepo> = {};
      for (const app of ["alpha", "beta"] as const) {
        ports[app] = freePort(); // never one port twice in a run (two random ones collided once in CI)
        const secret = `${app}-secret-${id}`;
        const remote = await server.setupApp(app, { port: ports[app], manager: "pm2", dotenv: `SECRET=${secret}\n` });
        const paths = server.paths(app);
        await Deno.writeTextFile(paths.config, `user: ${users[app]}\n`, { append: true });
        repos[app] = await AppRepo.create(server, app, remote);
        await repos[app].node(app, `${app}-v1`);
        const pushed = await repos[app].pushOk();
        assertMatch(pushed.output, /✓ build/);
      }
      for (const app of ["alpha", "beta"] as const) {
        const answer = await get(`http://127.0.0.1:${ports[app]}/`);
        assertEquals(answer, { status: 200, body: `${app}-v1` });
        const list = JSON.parse((await run(["pm2", "jlist"], { env: server.env })).stdout) as {
          name: string;
          pid: number;
        }[];
        const pid = list.find((p) => p.name === `${app}-blue`)!.pid;
        const user = (await run(["ps", "-o", "user=", "-p", String(pid)])).stdout.trim();
        console.log(`ps: ${app}-blue (pid ${pid}) runs as ${user}`);
        assertEquals(user, users[app]);
      }
      const alpha = server.paths("alpha");
      const beta = server.paths("beta");
      const as = (user: string, argv: string[]) =>
        run(["setpriv", `--reuid=${user}`, `--regid=${user}`, "--init-groups", "--", ...argv]);
      const own = await as(users.alpha, ["cat", join(alpha.current, ".env")]);
      assertEquals(own.code, 0, own.output);
      for (
        const argv of [
          ["cat", join(beta.current, ".env")],
          ["cat", beta.envFile("production")],
          ["cat", beta.accessLog],
          ["cat", join(alpha.dir, "pm2-alpha-blue.json")],
          ["touch", join(alpha.current, "server.js")],
        ]
      ) {
        const result = await as(users.alpha, argv);
        assert(result.code !== 0, `as ${users.alpha}, ${argv.join(" ")} worked`);
        assertMatch(result.stderr, /Permission denied/, argv.join(" "));
      }
      console.log(`as ${users.alpha}: beta's .env, .env.production and logs, its own pm2 file: Permission denied`);

      // A postinstall that tries to write outside its release: into beta's home and alpha's config.yml.
      const targets = [join(beta.dir, "home", "pwned"), alpha.config, join(server.prefix, "pwned")];
      const evil = `const fs = require("node:fs");
let refused = 0;
for (const target of ${JSON.stringify(targets)}) {
  try { fs.appendFileSync(target, "pwned\\n"); console.log("wrote " + target); }
  catch (error) { refused++; console.error("evil: " + error.code + " " + target); }
}
process.exit(refused ? 1 : 0);
`;
      const configBefore = await Deno.readTextFile(alpha.config);
      await repos.alpha.node("alpha", "alpha-evil", "ok", {
        files: {
          "package.json": JSON.stringify({
            name: "alpha",
            version: "1.0.0",
            private: true,
            scripts: { postinstall: "node evil/install.js" },
          }),
          "evil/install.js": evil,
        },
      });
      const pushed = await repos.alpha.push();
      assert(pushed.code !== 0, pushed.output);
      assertMatch(pushed.output, /✗ build/);
      assertMatch(pushed.output, /evil: EACCES/);
      assertMatch(pushed.output, /nothing was switched: \w+ still serves/);
      assertEquals(await Deno.readTextFile(alpha.config), configBefore);
      for (const target of targets.slice(0, 1).concat(targets.slice(2))) {
        assertEquals(await Deno.stat(target).then(() => "written", () => "absent"), "absent", target);
      }
      assertEquals(await get(`http://127.0.0.1:${ports.alpha}/`), { status: 200, body: "alpha-v1" });
      console.log(
        `a postinstall writing outside its release: ${
          pushed.output.split("\n").filter((l) => /evil: EACCES/.test(l)).length
        } writes refused (EACCES), the deploy failed at build, alpha-v1 still serves`,
      );
    });
  } finally {
    for (const remove of removers) await remove();
  }
});

Deno.test("PM2 server: the running app cannot change the release its next push builds, nor the build's caches (a build user of its own)", async () => {
  const id = crypto.randomUUID().slice(0, 6);
  const runtime = `dpu${id}a`;
  let attacker: Deno.ChildProcess | undefined;
  try {
    await withBuildUser(`f5${id}`, runtime, async ({ app, builder, port, paths, repo }) => {
      // The build says who runs it and what its home holds, leaves a config there for the next
      // build (npm would run scripts through its shell) and a setgid copy of cat in the release,
      // and takes 3 s: long enough for the attacker to find the release.
      const build = [
        "#!/bin/sh",
        "id -un > built-by",
        'ls -A "$HOME" > home-at-build',
        `echo "script-shell=$PWD/evil.sh" > "$HOME/.npmrc"`,
        "cp /bin/cat sg && chmod 2745 sg",
        "sleep 3",
      ];
      const files = { "build.sh": build.join("\n") + "\n" };
      await repo.node(app, `${app}-v1`, "ok", { files, extra: "build: sh build.sh\n" });
      await repo.pushOk();
      assertEquals((await Deno.readTextFile(join(paths.current, "built-by"))).trim(), builder);
      const home = await Deno.stat(join(paths.dir, "build-home"));
      assertEquals([home.uid, (home.mode! & 0o777).toString(8)], [lookupUser(builder)!.uid, "700"]);

      // The compromised app: its user, no sandbox (PM2), trying for as long as the next deploy
      // runs to change each new release and to plant a package in the build's npm cache.
      const script = `import os, sys, time
releases, cache = sys.argv[1], sys.argv[2]
known = set(os.listdir(releases))
said = set()
def say(line):
    if line not in said:
        said.add(line); print(line, flush=True)
while True:
    for name in os.listdir(releases):
        if name in known: continue
        for target in ("server.js", "planted"):
            path = os.path.join(releases, name, target)
            try:
                with open(path, "a") as f: f.write("// pwned\\n")
                say("wrote " + target)
            except OSError as error:
                say("refused " + target + " " + type(error).__name__)
    try:
        os.makedirs(os.path.join(cache, ".npm", "_cacache"), exist_ok=True); say("wrote cache")
    except OSError as error:
        say("refused cache " + type(error).__name__)
    time.sleep(0.001)
`;
      attacker = new Deno.Command("setpriv", {
        args: [`--reuid=${runtime}`, `--regid=${runtime}`, "--init-groups", "--", "/usr/bin/python3", "-c", script]
          .concat([paths.releases, join(paths.dir, "build-home")]),
        stdout: "piped",
        stderr: "inherit",
      }).spawn();
      const said = new Response(attacker.stdout).text();
      await repo.node(app, `${app}-v2`, "ok", { files, extra: "build: sh build.sh\n" });
      const pushed = await repo.pushOk();
      attacker.kill("SIGKILL");
      await attacker.status;
      attacker = undefined;
      const lines = (await said).trim().split("\n");
      console.log(`the app as ${runtime}, during the build of v2: ${lines.join("; ")}`);
      assert(!lines.some((line) => line.startsWith("wrote")), lines.join("\n"));
      assert(lines.includes("refused server.js PermissionError"), lines.join("\n"));
      assert(lines.includes("refused planted PermissionError"), lines.join("\n"));
      assert(lines.includes("refused cache PermissionError"), lines.join("\n"));
      assertMatch(pushed.output, /✓ deployed/);
      assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: `${app}-v2` });
      assertEquals(await Deno.stat(join(paths.current, "planted")).then(() => "there", () => "absent"), "absent");
      assertEquals(await Deno.readTextFile(join(paths.current, "server.js")), nodeApp(`${app}-v2`));
      // The second build found an empty home: not the first one's .npmrc.
      assertEquals(await Deno.readTextFile(join(paths.current, "home-at-build")), "");
      // The setgid cat is a plain root file of the release: no program of the app's group.
      const sg = await Deno.stat(join(paths.current, "sg"));
      assertEquals([sg.uid, (sg.mode! & 0o7777).toString(8)], [0, "755"]);
    });
  } finally {
    if (attacker) await attacker.status; // killed with its user's other processes
  }
});

/** A build that opens its home to others and leaves a set-user-ID copy of python there (`.py`), then takes 2 s. */
const PLANT_SETUID_PYTHON = `chmod 755 "$HOME" && cp /usr/bin/python3 "$HOME/.py" && chmod 4755 "$HOME/.py"\nsleep 2\n`;

/**
 * The attacker, in Python, run from that copy: prints its real and effective uids (and exits when
 * they are the same, `onlyRaised`), gives its saved uid back to its real one (out of reach of
 * `kill -1` as the build user), then appends to `server.js` of each new release under argv[1].
 */
function releaseWriter(onlyRaised: boolean): string {
  return `import os, sys, time
ruid, euid = os.getuid(), os.geteuid()
print("attacker: ruid %d euid %d" % (ruid, euid), flush=True)
${onlyRaised ? "if euid == ruid: sys.exit(0)\n" : ""}os.setresuid(ruid, euid, ruid)
releases = sys.argv[1]
known, done = set(os.listdir(releases)), set()
while True:
    for name in set(os.listdir(releases)) - known - done:
        try:
            with open(os.path.join(releases, name, "server.js"), "a") as f: f.write("// pwned\\n")
            done.add(name); print("attacker: wrote releases/" + name, flush=True)
        except OSError: pass
    time.sleep(0.002)
`;
}

Deno.test("PM2 server: a set-user-ID program a build leaves does not make the running app its build user: it gains nothing, and cannot write the next release", async () => {
  const id = crypto.randomUUID().slice(0, 6);
  const runtime = `dpu${id}n`;
  await withBuildUser(`sx${id}`, runtime, async ({ app, builder, port, paths, repo }) => {
    const py = join(paths.dir, "build-home", ".py");
    // A malicious dependency opens the build's home to others and leaves a set-user-ID copy of python in it (the
    // home is made new only when the next build starts; the release being built, opened so, would do as well).
    const build = PLANT_SETUID_PYTHON;
    // The compromised running app (its user, under PM2) runs it: as the build user, it gives up the saved uid that
    // would let `kill -KILL -1` as the build user reach it, and waits for the next release to write into it.
    const attack = releaseWriter(true);
    const server = nodeApp(`${app}-v1`) + `
const fs = require("node:fs"), { spawn } = require("node:child_process");
const timer = setInterval(() => {
  if (!fs.existsSync(${JSON.stringify(py)})) return;
  clearInterval(timer);
  spawn(${JSON.stringify(py)}, ["-c", ${JSON.stringify(attack)}, ${
      JSON.stringify(paths.releases)
    }], { cwd: "/", detached: true, stdio: "inherit" });
}, 100);
`;
    await repo.node(app, `${app}-v1`, "ok", {
      files: { "build.sh": build, "server.js": server },
      extra: "build: sh build.sh\n",
    });
    await repo.pushOk();
    const planted = await Deno.stat(py);
    assertEquals([planted.uid, (planted.mode! & 0o7777).toString(8)], [lookupUser(builder)!.uid, "4755"]);
    await new Promise((resolve) => setTimeout(resolve, 1500)); // the app found it, and ran it
    await repo.node(app, `${app}-v2`, "ok", { files: { "build.sh": "sleep 2\n" }, extra: "build: sh build.sh\n" });
    const pushed = await repo.pushOk();
    const log = await Deno.readTextFile(join(paths.logDir, "access.log")).catch(() => "");
    console.log(log.split("\n").filter((line) => line.includes("attacker:")).join("\n"));
    assertMatch(log, /attacker: ruid (\d+) euid \1\b/, "the app ran the program, and stayed its own user");
    assert(!log.includes("attacker: wrote"), log);
    assertMatch(pushed.output, /✓ deployed/);
    assertEquals(await Deno.readTextFile(join(paths.current, "server.js")), nodeApp(`${app}-v2`));
    assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: `${app}-v2` });
  });
});

Deno.test("PM2 server: a process another user started from a set-user-ID program of the build user's is killed before the next build, even with its saved uid given back", async () => {
  const id = crypto.randomUUID().slice(0, 6);
  const runtime = `dpu${id}h`;
  let attacker: Deno.ChildProcess | undefined;
  try {
    await withBuildUser(`sh${id}`, runtime, async ({ app, builder, port, paths, repo }) => {
      const py = join(paths.dir, "build-home", ".py");
      const build = PLANT_SETUID_PYTHON;
      await repo.node(app, `${app}-v1`, "ok", { files: { "build.sh": build }, extra: "build: sh build.sh\n" });
      await repo.pushOk();
      // Run by a process deploy-paradigm did not start (no no-new-privileges: another program of that user): it is the
      // build user by its effective uid only, and waits for the next release.
      const script = releaseWriter(false);
      attacker = new Deno.Command("setpriv", {
        args: [`--reuid=${runtime}`, `--regid=${runtime}`, "--init-groups", "--", py, "-c", script, paths.releases],
        stdout: "piped",
        stderr: "inherit",
      }).spawn();
      const said = new Response(attacker.stdout).text();
      await repo.node(app, `${app}-v2`, "ok", { files: { "build.sh": "sleep 2\n" }, extra: "build: sh build.sh\n" });
      const pushed = await repo.pushOk();
      const status = await Promise.race([attacker.status, new Promise((r) => setTimeout(r, 2000, "running"))]);
      await stopChild(attacker);
      attacker = undefined;
      const lines = (await said).trim().split("\n");
      console.log(lines.join("\n"));
      assertEquals(lines[0], `attacker: ruid ${lookupUser(runtime)!.uid} euid ${lookupUser(builder)!.uid}`);
      assert(!lines.some((line) => line.startsWith("attacker: wrote")), lines.join("\n"));
      assertEquals((status as Deno.CommandStatus).signal, "SIGKILL", "killed by the deploy");
      assertMatch(pushed.output, /✓ deployed/);
      assertEquals(await Deno.readTextFile(join(paths.current, "server.js")), nodeApp(`${app}-v2`));
      assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: `${app}-v2` });
    });
  } finally {
    await stopChild(attacker);
  }
});

Deno.test("PM2 server: the running app has no channel to pm2's root daemon: it cannot rename its process nor grow the daemon", async () => {
  const id = crypto.randomUUID().slice(0, 6);
  await withBuildUser(`ip${id}`, `dpu${id}i`, async ({ app, port, repo, server }) => {
    const pm2 = async (...args: string[]) => (await run(["pm2", ...args], { env: server.env })).stdout;
    const daemonRss = async () => {
      const pid = (await Deno.readTextFile(join(server.pm2Home, "pm2.pid"))).trim();
      return Number(/^VmRSS:\s+(\d+)/m.exec(await Deno.readTextFile(`/proc/${pid}/status`))![1]) * 1024;
    };
    await repo.node(app, `${app}-v1`);
    await repo.pushOk();
    const before = await daemonRss();
    // The compromised app speaks pm2's protocol on the channel the daemon gave it (fd 3, NODE_CHANNEL_FD): it names
    // its process after another, and registers 50,000 actions of 2 KiB, which the daemon keeps (and dumps).
    const attack = `
console.log("ipc: " + (process.send ? "channel open" : "no channel"));
if (process.send) {
  process.send({ type: "axm:option:configuration", data: { name: "renamed-by-app" } });
  const pad = "x".repeat(2048);
  let i = 0;
  const burst = () => {
    for (let n = 0; n < 500 && i < 50000; n++, i++) process.send({ type: "axm:action", data: { action_name: "a" + i, pad } });
    if (i < 50000) setTimeout(burst, 1); else console.log("ipc: sent " + i);
  };
  burst();
}
`;
    await repo.node(app, `${app}-v2`, "ok", { files: { "server.js": nodeApp(`${app}-v2`) + attack } });
    await repo.pushOk();
    assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: `${app}-v2` });
    const log = join(server.paths(app).logDir, "access.log");
    for (let i = 0; i < 100 && !/ipc: (sent|no channel)/.test(await Deno.readTextFile(log)); i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const grown = (await daemonRss()) - before;
    const names = JSON.parse((await pm2("jlist")).split("\n").filter((line) => line.startsWith("[")).pop()!)
      .map((p: { name: string }) => p.name);
    console.log(
      `ipc: ${(await Deno.readTextFile(log)).match(/ipc: .*/g)?.join("; ")}; the daemon grew ${
        (grown / 2 ** 20).toFixed(1)
      } MiB; processes ${names.join(", ")}`,
    );
    assert(!names.includes("renamed-by-app"), names.join(", "));
    assert(grown < 30 * 2 ** 20, `the daemon grew ${grown} bytes`);
  });
});

Deno.test("PM2 server: such a process that forks and exits without end, which no kill by pid catches, fails the deploy: what it wrote is not deployed", async () => {
  const id = crypto.randomUUID().slice(0, 6);
  const runtime = `dpu${id}f`;
  const out = `/tmp/dp-forkchain-${id}.txt`;
  try {
    await withBuildUser(`fc${id}`, runtime, async ({ app, builder, port, paths, repo }) => {
      const py = join(paths.dir, "build-home", ".py");
      const build = PLANT_SETUID_PYTHON;
      await repo.node(app, `${app}-v1`, "ok", { files: { "build.sh": build }, extra: "build: sh build.sh\n" });
      await repo.pushOk();
      await Deno.writeTextFile(out, "", { mode: 0o666 });
      await Deno.chmod(out, 0o666);
      const script = `import os, sys, time
ruid, euid = os.getuid(), os.geteuid()
os.setresuid(ruid, euid, ruid)
releases = sys.argv[1]
log = open(sys.argv[2], "a", buffering=1)
known, done = set(os.listdir(releases)), set()
while True:
    if os.fork(): os._exit(0)
    for name in set(os.listdir(releases)) - known - done:
        try:
            with open(os.path.join(releases, name, "server.js"), "a") as f: f.write("// pwned\\n")
            done.add(name); log.write("attacker: wrote releases/" + name + "\\n")
        except OSError: pass
`;
      const first = new Deno.Command("setpriv", {
        args: [
          `--reuid=${runtime}`,
          `--regid=${runtime}`,
          "--init-groups",
          "--",
          py,
          "-c",
          script,
          paths.releases,
          out,
        ],
        stdout: "null",
        stderr: "null",
      }).spawn();
      await first.status; // its first child goes on, and so on
      await repo.node(app, `${app}-v2`, "ok", { files: { "build.sh": "sleep 2\n" }, extra: "build: sh build.sh\n" });
      const pushed = await repo.push();
      console.log(`the attacker: ${(await Deno.readTextFile(out)).trim() || "wrote nothing"}`);
      assert(pushed.code !== 0, pushed.output);
      assertMatch(pushed.output, new RegExp(`a process of uid ${lookupUser(runtime)!.uid} runs as ${builder}`));
      assertEquals(await Deno.readTextFile(join(paths.current, "server.js")), nodeApp(`${app}-v1`));
      assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: `${app}-v1` });
    });
  } finally {
    await Deno.remove(out).catch(() => {});
  }
});

Deno.test("PM2 server: nothing a build starts outlives it, not even a chain of processes that each fork the next and exit", async () => {
  // With `user:` (a user the operator chose, which other apps may share): its build user is still the app's alone.
  const id = crypto.randomUUID().slice(0, 6);
  await withBuildUser(`fk${id}`, `dpu${id}c`, async ({ app, builder, paths, repo }) => {
    // Leaves the build's session, then forks the next process and exits, every 2 ms: by the
    // time /proc says its pid, that process is gone. It writes its pid to $HOME/alive.
    const chain = `import os, sys, time
os.setsid()
end = time.time() + 120
while time.time() < end:
    if os.fork(): os._exit(0)
    with open(sys.argv[1], "w") as f: f.write(str(os.getpid()))
    time.sleep(0.002)
`;
    const files = { "chain.py": chain, "build.sh": '#!/bin/sh\n/usr/bin/python3 chain.py "$HOME/alive"\n' };
    await repo.node(app, `${app}-v1`, "ok", { files, extra: "build: sh build.sh\n" });
    await repo.pushOk();
    const alive = join(paths.dir, "build-home", "alive");
    assert(await Deno.stat(alive).then(() => true, () => false), "the chain never ran");
    await new Promise((resolve) => setTimeout(resolve, 300));
    const before = await Deno.readTextFile(alive);
    await new Promise((resolve) => setTimeout(resolve, 300));
    assertEquals(await Deno.readTextFile(alive), before, "the chain runs on after the deploy");
    assertEquals(processesOf(lookupUser(builder)!.uid), []);
    console.log("a fork chain left by the build: gone when the deploy ended");
  });
});

/**
 * A PM2 test server whose directories test users can reach, app `app` set up there (pm2, on a
 * port of its own) to run as `runtime` (a new test user: `user:` in config.yml unless it is the
 * app's default user) and to be built by its build user (a new test user too, in `runtime`'s
 * group, as setup makes it); the users and whatever processes they have are gone at the end.
 */
async function withBuildUser(
  app: string,
  runtime: string,
  fn: (
    t: { app: string; builder: string; port: number; paths: AppPaths; repo: AppRepo; server: TestServer },
  ) => Promise<void>,
): Promise<void> {
  const builder = buildUserName(app);
  const removers: (() => Promise<void>)[] = [];
  try {
    removers.push(await addTestUser(runtime));
    removers.push(await addTestUser(builder, runtime));
    // (run first: removers run in reverse; a user with a process left cannot be removed)
    removers.push(() => killAll(builder), () => killAll(runtime));
    await withServer(async (server) => {
      for (const dir of [server.root, server.prefix]) {
        await Deno.mkdir(dir, { recursive: true });
        await Deno.chmod(dir, 0o755);
      }
      const port = freePort();
      const remote = await server.setupApp(app, { port, manager: "pm2" });
      const paths = server.paths(app);
      if (runtime !== defaultUserName(app)) {
        await Deno.writeTextFile(paths.config, `user: ${runtime}\n`, { append: true });
      }
      await fn({ app, builder, port, paths, repo: await AppRepo.create(server, app, remote), server });
    });
  } finally {
    for (const remove of removers.reverse()) await remove();
  }
}

/** The pids of the processes whose real uid is `uid` (/proc). */
function processesOf(uid: number): number[] {
  const pids: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const status = Deno.readTextFileSync(`/proc/${entry.name}/status`);
      if (/^State:\s+Z/m.test(status)) continue;
      if (Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]) === uid) pids.push(Number(entry.name));
    } catch { /* gone */ }
  }
  return pids;
}

/** Kills every process of test user `name` (kill -1 as that user), so that it can be removed. */
async function killAll(name: string): Promise<void> {
  for (let round = 0; round < 5; round++) {
    await new Deno.Command("setpriv", {
      args: [`--reuid=${name}`, `--regid=${name}`, "--clear-groups", "--", "kill", "-KILL", "-1"],
      stdout: "null",
      stderr: "null",
    }).output();
  }
}

/** A Python HTTP server as `user` on 127.0.0.1:`port` that answers `squatted`; resolves once it answers. */
async function squat(user: string, port: number): Promise<Deno.ChildProcess> {
  const script = "import http.server\n" +
    "class H(http.server.BaseHTTPRequestHandler):\n" +
    "    def do_GET(self):\n" +
    "        self.send_response(200); self.end_headers(); self.wfile.write(b'squatted')\n" +
    "    def log_message(self, *a): pass\n" +
    `http.server.HTTPServer(("127.0.0.1", ${port}), H).serve_forever()\n`;
  for (let attempt = 0; attempt < 50; attempt++) {
    const child = new Deno.Command("setpriv", {
      // /usr/bin/python3: not a PATH shim in root's home, which the user cannot read.
      args: [`--reuid=${user}`, `--regid=${user}`, "--init-groups", "--", "/usr/bin/python3", "-c", script],
      stdout: "null",
      stderr: "null",
    }).spawn();
    for (let i = 0; i < 30; i++) {
      const answer = await get(`http://127.0.0.1:${port}/health`);
      if ("body" in answer && answer.body === "squatted") return child;
      const exited = await Promise.race([child.status.then(() => true), new Promise((r) => setTimeout(r, 100, false))]);
      if (exited) break; // the port was not free yet: again
    }
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await child.status;
  }
  throw new Error(`could not take port ${port} as ${user}`);
}

/** Stops `child` (SIGKILL) and waits for it. */
async function stopChild(child: Deno.ChildProcess | undefined): Promise<void> {
  if (!child) return;
  try {
    child.kill("SIGKILL");
  } catch { /* gone */ }
  await child.status;
}

/**
 * A PM2 test server whose directories two new test users can reach, app beta set up there on
 * `options` as the beta user's, and `take(port)`: that port taken by the squatter user's process
 * (stopped at the end, as are the users removed).
 */
async function withSquatter(
  options: { strategy?: "restart" },
  fn: (
    t: { server: TestServer; port: number; remote: string; users: { squatter: string; beta: string } },
    take: (port: number, user?: string) => Promise<void>,
    release: () => Promise<void>,
  ) => Promise<void>,
): Promise<void> {
  const id = crypto.randomUUID().slice(0, 6);
  const users = { squatter: `dpu${id}s`, beta: `dpu${id}b` };
  const removers: (() => Promise<void>)[] = [];
  let squatter: Deno.ChildProcess | undefined;
  try {
    for (const user of Object.values(users)) removers.push(await addTestUser(user));
    await withServer(async (server) => {
      for (const dir of [server.root, server.prefix]) {
        await Deno.mkdir(dir, { recursive: true });
        await Deno.chmod(dir, 0o755);
      }
      const port = freePort();
      const remote = await server.setupApp("beta", { port, manager: "pm2", ...options });
      await Deno.writeTextFile(server.paths("beta").config, `user: ${users.beta}\n`, { append: true });
      await fn({ server, port, remote, users }, async (taken, user = users.squatter) => {
        squatter = await squat(user, taken);
      }, async () => {
        await stopChild(squatter);
        squatter = undefined;
      });
    });
  } finally {
    await stopChild(squatter);
    for (const remove of removers) await remove();
  }
}

Deno.test("PM2 server: the proxy refuses a slot port another user's process took when the app's process stopped (502), and forwards again once the app has it back", async () => {
  await withSquatter({}, async ({ server, port, remote, users }, take, release) => {
    const repo = await AppRepo.create(server, "beta", remote);
    await repo.node("beta", "beta-v1");
    await repo.pushOk();
    assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: "beta-v1" });
    const slot = JSON.parse(await Deno.readTextFile(join(server.paths("beta").dir, "route.json"))).port as number;
    // beta's process goes away (a crash; here a stop), and another user's process takes its slot port.
    const stopped = await run(["pm2", "stop", "beta-blue"], { env: server.env });
    assertEquals(stopped.code, 0, stopped.output);
    await take(slot);
    const uid = (await run(["id", "-u", users.squatter])).stdout.trim();
    const until = async (ok: (answer: Awaited<ReturnType<typeof get>>) => boolean) => {
      let answer = await get(`http://127.0.0.1:${port}/`);
      for (let i = 0; i < 80 && !ok(answer); i++) {
        await new Promise((r) => setTimeout(r, 100));
        answer = await get(`http://127.0.0.1:${port}/`);
      }
      return answer;
    };
    // Within one re-read of the routes (2 s), the proxy stops forwarding there: 502, the usual page.
    const refused = await until((answer) => "status" in answer && answer.status === 502);
    assert("status" in refused && refused.status === 502, JSON.stringify(refused));
    assert(!refused.body.includes("squatted"), refused.body);
    for (let i = 0; i < 5; i++) {
      const again = await get(`http://127.0.0.1:${port}/`);
      assert("status" in again && again.status === 502 && !again.body.includes("squatted"), JSON.stringify(again));
    }
    const line = new RegExp(
      `beta: port ${slot} is held by ${users.squatter} \\(uid ${uid}\\), not ${users.beta}: another process took it`,
    );
    assertMatch(server.proxyLog, line);
    assertEquals(server.proxyLog.split("\n").filter((l) => line.test(l)).length, 1, "logged once");
    console.log(server.proxyLog.split("\n").find((l) => line.test(l))?.trim());
    // The squatter goes, beta's process comes back: forwarded again.
    await release();
    const started = await run(["pm2", "start", "beta-blue"], { env: server.env });
    assertEquals(started.code, 0, started.output);
    const back = await until((answer) => "body" in answer && answer.body === "beta-v1");
    assertEquals(back, { status: 200, body: "beta-v1" });
    assertMatch(server.proxyLog, /beta: the problem logged before is gone/);
  });
});

Deno.test("PM2 server: a port another user's process holds fails the deploy's health check, naming who holds it", async () => {
  // strategy: restart: the app binds its public port itself, the port another app's process took.
  await withSquatter({ strategy: "restart" }, async ({ server, port, remote, users }, take) => {
    await take(port);
    assertEquals(await get(`http://127.0.0.1:${port}/health`), { status: 200, body: "squatted" });
    const repo = await AppRepo.create(server, "beta", remote);
    await repo.node("beta", "beta-v1");
    const pushed = await repo.push();
    const uid = (await run(["id", "-u", users.squatter])).stdout.trim();
    assert(pushed.code !== 0, pushed.output);
    assertMatch(
      pushed.output,
      new RegExp(
        `port ${port} is held by ${users.squatter} \\(uid ${uid}\\), not ${users.beta}: another process took it`,
      ),
    );
    assert(!/✓ deployed/.test(pushed.output), pushed.output);
    console.log(pushed.output.split("\n").filter((line) => /held by/.test(line))[0]?.trim());
  });
});

Deno.test("PM2 server: a process of the app's own user on the next slot's port (a compromised release's) fails the deploy's health check, naming its pid; the release before serves on", async () => {
  await withSquatter({}, async ({ server, port, remote, users }, take) => {
    const repo = await AppRepo.create(server, "beta", remote);
    await repo.node("beta", "beta-v1");
    await repo.pushOk();
    const { slots } = parseYaml(await Deno.readTextFile(server.paths("beta").config)) as {
      slots: { blue: number; green: number };
    };
    const serving = JSON.parse(await Deno.readTextFile(join(server.paths("beta").dir, "route.json"))).port as number;
    const [next, slot] = serving === slots.blue ? [slots.green, "green"] : [slots.blue, "blue"];
    // beta-v2 listens 4 s after it starts; meanwhile, something beta-v1 left running as beta's user (not
    // in the new process's tree) takes that slot's port, once the deploy chose it (had it been taken
    // before, the slot would move to a free port) and pm2 started the new process.
    await repo.node("beta", "beta-v2", "ok", {
      files: { "server.js": "setTimeout(() => require('./app.js'), 4000);\n", "app.js": nodeApp("beta-v2") },
    });
    const pushing = repo.push();
    for (let i = 0; i < 600; i++) {
      const list = await run(["pm2", "jlist"], { env: server.env });
      if (list.stdout.includes(`"name":"beta-${slot}"`)) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    await take(next, users.beta);
    const pushed = await pushing;
    assert(pushed.code !== 0, pushed.output);
    assertMatch(
      pushed.output,
      new RegExp(`port ${next} is held by pid \\d+, not by beta-(blue|green) \\(pid \\d+\\) nor a process it started`),
    );
    assert(!/✓ deployed/.test(pushed.output), pushed.output);
    assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: "beta-v1" });
    console.log(pushed.output.split("\n").filter((line) => /held by pid/.test(line))[0]?.trim());
  });
});

Deno.test("docker app with a user: the container runs as its uid:gid, with no-new-privileges", async () => {
  const user = `dpu${crypto.randomUUID().slice(0, 6)}d`;
  const remove = await addTestUser(user);
  try {
    await withEngine(async (engine) => {
      await withServer(async (server) => {
        Object.assign(server.env, engine.env);
        for (const dir of [server.root, server.prefix]) {
          await Deno.mkdir(dir, { recursive: true });
          await Deno.chmod(dir, 0o755);
        }
        const port = 19000 + Math.floor(Math.random() * 900);
        const remote = await server.setupApp("shop", { port, manager: "pm2" });
        await Deno.writeTextFile(server.paths("shop").config, `user: ${user}\n`, { append: true });
        const repo = await AppRepo.create(server, "shop", remote);
        await commitDockerApp(repo, "shop", "shop-v1");
        await repo.pushOk();
        assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: "shop-v1" });
        const [uid, gid] = [(await must(["id", "-u", user])).trim(), (await must(["id", "-g", user])).trim()];
        const inspect = await run(
          ["docker", "inspect", "--format", "{{.Config.User}} {{json .HostConfig.SecurityOpt}}", "shop-blue"],
          { env: engine.env },
        );
        assertEquals(inspect.code, 0, inspect.output);
        console.log(`docker inspect shop-blue: ${inspect.stdout.trim()}`);
        assertEquals(inspect.stdout.trim().split(" ")[0], `${uid}:${gid}`);
        assertMatch(inspect.stdout, /no-new-privileges/);
        const id = await run(["docker", "exec", "shop-blue", "/bin/busybox", "id", "-u"], { env: engine.env });
        assertEquals(id.stdout.trim(), uid, id.output);
      });
    });
  } finally {
    await remove();
  }
});
