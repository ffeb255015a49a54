//! Signalling shards (`sip.shards`): a pull whose INVITE lands on a shard that does not
//! hold the user's call is handed on, unanswered, until the shard that does takes it.

use super::testing::Did;
use super::world::*;
use crate::media::Side;
use crate::sip::digest::NonceCounts;
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
    // One host: the shards count digest nonces together.
    let counts = NonceCounts::default();
    let holder = World::on_shard_counting(CONFIG, shard(holder), counts.clone()).connect("", "");
    (
        holder,
        World::on_shard_counting(CONFIG, shard(puller), counts),
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
    let (to, from, bytes) = landed.handed_off.pop().expect("handed to another shard");
    assert_eq!(to, holder.pbx.shard().index);
    assert_eq!(landed.pbx.calls.count(), 0);

    // The holder takes it as if it had arrived there, and the pull goes as on one shard.
    holder.pbx.handle_bytes(holder.ambient(), &bytes, from);
    holder.drain();
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
    let (to, from, bytes) = landed.handed_off.pop().expect("handed on");
    // The other shard holds no call either: with every shard tried, it refuses.
    let mut last = World::on_shard(CONFIG, shard(to));
    assert_ne!(to, first);
    last.pbx.handle_bytes(last.ambient(), &bytes, from);
    last.drain();
    assert!(last.handed_off.is_empty(), "not handed round again");
    assert_eq!(last.count_to(TABLET, "SIP/2.0 404"), 1);
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
