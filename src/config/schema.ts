/**
 * The schemas of `deploy.yml` (app identity, in the repo) and `config.yml` (environment, on the server).
 * One source for validation, defaults, and the JSON Schema printed by `deploy-paradigm schema`.
 * @module
 */
import { isAbsolute } from "node:path";
import { z } from "zod";
import { splitCommand } from "./argv.ts";
import { DEPLOY_EVENTS, targetSchema } from "../notify.ts";
import { APP_TYPES, DEPLOYERS } from "../deployers/mod.ts";
import { MANAGER_NAMES } from "../managers/mod.ts";
import { TARGET_TYPES } from "../notifiers/mod.ts";
import { STRATEGIES } from "../deploy/strategies/names.ts";

import { NAME_PATTERN } from "./names.ts";
import { jobNameProblem } from "../cron/job.ts";
import { isScheduleError, parseSchedule } from "../cron/schedule.ts";

export { NAME_PATTERN };

/** The app types (src/deployers/mod.ts). */
export { APP_TYPES };

/** The process managers a server can use (src/managers/mod.ts). */
export { MANAGER_NAMES };

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

/** A duration in config (`"2s"`, or seconds), to milliseconds; `fallback` when absent. */
export const duration = (fallback: string, maxMs = Infinity, minMs = 0) =>
  z.union([z.string(), z.number()], { error: MUST_BE_DURATION }).default(fallback).transform((value, ctx) => {
    const ms = parseDuration(value);
    if (ms === undefined || ms > maxMs || ms < minMs) {
      ctx.issues.push({
        code: "custom",
        input: value,
        message: ms === undefined
          ? `${MUST_BE_DURATION} (got ${JSON.stringify(value)})`
          : ms < minMs
          ? `must be at least ${minMs / 1000}s (got ${JSON.stringify(value)})`
          : `must be at most ${maxMs / 3_600_000}h (got ${JSON.stringify(value)})`,
        continue: true,
      });
      return z.NEVER;
    }
    return ms;
  }).meta({ description: `A duration such as "500ms", "30s", "2m", or a number of seconds. Default ${fallback}.` });

/** Control characters in a word would end a line of a unit file, or hide in a terminal. */
// deno-lint-ignore no-control-regex
const CONTROL = /[\x00-\x08\x0b-\x1f\x7f]/;
const NO_CONTROL = "must not hold control characters (such as a carriage return or an escape)";

const commandString = z.string().superRefine((value, ctx) => {
  const argv = splitCommand(value);
  if ("error" in argv) ctx.addIssue({ code: "custom", message: argv.error });
  else if (CONTROL.test(value)) ctx.addIssue({ code: "custom", message: NO_CONTROL });
});

