//! Active mode on the sans-IO core, in the world the flip tests share (`call/world.rs`):
//! a trunk INVITE, the script's decisions handed in by hand, time moved on by hand.

use std::time::Duration;

use super::super::world::{DESK, FAR_END, MOBILE, TRUNK, World};
use crate::call::SessionId;
use crate::call::testing::Did;
use crate::media::{Codec, MediaEvent, Side};
use crate::pbx::PbxOutput;
use crate::routing::{Action, Event, ForwardTarget, GatherEnd, Rendered, Speech};
use crate::sip::message::{self, SipMessage};
use crate::sip::transaction::{Peer, Transport};

/// Active mode's view of the shared world: a trunk call to the flip number, its routing
/// decisions handed in by hand, and what the host sent and asked since the last look.
struct Harness {
    w: World,
    /// How much of the world's sent log has been looked at.
    seen: usize,
    /// The To tag the host gave the caller's dialog.
    a_tag: String,
    /// The call's id, once it has one.
    id: Option<SessionId>,
}

impl Harness {
    fn new() -> Self {
        let mut w = World::new();
        // The tests answer `call-ended` themselves.
        w.answer_call_ended = false;
        Self {
            w,
            seen: 0,
            a_tag: String::new(),
            id: None,
        }
    }

    /// The id of the call (kept once read, for the decisions after it ended).
    fn session(&mut self) -> SessionId {
        *self.id.get_or_insert_with(|| self.w.session())
    }

    fn advance(&mut self, by: Duration) {
        self.w.now += by;
        self.w.pbx.handle_timeout(self.w.ambient());
    }

    /// Move the clock to `at` after the start, firing timers on the way.
    fn at(&mut self, ms: u64) {
        let target = self.w.t0 + Duration::from_millis(ms);
        while let Some(next) = self.w.pbx.poll_timeout().filter(|t| *t <= target) {
            self.w.now = next.max(self.w.now);
            self.w.pbx.handle_timeout(self.w.ambient());
        }
        self.w.now = target;
    }

