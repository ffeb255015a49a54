//! `{{name}}` — a wasmpbx flip policy: a user may move a live call to any of their
//! other registered devices; emergency calls stay where they are.

use wasmpbx_guest::{Decision, FlipPolicy, FlipRequest};

struct Policy;

impl FlipPolicy for Policy {
    fn decide(request: &FlipRequest) -> Decision {
        if request.call.emergency {
            return Decision::deny("emergency calls cannot be flipped");
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
        Decision::allow(targets)
    }
}

wasmpbx_guest::export_flip_policy!(Policy);
