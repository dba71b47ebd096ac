/** Assertions from node:assert/strict, under the names Deno's std uses. */
export {
  deepStrictEqual as assertEquals,
  doesNotMatch as assertNotMatch,
  match as assertMatch,
  ok as assert,
} from "node:assert/strict";
