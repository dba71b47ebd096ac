/**
 * `setup <app> [repo-url]`: everything a server needs for an app — config.yml (with the slot
 * ports), `.env.<env>`, the log dir, the bare repository with its hook, and the proxy running as
 * a service — asked for on a terminal, or taken from flags. Running it again updates and never
 * deletes releases, `.env` or the repository.
 * @module
 */
import { hostname } from "node:os";
import { dirname, join } from "node:path";
import { bindsPort, refuseTakenDomains, refuseTakenPort } from "./config/domains.ts";
import { parseConfig } from "./config/load.ts";
import { requireAppName, reservedName } from "./config/names.ts";
import { hostNameProblem, serverConfigSchema } from "./config/schema.ts";
import { PROXIED, STRATEGIES, type Strategy } from "./deploy/strategies/names.ts";
import { checkDotenvFile } from "./deploy/dotenv.ts";
import { narrowLogs } from "./deploy/journal.ts";
import { processFor } from "./deploy/runtime.ts";
import { ensureSlots, type SlotPorts } from "./deploy/slots.ts";
import { type Manager, MANAGER_NAMES, MANAGERS, type ServiceSpec } from "./managers/mod.ts";
import { ConfigError, DeployParadigmError, UsageError } from "./errors.ts";
import { exists, readTextOrUndefined, writeFileAtomic } from "./fsutil.ts";
import { installHook } from "./hook.ts";
import { refTip } from "./git.ts";
import { type AppPaths, appPaths, deploymentsRoot, prefix, selfCommand } from "./paths.ts";
import { nameClash } from "./deploy/workers.ts";
import { control, olderProxy } from "./proxy/client.ts";
import { loadProxyConfig } from "./proxy/config.ts";
import { controlSocketPath, legacyControlSocketPath, PROXY_SERVICE, ROUTE_FILE } from "./proxy/routes.ts";
import { ProcessRunner } from "./runner.ts";
import { setupUsers, type UserSetup } from "./setup_users.ts";
import { buildUserName } from "./users.ts";
import { documentText, parseDocument } from "./yaml.ts";
import { z } from "zod";

/** Options of `setup`; what is missing is asked on a terminal, or defaulted with `yes`. */
export interface SetupOptions {
  app: string;
  repoUrl?: string;
  port?: number;
  manager?: Manager;
  env?: string;
  strategy?: Strategy;
  /** Host names the proxy routes to the app (replaces the list; empty: none, the app keeps its own port). */
  domains?: string[];
  /** The blue and green slots' ports (blue-green; default: chosen once, kept in config.yml). */
  slots?: SlotPorts;
  /** Take defaults for everything not given, and do not ask for confirmation. */
  yes?: boolean;
  /** The address the proxy listens on (default: where it listens now, else 0.0.0.0). */
  proxyHost?: string;
}

/** Whether `manager` runs on this machine (systemd: not under DEPLOY_PARADIGM_PREFIX, see systemd.ts). */
async function runsHere(manager: Manager): Promise<boolean> {
  return await MANAGERS[manager].runsHere?.() ?? true;
}

/** The error of a manager that does not run here (`why`: a hint at the cause). */
function notHere(manager: Manager, why = ""): UsageError {
  const others = MANAGER_NAMES.filter((name) => name !== manager);
  return new UsageError(`${manager} does not run on this machine${why}`, {
    suggestion: `use --manager ${others.join(" or ")}`,
  });
}

function portTaken(port: number): boolean {
  try {
    Deno.listen({ hostname: "0.0.0.0", port }).close();
    return false;
  } catch {
    return true;
  }
}

/** A ConfigError of `configPath` with how setup wants it fixed; any other error as it is. */
function unreadable(error: unknown, configPath: string): unknown {
  if (!(error instanceof ConfigError)) return error;
  return new ConfigError(error.message.split("\n")[0], error.problems, {
    suggestion: `fix ${configPath} (setup keeps what it holds and changes only port, manager, env, ` +
      `strategy, domains and, with --slots, slots), or remove it to start again`,
  });
}

