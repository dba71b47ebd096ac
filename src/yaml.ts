/**
 * The `yaml` package, loaded from its ES module build. Deno resolves `yaml` with the "node"
 * condition to the CommonJS build, which takes twice as long to load (measured: +27 ms against
 * +6 ms over a bare `deno run`), and this is on the path of every deploy.
 * @module
 */
// @ts-types="../node_modules/yaml/dist/index.d.ts"
export { isMap, isPair, isScalar, LineCounter, parse, parseDocument } from "../node_modules/yaml/browser/index.js";
export type { Node } from "../node_modules/yaml/dist/index.d.ts";

/**
 * A document edited in place (a key set or added) as text, with its other lines as their author
 * wrote them: no line width (the default of 80 would refold a long value, and spread a one-line
 * `{ … }` over several lines).
 */
export function documentText(doc: { toString(options: { lineWidth: number }): string }): string {
  return doc.toString({ lineWidth: 0 });
}
