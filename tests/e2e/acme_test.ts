/**
 * Certificates for real: {@link CertificateManager} against Debian's pebble (a real ACME server) with
 * pebble-challtestsrv as its DNS, HTTP-01 answered by a Deno.serve responder that calls `challengeResponse`, and
 * every result checked with node:crypto and `openssl verify` against the root pebble issues under.
 */
import { createPrivateKey, X509Certificate } from "node:crypto";
import { join, resolve } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { startPebble } from "../helpers/pebble.ts";
import { run } from "../helpers/server.ts";
import { backoffDelay, CertificateManager, type CertificateManagerOptions, renewalDue } from "../../src/proxy/acme.ts";
import {
  certificateCovers,
  type CertificatesState,
  certificatesStatePath,
  loadCertificateFiles,
  nameMatches,
  pemBlocks,
  tlsDir,
} from "../../src/proxy/certs.ts";
import { DeployParadigmError } from "../../src/errors.ts";
import { selfSigned } from "../helpers/certs.ts";
import { until } from "../helpers/time.ts";

const REPO = resolve(import.meta.dirname!, "../..");
type Apps = Map<string, { domains: string[]; tls?: { certificate: string; key: string } }>;

interface Harness {
  root: string;
  pebble: Awaited<ReturnType<typeof startPebble>>;
  /** A manager over `root` trusting pebble; closed at teardown. */
  manager(extra?: Partial<CertificateManagerOptions>): CertificateManager;
  /** Lines every manager logged. */
  logs: string[];
  /** The distinct HTTP-01 tokens the responder answered (pebble asks more than once per challenge). */
  validated: Set<string>;
}

/**
 * A server root, pebble, and the HTTP-01 responder pebble validates against (it asks the newest manager); all torn
 * down after `fn`, even on failure. Failures print pebble's log.
 */
async function withPebble(fn: (h: Harness) => Promise<void>, validitySeconds?: number): Promise<void> {
  const managers: CertificateManager[] = [];
  const responder = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    const token = new URL(req.url).pathname.match(/^\/\.well-known\/acme-challenge\/([\w-]+)$/)?.[1];
    const answer = token === undefined ? undefined : managers.at(-1)?.challengeResponse(token);
    if (answer === undefined) return new Response("not found", { status: 404 });
    harness.validated.add(token!);
    return new Response(answer);
  });
  const root = await Deno.makeTempDir({ prefix: "dp-acme-" });
  let pebble: Harness["pebble"] | undefined;
  const harness = { validated: new Set<string>() } as Harness;
  try {
    pebble = await startPebble({ httpPort: responder.addr.port, validitySeconds });
    const logs: string[] = [];
    Object.assign(harness, {
      root,
      pebble,
      logs,
      manager: (extra: Partial<CertificateManagerOptions> = {}) => {
        const manager = new CertificateManager({
          root,
          acme: { directory: pebble!.directory, caCertificate: pebble!.caCertificate, email: "ops@example.test" },
          log: (line) => logs.push(`${new Date().toISOString()} ${line}`),
          retry: { initialMs: 400, maxMs: 1_600 },
          ...extra,
        });
        managers.push(manager);
        return manager;
      },
    });
    await fn(harness);
  } catch (error) {
    console.error(`manager log:\n${harness.logs?.join("\n")}\npebble log (tail):\n${pebble?.logs().slice(-4000)}`);
    throw error;
  } finally {
    for (const manager of managers) await manager.close();
    await responder.shutdown();
    await pebble?.close();
    await Deno.remove(root, { recursive: true });
  }
}

/** Waits until every app in `apps` has a certificate served for each of its exact domains. */
function waitForCertificates(manager: CertificateManager, apps: Apps, ms = 15_000) {
  const names = [...apps.values()].flatMap((spec) => spec.domains).filter((name) => !name.startsWith("*."));
  return until(ms, `certificates for ${names.join(", ")}`, () => names.every((n) => manager.certificateFor(n)));
}

