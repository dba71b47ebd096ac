/**
 * Cron schedules: the 5 fields of crontab(5) (minute hour day-of-month month day-of-week) with `*`,
 * lists, ranges, steps (`*\/n`, `a-b/n`), month and day names (jan..dec, sun..sat; 7 is Sunday too)
 * and the macros @yearly @annually @monthly @weekly @daily @midnight @hourly. Pure: parsing,
 * the next run in the server's local time, and the same schedule as systemd `OnCalendar=` lines.
 *
 * Day-of-month and day-of-week follow cron (Vixie cron and cronie alike): when both fields are
 * restricted, that is neither starts with `*`, a day that matches either runs the job; when one of
 * them starts with `*` (also `*\/2`), a day must match both.
 *
 * Local time: a time that does not exist (skipped when the clocks go forward) is not run; a time
 * that happens twice (when they go back) runs once, the first time.
 * @module
 */

/** A parsed schedule. Each list holds the values of its field, ascending, each once. */
export interface Schedule {
  /** The text it was parsed from, trimmed. */
  source: string;
  /** 0-59 */
  minutes: number[];
  /** 0-23 */
  hours: number[];
  /** 1-31 */
  days: number[];
  /** 1-12 */
  months: number[];
  /** 0-6, 0 is Sunday (a 7 is read as 0). */
  weekdays: number[];
  /** The day-of-month field starts with `*`. */
  dayStar: boolean;
  /** The day-of-week field starts with `*`. */
  weekdayStar: boolean;
}

/** Why a schedule does not parse, and where: `column` counts from 1 in the schedule's text. */
export interface ScheduleError {
  error: string;
  column: number;
  /** The other fields' problems, when several are wrong (each field is checked). */
  others?: ScheduleError[];
}

/** The macros and the schedules they stand for. */
export const MACROS: Readonly<Record<string, string>> = {
  "@yearly": "0 0 1 1 *",
  "@annually": "0 0 1 1 *",
  "@monthly": "0 0 1 * *",
  "@weekly": "0 0 * * 0",
  "@daily": "0 0 * * *",
  "@midnight": "0 0 * * *",
  "@hourly": "0 * * * *",
};

const MONTH_NAMES = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const DAY_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

interface Field {
  name: string;
  min: number;
  max: number;
  /** Names of the values from `min` on. */
  names?: string[];
  /** Said after the range in an out-of-range error. */
  note?: string;
}

const FIELDS: readonly Field[] = [
  { name: "minute", min: 0, max: 59 },
  { name: "hour", min: 0, max: 23 },
  { name: "day-of-month", min: 1, max: 31 },
  { name: "month", min: 1, max: 12, names: MONTH_NAMES, note: " or jan-dec" },
  { name: "day-of-week", min: 0, max: 7, names: DAY_NAMES, note: " or sun-sat (0 and 7 are Sunday)" },
];

const FIELDS_WORDS = "minute hour day-of-month month day-of-week";

/** Parses `text`: a schedule, or what is wrong with it and where. */
export function parseSchedule(text: string): Schedule | ScheduleError {
  const source = text.trim();
  const lead = text.length - text.trimStart().length;
  if (source === "") {
    return {
      error: `expected a schedule: 5 fields (${FIELDS_WORDS}) such as "*/5 * * * *", or a macro such as @daily`,
      column: 1,
    };
  }
  if (source.startsWith("@")) {
    const macro = MACROS[source.toLowerCase()];
    if (macro) return { ...parseSchedule(macro) as Schedule, source };
    const known = Object.keys(MACROS);
    return {
      error: source.toLowerCase() === "@reboot"
        ? `@reboot is not supported: jobs run on a schedule (expected ${known.slice(0, -1).join(", ")} or ${
          known.at(-1)
        }, or 5 fields)`
        : `unknown macro ${source}: expected ${known.slice(0, -1).join(", ")} or ${known.at(-1)}`,
      column: lead + 1,
    };
  }
  const words = [...text.matchAll(/\S+/g)].map((m) => ({ text: m[0], column: m.index! + 1 }));
  if (words.length !== 5) {
    const more = words.length > 5;
    return {
      error: `expected 5 fields (${FIELDS_WORDS}), got ${words.length}` +
        (more ? ": the command and a seconds field do not belong in the schedule" : ""),
      column: more ? words[5].column : text.trimEnd().length + 1,
    };
  }
  const values: number[][] = [];
  const errors: ScheduleError[] = [];
  for (const [i, word] of words.entries()) {
    const parsed = parseField(word.text, FIELDS[i], i + 1, word.column);
    if ("error" in parsed) errors.push(parsed);
    else values.push(parsed);
  }
  if (errors.length) return errors.length > 1 ? { ...errors[0], others: errors.slice(1) } : errors[0];
  const [minutes, hours, days, months, weekdaysRaw] = values;
  const weekdays = [...new Set(weekdaysRaw.map((d) => d % 7))].sort((a, b) => a - b);
  const schedule: Schedule = {
    source,
    minutes,
    hours,
    days,
    months,
    weekdays,
    dayStar: words[2].text.startsWith("*"),
    weekdayStar: words[4].text.startsWith("*"),
  };
  // A day of the month no chosen month has (February 30) never runs when the day must match.
  const dayDecides = schedule.dayStar || schedule.weekdayStar;
  if (dayDecides && !days.some((day) => months.some((month) => day <= DAYS_IN_MONTH[month - 1]))) {
    const names = months.map((m) => MONTH_NAMES[m - 1]).join(",");
    return {
      error: `never runs: ${names} ${months.length > 1 ? "have" : "has"} no day ${days.join(",")}`,
      column: words[2].column,
    };
  }
  return schedule;
}

