//! The registration with a carrier and the health checks, on a fake clock, with the
//! carrier's answers written by hand.

use std::path::Path;
use std::time::{Duration, Instant};

use super::*;
use crate::sip::transaction::Output;

const EDGE: &str = "127.0.0.5:5060";
const LOCAL: &str = "127.0.0.1:5060";

struct Carrier {
    trunks: Trunks,
    layer: TransactionLayer,
    entropy: Entropy,
    now: Instant,
    /// Requests the trunks sent (retransmissions left out), oldest first.
    sent: Vec<Request>,
}

fn local() -> crate::sip::local::LocalAddrs {
    crate::sip::local::LocalAddrs::udp(LOCAL.parse().unwrap())
}

/// The trunk "carrier" (account acct1, `extra` more keys), started and resolved to
/// [`EDGE`] at the returned instant.
fn carrier_trunks(extra: &str) -> (Trunks, Instant) {
    let text = format!(
        "[[trunks]]\nname = \"carrier\"\nhost = \"carrier.test\"\nusername = \"acct1\"\npassword = \"secret\"\n{extra}"
    );
    let config = Config::parse(&text, Path::new("t.toml")).unwrap();
    let now = wasmpbx_types::clock::monotonic_now();
    let mut trunks = Trunks::new(&config);
    trunks.start(now);
    let target = ResolvedTarget {
        addr: EDGE.parse().unwrap(),
        priority: 0,
        weight: 0,
    };
    trunks.resolved(now, "carrier", Ok(vec![target]));
    (trunks, now)
}

impl Carrier {
    fn new(extra: &str) -> Self {
        let (trunks, now) = carrier_trunks(extra);
        let mut carrier = Self {
            trunks,
            layer: TransactionLayer::new(),
            entropy: Entropy::new(1),
            now,
            sent: Vec::new(),
        };
        carrier.tick();
        carrier
    }

    fn tick(&mut self) {
        self.layer.handle_timeout(self.now);
        self.trunks
            .handle_timeout(self.now, &mut self.layer, local(), &mut self.entropy, true);
        self.pump();
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.tick();
    }

    fn pump(&mut self) {
        while let Some(output) = self.layer.poll_output() {
            match output {
                Output::Transmit { bytes, .. } => {
                    let Ok(SipMessage::Request(request)) = message::parse(&bytes) else {
                        continue;
                    };
                    let branch = |r: &Request| message::branch(&SipMessage::Request(r.clone()));
                    if !self.sent.iter().any(|s| branch(s) == branch(&request)) {
                        self.sent.push(request);
                    }
                }
                Output::Response { txn, response } => {
                    let passed_on = self.trunks.handle_response(
                        self.now,
                        &mut self.layer,
                        local(),
                        &mut self.entropy,
                        txn,
                        response,
                    );
                    assert!(passed_on.is_none(), "the trunks' own requests stay theirs");
                }
                Output::Timeout { txn } => {
                    assert!(self.trunks.handle_txn_timeout(self.now, txn).is_none());
                }
                _ => {}
            }
        }
    }

    fn last(&self, method: &str) -> Request {
        self.sent
            .iter()
            .rev()
            .find(|r| r.method.to_string() == method)
            .cloned()
            .unwrap_or_else(|| panic!("no {method} sent"))
    }

    fn count(&self, method: &str) -> usize {
        self.sent
            .iter()
            .filter(|r| r.method.to_string() == method)
            .count()
    }

    fn answer(&mut self, request: &Request, code: u16, headers: &str) {
        let response = message::response_to(request, code, Some("edge"));
        let text = String::from_utf8(message::serialize(&SipMessage::Response(response))).unwrap();
        let (status, rest) = text.split_once("\r\n").unwrap();
        let bytes = format!("{status}\r\n{headers}{rest}");
        let source = Peer {
            transport: Transport::Udp,
            addr: EDGE.parse().unwrap(),
        };
        let message = message::parse(bytes.as_bytes()).unwrap();
        self.layer.handle_message(self.now, message, source);
        self.pump();
    }

    fn registration(&self) -> RegistrationStatus {
        self.trunks.status(self.now)[0]
            .registration
            .clone()
            .unwrap()
    }
}