/** The leaf's facts, checked by node:crypto. */
function leaf(pem: string): X509Certificate {
  return new X509Certificate(pemBlocks(pem)[0]);
}

/** `openssl verify` of the leaf in `chainPem` against `rootFile`, with the rest of the chain as untrusted. */
async function opensslVerify(dir: string, chainPem: string, rootFile: string): Promise<string> {
  const blocks = pemBlocks(chainPem);
  const leafFile = join(dir, "leaf.pem");
  const chainFile = join(dir, "intermediates.pem");
  await Deno.writeTextFile(leafFile, blocks[0] + "\n");
  await Deno.writeTextFile(chainFile, blocks.slice(1).join("\n") + "\n");
  const ran = await run(["openssl", "verify", "-CAfile", rootFile, "-untrusted", chainFile, leafFile]);
  assertEquals(ran.code, 0, ran.output);
  return ran.output.trim();
}

const mode = async (path: string) => (await Deno.stat(path)).mode! & 0o777;

const TWO_APPS: Apps = new Map([
  ["alpha", { domains: ["alpha.test", "www.alpha.test"] }],
  ["beta", { domains: ["beta.test", "api.beta.test"] }],
]);

Deno.test("acme: two apps with two domains each get one certificate each, chained to pebble's root; 0600 keys in 0700 dirs", async () => {
  await withPebble(async (harness) => {
    const { root, pebble, manager: make } = harness;
    await Deno.mkdir(tlsDir(root), { recursive: true });
    await Deno.chmod(tlsDir(root), 0o777); // left too open by someone: tightened before any key is written
    const manager = make();
    let changes = 0;
    manager.onChange(() => changes++);
    const started = performance.now();
    manager.sync(TWO_APPS);
    manager.sync(TWO_APPS); // idempotent: no second order
    await waitForCertificates(manager, TWO_APPS);
    console.log(
      `  two certificates (4 names) in ${Math.round(performance.now() - started)} ms, acme-client load included`,
    );

    for (const [app, { domains }] of TWO_APPS) {
      for (const domain of domains) {
        const served = manager.certificateFor(domain.toUpperCase() + ".")!; // SNI is case-insensitive, a final dot ok
        const x509 = leaf(served.cert);
        assertEquals(x509.subjectAltName?.split(", ").sort(), domains.map((d) => `DNS:${d}`).sort());
        assert(x509.checkPrivateKey(createPrivateKey(served.key)), `${app}: key fits`);
        assert(pemBlocks(served.cert).length >= 2, "the full chain is served, not only the leaf");
        assert(manager.hasCertificate(domain));
      }
      const pem = await Deno.readTextFile(join(tlsDir(root), app, "cert.pem"));
      assertEquals(pem, manager.certificateFor(domains[0])!.cert);
      assertMatch(await opensslVerify(pebble.dir, pem, pebble.rootFile), /leaf\.pem: OK/);
      // The chain checked by node:crypto too: leaf ← intermediate ← root.
      const [x509, intermediate] = pemBlocks(pem).map((block) => new X509Certificate(block));
      assert(x509.verify(intermediate.publicKey) && intermediate.verify(new X509Certificate(pebble.root).publicKey));
    }
    assertEquals(manager.certificateFor("other.test"), undefined);
    assertEquals(manager.certificateFor("x.alpha.test"), undefined, "no wildcard was asked for");
    assert(!manager.hasCertificate("other.test"));
    assertEquals(manager.challengeResponse("anything"), undefined, "tokens are removed after the order");

    const tls = tlsDir(root);
    assertEquals(await mode(tls), 0o755, "readable: certificates.json is for status and the fleet");
    for (const app of TWO_APPS.keys()) {
      assertEquals(await mode(join(tls, app)), 0o700, `${app}/`);
      assertEquals(await mode(join(tls, app, "key.pem")), 0o600, `${app}/key.pem`);
      assertEquals(await mode(join(tls, app, "cert.pem")), 0o600, `${app}/cert.pem`);
    }
    assertEquals(await mode(join(tls, "account.key")), 0o600, "account.key");
    assertEquals(await mode(certificatesStatePath(root)), 0o644, "certificates.json");
    const leftovers = [...Deno.readDirSync(tls)].map((e) => e.name).filter((name) => name.includes(".tmp-"));
    assertEquals(leftovers, [], "no temp files left");

    const state = await until(5_000, "certificates.json with both apps", async () => {
      const text = await Deno.readTextFile(certificatesStatePath(root)).catch(() => "{}");
      const parsed = JSON.parse(text) as CertificatesState;
      return Object.keys(parsed.certificates ?? {}).length === 2 && parsed;
    });
    assertEquals(state, { ...manager.state(), updatedAt: state.updatedAt });
    assert(!/PRIVATE KEY/.test(JSON.stringify(state)), "no secrets in the state file");
    for (const [app, { domains }] of TWO_APPS) {
      const entry = state.certificates[app];
      const x509 = leaf(manager.certificateFor(domains[0])!.cert);
      assertEquals(entry, {
        names: [...domains].sort(),
        source: "acme",
        issuer: entry.issuer,
        notBefore: new Date(x509.validFrom).toISOString(),
        notAfter: new Date(x509.validTo).toISOString(),
        lastError: null,
        lastErrorAt: null,
        nextAttemptAt: null,
      });
      assertMatch(entry.issuer!, /^CN=Pebble Intermediate CA [0-9a-f]+$/);
    }
    assert(changes >= 1 && changes <= 2, `onChange fired per pass (${changes})`);

    assertEquals(harness.validated.size, 4, "one HTTP-01 challenge per name: one order per app, though sync ran twice");

    // A domain added later: a new certificate listing all three names, at once.
    const grown: Apps = new Map([...TWO_APPS, ["alpha", {
      domains: ["alpha.test", "www.alpha.test", "new.alpha.test"],
    }]]);
    const before = changes;
    manager.sync(grown);
    await waitForCertificates(manager, grown);
    assertEquals(
      leaf(manager.certificateFor("alpha.test")!.cert).subjectAltName,
      "DNS:alpha.test, DNS:new.alpha.test, DNS:www.alpha.test",
    );
    assertEquals(changes, before + 1);
  });
});

