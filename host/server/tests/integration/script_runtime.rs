//! The script runtime against real guests: the default scripts' decisions, and every
//! kind of misbehaviour ending in the location's fallback with the host unharmed.
// Measuring and waiting happen on real time here.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;

use crate::common::{call, host_at, host_at_with, host_with, install, limits};
use wasmpbx::directory::{DeviceInfo, MemoryDirectory};
use wasmpbx::flip::{Allow, CallFacts, Direction, FlipDecision, FlipKind, FlipRequest, Trigger};
use wasmpbx::routing::{Action, Event, ForwardTarget, GatherEnd};
use wasmpbx::script::{EventWorld, Limits, LoadError};
use wasmpbx::store::{KvStore, MemoryStore};

/// Monday 2026-11-23 10:00 in Sydney (AEDT, +11).
const MONDAY_10AM_SYDNEY: &str = "2026-11-22T23:00:00Z";

fn forward_to(number: &str) -> impl Fn(&Action) -> bool + '_ {
    move |a| matches!(a, Action::Forward { target: ForwardTarget::Number(n), .. } if n == number)
}

#[test]
fn default_scripts_export_what_they_should() {
    let host = host_at(MONDAY_10AM_SYDNEY);
    for (name, path, router, flip) in [
        ("listen", test_components::LISTEN, true, false),
        ("front-door", test_components::FRONT_DOOR, true, false),
        ("flip-policy", test_components::FLIP_POLICY, false, true),
        ("misbehave", test_components::MISBEHAVE, true, true),
    ] {
        let script = host
            .engine
            .load(name, &test_components::bytes(path), &host.services)
            .unwrap();
        assert_eq!(
            (script.exports.router, script.exports.flip_policy),
            (router, flip),
            "{name}"
        );
        assert_eq!(script.hash.len(), 64);
    }
}

#[test]
fn listen_forwards_to_the_return_number() {
    let host = host_at(MONDAY_10AM_SYDNEY);
    install(&host, "listen", test_components::LISTEN);
    let location = host.services.config.load().location("sydney").cloned();
    let (decision, pinned) = host.route(
        "listen",
        None,
        location.as_ref(),
        &call("+61290000001"),
        &Event::Incoming,
    );
    assert!(decision.fallback.is_none());
    assert!(
        decision.actions.iter().any(forward_to("+61290000098")),
        "{:?}",
        decision.actions
    );
    assert!(pinned.is_some());
    // A busy return number stays busy for the caller.
    let failed = Event::ForwardFailed {
        target: ForwardTarget::Number("+61290000098".into()),
        status: 486,
        reason: "Busy Here".into(),
    };
    let (decision, _) = host.route(
        "listen",
        pinned.as_ref(),
        location.as_ref(),
        &call("+61290000001"),
        &failed,
    );
    assert_eq!(
        decision.actions,
        vec![Action::Reject {
            status: 486,
            reason: Some("Busy Here".into())
        }]
    );
}

#[test]
fn front_door_menu_routes_each_digit_to_its_department() {
    let host = host_at(MONDAY_10AM_SYDNEY);
    install(&host, "front-door", test_components::FRONT_DOOR);
    let location = host.services.config.load().location("sydney").cloned();
    let mut the_call = call("+61290000001");
    let (decision, pinned) = host.route(
        "front-door",
        None,
        location.as_ref(),
        &the_call,
        &Event::Incoming,
    );
    assert!(
        matches!(
            decision.actions.last(),
            Some(Action::Gather { max_digits: 1, .. })
        ),
        "{:?}",
        decision.actions
    );
    for action in &decision.actions {
        if let Action::SetTag { name, value } = action {
            the_call.set_tag(name, value);
        }
    }
    for (digit, number) in [
        ("1", "+61290000010"),
        ("2", "+61290000020"),
        ("0", "+61290000030"),
    ] {
        let event = Event::DigitsGathered {
            digits: digit.into(),
            ended_by: GatherEnd::MaxDigits,
        };
        let (decision, _) = host.route(
            "front-door",
            pinned.as_ref(),
            location.as_ref(),
            &the_call,
            &event,
        );
        assert!(
            decision.actions.iter().any(forward_to(number)),
            "{digit}: {:?}",
            decision.actions
        );
    }
}

