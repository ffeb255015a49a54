//! A new INVITE: a call from a trunk to a location, from a user's device to another
//! user or out through a trunk, a pull, or a refusal.

use std::collections::VecDeque;

use wasmpbx_types::actions::MediaStream;
use wasmpbx_types::ids::SessionId;
use wasmpbx_types::record::{CallRecord, RecordState};

use crate::media::{EngineAudio, Side, Tracks};
use crate::pbx::PbxOutput;
use crate::routing::{CallInfo, Disposition, Event, ForwardTarget, Origin};
use crate::sdp;
use crate::sip::message::{self, Request, SipMessage};
use crate::sip::transaction::{Peer, ServerTxnId};

use super::requests::{Dialog, addr_spec, route_set_of_request, with_tag};
use super::scripted::{ask_script, stream_request};
use super::session::{Phase, Session};
use super::{Calls, Ctx, DEVICE_RING_TIMEOUT_MS, engaged, pull, srtp};

impl Calls {
    /// A new INVITE (no To tag).
    pub fn handle_invite(
        &mut self,
        ctx: &mut Ctx<'_>,
        txn: ServerTxnId,
        request: Request,
        source: Peer,
    ) {
        let message = SipMessage::Request(request.clone());
        let uri_user = request.uri.auth.as_ref().map(|a| a.user.clone());
        let trunk = ctx.trunks.trunk_of_source(source.addr.ip()).cloned();
        // A call on the trunk's registration is addressed to the Contact we registered;
        // the number dialled is in To.
        let on_registration = trunk
            .as_ref()
            .is_some_and(|t| uri_user.is_some() && uri_user.as_deref() == t.contact_user());
        let dialed = uri_user
            .filter(|_| !on_registration)
            .or_else(|| message::to_user(&message))
            .unwrap_or_default();
        let caller = message::from_user(&message).unwrap_or_default();
        let reject = |ctx: &mut Ctx<'_>, code: u16, reason: Option<&str>| {
            let mut response = message::response_to(&request, code, Some(&ctx.token()));
            if let Some(reason) = reason {
                response = message::with_reason(response, reason);
            }
            ctx.layer.send_response(ctx.ambient.now, txn, response);
        };
        // Carriers write numbers their own way (`61290000001`, `0290000001`): a flip
        // number matches in any of them.
        let location = ctx
            .config
            .location_by_flip_number(&dialed)
            .or_else(|| {
                let e164 = trunk.as_ref()?.plus_e164(&dialed);
                ctx.config.location_by_flip_number(&e164)
            })
            .cloned();
        // A device behind the edge, which authenticated it; never a call to a flip
        // number (those are the carrier's, whatever they assert).
        let asserted = location
            .is_none()
            .then(|| ctx.registrar.asserted_by_edge(&request, source))
            .flatten();
        let (origin, location) = match (trunk, location, &asserted) {
            (_, _, Some(device)) => (
                Origin::Device {
                    user_id: device.user_id.clone(),
                    device: device.name.clone(),
                },
                None,
            ),
            (Some(t), Some(l), None) => (
                Origin::Trunk {
                    name: t.name.clone(),
                },
                Some(l),
            ),
            (None, Some(_), None) => {
                tracing::warn!(from = %source.addr, dialed, "INVITE to a flip number from outside the trunks refused");
                return reject(ctx, 403, Some("Flip Numbers Take Trunk Calls Only"));
            }
            (Some(_), None, None) => return reject(ctx, 404, None),
            (None, None, None) => {
                // A device: it must be registered-grade authenticated (407 challenge).
                let a = ctx.ambient;
                match ctx
                    .registrar
                    .authenticate(a.wall_secs(), ctx.entropy, &request, source)
                {
                    Ok(user_id) => {
                        let device = ctx
                            .registrar
                            .bindings(&user_id)
                            .iter()
                            .find(|b| b.source == source.addr)
                            .map_or_else(|| "unregistered".to_owned(), |b| b.device.clone());
                        (Origin::Device { user_id, device }, None)
                    }
                    Err(response) => return ctx.layer.send_response(a.now, txn, response),
                }
            }
        };
        if let Origin::Device { user_id, device } = &origin
            && dialed == ctx.config.flip.pull_code
        {
            let (user_id, device) = (user_id.clone(), device.clone());
            let puller = pull::Puller {
                user_id,
                device,
                behind_edge: asserted,
            };
            return self.start_pull(ctx, txn, request, source, puller);
        }
        // Draining: a flip of a live call (the pull above) goes on, a new call does not.
        if let Some(retry_after) = ctx.draining {
            tracing::info!(dialed, "INVITE refused: draining");
            let refusal = message::response_to(&request, 503, Some(&ctx.token()));
            let refusal = message::retry_after(refusal, retry_after);
            return ctx.layer.send_response(ctx.ambient.now, txn, refusal);
        }
        let mut body = String::from_utf8_lossy(&request.body).into_owned();
        let webrtc = crate::sdp::is_webrtc(&body);
        // A browser's leg is plain RTP between its bridge and the relay.
        let a_srtp = match webrtc {
            true => srtp::Offered::Plain,
            false => {
                let offer = match sdp::parse(&body) {
                    Ok(offer) => offer,
                    Err(e) => {
                        tracing::info!(dialed, "INVITE refused: SDP {e}");
                        return reject(ctx, 488, None);
                    }
                };
                let policy = match &origin {
                    Origin::Trunk { name } => {
                        srtp::trunk_policy(ctx.config, ctx.trunks.config(name))
                    }
                    Origin::Device { user_id, .. } => srtp::device_policy(ctx.config, user_id),
                };
                match srtp::answer(policy, &offer) {
                    Ok(offered) => offered,
                    Err(reason) => {
                        tracing::info!(dialed, "INVITE refused: {reason}");
                        return reject(ctx, 488, None);
                    }
                }
            }
        };
        let id = {
            let random = ctx.entropy.next_u64().to_le_bytes();
            let more = ctx.entropy.next_u64().to_le_bytes();
            let mut bytes = [0; 10];
            bytes[..8].copy_from_slice(&random);
            bytes[8..].copy_from_slice(&more[..2]);
            SessionId::new(u64::try_from(ctx.ambient.wall_ms).unwrap_or(0), bytes)
        };
        let span = tracing::info_span!("call", session = %id.short());
        let _entered = span.clone().entered();
        let ports = match ctx.media.open(id) {
            Ok(ports) => ports,
            Err(e) => {
                tracing::error!("no media ports: {e}");
                return reject(ctx, 503, None);
            }
        };
        // A browser: its WebRTC is answered by a bridge, and the call sees it as a plain
        // RTP phone at the bridge.
        let mut a_answer = None;
        if webrtc {
            match ctx
                .media
                .bridge_webrtc(id, Some(Side::A), &body, ctx.config.media.public_ip)
            {
                Ok(bridged) => {
                    body = bridged.plain_offer;
                    a_answer = Some(bridged.answer);
                }
                Err(e) => {
                    tracing::info!(dialed, "INVITE refused: {e}");
                    ctx.media.close(id);
                    return reject(ctx, 488, None);
                }
            }
        }
        let a_rtp = sdp::parse(&body).ok().and_then(|m| m.rtp);
        // The offer every outbound leg of this call gets: the caller's, pointing at the
        // host's B-side port. Made once; refused here if nothing in it can be relayed.
        let b_offer = match sdp::rewrite(&body, ctx.config.media.public_ip, ports.b) {
            Ok(offer) => offer,
            Err(e) => {
                tracing::info!(dialed, "INVITE refused: SDP {e}");
                ctx.media.close(id);
                return reject(ctx, 488, None);
            }
        };
        if let Some(rtp) = a_rtp {
            ctx.media.set_remote(id, Side::A, rtp);
        }
        if let Some(pt) = sdp::telephone_event_pt(&body) {
            // A user's device: its keys are watched for the push code too.
            let push_code = matches!(origin, Origin::Device { .. })
                .then_some(ctx.config.flip.push_code.as_str());
            ctx.media.watch_keys(id, Side::A, pt, push_code);
        }
        let call_id = message::call_id(&message).unwrap_or_default();
        let a_tag = ctx.token();
        let to = message::header_value(&message, "To").unwrap_or_default();
        let from = message::header_value(&message, "From").unwrap_or_default();
        let contact = message::header_value(&message, "Contact")
            .map(|c| addr_spec(&c))
            .unwrap_or_else(|| addr_spec(&from));
        let started_at = jiff::Timestamp::from_second(ctx.ambient.wall_secs())
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let location_name = location.as_ref().map(|l| l.name.clone());
        // Trunk calls run their location's script; device calls are routed by the host.
        let script = location
            .as_ref()
            .map(|l| l.script.clone())
            .unwrap_or_default();
        let call = CallInfo {
            call_id: id.to_string(),
            location: location_name.clone(),
            caller: caller.clone(),
            caller_name: message::from_header_display_name(&message),
            dialed: dialed.clone(),
            origin: origin.clone(),
            started_at,
            tags: Vec::new(),
        };
        tracing::info!(caller, dialed, location = ?location.as_ref().map(|l| &l.name), "incoming call");
        let record = CallRecord {
            session: id,
            location: location_name.clone(),
            caller,
            dialed,
            script: (!script.is_empty()).then(|| script.clone()),
            script_hash: None,
            fallback: false,
            started_at,
            answered_at: None,
            state: RecordState::Live,
            ended_at: None,
            updated_at: started_at,
            disposition: Disposition::Failed,
            legs: Vec::new(),
            digits: String::new(),
            tags: Vec::new(),
            end_reason: String::new(),
            rtp_packets_in: 0,
            rtp_packets_out: 0,
            recording: None,
            duration_ms: 0,
            flips: Vec::new(),
            call_ids: vec![call_id.clone()],
            streams: Vec::new(),
            events: Vec::new(),
        };
        let mut session = Session {
            call: call.clone(),
            script: script.clone(),
            location: location.clone(),
            pinned: None,
            a_invite: request,
            a_txn: txn,
            a_dialog: Dialog {
                call_id: call_id.clone(),
                local: with_tag(&to, &a_tag),
                remote: from,
                target: contact,
                route_set: route_set_of_request(&message),
                local_cseq: 0,
                remote_cseq: message::cseq(&message).map(|c| c.0),
                peer: source,
                sdp: sdp::Origin::new(ctx.entropy.next_u64()),
            },
            b_offer,
            a_answer,
            a_answered: false,
            b: None,
            forks: Vec::new(),
            ringing_sent: false,
            reinvite: None,
            ports,
            phase: Phase::Routing,
            record,
            ring_generation: 0,
            applying_fallback: false,
            endpoint: None,
            waiting: engaged::Waiting::Nothing,
            media_generation: 0,
            arrived: ctx.ambient.now,
            b_codec: None,
            flip_pending: false,
            ringing: None,
            pin: None,
            a_device: match &origin {
                Origin::Device { user_id, device } => Some((user_id.clone(), device.clone())),
                Origin::Trunk { .. } => None,
            },
            a_gone: false,
            keys: Default::default(),
            streams: 0,
            held_events: VecDeque::new(),
            releasing: None,
            probes: Vec::new(),
            span,
        };
        if let Err(e) = srtp::accept(
            ctx.media,
            id,
            Some(Side::A),
            &mut session.a_dialog.sdp,
            a_srtp,
        ) {
            tracing::error!("INVITE refused: SRTP: {e}");
            ctx.media.close(id);
            let refusal = message::response_to(&session.a_invite, 500, Some(&ctx.token()));
            return ctx.layer.send_response(ctx.ambient.now, txn, refusal);
        }
        // A location may stream every call's audio to an engine (listen-mode analysis
        // needs no script for it).
        if let Some(url) = location.as_ref().and_then(|l| l.stream_url.clone()) {
            let stream = MediaStream {
                url,
                tracks: Tracks::Both,
                parameters: Vec::new(),
                engine_audio: EngineAudio::Ignore,
            };
            ctx.media.start_stream(id, stream_request(stream, &call));
            session.streams += 1;
        }
        self.sessions.insert(id, Box::new(session));
        self.arm_keepalive(ctx, id);
        self.by_call_id.insert(call_id, id);
        self.by_a_txn.insert(txn, id);
        ctx.outputs.push_back(PbxOutput::CallStarted {
            session: id,
            call: call.clone(),
        });
        match origin {
            Origin::Trunk { .. } => ask_script(ctx, id, &self.sessions[&id], Event::Incoming),
            Origin::Device { .. } => {
                // Another user's extension rings all that user's devices; anything else
                // goes out through the first trunk.
                let target = match ctx.config.user_by_extension(&call.dialed) {
                    Some(user) => ForwardTarget::User(user.id.clone()),
                    None => ForwardTarget::Number(call.dialed.clone()),
                };
                self.forward(ctx, id, target, None, DEVICE_RING_TIMEOUT_MS, None);
            }
        }
    }
}
