//! The nodes sharing a store (`GET /api/cluster`): each writes its status — alive,
//! draining, live calls, the script versions it serves — every few seconds; any node
//! shows them all, and which scripts differ between the nodes that are up. Scripts are
//! per-node watched folders (kept the same by a shared volume or a sync): a node whose
//! folder missed an update shows here.
//!
//! A node's status also names the users with a connected call there; every node reads
//! the others' statuses after writing its own and keeps who holds whose call
//! ([`CallOwners`]), so a pull that lands on the wrong node is redirected to the right
//! one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::clock::{Clock, monotonic_now};
use crate::config::Config;
use crate::driver::CoreHandle;
use crate::flip::CallOwners;
use crate::script::ScriptHost;
use crate::sip::digest::md5_ha1;
use crate::store::{ClusterStore, EdgeUser, NodeStatus, StoreError};

/// How often a node writes its status.
pub const HEARTBEAT: Duration = Duration::from_secs(2);

/// A node whose last status is older than this is down (it missed five heartbeats).
pub const DOWN_AFTER: Duration = Duration::from_secs(10);

/// At most this often a status is written early, for a call answered, flipped or ended:
/// the edge then sends the user's pull to the node holding the call at once (and no
/// longer to one whose call ended), but a busy node does not write for every call.
const EARLIEST_NEXT_BEAT: Duration = Duration::from_millis(200);

/// This node in the cluster: its name and where the others reach it.
pub struct ThisNode {
    pub name: String,
    /// `sip:host:port` (`[cluster] advertise`, or the first UDP listener).
    pub sip: String,
}

/// Which other node holds which user's connected call, as their last statuses say.
#[derive(Default)]
pub struct Owners {
    /// User id → the SIP URI of the node holding the call.
    by_user: arc_swap::ArcSwap<BTreeMap<String, String>>,
}

impl CallOwners for Owners {
    fn owner_of(&self, user_id: &str) -> Option<String> {
        self.by_user.load().get(user_id).cloned()
    }
}

impl Owners {
    /// Learn from `nodes`' statuses at `now`: the calls of the other nodes that are up.
    /// A user with calls on several nodes is the node's with the latest call (a node
    /// that does not say when — an older version — counts as the earliest).
    pub fn learn(&self, this: &str, nodes: &[NodeStatus], now: jiff::Timestamp) {
        let mut latest: BTreeMap<String, (Option<jiff::Timestamp>, String)> = BTreeMap::new();
        for node in nodes.iter().filter(|n| n.node != this && is_up(n, now)) {
            let Some(sip) = &node.sip else { continue };
            for user in &node.users_in_calls {
                let at = node.latest_call_of.get(user).copied();
                if latest.get(user).is_none_or(|(seen, _)| at > *seen) {
                    latest.insert(user.clone(), (at, sip.clone()));
                }
            }
        }
        let by_user = latest
            .into_iter()
            .map(|(user, (_, sip))| (user, sip))
            .collect();
        self.by_user.store(Arc::new(by_user));
    }
}

/// Write this node's status every [`HEARTBEAT`], and as soon as `calls_changed` says a
/// call was answered, flipped or ended (at most every [`EARLIEST_NEXT_BEAT`]); learn
/// the others', for ever.
pub async fn heartbeat(
    store: Arc<dyn ClusterStore>,
    this: ThisNode,
    owners: Arc<Owners>,
    core: CoreHandle,
    scripts: Arc<ScriptHost>,
    clock: Arc<dyn Clock>,
    calls_changed: Arc<tokio::sync::Notify>,
) {
    let mut every = tokio::time::interval(HEARTBEAT);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    // The config whose users the edge has: published again after a reload changes it.
    let mut published: Option<Arc<Config>> = None;
    let mut publishing_failed = false;
    let mut listing_phones_failed = false;
    let mut last_beat = monotonic_now();
    // Only other nodes and an edge read the status (a shared store, restart-only): a
    // node on its own keeps to the heartbeat however many calls it takes.
    let shared = scripts.services.config.load().store.url.is_some();
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = calls_changed.notified(), if shared => {
                tokio::time::sleep_until((last_beat + EARLIEST_NEXT_BEAT).into()).await;
                every.reset();
            }
        }
        last_beat = monotonic_now();
        // The SIP core has stopped: the node is going; its last status stands.
        let Some(health) = core.health().await else {
            return;
        };
        let config = scripts.services.config.load_full();
        let behind_edge = !config.cluster.edge.is_empty();
        let unpublished =
            behind_edge && !published.as_ref().is_some_and(|p| Arc::ptr_eq(p, &config));
        let users = unpublished.then(|| edge_users(&config));
        let now = clock.now();
        let status = NodeStatus {
            node: this.name.clone(),
            alive_at: now,
            draining: health.draining,
            live_calls: health.live_calls,
            scripts: serving(&scripts),
            sip: Some(this.sip.clone()),
            users_in_calls: health.users_in_calls.keys().cloned().collect(),
            latest_call_of: health.users_in_calls,
        };
        let store = store.clone();
        let exchanged = tokio::task::spawn_blocking(move || {
            // A failed publication is tried again at the next beat; it never holds up
            // the heartbeat (the node would look down).
            let publication = users.map(|users| store.publish_users(&users));
            store.heartbeat(&status)?;
            let nodes = store.nodes()?;
            // The users' phones at the edge: the devices a push can ring.
            let phones = behind_edge.then(|| store.edge_phones());
            Ok::<_, StoreError>((nodes, publication, phones))
        })
        .await;
        match exchanged {
            Ok(Ok((nodes, publication, phones))) => {
                owners.learn(&this.name, &nodes, now);
                match phones {
                    Some(Ok(phones)) => {
                        listing_phones_failed = false;
                        if !core.phones_behind_edge(phones).await {
                            return;
                        }
                    }
                    Some(Err(e)) if !listing_phones_failed => {
                        tracing::warn!("listing the phones registered at the edge: {e}");
                        listing_phones_failed = true;
                    }
                    _ => {}
                }
                match publication {
                    Some(Ok(())) => {
                        tracing::info!(users = config.users.len(), "users published for the edge");
                        published = Some(config);
                        publishing_failed = false;
                    }
                    Some(Err(e)) if !publishing_failed => {
                        tracing::warn!("publishing the users for the edge: {e}");
                        publishing_failed = true;
                    }
                    _ => {}
                }
                failing = false;
            }
            Ok(Err(e)) if !failing => {
                tracing::warn!("exchanging node statuses through the store: {e}");
                failing = true;
            }
            _ => {}
        }
    }
}

