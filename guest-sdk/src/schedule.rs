//! Time conditions: weekly opening hours, holidays and an admin override.
//!
//! Everything is evaluated on the location's wall-clock time, which the host computes
//! from UTC with its timezone database ([`crate::host::local_now`]). Because opening hours
//! are wall-clock hours, they stay right across DST changes: "09:00" is 09:00 local on
//! the Monday after the clocks change, whatever the UTC offset.
//!
//! Formats (the `front-door` location vars):
//! - hours: `"Mon-Fri 09:00-17:00, Sat 10:00-13:00"`. Days are `Mon`…`Sun`, a range
//!   (`Mon-Fri`, `Fri-Mon` wraps), or `Daily`. `24:00` closes at midnight; a window whose
//!   close is before its open runs past midnight (`Fri 22:00-02:00` is open until 02:00
//!   on Saturday). Empty = always open.
//! - holidays: a comma-separated list of rules, each closing whole local days:
//!   - a date: `2026-12-25`;
//!   - a date every year: `Dec 25`; with `observed` the nearest weekday closes too when
//!     it falls on a weekend (Saturday → Friday, Sunday → Monday, the US federal rule);
//!     with `substitute` the next weekday that is not already a holiday does (Saturday
//!     or Sunday → Monday, and Tuesday when Monday is taken: Christmas and Boxing Day in
//!     Britain and Australia);
//!   - a weekday of a month: `2nd Mon Jun`, `last Mon May` (`1st` … `5th`, `last`);
//!   - Easter-relative: `Easter`, `Easter+1`, `Easter-2`, and by name `Good Friday`
//!     (Easter−2), `Easter Monday` (Easter+1) — Western (Gregorian) Easter;
//!   - a national preset, written as the same rules ([`PRESETS`]): `@AU`, `@GB`, `@US`.
//! - override (key-value entry `override`): `open` or `closed` beats hours and
//!   holidays; anything else (or absent) follows them.

use crate::{LocalTime, Weekday};

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// One opening window on some days of the week.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Window {
    /// Monday first.
    days: [bool; 7],
    /// Minutes after midnight.
    open: u16,
    /// Minutes after midnight, 1 to 1440; at or before `open` means past midnight.
    close: u16,
}

/// Weekly hours and holidays.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Schedule {
    /// Empty = always open.
    windows: Vec<Window>,
    holidays: Vec<Holiday>,
}

/// National holidays as rules of the holidays format: `@AU`, `@GB` (England and Wales),
/// `@US` (federal). Regional days (a state's own) are left to the location's list.
pub const PRESETS: [(&str, &str); 3] = [
    (
        "AU",
        "Jan 1 substitute, Jan 26 substitute, Good Friday, Easter Monday, Apr 25, \
         2nd Mon Jun, Dec 25 substitute, Dec 26 substitute",
    ),
    (
        "GB",
        "Jan 1 substitute, Good Friday, Easter Monday, 1st Mon May, last Mon May, \
         last Mon Aug, Dec 25 substitute, Dec 26 substitute",
    ),
    (
        "US",
        "Jan 1 observed, 3rd Mon Jan, 3rd Mon Feb, last Mon May, Jun 19 observed, \
         Jul 4 observed, 1st Mon Sep, 2nd Mon Oct, Nov 11 observed, 4th Thu Nov, \
         Dec 25 observed",
    ),
];

const MONTH_NAMES: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

/// One holiday rule.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Holiday {
    Date(i16, u8, u8),
    Yearly {
        month: u8,
        day: u8,
        observed: Observed,
    },
    /// The `nth` (1 to 5, or -1 for the last) `weekday` (Monday 0) of `month`.
    NthWeekday {
        nth: i8,
        weekday: u8,
        month: u8,
    },
    /// Days after (or before) Easter Sunday.
    Easter(i16),
}

/// What a yearly holiday on a weekend also closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Observed {
    No,
    /// Saturday → the Friday before, Sunday → the Monday after.
    Nearest,
    /// The next weekday that is not already a holiday.
    Substitute,
}