Deno.test("acme: a restart loads the certificates from disk without the ACME server; the account key is reused", async () => {
  await withPebble(async ({ root, pebble, manager: make, logs }) => {
    const first = make();
    first.sync(TWO_APPS);
    await waitForCertificates(first, TWO_APPS);
    const served = first.certificateFor("alpha.test")!.cert;
    const accountKey = await Deno.readTextFile(join(tlsDir(root), "account.key"));
    await first.close();

    await pebble.stopPebble(); // the second manager must not need it
    const second = make();
    let changed = 0;
    second.onChange(() => changed++);
    const started = performance.now();
    second.sync(TWO_APPS);
    await waitForCertificates(second, TWO_APPS, 5_000);
    console.log(`  loaded from disk in ${Math.round(performance.now() - started)} ms`);
    assertEquals(second.certificateFor("www.alpha.test")!.cert, served);
    assertEquals(changed, 1, "one change for the whole startup pass");
    assert(logs.some((line) => /alpha: loaded alpha\.test, www\.alpha\.test from disk/.test(line)), logs.join("\n"));
    assertEquals(second.state().certificates.alpha.lastError, null);
    assertEquals(await Deno.readTextFile(join(tlsDir(root), "account.key")), accountKey);
  });
});

Deno.test("acme: renewal, forced (renewNow) and by itself when a third of a short lifetime is left", async () => {
  // pebble issues 6 s certificates here (notAfter = notBefore + 5 s): due for renewal after about 3.3 s.
  await withPebble(async ({ manager: make }) => {
    const manager = make();
    let changes = 0;
    manager.onChange(() => changes++);
    const apps: Apps = new Map([["alpha", { domains: ["alpha.test", "www.alpha.test"] }]]);
    manager.sync(apps);
    await waitForCertificates(manager, apps);
    const first = manager.certificateFor("alpha.test")!.cert;
    const lifetime = Date.parse(leaf(first).validTo) - Date.parse(leaf(first).validFrom);
    assertEquals(lifetime, 5_000);

    const before = changes;
    const forcedAt = performance.now();
    await manager.renewNow("alpha");
    console.log(`  forced renewal in ${Math.round(performance.now() - forcedAt)} ms`);
    const forced = manager.certificateFor("alpha.test")!.cert;
    assert(forced !== first, "renewNow replaced the certificate");
    assert(leaf(forced).serialNumber !== leaf(first).serialNumber);
    assertEquals(changes, before + 1, "onChange fired for the renewal");

    const waitStarted = performance.now();
    const renewed = await until(8_000, "an automatic renewal", () => {
      const now = manager.certificateFor("alpha.test")!.cert;
      return now !== forced && now;
    });
    const due = Date.parse(leaf(forced).validTo) - lifetime / 3;
    console.log(
      `  automatic renewal ${Math.round(Date.now() - due)} ms after it was due (waited ${
        Math.round(performance.now() - waitStarted)
      } ms)`,
    );
    assert(Date.parse(leaf(renewed).validFrom) >= Date.parse(leaf(forced).validFrom));
    const state = manager.state().certificates.alpha;
    assertEquals([state.lastError, state.nextAttemptAt], [null, null]);
    assertEquals(state.notAfter, new Date(leaf(renewed).validTo).toISOString());
  }, 6);
});

