//! `listen` — listen mode: every call goes straight on to the location's
//! `return_number`, while the host observes (CDR, digits). Location vars:
//! `return_number`; optional `record` = `true` records every call.

use wasmpbx_guest::{Action, Call, ForwardFailure, Router, host};

/// How long the return number may ring before the caller hears the failure.
const RING_TIMEOUT_MS: u32 = 120_000;

struct Listen;

impl Router for Listen {
    fn incoming(_call: &Call) -> Vec<Action> {
        match host::non_empty_var("return_number") {
            Some(number) => {
                let mut actions = vec![Action::tag("mode", "listen")];
                if host::var("record").as_deref() == Some("true") {
                    actions.push(Action::Recording(true));
                }
                actions.push(Action::forward_to_number(number, RING_TIMEOUT_MS));
                actions
            }
            None => {
                // No action: the host falls back to the location's fallback number.
                host::error("listen: the location has no return_number var");
                Vec::new()
            }
        }
    }

    /// Transparent: the caller gets the return side's own failure (busy stays busy).
    fn forward_failed(_call: &Call, failure: &ForwardFailure) -> Vec<Action> {
        vec![Action::reject(failure.status, Some(&failure.reason))]
    }
}

wasmpbx_guest::export_router!(Listen);
