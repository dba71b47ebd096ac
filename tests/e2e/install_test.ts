/**
 * install.sh, run for real by `sh` against a local mirror on loopback that serves GitHub's release layout:
 * `/releases/latest/download/<file>` redirects (302, as GitHub does) to `/releases/download/v0.3.0/<file>`, and
 * `/releases/download/<tag>/<file>` serves the assets and SHA256SUMS of v0.3.0 and v0.2.0. Each "binary" is a small
 * shell script that prints its version and target, so the installer's `--version` check really runs it.
 *
 * Needs curl, wget and shellcheck on the machine: nothing here is skipped.
 */
import { delimiter, join, resolve } from "node:path";
import { assert, assertEquals, assertMatch, assertNotMatch } from "../helpers/assert.ts";

const SCRIPT = resolve(import.meta.dirname!, "../../install.sh");
const TARGETS = [
  "x86_64-unknown-linux-gnu",
  "aarch64-unknown-linux-gnu",
  "x86_64-apple-darwin",
  "aarch64-apple-darwin",
];
/** The target install.sh detects on this machine: Deno's own target triple is the same naming. */
const HOST = Deno.build.target;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

function artifact(version: string, target: string): string {
  return `#!/bin/sh\necho "deploy-paradigm ${version} (${target})"\n`;
}

async function sha256(data: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", data);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The absolute path of a program on PATH, or undefined. */
function which(name: string): string | undefined {
  for (const dir of (Deno.env.get("PATH") ?? "").split(delimiter)) {
    if (!dir) continue;
    try {
      const path = join(dir, name);
      if (Deno.statSync(path).isFile) return path;
    } catch { /* not here */ }
  }
  return undefined;
}

function required(name: string, debianPackage: string): string {
  const path = which(name);
  assert(path, `${name} is not installed: install the Debian package ${debianPackage} (this test is never skipped)`);
  return path;
}

const SH = required("sh", "dash");

interface Mirror {
  /** What install.sh gets as DEPLOY_PARADIGM_DOWNLOAD_URL. */
  base: string;
  /** Served files by URL path; tests change them (tamper, remove) before running the installer. */
  files: Map<string, Uint8Array<ArrayBuffer>>;
  /** Every request: path and User-Agent (which proves whether curl or wget fetched it). */
  requests: { path: string; agent: string }[];
}

async function withMirror(fn: (mirror: Mirror) => Promise<void>): Promise<void> {
  const files = new Map<string, Uint8Array<ArrayBuffer>>();
  for (const version of ["0.3.0", "0.2.0"]) {
    const lines: string[] = [];
    for (const target of TARGETS) {
      const body = encoder.encode(artifact(version, target));
      files.set(`/releases/download/v${version}/deploy-paradigm-${target}`, body);
      // v0.2.0's file is in `sha256sum -b` style ("<hash> *<name>"): both forms must be understood.
      lines.push(`${await sha256(body)} ${version === "0.2.0" ? "*" : " "}deploy-paradigm-${target}`);
    }
    files.set(`/releases/download/v${version}/SHA256SUMS`, encoder.encode(lines.join("\n") + "\n"));
  }
  const requests: Mirror["requests"] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
    const path = new URL(request.url).pathname;
    requests.push({ path, agent: request.headers.get("user-agent") ?? "" });
    const latest = path.match(/^\/releases\/latest\/download\/([^/]+)$/);
    if (latest) {
      return new Response(null, { status: 302, headers: { location: `/releases/download/v0.3.0/${latest[1]}` } });
    }
    const body = files.get(path);
    return body ? new Response(body) : new Response("Not Found", { status: 404 });
  });
  try {
    await fn({ base: `http://127.0.0.1:${server.addr.port}/releases`, files, requests });
  } finally {
    await server.shutdown();
  }
}

interface Sandbox {
  root: string;
  installDir: string;
  /** TMPDIR of the installer: empty again after every run. */
  tmp: string;
  binary: string;
  env: Record<string, string>;
}

