/**
 * Certificate state: the reader of the proxy's `.tls/certificates.json` on hostile input (wrong
 * types, huge strings, unknown keys, control characters, a huge file, a FIFO), the conditions
 * (valid, expiring, expired, error, pending), the issuer label, and the fleet's path from a
 * server's file (LocalSource) through ingestion into SQLite.
 */
import { join } from "node:path";
import { databaseAt } from "../helpers/fleet_store.ts";
import { assert, assertEquals } from "../helpers/assert.ts";
import {
  certificateAtRisk,
  certificateCondition,
  certificatesPath,
  issuerLabel,
  MAX_APPS,
  MAX_CERTIFICATES_BYTES,
  MAX_ERROR,
  MAX_ISSUER,
  parseCertificates,
  readCertificates,
  readCertificatesFile,
} from "../../src/proxy/cert_state.ts";
import { ingestCertificates } from "../../src/fleet/ingest.ts";
import { fleetOverview } from "../../src/fleet/queries.ts";
import { LocalSource } from "../../src/fleet/source.ts";
import { FleetStore } from "../../src/fleet/store.ts";
import { MIGRATIONS } from "../../src/fleet/migrations.ts";

const DAY = 86_400_000;
const NOW = Date.parse("2026-12-01T00:00:00Z");

/** A certificates.json as the proxy writes it. */
const GOOD = {
  updatedAt: "2026-12-01T00:00:00Z",
  certificates: {
    shop: {
      names: ["a.test", "www.a.test"],
      source: "acme",
      issuer: "C=US, O=Let's Encrypt, CN=R11",
      notBefore: "2026-12-01T00:00:00Z",
      notAfter: "2027-03-01T00:00:00Z",
      lastError: null,
      lastErrorAt: null,
      nextAttemptAt: null,
    },
  },
};

Deno.test("parseCertificates: the proxy's file, times normalized", () => {
  assertEquals([...parseCertificates(JSON.stringify(GOOD))!], [["shop", {
    names: ["a.test", "www.a.test"],
    source: "acme",
    issuer: "C=US, O=Let's Encrypt, CN=R11",
    notBefore: "2026-12-01T00:00:00.000Z",
    notAfter: "2027-03-01T00:00:00.000Z",
    lastError: null,
    lastErrorAt: null,
    nextAttemptAt: null,
  }]]);
});

Deno.test("parseCertificates: hostile JSON: wrong types, bad names, unknown keys, control characters, huge strings", () => {
  const huge = "x".repeat(500_000); // a file under the size limit, a string far over the length limit
  const parsed = parseCertificates(JSON.stringify({
    extra: { anything: true },
    certificates: {
      "../etc": { names: ["evil.test"] }, // not an app name
      "Upper": { names: ["evil.test"] },
      list: [1, 2],
      text: "not an object",
      web: {
        names: [
          "A.Test",
          "a.test",
          "*.wild.test",
          "bad name",
          "x/../y",
          42,
          null,
          "é.test",
          "a".repeat(300),
          "-a.test",
        ],
        source: "magic",
        issuer: ["CN=array"],
        notBefore: 1700000000000,
        notAfter: "tomorrow",
        lastError: `line one\n\u001b[31mred\u001b[0m\u202eevil\ttab${huge}`,
        lastErrorAt: "2026-13-45T99:99:99Z",
        nextAttemptAt: { at: "2027-01-01T00:00:00Z" },
        privateKey: "-----BEGIN PRIVATE KEY-----",
      },
      empty: {},
    },
  }))!;
  assertEquals([...parsed.keys()], ["web", "empty"]);
  const web = parsed.get("web")!;
  assertEquals(web.names, ["a.test", "*.wild.test"]);
  assertEquals([web.source, web.issuer, web.notBefore, web.notAfter, web.lastErrorAt, web.nextAttemptAt], [
    null,
    null,
    null,
    null,
    null,
    null,
  ]);
  assertEquals(web.lastError!.length, MAX_ERROR);
  assert(web.lastError!.startsWith("line one [31mred [0m evil tabxxx"), web.lastError!.slice(0, 40));
  assert(web.lastError!.endsWith("…"));
  assert(!("privateKey" in web), "unknown keys are not carried");
  assertEquals(parsed.get("empty"), {
    names: [],
    source: null,
    issuer: null,
    notBefore: null,
    notAfter: null,
    lastError: null,
    lastErrorAt: null,
    nextAttemptAt: null,
  });
  // An issuer cut; node's line-separated DN kept as commas.
  const issuers = parseCertificates(JSON.stringify({
    certificates: { a: { issuer: "O=".padEnd(10_000, "o") }, b: { issuer: "C=US\nO=Let's Encrypt\nCN=R11" } },
  }))!;
  assertEquals(issuers.get("a")!.issuer!.length, MAX_ISSUER);
  assertEquals(issuers.get("b")!.issuer, "C=US, O=Let's Encrypt, CN=R11");
  // Many apps: the first MAX_APPS.
  const many = Object.fromEntries(Array.from({ length: MAX_APPS + 5 }, (_, i) => [`app-${i}`, {}]));
  assertEquals(parseCertificates(JSON.stringify({ certificates: many }))!.size, MAX_APPS);
});

Deno.test("parseCertificates: not a certificate state file is refused whole", () => {
  for (const text of ["", "{", "null", "[]", '"text"', "42", "{}", '{"certificates":[]}', '{"certificates":"x"}']) {
    assertEquals(parseCertificates(text), undefined, text);
  }
});

