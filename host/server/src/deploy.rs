//! `wasmpbx script deploy FILE.wasm`: check a script here, put it into the watched
//! folder whole (written under a hidden name, then renamed), and wait for the running
//! server to say it loaded that version — or why not.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::config::Config;
use crate::script::{Limits, ScriptEngine, ScriptHost, simulate};

/// What `deploy` is asked for.
pub struct DeployOptions {
    pub file: PathBuf,
    /// The watched folder; default: the config's `scripts.dir`.
    pub dir: Option<PathBuf>,
    /// The script's name; default: the file's stem.
    pub name: Option<String>,
    /// How long to wait for the server's load result.
    pub wait: Duration,
}

/// How a deploy ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Deployed {
    /// The server serves this version now.
    Loaded { name: String, hash: String },
    /// Copied, but no server answered at the config's HTTP address to confirm it.
    Unconfirmed {
        name: String,
        path: PathBuf,
        why: String,
    },
}

/// Check, copy, and wait. An error is the one line to print: the script's load error
/// (here or the server's), or why it could not be copied.
pub fn deploy(options: &DeployOptions, config: &Config) -> anyhow::Result<Deployed> {
    let bytes = std::fs::read(&options.file)
        .with_context(|| format!("cannot read {}", options.file.display()))?;
    let name = match &options.name {
        Some(name) => name.clone(),
        None => options
            .file
            .file_stem()
            .and_then(|s| s.to_str())
            .context("the file has no name to serve it by: pass --name")?
            .to_owned(),
    };
    // The name alone: a path in it ("../x") would put the file outside the folder.
    if !crate::config::is_script_name(&name) {
        bail!("{name:?} is not a script name (letters, digits, '-' and '_')");
    }
    // The same checks the server makes, with its limits, before anything is copied.
    let limits = Limits {
        deadline: Duration::from_millis(config.scripts.deadline_ms),
        memory_bytes: (config.scripts.memory_mib as usize) << 20,
    };
    let host = ScriptHost::new(
        ScriptEngine::new(limits, None)?,
        simulate::offline_services(config),
    );
    let script = host
        .engine
        .load(&name, &bytes, &host.services)
        .map_err(|e| anyhow::anyhow!("{}: {e}", options.file.display()))?;
    let hash = script.hash.clone();

    let dir = options
        .dir
        .clone()
        .unwrap_or_else(|| config.scripts.dir.clone());
    let path = dir.join(format!("{name}.wasm"));
    let partial = dir.join(format!(".{name}.wasm.partial"));
    std::fs::write(&partial, &bytes)
        .and_then(|()| std::fs::rename(&partial, &path))
        .with_context(|| format!("cannot put the script into {}", dir.display()))?;

    if config.http.tls_cert.is_some() {
        let why = "the admin API is HTTPS; see GET /api/scripts for the load result".into();
        return Ok(Deployed::Unconfirmed { name, path, why });
    }
    let address = admin_address(config);
    let deadline = crate::clock::monotonic_now() + options.wait;
    loop {
        match scripts(address, config.http.token.as_deref()) {
            Ok(scripts) => {
                let entry = scripts
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|s| s["name"] == name);
                if let Some(entry) = entry {
                    if entry["hash"] == hash.as_str() {
                        return Ok(Deployed::Loaded { name, hash });
                    }
                    let error = &entry["last_error"];
                    if error["hash"] == hash.as_str() {
                        bail!(
                            "the server did not load {name}: {}",
                            error["message"].as_str().unwrap_or("(no reason given)")
                        );
                    }
                }
            }
            Err(why) if crate::clock::monotonic_now() >= deadline || is_refused(&why) => {
                return Ok(Deployed::Unconfirmed {
                    name,
                    path,
                    why: format!("{why:#}"),
                });
            }
            Err(_) => {}
        }
        if crate::clock::monotonic_now() >= deadline {
            bail!(
                "the server at {address} did not load {name} within {:?} (a large script \
                 compiles for seconds: pass --wait)",
                options.wait
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Where the config's admin API answers from this machine.
fn admin_address(config: &Config) -> SocketAddr {
    let listen = config.http.listen;
    match listen.ip().is_unspecified() {
        true => SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), listen.port()),
        false => listen,
    }
}

fn is_refused(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
}

/// `GET /api/scripts` over plain HTTP.
fn scripts(address: SocketAddr, token: Option<&str>) -> anyhow::Result<serde_json::Value> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET /api/scripts HTTP/1.1\r\nHost: {address}\r\n{auth}Connection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("not an HTTP answer")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!(
            "the admin API answered {}",
            head.lines().next().unwrap_or("")
        );
    }
    Ok(serde_json::from_str(body)?)
}
