//! Real phones: three baresip instances (Alice's desk phone and mobile, Bob's phone)
//! register and call through wasmpbx, with audio checked by each phone's tone. baresip
//! takes its media address from the default route, so everything runs in a network
//! namespace of its own whose only interface is loopback (root needed, as in CI).

use std::path::Path;
use std::process::Command;

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn baresip_phones_ring_answer_and_talk_through_the_host() {
    let ns = format!("wasmpbx-test-{}", std::process::id());
    assert!(
        ip(&["netns", "add", &ns]),
        "creating a network namespace needs root (CI runs as root)"
    );
    assert!(ip(&["-n", &ns, "link", "set", "lo", "up"]));
    assert!(ip(&["-n", &ns, "route", "add", "default", "dev", "lo"]));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/e2e/baresip_call.py");
    let output = Command::new("ip")
        .args(["netns", "exec", &ns, "python3"])
        .arg(&script)
        .arg(env!("CARGO_BIN_EXE_wasmpbx"))
        .output()
        .expect("python3 and baresip are installed (tests/run.sh installs them)");
    ip(&["netns", "del", &ns]);
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        report.contains("the desk phone answered; the mobile stopped ringing"),
        "{report}"
    );
}
