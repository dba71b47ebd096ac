/**
 * The dashboard's pure formatting and routing (dashboard/format.js, dashboard/routes.js),
 * imported directly as the browser loads them.
 */
import { assert, assertEquals } from "../helpers/assert.ts";
import {
  absolute,
  ago,
  bytes,
  byTime,
  certificateLabel,
  certificateText,
  clock,
  duration,
  fromLocalInput,
  localInput,
  outcomeLabel,
  stampText,
  visible,
  withoutStep,
} from "../../dashboard/format.js";
import { forTerminal } from "../../src/terminal.ts";
import { httpUrl, parseHash, route, serverHref } from "../../dashboard/routes.js";

const NOW = Date.parse("2026-11-29T12:00:00Z");
const SECOND = 1000;

Deno.test("dashboard format: ago rounds to s, min, h and d, both ways; under 10 s is just now", () => {
  assertEquals(ago(NOW - 9 * SECOND, NOW), "just now");
  assertEquals(ago(NOW + 9 * SECOND, NOW), "just now");
  assertEquals(ago(NOW - 45 * SECOND, NOW), "45 s ago");
  assertEquals(ago(NOW - 59.6 * SECOND, NOW), "1 min ago");
  assertEquals(ago(NOW + 3 * 60 * SECOND, NOW), "in 3 min");
  assertEquals(ago(NOW - 2 * 3600 * SECOND, NOW), "2 h ago");
  assertEquals(ago(NOW - 3 * 86_400 * SECOND, NOW), "3 d ago");
});

Deno.test("dashboard format: durations and sizes, a dash when not a number", () => {
  assertEquals(duration(undefined), "—");
  assertEquals(duration(850), "850 ms");
  assertEquals(duration(3200), "3.2 s");
  assertEquals(duration(125_000), "2 min 5 s");
  assertEquals(bytes(null), "—");
  assertEquals(bytes(512), "512 B");
  assertEquals(bytes(1536), "1.5 KB");
  assertEquals(bytes(2 * 1024 * 1024), "2.0 MB");
});

Deno.test("dashboard format: datetime-local values round-trip in local time, minutes kept", () => {
  const value = localInput("2026-11-29T07:05:42.123Z");
  assert(/^\d{4}-\d\d-\d\dT\d\d:\d\d$/.test(value), value);
  assertEquals(fromLocalInput(value), "2026-11-29T07:05:00.000Z");
  assertEquals(localInput("not a time"), "");
  assertEquals(fromLocalInput(""), "");
});

Deno.test("dashboard format: a log line's stamp is the clock time today, the date and time before", () => {
  const noon = new Date(2026, 10, 29, 12, 0, 0).getTime();
  assertEquals(stampText(noon - 3600 * SECOND, noon), clock().format(noon - 3600 * SECOND));
  assertEquals(stampText(noon - 86_400 * SECOND, noon), absolute().format(noon - 86_400 * SECOND));
});

Deno.test("dashboard format: deploy messages lose their leading step; outcomes have labels", () => {
  assertEquals(withoutStep("health", "health: /health answered 500"), "/health answered 500");
  assertEquals(withoutStep("health", "build: failed"), "build: failed");
  assertEquals(withoutStep(undefined, "health: x"), "health: x");
  assertEquals(withoutStep("health", undefined), undefined);
  assertEquals(outcomeLabel("rolled_back"), ["rolled back", "warn"]);
  assertEquals(outcomeLabel("exploded"), ["exploded", "neutral"]);
});

Deno.test("dashboard format: byTime sorts newest first, stable, without a time last, and copies", () => {
  const list = [
    { id: 1, at: "2026-11-29T10:00:00Z" },
    { id: 2, at: "garbage" },
    { id: 3, at: "2026-11-29T11:00:00Z" },
    { id: 4, at: "2026-11-29T10:00:00Z" },
  ];
  assertEquals(byTime(list, (item) => item.at).map((item) => item.id), [3, 1, 4, 2]);
  assertEquals(list.map((item) => item.id), [1, 2, 3, 4]);
});

