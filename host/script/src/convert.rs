//! Between the host's own types and the WIT bindings. Guest values are untrusted: a
//! value that cannot be represented in the host's types is an error naming the field.

use super::bindings::v0_2::exports::wasmpbx::script::flip_policy as wit_flip;
use super::bindings::v0_2::exports::wasmpbx::script::router as wit;
use super::bindings::v0_2::wasmpbx::script::clock::Instant;
use super::bindings::v0_2::wasmpbx::script::directory::Device;
use crate::directory::DeviceInfo;
use crate::flip::{Allow, Direction, FlipDecision, FlipKind, FlipRequest, Trigger};
use crate::media::{EngineAudio, Tracks};
use crate::routing::{
    Action, CallInfo, Disposition, Event, ForwardTarget, GatherEnd, MediaStream, Origin, Speech,
};

pub(crate) fn instant(at: jiff::Timestamp) -> Instant {
    Instant {
        seconds: at.as_second(),
        nanoseconds: at.subsec_nanosecond().max(0) as u32,
    }
}

pub(crate) fn call_to_guest(call: &CallInfo) -> wit::CallContext {
    wit::CallContext {
        call_id: call.call_id.clone(),
        location: call.location.clone(),
        caller: call.caller.clone(),
        caller_name: call.caller_name.clone(),
        dialed: call.dialed.clone(),
        origin: match &call.origin {
            Origin::Trunk { name } => wit::Origin::Trunk(name.clone()),
            Origin::Device { user_id, device } => wit::Origin::Device(wit::DeviceOrigin {
                user_id: user_id.clone(),
                device: device.clone(),
            }),
        },
        started_at: instant(call.started_at),
        tags: call.tags.clone(),
    }
}

fn target_to_guest(target: &ForwardTarget) -> wit::ForwardTarget {
    match target {
        ForwardTarget::Number(n) => wit::ForwardTarget::Number(n.clone()),
        ForwardTarget::User(u) => wit::ForwardTarget::User(u.clone()),
        ForwardTarget::Fallback => wit::ForwardTarget::Fallback,
    }
}

pub(crate) fn event_to_guest(event: &Event) -> wit::Event {
    match event {
        Event::Incoming => wit::Event::Incoming,
        Event::DigitsGathered { digits, ended_by } => wit::Event::DigitsGathered(wit::Gathered {
            digits: digits.clone(),
            ended_by: match ended_by {
                GatherEnd::MaxDigits => wit::GatherEnd::MaxDigits,
                GatherEnd::Terminator => wit::GatherEnd::Terminator,
                GatherEnd::Timeout => wit::GatherEnd::Timeout,
            },
        }),
        Event::ForwardFailed {
            target,
            status,
            reason,
        } => wit::Event::ForwardFailed(wit::ForwardFailure {
            target: target_to_guest(target),
            status: *status,
            reason: reason.clone(),
        }),
        Event::CallEnded {
            disposition,
            duration_ms,
        } => wit::Event::CallEnded(wit::CallEnded {
            disposition: match disposition {
                Disposition::Answered => wit::Disposition::Answered,
                Disposition::Abandoned => wit::Disposition::Abandoned,
                Disposition::Failed => wit::Disposition::Failed,
            },
            duration_ms: *duration_ms,
        }),
        Event::External {
            name,
            value,
            confidence,
        } => wit::Event::External(wit::ExternalEvent {
            name: name.clone(),
            value: value.clone(),
            confidence: *confidence,
        }),
    }
}

fn speech(say: wit::Say) -> Speech {
    Speech::new(say.text, say.voice)
}

