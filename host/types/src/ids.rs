//! Call ids.

use std::fmt;

/// A call's id: a UUID version 7 (RFC 9562) — the wall-clock millisecond the call
/// arrived, then random bits — so ids never repeat across restarts (or nodes) and sort
/// by arrival. The admin API, the records and the scripts see the full form; logs show
/// [`SessionId::short`], the id's last group.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(uuid::Uuid);

impl SessionId {
    /// The id of a call arriving at `unix_ms`, with ten bytes of the core's randomness.
    pub fn new(unix_ms: u64, random: [u8; 10]) -> Self {
        Self(uuid::Builder::from_unix_timestamp_millis(unix_ms, &random).into_uuid())
    }

    /// When the call arrived (the id's millisecond).
    pub fn arrived_at(&self) -> jiff::Timestamp {
        let (secs, nanos) = self.0.get_timestamp().map_or((0, 0), |t| t.to_unix());
        jiff::Timestamp::new(secs as i64, nanos as i32).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    /// The short form for logs: the last 12 hex digits (random bits, not the time).
    pub fn short(&self) -> impl fmt::Display + use<> {
        let full = self.0.as_hyphenated().to_string();
        full[full.len() - 12..].to_owned()
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.as_hyphenated().fmt(f)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

impl std::str::FromStr for SessionId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Self)
    }
}

impl serde::Serialize for SessionId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_uuid_v7_ordered_by_time_with_a_short_tail() {
        let early = SessionId::new(1_790_000_000_000, [1; 10]);
        let late = SessionId::new(1_790_000_000_001, [0; 10]);
        assert!(early < late);
        let text = early.to_string();
        assert_eq!(text.len(), 36);
        assert_eq!(&text[14..15], "7", "version 7: {text}");
        assert_eq!(text.parse::<SessionId>().unwrap(), early);
        assert!(text.ends_with(&early.short().to_string()));
        assert_eq!(early.short().to_string().len(), 12);
        assert_ne!(early, SessionId::new(1_790_000_000_000, [2; 10]));
        assert!("s3".parse::<SessionId>().is_err());
    }

    #[test]
    fn an_id_says_when_its_call_arrived() {
        let at = jiff::Timestamp::from_millisecond(1_790_000_000_123).unwrap();
        assert_eq!(SessionId::new(1_790_000_000_123, [7; 10]).arrived_at(), at);
    }
}
