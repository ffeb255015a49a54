//! Several nodes on one PostgreSQL store (`[store] url`, `[cluster] node`): a throw-away
//! PostgreSQL from Debian, two `wasmpbx run` processes on it, SIPp calls into each. One
//! table holds both nodes' call records, an override set through one node's API closes
//! the location on the other, `/api/cluster` on either shows both and which scripts
//! differ, and a node restarting closes only its own interrupted calls.

use std::net::SocketAddr;
use std::time::Duration;

use wasmpbx_store::throwaway::ThrowawayPostgres;

use crate::common::callers::{Callers, FLIP, listen_location, sydney, trunk_calls};
use crate::common::carrier::Kamailio;
use crate::common::server::{
    Server, SippServer, credentials, free_port, http, register_device, sipp,
};

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

/// Where the edge will listen: chosen first, so the nodes can be told before it starts.
fn edge_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port("127.0.0.1")))
}

/// The edge as shipped (`examples/deploy/kamailio/kamailio.cfg`) on `at`, the carrier
/// (SIPp) calling from 127.0.0.2 and taking the nodes' calls out at `carrier_out`, and
/// `nodes` behind it.
fn edge(
    at: SocketAddr,
    nodes: &[&Server],
    carrier_out: Option<SocketAddr>,
) -> (Kamailio, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("dispatcher.list");
    let lines: String = nodes.iter().map(|n| format!("1 sip:{}\n", n.udp)).collect();
    std::fs::write(&list, lines).unwrap();
    let cfg = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/deploy/kamailio/kamailio.cfg");
    let mut defines = vec![
        "CARRIER=\"127.0.0.2\"".to_owned(),
        format!("DISPATCHER_LIST=\"{}\"", list.display()),
        "PROBE_EVERY=1".into(),
    ];
    defines.extend(carrier_out.map(|out| format!("CARRIER_OUT=\"sip:{out}\"")));
    (Kamailio::with_config_at("edge", &cfg, at, &defines), dir)
}

/// A node on `ip` behind the edge (on 127.0.0.1): the carrier's calls come from there;
/// its calls out go to `trunk` (the return number's SIPp, or the edge).
fn node_behind_edge(name: &str, url: &str, ip: &str, trunk: SocketAddr) -> Server {
    Server::start_with_scripts(
        &format!(
            r#"[sip]
listen = ["udp:{ip}:0", "tcp:{ip}:0"]
[store]
url = "{url}"
[cluster]
node = "{name}"
[[trunks]]
name = "pstn"
uri = "sip:{trunk}"
inbound = ["127.0.0.1"]
{sydney}"#,
            sydney = sydney("listen"),
        ),
        &[("listen", test_components::LISTEN)],
    )
}

/// Calls from the carrier through the edge; SIPp's exit code.
fn through(edge: &Kamailio, calls: u32) -> i32 {
    sipp(
        edge.addr(),
        "trunk_caller.xml",
        "",
        &[
            "-i",
            "127.0.0.2",
            "-s",
            FLIP,
            "-m",
            &calls.to_string(),
            "-r",
            "50",
        ],
    )
}

fn count_by_node(records: &[serde_json::Value]) -> (usize, usize) {
    let of = |node: &str| records.iter().filter(|r| r["node"] == node).count();
    (of("a"), of("b"))
}

#[test]
fn the_edge_spreads_carrier_calls_over_the_nodes_and_skips_a_draining_one() {
    let (_pg, url) = start_postgres();
    let ret = SippServer::start("return_number.xml", &["-m", "34"]);
    let to_ret = SocketAddr::from(([127, 0, 0, 1], ret.port));
    let a = node_behind_edge("a", &url, "127.0.0.11", to_ret);
    let b = node_behind_edge("b", &url, "127.0.0.12", to_ret);
    let (edge, _list) = edge(edge_addr(), &[&a, &b], None);

    // Round robin: both nodes take calls, one table has them all.
    assert_eq!(through(&edge, 20), 0);
    let spread = count_by_node(&a.cdrs());
    assert_eq!(spread.0 + spread.1, 20, "{spread:?}");
    assert!(
        spread.0 >= 5 && spread.1 >= 5,
        "both nodes took calls: {spread:?}"
    );

    // Four calls held 8 s, then node a drains (SIGTERM): it answers the edge's probes
    // and INVITEs with 503, so the next ten calls all go to b; a's held calls go on to
    // their end.
    let held = Callers::start_to(edge.addr(), FLIP, 4, 20, 8_000);
    poll(|| {
        let live = b.cdrs().iter().filter(|r| r["state"] == "live").count();
        (live == 4).then_some(())
    });
    let on_a = count_by_node(&b.cdrs()).0;
    a.terminate();
    // At once: a call the edge still sends to a meets its 503 and goes on to b.
    assert_eq!(through(&edge, 4), 0, "no call failed as a began to drain");
    // Two probes later the edge has marked a down: no call even tries it.
    std::thread::sleep(Duration::from_millis(2500));
    let failovers = |edge: &Kamailio| edge.log().matches("node refused or silent").count();
    let before = failovers(&edge);
    assert_eq!(through(&edge, 6), 0, "no call failed");
    assert_eq!(
        failovers(&edge),
        before,
        "the probes had taken a out: {}",
        edge.log()
    );
    let after = count_by_node(&b.cdrs());
    assert_eq!(after.0, on_a, "a took no new call while draining");
    assert_eq!(after.0 + after.1, 34);
    let (code, seen) = held.finish();
    assert_eq!(code, 0, "the held calls ended normally: {seen:?}");
    assert!(seen.answered.values().all(|ended| *ended), "{seen:?}");
    let (exit, _) = a.exited(Duration::from_secs(10));
    assert_eq!(exit, Some(0), "a exits once its calls have ended");
    let records = b.cdrs();
    assert!(
        records.iter().all(|r| r["state"] == "ended"),
        "no call was cut: {records:?}"
    );
}

