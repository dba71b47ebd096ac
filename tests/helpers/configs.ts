/** Config files the tests share. */

/** A deploy.yml that sets every key (a node app named web-2). */
export const FULL_DEPLOY_YML = [
  "name: web-2",
  "type: node",
  "healthCheck:",
  "  path: /ready",
  "  window: 2m",
  "  interval: 500ms",
  "  successes: 5",
  "  timeout: 5",
  "command: [node, server.js]",
  "build: npm run build",
  "hooks:",
  "  preDeploy: ./scripts/migrate.sh",
  "  postDeploy: [./notify, --ok]",
  "keepReleases: 10",
  "branch: release/v1",
  "watch: 0",
  "",
].join("\n");

/** proxy.yml's limits when it sets none. */
export const PROXY_DEFAULT_LIMITS = {
  maxConnections: 10_000,
  maxConnectionsPerIp: 256,
  headerTimeoutMs: 10_000,
  idleTimeoutMs: 60_000,
  requestTimeoutMs: 60_000,
  upstreamTimeoutMs: 60_000,
  sendTimeoutMs: 60_000,
};
/** proxy.yml's values without the file. */
export const PROXY_DEFAULTS = {
  http: 80,
  https: 443,
  trustedProxies: [],
  limits: PROXY_DEFAULT_LIMITS,
  priority: -5,
  http2: true,
};
