//! The event stream: what happens to calls, flips, registrations and scripts, as it
//! happens, for `GET /api/events` (Server-Sent Events).
//!
//! The SIP core's task publishes from its outputs ([`Tracker`] turns records and
//! registration changes into events), the script runtime's decisions and the script
//! watcher publish theirs. Publishing never waits: every subscriber has a bounded
//! buffer, and one that falls behind loses the oldest events and is told how many.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::call::SessionId;
use crate::flip::{FlipKind, FlipResult};
use crate::record::CallRecord;
use crate::registration::BindingChange;
use crate::routing::CallInfo;

/// Events a subscriber may fall behind by before it loses the oldest.
const BUFFER: usize = 4096;

/// One event: its number (increasing from 1 since start), when, and what.
#[derive(Debug, Clone, Serialize)]
pub struct HostEvent {
    pub id: u64,
    pub at: jiff::Timestamp,
    #[serde(flatten)]
    pub what: What,
}

/// What happened. `type` names it in the JSON and as the SSE event name.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type")]
pub enum What {
    #[serde(rename = "call.started")]
    CallStarted {
        session: String,
        caller: String,
        dialed: String,
        location: Option<String>,
    },
    #[serde(rename = "call.answered")]
    CallAnswered { session: String },
    #[serde(rename = "call.ended")]
    CallEnded {
        session: String,
        disposition: crate::routing::Disposition,
        duration_ms: u64,
        end_reason: String,
    },
    #[serde(rename = "flip.requested")]
    FlipRequested {
        session: String,
        user: String,
        device: String,
        kind: FlipKind,
    },
    /// A flip's outcome: `done`, `denied` (with the reason), `no-answer`, `cancelled`.
    #[serde(rename = "flip.ended")]
    FlipEnded {
        session: String,
        kind: FlipKind,
        from_device: String,
        targets: Vec<String>,
        #[serde(flatten)]
        result: FlipResult,
    },
    #[serde(rename = "registration.up")]
    RegistrationUp {
        user: String,
        device: String,
        contact: String,
        transport: &'static str,
    },
    #[serde(rename = "registration.down")]
    RegistrationDown { user: String, contact: String },
    #[serde(rename = "script.loaded")]
    ScriptLoaded { script: String, version: String },
    #[serde(rename = "script.failed")]
    ScriptFailed { script: String, error: String },
    #[serde(rename = "script.removed")]
    ScriptRemoved { script: String },
    /// A script failed on a call's event and the host's fallback routed it.
    #[serde(rename = "script.fallback")]
    Fallback {
        session: String,
        script: String,
        cause: &'static str,
    },
}

impl What {
    /// The event's name: its `type`.
    pub fn name(&self) -> &'static str {
        match self {
            What::CallStarted { .. } => "call.started",
            What::CallAnswered { .. } => "call.answered",
            What::CallEnded { .. } => "call.ended",
            What::FlipRequested { .. } => "flip.requested",
            What::FlipEnded { .. } => "flip.ended",
            What::RegistrationUp { .. } => "registration.up",
            What::RegistrationDown { .. } => "registration.down",
            What::ScriptLoaded { .. } => "script.loaded",
            What::ScriptFailed { .. } => "script.failed",
            What::ScriptRemoved { .. } => "script.removed",
            What::Fallback { .. } => "script.fallback",
        }
    }
}

/// Where events are published and subscribed to.
pub struct Events {
    tx: broadcast::Sender<Arc<HostEvent>>,
    next_id: AtomicU64,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(BUFFER).0,
            next_id: AtomicU64::new(1),
        }
    }
}

impl Events {
    /// Publish what `what` makes; without subscribers it is not even made. Never waits.
    pub fn publish(&self, what: impl FnOnce() -> What) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        let event = HostEvent {
            id: self.next_id.fetch_add(1, Relaxed),
            at: crate::clock::Clock::now(&crate::clock::SystemClock),
            what: what(),
        };
        let _ = self.tx.send(Arc::new(event));
    }

    /// Everything published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<HostEvent>> {
        self.tx.subscribe()
    }
}

/// The SIP core task's view of what it has told: which calls were answered and how many
/// of their flips were reported, which registrations are up. It turns records (written
/// at the answer, after each flip, at the end) and registration changes (refreshes
/// included) into events, each once.
#[derive(Default)]
pub struct Tracker {
    /// Answered calls: flips reported so far.
    answered: HashMap<SessionId, usize>,
    /// (user, contact) registered now.
    registered: HashSet<(String, String)>,
}

