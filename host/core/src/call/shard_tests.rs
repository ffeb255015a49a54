//! Signalling shards (`sip.shards`): a pull's INVITE goes round the shards, unanswered,
//! and the one holding the user's most recent call takes it.

use super::testing::Did;
use super::world::*;
use crate::call::PullSearch;
use crate::media::Side;
use crate::registrar::SharedAuth;
use crate::sip::shards::{Shard, shard_of};

const TWO: usize = 2;

fn shard(index: usize) -> Shard {
    Shard { index, count: TWO }
}

/// The far end's call (Call-ID `far-call`) connected to the desk on the shard it hashes
/// to, and a world for the tablet's pull (Call-ID `pull-6003`) on the shard that one
/// hashes to — another.
fn call_on_one_shard_pull_on_the_other() -> (World, World) {
    let (holder, puller) = (shard_of(b"far-call", TWO), shard_of(b"pull-6003", TWO));
    assert_ne!(
        holder, puller,
        "the test needs the two dialogs on different shards"
    );
    // One host: the shards count digest nonces and failing sources together.
    let shared = SharedAuth::default();
    let holder = World::on_shard_sharing(CONFIG, shard(holder), shared.clone()).connect("", "");
    (
        holder,
        World::on_shard_sharing(CONFIG, shard(puller), shared),
    )
}

#[test]
fn a_pull_landing_on_another_shard_is_handed_to_the_one_holding_the_call() {
    let (mut holder, mut landed) = call_on_one_shard_pull_on_the_other();
    landed.pull_from(TABLET);
    // Challenged and authenticated there, then handed on without a final answer.
    assert_eq!(landed.count_to(TABLET, "SIP/2.0 407"), 1);
    assert_eq!(
        landed.count_to(TABLET, "SIP/2.0 4"),
        1,
        "no refusal: {:?}",
        landed.sent
    );
    assert_eq!(landed.count_to(TABLET, "SIP/2.0 2"), 0);
    let handed = landed.handed_off.pop().expect("handed to another shard");
    assert_eq!(landed.pbx.calls.count(), 0);

    // The holder takes it as if it had arrived there, and the pull goes as on one shard.
    handed.deliver_to(&mut holder);
    holder.decide(World::allow());
    let ok = holder.last_to(TABLET, "SIP/2.0 200");
    assert!(ok.contains("Call-ID: pull-6003"), "{ok}");
    assert_eq!(holder.count_to(DESK, "BYE "), 1, "the desk is released");
    assert_eq!(holder.media.take(), [Did::Reserve, Did::Switch(Side::B)]);
    assert_eq!(
        holder.count_to(FAR_END, "INVITE "),
        0,
        "the far end sees nothing"
    );
    // The tablet's dialog hashes elsewhere: the holder names it for the dispatcher.
    let foreign: Vec<&str> = holder
        .pbx
        .calls
        .foreign_call_ids(holder.pbx.shard())
        .collect();
    assert_eq!(foreign, ["pull-6003"]);
}

#[test]
fn a_pull_no_shard_can_serve_is_refused_by_the_last_one_tried() {
    let (_, mut landed) = call_on_one_shard_pull_on_the_other();
    let first = landed.pbx.shard().index;
    landed.pull_from(TABLET);
    let handed = landed.handed_off.pop().expect("handed on");
    // The other shard holds no call either: with every shard tried, it refuses.
    let mut last = World::on_shard(CONFIG, shard(handed.shard));
    assert_ne!(handed.shard, first);
    handed.deliver_to(&mut last);
    assert!(last.handed_off.is_empty(), "not handed round again");
    assert_eq!(last.count_to(TABLET, "SIP/2.0 404"), 1);
}

/// Alice's call with the far end connected to the desk on both shards — the one on the
/// shard the tablet's pull lands on `newer_where_it_lands` or not — and the pull made.
/// The two shards, the landing one first.
fn calls_on_both_shards_and_a_pull(newer_where_it_lands: bool) -> (World, World) {
    let landing = shard_of(b"pull-6003", TWO);
    let shared = SharedAuth::default();
    let mut on_landing = World::on_shard_sharing(CONFIG, shard(landing), shared.clone());
    let mut on_other = World::on_shard_sharing(CONFIG, shard(1 - landing), shared);
    // A session id carries the wall-clock millisecond the call arrived: the newer call
    // arrives a minute later, and the pull after both (its digest nonce is timed too).
    let (older, newer) = match newer_where_it_lands {
        true => (&mut on_other, &mut on_landing),
        false => (&mut on_landing, &mut on_other),
    };
    *older = std::mem::replace(older, World::new()).connect("", "");
    newer.wall_ms += 60_000;
    *newer = std::mem::replace(newer, World::new()).connect("", "");
    older.wall_ms = newer.wall_ms;
    on_landing.pull_from(TABLET);
    (on_landing, on_other)
}

