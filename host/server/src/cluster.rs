//! The nodes sharing a store (`GET /api/cluster`): each writes its status — alive,
//! draining, live calls, the script versions it serves — every few seconds; any node
//! shows them all, and which scripts differ between the nodes that are up. Scripts are
//! per-node watched folders (kept the same by a shared volume or a sync): a node whose
//! folder missed an update shows here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::clock::Clock;
use crate::driver::CoreHandle;
use crate::script::ScriptHost;
use crate::store::{ClusterStore, NodeStatus};

/// How often a node writes its status.
pub const HEARTBEAT: Duration = Duration::from_secs(2);

/// A node whose last status is older than this is down (it missed five heartbeats).
pub const DOWN_AFTER: Duration = Duration::from_secs(10);

/// Write this node's status every [`HEARTBEAT`], for ever.
pub async fn heartbeat(
    store: Arc<dyn ClusterStore>,
    node: String,
    core: CoreHandle,
    scripts: Arc<ScriptHost>,
    clock: Arc<dyn Clock>,
) {
    let mut every = tokio::time::interval(HEARTBEAT);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        every.tick().await;
        // The SIP core has stopped: the node is going; its last status stands.
        let Some(health) = core.health().await else {
            return;
        };
        let status = NodeStatus {
            node: node.clone(),
            alive_at: clock.now(),
            draining: health.draining,
            live_calls: health.live_calls,
            scripts: serving(&scripts),
        };
        let store = store.clone();
        match tokio::task::spawn_blocking(move || store.heartbeat(&status)).await {
            Ok(Ok(())) => failing = false,
            Ok(Err(e)) if !failing => {
                tracing::warn!("writing this node's status to the store: {e}");
                failing = true;
            }
            _ => {}
        }
    }
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
    let down_after = jiff::SignedDuration::try_from(DOWN_AFTER).unwrap_or_default();
    let nodes: Vec<NodeView> = nodes
        .into_iter()
        .map(|status| NodeView {
            up: now.duration_since(status.alive_at) <= down_after,
            alive_at: status.alive_at.to_string(),
            node: status.node,
            draining: status.draining,
            live_calls: status.live_calls,
            scripts: status.scripts,
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
