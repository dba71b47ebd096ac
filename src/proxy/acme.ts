/**
 * Automatic certificates for the proxy: {@link CertificateManager} keeps one certificate per app listing all its exact
 * domains, issued over ACME (RFC 8555, HTTP-01 answered by the proxy's HTTP listener through
 * {@link CertificateManager.challengeResponse}) or loaded from the app's own files (`tls:` in config.yml).
 *
 * Rules: a certificate is ordered as soon as a domain appears; renewed when a third of its lifetime is left; a failure
 * is retried with exponential backoff (1 min doubling to 6 h) and never drops a certificate that is still served;
 * certificates issued earlier are loaded from disk at start; one timer wakes for the next renewal or retry (at least
 * hourly, which also re-reads bring-your-own files). Wildcards need DNS-01, which is not offered: they are reported,
 * not ordered. The npm `acme-client` is imported lazily, on the first order: nothing else loads it.
 *
 * acme-client's HTTP settings (trusted CA, timeout, retries) are process-wide: run one manager per process.
 *
 * One file on purpose (over 400 lines): it is one class, whose ordering, renewal, backoff, file
 * loading and saved state are steps of the same certificate lifecycle over the same entries and
 * timer; storing, parsing and loading certificate files is ./certs.ts, the state file ./cert_state.ts.
 * @module
 */
import https from "node:https";
import { DeployParadigmError } from "../errors.ts";
import {
  certificateCovers,
  type CertificatesState,
  type CertificateStatus,
  CertificateStore,
  loadCertificateFiles,
  type LoadedCertificate,
  parseCertificate,
} from "./certs.ts";
import { LETS_ENCRYPT } from "./config.ts";

/** Let's Encrypt's production directory: the default. */
export const LETS_ENCRYPT_DIRECTORY = LETS_ENCRYPT;

/** proxy.yml `acme:`. */
export interface AcmeSettings {
  /** Contact for the ACME account (expiry mails from the CA). */
  email?: string;
  /** The ACME directory URL (default: {@link LETS_ENCRYPT_DIRECTORY}). */
  directory?: string;
  /** Path of a PEM CA certificate to trust for the directory (private ACME servers); replaces the system roots. */
  caCertificate?: string;
}

/** What one app wants: its domains (lowercase; `*.` wildcards are served from `tls` files only) and maybe own files. */
export interface AppCertificateSpec {
  domains: string[];
  tls?: { certificate: string; key: string };
}

/** Options of {@link CertificateManager}. */
export interface CertificateManagerOptions {
  /** The server root (`DEPLOY_PARADIGM_PREFIX`); certificates live in `<deployments root>/.tls`. */
  root: string;
  /** Absent: no automatic certificates, only `tls:` files. */
  acme?: AcmeSettings;
  log: (line: string) => void;
  /** Clock in epoch ms (tests move it). */
  now?: () => number;
  /** The longest the manager sleeps between checks (default 1 h). */
  checkIntervalMs?: number;
  /** First retry delay after a failure, doubled per failure up to `maxMs` (defaults 1 min and 6 h). */
  retry?: { initialMs?: number; maxMs?: number };
  /**
   * acme-client's own retries of one request after a network error, 429 or 5xx, 5 s, 10 s, ... apart (default 0: a
   * failed attempt goes to the manager's backoff at once, and `renewNow` answers without waiting 30 s for a CA that is
   * down). Its retries of a rejected nonce are separate and stay on.
   */
  requestRetries?: number;
  /** Timeout of one HTTP request to the ACME server (default 30 s). */
  requestTimeoutMs?: number;
  /**
   * First wait before polling again a challenge or order the CA is still processing, doubled up to 30 s (default
   * 500 ms; acme-client's own 5 s made an issuance take 5 s more whenever the first poll came too early).
   */
  pollMinMs?: number;
}

/** What the lazily loaded module offers (the part we use). */
type AcmeModule = typeof import("acme-client");
type AcmeClient = InstanceType<AcmeModule["Client"]>;

