/**
 * The fleet dashboard's files (dashboard/), embedded in the binary with text imports and served
 * through the fleet API's `dashboard` hook. Only `deploy-paradigm fleet` imports this module.
 *
 * The script is ES modules: app.js boots (index.html loads it with `<script type="module">`), the
 * others only export. Each module is served as `/<name>.<hash>.js`, its `./other.js` specifiers
 * rewritten at start-up to the other modules' hashed names, so the hashes are computed leaf
 * modules first and a change anywhere renames every module that imports it (see
 * {@link linkModules}). index.html gets the hashed names of the boot module and the style sheet,
 * and a `modulepreload` link per other module (no waterfall of imports).
 *
 * Caching: the hashed names are cached for good (`immutable`) and index.html itself is
 * revalidated (`no-cache`); the plain names `/app.js` (the linked boot module) and `/style.css`
 * are served too, uncached.
 *
 * Every file is sent with a strict Content-Security-Policy (scripts, styles, images and
 * connections from this origin only, no inline script or style; frames only from the configured
 * Netdata origins), `X-Frame-Options: DENY` and `frame-ancestors 'none'` (the dashboard is never
 * framed), `nosniff` and `Referrer-Policy: no-referrer`.
 * @module
 */
import html from "../../dashboard/index.html" with { type: "text" };
import style from "../../dashboard/style.css" with { type: "text" };
import icon from "../../dashboard/favicon.svg" with { type: "text" };
import app from "../../dashboard/app.js" with { type: "text" };
import canary from "../../dashboard/canary.js" with { type: "text" };
import api from "../../dashboard/api.js" with { type: "text" };
import charts from "../../dashboard/charts.js" with { type: "text" };
import chartViews from "../../dashboard/chart_views.js" with { type: "text" };
import deployments from "../../dashboard/deployments.js" with { type: "text" };
import dom from "../../dashboard/dom.js" with { type: "text" };
import fleet from "../../dashboard/fleet.js" with { type: "text" };
import format from "../../dashboard/format.js" with { type: "text" };
import lines from "../../dashboard/lines.js" with { type: "text" };
import live from "../../dashboard/live.js" with { type: "text" };
import overview from "../../dashboard/overview.js" with { type: "text" };
import rolloutFormat from "../../dashboard/rollout_format.js" with { type: "text" };
import rollouts from "../../dashboard/rollouts.js" with { type: "text" };
import routes from "../../dashboard/routes.js" with { type: "text" };
import search from "../../dashboard/search.js" with { type: "text" };
import server from "../../dashboard/server.js" with { type: "text" };
import widgets from "../../dashboard/widgets.js" with { type: "text" };

/** The dashboard's ES modules by file name (a new file in dashboard/ needs its line here and above). */
const MODULES: Record<string, string> = {
  "app.js": app,
  "api.js": api,
  "canary.js": canary,
  "charts.js": charts,
  "chart_views.js": chartViews,
  "deployments.js": deployments,
  "dom.js": dom,
  "fleet.js": fleet,
  "format.js": format,
  "lines.js": lines,
  "live.js": live,
  "overview.js": overview,
  "rollout_format.js": rolloutFormat,
  "rollouts.js": rollouts,
  "routes.js": routes,
  "search.js": search,
  "server.js": server,
  "widgets.js": widgets,
};
/** The module index.html loads. */
const BOOT = "app.js";

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

/** A module as served: its path (`/<name>.<hash>.js`) and its text with the specifiers rewritten. */
export interface LinkedModule {
  path: string;
  body: string;
}

/**
 * The specifier of a static import or re-export statement, which starts a line (`import … from "…"`,
 * `import "…"`, `export … from "…"`; its list may span lines): text that merely contains
 * `from "…"` inside a statement, a string or a comment is left alone. Dynamic imports are not used.
 */
const SPECIFIER = /^((?:import|export)\b[^"'`;]*?\bfrom\s*|import\s*)(["'])([^"'\n]*)\2/gm;
/** The only specifiers the modules may use: another module of dashboard/, `./name.js`. */
const LOCAL = /^\.\/([\w-]+\.js)$/;

/**
 * Links the modules `sources` (file name → text): each one's `./name.js` specifiers become the
 * hashed names of those modules, and its own hashed name is the hash of that rewritten text (so
 * the imported modules are linked first). Throws on an import of anything else, an import cycle
 * (hashes could not be computed) or a module that `entry` does not reach.
 */
export function linkModules(sources: Record<string, string>, entry: string): Map<string, LinkedModule> {
  const linked = new Map<string, LinkedModule>();
  const chain: string[] = [];
  const link = (name: string): LinkedModule => {
    const done = linked.get(name);
    if (done) return done;
    if (chain.includes(name)) {
      throw new Error(`dashboard modules import each other in a cycle: ${[...chain, name].join(" → ")}`);
    }
    if (!Object.hasOwn(sources, name)) {
      throw new Error(
        chain.length
          ? `dashboard/${chain.at(-1)} imports "./${name}", which is not a dashboard module`
          : `no dashboard module ${name}`,
      );
    }
    chain.push(name);
    const body = sources[name].replace(SPECIFIER, (_, statement, quote, specifier: string) => {
      const local = LOCAL.exec(specifier);
      if (!local) throw new Error(`dashboard/${name} imports "${specifier}": only "./name.js" of dashboard/ is served`);
      return `${statement}${quote}.${link(local[1]).path}${quote}`;
    });
    chain.pop();
    const module = { path: `/${name.replace(/\.js$/, "")}.${contentHash(body)}.js`, body };
    linked.set(name, module);
    return module;
  };
  link(entry);
  const unused = Object.keys(sources).filter((name) => !linked.has(name));
  if (unused.length) throw new Error(`dashboard/${unused.join(", dashboard/")}: imported by no module`);
  return linked;
}

const modules = linkModules(MODULES, BOOT);
const boot = modules.get(BOOT)!;
const stylePath = `/style.${contentHash(style)}.css`;

/** index.html with the hashed asset names, and the other modules preloaded. */
function page(): string {
  const preloads = [...modules].filter(([name]) => name !== BOOT).map(([, module]) =>
    `\n    <link rel="modulepreload" href="${module.path}">`
  );
  const script = '<script type="module" src="/app.js"></script>';
  const replaced = html.replace(script, `<script type="module" src="${boot.path}"></script>${preloads.join("")}`)
    .replace('href="/style.css"', `href="${stylePath}"`);
  if (!replaced.includes(boot.path) || !replaced.includes(stylePath)) {
    throw new Error(`dashboard/index.html must have ${script} and href="/style.css"`);
  }
  return replaced;
}

const JS = "text/javascript; charset=utf-8";
const CSS = "text/css; charset=utf-8";
const index: Asset = { body: page(), type: "text/html; charset=utf-8", cache: REVALIDATE };
const assets = new Map<string, Asset>([
  ["/", index],
  ["/index.html", index],
  ...[...modules.values()].map(({ path, body }): [string, Asset] => [path, { body, type: JS, cache: IMMUTABLE }]),
  [stylePath, { body: style, type: CSS, cache: IMMUTABLE }],
  ["/app.js", { body: boot.body, type: JS, cache: REVALIDATE }],
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
