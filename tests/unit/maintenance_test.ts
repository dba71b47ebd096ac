/**
 * Maintenance mode without sockets: the command line's checks (exact messages), maintenance.json's
 * validation, the allow list (IPv4, IPv6, CIDR, IPv4-mapped), the pages, and the handler's answers
 * (503 with Retry-After, the allowed client through, trusted proxies' X-Forwarded-For, WebSockets).
 */
import { join } from "node:path";
import { assert, assertEquals } from "../helpers/assert.ts";
import { parseMaintenanceArgs } from "../../src/commands/maintenance.ts";
import { DeployParadigmError, UsageError } from "../../src/errors.ts";
import { type Conn, createHandler, type Entry, type HandlerDeps, HSTS } from "../../src/proxy/handler.ts";
import {
  builtInPage,
  checkAllowEntry,
  clearMaintenance,
  describeMaintenance,
  everyoneOf,
  isAllowed,
  loadMaintenance,
  type Maintenance,
  MAINTENANCE_FILE,
  maintenanceChange,
  maintenanceResponse,
  type MaintenanceState,
  MAX_PAGE_BYTES,
  parseMaintenance,
  readMaintenance,
  writeMaintenance,
} from "../../src/proxy/maintenance.ts";
import type { Route } from "../../src/proxy/routes.ts";
import { RouteTable } from "../../src/proxy/table.ts";
import type { AppStatus } from "../../src/deploy/status.ts";
import { statusLines } from "../../src/status_view.ts";
import { FleetStore } from "../../src/fleet/store.ts";
import { fleetOverview } from "../../src/fleet/queries.ts";
import { maintenanceText } from "../../dashboard/format.js";

/** The error `fn` rejects with, which must be a `type`. */
async function assertRejects<E extends Error>(
  fn: () => Promise<unknown>,
  type: new (...args: never[]) => E,
  includes?: string,
): Promise<E> {
  try {
    await fn();
  } catch (error) {
    assert(error instanceof type, `expected a ${type.name}, got ${error}`);
    if (includes) assert(error.message.includes(includes), error.message);
    return error;
  }
  throw new Error(`expected a ${type.name}, nothing was thrown`);
}

/** The error `fn` throws, which must be a `type`. */
function assertThrows<E extends Error>(fn: () => unknown, type: new (...args: never[]) => E): E {
  try {
    fn();
  } catch (error) {
    assert(error instanceof type, `expected a ${type.name}, got ${error}`);
    return error;
  }
  throw new Error(`expected a ${type.name}, nothing was thrown`);
}

const STATE: MaintenanceState = {
  since: "2026-12-03T15:00:00.000Z",
  message: "Back at 16:00",
  allow: ["10.0.0.0/8"],
  retryAfter: 60,
};

async function usage(args: string[], opts: Record<string, string | string[]> = {}): Promise<string> {
  const error = await assertRejects(() => parseMaintenanceArgs(args, opts), UsageError);
  return error.message;
}

/** The hint of the usage error `maintenance` gives for `args` and `opts`. */
async function hint(args: string[], opts: Record<string, string | string[]> = {}): Promise<string | undefined> {
  return (await assertRejects(() => parseMaintenanceArgs(args, opts), UsageError)).suggestion;
}