interface Entry {
  app: string;
  /** Exact names, sorted: what an ACME certificate must list. */
  exact: string[];
  /** `*.` names, sorted. */
  wildcards: string[];
  tls?: { certificate: string; key: string };
  current?: LoadedCertificate;
  /** Whether `<app>/cert.pem` was looked for yet. */
  loadedFromDisk: boolean;
  lastError?: string;
  lastErrorAt?: number;
  nextAttemptAt?: number;
  /** Consecutive failures (the backoff exponent). */
  failures: number;
  /** The wanted names of the last failed attempt: a changed set is tried at once, despite the backoff. */
  failedFor?: string;
  /** A forced renewal that has not succeeded yet: retried like a due one. */
  renewRequested?: boolean;
}

const HOUR = 3_600_000;

/** True when a certificate valid `notBefore`..`notAfter` has a third of its lifetime or less left at `now`. */
export function renewalDue(info: { notBefore: number; notAfter: number }, now: number): boolean {
  return info.notAfter - now < (info.notAfter - info.notBefore) / 3;
}

/** When a certificate valid `notBefore`..`notAfter` becomes due for renewal (epoch ms). */
export function renewalTime(info: { notBefore: number; notAfter: number }): number {
  return info.notAfter - (info.notAfter - info.notBefore) / 3;
}

/** Delay before the next attempt after `failures` consecutive failures (≥ 1): `initial · 2^(failures-1)`, capped. */
export function backoffDelay(failures: number, initialMs: number, maxMs: number): number {
  return Math.min(maxMs, initialMs * 2 ** Math.min(failures - 1, 40));
}

/** The message of any thrown value, on one line. */
function messageOf(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return text.replace(/\s+/g, " ").trim();
}

const iso = (ms: number | undefined) => ms === undefined ? null : new Date(ms).toISOString();

/** Why no ACME certificate can cover the wildcard names, or undefined when there are none. */
function wildcardNote(entry: Entry): string | undefined {
  if (entry.tls || !entry.wildcards.length) return undefined;
  return `${entry.wildcards.join(", ")}: wildcard names need the DNS-01 challenge, which is not supported; ` +
    "give the app a certificate of your own (tls: in config.yml) or list the exact names";
}

/** What is wrong with a loaded certificate of the app's own (names it does not cover, expiry), if anything. */
function fileNote(entry: Entry, now: number): string | undefined {
  const info = entry.current?.info;
  if (!entry.tls || !info) return undefined;
  const uncovered = [...entry.exact, ...entry.wildcards].filter((name) => !certificateCovers(info.names, name));
  if (uncovered.length) return `${entry.tls.certificate} does not cover ${uncovered.join(", ")}`;
  return now >= info.notAfter ? `${entry.tls.certificate} expired on ${iso(info.notAfter)}` : undefined;
}

/** A standing remark about the app's certificate that is not a failed attempt (shown as its lastError). */
function standingNote(entry: Entry, now: number): string | undefined {
  return wildcardNote(entry) ?? fileNote(entry, now);
}

/** Keeps every app's certificate: issues, renews, loads, and answers the TLS listener and the HTTP-01 path. */
export class CertificateManager {
  readonly #store: CertificateStore;
  readonly #acme?: AcmeSettings;
  readonly #log: (line: string) => void;
  readonly #now: () => number;
  readonly #checkIntervalMs: number;
  readonly #retryInitialMs: number;
  readonly #retryMaxMs: number;
  readonly #requestRetries: number;
  readonly #requestTimeoutMs: number;
  readonly #pollMinMs: number;
  readonly #entries = new Map<string, Entry>();
  /** Wanted domain (exact or `*.`) → the app whose served certificate covers it. */
  #index = new Map<string, string>();
  readonly #tokens = new Map<string, string>();
  readonly #listeners: (() => void)[] = [];
  /** Every disk and ACME operation runs on this chain, one at a time. */
  #queue: Promise<void> = Promise.resolve();
  #passQueued = false;
  #timer?: ReturnType<typeof setTimeout>;
  #closed = false;
  #client?: Promise<{ acme: AcmeModule; client: AcmeClient }>;
  #lastStateJson?: string;

