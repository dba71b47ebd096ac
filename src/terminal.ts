/**
 * Text from elsewhere (a server's status.json, a log line, an ssh error) on the operator's
 * terminal: {@link forTerminal} escapes every character a terminal would act on instead of show,
 * so a server cannot write the clipboard (OSC 52), retitle the window (OSC 0), move the cursor or
 * repaint what was printed (CSI, carriage return, backspace).
 * @module
 */

/**
 * C0 controls except tab (and newline, unless asked), DEL, C1 controls (U+0080–U+009F: 8-bit CSI,
 * OSC, ST…), and the bidirectional overrides and isolates that reorder what is shown.
 */
// deno-lint-ignore no-control-regex
const UNSAFE = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
// deno-lint-ignore no-control-regex
const UNSAFE_OR_NEWLINE = /[\x00-\x08\x0a-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

function escape(char: string): string {
  const code = char.charCodeAt(0);
  return code <= 0xff ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16).padStart(4, "0")}`;
}

/**
 * `text` safe to print: every control character shown as `\xNN` (`\uNNNN` for the bidi
 * controls); tabs kept, and newlines unless `oneLine` (a table cell, a one-line message).
 * ESC is shown as `\x1b`, so what followed it is printed as plain text and does nothing.
 */
export function forTerminal(text: string, options: { oneLine?: boolean } = {}): string {
  return text.replace(options.oneLine ? UNSAFE_OR_NEWLINE : UNSAFE, escape);
}

/**
 * JSON for a terminal: `JSON.stringify` escapes C0 controls but prints DEL, C1 controls and the
 * bidi controls as they are; here they are `\uNNNN` escapes, which JSON readers decode back.
 */
export function jsonForTerminal(value: unknown, indent?: number): string {
  return JSON.stringify(value, null, indent).replace(
    /[\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g,
    (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

/** `rows` as aligned lines (each column as wide as its widest cell, two spaces apart), and the widths. */
export function columns(rows: readonly (readonly string[])[]): { lines: string[]; widths: number[] } {
  const widths = (rows[0] ?? []).map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  return { lines: rows.map((row) => row.map((cell, i) => cell.padEnd(widths[i])).join("  ").trimEnd()), widths };
}
