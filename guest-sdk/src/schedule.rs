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
//! - holidays: `"2026-12-25, 2027-01-01"` — closed the whole local day.
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
    /// (year, month, day).
    holidays: Vec<(i16, u8, u8)>,
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
        let holidays = holidays
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(parse_date)
            .collect::<Result<_, _>>()?;
        Ok(Self { windows, holidays })
    }

    /// Whether `at` falls on a listed holiday.
    pub fn is_holiday(&self, at: &LocalTime) -> bool {
        self.holidays.contains(&(at.year, at.month, at.day))
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

    /// The host's conversion (UTC → zone) done here with jiff, as the host does it.
    fn local(utc: &str, tz: &str) -> LocalTime {
        let ts: jiff::Timestamp = utc.parse().unwrap();
        let z = ts.to_zoned(jiff::tz::TimeZone::get(tz).unwrap());
        let weekday = [
            Weekday::Monday,
            Weekday::Tuesday,
            Weekday::Wednesday,
            Weekday::Thursday,
            Weekday::Friday,
            Weekday::Saturday,
            Weekday::Sunday,
        ][z.weekday().to_monday_zero_offset() as usize];
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
}