const CHALLENGE: &str =
    "WWW-Authenticate: Digest realm=\"carrier.test\", nonce=\"abc\", qop=\"auth\"\r\n";

#[test]
fn registers_answering_the_challenge_and_refreshes_before_expiry() {
    let mut c = Carrier::new("register = true\nregister_expires = 600");
    let first = c.last("REGISTER");
    assert_eq!(first.uri.to_string(), "sip:carrier.test");
    assert_eq!(c.registration().state, RegistrationState::Registering);
    c.answer(&first, 401, CHALLENGE);
    let second = c.last("REGISTER");
    let m = SipMessage::Request(second.clone());
    assert_eq!(message::cseq(&m).map(|(n, _)| n), Some(2));
    assert!(
        message::header_value(&m, "Authorization")
            .unwrap()
            .contains("username=\"acct1\"")
    );
    c.answer(
        &second,
        200,
        "Contact: <sip:acct1@127.0.0.1:5060>;expires=120\r\n",
    );
    let status = c.registration();
    assert_eq!(status.state, RegistrationState::Registered);
    assert_eq!(status.expires_in_s, Some(120));
    // Refreshed at half the granted time (a minute before the end would be later).
    c.advance(Duration::from_secs(59));
    assert_eq!(c.count("REGISTER"), 2);
    c.advance(Duration::from_secs(1));
    assert_eq!(c.count("REGISTER"), 3);
    let refresh = SipMessage::Request(c.last("REGISTER"));
    assert_eq!(
        message::call_id(&refresh),
        message::call_id(&m),
        "one Call-ID per registration"
    );
    assert_eq!(message::cseq(&refresh).map(|(n, _)| n), Some(3));
}

#[test]
fn a_registration_stays_on_its_registrar_among_equals() {
    let mut c = Carrier::new("register = true");
    let equal = |addr: &str| ResolvedTarget {
        addr: addr.parse().unwrap(),
        priority: 0,
        weight: 0,
    };
    c.trunks.resolved(
        c.now,
        "carrier",
        Ok(vec![equal(EDGE), equal("127.0.0.9:5060")]),
    );
    let call_id = |r: &Request| message::call_id(&SipMessage::Request(r.clone()));
    let first = c.last("REGISTER");
    c.answer(
        &first,
        200,
        "Contact: <sip:acct1@127.0.0.1:5060>;expires=120\r\n",
    );
    for _ in 0..10 {
        c.advance(Duration::from_secs(60));
        let refresh = c.last("REGISTER");
        assert_eq!(
            call_id(&refresh),
            call_id(&first),
            "one Call-ID, one registrar"
        );
        c.answer(
            &refresh,
            200,
            "Contact: <sip:acct1@127.0.0.1:5060>;expires=120\r\n",
        );
    }
    assert_eq!(c.count("REGISTER"), 11);
}

#[test]
fn wrong_credentials_fail_once_and_back_off_with_a_cap() {
    let mut c = Carrier::new("register = true");
    let first = c.last("REGISTER");
    c.answer(&first, 401, CHALLENGE);
    let second = c.last("REGISTER");
    c.answer(&second, 401, CHALLENGE);
    assert_eq!(
        c.count("REGISTER"),
        2,
        "a loop of challenges is not followed"
    );
    let status = c.registration();
    assert_eq!(status.state, RegistrationState::Failing);
    assert!(
        status
            .last_reason
            .unwrap()
            .contains("refused the credentials")
    );
    assert_eq!(status.next_try_in_s, Some(5));
    let mut waits = Vec::new();
    for _ in 0..8 {
        let wait = c.registration().next_try_in_s.unwrap();
        waits.push(wait);
        c.advance(Duration::from_secs(wait));
        let request = c.last("REGISTER");
        c.answer(&request, 403, "");
    }
    assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300]);
}