Deno.test("readCertificatesFile: absent, too big, a FIFO, a directory: refused without throwing or blocking", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dp-certs-" });
  try {
    assertEquals(await readCertificates(dir), new Map(), "no file: no certificates");
    const path = certificatesPath(dir);
    assertEquals(path, join(dir, ".tls", "certificates.json"));
    await Deno.mkdir(join(dir, ".tls"));
    await Deno.writeTextFile(path, JSON.stringify(GOOD));
    assertEquals([...(await readCertificates(dir)).keys()], ["shop"]);
    // Valid JSON, but over the limit: refused.
    await Deno.writeTextFile(path, JSON.stringify({ ...GOOD, pad: "x".repeat(MAX_CERTIFICATES_BYTES) }));
    assertEquals(await readCertificatesFile(path), undefined);
    assertEquals(await readCertificates(dir), new Map());
    await Deno.remove(path);
    await Deno.mkdir(path);
    assertEquals(await readCertificatesFile(path), undefined, "a directory");
    await Deno.remove(path);
    const mkfifo = await new Deno.Command("mkfifo", { args: [path] }).output();
    assert(mkfifo.success);
    assertEquals(await readCertificatesFile(path), undefined, "a FIFO is not opened (that would block)");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("certificateCondition/certificateAtRisk: valid, expiring under 14 days, expired, error, pending", () => {
  const at = (days: number) => new Date(NOW + days * DAY).toISOString();
  const check = (notAfter: string | null, lastError: string | null) => {
    const { state, daysLeft } = certificateCondition({ notAfter, lastError }, NOW);
    return [state, daysLeft, certificateAtRisk({ notAfter, lastError }, NOW)];
  };
  assertEquals(check(at(88), null), ["valid", 88, false]);
  assertEquals(check(at(14), null), ["valid", 14, false]);
  assertEquals(check(at(13.9), null), ["expiring", 13, true]);
  assertEquals(check(at(0.5), "rate limited"), ["expiring", 0, true]);
  assertEquals(check(at(-2), null), ["expired", -2, true]);
  assertEquals(check(at(40), "rate limited"), ["error", 40, false], "a failed renewal with weeks left");
  assertEquals(check(null, "DNS problem: NXDOMAIN"), ["error", null, true], "no certificate and it failed");
  assertEquals(check(null, null), ["pending", null, false]);
});

Deno.test("issuerLabel: O and CN of a DN, else the text", () => {
  assertEquals(issuerLabel("C=US, O=Let's Encrypt, CN=R11"), "Let's Encrypt R11");
  assertEquals(issuerLabel("/C=US/O=Let's Encrypt/CN=E6"), "Let's Encrypt E6");
  assertEquals(issuerLabel("CN=Pebble Intermediate CA 6ae1b1"), "Pebble Intermediate CA 6ae1b1");
  assertEquals(issuerLabel("O=Example, Inc., CN=Example CA"), "Example, Inc. Example CA");
  assertEquals(issuerLabel("some issuer"), "some issuer");
  assertEquals(issuerLabel(null), null);
});

Deno.test("fleet: a server's certificates.json through LocalSource and ingestion; gone → forgotten, broken → kept", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dp-fleet-certs-" });
  const store = await FleetStore.open(join(dir, "fleet.db"));
  try {
    const root = join(dir, "server");
    const deployments = join(root, "opt", "deployments");
    await Deno.mkdir(join(deployments, "shop"), { recursive: true });
    await Deno.writeTextFile(join(deployments, "shop", "status.json"), '{"name":"shop","healthy":true}');
    const source = new LocalSource(root);
    assertEquals((await source.pull()).certificates, undefined);
    await Deno.mkdir(join(deployments, ".tls"));
    await Deno.writeTextFile(certificatesPath(deployments), JSON.stringify(GOOD));
    const pulled = await source.pull();
    assertEquals([...pulled.statuses.keys()], ["shop"], ".tls is no app");
    assertEquals(pulled.certificates, certificatesPath(deployments));

    store.recordContact("s1", "local", { at: NOW, ok: true, durationMs: 1, bytes: 0 });
    store.upsertApp("s1", "shop", { healthy: true }, NOW);
    const view = { now: NOW, intervalMs: 30_000, holding: false, gapMs: 0 };
    const certificate = () => fleetOverview(store, view).servers[0].apps[0].certificate;
    assertEquals(await ingestCertificates(store, "s1", pulled.certificates, NOW), 1);
    assertEquals(certificate()?.names, ["a.test", "www.a.test"]);
    assertEquals([certificate()?.state, certificate()?.daysLeft, certificate()?.atRisk], ["valid", 90, false]);

    await Deno.writeTextFile(certificatesPath(deployments), "{ half-writ");
    assertEquals(await ingestCertificates(store, "s1", pulled.certificates, NOW), undefined);
    assertEquals(certificate()?.names, ["a.test", "www.a.test"], "a refused file changes nothing");

    assertEquals(await ingestCertificates(store, "s1", undefined, NOW), 0);
    assertEquals(certificate(), null, "no file on the server: no certificates");
    store.keepServers([]);
    assertEquals((store.sql("SELECT COUNT(*) AS n FROM certificates").get() as { n: number }).n, 0);
  } finally {
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("FleetStore: a version 1 database gains the certificates table, its data kept", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dp-fleet-migrate-" });
  const path = join(dir, "fleet.db");
  try {
    const old = databaseAt(path, 1);
    old.prepare("INSERT INTO apps (server, app, healthy, fetched_at) VALUES ('s1', 'shop', 1, ?)").run(NOW);
    old.close();
    const store = await FleetStore.open(path);
    try {
      assertEquals(store.version, MIGRATIONS.length);
      store.replaceCertificates("s1", new Map([["shop", parseCertificates(JSON.stringify(GOOD))!.get("shop")!]]), NOW);
      assertEquals((store.sql("SELECT COUNT(*) AS n FROM apps").get() as { n: number }).n, 1);
    } finally {
      store.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
