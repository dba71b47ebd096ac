/**
 * Child processes of the proxy benchmark (apps, proxies, wrk, openssl): each one is tracked from
 * its spawn with the tail of its output, so {@link stopAll} can stop whatever still runs (on
 * Ctrl-C / SIGTERM from bench/run.ts, and in the benchmark's own `finally`). Only processes
 * spawned here are ever signalled, by their PID.
 * @module
 */
import { join } from "node:path";
import { FETCH_BLOCKED_PORTS } from "../src/proxy/routes.ts";

/** How long a child may take to exit after SIGTERM before it gets SIGKILL. */
const STOP_GRACE_MS = 5_000;
/** How much of a child's output is kept (stdout and stderr together). */
const OUTPUT_TAIL = 64 * 1024;

/** A child process of this benchmark and the tail of its output. */
export interface Proc {
  name: string;
  child: Deno.ChildProcess;
  /** Settles when the child has exited and its output is fully read. */
  done: Promise<Deno.CommandStatus>;
  exited: boolean;
  output(): string;
}

/** Every child that may still run. */
const live = new Set<Proc>();

/** Spawns `argv` with its output collected, tracked until it exits. */
export function spawn(
  name: string,
  argv: string[],
  options: { cwd?: string; env?: Record<string, string> } = {},
): Proc {
  const child = new Deno.Command(argv[0], {
    args: argv.slice(1),
    cwd: options.cwd,
    env: options.env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let text = "";
  const decoder = new TextDecoder();
  const collect = (stream: ReadableStream<Uint8Array>) =>
    stream.pipeTo(
      new WritableStream({
        write(chunk) {
          text += decoder.decode(chunk, { stream: true });
          if (text.length > OUTPUT_TAIL * 2) text = text.slice(-OUTPUT_TAIL);
        },
      }),
    ).catch(() => {});
  const reading = Promise.all([collect(child.stdout), collect(child.stderr)]);
  const proc: Proc = {
    name,
    child,
    exited: false,
    done: Promise.all([child.status, reading]).then(([status]) => status),
    output: () => text.slice(-OUTPUT_TAIL),
  };
  live.add(proc);
  proc.done.then(() => {
    proc.exited = true;
    live.delete(proc);
  });
  return proc;
}

/** Runs `argv` to completion; throws with its output when it does not exit 0. */
export async function run(name: string, argv: string[]): Promise<string> {
  const proc = spawn(name, argv);
  const status = await proc.done;
  if (!status.success) throw new Error(`${name} exited ${status.code}:\n${proc.output()}`);
  return proc.output();
}

/** Stops `proc` with `signal` (SIGKILL after {@link STOP_GRACE_MS}) and waits for it. */
export async function stop(proc: Proc, signal: Deno.Signal = "SIGTERM"): Promise<void> {
  if (proc.exited) return;
  try {
    proc.child.kill(signal);
  } catch {
    // already gone
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<"late">((resolve) => timer = setTimeout(() => resolve("late"), STOP_GRACE_MS));
  const outcome = await Promise.race([proc.done, late]);
  clearTimeout(timer);
  if (outcome === "late") {
    try {
      proc.child.kill("SIGKILL");
    } catch {
      // gone meanwhile
    }
    await proc.done;
  }
}

/** Stops every child spawned here that still runs. */
export async function stopAll(): Promise<void> {
  await Promise.all([...live].map((proc) => stop(proc)));
}

/** The path of executable `name` on PATH, or undefined. */
export function which(name: string): string | undefined {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (dir && exists(join(dir, name))) return join(dir, name);
  }
  return undefined;
}

/** Whether `path` is a regular file. */
export function exists(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/** `count` distinct free ports on 127.0.0.1 (held open together so that none repeats). */
export function freePorts(count: number): number[] {
  const held: Deno.Listener[] = [];
  const ports: number[] = [];
  try {
    while (ports.length < count) {
      const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      held.push(listener);
      const port = (listener.addr as Deno.NetAddr).port;
      if (!FETCH_BLOCKED_PORTS.has(port)) ports.push(port);
    }
  } finally {
    for (const listener of held) listener.close();
  }
  return ports;
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
