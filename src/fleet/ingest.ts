/**
 * Ingesting one log file into the fleet database through its ledger (store.ts): only new
 * complete lines, once each, across growth, rotation (`access.log` → `access.log.1`), truncation
 * in place (copytruncate) and replacement. The file's identity is the hash of its first 4 KiB
 * (and its inode where the source knows the real one). A cycle reads a bounded number of new
 * bytes ({@link Budget}, from ./limits.ts): past a file's share, the oldest new bytes are skipped
 * and a `[fleet] gap: …` line says how many; past the server's, the file waits for the next
 * cycle. And a bounded number of lines: once they are spent, a file stops at a line and goes on
 * next cycle. And a server's certificate state, read as hostile input by ../proxy/cert_state.ts.
 * @module
 */
import { readAtMost } from "../fsutil.ts";
import { readCertificatesFile } from "../proxy/cert_state.ts";
import { jsonObjectOf } from "./json_line.ts";
import { capText, FIELD, size } from "./limits.ts";
import { type RequestMinute, requestMinuteOf, storeRequestMinutes } from "./metric_store.ts";
import { LINE_AHEAD_MS, plausibleTime, zonedTime } from "./server_time.ts";
import type { CronRunRow, DeploymentRow, FileLedger, FleetStore, LogLine } from "./store.ts";

/** How many bytes identify a file. */
export const HEAD_BYTES = 4096;
/**
 * Bytes read at a time, and so the most lines in one transaction: each read lets the event loop
 * (the API, the other servers' pulls) run. Small, because a hostile server's lines can be 2 bytes
 * each: 8,192 lines take ~60 ms here; 4 MiB chunks (2 M lines) held the loop for 15 s.
 */
export const CHUNK = 16 << 10;
/** A "line" without a newline for this long is cut here (a runaway writer must not exhaust memory). */
const MAX_LINE = 1 << 20;

/** What is known of a file before reading it. */
export interface FileFacts {
  size: number;
  /** The real inode, or null where the source does not know it. */
  ino: number | null;
  /** Its first min(4 KiB, size) bytes. */
  head: Uint8Array;
}

/** What to do with a file, given its ledger. */
export type Decision =
  | { kind: "new" }
  | { kind: "grow"; from: number }
  /** The old file is `.1` now: its rest from `restFrom`, then the new file from 0 (gap when copied, not moved). */
  | { kind: "rotated"; restFrom: number; gap?: string }
  | { kind: "restart"; gap: string };

