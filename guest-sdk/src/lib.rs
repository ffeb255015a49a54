//! # wasmpbx-guest — write wasmpbx scripts in Rust
//!
//! A wasmpbx script is a WebAssembly component that routes calls, decides flips, or
//! both. With this crate you implement a trait and call one macro; the component
//! plumbing stays out of sight.
//!
//! ```ignore
//! use wasmpbx_guest::{Action, Call, Router, host};
//!
//! struct Listen;
//!
//! impl Router for Listen {
//!     fn incoming(_call: &Call) -> Vec<Action> {
//!         match host::var("return_number") {
//!             Some(number) => vec![Action::forward_to_number(number, 60_000)],
//!             None => vec![], // no action: the host falls back to the fallback number
//!         }
//!     }
//! }
//!
//! wasmpbx_guest::export_router!(Listen);
//! ```
//!
//! Build with `cargo build --target wasm32-wasip2 --release` (crate type `cdylib`), check
//! with `wasmpbx script check`, try with `wasmpbx script simulate`, and drop the `.wasm`
//! into the scripts folder.
//!
//! ## The model
//! The host runs each event in a fresh instance: keep no state in statics. What must
//! survive between the events of one call goes in tags ([`Action::tag`], read back with
//! [`CallContextExt::tag`]); what must survive longer goes in [`host::kv`].
//!
//! ## Modules
//! - [`host`]: the host's imports — log, clock, location vars, users and devices, kv.
//! - [`schedule`]: opening hours, holidays and the night-mode override.
//! - [`glob`]: `*`/`?` patterns on device names.

#[doc(hidden)]
#[path = "bindings.rs"]
pub mod __bindings;

pub mod glob;
pub mod host;
pub mod schedule;

use __bindings::flip::exports::wasmpbx::script::flip_policy as flip_wit;
use __bindings::routing::exports::wasmpbx::script::router as router_wit;

pub use __bindings::host::wasmpbx::script::clock::{Instant, LocalTime, Weekday};
pub use __bindings::host::wasmpbx::script::directory::{Device, User};
pub use flip_wit::{Allow, CallFacts, Decision, Direction, FlipKind, FlipRequest, Trigger};
pub use router_wit::{
    Action, CallContext as Call, CallEnded, DeviceOrigin, Disposition, EngineAudio, Event,
    ExternalEvent, Forward, ForwardFailure, ForwardTarget, Gather, GatherEnd, Gathered,
    MediaStream, Origin, Play, Reject, Say, StreamTracks,
};

/// A routing script: what to do at each event of a call. Only `incoming` is required;
/// the defaults hang up after a gather or a failed forward and do nothing at the end.
pub trait Router {
    /// A new call arrived. Returning no action makes the host fall back to the
    /// location's fallback number.
    fn incoming(call: &Call) -> Vec<Action>;

    /// A `gather` finished.
    fn digits_gathered(_call: &Call, _gathered: &Gathered) -> Vec<Action> {
        vec![Action::Hangup]
    }

    /// A `forward` did not connect.
    fn forward_failed(_call: &Call, _failure: &ForwardFailure) -> Vec<Action> {
        vec![Action::Hangup]
    }

    /// The call ended; only `set-tag` actions are used.
    fn call_ended(_call: &Call, _ended: &CallEnded) -> Vec<Action> {
        Vec::new()
    }

    /// An outside system's word on the call, e.g. an engine's `intent` (already a tag on
    /// the call). The default does nothing: the call goes on as it was.
    fn external(_call: &Call, _event: &ExternalEvent) -> Vec<Action> {
        Vec::new()
    }
}

/// A flip policy: may this flip happen, to which devices?
pub trait FlipPolicy {
    fn decide(request: &FlipRequest) -> Decision;
}

#[doc(hidden)]
pub fn __dispatch_router<R: Router>(call: Call, event: Event) -> Vec<Action> {
    match event {
        Event::Incoming => R::incoming(&call),
        Event::DigitsGathered(gathered) => R::digits_gathered(&call, &gathered),
        Event::ForwardFailed(failure) => R::forward_failed(&call, &failure),
        Event::CallEnded(ended) => R::call_ended(&call, &ended),
        Event::External(event) => R::external(&call, &event),
    }
}