/**
 * config.yml as setup writes it: `current` (or the template) with setup's values set, comments and
 * other keys kept; and its `user:`. Checked as a deploy reads it: what setup keeps must be valid
 * too. Throws a ConfigError that names the file.
 */
function configText(
  current: string | undefined,
  values: SetupValues,
  configPath: string,
  slots?: SetupOptions["slots"],
): { text: string; user?: string } {
  const doc = parseDocument(current ?? CONFIG_TEMPLATE); // YAML: `existing` read it
  for (const [key, value] of Object.entries({ port: values.port, manager: values.manager, env: values.env })) {
    doc.set(key, value);
  }
  doc.set("strategy", values.strategy);
  if (values.domains.length) doc.set("domains", values.domains);
  else doc.delete("domains");
  if (slots) doc.set("slots", doc.createNode(slots));
  const text = documentText(doc);
  try {
    return { text, user: parseConfig(text, serverConfigSchema, configPath).user };
  } catch (error) {
    throw unreadable(error, configPath);
  }
}

/**
 * Values already set up for the app (setup is idempotent: they are the defaults). A config.yml
 * that is not YAML is refused (exit 2, with where): rewriting it would lose what it holds.
 */
function existing(text: string | undefined, configPath: string): Partial<SetupOptions> {
  if (!text) return {};
  const doc = parseDocument(text);
  let value: Record<string, unknown> | null = null;
  try {
    // Blank or only comments: nothing to keep (parseConfig would call it empty); else read with positions.
    if (doc.errors.length || doc.contents !== null) {
      value = parseConfig(text, z.unknown(), configPath) as Record<string, unknown> | null;
    }
  } catch (error) {
    throw unreadable(error, configPath);
  }
  const slots = value?.slots as Record<string, unknown> | undefined;
  return {
    port: typeof value?.port === "number" ? value.port : undefined,
    manager: MANAGER_NAMES.includes(value?.manager as never) ? value?.manager as Manager : undefined,
    env: typeof value?.env === "string" ? value.env : undefined,
    strategy: STRATEGIES.includes(value?.strategy as never) ? value?.strategy as SetupOptions["strategy"] : undefined,
    domains: Array.isArray(value?.domains) ? value.domains.filter((d) => typeof d === "string") : undefined,
    slots: typeof slots?.blue === "number" && typeof slots?.green === "number"
      ? { blue: slots.blue, green: slots.green }
      : undefined,
  };
}

/**
 * Splits host names given as `--domain` values or typed at the prompt (comma- or space-separated),
 * lowercased, each once. Throws a {@link UsageError} naming every bad one.
 */
export function parseDomains(values: readonly string[]): string[] {
  const names = [
    ...new Set(values.flatMap((value) => value.split(",")).map((n) => n.trim().toLowerCase()).filter(Boolean)),
  ];
  const problems = names.flatMap((name) => {
    const problem = hostNameProblem(name);
    return problem ? [`"${name}" ${problem}`] : [];
  });
  if (problems.length) {
    throw new UsageError(`--domain: ${problems.join("; ")}`, {
      suggestion: "give host names such as example.com or *.example.com (repeat --domain, or separate them by commas)",
    });
  }
  return names;
}

/** The prompt's check of a typed list of domains: its syntax, then whether another app has one. */
async function checkTyped(app: string, text: string): Promise<true | string> {
  try {
    await refuseTakenDomains(app, parseDomains([text]));
    return true;
  } catch (error) {
    return (error as Error).message.replace(/^--domain: /, "");
  }
}