/** SHA-256 of bytes, hex. */
export async function hashHex(bytes: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function sameHead(facts: FileFacts, ledger: FileLedger): Promise<boolean> {
  return facts.size >= ledger.headLen && await hashHex(facts.head.subarray(0, ledger.headLen)) === ledger.headHash;
}

/** Decides how to go on with a file (`rotated`: its `.1` sibling, when there is one). */
export async function decide(
  ledger: FileLedger | undefined,
  facts: FileFacts,
  rotated: FileFacts | undefined,
): Promise<Decision> {
  if (!ledger) return { kind: "new" };
  const inodeKnown = facts.ino !== null && ledger.ino !== null;
  const sameInode = inodeKnown && facts.ino === ledger.ino;
  if ((!inodeKnown || sameInode) && facts.size >= ledger.offset && await sameHead(facts, ledger)) {
    return { kind: "grow", from: ledger.offset };
  }
  // The old file as .1: renamed (its inode went with it) or copied (copytruncate: the file kept its
  // inode). Without inodes, only a head that identifies something (a file seen non-empty).
  const rotatedIdentity = rotated &&
    (rotated.ino !== null && ledger.ino !== null ? rotated.ino === ledger.ino || sameInode : ledger.headLen > 0);
  if (rotated && rotatedIdentity && rotated.size >= ledger.offset && await sameHead(rotated, ledger)) {
    return sameInode
      ? {
        kind: "rotated",
        restFrom: ledger.offset,
        gap: "copied and truncated in place (copytruncate): lines written between the copy and the truncation " +
          "may be missing",
      }
      : { kind: "rotated", restFrom: ledger.offset };
  }
  return {
    kind: "restart",
    gap: sameInode || !inodeKnown && facts.size < ledger.offset
      ? `truncated in place at ${ledger.offset} bytes (copytruncate or a shrink), and no copy was found as .1: ` +
        "lines written before the truncation may be missing"
      : `replaced, and the old file was not found as .1: its lines after byte ${ledger.offset} may be missing`,
  };
}

/**
 * A line's own timestamp (ISO-like, at its start, as PM2 writes with `time: true`), when it is
 * plausible at `now`, the time of the pull (./server_time.ts: from 2000 to {@link LINE_AHEAD_MS}
 * past it); else undefined (the line takes `now`). A line dated 9999 would never be removed by
 * retention and would stay in every log rule's window.
 */
export function lineTime(text: string, now: number): number | undefined {
  const match = /^(?:\[|\{"ts":")?(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)([.,]\d{1,9})?(Z|[+-]\d\d:?\d\d)?/.exec(text);
  if (!match) return undefined;
  const fraction = match[3] ? `.${match[3].slice(1, 4).padEnd(3, "0")}` : "";
  const zone = match[4] ? match[4].replace(/^([+-]\d\d)(\d\d)$/, "$1:$2") : "Z";
  const ms = Date.parse(`${match[1]}T${match[2]}${fraction}${zone}`);
  return plausibleTime(ms, now, LINE_AHEAD_MS) ? ms : undefined;
}

/** Reads facts of an open file. */
async function factsOf(file: Deno.FsFile, ino: number | null): Promise<FileFacts> {
  const { size } = await file.stat();
  await file.seek(0, Deno.SeekMode.Start);
  return { size, ino, head: (await readAtMost(file, HEAD_BYTES)).subarray(0, Math.min(HEAD_BYTES, size)) };
}

/** A file to ingest: `rel` is `<app>/<name>` under the log root; `path` where to read it. */
export interface SourceFile {
  rel: string;
  path: string;
  /**
   * The remote file's inode (from the server's listing), or null when unknown; "here" for this
   * machine's own file, whose inode is taken from the file once opened.
   */
  ino: number | null | "here";
}

async function inodeOf(file: SourceFile, handle: Deno.FsFile): Promise<number | null> {
  return file.ino === "here" ? (await handle.stat()).ino ?? null : file.ino;
}

/** What ingesting one file did. */
export interface FileResult {
  lines: number;
  deployments: number;
  gaps: number;
  /** New bytes read (skipped ones not counted). */
  bytes: number;
  /** New bytes skipped: over the budget's `perFile` (a gap line says so). */
  skipped: number;
  /** Not read at all: its new bytes did not fit in what is left of the server's budget. */
  deferred?: boolean;
  /** Stopped at a line (or not begun), the server's budget of lines spent: the rest waits for the next cycle. */
  stopped?: boolean;
  /** cron.log: cron jobs forgotten, over the MAX_CRON_JOBS (./limits.ts) whose last run an app may keep. */
  cronForgotten?: number;
}

/**
 * How many new bytes a cycle may read: of one file, and of all the server's files (`left`,
 * shared); and how many lines it may read of all of them (`lines`, shared, blank ones included).
 */
export interface Budget {
  perFile: number;
  left: number;
  lines: number;
}

/**
 * Ingests the new complete lines of `file` (of `server`), following its ledger; `rotated` is its
 * `.1` sibling, when present. deploy.log's JSON lines become deployments; metrics.log's become
 * request minutes only (not log lines: 1,440 a day per app that log rules would match); other
 * files' lines are indexed for search, and cron.log's runs (its JSON lines) also become each job's
 * last run.
 */
export async function ingestFile(
  store: FleetStore,
  server: string,
  file: SourceFile,
  rotated: SourceFile | undefined,
  now = Date.now(),
  budget: Budget = { perFile: Infinity, left: Infinity, lines: Infinity },
): Promise<FileResult> {
  const result: FileResult = { lines: 0, deployments: 0, gaps: 0, bytes: 0, skipped: 0 };
  const [app, ...rest] = file.rel.split("/");
  const name = rest.join("/");
  using handle = await Deno.open(file.path);
  const ino = await inodeOf(file, handle);
  const facts = await factsOf(handle, ino);
  using old = rotated ? await Deno.open(rotated.path).catch(() => undefined) : undefined;
  const oldFacts = old && rotated ? await factsOf(old, await inodeOf(rotated, old)) : undefined;
  let ledger = store.ledger(server, file.rel);
  const decision = await decide(ledger, facts, oldFacts);
  const pending = decision.kind === "grow"
    ? facts.size - decision.from
    : facts.size + (decision.kind === "rotated" ? oldFacts!.size - decision.restFrom : 0);
  if (pending > 0 && budget.lines <= 0) return { ...result, stopped: true };
  if (Math.min(pending, budget.perFile) > budget.left) return { ...result, deferred: true };
  // One file's share: the rest of the old file first (on rotation), then the new one.
  let share = budget.perFile;
  const add = async (target: FileLedger, source: Deno.FsFile, from: number, final: boolean) => {
    const read = await readInto(store, target, app, name, source, from, final, now, result, share, budget);
    share -= read;
    budget.left -= read;
    result.bytes += read;
  };
  if (decision.kind === "grow") {
    await add(ledger!, handle, decision.from, false);
  } else {
    if (decision.kind === "rotated") await add(ledger!, old!, decision.restFrom, true);
    // The ledger stays on the rotated file when the lines ran out in it (next cycle reads its rest),
    // or when none are left for the new one.
    if (result.stopped || (facts.size > 0 && budget.lines <= 0)) return { ...result, stopped: true };
    const gap = decision.kind === "new" ? undefined : decision.gap;
    const line = { offset: -1, ts: now, text: `[fleet] gap possible: ${name} ${gap}` };
    ledger = store.newGeneration(
      server,
      file.rel,
      ino,
      await hashHex(facts.head),
      facts.head.length,
      gap ? { app, file: name, line } : undefined,
      now,
    );
    if (gap) result.gaps++;
    await add(ledger, handle, 0, false);
  }
  return result;
}

/** Whether the byte before `offset` in `source` is a newline (so a line starts at `offset`). */
async function newlineBefore(source: Deno.FsFile, offset: number): Promise<boolean> {
  const byte = new Uint8Array(1);
  await source.seek(offset - 1, Deno.SeekMode.Start);
  return (await source.read(byte)) === 1 && byte[0] === 10;
}

/**
 * Reads `source` from `from` to its size now and ingests its complete lines under `ledger` (a
 * trailing line without a newline too when `final`: a rotated file does not grow any more),
 * moving the ledger. More than `limit` new bytes: the first ones are skipped, a `gap` line says
 * how many, and reading starts at the first line within the newest `limit` bytes (their first
 * byte when a line starts there). Once the budget's `lines` are spent, it stops after the chunk
 * where they ran out (`stopped`), the ledger at a line's start. Returns the bytes read (to the
 * ledger).
 */
async function readInto(
  store: FleetStore,
  ledger: FileLedger,
  app: string,
  name: string,
  source: Deno.FsFile,
  from: number,
  final: boolean,
  now: number,
  result: FileResult,
  limit: number,
  budget: Budget,
): Promise<number> {
  const decoder = new TextDecoder();
  const isDeployLog = name === "deploy.log";
  const isCronLog = name === "cron.log";
  const isMetricsLog = name === "metrics.log";
  const facts = await factsOf(source, ledger.ino);
  if (facts.head.length > ledger.headLen) {
    ledger.headHash = await hashHex(facts.head);
    ledger.headLen = facts.head.length;
  }
  const end = facts.size;
  let resync = false;
  if (end - from > Math.max(0, limit)) {
    const skipped = end - from - Math.max(0, limit);
    const text = `[fleet] gap: ${size(skipped)} of ${name} skipped, over the ${size(limit)} a log file may bring ` +
      "in one cycle";
    store.ingestLines(ledger, app, name, [{ offset: from, ts: now, text }], "gap");
    result.gaps++;
    result.skipped += skipped;
    from += skipped;
    // the first line may have begun before (unless a newline ends the byte before): it starts after the next newline
    resync = from > 0 && !(await newlineBefore(source, from));
  }
  await source.seek(from, Deno.SeekMode.Start);
  // What is read and not yet ingested is pending[0, length), starting at file offset `pendingAt`. A
  // line longer than a chunk grows the buffer by doubling and is scanned once, from where the last
  // scan ended: each byte is copied and scanned a bounded number of times, however long its line.
  let pending = new Uint8Array(CHUNK);
  let length = 0;
  let pendingAt = from;
  let position = from;
  while (true) {
    if (length + CHUNK > pending.length) {
      const bigger = new Uint8Array(Math.max(pending.length * 2, length + CHUNK));
      bigger.set(pending.subarray(0, length));
      pending = bigger;
    }
    const scanned = length; // no newline before it: it is the rest of a line
    const n = position < end
      ? await source.read(pending.subarray(length, length + Math.min(CHUNK, end - position)))
      : null;
    if (n !== null) {
      position += n;
      length += n;
    }
    const eof = n === null;
    const data = pending.subarray(0, length);
    const lines: LogLine[] = [];
    let start = 0;
    if (resync) {
      const nl = data.indexOf(10, scanned);
      if (nl < 0 && !eof && data.length <= MAX_LINE) continue;
      start = nl < 0 ? data.length : nl + 1;
      resync = false;
    }
    let read = 0; // lines, blank ones too: each costs a scan and a decode
    for (let nl = data.indexOf(10, Math.max(start, scanned)); nl >= 0; nl = data.indexOf(10, start)) {
      pushLine(lines, decoder, data.subarray(start, nl), pendingAt + start, now);
      start = nl + 1;
      read++;
    }
    if ((eof && final && start < data.length) || data.length - start > MAX_LINE) {
      pushLine(lines, decoder, data.subarray(start), pendingAt + start, now);
      start = data.length;
      read++;
    }
    if (start === 0 && !eof) continue; // the middle of a long line: nothing to store yet
    ledger.offset = pendingAt + start;
    if (isDeployLog) {
      const rows = lines.flatMap((line) => deploymentOf(line, now) ?? []);
      result.deployments += store.ingestDeployments(ledger, app, rows);
    } else if (isCronLog) {
      const runs = lines.flatMap((line) => cronRunOf(line, now) ?? []);
      const { added, forgotten } = store.ingestCronLines(ledger, app, name, lines, runs);
      result.lines += added;
      if (forgotten) result.cronForgotten = (result.cronForgotten ?? 0) + forgotten;
    } else if (isMetricsLog) {
      // stored again when the lines are read again, they count once; the ledger moves in the same transaction
      storeRequestMinutes(store, ledger.server, app, requestMinutes(lines, now), ledger);
    } else {
      result.lines += store.ingestLines(ledger, app, name, lines);
    }
    // The rest of a line, to the front (it began in this chunk: at most a chunk is moved).
    pending.copyWithin(0, start, length);
    length -= start;
    pendingAt = ledger.offset;
    budget.lines -= read;
    if (eof) return end - from;
    if (budget.lines <= 0) {
      result.stopped = true;
      return ledger.offset - from;
    }
  }
}

function pushLine(lines: LogLine[], decoder: TextDecoder, bytes: Uint8Array, offset: number, now: number): void {
  // U+FFFE and U+FFFF mark search hits (./log_queries.ts): a line never holds them.
  let text = decoder.decode(bytes).replace(/\r$/, "").replace(/[\uFFFE\uFFFF]/g, "\uFFFD");
  if (!text.trim()) return;
  text = capText(text, FIELD.line)!;
  lines.push({ offset, text, ts: lineTime(text, now) ?? now });
}

/** The request minutes of metrics.log lines (the proxy's, see ./metric_store.ts); other lines are skipped. */
function requestMinutes(lines: LogLine[], now: number): RequestMinute[] {
  return lines.map((line) => requestMinuteOf(line, now)).filter((m): m is RequestMinute => m !== undefined);
}

/** A time a server wrote, as ISO in UTC when it is one, plausible at `now` (./server_time.ts's zonedTime); else null. */
function serverTime(value: unknown, now: number): string | null {
  const ms = zonedTime(value, now);
  return ms === undefined ? null : new Date(ms).toISOString();
}

/** deploy.log events that end a deploy or a rollback. */
const OUTCOMES = new Set(["success", "failed", "rolled_back", "cancelled", "refused", "rollback_failed"]);

/**
 * A deploy outcome from one JSON line of deploy.log, or undefined for other events. Its `time` is
 * taken when it is a time (./server_time.ts: ISO 8601 with its zone, from 2000 to a day past `now`),
 * as ISO in UTC; else `now`, when it was pulled: alerts and links carry it, so it is never the
 * server's text (a Slack mention, a date Discord refuses).
 */
export function deploymentOf(line: LogLine, now: number): DeploymentRow | undefined {
  const event = jsonObjectOf(line.text);
  if (!event || !OUTCOMES.has(event.event as string)) return undefined;
  const text = (key: string, max: number = FIELD.short) => capText(event[key], max) ?? undefined;
  const message = text("message", FIELD.message);
  const step = event.ok === false && message?.includes(": ") ? message.split(": ")[0] : undefined;
  return {
    offset: line.offset,
    at: serverTime(event.time, now) ?? new Date(now).toISOString(),
    outcome: event.event as string,
    release: text("release"),
    commit: text("commit"),
    duration: typeof event.duration === "number" ? event.duration : undefined,
    step: step && /^[a-zA-Z]+$/.test(step) ? step : undefined,
    message,
  };
}

/**
 * A cron run from one line of cron.log (../cron/log.ts's CronRun: `{job, release, start, end,
 * exitCode, durationMs, outcome, reason, pid}`), or undefined for a line that is not one (not
 * JSON, no string `job` and `outcome`). Hostile input: every field is type-checked and cut to the
 * field limits (./limits.ts); a wrong type becomes null. Its `start` and `end` are checked like a
 * deploy's `time` (see {@link deploymentOf}; ./server_time.ts: ISO 8601 with its zone, from 2000 to
 * a day past `now`, the time of the pull) and kept as ISO in UTC; a time that is not one is dropped
 * (null: not known), not taken as the pull's time like a deploy's, which must have one: a run
 * claimed to have started when it was pulled would be a made-up time on the dashboard.
 */
export function cronRunOf(line: LogLine, now: number): CronRunRow | undefined {
  const r = jsonObjectOf(line.text);
  if (!r) return undefined;
  const job = capText(r.job, FIELD.short);
  const outcome = capText(r.outcome, FIELD.short);
  if (!job || !outcome) return undefined;
  const duration = r.durationMs;
  return {
    offset: line.offset,
    job,
    release: capText(r.release, FIELD.short),
    start: serverTime(r.start, now),
    end: serverTime(r.end, now),
    exitCode: Number.isSafeInteger(r.exitCode) ? r.exitCode as number : null,
    durationMs: typeof duration === "number" && Number.isFinite(duration) && duration >= 0
      ? Math.round(Math.min(duration, Number.MAX_SAFE_INTEGER))
      : null,
    outcome,
    reason: capText(r.reason, FIELD.message),
  };
}

/**
 * Stores a server's certificates from its pulled `.tls/certificates.json` (`path`; undefined when
 * the server has none: its certificates are forgotten). A file that is refused (too big, not JSON,
 * not a certificate state file) changes nothing: undefined is returned, else how many were stored.
 */
export async function ingestCertificates(
  store: FleetStore,
  server: string,
  path: string | undefined,
  at: number,
): Promise<number | undefined> {
  const certificates = path === undefined ? new Map() : await readCertificatesFile(path);
  if (!certificates) return undefined;
  store.replaceCertificates(server, certificates, at);
  return certificates.size;
}