impl Tracker {
    pub fn call_started(&mut self, events: &Events, session: SessionId, call: &CallInfo) {
        events.publish(|| What::CallStarted {
            session: session.to_string(),
            caller: call.caller.clone(),
            dialed: call.dialed.clone(),
            location: call.location.clone(),
        });
    }

    /// An answered call's record as it stands (at the answer, after each flip).
    pub fn live_record(&mut self, events: &Events, record: &CallRecord) {
        let reported = match self.answered.get(&record.session) {
            Some(reported) => *reported,
            None => {
                events.publish(|| What::CallAnswered {
                    session: record.session.to_string(),
                });
                0
            }
        };
        self.report_flips(events, record, reported);
        self.answered.insert(record.session, record.flips.len());
    }

    /// An ended call's record.
    pub fn ended_record(&mut self, events: &Events, record: &CallRecord) {
        if record.answered_at.is_some() && !self.answered.contains_key(&record.session) {
            events.publish(|| What::CallAnswered {
                session: record.session.to_string(),
            });
        }
        let reported = self.answered.remove(&record.session).unwrap_or(0);
        self.report_flips(events, record, reported);
        events.publish(|| What::CallEnded {
            session: record.session.to_string(),
            disposition: record.disposition,
            duration_ms: record.duration_ms,
            end_reason: record.end_reason.clone(),
        });
    }

    fn report_flips(&self, events: &Events, record: &CallRecord, reported: usize) {
        for flip in record.flips.iter().skip(reported) {
            events.publish(|| What::FlipEnded {
                session: record.session.to_string(),
                kind: flip.kind,
                from_device: flip.from_device.clone(),
                targets: flip.targets.clone(),
                result: flip.result.clone(),
            });
        }
    }

    pub fn flip_requested(&mut self, events: &Events, request: &crate::flip::FlipRequest) {
        events.publish(|| What::FlipRequested {
            session: request.call.call_id.clone(),
            user: request.user_id.clone(),
            device: request.requesting_device.clone(),
            kind: request.kind,
        });
    }

    /// Registration changes: a new (user, contact) is up, a removed one down; a refresh
    /// says nothing.
    pub fn bindings(&mut self, events: &Events, change: &BindingChange) {
        match change {
            BindingChange::Upsert(binding) => {
                let key = (binding.user_id.clone(), binding.contact.clone());
                if self.registered.insert(key) {
                    events.publish(|| What::RegistrationUp {
                        user: binding.user_id.clone(),
                        device: binding.device.clone(),
                        contact: binding.contact.clone(),
                        transport: binding.transport.as_str(),
                    });
                }
            }
            BindingChange::Remove { user_id, contact } => {
                if self.registered.remove(&(user_id.clone(), contact.clone())) {
                    events.publish(|| What::RegistrationDown {
                        user: user_id.clone(),
                        contact: contact.clone(),
                    });
                }
            }
        }
    }

    /// Registrations restored from the store at start are up already.
    pub fn restored(&mut self, bindings: impl IntoIterator<Item = (String, String)>) {
        self.registered.extend(bindings);
    }
}

