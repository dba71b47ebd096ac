/**
 * Hash routes, pure (no DOM):
 *
 * - `#/`: the overview;
 * - `#/server/NAME[?app=&since=]`: one server;
 * - `#/search?q=&server=&app=&file=&range=&since=&until=`: log search;
 * - `#/deployments?server=&app=`: deployment history;
 * - `#/rollouts?app=`: rollouts from the laptop; `#/rollouts/ID`: one rollout.
 * @module
 */

/** A hash link: `#/path?k=v`, empty values left out. */
export function route(path, params = {}) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) if (value) query.set(key, String(value));
  const text = query.toString();
  return `#${path}${text ? `?${text}` : ""}`;
}

/** A link to one server's page. */
export const serverHref = (name, params) => route(`/server/${encodeURIComponent(name)}`, params);

/** A link to one rollout's page. */
export const rolloutHref = (id) => route(`/rollouts/${id}`);

/**
 * @typedef {object} Target What a hash names.
 * @property {"overview" | "server" | "search" | "deployments" | "rollouts" | "rollout"} view
 * @property {string} nav the navigation link to mark as current
 * @property {string} key the view instance (`server:NAME` for a server): the same key keeps the view on screen
 * @property {URLSearchParams} params
 * @property {string} [server] the server's name (view "server")
 * @property {number} [rollout] the rollout's id (view "rollout")
 */

/**
 * Which view a hash names (anything unknown is the overview).
 * @param {string} hash
 * @returns {Target}
 */
export function parseHash(hash) {
  const raw = hash.replace(/^#/, "") || "/";
  const at = raw.indexOf("?");
  const path = at < 0 ? raw : raw.slice(0, at);
  const params = new URLSearchParams(at < 0 ? "" : raw.slice(at + 1));
  const server = /^\/server\/([^/]+)$/.exec(path);
  if (server) {
    let name;
    try {
      name = decodeURIComponent(server[1]);
    } catch {
      name = server[1];
    }
    return { view: "server", nav: "overview", key: `server:${name}`, params, server: name };
  }
  if (path === "/search") return { view: "search", nav: "search", key: "search", params };
  if (path === "/deployments") return { view: "deployments", nav: "deployments", key: "deployments", params };
  if (path === "/rollouts") return { view: "rollouts", nav: "rollouts", key: "rollouts", params };
  const rollout = /^\/rollouts\/([1-9]\d{0,15})$/.exec(path);
  if (rollout) {
    return { view: "rollout", nav: "rollouts", key: `rollout:${rollout[1]}`, params, rollout: Number(rollout[1]) };
  }
  return { view: "overview", nav: "overview", key: "overview", params };
}

/** `url` normalized when it is an http(s) URL (safe to link and frame), else null. */
export function httpUrl(url) {
  try {
    const parsed = new URL(url);
    return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
  } catch {
    return null;
  }
}
