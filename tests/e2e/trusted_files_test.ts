/**
 * The ownership rule for files the proxy acts on (trustedFile, readTrusted, loadProxyConfig), on
 * real temp files it chowns and chmods: root only, so not among the unit tests.
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { PROXY_DEFAULTS as DEFAULTS } from "../helpers/configs.ts";
import { ConfigError, DeployParadigmError } from "../../src/errors.ts";
import { loadProxyConfig, proxyConfigPath, readTrusted, trustedFile } from "../../src/proxy/config.ts";

/** A temp dir (0755, root's) removed after `fn`. */
async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "dp-trust-" });
  await Deno.chmod(dir, 0o755);
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** The error trustedFile(path) throws. */
async function refusal(path: string): Promise<DeployParadigmError> {
  try {
    await trustedFile(path);
  } catch (error) {
    assert(error instanceof DeployParadigmError, `expected a DeployParadigmError, got ${error}`);
    return error;
  }
  throw new Error(`expected ${path} to be refused`);
}

const asRoot = Deno.uid() === 0;

Deno.test({
  name: "trustedFile: root's 0644 and 0600 files pass; other owners, group or other write, and such directories fail",
  ignore: !asRoot,
  async fn() {
    await withDir(async (dir) => {
      const file = join(dir, "route.json");
      await Deno.writeTextFile(file, "{}\n");
      await Deno.chmod(file, 0o644);
      await trustedFile(file);
      await Deno.chmod(file, 0o600);
      await trustedFile(file);

      await Deno.chmod(file, 0o666);
      let error = await refusal(file);
      assertEquals(
        error.message,
        `refusing to trust ${file}: ${file} (owner uid 0, mode 0666) is writable by group and others`,
      );
      assertEquals(error.suggestion, `chmod go-w ${file}`);
      await Deno.chmod(file, 0o664);
      assertMatch((await refusal(file)).message, /\(owner uid 0, mode 0664\) is writable by group$/);

      await Deno.chmod(file, 0o644);
      await Deno.chown(file, 65534, 65534);
      error = await refusal(file);
      assertEquals(
        error.message,
        `refusing to trust ${file}: ${file} (owner uid 65534, mode 0644) is not owned by root`,
      );
      assertEquals(error.suggestion, `chown root:root ${file}`);

      // The directory counts too: whoever can write it can replace the file.
      await Deno.chown(file, 0, 0);
      await Deno.chmod(dir, 0o777);
      error = await refusal(file);
      assertEquals(
        error.message,
        `refusing to trust ${file}: ${dir} (owner uid 0, mode 0777) is writable by group and others`,
      );
      await Deno.chmod(dir, 0o755);
      await Deno.chown(dir, 65534, 65534);
      await Deno.chown(file, 65534, 65534);
      await Deno.chmod(file, 0o646);
      error = await refusal(file);
      assertEquals(
        error.message,
        `refusing to trust ${file}: ${file} (owner uid 65534, mode 0646) is not owned by root and is writable by ` +
          `others; ${dir} (owner uid 65534, mode 0755) is not owned by root`,
      );
      assertEquals(error.suggestion, `chown root:root ${file} ${dir} && chmod go-w ${file}`);
      await Deno.chown(dir, 0, 0);
    });
  },
});

Deno.test({
  name: "trustedFile: a symlink's target and its directory are checked; missing files and FIFOs",
  ignore: !asRoot,
  async fn() {
    await withDir(async (dir) => {
      const open = join(dir, "open");
      await Deno.mkdir(open, { mode: 0o777 });
      await Deno.chmod(open, 0o777);
      const target = join(open, "shadow");
      await Deno.writeTextFile(target, "secret\n");
      await Deno.chmod(target, 0o644);
      const link = join(dir, "config.yml");
      await Deno.symlink(target, link);
      assertMatch((await refusal(link)).message, new RegExp(`: ${open} \\(owner uid 0, mode 0777\\) is writable`));
      await Deno.chmod(open, 0o755);
      await trustedFile(link); // every part is root's now

      const missing = join(dir, "absent.yml");
      const gone = await trustedFile(missing).then(() => undefined, (error) => error);
      assert(gone instanceof Deno.errors.NotFound, String(gone));
      assertEquals(await readTrusted(missing), undefined);
      assertEquals(await readTrusted(link), "secret\n");

      const fifo = join(dir, "fifo");
      const made = await new Deno.Command("mkfifo", { args: [fifo] }).output();
      assert(made.success);
      assertEquals((await refusal(fifo)).message, `refusing to trust ${fifo}: it is not a regular file`);
    });
  },
});

Deno.test({
  name: "loadProxyConfig: the defaults without proxy.yml; the file when trusted; refused when not",
  ignore: !asRoot,
  async fn() {
    await withDir(async (root) => {
      assertEquals(await loadProxyConfig(root), DEFAULTS);
      const path = proxyConfigPath(root);
      assertEquals(path, join(root, "opt", "deployments", "proxy.yml"));
      await Deno.mkdir(join(root, "opt", "deployments"), { recursive: true, mode: 0o755 });
      await Deno.writeTextFile(path, "http: 8080\nhttps: 8443\n", { mode: 0o644 });
      assertEquals(await loadProxyConfig(root), { ...DEFAULTS, http: 8080, https: 8443 });
      const asked: string[] = [];
      await loadProxyConfig(root, (path) => Promise.resolve(void asked.push(path))); // another trust rule (tests)
      assertEquals(asked, [path]);
      await Deno.writeTextFile(path, "http: 8080\nhttps: 8080\n");
      try {
        await loadProxyConfig(root);
        throw new Error("expected a ConfigError");
      } catch (error) {
        assert(error instanceof ConfigError);
        assertEquals(error.problems, [`${path}:2:8: "https" must differ from http (8080) (got 8080)`]);
      }
      await Deno.chmod(path, 0o666);
      assertMatch((await refusal(path)).message, /is writable by group and others/);
      const refused = await loadProxyConfig(root).then(() => undefined, (error) => error);
      assert(refused instanceof DeployParadigmError && !(refused instanceof ConfigError));
    });
  },
});
