/**
 * The proxy's certificate state, `<deployments root>/.tls/certificates.json` (no secrets, 0644):
 * what `status`, status.json and the fleet show of each app's certificate. Light on purpose (no
 * schema library): the deploy engine and the fleet collector load it.
 *
 * The file is read defensively, as hostile input: the fleet pulls it from servers it does not
 * trust. A file over {@link MAX_CERTIFICATES_BYTES}, not JSON or not an object is refused whole;
 * within it, an entry that is not an object or whose app name is invalid is skipped, unknown keys
 * are ignored, a value of the wrong type counts as absent, text is made one line (control and
 * bidi characters become spaces) and cut, times are normalized to ISO, names that are not host
 * names are dropped.
 * @module
 */
import { join } from "node:path";
import { NAME_PATTERN } from "../config/names.ts";
import { readAtMost } from "../fsutil.ts";

/** One app's certificate, as the proxy last saw it. */
export interface CertificateState {
  /** The host names it covers, lowercased (`*.example.com` for a wildcard). */
  names: string[];
  /** `acme`: issued and renewed by the proxy; `file`: the app's own (config.yml `tls:`); null: unknown. */
  source: "acme" | "file" | null;
  /** The issuer's distinguished name, e.g. `C=US, O=Let's Encrypt, CN=R11`. */
  issuer: string | null;
  notBefore: string | null;
  /** When it expires; null before a first certificate was obtained. */
  notAfter: string | null;
  /** The last failed attempt to issue or renew, one line. */
  lastError: string | null;
  lastErrorAt: string | null;
  /** When the proxy tries again (after a failure: its backoff). */
  nextAttemptAt: string | null;
}

/** The file as the proxy writes it. */
export interface CertificatesFile {
  updatedAt: string;
  certificates: Record<string, CertificateState>;
}

/** Where the file is, relative to the deployments root. */
export const CERTIFICATES_FILE = ".tls/certificates.json";
/** A bigger file is refused whole. */
export const MAX_CERTIFICATES_BYTES = 1 << 20;
/** Apps read from one file at most (the rest are ignored). */
export const MAX_APPS = 1000;
/** Names kept per certificate at most (Let's Encrypt allows 100). */
export const MAX_NAMES = 100;
/** Longest issuer kept (characters); longer ones are cut with `…`. */
export const MAX_ISSUER = 256;
/** Longest error kept (characters); longer ones are cut with `…`. */
export const MAX_ERROR = 1000;
/** A certificate that expires sooner than this is `expiring` (shown red, alerted). */
export const EXPIRY_WARNING_DAYS = 14;

