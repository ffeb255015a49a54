use std::path::Path;

use super::*;
use crate::entropy::Entropy;
use crate::sip::digest::{Algorithm, client_response};

const NOW: i64 = 1_790_000_000;

fn registrar() -> Registrar {
    let config = Config::parse(
        "[sip]\ndomain = \"pbx.test\"\n[[users]]\nid = \"alice\"\nextension = \"2001\"\npassword = \"s3cret\"\n",
        Path::new("t.toml"),
    )
    .unwrap();
    Registrar::new(Arc::new(config), [1; 32])
}

fn peer(port: u16) -> Peer {
    Peer {
        transport: Transport::Udp,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

fn register(user: &str, contact: &str, ua: &str, cseq: u32, auth: Option<String>) -> Request {
    register_in(&format!("reg-{contact}"), user, contact, ua, cseq, auth)
}

/// [`register`] with the Call-ID given.
fn register_in(
    call_id: &str,
    user: &str,
    contact: &str,
    ua: &str,
    cseq: u32,
    auth: Option<String>,
) -> Request {
    let mut text = format!(
        "REGISTER sip:pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-{cseq}\r\n\
From: <sip:{user}@pbx.test>;tag=f\r\nTo: <sip:{user}@pbx.test>\r\nCall-ID: {call_id}\r\n\
CSeq: {cseq} REGISTER\r\nContact: {contact}\r\nUser-Agent: {ua}\r\nExpires: 600\r\n"
    );
    if let Some(auth) = auth {
        text.push_str(&format!("Authorization: {auth}\r\n"));
    }
    text.push_str("Content-Length: 0\r\n\r\n");
    match message::parse(text.as_bytes()).unwrap() {
        SipMessage::Request(r) => r,
        _ => unreachable!(),
    }
}

fn nonce_of(response: &Response) -> String {
    let text =
        String::from_utf8(message::serialize(&SipMessage::Response(response.clone()))).unwrap();
    let start = text.find("nonce=\"").unwrap() + 7;
    text[start..].split('"').next().unwrap().to_owned()
}

fn answer(user: &str, password: &str, nonce: &str, nc: u32) -> String {
    let nc = format!("{nc:08x}");
    let response = client_response(
        Algorithm::Md5,
        user,
        "pbx.test",
        password,
        "REGISTER",
        "sip:pbx.test",
        nonce,
        &nc,
        "cn",
    );
    format!(
        "Digest username=\"{user}\", realm=\"pbx.test\", nonce=\"{nonce}\", uri=\"sip:pbx.test\", response=\"{response}\", algorithm=MD5, qop=auth, nc={nc}, cnonce=\"cn\""
    )
}

/// Challenge, then answer: the outcome of the answered REGISTER.
fn login(
    r: &mut Registrar,
    user: &str,
    password: &str,
    contact: &str,
    ua: &str,
    port: u16,
) -> RegisterOutcome {
    let first = r.handle_register(
        NOW,
        &mut Entropy::new(u64::from(port)),
        &register(user, contact, ua, 1, None),
        peer(port),
    );
    assert_eq!(first.response.status_code.code(), 401);
    let nonce = nonce_of(&first.response);
    r.handle_register(
        NOW,
        &mut Entropy::new(2),
        &register(
            user,
            contact,
            ua,
            2,
            Some(answer(user, password, &nonce, 1)),
        ),
        peer(port),
    )
}

#[test]
fn a_challenged_device_registers_and_is_named_by_its_user_agent() {
    let mut r = registrar();
    let outcome = login(
        &mut r,
        "2001",
        "s3cret",
        "<sip:2001@127.0.0.1:5070>",
        "baresip v1.0",
        5070,
    );
    assert_eq!(outcome.response.status_code.code(), 200);
    assert_eq!(outcome.changes.len(), 1);
    let second = login(
        &mut r,
        "2001",
        "s3cret",
        "<sip:2001@127.0.0.1:5072>",
        "baresip v1.0",
        5072,
    );
    assert_eq!(second.response.status_code.code(), 200);
    let names: Vec<_> = r
        .bindings("alice")
        .iter()
        .map(|b| b.device.as_str())
        .collect();
    assert_eq!(names, ["baresip", "baresip-2"]);
    let text =
        String::from_utf8(message::serialize(&SipMessage::Response(second.response))).unwrap();
    assert_eq!(
        text.matches("Contact: <sip:2001@127.0.0.1:").count(),
        2,
        "{text}"
    );
}

#[test]
fn unknown_users_and_wrong_passwords_get_the_same_answer() {
    let mut r = registrar();
    let wrong = login(
        &mut r,
        "2001",
        "guess",
        "<sip:2001@127.0.0.1:5070>",
        "x",
        5070,
    );
    let unknown = login(
        &mut r,
        "2999",
        "guess",
        "<sip:2999@127.0.0.1:5070>",
        "x",
        5071,
    );
    assert_eq!(wrong.response.status_code.code(), 403);
    assert_eq!(unknown.response.status_code.code(), 403);
    let shape = |resp: &Response| {
        resp.headers
            .iter()
            .map(|h| h.to_string().split(':').next().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(shape(&wrong.response), shape(&unknown.response));
    assert_eq!(r.count(), 0);
}

#[test]
fn ten_failures_block_the_source_even_with_the_right_password() {
    let mut r = registrar();
    for _ in 0..THROTTLE_FAILURES {
        assert_eq!(
            login(
                &mut r,
                "2001",
                "guess",
                "<sip:2001@127.0.0.1:5070>",
                "x",
                5070
            )
            .response
            .status_code
            .code(),
            403
        );
    }
    assert!(r.is_throttled(NOW, "127.0.0.1".parse().unwrap()));
    let blocked = r.handle_register(
        NOW,
        &mut Entropy::new(3),
        &register("2001", "<sip:2001@127.0.0.1:5070>", "x", 1, None),
        peer(5070),
    );
    assert_eq!(
        blocked.response.status_code.code(),
        403,
        "not even a challenge"
    );
    assert!(!r.is_throttled(NOW + THROTTLE_BLOCK_SECS + 1, "127.0.0.1".parse().unwrap()));
}

#[test]
fn failures_on_several_shards_count_together() {
    let shared = SharedAuth::default();
    let mut shards = [registrar(), registrar()];
    for shard in &mut shards {
        shard.share_auth(shared.clone());
    }
    let source = "127.0.0.1".parse().unwrap();
    for attempt in 0..THROTTLE_FAILURES {
        let shard = &mut shards[attempt % 2];
        assert!(!shard.is_throttled(NOW, source), "attempt {attempt}");
        let guess = login(
            shard,
            "2001",
            "guess",
            "<sip:2001@127.0.0.1:5070>",
            "x",
            5070,
        );
        assert_eq!(guess.response.status_code.code(), 403);
    }
    // Half the failures on each shard: blocked on both, as on one.
    assert!(shards.iter().all(|shard| shard.is_throttled(NOW, source)));
    assert!(
        !registrar().is_throttled(NOW, source),
        "a registrar of its own"
    );
}

#[test]
fn unregister_star_brief_intervals_and_expiry() {
    let mut r = registrar();
    login(
        &mut r,
        "2001",
        "s3cret",
        "<sip:2001@127.0.0.1:5070>",
        "a",
        5070,
    );
    login(
        &mut r,
        "2001",
        "s3cret",
        "<sip:2001@127.0.0.1:5072>",
        "b",
        5072,
    );
    assert_eq!(r.count(), 2);
    // Too brief.
    let first = r.handle_register(
        NOW,
        &mut Entropy::new(1),
        &register("2001", "<sip:2001@127.0.0.1:5070>;expires=5", "a", 3, None),
        peer(5070),
    );
    let nonce = nonce_of(&first.response);
    let brief = r.handle_register(
        NOW,
        &mut Entropy::new(2),
        &register(
            "2001",
            "<sip:2001@127.0.0.1:5070>;expires=5",
            "a",
            4,
            Some(answer("2001", "s3cret", &nonce, 1)),
        ),
        peer(5070),
    );
    assert_eq!(brief.response.status_code.code(), 423);
    // One unregisters.
    let bye = r.handle_register(
        NOW,
        &mut Entropy::new(2),
        &register(
            "2001",
            "<sip:2001@127.0.0.1:5070>;expires=0",
            "a",
            5,
            Some(answer("2001", "s3cret", &nonce, 2)),
        ),
        peer(5070),
    );
    assert_eq!(bye.response.status_code.code(), 200);
    assert_eq!(r.count(), 1);
    assert!(matches!(&bye.changes[..], [BindingChange::Remove { .. }]));
    // The other expires.
    assert_eq!(r.expire(NOW + 599).len(), 0);
    assert_eq!(r.expire(NOW + 601).len(), 1);
    assert_eq!(r.count(), 0);
}

#[test]
fn restored_bindings_skip_the_expired_and_the_unknown() {
    let mut r = registrar();
    let outcome = login(
        &mut r,
        "2001",
        "s3cret",
        "<sip:2001@127.0.0.1:5070>",
        "a",
        5070,
    );
    let BindingChange::Upsert(binding) = outcome.changes[0].clone() else {
        panic!()
    };
    let mut fresh = registrar();
    let mut stranger = binding.clone();
    stranger.user_id = "mallory".into();
    let mut old = binding.clone();
    old.contact = "sip:old@127.0.0.1".into();
    old.expires_at = NOW - 1;
    assert_eq!(fresh.restore(NOW, vec![binding, stranger, old]), 1);
    assert_eq!(fresh.bindings("alice").len(), 1);
}

#[test]
fn contact_lists_parse() {
    let contacts = parse_contacts(
        "<sip:a@h;transport=tcp>;expires=60;+sip.instance=\"<urn:uuid:1>\", sip:b@h;expires=0",
    );
    assert_eq!(contacts.len(), 2);
    assert_eq!(contacts[0].uri, "sip:a@h;transport=tcp");
    assert_eq!(contacts[0].expires, Some(60));
    assert_eq!(contacts[0].instance.as_deref(), Some("<urn:uuid:1>"));
    assert_eq!(contacts[1].uri, "sip:b@h");
    assert_eq!(contacts[1].expires, Some(0));
}

#[test]
fn the_offered_digest_algorithms_follow_the_config() {
    let text = |r: &Response| {
        String::from_utf8(message::serialize(&SipMessage::Response(r.clone()))).unwrap()
    };
    let mut md5_only = registrar();
    let first = md5_only.handle_register(
        NOW,
        &mut Entropy::new(1),
        &register("2001", "<sip:2001@h>", "a", 1, None),
        peer(5070),
    );
    assert_eq!(text(&first.response).matches("WWW-Authenticate").count(), 1);
    let config = Config::parse(
        "[sip]\ndomain = \"pbx.test\"\ndigest_algorithms = [\"SHA-256\", \"MD5\"]\n[[users]]\nid = \"alice\"\nextension = \"2001\"\npassword = \"s3cret\"\n",
        Path::new("t.toml"),
    )
    .unwrap();
    let mut both = Registrar::new(Arc::new(config), [1; 32]);
    let first = both.handle_register(
        NOW,
        &mut Entropy::new(1),
        &register("2001", "<sip:2001@h>", "a", 1, None),
        peer(5070),
    );
    let challenge = text(&first.response);
    let sha = challenge.find("algorithm=SHA-256").unwrap();
    let md5 = challenge.find("algorithm=MD5").unwrap();
    assert!(sha < md5, "offered in the configured order: {challenge}");
    assert!(
        Config::parse(
            "[sip]\ndigest_algorithms = [\"SHA-512\"]\n",
            Path::new("t.toml")
        )
        .is_err()
    );
}

#[test]
fn devices_take_their_configured_names() {
    let config = Config::parse(
        "[sip]\ndomain = \"pbx.test\"\n[[users]]\nid = \"alice\"\nextension = \"2001\"\npassword = \"s3cret\"\n\
         [users.devices]\ndesk = \"Yealink SIP-T46S\"\nmobile = \"<urn:uuid:1>\"\n",
        Path::new("t.toml"),
    )
    .unwrap();
    let mut r = Registrar::new(Arc::new(config), [1; 32]);
    login(
        &mut r,
        "2001",
        "s3cret",
        "<sip:2001@127.0.0.1:5070>",
        "Yealink SIP-T46S 66.86.0.15",
        5070,
    );
    login(
        &mut r,
        "2001",
        "s3cret",
        "<sip:2001@127.0.0.1:5072>;+sip.instance=\"<urn:uuid:1>\"",
        "Linphone/5.2",
        5072,
    );
    login(
        &mut r,
        "2001",
        "s3cret",
        "<sip:2001@127.0.0.1:5074>",
        "Zoiper rv2.10",
        5074,
    );
    let names: Vec<_> = r
        .bindings("alice")
        .iter()
        .map(|b| b.device.as_str())
        .collect();
    assert_eq!(names, ["desk", "mobile", "zoiper"]);
    let bad = "[[users]]\nid = \"a\"\nextension = \"1\"\npassword = \"p\"\n[users.devices]\n\"my desk\" = \"x\"\n";
    assert!(
        Config::parse(bad, Path::new("t.toml"))
            .unwrap_err()
            .to_string()
            .contains("users[0].devices.my desk")
    );
}

#[test]
fn a_password_in_the_clear_is_checked_and_wrong_ones_feed_the_throttle() {
    let mut r = registrar();
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    assert_eq!(
        r.check_password(NOW, ip, "2001", "s3cret"),
        Ok("alice".into())
    );
    assert_eq!(
        r.check_password(NOW, ip, "2001", "guess"),
        Err(PasswordRefusal::Wrong)
    );
    assert_eq!(
        r.check_password(NOW, ip, "2999", "s3cret"),
        Err(PasswordRefusal::Wrong),
        "an unknown extension gets the same answer"
    );
    for _ in 2..THROTTLE_FAILURES {
        let _ = r.check_password(NOW, ip, "2001", "guess");
    }
    assert_eq!(
        r.check_password(NOW, ip, "2001", "s3cret"),
        Err(PasswordRefusal::Throttled),
        "blocked, even with the right password"
    );
    assert_eq!(
        (r.auth_failed, r.auth_throttled),
        (THROTTLE_FAILURES as u64, 1),
        "counted for /metrics"
    );
    let other: IpAddr = "127.0.0.2".parse().unwrap();
    assert_eq!(
        r.check_password(NOW, other, "2001", "s3cret"),
        Ok("alice".into())
    );
}

#[test]
fn a_password_checks_against_a_configured_ha1() {
    let config = Config::parse(&format!(
        "[sip]\ndomain = \"pbx.test\"\n[[users]]\nid = \"alice\"\nextension = \"2001\"\nha1 = \"{}\"\n",
        crate::sip::digest::md5_ha1("2001", "pbx.test", "s3cret")
    ), Path::new("t.toml"))
    .unwrap();
    let mut r = Registrar::new(Arc::new(config), [7; 32]);
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    assert_eq!(
        r.check_password(NOW, ip, "2001", "s3cret"),
        Ok("alice".into())
    );
    assert_eq!(
        r.check_password(NOW, ip, "2001", "S3cret"),
        Err(PasswordRefusal::Wrong)
    );
}

/// A pull (`*77`) through the edge at 127.0.0.10 from a baresip at 5070, asserting `identity`.
fn asserted_invite(identity: Option<&str>) -> Request {
    let identity = identity.map_or(String::new(), |i| format!("P-Asserted-Identity: {i}\r\n"));
    let text = format!(
        "INVITE sip:*77@pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.10:5060;branch=z9hG4bK-e\r\n\
Via: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK-d\r\n\
From: <sip:2001@pbx.test>;tag=f\r\nTo: <sip:*77@pbx.test>\r\nCall-ID: pull-1\r\n\
CSeq: 1 INVITE\r\nContact: <sip:2001@127.0.0.1:5070;transport=udp>\r\n\
User-Agent: baresip v1.0.0 (x86_64/linux)\r\n{identity}Content-Length: 0\r\n\r\n"
    );
    match message::parse(text.as_bytes()).unwrap() {
        SipMessage::Request(r) => r,
        _ => unreachable!(),
    }
}

#[test]
fn the_edge_vouches_for_its_devices_and_nobody_else_does() {
    let config = Config::parse(
        "[sip]\ndomain = \"pbx.test\"\n[store]\nurl = \"postgres://db/pbx\"\n\
         [cluster]\nnode = \"a\"\nedge = [\"sip:127.0.0.10:5060\"]\n\
         [[users]]\nid = \"alice\"\nextension = \"2001\"\npassword = \"s3cret\"\n\
         devices = { desk = \"Yealink\" }\n",
        Path::new("t.toml"),
    )
    .unwrap();
    let r = Registrar::new(Arc::new(config), [1; 32]);
    let edge = Peer {
        transport: Transport::Udp,
        addr: SocketAddr::from(([127, 0, 0, 10], 5060)),
    };
    let alice = Some("<sip:2001@pbx.test>");
    assert_eq!(
        r.asserted_by_edge(&asserted_invite(alice), edge),
        Some(DeviceInfo {
            name: "baresip@127.0.0.1:5070".into(),
            user_id: "alice".into(),
            user_agent: Some("baresip v1.0.0 (x86_64/linux)".into()),
            transport: "tcp".into(),
        }),
        "named by User-Agent and Contact address (the edge holds the registration), its \
         transport its own Via's"
    );
    let name = |request: &Request| {
        r.asserted_by_edge(request, edge)
            .map(|d| (d.user_id, d.name))
    };
    let named = asserted_invite(alice);
    let named = message::parse(
        &String::from_utf8(message::serialize(&SipMessage::Request(named)))
            .unwrap()
            .replace("baresip v1.0.0", "Yealink SIP-T46S")
            .into_bytes(),
    )
    .unwrap();
    let SipMessage::Request(named) = named else {
        unreachable!()
    };
    assert_eq!(
        name(&named),
        Some(("alice".into(), "desk".into())),
        "a device the config names keeps its name"
    );
    assert_eq!(
        r.asserted_by_edge(&asserted_invite(alice), peer(5060)),
        None,
        "only an edge's word counts"
    );
    assert_eq!(
        r.asserted_by_edge(&asserted_invite(None), edge),
        None,
        "the carrier's calls"
    );
    assert_eq!(
        r.asserted_by_edge(&asserted_invite(Some("<sip:2001@carrier.example>")), edge),
        None,
        "another domain's user"
    );
    assert_eq!(
        r.asserted_by_edge(&asserted_invite(Some("<sip:2099@pbx.test>")), edge),
        None,
        "an extension the config does not have"
    );
    assert_eq!(
        r.asserted_by_edge(&asserted_invite(Some("garbage")), edge),
        None
    );
}

#[test]
fn a_copy_fed_the_homes_changes_keeps_the_same_bindings() {
    let (mut home, mut copy) = (registrar(), registrar());
    let listed = |r: &Registrar| -> Vec<(String, String, i64)> {
        let mut all: Vec<_> = r
            .all()
            .map(|b| (b.device.clone(), b.contact.clone(), b.expires_at))
            .collect();
        all.sort();
        all
    };
    // Two phones, then the first again (a refresh), then the home's expiry sweep.
    for (contact, port) in [
        ("<sip:2001@127.0.0.1:5070>", 5070),
        ("<sip:2001@127.0.0.1:5072>", 5072),
        ("<sip:2001@127.0.0.1:5070>", 5070),
    ] {
        let outcome = login(&mut home, "2001", "s3cret", contact, "baresip v1.0", port);
        for change in &outcome.changes {
            copy.apply_from_home(change);
        }
    }
    assert_eq!(copy.count(), 2);
    assert_eq!(listed(&copy), listed(&home));
    for change in &home.expire(NOW + 7200) {
        copy.apply_from_home(change);
    }
    assert_eq!(
        copy.count(),
        0,
        "expired at the home, so gone from the copy"
    );
}

/// A nonce `r` issued in a challenge.
fn fresh_nonce(r: &mut Registrar) -> String {
    let challenged = r.handle_register(
        NOW,
        &mut Entropy::new(9),
        &register("2001", "<sip:2001@127.0.0.1:5070>", "x", 1, None),
        peer(5070),
    );
    nonce_of(&challenged.response)
}

/// Alice's REGISTER in dialog `call_id` at `cseq` listing `contacts`, answered with the
/// right password (nonce-count `nc` of `nonce`).
fn alice_registers(
    r: &mut Registrar,
    nonce: &str,
    nc: u32,
    call_id: &str,
    cseq: u32,
    contacts: &str,
) -> RegisterOutcome {
    let auth = answer("2001", "s3cret", nonce, nc);
    r.handle_register(
        NOW,
        &mut Entropy::new(u64::from(nc)),
        &register_in(call_id, "2001", contacts, "x", cseq, Some(auth)),
        peer(5070),
    )
}

fn contacts_of(r: &Registrar) -> Vec<&str> {
    r.bindings("alice")
        .iter()
        .map(|b| b.contact.as_str())
        .collect()
}

#[test]
fn a_register_refused_for_one_contact_changes_no_binding() {
    // RFC 3261 §10.3: every contact is checked before any binding changes.
    let mut r = registrar();
    let nonce = fresh_nonce(&mut r);
    let first = alice_registers(&mut r, &nonce, 1, "dev", 1, "<sip:2001@127.0.0.1:5070>");
    assert_eq!(first.response.status_code.code(), 200);
    let refused = alice_registers(
        &mut r,
        &nonce,
        2,
        "dev",
        2,
        "<sip:2001@127.0.0.1:5070>;expires=0, <sip:2001@127.0.0.1:5072>;expires=30",
    );
    assert_eq!(refused.response.status_code.code(), 423);
    assert!(refused.changes.is_empty());
    assert_eq!(
        contacts_of(&r),
        ["sip:2001@127.0.0.1:5070"],
        "the removal did not happen either"
    );
}

#[test]
fn a_register_older_than_its_binding_is_refused_and_changes_nothing() {
    let mut r = registrar();
    let nonce = fresh_nonce(&mut r);
    let contact = "<sip:2001@127.0.0.1:5070>";
    assert_eq!(
        alice_registers(&mut r, &nonce, 1, "dev", 5, contact)
            .response
            .status_code
            .code(),
        200
    );
    // An unregister sent before (CSeq 4) arrives late; so does one with the same CSeq.
    for (nc, cseq) in [(2, 4), (3, 5)] {
        let late = alice_registers(
            &mut r,
            &nonce,
            nc,
            "dev",
            cseq,
            &format!("{contact};expires=0"),
        );
        assert_eq!(late.response.status_code.code(), 400, "CSeq {cseq}");
        assert!(late.changes.is_empty());
    }
    let star = r.handle_register(
        NOW,
        &mut Entropy::new(7),
        &register_in(
            "dev",
            "2001",
            "*",
            "x",
            3,
            Some(answer("2001", "s3cret", &nonce, 4)),
        ),
        peer(5070),
    );
    assert_eq!(star.response.status_code.code(), 400, "nor does a late `*`");
    assert_eq!(contacts_of(&r), ["sip:2001@127.0.0.1:5070"]);
    // A newer one goes through.
    let newer = alice_registers(&mut r, &nonce, 5, "dev", 6, &format!("{contact};expires=0"));
    assert_eq!(newer.response.status_code.code(), 200);
    assert!(contacts_of(&r).is_empty());
}

#[test]
fn a_user_has_at_most_sixteen_devices() {
    let mut r = registrar();
    let nonce = fresh_nonce(&mut r);
    let contact = |n: usize| format!("<sip:2001@127.0.0.{n}:5060>");
    let all: Vec<String> = (1..=MAX_BINDINGS_PER_USER + 1).map(contact).collect();
    // One REGISTER listing one contact too many: refused whole.
    let too_many = alice_registers(&mut r, &nonce, 1, "many", 1, &all.join(", "));
    assert_eq!(too_many.response.status_code.code(), 403);
    assert_eq!(r.count(), 0);
    // Sixteen, then one more from another device.
    let sixteen = all[..MAX_BINDINGS_PER_USER].join(", ");
    let ok = alice_registers(&mut r, &nonce, 2, "many", 2, &sixteen);
    assert_eq!(ok.response.status_code.code(), 200);
    assert_eq!(r.count(), MAX_BINDINGS_PER_USER);
    let one_more = alice_registers(&mut r, &nonce, 3, "another", 1, &all[MAX_BINDINGS_PER_USER]);
    assert_eq!(one_more.response.status_code.code(), 403);
    assert_eq!(r.count(), MAX_BINDINGS_PER_USER);
    // A device already registered may still refresh.
    let refresh = alice_registers(&mut r, &nonce, 4, "many", 3, &all[0]);
    assert_eq!(refresh.response.status_code.code(), 200);
}

#[test]
fn a_nonce_this_host_did_not_issue_is_challenged_afresh_and_not_counted() {
    // A phone sending its credentials up front with a nonce from before a restart (a
    // registrar with another secret issued it).
    let mut before = Registrar::new(registrar().config.clone(), [2; 32]);
    let old_nonce = fresh_nonce(&mut before);
    let mut r = registrar();
    for nc in 1..=u32::try_from(THROTTLE_FAILURES).unwrap() + 1 {
        let stale = alice_registers(
            &mut r,
            &old_nonce,
            nc,
            "dev",
            nc,
            "<sip:2001@127.0.0.1:5070>",
        );
        assert_eq!(stale.response.status_code.code(), 401, "a fresh challenge");
        assert_ne!(nonce_of(&stale.response), old_nonce);
    }
    assert!(!r.is_throttled(NOW, "127.0.0.1".parse().unwrap()));
    assert_eq!(r.auth_failed, 0);
}

#[test]
fn credentials_nobody_could_check_a_password_with_are_refused_and_not_counted() {
    // What anyone could send from a forged address for free: it must not lock the
    // address's owner out.
    let mut r = registrar();
    let nonce = fresh_nonce(&mut r);
    for auth in [
        "Basic YWxpY2U6czNjcmV0".to_owned(),
        format!("Digest username=\"2001\", realm=\"pbx.test\", nonce=\"{nonce}\", uri=\"sip:pbx.test\", response=\"00\""),
    ]
    .iter()
    .cycle()
    .take(2 * THROTTLE_FAILURES)
    {
        let refused = r.handle_register(
            NOW,
            &mut Entropy::new(5),
            &register("2001", "<sip:2001@127.0.0.1:5070>", "x", 2, Some(auth.clone())),
            peer(5070),
        );
        assert_eq!(refused.response.status_code.code(), 403);
    }
    assert!(!r.is_throttled(NOW, "127.0.0.1".parse().unwrap()));
}

#[test]
fn an_ipv6_guesser_is_throttled_by_its_slash_64() {
    let mut r = registrar();
    for n in 1..=THROTTLE_FAILURES {
        let from: IpAddr = format!("2001:db8::{n:x}").parse().unwrap();
        r.record_failure(NOW, from);
    }
    assert!(
        r.is_throttled(NOW, "2001:db8::ffff".parse().unwrap()),
        "the same /64"
    );
    assert!(
        !r.is_throttled(NOW, "2001:db8:0:1::1".parse().unwrap()),
        "the next /64"
    );
}

#[test]
fn a_flood_of_failing_sources_is_cut_back_keeping_the_blocked() {
    let mut sources = Sources::default();
    let blocked: IpAddr = "192.0.2.1".parse().unwrap();
    sources.records.insert(
        blocked,
        SourceRecord {
            failures: VecDeque::new(),
            blocked_until: Some(NOW + 100),
        },
    );
    for n in 0..SOURCES_KEPT as u32 + 50 {
        let record = SourceRecord {
            failures: VecDeque::from([NOW]),
            blocked_until: None,
        };
        sources
            .records
            .insert(IpAddr::from(((n + 1) << 8).to_be_bytes()), record);
    }
    sources.cut(NOW);
    assert_eq!(sources.records.len(), SOURCES_KEPT);
    assert!(sources.records.contains_key(&blocked));
}

#[test]
fn a_full_table_of_failing_sources_is_cut_back_at_most_once_a_second() {
    let mut r = registrar();
    let source = |n: u32| IpAddr::from((0x0a00_0000 + n).to_be_bytes());
    for n in 0..SOURCES_KEPT as u32 {
        r.record_failure(NOW - 1, source(n));
    }
    let size = |r: &Registrar| r.sources.lock().records.len();
    assert_eq!(size(&r), SOURCES_KEPT);
    // Full: the next failure cuts it back to the limit, then adds its own source...
    r.record_failure(NOW, source(1_000_000));
    assert_eq!(size(&r), SOURCES_KEPT + 1);
    // ...but within the same second nothing is cut again: a flood costs one cut a
    // second, and the table outgrows the limit by at most a second's new sources.
    r.record_failure(NOW, source(1_000_001));
    r.record_failure(NOW, source(1_000_002));
    assert_eq!(size(&r), SOURCES_KEPT + 3);
    r.record_failure(NOW + 1, source(1_000_003));
    assert_eq!(size(&r), SOURCES_KEPT + 1);
}

#[test]
fn an_answer_computed_for_another_request_uri_is_refused_400_and_not_counted() {
    // RFC 2617 §3.2.2.5: the right password, but the answer is for another resource.
    let mut r = registrar();
    let nonce = fresh_nonce(&mut r);
    let response = client_response(
        Algorithm::Md5,
        "2001",
        "pbx.test",
        "s3cret",
        "REGISTER",
        "sip:other.test",
        &nonce,
        "00000001",
        "cn",
    );
    let auth = format!(
        "Digest username=\"2001\", realm=\"pbx.test\", nonce=\"{nonce}\", uri=\"sip:other.test\", response=\"{response}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"cn\""
    );
    let refused = r.handle_register(
        NOW,
        &mut Entropy::new(3),
        &register("2001", "<sip:2001@127.0.0.1:5070>", "x", 2, Some(auth)),
        peer(5070),
    );
    assert_eq!(refused.response.status_code.code(), 400);
    assert!(contacts_of(&r).is_empty());
    assert_eq!(r.auth_failed, 0);
    // The nonce was not spent: the answer for this Request-URI registers.
    let done = alice_registers(&mut r, &nonce, 1, "reg", 3, "<sip:2001@127.0.0.1:5070>");
    assert_eq!(done.response.status_code.code(), 200);
}