pub(crate) fn action_from_guest(action: wit::Action) -> Result<Action, String> {
    Ok(match action {
        wit::Action::Forward(f) => Action::Forward {
            target: match f.target {
                wit::ForwardTarget::Number(n) => ForwardTarget::Number(n),
                wit::ForwardTarget::User(u) => ForwardTarget::User(u),
                wit::ForwardTarget::Fallback => ForwardTarget::Fallback,
            },
            trunk: f.trunk,
            ring_timeout_ms: f.ring_timeout_ms,
            caller_id: f.caller_id,
        },
        wit::Action::Answer => Action::Answer,
        wit::Action::Play(p) => Action::Play { prompt: p.prompt },
        wit::Action::Say(say) => Action::Say(speech(say)),
        wit::Action::MediaStream(m) => Action::MediaStream(MediaStream {
            url: m.url,
            tracks: match m.tracks {
                wit::StreamTracks::Inbound => Tracks::Inbound,
                wit::StreamTracks::Outbound => Tracks::Outbound,
                wit::StreamTracks::Both => Tracks::Both,
            },
            parameters: m.parameters,
            engine_audio: match m.engine_audio {
                wit::EngineAudio::Ignore => EngineAudio::Ignore,
                wit::EngineAudio::Mix => EngineAudio::Mix,
                wit::EngineAudio::Replace => EngineAudio::Replace,
            },
        }),
        wit::Action::Gather(g) => Action::Gather {
            max_digits: g.max_digits,
            timeout_ms: g.timeout_ms,
            inter_digit_timeout_ms: g.inter_digit_timeout_ms.unwrap_or(g.timeout_ms),
            terminator: match g.terminator.as_deref() {
                None | Some("") => None,
                Some(t) => {
                    let mut chars = t.chars();
                    match (chars.next(), chars.next()) {
                        (Some(c), None)
                            if c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D') =>
                        {
                            Some(c)
                        }
                        _ => return Err(format!("gather: terminator {t:?} is not one DTMF key")),
                    }
                }
            },
            prompt: g.prompt,
            say: g.say.map(speech),
        },
        wit::Action::Recording(on) => Action::Recording { on },
        wit::Action::SetTag((name, value)) => Action::SetTag { name, value },
        wit::Action::Reject(r) => Action::Reject {
            status: r.status,
            reason: r.reason,
        },
        wit::Action::Hangup => Action::Hangup,
    })
}

fn device_to_guest(device: &DeviceInfo) -> Device {
    Device {
        name: device.name.clone(),
        user_id: device.user_id.clone(),
        user_agent: device.user_agent.clone(),
        transport: device.transport.clone(),
    }
}

pub(crate) fn devices_to_guest(devices: &[DeviceInfo]) -> Vec<Device> {
    devices.iter().map(device_to_guest).collect()
}

pub(crate) fn flip_request_to_guest(request: &FlipRequest) -> wit_flip::FlipRequest {
    let call = &request.call;
    wit_flip::FlipRequest {
        user_id: request.user_id.clone(),
        requesting_device: request.requesting_device.clone(),
        kind: match request.kind {
            FlipKind::Push => wit_flip::FlipKind::Push,
            FlipKind::Pull => wit_flip::FlipKind::Pull,
        },
        trigger: match request.trigger {
            Trigger::PullCode => wit_flip::Trigger::PullCode,
            Trigger::PushCode => wit_flip::Trigger::PushCode,
            Trigger::Refer => wit_flip::Trigger::Refer,
            Trigger::Api => wit_flip::Trigger::Api,
            Trigger::Button => wit_flip::Trigger::Button,
        },
        call: wit_flip::CallFacts {
            call_id: call.call_id.clone(),
            remote_party: call.remote_party.clone(),
            direction: match call.direction {
                Direction::Inbound => wit_flip::Direction::Inbound,
                Direction::Outbound => wit_flip::Direction::Outbound,
                Direction::Internal => wit_flip::Direction::Internal,
            },
            duration_ms: call.duration_ms,
            emergency: call.emergency,
            location: call.location.clone(),
            current_device: call.current_device.clone(),
        },
        candidates: devices_to_guest(&request.candidates),
    }
}

pub(crate) fn decision_from_guest(decision: wit_flip::Decision) -> FlipDecision {
    let allow = |a: wit_flip::Allow| Allow {
        targets: a.targets,
        ring_timeout_ms: a.ring_timeout_ms,
    };
    match decision {
        wit_flip::Decision::Allow(a) => FlipDecision::Allow(allow(a)),
        wit_flip::Decision::Deny(reason) => FlipDecision::Deny { reason },
        wit_flip::Decision::RequirePin(a) => FlipDecision::RequirePin(allow(a)),
    }
}
