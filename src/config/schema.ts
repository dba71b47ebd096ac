/**
 * The schemas of `deploy.yml` (app identity, in the repo) and `config.yml` (environment, on the server).
 * One source for validation, defaults, and the JSON Schema printed by `deploy-paradigm schema`. Their parts:
 * ./fields.ts (durations, commands, the health check, ports) and ./release_keys.ts (processes, cron,
 * gates, canary).
 * @module
 */
import { isAbsolute } from "node:path";
import { z } from "zod";
import { didYouMean } from "../errors.ts";
import { DEPLOY_EVENTS, targetSchema } from "../notify.ts";
import { APP_TYPES, DEPLOYERS } from "../deployers/mod.ts";
import { MANAGER_NAMES } from "../managers/mod.ts";
import { TARGET_TYPES } from "../notifiers/mod.ts";
import { STRATEGIES } from "../deploy/strategies/names.ts";

import { crossChecks } from "./cross_checks.ts";
import { MISPLACED } from "./misplaced.ts";
import { appPaths } from "../paths.ts";
import { NAME_PATTERN, reservedName } from "./names.ts";
import { command, duration, healthCheck, type healthObject, port } from "./fields.ts";
import {
  canaryObject,
  cronJob,
  gateSpec,
  MAX_CRON_JOBS,
  MAX_INSTANCES,
  PROCESS_NAME,
  processSpec,
} from "./release_keys.ts";

export { NAME_PATTERN };

/** The app types (src/deployers/mod.ts). */
export { APP_TYPES };

/** The process managers a server can use (src/managers/mod.ts). */
export { MANAGER_NAMES };

/**
 * A branch name as `git check-ref-format --branch` takes it, in a narrower alphabet: a name git
 * refuses (`a..b`, `x.lock`, `-x`) would pass here and then no push could ever deploy it.
 */
const BRANCH = /^(?!-|\/|refs\/|HEAD$)(?!.*(?:\.\.|\/\/|\/\.|\.lock\/|\.lock$|[\/.]$))(?!\.)[A-Za-z0-9._\/-]+$/;

