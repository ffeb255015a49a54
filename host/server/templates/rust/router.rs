//! `{{name}}` — a wasmpbx routing script. Every call to a location that runs it goes on
//! to the location's `return_number` var; if that number fails, the caller hears its
//! failure (busy stays busy).

use wasmpbx_guest::{Action, Call, ForwardFailure, Router, host};

/// How long the return number may ring.
const RING_TIMEOUT_MS: u32 = 60_000;

struct Script;

impl Router for Script {
    fn incoming(call: &Call) -> Vec<Action> {
        match host::non_empty_var("return_number") {
            Some(number) => {
                host::info(&format!("{{name}}: call from {} to {number}", call.caller));
                vec![Action::forward_to_number(number, RING_TIMEOUT_MS)]
            }
            None => {
                // No action: the host sends the call to the location's fallback number.
                host::error("{{name}}: the location has no return_number var");
                Vec::new()
            }
        }
    }

    fn forward_failed(_call: &Call, failure: &ForwardFailure) -> Vec<Action> {
        vec![Action::reject(failure.status, Some(&failure.reason))]
    }
}

wasmpbx_guest::export_router!(Script);