Deno.test("maintenance args: bad input gets exact messages (exit 2)", async () => {
  assertEquals(await usage(["Web", "on"]), '"Web" is not a valid app name');
  assertEquals(await usage(["web", "onn"]), 'maintenance takes "on" or "off" after the app, got "onn"');
  assertEquals(
    await usage(["web", "on"], { allow: ["300.1.1.1"] }),
    '--allow "300.1.1.1" must be an IP address or a CIDR range such as 10.0.0.0/8 or fd00::/8',
  );
  assertEquals(
    await usage(["web", "on"], { allow: ["10.0.0.0/8,10.0.0.1/8"] }),
    '--allow "10.0.0.1/8" has bits set past its /8 prefix: write "10.0.0.0/8"',
  );
  assertEquals(
    await usage(["web", "on"], { allow: ["fd00::/129"] }),
    '--allow "fd00::/129" has a prefix length that is not a whole number from 0 to 128',
  );
  assertEquals(
    await usage(["web", "on"], { allow: ["example.com"] }),
    '--allow "example.com" must be an IP address or a CIDR range such as 10.0.0.0/8 or fd00::/8',
  );
  assertEquals(await usage(["web", "on"], { allow: ["10.0.0.1,"] }), "--allow has an empty entry");
  for (const value of ["0", "abc", "-5", "1.5", "86401", "99999999"]) {
    assertEquals(
      await usage(["web", "on"], { "retry-after": value }),
      `--retry-after must be a whole number of seconds from 1 to 86400 (got "${value}")`,
    );
  }
  assertEquals(await usage(["web", "on"], { message: "  " }), "--message is empty");
  assertEquals(
    await usage(["web", "on"], { message: "a\nb" }),
    "--message has a control character (a line break, a tab…)",
  );
  assertEquals(await usage(["web", "on"], { message: "x".repeat(1001) }), "--message is longer than 1000 characters");
  // Each says how to write it.
  for (const message of ["", "  ", "a\nb", "x".repeat(1001)]) {
    assertEquals(
      await hint(["web", "on"], { message }),
      'give one line of text, at most 1000 characters, e.g. --message "Back at 16:00"; without --message the ' +
        "built-in page says the site is down for maintenance",
    );
  }
  for (const value of ["0", "1m", " 6 0"]) {
    assertEquals(
      await hint(["web", "on"], { "retry-after": value }),
      "e.g. --retry-after 120 for two minutes; without it clients are told 60",
    );
  }
  assertEquals(
    await hint(["web", "on"], { allow: Array.from({ length: 101 }, (_, i) => `10.0.${i}.1`) }),
    "cover neighbouring addresses with a CIDR range, e.g. 10.0.0.0/24 for 10.0.0.0 to 10.0.0.255",
  );
  assertEquals(await usage(["web", "off"], { message: "x" }), '--message goes with "on", not "off"');
  assertEquals(
    await usage(["web", "off"], { allow: ["10.0.0.1"], "retry-after": "5" }),
    '--allow, --retry-after go with "on", not "off"',
  );
});

Deno.test("maintenance args: good input, --allow repeated and comma-separated (IPv4, IPv6, CIDR), duplicates once", async () => {
  assertEquals(await parseMaintenanceArgs(["web", "off"], {}), { app: "web", on: false });
  assertEquals(
    await parseMaintenanceArgs(["web", "on"], {
      message: "Back <soon>",
      allow: ["127.0.0.2", "10.0.0.0/8, 2001:db8::/32", "127.0.0.2", "::1"],
      "retry-after": "120",
    }),
    {
      app: "web",
      on: true,
      message: "Back <soon>",
      allow: ["127.0.0.2", "10.0.0.0/8", "2001:db8::/32", "::1"],
      retryAfter: 120,
    },
  );
  // Spaces around a value are dropped alike for --allow and --retry-after (a shell's quotes keep them).
  assertEquals(
    await parseMaintenanceArgs(["web", "on"], { allow: [" 10.0.0.1 ", "::1\t"], "retry-after": " 60 " }),
    { app: "web", on: true, message: undefined, allow: ["10.0.0.1", "::1"], retryAfter: 60 },
  );
  // Without --allow the list is not given (`on` again keeps the one it had).
  assertEquals(await parseMaintenanceArgs(["web", "on"], {}), {
    app: "web",
    on: true,
    message: undefined,
    retryAfter: undefined,
  });
});

Deno.test("allow entries: an IPv4-mapped IPv6 address or range is the IPv4 one clients are seen with", () => {
  const state = {
    since: "2026-01-01T00:00:00.000Z",
    allow: ["::ffff:127.0.0.1", "::ffff:10.0.0.0/104"],
    retryAfter: 1,
  };
  assert(isAllowed(state, "127.0.0.1"));
  assert(isAllowed(state, "10.9.8.7"));
  assert(!isAllowed(state, "127.0.0.2"));
  assertEquals(
    checkAllowEntry("::ffff:10.0.0.1/104"),
    '"::ffff:10.0.0.1/104" has bits set past its /104 prefix: write "10.0.0.0/8"',
  );
});

