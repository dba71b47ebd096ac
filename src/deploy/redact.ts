/**
 * Redaction of secrets from everything a deploy prints or records. A secret is matched in the forms
 * a build, a hook or an app's error line may print it in:
 *
 * - as it is, and in any mix of URL encoding (`%XX` for any byte, upper or lower case hex, as
 *   encodeURIComponent, `quote`, `URLSearchParams` or curl write it; `+` for a space, as
 *   application/x-www-form-urlencoded does) and JSON string escapes (`\"`, `\\`, `\/`, `\n`…,
 *   `\u00e9`, surrogate pairs);
 * - base64, standard or URL-safe, with or without padding, at any of the three alignments a secret
 *   can have inside a longer base64 text: only the characters the secret's bits decide are matched
 *   (with the partial first and last ones, which hold some of its bits, when present), so what
 *   surrounds it changes nothing;
 * - hex of its UTF-8 bytes, either case.
 *
 * Values shorter than {@link MIN_SECRET_LENGTH} are not redacted (they would match innocent text,
 * and the base64 of a few bytes is too short to find): deploys and setup refuse them unless they are
 * marked public (see dotenv.ts).
 * @module
 */

/** The shortest value redacted; deploys and setup refuse shorter secrets. */
export const MIN_SECRET_LENGTH = 6;

/** What a secret becomes. */
export const REDACTED = "[redacted]";

const STANDARD = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE = STANDARD.slice(0, 62) + "-_";

/** JSON's short escapes (and `\/`, which JSON allows for `/`). */
const JSON_SHORT: Record<string, string> = {
  '"': '\\"',
  "\\": "\\\\",
  "/": "\\/",
  "\b": "\\b",
  "\f": "\\f",
  "\n": "\\n",
  "\r": "\\r",
  "\t": "\\t",
};

const encoder = new TextEncoder();

/** `text` as a literal in a regular expression (compiled without the `u` flag). */
function literal(text: string): string {
  return text.replace(/[\\^$.*+?()[\]{}|/-]/g, "\\$&");
}

/** A hex digit in either case. */
function hexDigit(value: number): string {
  const digit = value.toString(16);
  return /[a-f]/.test(digit) ? `[${digit}${digit.toUpperCase()}]` : digit;
}

function hexByte(byte: number): string {
  return hexDigit(byte >> 4) + hexDigit(byte & 15);
}

/**
 * One character of a secret as it may appear: JSON-escaped, URL-encoded, `+` for a space, or itself
 * (longest first: a backslash that JSON printed as two is taken whole at the end of a secret too).
 */
function characterForms(ch: string): string {
  const forms = new Set<string>();
  if (JSON_SHORT[ch]) forms.add(literal(JSON_SHORT[ch]));
  forms.add([...encoder.encode(ch)].map((byte) => `%${hexByte(byte)}`).join(""));
  if (ch === " ") forms.add("\\+");
  let units = "";
  for (let i = 0; i < ch.length; i++) {
    const unit = ch.charCodeAt(i);
    units += "\\\\u" + hexDigit(unit >> 12) + hexDigit((unit >> 8) & 15) + hexDigit((unit >> 4) & 15) +
      hexDigit(unit & 15);
  }
  forms.add(units).add(literal(ch));
  return `(?:${[...forms].join("|")})`;
}

/**
 * A character class of the base64 digits (both alphabets) whose bits agree with `known`: for each
 * of the digit's 6 bits (most significant first), 0, 1, or undefined (not the secret's).
 */
function digitClass(known: (0 | 1 | undefined)[]): string {
  const chars = new Set<string>();
  for (let value = 0; value < 64; value++) {
    if (known.every((bit, i) => bit === undefined || ((value >> (5 - i)) & 1) === bit)) {
      chars.add(STANDARD[value]).add(URL_SAFE[value]);
    }
  }
  const list = [...chars].map((c) => /[A-Za-z0-9]/.test(c) ? c : `\\${c}`);
  return list.length === 1 ? list[0] : `[${list.join("")}]`;
}

/**
 * The secret's base64 when it starts `offset` (0, 1 or 2) bytes into a 3-byte group: the digits
 * made of its bits only, and the partial digits at either end (optional: absent when the text is cut).
 */
function base64Form(bytes: Uint8Array, offset: number): string {
  const start = offset * 8;
  const end = start + bytes.length * 8;
  const bit = (i: number): 0 | 1 | undefined => {
    if (i < start || i >= end) return undefined;
    const b = i - start;
    return ((bytes[b >> 3] >> (7 - (b & 7))) & 1) as 0 | 1;
  };
  let pattern = "";
  for (let digit = Math.floor(start / 6); digit * 6 < end; digit++) {
    const known = Array.from({ length: 6 }, (_, i) => bit(digit * 6 + i));
    const partial = known.includes(undefined);
    pattern += partial ? `(?:${digitClass(known)})?` : digitClass(known);
  }
  return pattern;
}

/** The regular expression sources that match `secret` in each of its forms, longest first. */
function secretPatterns(secret: string): string[] {
  const bytes = encoder.encode(secret);
  return [
    [...secret].map(characterForms).join(""),
    ...[0, 1, 2].map((offset) => base64Form(bytes, offset)),
    [...bytes].map(hexByte).join(""),
  ];
}

/**
 * The secrets of a deploy and how to take them out of text. A value of several lines is printed a
 * line at a time: each of its lines (trimmed) is a secret too.
 */
export class Redactor {
  #secrets = new Set<string>();
  #pattern?: RegExp;

  /** Adds secrets; values shorter than {@link MIN_SECRET_LENGTH} are skipped. */
  add(values: Iterable<string>): void {
    const before = this.#secrets.size;
    for (const value of values) {
      for (const part of [value, ...value.split("\n").map((line) => line.trim())]) {
        if (part.length >= MIN_SECRET_LENGTH) this.#secrets.add(part);
      }
    }
    if (this.#secrets.size !== before) this.#pattern = undefined;
  }

  /** `text` with every form of every secret replaced by `[redacted]`. */
  clean(text: string): string {
    if (this.#secrets.size === 0) return text;
    this.#pattern ??= new RegExp(
      [...this.#secrets].sort((a, b) => b.length - a.length).flatMap(secretPatterns).join("|"),
      "g",
    );
    return text.replace(this.#pattern, REDACTED);
  }
}