    fn invite(&mut self) {
        let sdp = "v=0\r\no=c 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n\
m=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n";
        let text = format!(
            "INVITE sip:100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {FAR_END};branch=z9hG4bK-1\r\n\
From: <sip:0400@127.0.0.2>;tag=c\r\nTo: <sip:100@127.0.0.1>\r\nCall-ID: call-1\r\n\
CSeq: 1 INVITE\r\nContact: <sip:c@{FAR_END}>\r\nMax-Forwards: 70\r\n\
Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        );
        self.bytes(&text);
    }

    fn info(&mut self, digit: char) {
        let body = format!("Signal={digit}\r\nDuration=160\r\n");
        let to_tag = self.a_tag.clone();
        let text = format!(
            "INFO sip:wasmpbx@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {FAR_END};branch=z9hG4bK-i{digit}\r\n\
From: <sip:0400@127.0.0.2>;tag=c\r\nTo: <sip:100@127.0.0.1>;tag={to_tag}\r\nCall-ID: call-1\r\n\
CSeq: 2 INFO\r\nContent-Type: application/dtmf-relay\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.bytes(&text);
    }

    /// Bytes from the trunk's far end (not drained: [`Harness::drain`] looks).
    fn bytes(&mut self, text: &str) {
        let peer = Peer {
            transport: Transport::Udp,
            addr: FAR_END.parse().unwrap(),
        };
        self.w
            .pbx
            .handle_bytes(self.w.ambient(), text.as_bytes(), peer);
    }

    fn decide(&mut self, actions: Vec<Action>) {
        let id = self.session();
        self.w.route(id, actions);
    }

    fn digit(&mut self, digit: char) {
        let session = self.session();
        self.w.pbx.handle_media_event(
            self.w.ambient(),
            MediaEvent::Digit {
                session,
                side: Side::A,
                digit,
            },
        );
    }

    /// What happened since the last look: the events the script was asked about, and
    /// the SIP the host sent.
    fn drain(&mut self) -> (Vec<Event>, Vec<String>) {
        self.w.drain();
        let events = std::mem::take(&mut self.w.routed);
        let sent: Vec<String> = self.w.sent[self.seen..]
            .iter()
            .map(|(_, text)| text.clone())
            .collect();
        self.seen = self.w.sent.len();
        for text in &sent {
            if text.starts_with("SIP/2.0 200")
                && text.contains("CSeq: 1 INVITE")
                && let Ok(message) = message::parse(text.as_bytes())
            {
                self.a_tag = message::to_tag(&message).unwrap_or_default();
            }
        }
        (events, sent)
    }

    /// The department answers the host's INVITE (the last request sent) with `sdp`.
    fn department_answers(&mut self, invite: &str) {
        let Ok(SipMessage::Request(request)) = message::parse(invite.as_bytes()) else {
            panic!("not an INVITE: {invite}");
        };
        let mut ok = message::response_to(&request, 200, Some("dept"));
        let sdp = crate::sdp::endpoint("127.0.0.1".parse().unwrap(), 41000, Codec::Pcmu, Some(101));
        crate::call::requests::attach_sdp(&mut ok, format!("<sip:wasmpbx@{TRUNK}>"), sdp);
        let bytes = message::serialize(&SipMessage::Response(ok));
        let peer = Peer {
            transport: Transport::Udp,
            addr: TRUNK.parse().unwrap(),
        };
        self.w.pbx.handle_bytes(self.w.ambient(), &bytes, peer);
    }
}

fn gather(
    max_digits: u8,
    timeout_ms: u32,
    inter_digit_ms: u32,
    terminator: Option<char>,
) -> Action {
    Action::Gather {
        max_digits,
        timeout_ms,
        inter_digit_timeout_ms: inter_digit_ms,
        terminator,
        prompt: Some("menu".into()),
        say: None,
    }
}

fn play(prompt: &str) -> Action {
    Action::Play {
        prompt: prompt.into(),
    }
}

fn gathered(digits: &str, ended_by: GatherEnd) -> Event {
    Event::DigitsGathered {
        digits: digits.into(),
        ended_by,
    }
}

/// The built-in prompts' lengths, in ms (whole 20 ms frames).
fn length_ms(prompt: &str) -> u64 {
    crate::media::Prompts::built_in()
        .get(prompt)
        .unwrap()
        .duration()
        .as_millis() as u64
}

#[test]
fn the_host_answers_plays_the_welcome_then_the_menu_and_a_key_barges_in() {
    let mut h = Harness::new();
    h.invite();
    assert_eq!(h.drain().0, [Event::Incoming]);
    h.decide(vec![
        Action::Answer,
        play("welcome"),
        gather(1, 5000, 5000, None),
    ]);
    let (events, sent) = h.drain();
    assert!(events.is_empty());
    let ok = sent
        .iter()
        .find(|m| m.starts_with("SIP/2.0 200"))
        .expect("a 200 to the caller");
    assert!(
        ok.contains("m=audio 20000 RTP/AVP 0 101"),
        "the caller's first codec: {ok}"
    );
    assert_eq!(
        h.w.media.take(),
        [
            Did::Answer(Side::A, Codec::Pcmu),
            Did::Play("welcome".into())
        ]
    );

    let welcome = length_ms("welcome");
    h.at(welcome - 1);
    assert!(h.w.media.take().is_empty(), "the welcome plays to its end");
    h.at(welcome);
    assert_eq!(h.w.media.take(), [Did::Play("menu".into())]);
    h.at(welcome + 1500);
    h.digit('2');
    assert_eq!(
        h.w.media.take(),
        [Did::Silence],
        "the menu stops at the first key"
    );
    assert_eq!(h.drain().0, [gathered("2", GatherEnd::MaxDigits)]);
}

#[test]
fn the_first_digit_waits_for_the_prompt_then_each_next_one_its_own_timeout() {
    let mut h = Harness::new();
    h.invite();
    h.drain();
    h.decide(vec![gather(4, 3000, 1000, Some('#'))]);
    h.drain();
    let menu = length_ms("menu");
    h.at(menu + 2999);
    assert!(
        h.drain().0.is_empty(),
        "the first-digit timeout runs from the prompt's end"
    );
    h.digit('1');
    h.at(menu + 3500);
    h.info('2'); // SIP INFO counts the same as RFC 4733
    h.at(menu + 4499);
    assert!(h.drain().0.is_empty());
    h.at(menu + 4500);
    assert_eq!(h.drain().0, [gathered("12", GatherEnd::Timeout)]);
}

#[test]
fn the_terminator_ends_a_gather_without_being_a_digit() {
    let mut h = Harness::new();
    h.invite();
    h.drain();
    h.decide(vec![gather(4, 3000, 1000, Some('#'))]);
    for key in ['4', '2', '#'] {
        h.advance(Duration::from_millis(300));
        h.digit(key);
    }
    assert_eq!(h.drain().0, [gathered("42", GatherEnd::Terminator)]);
    h.digit('9');
    assert!(
        h.drain().0.is_empty(),
        "a key outside a gather is only recorded"
    );
}

/// A call the script answers, then forwards to `target`.
fn answered_then_forwarded(target: ForwardTarget) -> Harness {
    let mut h = Harness::new();
    h.invite();
    h.drain();
    h.decide(vec![
        Action::Answer,
        Action::Forward {
            target,
            trunk: None,
            ring_timeout_ms: 30_000,
            caller_id: None,
        },
    ]);
    h
}

/// The forward's answer connected the caller, answered once already, to it: no second
/// 200 in `sent`, and the host's own audio gives way.
fn assert_connected_without_a_second_answer(h: &mut Harness, sent: &[String]) {
    assert!(
        !sent.iter().any(|m| m.starts_with("SIP/2.0 200")),
        "the caller was answered once already"
    );
    assert_eq!(
        h.w.media.take(),
        [Did::Silence],
        "the host's audio gives way"
    );
}

#[test]
fn a_forward_after_the_menu_rings_back_and_connects_without_a_second_answer() {
    let mut h = answered_then_forwarded(ForwardTarget::Number("200".into()));
    let (_, sent) = h.drain();
    let invite = sent
        .iter()
        .find(|m| m.starts_with("INVITE sip:200@"))
        .expect("an INVITE out");
    assert!(
        invite.contains("m=audio 20002 RTP/AVP 0 101"),
        "the department is offered the caller's codec only: {invite}"
    );
    assert_eq!(
        h.w.media.take(),
        [Did::Answer(Side::A, Codec::Pcmu), Did::Ringback]
    );
    let invite = invite.clone();
    h.department_answers(&invite);
    let (_, sent) = h.drain();
    assert!(sent.iter().any(|m| m.starts_with("ACK sip:")), "{sent:?}");
    assert_connected_without_a_second_answer(&mut h, &sent);
}

#[test]
fn a_forward_to_a_user_after_the_host_answered_connects_the_device_that_answers() {
    let mut h = answered_then_forwarded(ForwardTarget::User("alice".into()));
    h.drain();
    let to_desk = h.w.last_to(DESK, "INVITE ");
    h.w.media.take();
    h.w.respond(DESK, &to_desk, 200);
    let (events, sent) = h.drain();
    assert!(events.is_empty(), "no forward failed: {events:?}");
    assert_eq!(h.w.count_to(DESK, "ACK "), 1);
    assert_eq!(h.w.count_to(DESK, "BYE "), 0, "the desk has the call");
    assert_eq!(
        h.w.count_to(MOBILE, "CANCEL "),
        1,
        "the others stop ringing"
    );
    assert_connected_without_a_second_answer(&mut h, &sent);
}

#[test]
fn an_unknown_prompt_sends_the_call_to_the_fallback_number() {
    let mut h = Harness::new();
    h.invite();
    h.drain();
    h.decide(vec![Action::Recording { on: true }, play("no-such-prompt")]);
    let (_, sent) = h.drain();
    assert!(
        sent.iter().any(|m| m.starts_with("INVITE sip:999@")),
        "{sent:?}"
    );
    assert!(
        !sent.iter().any(|m| m.starts_with("SIP/2.0 200")),
        "not answered"
    );
    assert_eq!(h.w.media.take(), [Did::Record]);
}

#[test]
fn the_record_names_a_recording_only_if_its_file_could_be_created() {
    for can_create in [true, false] {
        let mut h = Harness::new();
        if !can_create {
            h.w.media.fail_recording();
        }
        h.invite();
        h.drain();
        h.decide(vec![
            Action::Recording { on: true },
            Action::Reject {
                status: 486,
                reason: None,
            },
        ]);
        let record = std::iter::from_fn(|| h.w.pbx.poll_output())
            .find_map(|output| match output {
                PbxOutput::Record(record) => Some(record),
                _ => None,
            })
            .expect("the call's record");
        match can_create {
            true => assert!(
                record
                    .recording
                    .as_deref()
                    .is_some_and(|p| p.ends_with(".wav")),
                "{:?}",
                record.recording
            ),
            false => assert_eq!(record.recording, None),
        }
    }
}

#[test]
fn tags_set_at_call_ended_are_in_the_record() {
    let mut h = Harness::new();
    h.invite();
    h.drain();
    h.decide(vec![
        Action::SetTag {
            name: "reason".into(),
            value: "sales".into(),
        },
        Action::Reject {
            status: 486,
            reason: None,
        },
    ]);
    let (mut asked, mut written) = (false, Vec::new());
    while let Some(output) = h.w.pbx.poll_output() {
        match output {
            PbxOutput::Route { event, .. } => asked |= matches!(event, Event::CallEnded { .. }),
            PbxOutput::Record(record) => written.push(record),
            _ => {}
        }
    }
    assert!(asked, "the script is told the call ended");
    // The record is written at once, with the tags set so far.
    assert_eq!(written.len(), 1);
    assert_eq!(written[0].tags, [("reason".to_owned(), "sales".to_owned())]);
    // An earlier event's decision, late: the call is over, and it is not call-ended's.
    h.decide(vec![Action::SetTag {
        name: "stale".into(),
        value: "yes".into(),
    }]);
    assert!(
        std::iter::from_fn(|| h.w.pbx.poll_output())
            .all(|o| !matches!(o, PbxOutput::Record(_) | PbxOutput::RecordRewritten(_))),
        "a late decision does not write the record"
    );
    let id = h.session();
    h.w.call_ended(
        id,
        vec![
            Action::SetTag {
                name: "reason".into(),
                value: "billing".into(),
            },
            Action::SetTag {
                name: "survey".into(),
                value: "yes".into(),
            },
            Action::Hangup,
        ],
    );
    let records: Vec<_> = std::iter::from_fn(|| h.w.pbx.poll_output())
        .filter_map(|o| match o {
            PbxOutput::RecordRewritten(r) => Some(r),
            PbxOutput::Record(_) => panic!("a call ends once"),
            _ => None,
        })
        .collect();
    assert_eq!(records.len(), 1, "written again with call-ended's tags");
    assert_eq!(records[0].session, written[0].session);
    assert_eq!(
        records[0].tags,
        [
            ("reason".to_owned(), "billing".to_owned()),
            ("survey".to_owned(), "yes".to_owned())
        ]
    );
}

impl Harness {
    /// An engine's intent for the call, as `POST /api/calls/{id}/events` delivers it.
    fn intent(&mut self, value: &str) {
        let id = self.session();
        self.w
            .pbx
            .call_event(
                self.w.ambient(),
                id,
                "intent".into(),
                value.into(),
                Some(0.9),
            )
            .unwrap();
    }

    fn external_decided(&mut self, actions: Vec<Action>) {
        let id = self.session();
        self.w.external_decided(id, actions);
    }
}

fn intent(value: &str) -> Event {
    Event::External {
        name: "intent".into(),
        value: value.into(),
        confidence: Some(0.9),
    }
}

fn to_billing() -> Vec<Action> {
    vec![
        Action::SetTag {
            name: "department".into(),
            value: "billing".into(),
        },
        Action::Forward {
            target: ForwardTarget::Number("+61290000020".into()),
            trunk: None,
            ring_timeout_ms: 30_000,
            caller_id: None,
        },
    ]
}

#[test]
fn an_intent_during_the_welcome_takes_the_call_to_its_department() {
    let mut h = Harness::new();
    h.invite();
    h.drain();
    h.decide(vec![
        Action::Answer,
        play("welcome"),
        gather(1, 5000, 5000, None),
    ]);
    h.drain();
    h.w.media.take();
    h.at(500);
    h.intent("billing");
    let (events, _) = h.drain();
    assert_eq!(events, [intent("billing")], "the script hears the intent");
    h.external_decided(to_billing());
    let (events, sent) = h.drain();
    assert!(events.is_empty());
    assert!(
        sent.iter()
            .any(|m| m.starts_with("INVITE sip:+61290000020@")),
        "{sent:?}"
    );
    assert_eq!(
        h.w.media.take(),
        [Did::Silence, Did::Ringback],
        "the welcome stops, ringback plays"
    );
    // The welcome's end and the menu it would have led to are moot now.
    h.at(length_ms("welcome") + 6000);
    assert!(h.drain().0.is_empty(), "no menu, no gather timeout");
}

#[test]
fn an_intent_that_only_tags_leaves_the_menu_going() {
    let mut h = Harness::new();
    h.invite();
    h.drain();
    h.decide(vec![Action::Answer, gather(1, 5000, 5000, None)]);
    h.drain();
    h.w.media.take();
    h.at(300);
    h.intent("refund");
    h.drain();
    h.external_decided(vec![Action::SetTag {
        name: "heard".into(),
        value: "refund".into(),
    }]);
    assert!(h.w.media.take().is_empty(), "the menu goes on playing");
    h.digit('1');
    assert_eq!(h.drain().0, [gathered("1", GatherEnd::MaxDigits)]);
    // An empty answer changes nothing either.
    h.decide(vec![gather(1, 5000, 5000, None)]);
    h.intent("nothing");
    h.drain();
    h.external_decided(Vec::new());
    h.digit('2');
    assert_eq!(h.drain().0, [gathered("2", GatherEnd::MaxDigits)]);
}

#[test]
fn an_intent_cannot_steer_a_connected_call_but_its_tags_apply() {
    let mut h = Harness::new();
    h.invite();
    h.drain();
    h.decide(to_billing());
    let (_, sent) = h.drain();
    let invite = sent
        .iter()
        .find(|m| m.starts_with("INVITE "))
        .expect("the forward")
        .clone();
    h.department_answers(&invite);
    h.drain();
    h.intent("sales");
    h.drain();
    let before = h.w.sent.len();
    let mut actions = vec![Action::SetTag {
        name: "second_intent".into(),
        value: "sales".into(),
    }];
    actions.extend(to_billing());
    h.external_decided(actions);
    h.drain();
    assert_eq!(h.w.sent.len(), before, "no new INVITE, nothing sent");
    let tags = &h.w.live_records.last().expect("the record, rewritten").tags;
    assert!(
        tags.contains(&("second_intent".into(), "sales".into())),
        "{tags:?}"
    );
}

#[test]
fn say_plays_rendered_speech_and_unrendered_speech_falls_back() {
    let mut h = Harness::new();
    h.invite();
    h.drain();
    let audio = std::sync::Arc::new(crate::media::Prompt::from_samples("say", vec![0; 8000]));
    let mut speech = Speech::new("Hello", None);
    speech.audio = Rendered(Some(audio));
    h.decide(vec![Action::Say(speech), Action::Hangup]);
    h.drain();
    assert_eq!(
        h.w.media.take(),
        [Did::Answer(Side::A, Codec::Pcmu), Did::Play("say".into())]
    );
    h.at(999);
    assert!(h.drain().1.iter().all(|m| !m.starts_with("BYE")));
    h.at(1000);
    assert!(
        h.drain().1.iter().any(|m| m.starts_with("BYE")),
        "the hangup after one second of speech"
    );

    let mut h = Harness::new();
    h.invite();
    h.drain();
    h.decide(vec![Action::Say(Speech::new("Hello", None))]);
    let (_, sent) = h.drain();
    assert!(
        sent.iter().any(|m| m.starts_with("INVITE sip:999@")),
        "speech that could not be rendered goes to the fallback: {sent:?}"
    );
}

#[test]
fn an_intent_while_the_script_thinks_waits_for_its_answer() {
    let mut h = Harness::new();
    h.invite();
    assert_eq!(h.drain().0, [Event::Incoming]);
    // The intent arrives before the script has answered the incoming call.
    h.intent("billing");
    assert!(h.drain().0.is_empty(), "held until the answer is applied");
    h.decide(vec![Action::Answer, play("welcome")]);
    assert_eq!(h.drain().0, [intent("billing")], "then delivered");
    h.w.media.take();
    h.external_decided(to_billing());
    let (_, sent) = h.drain();
    assert!(
        sent.iter()
            .any(|m| m.starts_with("INVITE sip:+61290000020@")),
        "{sent:?}"
    );
}