Deno.test("maintenance.json: validated when read, every problem named", () => {
  assertEquals(parseMaintenance(STATE), STATE);
  assertEquals(parseMaintenance({ since: STATE.since, allow: [], retryAfter: 1 }), {
    since: STATE.since,
    allow: [],
    retryAfter: 1,
  });
  const cases: [unknown, string][] = [
    [[], "not a JSON object"],
    [null, "not a JSON object"],
    [{ ...STATE, extra: 1 }, 'unknown key "extra"'],
    [{ ...STATE, since: "yesterday" }, '"since" must be a time such as "2026-12-03T15:00:00Z" (got "yesterday")'],
    [{ ...STATE, message: 5 }, '"message" is not a string'],
    [{ ...STATE, message: "a\tb" }, '"message" has a control character (a line break, a tab…)'],
    [{ ...STATE, allow: "10.0.0.1" }, '"allow" must be a list of IP addresses or CIDR ranges (got string)'],
    [{ ...STATE, allow: [1] }, '"allow.0": 1 is not a string'],
    [
      { ...STATE, allow: ["::1", "10.0.0.256"] },
      '"allow.1": "10.0.0.256" must be an IP address or a CIDR range such as ' +
      "10.0.0.0/8 or fd00::/8",
    ],
    // Every problem at once, in one pass, each with its key path.
    [
      { since: "soon", allow: ["10.0.0.1", "nope", 7], retryAfter: 0, extra: true },
      '5 problems: unknown key "extra"; "since" must be a time such as "2026-12-03T15:00:00Z" (got "soon"); ' +
      '"allow.1": "nope" must be an IP address or a CIDR range such as 10.0.0.0/8 or fd00::/8; "allow.2": 7 is ' +
      'not a string; "retryAfter" must be a whole number of seconds from 1 to 86400 (got 0)',
    ],
    [{ ...STATE, allow: Array(101).fill("::1") }, '"allow" has more than 100 entries'],
    [{ ...STATE, retryAfter: 0 }, '"retryAfter" must be a whole number of seconds from 1 to 86400 (got 0)'],
    [{ ...STATE, retryAfter: "60" }, '"retryAfter" must be a whole number of seconds from 1 to 86400 (got "60")'],
    [
      { since: STATE.since, allow: [] },
      '"retryAfter" must be a whole number of seconds from 1 to 86400 (got undefined)',
    ],
  ];
  for (const [value, why] of cases) {
    const error = assertThrows(() => parseMaintenance(value, "/x/maintenance.json"), DeployParadigmError);
    assertEquals(error.message, `/x/maintenance.json: ${why}`);
    assert(error.suggestion?.includes("deploy-paradigm maintenance <app> on|off"));
  }
});

Deno.test("allow entries of /0: whom they let through, said per family (a range matches its own family only)", () => {
  assertEquals(everyoneOf(["10.0.0.0/8", "::1"]), undefined);
  assertEquals(
    everyoneOf(["::/0"]),
    "::/0 lets every IPv6 client through (IPv4 clients still get 503: add 0.0.0.0/0 for them)",
  );
  assertEquals(
    everyoneOf(["0.0.0.0/0"]),
    "0.0.0.0/0 lets every IPv4 client through (IPv6 clients still get 503: add ::/0 for them)",
  );
  assertEquals(
    everyoneOf(["::ffff:0.0.0.0/96"]),
    "::ffff:0.0.0.0/96 lets every IPv4 client through (IPv6 clients still get 503: add ::/0 for them)",
  );
  assertEquals(everyoneOf(["::/0", "127.0.0.2", "0.0.0.0/0"]), "::/0, 0.0.0.0/0 let every client through");
  // As the proxy matches them.
  const state = (allow: string[]) => ({ since: STATE.since, allow, retryAfter: 1 });
  assert(!isAllowed(state(["::/0"]), "198.51.100.1") && isAllowed(state(["::/0"]), "2001:db8::1"));
  assert(isAllowed(state(["::ffff:0.0.0.0/96"]), "198.51.100.1"));
});

