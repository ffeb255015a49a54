//! A re-read config on a running core: the live call goes on untouched, the new
//! location's number routes, a removed user's registrations go.

use std::path::Path;
use std::sync::Arc;

use super::world::{CONFIG, DESK, WALL, World, addr};
use crate::config::Config;
use crate::pbx::PbxOutput;
use crate::registrar::{Binding, BindingChange};
use crate::sip::transaction::Transport;

const BOB: &str = "\n[[users]]\nid = \"bob\"\nextension = \"2002\"\npassword = \"b0b\"\n";
const MELBOURNE: &str = "\n[[locations]]\nname = \"melbourne\"\nflip_number = \"200\"\n\
script = \"x\"\nfallback_number = \"999\"\n";

#[test]
fn a_reload_routes_the_new_location_drops_a_removed_user_and_leaves_the_live_call() {
    let mut w = World::connected();
    let with_bob = Config::parse(&format!("{CONFIG}{BOB}"), Path::new("t.toml")).unwrap();
    w.pbx.reconfigure(w.ambient(), Arc::new(with_bob));
    let bob_phone = Binding {
        user_id: "bob".into(),
        device: "phone".into(),
        contact: "sip:2002@127.0.0.1:6009".into(),
        instance: None,
        user_agent: None,
        transport: Transport::Udp,
        source: addr("127.0.0.1:6009"),
        expires_at: WALL + 3600,
        call_id: "reg-bob".into(),
        cseq: 1,
    };
    assert_eq!(w.pbx.registrar.restore(WALL, vec![bob_phone]), 1);

    // Bob goes, Melbourne comes.
    let next = Config::parse(&format!("{CONFIG}{MELBOURNE}"), Path::new("t.toml")).unwrap();
    w.pbx.reconfigure(w.ambient(), Arc::new(next));
    let removed: Vec<_> = std::iter::from_fn(|| w.pbx.poll_output())
        .filter_map(|o| match o {
            PbxOutput::Bindings(changes) => Some(changes),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(
        matches!(&removed[..], [BindingChange::Remove { user_id, .. }] if user_id == "bob"),
        "{removed:?}"
    );
    assert!(w.pbx.registrar.bindings("bob").is_empty());
    assert_eq!(
        w.pbx.registrar.bindings("alice").len(),
        3,
        "alice untouched"
    );

    // The new flip number routes to its location.
    w.far_end_calls("0401", "200", "mel-call");
    let calls = w.pbx.calls.summaries();
    assert_eq!(calls.len(), 2, "the live call and the new one");
    assert!(
        calls
            .iter()
            .any(|c| c.location.as_deref() == Some("melbourne") && c.dialed == "200"),
        "{calls:?}"
    );

    // The call that was live before the reload ends as any call does.
    let record = w.far_end_hangs_up();
    assert_eq!(record.location.as_deref(), Some("sydney"));
    assert_eq!(w.count_to(DESK, "BYE "), 1);
}
