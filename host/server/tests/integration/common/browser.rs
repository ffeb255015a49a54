//! Headless Chromium scripts (`tests/browser/*.mjs`, playwright-core and JsSIP) run by
//! node against a test's server: each prints its steps, then "1 passed, 0 failed" or
//! "FAILED: …".

use std::io::{BufRead, BufReader, Lines, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

use super::server::Server;

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/browser")
        .join(name)
}

/// Run `node tests/browser/{name} {args}` to its end; its report, after asserting it
/// passed.
pub fn run(name: &str, args: &[&str], server: &Server) -> String {
    let output = Command::new("node")
        .arg(script(name))
        .args(args)
        .output()
        .expect("node, with tests/browser's packages installed (tests/run.sh does it)");
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    println!("{report}");
    assert!(
        report.contains("1 passed, 0 failed"),
        "{report}\n{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        server.log()
    );
    report
}

/// A browser script running beside the test, which reads what it printed so far and
/// may tell it to go on (a line on its stdin).
pub struct Running {
    node: Child,
    lines: Lines<BufReader<ChildStdout>>,
    report: String,
}

impl Running {
    pub fn start(name: &str, args: &[&str]) -> Self {
        let mut node = Command::new("node")
            .arg(script(name))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("node, with tests/browser's packages installed (tests/run.sh does it)");
        let lines = BufReader::new(node.stdout.take().unwrap()).lines();
        Self {
            node,
            lines,
            report: String::new(),
        }
    }

    /// Read until the script prints `marker` (asserted; the script failing first ends
    /// the test with its report).
    pub fn until(&mut self, marker: &str, server: &Server) {
        for line in self.lines.by_ref().map_while(Result::ok) {
            self.report.push_str(&line);
            self.report.push('\n');
            if line == marker || line.starts_with("FAILED") {
                break;
            }
        }
        assert!(
            self.report.lines().any(|l| l == marker),
            "no {marker:?} from the browser:\n{}\n{}",
            self.report,
            server.log()
        );
    }

    /// Tell the script to go on.
    pub fn say(&mut self, line: &str) {
        let stdin = self.node.stdin.as_mut().expect("stdin is piped");
        writeln!(stdin, "{line}").unwrap();
    }

    /// Read to the end; the whole report, after asserting the script passed.
    pub fn finish(mut self, server: &Server) -> String {
        drop(self.node.stdin.take());
        for line in self.lines.by_ref().map_while(Result::ok) {
            self.report.push_str(&line);
            self.report.push('\n');
        }
        let _ = self.node.wait();
        println!("{}", self.report);
        assert!(
            self.report.contains("1 passed, 0 failed"),
            "{}\n{}",
            self.report,
            server.log()
        );
        self.report
    }
}