/** Fills in what is missing: prompts on a terminal, defaults with --yes, else a usage error naming the flags. */
async function complete(options: SetupOptions, before: Partial<SetupOptions>): Promise<SetupValues> {
  const defaults = {
    port: before.port ?? 8000,
    manager: before.manager ?? await firstRunning(),
    env: before.env ?? "production",
    strategy: before.strategy ?? STRATEGIES[0],
    domains: before.domains ?? [],
  };
  const given = { ...before, ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) };
  const interactive = !options.yes && Deno.stdin.isTerminal() && Deno.stdout.isTerminal();
  if (!interactive && !options.yes && (given.port === undefined || given.manager === undefined)) {
    throw new UsageError(
      `setup needs ${
        [given.port === undefined && "--port", given.manager === undefined && "--manager"].filter(Boolean)
          .join(" and ")
      } when it cannot ask (no terminal)`,
      {
        suggestion: `pass ${given.port === undefined && given.manager === undefined ? "them" : "it"}, or --yes to ` +
          `take the defaults (port ${defaults.port}, manager ${defaults.manager})`,
      },
    );
  }
  let values = {
    port: given.port ?? defaults.port,
    manager: given.manager ?? defaults.manager,
    env: given.env ?? defaults.env,
    strategy: given.strategy ?? defaults.strategy,
    domains: given.domains ?? defaults.domains,
  };
  if (!interactive && values.port !== before.port && bindsPort(values) && portTaken(values.port)) {
    await refuseTakenPort(options.app, values.port); // another app's: refused (below), not warned about
    // Not refused (the program holding it may be the one this app replaces), but said: deploys fail until it is free.
    console.log(
      `! port ${values.port} is in use on this server right now: the app cannot be served on it until it is free`,
    );
  }
  if (interactive) {
    // Loaded only here: prompt libraries are never on the hook's path, and hang without a terminal.
    const { input, select, confirm } = await import("@inquirer/prompts");
    const port = Number(
      await input({
        message: "Public port of the app",
        default: String(values.port),
        validate: async (text) => {
          if (!(/^\d+$/.test(text) && Number(text) >= 1 && Number(text) <= 65535)) {
            return "a whole number from 1 to 65535";
          }
          return await refuseTakenPort(options.app, Number(text)).then(() => true, (error) => (error as Error).message);
        },
      }),
    );
    if (port !== before.port && portTaken(port)) console.log(`! port ${port} is in use on this server right now`);
    const choices = [];
    for (const name of MANAGER_NAMES) {
      choices.push({ value: name, name, disabled: await runsHere(name) ? false : `(${name} does not run here)` });
    }
    const manager = await select({ message: "Process manager", default: values.manager, choices });
    const env = await input({
      message: "Environment (which .env.<env> the app gets)",
      default: values.env,
      validate: (text) => /^[A-Za-z0-9_.-]+$/.test(text) ? true : "letters, digits, . _ - only",
    });
    const domains = await input({
      message: "Domains, comma-separated (optional: none keeps the app on its own port)",
      default: values.domains.join(", "),
      validate: (text) => checkTyped(options.app, text),
    });
    values = { ...values, port, manager, env, domains: parseDomains([domains]) };
    console.log(summary(options.app, { ...values, slots: options.slots }, options.repoUrl));
    if (!(await confirm({ message: "Write all this?", default: true }))) {
      throw new UsageError("setup cancelled: nothing was written");
    }
  }
  return {
    ...options,
    ...values,
    repoUrl: options.repoUrl ?? "",
    yes: true,
  };
}

function summary(
  app: string,
  values: {
    port: number;
    manager: string;
    env: string;
    strategy: string;
    domains: string[];
    slots?: SlotPorts;
  },
  url?: string,
) {
  const paths = appPaths(app);
  return [
    `deploy-paradigm setup ${app}:`,
    `  port ${values.port}, ${values.manager}, env ${values.env}, ${values.strategy}` +
    (values.slots ? ` (slots: blue ${values.slots.blue}, green ${values.slots.green})` : ""),
    `  domains: ${values.domains.length ? values.domains.join(", ") : "none (served on its port)"}`,
    `  ${paths.config}, ${paths.envFile(values.env)} (0600), ${paths.logDir}`,
    `  ${paths.repo}${url ? ` (cloned from ${url})` : ""} with its hook` +
    (PROXIED[values.strategy as Strategy] ? `, and the proxy as a ${values.manager} service` : ""),
  ].join("\n");
}

