/**
 * Checks of a schema object across its fields, run also when some fields have problems, so that a
 * file's problems are all found in one pass (zod skips a refinement of an object with problems).
 * @module
 */
import { z } from "zod";

/** A key of `T`, or a path under one (`processes.web`). */
export type KeyPath<T> = (keyof T & string) | `${keyof T & string}.${string}`;

/**
 * An object's checks across its fields, run also when some fields have problems (every problem at
 * once): `ok(...paths)` says whether those fields are valid (no problem in them, nor in what holds
 * them), and a check reads only fields that are.
 */
export function crossChecks<T extends object>(
  check: (value: T, ctx: z.RefinementCtx<T>, ok: (...paths: KeyPath<T>[]) => boolean) => void,
): z.core.$ZodCheck<T> {
  return z.superRefine<T>((value, ctx) => {
    if (typeof value !== "object" || value === null || Array.isArray(value)) return; // not a mapping: said already
    const failed = ctx.issues.map((issue) => issue.path?.join(".")).filter(Boolean);
    const clash = (path: string, other: string) => other === path || other.startsWith(`${path}.`);
    check(value, ctx, (...paths) => paths.every((path) => !failed.some((f) => clash(path, f!) || clash(f!, path))));
  }, { when: () => true });
}