/** The most days each month can have (February: 29, in leap years). */
const DAYS_IN_MONTH = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

/** Whether {@link parseSchedule} gave an error. */
export function isScheduleError(value: Schedule | ScheduleError): value is ScheduleError {
  return "error" in value;
}

/** The values of one field, or its error; `n` is its position (1-5), `column` where it starts. */
function parseField(text: string, field: Field, n: number, column: number): number[] | ScheduleError {
  const fail = (error: string, at: number): ScheduleError => ({
    error: `field ${n} (${field.name}): ${error}`,
    column: column + at,
  });
  const set = new Set<number>();
  let offset = 0;
  for (const item of text.split(",")) {
    const at = offset;
    offset += item.length + 1;
    if (item === "") return fail("a list has an empty item (two commas, or a comma at an end)", at);
    const slash = item.indexOf("/");
    const base = slash < 0 ? item : item.slice(0, slash);
    let step = 1;
    if (slash >= 0) {
      const stepText = item.slice(slash + 1);
      if (!/^\d+$/.test(stepText)) {
        return fail(`expected a number of steps after "/", got "${stepText}"`, at + slash + 1);
      }
      step = Number(stepText);
      if (step < 1) return fail("the step must be 1 or more", at + slash + 1);
    }
    let from: number;
    let to: number;
    if (base === "*") {
      [from, to] = [field.min, field.max];
    } else {
      const dash = base.indexOf("-", 1);
      const first = value(dash < 0 ? base : base.slice(0, dash), field);
      if (typeof first === "string") return fail(first, at);
      from = to = first;
      if (dash >= 0) {
        const last = value(base.slice(dash + 1), field);
        if (typeof last === "string") return fail(last, at + dash + 1);
        to = last;
        if (to < from) {
          const [start, end] = [base.slice(0, dash), base.slice(dash + 1)];
          const named = field.names !== undefined && /^[a-z]/i.test(start);
          const [high, low] = named ? [field.names!.at(-1), field.names![0]] : [field.max, field.min];
          const split = `${start}-${high},${low}-${end}`.replace(/(\w+)-\1\b/g, "$1");
          return fail(`the range ${base} goes backwards: expected start-end with start <= end (e.g. ${split})`, at);
        }
      } else if (slash >= 0) {
        return fail(`a step needs a range or *: expected ${base}-${field.max}/${step} or */${step}`, at);
      }
    }
    for (let v = from; v <= to; v += step) set.add(v);
  }
  return [...set].sort((a, b) => a - b);
}

/** A field's value (a number or, where the field has them, a name), or what is wrong with it. */
function value(text: string, field: Field): number | string {
  let v: number;
  if (/^\d+$/.test(text)) v = Number(text);
  else if (field.names && /^[a-z]+$/i.test(text) && field.names.includes(text.toLowerCase())) {
    v = field.min + field.names.indexOf(text.toLowerCase());
  } else {
    const expected = field.names ? `a number or a name (${field.names[0]}..${field.names.at(-1)})` : "a number";
    return text === "" ? `expected ${expected}` : `expected ${expected}, got "${text}"`;
  }
  if (v < field.min || v > field.max) return `${text} is out of range ${field.min}-${field.max}${field.note ?? ""}`;
  return v;
}

/** Whether the day of local date `date` is a day of `schedule` (month, day-of-month, day-of-week). */
function dayMatches(schedule: Schedule, year: number, month: number, day: number): boolean {
  if (!schedule.months.includes(month)) return false;
  const dom = schedule.days.includes(day);
  const dow = schedule.weekdays.includes(new Date(year, month - 1, day, 12).getDay());
  return schedule.dayStar || schedule.weekdayStar ? dom && dow : dom || dow;
}