/**
 * Setup's options once every one is decided, but --proxy-host (the proxy keeps the address it has,
 * unless given) and --slots (config.yml keeps the slots it has, else the first deploy's are chosen).
 */
type SetupValues = Required<Omit<SetupOptions, "proxyHost" | "slots">> & Pick<SetupOptions, "proxyHost" | "slots">;

/** `--slots`: for blue-green only, neither the app's port, nor a port another app has (exit 2, nothing written). */
async function refuseSlots(
  app: string,
  slots: SlotPorts,
  values: SetupValues,
  had: SlotPorts | undefined,
): Promise<void> {
  if (!PROXIED[values.strategy]) {
    throw new UsageError(`--slots is for strategy blue-green; ${app} has strategy ${values.strategy}`, {
      suggestion: "leave --slots out, or pass --strategy blue-green",
    });
  }
  refuseSlotPort(slots, values.port, "--slots");
  // A serving slot found by its port: new ports under a running release would strand it.
  const changed = had && (had.blue !== slots.blue || had.green !== slots.green);
  if (changed && await exists(join(appPaths(app).dir, ROUTE_FILE))) {
    throw new UsageError(`--slots: ${app} serves from its slots (blue ${had.blue}, green ${had.green}) already`, {
      suggestion: "slots are set before the first deploy; leave --slots out to keep them",
    });
  }
  for (const [slot, port] of Object.entries(slots)) {
    await refuseTakenPort(app, port, { where: `--slots, its ${slot} slot` });
  }
}

/** A public port that is one of the slots' (`where` says whose slots): exit 2, nothing written. */
function refuseSlotPort(slots: SlotPorts, port: number, where: string): void {
  const slot = Object.entries(slots).find(([, p]) => p === port)?.[0];
  if (slot === undefined) return;
  throw new UsageError(`port ${port} is the ${slot} slot's in ${where}: the app's public port must be another`, {
    suggestion: "choose another --port, or give the slots other ports with --slots B,G",
  });
}

