/**
 * `receive <git-dir>`: the proc-receive side of `git push` (see `src/hook.ts` for why).
 * Speaks git's pkt-line protocol on stdin/stdout; progress goes to stderr, which the pusher
 * sees as `remote:` lines. Each pushed branch is answered `ok` or `ng <reason>`.
 * @module
 */
import { parse as parseYaml } from "./yaml.ts";
import { describeError } from "./errors.ts";
import { readAtCommit } from "./git.ts";
import { ProcessRunner } from "./runner.ts";

const ZERO = /^0+$/;
const encoder = new TextEncoder();

/** Reads pkt-lines: a string per data line (newline chomped), null for a flush packet. */
export class PktReader {
  private buffer = new Uint8Array(0);

  constructor(private readonly source: { read(p: Uint8Array): Promise<number | null> }) {}

  private async take(n: number): Promise<Uint8Array> {
    while (this.buffer.length < n) {
      const chunk = new Uint8Array(65536);
      const read = await this.source.read(chunk);
      if (read === null) throw new Error("git closed the connection in the middle of the protocol");
      const joined = new Uint8Array(this.buffer.length + read);
      joined.set(this.buffer);
      joined.set(chunk.subarray(0, read), this.buffer.length);
      this.buffer = joined;
    }
    const out = this.buffer.slice(0, n);
    this.buffer = this.buffer.slice(n);
    return out;
  }

  /** The next packet: its text, or null for a flush. */
  async read(): Promise<string | null> {
    const length = parseInt(new TextDecoder().decode(await this.take(4)), 16);
    if (Number.isNaN(length)) throw new Error("malformed pkt-line from git");
    if (length === 0) return null;
    return new TextDecoder().decode(await this.take(length - 4)).replace(/\n$/, "");
  }

  /** Every packet up to the next flush. */
  async readSection(): Promise<string[]> {
    const lines: string[] = [];
    for (let line = await this.read(); line !== null; line = await this.read()) lines.push(line);
    return lines;
  }
}

/** Encodes one pkt-line (or a flush for null). */
export function pkt(line: string | null): Uint8Array {
  if (line === null) return encoder.encode("0000");
  const body = encoder.encode(line);
  return new Uint8Array([...encoder.encode((body.length + 4).toString(16).padStart(4, "0")), ...body]);
}

async function writeAll(data: Uint8Array): Promise<void> {
  for (let done = 0; done < data.length;) done += await Deno.stdout.write(data.subarray(done));
}

/** One pushed ref. */
export interface RefUpdate {
  old: string;
  new: string;
  ref: string;
}

/** Decides and applies one ref update. Returns undefined for ok, or the reason it was refused. */
export type RefHandler = (update: RefUpdate) => Promise<string | undefined>;

/** Runs the proc-receive protocol with git on stdin/stdout. */
export async function receive(gitDir: string, handle: RefHandler = (u) => handleRef(gitDir, u)): Promise<number> {
  const reader = new PktReader(Deno.stdin);
  await reader.readSection(); // version=1 and git's capabilities
  await writeAll(new Uint8Array([...pkt("version=1"), ...pkt(null)]));
  const updates = (await reader.readSection()).map((line) => {
    const [old, next, ref] = line.split(" ");
    return { old, new: next, ref };
  });
  const replies: Uint8Array[] = [];
  for (const update of updates) {
    let reason: string | undefined;
    try {
      reason = await handle(update);
    } catch (error) {
      const { text } = describeError(error);
      console.error(text);
      const [first, detail = ""] = text.replace(/^error: /, "").split("\n");
      reason = `${first} ${detail.trim()}`.trim().slice(0, 300);
    }
    replies.push(pkt(reason === undefined ? `ok ${update.ref}` : `ng ${update.ref} ${reason.replaceAll("\n", " ")}`));
  }
  await writeAll(new Uint8Array([...replies.flatMap((r) => [...r]), ...pkt(null)]));
  return 0;
}

/** The branch deploy.yml at `commit` deploys from, read leniently (a broken file still says main). */
export async function deployBranchAt(gitDir: string, commit: string): Promise<string> {
  const raw = await readAtCommit(gitDir, commit, "deploy.yml");
  try {
    const value = (raw && (parseYaml(new TextDecoder().decode(raw)) as { branch?: unknown } | null))?.branch;
    return typeof value === "string" ? value : "main";
  } catch {
    return "main";
  }
}

async function handleRef(gitDir: string, update: RefUpdate): Promise<string | undefined> {
  const git = new ProcessRunner((line) => console.error(line));
  if (ZERO.test(update.new)) {
    await git.run({ argv: ["git", "--git-dir", gitDir, "update-ref", "-d", update.ref, update.old] });
    return undefined;
  }
  const branch = await deployBranchAt(gitDir, update.new);
  if (update.ref !== `refs/heads/${branch}`) {
    await git.run({ argv: ["git", "--git-dir", gitDir, "update-ref", update.ref, update.new, update.old] });
    console.error(`deploy-paradigm: ${update.ref} stored; only ${branch} deploys`);
    return undefined;
  }
  const { prefetchCommit } = await import("./deploy/prefetch.ts");
  const prefetch = prefetchCommit(gitDir, update.new); // overlaps loading the engine
  const { execute } = await import("./deploy/execute.ts");
  const result = await execute({
    prefetch,
    gitDir,
    commit: update.new,
    ref: update.ref,
    old: update.old,
    print: (line) => console.error(line),
  });
  return result.ok ? undefined : result.reason;
}