/// The config's users as the edge authenticates them: the extension and MD5(extension:
/// realm:password) in `[sip] domain` (the config gives each user one of them).
fn edge_users(config: &Config) -> Vec<EdgeUser> {
    let realm = &config.sip.domain;
    config
        .users
        .iter()
        .filter_map(|user| {
            let ha1 = match (&user.password, &user.ha1) {
                (Some(password), _) => md5_ha1(&user.extension, realm, password),
                (None, Some(ha1)) => ha1.to_ascii_lowercase(),
                (None, None) => return None,
            };
            Some(EdgeUser {
                username: user.extension.clone(),
                realm: realm.clone(),
                ha1,
                user_id: user.id.clone(),
            })
        })
        .collect()
}

fn is_up(status: &NodeStatus, now: jiff::Timestamp) -> bool {
    let down_after = jiff::SignedDuration::try_from(DOWN_AFTER).unwrap_or_default();
    now.duration_since(status.alive_at) <= down_after
}

/// The script versions serving calls: name → content hash.
fn serving(scripts: &ScriptHost) -> BTreeMap<String, String> {
    scripts
        .registry
        .status()
        .into_iter()
        .filter_map(|status| Some((status.name, status.hash?)))
        .collect()
}

/// One node as `/api/cluster` shows it.
#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub struct NodeView {
    pub node: String,
    /// Its status is recent (it wrote within [`DOWN_AFTER`]).
    pub up: bool,
    /// When it last wrote its status (RFC 3339).
    pub alive_at: String,
    pub draining: bool,
    pub live_calls: usize,
    /// Script name → the content hash it serves.
    pub scripts: BTreeMap<String, String>,
    /// Where the others reach it.
    pub sip: Option<String>,
    /// The users with a connected call there.
    pub users_in_calls: Vec<String>,
}

/// A script the nodes that are up do not all serve the same.
#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Mismatch {
    pub script: String,
    /// Content hash (`missing`: not loaded) → the nodes serving it.
    pub versions: BTreeMap<String, Vec<String>>,
}

/// `GET /api/cluster`.
#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ClusterView {
    /// The node answering.
    pub node: String,
    pub nodes: Vec<NodeView>,
    /// Every node that is up serves the same script versions.
    pub scripts_agree: bool,
    pub mismatches: Vec<Mismatch>,
}