/** A command: a string split into words (no shell), or an argv list. */
const command = z.union([
  commandString,
  z.array(
    z.string().min(1, "must not be empty").refine((word) => !CONTROL.test(word) && !word.includes("\n"), {
      message: `${NO_CONTROL} or a newline`,
    }),
  ).min(1, "must list at least the program to run"),
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

/** A TCP port, 1-65535. */
export const port = z.int({ error: "must be a whole number from 1 to 65535" }).min(1, "must be from 1 to 65535").max(
  65535,
  "must be from 1 to 65535",
);

/** A process type's name in deploy.yml `processes` (and a Procfile): `web`, `worker`, `mail-queue`. */
export const PROCESS_NAME = /^[a-z][a-z0-9-]{0,29}$/;
/** Most instances of one process type on one server. */
export const MAX_INSTANCES = 16;

const processObject = z.strictObject({
  command: command.optional().meta({ description: "How to start it (web: the type's default when left out)." }),
  instances: z.int({ error: `must be a whole number from 1 to ${MAX_INSTANCES}` })
    .min(1, `must be from 1 to ${MAX_INSTANCES}`).max(MAX_INSTANCES, `must be from 1 to ${MAX_INSTANCES}`).default(1)
    .meta({ description: "How many processes run (web: behind the proxy, each on its own port). Default 1." }),
  stopTimeout: duration("30s", 3_600_000, 1000).meta({
    description: "How long a stopping process may take after SIGTERM (its job in hand) before SIGKILL. Default 30s.",
  }),
}, { error: "must be a command, or a mapping { command, instances, stopTimeout }" });

/** One process type: a command alone, or `{ command, instances, stopTimeout }`. */
const processSpec = z.preprocess(
  (value) => typeof value === "string" || Array.isArray(value) ? { command: value } : value,
  processObject,
);

/** A normalized process type of deploy.yml. */
export type ProcessSpec = z.output<typeof processObject>;

/** Most cron jobs of one app. */
const MAX_CRON_JOBS = 50;

/** One scheduled job (deploy.yml `cron:`), run in the serving release: see src/cron/. */
const cronJob = z.strictObject({
  name: z.string().superRefine((name, ctx) => {
    const problem = jobNameProblem(name);
    if (problem) ctx.addIssue({ code: "custom", message: problem });
  }).meta({ description: "Names its units, lock and log: lowercase letters, digits and -, e.g. nightly-report." }),
  schedule: z.string().superRefine((text, ctx) => {
    const parsed = parseSchedule(text);
    if (isScheduleError(parsed)) {
      ctx.addIssue({ code: "custom", message: parsed.error, params: { column: parsed.column } });
    }
  }).meta({
    description: 'A 5-field cron schedule in the server\'s time ("*/5 * * * *", "0 3 * * 1-5") or @daily etc.',
  }),
  command: command.meta({ description: "What runs, in the serving release, as the app's user with its .env." }),
  timeout: duration("1h", 24 * 3_600_000, 1000).meta({
    description: "A run still going after this is stopped (SIGTERM, then SIGKILL). Default 1h, at most 24h.",
  }),
}, { error: "must be a job: { name, schedule, command, timeout }" });

/** A job of deploy.yml `cron:`, validated. */
export type CronJobSpec = z.output<typeof cronJob>;

/** The keys of deploy.yml that only some app types take, with those types. */
const TYPE_KEYS = [
  ...Map.groupBy(APP_TYPES.flatMap((type) => (DEPLOYERS[type].keys ?? []).map((key) => ({ key, type }))), (k) => k.key),
].map(([key, owners]) => [key, owners.map((owner) => owner.type)] as const);

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
  processes: z.record(z.string(), processSpec, { error: "must be a mapping of process names to commands" })
    .superRefine((processes, ctx) => {
      for (const [name, spec] of Object.entries(processes)) {
        if (!PROCESS_NAME.test(name)) {
          ctx.addIssue({
            code: "custom",
            path: [name],
            message: `is named ${JSON.stringify(name)}: a process name is lowercase letters, digits and -, ` +
              "starting with a letter (up to 30), e.g. worker",
          });
        } else if (name === "blue" || name === "green") {
          ctx.addIssue({
            code: "custom",
            path: [name],
            message: `is named after a blue-green slot: call the process something else than blue or green`,
          });
        } else if (name !== "web" && spec.command === undefined) {
          ctx.addIssue({ code: "custom", path: [name, "command"], message: "is required (how to start it)" });
        }
      }
    }).optional().meta({
      description: "The app's processes: `web` (behind the proxy and its health check; `command` alone is web) " +
        "and others such as `worker: python worker.py`, each a command or { command, instances, stopTimeout }. " +
        "Without it, a Procfile in the repository is read.",
    }),
  cron: z.array(cronJob, {
    error: "must be a list of jobs, e.g. - { name: cleanup, schedule: '@daily', command: ... }",
  })
    .max(MAX_CRON_JOBS, `must list at most ${MAX_CRON_JOBS} jobs`)
    .superRefine((jobs, ctx) => {
      const seen = new Map<string, number>();
      for (const [i, job] of jobs.entries()) {
        const first = seen.get(job.name);
        if (first !== undefined) {
          ctx.addIssue({
            code: "custom",
            path: [i, "name"],
            message: `repeats cron.${first}.name: name each job once`,
          });
        } else seen.set(job.name, i);
      }
    }).default([]).meta({
      description: "Scheduled jobs, run in the serving release with its .env and user; never two runs of one job " +
        "at once. Each { name, schedule, command, timeout }.",
    }),
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
  const deployer = DEPLOYERS[value.type];
  if (deployer.healthCheckRequired && !value.healthCheck) {
    ctx.addIssue({
      code: "custom",
      path: ["healthCheck"],
      message: `is required for ${value.type} apps, e.g. healthCheck: /health`,
    });
  }
  const web = value.processes?.web;
  if (web?.command !== undefined && value.command !== undefined) {
    ctx.addIssue({
      code: "custom",
      path: ["processes", "web", "command"],
      message: "repeats the top-level command: keep one of them (command alone is the web process)",
    });
  }
  if (value.type === "docker") {
    if (value.cron.length) {
      ctx.addIssue({
        code: "custom",
        path: ["cron"],
        message: "is not for docker apps yet (their release has no runtime)",
      });
    }
    for (const [name, spec] of Object.entries(value.processes ?? {})) {
      if (name !== "web") {
        ctx.addIssue({
          code: "custom",
          path: ["processes", name],
          message: "cannot be added: docker apps run one web container (no other processes yet)",
        });
      } else if (spec.instances > 1) {
        ctx.addIssue({
          code: "custom",
          path: ["processes", "web", "instances"],
          message: "must be 1: docker apps run one web container",
        });
      }
    }
  }
  for (const [key, owners] of TYPE_KEYS) {
    if (value[key] !== undefined && !deployer.keys?.includes(key)) {
      ctx.addIssue({
        code: "custom",
        path: [key],
        message: `is for ${owners.join(", ")} apps only (this app's type is ${value.type})`,
      });
    }
  }
}).meta({ title: "deploy-paradigm deploy.yml", description: "App identity, committed in the app's repository." });

