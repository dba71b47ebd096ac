/**
 * How src/fleet/dashboard.ts serves the dashboard's ES modules: linked under content-hashed names
 * (leaf modules first, a change renames every importer), index.html loading the boot module and
 * preloading the others, every import resolving to a file it serves.
 */
import { assert, assertEquals, assertMatch, assertNotMatch } from "../helpers/assert.ts";
import { dashboardFiles, linkModules, serveDashboard } from "../../src/fleet/dashboard.ts";
import { throws } from "node:assert/strict";

const HASHED = /^\/([\w-]+)\.[0-9a-f]{8}\.js$/;

Deno.test("dashboard modules: specifiers become hashed names, and a leaf's change renames its importers", () => {
  const sources = {
    "app.js": 'import { a } from "./a.js";\nimport "./b.js";\na();\n',
    "a.js": "import { b } from './b.js';\nexport const a = () => b;\n",
    "b.js": "export const b = 1;\n",
  };
  const linked = linkModules(sources, "app.js");
  const path = (name: string) => linked.get(name)!.path;
  for (const name of ["app", "a", "b"]) assertMatch(path(`${name}.js`), new RegExp(`^/${name}\\.[0-9a-f]{8}\\.js$`));
  assertEquals(linked.get("app.js")!.body, `import { a } from ".${path("a.js")}";\nimport ".${path("b.js")}";\na();\n`);
  assertEquals(linked.get("a.js")!.body, `import { b } from '.${path("b.js")}';\nexport const a = () => b;\n`);
  assertEquals(linked.get("b.js")!.body, sources["b.js"]);

  const changed = linkModules({ ...sources, "b.js": "export const b = 2;\n" }, "app.js");
  for (const name of ["app.js", "a.js", "b.js"]) assert(changed.get(name)!.path !== path(name), `${name} renamed`);
  const same = linkModules({ ...sources, "app.js": sources["app.js"] + "// boot\n" }, "app.js");
  assertEquals(same.get("a.js")!.path, path("a.js"), "an importer's change leaves its imports' names");
  assert(same.get("app.js")!.path !== path("app.js"));
});

Deno.test("dashboard modules: only import and re-export statements are rewritten, never text that looks like one", () => {
  const sources = {
    "app.js": 'import {\n  a,\n} from "./a.js";\nexport const text = "from \\"./nope.js\\"";\n' +
      '// import x from "./nope.js"\nconst s = `\nfrom "./nope.js"`;\n',
    "a.js": 'export { b as a } from "./b.js";\nexport function from() {\n  return "./nope.js";\n}\n',
    "b.js": "export const b = 'import \"y\"';\n",
  };
  const linked = linkModules(sources, "app.js");
  const path = (name: string) => linked.get(name)!.path;
  assertEquals(
    linked.get("app.js")!.body,
    sources["app.js"].replace('"./a.js"', `".${path("a.js")}"`),
    "a multi-line import list is rewritten; a string, a comment and a template are not",
  );
  assertEquals(linked.get("a.js")!.body, sources["a.js"].replace('"./b.js"', `".${path("b.js")}"`));
  assertEquals(linked.get("b.js")!.body, sources["b.js"]);
});

Deno.test("dashboard modules: cycles, unknown or non-local imports and unused modules are refused", () => {
  throws(
    () => linkModules({ "app.js": 'import "./a.js";', "a.js": 'import "./app.js";' }, "app.js"),
    /import each other in a cycle: app\.js → a\.js → app\.js/,
  );
  throws(
    () => linkModules({ "app.js": 'import "./missing.js";' }, "app.js"),
    /dashboard\/app\.js imports "\.\/missing\.js", which is not a dashboard module/,
  );
  throws(
    () => linkModules({ "app.js": 'import x from "https://cdn.example/x.js";' }, "app.js"),
    /dashboard\/app\.js imports "https:\/\/cdn\.example\/x\.js": only "\.\/name\.js" of dashboard\/ is served/,
  );
  throws(() => linkModules({ "app.js": 'export * from "../a.js";' }, "app.js"), /imports "\.\.\/a\.js"/);
  throws(() => linkModules({ "app.js": "", "old.js": "" }, "app.js"), /dashboard\/old\.js: imported by no module/);
  throws(() => linkModules({ "a.js": "" }, "app.js"), /no dashboard module app\.js/);
});

Deno.test("dashboard modules: every dashboard/*.js is served hashed, immutable, and its imports resolve", async () => {
  const dir = new URL("../../dashboard/", import.meta.url);
  const onDisk = [...Deno.readDirSync(dir)].map((entry) => entry.name).filter((name) => name.endsWith(".js")).sort();
  const served = dashboardFiles().map((file) => file.path);
  const hashed = served.filter((path) => HASHED.test(path));
  assertEquals(hashed.map((path) => `${HASHED.exec(path)![1]}.js`).sort(), onDisk);

  for (const path of hashed) {
    const response = serveDashboard(path)!;
    assertEquals(response.headers.get("content-type"), "text/javascript; charset=utf-8");
    assertEquals(response.headers.get("cache-control"), "public, max-age=31536000, immutable");
    assertMatch(response.headers.get("content-security-policy")!, /script-src 'self'/);
    const body = await response.text();
    assertNotMatch(body, /innerHTML|\beval\(/, `${path} never parses HTML or code`);
    const imports = [...body.matchAll(/\b(?:from|import)\s*"([^"]+)"/g)].map((match) => match[1]);
    for (const specifier of imports) {
      assertMatch(specifier, /^\.\/[\w-]+\.[0-9a-f]{8}\.js$/, `${path} imports ${specifier}`);
      assert(served.includes(specifier.slice(1)), `${path} imports ${specifier}, which is served`);
    }
  }
});

Deno.test("dashboard modules: index.html loads the boot module and preloads the others; /app.js is the same", async () => {
  const page = serveDashboard("/")!;
  assertEquals(page.headers.get("cache-control"), "no-cache");
  const html = await page.text();
  assertNotMatch(html, /<script>|style=/);
  const boot = /<script type="module" src="(\/app\.[0-9a-f]{8}\.js)"><\/script>/.exec(html)?.[1];
  assert(boot, html);
  const preloaded = [...html.matchAll(/<link rel="modulepreload" href="([^"]+)">/g)].map((match) => match[1]);
  const modules = dashboardFiles().map((file) => file.path).filter((path) => HASHED.test(path));
  assertEquals([...preloaded, boot].sort(), modules.sort());
  assertEquals(await serveDashboard("/index.html")!.text(), html);

  const plain = serveDashboard("/app.js")!;
  assertEquals(plain.headers.get("cache-control"), "no-cache");
  assertEquals(await plain.text(), await serveDashboard(boot)!.text());
  assertEquals(serveDashboard("/format.js"), undefined, "other modules only under their hashed names");
});