  constructor(opts: CertificateManagerOptions) {
    this.#store = new CertificateStore(opts.root);
    this.#acme = opts.acme;
    this.#log = opts.log;
    this.#now = opts.now ?? Date.now;
    this.#checkIntervalMs = opts.checkIntervalMs ?? HOUR;
    this.#retryInitialMs = opts.retry?.initialMs ?? 60_000;
    this.#retryMaxMs = opts.retry?.maxMs ?? 6 * HOUR;
    this.#requestRetries = opts.requestRetries ?? 0;
    this.#requestTimeoutMs = opts.requestTimeoutMs ?? 30_000;
    this.#pollMinMs = opts.pollMinMs ?? 500;
  }

  /** HTTP-01 responder: the key authorization for `token` while an order waits for it (the proxy's HTTP listener). */
  challengeResponse(token: string): string | undefined {
    return this.#tokens.get(token);
  }

  /**
   * The desired state, app → domains (and own files). Starts whatever is missing (loading from disk, ordering) in the
   * background; idempotent, so it is called on every route reload. Apps left out are forgotten (their files stay).
   */
  sync(apps: Map<string, AppCertificateSpec>): void {
    if (this.#closed) return;
    for (const app of [...this.#entries.keys()]) {
      if (!apps.has(app)) this.#entries.delete(app);
    }
    for (const [app, spec] of apps) {
      const domains = [...new Set(spec.domains.map((domain) => domain.toLowerCase()))].sort();
      if (!domains.length && !spec.tls) {
        this.#entries.delete(app);
        continue;
      }
      const exact = domains.filter((domain) => !domain.startsWith("*."));
      const wildcards = domains.filter((domain) => domain.startsWith("*."));
      const entry = this.#entries.get(app);
      if (!entry) {
        this.#entries.set(app, { app, exact, wildcards, tls: spec.tls, loadedFromDisk: false, failures: 0 });
        continue;
      }
      const filesChanged = JSON.stringify(entry.tls) !== JSON.stringify(spec.tls);
      Object.assign(entry, { exact, wildcards, tls: spec.tls });
      if (filesChanged) Object.assign(entry, { current: undefined, failures: 0, nextAttemptAt: undefined });
    }
    this.#reindex();
    this.#schedulePass();
  }

  /** The certificate for an SNI name: exact match first, then a served certificate whose wanted wildcard matches. */
  certificateFor(serverName: string): { cert: string; key: string } | undefined {
    const current = this.#lookup(serverName);
    return current && { cert: current.cert, key: current.key };
  }

  /** True when `host` (no port) has a certificate that is valid now: the proxy redirects its HTTP to HTTPS. */
  hasCertificate(host: string): boolean {
    const info = this.#lookup(host)?.info;
    const now = this.#now();
    return info !== undefined && info.notBefore <= now && now < info.notAfter;
  }

  /** The served certificate for host name `name`: an exact wanted name first, then a wanted `*.` one. */
  #lookup(serverName: string): LoadedCertificate | undefined {
    const name = serverName.toLowerCase().replace(/\.$/, "");
    const dot = name.indexOf(".");
    const app = this.#index.get(name) ?? (dot > 0 ? this.#index.get(`*.${name.slice(dot + 1)}`) : undefined);
    return app === undefined ? undefined : this.#entries.get(app)?.current;
  }

  /** Calls `listener` whenever a served certificate was issued, renewed or loaded (coalesced per pass). */
  onChange(listener: () => void): void {
    this.#listeners.push(listener);
  }

  /** What `certificates.json` holds. */
  state(): CertificatesState {
    const certificates: Record<string, CertificateStatus> = {};
    for (const entry of [...this.#entries.values()].sort((a, b) => a.app.localeCompare(b.app))) {
      const info = entry.current?.info;
      certificates[entry.app] = {
        names: info?.names ?? [...entry.exact, ...entry.wildcards],
        source: entry.tls ? "file" : "acme",
        issuer: info?.issuer ?? null,
        notBefore: iso(info?.notBefore),
        notAfter: iso(info?.notAfter),
        lastError: entry.lastError ?? null,
        lastErrorAt: iso(entry.lastErrorAt),
        nextAttemptAt: iso(entry.nextAttemptAt),
      };
    }
    return { updatedAt: new Date(this.#now()).toISOString(), certificates };
  }

  /**
   * Renews `app`'s certificate now (own files: re-reads them). Rejects with the failure, which is also recorded in the
   * state with a backoff; the certificate served until then stays.
   */
  renewNow(app: string): Promise<void> {
    return this.#enqueue(async () => {
      const entry = this.#entries.get(app);
      if (this.#closed) throw new DeployParadigmError("the certificate manager is closed");
      if (!entry) {
        throw new DeployParadigmError(`no certificate is managed for ${app}`, {
          suggestion: "only apps with domains: (or tls:) in config.yml have certificates",
        });
      }
      let failure: unknown;
      entry.renewRequested = !entry.tls;
      const changed = await this.#reconcile(entry, true, (error) => failure = error);
      await this.#afterPass(changed);
      if (failure !== undefined) throw failure;
    });
  }

  /** Stops the timer and waits (at most 5 s) for the operation under way; later results are dropped. */
  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([this.#queue, new Promise((resolve) => timer = setTimeout(resolve, 5_000))]);
    clearTimeout(timer);
  }

  #enqueue<T>(task: () => Promise<T>): Promise<T> {
    const result = this.#queue.then(task);
    this.#queue = result.then(() => {}, () => {});
    return result;
  }

  /** Queues one pass over every app unless one is already waiting to start (it will see the latest state). */
  #schedulePass(): void {
    if (this.#passQueued || this.#closed) return;
    this.#passQueued = true;
    this.#enqueue(async () => {
      this.#passQueued = false;
      if (this.#closed) return;
      let changed = false;
      for (const entry of [...this.#entries.values()]) {
        if (this.#closed) return;
        if (await this.#reconcile(entry, false)) changed = true;
      }
      await this.#afterPass(changed);
    }).catch((error) => {
      this.#log(`certificates: unexpected failure: ${messageOf(error)}`);
      this.#arm(); // the loop goes on
    });
  }

  /** After a pass: reindex, tell listeners, write the state file, arm the timer. */
  async #afterPass(changed: boolean): Promise<void> {
    if (this.#closed) return;
    this.#reindex();
    if (changed) {
      for (const listener of this.#listeners) {
        try {
          listener();
        } catch (error) {
          this.#log(`certificates: change listener failed: ${messageOf(error)}`);
        }
      }
    }
    await this.#writeState();
    this.#arm();
  }

  async #writeState(): Promise<void> {
    const state = this.state();
    const json = JSON.stringify(state.certificates);
    if (json === this.#lastStateJson) return;
    try {
      await this.#store.writeState(state);
      this.#lastStateJson = json;
    } catch (error) {
      this.#log(`certificates: cannot write the state file: ${messageOf(error)}`);
    }
  }

  /** Sleeps until the earliest renewal or retry, at most {@link CertificateManagerOptions.checkIntervalMs}. */
  #arm(): void {
    clearTimeout(this.#timer);
    if (this.#closed) return;
    const now = this.#now();
    let wake = now + this.#checkIntervalMs;
    for (const entry of this.#entries.values()) {
      if (entry.nextAttemptAt !== undefined) wake = Math.min(wake, entry.nextAttemptAt);
      else if (entry.current && !entry.tls && entry.exact.length && this.#acme) {
        wake = Math.min(wake, renewalTime(entry.current.info));
      }
    }
    // The floor keeps a clock that disagrees with the certificates from spinning the loop.
    this.#timer = setTimeout(() => this.#schedulePass(), Math.max(wake - now, Math.min(1_000, this.#retryInitialMs)));
  }

  #reindex(): void {
    const index = new Map<string, string>();
    for (const entry of this.#entries.values()) {
      if (!entry.current) continue;
      for (const domain of [...entry.exact, ...entry.wildcards]) {
        if (certificateCovers(entry.current.info.names, domain) && !index.has(domain)) index.set(domain, entry.app);
      }
    }
    this.#index = index;
  }

  #fail(entry: Entry, message: string, retry: boolean): void {
    const now = this.#now();
    entry.failures++;
    entry.lastError = message;
    entry.lastErrorAt = now;
    entry.failedFor = entry.exact.join(",");
    entry.nextAttemptAt = retry
      ? now + backoffDelay(entry.failures, this.#retryInitialMs, this.#retryMaxMs)
      : undefined;
    const next = entry.nextAttemptAt === undefined ? "" : ` (next attempt ${iso(entry.nextAttemptAt)})`;
    this.#log(`certificates: ${entry.app}: ${message}${next}`);
  }

  /** Sets lastError to the entry's standing note (or clears it); lastErrorAt only moves when the text changes. */
  #noteStanding(entry: Entry): void {
    const now = this.#now();
    const note = standingNote(entry, now);
    if (entry.lastError !== note) entry.lastErrorAt = note === undefined ? undefined : now;
    entry.lastError = note;
  }

  #succeed(entry: Entry, loaded: LoadedCertificate): void {
    entry.current = loaded;
    entry.renewRequested = false;
    entry.failures = 0;
    entry.failedFor = undefined;
    entry.nextAttemptAt = undefined;
    this.#noteStanding(entry);
  }

  /**
   * Brings one app up to date. Returns whether its served certificate changed. A failure is recorded (and handed to
   * `onError`, for {@link renewNow}); it never removes the certificate being served.
   */
  async #reconcile(entry: Entry, force: boolean, onError?: (error: unknown) => void): Promise<boolean> {
    if (entry.tls) return await this.#reconcileFiles(entry, onError);
    let changed = false;
    if (!entry.loadedFromDisk) {
      entry.loadedFromDisk = true;
      try {
        const stored = await this.#store.readIssued(entry.app);
        if (stored) {
          entry.current = stored;
          changed = true;
          this.#log(`certificates: ${entry.app}: loaded ${stored.info.names.join(", ")} from disk`);
        }
      } catch (error) {
        this.#log(`certificates: ${entry.app}: ignoring the stored certificate: ${messageOf(error)}`);
      }
    }
    const now = this.#now();
    if (entry.failures === 0) this.#noteStanding(entry);
    const current = entry.current;
    const covered = current !== undefined && entry.exact.every((name) => certificateCovers(current.info.names, name));
    if (!force && !entry.renewRequested && covered && !renewalDue(current.info, now)) return changed;
    const refusal = !entry.exact.length
      ? wildcardNote(entry)!
      : !this.#acme
      ? "no certificate: automatic certificates are off (no acme: in proxy.yml) and tls: is not set"
      : undefined;
    if (refusal !== undefined) {
      if (entry.lastError !== refusal) this.#fail(entry, refusal, false);
      onError?.(new DeployParadigmError(`${entry.app}: ${refusal}`));
      return changed;
    }
    const sameNames = entry.failedFor === entry.exact.join(",");
    if (!force && sameNames && entry.nextAttemptAt !== undefined && now < entry.nextAttemptAt) return changed;
    try {
      const issued = await this.#issue(entry.app, entry.exact);
      if (this.#closed) return changed;
      this.#succeed(entry, issued);
      if (renewalDue(issued.info, this.#now())) {
        this.#fail(entry, "the new certificate is already due for renewal: is the clock right?", true);
      }
      return true;
    } catch (error) {
      this.#fail(entry, `certificate for ${entry.exact.join(", ")} not issued: ${messageOf(error)}`, true);
      onError?.(error);
      return changed;
    }
  }

  /** Loads (again) the app's own certificate files; a bad file is recorded and the loaded certificate kept. */
  async #reconcileFiles(entry: Entry, onError?: (error: unknown) => void): Promise<boolean> {
    try {
      const loaded = await loadCertificateFiles(entry.tls!);
      const changed = loaded.cert !== entry.current?.cert || loaded.key !== entry.current?.key;
      this.#succeed(entry, loaded);
      if (changed) this.#log(`certificates: ${entry.app}: loaded ${entry.tls!.certificate}`);
      return changed;
    } catch (error) {
      const message = messageOf(error);
      if (entry.lastError !== message) this.#fail(entry, message, false);
      onError?.(error);
      return false;
    }
  }

  /** Orders a certificate for `names` (HTTP-01), stores it with a fresh key, and returns it. */
  async #issue(app: string, names: string[]): Promise<LoadedCertificate> {
    const started = performance.now();
    const { acme, client } = await this.#acmeClient();
    // ECDSA P-256: cheap to make and to handshake with, accepted by every current client.
    const [key, csr] = await acme.crypto.createCsr(
      { commonName: names[0], altNames: names },
      await acme.crypto.createPrivateEcdsaKey(),
    );
    let chain: string;
    try {
      chain = await client.auto({
        csr,
        email: this.#acme?.email,
        termsOfServiceAgreed: true,
        challengePriority: ["http-01"],
        // The self-check would fetch the name through this host's DNS and port 80; the CA's check is the one that counts.
        skipChallengeVerification: true,
        challengeCreateFn: (_authz, challenge, keyAuthorization) => {
          this.#tokens.set(challenge.token, keyAuthorization);
          return Promise.resolve();
        },
        challengeRemoveFn: (_authz, challenge) => {
          this.#tokens.delete(challenge.token);
          return Promise.resolve();
        },
      });
    } catch (error) {
      throw await this.#explain(error);
    }
    const info = parseCertificate(chain, `the certificate the CA issued for ${app}`);
    if (this.#closed) return { cert: chain, key: key.toString(), info };
    await this.#store.writeIssued(app, chain, key.toString());
    const ms = Math.round(performance.now() - started);
    this.#log(
      `certificates: ${app}: issued ${names.join(", ")} by ${info.issuer}, valid until ${
        iso(info.notAfter)
      } (${ms} ms)`,
    );
    return { cert: chain, key: key.toString(), info };
  }

  /** acme-client and one client for the configured directory, loaded on first use; the account key made once. */
  #acmeClient(): Promise<{ acme: AcmeModule; client: AcmeClient }> {
    this.#client ??= (async () => {
      const acme = await import("acme-client");
      const settings = this.#acme!;
      let ca: string | undefined;
      if (settings.caCertificate) {
        try {
          ca = await Deno.readTextFile(settings.caCertificate);
        } catch (error) {
          throw new DeployParadigmError(
            `${settings.caCertificate}: cannot read acme.caCertificate (${messageOf(error)})`,
          );
        }
      }
      const defaults = acme.axios.defaults as typeof acme.axios.defaults & {
        acmeSettings: { retryMaxAttempts: number };
      };
      defaults.httpsAgent = ca ? new https.Agent({ ca }) : undefined;
      defaults.timeout = this.#requestTimeoutMs;
      defaults.acmeSettings.retryMaxAttempts = this.#requestRetries;
      let accountKey = await this.#store.readAccountKey();
      if (!accountKey) {
        accountKey = (await acme.crypto.createPrivateEcdsaKey()).toString();
        await this.#store.writeAccountKey(accountKey);
        this.#log("certificates: created the ACME account key");
      }
      const client = new acme.Client({
        directoryUrl: settings.directory ?? LETS_ENCRYPT_DIRECTORY,
        accountKey,
        backoffMin: this.#pollMinMs,
        backoffMax: 30_000,
        backoffAttempts: 12,
      });
      return { acme, client };
    })();
    // A failure (unreadable CA file, disk) is retried on the next attempt.
    this.#client.catch(() => this.#client = undefined);
    return this.#client;
  }

  /**
   * acme-client turns a network or TLS failure into `Cannot read properties of undefined (reading 'config')`: ask the
   * directory once more with the same agent to name the real cause.
   */
  async #explain(error: unknown): Promise<unknown> {
    if (!(error instanceof TypeError)) return error;
    const directory = this.#acme?.directory ?? LETS_ENCRYPT_DIRECTORY;
    const { axios } = await import("acme-client");
    const agent = axios.defaults.httpsAgent as https.Agent;
    const cause = await new Promise<string>((resolve) => {
      const request = https.get(directory, { agent, timeout: 10_000 }, (response) => {
        response.resume();
        resolve(`HTTP ${response.statusCode} from the directory`);
      });
      request.on("timeout", () => request.destroy(new Error("no answer in 10 s")));
      request.on("error", (e) => resolve(messageOf(e)));
    });
    return new DeployParadigmError(`cannot reach the ACME directory ${directory}: ${cause}`, { cause: error });
  }
}
