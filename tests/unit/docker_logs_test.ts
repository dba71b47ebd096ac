/** The docker log follower's line filter: what a reconnect with `--since` writes again, and what not. */
import { assertEquals } from "../helpers/assert.ts";
import { LineFilter, timestampNanos } from "../../src/docker_logs.ts";

Deno.test("timestampNanos: RFC 3339 with nanoseconds, whole seconds (podman) or an offset", () => {
  assertEquals(timestampNanos("1970-01-01T00:00:01Z"), 1_000_000_000n);
  assertEquals(timestampNanos("1970-01-01T00:00:01.5Z"), 1_500_000_000n);
  assertEquals(timestampNanos("1970-01-01T00:00:01.000000007Z"), 1_000_000_007n);
  assertEquals(timestampNanos("1970-01-01T01:00:01+01:00"), 1_000_000_000n);
  assertEquals(timestampNanos("started"), undefined);
  assertEquals(timestampNanos("2026-13-99T00:00:00Z"), undefined);
});

Deno.test("LineFilter: a first connection writes every line and moves the cursor", () => {
  const cursor = { ts: "", n: 0 };
  const filter = new LineFilter(cursor);
  assertEquals(filter.accept("2026-11-29T07:00:00Z a"), "a");
  assertEquals(filter.accept("2026-11-29T07:00:00Z b"), "b");
  assertEquals(filter.accept("2026-11-29T07:00:01Z c"), "c");
  assertEquals(filter.accept("2026-11-29T07:00:01Z "), "");
  assertEquals(cursor, { ts: "2026-11-29T07:00:01Z", n: 2 });
  // The docker CLI's own complaints have no timestamp: they are not the container's lines.
  assertEquals(filter.accept("Error: No such container: web-blue"), undefined);
});

Deno.test("LineFilter: after a reconnect, older lines and the first n of the cursor's second are skipped", () => {
  const cursor = { ts: "2026-11-29T07:00:01Z", n: 2 };
  const filter = new LineFilter(cursor);
  assertEquals(filter.accept("2026-11-29T07:00:00Z a"), undefined);
  assertEquals(filter.accept("2026-11-29T07:00:01Z c"), undefined);
  assertEquals(filter.accept("2026-11-29T07:00:01Z d"), undefined);
  assertEquals(filter.accept("2026-11-29T07:00:01Z e"), "e", "a third line of that second is new");
  assertEquals(filter.accept("2026-11-29T07:00:02Z f"), "f");
  assertEquals(cursor, { ts: "2026-11-29T07:00:02Z", n: 1 });
});

Deno.test("LineFilter: nanosecond timestamps (Docker Engine) compare exactly", () => {
  const filter = new LineFilter({ ts: "2026-11-29T07:00:01.100000000Z", n: 1 });
  assertEquals(filter.accept("2026-11-29T07:00:01.100000000Z seen"), undefined);
  assertEquals(filter.accept("2026-11-29T07:00:01.1000001Z new"), "new");
});

Deno.test("LineFilter: a partial line's glued timestamp (podman) is removed; an app's own timestamps stay", () => {
  const filter = new LineFilter({ ts: "", n: 0 });
  assertEquals(
    filter.accept("2026-11-29T08:05:10Z nosuchapplet2026-11-29T08:05:10Z : applet not found"),
    "nosuchapplet: applet not found",
  );
  assertEquals(filter.accept("2026-11-29T08:05:11Z part1-2026-11-29T08:05:12Z part2"), "part1-part2");
  assertEquals(
    filter.accept("2026-11-29T08:05:12Z done at 2026-11-29T08:05:12Z ok; id=x2020-01-01T00:00:00Z y"),
    "done at 2026-11-29T08:05:12Z ok; id=x2020-01-01T00:00:00Z y",
  );
});