/// Export a [`Router`] implementation as this component's `router`.
#[macro_export]
macro_rules! export_router {
    ($router:ty) => {
        const _: () = {
            struct __WasmpbxRouter;
            impl $crate::__bindings::routing::exports::wasmpbx::script::router::Guest
                for __WasmpbxRouter
            {
                fn handle(
                    call: $crate::Call,
                    event: $crate::Event,
                ) -> ::std::vec::Vec<$crate::Action> {
                    $crate::__dispatch_router::<$router>(call, event)
                }
            }
            $crate::__bindings::routing::__export_routing_script!(
                __WasmpbxRouter with_types_in $crate::__bindings::routing
            );
        };
    };
}

/// Export a [`FlipPolicy`] implementation as this component's `flip-policy`.
#[macro_export]
macro_rules! export_flip_policy {
    ($policy:ty) => {
        const _: () = {
            struct __WasmpbxFlipPolicy;
            impl $crate::__bindings::flip::exports::wasmpbx::script::flip_policy::Guest
                for __WasmpbxFlipPolicy
            {
                fn decide(request: $crate::FlipRequest) -> $crate::Decision {
                    <$policy as $crate::FlipPolicy>::decide(&request)
                }
            }
            $crate::__bindings::flip::__export_flip_policy_script!(
                __WasmpbxFlipPolicy with_types_in $crate::__bindings::flip
            );
        };
    };
}

/// Tags on a call.
pub trait CallContextExt {
    /// The value of a tag this script set earlier on the call.
    fn tag(&self, name: &str) -> Option<&str>;
}

impl CallContextExt for Call {
    fn tag(&self, name: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Action {
    /// Forward to a number through the location's trunk.
    pub fn forward_to_number(number: impl Into<String>, ring_timeout_ms: u32) -> Self {
        Action::Forward(Forward {
            target: ForwardTarget::Number(number.into()),
            trunk: None,
            ring_timeout_ms,
            caller_id: None,
        })
    }

    /// Ring all registered devices of a user.
    pub fn forward_to_user(user_id: impl Into<String>, ring_timeout_ms: u32) -> Self {
        Action::Forward(Forward {
            target: ForwardTarget::User(user_id.into()),
            trunk: None,
            ring_timeout_ms,
            caller_id: None,
        })
    }

    /// Forward to the location's fallback number.
    pub fn forward_to_fallback(ring_timeout_ms: u32) -> Self {
        Action::Forward(Forward {
            target: ForwardTarget::Fallback,
            trunk: None,
            ring_timeout_ms,
            caller_id: None,
        })
    }

    /// Play a prompt by name.
    pub fn play(prompt: impl Into<String>) -> Self {
        Action::Play(Play {
            prompt: prompt.into(),
        })
    }

    /// Speak `text` with the host's default voice.
    pub fn say(text: impl Into<String>) -> Self {
        Action::Say(Say {
            text: text.into(),
            voice: None,
        })
    }

    /// Gather up to `max_digits` digits, waiting `timeout_ms` for each, while `prompt`
    /// plays (interrupted by the first digit). For spoken text, a terminator key or a
    /// different inter-digit timeout, build the [`Gather`] record.
    pub fn gather(max_digits: u8, timeout_ms: u32, prompt: Option<&str>) -> Self {
        Action::Gather(Gather {
            max_digits,
            timeout_ms,
            inter_digit_timeout_ms: None,
            terminator: None,
            prompt: prompt.map(Into::into),
            say: None,
        })
    }

    /// Stream both tracks of the call's audio to a speech or AI engine's WebSocket (one
    /// way: what the engine sends back is not played).
    pub fn stream_to(url: impl Into<String>) -> Self {
        Action::MediaStream(MediaStream {
            url: url.into(),
            tracks: StreamTracks::Both,
            parameters: Vec::new(),
            engine_audio: EngineAudio::Ignore,
        })
    }

    /// Remember a value on the call.
    pub fn tag(name: impl Into<String>, value: impl Into<String>) -> Self {
        Action::SetTag((name.into(), value.into()))
    }

    /// Refuse the call with a SIP status.
    pub fn reject(status: u16, reason: Option<&str>) -> Self {
        Action::Reject(Reject {
            status,
            reason: reason.map(Into::into),
        })
    }
}

impl Decision {
    /// Allow the flip to these devices (empty = all candidates), with the host's ring
    /// timeout.
    pub fn allow(targets: Vec<String>) -> Self {
        Decision::Allow(Allow {
            targets,
            ring_timeout_ms: 0,
        })
    }

    /// Refuse the flip.
    pub fn deny(reason: impl Into<String>) -> Self {
        Decision::Deny(reason.into())
    }
}
