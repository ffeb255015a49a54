//! Live config reload under load: SIPp callers run through the `listen` script while the
//! config file is rewritten to add a user and a location; no call drops, the new user
//! registers, the new flip number routes. A broken file is refused with its one-line
//! error and the running config stays; a restart-only key says so; SIGHUP re-reads.

use std::time::Duration;

use crate::common::callers::{Callers, FLIP, listen_location};
use crate::common::server::{Server, SippServer, credentials, sipp};

const NEW_FLIP: &str = "+61390000001";

const CAROL_AND_MELBOURNE: &str = r#"
[[users]]
id = "carol"
extension = "2003"
password = "c4rol-secret"

[[locations]]
name = "melbourne"
flip_number = "+61390000001"
script = "listen"
fallback_number = "+61390000099"

[locations.vars]
return_number = "+61390000098"
"#;

/// Replace the config file the way editors do: write a new file, rename it over.
fn rewrite(server: &Server, text: &str) {
    let temporary = server.config.with_extension("toml.new");
    std::fs::write(&temporary, text).unwrap();
    std::fs::rename(&temporary, &server.config).unwrap();
}

/// Wait (at most 10 s) until the server's log has `line` `times` times.
fn logged(server: &Server, line: &str, times: usize) -> String {
    for _ in 0..200 {
        let log = server.log();
        if log.matches(line).count() >= times {
            return log;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("never logged {line:?} ×{times}: {}", server.log())
}

/// The user the reload adds registers: SIPp's exit code.
fn carol_registers(server: &Server) -> i32 {
    let carol = credentials("2003", "c4rol-secret");
    sipp(server.udp, "register.xml", &carol, &["-m", "1"])
}

/// One call to `flip`, held a moment: SIPp's exit code.
fn call(server: &Server, flip: &str) -> i32 {
    Callers::start(server, flip, 1, 1, 100).finish().0
}

#[test]
fn a_user_and_a_location_added_under_load_work_at_once_and_no_call_drops() {
    let ret = SippServer::start("return_number.xml", &["-m", "100000"]);
    let server = Server::start_with_scripts(
        &listen_location(ret.port),
        &[("listen", test_components::LISTEN)],
    );
    let original = std::fs::read_to_string(&server.config).unwrap();
    assert_ne!(call(&server, NEW_FLIP), 0, "no such flip number yet");

    // 10 calls a second for 6 s, each held 2 s, through the reloads below.
    let load = Callers::start(&server, FLIP, 60, 10, 2000);
    std::thread::sleep(Duration::from_secs(1));
    rewrite(&server, &format!("{original}{CAROL_AND_MELBOURNE}"));
    logged(
        &server,
        "config reloaded (the file changed): users: added carol; locations: added melbourne",
        1,
    );
    assert_eq!(carol_registers(&server), 0, "the new user registers");
    assert_eq!(call(&server, NEW_FLIP), 0, "the new flip number routes");

    // A broken file: refused with its line, the running config stays.
    rewrite(
        &server,
        &format!("{original}{CAROL_AND_MELBOURNE}\n[[users]]\nid = \"dave\"\n"),
    );
    let log = logged(&server, "config reload refused (the file changed)", 1);
    assert!(log.contains("users[3]: missing field `extension`"), "{log}");
    assert!(!log.contains("c4rol-secret"), "no password in the log");
    assert_eq!(call(&server, NEW_FLIP), 0, "the running config stays");

    // A key bound at start: said, and kept.
    let moved = original
        .replacen("[store]\n", "[store]\n# moved\n", 1)
        .replace("wasmpbx.db", "elsewhere.db");
    rewrite(&server, &format!("{moved}{CAROL_AND_MELBOURNE}"));
    logged(
        &server,
        "store changed; it takes effect at the next restart",
        1,
    );

    // SIGHUP re-reads (and does not end the process, SIGHUP's default).
    let _ = std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status();
    logged(&server, "config re-read (SIGHUP)", 1);
    assert_eq!(carol_registers(&server), 0);

    let (code, seen) = load.finish();
    assert_eq!(code, 0, "no call dropped: {}", server.log());
    assert_eq!(seen.answered.values().filter(|ended| **ended).count(), 60);
}