#[test]
fn the_nodes_calls_out_go_through_the_edge_to_the_carrier() {
    let (_pg, url) = start_postgres();
    // The carrier takes calls on 127.0.0.2, where its own calls to the nodes come from.
    let carrier = SippServer::start(
        "return_number.xml",
        &["-i", "127.0.0.2", "-m", "2", "-trace_msg"],
    );
    let carrier_addr = SocketAddr::from(([127, 0, 0, 2], carrier.port));
    let at = edge_addr();
    let a = node_behind_edge("a", &url, "127.0.0.11", at);
    let b = node_behind_edge("b", &url, "127.0.0.12", at);
    let (edge, _list) = edge(at, &[&a, &b], Some(carrier_addr));

    // Bob's phone (on 127.0.0.5: the edge's address is the trunk's to the nodes), on
    // each node in turn, dials a number: the node forwards it through its trunk, the
    // edge, which takes it on to the carrier.
    for node in [&a, &b] {
        let code = sipp(
            node.udp,
            "device_caller.xml",
            &credentials("2002", "b0b-secret"),
            &[
                "-i",
                "127.0.0.5",
                "-s",
                "0299990000",
                "-m",
                "1",
                "-d",
                "500",
            ],
        );
        assert_eq!(code, 0, "{}\n{}", node.log(), edge.log());
    }
    let (code, messages) = carrier.wait_with_messages(Duration::from_secs(15));
    assert_eq!(code, 0, "{messages}");
    // What the carrier saw: INVITEs to its own address, from the edge, which stays on
    // the route (its ACK and BYE come through the edge too).
    let received: Vec<&str> = messages
        .split("message received")
        .skip(1)
        .map(|m| m.lines().find(|l| l.contains(" sip:")).unwrap_or_default())
        .collect();
    let invite = format!("INVITE sip:0299990000@{carrier_addr} SIP/2.0");
    assert_eq!(
        received.iter().filter(|l| l.trim() == invite).count(),
        2,
        "{received:#?}"
    );
    assert!(
        messages.contains(&format!("Record-Route: <sip:{at};lr;")),
        "{messages}"
    );
    let via_edge = format!("Via: SIP/2.0/UDP {at};branch=");
    assert_eq!(
        messages.matches(&via_edge).count(),
        // INVITE, ACK and BYE of each call arrive from the edge; the carrier's answers
        // repeat the INVITE's and the BYE's Via.
        2 * 3 + 2 * 2 + 2,
        "{messages}"
    );
    for node in ["127.0.0.11", "127.0.0.12"] {
        assert!(
            edge.log()
                .contains(&format!("out from node {node} to 0299990000")),
            "{}",
            edge.log()
        );
    }
    // Both nodes' records of their calls out, in the one table.
    let records = poll(|| {
        let records = a.cdrs();
        (records.len() == 2 && records.iter().all(|r| r["state"] == "ended")).then_some(records)
    });
    assert_eq!(count_by_node(&records), (1, 1));
    for record in &records {
        assert_eq!(record["disposition"], "answered", "{record}");
        assert_eq!(record["legs"][0][0], "0299990000", "{record}");
    }
}

