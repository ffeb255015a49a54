//! Randomness for the sans-IO core. The driver draws a fresh seed from the OS for every
//! input ([`crate::ambient::Ambient::random`]); the core mixes it into one SplitMix64
//! generator it keeps for its life and draws as many values as the input needs (tags,
//! branches, Call-IDs, SDP session ids, nonces). The core never reads the OS itself, a
//! test can pin every token, and the values never repeat within a process — not even
//! if the OS gave no randomness at all (the seeds are then all zero).

use wasmpbx_sip::shards::Shard;

/// The values one input may draw.
#[derive(Debug, Clone)]
pub struct Entropy {
    state: u64,
    /// The signalling shard whose Call-IDs this draws.
    shard: Shard,
}

impl Entropy {
    pub fn new(seed: u64) -> Self {
        Self {
            state: seed,
            shard: Shard::ALONE,
        }
    }

    /// The randomness of one of several signalling shards: its Call-IDs hash to it.
    pub fn for_shard(seed: u64, shard: Shard) -> Self {
        Self { state: seed, shard }
    }

    /// Mix in the next input's seed; the sequence goes on from where it was.
    pub fn mix(&mut self, seed: u64) {
        self.state ^= seed.rotate_left(29);
        self.next_u64();
    }

    /// The next 64 bits (SplitMix64: every seed gives a full-period, well-mixed sequence).
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A token for a tag, a branch or a Call-ID: 24 hex digits.
    pub fn token(&mut self) -> String {
        let (high, low) = (self.next_u64(), self.next_u64());
        format!("{high:016x}{:08x}", low as u32)
    }

    /// A Call-ID for a dialog this core starts (`token@host`): drawn until it hashes to
    /// the core's shard, so the answers come back to it (one draw on a host with one
    /// shard, the number of shards on average).
    pub fn call_id(&mut self, host: impl std::fmt::Display) -> String {
        loop {
            let call_id = format!("{}@{host}", self.token());
            if self.shard.owns(&call_id) {
                return call_id;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_differ_within_an_input_and_repeat_for_a_seed() {
        let mut a = Entropy::new(7);
        let (first, second) = (a.token(), a.token());
        assert_ne!(first, second);
        assert_eq!(first.len(), 24);
        assert!(first.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(Entropy::new(7).token(), first);
        assert_ne!(Entropy::new(8).token(), first);
    }

    #[test]
    fn a_shards_call_ids_hash_to_it() {
        let shard = Shard { index: 1, count: 3 };
        let mut e = Entropy::for_shard(5, shard);
        for _ in 0..50 {
            let call_id = e.call_id("10.0.0.1");
            assert!(call_id.ends_with("@10.0.0.1"));
            assert_eq!(wasmpbx_sip::shards::shard_of(call_id.as_bytes(), 3), 1);
        }
    }

    #[test]
    fn mixing_the_same_seed_again_never_repeats_a_token() {
        let mut e = Entropy::new(0);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            e.mix(0); // no randomness from the OS: the same seed every input
            assert!(seen.insert(e.token()));
        }
    }
}
