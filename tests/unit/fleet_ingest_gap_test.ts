/**
 * Attacks the resync after a gap (src/fleet/ingest.ts readInto): when a file's new bytes are over
 * its share, the oldest are skipped and reading "resyncs" to the next newline, assuming the first
 * kept byte is mid-line. When the skip ended exactly at a line's start, that complete line was
 * dropped too; now it resyncs only when the byte before is not a newline (and still drops the
 * part of a line cut by the skip).
 */
import { join } from "node:path";
import { assertEquals } from "../helpers/assert.ts";
import { withStore } from "../helpers/fleet_store.ts";
import { ingestFile } from "../../src/fleet/ingest.ts";

Deno.test("ingest: a gap skip that ends at a line's start keeps that line; one mid-line drops the cut part", async () => {
  await withStore("dp-ingest-gap-", async (store, dir) => {
    /** The lines kept of a file `text` ingested with `perFile` bytes a cycle (one file per app). */
    const kept = async (app: string, text: string, perFile: number) => {
      const path = join(dir, `${app}.log`);
      await Deno.writeTextFile(path, text);
      const budget = { perFile, left: 1 << 30, lines: 1000 };
      await ingestFile(store, "s", { rel: `${app}/x.log`, path, ino: 1 }, undefined, Date.UTC(2026, 0, 1), budget);
      return (store.sql("SELECT text FROM lines WHERE kind = 'line' AND app = ? ORDER BY offset").all(app) as {
        text: string;
      }[]).map((r) => r.text);
    };
    // 15 bytes; the newest 5 are the whole line "cccc\n".
    assertEquals(await kept("a", "aaaa\nbbbb\ncccc\n", 5), ["cccc"]);
    // 18 bytes; the newest 6 begin mid-line ("cc\n"): that part is dropped.
    assertEquals(await kept("b", "aaaa\nbbbb\ncccc\ndd\n", 6), ["dd"]);
  });
});