/// What `nodes` say, seen by `node` at `now`.
pub fn view(node: &str, nodes: Vec<NodeStatus>, now: jiff::Timestamp) -> ClusterView {
    let nodes: Vec<NodeView> = nodes
        .into_iter()
        .map(|status| NodeView {
            up: is_up(&status, now),
            alive_at: status.alive_at.to_string(),
            node: status.node,
            draining: status.draining,
            live_calls: status.live_calls,
            scripts: status.scripts,
            sip: status.sip,
            users_in_calls: status.users_in_calls,
        })
        .collect();
    let up: Vec<&NodeView> = nodes.iter().filter(|n| n.up).collect();
    let names: std::collections::BTreeSet<&String> =
        up.iter().flat_map(|n| n.scripts.keys()).collect();
    let mismatches: Vec<Mismatch> = names
        .into_iter()
        .filter_map(|script| {
            let mut versions: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for node in &up {
                let hash = node.scripts.get(script).map_or("missing", String::as_str);
                versions
                    .entry(hash.to_owned())
                    .or_default()
                    .push(node.node.clone());
            }
            (versions.len() > 1).then(|| Mismatch {
                script: script.clone(),
                versions,
            })
        })
        .collect();
    ClusterView {
        node: node.to_owned(),
        scripts_agree: mismatches.is_empty(),
        nodes,
        mismatches,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_edge_gets_each_users_ha1_never_a_password() {
        let config = Config::parse(
            "[sip]\ndomain = \"pbx.test\"\n\
             [[users]]\nid = \"alice\"\nextension = \"2001\"\npassword = \"alice-secret\"\n\
             [[users]]\nid = \"bob\"\nextension = \"2002\"\nha1 = \"ABCDEF\"\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        let users = edge_users(&config);
        let alice = EdgeUser {
            username: "2001".into(),
            realm: "pbx.test".into(),
            // printf '2001:pbx.test:alice-secret' | md5sum
            ha1: "d9237c9f6ab3fb2b17f66a9bdc123b41".into(),
            user_id: "alice".into(),
        };
        let bob = EdgeUser {
            username: "2002".into(),
            realm: "pbx.test".into(),
            ha1: "abcdef".into(),
            user_id: "bob".into(),
        };
        assert_eq!(users, [alice, bob]);
    }

    fn status(node: &str, age_s: i64, scripts: &[(&str, &str)]) -> NodeStatus {
        NodeStatus {
            node: node.into(),
            alive_at: now() - jiff::SignedDuration::from_secs(age_s),
            draining: false,
            live_calls: 0,
            scripts: scripts
                .iter()
                .map(|(n, h)| (n.to_string(), h.to_string()))
                .collect(),
            sip: Some(format!("sip:{node}.example:5060")),
            users_in_calls: vec![format!("user-of-{node}")],
            latest_call_of: BTreeMap::new(),
        }
    }

    #[test]
    fn owners_are_the_other_nodes_that_are_up() {
        let owners = Owners::default();
        let nodes = [
            status("a", 1, &[]),
            status("b", 2, &[]),
            status("c", 60, &[]),
        ];
        owners.learn("a", &nodes, now());
        assert_eq!(owners.owner_of("user-of-a"), None, "this node's own");
        assert_eq!(
            owners.owner_of("user-of-b").as_deref(),
            Some("sip:b.example:5060")
        );
        assert_eq!(owners.owner_of("user-of-c"), None, "c is down");
    }

    #[test]
    fn a_user_with_calls_on_two_nodes_is_the_node_with_the_latest() {
        let at = |s: i64| now() - jiff::SignedDuration::from_secs(s);
        let with_bob = |node: &str, call: Option<i64>| {
            let mut status = status(node, 1, &[]);
            status.users_in_calls = vec!["bob".into()];
            if let Some(s) = call {
                status.latest_call_of = [("bob".to_owned(), at(s))].into();
            }
            status
        };
        let owners = Owners::default();
        // In either order of the nodes.
        for nodes in [
            [with_bob("b", Some(10)), with_bob("c", Some(300))],
            [with_bob("c", Some(300)), with_bob("b", Some(10))],
        ] {
            owners.learn("a", &nodes, now());
            assert_eq!(
                owners.owner_of("bob").as_deref(),
                Some("sip:b.example:5060")
            );
        }
        // A node that does not say when (an older version) counts as the earliest.
        for nodes in [
            [with_bob("b", None), with_bob("c", Some(300))],
            [with_bob("c", Some(300)), with_bob("b", None)],
        ] {
            owners.learn("a", &nodes, now());
            assert_eq!(
                owners.owner_of("bob").as_deref(),
                Some("sip:c.example:5060")
            );
        }
    }

    fn now() -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_796_000_000).unwrap()
    }

    #[test]
    fn nodes_that_are_up_agree_or_show_what_differs() {
        let same = [("listen", "aa"), ("front-door", "ff")];
        let agreed = view(
            "a",
            vec![status("a", 1, &same), status("b", 3, &same)],
            now(),
        );
        assert!(agreed.scripts_agree && agreed.nodes.iter().all(|n| n.up));

        // b serves an older listen and lacks front-door; c is down and not counted.
        let differ = view(
            "a",
            vec![
                status("a", 1, &same),
                status("b", 2, &[("listen", "00")]),
                status("c", 60, &[("listen", "zz")]),
            ],
            now(),
        );
        assert!(!differ.scripts_agree);
        assert!(!differ.nodes[2].up);
        let versions = |script: &str| {
            differ
                .mismatches
                .iter()
                .find(|m| m.script == script)
                .map(|m| m.versions.clone())
                .unwrap()
        };
        assert_eq!(
            versions("listen"),
            [
                ("00".into(), vec!["b".into()]),
                ("aa".into(), vec!["a".into()])
            ]
            .into()
        );
        assert_eq!(
            versions("front-door"),
            [
                ("ff".into(), vec!["a".into()]),
                ("missing".into(), vec!["b".into()])
            ]
            .into()
        );
    }
}