/** Runs setup. Returns the exit code. */
export async function setup(options: SetupOptions): Promise<number> {
  requireAppName(options.app);
  const reserved = reservedName(options.app);
  if (reserved) {
    throw new UsageError(`the app name "${options.app}" ${reserved}`, { suggestion: "choose another name" });
  }
  if (options.manager && !(await runsHere(options.manager))) throw notHere(options.manager);
  const paths = appPaths(options.app);
  const domains = options.domains && parseDomains(options.domains);
  const current = await readTextOrUndefined(paths.config);
  const known = existing(current, paths.config);
  const values = await complete({ ...options, domains }, known);
  if (!(await runsHere(values.manager))) throw notHere(values.manager, " (or DEPLOY_PARADIGM_PREFIX is set)");
  // Checked before anything is written: a domain another app has, a hook we could not replace,
  // a `user:` in config.yml that names nobody.
  await refuseTakenDomains(options.app, values.domains);
  // The proxy this app goes behind reads proxy.yml when it starts: one it cannot read would stop it (every app down).
  if (PROXIED[values.strategy]) await loadProxyConfig(prefix());
  if (bindsPort(values)) await refuseTakenPort(options.app, values.port);
  if (options.slots) await refuseSlots(options.app, options.slots, values, known.slots);
  else if (known.slots && PROXIED[values.strategy]) refuseSlotPort(known.slots, values.port, "config.yml's slots");
  const clash = await nameClash(prefix(), options.app, []);
  if (clash) throw new UsageError(clash, { suggestion: "choose another name for the app" });
  await checkDotenvFile(paths.envFile(values.env)); // a secret too short to redact (redact.ts)
  const { text: config, user: configured } = configText(current, values, paths.config, options.slots);
  const users: UserSetup = setupUsers(paths, configured);
  const hookPath = join(paths.repo, "hooks", "proc-receive");
  const hook = await readTextOrUndefined(hookPath);
  if (hook !== undefined && !hook.includes("written by deploy-paradigm")) {
    throw new UsageError(`${hookPath} is another tool's proc-receive hook`, {
      suggestion: "proc-receive hooks cannot be chained: remove it or move it elsewhere (post-receive hooks stay)",
    });
  }
  const runner = new ProcessRunner((line) => console.log(`    ${line}`));
  const started = performance.now();
  // A repository URL is cloned first, beside where the repository goes: one that fails leaves nothing.
  const clone = values.repoUrl && !(await exists(paths.repo))
    ? await cloneBare(values.repoUrl, paths.repo, runner)
    : undefined;
  try {
    await write({ app: options.app, paths, values, config, users, runner, clone });
  } finally {
    await clone?.discard();
  }
  const took = ((performance.now() - started) / 1000).toFixed(1);
  const user = Deno.env.get("USER") ?? "root";
  console.log(`\n${options.app} is set up (${took}s). On your laptop, in the project:\n`);
  console.log(`git remote add production ${user}@${hostname()}:${paths.repo}`);
  console.log("git push production main");
  // A cloned repository holds its main already: pushing that same commit changes nothing.
  const seeded = clone && await refTip(paths.repo, "refs/heads/main");
  if (seeded) {
    console.log(
      `\nThe repository holds main at ${seeded.slice(0, 7)} (cloned): a push deploys only a newer commit. To deploy ` +
        `that one now, here:\n\ndeploy-paradigm execute ${paths.repo} ${seeded}`,
    );
  }
  return 0;
}

/** What setup decided and checked before it writes anything. */
interface Decided {
  app: string;
  paths: AppPaths;
  values: SetupValues;
  /** config.yml's text. */
  config: string;
  users: UserSetup;
  runner: ProcessRunner;
  /** The clone of the repository URL, to put in place (none: the repository is there, or made empty). */
  clone?: Clone;
}

/** A bare clone made beside the repository's place (the same file system). */
interface Clone {
  /** Moves it to the repository's place. */
  place(): Promise<void>;
  /** Removes what is left of it, and the directories made for it when they are empty. */
  discard(): Promise<void>;
}

/** Clones `url` bare beside `repo`; throws (leaving nothing) when git fails. */
async function cloneBare(url: string, repo: string, runner: ProcessRunner): Promise<Clone> {
  const made: string[] = []; // deepest first
  for (let dir = dirname(repo); !(await exists(dir)); dir = dirname(dir)) made.push(dir);
  const dir = `${repo}.cloning-${Deno.pid}`;
  const discard = async () => {
    for (const path of [dir, ...made]) await Deno.remove(path, { recursive: path === dir }).catch(() => {});
  };
  try {
    for (const path of made.toReversed()) await Deno.mkdir(path);
    await Deno.mkdir(dir, { mode: 0o700 }); // no one else's until users.pushers shares it with the group
    await runner.run({ argv: ["git", "clone", "--quiet", "--bare", "--", url, dir] });
  } catch (error) {
    await discard();
    throw error;
  }
  return { place: () => Deno.rename(dir, repo), discard };
}