/** How a deploy switches traffic. */
export { STRATEGIES };

/** The two slots of a blue-green app. */
export const SLOTS = ["blue", "green"] as const;

/** Longest host name (RFC 1035 §2.3.4, without the final dot). */
const MAX_HOST_NAME = 253;
/** A certificate holds at most 100 names (Let's Encrypt's limit). */
const MAX_DOMAINS = 100;
const IPV4 = /^\d{1,3}(\.\d{1,3}){3}$/;
const LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/**
 * What is wrong with `value` as a domain of config.yml, or undefined when it is a valid host name
 * (RFC 1123 labels, at most 253 characters; `*.example.com` as a wildcard). Case is ignored. The
 * message says what to write instead where it can: it is shown after the key, e.g.
 * `"domains.1" must be a host name, not a URL: write "example.com"`.
 */
export function hostNameProblem(value: string): string | undefined {
  const name = value.toLowerCase();
  const host = (text: string) => {
    try {
      return new URL(`http://${text}`).hostname;
    } catch {
      return undefined;
    }
  };
  const instead = (text: string | undefined) => text && !hostNameProblem(text) ? `: write "${text}"` : "";
  if (name === "") return "is empty: write a host name such as example.com";
  if (/^[a-z][a-z0-9+.-]*:\/\//.test(name)) {
    return `must be a host name, not a URL${instead(host(name.replace(/^[^:]*:\/\//, "")))}`;
  }
  if (name.includes("/")) return `must be a host name without a path${instead(host(name))}`;
  if (
    IPV4.test(name.replace(/:\d*$/, "")) || /^\[.*\](:\d*)?$/.test(name) ||
    (name.includes(":") && host(`[${name}]`) !== undefined)
  ) {
    return "must be a host name, not an IP address (an app without domains is reached on its own port)";
  }
  if (/^[^:]+:\d*$/.test(name)) {
    return `must be a host name without a port (the proxy's ports are set in proxy.yml)${instead(name.split(":")[0])}`;
  }
  // deno-lint-ignore no-control-regex
  if (/[^\x00-\x7f]/.test(name)) {
    const ascii = host(name);
    return "must be written in ASCII" + (ascii && ascii !== name ? `: write its punycode form "${ascii}"` : "");
  }
  if (name.length > MAX_HOST_NAME) return `is longer than ${MAX_HOST_NAME} characters (${name.length})`;
  if (name.endsWith(".") && name.length > 1) return `must not end with a dot${instead(name.replace(/\.+$/, ""))}`;
  const labels = name.split(".");
  if (labels.slice(1).includes("*") || labels.some((label) => label !== "*" && label.includes("*"))) {
    return "may use * only as the whole first label, as in *.example.com";
  }
  const rest = labels[0] === "*" ? labels.slice(1) : labels;
  if (labels[0] === "*" && rest.length < 2) return "must have at least two labels after *., as in *.example.com";
  if (/^\.[^.]/.test(name) && !hostNameProblem(`*${name}`)) {
    return `must not start with a dot: write "${name.slice(1)}", or "*${name}" for every name under it`;
  }
  if (rest.includes("")) return "has an empty label (a leading dot, or two dots in a row)";
  const odd = /[^a-z0-9.*-]/.exec(name);
  if (odd) return `may hold only letters, digits, "-" and ".", not ${JSON.stringify(odd[0])}`;
  const long = rest.find((label) => label.length > 63);
  if (long) return `has a label longer than 63 characters ("${long.slice(0, 20)}...")`;
  const dashed = rest.find((label) => !LABEL.test(label));
  if (dashed) return `has a label that starts or ends with "-" ("${dashed}")`;
  if (/^\d+$/.test(rest.at(-1)!)) return "must not end in an all-digit label (it would read as an IP address)";
  return undefined;
}

