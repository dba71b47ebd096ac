/** Reading a test server's state. */
import { join } from "node:path";
import { listReleases } from "../../src/deploy/releases.ts";
import type { AppStatus } from "../../src/deploy/status.ts";
import { logsRoot } from "../../src/paths.ts";
import { run, type TestServer } from "./server.ts";

/** The app's status.json. */
export async function status(server: TestServer, app: string): Promise<AppStatus> {
  return JSON.parse(await Deno.readTextFile(server.paths(app).status));
}

/** Release ids, oldest first. */
export function releases(server: TestServer, app: string): Promise<string[]> {
  return listReleases(server.paths(app));
}

/** Where `current` points (`releases/<id>`), or undefined. */
export async function current(server: TestServer, app: string): Promise<string | undefined> {
  return await Deno.readLink(server.paths(app).current).catch(() => undefined);
}

/** The commit `main` points at in the app's bare repository ("" when absent). */
export async function branchHead(server: TestServer, app: string, branch = "main"): Promise<string> {
  const out = await new Deno.Command("git", {
    args: ["--git-dir", server.paths(app).repo, "rev-parse", "--verify", "--quiet", branch],
  }).output();
  return new TextDecoder().decode(out.stdout).trim();
}

/** deploy.log as parsed JSON lines. */
export async function deployLog(server: TestServer, app: string): Promise<Record<string, unknown>[]> {
  const text = await Deno.readTextFile(server.paths(app).deployLog).catch(() => "");
  return text.trim().split("\n").filter(Boolean).map((line) => JSON.parse(line));
}

/**
 * Every file under the server prefix except the git repositories (pushes add objects there) and
 * the apps' own output (access.log, error.log: a running app writes them whenever it likes, and
 * the process manager copies its lines there some time after an answer), with size, mtime and
 * symlink target: equal snapshots mean nothing changed on disk. Directories are listed by name
 * only: a temp entry created and removed again changes a dir's mtime alone.
 */
export async function snapshot(server: Pick<TestServer, "prefix">): Promise<string[]> {
  const entries: string[] = [];
  const logs = logsRoot(server.prefix);
  async function walk(dir: string): Promise<void> {
    for await (const entry of Deno.readDir(dir)) {
      const path = join(dir, entry.name);
      if (path.startsWith(join(server.prefix, "var", "repos"))) continue;
      if (path.startsWith(logs) && /^(access|error)\.log(\.\d+)?$/.test(entry.name)) continue;
      const info = await Deno.lstat(path);
      const link = entry.isSymlink ? await Deno.readLink(path) : "";
      entries.push(entry.isDirectory ? `${path}/` : `${path} ${info.size} ${info.mtime?.getTime()} ${link}`);
      if (entry.isDirectory) await walk(path);
    }
  }
  await walk(server.prefix);
  return entries.sort();
}

/** The test server's pm2 processes that are online, by name, with their pids. */
export async function pm2Online(server: TestServer): Promise<Map<string, number>> {
  const listed = await run(["pm2", "jlist"], { env: server.env });
  const line = listed.stdout.split("\n").reverse().find((l) => l.startsWith("["));
  const list = JSON.parse(line ?? "[]") as { name: string; pid: number; pm2_env: { status: string } }[];
  return new Map(list.filter((p) => p.pm2_env.status === "online").map((p) => [p.name, p.pid]));
}