Deno.test("acme: pebble stopped → renewal fails, the old certificate is still served, error and backoff recorded", async () => {
  await withPebble(async ({ root, pebble, manager: make }) => {
    const manager = make(); // retries 400 ms doubling to 1.6 s
    const apps: Apps = new Map([["alpha", { domains: ["alpha.test", "www.alpha.test"] }]]);
    manager.sync(apps);
    await waitForCertificates(manager, apps);
    const served = manager.certificateFor("alpha.test")!;
    await pebble.stopPebble();

    const failedAt = performance.now();
    const error = await manager.renewNow("alpha").then(() => undefined, (e) => e as Error);
    console.log(`  failed renewal reported in ${Math.round(performance.now() - failedAt)} ms`);
    assert(error instanceof DeployParadigmError, String(error));
    assertMatch(error.message, /^cannot reach the ACME directory https:\/\/127\.0\.0\.1:\d+\/dir: .*ECONNREFUSED/);
    assertEquals(manager.certificateFor("alpha.test"), served, "the old certificate is still served");
    assertEquals(manager.certificateFor("www.alpha.test"), served);
    assert(manager.hasCertificate("alpha.test"));

    const first = manager.state().certificates.alpha;
    assertMatch(first.lastError!, /^certificate for alpha\.test, www\.alpha\.test not issued: cannot reach/);
    assertEquals(Date.parse(first.nextAttemptAt!) - Date.parse(first.lastErrorAt!), 400, "first retry after 400 ms");
    assertEquals(first.notAfter, new Date(leaf(served.cert).validTo).toISOString(), "the state keeps the old one");
    const onDisk = await until(5_000, "the error in certificates.json", async () => {
      const state = JSON.parse(await Deno.readTextFile(certificatesStatePath(root))) as CertificatesState;
      return state.certificates.alpha.lastError === first.lastError && state;
    });
    assertEquals(onDisk.certificates.alpha.nextAttemptAt, first.nextAttemptAt);

    // The timer retries by itself, and the next delay doubles; the certificate stays.
    const second = await until(5_000, "an automatic retry", () => {
      const state = manager.state().certificates.alpha;
      return state.lastErrorAt !== first.lastErrorAt && state;
    });
    assertEquals(Date.parse(second.nextAttemptAt!) - Date.parse(second.lastErrorAt!), 800, "then after 800 ms");
    assertEquals(manager.certificateFor("alpha.test"), served);
  });
});

