//! Several nodes on one PostgreSQL store (`[store] url`, `[cluster] node`): a throw-away
//! PostgreSQL from Debian, two `wasmpbx run` processes on it, SIPp calls into each. One
//! table holds both nodes' call records, an override set through one node's API closes
//! the location on the other, `/api/cluster` on either shows both and which scripts
//! differ, and a node restarting closes only its own interrupted calls.

use std::time::Duration;

use wasmpbx_store::throwaway::ThrowawayPostgres;

use crate::common::callers::{Callers, FLIP, listen_location, trunk_calls};
use crate::common::server::{Server, SippServer, http, sipp};

const PERTH: &str = "+61890000001";

/// A node named `name` on the database at `url`: sydney in listen mode towards
/// `return_port`, perth on front-door (closed: a prompt, goodbye, hang up).
fn config(name: &str, url: &str, return_port: u16) -> String {
    format!(
        r#"[store]
url = "{url}"
[cluster]
node = "{name}"
{sydney}
[[locations]]
name = "perth"
flip_number = "{PERTH}"
script = "front-door"
fallback_number = "+61890000099"
[locations.vars]
timezone = "Australia/Perth"
"#,
        sydney = listen_location(return_port),
    )
}

fn node(name: &str, url: &str, return_port: u16) -> Server {
    Server::start_with_scripts(
        &config(name, url, return_port),
        &[
            ("listen", test_components::LISTEN),
            ("front-door", test_components::FRONT_DOOR),
        ],
    )
}

/// What `until` gives within 15 s (heartbeats come every 2 s), else a panic.
fn poll<T>(until: impl Fn() -> Option<T>) -> T {
    (0..150)
        .find_map(|_| {
            until().or_else(|| {
                std::thread::sleep(Duration::from_millis(100));
                None
            })
        })
        .expect("in time")
}

fn start_postgres() -> (ThrowawayPostgres, String) {
    let pg = ThrowawayPostgres::start().unwrap_or_else(|e| panic!("starting PostgreSQL: {e}"));
    let url = pg.database("wasmpbx").unwrap();
    (pg, url)
}

#[test]
fn two_nodes_share_one_table_of_records_and_one_override() {
    const EACH: u32 = 20;
    let (_pg, url) = start_postgres();
    let ret = SippServer::start("return_number.xml", &["-m", &(2 * EACH).to_string()]);
    let (a, b) = (node("a", &url, ret.port), node("b", &url, ret.port));
    assert_eq!(trunk_calls(&a, FLIP, EACH), 0);
    assert_eq!(trunk_calls(&b, FLIP, EACH), 0);
    assert_eq!(ret.wait(Duration::from_secs(30)), 0);

    // Either node's CLI reads the one table: both nodes' calls, each named by its node.
    let records = a.cdrs();
    let from = |node: &str| records.iter().filter(|r| r["node"] == node).count();
    assert_eq!(records.len(), 2 * EACH as usize, "{records:?}");
    assert_eq!((from("a"), from("b")), (EACH as usize, EACH as usize));
    assert!(
        records
            .iter()
            .all(|r| r["disposition"] == "answered" && r["state"] == "ended"),
        "{records:?}"
    );
    assert_eq!(b.cdrs().len(), records.len());

    // Night mode through node a's API closes perth on node b.
    let put = http(a.http, "PUT", "/api/kv/perth/override", None, "closed");
    assert_eq!(put.0, 200, "{put:?}");
    // Node b's mirror hears of it from PostgreSQL (a notification's trip).
    poll(|| {
        let (_, seen) = http(b.http, "GET", "/api/kv/perth", None, "");
        seen.contains("closed").then_some(())
    });
    let code = sipp(
        b.udp,
        "caller_waits_bye.xml",
        "",
        &["-i", "127.0.0.2", "-s", PERTH, "-m", "1"],
    );
    assert_eq!(code, 0, "node b answers closed and hangs up");
    let perth = b.cdr_list(&["--json", "--location", "perth"]);
    let perth: serde_json::Value = serde_json::from_str(&perth).unwrap();
    assert_eq!(perth[0]["node"], "b");
    assert!(
        perth[0]["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t[0] == "hours" && t[1] == "override-closed"),
        "{perth}"
    );
    // Either node shows both, serving the same scripts…
    let cluster = |server: &Server| -> serde_json::Value {
        let (status, body) = http(server.http, "GET", "/api/cluster", None, "");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    };
    let seen = poll(|| {
        let view = cluster(&a);
        (view["nodes"].as_array().unwrap().len() == 2).then_some(view)
    });
    assert_eq!(seen["node"], "a");
    assert!(
        seen["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["up"] == true),
        "{seen}"
    );
    assert_eq!(seen["scripts_agree"], true, "{seen}");
    // …until one node's folder gets a script the other's lacks.
    std::fs::copy(
        test_components::FRONT_DOOR,
        b.dir.path().join("scripts").join("hours.wasm"),
    )
    .unwrap();
    let differ = poll(|| {
        let view = cluster(&a);
        (view["scripts_agree"] == false).then_some(view)
    });
    let mismatch = &differ["mismatches"][0];
    assert_eq!(mismatch["script"], "hours", "{differ}");
    assert_eq!(mismatch["versions"]["missing"], serde_json::json!(["a"]));

    // The audit log is shared too: node b lists the change made through node a.
    let audit = b.list("audit", &["--json"]);
    assert!(
        audit.contains("\"scope\":\"perth\"") && audit.contains("\"value\":\"closed\""),
        "{audit}"
    );
}

#[test]
fn a_node_killed_mid_call_closes_only_its_own_calls_when_it_starts_again() {
    let (_pg, url) = start_postgres();
    let ret = SippServer::start("return_number.xml", &["-m", "2"]);
    let (a, b) = (node("a", &url, ret.port), node("b", &url, ret.port));
    // One call into each node, held 10 s.
    let (to_a, to_b) = (
        Callers::start(&a, FLIP, 1, 1, 10_000),
        Callers::start(&b, FLIP, 1, 1, 10_000),
    );
    let states = |server: &Server| -> Vec<(String, String)> {
        let mut states: Vec<(String, String)> = server
            .cdrs()
            .iter()
            .map(|r| {
                (
                    r["node"].as_str().unwrap().into(),
                    r["state"].as_str().unwrap().into(),
                )
            })
            .collect();
        states.sort();
        states
    };
    let both_live = [("a".into(), "live".into()), ("b".into(), "live".into())];
    for _ in 0..100 {
        if states(&b) == both_live {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(states(&b), both_live);

    let dir = a.crash();
    let _a = Server::start_in(dir, &config("a", &url, ret.port));
    assert_eq!(
        states(&b),
        [
            ("a".into(), "interrupted".into()),
            ("b".into(), "live".into())
        ],
        "a's start closed a's call, not b's"
    );
    to_a.finish();
    assert_eq!(to_b.finish().0, 0, "b's call went on to its end");
    assert_eq!(states(&b)[1], ("b".into(), "ended".into()));
}
