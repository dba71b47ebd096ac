/**
 * canary.json without the proxy: what parseCanary accepts and refuses (each refusal names the
 * source and what to do), and the file's write, read and removal.
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { DeployParadigmError } from "../../src/errors.ts";
import {
  CANARY_FILE,
  type CanarySplit,
  parseCanary,
  readCanary,
  removeCanary,
  writeCanary,
} from "../../src/proxy/canary_file.ts";

const SPLIT: CanarySplit = { target: { port: 41002 }, slot: "green", percent: 25, since: "2026-12-03T15:00:00.000Z" };

/** The error parseCanary throws for `value`. */
function refusal(value: unknown): DeployParadigmError {
  try {
    parseCanary(value, "/srv/app/canary.json");
  } catch (error) {
    assert(error instanceof DeployParadigmError, `expected a DeployParadigmError, got ${error}`);
    return error;
  }
  throw new Error(`${JSON.stringify(value)} was accepted`);
}

Deno.test("parseCanary accepts a split: one port, several, a fractional percent", () => {
  assertEquals(parseCanary(SPLIT, CANARY_FILE), SPLIT);
  const many = { ...SPLIT, target: { ports: [41002, 41003] }, percent: 0.5 };
  assertEquals(parseCanary(many, CANARY_FILE), many);
  assertEquals(parseCanary({ ...SPLIT, percent: 99.99 }, CANARY_FILE).percent, 99.99);
});

Deno.test("parseCanary refuses what is not a split, naming the file and the key, with how to fix it", () => {
  const cases: [unknown, RegExp][] = [
    [null, /not a JSON object/],
    [[SPLIT], /not a JSON object/],
    [{ ...SPLIT, weight: 3 }, /unknown key "weight"/],
    [{ slot: "green", percent: 5, since: SPLIT.since }, /"target" is missing/],
    [{ ...SPLIT, target: { port: 0 } }, /"target": "port" must be a whole number from 1 to 65535 \(got 0\)/],
    [{ ...SPLIT, target: { port: 6000 } }, /"target": port 6000 is one fetch refuses/],
    [{ ...SPLIT, target: "41002" }, /"target": not a JSON object/],
    [{ ...SPLIT, slot: "Green; rm" }, /"slot" must be a slot name such as "green" \(got "Green; rm"\)/],
    [{ ...SPLIT, slot: 1 }, /"slot" must be a slot name/],
    [{ ...SPLIT, percent: 0 }, /"percent" must be a number more than 0 and less than 100 \(got 0\)/],
    [{ ...SPLIT, percent: 100 }, /"percent" must be .* \(got 100\)/],
    [{ ...SPLIT, percent: -5 }, /"percent" must be/],
    [{ ...SPLIT, percent: "25" }, /"percent" must be .* \(got "25"\)/],
    [{ ...SPLIT, percent: null }, /"percent" must be/],
    [{ ...SPLIT, since: "yesterday" }, /"since" must be a time such as .* \(got "yesterday"\)/],
    [{ ...SPLIT, since: undefined }, /"since" must be a time/],
  ];
  for (const [value, why] of cases) {
    const error = refusal(value);
    assertMatch(error.message, /^\/srv\/app\/canary\.json: /);
    assertMatch(error.message, why);
    assert(error.suggestion, `${error.message} says how to fix it`);
  }
  assertMatch(refusal({ ...SPLIT, percent: 0 }).suggestion!, /remove the file to send every request to the stable/);
});

Deno.test("writeCanary, readCanary, removeCanary: atomic file, validated both ways, no error when absent", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dp-canary-file-" });
  try {
    assertEquals(await readCanary(dir), undefined);
    await removeCanary(dir); // nothing to remove
    await writeCanary(dir, SPLIT);
    assertEquals(await readCanary(dir), SPLIT);
    assertEquals(JSON.parse(await Deno.readTextFile(join(dir, CANARY_FILE))), SPLIT);
    assertEquals([...Deno.readDirSync(dir)].map((entry) => entry.name), [CANARY_FILE]); // no temp file left
    // An invalid split is refused before anything is written.
    let refused: unknown;
    await writeCanary(dir, { ...SPLIT, percent: 150 }).catch((error) => refused = error);
    assert(refused instanceof DeployParadigmError);
    assertMatch(refused.message, new RegExp(`^${join(dir, CANARY_FILE)}: "percent"`));
    assertEquals((await readCanary(dir))?.percent, 25);
    // A file that is not JSON or not valid is an error naming it.
    await Deno.writeTextFile(join(dir, CANARY_FILE), "{");
    let broken: unknown;
    await readCanary(dir).catch((error) => broken = error);
    assert(broken instanceof DeployParadigmError);
    assertMatch(broken.message, /canary\.json: not valid JSON/);
    await removeCanary(dir);
    assertEquals(await readCanary(dir), undefined);
    await removeCanary(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