#[test]
fn a_carrier_calling_every_answer_stale_is_answered_a_few_times_not_for_ever() {
    let mut c = Carrier::new("register = true");
    let stale = "WWW-Authenticate: Digest realm=\"carrier.test\", nonce=\"n\", qop=\"auth\", stale=true\r\n";
    let first = c.last("REGISTER");
    c.answer(&first, 401, CHALLENGE);
    for _ in 0..10 {
        let request = c.last("REGISTER");
        c.answer(&request, 401, stale);
    }
    assert_eq!(
        c.count("REGISTER"),
        4,
        "the first answer and two stale ones"
    );
    let status = c.registration();
    assert_eq!(status.state, RegistrationState::Failing);
    assert!(status.last_reason.unwrap().contains("stale"));
}

#[test]
fn a_registrar_wanting_a_longer_expiry_gets_its_min_expires_at_once() {
    // RFC 3261 §10.2.8: 423 Interval Too Brief with Min-Expires.
    let mut c = Carrier::new("register = true\nregister_expires = 60");
    let first = c.last("REGISTER");
    let expires = |r: &Request| message::header_value(&SipMessage::Request(r.clone()), "Expires");
    assert_eq!(expires(&first).as_deref(), Some("60"));
    c.answer(&first, 423, "Min-Expires: 300\r\n");
    c.tick();
    assert_eq!(c.count("REGISTER"), 2, "asked again at once");
    let second = c.last("REGISTER");
    assert_eq!(expires(&second).as_deref(), Some("300"));
    let ids = |r: &Request| {
        let m = SipMessage::Request(r.clone());
        (message::call_id(&m), message::cseq(&m).map(|(n, _)| n))
    };
    let ((first_id, first_cseq), (second_id, second_cseq)) = (ids(&first), ids(&second));
    assert_eq!(second_id, first_id, "the same registration (one Call-ID)");
    assert_eq!(second_cseq, first_cseq.map(|n| n + 1));
    assert_eq!(c.registration().state, RegistrationState::Registering);
    c.answer(
        &second,
        200,
        "Contact: <sip:acct1@127.0.0.1:5060>;expires=300\r\n",
    );
    assert_eq!(c.registration().state, RegistrationState::Registered);
    // A 423 asking for no more than was asked is a failure, not a loop.
    let mut c = Carrier::new("register = true\nregister_expires = 600");
    let first = c.last("REGISTER");
    c.answer(&first, 423, "Min-Expires: 300\r\n");
    c.tick();
    assert_eq!(c.count("REGISTER"), 1);
    assert_eq!(c.registration().state, RegistrationState::Failing);
}

#[test]
fn a_5xx_to_register_is_a_failure_with_its_reason() {
    let mut c = Carrier::new("register = true");
    let first = c.last("REGISTER");
    c.answer(&first, 503, "");
    let status = c.registration();
    assert_eq!(status.state, RegistrationState::Failing);
    assert_eq!(
        status.last_reason.as_deref(),
        Some("503 Service Unavailable")
    );
}

#[test]
fn a_registrar_asking_to_wait_is_not_asked_again_before_its_retry_after() {
    let mut c = Carrier::new("register = true");
    let first = c.last("REGISTER");
    c.answer(&first, 503, "Retry-After: 60\r\n");
    // The back-off alone would try again after 5 s.
    c.advance(Duration::from_secs(30));
    assert_eq!(c.count("REGISTER"), 1, "not before the Retry-After");
    c.advance(Duration::from_secs(31));
    assert_eq!(c.count("REGISTER"), 2, "after it");
}

#[test]
fn an_unknown_algorithm_is_refused_with_a_reason() {
    let mut c = Carrier::new("register = true");
    let first = c.last("REGISTER");
    c.answer(
        &first,
        401,
        "WWW-Authenticate: Digest realm=\"carrier.test\", nonce=\"abc\", algorithm=SHA-512-256\r\n",
    );
    assert_eq!(c.count("REGISTER"), 1);
    let reason = c.registration().last_reason.unwrap();
    assert!(reason.contains("unsupported algorithm"), "{reason}");
}

