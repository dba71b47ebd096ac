/**
 * File modes of everything our commands create, under umask 022 (what a root shell usually has):
 * `setup` of a PM2 app (it starts the proxy under pm2 and runs `pm2 save`), a deploy with a .env
 * and a notification target in config.yml, and `setup` again (it rewrites config.yml). Then every
 * file and directory under the deployments root, the log dir, the repositories and PM2_HOME is
 * walked and printed (path, mode, owner): no file holding a secret (`.env*`, config.yml, pm2's
 * dump and ecosystem files, keys, tokens) is readable by group or others, nothing is
 * world-writable, and every owner is root or the app's own user.
 */
import { join, relative } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { AppRepo } from "../helpers/apps.ts";
import { BIN, freePort, get, run, withServer } from "../helpers/server.ts";

/**
 * A command under umask 022, as a root shell usually has it. Not `Deno.umask`: test files run in
 * parallel in one process, which has one umask.
 */
const UMASK_022 = ["sh", "-c", 'umask 022 && exec "$@"', "sh"];

/** A file that holds a secret, by its name. */
const SECRET_FILE =
  /^(\.env.*|config\.yml|dump\.pm2.*|pm2-.*\.json|.*\.key|key\.pem|account\.key|.*token.*|.*\.secret)$/i;

interface Walked {
  path: string;
  kind: "file" | "dir" | "link" | "socket/other";
  mode: number;
  uid: number;
  gid: number;
}

async function walk(root: string, into: Walked[]): Promise<void> {
  const info = await Deno.lstat(root);
  const kind = info.isSymlink ? "link" : info.isDirectory ? "dir" : info.isFile ? "file" : "socket/other";
  into.push({ path: root, kind, mode: info.mode! & 0o7777, uid: info.uid!, gid: info.gid! });
  if (info.isDirectory) {
    for await (const entry of Deno.readDir(root)) await walk(join(root, entry.name), into);
  }
}

/** uid and gid of a user, when it exists. */
async function lookup(name: string): Promise<{ uid: number; gid: number } | undefined> {
  const out = await run(["getent", "passwd", name]);
  if (out.code !== 0) return undefined;
  const [, , uid, gid] = out.stdout.split(":");
  return { uid: Number(uid), gid: Number(gid) };
}

