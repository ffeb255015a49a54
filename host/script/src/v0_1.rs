//! Components built for WIT 0.1.0 go on running: their imports are answered by the
//! current implementations, and their calls, events and actions are converted to and
//! from the current package's types, which 0.1.0's are a subset of. A 0.1.0 component
//! never sees an event it does not know (`external`): the host answers for it with no
//! action, which leaves the call as it was.

use crate::bindings::v0_1::exports::wasmpbx::script::{flip_policy as old_flip, router as old};
use crate::bindings::v0_1::wasmpbx::script as old_host;
use crate::bindings::v0_2::exports::wasmpbx::script::{flip_policy as new_flip, router as new};
use crate::bindings::v0_2::wasmpbx::script as new_host;
use crate::engine::EventHost;

impl old_host::log::Host for EventHost {
    fn write(&mut self, level: old_host::log::Level, message: String) {
        use new_host::log::Level as New;
        use old_host::log::Level as Old;
        let level = match level {
            Old::Trace => New::Trace,
            Old::Debug => New::Debug,
            Old::Info => New::Info,
            Old::Warn => New::Warn,
            Old::Error => New::Error,
        };
        new_host::log::Host::write(self, level, message);
    }
}

impl old_host::clock::Host for EventHost {
    fn now(&mut self) -> old_host::clock::Instant {
        let now = new_host::clock::Host::now(self);
        old_host::clock::Instant {
            seconds: now.seconds,
            nanoseconds: now.nanoseconds,
        }
    }

    fn to_local(
        &mut self,
        at: old_host::clock::Instant,
        timezone: String,
    ) -> Result<old_host::clock::LocalTime, String> {
        use new_host::clock::Weekday as New;
        use old_host::clock::Weekday as Old;
        let at = new_host::clock::Instant {
            seconds: at.seconds,
            nanoseconds: at.nanoseconds,
        };
        let t = new_host::clock::Host::to_local(self, at, timezone)?;
        Ok(old_host::clock::LocalTime {
            year: t.year,
            month: t.month,
            day: t.day,
            hour: t.hour,
            minute: t.minute,
            second: t.second,
            weekday: match t.weekday {
                New::Monday => Old::Monday,
                New::Tuesday => Old::Tuesday,
                New::Wednesday => Old::Wednesday,
                New::Thursday => Old::Thursday,
                New::Friday => Old::Friday,
                New::Saturday => Old::Saturday,
                New::Sunday => Old::Sunday,
            },
            utc_offset_seconds: t.utc_offset_seconds,
        })
    }
}

impl old_host::config::Host for EventHost {
    fn location_var(&mut self, name: String) -> Option<String> {
        new_host::config::Host::location_var(self, name)
    }

    fn location_vars(&mut self) -> Vec<(String, String)> {
        new_host::config::Host::location_vars(self)
    }

    fn setting(&mut self, key: String) -> Option<String> {
        new_host::config::Host::setting(self, key)
    }
}

fn user_down(u: new_host::directory::User) -> old_host::directory::User {
    old_host::directory::User {
        id: u.id,
        extension: u.extension,
        role: u.role,
        has_pin: u.has_pin,
    }
}

fn device_down(d: new_host::directory::Device) -> old_host::directory::Device {
    old_host::directory::Device {
        name: d.name,
        user_id: d.user_id,
        user_agent: d.user_agent,
        transport: d.transport,
    }
}

impl old_host::directory::Host for EventHost {
    fn find_user(&mut self, id: String) -> Option<old_host::directory::User> {
        new_host::directory::Host::find_user(self, id).map(user_down)
    }

    fn find_user_by_extension(&mut self, extension: String) -> Option<old_host::directory::User> {
        new_host::directory::Host::find_user_by_extension(self, extension).map(user_down)
    }

    fn user_devices(&mut self, user_id: String) -> Vec<old_host::directory::Device> {
        new_host::directory::Host::user_devices(self, user_id)
            .into_iter()
            .map(device_down)
            .collect()
    }
}

impl old_host::kv::Host for EventHost {
    fn get(&mut self, key: String) -> Option<String> {
        new_host::kv::Host::get(self, key)
    }

    fn set(&mut self, key: String, value: String) -> Result<(), String> {
        new_host::kv::Host::set(self, key, value)
    }

    fn delete(&mut self, key: String) -> Result<(), String> {
        new_host::kv::Host::delete(self, key)
    }
}

pub(crate) fn call_down(call: new::CallContext) -> old::CallContext {
    old::CallContext {
        call_id: call.call_id,
        location: call.location,
        caller: call.caller,
        caller_name: call.caller_name,
        dialed: call.dialed,
        origin: match call.origin {
            new::Origin::Trunk(name) => old::Origin::Trunk(name),
            new::Origin::Device(d) => old::Origin::Device(old::DeviceOrigin {
                user_id: d.user_id,
                device: d.device,
            }),
        },
        started_at: old_host::clock::Instant {
            seconds: call.started_at.seconds,
            nanoseconds: call.started_at.nanoseconds,
        },
        tags: call.tags,
    }
}

