//! A script built for the frozen WIT 0.1.0 (`host/script/wit/v0.1.0`): it routes like
//! `listen` (tagged so a test can tell it ran), reads the clock through a timezone, and
//! allows every flip.

wit_bindgen::generate!({
    world: "full-script",
    path: "../../../host/script/wit/v0.1.0",
    generate_all,
});

use exports::wasmpbx::script::flip_policy::{self, Allow, Decision, FlipRequest};
use exports::wasmpbx::script::router::{self, Action, CallContext, Event, Forward, ForwardTarget};
use wasmpbx::script::{clock, config, log};

struct Script;

impl router::Guest for Script {
    fn handle(_call: CallContext, event: Event) -> Vec<Action> {
        match event {
            Event::Incoming => {
                let hour = clock::to_local(clock::now(), "Australia/Sydney")
                    .map(|t| t.hour.to_string())
                    .unwrap_or_default();
                log::write(log::Level::Info, "built for 0.1.0");
                let target = match config::location_var("return_number") {
                    Some(number) => ForwardTarget::Number(number),
                    None => ForwardTarget::Fallback,
                };
                vec![
                    Action::SetTag(("built_for".into(), "0.1.0".into())),
                    Action::SetTag(("sydney_hour".into(), hour)),
                    Action::Forward(Forward {
                        target,
                        trunk: None,
                        ring_timeout_ms: 30_000,
                        caller_id: None,
                    }),
                ]
            }
            _ => Vec::new(),
        }
    }
}

impl flip_policy::Guest for Script {
    fn decide(_request: FlipRequest) -> Decision {
        Decision::Allow(Allow {
            targets: Vec::new(),
            ring_timeout_ms: 0,
        })
    }
}

export!(Script);
