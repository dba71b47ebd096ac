/**
 * The alerts of a running fleet monitor (`fleet`, `fleet collect --once`): the config's alert
 * targets and rules with their memory in a file (./alert_memory.ts), judged by an
 * {@link Alerter} (./alerts.ts) after each cycle, the memory saved and the notices sent, and the
 * cycle's rule transitions as lines for the terminal.
 * @module
 */
import { writeFileAtomic } from "../fsutil.ts";
import type { Notice } from "../notify.ts";
import { forTerminal } from "../terminal.ts";
import { readMemory } from "./alert_memory.ts";
import { Alerter, type AlerterOptions } from "./alerts.ts";
import type { CycleSummary } from "./collector.ts";
import type { FleetConfig } from "./config.ts";
import type { FleetStore } from "./store.ts";

/**
 * The fleet config's alerts with their memory in a file: `after(summary, store)` after each cycle.
 * Undefined when the config has no `alerts:`.
 */
export class FleetAlerts {
  private saved: string;
  private saving: Promise<void> = Promise.resolve();

  private constructor(
    readonly alerter: Alerter,
    readonly path: string,
    saved: string,
    private readonly log: (line: string) => void,
  ) {
    this.saved = saved;
  }

  /** The config's alerts, their memory read from `path` (an absent or unreadable file: a fresh start). */
  static async open(
    config: Pick<FleetConfig, "alerts" | "graceCycles"> & Partial<Pick<FleetConfig, "rules" | "servers">>,
    path: string,
    options: Omit<AlerterOptions, "memory" | "graceCycles" | "rules" | "servers"> = {},
  ): Promise<FleetAlerts | undefined> {
    const rules = config.rules ?? [];
    if (!config.alerts.length && !rules.length) return undefined;
    const memory = await readMemory(path, options.log);
    const alerter = new Alerter(config.alerts, {
      ...options,
      graceCycles: config.graceCycles,
      memory,
      rules,
      servers: (config.servers ?? []).map((server) => server.name),
    });
    return new FleetAlerts(alerter, path, memory ? JSON.stringify(memory) + "\n" : "", options.log ?? console.log);
  }

  /**
   * After a cycle: the notices now (in the order of the cycles), then the memory saved and the
   * notices sent, at once. Resolves when both are done; never rejects.
   */
  after(summary: CycleSummary, store: FleetStore): Promise<void> {
    let notices: Notice[];
    try {
      notices = this.alerter.notices(summary, store);
    } catch (error) {
      console.error(`fleet: alerts: ${error instanceof Error ? error.message : error}`);
      return Promise.resolve();
    }
    for (const line of ruleLines(notices)) this.log(line);
    const text = JSON.stringify(this.alerter.snapshot()) + "\n";
    if (text !== this.saved) {
      this.saved = text;
      this.saving = this.saving.then(() => writeFileAtomic(this.path, text, 0o600)).catch((error) =>
        console.error(`fleet: alerts: could not save ${this.path}: ${error instanceof Error ? error.message : error}`)
      );
    }
    return Promise.all([this.saving, this.alerter.send(notices)]).then(() => {});
  }
}

/** Rule transitions shown under a cycle's line at most. */
const MAX_RULE_LINES = 10;

/** The transitions a rule notice stands for: one, or the `subjects` of one for the rest past the cap. */
const transitionsOf = (notice: Notice) => Number(notice.fields.subjects) || 1;

/** The transitions `notices` stand for in all. */
const sum = (notices: readonly Notice[]) => notices.reduce((n, notice) => n + transitionsOf(notice), 0);

/**
 * A cycle's rule transitions for its terminal output: `  rules: 1 firing, 1 recovered` (every
 * transition, sent one by one or not) and each notice's title (nothing without any).
 */
export function ruleLines(notices: readonly Notice[]): string[] {
  const rules = notices.filter((notice) => notice.event === "rule_firing" || notice.event === "rule_recovered");
  if (!rules.length) return [];
  const firing = sum(rules.filter((notice) => notice.event === "rule_firing"));
  const recovered = sum(rules) - firing;
  const shown = rules.slice(0, MAX_RULE_LINES);
  const more = sum(rules) - sum(shown);
  return [
    `  rules: ${[firing && `${firing} firing`, recovered && `${recovered} recovered`].filter(Boolean).join(", ")}`,
    ...shown.map((notice) =>
      `    ${notice.event === "rule_firing" ? "firing" : "recovered"}: ${forTerminal(notice.title, { oneLine: true })}`
    ),
    ...(more ? [`    and ${more} more`] : []),
  ];
}
