// Time conditions: weekly opening hours, holidays and an admin override, on the
// location's wall-clock time (the host converts UTC to the timezone).
//
//   hours:    "Mon-Fri 09:00-17:00, Sat 10:00-13:00" — days Mon…Sun, a range (Fri-Mon
//             wraps) or Daily; 24:00 closes at midnight; a close before the open runs
//             past midnight. Empty = always open.
//   holidays: rules, each closing whole local days — a date (2026-12-25); a date every
//             year (Dec 25), with `observed` (a weekend day also closes the nearest
//             weekday: Saturday → Friday, Sunday → Monday) or `substitute` (the next
//             weekday not already a holiday); a weekday of a month (2nd Mon Jun, last Mon
//             May); Easter-relative (Easter, Easter+1, Easter-2, Good Friday, Easter
//             Monday); a national preset (@AU, @GB, @US: PRESETS, the same rules).
//   override: "open" or "closed" beats both; anything else follows them.

const DAY_NAMES = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'];
const WEEKDAYS = ['monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday', 'sunday'];
const MONTH_NAMES = ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'];
const ORDINALS = { '1st': 1, '2nd': 2, '3rd': 3, '4th': 4, '5th': 5, last: -1 };

/** National holidays as rules (the Rust SDK's `schedule::PRESETS`). */
export const PRESETS = {
  AU: 'Jan 1 substitute, Jan 26 substitute, Good Friday, Easter Monday, Apr 25, '
    + '2nd Mon Jun, Dec 25 substitute, Dec 26 substitute',
  GB: 'Jan 1 substitute, Good Friday, Easter Monday, 1st Mon May, last Mon May, '
    + 'last Mon Aug, Dec 25 substitute, Dec 26 substitute',
  US: 'Jan 1 observed, 3rd Mon Jan, 3rd Mon Feb, last Mon May, Jun 19 observed, '
    + 'Jul 4 observed, 1st Mon Sep, 2nd Mon Oct, Nov 11 observed, 4th Thu Nov, '
    + 'Dec 25 observed',
};

/** Parse hours and holidays; throws an Error naming the bad part. */
export function parseSchedule(hours, holidays) {
  return {
    windows: entries(hours).map(parseWindow),
    holidays: entries(holidays).flatMap(parseHoliday),
  };
}

/** `open`, `closed`, `holiday`, `override-open` or `override-closed` at `at` (a local-time). */
export function openState(schedule, at, overrideValue) {
  const forced = overrideValue === undefined ? '' : overrideValue.trim().toLowerCase();
  if (forced === 'open') return 'override-open';
  if (forced === 'closed') return 'override-closed';
  if (isHoliday(schedule, at)) return 'holiday';
  return withinHours(schedule, at) ? 'open' : 'closed';
}

/** Whether `at` falls on a holiday or a day a weekend holiday is observed on. */
function isHoliday(schedule, at) {
  const today = dayNumber(at.year, at.month, at.day);
  // Next year's 1 January on a Saturday is observed this year's 31 December.
  return [at.year, at.year + 1].some((year) => holidaysOf(schedule.holidays, year).includes(today));
}

/** Every day (a day number) the rules close in `year`, observed days included. */
function holidaysOf(rules, year) {
  const days = rules.map((rule) => dayIn(rule, year)).filter((d) => d !== undefined);
  for (const rule of rules) {
    const day = dayIn(rule, year);
    if (rule.kind !== 'yearly' || day === undefined) continue;
    const weekday = weekdayOf(day);
    if (rule.observed === 'observed' && weekday === 5) days.push(day - 1);
    if (rule.observed === 'observed' && weekday === 6) days.push(day + 1);
    if (rule.observed === 'substitute' && weekday >= 5) {
      let substitute = day + 1;
      while (weekdayOf(substitute) >= 5 || days.includes(substitute)) substitute += 1;
      days.push(substitute);
    }
  }
  return days;
}