#[test]
fn options_take_a_silent_target_out_and_an_answer_puts_it_back() {
    let mut c = Carrier::new("options_interval = 30");
    assert_eq!(c.count("OPTIONS"), 1);
    c.advance(Duration::from_secs(32));
    let status = &c.trunks.status(c.now)[0].targets[0];
    assert_eq!(status.state, Health::Down);
    assert_eq!(status.last_failure.as_deref(), Some("no answer to OPTIONS"));
    c.advance(Duration::from_secs(30));
    // The next check is out, unanswered yet: the target stays out of rotation (a call
    // would wait its share of Timer B on a target known dead).
    assert_eq!(c.count("OPTIONS"), 2);
    assert!(!c.trunks.status(c.now)[0].targets[0].in_rotation);
    let probe = c.last("OPTIONS");
    c.answer(&probe, 200, "");
    let status = &c.trunks.status(c.now)[0].targets[0];
    assert_eq!(status.state, Health::Up);
    assert!(status.in_rotation);
}

#[test]
fn a_reload_during_a_health_check_does_not_stop_the_checks() {
    let mut c = Carrier::new("options_interval = 30");
    assert_eq!(c.count("OPTIONS"), 1, "a check under way");
    // The password changes (same host) while that check waits for its answer.
    let changed = Config::parse(
        "[[trunks]]\nname = \"carrier\"\nhost = \"carrier.test\"\nusername = \"acct1\"\n\
password = \"rotated\"\noptions_interval = 30\n",
        Path::new("t.toml"),
    )
    .unwrap();
    c.trunks.reconfigure(&changed, c.now);
    c.tick();
    c.advance(Duration::from_secs(32));
    c.advance(Duration::from_secs(30));
    assert!(
        c.count("OPTIONS") >= 2,
        "checks go on: {}",
        c.count("OPTIONS")
    );
}

#[test]
fn only_the_home_shard_probes_and_registers() {
    // The other shards hear of the targets' health from the home shard's news: were each
    // to probe, every target would get one OPTIONS per shard per interval.
    let (mut other, now) = carrier_trunks("register = true\noptions_interval = 30");
    assert_eq!(other.poll_timeout(false), None);
    let mut layer = TransactionLayer::new();
    other.handle_timeout(now, &mut layer, local(), &mut Entropy::new(1), false);
    assert!(
        layer.poll_output().is_none(),
        "nothing sent by a shard not home"
    );
    // The home shard does both at once.
    let c = Carrier::new("register = true\noptions_interval = 30");
    assert_eq!((c.count("OPTIONS"), c.count("REGISTER")), (1, 1));
}

#[test]
fn calls_spread_by_weight_within_a_priority_and_failed_targets_come_last() {
    let config = Config::parse(
        "[[trunks]]\nname = \"c\"\nhost = \"carrier.test\"\n",
        Path::new("t.toml"),
    )
    .unwrap();
    let now = wasmpbx_types::clock::monotonic_now();
    let mut trunks = Trunks::new(&config);
    let mut entropy = Entropy::new(7);
    let target = |a: &str, priority, weight| ResolvedTarget {
        addr: a.parse().unwrap(),
        priority,
        weight,
    };
    let (heavy, light, backup) = ("127.0.0.5:5060", "127.0.0.6:5060", "127.0.0.7:5060");
    let targets = vec![
        target(light, 10, 10),
        target(heavy, 10, 90),
        target(backup, 20, 0),
    ];
    trunks.resolved(now, "c", Ok(targets));
    let mut heavy_first = 0;
    for _ in 0..1000 {
        let order = trunks.candidates("c", now, &mut entropy);
        assert_eq!(order.len(), 3);
        assert_eq!(
            order[2],
            backup.parse().unwrap(),
            "a lower priority only after"
        );
        if order[0] == heavy.parse().unwrap() {
            heavy_first += 1;
        }
    }
    // 91 of 102 (weights + 1): about 892 of 1000.
    assert!((850..=935).contains(&heavy_first), "{heavy_first}");
    trunks.target_failed("c", heavy.parse().unwrap(), "503", None, now);
    for _ in 0..20 {
        let order = trunks.candidates("c", now, &mut entropy);
        assert_eq!(order[0], light.parse().unwrap());
        assert_eq!(order[2], heavy.parse().unwrap(), "held out, tried last");
    }
    // After the hold, it is back in rotation.
    let later = now + FAILED_TARGET_HOLD;
    let order = trunks.candidates("c", later, &mut entropy);
    assert!(order[..2].contains(&heavy.parse().unwrap()));
    // A resolver failure keeps the last good targets.
    trunks.resolved(later, "c", Err("SERVFAIL".into()));
    assert_eq!(trunks.candidates("c", later, &mut entropy).len(), 3);
    assert_eq!(
        trunks.status(later)[0].resolve_error.as_deref(),
        Some("SERVFAIL")
    );
}

