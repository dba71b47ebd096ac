/**
 * The proxy (root) serves an app's static files: a file the app swaps for a link to a secret between
 * the proxy's check of the path and its open is never served (the open file must be the regular file
 * the path names after the open: ../../src/fsutil.ts openChecked). A real second process swaps the
 * file as fast as it can while requests are served.
 */
import { join } from "node:path";
import { assert, assertEquals } from "../helpers/assert.ts";
import { serveStatic } from "../../src/proxy/static.ts";
import { releasePage } from "../../src/proxy/maintenance.ts";

const FLIPPER = `
import os, sys
d, target, name = sys.argv[1], sys.argv[2], sys.argv[3]
while True:
    try:
        os.symlink(target, d + "/.l")
        os.rename(d + "/.l", d + "/" + name)
        with open(d + "/.r", "wb") as f:
            f.write(b"decoy" * 6)
        os.rename(d + "/.r", d + "/" + name)
    except OSError:
        pass
`;

/** The bytes of `res`'s body a client would get, up to an error that ends the stream. */
async function bodyText(res: Response): Promise<string> {
  let text = "";
  const decoder = new TextDecoder();
  try {
    for await (const chunk of res.body ?? []) text += decoder.decode(chunk, { stream: true });
  } catch { /* the stream failed: what came before it was sent */ }
  return text;
}

/** Runs `fn` while a process flips `dir/name` between a regular file and a link to `target`. */
async function whileFlipping(dir: string, name: string, target: string, fn: () => Promise<void>) {
  const flipper = new Deno.Command("python3", {
    args: ["-c", FLIPPER, dir, target, name],
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    await fn();
  } finally {
    flipper.kill("SIGKILL");
    await flipper.status;
  }
}

Deno.test("static files: a file swapped for a link to a secret between check and open is never served", async () => {
  const base = await Deno.makeTempDir({ prefix: "dp-static-race-" });
  try {
    const root = join(base, "release");
    await Deno.mkdir(join(root, "d"), { recursive: true });
    const secret = join(base, "other-app.env");
    await Deno.writeTextFile(secret, "OTHER_SECRET=1234567890123456789012345678901234567890\n");
    await Deno.writeTextFile(join(root, "d", "f"), "decoy".repeat(6));
    const seen = { leaked: 0, served: 0, requests: 0 };
    await whileFlipping(join(root, "d"), "f", secret, async () => {
      const until = Date.now() + 4000;
      while (Date.now() < until) {
        const res = await serveStatic(root, new Request("http://site.test/d/f"));
        const body = await bodyText(res); // what was sent, up to an error
        seen.requests++;
        if (body.includes("OTHER_SECRET")) seen.leaked++;
        if (res.status === 200) seen.served++;
      }
    });
    assertEquals(seen.leaked, 0, JSON.stringify(seen));
    assert(seen.served > 0, `the decoy itself is served between swaps: ${JSON.stringify(seen)}`);
  } finally {
    await Deno.remove(base, { recursive: true });
  }
});

Deno.test("maintenance.html swapped for a link to a secret while the proxy reads it: never read", async () => {
  const base = await Deno.makeTempDir({ prefix: "dp-page-race-" });
  try {
    const release = join(base, "release");
    await Deno.mkdir(release);
    const secret = join(base, "other-app.env");
    await Deno.writeTextFile(secret, "OTHER_SECRET=1234567890123456789012345678901234567890\n");
    let leaked = 0;
    await whileFlipping(release, "maintenance.html", secret, async () => {
      const until = Date.now() + 3000;
      while (Date.now() < until) {
        const page = await releasePage(release).catch(() => undefined);
        if (page instanceof Uint8Array && new TextDecoder().decode(page).includes("OTHER_SECRET")) leaked++;
      }
    });
    assertEquals(leaked, 0);
  } finally {
    await Deno.remove(base, { recursive: true });
  }
});

const DIR_FLIPPER = `
import os, sys
release, outside = sys.argv[1], sys.argv[2]
d = release + "/d"
while True:
    try:
        os.rename(d, release + "/real-d")
        os.symlink(outside, d)
        os.rename(release + "/real-d", release + "/.keep")
        os.unlink(d)
        os.rename(release + "/.keep", d)
    except OSError:
        try:
            if os.path.islink(d): os.unlink(d)
            for name in ("real-d", ".keep"):
                if os.path.isdir(release + "/" + name): os.rename(release + "/" + name, d)
        except OSError:
            pass
`;

Deno.test("static files: a directory swapped for a link to another app's directory between check and open is never served", async () => {
  const base = await Deno.makeTempDir({ prefix: "dp-static-dir-race-" });
  try {
    const root = join(base, "release"); // sealed: root:<its app's group> (here the test's own group)
    await Deno.mkdir(join(root, "d"), { recursive: true });
    await Deno.writeTextFile(join(root, "d", "f"), "decoy".repeat(6));
    const other = join(base, "other"); // another app's: of another group
    await Deno.mkdir(other);
    await Deno.writeTextFile(join(other, "f"), "OTHER_SECRET=1234567890123456789012345678901234567890\n");
    await Deno.chown(join(other, "f"), 0, 4242);
    const seen = { leaked: 0, served: 0 };
    const flipper = new Deno.Command("python3", {
      args: ["-c", DIR_FLIPPER, root, other],
      stdout: "null",
      stderr: "null",
    }).spawn();
    try {
      const until = Date.now() + 4000;
      while (Date.now() < until) {
        const res = await serveStatic(root, new Request("http://site.test/d/f"));
        const body = await bodyText(res);
        if (body.includes("OTHER_SECRET")) seen.leaked++;
        if (res.status === 200) seen.served++;
      }
    } finally {
      flipper.kill("SIGKILL");
      await flipper.status;
    }
    assertEquals(seen.leaked, 0, JSON.stringify(seen));
    assert(seen.served > 0, JSON.stringify(seen));
  } finally {
    await Deno.remove(base, { recursive: true });
  }
});
