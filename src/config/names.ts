/**
 * Constants of the config files that light modules (the git hook's path) need without loading
 * the schema library.
 * @module
 */

/** App names: also used as directory, unit and process names. */
export const NAME_PATTERN = /^[a-z0-9][a-z0-9-]{0,62}$/;