#[test]
fn front_door_sends_an_intent_to_its_department_and_ignores_the_rest() {
    let host = host_at(MONDAY_10AM_SYDNEY);
    install(&host, "front-door", test_components::FRONT_DOOR);
    let location = host.services.config.load().location("sydney").cloned();
    let intent = |value: &str| Event::External {
        name: "intent".into(),
        value: value.into(),
        confidence: Some(0.9),
    };
    let mut open_call = call("+61290000001");
    open_call.set_tag("hours", "open");
    let route = |the_call, event: &Event| {
        host.route("front-door", None, location.as_ref(), the_call, event)
            .0
    };
    let decision = route(&open_call, &intent("billing"));
    assert!(decision.fallback.is_none(), "{:?}", decision.fallback);
    assert!(
        decision.actions.iter().any(forward_to("+61290000020")),
        "{:?}",
        decision.actions
    );
    // No department of that name, a name that is not an intent, a call already sent
    // somewhere, or a closed location: nothing changes (an empty list is valid here).
    for (the_call, event) in [
        (&open_call, intent("refund")),
        (&open_call, intent("timezone")),
        (
            &open_call,
            Event::External {
                name: "sentiment".into(),
                value: "billing".into(),
                confidence: None,
            },
        ),
    ] {
        let decision = route(the_call, &event);
        assert!(
            decision.fallback.is_none(),
            "{event:?}: {:?}",
            decision.fallback
        );
        assert_eq!(decision.actions, vec![], "{event:?}");
    }
    let mut sent = open_call.clone();
    sent.set_tag("department", "sales");
    assert_eq!(route(&sent, &intent("billing")).actions, vec![]);
    let mut closed = call("+61290000001");
    closed.set_tag("hours", "closed");
    assert_eq!(route(&closed, &intent("billing")).actions, vec![]);
}

#[test]
fn a_script_built_for_wit_0_1_0_still_routes_and_decides() {
    let host = host_at(MONDAY_10AM_SYDNEY);
    let script = host
        .engine
        .load(
            "old",
            &test_components::bytes(test_components::BUILT_FOR_0_1),
            &host.services,
        )
        .unwrap();
    assert_eq!(script.wit_version, "0.1.0");
    assert!(script.exports.router && script.exports.flip_policy);
    install(&host, "old", test_components::BUILT_FOR_0_1);
    let location = host.services.config.load().location("sydney").cloned();
    let (decision, pinned) = host.route(
        "old",
        None,
        location.as_ref(),
        &call("+61290000001"),
        &Event::Incoming,
    );
    assert!(decision.fallback.is_none(), "{:?}", decision.fallback);
    assert!(
        decision.actions.iter().any(forward_to("+61290000098")),
        "{:?}",
        decision.actions
    );
    // Its imports work: the clock through a timezone (10:00 in Sydney).
    assert!(
        decision.actions.contains(&Action::SetTag {
            name: "sydney_hour".into(),
            value: "10".into()
        }),
        "{:?}",
        decision.actions
    );
    // An event 0.1.0 does not know is answered for it with nothing to do.
    let external = Event::External {
        name: "intent".into(),
        value: "billing".into(),
        confidence: None,
    };
    let (decision, _) = host.route(
        "old",
        pinned.as_ref(),
        location.as_ref(),
        &call("+61290000001"),
        &external,
    );
    assert!(decision.fallback.is_none(), "{:?}", decision.fallback);
    assert!(decision.actions.is_empty());
    assert!(matches!(
        host.decide_flip("old", &flip_request("alice", false, &["mobile"])),
        Ok(FlipDecision::Allow(_))
    ));
}

