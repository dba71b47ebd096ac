/**
 * An app's processes as the API gives them (./views.ts's app views): counted (running, not,
 * restarts), grouped by type (web first), and each one on the server page, from the processes
 * its status.json listed as stored (see store.ts's `processesJson`; every field checked).
 * @module
 */
import { parseJson } from "./rows.ts";
import type { ProcessRecord } from "./store.ts";

/** The process states that count as running: PM2's `online`, systemd's `active`, a docker engine's `running` (a container). */
export const UP_STATES: ReadonlySet<string> = new Set(["online", "active", "running"]);
/** Process types counted one by one in {@link ProcessesView}.groups (the rest only in the totals). */
export const MAX_PROCESS_GROUPS = 20;
/** States of a group's processes not running named in {@link ProcessGroup}.down (keeps the overview small). */
export const MAX_DOWN_STATES = 5;

/** An app's processes. */
export interface ProcessesView {
  /** How many status.json listed (more than were kept when over MAX_PROCESSES of ./limits.ts). */
  total: number;
  /** Listed but not kept. */
  omitted: number;
  /** Of the kept ones: how many run (online, active or running), how many do not, and their restarts in all. */
  up: number;
  down: number;
  restarts: number;
  /** By type (web first, then by name), at most {@link MAX_PROCESS_GROUPS}. */
  groups: ProcessGroup[];
  /** Each kept process (the server page only). */
  list?: ProcessView[];
}

/** The processes of one type. */
export interface ProcessGroup {
  type: string;
  count: number;
  up: number;
  restarts: number;
  /** The states of those not running (errored, stopped, failed, missing…), each once, sorted; at most 5. */
  down: string[];
}

/** One process, as status.json listed it (every field checked: see store.ts's processesJson). */
export type ProcessView = ProcessRecord & {
  /** Whether its state is one of {@link UP_STATES}. */
  up: boolean;
};

/**
 * Stored processes (see store.ts's `processesJson`) as the API gives them: counted, by type, and
 * each one when `withList`; null when status.json listed none (or the value is not valid).
 */
export function processesView(text: string | null, withList: boolean): ProcessesView | null {
  const value = parseJson(text) as { list?: unknown; total?: unknown } | null;
  if (value === null || typeof value !== "object" || !Array.isArray(value.list)) return null;
  const list: ProcessView[] = value.list
    .filter((p): p is Record<string, unknown> => p !== null && typeof p === "object")
    .map((p) => {
      const state = typeof p.state === "string" ? p.state : "unknown";
      const number = (v: unknown) => typeof v === "number" ? v : null;
      return {
        type: typeof p.type === "string" ? p.type : "?",
        instance: number(p.instance),
        name: typeof p.name === "string" ? p.name : null,
        pid: number(p.pid),
        state,
        restarts: number(p.restarts),
        up: UP_STATES.has(state),
      };
    });
  const groups = new Map<string, ProcessGroup & { states: Set<string> }>();
  for (const p of list) {
    let group = groups.get(p.type);
    if (!group) groups.set(p.type, group = { type: p.type, count: 0, up: 0, restarts: 0, down: [], states: new Set() });
    group.count++;
    group.restarts += p.restarts ?? 0;
    if (p.up) group.up++;
    else group.states.add(p.state);
  }
  const total = typeof value.total === "number" && value.total >= list.length ? value.total : list.length;
  const up = list.filter((p) => p.up).length;
  const view: ProcessesView = {
    total,
    omitted: total - list.length,
    up,
    down: list.length - up,
    restarts: list.reduce((sum, p) => sum + (p.restarts ?? 0), 0),
    groups: [...groups.values()]
      .sort((a, b) =>
        Number(b.type === "web") - Number(a.type === "web") || (a.type < b.type ? -1 : a.type > b.type ? 1 : 0)
      )
      .slice(0, MAX_PROCESS_GROUPS)
      .map(({ states, ...group }) => ({ ...group, down: [...states].sort().slice(0, MAX_DOWN_STATES) })),
  };
  return withList ? { ...view, list } : view;
}