Deno.test("under umask 022, no file holding a secret is readable by group or others, nothing is world-writable", async () => {
  const sink = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => new Response(null, { status: 204 }),
  );
  try {
    await withServer(async (server) => {
      const app = "modes";
      const port = freePort();
      const paths = server.paths(app);
      const setupArgs = [
        "setup",
        app,
        "--port",
        String(port),
        "--manager",
        "pm2",
        "--proxy-host",
        "127.0.0.1",
        "--yes",
      ];
      assert(!(await Deno.stat(server.pm2Home).then(() => true, () => false)), "no PM2_HOME before setup");
      const setup = () => run([...UMASK_022, BIN, ...setupArgs], { env: server.env });
      const first = await setup();
      assertEquals(first.code, 0, first.output);
      // `pm2 save` created dump.pm2 (the proxy's definition is in it): 0600 from the start.
      assertEquals((await Deno.stat(join(server.pm2Home, "dump.pm2"))).mode! & 0o777, 0o600);

      // Secrets: .env.production (setup made it 0600; writing it keeps that), a webhook URL in config.yml.
      await Deno.writeTextFile(paths.envFile("production"), "API_TOKEN='a-secret-token-123'\nLEVEL=info # public\n");
      const hook = `http://127.0.0.1:${sink.addr.port}/hook/T0KEN-in-the-path`;
      await Deno.writeTextFile(paths.config, `notify:\n  - { type: webhook, url: "${hook}" }\n`, { append: true });
      const repo = await AppRepo.create(server, app, paths.repo);
      await repo.python(app, "v1");
      const pushed = await run([...UMASK_022, "git", "push", "production", "main"], { cwd: repo.dir, env: server.env });
      assertEquals(pushed.code, 0, pushed.output);
      assert(pushed.output.includes("✓ notified webhook"), pushed.output);
      assertEquals(await get(`http://127.0.0.1:${port}/`), { status: 200, body: "v1" });
      // The deploy's `pm2 save` created dump.pm2.bak (a copy of the dump): 0600 from the start too.
      assertEquals((await Deno.stat(join(server.pm2Home, "dump.pm2.bak"))).mode! & 0o777, 0o600);

      // setup again: config.yml is rewritten (the notify target kept), never wider than 0600.
      const again = await setup();
      assertEquals(again.code, 0, again.output);
      assert((await Deno.readTextFile(paths.config)).includes(hook), "the notify target is kept");

      const user = await lookup(`app-${app}`); // per-app users: owners may be root or this user
      const roots = [
        join(server.prefix, "opt", "deployments"),
        join(server.prefix, "var", "log", "deployments"),
        join(server.prefix, "var", "repos"),
        server.pm2Home,
      ];
      const walked: Walked[] = [];
      for (const root of roots) await walk(root, walked);
      const owner = (uid: number) => uid === 0 ? "root" : uid === user?.uid ? `app-${app}` : String(uid);
      console.log(`${walked.length} paths walked (mode, owner:gid, kind, path):`);
      for (const w of walked) {
        const where = relative(server.root, w.path);
        console.log(`  ${w.mode.toString(8).padStart(4, "0")} ${owner(w.uid)}:${w.gid} ${w.kind.padEnd(12)} ${where}`);
      }

      const problems: string[] = [];
      const secrets = walked.filter((w) => w.kind === "file" && SECRET_FILE.test(w.path.split("/").pop()!));
      for (const w of walked) {
        if (w.kind !== "link" && w.mode & 0o002) problems.push(`${w.path} is world-writable`);
        if (w.uid !== 0 && w.uid !== user?.uid) problems.push(`${w.path} is owned by uid ${w.uid}`);
      }
      for (const w of secrets) {
        // 0600, or 0640 when the group is the app's own (the app may read its release's .env).
        const groupOk = user !== undefined && w.gid === user.gid && (w.mode & 0o070) === 0o040;
        if (w.mode & 0o007 || (w.mode & 0o070 && !groupOk)) {
          problems.push(`${w.path} holds a secret and is mode ${w.mode.toString(8).padStart(4, "0")}`);
        }
      }
      const names = secrets.map((w) => relative(server.root, w.path));
      console.log(`${secrets.length} files holding secrets checked:\n  ${names.join("\n  ")}`);
      for (const expected of [".env.production", "config.yml", "dump.pm2", "pm2-modes-blue.json", "/.env"]) {
        assert(names.some((name) => name.endsWith(expected)), `${expected} was among the files checked`);
      }
      // Everything pm2 and its daemon created (pm2.log, pids, logs) is its owner's only; pm2 opens its
      // sockets to the group itself (0775: connecting needs write permission, which others lack).
      const pm2Open = walked.filter((w) => w.path.startsWith(server.pm2Home) && w.kind !== "socket/other")
        .filter((w) => w.mode & 0o077).map((w) => `${w.path} ${w.mode.toString(8)}`);
      assertEquals(pm2Open, [], "PM2_HOME is its owner's only");
      assertEquals(problems, []);

      // A secrets file someone opened to others (rewritten by an editor, copied in): the next deploy narrows it.
      await Deno.chmod(paths.envFile("production"), 0o644);
      await repo.python(app, "v2");
      const narrowed = await repo.pushOk();
      assertMatch(narrowed.output, /! \S+\.env\.production was open to group or others \(mode 0644\): narrowed/);
      assertEquals((await Deno.stat(paths.envFile("production"))).mode! & 0o777, 0o600);
      // None at all (config.yml's env changed by hand, or the file gone): deployed, and said apart.
      await Deno.remove(paths.envFile("production"));
      await repo.python(app, "v3");
      const none = await repo.pushOk();
      assertMatch(none.output, /! no \S+\.env\.production: the app gets no secrets \(is config\.yml's env right\?\)/);
    });
  } finally {
    await sink.shutdown();
  }
});