#[test]
fn inbound_names_and_a_registering_trunks_targets_identify_its_calls() {
    let config = Config::parse(
        "[[trunks]]\nname = \"named\"\nhost = \"a.example\"\ninbound = [\"edge.example\", \"10.0.0.0/8\"]\n\
         [[trunks]]\nname = \"registered\"\nhost = \"b.example\"\nusername = \"u\"\npassword = \"p\"\nregister = true\n\
         [[trunks]]\nname = \"plain\"\nhost = \"c.example\"\n",
        Path::new("t.toml"),
    )
    .unwrap();
    let now = wasmpbx_types::clock::monotonic_now();
    let mut trunks = Trunks::new(&config);
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let target = |a: &str| ResolvedTarget {
        addr: a.parse().unwrap(),
        priority: 0,
        weight: 0,
    };
    trunks.resolved(now, "registered", Ok(vec![target("192.0.2.20:5060")]));
    trunks.resolved(now, "plain", Ok(vec![target("192.0.2.30:5060")]));
    assert_eq!(
        trunks
            .trunk_of_source(ip("10.1.2.3"))
            .map(|t| t.name.as_str()),
        Some("named")
    );
    assert!(
        trunks.trunk_of_source(ip("192.0.2.10")).is_none(),
        "not resolved yet"
    );
    trunks.inbound_resolved("named", vec![ip("192.0.2.10")]);
    assert_eq!(
        trunks
            .trunk_of_source(ip("192.0.2.10"))
            .map(|t| t.name.as_str()),
        Some("named")
    );
    assert_eq!(
        trunks
            .trunk_of_source(ip("192.0.2.20"))
            .map(|t| t.name.as_str()),
        Some("registered"),
        "a carrier calls our registration from its edge"
    );
    assert!(
        trunks.trunk_of_source(ip("192.0.2.30")).is_none(),
        "a trunk that does not register takes calls only from its inbound list"
    );
}

#[test]
fn a_challenge_for_another_realm_is_not_answered() {
    let mut c = Carrier::new("register = true\nrealm = \"sip.carrier.example\"");
    let first = c.last("REGISTER");
    c.answer(&first, 401, CHALLENGE);
    assert_eq!(c.count("REGISTER"), 1);
    let reason = c.registration().last_reason.unwrap();
    assert!(reason.contains("realm \"carrier.test\""), "{reason}");
}

#[test]
fn a_reload_keeps_an_unchanged_trunk_registered_and_starts_a_new_or_changed_one() {
    let mut c = Carrier::new("register = true\nregister_expires = 600");
    let first = c.last("REGISTER");
    c.answer(&first, 401, CHALLENGE);
    let second = c.last("REGISTER");
    c.answer(
        &second,
        200,
        "Contact: <sip:acct1@127.0.0.1:5060>;expires=600\r\n",
    );
    assert_eq!(c.registration().state, RegistrationState::Registered);
    let text = |extra: &str| {
        format!(
            "[[trunks]]\nname = \"carrier\"\nhost = \"carrier.test\"\nusername = \"acct1\"\n\
password = \"secret\"\nregister = true\nregister_expires = 600\n{extra}"
        )
    };
    let parse = |t: &str| Config::parse(t, Path::new("t.toml")).unwrap();

    // The same trunk and a new one at an address: the first stays registered, no
    // REGISTER again; the second is probed.
    let with_backup = parse(&text(
        "[[trunks]]\nname = \"backup\"\nuri = \"sip:127.0.0.6:5060\"\noptions_interval = 30\n",
    ));
    c.trunks.reconfigure(&with_backup, c.now);
    c.tick();
    assert_eq!(c.count("REGISTER"), 2, "no new registration");
    let status = c.trunks.status(c.now);
    assert_eq!(
        status[0].registration.as_ref().unwrap().state,
        RegistrationState::Registered
    );
    assert_eq!(status[1].name, "backup");
    assert_eq!(c.count("OPTIONS"), 1, "the new trunk is probed at once");

    // A changed password: the trunk registers again with it.
    let changed = parse(&text("").replace("\"secret\"", "\"rotated\""));
    c.trunks.reconfigure(&changed, c.now);
    c.tick();
    assert_eq!(c.trunks.status(c.now).len(), 1, "backup removed");
    let again = c.last("REGISTER");
    assert_eq!(c.count("REGISTER"), 3, "registering again");
    assert!(
        message::header_value(&SipMessage::Request(again), "Authorization").is_none(),
        "a fresh registration starts unauthenticated"
    );
}

