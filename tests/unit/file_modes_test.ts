/**
 * Modes from creation: writeFileAtomic gives a file its mode whatever the umask, and a rewrite
 * never widens what group and others may do; pm2 runs under umask 077 with its words passed as
 * they are (the shell that sets the umask parses none of them).
 */
import { join } from "node:path";
import { assertEquals } from "../helpers/assert.ts";
import { pm2Cmd } from "../../src/managers/pm2.ts";
import { appPaths } from "../../src/paths.ts";
import { narrowLogs } from "../../src/deploy/journal.ts";
import { type AppUser, ownAppDirs } from "../../src/users.ts";

/**
 * What writeFileAtomic does, in a process of its own: the umask is per process, and test files
 * run in parallel in one process. Returns the modes the script printed.
 */
async function inOwnProcess(script: string): Promise<Record<string, number>> {
  const dir = await Deno.makeTempDir({ prefix: "dp-modes-" });
  try {
    const file = join(dir, "script.ts");
    const fsutil = new URL("../../src/fsutil.ts", import.meta.url).href;
    await Deno.writeTextFile(
      file,
      `import { writeFileAtomic } from "${fsutil}";\nconst dir = ${JSON.stringify(dir)};\n` +
        `const modes: Record<string, number> = {};\n` +
        `const mode = async (name: string) => modes[name] = (await Deno.stat(dir + "/" + name)).mode! & 0o777;\n` +
        `${script}\nconsole.log(JSON.stringify({ ...modes, files: [...Deno.readDirSync(dir)].length }));\n`,
    );
    const out = await new Deno.Command(Deno.execPath(), { args: ["run", "-A", "--no-lock", file] }).output();
    assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
    return JSON.parse(new TextDecoder().decode(out.stdout));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("writeFileAtomic: the asked mode under any umask; a rewrite never widens group and other bits", async () => {
  const modes = await inOwnProcess(`
    Deno.umask(0o077);
    await writeFileAtomic(dir + "/status.json", "{}\\n");
    await mode("status.json");
    Deno.umask(0o000);
    await writeFileAtomic(dir + "/config.yml", "port: 1\\n", 0o600);
    await mode("config.yml");
    await writeFileAtomic(dir + "/config.yml", "port: 2\\n"); // a caller that forgot the mode
    modes.rewritten = (await Deno.stat(dir + "/config.yml")).mode! & 0o777;
    await Deno.chmod(dir + "/status.json", 0o640); // an operator's chmod o-r
    await writeFileAtomic(dir + "/status.json", "{}\\n", 0o644);
    modes.chmodded = (await Deno.stat(dir + "/status.json")).mode! & 0o777;
    await writeFileAtomic(dir + "/status.json", "{}\\n", 0o600);
    modes.narrowed = (await Deno.stat(dir + "/status.json")).mode! & 0o777;
    await writeFileAtomic(dir + "/hook", "#!/bin/sh\\n", 0o700);
    await writeFileAtomic(dir + "/hook", "#!/bin/sh\\n", 0o755);
    await mode("hook");
  `);
  assertEquals(modes, {
    "status.json": 0o640, // the umask does not narrow the default (nothing for others)
    "config.yml": 0o600, // nor widen it
    rewritten: 0o600, // a rewrite keeps group and others out
    chmodded: 0o640, // an operator's chmod sticks
    narrowed: 0o600, // a rewrite may narrow
    hook: 0o700, // the owner's bits are as asked; group and others stay out
    files: 4, // script.ts and the three files: no temp file left
  });
});

Deno.test("pm2 runs under umask 077, its arguments passed as they are", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dp-pm2-" });
  try {
    // A stand-in pm2 first in PATH: prints its umask and each argument on a line.
    await Deno.writeTextFile(join(dir, "pm2"), '#!/bin/sh\numask\nfor a in "$@"; do printf "%s\\n" "$a"; done\n', {
      mode: 0o755,
    });
    const words = ["start", "/srv/a b/pm2-x.json", "$(touch PWNED)", "`id`", "; rm -rf /", "'\"*"];
    const cmd = pm2Cmd(words);
    const out = await new Deno.Command(cmd.argv[0], {
      args: cmd.argv.slice(1),
      cwd: dir,
      env: { PATH: `${dir}:${Deno.env.get("PATH")}` },
    }).output();
    assertEquals(out.code, 0);
    assertEquals(new TextDecoder().decode(out.stdout).split("\n").slice(0, -1), ["0077", ...words]);
    assertEquals([...Deno.readDirSync(dir)].map((e) => e.name), ["pm2"], "nothing ran");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "ownAppDirs (before a push takes the lock) copes with entries that go while it runs: another deploy's temp files and cleaned releases",
  ignore: Deno.uid() !== 0, // it chowns
  fn: async () => {
    const root = await Deno.makeTempDir({ prefix: "dp-own-" });
    try {
      const paths = appPaths("web", root);
      const user: AppUser = { name: "nobody", uid: 65534, gid: 65534, group: "nogroup", home: join(paths.dir, "home") };
      await Deno.mkdir(paths.releases, { recursive: true });
      let done = false;
      // What a deploy holding the lock does meanwhile: files that come and go in the app's dir and releases/.
      const churn = (async () => {
        for (let i = 0; !done; i++) {
          const names = Array.from({ length: 50 }, (_, j) => `${i}-${j}`);
          for (const name of names) {
            await Deno.writeTextFile(join(paths.dir, `.status.json.${name}.tmp`), "{}", { mode: 0o644 });
            await Deno.mkdir(join(paths.releases, name), { mode: 0o755 });
          }
          for (const name of names) {
            await Deno.remove(join(paths.dir, `.status.json.${name}.tmp`));
            await Deno.remove(join(paths.releases, name));
          }
        }
      })();
      try {
        for (let round = 0; round < 200; round++) await ownAppDirs(paths, user);
      } finally {
        done = true;
        await churn;
      }
      assertEquals((await Deno.stat(paths.dir)).mode! & 0o7777, 0o751);
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});

Deno.test("narrowLogs copes with a log that goes while it runs (a cron run rotating cron.log): nothing to narrow there", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dp-logs-" });
  try {
    let done = false;
    const churn = (async () => {
      for (let i = 0; !done; i++) {
        for (let j = 0; j < 50; j++) await Deno.writeTextFile(join(dir, `cron-${j}.log`), "x\n", { mode: 0o600 });
        for (let j = 0; j < 50; j++) await Deno.rename(join(dir, `cron-${j}.log`), join(dir, `cron-${j}.log.1`));
      }
    })();
    try {
      for (let round = 0; round < 200; round++) assertEquals(await narrowLogs(dir), []);
    } finally {
      done = true;
      await churn;
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
