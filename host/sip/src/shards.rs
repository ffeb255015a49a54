//! Which of the host's signalling shards a message belongs to.
//!
//! With `sip.shards = N` the host runs N call cores, each on its own task, and a message
//! goes to the shard its Call-ID hashes to: every message of a dialog (its requests, their
//! retransmissions, the responses) carries the same Call-ID, so a call lives on one shard
//! whichever way its messages come in. The Call-IDs a shard mints for its own requests are
//! drawn until they hash to that shard, so their responses come back to it too. REGISTERs
//! all go to the first shard (the registrar's home); the others keep copies of its
//! bindings. The dispatcher reads only the raw bytes (no parse): a message whose Call-ID
//! cannot be found goes to the home shard, which answers it as malformed.

/// One shard of `count`: the `index`-th.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// A host with one shard: it owns every Call-ID.
    pub const ALONE: Shard = Shard { index: 0, count: 1 };

    /// The shard that holds the registrar and registers with carriers.
    pub fn is_home(self) -> bool {
        self.index == 0
    }

    /// Whether a dialog with this Call-ID belongs here.
    pub fn owns(self, call_id: &str) -> bool {
        shard_of(call_id.as_bytes(), self.count) == self.index
    }

    /// The shard to hand a request to that may concern a call held elsewhere (a pull
    /// whose user has no call here): the shards are tried in turn from the one the
    /// Call-ID hashes to, each once; none when every shard has had it.
    pub fn next_to_try(self, call_id: &str) -> Option<usize> {
        let first = shard_of(call_id.as_bytes(), self.count);
        let next = (self.index + 1) % self.count;
        (next != first).then_some(next)
    }
}

/// The shard (of `count`) a Call-ID belongs to: FNV-1a over its bytes, stable across
/// runs and builds (unlike std's hasher), so every shard and the dispatcher agree.
pub fn shard_of(call_id: &[u8], count: usize) -> usize {
    if count <= 1 {
        return 0;
    }
    let hash = call_id.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % count as u64) as usize
}

/// Where a raw message goes, read without parsing it.
#[derive(Debug, PartialEq, Eq)]
pub enum Destination<'a> {
    /// A REGISTER: the home shard.
    Registrar,
    /// Any other message, by its Call-ID's value.
    Dialog(&'a [u8]),
    /// No Call-ID found (malformed, or a keep-alive): the home shard answers.
    Unknown,
}

/// Read where a datagram or framed message goes. Only the start line and the header
/// names are looked at; header names are case-insensitive and `i` is Call-ID's compact
/// form (RFC 3261 §7.3.3).
pub fn destination(bytes: &[u8]) -> Destination<'_> {
    if bytes.starts_with(b"REGISTER ") {
        return Destination::Registrar;
    }
    let head_end = find(bytes, b"\r\n\r\n").unwrap_or(bytes.len());
    let mut lines = bytes[..head_end].split(|&b| b == b'\n').skip(1);
    let value = lines.find_map(|line| {
        let colon = line.iter().position(|&b| b == b':')?;
        let name = line[..colon].trim_ascii();
        (name.eq_ignore_ascii_case(b"call-id") || name.eq_ignore_ascii_case(b"i"))
            .then(|| line[colon + 1..].trim_ascii())
    });
    match value {
        Some(value) if !value.is_empty() => Destination::Dialog(value),
        _ => Destination::Unknown,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_call_id_is_read_from_raw_bytes_in_either_form_and_any_case() {
        let invite = b"INVITE sip:100@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
            call-ID:  abc@10.0.0.1 \r\nCSeq: 1 INVITE\r\n\r\nv=0\r\nCall-ID: not-this\r\n";
        assert_eq!(destination(invite), Destination::Dialog(b"abc@10.0.0.1"));
        let compact = b"SIP/2.0 200 OK\r\nv: SIP/2.0/UDP h\r\ni:xyz\r\n\r\n";
        assert_eq!(destination(compact), Destination::Dialog(b"xyz"));
        let register = b"REGISTER sip:h SIP/2.0\r\nCall-ID: r1\r\n\r\n";
        assert_eq!(destination(register), Destination::Registrar);
        assert_eq!(destination(b"\r\n\r\n"), Destination::Unknown);
        assert_eq!(destination(b"garbage"), Destination::Unknown);
        let empty = b"BYE sip:h SIP/2.0\r\nCall-ID: \r\n\r\n";
        assert_eq!(destination(empty), Destination::Unknown);
    }

    #[test]
    fn call_ids_spread_over_the_shards_and_each_shard_owns_its_own() {
        let mut counts = [0usize; 4];
        for n in 0..4000 {
            counts[shard_of(format!("{n:x}@127.0.0.1").as_bytes(), 4)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
        let shard = Shard { index: 2, count: 4 };
        let id = (0..)
            .map(|n| format!("{n}@h"))
            .find(|id| shard.owns(id))
            .unwrap();
        assert_eq!(shard_of(id.as_bytes(), 4), 2);
        assert!(Shard::ALONE.owns("anything"));
        assert_eq!(Shard::ALONE.next_to_try("anything"), None);
        // From the Call-ID's own shard round the ring, each shard once.
        let mut tried = vec![2];
        let mut at = shard;
        while let Some(next) = at.next_to_try(&id) {
            tried.push(next);
            at = Shard {
                index: next,
                count: 4,
            };
        }
        assert_eq!(tried, [2, 3, 0, 1]);
    }
}