#[test]
fn front_door_is_closed_out_of_hours_on_holidays_and_by_override() {
    let location_call = call("+61290000001");
    for (at, kv_override, open) in [
        (MONDAY_10AM_SYDNEY, None, true),
        ("2026-11-23T07:00:00Z", None, false), // Monday 18:00 local
        ("2026-12-24T23:00:00Z", None, false), // Christmas 10:00 local
        ("2026-12-24T23:00:00Z", Some("open"), true), // override beats the holiday
        (MONDAY_10AM_SYDNEY, Some("closed"), false), // night mode
        ("2026-04-05T22:30:00Z", None, false), // Mon after DST end: 08:30 AEST
        ("2026-10-04T22:30:00Z", None, true),  // Mon after DST start: 09:30 AEDT
    ] {
        let kv = Arc::new(MemoryStore::new());
        if let Some(value) = kv_override {
            kv.set("sydney", "override", value).unwrap();
        }
        let host = host_with(at, kv, Arc::new(MemoryDirectory::new()));
        install(&host, "front-door", test_components::FRONT_DOOR);
        let location = host.services.config.load().location("sydney").cloned();
        let (decision, _) = host.route(
            "front-door",
            None,
            location.as_ref(),
            &location_call,
            &Event::Incoming,
        );
        let played_closed = decision.actions.contains(&Action::Play {
            prompt: "closed".into(),
        });
        assert_eq!(
            !played_closed, open,
            "at {at} override {kv_override:?}: {:?}",
            decision.actions
        );
        if !open {
            assert_eq!(
                decision.actions.last(),
                Some(&Action::Hangup),
                "no after_hours_number: hang up"
            );
        }
    }
}

#[test]
fn every_misbehaviour_falls_back_and_the_host_keeps_serving() {
    let host = host_at(MONDAY_10AM_SYDNEY);
    install(&host, "misbehave", test_components::MISBEHAVE);
    let location = host.services.config.load().location("sydney").cloned();
    for (dialed, cause, detail) in [
        ("trap", "trap", "told to trap"),
        ("loop", "deadline", "500 ms deadline"),
        ("alloc", "memory", "32 MiB"),
        ("recurse", "trap", "stack"),
        ("sleep", "trap", "may not wait"),
        ("bad-forward", "invalid-action", "forward: number \"\""),
        ("gather-zero", "invalid-action", "max-digits 0"),
        ("bad-voice", "invalid-action", "not a voice name"),
        ("bad-stream", "invalid-action", "not a ws:// or wss:// URL"),
        (
            "after-terminal",
            "invalid-action",
            "nothing may follow a hangup",
        ),
        ("nothing", "invalid-action", "no action"),
        ("aliased", "trap", "too much data"),
    ] {
        let started = std::time::Instant::now();
        let (decision, _) = host.route(
            "misbehave",
            None,
            location.as_ref(),
            &call(dialed),
            &Event::Incoming,
        );
        let elapsed = started.elapsed();
        let fallback = decision
            .fallback
            .unwrap_or_else(|| panic!("{dialed}: no fallback"));
        assert_eq!(fallback.cause, cause, "{dialed}: {}", fallback.message);
        assert!(
            fallback.message.contains(detail),
            "{dialed}: {}",
            fallback.message
        );
        assert!(
            decision.actions.iter().any(forward_to("+61290000099")),
            "{dialed}: {:?}",
            decision.actions
        );
        assert!(
            elapsed < std::time::Duration::from_secs(2),
            "{dialed} took {elapsed:?}"
        );
        // The very next call on the same script is served normally.
        let (good, _) = host.route(
            "misbehave",
            None,
            location.as_ref(),
            &call("+61290000001"),
            &Event::Incoming,
        );
        assert!(
            good.fallback.is_none(),
            "after {dialed}: {:?}",
            good.fallback
        );
    }
    assert_eq!(host.metrics.fallbacks(), 12);
}

#[test]
fn what_a_script_asks_is_kept_within_bounds_for_its_record() {
    // The event's world (what a shadow run or a replay is given again) keeps at most
    // ANSWERS_KEPT answers and key-value reads, none for an argument longer than a name.
    let host = host_at(MONDAY_10AM_SYDNEY);
    install(&host, "misbehave", test_components::MISBEHAVE);
    let location = host.services.config.load().location("sydney").cloned();
    let mut world = EventWorld::live(host.services.clock.now());
    let (decision, _) = host.route_in(
        &mut world,
        "misbehave",
        None,
        location.as_ref(),
        &call("ask-many"),
        &Event::Incoming,
    );
    assert!(decision.fallback.is_none(), "{:?}", decision.fallback);
    assert_eq!(world.answers.len(), wasmpbx::script::engine::ANSWERS_KEPT);
    assert_eq!(world.kv.len(), wasmpbx::script::engine::ANSWERS_KEPT);
    let longest = world.answers.iter().map(|a| a.arg.len()).max().unwrap_or(0);
    assert!(
        longest <= 256,
        "an answer kept for a {longest}-byte argument"
    );
    assert!(world.kv.iter().all(|(key, _)| key.len() <= 256));
}

