//! Call flip policy: the request the host puts to the flip-policy script and the
//! decision it takes back, in the host's own types.

use serde::Serialize;

use crate::directory::DeviceInfo;

/// The numbers that are always emergency calls, whatever the config adds.
pub const EMERGENCY_NUMBERS: [&str; 4] = ["112", "911", "999", "000"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlipKind {
    Push,
    Pull,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    PullCode,
    PushCode,
    Refer,
    Api,
    Button,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    Inbound,
    Outbound,
    Internal,
}

/// Facts about the live call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallFacts {
    pub call_id: String,
    pub remote_party: String,
    pub direction: Direction,
    pub duration_ms: u64,
    pub emergency: bool,
    pub location: Option<String>,
    pub current_device: String,
}

/// One flip request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlipRequest {
    pub user_id: String,
    pub requesting_device: String,
    pub kind: FlipKind,
    pub trigger: Trigger,
    pub call: CallFacts,
    pub candidates: Vec<DeviceInfo>,
}

/// Permission to flip to some devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Allow {
    /// Device names; empty = all candidates.
    pub targets: Vec<String>,
    /// 0 = the host's default.
    pub ring_timeout_ms: u32,
}

/// The policy's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "decision")]
pub enum FlipDecision {
    Allow(Allow),
    Deny { reason: String },
    RequirePin(Allow),
}

impl FlipDecision {
    /// Check the decision's own fields; the message names the field at fault.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            FlipDecision::Allow(allow) | FlipDecision::RequirePin(allow) => {
                let t = allow.ring_timeout_ms;
                if t != 0 && !(1_000..=120_000).contains(&t) {
                    return Err(format!(
                        "allow: ring-timeout-ms {t} is out of range (0, or 1000 to 120000)"
                    ));
                }
                if allow.targets.iter().any(String::is_empty) {
                    return Err("allow: a target device name is empty".into());
                }
                Ok(())
            }
            FlipDecision::Deny { .. } => Ok(()),
        }
    }
}

/// How a flip request ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "result", content = "reason")]
pub enum FlipResult {
    /// The call moved to the target device.
    Done,
    /// Refused by the host's rules or the policy script (the reason is logged and told
    /// to the device).
    Denied(String),
    /// No target answered in time.
    NoAnswer,
    /// The call ended while the flip was pending.
    Cancelled,
}

/// One flip request of a session, as its call record lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlipEvent {
    pub kind: FlipKind,
    pub trigger: Trigger,
    /// The device the call was on.
    pub from_device: String,
    /// The device(s) asked to take it.
    pub targets: Vec<String>,
    pub requested_at: jiff::Timestamp,
    /// When the new device joined (a pull: when the host answered it).
    pub answered_at: Option<jiff::Timestamp>,
    /// When the old device was released.
    pub completed_at: Option<jiff::Timestamp>,
    #[serde(flatten)]
    pub result: FlipResult,
    /// The session's recording, which goes on across the flip.
    pub recording: Option<String>,
}

impl FlipEvent {
    /// A request's entry; its outcome is `result` (answered and completed times are
    /// filled in as they happen).
    pub fn new(
        kind: FlipKind,
        trigger: Trigger,
        from_device: &str,
        targets: Vec<String>,
        requested_at: jiff::Timestamp,
        recording: Option<String>,
        result: FlipResult,
    ) -> Self {
        Self {
            kind,
            trigger,
            from_device: from_device.to_owned(),
            targets,
            requested_at,
            answered_at: None,
            completed_at: None,
            result,
            recording,
        }
    }
}

/// Whether `dialed` is an emergency number: the fixed list or one configured.
/// Which node holds a user's live call when another node sharing the store does
/// (`[cluster]`): a pull that lands on this node is redirected there.
pub trait CallOwners: Send + Sync {
    /// The SIP URI (`sip:10.0.0.11:5060`) of the node holding `user_id`'s connected call,
    /// if another node does.
    fn owner_of(&self, user_id: &str) -> Option<String>;
}

/// A node on its own: no other node holds a call.
pub struct NoOtherNodes;

impl CallOwners for NoOtherNodes {
    fn owner_of(&self, _user_id: &str) -> Option<String> {
        None
    }
}

pub fn is_emergency(dialed: &str, configured: &[String]) -> bool {
    EMERGENCY_NUMBERS.contains(&dialed) || configured.iter().any(|n| n == dialed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emergency_numbers_fixed_and_configured() {
        assert!(is_emergency("911", &[]));
        assert!(is_emergency("000", &[]));
        assert!(!is_emergency("9110", &[]));
        assert!(is_emergency("1122", &["1122".to_string()]));
    }

    #[test]
    fn decisions_with_nonsense_timeouts_are_refused() {
        let allow = |t| {
            FlipDecision::Allow(Allow {
                targets: vec![],
                ring_timeout_ms: t,
            })
        };
        assert!(allow(0).validate().is_ok());
        assert!(allow(20_000).validate().is_ok());
        assert!(
            allow(5)
                .validate()
                .unwrap_err()
                .contains("ring-timeout-ms 5")
        );
    }
}