/** A path inside the repository (relative, no `..`), e.g. `example`. */
function repoPath(example: string) {
  return z.string().regex(/^[^/\0][^\0]*$/, `must be a path inside the repository, e.g. ${example}`)
    .refine((path) => !path.split("/").includes(".."), "must stay inside the repository (no ..)");
}

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
    .refine((name) => !reservedName(name), { error: (issue) => reservedName(issue.input as string) })
    .meta({ description: "The app's name on the server: directory, process and unit name." }),
  type: z.enum(APP_TYPES, { error: `must be one of ${APP_TYPES.join(", ")}` }),
  healthCheck: healthCheck.optional(),
  command: command.optional().meta({ description: "How to start the app. Runs in the release directory." }),
  processes: z.record(z.string(), processSpec, { error: "must be a mapping of process names to commands" })
    .check(crossChecks((processes, ctx, ok) => {
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
        } else if (name !== "web" && ok(name) && spec.command === undefined) {
          ctx.addIssue({ code: "custom", path: [name, "command"], message: "is required (how to start it)" });
        }
      }
    })).optional().meta({
      description: "The app's processes: `web` (behind the proxy and its health check; `command` alone is web) " +
        "and others such as `worker: python worker.py`, each a command or { command, instances, stopTimeout }. " +
        "Without it, a Procfile in the repository is read.",
    }),
  cron: z.array(cronJob, {
    error: "must be a list of jobs, e.g. - { name: cleanup, schedule: '@daily', command: ... }",
  })
    .max(MAX_CRON_JOBS, `must list at most ${MAX_CRON_JOBS} jobs`)
    .check(z.superRefine((jobs, ctx) => {
      // Also when other problems were found (every problem at once): jobs may be anything here.
      if (!Array.isArray(jobs)) return;
      const seen = new Map<string, number>();
      for (const [i, job] of jobs.entries()) {
        if (typeof job?.name !== "string") continue;
        const first = seen.get(job.name);
        if (first !== undefined) {
          ctx.addIssue({
            code: "custom",
            path: [i, "name"],
            message: `repeats cron.${first}.name: name each job once`,
          });
        } else seen.set(job.name, i);
      }
    }, { when: () => true })).default([]).meta({
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
  branch: z.string().regex(
    BRANCH,
    "must be a branch name git accepts, such as main or release/v2 (letters, digits, " +
      ". _ - and /; not starting with -, / or refs/, no .. or //, no part starting with . or ending with .lock, not HEAD)",
  )
    .default("main"),
  dockerfile: repoPath("Dockerfile")
    .optional().meta({ description: "docker apps: the Dockerfile, relative to the repository (default Dockerfile)." }),
  root: repoPath("dist").optional().meta({
    description: "static apps: the directory the proxy serves, relative to the repository, after the build " +
      "(default: the whole release), e.g. dist with build: npm run build.",
  }),
  buildArgs: z.record(z.string(), z.unknown())
    .superRefine((args, ctx) => {
      for (const [key, value] of Object.entries(args)) {
        if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) {
          ctx.addIssue({
            code: "custom",
            path: [key],
            message: `is not a build argument name: letters, digits and _, not starting with a digit`,
            params: { atKey: true },
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
  gates: z.array(gateSpec, { error: "must be a list of checks, e.g. - { command: ./scripts/smoke.sh, timeout: 2m }" })
    .max(10, "must list at most 10 gates").optional().meta({
      description: "Checks run against the new release (DEPLOY_URL) before traffic moves to it (blue-green only); " +
        "a failing one fails the deploy. Each a command or { command, timeout: 2m }. `rollback` runs none.",
    }),
  canary: z.preprocess(
    (value) => value === true ? {} : value === false ? undefined : value,
    canaryObject.optional(),
  ).meta({
    description: "Blue-green only: move traffic to the new release step by step, judging its 5xx rate and p95 " +
      "latency against the old one's; true for the defaults. The push stays open for the whole canary " +
      "(steps × interval, longer while it waits for requests); `canary <app> promote|abort` decides it by hand.",
    alsoAccepts: [{ type: "boolean" }],
  }),
}).check(crossChecks((value, ctx, ok) => {
  if (!ok("type")) return; // every check below depends on it
  const deployer = DEPLOYERS[value.type];
  if (deployer.healthCheckRequired && !value.healthCheck && ok("healthCheck")) {
    ctx.addIssue({
      code: "custom",
      path: ["healthCheck"],
      message: `is required for ${value.type} apps, e.g. healthCheck: /health`,
    });
  }
  const web = ok("processes.web") ? value.processes?.web : undefined;
  if (web?.command !== undefined && value.command !== undefined) {
    ctx.addIssue({
      code: "custom",
      path: ["processes", "web", "command"],
      message: "repeats the top-level command: keep one of them (command alone is the web process)",
    });
  }
  // A static app with a web command runs it as any app runs its process: checked before it gets traffic.
  const webCommand = value.type !== "static" || value.healthCheck || !ok("healthCheck", "processes.web")
    ? undefined
    : value.command !== undefined
    ? ["command"]
    : web?.command !== undefined
    ? ["processes", "web", "command"]
    : undefined;
  if (value.root !== undefined && ok("root", "command", "processes.web") && (value.command ?? web?.command)) {
    ctx.addIssue({
      code: "custom",
      path: ["root"],
      message: "is the directory the proxy serves, and this static app runs a command that serves itself: remove one",
    });
  }
  if (webCommand) {
    ctx.addIssue({
      code: "custom",
      path: webCommand,
      message: "runs a process, which needs a healthCheck (e.g. healthCheck: /health); without a command, " +
        "a static app's files are served as they are",
    });
  }
  if (value.type === "docker") {
    if (ok("cron") && value.cron.length) {
      ctx.addIssue({
        code: "custom",
        path: ["cron"],
        message: "is not for docker apps yet (their release has no runtime)",
      });
    }
    for (const [name, spec] of Object.entries(ok("processes") ? value.processes ?? {} : {})) {
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
    if (value[key] !== undefined && ok(key) && !deployer.keys?.includes(key)) {
      ctx.addIssue({
        code: "custom",
        path: [key],
        message: `is for ${owners.join(", ")} apps only (this app's type is ${value.type})`,
      });
    }
  }
})).meta({ title: "deploy-paradigm deploy.yml", description: "App identity, committed in the app's repository." });

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
      "rolled_back, cancelled, refused, cron_failed] }] (events default to all).",
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
    description: "The existing user the app runs and runs its hooks as (default app-<name>, which setup " +
      "creates; build-<app> builds its releases); root runs it all as root.",
  }),
}).check(crossChecks((value, ctx, ok) => {
  routingChecks(value, ctx, ok);
  if (ok("instancePorts", "slots", "port") && value.instancePorts) {
    // Each internal port is one process's: an instance's must be no other port of the app's.
    const owners = new Map<number, string>([[value.port, "the app's port"]]);
    for (const [slot, port] of Object.entries(value.slots ?? {})) owners.set(port, `the ${slot} slot's port`);
    for (const [slot, ports] of Object.entries(value.instancePorts)) {
      (ports ?? []).forEach((port, i) => {
        const owner = owners.get(port);
        if (owner) {
          ctx.addIssue({
            code: "custom",
            path: ["instancePorts", slot, i],
            message: `is ${port}, ${owner} already: each web instance needs a port of its own (remove ` +
              "instancePorts: and the next deploy chooses them)",
          });
        }
        owners.set(port, `instancePorts.${slot}.${i}`);
      });
    }
  }
}));

/** The keys of config.yml the proxy routes an app by (./route_config.ts); it ignores the others' problems. */
export const ROUTING_KEYS = ["port", "strategy", "slots", "domains", "tls", "hsts"] as const;

/** The routing keys' values, as {@link routeConfigSchema} reads them. */
interface RoutingValues {
  port: number;
  slots?: { blue: number; green: number };
  domains: string[];
  tls?: unknown;
  hsts: boolean;
}

/** The checks across config.yml's routing keys: the slots' ports, and HTTPS keys that need domains. */
function routingChecks(
  value: RoutingValues,
  ctx: z.RefinementCtx<RoutingValues>,
  ok: (...paths: ("port" | "slots" | "domains" | "tls" | "hsts")[]) => boolean,
): void {
  const slots = ok("slots", "port") ? value.slots : undefined;
  if (slots && (slots.blue === slots.green || slots.blue === value.port || slots.green === value.port)) {
    ctx.addIssue({
      code: "custom",
      path: ["slots"],
      message: `must be two different ports, neither of them the app's port ${value.port} (remove slots: and the ` +
        `next deploy chooses them)`,
    });
  }
  if (ok("domains") && value.domains.length === 0) {
    const https = "is for apps with domains (HTTPS is served on the shared port, by host name)";
    if (value.tls && ok("tls")) ctx.addIssue({ code: "custom", path: ["tls"], message: https });
    if (value.hsts && ok("hsts")) ctx.addIssue({ code: "custom", path: ["hsts"], message: https });
  }
}

/**
 * config.yml's routing keys, checked as {@link serverConfigSchema} checks them; every other key is
 * ignored, but for an unknown key that may be a routing key misspelled (`domain:`), refused.
 */
export const routeConfigSchema = z.looseObject(
  Object.fromEntries(ROUTING_KEYS.map((key) => [key, serverConfigSchema.shape[key]])) as Pick<
    typeof serverConfigSchema.shape,
    typeof ROUTING_KEYS[number]
  >,
).check(crossChecks((value, ctx, ok) => {
  routingChecks(value, ctx, ok);
  const known = Object.keys(serverConfigSchema.shape);
  for (const key of Object.keys(value)) {
    if (known.includes(key)) continue;
    const guess = didYouMean(key, known);
    if (guess !== undefined && (ROUTING_KEYS as readonly string[]).includes(guess)) {
      ctx.addIssue({ code: "unrecognized_keys", keys: [key], path: [], input: value });
    }
  }
}));

/** config.yml's routing keys, validated, defaults applied. */
export type RouteConfigKeys = Pick<ServerConfig, typeof ROUTING_KEYS[number]>;

/** Each file's keys that are the other's: the problem says where they go. */
function misplaced(own: z.ZodObject, other: z.ZodObject, where: () => string): void {
  MISPLACED.set(
    own,
    Object.fromEntries(Object.keys(other.shape).filter((key) => !(key in own.shape)).map((key) => [key, where])),
  );
}
misplaced(
  deployFileSchema,
  serverConfigSchema,
  () => `it goes in config.yml on the server (${appPaths("<app>").config}), not in the repository`,
);
misplaced(serverConfigSchema, deployFileSchema, () => "it goes in deploy.yml, in the app's repository");

/** A validated deploy.yml, defaults applied. */
export type DeployFile = z.output<typeof deployFileSchema>;
/** A validated config.yml, defaults applied. */
export type ServerConfig = z.output<typeof serverConfigSchema>;
/** A normalized health check. */
export type HealthCheck = z.output<typeof healthObject>;

/** The JSON Schema of deploy.yml, for editors. */
export function deployFileJsonSchema(): Record<string, unknown> {
  return z.toJSONSchema(deployFileSchema, {
    io: "input",
    unrepresentable: "any",
    // A key that also takes a shorthand (`canary: true`, a gate as a command) says so in its meta.
    override: ({ jsonSchema }) => {
      const schema = jsonSchema as Record<string, unknown>;
      const also = schema.alsoAccepts as object[] | undefined;
      if (!also) return;
      const { description, alsoAccepts: _, ...rest } = schema;
      for (const key of Object.keys(schema)) delete schema[key];
      Object.assign(schema, { ...(description ? { description } : {}), anyOf: [...also, rest] });
    },
  }) as Record<string, unknown>;
}
