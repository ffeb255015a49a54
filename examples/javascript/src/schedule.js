// Time conditions: weekly opening hours, holidays and an admin override, on the
// location's wall-clock time (the host converts UTC to the timezone).
//
//   hours:    "Mon-Fri 09:00-17:00, Sat 10:00-13:00" — days Mon…Sun, a range (Fri-Mon
//             wraps) or Daily; 24:00 closes at midnight; a close before the open runs
//             past midnight. Empty = always open.
//   holidays: "2026-12-25, 2027-01-01" — closed the whole local day.
//   override: "open" or "closed" beats both; anything else follows them.

const DAY_NAMES = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'];
const WEEKDAYS = ['monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday', 'sunday'];

/** Parse hours and holidays; throws an Error naming the bad part. */
export function parseSchedule(hours, holidays) {
  return {
    windows: entries(hours).map(parseWindow),
    holidays: entries(holidays).map(parseDate),
  };
}

/** `open`, `closed`, `holiday`, `override-open` or `override-closed` at `at` (a local-time). */
export function openState(schedule, at, overrideValue) {
  const forced = overrideValue === undefined ? '' : overrideValue.trim().toLowerCase();
  if (forced === 'open') return 'override-open';
  if (forced === 'closed') return 'override-closed';
  if (schedule.holidays.some(([y, m, d]) => y === at.year && m === at.month && d === at.day)) {
    return 'holiday';
  }
  return withinHours(schedule, at) ? 'open' : 'closed';
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
