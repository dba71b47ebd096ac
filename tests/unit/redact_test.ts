/**
 * The secret matcher (src/deploy/redact.ts) on its own: random secrets embedded in every form a
 * build or hook may print them in (URL-encoded several ways, JSON-escaped, hex, base64 of both
 * alphabets at every alignment inside longer data) are found; whether a secret survived is checked
 * independently, by decoding what is left. And what counts as a secret in `.env` (dotenv.ts).
 */
import { Buffer } from "node:buffer";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { MIN_SECRET_LENGTH, REDACTED, Redactor } from "../../src/deploy/redact.ts";
import {
  readDeployDotenv,
  readDotenv,
  refuseShortSecrets,
  secretsOf,
  serializeDockerEnv,
  serializeDotenv,
  snapshotSecrets,
} from "../../src/deploy/dotenv.ts";
import { ConfigError } from "../../src/errors.ts";

/** A seeded generator (mulberry32): the same cases on every run. */
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Characters that the encodings treat differently: URL-reserved, JSON-escaped, multi-byte. */
const ALPHABET = [..."abcdefXYZ0123456789 +/=%&?\"\\'-_.~!*()<>\té漢😀"];

function secretOf(next: () => number): string {
  const length = MIN_SECRET_LENGTH + Math.floor(next() * 30);
  return Array.from({ length }, () => ALPHABET[Math.floor(next() * ALPHABET.length)]).join("");
}

function bytesOf(next: () => number, length: number): Buffer {
  return Buffer.from(Array.from({ length }, () => Math.floor(next() * 256)));
}

/** Every text form of `s` a program may print. */
function textForms(s: string): Record<string, string> {
  const json = JSON.stringify(s).slice(1, -1);
  return {
    plain: s,
    encodeURIComponent: encodeURIComponent(s),
    "form (URLSearchParams)": new URLSearchParams({ s }).toString().slice(2),
    "quote with / kept": encodeURIComponent(s).replaceAll("%2F", "/"),
    "lowercase percent": encodeURIComponent(s).replace(/%[0-9A-F]{2}/g, (m) => m.toLowerCase()),
    "every byte percent-encoded": [...Buffer.from(s)].map((b) => `%${b.toString(16).padStart(2, "0")}`).join(""),
    json,
    "json, ASCII only": json.replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`),
    "json, slashes escaped": json.replaceAll("/", "\\/"),
    hex: Buffer.from(s).toString("hex"),
    HEX: Buffer.from(s).toString("hex").toUpperCase(),
  };
}

/** Whether the bytes of `secret` (3 of them in a row, or more) can be read back from base64 runs in `text`. */
function recoverable(text: string, secret: Buffer): boolean {
  const pieces = new Set<string>();
  for (let i = 0; i + 3 <= secret.length; i++) pieces.add(secret.subarray(i, i + 3).toString("latin1"));
  for (const run of text.match(/[A-Za-z0-9+/_-]{4,}/g) ?? []) {
    const standard = run.replaceAll("-", "+").replaceAll("_", "/");
    for (let skip = 0; skip < 4; skip++) {
      const body = standard.slice(skip);
      const decoded = Buffer.from(body.slice(0, body.length - (body.length % 4)), "base64").toString("latin1");
      for (let i = 0; i + 3 <= decoded.length; i++) if (pieces.has(decoded.slice(i, i + 3))) return true;
    }
  }
  return false;
}

Deno.test("redaction: 300 random secrets in every text form come out as [redacted], nothing around them lost", () => {
  const next = random(14);
  for (let n = 0; n < 300; n++) {
    const secret = secretOf(next);
    const redactor = new Redactor();
    redactor.add([secret]);
    for (const [form, text] of Object.entries(textForms(secret))) {
      const cleaned = redactor.clean(`<<${text}>> and after`);
      assertEquals(cleaned, `<<${REDACTED}>> and after`, `${form} of ${JSON.stringify(secret)}: ${cleaned}`);
    }
  }
});

Deno.test("redaction: base64 and base64url, padded or not, at each of the 3 alignments inside longer data", () => {
  const next = random(6);
  const seen = new Set<string>();
  for (let n = 0; n < 300; n++) {
    const secret = secretOf(next);
    const bytes = Buffer.from(secret);
    const redactor = new Redactor();
    redactor.add([secret]);
    for (const before of [0, 1, 2, 3, 4, 5, 7]) {
      for (const after of [0, 1, 2, 3, 8]) {
        const data = Buffer.concat([bytesOf(next, before), bytes, bytesOf(next, after)]);
        for (const encoding of ["base64", "base64url"] as const) {
          const encoded = data.toString(encoding);
          const line = `token=${encoded} done`;
          assert(recoverable(line, bytes), "the check itself finds the secret before redaction");
          const cleaned = redactor.clean(line);
          assert(
            !recoverable(cleaned, bytes),
            `${encoding}, ${before} bytes before, ${after} after: ${JSON.stringify(secret)} survives in ${cleaned}`,
          );
          assertMatch(cleaned, /^token=[A-Za-z0-9+/_=-]*\[redacted\][A-Za-z0-9+/_=-]* done$/);
          seen.add(`${encoding} alignment ${before % 3}`);
        }
      }
    }
  }
  assertEquals(seen.size, 6);
});

Deno.test("redaction leaves other text alone: random text, random base64 and hex of other bytes", () => {
  const next = random(99);
  const redactor = new Redactor();
  const secrets = Array.from({ length: 20 }, () => secretOf(next));
  redactor.add(secrets);
  for (let n = 0; n < 2000; n++) {
    const noise = bytesOf(next, 1 + Math.floor(next() * 200));
    for (const text of [noise.toString("base64"), noise.toString("base64url"), noise.toString("hex")]) {
      assertEquals(redactor.clean(text), text);
    }
  }
  const ordinary = "npm WARN deprecated inflight@1.0.6: this module is not supported; added 120 packages in 3s";
  assertEquals(redactor.clean(ordinary), ordinary);
});

Deno.test("redaction: values under 6 characters are not matched; each line of a multi-line value is", () => {
  const redactor = new Redactor();
  redactor.add(["abc", "12345", "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0B\n-----END KEY-----"]);
  assertEquals(redactor.clean("abc 12345"), "abc 12345");
  assertEquals(redactor.clean("line: MIIEvQIBADANBgkqhkiG9w0B"), `line: ${REDACTED}`);
  assertEquals(
    redactor.clean(JSON.stringify({ key: "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0B\n-----END KEY-----" })),
    `{"key":"${REDACTED}"}`,
  );
  assertEquals(new Redactor().clean("nothing to redact"), "nothing to redact");
});

Deno.test("redaction: a secret inside another is redacted whole (longest first)", () => {
  const redactor = new Redactor();
  redactor.add(["secret-part", "the-secret-part-and-more"]);
  assertEquals(redactor.clean("a the-secret-part-and-more b secret-part"), `a ${REDACTED} b ${REDACTED}`);
});

Deno.test(".env: every non-empty value is a secret unless marked `# public`; short secrets are refused", () => {
  const text = [
    "# comment",
    "DATABASE_URL='postgres://u:pw@db/x'",
    "LOG_LEVEL=info # public",
    "WORKERS='4'   #public",
    "QUOTED='x # public'",
    "EMPTY=",
    "PIN=1234",
    "TOKEN=abc # a comment, not a mark",
  ].join("\n");
  const env = readDotenv(text, ".env.production");
  assertEquals([...env.public].sort(), ["LOG_LEVEL", "WORKERS"]);
  assertEquals(env.values.LOG_LEVEL, "info");
  assertEquals(env.values.QUOTED, "x # public");
  assertEquals(secretsOf(env.values, env.public), ["postgres://u:pw@db/x", "x # public", "1234", "abc"]);
  try {
    refuseShortSecrets(env, "/opt/deployments/web/.env.production");
    assert(false, "short secrets must be refused");
  } catch (e) {
    assert(e instanceof ConfigError);
    assertEquals(e.exitCode, 2);
    assertEquals(e.problems, [
      "/opt/deployments/web/.env.production:7:5: PIN is 4 characters long; a secret needs at least 6",
      "/opt/deployments/web/.env.production:8:7: TOKEN is 3 characters long; a secret needs at least 6",
    ]);
    assertMatch(e.message, /2 secrets are shorter than 6 characters/);
    assertMatch(e.suggestion!, /at least 6 characters long.*`PIN=… # public`/);
    assert(!e.message.includes("1234") && !e.suggestion!.includes("1234"), "the message shows no value");
  }
  refuseShortSecrets(readDotenv("A=123456\nB=1 # public\nC=\n", ".env"), ".env"); // nothing to refuse
});

