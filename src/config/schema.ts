/**
 * The schemas of `deploy.yml` (app identity, in the repo) and `config.yml` (environment, on the server).
 * One source for validation, defaults, and the JSON Schema printed by `deploy-paradigm schema`.
 * @module
 */
import { z } from "zod";
import { splitCommand } from "./argv.ts";
import { DEPLOY_EVENTS, targetSchema } from "../notify.ts";

import { NAME_PATTERN } from "./names.ts";

export { NAME_PATTERN };

/** The app types, in the order `init` detects them. */
export const APP_TYPES = ["python", "node", "docker", "static"] as const;

/** The process managers a server can use. */
export const MANAGERS = ["systemd", "pm2"] as const;

const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Parses `500ms`, `2s`, `1.5m`, `1h`, or a number of seconds, into milliseconds. */
export function parseDuration(value: string | number): number | undefined {
  if (typeof value === "number") return Number.isFinite(value) && value >= 0 ? finite(value * 1000) : undefined;
  const match = DURATION.exec(value.trim());
  return match ? finite(Number(match[1]) * UNIT_MS[match[2]]) : undefined;
}

/** `1e306` seconds or 400 nines of hours are no duration: they overflow to Infinity. */
function finite(ms: number): number | undefined {
  return Number.isFinite(ms) ? ms : undefined;
}

const MUST_BE_DURATION = 'must be a duration like "500ms", "2s" or "1m"';

const duration = (fallback: string) =>
  z.union([z.string(), z.number()], { error: MUST_BE_DURATION }).default(fallback).transform((value, ctx) => {
    const ms = parseDuration(value);
    if (ms === undefined) {
      ctx.issues.push({
        code: "custom",
        input: value,
        message: `${MUST_BE_DURATION} (got ${JSON.stringify(value)})`,
        continue: true,
      });
      return z.NEVER;
    }
    return ms;
  }).meta({ description: `A duration such as "500ms", "30s", "2m", or a number of seconds. Default ${fallback}.` });

const commandString = z.string().superRefine((value, ctx) => {
  const argv = splitCommand(value);
  if ("error" in argv) ctx.addIssue({ code: "custom", message: argv.error });
});

/** A command: a string split into words (no shell), or an argv list. */
const command = z.union([
  commandString,
  z.array(z.string().min(1, "must not be empty")).min(1, "must list at least the program to run"),
], { error: "must be a command: a string, or a list of the program and its arguments" }).meta({
  description: "A command, run without a shell: a string split at whitespace (quotes group words), or an argv list.",
});

const healthPath = z.string().regex(/^\/[^\s]*$/, 'must be a URL path starting with "/", e.g. "/health"');

const healthObject = z.strictObject({
  path: healthPath,
  window: duration("30s"),
  interval: duration("1s"),
  successes: z.int({ error: "must be a whole number from 1 to 100" }).min(1, "must be from 1 to 100").max(
    100,
    "must be from 1 to 100",
  ).default(3),
  timeout: duration("2s"),
});

/** The health check: the app is healthy after `successes` consecutive 2xx answers within `window`. */
const healthCheck = z.union([healthPath, healthObject], {
  error: 'must be a URL path such as "/health", or a mapping { path, window, interval, successes, timeout }',
}).transform((value) => typeof value === "string" ? healthObject.parse({ path: value }) : value).meta({
  description: 'A path such as "/health", or { path, window: 30s, interval: 1s, successes: 3, timeout: 2s }.',
});

const port = z.int({ error: "must be a whole number from 1 to 65535" }).min(1, "must be from 1 to 65535").max(
  65535,
  "must be from 1 to 65535",
);