Deno.test("acme: a wildcard domain is recorded as needing DNS-01 and never ordered; exact names beside it are", async () => {
  await withPebble(async ({ root, pebble, manager: make }) => {
    const manager = make();
    manager.sync(new Map([["wild", { domains: ["*.wild.test"] }]]));
    const wild = await until(
      5_000,
      "the wildcard error",
      () => manager.state().certificates.wild.lastError ?? undefined,
    );
    assertMatch(wild, /^\*\.wild\.test: wildcard names need the DNS-01 challenge, which is not supported/);
    assertEquals(manager.state().certificates.wild.nextAttemptAt, null, "no retry: it cannot succeed");
    const refused = await manager.renewNow("wild").then(() => undefined, (e) => e as Error);
    assertMatch(String(refused), /DNS-01/);
    assertEquals(manager.certificateFor("a.wild.test"), undefined);
    assert(!(await Deno.stat(join(tlsDir(root), "account.key")).catch(() => false)), "ACME was never contacted");
    assert(!/order-plz|sign-me-up/.test(pebble.logs()), "no account, no order");

    const mixed: Apps = new Map([["mixed", { domains: ["mixed.test", "*.mixed.test"] }]]);
    manager.sync(mixed);
    await waitForCertificates(manager, mixed);
    const x509 = leaf(manager.certificateFor("mixed.test")!.cert);
    assertEquals(x509.subjectAltName, "DNS:mixed.test");
    assertEquals(manager.certificateFor("a.mixed.test"), undefined);
    assertMatch(manager.state().certificates.mixed.lastError!, /^\*\.mixed\.test: wildcard names need the DNS-01/);
    assertEquals(manager.state().certificates.wild, undefined, "apps left out of sync are forgotten");
  });
});

