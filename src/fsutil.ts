/**
 * Crash-safe file operations: every replacement is a write to a temp name plus rename(2).
 * @module
 */
import { dirname, join } from "node:path";
import { DeployParadigmError } from "./errors.ts";

/** True when `path` exists (without following a final symlink). */
export async function exists(path: string): Promise<boolean> {
  return (await ifExists(Deno.lstat(path))) !== undefined;
}

function tempName(path: string): string {
  return join(dirname(path), `.${path.split("/").pop()}.tmp-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`);
}

/**
 * Writes `content` to `path` atomically (temp file, fsync, rename), creating parent dirs. The file
 * has its mode from creation: the temp file is opened with it (the umask can only take bits away,
 * and they are put back before any content is written); by default 0640, nothing for others (an
 * app's directory lets other users pass through to what its build needs: see users.ts). A
 * rewrite never widens: permissions for group and others that the file it replaces did not have
 * stay off (a `chmod go-r` sticks).
 */
export async function writeFileAtomic(path: string, content: string, mode = 0o640): Promise<void> {
  await Deno.mkdir(dirname(path), { recursive: true });
  const before = await ifExists(Deno.lstat(path));
  const final = before?.isFile && before.mode !== null ? mode & ~(0o077 & ~before.mode) : mode;
  const temp = tempName(path);
  try {
    const file = await Deno.open(temp, { write: true, createNew: true, mode: final });
    try {
      await Deno.chmod(temp, final);
      const bytes = new TextEncoder().encode(content);
      for (let done = 0; done < bytes.length;) done += await file.write(bytes.subarray(done));
      await file.sync();
    } finally {
      file.close();
    }
    await Deno.rename(temp, path);
  } catch (error) {
    await Deno.remove(temp).catch(() => {});
    throw error;
  }
}

/**
 * Takes the permission bits `drop` off `path`, never through a link: its mode before when it had
 * any of them and they are off now; undefined when it had none, is a link, or went meanwhile.
 */
export async function narrowMode(path: string, drop: number): Promise<number | undefined> {
  const info = await ifExists(Deno.lstat(path));
  if (!info || info.isSymlink || info.mode === null) return undefined;
  const mode = info.mode & 0o7777;
  if (!(mode & drop)) return undefined;
  return (await ifExists(Deno.chmod(path, mode & ~drop).then(() => true))) ? mode : undefined;
}

/** Points symlink `link` at `target` atomically: a temp symlink, then rename(2). Never `ln -sfn`. */
export async function symlinkAtomic(target: string, link: string): Promise<void> {
  const temp = tempName(link);
  await Deno.symlink(target, temp);
  try {
    await Deno.rename(temp, link);
  } catch (error) {
    await Deno.remove(temp).catch(() => {});
    throw error;
  }
}

/** The value of `operation`, or undefined when it fails because the file does not exist. */
export async function ifExists<T>(operation: Promise<T>): Promise<T | undefined> {
  try {
    return await operation;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
}

/** The target of symlink `link`, or undefined when there is none. */
export function readLinkOrUndefined(link: string): Promise<string | undefined> {
  return ifExists(Deno.readLink(link));
}

/**
 * The fields of a JSON object its readers rely on, each a dotted path and its JSON type: `string`,
 * `number`, `boolean`, `object`, `array`, `strings` (a list of strings); `?` after it: checked when present.
 */
export type Shape = readonly (readonly [path: string, type: string])[];

/** The first field of `value` that is not as `shape` says, as a problem; undefined when all are. */
export function shapeProblem(value: Record<string, unknown>, shape: Shape): string | undefined {
  for (const [path, type] of shape) {
    const field = path.split(".").reduce<unknown>((at, key) => (at as Record<string, unknown>)[key], value);
    const want = type.replace("?", "");
    if (field === undefined && type.endsWith("?")) continue;
    const got = field === null ? "null" : Array.isArray(field) ? "array" : typeof field;
    const named = { array: "a list", object: "an object", strings: "a list of strings" }[want] ?? `a ${want}`;
    if (want === "strings" && got === "array" && (field as unknown[]).every((item) => typeof item === "string")) {
      continue;
    }
    if (got !== want) return `"${path}" must be ${named} (got ${got})`;
  }
}

/**
 * A JSON object file this tool writes (status.json, a release's metadata), or undefined when it
 * does not exist. One changed by hand or cut short (a full disk), or (`check`) without the fields
 * its readers rely on, is a {@link DeployParadigmError} naming it, with `remedy` as its hint.
 */
export async function readJsonObject(
  path: string,
  remedy: string,
  check?: { shape: Shape; what: string },
): Promise<Record<string, unknown> | undefined> {
  const text = await readTextOrUndefined(path);
  if (text === undefined) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new DeployParadigmError(`${path} is not valid JSON (${(error as Error).message})`, { suggestion: remedy });
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    const kind = Array.isArray(value) ? "a list" : value === null ? "null" : `a ${typeof value}`;
    throw new DeployParadigmError(`${path} holds ${kind}, not an object`, {
      suggestion: remedy,
    });
  }
  const problem = check && shapeProblem(value as Record<string, unknown>, check.shape);
  if (problem) throw new DeployParadigmError(`${path} is not ${check!.what}: ${problem}`, { suggestion: remedy });
  return value as Record<string, unknown>;
}

/** Reads a text file, or undefined when it does not exist. */
export function readTextOrUndefined(path: string): Promise<string | undefined> {
  return ifExists(Deno.readTextFile(path));
}

/**
 * Opens the regular file at `path` (a real path, checked before by the caller) for reading, and
 * makes sure it is still what the path names: the open file and `path` (not followed) are the same
 * regular file, and (`group`) of the group of the tree it was found in. A link swapped in between
 * the check and the open (which would follow it, as root: to any file), the file's own or a
 * directory's above it, is refused: undefined, nothing read. (A sealed release is all
 * root:<its app's group>; another app's files and the system's are not.) Something not a regular
 * file at the path when it is opened (a FIFO would block the open) is refused too. The caller closes
 * the file.
 */
export async function openChecked(
  path: string,
  group?: number | null,
): Promise<{ file: Deno.FsFile; stat: Deno.FileInfo } | undefined> {
  if (!(await Deno.stat(path)).isFile) return undefined;
  const file = await Deno.open(path);
  try {
    const stat = await file.stat();
    const named = await Deno.lstat(path);
    if (
      stat.isFile && named.isFile && named.ino === stat.ino && named.dev === stat.dev &&
      (group === undefined || group === null || stat.gid === group)
    ) return { file, stat };
  } catch (error) {
    file.close();
    throw error;
  }
  file.close();
  return undefined;
}

/**
 * The first bytes of the file at `path` (or of the open `file`, from its current position), at
 * most `max + 1` of them: a result longer than `max` says the file is bigger, without reading it
 * all into memory.
 */
export async function readAtMost(path: string | Deno.FsFile, max: number): Promise<Uint8Array> {
  using opened = typeof path === "string" ? await Deno.open(path) : undefined;
  const file = opened ?? path as Deno.FsFile;
  const buffer = new Uint8Array(max + 1);
  let got = 0;
  while (got < buffer.length) {
    const n = await file.read(buffer.subarray(got));
    if (n === null) break;
    got += n;
  }
  return buffer.subarray(0, got);
}
