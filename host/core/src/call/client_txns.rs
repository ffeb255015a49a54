//! Which session each client transaction belongs to, and each session's transactions,
//! so ending a call drops its transactions without a pass over every live call's.

use std::collections::HashMap;

use super::SessionId;
use crate::sip::transaction::ClientTxnId;

#[derive(Default)]
pub(super) struct ClientTxns {
    owner: HashMap<ClientTxnId, SessionId>,
    /// A call has a handful of transactions at a time, so a short list beats a set.
    of_session: HashMap<SessionId, Vec<ClientTxnId>>,
}

impl ClientTxns {
    pub(super) fn insert(&mut self, txn: ClientTxnId, id: SessionId) {
        if let Some(previous) = self.owner.insert(txn, id) {
            self.forget(previous, txn);
        }
        self.of_session.entry(id).or_default().push(txn);
    }

    pub(super) fn get(&self, txn: &ClientTxnId) -> Option<&SessionId> {
        self.owner.get(txn)
    }

    pub(super) fn remove(&mut self, txn: &ClientTxnId) -> Option<SessionId> {
        let id = self.owner.remove(txn)?;
        self.forget(id, *txn);
        Some(id)
    }

    /// Drop every transaction of session `id`: answered legs' INVITEs (kept while the
    /// call lasts, their 2xx may come again and be ACKed again), legs a flip replaced,
    /// BYEs still out (their answers are of no use once the call has ended).
    pub(super) fn end_session(&mut self, id: SessionId) {
        for txn in self.of_session.remove(&id).unwrap_or_default() {
            self.owner.remove(&txn);
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        debug_assert_eq!(
            self.owner.len(),
            self.of_session.values().map(Vec::len).sum::<usize>()
        );
        self.owner.len()
    }

    fn forget(&mut self, id: SessionId, txn: ClientTxnId) {
        if let Some(txns) = self.of_session.get_mut(&id) {
            txns.retain(|t| *t != txn);
            if txns.is_empty() {
                self.of_session.remove(&id);
            }
        }
    }
}