Deno.test(".env of a deploy: bad lines and short secrets in the lines that parse are named at once", () => {
  const text = "GOOD=long-enough-secret\nbroken line\nPIN=1234\nQ='open\n";
  try {
    readDeployDotenv(text, ".env.production");
    assert(false, "refused");
  } catch (e) {
    assert(e instanceof ConfigError);
    assertEquals(e.problems, [
      ".env.production:2:1: expected KEY=value (KEY of letters, digits and _)",
      ".env.production:4:3: unterminated quote, or text after the closing quote",
      ".env.production:3:5: PIN is 4 characters long; a secret needs at least 6",
    ]);
    assertMatch(e.message, /^Cannot use \.env\.production:/);
    assertMatch(e.suggestion!, /`PIN=… # public`/);
  }
  // Bad lines alone, and short secrets alone, as before.
  assertEquals(
    throwsConfig(() => readDeployDotenv("x\n", ".env")).message,
    "Cannot read .env:\n  .env:1:1: " +
      "expected KEY=value (KEY of letters, digits and _)",
  );
  assertMatch(throwsConfig(() => readDeployDotenv("PIN=1\n", ".env")).message, /a secret is shorter than 6/);
  assertEquals(readDeployDotenv("A=123456\n", ".env").values, { A: "123456" });
});

function throwsConfig(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (e) {
    assert(e instanceof ConfigError, String(e));
    return e;
  }
  throw new Error("accepted");
}

Deno.test(".env snapshots keep the public marks, in our form and in docker's", () => {
  const values = { SECRET: "s3cret-value", LEVEL: "info" };
  const ours = serializeDotenv(values, "header", ["LEVEL"]);
  assertEquals(ours, "# header\n# public: LEVEL\nSECRET='s3cret-value'\nLEVEL='info'\n");
  assertEquals(snapshotSecrets(ours, "x", false), ["s3cret-value"]);
  const docker = serializeDockerEnv(values, "header", ["LEVEL"]);
  assertEquals(docker, "# header\n# public: LEVEL\nSECRET=s3cret-value\nLEVEL=info\n");
  assertEquals(snapshotSecrets(docker, "x", true), ["s3cret-value"]);
  assertEquals(serializeDotenv(values, "header"), "# header\nSECRET='s3cret-value'\nLEVEL='info'\n");
});
