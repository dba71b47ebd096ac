/**
 * `docker-logs <container> --state <file>`: the log follower of a docker app's container, run by
 * the server's process manager, whose log files (access.log, error.log) get the container's
 * stdout and stderr line by line.
 *
 * `docker logs --follow` ends whenever the container stops (a crash, the restart policy, a
 * reboot), and starting it again from scratch would write every line again. So it runs with
 * `--timestamps` and, after a reconnect, `--since` the last line written; lines of that same
 * timestamp are counted, not compared (podman's API gives whole seconds), so the lines already
 * written are skipped and none is lost. The cursor is kept in the state file, so a restarted
 * follower goes on where it stopped; a new container of the same name starts from its first line.
 * @module
 */
import { writeFileAtomic } from "./fsutil.ts";
import { readLines } from "./runner.ts";

/** The last line written of one stream: its timestamp and how many lines had that timestamp. */
interface Cursor {
  ts: string;
  n: number;
}

/** The follower's state file. */
interface FollowState {
  id: string;
  out: Cursor;
  err: Cursor;
}

/** `2026-11-29T07:32:54.123456789Z` (or with an offset, or whole seconds) → nanoseconds since 1970. */
export function timestampNanos(ts: string): bigint | undefined {
  const match = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$/.exec(ts);
  if (!match) return undefined;
  const seconds = Date.parse(`${match[1]}${match[3]}`);
  if (Number.isNaN(seconds)) return undefined;
  return BigInt(seconds) * 1_000_000n + BigInt((match[2] ?? "").padEnd(9, "0"));
}

/**
 * Output written without a newline (a partial line: `printf`, or stderr written in pieces) comes
 * back as one line with the next piece's timestamp glued on: `part1-2026-11-29T08:05:23Z part2`.
 * Such a timestamp, right after a non-blank character and within a minute of the line's own, is
 * removed.
 */
function joinPartials(text: string, at: bigint): string {
  return text.replace(INLINE_TIMESTAMP, (match, ts: string) => {
    const t = timestampNanos(ts);
    return t !== undefined && t >= at && t - at <= 60_000_000_000n ? "" : match;
  });
}

const INLINE_TIMESTAMP = /(?<=\S)(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:\d\d)) /g;

/** `--since` for a timestamp: seconds and nanoseconds since 1970. */
function sinceArg(nanos: bigint): string {
  return `${nanos / 1_000_000_000n}.${String(nanos % 1_000_000_000n).padStart(9, "0")}`;
}

/**
 * Decides line by line what to write after a reconnect: a line older than the cursor, or one of
 * the first `n` lines with the cursor's timestamp, was written before.
 */
export class LineFilter {
  private replayLeft: number;
  private readonly replayAt: bigint | undefined;

  constructor(readonly cursor: Cursor) {
    this.replayAt = timestampNanos(cursor.ts);
    this.replayLeft = cursor.n;
  }

  /** The text to write for a `--timestamps` line, or undefined when it was written before. */
  accept(line: string): string | undefined {
    const space = line.indexOf(" ");
    const ts = space > 0 ? line.slice(0, space) : line;
    const at = timestampNanos(ts);
    if (at === undefined) return undefined; // not the container's: the docker CLI's own complaint
    const text = joinPartials(space > 0 ? line.slice(space + 1) : "", at);
    if (this.replayAt !== undefined) {
      if (at < this.replayAt) return undefined;
      if (at === this.replayAt && this.replayLeft > 0) {
        this.replayLeft--;
        return undefined;
      }
    }
    if (timestampNanos(this.cursor.ts) === at) this.cursor.n++;
    else {
      this.cursor.ts = ts;
      this.cursor.n = 1;
    }
    return text;
  }
}

function emptyState(id: string): FollowState {
  return { id, out: { ts: "", n: 0 }, err: { ts: "", n: 0 } };
}

async function readState(file: string): Promise<FollowState | undefined> {
  try {
    const state = JSON.parse(await Deno.readTextFile(file));
    return typeof state?.id === "string" && state.out && state.err ? state : undefined;
  } catch {
    return undefined;
  }
}

/** The container's id, or undefined when there is none of that name (or no engine). */
async function containerId(name: string): Promise<string | undefined> {
  try {
    const out = await new Deno.Command("docker", {
      args: ["inspect", "--type", "container", "--format", "{{.Id}}", name],
      stdin: "null",
      stdout: "piped",
      stderr: "null",
    }).output();
    return out.success ? new TextDecoder().decode(out.stdout).trim() : undefined;
  } catch {
    return undefined;
  }
}

/** Follows `name` until `signal` aborts, writing its lines to stdout and stderr. */
export async function followContainer(name: string, stateFile: string, signal: AbortSignal): Promise<void> {
  const encoder = new TextEncoder();
  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener("abort", done, { once: true });
    });
  let state = await readState(stateFile);
  let missing = false;
  while (!signal.aborted) {
    const id = await containerId(name);
    if (!id) {
      if (!missing) console.error(`deploy-paradigm docker-logs: no container ${name} (or no engine); waiting for it`);
      missing = true;
      await sleep(2000);
      continue;
    }
    missing = false;
    if (state?.id !== id) state = emptyState(id);
    const current = state;
    const starts = [current.out, current.err].map((c) => timestampNanos(c.ts)).filter((n) => n !== undefined);
    const since = starts.length ? sinceArg(starts.reduce((a, b) => (a < b ? a : b))) : undefined;
    const child = new Deno.Command("docker", {
      args: ["logs", "--follow", "--timestamps", ...(since ? ["--since", since] : []), name],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const stop = () => {
      try {
        child.kill("SIGTERM");
      } catch { /* it has ended */ }
    };
    signal.addEventListener("abort", stop, { once: true });
    let dirty = false;
    const saver = setInterval(() => {
      if (dirty) writeFileAtomic(stateFile, JSON.stringify(current)).catch(() => {});
      dirty = false;
    }, 2000);
    const pump = (stream: ReadableStream<Uint8Array>, cursor: Cursor, out: typeof Deno.stdout) => {
      const filter = new LineFilter(cursor);
      return readLines(stream, (line) => {
        const text = filter.accept(line);
        if (text === undefined) return;
        const bytes = encoder.encode(text + "\n");
        for (let done = 0; done < bytes.length;) done += out.writeSync(bytes.subarray(done));
        dirty = true;
      });
    };
    await Promise.all([pump(child.stdout, current.out, Deno.stdout), pump(child.stderr, current.err, Deno.stderr)]);
    await child.status;
    clearInterval(saver);
    signal.removeEventListener("abort", stop);
    await writeFileAtomic(stateFile, JSON.stringify(current)).catch(() => {});
    await sleep(500); // the container stopped (or restarts): look again shortly
  }
}