/// Whether a location is open now, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenState {
    /// Within the opening hours.
    Open,
    /// Outside the opening hours.
    Closed,
    /// A listed holiday.
    Holiday,
    /// The admin override says open.
    ForcedOpen,
    /// The admin override says closed (night mode).
    ForcedClosed,
}

impl OpenState {
    pub fn is_open(self) -> bool {
        matches!(self, OpenState::Open | OpenState::ForcedOpen)
    }

    /// A short name, handy as a call tag: `open`, `closed`, `holiday`, `override-open`,
    /// `override-closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            OpenState::Open => "open",
            OpenState::Closed => "closed",
            OpenState::Holiday => "holiday",
            OpenState::ForcedOpen => "override-open",
            OpenState::ForcedClosed => "override-closed",
        }
    }
}

impl Schedule {
    /// Parse the hours and holidays formats above. The error names the bad part.
    pub fn parse(hours: &str, holidays: &str) -> Result<Self, String> {
        let windows = hours
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(parse_window)
            .collect::<Result<_, _>>()?;
        let mut rules = Vec::new();
        for entry in holidays.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            parse_holiday(entry, &mut rules)?;
        }
        Ok(Self {
            windows,
            holidays: rules,
        })
    }

    /// Whether `at` falls on a holiday (or a day a weekend holiday is observed on).
    pub fn is_holiday(&self, at: &LocalTime) -> bool {
        let today = day_number(i64::from(at.year), at.month, at.day);
        // A holiday of next year may be observed this year (1 January on a Saturday is
        // observed on Friday 31 December).
        [at.year, at.year + 1]
            .iter()
            .any(|&year| self.holidays_of(i64::from(year)).contains(&today))
    }

    /// Every day (as a day number) the rules close in `year`, observed days included.
    fn holidays_of(&self, year: i64) -> Vec<i64> {
        let mut days: Vec<i64> = self
            .holidays
            .iter()
            .filter_map(|rule| rule.day_in(year))
            .collect();
        for rule in &self.holidays {
            let Holiday::Yearly { observed, .. } = rule else {
                continue;
            };
            let Some(day) = rule.day_in(year) else {
                continue;
            };
            let weekend = |d: i64| weekday_of(d) >= 5;
            match (observed, weekday_of(day)) {
                (Observed::Nearest, 5) => days.push(day - 1),
                (Observed::Nearest, 6) => days.push(day + 1),
                (Observed::Substitute, 5 | 6) => {
                    let mut substitute = day + 1;
                    while weekend(substitute) || days.contains(&substitute) {
                        substitute += 1;
                    }
                    days.push(substitute);
                }
                _ => {}
            }
        }
        days
    }

    /// Whether `at` is within the weekly hours (holidays not considered).
    pub fn within_hours(&self, at: &LocalTime) -> bool {
        if self.windows.is_empty() {
            return true;
        }
        let day = weekday_index(at.weekday);
        let yesterday = (day + 6) % 7;
        let minute = u16::from(at.hour) * 60 + u16::from(at.minute);
        self.windows.iter().any(|w| {
            if w.open < w.close {
                w.days[day] && (w.open..w.close).contains(&minute)
            } else {
                (w.days[day] && minute >= w.open) || (w.days[yesterday] && minute < w.close)
            }
        })
    }

    /// Open or closed at `at`, given the override entry's value if any.
    pub fn state(&self, at: &LocalTime, override_value: Option<&str>) -> OpenState {
        match override_value
            .map(|v| v.trim().to_ascii_lowercase())
            .as_deref()
        {
            Some("open") => return OpenState::ForcedOpen,
            Some("closed") => return OpenState::ForcedClosed,
            _ => {}
        }
        if self.is_holiday(at) {
            OpenState::Holiday
        } else if self.within_hours(at) {
            OpenState::Open
        } else {
            OpenState::Closed
        }
    }
}