/// The script watcher's outcomes as events.
pub fn script_outcome(events: &Events, outcome: crate::script::watcher::LoadOutcome) {
    use crate::script::watcher::LoadOutcome;
    let what = match outcome {
        LoadOutcome::Loaded { name, hash } => What::ScriptLoaded {
            script: name,
            version: hash,
        },
        LoadOutcome::Rejected { name, error } => What::ScriptFailed {
            script: name,
            error,
        },
        LoadOutcome::Removed { name } => What::ScriptRemoved { script: name },
        LoadOutcome::Unchanged { .. } | LoadOutcome::Ignored => return,
    };
    events.publish(|| what);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flip::{FlipEvent, Trigger};
    use wasmpbx_types::store::contract::record;

    fn drain(rx: &mut broadcast::Receiver<Arc<HostEvent>>) -> Vec<String> {
        let mut names = Vec::new();
        while let Ok(event) = rx.try_recv() {
            names.push(match &event.what {
                What::FlipEnded { result, .. } => format!("flip.ended {result:?}"),
                what => what.name().to_owned(),
            });
        }
        names
    }

    #[test]
    fn records_become_each_event_once() {
        let (events, mut tracker) = (Events::default(), Tracker::default());
        let mut rx = events.subscribe();
        let mut call = record(1, "0400");
        tracker.live_record(&events, &call);
        let flip = |result| {
            let at = call_time();
            FlipEvent::new(
                FlipKind::Pull,
                Trigger::PullCode,
                "desk",
                vec!["mobile".into()],
                at,
                None,
                result,
            )
        };
        call.flips.push(flip(FlipResult::Done));
        tracker.live_record(&events, &call);
        call.flips.push(flip(FlipResult::NoAnswer));
        tracker.ended_record(&events, &call);
        assert_eq!(
            drain(&mut rx),
            [
                "call.answered",
                "flip.ended Done",
                "flip.ended NoAnswer",
                "call.ended"
            ]
        );
        // An unanswered call only ends.
        let mut missed = record(2, "0411");
        missed.answered_at = None;
        tracker.ended_record(&events, &missed);
        assert_eq!(drain(&mut rx), ["call.ended"]);
        assert!(tracker.answered.is_empty(), "nothing kept for ended calls");
    }

    fn call_time() -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_790_000_000).unwrap()
    }

    #[test]
    fn a_refresh_is_not_a_new_registration() {
        let (events, mut tracker) = (Events::default(), Tracker::default());
        let mut rx = events.subscribe();
        tracker.restored([("bob".to_owned(), "sip:bob@10.0.0.2".to_owned())]);
        let binding = |user: &str, contact: &str| crate::registration::Binding {
            user_id: user.into(),
            device: "desk".into(),
            contact: contact.into(),
            instance: None,
            user_agent: None,
            transport: wasmpbx_sip::transaction::Transport::Udp,
            source: "10.0.0.1:5060".parse().unwrap(),
            expires_at: 0,
            call_id: "r@1".into(),
            cseq: 1,
        };
        for change in [
            BindingChange::Upsert(binding("alice", "sip:alice@10.0.0.1")),
            BindingChange::Upsert(binding("alice", "sip:alice@10.0.0.1")),
            BindingChange::Upsert(binding("bob", "sip:bob@10.0.0.2")),
            BindingChange::Remove {
                user_id: "alice".into(),
                contact: "sip:alice@10.0.0.1".into(),
            },
            BindingChange::Remove {
                user_id: "alice".into(),
                contact: "sip:alice@10.0.0.1".into(),
            },
        ] {
            tracker.bindings(&events, &change);
        }
        assert_eq!(drain(&mut rx), ["registration.up", "registration.down"]);
    }

    #[test]
    fn every_event_type_is_one_webhooks_may_name() {
        let s = String::new;
        let every = [
            What::CallStarted {
                session: s(),
                caller: s(),
                dialed: s(),
                location: None,
            },
            What::CallAnswered { session: s() },
            What::CallEnded {
                session: s(),
                disposition: crate::routing::Disposition::Answered,
                duration_ms: 0,
                end_reason: s(),
            },
            What::FlipRequested {
                session: s(),
                user: s(),
                device: s(),
                kind: FlipKind::Pull,
            },
            What::FlipEnded {
                session: s(),
                kind: FlipKind::Push,
                from_device: s(),
                targets: Vec::new(),
                result: FlipResult::Done,
            },
            What::RegistrationUp {
                user: s(),
                device: s(),
                contact: s(),
                transport: "udp",
            },
            What::RegistrationDown {
                user: s(),
                contact: s(),
            },
            What::ScriptLoaded {
                script: s(),
                version: s(),
            },
            What::ScriptFailed {
                script: s(),
                error: s(),
            },
            What::ScriptRemoved { script: s() },
            What::Fallback {
                session: s(),
                script: s(),
                cause: "trap",
            },
        ];
        let names: Vec<&str> = every.iter().map(What::name).collect();
        assert_eq!(names, crate::config::EVENT_TYPES);
        for what in every {
            let json = serde_json::to_value(&what).unwrap();
            assert_eq!(json["type"], what.name(), "the JSON type is the name");
        }
    }

    #[test]
    fn nothing_is_made_without_a_subscriber() {
        let events = Events::default();
        events.publish(|| unreachable!("no subscriber: the event is never built"));
        let mut rx = events.subscribe();
        events.publish(|| What::ScriptRemoved {
            script: "night".into(),
        });
        assert_eq!(rx.try_recv().unwrap().id, 1);
    }
}