/** Writes what setup decided: config.yml, .env, the repository and its hook, the services. */
async function write({ app, paths, values, config, users, runner, clone }: Decided): Promise<void> {
  // config.yml: created, or updated in place (comments and slots kept). The proxy trusts it (and
  // route.json, proxy.yml) only when no group or other user can write it or its directory.
  await Deno.mkdir(paths.dir, { recursive: true });
  for (const dir of [deploymentsRoot(), paths.dir]) await withoutGroupWrite(dir);
  await writeFileAtomic(paths.config, config, 0o600); // notify: URLs are secrets
  if (PROXIED[values.strategy]) await ensureSlots(paths, prefix());
  console.log(`✓ ${paths.config}`);

  const envFile = paths.envFile(values.env);
  if (!(await exists(envFile))) {
    await Deno.writeTextFile(envFile, `# Secrets of ${app} (${values.env}): KEY=value lines. Never in git.\n`, {
      mode: 0o600,
    });
  }
  await Deno.chmod(envFile, 0o600);
  await Deno.mkdir(paths.logDir, { recursive: true });
  console.log(`✓ ${envFile} (0600), ${paths.logDir}`);
  for (const line of await narrowLogs(paths.logDir)) console.log(line);
  const appUser = await users.apply(runner); // the app's user, its home, who owns what (users.ts)

  // The bare repository and its hook.
  if (clone) await clone.place();
  else if (!(await exists(paths.repo))) {
    await Deno.mkdir(join(paths.repo, ".."), { recursive: true });
    await Deno.mkdir(paths.repo, { mode: 0o700 }); // no one else's until users.pushers shares it with the group
    await runner.run({ argv: ["git", "init", "--quiet", "--bare", "-b", "main", paths.repo] });
  }
  const env: Record<string, string> = Deno.env.get("DEPLOY_PARADIGM_PREFIX")
    ? { DEPLOY_PARADIGM_PREFIX: prefix() }
    : {};
  await installHook(paths.repo, selfCommand(), env);
  console.log(`✓ ${paths.repo} with its hook (deploys run ${selfCommand()})`);
  await users.pushers(paths.repo, runner); // the deploy group: push without root (setup_users.ts)

  // The proxy, as a service of the chosen manager, started if it is not running.
  const manager = MANAGERS[values.manager];
  if (PROXIED[values.strategy] && manager.slotTemplate) {
    // The app's template (systemd: each slot's command comes with its deploy, in the instance's drop-in).
    const config = { ...values, drainTimeout: 0, notify: [], hsts: false };
    const process = processFor(paths, config, "python", ["/bin/true"], {}, { slot: "blue", port: values.port });
    const plan = manager.slotTemplate(process);
    await runner.apply(plan);
    for (const file of plan.files) console.log(`✓ ${file.path}`);
  }
  // What an older version left open is narrowed first (pm2 runs under umask 077 from here on).
  await manager.tidy?.();
  // What brings the app's manager, and the proxy's (it stays with the one that has its service
  // installed), back at boot, where it does not come back itself (pm2): first, as pm2's unit starts
  // its daemon when none runs, for the proxy to start under.
  const installed = PROXIED[values.strategy] ? await installedProxy(prefix()) : undefined;
  const proxy = installed?.manager ?? values.manager;
  for (const name of new Set([values.manager, ...(PROXIED[values.strategy] ? [proxy] : [])])) {
    await ensureBoot(name, runner);
  }
  if (PROXIED[values.strategy]) await ensureProxy(proxy, installed?.host, values.proxyHost, env, runner);
  if (appUser) {
    console.log(
      `✓ ${app} runs and runs its hooks as ${appUser.name}; ${buildUserName(app)} builds its releases`,
    );
  }
}

/** Installs what brings `manager`'s processes back at boot (see ProcessManager.atBoot), or says why it cannot. */
async function ensureBoot(manager: Manager, runner: ProcessRunner): Promise<void> {
  const boot = await MANAGERS[manager].atBoot?.(prefix(), true);
  if (typeof boot === "string") return console.log(boot);
  if (!boot) return;
  await runner.apply(boot.plan);
  console.log(`✓ ${boot.said}`);
  if (boot.warning) console.log(boot.warning);
}