impl Holiday {
    /// The day (a day number) this rule falls on in `year`, if it does.
    fn day_in(&self, year: i64) -> Option<i64> {
        match *self {
            Holiday::Date(y, m, d) => {
                (i64::from(y) == year && d <= month_length(year, m)).then(|| day_number(year, m, d))
            }
            Holiday::Yearly { month, day, .. } => {
                (day <= month_length(year, month)).then(|| day_number(year, month, day))
            }
            Holiday::NthWeekday {
                nth,
                weekday,
                month,
            } => {
                let first = day_number(year, month, 1);
                let last = first + i64::from(month_length(year, month)) - 1;
                let day = if nth > 0 {
                    let first_match =
                        first + (i64::from(weekday) - weekday_of(first)).rem_euclid(7);
                    first_match + 7 * (i64::from(nth) - 1)
                } else {
                    last - (weekday_of(last) - i64::from(weekday)).rem_euclid(7)
                };
                (day <= last).then_some(day)
            }
            Holiday::Easter(offset) => Some(easter(year) + i64::from(offset)),
        }
    }
}

/// Days since 1970-01-01 of a (proleptic Gregorian) date.
fn day_number(year: i64, month: u8, day: u8) -> i64 {
    let (month, day) = (i64::from(month), i64::from(day));
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Monday 0 … Sunday 6 (1970-01-01 was a Thursday).
fn weekday_of(day: i64) -> i64 {
    (day + 3).rem_euclid(7)
}

fn month_length(year: i64, month: u8) -> u8 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Easter Sunday of `year` (Gregorian; the anonymous algorithm of Meeus, Jones and
/// Butcher), as a day number.
fn easter(year: i64) -> i64 {
    let (a, b, c) = (year % 19, year / 100, year % 100);
    let (d, e) = (b / 4, b % 4);
    let g = (b - (b + 8) / 25 + 1) / 3;
    let h = (19 * a + b - d - g + 15) % 30;
    let (i, k) = (c / 4, c % 4);
    let l = (32 + 2 * e + 2 * i - h - k) % 7;
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    day_number(year, month as u8, day as u8)
}

/// Parse one entry of the holidays list into rules (a preset gives several).
fn parse_holiday(entry: &str, rules: &mut Vec<Holiday>) -> Result<(), String> {
    let bad = || {
        format!(
            "holiday {entry:?}: expected YYYY-MM-DD, Dec 25 [observed|substitute], \
             2nd Mon Jun, last Mon May, Easter+1, Good Friday, Easter Monday or @AU/@GB/@US"
        )
    };
    let words: Vec<String> = entry
        .split_whitespace()
        .map(str::to_ascii_lowercase)
        .collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let month = |name: &str| {
        MONTH_NAMES
            .iter()
            .position(|m| *m == name)
            .map(|i| i as u8 + 1)
    };
    let rule = match words.as_slice() {
        [preset] if preset.starts_with('@') => {
            let (_, list) = PRESETS
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(&preset[1..]))
                .ok_or_else(bad)?;
            for entry in list.split(',').map(str::trim) {
                parse_holiday(entry, rules)?;
            }
            return Ok(());
        }
        ["good", "friday"] => Holiday::Easter(-2),
        ["easter", "monday"] => Holiday::Easter(1),
        [easter] if easter.starts_with("easter") => match &easter[6..] {
            "" => Holiday::Easter(0),
            offset => Holiday::Easter(
                offset
                    .parse::<i16>()
                    .ok()
                    .filter(|o| offset.starts_with(['+', '-']) && o.abs() <= 100)
                    .ok_or_else(bad)?,
            ),
        },
        [date] => {
            let (y, m, d) = parse_date(date).map_err(|_| bad())?;
            Holiday::Date(y, m, d)
        }
        [name, day, rest @ ..] if month(name).is_some() && rest.len() <= 1 => {
            let month = month(name).ok_or_else(bad)?;
            let day: u8 = Some(day)
                .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|d| d.parse().ok())
                .filter(|d| *d >= 1 && *d <= month_length(2000, month))
                .ok_or_else(bad)?;
            let observed = match rest {
                [] => Observed::No,
                ["observed"] => Observed::Nearest,
                ["substitute"] => Observed::Substitute,
                _ => return Err(bad()),
            };
            Holiday::Yearly {
                month,
                day,
                observed,
            }
        }
        [nth, weekday, name] => Holiday::NthWeekday {
            nth: match *nth {
                "1st" => 1,
                "2nd" => 2,
                "3rd" => 3,
                "4th" => 4,
                "5th" => 5,
                "last" => -1,
                _ => return Err(bad()),
            },
            weekday: DAY_NAMES
                .iter()
                .position(|d| d == weekday)
                .ok_or_else(bad)? as u8,
            month: month(name).ok_or_else(bad)?,
        },
        _ => return Err(bad()),
    };
    rules.push(rule);
    Ok(())
}