#[test]
fn a_pull_goes_to_the_most_recent_call_on_another_shard_though_the_landing_one_holds_a_call() {
    let (mut landing, mut other) = calls_on_both_shards_and_a_pull(false);
    let handed = landing.handed_off.pop().expect("the other shard is asked");
    assert!(matches!(
        handed.search,
        PullSearch::Looking { latest: Some((at, _)) } if at == landing.pbx.shard().index
    ));
    handed.deliver_to(&mut other);
    assert!(
        other.handed_off.is_empty(),
        "the last shard asked holds the latest"
    );
    other.decide(World::allow());
    assert!(
        other
            .last_to(TABLET, "SIP/2.0 200")
            .contains("Call-ID: pull-6003")
    );
    assert_eq!(other.count_to(DESK, "BYE "), 1, "its desk is released");
    // The older call was not touched.
    assert_eq!(landing.count_to(TABLET, "SIP/2.0 2"), 0);
    assert_eq!(landing.count_to(DESK, "BYE "), 0);
    assert!(landing.flips.is_empty());
}

#[test]
fn a_pull_comes_back_to_the_landing_shard_when_it_holds_the_most_recent_call() {
    let (mut landing, mut other) = calls_on_both_shards_and_a_pull(true);
    landing
        .handed_off
        .pop()
        .expect("the other shard is asked")
        .deliver_to(&mut other);
    // The other shard, last in the ring, holds an older call: back to the landing one.
    let back = other.handed_off.pop().expect("handed back");
    assert_eq!(back.search, PullSearch::Chosen);
    assert!(other.flips.is_empty());
    for final_answer in ["SIP/2.0 2", "SIP/2.0 4"] {
        assert_eq!(other.count_to(TABLET, final_answer), 0, "no answer there");
    }
    back.deliver_to(&mut landing);
    assert!(
        landing.handed_off.is_empty(),
        "chosen: not handed round again"
    );
    landing.decide(World::allow());
    assert!(
        landing
            .last_to(TABLET, "SIP/2.0 200")
            .contains("Call-ID: pull-6003")
    );
    assert_eq!(landing.count_to(DESK, "BYE "), 1);
    assert_eq!(other.count_to(DESK, "BYE "), 0);
    assert_eq!(landing.pbx.calls.table_sizes()[7], ("handed_pull", 0));
}

#[test]
fn a_pull_on_one_shard_is_served_where_it_lands() {
    let here = crate::sip::shards::Shard::ALONE;
    let id = |ms| crate::call::SessionId::new(ms, [0; 10]);
    let search = PullSearch::default();
    assert_eq!(search.next_step(here, "x", Some(id(1))), None);
    assert_eq!(search.next_step(here, "x", None), None);
    assert_eq!(PullSearch::Chosen.next_step(shard(0), "x", None), None);
}

#[test]
fn only_the_home_shard_registers_with_carriers_and_every_shard_checks_trunks_and_edges() {
    let config = format!(
        "{CONFIG}\n[store]\nurl = \"postgres://db/x\"\n[cluster]\nnode = \"n1\"\nedge = [\"sip:127.0.0.10:5060\"]\n"
    )
    .replace(
        "inbound = [\"127.0.0.2\"]",
        "inbound = [\"127.0.0.2\"]\nusername = \"u\"\npassword = \"p\"\nregister = true",
    );
    for index in 0..TWO {
        let mut w = World::on_shard(&config, shard(index));
        w.pbx.start_trunks_and_edges(w.ambient());
        w.drain();
        let own = [TRUNK, "127.0.0.10:5060"].map(|to| {
            let to = addr(to);
            w.sent.iter().filter(|(a, _)| *a == to).count()
        });
        if index == 0 {
            assert!(
                own.iter().all(|&n| n > 0),
                "home: the REGISTER and the edge's probe"
            );
        } else {
            assert_eq!(
                own,
                [0, 1],
                "shard {index}: its own probe of the edge, no more"
            );
        }
        // What a shard sends of its own comes back to it: its Call-IDs hash to it.
        for (_, text) in &w.sent {
            let message = crate::sip::message::parse(text.as_bytes()).unwrap();
            let call_id = crate::sip::message::call_id(&message).unwrap();
            assert_eq!(shard_of(call_id.as_bytes(), TWO), index, "{text}");
        }
    }
}
