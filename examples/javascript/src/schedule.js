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
  const times = entry.slice(space + 1).trim();
  const dash = times.indexOf('-');
  if (dash < 0) throw bad('expected HH:MM-HH:MM');
  const open = parseMinutes(times.slice(0, dash));
  if (open === undefined || open >= 1440) throw bad('bad opening time');
  const close = parseMinutes(times.slice(dash + 1));
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
  const dash = spec.indexOf('-');
  const [first, last] = dash < 0
    ? [day(spec), day(spec)]
    : [day(spec.slice(0, dash)), day(spec.slice(dash + 1))];
  if (first === undefined || last === undefined) return undefined;
  const days = Array(7).fill(false);
  for (let d = first; ; d = (d + 1) % 7) {
    days[d] = true;
    if (d === last) return days;
  }
}

/** `HH:MM` to minutes after midnight (24:00 allowed); undefined if malformed. */
function parseMinutes(text) {
  const match = /^(\d\d):(\d\d)$/.exec(text.trim());
  if (!match) return undefined;
  const [h, m] = [Number(match[1]), Number(match[2])];
  if (m >= 60 || h > 24 || (h === 24 && m !== 0)) return undefined;
  return h * 60 + m;
}

function parseDate(text) {
  const match = /^(\d{4})-(\d\d)-(\d\d)$/.exec(text);
  const [y, m, d] = match ? match.slice(1).map(Number) : [];
  if (!match || m < 1 || m > 12 || d < 1 || d > 31) {
    throw new Error(`holiday ${JSON.stringify(text)}: expected YYYY-MM-DD`);
  }
  return [y, m, d];
}
