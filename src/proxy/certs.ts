/**
 * The proxy's certificate store, under `<deployments root>/.tls/` (0700): the ACME account key `account.key`,
 * per app `<app>/key.pem` and `<app>/cert.pem` (leaf + intermediates), each 0600 from creation (written to a temp
 * name opened with mode 0600, then renamed), and the secret-free state file `certificates.json` (0644) that `status`
 * reads. Also parses PEM certificates and loads bring-your-own ones (`tls: {certificate, key}` in config.yml).
 *
 * Light on purpose: only node:crypto, no ACME client (that is loaded lazily by acme.ts).
 * @module
 */
import { createPrivateKey, X509Certificate } from "node:crypto";
import { dirname, join } from "node:path";
import { DeployParadigmError } from "../errors.ts";
import { readTextOrUndefined, writeFileAtomic } from "../fsutil.ts";
import { deploymentsRoot } from "../paths.ts";
import { CERTIFICATES_FILE, type CertificatesFile, type CertificateState } from "./cert_state.ts";

/** What the proxy needs to know about a certificate. */
export interface CertificateInfo {
  /** DNS names of the subjectAltName (the CN when there is none), lowercased, in certificate order. */
  names: string[];
  /** The issuer's distinguished name, e.g. `CN=R11, O=Let's Encrypt, C=US`. */
  issuer: string;
  /** Epoch milliseconds. */
  notBefore: number;
  /** Epoch milliseconds. */
  notAfter: number;
}

/** A certificate (PEM, leaf first, then the chain) with its private key (PEM) and parsed facts. */
export interface LoadedCertificate {
  cert: string;
  key: string;
  info: CertificateInfo;
}

/**
 * One app's line in `certificates.json` (the format ./cert_state.ts reads back): dates are ISO
 * strings, `null` when unknown; `names` are the wanted domains while there is no certificate yet.
 */
export type CertificateStatus = CertificateState & { source: "acme" | "file" };

/** The content of `<deployments root>/.tls/certificates.json`: no secrets. */
export type CertificatesState = Omit<CertificatesFile, "certificates"> & {
  certificates: Record<string, CertificateStatus>;
};

/** `<deployments root>/.tls` under the server root `root`. */
export function tlsDir(root: string): string {
  return join(deploymentsRoot(root), ".tls");
}

/** `<deployments root>/.tls/certificates.json` under the server root `root`. */
export function certificatesStatePath(root: string): string {
  return join(deploymentsRoot(root), CERTIFICATES_FILE);
}

/** The PEM blocks of `text` (a chain file holds several), each with its BEGIN/END lines. */
export function pemBlocks(text: string): string[] {
  return text.match(/-----BEGIN ([A-Z0-9 ]+)-----[\s\S]*?-----END \1-----/g) ?? [];
}

/** `CN=a\nO=b` (node's multi-line form) → `CN=a, O=b`. */
function distinguishedName(text: string): string {
  return text.split("\n").filter(Boolean).join(", ");
}

/** The DNS names a certificate is valid for: its subjectAltName DNS entries, else its CN. */
function certificateNames(x509: X509Certificate): string[] {
  const san = (x509.subjectAltName ?? "").split(", ").filter((entry) => entry.startsWith("DNS:"))
    .map((entry) => entry.slice(4).toLowerCase());
  if (san.length) return [...new Set(san)];
  const cn = x509.subject.split("\n").find((part) => part.startsWith("CN="));
  return cn ? [cn.slice(3).toLowerCase()] : [];
}

/**
 * Names, issuer and validity of the first certificate in `pem`. Throws {@link DeployParadigmError} naming `source`
 * when `pem` holds no parsable certificate.
 */
export function parseCertificate(pem: string, source = "certificate"): CertificateInfo {
  const first = pemBlocks(pem).find((block) => block.startsWith("-----BEGIN CERTIFICATE-----"));
  if (!first) {
    throw new DeployParadigmError(`${source}: no PEM certificate in it`, {
      suggestion: "it must hold a PEM certificate (-----BEGIN CERTIFICATE-----), the server's first, then its chain",
    });
  }
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(first);
  } catch (error) {
    throw new DeployParadigmError(`${source}: not a valid certificate (${(error as Error).message})`, { cause: error });
  }
  return {
    names: certificateNames(x509),
    issuer: distinguishedName(x509.issuer),
    notBefore: Date.parse(x509.validFrom),
    notAfter: Date.parse(x509.validTo),
  };
}

/** True when the private key `keyPem` belongs to the (first) certificate in `certPem`. Throws when either does not parse. */
export function keyMatchesCertificate(certPem: string, keyPem: string): boolean {
  return new X509Certificate(certPem).checkPrivateKey(createPrivateKey(keyPem));
}

/** True when `pattern` (a certificate name, maybe `*.example.com`) covers host name `name`. */
export function nameMatches(pattern: string, name: string): boolean {
  if (pattern === name) return true;
  if (!pattern.startsWith("*.")) return false;
  const dot = name.indexOf(".");
  return dot > 0 && name.slice(dot + 1) === pattern.slice(2);
}

