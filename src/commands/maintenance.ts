import { loadServerConfig } from "../config/server_config.ts";
import type { CommandSpec } from "../cli.ts";
import { UsageError } from "../errors.ts";
import { rootOnly } from "./root_only.ts";
import { PROXIED, type Strategy } from "../deploy/strategies/names.ts";

/** What `maintenance on` was given, checked. */
export interface MaintenanceRequest {
  app: string;
  on: boolean;
  message?: string;
  /** Undefined when `--allow` was not given (`on` again keeps the list). */
  allow?: string[];
  retryAfter?: number;
}

/**
 * The command line of `maintenance`, checked before anything is read or written: a
 * {@link UsageError} (exit 2) saying what is wrong and how to write it, else the request. `--allow`
 * may be given more than once, and each value may hold several entries separated by commas.
 * Spaces around an `--allow` entry or a `--retry-after` value are dropped alike (a shell's quotes
 * keep them: `--allow "10.0.0.1, ::1"`); the message is kept as given.
 */
export async function parseMaintenanceArgs(
  args: string[],
  opts: Record<string, string | string[] | boolean | undefined>,
): Promise<MaintenanceRequest> {
  const [{ requireAppName, swappedWords }, { appPaths }] = await Promise.all([
    import("../config/names.ts"),
    import("../paths.ts"),
  ]);
  const [app, state] = args;
  if (await swappedWords(args, ["on", "off"], (name) => appPaths(name).config)) {
    throw new UsageError(`maintenance takes the app first, then "${app}"`, {
      suggestion: `deploy-paradigm maintenance ${state} ${app}`,
    });
  }
  requireAppName(app);
  if (state !== "on" && state !== "off") {
    throw new UsageError(`maintenance takes "on" or "off" after the app, got "${state}"`, {
      suggestion: `deploy-paradigm maintenance ${app} on [--message TEXT] [--allow IP] [--retry-after SECONDS]`,
    });
  }
  const given = (["message", "allow", "retry-after"] as const).filter((name) => opts[name] !== undefined);
  if (state === "off") {
    if (given.length) {
      const names = given.map((name) => `--${name}`).join(", ");
      throw new UsageError(`${names} ${given.length > 1 ? "go" : "goes"} with "on", not "off"`, {
        suggestion: `deploy-paradigm maintenance ${app} off`,
      });
    }
    return { app, on: false };
  }
  const { checkAllowEntry, checkMessage, checkRetryAfter, MAX_ALLOW, MAX_MESSAGE } = await import(
    "../proxy/maintenance.ts"
  );
  const message = opts.message as string | undefined;
  const wrongMessage = message === undefined ? undefined : checkMessage(message);
  if (wrongMessage) {
    throw new UsageError(`--message ${wrongMessage}`, {
      suggestion: `give one line of text, at most ${MAX_MESSAGE} characters, e.g. --message "Back at 16:00"; ` +
        "without --message the built-in page says the site is down for maintenance",
    });
  }
  const allow: string[] = [];
  for (const value of (opts.allow as string[] | undefined) ?? []) {
    for (const entry of value.split(",").map((part) => part.trim())) {
      const wrong = entry ? checkAllowEntry(entry) : "has an empty entry";
      if (wrong) {
        throw new UsageError(`--allow ${wrong}`, {
          suggestion: "give IP addresses or CIDR ranges, e.g. --allow 203.0.113.7 --allow 10.0.0.0/8,2001:db8::/32",
        });
      }
      if (!allow.includes(entry)) allow.push(entry);
    }
  }
  if (allow.length > MAX_ALLOW) {
    throw new UsageError(`--allow: at most ${MAX_ALLOW} entries (got ${allow.length})`, {
      suggestion: "cover neighbouring addresses with a CIDR range, e.g. 10.0.0.0/24 for 10.0.0.0 to 10.0.0.255",
    });
  }
  const text = opts["retry-after"] as string | undefined;
  let retryAfter: number | undefined;
  if (text !== undefined) {
    retryAfter = /^\d{1,6}$/.test(text.trim()) ? Number(text) : NaN;
    const wrong = checkRetryAfter(retryAfter);
    if (wrong) {
      throw new UsageError(`--retry-after ${wrong} (got "${text}")`, {
        suggestion: "e.g. --retry-after 120 for two minutes; without it clients are told 60",
      });
    }
  }
  return { app, on: true, message, ...(opts.allow !== undefined ? { allow } : {}), retryAfter };
}

