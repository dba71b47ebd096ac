/**
 * The steps that make a release, before anything switches (a failure here switches nothing):
 * fetch the commit, build, record its metadata, resolve its program, install `.env`, preDeploy;
 * and the hooks and cleanup once it stands.
 * @module
 */
import { join } from "node:path";
import { toArgv } from "../../config/argv.ts";
import { pruneImages, requireDockerfile, requireEngine } from "../../managers/docker.ts";
import { type Cmd, type CmdResult, displayArgv } from "../../runner.ts";
import { extractCommit } from "../../git.ts";
import {
  buildUser,
  buildUserName,
  ensureBuildUser,
  handOver,
  killAllOf,
  killLeftovers,
  sealCmds,
  shareWithApp,
  sweepShared,
  unsealedCmd,
  uptime,
} from "../../users.ts";
import { buildPlan } from "../app_type.ts";
import type { DeployContext } from "../context.ts";
import { serializeDockerEnv, serializeDotenv } from "../dotenv.ts";
import { cleanupReleases, listReleases, readReleaseMeta, writeReleaseMeta } from "../releases.ts";
import { asApp, resolveProgram, toolEnv, userOf } from "../runtime.ts";
import type { Release, Step } from "./step.ts";

/** Builds may take long, but never forever: a stuck build must not hold the lock. */
const BUILD_TIMEOUT = 30 * 60_000;
/** preDeploy and postDeploy hooks. */
const HOOK_TIMEOUT = 15 * 60_000;

const user = (ctx: DeployContext) => userOf(ctx.paths, ctx.config);

export const docker: Step = {
  name: "docker",
  when: (ctx) => ctx.plan.deploy.type === "docker",
  run: async (ctx) => `docker engine ${await requireEngine(ctx.runner)}`,
  dry: async (ctx) => ctx.print(`docker engine ${await requireEngine(ctx.inspect)} answers`),
};

/** Moves the prefetched tree into place, or extracts the commit now. */
export const fetch: Step = {
  name: "fetch",
  async run({ plan }, { id, dir }) {
    const message = `${plan.short} extracted into releases/${id}`;
    if (plan.prefetch && await plan.prefetch.done.then(() => true, () => false)) {
      try {
        await Deno.rename(plan.prefetch.dir, dir);
        return message;
      } catch { /* on another filesystem, say: extract again */ }
    }
    const partial = join(plan.paths.releases, `.${id}.partial`);
    await Deno.mkdir(partial, { mode: 0o700 }); // as prefetch's: only root opens it, until the build user's build
    try {
      await extractCommit(plan.gitDir, plan.commit, partial);
      await Deno.rename(partial, dir);
    } catch (error) {
      await Deno.remove(partial, { recursive: true }).catch(() => {});
      throw error;
    }
    return message;
  },
  dry: ({ plan, print }, { dir }) => print(`would extract ${plan.short} into ${dir}`),
};

/** The user that builds: the app's build user (users.ts), or the app's user where there is none. */
const builder = (ctx: DeployContext) => buildUser(ctx.paths, user(ctx)) ?? user(ctx);

/** The build commands, as `as` with its tool environment (the engine's own build as is). */
function buildCmds(ctx: DeployContext, { id, dir }: Release, as = builder(ctx)): Cmd[] {
  const { plan } = ctx;
  const env = toolEnv(dir, plan.config, as);
  const limits = { timeoutMs: BUILD_TIMEOUT, cancel: ctx.cancellation.signal };
  return buildPlan(plan.deploy, plan.facts, dir, { id, commit: plan.commit })
    .map((cmd) => asApp({ ...cmd, ...limits }, as, env));
}

/** After the build the release is sealed (users.ts): root's, and only readable by the app. */
async function seal(ctx: DeployContext, release: Release): Promise<void> {
  const owner = user(ctx);
  if (!owner) return;
  for (const cmd of sealCmds(release.dir, owner)) await ctx.runner.run(cmd);
  const open = (await ctx.runner.run(unsealedCmd(release.dir))).output.trim();
  if (open) {
    throw new Error(
      `the release is not sealed after its build: ${open} is not root's, or is writable by others than root, ` +
        "or is setuid or setgid (a process the build left kept running through the seal?); nothing of this " +
        "release is deployed",
    );
  }
}