/** Takes write permission on `dir` from group and others (`chmod go-w`), as the proxy's trust check asks. */
async function withoutGroupWrite(dir: string): Promise<void> {
  const mode = (await Deno.stat(dir)).mode! & 0o7777;
  if (mode & 0o022) await Deno.chmod(dir, mode & ~0o022);
}

/** The address the proxy listens on unless setup is told another: every interface. */
const DEFAULT_PROXY_HOST = "0.0.0.0";

/** The manager that has the proxy's service installed (an earlier app's), when it runs here, and the service's `--host`. */
async function installedProxy(root: string): Promise<{ manager: Manager; host?: string } | undefined> {
  for (const name of MANAGER_NAMES) {
    const argv = await MANAGERS[name].serviceArgv?.(PROXY_SERVICE, root);
    if (argv && await runsHere(name)) return { manager: name, host: installedHost(argv) };
  }
  return undefined;
}

/**
 * Starts the proxy as a service of `service` (a systemd unit or a pm2 process), unless one answers
 * already. One that an older version started (its socket at the old path) is restarted, to run
 * this version's code. It listens on `asked` (--proxy-host), else where it listened before (the
 * running proxy's address, or `installed`: the installed service's), else every interface; a
 * running one on another address is restarted on `asked`.
 */
async function ensureProxy(
  service: Manager,
  installed: string | undefined,
  asked: string | undefined,
  env: Record<string, string>,
  runner: ProcessRunner,
): Promise<void> {
  const root = prefix();
  const old = await olderProxy(root);
  const running = await control(root, { op: "status" }).then((reply) => reply as { host?: string }, () => undefined);
  // Where it listens now (a proxy of an older version does not say: its service does).
  const listening = running ? running.host ?? installed ?? DEFAULT_PROXY_HOST : installed;
  const host = asked ?? listening ?? DEFAULT_PROXY_HOST;
  if (running) {
    if (!old && host === listening) return console.log(`✓ the proxy runs (on ${host})`);
    console.log(
      old
        ? `! the proxy runs an older version (${legacyControlSocketPath(root)}): restarting it`
        : `! the proxy listens on ${listening}: restarting it on ${host}`,
    );
  }
  await runner.apply(MANAGERS[service].installService(proxyService(host, env, root, running !== undefined)));
  for (let i = 0; i < 100; i++) {
    const answers = await control(root, { op: "status" }, 1000).then(() => true, () => false);
    if (answers && await exists(controlSocketPath(root))) return console.log(`✓ the proxy runs (${service})`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new DeployParadigmError("the proxy did not start", {
    suggestion: `see \`${MANAGERS[service].logsCommand(PROXY_SERVICE)}\``,
  });
}

/** The `--host` of an installed proxy service's argv. */
function installedHost(argv: string[]): string | undefined {
  const at = argv.indexOf("--host");
  return at >= 0 ? argv[at + 1] : undefined;
}

export { PROXY_SERVICE };

/** The proxy as a service listening on `host` (`restart`: it runs an older version). */
export function proxyService(host: string, env: Record<string, string>, root: string, restart = false): ServiceSpec {
  return {
    name: PROXY_SERVICE,
    description: "deploy-paradigm proxy (zero-downtime switches for blue-green apps)",
    argv: [selfCommand(), "proxy", "--host", host],
    env,
    root,
    restart,
  };
}

/** The first manager, in {@link MANAGER_NAMES} order, that runs here: setup's default. */
async function firstRunning(): Promise<Manager> {
  for (const name of MANAGER_NAMES) if (await runsHere(name)) return name;
  return MANAGER_NAMES.at(-1)!;
}

const CONFIG_TEMPLATE = `# /opt/deployments/<app>/config.yml: this server's side of the app (written by setup).
# port: the public port; manager: systemd | pm2; env: which .env.<env> the app gets;
# strategy: blue-green (through the proxy) | restart; slots: blue-green's internal ports;
# domains: host names the proxy routes to the app on its shared ports (setup --domain).
port: 8000
`;