const DAY = 86_400_000;
/** A host name (or IPv4 address), optionally a `*.` wildcard: labels of letters, digits and inner dashes. */
const HOST_NAME = /^(\*\.)?[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/;
/** Control characters, and the bidi marks that can make a line read differently than it is. */
const UNPRINTABLE = /[\p{Cc}\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/gu;

/** The certificate state file of a deployments root (e.g. /opt/deployments). */
export function certificatesPath(root: string): string {
  return join(root, CERTIFICATES_FILE);
}

/**
 * Every app's certificate under the deployments root `root`, by app name: empty when the proxy
 * wrote none (no domains, no HTTPS yet) or the file is refused. Never throws.
 */
export async function readCertificates(root: string): Promise<Map<string, CertificateState>> {
  return (await readCertificatesFile(certificatesPath(root))) ?? new Map();
}

/**
 * The certificates in the file at `path`, or undefined when it is absent, not a regular file,
 * bigger than {@link MAX_CERTIFICATES_BYTES} or not a certificate state file. Never throws.
 */
export async function readCertificatesFile(path: string): Promise<Map<string, CertificateState> | undefined> {
  try {
    if (!(await Deno.lstat(path)).isFile) return undefined; // a FIFO would block the read
    const bytes = await readAtMost(path, MAX_CERTIFICATES_BYTES);
    if (bytes.length > MAX_CERTIFICATES_BYTES) return undefined;
    return parseCertificates(new TextDecoder().decode(bytes));
  } catch {
    return undefined;
  }
}

/** The certificates of a file's text (see the module doc), or undefined when it is not a certificate state file. */
export function parseCertificates(text: string): Map<string, CertificateState> | undefined {
  if (text.length > MAX_CERTIFICATES_BYTES) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (!isRecord(value) || !isRecord(value.certificates)) return undefined;
  const certificates = new Map<string, CertificateState>();
  for (const [app, entry] of Object.entries(value.certificates)) {
    if (certificates.size >= MAX_APPS) break;
    if (!NAME_PATTERN.test(app) || !isRecord(entry)) continue;
    certificates.set(app, certificateOf(entry));
  }
  return certificates;
}

function certificateOf(entry: Record<string, unknown>): CertificateState {
  const names = Array.isArray(entry.names) ? entry.names : [];
  return {
    names: [
      ...new Set(
        names.filter((name): name is string => typeof name === "string" && name.length <= 253)
          .map((name) => name.toLowerCase()).filter((name) => HOST_NAME.test(name)),
      ),
    ].slice(0, MAX_NAMES),
    source: entry.source === "acme" || entry.source === "file" ? entry.source : null,
    // node's X509Certificate separates the RDNs by line breaks: kept as commas.
    issuer: oneLine(
      typeof entry.issuer === "string" ? entry.issuer.slice(0, 2 * MAX_ISSUER).replace(/\s*\n\s*/g, ", ") : null,
      MAX_ISSUER,
    ),
    notBefore: time(entry.notBefore),
    notAfter: time(entry.notAfter),
    lastError: oneLine(entry.lastError, MAX_ERROR),
    lastErrorAt: time(entry.lastErrorAt),
    nextAttemptAt: time(entry.nextAttemptAt),
  };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** A string made one line and cut to `max` characters; null for anything else or nothing printable. */
function oneLine(value: unknown, max: number): string | null {
  if (typeof value !== "string") return null;
  // Cut before cleaning too: a huge string is not scanned whole.
  const text = value.slice(0, 2 * max).replace(UNPRINTABLE, " ").replace(/\s+/g, " ").trim();
  if (!text) return null;
  return text.length > max || value.length > 2 * max ? text.slice(0, max - 1) + "…" : text;
}

/** An ISO time, normalized; null for anything else. */
function time(value: unknown): string | null {
  if (typeof value !== "string" || value.length > 64 || !/^\d{4}-\d\d-\d\dT/.test(value)) return null;
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? null : new Date(ms).toISOString();
}

/**
 * How a certificate stands at `now`: `expired`, `expiring` (less than {@link EXPIRY_WARNING_DAYS}
 * left), `error` (the last attempt to issue or renew failed), `valid`, or `pending` (none yet, no
 * failure either). `daysLeft`: whole days to `notAfter` (negative once expired), null without one.
 */
export function certificateCondition(
  certificate: Pick<CertificateState, "notAfter" | "lastError">,
  now: number,
): { state: CertificateCondition; daysLeft: number | null } {
  const notAfter = certificate.notAfter === null ? NaN : Date.parse(certificate.notAfter);
  if (Number.isNaN(notAfter)) return { state: certificate.lastError ? "error" : "pending", daysLeft: null };
  const left = notAfter - now;
  const daysLeft = Math.floor(left / DAY);
  if (left <= 0) return { state: "expired", daysLeft };
  if (left < EXPIRY_WARNING_DAYS * DAY) return { state: "expiring", daysLeft };
  return { state: certificate.lastError ? "error" : "valid", daysLeft };
}

/** See {@link certificateCondition}. */
export type CertificateCondition = "valid" | "expiring" | "expired" | "error" | "pending";

/**
 * Whether an app is, or is about to be, without a valid certificate: one expires within
 * {@link EXPIRY_WARNING_DAYS} (or has), or there is none and obtaining it failed. A renewal
 * that failed with weeks left is not (the proxy retries; `status` and the dashboard show it).
 */
export function certificateAtRisk(certificate: Pick<CertificateState, "notAfter" | "lastError">, now: number): boolean {
  const { state } = certificateCondition(certificate, now);
  return state === "expiring" || state === "expired" || (state === "error" && certificate.notAfter === null);
}

/** A short issuer for people: `O` and `CN` of the distinguished name (`Let's Encrypt R11`), else it as it is. */
export function issuerLabel(issuer: string | null): string | null {
  if (!issuer) return null;
  const parts = new Map<string, string>();
  // RDNs separated by commas or slashes (`/C=US/O=…`), each `KEY=value`; a comma inside a value stays.
  for (const part of issuer.split(/\s*[,/]\s*(?=[A-Za-z][\w.]*\s*=)/)) {
    const match = /^\/?([A-Za-z][\w.]*)\s*=\s*(.*)$/.exec(part.trim());
    if (match) parts.set(match[1].toUpperCase(), match[2].trim());
  }
  const label = [parts.get("O"), parts.get("CN")].filter(Boolean).join(" ");
  return label || issuer;
}