/** `deploy.yml`, in the app's repository. */
export const deployFileSchema = z.strictObject({
  name: z.string().regex(
    NAME_PATTERN,
    "must be 1-63 lowercase letters, digits or dashes, starting with a letter or digit",
  )
    .meta({ description: "The app's name on the server: directory, process and unit name." }),
  type: z.enum(APP_TYPES, { error: `must be one of ${APP_TYPES.join(", ")}` }),
  healthCheck: healthCheck.optional(),
  command: command.optional().meta({ description: "How to start the app. Runs in the release directory." }),
  build: command.optional().meta({ description: "Replaces the type's build step." }),
  hooks: z.strictObject({
    preDeploy: command.optional().meta({ description: "Runs in the new release before the switch; failure aborts." }),
    postDeploy: command.optional().meta({ description: "Runs after a healthy deploy; failure is only reported." }),
  }).optional(),
  keepReleases: z.int({ error: "must be a whole number from 2 to 100" })
    .min(2, "must be at least 2: the serving release and the one before it are always kept")
    .max(100, "must be at most 100").default(3),
  branch: z.string().regex(/^[A-Za-z0-9._\/-]+$/, "must be a branch name").default("main"),
  dockerfile: z.string().regex(/^[^/\0][^\0]*$/, "must be a path inside the repository, e.g. Dockerfile")
    .refine((path) => !path.split("/").includes(".."), "must stay inside the repository (no ..)")
    .optional().meta({ description: "docker apps: the Dockerfile, relative to the repository (default Dockerfile)." }),
  buildArgs: z.record(z.string(), z.unknown())
    .superRefine((args, ctx) => {
      for (const [key, value] of Object.entries(args)) {
        if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) {
          ctx.addIssue({
            code: "custom",
            path: [key],
            message: `is not a build argument name: letters, digits and _, not starting with a digit`,
          });
        }
        if (!["string", "number", "boolean"].includes(typeof value)) {
          ctx.addIssue({ code: "custom", path: [key], message: "must be a string, a number or true/false" });
        }
      }
    })
    .transform((args) => Object.fromEntries(Object.entries(args).map(([key, value]) => [key, String(value)])))
    .optional().meta({ description: "docker apps: --build-arg values (not secret: they stay in the image)." }),
  containerPort: port.optional().meta({
    description: "docker apps: the port the container listens on (default 8000). Blue-green publishes it on " +
      "127.0.0.1 only (the proxy has the public port); restart publishes it as `port` on every interface.",
  }),
  watch: duration("20s").meta({
    description: "After a blue-green switch, how long the new release keeps being checked while the old one stays " +
      "warm; a failure switches traffic back. 0 turns it off.",
  }),
}).superRefine((value, ctx) => {
  if (value.type !== "static" && !value.healthCheck) {
    ctx.addIssue({
      code: "custom",
      path: ["healthCheck"],
      message: `is required for ${value.type} apps, e.g. healthCheck: /health`,
    });
  }
  if (value.type !== "docker") {
    for (const key of ["dockerfile", "buildArgs", "containerPort"] as const) {
      if (value[key] !== undefined) {
        ctx.addIssue({
          code: "custom",
          path: [key],
          message: `is for docker apps only (this app's type is ${value.type})`,
        });
      }
    }
  }
}).meta({ title: "deploy-paradigm deploy.yml", description: "App identity, committed in the app's repository." });

/** How a deploy switches traffic. */
export const STRATEGIES = ["blue-green", "restart"] as const;

/** The two slots of a blue-green app. */
export const SLOTS = ["blue", "green"] as const;

/** `config.yml`, on the server at /opt/deployments/<app>/config.yml. */
export const serverConfigSchema = z.strictObject({
  port: port.meta({ description: "The app's public port (the proxy listens on it under blue-green)." }),
  manager: z.enum(MANAGERS, { error: `must be one of ${MANAGERS.join(", ")}` }),
  env: z.string().regex(/^[A-Za-z0-9_.-]+$/, "must be a name such as production (letters, digits, . _ -)").default(
    "production",
  ),
  strategy: z.enum(STRATEGIES, { error: `must be one of ${STRATEGIES.join(", ")}` }).default("blue-green"),
  slots: z.strictObject({ blue: port, green: port }).optional()
    .meta({ description: "The internal ports of the two slots; chosen and written by the first deploy." }),
  drainTimeout: duration("30s"),
  notify: z.array(targetSchema(DEPLOY_EVENTS)).default([]).meta({
    description: "Where deploy outcomes are sent: [{ type: webhook|slack|discord, url, events: [success, failed, " +
      "rolled_back, cancelled] }] (events default to all).",
  }),
}).superRefine((value, ctx) => {
  const { slots } = value;
  if (slots && (slots.blue === slots.green || slots.blue === value.port || slots.green === value.port)) {
    ctx.addIssue({ code: "custom", path: ["slots"], message: "must be two different ports, neither of them port" });
  }
});

/** A validated deploy.yml, defaults applied. */
export type DeployFile = z.output<typeof deployFileSchema>;
/** A validated config.yml, defaults applied. */
export type ServerConfig = z.output<typeof serverConfigSchema>;
/** A normalized health check. */
export type HealthCheck = z.output<typeof healthObject>;

/** The JSON Schema of deploy.yml, for editors. */
export function deployFileJsonSchema(): Record<string, unknown> {
  return z.toJSONSchema(deployFileSchema, { io: "input", unrepresentable: "any" }) as Record<string, unknown>;
}
