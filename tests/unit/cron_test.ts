/**
 * Cron: schedules (parse errors, next runs, cron's day-of-month OR day-of-week rule), checked
 * against the real `systemd-analyze calendar` for many schedules; job names; the systemd timer
 * plans and the PM2 scheduler's service, as data.
 */
import { join, resolve } from "node:path";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { type CronJob, jobNameProblem } from "../../src/cron/job.ts";
import {
  appendText,
  cronLogPath,
  type CronRun,
  lastRuns,
  outputLogPath,
  readRuns,
  recordRun,
} from "../../src/cron/log.ts";
import { appendLine } from "../../src/deploy/journal.ts";
import { dueJobs } from "../../src/cron/scheduler.ts";
import { runJob } from "../../src/cron/run.ts";
import { UsageError } from "../../src/errors.ts";
import { showJobs } from "../../src/cron/list.ts";
import { writeReleaseMeta } from "../../src/deploy/releases.ts";
import { hasCron, schedulerService, syncCron } from "../../src/cron/sync.ts";
import { cron } from "../../src/deploy/steps/cron.ts";
import type { ServerConfig } from "../../src/config/schema.ts";
import { FakeRunner } from "../helpers/fake_runner.ts";
import { cronService, cronTimer, installedJobs, type JobUnits, timerPlans } from "../../src/cron/systemd.ts";
import { pm2 } from "../../src/managers/pm2.ts";
import { appPaths } from "../../src/paths.ts";
import {
  isScheduleError,
  matches,
  nextRun,
  onCalendar,
  parseSchedule,
  type Schedule,
} from "../../src/cron/schedule.ts";

function parsed(text: string): Schedule {
  const schedule = parseSchedule(text);
  if (isScheduleError(schedule)) throw new Error(`${text}: ${schedule.error}`);
  return schedule;
}

/** The next `n` runs after `from`, as local "YYYY-MM-DD HH:MM" (the test machine's zone). */
function runs(text: string, from: string, n: number): string[] {
  const out: string[] = [];
  let at = new Date(from);
  for (let i = 0; i < n; i++) {
    at = nextRun(parsed(text), at);
    out.push(local(at));
  }
  return out;
}

function local(at: Date): string {
  const two = (v: number) => String(v).padStart(2, "0");
  return `${at.getFullYear()}-${two(at.getMonth() + 1)}-${two(at.getDate())} ${two(at.getHours())}:${
    two(at.getMinutes())
  }`;
}

Deno.test("parseSchedule: what each field holds; names, 7 is Sunday, steps, macros", () => {
  const s = parsed("*/15 9-17/4 1,15 jan-mar,DEC 5-7");
  assertEquals(
    [s.minutes, s.hours, s.days, s.months, s.weekdays, s.dayStar, s.weekdayStar],
    [[0, 15, 30, 45], [9, 13, 17], [1, 15], [1, 2, 3, 12], [0, 5, 6], false, false],
  );
  assertEquals(parsed("0 0 * * sun,7").weekdays, [0]);
  assertEquals(parsed("0 0 */2 * *").dayStar, true);
  assertEquals(parsed("  @Daily ").source, "@Daily");
  for (
    const [macro, same] of Object.entries({
      "@yearly": "0 0 1 1 *",
      "@annually": "0 0 1 1 *",
      "@monthly": "0 0 1 * *",
      "@weekly": "0 0 * * 0",
      "@daily": "0 0 * * *",
      "@midnight": "0 0 * * *",
      "@hourly": "0 * * * *",
    })
  ) {
    const { source: _a, ...a } = parsed(macro);
    const { source: _b, ...b } = parsed(same);
    assertEquals(a, b, macro);
  }
});