Deno.test("maintenance.json: written atomically, read back, removed; a bad file throws with its path", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dp-maint-" });
  try {
    assertEquals(await readMaintenance(dir), undefined);
    await writeMaintenance(dir, STATE);
    assertEquals(await readMaintenance(dir), STATE);
    assertEquals([...Deno.readDirSync(dir)].map((e) => e.name), [MAINTENANCE_FILE], "no temp file left");
    await assertRejects(() => writeMaintenance(dir, { ...STATE, retryAfter: -1 }), DeployParadigmError);
    assertEquals(await readMaintenance(dir), STATE, "a bad state is never written");
    assertEquals(await clearMaintenance(dir), true);
    assertEquals(await clearMaintenance(dir), false);
    await Deno.writeTextFile(join(dir, MAINTENANCE_FILE), "{not json");
    const error = await assertRejects(() => readMaintenance(dir), DeployParadigmError);
    assert(error.message.startsWith(`${join(dir, MAINTENANCE_FILE)}: not valid JSON`), error.message);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("allow list: addresses and ranges, IPv4 and IPv6, IPv4-mapped peers as IPv4", () => {
  const state = { ...STATE, allow: ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "::1"] };
  for (const ip of ["10.1.2.3", "192.0.2.7", "::ffff:10.9.9.9", "2001:db8:1::5", "::1", "[::1]"]) {
    assert(isAllowed(state, ip), `${ip} is allowed`);
  }
  for (const ip of ["11.0.0.1", "192.0.2.8", "2001:db9::1", "::2", "127.0.0.1", "not-an-ip"]) {
    assert(!isAllowed(state, ip), `${ip} is not allowed`);
  }
  assert(!isAllowed({ ...STATE, allow: [] }, "10.0.0.1"));
  assert(isAllowed({ ...STATE, allow: ["0.0.0.0/0"] }, "198.51.100.1"));
});

Deno.test("pages: the built-in one escapes the message; the answer is 503 with Retry-After and no-store", async () => {
  const page = builtInPage(`<script>alert("x")</script> & 'co'`);
  assert(page.includes("&#60;script&#62;alert(&#34;x&#34;)&#60;/script&#62; &#38; &#39;co&#39;"), page);
  assert(!page.includes("<script>"));
  assert(builtInPage(undefined).includes("down for maintenance"));
  const bytes = new TextEncoder().encode(page);
  const response = maintenanceResponse({ ...STATE, retryAfter: 42, page: bytes, custom: false });
  assertEquals(response.status, 503);
  assertEquals(response.headers.get("retry-after"), "42");
  assertEquals(response.headers.get("cache-control"), "no-store");
  assertEquals(response.headers.get("content-type"), "text/html; charset=utf-8");
  assertEquals(response.headers.get("content-length"), String(bytes.length));
  assertEquals(await response.text(), page);
});

Deno.test("loadMaintenance: the release's maintenance.html (capped, never outside the release), else the built-in page", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dp-maint-" });
  const trust = () => Promise.resolve();
  try {
    assertEquals(await loadMaintenance(dir, trust), {});
    await writeMaintenance(dir, STATE);
    let loaded = await loadMaintenance(dir, trust);
    assertEquals(loaded.maintenance?.custom, false, "no release: built-in");
    assert(new TextDecoder().decode(loaded.maintenance!.page).includes("Back at 16:00"));
    const release = join(dir, "releases", "r1");
    await Deno.mkdir(release, { recursive: true });
    await Deno.symlink(release, join(dir, "current"));
    await Deno.writeTextFile(join(release, "maintenance.html"), "<h1>ours</h1>");
    loaded = await loadMaintenance(dir, trust);
    assertEquals(loaded.maintenance?.custom, true);
    assertEquals(new TextDecoder().decode(loaded.maintenance!.page), "<h1>ours</h1>");
    assertEquals(loaded.problem, undefined);
    await Deno.writeTextFile(join(release, "maintenance.html"), "x".repeat(MAX_PAGE_BYTES + 1));
    loaded = await loadMaintenance(dir, trust);
    assertEquals(loaded.maintenance?.custom, false);
    assertEquals(
      loaded.problem,
      "maintenance.html is over the 256 KiB a maintenance page may have: the built-in page is served",
    );
    await Deno.remove(join(release, "maintenance.html"));
    await Deno.symlink(join(dir, MAINTENANCE_FILE), join(release, "maintenance.html"));
    loaded = await loadMaintenance(dir, trust);
    assertEquals(loaded.maintenance?.custom, false);
    assertEquals(loaded.problem, "maintenance.html leads outside the release: the built-in page is served");
    await Deno.remove(join(release, "maintenance.html"));
    const fifo = await new Deno.Command("mkfifo", { args: [join(release, "maintenance.html")] }).output();
    assertEquals(fifo.code, 0);
    loaded = await loadMaintenance(dir, trust);
    assertEquals([loaded.maintenance?.custom, loaded.problem], [
      false,
      "maintenance.html is not a file: the built-in page is served",
    ]);
    const untrusted = () => Promise.reject(new DeployParadigmError("not trusted"));
    await assertRejects(() => loadMaintenance(dir, untrusted), DeployParadigmError, "not trusted");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("maintenance in words: status lines and the proxy's log", () => {
  assertEquals(
    describeMaintenance(STATE),
    "maintenance since 2026-12-03 15:00 UTC, Retry-After 60 s, allowed: 10.0.0.0/8",
  );
  assertEquals(describeMaintenance(undefined), "no maintenance");
  assertEquals(describeMaintenance({ error: "bad" }), "maintenance.json is not valid: bad");
  const on: Maintenance = { ...STATE, page: new Uint8Array(1), custom: true };
  assertEquals(
    maintenanceChange(undefined, on),
    "in maintenance since 2026-12-03 15:00 UTC, Retry-After 60 s, allowed: 10.0.0.0/8; requests get 503 with " +
      "the release's maintenance.html",
  );
  assertEquals(maintenanceChange(on, on), undefined);
  assertEquals(maintenanceChange(on, undefined), "maintenance off: requests go to the app again");
  assertEquals(
    maintenanceChange(on, { ...on, allow: [] }),
    "maintenance changed: since 2026-12-03 15:00 UTC, Retry-After 60 s; requests get 503 with the release's " +
      "maintenance.html",
  );
});

// ---------------------------------------------------------------------------------------------
// The handler (HTTP/2 and the proxy's own answers; HTTP/1.1 shares `decide`)

function harness(maintenance: Maintenance | undefined, extra: Partial<HandlerDeps> = {}, hsts = false) {
  const routes: Route[] = [
    { app: "shop", port: 8000, domains: ["shop.test"], hsts, target: { port: 41001 }, maintenance },
    { app: "legacy", port: 8080, domains: [], hsts: false, target: { port: 41003 }, maintenance },
  ];
  const table = new RouteTable(routes);
  const measured: [string, string, number][] = [];
  const deps: HandlerDeps = {
    table: () => table,
    forward: (route) => Promise.resolve(new Response(`from ${route.app}`)),
    websocket: () => Promise.resolve(new Response("ws")),
    serveStatic: () => Promise.resolve(new Response("static")),
    challenge: (token) => token === "tok" ? "tok.key" : undefined,
    measure: (app, slot) => (status) => void measured.push([app, slot, status]),
    log: () => {},
    ...extra,
  };
  return { handler: createHandler(deps), measured };
}

function conn(entry: Entry, ip: string, trusted: string[] = []): Conn {
  const scheme = entry.kind === "https" ? "https" : "http";
  return { entry, client: { ip, scheme, isTrusted: (address) => trusted.includes(address) } };
}

const ON: Maintenance = {
  ...STATE,
  allow: ["192.0.2.7", "2001:db8::/32"],
  retryAfter: 30,
  page: new TextEncoder().encode("<p>down</p>"),
  custom: true,
};

Deno.test("handler: an app in maintenance answers 503 (both entries, WebSockets too); allowed clients reach it", async () => {
  const { handler, measured } = harness(ON);
  for (
    const [url, entry] of [["https://shop.test/a", { kind: "https" }], ["http://x:8080/", { kind: "port", port: 8080 }]]
  ) {
    const response = await handler(new Request(url as string), conn(entry as Entry, "203.0.113.9"));
    assertEquals(response.status, 503);
    assertEquals(response.headers.get("retry-after"), "30");
    assertEquals(await response.text(), "<p>down</p>");
  }
  const ws = await handler(
    new Request("https://shop.test/ws", { headers: { upgrade: "websocket", connection: "upgrade" } }),
    conn({ kind: "https" }, "203.0.113.9"),
  );
  assertEquals(ws.status, 503);
  await ws.body?.cancel();
  assertEquals(measured.map(([app, slot, status]) => `${app}/${slot}/${status}`), [
    "shop/maintenance/503",
    "legacy/maintenance/503",
    "shop/maintenance/503",
  ]);
  for (const ip of ["192.0.2.7", "2001:db8::9", "::ffff:192.0.2.7"]) {
    const response = await handler(new Request("https://shop.test/"), conn({ kind: "https" }, ip));
    assertEquals(await response.text(), "from shop", ip);
  }
  // ACME challenges are still answered.
  const challenge = await handler(
    new Request("http://shop.test/.well-known/acme-challenge/tok"),
    conn({ kind: "http" }, "203.0.113.9"),
  );
  assertEquals(await challenge.text(), "tok.key");
  // Out of maintenance: everyone reaches the app.
  const off = harness(undefined);
  assertEquals(
    await (await off.handler(new Request("https://shop.test/"), conn({ kind: "https" }, "203.0.113.9"))).text(),
    "from shop",
  );
});

Deno.test("handler: the maintenance page of an app with hsts carries it over HTTPS (its visitors keep it), never over HTTP", async () => {
  const { handler } = harness(ON, {}, true);
  const https = await handler(new Request("https://shop.test/a"), conn({ kind: "https" }, "203.0.113.9"));
  assertEquals([https.status, https.headers.get("strict-transport-security")], [503, HSTS]);
  await https.body?.cancel();
  const plain = await handler(new Request("http://x:8080/"), conn({ kind: "port", port: 8080 }, "203.0.113.9"));
  assertEquals([plain.status, plain.headers.get("strict-transport-security")], [503, null]);
  await plain.body?.cancel();
});

Deno.test("handler: behind a trusted proxy the allowed client is the one X-Forwarded-For names; never from an untrusted peer", async () => {
  const { handler } = harness(ON);
  const request = () => new Request("https://shop.test/", { headers: { "x-forwarded-for": "192.0.2.7" } });
  assertEquals((await handler(request(), conn({ kind: "https" }, "10.0.0.5", ["10.0.0.5"]))).status, 200);
  const spoofed = await handler(request(), conn({ kind: "https" }, "203.0.113.9"));
  assertEquals(spoofed.status, 503, "an untrusted peer cannot claim an allowed address");
  await spoofed.body?.cancel();
  // The peer itself allowed, but it is a trusted proxy for someone else: that someone decides.
  const through = await handler(
    new Request("https://shop.test/", { headers: { "x-forwarded-for": "203.0.113.9" } }),
    conn({ kind: "https" }, "192.0.2.7", ["192.0.2.7"]),
  );
  assertEquals(through.status, 503);
  await through.body?.cancel();
});

// ---------------------------------------------------------------------------------------------
// The fleet: status.json's `maintenance` stored (hostile input, cut to the limits) and shown

Deno.test("fleet: an app's maintenance from its status.json is stored, cut, and shown; off: absent", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dp-maint-fleet-" });
  const store = await FleetStore.open(join(dir, "fleet.db"));
  try {
    const at = Date.parse("2026-12-03T15:00:00Z");
    store.recordContact("s1", "h1", { at, ok: true, durationMs: 1, bytes: 1 });
    const allow = [...Array.from({ length: 25 }, (_, i) => `10.0.0.${i}`), 7];
    store.upsertApp("s1", "web", {
      status: "running",
      healthy: true,
      maintenance: { since: STATE.since, message: "m".repeat(5000), allow, retryAfter: 30, extra: "x" },
    }, at);
    store.upsertApp("s1", "api", { status: "running", healthy: true, maintenance: "on" }, at);
    store.upsertApp("s1", "bad", { status: "running", healthy: true, maintenance: { error: "not valid JSON" } }, at);
    const view = fleetOverview(store, { now: at, intervalMs: 60_000, holding: false, gapMs: 0 });
    const apps = Object.fromEntries(view.servers[0].apps.map((app) => [app.app, app]));
    assertEquals(apps.api.maintenance, undefined, "not an object: not in maintenance");
    assertEquals(apps.bad.maintenance, {
      since: null,
      message: null,
      allow: [],
      retryAfter: null,
      error: "not valid JSON",
    });
    const web = apps.web.maintenance!;
    assertEquals([web.since, web.retryAfter, web.message!.length, web.message!.endsWith("…[cut]")], [
      STATE.since,
      30,
      2000,
      true,
    ]);
    assertEquals(web.allow.length, 21);
    assertEquals(web.allow.at(-1), "and 5 more");
    store.upsertApp("s1", "web", { status: "running", healthy: true }, at);
    const off = fleetOverview(store, { now: at, intervalMs: 60_000, holding: false, gapMs: 0 });
    assertEquals(off.servers[0].apps.find((app) => app.app === "web")!.maintenance, undefined);
  } finally {
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("dashboard: the maintenance badge's tooltip", () => {
  assertEquals(
    maintenanceText({ since: STATE.since, message: "Back <soon>", allow: ["10.0.0.0/8"], retryAfter: 60 }),
    "In maintenance: the proxy answers 503 · since 2026-12-03 15:00 UTC · Retry-After 60 s · allowed: 10.0.0.0/8 · " +
      "message: Back <soon>",
  );
  assertEquals(
    maintenanceText({ since: null, message: null, allow: [], retryAfter: null }),
    "In maintenance: the proxy answers 503 · no address allowed",
  );
  assertEquals(maintenanceText({ error: "bad" }), "maintenance.json is not valid: bad");
});

Deno.test("status: a line per app in maintenance (red with color), a bad maintenance.json said; terminal-safe", () => {
  const base: AppStatus = {
    name: "shop",
    status: "running",
    healthy: true,
    version: "1a2b3c4",
    type: "node",
    manager: "pm2",
    port: 3000,
    lastDeploy: { outcome: "success", release: "r", commit: "c", version: "1a2b3c4", at: "x", duration: 1 },
  };
  const statuses: AppStatus[] = [
    { ...base, maintenance: { ...STATE, message: "Back \x1b[31msoon" } },
    { ...base, name: "api", maintenance: { error: "/x/maintenance.json: not a JSON object" } },
    { ...base, name: "blog" },
  ];
  const lines = statusLines(statuses, new Map(), { now: Date.now(), color: false });
  assertEquals(lines.slice(-3), [
    "",
    "shop  IN MAINTENANCE since 2026-12-03 15:00 UTC, Retry-After 60 s, allowed: 10.0.0.0/8 — message: Back \\x1b[31msoon",
    "api   maintenance.json is not valid: /x/maintenance.json: not a JSON object",
  ]);
  assertEquals(statusLines([base], new Map(), { now: Date.now(), color: false }).length, 2, "none: the table only");
  const colored = statusLines(statuses, new Map(), { now: Date.now(), color: true });
  assert(colored.at(-1)!.startsWith("\x1b[31m"));
});