fn weekday_index(day: Weekday) -> usize {
    match day {
        Weekday::Monday => 0,
        Weekday::Tuesday => 1,
        Weekday::Wednesday => 2,
        Weekday::Thursday => 3,
        Weekday::Friday => 4,
        Weekday::Saturday => 5,
        Weekday::Sunday => 6,
    }
}

fn parse_window(entry: &str) -> Result<Window, String> {
    let bad = |why: &str| format!("hours entry {entry:?}: {why}");
    let (days, times) = entry
        .split_once(char::is_whitespace)
        .ok_or_else(|| bad("expected DAYS HH:MM-HH:MM"))?;
    let days =
        parse_days(days.trim()).ok_or_else(|| bad("days must be like Mon, Mon-Fri or Daily"))?;
    let (open, close) = times
        .trim()
        .split_once('-')
        .ok_or_else(|| bad("expected HH:MM-HH:MM"))?;
    let open = parse_minutes(open)
        .filter(|m| *m < 1440)
        .ok_or_else(|| bad("bad opening time"))?;
    let close = parse_minutes(close)
        .filter(|m| *m > 0)
        .ok_or_else(|| bad("bad closing time"))?;
    if open == close {
        return Err(bad("opening and closing times are equal"));
    }
    Ok(Window { days, open, close })
}

fn parse_days(spec: &str) -> Option<[bool; 7]> {
    let day = |name: &str| DAY_NAMES.iter().position(|d| d.eq_ignore_ascii_case(name));
    if spec.eq_ignore_ascii_case("daily") {
        return Some([true; 7]);
    }
    let (first, last) = match spec.split_once('-') {
        Some((a, b)) => (day(a)?, day(b)?),
        None => (day(spec)?, day(spec)?),
    };
    let mut days = [false; 7];
    let mut d = first;
    loop {
        days[d] = true;
        if d == last {
            return Some(days);
        }
        d = (d + 1) % 7;
    }
}

/// `HH:MM` to minutes after midnight, `24:00` allowed.
fn parse_minutes(text: &str) -> Option<u16> {
    let (h, m) = text.trim().split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return None;
    }
    Some(h * 60 + m)
}

