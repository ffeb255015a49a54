//! A real `wasmpbx run` on loopback with ephemeral ports, and SIPp driving it.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running server; killed when dropped.
pub struct Server {
    child: Child,
    pub dir: tempfile::TempDir,
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    pub banner: Vec<String>,
    pub config: PathBuf,
}

/// Users every test server knows.
pub const USERS: &str = r#"
[[users]]
id = "alice"
extension = "2001"
password = "s3cret"

[[users]]
id = "bob"
extension = "2002"
password = "b0b-secret"
"#;

impl Server {
    /// Start on a fresh folder with `extra` config appended.
    pub fn start(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, extra)
    }

    /// Start (or restart) in an existing folder: the store persists across.
    pub fn start_in(dir: tempfile::TempDir, extra: &str) -> Self {
        let config = dir.path().join("wasmpbx.toml");
        std::fs::write(
            &config,
            format!(
                "[sip]\nlisten = [\"udp:127.0.0.1:0\", \"tcp:127.0.0.1:0\"]\ndomain = \"pbx.test\"\n\
                 [scripts]\ndir = {:?}\n[store]\npath = {:?}\n{USERS}\n{extra}",
                dir.path().join("scripts").display().to_string(),
                dir.path().join("wasmpbx.db").display().to_string(),
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_wasmpbx"))
            .args(["run", "--config", config.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start wasmpbx");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut banner = Vec::new();
        let (mut udp, mut tcp) = (None, None);
        for line in stdout.lines() {
            let line = line.unwrap();
            if let Some(addr) = line.trim().strip_prefix("SIP       udp:") {
                udp = addr.parse().ok();
            }
            if let Some(addr) = line.trim().strip_prefix("SIP       tcp:") {
                tcp = addr.parse().ok();
            }
            banner.push(line);
            if udp.is_some() && tcp.is_some() {
                break;
            }
        }
        let (Some(udp), Some(tcp)) = (udp, tcp) else {
            panic!("no SIP listeners in the banner: {banner:?}")
        };
        Server {
            child,
            dir,
            udp,
            tcp,
            banner,
            config,
        }
    }

    /// Stop with SIGTERM (a clean shutdown) and hand back the folder.
    pub fn stop(mut self) -> tempfile::TempDir {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = wait_timeout(&mut self.child, Duration::from_secs(10));
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_timeout(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// A free UDP port on `ip` (for SIPp's -p, which cannot take 0).
pub fn free_port(ip: &str) -> u16 {
    UdpSocket::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The scenario folder.
pub fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/sipp")
        .join(name)
}

/// Run SIPp to completion; its exit code (0 = every call succeeded).
pub fn sipp(server: SocketAddr, scenario_file: &str, csv: &str, extra: &[&str]) -> i32 {
    let work = tempfile::tempdir().unwrap();
    let csv_path = work.path().join("users.csv");
    std::fs::write(&csv_path, csv).unwrap();
    let local_ip = extra
        .windows(2)
        .find(|w| w[0] == "-i")
        .map_or("127.0.0.1", |w| w[1]);
    let port = free_port(local_ip).to_string();
    let mut args = vec![
        "-sf".to_string(),
        scenario(scenario_file).display().to_string(),
        "-inf".into(),
        csv_path.display().to_string(),
        "-p".into(),
        port,
        "-nostdin".into(),
        "-timeout".into(),
        "30".into(),
        "-timeout_error".into(),
        "-trace_err".into(),
    ];
    if !extra.contains(&"-i") {
        args.extend(["-i".into(), "127.0.0.1".into()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(server.to_string());
    let status = Command::new("sipp")
        .args(&args)
        .current_dir(work.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("sipp is installed (tests/run.sh installs it: apt-get install sip-tester)");
    let code = status.code().unwrap_or(-1);
    if code != 0 {
        for entry in std::fs::read_dir(work.path()).unwrap().flatten() {
            if entry.file_name().to_string_lossy().ends_with("errors.log") {
                eprintln!(
                    "{}",
                    std::fs::read_to_string(entry.path()).unwrap_or_default()
                );
            }
        }
    }
    code
}

/// The csv line SIPp's [authentication] keyword needs.
pub fn credentials(extension: &str, password: &str) -> String {
    format!("SEQUENTIAL\n{extension};[authentication username={extension} password={password}]\n")
}