Deno.test("parseSchedule: errors say what was expected, and where (column from 1)", () => {
  const cases: [string, string, number][] = [
    ["0 25 * * *", "field 2 (hour): 25 is out of range 0-23", 3],
    ["60 * * * *", "field 1 (minute): 60 is out of range 0-59", 1],
    ["0 0 0 * *", "field 3 (day-of-month): 0 is out of range 1-31", 5],
    ["0 0 * 13 *", "field 4 (month): 13 is out of range 1-12 or jan-dec", 7],
    ["0 0 * * 8", "field 5 (day-of-week): 8 is out of range 0-7 or sun-sat (0 and 7 are Sunday)", 9],
    ["0 0 * * 1-8", "field 5 (day-of-week): 8 is out of range 0-7 or sun-sat (0 and 7 are Sunday)", 11],
    ["0 0 * foo *", 'field 4 (month): expected a number or a name (jan..dec), got "foo"', 7],
    ["0 mon * * *", 'field 2 (hour): expected a number, got "mon"', 3],
    ["0 0 * * monday", 'field 5 (day-of-week): expected a number or a name (sun..sat), got "monday"', 9],
    ["*/0 * * * *", "field 1 (minute): the step must be 1 or more", 3],
    ["*/x * * * *", 'field 1 (minute): expected a number of steps after "/", got "x"', 3],
    ["5/15 * * * *", "field 1 (minute): a step needs a range or *: expected 5-59/15 or */15", 1],
    [
      "0 22-2 * * *",
      "field 2 (hour): the range 22-2 goes backwards: expected start-end with start <= end " +
      "(e.g. 22-23,0-2)",
      3,
    ],
    [
      "0 0 * * fri-mon",
      "field 5 (day-of-week): the range fri-mon goes backwards: expected start-end with " +
      "start <= end (e.g. fri-sat,sun-mon)",
      9,
    ],
    ["1,,2 * * * *", "field 1 (minute): a list has an empty item (two commas, or a comma at an end)", 3],
    ["1, * * * *", "field 1 (minute): a list has an empty item (two commas, or a comma at an end)", 3],
    ["0 -1 * * *", 'field 2 (hour): expected a number, got "-1"', 3],
    ["0 1- * * *", "field 2 (hour): expected a number", 5],
    ["* * * *", "expected 5 fields (minute hour day-of-month month day-of-week), got 4", 8],
    [
      "0 0 * * * /usr/bin/backup",
      "expected 5 fields (minute hour day-of-month month day-of-week), got 6: " +
      "the command and a seconds field do not belong in the schedule",
      11,
    ],
    [
      "",
      'expected a schedule: 5 fields (minute hour day-of-month month day-of-week) such as "*/5 * * * *", ' +
      "or a macro such as @daily",
      1,
    ],
    [
      "@reboot",
      "@reboot is not supported: jobs run on a schedule (expected @yearly, @annually, @monthly, " +
      "@weekly, @daily, @midnight or @hourly, or 5 fields)",
      1,
    ],
    [
      " @often",
      "unknown macro @often: expected @yearly, @annually, @monthly, @weekly, @daily, @midnight or " +
      "@hourly",
      2,
    ],
    ["0 0 30 2 *", "never runs: feb has no day 30", 5],
    ["0 0 31 apr,jun *", "never runs: apr,jun have no day 31", 5],
  ];
  for (const [text, error, column] of cases) {
    assertEquals(parseSchedule(text), { error, column }, text);
  }
  // Both day fields restricted: February 30 or any Monday still runs.
  assert(!isScheduleError(parseSchedule("0 0 30 2 mon")));
  assert(!isScheduleError(parseSchedule("0 0 29 2 *")));
});

Deno.test("nextRun: strictly after, in local time; day-of-month OR day-of-week when both are restricted", () => {
  const from = "2026-03-10T10:07:30"; // a Tuesday, local time
  assertEquals(runs("*/5 * * * *", from, 3), ["2026-03-10 10:10", "2026-03-10 10:15", "2026-03-10 10:20"]);
  assertEquals(runs("* * * * *", "2026-03-10T10:07:00", 1), ["2026-03-10 10:08"]);
  assertEquals(runs("0 9 * * mon-fri", "2026-03-13T09:00:00", 2), ["2026-03-16 09:00", "2026-03-17 09:00"]);
  // 1st or 15th, or any Sunday.
  assertEquals(runs("0 0 1,15 * sun", from, 4), [
    "2026-03-15 00:00",
    "2026-03-22 00:00",
    "2026-03-29 00:00",
    "2026-04-01 00:00",
  ]);
  // `*/2` in day-of-month counts as `*`: odd days that are Mondays.
  assertEquals(runs("0 0 */2 * mon", from, 3), ["2026-03-23 00:00", "2026-04-13 00:00", "2026-04-27 00:00"]);
  assertEquals(runs("0 0 29 2 *", from, 2), ["2028-02-29 00:00", "2032-02-29 00:00"]);
  assertEquals(runs("@yearly", from, 1), ["2027-01-01 00:00"]);
  assertEquals(runs("59 23 31 12 *", "2026-12-31T23:59:00", 1), ["2027-12-31 23:59"]);
  // Feb 29 on a Sunday (both must match: day-of-week starts with *): 2032.
  assertEquals(runs("0 0 29 2 */7", "2026-01-01T00:00:00", 1), ["2032-02-29 00:00"]);
  assertEquals(runs("0 0 29 2 */8", "2026-01-01T00:00:00", 1), ["2032-02-29 00:00"]);
  assertEquals(runs("0 0 29 2 *", "2026-01-01T00:00:00", 1), ["2028-02-29 00:00"]);
  // Both restricted: Mondays of February, and February 29.
  assertEquals(runs("0 0 29 2 mon", "2026-01-01T00:00:00", 5), [
    "2026-02-02 00:00",
    "2026-02-09 00:00",
    "2026-02-16 00:00",
    "2026-02-23 00:00",
    "2027-02-01 00:00",
  ]);
  assert(matches(parsed("30 2 * * *"), new Date("2026-05-05T02:30:59")));
  assert(!matches(parsed("30 2 * * *"), new Date("2026-05-05T02:31:00")));
});