/** True when a certificate with `names` is valid for `domain` (an exact name, or a `*.` wildcard listed as such). */
export function certificateCovers(names: readonly string[], domain: string): boolean {
  return domain.startsWith("*.") ? names.includes(domain) : names.some((pattern) => nameMatches(pattern, domain));
}

/**
 * A bring-your-own certificate (`tls: {certificate, key}`, PEM paths): both files must be readable, the certificate
 * must parse and the key must be its private key. Every failure is a {@link DeployParadigmError} naming the file.
 */
export async function loadCertificateFiles(paths: { certificate: string; key: string }): Promise<LoadedCertificate> {
  const read = async (path: string, what: string) => {
    try {
      return await Deno.readTextFile(path);
    } catch (error) {
      throw new DeployParadigmError(`${path}: cannot read the ${what} (${(error as Error).message})`, {
        suggestion: "tls: in config.yml takes absolute paths of PEM files readable by the proxy (root)",
        cause: error,
      });
    }
  };
  const [cert, key] = [await read(paths.certificate, "certificate"), await read(paths.key, "private key")];
  const info = parseCertificate(cert, paths.certificate);
  let privateKey: ReturnType<typeof createPrivateKey>;
  try {
    privateKey = createPrivateKey(key);
  } catch (error) {
    throw new DeployParadigmError(`${paths.key}: not a PEM private key (${(error as Error).message})`, {
      suggestion: "it must hold an unencrypted PEM private key (-----BEGIN PRIVATE KEY-----)",
      cause: error,
    });
  }
  if (!new X509Certificate(cert).checkPrivateKey(privateKey)) {
    throw new DeployParadigmError(
      `${paths.key}: this private key does not belong to the certificate ${paths.certificate}`,
      {
        suggestion: "point tls.key at the key the certificate was issued for",
      },
    );
  }
  return { cert, key, info };
}

/** The `.tls` directory of one server root: keys, certificates and the state file. */
export class CertificateStore {
  readonly dir: string;

  constructor(root: string) {
    this.dir = tlsDir(root);
  }

  /**
   * Creates `dir` with `mode` (its parents, such as the deployments root, with the usual mode) and
   * takes group and other write (and, for 0700, every group and other bit) away if it existed with more.
   * `.tls` itself is 0755, so `status` and the fleet can read `certificates.json`; the app
   * directories holding keys are 0700 and every key is 0600.
   */
  async #ensureDir(dir: string, mode = 0o700): Promise<void> {
    await Deno.mkdir(dirname(dir), { recursive: true });
    try {
      await Deno.mkdir(dir, { mode });
      await Deno.chmod(dir, mode); // the umask may have taken bits away
    } catch (error) {
      if (!(error instanceof Deno.errors.AlreadyExists)) throw error;
      const current = (await Deno.stat(dir)).mode! & 0o777;
      if (current & ~mode & 0o077) await Deno.chmod(dir, current & mode);
    }
  }

  /** Writes a secret: created 0600 under a temp name in the same 0700 dir, then renamed into place. */
  async #writeSecret(path: string, content: string): Promise<void> {
    await writeFileAtomic(path, content, 0o600);
  }

  /** The ACME account key (PEM), or undefined before the first one is made. */
  readAccountKey(): Promise<string | undefined> {
    return readTextOrUndefined(join(this.dir, "account.key"));
  }

  async writeAccountKey(pem: string): Promise<void> {
    await this.#ensureDir(this.dir, 0o755);
    await this.#writeSecret(join(this.dir, "account.key"), pem);
  }

  /**
   * The certificate issued earlier for `app`, or undefined when there is none. Throws {@link DeployParadigmError}
   * when the files exist but do not parse or do not belong together (a crash between writing the two).
   */
  async readIssued(app: string): Promise<LoadedCertificate | undefined> {
    const dir = join(this.dir, app);
    const [cert, key] = [
      await readTextOrUndefined(join(dir, "cert.pem")),
      await readTextOrUndefined(join(dir, "key.pem")),
    ];
    if (cert === undefined || key === undefined) return undefined;
    const info = parseCertificate(cert, join(dir, "cert.pem"));
    let matches = false;
    try {
      matches = keyMatchesCertificate(cert, key);
    } catch { /* an unparsable key is a mismatch */ }
    if (!matches) throw new DeployParadigmError(`${join(dir, "key.pem")}: does not belong to ${join(dir, "cert.pem")}`);
    return { cert, key, info };
  }

  /** Stores a newly issued certificate for `app` (key first, so a crash in between leaves a detectable mismatch). */
  async writeIssued(app: string, cert: string, key: string): Promise<void> {
    const dir = join(this.dir, app);
    await this.#ensureDir(this.dir, 0o755);
    await this.#ensureDir(dir);
    await this.#writeSecret(join(dir, "key.pem"), key);
    await this.#writeSecret(join(dir, "cert.pem"), cert);
  }

  /** Replaces `certificates.json` atomically (0644: it holds no secrets). */
  async writeState(state: CertificatesState): Promise<void> {
    await this.#ensureDir(this.dir, 0o755);
    await writeFileAtomic(join(this.dir, "certificates.json"), JSON.stringify(state, null, 2) + "\n", 0o644);
  }
}
