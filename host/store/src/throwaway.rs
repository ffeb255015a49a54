//! A throw-away PostgreSQL for tests and benchmarks: Debian's PostgreSQL binaries run a
//! fresh cluster in a temporary folder on a free loopback port, and stop it when dropped.
//! As root it runs as the `postgres` user (PostgreSQL refuses root).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A running PostgreSQL cluster, stopped and deleted on drop.
pub struct ThrowawayPostgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    /// Running as root: PostgreSQL's programs run as the `postgres` user.
    root: bool,
    _dir: tempfile::TempDir,
}

/// The newest installed PostgreSQL's programs (Debian keeps them out of `PATH`).
fn bin_dir() -> Result<PathBuf, String> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("PostgreSQL is not installed (/usr/lib/postgresql: {e})"))?
        .filter_map(|entry| Some(entry.ok()?.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort_by_key(|bin| {
        bin.parent()
            .and_then(|p| p.file_name()?.to_str()?.parse::<u32>().ok())
    });
    found
        .pop()
        .ok_or_else(|| "PostgreSQL is not installed (no initdb)".into())
}

fn is_root() -> bool {
    // The `id` program rather than unsafe libc: a test helper runs this once.
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

/// `program` run as whoever may run PostgreSQL (`root`: we are root).
fn as_postgres(program: &Path, root: bool) -> Command {
    if root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn run(command: &mut Command, what: &str) -> Result<(), String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn free_port() -> Result<u16, String> {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(socket.local_addr().map_err(|e| e.to_string())?.port())
}

impl ThrowawayPostgres {
    /// Create and start a cluster (a second or two). Its superuser is `wasmpbx`, trusted
    /// on loopback.
    pub fn start() -> Result<Self, String> {
        let bin = bin_dir()?;
        let root = is_root();
        let dir = tempfile::Builder::new()
            .prefix("wasmpbx-pg")
            .tempdir()
            .map_err(|e| e.to_string())?;
        if root {
            run(
                Command::new("chown").arg("postgres:").arg(dir.path()),
                "chown",
            )?;
        }
        let data = dir.path().join("data");
        run(
            as_postgres(&bin.join("initdb"), root)
                .args(["-A", "trust", "-U", "wasmpbx", "-E", "UTF8", "--locale=C"])
                .arg("--no-sync")
                .arg("-D")
                .arg(&data),
            "initdb",
        )?;
        // A port taken between the probe and the start fails the start: try a few.
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port()?;
            let options = format!(
                "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off \
                 -c synchronous_commit=off -c full_page_writes=off",
                dir.path().display()
            );
            match run(
                as_postgres(&bin.join("pg_ctl"), root)
                    .args(["start", "-w", "-t", "30", "-D"])
                    .arg(&data)
                    .arg("-l")
                    .arg(dir.path().join("log"))
                    .args(["-o", &options]),
                "pg_ctl start",
            ) {
                Ok(()) => {
                    return Ok(Self {
                        bin,
                        data,
                        port,
                        root,
                        _dir: dir,
                    });
                }
                Err(e) => last = e,
            }
        }
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
        Err(format!("{last}\n{log}"))
    }

    /// A new, empty database's URL.
    pub fn database(&self, name: &str) -> Result<String, String> {
        let mut admin = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)
            .map_err(|e| format!("connecting to the throw-away PostgreSQL: {e}"))?;
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .map_err(|e| format!("CREATE DATABASE {name}: {e}"))?;
        Ok(self.url(name))
    }

    /// The URL of database `name` on this cluster.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://wasmpbx@127.0.0.1:{}/{name}", self.port)
    }

    /// Stop the cluster at once (a crash, as far as clients can tell); dropping it does
    /// too.
    pub fn stop(&self) {
        let _ = as_postgres(&self.bin.join("pg_ctl"), self.root)
            .args(["stop", "-m", "immediate", "-D"])
            .arg(&self.data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}
