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
    pub http: SocketAddr,
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

    /// Start with scripts (name, built guest path) in the scripts folder.
    pub fn start_with_scripts(extra: &str, scripts: &[(&str, &str)]) -> Self {
        Self::start_with_env(extra, scripts, &[])
    }

    /// [`Self::start_with_scripts`], the server's process given `env` too.
    pub fn start_with_env(extra: &str, scripts: &[(&str, &str)], env: &[(&str, &str)]) -> Self {
        Self::start_with(extra, scripts, env, &[])
    }

    /// [`Self::start_with_env`], with the binary's global `options` (e.g.
    /// `--log-format json`) too.
    pub fn start_with(
        extra: &str,
        scripts: &[(&str, &str)],
        env: &[(&str, &str)],
        options: &[&str],
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
        for (name, path) in scripts {
            std::fs::copy(
                path,
                dir.path().join("scripts").join(format!("{name}.wasm")),
            )
            .unwrap();
        }
        Self::launch(dir, extra, env, options)
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The call records, newest first, through `wasmpbx cdr list --json`.
    pub fn cdrs(&self) -> Vec<serde_json::Value> {
        serde_json::from_str::<serde_json::Value>(&self.cdr_list(&["--json", "--limit", "10000"]))
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// What `wasmpbx cdr list ARGS` prints for this server's store.
    pub fn cdr_list(&self, args: &[&str]) -> String {
        self.list("cdr", args)
    }

    /// What `wasmpbx WHAT list ARGS` (`cdr`, `audit`) prints for this server's store.
    pub fn list(&self, what: &str, args: &[&str]) -> String {
        self.cli(&[&[what, "list"], args].concat())
    }

    /// What `wasmpbx ARGS --config CONFIG` prints (it must succeed).
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_wasmpbx"))
            .args(args)
            .args(["--config", self.config.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Start (or restart) in an existing folder: the store persists across.
    pub fn start_in(dir: tempfile::TempDir, extra: &str) -> Self {
        Self::launch(dir, extra, &[], &[])
    }

    fn launch(dir: tempfile::TempDir, extra: &str, env: &[(&str, &str)], options: &[&str]) -> Self {
        let config = dir.path().join("wasmpbx.toml");
        // An existing folder, even empty, is the test's: the server writes its default
        // scripts only into a missing one.
        std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
        // The scripts folder is the test's; `extra` may add to its [scripts] table.
        let scripts = format!(
            "[scripts]\ndir = {:?}\n",
            dir.path().join("scripts").display().to_string()
        );
        let (scripts_table, extra) = match extra.contains("[scripts]\n") {
            true => (String::new(), extra.replace("[scripts]\n", &scripts)),
            false => (scripts, extra.to_owned()),
        };
        // Recordings go to the test's folder too (the default is relative to the cwd).
        let media = format!(
            "[media]\nrecordings = {:?}\n",
            dir.path().join("recordings").display().to_string()
        );
        let (media_table, extra) = match extra.contains("[media]\n") {
            true => (String::new(), extra.replace("[media]\n", &media)),
            false => (media, extra),
        };
        // The store is in the test's folder; `extra` may add to the [store] table (a
        // PostgreSQL `url`).
        let store = format!(
            "[store]\npath = {:?}\n",
            dir.path().join("wasmpbx.db").display().to_string()
        );
        let (store_table, extra) = match extra.contains("[store]\n") {
            true => (String::new(), extra.replace("[store]\n", &store)),
            false => (store, extra),
        };
        // `extra`'s [sip] keys join the fixture's [sip] table.
        let (sip_keys, extra) = match extra.split_once("[sip]\n") {
            Some((before, after)) => {
                let end = after.find("\n[").map_or(after.len(), |e| e + 1);
                (
                    after[..end].to_owned(),
                    format!("{before}{}", &after[end..]),
                )
            }
            None => (String::new(), extra),
        };
        // `extra` may name the listeners itself (a `tls:` one, say).
        let listen = match sip_keys.contains("listen =") {
            true => "",
            false => "listen = [\"udp:127.0.0.1:0\", \"tcp:127.0.0.1:0\"]\n",
        };
        std::fs::write(
            &config,
            format!(
                "[sip]\n{listen}domain = \"pbx.test\"\n{sip_keys}\
                 {}{scripts_table}{media_table}{store_table}{USERS}\n{extra}",
                if extra.contains("[http]") {
                    ""
                } else {
                    "[http]\nlisten = \"127.0.0.1:0\"\n"
                },
            ),
        )
        .unwrap();
        Self::run(env!("CARGO_BIN_EXE_wasmpbx"), dir, config, env, options)
    }

    /// `binary OPTIONS run --config CONFIG`, logging into `dir`, once it says where it
    /// listens.
    pub fn run(
        binary: impl AsRef<std::ffi::OsStr>,
        dir: tempfile::TempDir,
        config: PathBuf,
        env: &[(&str, &str)],
        options: &[&str],
    ) -> Self {
        let mut child = Command::new(binary)
            .args(options)
            .args(["run", "--config", config.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("server.log")).unwrap())
            .spawn()
            .expect("start wasmpbx");
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut banner = Vec::new();
        let (mut udp, mut tcp, mut http) = (None, None, None);
        for line in stdout.by_ref() {
            let line = line.unwrap();
            if let Some(addr) = line.trim().strip_prefix("SIP       udp:") {
                udp = addr.parse().ok();
            }
            if let Some(addr) = line.trim().strip_prefix("SIP       tcp:") {
                tcp = addr.parse().ok();
            }
            if let Some(rest) = line
                .trim()
                .strip_prefix("HTTP      http://")
                .or_else(|| line.trim().strip_prefix("HTTP      https://"))
            {
                http = rest.split('/').next().and_then(|a| a.parse().ok());
            }
            banner.push(line);
            if udp.is_some() && tcp.is_some() && http.is_some() {
                break;
            }
        }
        // Keep reading, so the server never writes into a closed pipe.
        std::thread::spawn(move || stdout.for_each(drop));
        let (Some(udp), Some(tcp), Some(http)) = (udp, tcp, http) else {
            let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
            panic!("no SIP or HTTP listeners in the banner: {banner:?}\nserver log:\n{log}")
        };
        Server {
            child,
            dir,
            udp,
            tcp,
            http,
            banner,
            config,
        }
    }

    /// The `tls:` listener's address (when the config has one).
    pub fn tls(&self) -> SocketAddr {
        self.banner
            .iter()
            .find_map(|l| l.trim().strip_prefix("SIP       tls:")?.parse().ok())
            .unwrap_or_else(|| panic!("no tls: listener in the banner: {:?}", self.banner))
    }

    /// The server's process id (to signal it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send SIGTERM and go on: the server drains.
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    /// Wait (at most `limit`) for the server to exit by itself: its exit code (None if it
    /// had to be killed) and its folder.
    pub fn exited(mut self, limit: Duration) -> (Option<i32>, tempfile::TempDir) {
        let code = wait_timeout(&mut self.child, limit).and_then(|s| s.code());
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = tempfile::tempdir().unwrap();
        (code, std::mem::replace(&mut self.dir, dir))
    }

    /// Kill with SIGKILL — a crash: nothing of the server runs after it — and hand back
    /// the folder.
    pub fn crash(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
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

/// Send `bytes` on a new TCP connection to the server and read what comes back within
/// 5 s: `Ok(0)` when the server closed the connection.
pub fn tcp_read_after(addr: SocketAddr, bytes: &[u8]) -> std::io::Result<usize> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("the server takes TCP");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let _ = stream.write_all(bytes);
    stream.read(&mut [0u8; 64])
}

/// A TCP connection to `server` from `source`.
pub fn tcp_from(source: &str, server: std::net::SocketAddr) -> std::net::TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        socket.connect(server).await.expect("the server takes TCP")
    });
    let stream = stream.into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    stream
}

/// Whether the server closed `stream` without a word (a read ends, rather than times out).
pub fn closed_at_once(stream: &mut std::net::TcpStream) -> bool {
    match std::io::Read::read(stream, &mut [0u8; 1]) {
        Ok(n) => n == 0,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// One sample's value in the server's `/metrics`: the line that is `name` (with its
/// labels, if it has any) and a number; None when there is no such line.
pub fn metric(addr: SocketAddr, name: &str) -> Option<u64> {
    let (_, metrics) = http(addr, "GET", "/metrics", None, "");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// One HTTP/1.1 request; the status code and body.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: test\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A free UDP port pair (even port, odd neighbour) on `ip`, for SIPp's -p and -mp,
/// which cannot take 0. Ports come from 10000-19999, below the kernel's ephemeral range,
/// through a counter, so parallel tests in this process never pick the same one.
pub fn free_port(ip: &str) -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        10_000 + (std::process::id() % 40) as u16 * 200,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let port = NEXT.fetch_add(4, Ordering::SeqCst);
        let port = 10_000 + (port - 10_000) % 9_996;
        if UdpSocket::bind((ip, port)).is_ok() && UdpSocket::bind((ip, port + 2)).is_ok() {
            return port;
        }
    }
}

/// The scenario folder.
pub fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/sipp")
        .join(name)
}

/// A SIPp UAS running a scenario on a fixed port, in the background.
pub struct SippServer {
    child: Child,
    work: tempfile::TempDir,
    pub port: u16,
}

impl SippServer {
    fn spawn(scenario_file: &str, port: u16, extra: &[&str]) -> (Child, tempfile::TempDir) {
        let work = tempfile::tempdir().unwrap();
        let media = free_port("127.0.0.1").to_string();
        let child = Command::new("sipp")
            .args([
                "-sf",
                &scenario(scenario_file).display().to_string(),
                "-i",
                "127.0.0.1",
            ])
            .args([
                "-p",
                &port.to_string(),
                "-mp",
                &media,
                "-nostdin",
                "-timeout",
                "60",
                "-trace_err",
            ])
            .args(extra)
            .current_dir(work.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sipp is installed (tests/run.sh installs it: apt-get install sip-tester)");
        std::thread::sleep(Duration::from_millis(300));
        (child, work)
    }

    /// Start on a given port (a registered device listening where it registered from).
    pub fn start_on(scenario_file: &str, port: u16, extra: &[&str]) -> Self {
        let (child, work) = Self::spawn(scenario_file, port, extra);
        SippServer { child, work, port }
    }

    pub fn start(scenario_file: &str, extra: &[&str]) -> Self {
        // free_port() can race with parallel tests: if SIPp exits at once (port taken),
        // try other ports.
        for _ in 0..5 {
            let port = free_port("127.0.0.1");
            let (mut child, work) = Self::spawn(scenario_file, port, extra);
            if matches!(child.try_wait(), Ok(None)) {
                return SippServer { child, work, port };
            }
        }
        panic!("SIPp ({scenario_file}) would not start");
    }

    /// Wait as [`Self::wait`]; its exit code and the SIP messages it exchanged (start it
    /// with `-trace_msg`).
    pub fn wait_with_messages(mut self, limit: Duration) -> (i32, String) {
        let status = wait_timeout(&mut self.child, limit);
        let _ = self.child.kill();
        let code = status.and_then(|s| s.code()).unwrap_or(-1);
        (code, self.messages())
    }

    fn messages(&self) -> String {
        let mut all = String::new();
        for entry in std::fs::read_dir(self.work.path()).unwrap().flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .ends_with("_messages.log")
            {
                all.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        all
    }

    /// Wait for it to finish its -m calls; its exit code.
    pub fn wait(mut self, limit: Duration) -> i32 {
        let status = wait_timeout(&mut self.child, limit);
        let _ = self.child.kill();
        status.and_then(|s| s.code()).unwrap_or(-1)
    }
}

impl Drop for SippServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    ];
    if !csv.is_empty() {
        args.extend(["-inf".into(), csv_path.display().to_string()]);
    }
    args.extend([
        "-mp".into(),
        free_port(local_ip).to_string(),
        "-p".into(),
        port,
        "-nostdin".into(),
        "-timeout".into(),
        "30".into(),
        "-timeout_error".into(),
        "-trace_err".into(),
    ]);
    if let Some(w) = extra.windows(2).find(|w| w[0] == "-p") {
        let p = args.iter().position(|a| a == "-p").unwrap();
        args[p + 1] = w[1].to_string();
    }
    let extra: Vec<&str> = {
        let mut out = Vec::new();
        let mut it = extra.iter();
        while let Some(a) = it.next() {
            if *a == "-p" {
                it.next();
            } else {
                out.push(*a);
            }
        }
        out
    };
    let extra = extra.as_slice();
    if !extra.contains(&"-i") {
        args.extend(["-i".into(), "127.0.0.1".into()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(server.to_string());
    let run = |args: &[String]| {
        Command::new("sipp")
            .args(args)
            .current_dir(work.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("sipp is installed (tests/run.sh installs it: apt-get install sip-tester)")
            .code()
            .unwrap_or(-1)
    };
    let mut code = run(&args);
    // 254: a port was taken between free_port() and SIPp's bind; pick others.
    for _ in 0..3 {
        if code != 254 {
            break;
        }
        let (p, mp) = (
            args.iter().position(|a| a == "-p").unwrap(),
            args.iter().position(|a| a == "-mp").unwrap(),
        );
        args[p + 1] = free_port(local_ip).to_string();
        args[mp + 1] = free_port(local_ip).to_string();
        code = run(&args);
    }
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
/// Register a device of `extension` with `server` (SIPp, `register.xml`) from a port of
/// its own; the port, for a SIPp device to answer on.
pub fn register_device(server: &Server, extension: &str, password: &str) -> u16 {
    let port = free_port("127.0.0.1");
    let code = sipp(
        server.udp,
        "register.xml",
        &credentials(extension, password),
        &["-m", "1", "-p", &port.to_string()],
    );
    assert_eq!(code, 0, "{}", server.log());
    port
}

pub fn credentials(extension: &str, password: &str) -> String {
    format!("SEQUENTIAL\n{extension};[authentication username={extension} password={password}]\n")
}

/// A client of `GET /api/events` (Server-Sent Events), reading on a thread of its own.
pub struct EventStream {
    events: std::sync::mpsc::Receiver<serde_json::Value>,
}

impl EventStream {
    /// Subscribe (with `query`, e.g. `?types=call.ended`); returns once the server has
    /// answered, so every event from then on is delivered.
    pub fn connect(addr: SocketAddr, token: Option<&str>, query: &str) -> Self {
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(
            stream,
            "GET /api/events{query} HTTP/1.1\r\nHost: test\r\n{auth}Accept: text/event-stream\r\n\r\n"
        )
        .unwrap();
        let mut reader = BufReader::new(stream);
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert!(status.contains(" 200 "), "{status}");
        let (tx, events) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Headers, then events: `event:`, `id:`, `data:` lines, a blank line after
            // each (chunked framing lines are skipped: they parse as neither).
            let mut name = String::new();
            for line in reader.lines().map_while(Result::ok) {
                if let Some(value) = line.strip_prefix("event: ") {
                    name = value.to_owned();
                } else if let Some(data) = line.strip_prefix("data: ") {
                    let mut event: serde_json::Value = serde_json::from_str(data).unwrap();
                    event["event"] = name.clone().into();
                    if tx.send(event).is_err() {
                        return;
                    }
                }
            }
        });
        Self { events }
    }

    /// The events received until one matches `last` (included), at most `limit` later.
    pub fn until(
        &self,
        limit: Duration,
        last: impl Fn(&serde_json::Value) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = std::time::Instant::now() + limit;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            let Ok(event) = self.events.recv_timeout(left) else {
                break;
            };
            let done = last(&event);
            seen.push(event);
            if done {
                return seen;
            }
        }
        panic!("no matching event within {limit:?}; got {seen:#?}")
    }
}