#[test]
fn a_loop_after_the_host_sat_idle_still_meets_its_deadline() {
    let limits = Limits {
        deadline: std::time::Duration::from_millis(20),
        ..limits()
    };
    let host = host_at_with(MONDAY_10AM_SYDNEY, limits);
    install(&host, "misbehave", test_components::MISBEHAVE);
    let location = host.services.config.load().location("sydney").cloned();
    // Long enough for the deadline's clock to fall asleep (after 100 ms with no store):
    // the looping script's store must wake it.
    std::thread::sleep(std::time::Duration::from_millis(400));
    let started = std::time::Instant::now();
    let (decision, _) = host.route(
        "misbehave",
        None,
        location.as_ref(),
        &call("loop"),
        &Event::Incoming,
    );
    let elapsed = started.elapsed();
    let fallback = decision.fallback.expect("the loop is stopped");
    assert_eq!(fallback.cause, "deadline", "{}", fallback.message);
    assert!(
        elapsed < std::time::Duration::from_secs(1),
        "stopped after {elapsed:?}"
    );
}

#[test]
fn a_missing_script_or_export_falls_back() {
    let host = host_at(MONDAY_10AM_SYDNEY);
    install(&host, "flip-policy", test_components::FLIP_POLICY);
    let location = host.services.config.load().location("sydney").cloned();
    let (decision, _) = host.route(
        "nowhere",
        None,
        location.as_ref(),
        &call("+61290000001"),
        &Event::Incoming,
    );
    assert_eq!(decision.fallback.as_ref().map(|f| f.cause), Some("missing"));
    let (decision, _) = host.route(
        "flip-policy",
        None,
        location.as_ref(),
        &call("+61290000001"),
        &Event::Incoming,
    );
    assert_eq!(
        decision.fallback.as_ref().map(|f| f.cause),
        Some("no-export")
    );
    // Without a location there is no fallback number: the call is refused, not dropped.
    let (decision, _) = host.route("nowhere", None, None, &call("2002"), &Event::Incoming);
    assert_eq!(
        decision.actions,
        vec![Action::Reject {
            status: 503,
            reason: Some("Routing Unavailable".into())
        }]
    );
}

#[test]
fn bad_files_are_refused_with_a_clear_reason() {
    let host = host_at(MONDAY_10AM_SYDNEY);
    let load = |bytes: &[u8]| {
        host.engine
            .load("x", bytes, &host.services)
            .map(|_| ())
            .unwrap_err()
    };
    let component = test_components::bytes(test_components::LISTEN);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", Vec::new(), "empty"),
        ("garbage", b"definitely not wasm".to_vec(), "magic bytes"),
        (
            "core module",
            b"\0asm\x01\0\0\0".to_vec(),
            "core WebAssembly module",
        ),
        (
            "half-written",
            component[..component.len() / 2].to_vec(),
            "not a WebAssembly component",
        ),
        (
            "other world",
            test_components::bytes(test_components::OTHER_WORLD),
            "exports neither wasmpbx:script/router@0.2.0",
        ),
        (
            "old version",
            test_components::bytes(test_components::OLD_VERSION),
            "another version of the WIT package",
        ),
    ];
    for (what, bytes, expected) in cases {
        let error: LoadError = load(&bytes);
        assert!(error.to_string().contains(expected), "{what}: {error}");
    }
}

