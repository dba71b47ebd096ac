/**
 * The commands that read an app's directory (root:<app group> 0751) need root: another user, a
 * member of the deploy group say, is told so (exit 2) and what to run instead, never a stack
 * trace. Run as an unprivileged user (`nobody`) through setpriv, so only when the tests run as root,
 * from a copy of the checkout (which may be under a home nobody cannot enter).
 */
import { join, resolve } from "node:path";
import { assertEquals, assertMatch } from "../helpers/assert.ts";
import { must } from "../helpers/host.ts";
import { run } from "../helpers/server.ts";

const CHECKOUT = resolve(import.meta.dirname!, "../..");
const NEEDED = [
  "bin",
  "main.ts",
  "src",
  "templates",
  "dashboard",
  "deno.json",
  "deno.lock",
  "package.json",
  "node_modules",
];

Deno.test({
  name:
    "root-only commands (releases, status, rollback, cron, canary, maintenance) as another user: needs root, exit 2",
  ignore: Deno.uid() !== 0,
  fn: async () => {
    const root = await Deno.makeTempDir({ prefix: "dp-root-only-" });
    try {
      const dir = join(root, "opt", "deployments", "alpha");
      await Deno.mkdir(dir, { recursive: true });
      await Deno.writeTextFile(join(dir, "config.yml"), "port: 8000\nmanager: pm2\n", { mode: 0o600 });
      await Deno.symlink("releases/20260101-000000-000", join(dir, "current"));
      await Deno.chmod(dir, 0o751); // as setup leaves it: root:<app group> 0751
      await Deno.chmod(root, 0o755); // a temp dir is 0700: the others must reach the app's
      const copy = join(root, "checkout");
      await Deno.mkdir(copy, { mode: 0o755 });
      await must(["cp", "-a", ...NEEDED.map((entry) => join(CHECKOUT, entry)), copy]);
      await must(["chmod", "-R", "a+rX", copy]);
      const home = join(root, "home"); // the user's own (DENO_DIR's cache)
      await Deno.mkdir(home, { mode: 0o777 });
      await Deno.chmod(home, 0o777);
      const env = {
        PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
        HOME: home,
        DENO_DIR: join(home, "deno"),
        DEPLOY_PARADIGM_PREFIX: root,
        PM2_HOME: join(home, "pm2"),
        FLEET_MONITOR_HOME: join(home, "fleet"),
      };
      const asNobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
        join(copy, "bin/deploy-paradigm"),
      ];
      for (
        const command of [
          "releases alpha",
          "status",
          "rollback alpha",
          "cron alpha",
          "cron-run alpha nightly",
          "canary alpha abort",
          "maintenance alpha off",
        ]
      ) {
        const denied = await run([...asNobody, ...command.split(" ")], { env, cwd: home });
        assertEquals(denied.code, 2, `${command}: ${denied.stdout}${denied.stderr}`);
        assertMatch(denied.stderr, new RegExp(`^error: \`${command.split(" ")[0]}\` needs root`), denied.stderr);
        assertMatch(denied.stderr, new RegExp(`hint: run \`sudo \\S+ ${command}\` or run it as root`), denied.stderr);
      }
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});