fn target_down(target: new::ForwardTarget) -> old::ForwardTarget {
    match target {
        new::ForwardTarget::Number(n) => old::ForwardTarget::Number(n),
        new::ForwardTarget::User(u) => old::ForwardTarget::User(u),
        new::ForwardTarget::Fallback => old::ForwardTarget::Fallback,
    }
}

/// The event as 0.1.0 knows it; none for an event it does not know.
pub(crate) fn event_down(event: new::Event) -> Option<old::Event> {
    Some(match event {
        new::Event::Incoming => old::Event::Incoming,
        new::Event::DigitsGathered(g) => old::Event::DigitsGathered(old::Gathered {
            digits: g.digits,
            ended_by: match g.ended_by {
                new::GatherEnd::MaxDigits => old::GatherEnd::MaxDigits,
                new::GatherEnd::Terminator => old::GatherEnd::Terminator,
                new::GatherEnd::Timeout => old::GatherEnd::Timeout,
            },
        }),
        new::Event::ForwardFailed(f) => old::Event::ForwardFailed(old::ForwardFailure {
            target: target_down(f.target),
            status: f.status,
            reason: f.reason,
        }),
        new::Event::CallEnded(e) => old::Event::CallEnded(old::CallEnded {
            disposition: match e.disposition {
                new::Disposition::Answered => old::Disposition::Answered,
                new::Disposition::Abandoned => old::Disposition::Abandoned,
                new::Disposition::Failed => old::Disposition::Failed,
            },
            duration_ms: e.duration_ms,
        }),
        new::Event::External(_) => return None,
    })
}

pub(crate) fn action_up(action: old::Action) -> new::Action {
    match action {
        old::Action::Forward(f) => new::Action::Forward(new::Forward {
            target: match f.target {
                old::ForwardTarget::Number(n) => new::ForwardTarget::Number(n),
                old::ForwardTarget::User(u) => new::ForwardTarget::User(u),
                old::ForwardTarget::Fallback => new::ForwardTarget::Fallback,
            },
            trunk: f.trunk,
            ring_timeout_ms: f.ring_timeout_ms,
            caller_id: f.caller_id,
        }),
        old::Action::Answer => new::Action::Answer,
        old::Action::Play(p) => new::Action::Play(new::Play { prompt: p.prompt }),
        old::Action::Gather(g) => new::Action::Gather(new::Gather {
            max_digits: g.max_digits,
            timeout_ms: g.timeout_ms,
            inter_digit_timeout_ms: g.inter_digit_timeout_ms,
            terminator: g.terminator,
            prompt: g.prompt,
            say: None,
        }),
        old::Action::Recording(on) => new::Action::Recording(on),
        old::Action::SetTag(tag) => new::Action::SetTag(tag),
        old::Action::Reject(r) => new::Action::Reject(new::Reject {
            status: r.status,
            reason: r.reason,
        }),
        old::Action::Hangup => new::Action::Hangup,
    }
}

pub(crate) fn flip_request_down(r: new_flip::FlipRequest) -> old_flip::FlipRequest {
    let call = r.call;
    old_flip::FlipRequest {
        user_id: r.user_id,
        requesting_device: r.requesting_device,
        kind: match r.kind {
            new_flip::FlipKind::Push => old_flip::FlipKind::Push,
            new_flip::FlipKind::Pull => old_flip::FlipKind::Pull,
        },
        trigger: match r.trigger {
            new_flip::Trigger::PullCode => old_flip::Trigger::PullCode,
            new_flip::Trigger::PushCode => old_flip::Trigger::PushCode,
            new_flip::Trigger::Refer => old_flip::Trigger::Refer,
            new_flip::Trigger::Api => old_flip::Trigger::Api,
            new_flip::Trigger::Button => old_flip::Trigger::Button,
        },
        call: old_flip::CallFacts {
            call_id: call.call_id,
            remote_party: call.remote_party,
            direction: match call.direction {
                new_flip::Direction::Inbound => old_flip::Direction::Inbound,
                new_flip::Direction::Outbound => old_flip::Direction::Outbound,
                new_flip::Direction::Internal => old_flip::Direction::Internal,
            },
            duration_ms: call.duration_ms,
            emergency: call.emergency,
            location: call.location,
            current_device: call.current_device,
        },
        candidates: r.candidates.into_iter().map(device_down).collect(),
    }
}

pub(crate) fn decision_up(decision: old_flip::Decision) -> new_flip::Decision {
    let allow = |a: old_flip::Allow| new_flip::Allow {
        targets: a.targets,
        ring_timeout_ms: a.ring_timeout_ms,
    };
    match decision {
        old_flip::Decision::Allow(a) => new_flip::Decision::Allow(allow(a)),
        old_flip::Decision::Deny(reason) => new_flip::Decision::Deny(reason),
        old_flip::Decision::RequirePin(a) => new_flip::Decision::RequirePin(allow(a)),
    }
}