/**
 * The build runs as the app's build user in a release it owns; then the release is sealed, and
 * only then the engine (root's) builds the image, from a Dockerfile checked in the sealed release.
 */
export const build: Step = {
  name: "build",
  when: (ctx, release) => buildCmds(ctx, release, user(ctx)).length > 0,
  announce: () => "",
  async run(ctx, release) {
    const owner = await ensureBuildUser(ctx.paths, user(ctx), ctx.runner, (line) => ctx.journal.say(line));
    if (owner) await ctx.runner.run(handOver(release.dir, owner));
    const cmds = buildCmds(ctx, release, owner);
    const run = async (cmd: Cmd) => {
      ctx.journal.output(`$ ${displayArgv(cmd.argv)}`);
      await runConfined(ctx, cmd, release.dir, owner);
    };
    for (const cmd of cmds.filter((cmd) => !cmd.engine)) await run(cmd);
    await seal(ctx, release);
    for (const cmd of cmds.filter((cmd) => cmd.engine)) {
      await requireDockerfile(release.dir, ctx.plan.deploy.dockerfile ?? "Dockerfile");
      await run(cmd);
    }
  },
  async dry(ctx, release) {
    for (const cmd of buildCmds(ctx, release)) await ctx.runner.run(cmd);
  },
};

/** A release without a build is sealed all the same. */
export const sealOnly: Step = {
  name: "seal",
  unjournaled: true,
  when: (ctx, release) => buildCmds(ctx, release).length === 0,
  run: (ctx, release) => seal(ctx, release),
  dry: () => {},
};

/** The release's metadata, after the build: not part of a docker build's context. */
export const meta: Step = {
  name: "meta",
  unjournaled: true,
  run: (ctx, release) => writeReleaseMeta(ctx.paths, release.meta),
  dry: () => {},
};

/** The programs of the app's own checks: its hooks' and its gates' (run in the release, by name or path). */
function checkCommands({ plan }: DeployContext): { what: string; argv: string[] }[] {
  const hooks = (["preDeploy", "postDeploy"] as const).flatMap((name) => {
    const command = plan.deploy.hooks?.[name];
    return command ? [{ what: `hooks.${name}`, argv: toArgv(command) }] : [];
  });
  const gates = (plan.deploy.gates ?? []).map((gate, i) => ({ what: `gates.${i}`, argv: toArgv(gate.command) }));
  return [...hooks, ...gates];
}

/**
 * Every program the release will start: the web command's, each worker's and each cron job's,
 * and those of its hooks and gates, found in the release (or PATH) before the switch: a missing
 * one fails the deploy here, not after the release serves (or, for a gate, after it is healthy).
 */
export const command: Step = {
  name: "command",
  when: (ctx, { meta }) =>
    ctx.plan.argv !== undefined || !!meta.workers?.length || !!meta.cron?.length || checkCommands(ctx).length > 0,
  async run(ctx, { dir, meta }) {
    const { plan, paths } = ctx;
    const found: string[] = [];
    const commands = [
      ...(plan.argv ? [{ what: "web", argv: plan.argv }] : []),
      ...(meta.workers ?? []).map((w) => ({ what: `worker ${w.type}`, argv: w.argv })),
      ...(meta.cron ?? []).map((job) => ({ what: `cron job ${job.name}`, argv: job.argv })),
      ...checkCommands(ctx),
    ];
    for (const { what, argv } of commands) {
      const program = await resolveProgram(argv[0], dir, paths.current).catch((error) => {
        throw new Error(`${what}: ${error.message}`);
      });
      // A program of the release is said as the release has it: `current` still points to the old one.
      const shown = program.startsWith(`${paths.current}/`)
        ? `${program.slice(paths.current.length + 1)} in the release`
        : program;
      found.push(plan.argv === argv ? `${displayArgv(argv)} (${shown})` : `${what} ${shown}`);
    }
    return found.join("; ");
  },
  dry: () => {},
};