/** A temp root with the install dir, TMPDIR and HOME (so no ~/.curlrc or ~/.wgetrc of the user applies). */
async function withSandbox(mirror: Mirror, fn: (box: Sandbox) => Promise<void>): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "dp-install-" });
  try {
    const installDir = join(root, "bin");
    const tmp = join(root, "tmp");
    await Deno.mkdir(tmp);
    const env = {
      PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
      HOME: root,
      LC_ALL: "C",
      TMPDIR: tmp,
      no_proxy: "127.0.0.1",
      NO_PROXY: "127.0.0.1",
      DEPLOY_PARADIGM_DOWNLOAD_URL: mirror.base,
      DEPLOY_PARADIGM_INSTALL_DIR: installDir,
    };
    await fn({ root, installDir, tmp, binary: join(installDir, "deploy-paradigm"), env });
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
  output: string;
}

/** `sh install.sh ARGS` with exactly ENV (nothing inherited), or `sh -s -- ARGS` with the script on stdin. */
async function install(
  args: string[],
  env: Record<string, string>,
  options: { piped?: boolean; argv0?: string[] } = {},
): Promise<Ran> {
  const argv = [...(options.argv0 ?? []), SH, ...(options.piped ? ["-s", "--"] : [SCRIPT]), ...args];
  const child = new Deno.Command(argv[0], {
    args: argv.slice(1),
    env,
    clearEnv: true,
    stdin: options.piped ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (options.piped) {
    const writer = child.stdin.getWriter();
    await writer.write(await Deno.readFile(SCRIPT));
    await writer.close();
  }
  const out = await child.output();
  const stdout = decoder.decode(out.stdout);
  const stderr = decoder.decode(out.stderr);
  return { code: out.code, stdout, stderr, output: `${stdout}${stderr}\n(exit ${out.code})` };
}

async function list(dir: string): Promise<string[]> {
  try {
    return (await Array.fromAsync(Deno.readDir(dir), (entry) => entry.name)).sort();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    throw error;
  }
}

/** The binary is installed with exactly this content, mode 0755, with no staging file beside it and TMPDIR empty. */
async function assertInstalled(box: Sandbox, content: string, ran: Ran): Promise<void> {
  assertEquals(ran.code, 0, ran.output);
  assertEquals(await Deno.readTextFile(box.binary), content);
  assertEquals((await Deno.stat(box.binary)).mode! & 0o7777, 0o755);
  assertEquals(await list(box.installDir), ["deploy-paradigm"]);
  assertEquals(await list(box.tmp), [], "the download dir was not removed");
}

/** A refusal: exit 1 (2 for bad arguments), the install dir exactly as before, TMPDIR empty. */
async function assertRefused(box: Sandbox, ran: Ran, message: RegExp, before: string[] = [], code = 1) {
  assertEquals(ran.code, code, ran.output);
  assertMatch(ran.stderr, message);
  assertEquals(await list(box.installDir), before, "the install dir changed");
  assertEquals(await list(box.tmp), [], "the download dir was not removed");
}

Deno.test("install.sh installs the latest release for this machine with mode 0755 and runs its --version", async () => {
  await withMirror((mirror) =>
    withSandbox(mirror, async (box) => {
      const ran = await install([], box.env);
      await assertInstalled(box, artifact("0.3.0", HOST), ran);
      assertEquals(mirror.requests.map((r) => r.path), [
        `/releases/latest/download/deploy-paradigm-${HOST}`,
        `/releases/download/v0.3.0/deploy-paradigm-${HOST}`,
        "/releases/latest/download/SHA256SUMS",
        "/releases/download/v0.3.0/SHA256SUMS",
      ]);
      assertMatch(ran.stdout, new RegExp(`Installed deploy-paradigm at ${box.binary}\n`));
      assertMatch(ran.stdout, new RegExp(`\ndeploy-paradigm 0\\.3\\.0 \\(${HOST}\\)\n`), "its --version ran");
      assertMatch(ran.stdout, /is not in your PATH/);
      assertEquals(ran.stderr, "");
    })
  );
});

Deno.test("install.sh run again reinstalls cleanly over an existing binary, and creates a missing install dir", async () => {
  await withMirror((mirror) =>
    withSandbox(mirror, async (box) => {
      box.env.DEPLOY_PARADIGM_INSTALL_DIR = join(box.root, "deep", "er", "bin");
      box.installDir = box.env.DEPLOY_PARADIGM_INSTALL_DIR;
      box.binary = join(box.installDir, "deploy-paradigm");
      await assertInstalled(box, artifact("0.3.0", HOST), await install([], box.env));
      const first = await Deno.stat(box.binary);
      await assertInstalled(box, artifact("0.3.0", HOST), await install([], box.env));
      assert((await Deno.stat(box.binary)).ino !== first.ino, "replaced by a rename, not rewritten in place");
      // An old, broken install (wrong mode, other content) is replaced; the install dir being on PATH is noticed.
      await Deno.writeTextFile(box.binary, "old junk");
      await Deno.chmod(box.binary, 0o600);
      const again = await install([], { ...box.env, PATH: `${box.installDir}${delimiter}${box.env.PATH}` });
      await assertInstalled(box, artifact("0.3.0", HOST), again);
      assertNotMatch(again.stdout, /not in your PATH/);
    })
  );
});

Deno.test("install.sh VERSION fetches from the tag's path, with or without the v, also piped as `sh -s VERSION`", async () => {
  await withMirror((mirror) =>
    withSandbox(mirror, async (box) => {
      await assertInstalled(box, artifact("0.3.0", HOST), await install([], box.env));
      for (const version of ["v0.2.0", "0.2.0"]) {
        mirror.requests.length = 0;
        const ran = await install([version], box.env);
        await assertInstalled(box, artifact("0.2.0", HOST), ran);
        assertEquals(mirror.requests.map((r) => r.path), [
          `/releases/download/v0.2.0/deploy-paradigm-${HOST}`,
          "/releases/download/v0.2.0/SHA256SUMS",
        ]);
        assertMatch(ran.stdout, /Installing deploy-paradigm v0\.2\.0 for /);
        assertMatch(ran.stdout, /\ndeploy-paradigm 0\.2\.0 /);
      }
      // `curl -fsSL .../install.sh | sh -s v0.3.0`: the script on stdin, the version after -s.
      await assertInstalled(box, artifact("0.3.0", HOST), await install(["v0.3.0"], box.env, { piped: true }));
      // A release that does not exist: the download fails, the installed binary stays.
      const missing = await install(["v9.9.9"], box.env);
      await assertRefused(
        box,
        missing,
        new RegExp(
          `could not download http://127\\.0\\.0\\.1:\\d+/releases/download/v9\\.9\\.9/deploy-paradigm-${HOST}`,
        ),
        ["deploy-paradigm"],
      );
      assertMatch(missing.stderr, /404/);
      assertEquals(await Deno.readTextFile(box.binary), artifact("0.3.0", HOST));
      // Not a version: refused before anything is fetched.
      mirror.requests.length = 0;
      for (const bad of ["../../evil", "latest/x", "beta"]) {
        await assertRefused(box, await install([bad], box.env), /is not a version/, ["deploy-paradigm"], 2);
      }
      await assertRefused(
        box,
        await install(["v0.2.0", "v0.3.0"], box.env),
        /only one version/,
        ["deploy-paradigm"],
        2,
      );
      assertEquals(mirror.requests, []);
    })
  );
});

Deno.test("install.sh refuses a tampered or truncated artifact: nothing is installed, an existing install stays", async () => {
  await withMirror((mirror) =>
    withSandbox(mirror, async (box) => {
      const asset = `/releases/download/v0.3.0/deploy-paradigm-${HOST}`;
      const good = mirror.files.get(asset)!;
      mirror.files.set(asset, encoder.encode(artifact("0.3.0", HOST).replace("echo", "rm -rf /; echo")));
      const fresh = await install([], box.env);
      await assertRefused(
        box,
        fresh,
        /checksum mismatch for deploy-paradigm-\S+: expected [0-9a-f]{64}, got [0-9a-f]{64}/,
      );
      assertMatch(fresh.stderr, /nothing was installed/);

      mirror.files.set(asset, good);
      await assertInstalled(box, artifact("0.3.0", HOST), await install([], box.env));
      const before = await Deno.stat(box.binary);
      mirror.files.set(asset, encoder.encode(artifact("6.6.6", HOST)));
      await assertRefused(box, await install([], box.env), /checksum mismatch/, ["deploy-paradigm"]);
      mirror.files.set(asset, good.slice(0, 10)); // a download cut short
      await assertRefused(box, await install([], box.env), /checksum mismatch/, ["deploy-paradigm"]);
      const after = await Deno.stat(box.binary);
      assertEquals(await Deno.readTextFile(box.binary), artifact("0.3.0", HOST));
      assertEquals([after.ino, after.mtime?.getTime(), after.mode], [before.ino, before.mtime?.getTime(), before.mode]);
    })
  );
});

Deno.test("install.sh refuses an asset that SHA256SUMS does not list, a malformed line, and a missing SHA256SUMS", async () => {
  await withMirror((mirror) =>
    withSandbox(mirror, async (box) => {
      const sums = "/releases/download/v0.3.0/SHA256SUMS";
      const lines = decoder.decode(mirror.files.get(sums)!).split("\n");
      const others = lines.filter((line) => !line.endsWith(`deploy-paradigm-${HOST}`));
      // Another asset whose name merely starts with ours does not count.
      mirror.files.set(sums, encoder.encode([...others, `${"0".repeat(64)}  deploy-paradigm-${HOST}.old`].join("\n")));
      await assertRefused(
        box,
        await install([], box.env),
        new RegExp(`SHA256SUMS from \\S+ has no line for deploy-paradigm-${HOST}: refusing to install`),
      );
      mirror.files.set(sums, encoder.encode([...others, `not-a-hash  deploy-paradigm-${HOST}`].join("\n")));
      await assertRefused(box, await install([], box.env), /has a malformed line for deploy-paradigm-/);
      mirror.files.set(sums, new Uint8Array());
      await assertRefused(box, await install([], box.env), /has no line for deploy-paradigm-/);
      mirror.files.delete(sums);
      await assertRefused(box, await install([], box.env), /could not download \S+\/latest\/download\/SHA256SUMS/);
    })
  );
});

Deno.test("install.sh maps uname to the four targets and refuses any other platform, naming it", async () => {
  await withMirror((mirror) =>
    withSandbox(mirror, async (box) => {
      const fake = join(box.root, "fake-uname");
      await Deno.mkdir(fake);
      await Deno.writeTextFile(
        join(fake, "uname"),
        '#!/bin/sh\ncase "$1" in -s) echo "$FAKE_OS" ;; -m) echo "$FAKE_ARCH" ;; *) exit 1 ;; esac\n',
      );
      await Deno.chmod(join(fake, "uname"), 0o755);
      const as = (os: string, arch: string) => ({
        ...box.env,
        PATH: `${fake}${delimiter}${box.env.PATH}`,
        FAKE_OS: os,
        FAKE_ARCH: arch,
      });
      const cases: [string, string, string][] = [
        ["Linux", "x86_64", "x86_64-unknown-linux-gnu"],
        ["Linux", "amd64", "x86_64-unknown-linux-gnu"],
        ["Linux", "aarch64", "aarch64-unknown-linux-gnu"],
        ["Linux", "arm64", "aarch64-unknown-linux-gnu"],
        ["Darwin", "x86_64", "x86_64-apple-darwin"],
        ["Darwin", "arm64", "aarch64-apple-darwin"],
      ];
      for (const [os, arch, target] of cases) {
        mirror.requests.length = 0;
        await assertInstalled(box, artifact("0.3.0", target), await install([], as(os, arch)));
        assertEquals(mirror.requests[0].path, `/releases/latest/download/deploy-paradigm-${target}`, `${os} ${arch}`);
      }
      mirror.requests.length = 0;
      for (const [os, arch] of [["FreeBSD", "amd64"], ["Linux", "armv7l"], ["MINGW64_NT-10.0", "x86_64"]]) {
        const ran = await install([], as(os, arch));
        await assertRefused(box, ran, new RegExp(`unsupported platform "${os} ${arch}"`), ["deploy-paradigm"]);
        assertMatch(ran.stderr, new RegExp(TARGETS.join(", ")));
        assertMatch(ran.stderr, /DEPLOY_PARADIGM_TARGET/);
      }
      // DEPLOY_PARADIGM_TARGET overrides the detection, and must be one of the four.
      const bogus = await install([], { ...as("FreeBSD", "amd64"), DEPLOY_PARADIGM_TARGET: "bogus" });
      await assertRefused(box, bogus, /unsupported target "bogus" \(from DEPLOY_PARADIGM_TARGET\)/, [
        "deploy-paradigm",
      ]);
      assertMatch(bogus.stderr, new RegExp(TARGETS.join(", ")));
      assertEquals(mirror.requests, [], "nothing is downloaded for an unsupported platform");
      const chosen = await install([], { ...as("FreeBSD", "amd64"), DEPLOY_PARADIGM_TARGET: "aarch64-apple-darwin" });
      await assertInstalled(box, artifact("0.3.0", "aarch64-apple-darwin"), chosen);
    })
  );
});

Deno.test("install.sh refuses an install dir it cannot create or write, saying to use sudo or DEPLOY_PARADIGM_INSTALL_DIR", async () => {
  await withMirror((mirror) =>
    withSandbox(mirror, async (box) => {
      // A path under a regular file can never be created, even by root.
      const file = join(box.root, "a-file");
      await Deno.writeTextFile(file, "");
      const ran = await install([], { ...box.env, DEPLOY_PARADIGM_INSTALL_DIR: join(file, "bin") });
      await assertRefused(box, ran, new RegExp(`cannot create the install directory ${file}/bin\n`));
      assertMatch(
        ran.stderr,
        /hint: run this with sudo, or set DEPLOY_PARADIGM_INSTALL_DIR to a directory you can write/,
      );

      // An existing directory without write permission, as an unprivileged user (root writes anywhere: nobody).
      const readOnly = join(box.root, "read-only");
      await Deno.mkdir(readOnly);
      await Deno.chmod(readOnly, 0o555);
      await Deno.chmod(box.root, 0o755);
      const asUser = Deno.uid() === 0
        ? [required("setpriv", "util-linux"), "--reuid=65534", "--regid=65534", "--clear-groups"]
        : [];
      const denied = await install([], { ...box.env, DEPLOY_PARADIGM_INSTALL_DIR: readOnly }, {
        argv0: asUser,
        piped: true, // the checkout may not be readable by nobody; `curl | sh` is how users run it anyway
      });
      await assertRefused(box, denied, new RegExp(`no permission to write to ${readOnly}\n`));
      assertMatch(denied.stderr, /hint: run this with sudo, or set DEPLOY_PARADIGM_INSTALL_DIR/);
      assertEquals(await list(readOnly), []);

      // A directory where the binary should go.
      await Deno.mkdir(join(box.installDir, "deploy-paradigm"), { recursive: true });
      await assertRefused(box, await install([], box.env), /deploy-paradigm is a directory/, ["deploy-paradigm"]);
      assertEquals(mirror.requests, [], "nothing is downloaded when it cannot be installed");
    })
  );
});

Deno.test("install.sh works with curl and with wget, and says so when neither is installed", async () => {
  const tools = { curl: required("curl", "curl"), wget: required("wget", "wget") };
  await withMirror((mirror) =>
    withSandbox(mirror, async (box) => {
      for (const [downloader, agent] of [["wget", /^Wget\//], ["curl", /^curl\//]] as const) {
        mirror.requests.length = 0;
        await Deno.remove(box.installDir, { recursive: true }).catch(() => {});
        const env = { ...box.env, DEPLOY_PARADIGM_DOWNLOADER: downloader };
        await assertInstalled(box, artifact("0.3.0", HOST), await install([], env));
        assertEquals(mirror.requests.length, 4, downloader);
        for (const request of mirror.requests) assertMatch(request.agent, agent);
        // HTTP errors are errors with either tool.
        await assertRefused(box, await install(["v9.9.9"], env), /could not download \S+\/download\/v9\.9\.9\//, [
          "deploy-paradigm",
        ]);
      }

      // A PATH with every tool install.sh uses except curl and wget.
      const bin = join(box.root, "path-without-downloaders");
      await Deno.mkdir(bin);
      for (const tool of ["uname", "mkdir", "mktemp", "rm", "cp", "mv", "chmod", "awk", "tr", "cut", "cat"]) {
        await Deno.symlink(required(tool, "coreutils"), join(bin, tool));
      }
      await Deno.symlink(required("sha256sum", "coreutils"), join(bin, "sha256sum"));
      const bare = { ...box.env, PATH: bin };
      await assertRefused(box, await install([], bare), /neither curl nor wget was found/, ["deploy-paradigm"]);
      await assertRefused(
        box,
        await install([], { ...bare, DEPLOY_PARADIGM_DOWNLOADER: "wget" }),
        /DEPLOY_PARADIGM_DOWNLOADER=wget, but wget was not found/,
        ["deploy-paradigm"],
      );
      // With only wget, wget is used.
      await Deno.symlink(tools.wget, join(bin, "wget"));
      mirror.requests.length = 0;
      await assertInstalled(box, artifact("0.3.0", HOST), await install([], bare));
      assert(mirror.requests.every((r) => r.agent.startsWith("Wget/")), "fell back to wget");
      await assertRefused(
        box,
        await install([], { ...box.env, DEPLOY_PARADIGM_DOWNLOADER: "fetch" }),
        /DEPLOY_PARADIGM_DOWNLOADER must be curl or wget \(got "fetch"\)/,
        ["deploy-paradigm"],
      );
    })
  );
});

Deno.test("install.sh --help documents the arguments and every variable; unknown options are refused", async () => {
  await withMirror((mirror) =>
    withSandbox(mirror, async (box) => {
      for (const flag of ["--help", "-h"]) {
        const ran = await install([flag], box.env);
        assertEquals(ran.code, 0, ran.output);
        assertEquals(ran.stderr, "");
        assertMatch(ran.stdout, /Usage: install\.sh \[options\] \[version\]/);
        for (
          const variable of [
            "DEPLOY_PARADIGM_INSTALL_DIR",
            "DEPLOY_PARADIGM_DOWNLOAD_URL",
            "DEPLOY_PARADIGM_TARGET",
            "DEPLOY_PARADIGM_DOWNLOADER",
          ]
        ) assertMatch(ran.stdout, new RegExp(`\n  ${variable} `));
        assertMatch(ran.stdout, /\/usr\/local\/bin/);
        assertMatch(ran.stdout, /https:\/\/github\.com\/deploy-paradigm\/deploy-paradigm\/releases/);
      }
      for (const flag of ["--bogus", "-x", "--version"]) {
        const ran = await install([flag], box.env);
        await assertRefused(box, ran, new RegExp(`unknown option ${flag}\n`), [], 2);
        assertMatch(ran.stderr, /--help/);
      }
      assertEquals(mirror.requests, []);
    })
  );
});

Deno.test("install.sh is shellcheck-clean POSIX sh, never evals, and pipes nothing into a shell", async () => {
  const check = await new Deno.Command(required("shellcheck", "shellcheck"), {
    args: ["--shell=sh", SCRIPT],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assertEquals(check.code, 0, decoder.decode(check.stdout) + decoder.decode(check.stderr));
  const code = (await Deno.readTextFile(SCRIPT)).split("\n").filter((line) => !/^\s*#/.test(line)).join("\n");
  assertMatch(code, /^set -eu$/m);
  assertNotMatch(code, /\beval\b/);
  assertNotMatch(code, /\|\s*(sh|bash|dash|zsh)\b/);
  assertNotMatch(code, /(^|[;&|]\s*)(\.|source)\s/m);
  assertMatch(code, /\nmain "\$@"\n$/, "the last line runs everything, so a truncated download runs nothing");
});
