/**
 * What a deploy (or a rollback) does to the world, injected: the runner that executes commands,
 * the proxy's control socket, the clock, the server root and where progress lines go (the
 * cancellation comes with each deploy's options). The commands build {@link Effects} once ({@link realEffects}); tests pass fakes
 * (tests/helpers/fake_runner.ts). Everything below `execute` and `rollback` takes them from here
 * instead of spawning, connecting or reading the time itself.
 * @module
 */
import type { ServerConfig } from "../config/schema.ts";
import type { ProcessManager } from "../managers/mod.ts";
import type { AppPaths } from "../paths.ts";
import { prefix } from "../paths.ts";
import { control } from "../proxy/client.ts";
import { type LineSink, ProcessRunner, type Runner } from "../runner.ts";
import type { Cancellation } from "./cancel.ts";
import type { Journal } from "./journal.ts";
import type { Deployment } from "./prepare.ts";

/** Time, for durations (`elapsed`, monotonic milliseconds) and timestamps (`now`, epoch milliseconds). */
export interface Clock {
  now(): number;
  elapsed(): number;
}

/** The system clock: wall time for timestamps, monotonic time for durations. */
export const SYSTEM_CLOCK: Clock = { now: () => Date.now(), elapsed: () => performance.now() };

/** ISO 8601 of the clock's now. */
export function isoNow(clock: Clock): string {
  return new Date(clock.now()).toISOString();
}

/** One request to the proxy's control socket and its reply (see proxy/client.ts `control`). */
export type ProxyControl = (request: object) => Promise<Record<string, unknown>>;

/** The side effects of a deploy, built once by the command that runs it. */
export interface Effects {
  /** The server root (DEPLOY_PARADIGM_PREFIX). */
  root: string;
  /** A runner that executes commands, streaming their lines to `sink`. */
  runner(sink: LineSink): Runner;
  proxy: ProxyControl;
  clock: Clock;
  /** Where progress lines go. */
  print: (line: string) => void;
  /** Waits `ms` on `clock` (default: a timer); tests pass one that moves their fake clock. */
  sleep?: (ms: number) => Promise<void>;
}

/** The real world: processes, the proxy of the server under `root`, the system clock, stdout. */
export function realEffects(overrides: Partial<Effects> = {}): Effects {
  const root = overrides.root ?? prefix();
  return {
    root,
    runner: (sink) => new ProcessRunner(sink),
    proxy: (request) => control(root, request),
    clock: SYSTEM_CLOCK,
    print: (line) => console.log(line),
    ...overrides,
  };
}

/** What a switch strategy (and a restart in place) works with: one app on one server. */
export interface SwitchContext {
  root: string;
  paths: AppPaths;
  config: ServerConfig;
  journal: Journal;
  /** Runs the deploy's commands (a DryRunner in a dry run). */
  runner: Runner;
  /** Answers read-only questions (what runs, which engine), for real even in a dry run. */
  inspect: Runner;
  /** The server's manager; for docker apps (or from one), with containers. */
  manager: ProcessManager;
  proxy: ProxyControl;
  clock: Clock;
  sleep?: Effects["sleep"];
}

/** The context of a deploy, built once it is validated: the steps and strategies see only this. */
export interface DeployContext extends SwitchContext {
  plan: Deployment;
  print: (line: string) => void;
  cancellation: Cancellation;
  /** A dry run: steps say what they would do; nothing changes. */
  dry: boolean;
}