/**
 * Writes the values of `.env.<env>` into the release as `.env` (root's 0600, then root:<app group>
 * 0640 when the app has a user of its own), in the canonical form that systemd's EnvironmentFile
 * reads exactly as we do.
 */
export const env: Step = {
  name: "env",
  async run(ctx, { dir }) {
    const { plan } = ctx;
    if (!plan.envSource) {
      // Setup makes it: gone, or config.yml names another env (a typo?). Said apart, not only as a step's line.
      const expected = plan.paths.envFile(plan.config.env);
      ctx.journal.say(`! no ${expected}: the app gets no secrets (is config.yml's env right?)`);
      return `no ${expected}; the app gets PORT only`;
    }
    // Secrets are 0600: a file someone opened to others (an editor, a copy) is narrowed, and said.
    // (lstat: a link to a file shared with others is the operator's choice, not narrowed through the link.)
    const info = await Deno.lstat(plan.envSource);
    const mode = info.mode! & 0o777;
    if (info.isFile && mode & 0o077) {
      await Deno.chmod(plan.envSource, mode & 0o700);
      ctx.journal.say(
        `! ${plan.envSource} was open to group or others (mode ${mode.toString(8).padStart(4, "0")}): narrowed ` +
          "to owner only; make new secrets if others may have read it",
      );
    }
    const file = join(dir, ".env");
    const header = `from ${plan.envSource}, written by deploy-paradigm`;
    const values = withoutOurs(plan.secrets, plan.envSource, (line) => ctx.journal.say(line));
    const text = plan.deploy.type === "docker"
      ? serializeDockerEnv(values, `${header} for docker run --env-file`, plan.public)
      : serializeDotenv(values, header, plan.public);
    // One from the commit or its build goes (a link is removed, never followed): the server's values replace it.
    if (await Deno.lstat(file).then(() => true, () => false)) {
      await Deno.remove(file);
      ctx.journal.say(
        `! the release had a .env (from the commit or its build): replaced by ${plan.envSource}'s values`,
      );
    }
    await Deno.writeTextFile(file, text, { mode: 0o600, createNew: true });
    await Deno.chmod(file, 0o600);
    await shareWithApp(file, user(ctx)); // root:<app group> 0640: its app only
    const count = Object.keys(values).length;
    return `.env.${plan.config.env} → .env (${envMode(ctx)}, ${count} value${count === 1 ? "" : "s"})`;
  },
  dry(ctx, { dir }) {
    const { plan, print } = ctx;
    if (!plan.envSource) return print(`no ${plan.paths.envFile(plan.config.env)}: the app would get PORT only`);
    const values = withoutOurs(plan.secrets, plan.envSource, print);
    const count = Object.keys(values).length;
    print(`would copy ${plan.envSource} to ${dir}/.env (${envMode(ctx)}, ${count} value${count === 1 ? "" : "s"})`);
  },
};

/** The release's `.env` mode as {@link env} leaves it: 0640 for the app's group when it has a user, else 0600. */
const envMode = (ctx: DeployContext) => user(ctx) ? "0640" : "0600";

/** What deploy-paradigm sets itself in every process: a .env value of the same name is left out. */
const OURS = ["PORT", "DEPLOY_ENV"];

/**
 * `values` without {@link OURS}, each one left out said (managers differ in which would win: under
 * systemd a .env PORT would beat the port the app must listen on, under pm2 lose to it).
 */
function withoutOurs(values: Record<string, string>, source: string, say: (line: string) => void) {
  const ours = OURS.filter((key) => key in values);
  if (!ours.length) return values;
  say(
    `! ${source} sets ${ours.join(" and ")}, which deploy-paradigm sets itself (PORT: the port each web process ` +
      "must listen on): left out of the release's .env",
  );
  return Object.fromEntries(Object.entries(values).filter(([key]) => !OURS.includes(key)));
}

/**
 * A command of the app's (a hook, a gate) run in release `id` as the app's user, with its `.env`
 * values, its tool environment, DEPLOY_APP, DEPLOY_RELEASE, DEPLOY_COMMIT and `env`.
 */