#[test]
fn a_target_found_down_or_back_is_news_once_and_other_shards_take_it_quietly() {
    let config = Config::parse(
        "[[trunks]]\nname = \"c\"\nhost = \"carrier.test\"\n",
        Path::new("t.toml"),
    )
    .unwrap();
    let now = wasmpbx_types::clock::monotonic_now();
    let target = |a: &str| ResolvedTarget {
        addr: a.parse().unwrap(),
        priority: 10,
        weight: 10,
    };
    let (first, second) = ("127.0.0.5:5060", "127.0.0.6:5060");
    let (mut here, mut there) = (Trunks::new(&config), Trunks::new(&config));
    for trunks in [&mut here, &mut there] {
        trunks.resolved(now, "c", Ok(vec![target(first), target(second)]));
    }
    here.target_failed("c", first.parse().unwrap(), "408", None, now);
    here.target_failed("c", first.parse().unwrap(), "408 again", None, now);
    let news = here.take_news();
    assert_eq!(
        news.len(),
        1,
        "a change is news, not each failure: {news:?}"
    );
    there.heard(&news, now);
    assert!(
        there.take_news().is_empty(),
        "heard news is not passed on again"
    );
    let mut entropy = Entropy::new(3);
    for trunks in [&mut here, &mut there] {
        let order = trunks.candidates("c", now, &mut entropy);
        assert_eq!(order[0], second.parse().unwrap(), "the failed target last");
        assert_eq!(trunks.status(now)[0].targets[0].state, Health::Down);
    }
    here.target_answered("c", first.parse().unwrap());
    there.heard(&here.take_news(), now);
    assert_eq!(there.status(now)[0].targets[0].state, Health::Up);
}

#[test]
fn a_retry_after_holds_a_target_on_every_shard_whatever_its_health_checks_say() {
    let config = Config::parse(
        "[[trunks]]\nname = \"c\"\nhost = \"carrier.test\"\noptions_interval = 30\n",
        Path::new("t.toml"),
    )
    .unwrap();
    let now = wasmpbx_types::clock::monotonic_now();
    let edge: std::net::SocketAddr = "127.0.0.5:5060".parse().unwrap();
    let resolved = ResolvedTarget {
        addr: edge,
        priority: 10,
        weight: 10,
    };
    let (mut here, mut there) = (Trunks::new(&config), Trunks::new(&config));
    for trunks in [&mut here, &mut there] {
        trunks.resolved(now, "c", Ok(vec![resolved]));
    }
    here.target_failed("c", edge, "503", Some(Duration::from_secs(120)), now);
    there.heard(&here.take_news(), now);
    // Overloaded is not gone: its health check answers, and it is still left alone.
    here.target_answered("c", edge);
    there.heard(&here.take_news(), now);
    for trunks in [&here, &there] {
        let in_rotation =
            |after: u64| trunks.status(now + Duration::from_secs(after))[0].targets[0].in_rotation;
        assert!(!in_rotation(60), "held for the Retry-After");
        assert!(in_rotation(121), "back after it");
    }
    // A Retry-After of a day holds an hour at most.
    here.target_failed("c", edge, "503", Some(Duration::from_secs(86_400)), now);
    here.target_answered("c", edge);
    assert!(here.status(now + Duration::from_secs(3601))[0].targets[0].in_rotation);
}
