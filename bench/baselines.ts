/**
 * The reverse proxies our proxy is measured against, all from Debian, each as one process that
 * listens on a plain HTTP port and on a TLS port (terminating TLS with the benchmark's
 * certificate) and forwards to the app on 127.0.0.1 over pooled keep-alive connections:
 *
 * - nginx: one worker, `upstream { keepalive }`, and keep-alive request limits lifted (its
 *   default closes each connection after 1,000 requests, which the others do not do);
 * - Caddy: `{ admin off; auto_https off }`, `reverse_proxy`, HTTP/1.1 and HTTP/2 only (no UDP);
 * - HAProxy: `nbthread 1`, `http-reuse always`.
 *
 * The config writers are pure; {@link makeCert} makes the self-signed certificate with openssl.
 * @module
 */
import { join } from "node:path";
import { selfSigned } from "../tests/helpers/certs.ts";

/** The name every HTTPS endpoint is reached by (wrk sends the URL's host as SNI). */
export const TLS_NAME = "localhost";

/** The benchmark's certificate: a self-signed ECDSA P-256 leaf for {@link TLS_NAME} and 127.0.0.1. */
export interface Cert {
  certificate: string;
  key: string;
  /** The certificate's PEM, to trust in readiness probes. */
  pem: string;
}

/** Makes the certificate in `dir` (valid 2 days), with the tests' helper. */
export async function makeCert(dir: string): Promise<Cert> {
  const { certificate, key } = await selfSigned(dir, [TLS_NAME], { ips: ["127.0.0.1"] });
  return { certificate, key, pem: await Deno.readTextFile(certificate) };
}

/** Where a baseline listens and what it forwards to. */
export interface Listen {
  /** Plain HTTP port. */
  http: number;
  /** TLS port (omitted: no HTTPS listener). */
  https?: number;
  /** The app's port on 127.0.0.1. */
  app: number;
}

/** A baseline proxy: how to configure and start it in its own directory. */
export interface Baseline {
  /** Short name, also the key of its results. */
  name: string;
  /** What the table shows. */
  label: string;
  binary: string;
  /** Arguments that print its version (the first line that names a version is kept). */
  versionArgs: string[];
  /** Writes its config into `dir`; returns its command line and environment. */
  prepare(dir: string, listen: Listen, cert?: Cert): Promise<{ argv: string[]; env?: Record<string, string> }>;
}

/** nginx's config: one worker, upstream keep-alive, one plain and (with `cert`) one TLS server. */
export function nginxConfig(dir: string, listen: Listen, cert?: Cert): string {
  const location = `    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }`;
  const tls = listen.https && cert
    ? `
  server {
    listen 127.0.0.1:${listen.https} ssl;
    server_name ${TLS_NAME};
    ssl_certificate ${cert.certificate};
    ssl_certificate_key ${cert.key};
${location}
  }`
    : "";
  return `# Written by bench/baselines.ts: a plain reverse proxy with upstream keep-alive, for comparison.
daemon off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events {
  worker_connections 1024;
}
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  upstream app {
    server 127.0.0.1:${listen.app};
    keepalive 16;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:${listen.http};
${location}
  }${tls}
}
`;
}

/** Caddy's Caddyfile: no admin endpoint, no automatic HTTPS, no HTTP/3; `tls <cert> <key>` on the TLS site. */
export function caddyfile(listen: Listen, cert?: Cert): string {
  const tls = listen.https && cert
    ? `
https://${TLS_NAME}:${listen.https} {
	bind 127.0.0.1
	tls ${cert.certificate} ${cert.key}
	reverse_proxy 127.0.0.1:${listen.app}
}
`
    : "";
  return `# Written by bench/baselines.ts.
{
	admin off
	auto_https off
	servers {
		protocols h1 h2
	}
}

http://127.0.0.1:${listen.http} {
	bind 127.0.0.1
	reverse_proxy 127.0.0.1:${listen.app}
}
${tls}`;
}

/** HAProxy's config: one thread, connection reuse to the app; TLS with `crt` (certificate and key in one file). */
export function haproxyConfig(listen: Listen, combinedPem?: string): string {
  const tls = listen.https && combinedPem
    ? `
frontend tls
  bind 127.0.0.1:${listen.https} ssl crt ${combinedPem}
  default_backend app
`
    : "";
  return `# Written by bench/baselines.ts.
global
  nbthread 1
  maxconn 4096

defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always

frontend plain
  bind 127.0.0.1:${listen.http}
  default_backend app
${tls}
backend app
  server app 127.0.0.1:${listen.app}
`;
}

/** The three baselines, in the order they are measured. */
export const BASELINES: Baseline[] = [
  {
    name: "nginx",
    label: "nginx (1 worker, upstream keepalive)",
    binary: "/usr/sbin/nginx",
    versionArgs: ["-v"],
    async prepare(dir, listen, cert) {
      const conf = join(dir, "nginx.conf");
      await Deno.writeTextFile(conf, nginxConfig(dir, listen, cert));
      return { argv: [this.binary, "-p", `${dir}/`, "-e", join(dir, "error.log"), "-c", conf] };
    },
  },
  {
    name: "caddy",
    label: "Caddy (reverse_proxy)",
    binary: "/usr/bin/caddy",
    versionArgs: ["version"],
    async prepare(dir, listen, cert) {
      const conf = join(dir, "Caddyfile");
      await Deno.writeTextFile(conf, caddyfile(listen, cert));
      // Its storage and autosave go to the bench's dir, not to ~/.local/share/caddy.
      const env = { HOME: dir, XDG_DATA_HOME: join(dir, "data"), XDG_CONFIG_HOME: join(dir, "config") };
      return { argv: [this.binary, "run", "--adapter", "caddyfile", "--config", conf], env };
    },
  },
  {
    name: "haproxy",
    label: "HAProxy (nbthread 1, http-reuse always)",
    binary: "/usr/sbin/haproxy",
    versionArgs: ["-v"],
    async prepare(dir, listen, cert) {
      let combined: string | undefined;
      if (cert) {
        combined = join(dir, "haproxy.pem");
        const pem = cert.pem + await Deno.readTextFile(cert.key);
        await Deno.writeTextFile(combined, pem, { mode: 0o600 });
      }
      const conf = join(dir, "haproxy.cfg");
      await Deno.writeTextFile(conf, haproxyConfig(listen, combined));
      return { argv: [this.binary, "-f", conf, "-db"] };
    },
  },
];

/** `nginx/1.22.1` → `1.22.1`: the first version-looking word of `text`, or "". */
export function versionOf(text: string): string {
  return /\b(\d+\.\d+(?:\.\d+)?)\b/.exec(text)?.[1] ?? "";
}