/** Whether `schedule` runs in the (local) minute of `at`. */
export function matches(schedule: Schedule, at: Date): boolean {
  return schedule.minutes.includes(at.getMinutes()) && schedule.hours.includes(at.getHours()) &&
    dayMatches(schedule, at.getFullYear(), at.getMonth() + 1, at.getDate());
}

/** The longest search: 400 years (the Gregorian cycle). */
const MAX_DAYS = 400 * 366;

/**
 * The first minute after `after` (strictly) at which `schedule` runs, in the server's local time.
 * Throws for a schedule that never runs (parseSchedule refuses those).
 */
export function nextRun(schedule: Schedule, after: Date): Date {
  const start = new Date(after.getTime());
  start.setSeconds(0, 0);
  start.setTime(start.getTime() + 60_000);
  let [year, month, day] = [start.getFullYear(), start.getMonth() + 1, start.getDate()];
  let first = true;
  for (let n = 0; n < MAX_DAYS; n++) {
    if (!schedule.months.includes(month)) {
      [year, month, day] = month === 12 ? [year + 1, 1, 1] : [year, month + 1, 1];
      first = false;
      continue;
    }
    if (dayMatches(schedule, year, month, day)) {
      for (const hour of schedule.hours) {
        if (first && hour < start.getHours()) continue;
        for (const minute of schedule.minutes) {
          if (first && hour === start.getHours() && minute < start.getMinutes()) continue;
          const at = new Date(year, month - 1, day, hour, minute);
          // A local time that does not exist becomes another one: not run. One that happens twice: the first.
          if (at.getHours() !== hour || at.getMinutes() !== minute || at.getDate() !== day) continue;
          if (at.getTime() > after.getTime()) return at;
        }
      }
    }
    const next = new Date(year, month - 1, day + 1, 12);
    [year, month, day] = [next.getFullYear(), next.getMonth() + 1, next.getDate()];
    first = false;
  }
  throw new Error(`the schedule "${schedule.source}" never runs`);
}

/** systemd's day names, Monday first (its week). */
const SYSTEMD_DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/**
 * `schedule` as systemd `OnCalendar=` values (a timer runs at the earliest of its lines): one
 * line, or two when day-of-month and day-of-week are both restricted (cron then runs on a day
 * matching either; one systemd line would need both).
 */
export function onCalendar(schedule: Schedule): string[] {
  const time = `${list(schedule.hours, 0, 23)}:${list(schedule.minutes, 0, 59)}:00`;
  const months = list(schedule.months, 1, 12);
  const days = list(schedule.days, 1, 31);
  // Cron counts Sunday as 0, systemd's week starts on Monday: ranges are made in systemd's order.
  const weekdays = schedule.weekdays.length === 7
    ? ""
    : runs(schedule.weekdays.map((d) => (d + 6) % 7).sort((a, b) => a - b))
      .map(([a, b]) => a === b ? SYSTEMD_DAYS[a] : `${SYSTEMD_DAYS[a]}${b === a + 1 ? "," : ".."}${SYSTEMD_DAYS[b]}`)
      .join(",");
  if (!schedule.dayStar && !schedule.weekdayStar) {
    return [`${weekdays || "*"} *-${months}-* ${time}`.replace(/^\* /, ""), `*-${months}-${days} ${time}`];
  }
  return [`${weekdays ? `${weekdays} ` : ""}*-${months}-${days} ${time}`];
}

/** Values as systemd writes them: `*` for all, else a list with runs of 3 or more as `a..b`, two digits each. */
function list(values: number[], min: number, max: number): string {
  if (values.length === max - min + 1) return "*";
  const two = (v: number) => String(v).padStart(2, "0");
  // An even step (`*/5`, `10-59/15`) is systemd's `first..last/step`. Not the open `first/step`:
  // systemd 252 (Debian 12) skips its first value after a month ends (from Feb 28 23:59,
  // `*:00/7` next runs at 00:07 on March 1, not 00:00); the cron tests caught it.
  const step = values.length > 2 ? values[1] - values[0] : 0;
  if (step > 1 && values.every((v, i) => v === values[0] + i * step)) {
    return `${two(values[0])}..${two(values.at(-1)!)}/${step}`;
  }
  return runs(values).map(([a, b]) => a === b ? two(a) : `${two(a)}${b === a + 1 ? "," : ".."}${two(b)}`).join(",");
}

/** Ascending `values` as runs of consecutive values: [first, last] each. */
function runs(values: number[]): [number, number][] {
  const out: [number, number][] = [];
  for (const v of values) {
    const last = out.at(-1);
    if (last && v === last[1] + 1) last[1] = v;
    else out.push([v, v]);
  }
  return out;
}