export function appCommand(
  ctx: DeployContext,
  { id, dir }: Pick<Release, "id" | "dir">,
  argv: string[],
  limits: { timeoutMs: number; cancel?: AbortSignal },
  env: Record<string, string> = {},
): Cmd {
  const { plan } = ctx;
  const all = {
    ...plan.secrets,
    ...toolEnv(dir, plan.config, user(ctx)),
    DEPLOY_APP: plan.deploy.name,
    DEPLOY_RELEASE: id,
    DEPLOY_COMMIT: plan.commit,
    ...env,
  };
  return asApp({ argv, cwd: dir, ...limits }, user(ctx), all);
}

/** hooks.preDeploy or hooks.postDeploy, run in the release with the app's environment. */
function hook(name: "preDeploy" | "postDeploy", tolerate?: string): Step {
  const argv = (ctx: DeployContext) => toArgv(ctx.plan.deploy.hooks![name]!);
  const cmd = (ctx: DeployContext, release: Release): Cmd => {
    const cancel = name === "preDeploy" ? ctx.cancellation.signal : undefined; // postDeploy: the deploy stands
    return appCommand(ctx, release, argv(ctx), { timeoutMs: HOOK_TIMEOUT, cancel });
  };
  return {
    name,
    tolerate,
    when: (ctx) => Boolean(ctx.plan.deploy.hooks?.[name]),
    announce: (ctx) => displayArgv(argv(ctx)),
    // After preDeploy the app runs from the release: then no process is a leftover for being in it.
    run: async (ctx, release) => {
      await runConfined(ctx, cmd(ctx, release), name === "preDeploy" ? release.dir : undefined);
    },
    dry: async (ctx, release) => {
      await ctx.runner.run(cmd(ctx, release));
    },
  };
}

export const preDeploy = hook("preDeploy");
export const postDeploy = hook(
  "postDeploy",
  "! postDeploy failed; the deploy stands (postDeploy failures are only reported)",
);

/** Old releases go (and the images of docker releases with them, also once the app is no docker app any more). */
export const cleanup: Step = {
  name: "cleanup",
  tolerate: "! cleanup failed; old releases stay until the next deploy",
  async run(ctx, { id, previous }) {
    const { paths, deploy } = ctx.plan;
    const images = deploy.type === "docker" || await hasDockerRelease(ctx);
    const removed = await cleanupReleases(paths, deploy.keepReleases, [id, previous]);
    if (images) removed.push(...await pruneImages(ctx.runner, deploy.name, await listReleases(paths)));
    return removed.length ? `removed ${removed.join(", ")}` : "nothing to remove";
  },
  dry: ({ plan, print }) => print(`would keep the newest ${plan.deploy.keepReleases} releases`),
};

/** Whether any release of the app is a docker one. */
async function hasDockerRelease(ctx: DeployContext): Promise<boolean> {
  for (const id of await listReleases(ctx.paths)) {
    if ((await readReleaseMeta(ctx.paths, id).catch(() => undefined))?.image) return true;
  }
  return false;
}

/**
 * Runs a build command or hook (see asApp) as `as`, then kills what it left behind (see
 * killLeftovers; all processes of the app's build user, see killAllOf): processes that outlive
 * it, also daemonized ones, neither run on as the app nor hold the release.
 */
export async function runConfined(
  ctx: DeployContext,
  cmd: Cmd,
  releaseDir?: string,
  as = user(ctx),
): Promise<CmdResult> {
  const since = (uptime() ?? 0.01) - 0.01; // /proc/<pid>/stat counts in hundredths
  try {
    return await ctx.runner.run(cmd);
  } finally {
    if (!cmd.engine) {
      const building = as !== undefined && as.name === buildUserName(ctx.paths.app);
      const killed = (building ? await killAllOf(as, ctx.runner) : 0) + await killLeftovers(as, releaseDir, since);
      if (building) await sweepShared(as, ctx.runner); // setuid/setgid files it left in /tmp and the like
      if (killed) ctx.journal.output(`(killed ${killed} process${killed === 1 ? "" : "es"} it left behind)`);
    }
  }
}
