//! `flip-policy` — who may move a live call to which of their devices.
//!
//! - Only the user's own devices are candidates (the host enforces this too).
//! - Emergency calls are never flipped by this policy.
//! - Users whose `role` is `kiosk` may not flip.
//! - If a target device's name matches the `[flip] pin_devices` glob (shared desk
//!   phones, e.g. `"lobby-*"`) and the user has a PIN, the PIN is required.

use wasmpbx_guest::glob::matches_any;
use wasmpbx_guest::{Allow, Decision, FlipPolicy, FlipRequest, host};

struct Policy;

impl FlipPolicy for Policy {
    fn decide(request: &FlipRequest) -> Decision {
        let Some(user) = host::user(&request.user_id) else {
            return Decision::deny(format!("unknown user {}", request.user_id));
        };
        if request.call.emergency {
            return Decision::deny("emergency calls cannot be flipped");
        }
        if user.role == "kiosk" {
            return Decision::deny("kiosk users may not flip calls");
        }
        let targets: Vec<String> = request
            .candidates
            .iter()
            .filter(|d| d.user_id == request.user_id && d.name != request.call.current_device)
            .map(|d| d.name.clone())
            .collect();
        if targets.is_empty() {
            return Decision::deny("no other device of the user is registered");
        }
        let pin_devices = host::setting("flip.pin_devices").unwrap_or_default();
        let needs_pin = user.has_pin && targets.iter().any(|t| matches_any(&pin_devices, t));
        let allow = Allow {
            targets,
            ring_timeout_ms: 0,
        };
        if needs_pin {
            Decision::RequirePin(allow)
        } else {
            Decision::Allow(allow)
        }
    }
}

wasmpbx_guest::export_flip_policy!(Policy);