// ---------------------------------------------------------------------------------------------
// onCalendar against the real systemd-analyze

const SYSTEMD_ANALYZE = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"].find((p) => {
  try {
    return Deno.statSync(p).isFile;
  } catch {
    return false;
  }
});

/** A small seeded generator (mulberry32), so a failure is reproducible. */
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A random cron schedule: every form of field, names sometimes. */
function randomSchedule(next: () => number): string {
  const int = (a: number, b: number) => a + Math.floor(next() * (b - a + 1));
  const field = (min: number, max: number, names?: string[]): string => {
    const name = (v: number) => names && next() < 0.3 ? names[v - min] ?? String(v) : String(v);
    const item = (): string => {
      const a = int(min, max);
      const b = int(a, max);
      switch (int(0, 5)) {
        case 0:
          return "*";
        case 1:
          return `*/${int(1, Math.max(2, Math.floor((max - min) / 2)))}`;
        case 2:
          return name(a);
        case 3:
          return `${name(a)}-${name(b)}`;
        case 4:
          return `${a}-${b}/${int(1, 6)}`;
        default:
          return `${name(a)},${name(int(min, max))}`;
      }
    };
    const first = item();
    return first.startsWith("*") || next() < 0.6 ? first : `${first},${item()}`.replace(/^\*,|,\*$/, "");
  };
  const months = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
  const days = ["sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun"];
  // Fewer stars in the time fields would make thousands of runs a day: keep them sparse enough.
  const minute = next() < 0.3 ? "*/7" : field(0, 59);
  return [minute, field(0, 23), field(1, 31), field(1, 12, months), field(0, 7, days)].join(" ");
}