Deno.test("dashboard format: certificates as a line and as a badge label", () => {
  assertEquals(
    certificateText({
      names: ["a.test", "b.test"],
      issuer: "R11",
      notAfter: "2026-12-08T00:00:00Z",
      lastError: "rateLimited",
    }),
    "a.test, b.test · R11 · valid until 2026-12-08 · last error: rateLimited",
  );
  assertEquals(certificateText({ names: "not a list" }), "no certificate yet");
  assertEquals(certificateLabel({ state: "valid", daysLeft: 88 }), "88 d");
  assertEquals(certificateLabel({ state: "error", daysLeft: 20 }), "20 d !");
  assertEquals(certificateLabel({ state: "error" }), "failed");
  assertEquals(certificateLabel({ state: "pending" }), "pending");
  assertEquals(certificateLabel({ state: "expired", daysLeft: -2 }), "expired");
});

Deno.test("dashboard routes: links leave empty values out and encode names", () => {
  assertEquals(
    route("/search", { q: "a b", server: "", app: undefined, file: "error.log" }),
    "#/search?q=a+b&file=error.log",
  );
  assertEquals(route("/deployments"), "#/deployments");
  assertEquals(serverHref("web 1/é"), "#/server/web%201%2F%C3%A9");
  assertEquals(serverHref("web", { app: "api", since: "" }), "#/server/web?app=api");
});

Deno.test("dashboard routes: a hash names its view, key and parameters; anything else is the overview", () => {
  const pick = (hash: string) => {
    const { view, nav, key, server, params } = parseHash(hash);
    return { view, nav, key, server, params: Object.fromEntries(params) };
  };
  const overview = { view: "overview", nav: "overview", key: "overview", server: undefined, params: {} };
  assertEquals(pick(""), overview);
  assertEquals(pick("#/"), overview);
  assertEquals(pick("#/nowhere?x=1"), { ...overview, params: { x: "1" } });
  assertEquals(pick(serverHref("web 1/é", { app: "api" })), {
    view: "server",
    nav: "overview",
    key: "server:web 1/é",
    server: "web 1/é",
    params: { app: "api" },
  });
  assertEquals(pick("#/server/%E0%A4").server, "%E0%A4", "a bad escape is kept as it is");
  assertEquals(pick("#/server/a/b").view, "overview");
  assertEquals(pick("#/search?q=GET+%2Fapi&range=1h"), {
    view: "search",
    nav: "search",
    key: "search",
    server: undefined,
    params: { q: "GET /api", range: "1h" },
  });
  assertEquals(pick("#/deployments?server=alpha").params, { server: "alpha" });
});

Deno.test("dashboard routes: only http(s) URLs are linked and framed", () => {
  assertEquals(httpUrl("http://10.0.0.1:19999"), "http://10.0.0.1:19999/");
  assertEquals(httpUrl("https://n.example/x"), "https://n.example/x");
  assertEquals(httpUrl("javascript:alert(1)"), null);
  assertEquals(httpUrl("not a url"), null);
  assertEquals(httpUrl(undefined), null);
});

Deno.test("visible: bidi and control characters escaped as the CLI prints them (every UTF-16 unit, the same rule)", () => {
  assertEquals(visible("\u202e3.2.1v"), "\\u202e3.2.1v");
  assertEquals(
    visible("a\u2066b\u2069 \u200e\u200f \u202a\u202b\u202c\u202d \x1b[31m\x00\x7f\x9b tab\tnew\nline é 日本 😀"),
    "a\\u2066b\\u2069 \\u200e\\u200f \\u202a\\u202b\\u202c\\u202d \\x1b[31m\\x00\\x7f\\x9b tab\tnew\nline é 日本 😀",
  );
  const every = Array.from({ length: 0x10000 }, (_, code) => String.fromCharCode(code)).join("");
  assertEquals(visible(every), forTerminal(every));
});