/** The day number this rule falls on in `year`, or undefined. */
function dayIn(rule, year) {
  switch (rule.kind) {
    case 'date':
      return rule.year === year && rule.day <= monthLength(year, rule.month)
        ? dayNumber(year, rule.month, rule.day) : undefined;
    case 'yearly':
      return rule.day <= monthLength(year, rule.month) ? dayNumber(year, rule.month, rule.day) : undefined;
    case 'nth': {
      const first = dayNumber(year, rule.month, 1);
      const last = first + monthLength(year, rule.month) - 1;
      const day = rule.nth > 0
        ? first + mod(rule.weekday - weekdayOf(first), 7) + 7 * (rule.nth - 1)
        : last - mod(weekdayOf(last) - rule.weekday, 7);
      return day <= last ? day : undefined;
    }
    default: // easter
      return easter(year) + rule.offset;
  }
}

const mod = (a, n) => ((a % n) + n) % n;

/** Days since 1970-01-01 of a (proleptic Gregorian) date. */
function dayNumber(year, month, day) {
  const y = month <= 2 ? year - 1 : year;
  const era = Math.floor(y / 400);
  const yearOfEra = y - era * 400;
  const dayOfYear = Math.floor((153 * (month + (month > 2 ? -3 : 9)) + 2) / 5) + day - 1;
  const dayOfEra = yearOfEra * 365 + Math.floor(yearOfEra / 4) - Math.floor(yearOfEra / 100) + dayOfYear;
  return era * 146097 + dayOfEra - 719468;
}

/** Monday 0 … Sunday 6 (1970-01-01 was a Thursday). */
const weekdayOf = (day) => mod(day + 3, 7);

function monthLength(year, month) {
  if (month === 2) return year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0) ? 29 : 28;
  return [4, 6, 9, 11].includes(month) ? 30 : 31;
}

/** Easter Sunday (Gregorian; Meeus, Jones and Butcher), as a day number. */
function easter(year) {
  const div = (a, b) => Math.floor(a / b);
  const [a, b, c] = [year % 19, div(year, 100), year % 100];
  const [d, e] = [div(b, 4), b % 4];
  const g = div(b - div(b + 8, 25) + 1, 3);
  const h = (19 * a + b - d - g + 15) % 30;
  const [i, k] = [div(c, 4), c % 4];
  const l = (32 + 2 * e + 2 * i - h - k) % 7;
  const m = div(a + 11 * h + 22 * l, 451);
  return dayNumber(year, div(h + l - 7 * m + 114, 31), ((h + l - 7 * m + 114) % 31) + 1);
}

/** One entry of the holidays list as rules (a preset gives several). */
function parseHoliday(entry) {
  const bad = () => new Error(`holiday ${JSON.stringify(entry)}: expected YYYY-MM-DD, Dec 25 `
    + '[observed|substitute], 2nd Mon Jun, last Mon May, Easter+1, Good Friday, Easter Monday '
    + 'or @AU/@GB/@US');
  const words = entry.toLowerCase().split(/\s+/).filter((w) => w !== '');
  const month = (name) => {
    const i = MONTH_NAMES.indexOf(name);
    return i < 0 ? undefined : i + 1;
  };
  const [first, second, third] = words;
  if (words.length === 1 && first.startsWith('@')) {
    const preset = Object.entries(PRESETS).find(([name]) => name.toLowerCase() === first.slice(1));
    if (!preset) throw bad();
    return entries(preset[1]).flatMap(parseHoliday);
  }
  if (words.join(' ') === 'good friday') return [{ kind: 'easter', offset: -2 }];
  if (words.join(' ') === 'easter monday') return [{ kind: 'easter', offset: 1 }];
  if (words.length === 1 && first.startsWith('easter')) {
    const offset = first.slice(6);
    if (offset === '') return [{ kind: 'easter', offset: 0 }];
    if (!/^[+-][0-9]+$/.test(offset) || Math.abs(Number(offset)) > 100) throw bad();
    return [{ kind: 'easter', offset: Number(offset) }];
  }
  if (words.length === 1) {
    let date;
    try {
      date = parseDate(first);
    } catch {
      throw bad();
    }
    return [{ kind: 'date', year: date[0], month: date[1], day: date[2] }];
  }
  if ((words.length === 2 || words.length === 3) && month(first) !== undefined) {
    const day = /^[0-9]+$/.test(second) ? Number(second) : Number.NaN;
    if (!(day >= 1 && day <= monthLength(2000, month(first)))) throw bad();
    const observed = third ?? 'no';
    if (!['no', 'observed', 'substitute'].includes(observed) || third === 'no') throw bad();
    return [{ kind: 'yearly', month: month(first), day, observed }];
  }
  if (words.length === 3) {
    const nth = Object.hasOwn(ORDINALS, first) ? ORDINALS[first] : undefined;
    const weekday = DAY_NAMES.indexOf(second);
    if (nth === undefined || weekday < 0 || month(third) === undefined) throw bad();
    return [{ kind: 'nth', nth, weekday, month: month(third) }];
  }
  throw bad();
}