fn parse_date(text: &str) -> Result<(i16, u8, u8), String> {
    let bad = || format!("holiday {text:?}: expected YYYY-MM-DD");
    let mut parts = text.split('-');
    let (y, m, d) = (
        parts.next().ok_or_else(bad)?,
        parts.next().ok_or_else(bad)?,
        parts.next().ok_or_else(bad)?,
    );
    if parts.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return Err(bad());
    }
    let (y, m, d): (i16, u8, u8) = (
        y.parse().map_err(|_| bad())?,
        m.parse().map_err(|_| bad())?,
        d.parse().map_err(|_| bad())?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    Ok((y, m, d))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Monday first, as `weekday_of` counts.
    const WEEKDAYS: [Weekday; 7] = [
        Weekday::Monday,
        Weekday::Tuesday,
        Weekday::Wednesday,
        Weekday::Thursday,
        Weekday::Friday,
        Weekday::Saturday,
        Weekday::Sunday,
    ];

    /// The host's conversion (UTC → zone) done here with jiff, as the host does it.
    fn local(utc: &str, tz: &str) -> LocalTime {
        let ts: jiff::Timestamp = utc.parse().unwrap();
        let z = ts.to_zoned(jiff::tz::TimeZone::get(tz).unwrap());
        let weekday = WEEKDAYS[z.weekday().to_monday_zero_offset() as usize];
        LocalTime {
            year: z.year(),
            month: z.month() as u8,
            day: z.day() as u8,
            hour: z.hour() as u8,
            minute: z.minute() as u8,
            second: z.second() as u8,
            weekday,
            utc_offset_seconds: z.offset().seconds(),
        }
    }

    fn office() -> Schedule {
        Schedule::parse(
            "Mon-Fri 09:00-17:00, Sat 10:00-13:00",
            "2026-12-25, 2027-01-01",
        )
        .unwrap()
    }

    #[test]
    fn weekly_hours_in_sydney() {
        let s = office();
        // Monday 2026-11-23 09:30 AEDT = 22:30Z Sunday.
        assert_eq!(
            s.state(&local("2026-11-22T22:30:00Z", "Australia/Sydney"), None),
            OpenState::Open
        );
        // Monday 08:59 local.
        assert_eq!(
            s.state(&local("2026-11-22T21:59:00Z", "Australia/Sydney"), None),
            OpenState::Closed
        );
        // Monday 17:00 local: closed (close is exclusive).
        assert_eq!(
            s.state(&local("2026-11-23T06:00:00Z", "Australia/Sydney"), None),
            OpenState::Closed
        );
        // Saturday 12:59 local open, Sunday closed.
        assert_eq!(
            s.state(&local("2026-11-28T01:59:00Z", "Australia/Sydney"), None),
            OpenState::Open
        );
        assert_eq!(
            s.state(&local("2026-11-29T01:00:00Z", "Australia/Sydney"), None),
            OpenState::Closed
        );
    }

    #[test]
    fn sydney_dst_end_and_start_keep_wall_clock_hours() {
        let s = office();
        // DST ended Sunday 2026-04-05. Monday 2026-04-06 08:30 AEST = 22:30Z on the 5th;
        // with the summer offset it would wrongly be 09:30.
        assert_eq!(
            s.state(&local("2026-04-05T22:30:00Z", "Australia/Sydney"), None),
            OpenState::Closed
        );
        assert_eq!(
            s.state(&local("2026-04-05T23:00:00Z", "Australia/Sydney"), None),
            OpenState::Open
        );
        // DST started Sunday 2026-10-04. Monday 2026-10-05 09:30 AEDT = 22:30Z on the 4th;
        // with the winter offset it would wrongly be 08:30.
        assert_eq!(
            s.state(&local("2026-10-04T22:30:00Z", "Australia/Sydney"), None),
            OpenState::Open
        );
        assert_eq!(
            s.state(&local("2026-10-04T21:59:00Z", "Australia/Sydney"), None),
            OpenState::Closed
        );
    }

    #[test]
    fn new_york_dst_start_and_end_keep_wall_clock_hours() {
        let s = office();
        // DST started Sunday 2026-03-08. Monday 09:30 EDT = 13:30Z (EST would make it 08:30).
        assert_eq!(
            s.state(&local("2026-03-09T13:30:00Z", "America/New_York"), None),
            OpenState::Open
        );
        assert_eq!(
            s.state(&local("2026-03-09T12:59:00Z", "America/New_York"), None),
            OpenState::Closed
        );
        // DST ends Sunday 2026-11-01. Monday 09:00 EST = 14:00Z; 13:30Z is 08:30 local.
        assert_eq!(
            s.state(&local("2026-11-02T13:30:00Z", "America/New_York"), None),
            OpenState::Closed
        );
        assert_eq!(
            s.state(&local("2026-11-02T14:00:00Z", "America/New_York"), None),
            OpenState::Open
        );
        // Friday before the change 16:59 EDT = 20:59Z open; 17:00 EDT closed.
        assert_eq!(
            s.state(&local("2026-10-30T20:59:00Z", "America/New_York"), None),
            OpenState::Open
        );
        assert_eq!(
            s.state(&local("2026-10-30T21:00:00Z", "America/New_York"), None),
            OpenState::Closed
        );
    }

    #[test]
    fn holidays_and_the_override() {
        let s = office();
        // Friday 2026-12-25 10:00 AEDT: a holiday.
        let christmas = local("2026-12-24T23:00:00Z", "Australia/Sydney");
        assert_eq!(s.state(&christmas, None), OpenState::Holiday);
        assert_eq!(s.state(&christmas, Some("open")), OpenState::ForcedOpen);
        let monday = local("2026-11-22T22:30:00Z", "Australia/Sydney");
        assert_eq!(s.state(&monday, Some("closed")), OpenState::ForcedClosed);
        assert_eq!(s.state(&monday, Some(" Closed ")), OpenState::ForcedClosed);
        assert_eq!(s.state(&monday, Some("whatever")), OpenState::Open);
        assert!(!OpenState::Holiday.is_open());
    }

    #[test]
    fn windows_past_midnight_and_wrapping_days() {
        let s = Schedule::parse("Fri-Sat 22:00-02:00", "").unwrap();
        let at = |utc| local(utc, "UTC");
        assert!(s.within_hours(&at("2026-11-27T23:00:00Z"))); // Fri 23:00
        assert!(s.within_hours(&at("2026-11-28T01:59:00Z"))); // Sat 01:59, from Fri
        assert!(!s.within_hours(&at("2026-11-28T02:00:00Z")));
        assert!(s.within_hours(&at("2026-11-29T01:00:00Z"))); // Sun 01:00, from Sat
        assert!(!s.within_hours(&at("2026-11-30T01:00:00Z"))); // Mon 01:00
        let weekend = Schedule::parse("Sat-Sun 00:00-24:00", "").unwrap();
        assert!(weekend.within_hours(&at("2026-11-29T23:59:00Z")));
        assert!(!weekend.within_hours(&at("2026-11-30T00:00:00Z")));
        assert!(
            Schedule::parse("", "")
                .unwrap()
                .within_hours(&at("2026-11-30T03:00:00Z"))
        );
    }

    #[test]
    fn bad_formats_name_the_part() {
        assert!(
            Schedule::parse("Mon-Fry 09:00-17:00", "")
                .unwrap_err()
                .contains("Mon-Fry")
        );
        assert!(
            Schedule::parse("Mon 9-17", "")
                .unwrap_err()
                .contains("Mon 9-17")
        );
        assert!(
            Schedule::parse("Mon 09:00-25:00", "")
                .unwrap_err()
                .contains("closing")
        );
        assert!(
            Schedule::parse("Mon 09:00-09:00", "")
                .unwrap_err()
                .contains("equal")
        );
        assert!(
            Schedule::parse("", "2026-13-01")
                .unwrap_err()
                .contains("2026-13-01")
        );
        assert!(
            Schedule::parse("", "25/12/2026")
                .unwrap_err()
                .contains("25/12/2026")
        );
    }

    /// A local time at noon on (year, month, day), its weekday computed.
    fn on(year: i16, month: u8, day: u8) -> LocalTime {
        let weekday = WEEKDAYS[weekday_of(day_number(i64::from(year), month, day)) as usize];
        LocalTime {
            year,
            month,
            day,
            hour: 12,
            minute: 0,
            second: 0,
            weekday,
            utc_offset_seconds: 0,
        }
    }

    fn closed_on(holidays: &str, days: &[(i16, u8, u8)], open_on: &[(i16, u8, u8)]) {
        let schedule = Schedule::parse("", holidays).unwrap();
        for &(y, m, d) in days {
            assert!(
                schedule.is_holiday(&on(y, m, d)),
                "{holidays}: {y}-{m}-{d} closed"
            );
        }
        for &(y, m, d) in open_on {
            assert!(
                !schedule.is_holiday(&on(y, m, d)),
                "{holidays}: {y}-{m}-{d} open"
            );
        }
    }

    #[test]
    fn easter_is_right_across_centuries() {
        for (year, month, day) in [
            (2024, 3, 31),
            (2025, 4, 20),
            (2026, 4, 5),
            (2027, 3, 28),
            (2038, 4, 25),
            (2285, 3, 22),
            (1961, 4, 2),
        ] {
            assert_eq!(easter(year), day_number(year, month, day), "{year}");
        }
        assert_eq!(
            weekday_of(day_number(2026, 12, 6)),
            6,
            "2026-12-06 is a Sunday"
        );
    }

    #[test]
    fn australian_holidays_with_substitute_days() {
        closed_on(
            "@AU",
            &[
                (2026, 1, 1),
                (2026, 1, 26),
                (2026, 4, 3),   // Good Friday
                (2026, 4, 6),   // Easter Monday
                (2026, 4, 25),  // Anzac Day, a Saturday: the day itself only
                (2026, 6, 8),   // King's Birthday, 2nd Monday of June
                (2026, 12, 25), // Friday
                (2026, 12, 26), // Saturday…
                (2026, 12, 28), // …observed on Monday
            ],
            &[(2026, 4, 27), (2026, 12, 29), (2026, 6, 1), (2026, 4, 7)],
        );
    }

    #[test]
    fn british_christmas_on_a_weekend_moves_to_monday_and_tuesday() {
        closed_on(
            "@GB",
            &[
                (2027, 12, 25),
                (2027, 12, 26),
                (2027, 12, 27),
                (2027, 12, 28),
                (2027, 5, 3),  // early May
                (2027, 5, 31), // spring, the last Monday of May
                (2027, 8, 30), // summer, the last Monday of August
                (2027, 3, 26), // Good Friday
            ],
            &[(2027, 12, 29), (2027, 5, 24), (2027, 8, 23)],
        );
        // Christmas on a Sunday: Boxing Day keeps Monday, Christmas moves to Tuesday.
        closed_on("@GB", &[(2022, 12, 26), (2022, 12, 27)], &[(2022, 12, 28)]);
    }

    #[test]
    fn american_holidays_observed_on_the_nearest_weekday() {
        closed_on(
            "@US",
            &[
                (2026, 7, 3),   // 4 July is a Saturday: observed Friday
                (2026, 11, 26), // Thanksgiving, the 4th Thursday
                (2026, 1, 19),  // 3rd Monday of January
                (2027, 6, 18),  // Juneteenth on a Saturday
                (2027, 12, 31), // 1 January 2028 is a Saturday: observed the Friday before
                (2027, 5, 31),  // Memorial Day
            ],
            &[(2026, 7, 6), (2026, 11, 27), (2027, 12, 30)],
        );
    }

    #[test]
    fn rules_that_do_not_fall_in_a_year_close_nothing() {
        // February 2026 has four Mondays; 29 February only leap years.
        closed_on("5th Mon Feb", &[], &[(2026, 2, 23), (2026, 3, 2)]);
        closed_on("Feb 29", &[(2028, 2, 29)], &[(2026, 3, 1), (2027, 3, 1)]);
        closed_on(
            "last Fri Jan, Easter-47",
            &[(2026, 1, 30), (2026, 2, 17)],
            &[],
        );
        closed_on(
            "Dec 24, 2026-12-31",
            &[(2030, 12, 24), (2026, 12, 31)],
            &[(2027, 12, 31)],
        );
    }

    #[test]
    fn bad_holiday_rules_name_the_entry() {
        for bad in [
            "3rd Funday Jun",
            "Dec 32",
            "Feb 30",
            "@XX",
            "Easter+x",
            "Dec 25 maybe",
            "6th Mon Jun",
            "Easter+500",
            "Dec +5",
        ] {
            let error = Schedule::parse("", &format!("2026-12-25, {bad}")).unwrap_err();
            assert!(error.contains(&format!("{bad:?}")), "{bad}: {error}");
        }
    }
}
