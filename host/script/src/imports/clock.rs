use jiff::tz::TimeZone;

use crate::bindings::v0_2::wasmpbx::script::clock::{Host, Instant, LocalTime, Weekday};
use crate::convert;
use crate::engine::EventHost;

impl Host for EventHost {
    /// The host clock, noted in the event's world; a shadow run or a replay gets the live
    /// event's readings in order, then its last one (or the event's time) again.
    fn now(&mut self) -> Instant {
        let world = &mut self.world;
        let at = if world.shadow {
            let recorded = world.readings.get(world.readings_given);
            world.readings_given += 1;
            recorded
                .or(world.readings.last())
                .copied()
                .or(world.now)
                .unwrap_or_else(|| self.services.clock.now())
        } else {
            let at = self.services.clock.now();
            if world.readings.len() < crate::engine::READINGS_KEPT {
                world.readings.push(at);
            }
            at
        };
        convert::instant(at)
    }

    fn to_local(&mut self, at: Instant, timezone: String) -> Result<LocalTime, String> {
        local_time(at, &timezone)
    }
}

/// The wall-clock time of `at` in an IANA timezone, from the bundled tz database.
pub(crate) fn local_time(at: Instant, timezone: &str) -> Result<LocalTime, String> {
    let tz = TimeZone::get(timezone).map_err(|_| format!("unknown timezone {timezone:?}"))?;
    let timestamp = jiff::Timestamp::new(at.seconds, at.nanoseconds.min(999_999_999) as i32)
        .map_err(|e| format!("instant out of range: {e}"))?;
    let zoned = timestamp.to_zoned(tz);
    Ok(LocalTime {
        year: zoned.year(),
        month: zoned.month() as u8,
        day: zoned.day() as u8,
        hour: zoned.hour() as u8,
        minute: zoned.minute() as u8,
        second: zoned.second() as u8,
        weekday: match zoned.weekday() {
            jiff::civil::Weekday::Monday => Weekday::Monday,
            jiff::civil::Weekday::Tuesday => Weekday::Tuesday,
            jiff::civil::Weekday::Wednesday => Weekday::Wednesday,
            jiff::civil::Weekday::Thursday => Weekday::Thursday,
            jiff::civil::Weekday::Friday => Weekday::Friday,
            jiff::civil::Weekday::Saturday => Weekday::Saturday,
            jiff::civil::Weekday::Sunday => Weekday::Sunday,
        },
        utc_offset_seconds: zoned.offset().seconds(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> Instant {
        convert::instant(rfc3339.parse().unwrap())
    }

    #[test]
    fn sydney_across_both_dst_changes() {
        // DST ends Sunday 2026-04-05 03:00 AEDT -> 02:00 AEST.
        let before = local_time(at("2026-04-04T15:59:00Z"), "Australia/Sydney").unwrap();
        assert_eq!(
            (before.hour, before.minute, before.utc_offset_seconds),
            (2, 59, 11 * 3600)
        );
        let after = local_time(at("2026-04-04T16:00:00Z"), "Australia/Sydney").unwrap();
        assert_eq!(
            (after.hour, after.minute, after.utc_offset_seconds),
            (2, 0, 10 * 3600)
        );
        // Monday after: 09:00 local is 23:00Z the day before.
        let monday = local_time(at("2026-04-05T23:00:00Z"), "Australia/Sydney").unwrap();
        assert_eq!(
            (monday.weekday, monday.day, monday.hour),
            (Weekday::Monday, 6, 9)
        );
        // DST starts Sunday 2026-10-04 02:00 AEST -> 03:00 AEDT.
        let jump = local_time(at("2026-10-03T16:00:00Z"), "Australia/Sydney").unwrap();
        assert_eq!((jump.hour, jump.utc_offset_seconds), (3, 11 * 3600));
    }

    #[test]
    fn new_york_across_dst_start() {
        // DST starts Sunday 2026-03-08 02:00 EST -> 03:00 EDT.
        let before = local_time(at("2026-03-08T06:59:59Z"), "America/New_York").unwrap();
        assert_eq!((before.hour, before.utc_offset_seconds), (1, -5 * 3600));
        let after = local_time(at("2026-03-08T07:00:00Z"), "America/New_York").unwrap();
        assert_eq!((after.hour, after.utc_offset_seconds), (3, -4 * 3600));
    }

    #[test]
    fn unknown_timezone_is_an_error() {
        let err = local_time(at("2026-01-01T00:00:00Z"), "Mars/Olympus_Mons").unwrap_err();
        assert!(err.contains("Mars/Olympus_Mons"));
    }
}