Deno.test("acme: bring-your-own certificate is served (wildcard too); a key that does not match is refused by file name", async () => {
  const root = await Deno.makeTempDir({ prefix: "dp-byo-" });
  const logs: string[] = [];
  const manager = new CertificateManager({ root, log: (line) => logs.push(line) }); // no acme: files only
  try {
    const own = await selfSigned(root, ["own.test", "*.own.test"], { file: "own", days: 30 });
    const other = await selfSigned(root, ["other.test"], { file: "other", days: 30 });
    const loaded = await loadCertificateFiles(own);
    assertEquals(loaded.info.names, ["own.test", "*.own.test"]);
    assertEquals(loaded.info.issuer, "CN=own.test");

    const mismatch = await loadCertificateFiles({ certificate: own.certificate, key: other.key }).catch((e) => e);
    assert(mismatch instanceof DeployParadigmError);
    assertEquals(
      mismatch.message,
      `${other.key}: this private key does not belong to the certificate ${own.certificate}`,
    );
    const garbage = join(root, "garbage.pem");
    await Deno.writeTextFile(garbage, "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n");
    const bad = await loadCertificateFiles({ certificate: garbage, key: own.key }).catch((e) => e);
    assertMatch(bad.message, new RegExp(`^${garbage}: not a valid certificate`));
    const missing = await loadCertificateFiles({ certificate: join(root, "nope.pem"), key: own.key }).catch((e) => e);
    assertMatch(missing.message, /nope\.pem: cannot read the certificate/);

    let changes = 0;
    manager.onChange(() => changes++);
    manager.sync(
      new Map([
        ["own", { domains: ["own.test", "*.own.test"], tls: own }],
        ["broken", { domains: ["broken.test"], tls: { certificate: other.certificate, key: own.key } }],
        ["partial", { domains: ["other.test", "more.test"], tls: other }],
        ["plain", { domains: ["plain.test"] }],
      ]),
    );
    await until(5_000, "the own certificate", () => manager.certificateFor("own.test"));
    assertEquals(manager.certificateFor("own.test")!.cert, await Deno.readTextFile(own.certificate));
    assertEquals(manager.certificateFor("deep.own.test")!.key, await Deno.readTextFile(own.key), "wildcard SNI");
    assertEquals(manager.certificateFor("a.b.own.test"), undefined, "a wildcard covers one label only");
    assertEquals(manager.certificateFor("broken.test"), undefined);
    assertEquals(changes, 1);
    const state = manager.state().certificates;
    assertEquals([state.own.source, state.own.lastError, state.own.names], ["file", null, ["own.test", "*.own.test"]]);
    assertEquals(state.broken.source, "file");
    assertEquals(
      state.broken.lastError,
      `${own.key}: this private key does not belong to the certificate ${other.certificate}`,
    );
    assertMatch(state.plain.lastError!, /automatic certificates are off \(no acme: in proxy\.yml\)/);
    assertEquals(state.partial.lastError, `${other.certificate} does not cover more.test`);
    assert(manager.certificateFor("other.test") && !manager.certificateFor("more.test"));

    // A clock past the end: the certificate is still handed out but no longer counts for the HTTPS redirect.
    assert(manager.hasCertificate("own.test"));
    const late = new CertificateManager({ root, log: () => {}, now: () => loaded.info.notAfter + 1 });
    late.sync(new Map([["own", { domains: ["own.test"], tls: own }]]));
    await until(5_000, "the own certificate (late clock)", () => late.certificateFor("own.test"));
    assert(!late.hasCertificate("own.test"));
    assertMatch(late.state().certificates.own.lastError!, /own\.pem expired on \d{4}-/);
    await late.close();
    assert(!(await Deno.stat(tlsDir(root) + "/own").catch(() => false)), "own files are not copied into .tls");
  } finally {
    await manager.close();
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("acme: pure rules: renewal at a third of the lifetime, backoff doubling to a cap, name matching", () => {
  const info = { notBefore: 0, notAfter: 90 };
  assertEquals([renewalDue(info, 59), renewalDue(info, 61)], [false, true]);
  assertEquals([1, 2, 3, 10, 100].map((n) => backoffDelay(n, 60_000, 6 * 3_600_000)), [
    60_000,
    120_000,
    240_000,
    6 * 3_600_000,
    6 * 3_600_000,
  ]);
  assert(nameMatches("*.a.test", "x.a.test") && !nameMatches("*.a.test", "a.test"));
  assert(!nameMatches("*.a.test", "y.x.a.test") && nameMatches("a.test", "a.test"));
  assert(certificateCovers(["*.a.test"], "*.a.test") && certificateCovers(["*.a.test"], "b.a.test"));
  assert(!certificateCovers(["b.a.test"], "*.a.test"));
});

/** Every import edge of `entry`'s module graph (static and dynamic), from `deno info --json`. */
async function importEdges(entry: string): Promise<{ from: string; to: string; dynamic: boolean }[]> {
  const ran = await run([Deno.execPath(), "info", "--json", join(REPO, entry)], { cwd: REPO });
  assertEquals(ran.code, 0, ran.stderr);
  const graph = JSON.parse(ran.stdout) as {
    modules: { specifier: string; dependencies?: { isDynamic?: boolean; code?: { specifier?: string } }[] }[];
  };
  return graph.modules.flatMap((module) =>
    (module.dependencies ?? []).filter((dependency) => dependency.code?.specifier).map((dependency) => ({
      from: module.specifier.replace(`file://${REPO}/`, ""),
      to: dependency.code!.specifier!,
      dynamic: dependency.isDynamic === true,
    }))
  );
}

Deno.test("acme: acme-client is only ever imported dynamically, by src/proxy/acme.ts (never on the deploy path)", async () => {
  const isAcme = (edge: { to: string }) => /acme-client|axios|node-forge/.test(edge.to);
  const own = (await importEdges("src/proxy/acme.ts")).filter(isAcme);
  assertEquals(own.map(({ from, dynamic }) => ({ from, dynamic })), [{ from: "src/proxy/acme.ts", dynamic: true }]);
  for (const entry of ["main.ts", "src/receive.ts", "src/deploy/execute.ts", "src/proxy/certs.ts"]) {
    const edges = (await importEdges(entry)).filter(isAcme);
    assert(
      edges.every((edge) => edge.from === "src/proxy/acme.ts" && edge.dynamic),
      `${entry}: ${JSON.stringify(edges)}`,
    );
  }
});
