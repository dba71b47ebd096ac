/**
 * What the proxy asks of the kernel for its own process at start: more open files
 * ({@link raiseFdLimit}) and a scheduling priority above the apps' for the event loop, below
 * everything for V8's helper threads ({@link setNice}).
 * @module
 */
import { getPriority, setPriority } from "node:os";
import { message } from "./pages.ts";

/**
 * Raises the soft limit of open files to the hard limit (and, as root, both to `target`), with
 * util-linux `prlimit`. Returns the soft limit in force afterwards.
 */
export async function raiseFdLimit(target = 65_536): Promise<number> {
  const read = async () => {
    const text = await Deno.readTextFile("/proc/self/limits").catch(() => "");
    const match = /^Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)/m.exec(text);
    const value = (s: string | undefined) => s === "unlimited" ? Infinity : Number(s ?? 1024);
    return { soft: value(match?.[1]), hard: value(match?.[2]) };
  };
  const { soft, hard } = await read();
  const want = Deno.uid() === 0 ? Math.max(target, hard === Infinity ? target : hard) : hard;
  if (soft >= want || want === Infinity) return soft;
  const limit = Deno.uid() === 0 ? `${want}:${Math.max(want, hard)}` : `${want}:`;
  try {
    await new Deno.Command("prlimit", {
      args: ["--pid", String(Deno.pid), `--nofile=${limit}`],
      stdout: "null",
      stderr: "null",
    }).output();
  } catch { /* no prlimit: keep the limit we have */ }
  return (await read()).soft;
}

/** The nice value in force after {@link setNice}, and why it is not the one asked for. */
export interface Nice {
  nice: number;
  problem?: string;
}

/** The nice value of V8's helper threads (garbage collection, compilation): the lowest priority there is. */
export const HELPER_NICE = 19;
/** How V8's helper threads' names begin ("V8 DefaultWorker", cut to 15 characters by the kernel). */
export const HELPER_NAME = "V8 ";

/**
 * Sets the nice value of this process's threads (on Linux a nice value is a thread's; threads
 * started later take their creator's): `nice` for the thread that runs the event loop and for
 * Deno's own, {@link HELPER_NICE} for V8's helper threads ("V8 DefaultWorker": garbage collection
 * and compilation, which the event loop does not wait for). A lower value than the apps' lets the
 * kernel run the proxy as soon as a packet wakes it, even while apps keep the CPUs busy; going
 * below 0 needs root (or CAP_SYS_NICE). The helpers go the other way: at the proxy's value, one
 * woken by the event loop took its CPU for 4.4 ms, and one kept an app waiting 3.3 ms for the
 * CPU it ran on while the other CPU idled (traced with `perf sched` at 2,000 requests/s). A
 * failure is returned, never thrown: the proxy serves either way.
 */
export function setNice(nice: number): Nice {
  const threads = (() => {
    try {
      return [...Deno.readDirSync("/proc/self/task")].map((entry) => Number(entry.name));
    } catch {
      return [0]; // no /proc: this thread alone
    }
  })();
  let problem: string | undefined;
  for (const thread of threads) {
    try {
      const want = isHelper(thread) ? HELPER_NICE : nice;
      if (getPriority(thread) !== want) setPriority(thread, want);
    } catch (error) {
      // Node's SystemError: the errno's name is in `info` (`code` is ERR_SYSTEM_ERROR).
      const code = (error as { info?: { code?: string } }).info?.code;
      // A thread that ended meanwhile is no problem.
      if (code === "ESRCH") continue;
      problem ??= code === "EACCES" || code === "EPERM"
        ? "not permitted (a nice value below 0 needs root or CAP_SYS_NICE)"
        : message(error);
    }
  }
  return { nice: getPriority(0), problem };
}

/** Whether thread `tid` of this process is one of V8's helper threads (by its name). */
function isHelper(tid: number): boolean {
  try {
    return Deno.readTextFileSync(`/proc/self/task/${tid}/comm`).startsWith(HELPER_NAME);
  } catch {
    return false;
  }
}
