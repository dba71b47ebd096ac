/**
 * Keys of one config file that belong in another (config.yml's `port` written in deploy.yml…): by
 * schema, what to say of each, made when said (./load.ts adds it to the "not a known key" problem). Filled by
 * ./schema.ts; kept apart so that load.ts needs no schema.
 * @module
 */
export const MISPLACED = new WeakMap<object, Readonly<Record<string, () => string>>>();