#[test]
fn a_pull_that_lands_on_another_node_is_redirected_to_the_node_holding_the_call() {
    let (_pg, url) = start_postgres();
    let ret = SippServer::start("return_number.xml", &["-m", "1"]);
    let (a, b) = (node("a", &url, ret.port), node("b", &url, ret.port));
    // Alice's desk is registered with node a, her mobile with node b.
    let desk = SippServer::start_on(
        "device_answers.xml",
        register_device(&a, "2001", "s3cret"),
        &["-m", "1"],
    );
    let mobile_port = register_device(&b, "2001", "s3cret");
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("mobile.log");
    std::thread::scope(|scope| {
        // Bob calls alice on node a; her desk answers; the call lasts 8 s.
        let bob = scope.spawn(|| {
            sipp(
                a.udp,
                "device_caller.xml",
                &credentials("2002", "b0b-secret"),
                &["-s", "2001", "-m", "1", "-d", "8000"],
            )
        });
        // Node a's status says alice is in a call there.
        let a_sip = poll(|| {
            let (_, body) = http(b.http, "GET", "/api/cluster", None, "");
            let view: serde_json::Value = serde_json::from_str(&body).ok()?;
            let on_a = view["nodes"]
                .as_array()?
                .iter()
                .find(|n| n["node"] == "a")?;
            let users = on_a["users_in_calls"].as_array()?;
            users
                .iter()
                .any(|u| u == "alice")
                .then(|| on_a["sip"].as_str().unwrap().to_owned())
        });
        // What node b's API shows, node b acts on (else it learns at its next heartbeat).
        assert_eq!(a_sip, format!("sip:{}", a.udp));
        // The mobile dials the pull code on node b: sent to node a.
        let code = sipp(
            b.udp,
            "device_pull_redirected.xml",
            &credentials("2001", "s3cret"),
            &[
                "-s",
                "*77",
                "-m",
                "1",
                "-p",
                &mobile_port.to_string(),
                "-trace_logs",
                "-log_file",
                log.to_str().unwrap(),
            ],
        );
        assert_eq!(code, 0, "{}", b.log());
        let said = std::fs::read_to_string(&log).unwrap();
        assert!(
            said.contains(&format!("redirected to <sip:*77@{}>", a.udp)),
            "{said}"
        );
        assert!(b.log().contains("pull redirected"), "{}", b.log());
        assert_eq!(bob.join().unwrap(), 0, "bob's call went on to its end");
    });
    assert_eq!(desk.wait(Duration::from_secs(15)), 0);
}

/// The three-node layout as shipped (`examples/deploy/cluster/`): each node's config
/// passes `config check`, the nodes agree on users, locations and trunks, and both agree
/// with the edge's settings in `compose.yml` (its address, realm, database, dispatcher
/// list, the media ports it publishes), which Kamailio's own check takes with the shipped
/// `kamailio.cfg`. No Docker engine here: what compose would start is what these say.
#[test]
fn the_shipped_three_node_layout_agrees_with_itself() {
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/deploy");
    let dir = deploy.join("cluster");
    let compose = std::fs::read_to_string(dir.join("compose.yml")).unwrap();
    // `KEY: value  # comment` in the edge's environment.
    let setting = |key: &str| -> String {
        compose
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{key}: ")))
            .and_then(|v| v.split(" #").next())
            .unwrap_or_else(|| panic!("compose.yml sets {key}"))
            .trim()
            .to_owned()
    };
    let list = std::fs::read_to_string(dir.join("dispatcher.list")).unwrap();
    let edge_ip = setting("LISTEN")
        .trim_start_matches("udp:")
        .split(':')
        .next()
        .unwrap()
        .to_owned();
    let mut nodes = Vec::new();
    for file in ["node-a.toml", "node-b.toml"] {
        let path = dir.join(file);
        let check = std::process::Command::new(env!("CARGO_BIN_EXE_wasmpbx"))
            .args(["config", "check"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let config = wasmpbx::config::Config::parse(&text, &path).unwrap();
        let advertise = config.cluster.advertise.clone().unwrap();
        let ip = advertise
            .trim_start_matches("sip:")
            .split(':')
            .next()
            .unwrap();
        assert!(
            compose.contains(&format!("ipv4_address: {ip}}}")),
            "{file}: {ip}"
        );
        assert!(
            list.contains(&format!("1 {advertise}\n")),
            "{file}: {advertise}"
        );
        assert_eq!(
            config.cluster.edge,
            [format!("sip:{edge_ip}:5060")],
            "{file}"
        );
        assert_eq!(config.sip.domain, setting("REALM"), "{file}");
        assert_eq!(
            config.store.url.as_deref(),
            Some(setting("DB_URL").as_str()),
            "{file}"
        );
        let range = &config.media.rtp_ports;
        let ports = format!("{}-{}", range.low, range.high);
        assert!(
            compose.contains(&format!("\"{ports}:{ports}/udp\"")),
            "{file}: {ports}"
        );
        nodes.push(config);
    }
    let (a, b) = (&nodes[0], &nodes[1]);
    assert_eq!(
        (&a.users, &a.locations, &a.trunks),
        (&b.users, &b.locations, &b.trunks)
    );
    let entrypoint = deploy.join("kamailio/entrypoint.sh");
    let syntax = std::process::Command::new("bash")
        .arg("-n")
        .arg(&entrypoint)
        .status();
    assert!(syntax.unwrap().success());
    let defines = [
        format!("CARRIER=\"{}\"", setting("CARRIER")),
        format!("CARRIER_OUT=\"{}\"", setting("CARRIER_OUT")),
        format!(
            "DISPATCHER_LIST=\"{}\"",
            dir.join("dispatcher.list").display()
        ),
        format!("DB_URL=\"{}\"", setting("DB_URL")),
        format!("REALM=\"{}\"", setting("REALM")),
    ];
    let check = std::process::Command::new("kamailio")
        .arg("-c")
        .arg("-f")
        .arg(deploy.join("kamailio/kamailio.cfg"))
        .args(defines.iter().flat_map(|d| ["-A", d.as_str()]))
        .output()
        .expect("kamailio is installed (tests/run.sh installs it)");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}
