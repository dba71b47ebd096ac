/**
 * The fleet dashboard's files (dashboard/), embedded in the binary with text imports and served
 * through the fleet API's `dashboard` hook. Only `deploy-paradigm fleet` imports this module.
 *
 * Caching: index.html names its script and style sheet by content hash (`/app.<hash>.js`), so
 * they are cached for good (`immutable`) and index.html itself is revalidated (`no-cache`); the
 * plain names (`/app.js`, `/style.css`) are served too, uncached.
 *
 * Every file is sent with a strict Content-Security-Policy (scripts, styles, images and
 * connections from this origin only, no inline script or style; frames only from the configured
 * Netdata origins), `X-Frame-Options: DENY` and `frame-ancestors 'none'` (the dashboard is never
 * framed), `nosniff` and `Referrer-Policy: no-referrer`.
 * @module
 */
import html from "../../dashboard/index.html" with { type: "text" };
import script from "../../dashboard/app.js" with { type: "text" };
import style from "../../dashboard/style.css" with { type: "text" };
import icon from "../../dashboard/favicon.svg" with { type: "text" };

/** A server as the dashboard needs it: its Netdata URL decides what may be framed. */
export interface DashboardServer {
  netdata?: string;
}

interface Asset {
  body: string;
  type: string;
  cache: string;
}

const REVALIDATE = "no-cache";
const IMMUTABLE = "public, max-age=31536000, immutable";

/** FNV-1a (32 bits) of `text`, in hex: a content hash for asset names (not for security). */
function contentHash(text: string): string {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return (hash >>> 0).toString(16).padStart(8, "0");
}

const scriptPath = `/app.${contentHash(script)}.js`;
const stylePath = `/style.${contentHash(style)}.css`;

/** index.html with the hashed asset names. */
function page(): string {
  const replaced = html.replace('src="/app.js"', `src="${scriptPath}"`).replace(
    'href="/style.css"',
    `href="${stylePath}"`,
  );
  if (!replaced.includes(scriptPath) || !replaced.includes(stylePath)) {
    throw new Error("dashboard/index.html must reference /app.js and /style.css");
  }
  return replaced;
}

const JS = "text/javascript; charset=utf-8";
const CSS = "text/css; charset=utf-8";
const index: Asset = { body: page(), type: "text/html; charset=utf-8", cache: REVALIDATE };
const assets = new Map<string, Asset>([
  ["/", index],
  ["/index.html", index],
  [scriptPath, { body: script, type: JS, cache: IMMUTABLE }],
  [stylePath, { body: style, type: CSS, cache: IMMUTABLE }],
  ["/app.js", { body: script, type: JS, cache: REVALIDATE }],
  ["/style.css", { body: style, type: CSS, cache: REVALIDATE }],
  ["/favicon.svg", { body: icon, type: "image/svg+xml", cache: REVALIDATE }],
]);

/** The paths the dashboard serves, with their sizes in bytes. */
export function dashboardFiles(): { path: string; bytes: number }[] {
  const encoder = new TextEncoder();
  return [...assets].map(([path, asset]) => ({ path, bytes: encoder.encode(asset.body).length }));
}

/**
 * The origins that may be framed: those of the servers' `netdata` URLs (http and https only), or
 * `'none'`.
 */
export function frameSources(servers: readonly DashboardServer[]): string {
  const origins = new Set<string>();
  for (const server of servers) {
    if (!server.netdata) continue;
    try {
      const url = new URL(server.netdata);
      if (url.protocol === "http:" || url.protocol === "https:") origins.add(url.origin);
    } catch {
      // Not a URL: config.ts refuses these; nothing to allow.
    }
  }
  return origins.size ? [...origins].sort().join(" ") : "'none'";
}

/** The Content-Security-Policy of the dashboard's files. */
export function contentSecurityPolicy(servers: readonly DashboardServer[] = []): string {
  return [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self'",
    "connect-src 'self'",
    `frame-src ${frameSources(servers)}`,
    "form-action 'self'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
  ].join("; ");
}

/**
 * Serves a dashboard file for `path` (undefined for any other path). `servers` are the configured
 * servers: their Netdata origins are the only frames the page may show.
 */
export function serveDashboard(path: string, servers: readonly DashboardServer[] = []): Response | undefined {
  const asset = assets.get(path);
  if (!asset) return undefined;
  return new Response(asset.body, {
    headers: {
      "content-type": asset.type,
      "cache-control": asset.cache,
      "content-security-policy": contentSecurityPolicy(servers),
      "x-content-type-options": "nosniff",
      "referrer-policy": "no-referrer",
      "x-frame-options": "DENY",
      "cross-origin-opener-policy": "same-origin",
      "cross-origin-resource-policy": "same-origin",
    },
  });
}