/**
 * config.yml `domains`: host names, lowercased, each once. Every entry is checked here, in one
 * pass (a wrong type, a bad name, a repeat), so that one bad entry does not hide the others.
 */
const domainList = z.array(z.unknown(), {
  error: "must be a list of host names, e.g. [example.com, www.example.com]",
}).max(MAX_DOMAINS, `must list at most ${MAX_DOMAINS} names (a certificate holds no more)`)
  .superRefine((names, ctx) => {
    const seen = new Map<string, number>();
    for (const [i, name] of names.entries()) {
      const problem = typeof name === "string" ? hostNameProblem(name) : "must be a host name such as example.com";
      const first = typeof name === "string" ? seen.get(name.toLowerCase()) : undefined;
      if (problem) ctx.addIssue({ code: "custom", path: [i], message: problem });
      else if (first !== undefined) {
        ctx.addIssue({ code: "custom", path: [i], message: `repeats domains.${first}: list each name once` });
      } else seen.set((name as string).toLowerCase(), i);
    }
  }).transform((names) => names.map((name) => String(name).toLowerCase())).default([]).meta({
    description: 'The host names the proxy routes to this app on its shared HTTP/HTTPS ports ("*.example.com" ' +
      "for every name under example.com). Each name belongs to one app. None: the app is served on its own port.",
  });

/** An absolute path on the server. */
export const absolutePath = z.string().refine(
  (path) => isAbsolute(path) && !path.includes("\0") && !path.split("/").includes(".."),
  "must be an absolute path without .., e.g. /etc/ssl/private/example.key",
);

/** `config.yml`, on the server at /opt/deployments/<app>/config.yml. */
export const serverConfigSchema = z.strictObject({
  port: port.meta({ description: "The app's public port (the proxy listens on it under blue-green)." }),
  manager: z.enum(MANAGER_NAMES, { error: `must be one of ${MANAGER_NAMES.join(", ")}` }),
  env: z.string().regex(/^[A-Za-z0-9_.-]+$/, "must be a name such as production (letters, digits, . _ -)").default(
    "production",
  ),
  strategy: z.enum(STRATEGIES, { error: `must be one of ${STRATEGIES.join(", ")}` }).default(STRATEGIES[0]),
  slots: z.strictObject({ blue: port, green: port }).optional()
    .meta({ description: "The internal ports of the two slots; chosen and written by the first deploy." }),
  instancePorts: z.strictObject({
    blue: z.array(port).max(MAX_INSTANCES - 1).optional(),
    green: z.array(port).max(MAX_INSTANCES - 1).optional(),
  }).optional().meta({
    description: "The internal ports of web instances 2, 3, … of each slot (deploy.yml processes.web.instances); " +
      "chosen and written by deploys.",
  }),
  drainTimeout: duration("30s"),
  notify: z.array(targetSchema(DEPLOY_EVENTS)).default([]).meta({
    description: `Where deploy outcomes are sent: [{ type: ${TARGET_TYPES.join("|")}, url, events: [success, failed, ` +
      "rolled_back, cancelled, cron_failed] }] (events default to all).",
  }),
  domains: domainList,
  tls: z.strictObject({
    certificate: absolutePath.meta({ description: "PEM certificate chain for the app's domains." }),
    key: absolutePath.meta({ description: "PEM private key of the certificate (keep it 0600, root's)." }),
  }).optional().meta({
    description: "Bring your own certificate (your own CA): served for the app's domains instead of an ACME one.",
  }),
  hsts: z.boolean({ error: "must be true or false" }).default(false).meta({
    description: "Send Strict-Transport-Security: max-age=31536000 on HTTPS answers (default false).",
  }),
  user: z.string().regex(
    /^[a-z_][a-z0-9_-]{0,31}$/,
    "must be a user name (lowercase letters, digits, _ and -, starting with a letter or _; up to 32)",
  ).optional().meta({
    description: "The existing user the app runs, builds and runs its hooks as (default app-<name>, which " +
      "setup creates); root runs it as root.",
  }),
}).superRefine((value, ctx) => {
  const { slots } = value;
  if (slots && (slots.blue === slots.green || slots.blue === value.port || slots.green === value.port)) {
    ctx.addIssue({ code: "custom", path: ["slots"], message: "must be two different ports, neither of them port" });
  }
  if (value.domains.length === 0) {
    const https = "is for apps with domains (HTTPS is served on the shared port, by host name)";
    if (value.tls) ctx.addIssue({ code: "custom", path: ["tls"], message: https });
    if (value.hsts) ctx.addIssue({ code: "custom", path: ["hsts"], message: https });
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
