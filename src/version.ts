/** The tool's version, printed by `--version`. */
export const VERSION = "0.1.0";

/** Where releases (binaries, SHA256SUMS, deploy.schema.json) are published. */
export const RELEASES_URL = "https://github.com/deploy-paradigm/deploy-paradigm/releases";

/** The JSON Schema of deploy.yml, published with each release. */
export const SCHEMA_URL = `${RELEASES_URL}/latest/download/deploy.schema.json`;