/** `systemd-analyze calendar` of every line at once: for each, its next `n` elapses (ms since the epoch). */
async function systemdRuns(lines: string[], base: string, n: number, tz?: string): Promise<number[][]> {
  const out = await new Deno.Command(SYSTEMD_ANALYZE!, {
    args: ["calendar", `--iterations=${n}`, `--base-time=${base}`, ...lines],
    env: { ...(tz ? { TZ: tz } : {}), SYSTEMD_COLORS: "0", SYSTEMD_PAGER: "" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  if (out.code !== 0) throw new Error(`systemd-analyze failed: ${new TextDecoder().decode(out.stderr)}\n${text}`);
  const blocks: number[][] = [];
  const rows = text.split("\n");
  for (const [i, row] of rows.entries()) {
    if (/^\s*Normalized form:/.test(row)) blocks.push([]);
    const elapse = /^\s*(?:Next elapse|Iter\. #\d+): \w+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (\S+)$/.exec(row);
    if (!elapse) continue;
    const utc = /^\s*\(in UTC\): \w+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC$/.exec(rows[i + 1] ?? "");
    const when = utc ? utc[1] : elapse[2] === "UTC" ? elapse[1] : undefined;
    if (!when) throw new Error(`cannot read ${row}`);
    blocks.at(-1)!.push(Date.parse(`${when.replace(" ", "T")}Z`));
  }
  assertEquals(blocks.length, lines.length, text);
  return blocks;
}

/** For every schedule: its first `n` runs after `base` by nextRun, and by systemd from onCalendar's lines. */
async function compare(schedules: string[], base: Date, baseText: string, n: number) {
  const all = schedules.map((text) => ({ text, lines: onCalendar(parsed(text)) }));
  const systemd = await systemdRuns(all.flatMap((s) => s.lines), baseText, n);
  let at = 0;
  const mismatches: string[] = [];
  for (const { text, lines } of all) {
    const theirs = [...new Set(systemd.slice(at, at + lines.length).flat())].sort((a, b) => a - b).slice(0, n);
    at += lines.length;
    const ours: number[] = [];
    let t = base;
    for (let i = 0; i < n; i++) ours.push((t = nextRun(parsed(text), t)).getTime());
    if (JSON.stringify(ours) !== JSON.stringify(theirs)) {
      const show = (v: number[]) => v.slice(0, 4).map((ms) => new Date(ms).toISOString()).join(" ");
      mismatches.push(`${text} → ${lines.join(" | ")}\n  ours:    ${show(ours)}\n  systemd: ${show(theirs)}`);
    }
  }
  assertEquals(mismatches, [], mismatches.join("\n"));
}

Deno.test({
  name: "onCalendar: systemd-analyze computes the same runs as nextRun (hand-picked and 300 random schedules)",
  ignore: SYSTEMD_ANALYZE === undefined,
  async fn() {
    const chosen = [
      "* * * * *",
      "*/5 * * * *",
      "0 9 * * mon-fri",
      "0 0 1,15 * sun",
      "0 0 */2 * mon",
      "30 2 * feb,apr 7",
      "15 10-12,14 1-7 * 1",
      "0 0 31 * *",
      "0 0 29 2 *",
      "0 0 29 2 mon",
      "5 4 * * sun,sat",
      "0 0 * * 0-7",
      "*/10 2 3 4 *",
      "@yearly",
      "@monthly",
      "@weekly",
      "@daily",
      "@hourly",
    ];
    const next = random(16);
    const randoms = Array.from({ length: 1000 }, () => randomSchedule(next))
      .filter((text) => !isScheduleError(parseSchedule(text))).slice(0, 300);
    assertEquals(randoms.length, 300);
    for (const base of ["2026-01-01T00:00:30", "2027-02-28T23:59:30", "2028-02-28T12:34:56"]) {
      await compare([...chosen, ...randoms], new Date(base), base.replace("T", " "), 12);
    }
  },
});

Deno.test({
  name: "nextRun and systemd agree across daylight saving time changes (America/New_York, Europe/Berlin)",
  ignore: SYSTEMD_ANALYZE === undefined,
  async fn() {
    const schedules = ["30 2 * * *", "*/20 * * * *", "0 1,2,3 * * *", "45 1 * * sun", "0 */1 8 3 *"];
    const bases = ["2026-03-07 23:00:30", "2026-10-31 22:00:30", "2026-03-28 20:00:30", "2026-10-24 22:00:30"];
    const module = resolve(import.meta.dirname!, "../../src/cron/schedule.ts");
    for (const tz of ["America/New_York", "Europe/Berlin"]) {
      // Our side in a Deno of that zone (the zone is the process's).
      const script = `import { nextRun, onCalendar, parseSchedule } from ${JSON.stringify(`file://${module}`)};
        const out = {};
        for (const text of ${JSON.stringify(schedules)}) for (const base of ${JSON.stringify(bases)}) {
          const s = parseSchedule(text); let t = new Date(base.replace(" ", "T")); const runs = [];
          for (let i = 0; i < 30; i++) runs.push((t = nextRun(s, t)).getTime());
          out[text + "@" + base] = { runs, lines: onCalendar(s) };
        }
        console.log(JSON.stringify(out));`;
      const ran = await new Deno.Command(Deno.execPath(), {
        args: ["eval", "--no-config", script],
        env: { TZ: tz },
        stdout: "piped",
        stderr: "piped",
      }).output();
      assertEquals(ran.code, 0, new TextDecoder().decode(ran.stderr));
      const ours = JSON.parse(new TextDecoder().decode(ran.stdout)) as Record<
        string,
        { runs: number[]; lines: string[] }
      >;
      const mismatches: string[] = [];
      for (const [key, { runs, lines }] of Object.entries(ours)) {
        const base = key.split("@")[1];
        const theirs = [...new Set((await systemdRuns(lines, base, 30, tz)).flat())].sort((a, b) => a - b).slice(0, 30);
        if (JSON.stringify(runs) !== JSON.stringify(theirs)) {
          const diff = runs.filter((v) => !theirs.includes(v)).map((v) => `ours only ${new Date(v).toISOString()}`)
            .concat(theirs.filter((v) => !runs.includes(v)).map((v) => `systemd only ${new Date(v).toISOString()}`));
          mismatches.push(`${tz} ${key}: ${diff.join(", ")}`);
        }
      }
      assertEquals(mismatches, [], mismatches.join("\n"));
    }
  },
});

Deno.test("onCalendar: the lines themselves", () => {
  const cases: [string, string[]][] = [
    ["* * * * *", ["*-*-* *:*:00"]],
    ["*/5 * * * *", ["*-*-* *:00..55/5:00"]],
    ["0 9 * * mon-fri", ["Mon..Fri *-*-* 09:00:00"]],
    ["0 0 1,15 * sun", ["Sun *-*-* 00:00:00", "*-*-01,15 00:00:00"]],
    ["0 0 * * 0-2", ["Mon,Tue,Sun *-*-* 00:00:00"]],
    ["0 0 * * 5-7", ["Fri..Sun *-*-* 00:00:00"]],
    ["30 2 1 jan-mar,dec *", ["*-01..03,12-01 02:30:00"]],
    ["10-59/15 */2 * * *", ["*-*-* 00..22/2:10..55/15:00"]],
  ];
  for (const [text, lines] of cases) assertEquals(onCalendar(parsed(text)), lines, text);
});

Deno.test("job names: ^[a-z][a-z0-9-]*$, at most 40 characters", () => {
  assertEquals(jobNameProblem("nightly-report2"), undefined);
  for (const bad of ["", "Nightly", "2nd", "-x", "a_b", "a.b"]) assertMatch(jobNameProblem(bad)!, /must start with/);
  assertEquals(jobNameProblem("a".repeat(40)), undefined);
  assertEquals(jobNameProblem("a".repeat(41)), "must be at most 40 characters (it has 41)");
});

// ---------------------------------------------------------------------------------------------
// systemd timers and the PM2 scheduler, as data

const SELF = "/usr/local/bin/deploy-paradigm";
const JOBS: CronJob[] = [
  { name: "report", schedule: "*/15 * * * *", argv: ["/usr/bin/env", "python3", "report.py"], timeoutMs: 600_000 },
  { name: "both", schedule: "0 3 1,15 * sun", argv: ["/bin/true"], timeoutMs: 30_000 },
];

Deno.test("systemd: a job's service runs cron-run once; its timer holds the schedule", () => {
  assertEquals(
    cronService("web", JOBS[0], { DEPLOY_PARADIGM_PREFIX: "/srv/x" }, SELF),
    [
      "# deploy-paradigm cron job web report: written by each deploy, changes are overwritten.",
      "[Unit]",
      "Description=deploy-paradigm cron job report of web",
      "After=network.target",
      "",
      "[Service]",
      "Type=oneshot",
      'ExecStart="/usr/local/bin/deploy-paradigm" "cron-run" "web" "report"',
      'Environment="DEPLOY_PARADIGM_PREFIX=/srv/x"',
      "TimeoutStartSec=663",
      "",
    ].join("\n"),
  );
  assertEquals(
    cronTimer("web", JOBS[1]),
    [
      "# deploy-paradigm cron job web both: written by each deploy, changes are overwritten.",
      "[Unit]",
      "Description=deploy-paradigm cron job both of web (0 3 1,15 * sun)",
      "",
      "[Timer]",
      "OnCalendar=Sun *-*-* 03:00:00",
      "OnCalendar=*-*-01,15 03:00:00",
      "AccuracySec=1s",
      "Persistent=false",
      "Unit=web-cron-both.service",
      "",
      "[Install]",
      "WantedBy=timers.target",
      "",
    ].join("\n"),
  );
});

Deno.test("systemd: the plans remove dropped jobs' units first, write new and changed ones, restart only changed timers", () => {
  const dir = "/srv/etc/systemd/system";
  const units = (job: CronJob) => ({ service: cronService("web", job, {}, SELF), timer: cronTimer("web", job) });
  const installed = new Map<string, JobUnits>([["old", { timer: "whatever" }], ["report", units(JOBS[0])]]);
  const plans = timerPlans("web", JOBS, installed, "/srv", {}, SELF);
  assertEquals(plans.length, 2);
  assertEquals(plans[0], {
    files: [],
    commands: [{
      argv: ["systemctl", "disable", "--now", "--quiet", "web-cron-old.timer"],
      timeoutMs: 60_000,
      allowFailure: true,
    }],
    remove: [`${dir}/web-cron-old.timer`, `${dir}/web-cron-old.service`],
  });
  // `report` is unchanged: not written, not restarted; `both` is new.
  assertEquals(plans[1].files.map((f) => f.path), [`${dir}/web-cron-both.service`, `${dir}/web-cron-both.timer`]);
  assertEquals(plans[1].commands.map((c) => c.argv), [
    ["systemctl", "daemon-reload"],
    ["systemctl", "enable", "--now", "--quiet", "web-cron-report.timer", "web-cron-both.timer"],
  ]);
  // A changed schedule: written and restarted.
  const changed = timerPlans("web", [{ ...JOBS[0], schedule: "@hourly" }], installed, "/srv", {}, SELF);
  assertEquals(changed[1].files.map((f) => f.path), [`${dir}/web-cron-report.service`, `${dir}/web-cron-report.timer`]);
  assertEquals(changed[1].commands.map((c) => c.argv.slice(1).join(" ")), [
    "daemon-reload",
    "enable --now --quiet web-cron-report.timer",
    "restart web-cron-report.timer",
  ]);
  // Nothing changed: only made sure the timers are enabled and started.
  const same = timerPlans("web", JOBS.slice(0, 1), new Map([["report", units(JOBS[0])]]), "/srv", {}, SELF);
  assertEquals(same.map((p) => [p.files, p.commands.map((c) => c.argv.slice(1).join(" "))]), [[[], [
    "enable --now --quiet web-cron-report.timer",
  ]]]);
  // The last job gone: only the removal and a daemon-reload.
  const none = timerPlans("web", [], new Map([["report", units(JOBS[0])]]), "/srv", {}, SELF);
  assertEquals(none.map((p) => p.commands.map((c) => c.argv.slice(1).join(" "))), [
    ["disable --now --quiet web-cron-report.timer"],
    ["daemon-reload"],
  ]);
  assertEquals(timerPlans("web", [], new Map(), "/srv", {}, SELF), []);
});

Deno.test("systemd: installedJobs finds an app's units by their first line, not by name", async () => {
  const root = await Deno.makeTempDir();
  try {
    const dir = join(root, "etc/systemd/system");
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeTextFile(join(dir, "web-cron-report.timer"), cronTimer("web", JOBS[0]));
    await Deno.writeTextFile(join(dir, "web-cron-report.service"), cronService("web", JOBS[0], {}, SELF));
    // The app `web-cron-x`'s job `y`, and a unit someone else wrote.
    await Deno.writeTextFile(join(dir, "web-cron-x-cron-y.timer"), cronTimer("web-cron-x", { ...JOBS[0], name: "y" }));
    await Deno.writeTextFile(join(dir, "web-cron-mine.timer"), "[Timer]\nOnCalendar=daily\n");
    assertEquals(await installedJobs("web", root), ["report"]);
    assertEquals(await installedJobs("web-cron-x", root), ["y"]);
    assertEquals(await installedJobs("api", root), []);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("pm2 scheduler: due jobs of pm2 apps' serving releases, in the minute given", async () => {
  const root = await Deno.makeTempDir();
  try {
    const app = async (name: string, manager: string, cron: CronJob[] | undefined) => {
      const dir = join(root, "opt/deployments", name);
      await Deno.mkdir(join(dir, "releases/20260101-000000-000"), { recursive: true });
      await Deno.writeTextFile(join(dir, "config.yml"), `port: 8000\nmanager: ${manager}\n`);
      await Deno.writeTextFile(
        join(dir, "releases/20260101-000000-000/.deploy-paradigm.json"),
        JSON.stringify({ id: "20260101-000000-000", commit: "x", type: "python", createdAt: "", cron }),
      );
      await Deno.symlink("releases/20260101-000000-000", join(dir, "current"));
    };
    await app("web", "pm2", JOBS);
    await app("api", "systemd", JOBS); // its timers run its jobs
    await app("old", "pm2", undefined); // a release from before cron:
    await app("bad", "pm2", [{ ...JOBS[0], schedule: "0 25 * * *" }]);
    const warnings: string[] = [];
    // Sunday 2026-03-15 03:00: both jobs; 03:15: report only; 03:07: none.
    assertEquals(await dueJobs(root, new Date(2026, 2, 15, 3, 0), (w) => warnings.push(w)), [
      { app: "web", job: "report" },
      { app: "web", job: "both" },
    ]);
    assertEquals(await dueJobs(root, new Date(2026, 2, 15, 3, 15)), [{ app: "web", job: "report" }]);
    assertEquals(await dueJobs(root, new Date(2026, 2, 15, 3, 7)), []);
    assertEquals(warnings, ['bad/report: schedule "0 25 * * *": field 2 (hour): 25 is out of range 0-23']);
    assertEquals(await dueJobs(join(root, "nothing"), new Date()), []);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("pm2 scheduler: its service is deploy-paradigm-cron, installed with pm2 like the proxy, run in /", () => {
  const spec = schedulerService("/srv", SELF);
  assertEquals(spec, {
    name: "deploy-paradigm-cron",
    description: "deploy-paradigm cron scheduler (runs the cron jobs of pm2 apps)",
    argv: [SELF, "cron-scheduler"],
    env: { DEPLOY_PARADIGM_PREFIX: "/srv" },
    root: "/srv",
  });
  assertEquals(schedulerService("/", SELF).env, {});
  const plan = pm2.installService(spec);
  assertEquals(JSON.parse(plan.files[0].content).apps[0].args, ["cron-scheduler"]);
  // Not the cwd of the pm2 client (the first deploy's: its app's bare repo), which it would hold.
  assertEquals(JSON.parse(plan.files[0].content).apps[0].cwd, "/");
});

Deno.test("cron.log: one JSON line per run, rotated past its limit; the last run of each job; 0600 from creation", async () => {
  const root = await Deno.makeTempDir();
  try {
    const paths = appPaths("web", root);
    const run = (job: string, outcome: CronRun["outcome"], start: string): CronRun => ({
      job,
      release: "20260101-000000-000",
      start,
      end: start,
      exitCode: outcome === "ok" ? 0 : 1,
      durationMs: 5,
      outcome,
    });
    await recordRun(paths, run("a", "ok", "2026-01-01T00:00:00.000Z"));
    await recordRun(paths, run("b", "failed", "2026-01-01T00:01:00.000Z"));
    await Deno.writeTextFile(cronLogPath(paths), '{"job": "torn', { append: true });
    await recordRun(paths, run("a", "failed", "2026-01-01T00:02:00.000Z"));
    assertEquals((await readRuns(paths)).map((r) => `${r.job} ${r.outcome}`), ["a ok", "b failed", "a failed"]);
    assertEquals(Object.values(await lastRuns(paths)).map((r) => `${r.job} ${r.start}`), [
      "a 2026-01-01T00:02:00.000Z",
      "b 2026-01-01T00:01:00.000Z",
    ]);
    // Past the limit: the file becomes cron.log.1 and a new one starts.
    await recordRun(paths, run("c", "ok", "2026-01-01T00:03:00.000Z"), 100);
    assertEquals((await readRuns(paths)).map((r) => r.job), ["c"]);
    assertMatch(await Deno.readTextFile(`${cronLogPath(paths)}.1`), /"job":"b"/);
    assertEquals(await readRuns(appPaths("none", root)), []);
    // A job's output (and its secrets), the runs, deploy.log: root's only, as access.log and error.log are.
    await appendText(outputLogPath(paths, "a"), "--- start a");
    await appendLine(paths.deployLog, "{}");
    for (const path of [cronLogPath(paths), `${cronLogPath(paths)}.1`, outputLogPath(paths, "a"), paths.deployLog]) {
      assertEquals(((await Deno.stat(path)).mode! & 0o777).toString(8), "600", path);
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("syncCron (the deploy's cron step, and rollback's): systemd timers follow the release; pm2's scheduler is started once", async () => {
  const root = await Deno.makeTempDir();
  try {
    const paths = appPaths("web", root);
    const base = { port: 8000, env: "production", strategy: "restart", drainTimeout: 0, notify: [], domains: [] };
    const systemdCtx = (runner: FakeRunner) => ({
      root,
      paths,
      config: { ...base, manager: "systemd" } as unknown as ServerConfig,
      runner,
      inspect: runner,
      self: SELF,
    });
    // Nothing to do for a release without jobs and no timers.
    assertEquals(await hasCron(systemdCtx(new FakeRunner()), {}), false);
    assertEquals(await cron.when!(systemdCtx(new FakeRunner()) as never, { meta: {} } as never), false);
    const first = new FakeRunner();
    assertEquals(
      await syncCron(systemdCtx(first), { cron: JOBS }),
      "timers of report (*/15 * * * *), both (0 3 1,15 * sun)",
    );
    assertEquals(first.lines(), [
      "systemctl daemon-reload",
      "systemctl enable --now --quiet web-cron-report.timer web-cron-both.timer",
    ]);
    for (const file of first.plans.flatMap((plan) => plan.files)) {
      await Deno.mkdir(join(file.path, ".."), { recursive: true });
      await Deno.writeTextFile(file.path, file.content);
    }
    // The same jobs again: nothing written, nothing restarted.
    const again = new FakeRunner();
    await syncCron(systemdCtx(again), { cron: JOBS });
    assertEquals(again.lines(), ["systemctl enable --now --quiet web-cron-report.timer web-cron-both.timer"]);
    assertEquals(again.plans.flatMap((p) => p.files), []);
    // The next release has no jobs: the timers are there, so the step runs and removes them.
    assertEquals(await hasCron(systemdCtx(new FakeRunner()), {}), true);
    const second = new FakeRunner();
    assertEquals(await syncCron(systemdCtx(second), {}), "no cron jobs; removed the timers of both, report");
    assertEquals(second.lines(), [
      "systemctl disable --now --quiet web-cron-both.timer",
      "systemctl disable --now --quiet web-cron-report.timer",
      "systemctl daemon-reload",
    ]);

    // pm2: the scheduler is installed when pm2 does not run it, left alone when it does.
    const pm2Ctx = (runner: FakeRunner) => ({ ...systemdCtx(runner), config: { ...base, manager: "pm2" } as never });
    const jlist = (list: unknown[]) =>
      new FakeRunner().on((argv) => argv.at(-1) === "jlist", { output: JSON.stringify(list) });
    const none = jlist([]);
    assertEquals(
      await syncCron(pm2Ctx(none), { cron: JOBS }),
      "report (*/15 * * * *), both (0 3 1,15 * sun); started the scheduler (pm2 deploy-paradigm-cron)",
    );
    assertEquals(none.lines().map((line) => line.split(" ").slice(-2).join(" ")), [
      "pm2 jlist",
      "start " + join(root, "opt/deployments/pm2-deploy-paradigm-cron.json"),
      "pm2 save",
    ]);
    const runs = jlist([{ name: "deploy-paradigm-cron", pid: 4242, pm2_env: {} }]);
    assertMatch(
      await syncCron(pm2Ctx(runs), { cron: JOBS }),
      /; the scheduler \(pm2 deploy-paradigm-cron\) runs them$/,
    );
    assertEquals(runs.plans, []);
    // Stopped (pid 0): started again in place.
    const stopped = jlist([{ name: "deploy-paradigm-cron", pid: 0, pm2_env: {} }]);
    await syncCron(pm2Ctx(stopped), { cron: JOBS });
    assertEquals(stopped.lines()[1].split(" ").at(-2), "startOrRestart");
    // No jobs: the scheduler finds none for this app by itself.
    const empty = jlist([]);
    assertEquals(await syncCron(pm2Ctx(empty), {}), "no cron jobs");
    assertEquals(empty.calls, []);
    // The jobs a release drops are said, with or without jobs left; nothing more is run for them.
    assertEquals(await hasCron(pm2Ctx(new FakeRunner()), {}, { cron: JOBS }), true);
    const dropsAll = jlist([]);
    assertEquals(
      await syncCron(pm2Ctx(dropsAll), {}, { cron: JOBS }),
      "no cron jobs; the scheduler no longer runs both, report",
    );
    assertEquals(dropsAll.calls, []);
    assertEquals(
      await syncCron(pm2Ctx(runs), { cron: JOBS.slice(0, 1) }, { cron: JOBS }),
      "report (*/15 * * * *); the scheduler (pm2 deploy-paradigm-cron) runs them; the scheduler no longer runs both",
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("cron <app>: an app never deployed has no serving release (said so), one deployed without jobs has none", async () => {
  const root = await Deno.makeTempDir({ prefix: "dp-cron-list-" });
  const printed: string[] = [];
  const log = console.log;
  console.log = (...args: unknown[]) => printed.push(args.join(" "));
  try {
    const paths = appPaths("web", root);
    await Deno.mkdir(paths.dir, { recursive: true });
    await Deno.writeTextFile(paths.config, "port: 8000\nmanager: pm2\n");
    assertEquals(await showJobs("web", false, root), 0);
    assertEquals(printed.pop(), "web has no serving release yet: no cron jobs run.");
    await Deno.mkdir(join(paths.dir, "releases", "r1"), { recursive: true });
    await Deno.symlink("releases/r1", paths.current);
    assertEquals(await showJobs("web", false, root), 0);
    assertEquals(printed.pop(), "web has no cron jobs in its serving release.");
  } finally {
    console.log = log;
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("cron-run: an app never deployed is refused (exit 2) saying where it looked and what to do; nothing recorded", async () => {
  const root = await Deno.makeTempDir({ prefix: "dp-cron-run-" });
  try {
    const paths = appPaths("web", root);
    await Deno.mkdir(paths.dir, { recursive: true });
    await Deno.writeTextFile(paths.config, "port: 8000\nmanager: pm2\n");
    let error: unknown;
    await runJob("web", "report", { root }).catch((e) => error = e);
    assert(error instanceof UsageError, String(error));
    assertEquals(
      error.message,
      `web has no serving release (${paths.current} does not exist): its cron job "report" cannot run`,
    );
    assertEquals(
      error.suggestion,
      `deploy web first (git push to ${paths.repo}): the jobs are those of its serving release's deploy.yml \`cron:\``,
    );
    assertEquals(await Deno.stat(paths.logDir).then(() => "written", () => "nothing"), "nothing");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("cron <app>: under a TZ that names no known zone, the last line says the times are UTC (not undefined)", async () => {
  const root = await Deno.makeTempDir({ prefix: "dp-cron-tz-" });
  try {
    const paths = appPaths("web", root);
    const id = "20260101-000000-000";
    await Deno.mkdir(paths.release(id), { recursive: true });
    await Deno.writeTextFile(paths.config, "port: 8000\nmanager: pm2\n");
    await writeReleaseMeta(paths, { id, commit: "a".repeat(40), type: "node", cron: JOBS, createdAt: "" });
    await Deno.symlink(`releases/${id}`, paths.current);
    // The zone is the process's: another process, as `TZ=… deploy-paradigm cron web` would be.
    const show = async (tz: string) => {
      const list = new URL("../../src/cron/list.ts", import.meta.url).href;
      const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
        args: [
          "eval",
          `import { showJobs } from "${list}"; Deno.exit(await showJobs("web", false, ${JSON.stringify(root)}));`,
        ],
        env: { TZ: tz },
        stdout: "piped",
        stderr: "piped",
      }).output();
      assertEquals(code, 0, new TextDecoder().decode(stderr));
      return new TextDecoder().decode(stdout).trimEnd().split("\n");
    };
    const unknown = await show("Nonexistent/Zone");
    assertEquals(unknown.at(-1), "(times: UTC; TZ=Nonexistent/Zone names no time zone known here)");
    assertEquals(unknown.length, 4); // the header, the 2 jobs, the line
    assertEquals((await show("Europe/Paris")).at(-1), "(times: the server's, Europe/Paris)");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