function withinHours(schedule, at) {
  if (schedule.windows.length === 0) return true;
  const day = WEEKDAYS.indexOf(at.weekday);
  const yesterday = (day + 6) % 7;
  const minute = at.hour * 60 + at.minute;
  return schedule.windows.some((w) => (w.open < w.close
    ? w.days[day] && minute >= w.open && minute < w.close
    : (w.days[day] && minute >= w.open) || (w.days[yesterday] && minute < w.close)));
}

function entries(list) {
  return list.split(',').map((e) => e.trim()).filter((e) => e !== '');
}

function parseWindow(entry) {
  const bad = (why) => new Error(`hours entry ${JSON.stringify(entry)}: ${why}`);
  const space = entry.search(/\s/);
  if (space < 0) throw bad('expected DAYS HH:MM-HH:MM');
  const days = parseDays(entry.slice(0, space).trim());
  if (!days) throw bad('days must be like Mon, Mon-Fri or Daily');
  const [openText, closeText] = splitOnce(entry.slice(space + 1).trim(), '-');
  if (openText === undefined) throw bad('expected HH:MM-HH:MM');
  const open = parseMinutes(openText);
  if (open === undefined || open >= 1440) throw bad('bad opening time');
  const close = parseMinutes(closeText);
  if (close === undefined || close === 0) throw bad('bad closing time');
  if (open === close) throw bad('opening and closing times are equal');
  return { days, open, close };
}

function parseDays(spec) {
  if (spec.toLowerCase() === 'daily') return Array(7).fill(true);
  const day = (name) => {
    const i = DAY_NAMES.indexOf(name.toLowerCase());
    return i < 0 ? undefined : i;
  };
  const range = splitOnce(spec, '-');
  const [first, last] = range.length ? range.map(day) : [day(spec), day(spec)];
  if (first === undefined || last === undefined) return undefined;
  const days = Array(7).fill(false);
  for (let d = first; ; d = (d + 1) % 7) {
    days[d] = true;
    if (d === last) return days;
  }
}

/** `HH:MM` to minutes after midnight (24:00 allowed); undefined if malformed. */
function parseMinutes(text) {
  const [h, m] = splitOnce(text.trim(), ':');
  if (h?.length !== 2 || m.length !== 2) return undefined;
  const [hours, minutes] = [number(h), number(m)];
  if (!(minutes < 60 && (hours < 24 || (hours === 24 && minutes === 0)))) return undefined;
  return hours * 60 + minutes;
}

function parseDate(text) {
  const parts = text.split('-');
  const [y, m, d] = parts.length === 3 && parts.map((p) => p.length).join() === '4,2,2'
    ? parts.map(number)
    : [];
  if (!(y >= 0 && m >= 1 && m <= 12 && d >= 1 && d <= 31)) {
    throw new Error(`holiday ${JSON.stringify(text)}: expected YYYY-MM-DD`);
  }
  return [y, m, d];
}

/** Split at the first `separator`, like Rust's `split_once`: [before, after], or []. */
function splitOnce(text, separator) {
  const at = text.indexOf(separator);
  return at < 0 ? [] : [text.slice(0, at), text.slice(at + separator.length)];
}

/** ASCII digits with an optional `+`, as Rust's integer parsing takes them; else NaN. */
const number = (text) => (/^\+?[0-9]+$/.test(text) ? Number(text) : Number.NaN);