/** Puts an app in maintenance or takes it out, then has the proxy apply it. Returns the exit code. */
async function maintenance(request: MaintenanceRequest): Promise<number> {
  const [{ appPaths }, maint] = await Promise.all([import("../paths.ts"), import("../proxy/maintenance.ts")]);
  const { app } = request;
  const paths = appPaths(app);
  // Not set up, or a config.yml that does not load (the proxy cannot re-read the app's route either,
  // so neither `on` nor `off` would take effect there): its problems, and nothing changed.
  const { strategy } = await loadServerConfig(paths);
  let allowed: string[] = [];
  if (request.on) {
    // `off` works whatever the strategy: a maintenance.json left from blue-green must be removable.
    servedByProxy(app, strategy);
    // A file that is not valid is replaced; its `since` is not kept.
    const before = await maint.readMaintenance(paths.dir).catch(() => undefined);
    // `on` again changes what it is given and keeps the rest (`off`, then `on`, starts afresh).
    const message = request.message ?? before?.message;
    const state = {
      since: before?.since ?? new Date().toISOString(),
      ...(message !== undefined ? { message } : {}),
      allow: request.allow ?? before?.allow ?? [],
      retryAfter: request.retryAfter ?? before?.retryAfter ?? maint.DEFAULT_RETRY_AFTER,
    };
    await maint.writeMaintenance(paths.dir, state);
    allowed = state.allow;
    console.log(
      `${app}: ${maint.describeMaintenance(state)}${before ? " (updated; what was not given is kept)" : ""}.`,
    );
    const everyone = maint.everyoneOf(state.allow);
    if (everyone) console.log(`! --allow ${everyone}`);
    const own = await maint.servingPage(paths.dir);
    if (own && !(own instanceof Uint8Array)) {
      console.log(
        `! ${app}'s serving release (${paths.current}): ${own.problem}; fix ${maint.MAINTENANCE_PAGE} in the ` +
          "app's repository and deploy: the proxy serves the new release's page",
      );
    }
  } else if (await maint.clearMaintenance(paths.dir)) {
    console.log(`${app} is out of maintenance: its requests go to the app again.`);
  } else {
    console.log(`${app} was not in maintenance: nothing to do.`);
    return 0;
  }
  await refreshStatus(paths);
  await tellProxy(app, request.on ? allowed : undefined);
  return 0;
}

/** Apps with `strategy: restart` bind their port themselves: the proxy never sees their requests. */
function servedByProxy(app: string, strategy: Strategy): void {
  if (!PROXIED[strategy]) {
    throw new UsageError(
      `app "${app}" has strategy: ${strategy}: it listens on its port itself, so the proxy cannot answer ` +
        "for it in maintenance",
      { suggestion: "maintenance mode needs strategy: blue-green (the default), where the proxy serves the app" },
    );
  }
}

/**
 * status.json says the app's maintenance (deploys write it with maintenance.json merged in): it is
 * rewritten now under the deploy lock; when a deploy holds the lock, that deploy writes it.
 */
async function refreshStatus(paths: import("../paths.ts").AppPaths): Promise<void> {
  const [{ acquireLock }, { readStatus, writeStatus }, { exists }] = await Promise.all([
    import("../deploy/lock.ts"),
    import("../deploy/status.ts"),
    import("../fsutil.ts"),
  ]);
  if (!(await exists(paths.status))) return; // never deployed: nothing to say it in
  const busy = new Error("a deploy holds the lock");
  let lock: import("../deploy/lock.ts").HeldLock;
  try {
    lock = await acquireLock(paths.lock, { pid: Deno.pid, commit: "maintenance" }, () => {
      throw busy;
    });
  } catch (error) {
    if (error === busy) return;
    throw error;
  }
  try {
    const status = await readStatus(paths.status).catch(() => undefined);
    if (status) await writeStatus(paths.status, status);
  } finally {
    lock.release();
  }
}

/**
 * Has the proxy re-read the routes now; says so when it is not running (it reads the state when it
 * starts). `allowed`: the addresses still let through when it is on, undefined when it is off.
 */
async function tellProxy(app: string, allowed: string[] | undefined): Promise<void> {
  const on = allowed !== undefined;
  const [{ control, ProxyNotRunning }, { prefix }, { DeployParadigmError }, { PROXY_LOG }] = await Promise.all([
    import("../proxy/client.ts"),
    import("../paths.ts"),
    import("../errors.ts"),
    import("../proxy/routes.ts"),
  ]);
  try {
    await control(prefix(), { op: "reload" });
    const reply = await control(prefix(), { op: "status" });
    const route = (reply.routes as { app?: string; maintenance?: boolean }[] | undefined)?.find((r) => r.app === app);
    if (!route) {
      // Off: nothing the proxy serves is in maintenance (a restart app, one never deployed).
      if (on) console.log(`The proxy has no route for ${app} yet: it applies when the app is deployed.`);
    } else if ((route.maintenance === true) !== on) {
      throw new DeployParadigmError(`${app}'s maintenance.json is saved, but the proxy did not apply it`, {
        suggestion: `see ${PROXY_LOG}: it says why`,
      });
    } else {
      const except = allowed?.length ? ` to all but ${allowed.join(", ")}` : "";
      console.log(on ? `The proxy answers 503 for it now${except}.` : "The proxy serves it again.");
    }
  } catch (error) {
    if (!(error instanceof ProxyNotRunning)) throw error;
    console.log(`The proxy is not running: the state is saved, and applies when the proxy starts.`);
  }
}

/** `maintenance <app> on|off [--message TEXT] [--allow IP…] [--retry-after SECONDS]`. */
export const maintenanceCommand: CommandSpec = {
  name: "maintenance",
  summary: "Put an app in maintenance (the proxy answers 503 with a page, except for allowed IPs) or take it out",
  args: [
    { name: "app", description: "The app" },
    {
      name: "on|off",
      description:
        "on: answer 503 with the maintenance page (on again changes only what it is given); off: serve the " +
        "app again. Root only; for apps served through the proxy (blue-green)",
    },
  ],
  options: [
    {
      name: "message",
      value: "text",
      description: "on: the built-in page's message (the release's maintenance.html wins)",
    },
    {
      name: "allow",
      value: "ip",
      repeatable: true,
      description: "on: an IP address or CIDR range (v4 or v6) whose requests still reach the app; repeat it, or " +
        "separate with commas",
    },
    { name: "retry-after", value: "seconds", description: "on: the Retry-After header (default 60)" },
  ],
  async run({ args, opts }) {
    const request = await parseMaintenanceArgs(args, opts);
    try {
      return await maintenance(request);
    } catch (error) {
      throw rootOnly(error, `maintenance ${args.join(" ")}`);
    }
  },
};