#[test]
fn calls_keep_the_version_they_started_with() {
    let host = host_at(MONDAY_10AM_SYDNEY);
    install(&host, "router", test_components::LISTEN);
    let location = host.services.config.load().location("sydney").cloned();
    let (_, pinned) = host.route(
        "router",
        None,
        location.as_ref(),
        &call("+61290000001"),
        &Event::Incoming,
    );
    let listen_hash = pinned.as_ref().unwrap().hash.clone();
    install(&host, "router", test_components::FRONT_DOOR);
    let failed = Event::ForwardFailed {
        target: ForwardTarget::Number("+61290000098".into()),
        status: 486,
        reason: "Busy Here".into(),
    };
    let (decision, _) = host.route(
        "router",
        pinned.as_ref(),
        location.as_ref(),
        &call("+61290000001"),
        &failed,
    );
    assert_eq!(
        decision.script.unwrap().hash,
        listen_hash,
        "the in-flight call stays on listen"
    );
    assert!(matches!(
        decision.actions[0],
        Action::Reject { status: 486, .. }
    ));
    let (decision, _) = host.route(
        "router",
        None,
        location.as_ref(),
        &call("+61290000001"),
        &Event::Incoming,
    );
    assert_ne!(
        decision.script.unwrap().hash,
        listen_hash,
        "a new call gets front-door"
    );
}

#[test]
fn scripts_read_and_write_their_locations_key_value_store() {
    let kv = Arc::new(MemoryStore::new());
    let host = host_with(
        MONDAY_10AM_SYDNEY,
        kv.clone(),
        Arc::new(MemoryDirectory::new()),
    );
    install(&host, "misbehave", test_components::MISBEHAVE);
    let location = host.services.config.load().location("sydney").cloned();
    for expected in ["1", "2"] {
        let (decision, _) = host.route(
            "misbehave",
            None,
            location.as_ref(),
            &call("kv-write"),
            &Event::Incoming,
        );
        assert_eq!(
            decision.actions[0],
            Action::SetTag {
                name: "count".into(),
                value: expected.into()
            }
        );
    }
    assert_eq!(kv.get("sydney", "count").unwrap().as_deref(), Some("2"));
}

/// Every event gets a fresh instance: nothing a script leaves in its memory reaches the
/// next event (the pooling allocator puts back each page the last instance touched).
#[test]
fn no_event_sees_what_the_last_one_left_in_memory() {
    let host = host_with(
        MONDAY_10AM_SYDNEY,
        Arc::new(MemoryStore::new()),
        Arc::new(MemoryDirectory::new()),
    );
    install(&host, "misbehave", test_components::MISBEHAVE);
    let location = host.services.config.load().location("sydney").cloned();
    for _ in 0..50 {
        let (decision, _) = host.route(
            "misbehave",
            None,
            location.as_ref(),
            &call("global"),
            &Event::Incoming,
        );
        assert_eq!(
            decision.actions[0],
            Action::SetTag {
                name: "events-seen".into(),
                value: "1".into()
            }
        );
    }
}

#[test]
fn a_shadow_run_sees_the_live_events_clock_and_entries_and_writes_nothing() {
    let kv = Arc::new(MemoryStore::new());
    let host = host_with(
        MONDAY_10AM_SYDNEY,
        kv.clone(),
        Arc::new(MemoryDirectory::new()),
    );
    install(&host, "misbehave", test_components::MISBEHAVE);
    install(&host, "front-door", test_components::FRONT_DOOR);
    let location = host.services.config.load().location("sydney").cloned();
    let count_tag = |actions: &[Action]| {
        actions.iter().find_map(|a| match a {
            Action::SetTag { name, value } if name == "count" => Some(value.clone()),
            _ => None,
        })
    };

    // The live event reads `count` (unset) and writes 1.
    let monday: jiff::Timestamp = MONDAY_10AM_SYDNEY.parse().unwrap();
    let mut world = EventWorld::live(monday);
    let (decision, _) = host.route_in(
        &mut world,
        "misbehave",
        None,
        location.as_ref(),
        &call("kv-write"),
        &Event::Incoming,
    );
    assert_eq!(count_tag(&decision.actions).as_deref(), Some("1"));
    assert_eq!(world.kv, [("count".to_owned(), None)], "what it found");
    assert_eq!(kv.get("sydney", "count").unwrap().as_deref(), Some("1"));
    // A shadow of the same event finds what the live one found, and writes nothing.
    for _ in 0..2 {
        let (version, shadow) =
            host.shadow("misbehave", &call("kv-write"), &Event::Incoming, &world);
        assert_eq!(count_tag(&shadow.unwrap()).as_deref(), Some("1"));
        assert_eq!(version.unwrap().name, "misbehave");
    }
    assert_eq!(kv.get("sydney", "count").unwrap().as_deref(), Some("1"));

    // front-door in the world of an event that read `override = closed` on a Sunday:
    // closed, though the store has no override and the host's clock says Monday 10:00.
    let hours_tag = |world: &EventWorld| {
        let (_, actions) =
            host.shadow("front-door", &call("+61290000001"), &Event::Incoming, world);
        actions.unwrap().into_iter().find_map(|a| match a {
            Action::SetTag { name, value } if name == "hours" => Some(value),
            _ => None,
        })
    };
    assert_eq!(
        hours_tag(&EventWorld::live(monday)).as_deref(),
        Some("open")
    );
    let mut closed = EventWorld::live(monday);
    closed.kv = vec![("override".into(), Some("closed".into()))];
    assert_eq!(hours_tag(&closed).as_deref(), Some("override-closed"));
    let sunday = EventWorld::live("2026-11-21T23:00:00Z".parse().unwrap());
    assert_eq!(hours_tag(&sunday).as_deref(), Some("closed"));
    // A live event notes each clock reading; a shadow gets those, not the event's start.
    let mut live = EventWorld::live(monday);
    host.route_in(
        &mut live,
        "front-door",
        None,
        location.as_ref(),
        &call("+61290000001"),
        &Event::Incoming,
    );
    assert_eq!(live.readings.len(), 1, "front-door reads the clock once");
    let mut read_on_sunday = EventWorld::live(monday);
    read_on_sunday.readings = sunday.now.into_iter().collect();
    assert_eq!(hours_tag(&read_on_sunday).as_deref(), Some("closed"));
    // A shadow that is not loaded is a failure to report, not a panic.
    let (version, missing) = host.shadow("nowhere", &call("x"), &Event::Incoming, &sunday);
    assert!(version.is_none());
    assert_eq!(missing.unwrap_err().cause(), "missing");
}

