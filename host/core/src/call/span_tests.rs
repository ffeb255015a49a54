//! Every line the call engine logs about a call is in that call's `call{session}` span,
//! whichever input led to it (the INVITE, responses, the script's decisions, the
//! policy's, keys, timers, the far end's BYE), and names the session only there.

use std::io::Write;
use std::sync::{Arc, Mutex};

use super::world::{MOBILE, TABLET, World};

/// Where the test's subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The lines logged while `run` runs, as text without colours.
fn logged(run: impl FnOnce()) -> Vec<String> {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .without_time()
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, run);
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    text.lines().map(str::to_owned).collect()
}

/// The session a line's span names, if it is in a call's span.
fn span_session(line: &str) -> Option<&str> {
    let (_, rest) = line.split_once("call{session=")?;
    rest.split_once('}').map(|(session, _)| session)
}

/// Run in a process of its own: tracing caches, per log statement, whether any
/// subscriber wants it, and the other tests, running the same statements on other
/// threads with no subscriber at the same moment, can get "never" cached under this
/// test's thread-local one.
#[test]
fn every_line_about_a_call_is_in_its_span() {
    let name = "call::span_tests::every_line_about_a_call_is_in_its_span_alone";
    let run = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--ignored", "--test-threads=1"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(out.contains("1 passed"), "{out}");
}

#[test]
#[ignore = "run alone by every_line_about_a_call_is_in_its_span"]
fn every_line_about_a_call_is_in_its_span_alone() {
    let lines = logged(|| {
        // A trunk call answered on the desk, pulled to the mobile behind the PIN, then
        // pushed to the tablet, and hung up by the far end.
        let mut w = World::connected();
        w.pull_from(MOBILE);
        w.decide(World::require_pin());
        w.keys_on_reserved_ports("1234");
        w.push().unwrap();
        w.decide(World::allow());
        let to_tablet = w.last_to(TABLET, "INVITE ");
        w.respond(TABLET, &to_tablet, 200);
        w.far_end_hangs_up();
        // A second call, which Alice places and hangs up.
        let mut w = World::placed("0299990000");
        w.device_in_placed_dialog(super::world::DESK, "BYE", 3);
    });
    let about_calls: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(" wasmpbx_core::call"))
        .collect();
    let mut sessions: Vec<&str> = Vec::new();
    for line in &about_calls {
        let session = span_session(line).unwrap_or_else(|| panic!("not in a call's span: {line}"));
        assert_eq!(session.len(), 12, "{line}");
        let (_, message) = line.split_once("}: ").unwrap();
        assert!(
            !message.contains("session="),
            "named once, by the span: {line}"
        );
        if !sessions.contains(&session) {
            sessions.push(session);
        }
    }
    assert_eq!(sessions.len(), 2, "one span per call: {lines:#?}");
    let said = |session: &str, message: &str| {
        about_calls.iter().any(|l| {
            span_session(l) == Some(session)
                && (l.ends_with(&format!(": {message}")) || l.contains(&format!(": {message} ")))
        })
    };
    for message in [
        "incoming call",
        "ringing device",
        "answered",
        "pull requested",
        "flip: right PIN",
        "push requested",
        "flipped",
        "call ended",
    ] {
        assert!(
            said(sessions[0], message),
            "{message:?} in the first call's span: {about_calls:#?}"
        );
    }
    for message in ["incoming call", "forwarding", "answered", "call ended"] {
        assert!(
            said(sessions[1], message),
            "{message:?} in the second call's span: {about_calls:#?}"
        );
    }
}
