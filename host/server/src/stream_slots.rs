//! How many stream connections a listener holds from each source address and in all: SIP
//! over TCP and TLS, and HTTP (the admin API, the browsers' WebSockets). Past either
//! limit a new connection is closed at once: each one holds a task, buffers and a file
//! descriptor, and without a limit one host could take every descriptor and lock every
//! other phone, trunk and browser out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The most connections from one address: a whole office of phones behind one NAT.
pub(crate) const PER_SOURCE: usize = 256;
/// The most connections in all.
pub(crate) const IN_ALL: usize = 8192;

/// The connections held, by source address.
#[derive(Debug)]
pub(crate) struct StreamSlots {
    held: Mutex<Held>,
    per_source: usize,
    in_all: usize,
}

#[derive(Debug, Default)]
struct Held {
    by_source: HashMap<IpAddr, usize>,
    in_all: usize,
}

/// One connection's place, given back when it is dropped.
#[derive(Debug)]
pub(crate) struct StreamSlot {
    slots: Arc<StreamSlots>,
    source: IpAddr,
}

impl StreamSlots {
    pub(crate) fn new(per_source: usize, in_all: usize) -> Arc<Self> {
        Arc::new(Self {
            held: Mutex::new(Held::default()),
            per_source,
            in_all,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        // A counter map: a panic elsewhere while holding it leaves it usable.
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A place for a connection from `source`; none past a limit.
    pub(crate) fn take(self: &Arc<Self>, source: IpAddr) -> Option<StreamSlot> {
        let mut held = self.lock();
        let from_source = held.by_source.get(&source).copied().unwrap_or(0);
        if held.in_all >= self.in_all || from_source >= self.per_source {
            return None;
        }
        held.by_source.insert(source, from_source + 1);
        held.in_all += 1;
        Some(StreamSlot {
            slots: self.clone(),
            source,
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut held = self.slots.lock();
        held.in_all -= 1;
        if let Some(count) = held.by_source.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                held.by_source.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_its_share_and_no_more_and_places_come_back() {
        let slots = StreamSlots::new(2, 3);
        let (a, b, c): (IpAddr, IpAddr, IpAddr) = (
            "192.0.2.1".parse().unwrap(),
            "192.0.2.2".parse().unwrap(),
            "192.0.2.3".parse().unwrap(),
        );
        let first = slots.take(a).expect("a's first");
        let _second = slots.take(a).expect("a's second");
        assert!(slots.take(a).is_none(), "a's third: past its share");
        let _b = slots.take(b).expect("b's first");
        assert!(slots.take(c).is_none(), "past the limit in all");
        drop(first);
        assert!(slots.take(c).is_some(), "a place came back");
    }
}