fn flip_request(user: &str, emergency: bool, candidates: &[&str]) -> FlipRequest {
    FlipRequest {
        user_id: user.into(),
        requesting_device: "desk".into(),
        kind: FlipKind::Push,
        trigger: Trigger::PushCode,
        call: CallFacts {
            call_id: "c1".into(),
            remote_party: "+61400000001".into(),
            direction: Direction::Inbound,
            duration_ms: 30_000,
            emergency,
            location: Some("sydney".into()),
            current_device: "desk".into(),
        },
        candidates: candidates
            .iter()
            .map(|n| DeviceInfo {
                name: (*n).into(),
                user_id: user.into(),
                user_agent: None,
                transport: "udp".into(),
            })
            .collect(),
    }
}

#[test]
fn flip_policy_decides_each_case() {
    let host = host_at(MONDAY_10AM_SYDNEY);
    install(&host, "flip-policy", test_components::FLIP_POLICY);
    install(&host, "misbehave", test_components::MISBEHAVE);
    let decide = |request: &FlipRequest| host.decide_flip("flip-policy", request);
    assert_eq!(
        decide(&flip_request("alice", false, &["mobile"])).unwrap(),
        FlipDecision::Allow(Allow {
            targets: vec!["mobile".into()],
            ring_timeout_ms: 0
        })
    );
    assert!(
        matches!(decide(&flip_request("alice", true, &["mobile"])).unwrap(),
        FlipDecision::Deny { reason } if reason.contains("emergency"))
    );
    assert!(
        matches!(decide(&flip_request("kim", false, &["mobile"])).unwrap(),
        FlipDecision::Deny { reason } if reason.contains("kiosk"))
    );
    assert_eq!(
        decide(&flip_request("alice", false, &["lobby-1"])).unwrap(),
        FlipDecision::RequirePin(Allow {
            targets: vec!["lobby-1".into()],
            ring_timeout_ms: 0
        })
    );
    assert!(matches!(
        decide(&flip_request("alice", false, &[])).unwrap(),
        FlipDecision::Deny { .. }
    ));
    // A trapping policy is an error the caller turns into a denial.
    let failure = host
        .decide_flip("misbehave", &flip_request("trap", false, &["mobile"]))
        .unwrap_err();
    assert_eq!(failure.cause(), "trap");
    assert_eq!(
        host.decide_flip("nowhere", &flip_request("alice", false, &["m"]))
            .unwrap_err()
            .cause(),
        "missing"
    );
}
