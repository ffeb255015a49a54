//! Before `run`: `wasmpbx init` writes a config that works on the LAN, and
//! `wasmpbx config check` reads one the way `run` would, without running.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::config::Config;
use crate::media::Prompts;
use crate::server::random_text;
use crate::tls::{ReloadingCert, TlsTrunks};

/// What `wasmpbx init` is asked for.
pub struct InitOptions {
    /// The folder the config (and, by its paths, the scripts, store and recordings) goes in.
    pub dir: PathBuf,
    /// The address to listen on and write into SDP; default: the primary one.
    pub address: Option<IpAddr>,
    pub sip_port: u16,
    pub http_port: u16,
    /// Replace an existing config.
    pub force: bool,
}

/// What `init` wrote, for the next steps it prints.
pub struct Initialized {
    pub config: PathBuf,
    pub address: IpAddr,
    /// Whether the address was found (false: loopback, because none was).
    pub detected: bool,
    pub sip_port: u16,
    pub http_port: u16,
    pub token: String,
    /// (extension, password) of the demo users.
    pub users: Vec<(String, String)>,
}

/// The demo users `init` writes: (id, extension).
const DEMO_USERS: [(&str, &str); 2] = [("alice", "2001"), ("bob", "2002")];

/// Write `DIR/wasmpbx.toml`: listeners and media on the machine's address, a generated
/// admin token and demo passwords, the default scripts' folder, one location in listen
/// mode and a trunk to replace with the carrier's. The file is checked as `run` would
/// read it before it is written, and is readable by its owner only (it holds secrets).
pub fn init(options: &InitOptions) -> anyhow::Result<Initialized> {
    let InitOptions {
        dir,
        address,
        sip_port,
        http_port,
        force,
    } = options;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = std::path::absolute(dir).with_context(|| format!("{}", dir.display()))?;
    let path = dir.join("wasmpbx.toml");
    if path.exists() && !force {
        bail!(
            "{} exists: keep it, or pass --force to replace it",
            path.display()
        );
    }
    let (address, detected) = match address {
        Some(address) => (*address, true),
        None => match primary_address() {
            Some(address) => (address, true),
            None => (IpAddr::V4(Ipv4Addr::LOCALHOST), false),
        },
    };
    let token = random_text(32)?;
    let mut users = Vec::new();
    for (_, extension) in DEMO_USERS {
        users.push((extension.to_owned(), random_text(12)?));
    }
    let text = config_text(&dir, address, *sip_port, *http_port, &token, &users);
    Config::parse(&text, &path).context("the config init would write is invalid")?;
    write_private(&path, &text)?;
    Ok(Initialized {
        config: path,
        address,
        detected,
        sip_port: *sip_port,
        http_port: *http_port,
        token,
        users,
    })
}

impl Initialized {
    /// What to do next, for the admin who just ran `init`.
    pub fn next_steps(&self) -> String {
        let Initialized {
            config,
            address,
            detected,
            sip_port,
            http_port,
            token,
            users,
        } = self;
        let host = match address {
            IpAddr::V6(v6) => format!("[{v6}]"),
            IpAddr::V4(v4) => v4.to_string(),
        };
        let mut out = format!("wrote {}\n", config.display());
        if !detected {
            out.push_str(
                "  no LAN address found: it listens on loopback; pass --address to choose one\n",
            );
        }
        let _ = write!(
            out,
            "\nNext:\n\
             1. Run it:          wasmpbx run --config {config}\n\
             2. Register phones: server {host}:{sip_port} (UDP or TCP)",
            config = config.display()
        );
        for (extension, password) in users {
            let _ = write!(
                out,
                "\n                    user {extension} password {password}"
            );
        }
        let _ = write!(
            out,
            "\n                    and call one extension from the other.\n\
             3. Watch it:        http://{host}:{http_port}/admin (sign in with the \
             token {token})\n   \
             Admin API:       http://{host}:{http_port}/api/health \
             (Authorization: Bearer {token})\n   \
             Browser phone:   http://{host}:{http_port}/phone (browsers need HTTPS off \
             localhost: set [http] tls_cert and tls_key)\n\
             4. Your carrier:    edit [[trunks]] in the config (host, username, password, \
             register) and forward your public number to the location's flip number.\n"
        );
        out
    }
}

/// The config `init` writes; paths are absolute so `run` may start from any folder.
fn config_text(
    dir: &Path,
    address: IpAddr,
    sip_port: u16,
    http_port: u16,
    token: &str,
    users: &[(String, String)],
) -> String {
    let socket = |port: u16| std::net::SocketAddr::new(address, port).to_string();
    let path = |name: &str| toml_string(&dir.join(name).display().to_string());
    let mut text = format!(
        r#"# Written by `wasmpbx init`. Check changes with `wasmpbx config check FILE`;
# every key is described in examples/wasmpbx.toml of the source.

[sip]
listen = ["udp:{sip}", "tcp:{sip}"]
# The digest realm phones see.
domain = {domain}

[media]
# Written into SDP: phones send their audio here.
public_ip = {public_ip}
rtp_ports = "20000-30000"
recordings = {recordings}
prompts = {prompts}

[http]
# The admin API, /metrics, the console at /admin, /phone, SIP over WebSocket at /ws.
listen = "{http}"
# Authorization: Bearer … for /api, and the console's sign-in.
token = "{token}"

[scripts]
# Watched: drop .wasm components in. The default scripts are written here on first run.
dir = {scripts}
flip_policy = "flip-policy"

[store]
path = {store}

[flip]
# Dial from another of your devices to take a call over; dial during a call to send it
# to your other devices.
pull_code = "*77"
push_code = "*8"

# Your carrier: calls to the flip numbers come from it, return numbers are dialled through
# it. Replace this one, e.g. host = "sip.carrier.example", username, password,
# register = true. As written it expects a gateway at 127.0.0.1:5090 and takes calls from
# 127.0.0.2 (try it with SIPp: sipp -sn uac -i 127.0.0.2 -s +15550100 {sip}).
[[trunks]]
name = "pstn"
uri = "sip:127.0.0.1:5090"
inbound = ["127.0.0.2"]

# The business: its public number forwards to the flip number. Listen mode: every call goes
# on to the return number while wasmpbx observes; set script = "front-door" for active mode
# (hours, welcome, menu) with the vars of examples/wasmpbx.toml.
[[locations]]
name = "main"
flip_number = "+15550100"
script = "listen"
# Where calls go when the script fails.
fallback_number = "+15550199"

[locations.vars]
return_number = "+15550199"
"#,
        sip = socket(sip_port),
        domain = toml_string(&address.to_string()),
        public_ip = toml_string(&address.to_string()),
        http = socket(http_port),
        recordings = path("recordings"),
        prompts = path("prompts"),
        scripts = path("scripts"),
        store = path("wasmpbx.db"),
    );
    for ((id, _), (extension, password)) in DEMO_USERS.iter().zip(users) {
        let _ = write!(
            text,
            "\n[[users]]\nid = \"{id}\"\nextension = \"{extension}\"\npassword = \"{password}\"\n"
        );
    }
    text
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// The address this machine would use to reach the world: a UDP socket "connected" to
/// a documentation address (TEST-NET-1) makes the kernel choose a route and a source
/// address; nothing is sent. None without a route or when the answer is loopback.
fn primary_address() -> Option<IpAddr> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    socket.connect((Ipv4Addr::new(192, 0, 2, 1), 9)).ok()?;
    let address = socket.local_addr().ok()?.ip();
    (!address.is_loopback() && !address.is_unspecified()).then_some(address)
}

/// Create or replace `path` with `text`, readable by its owner only.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Read a config as `run` would — the file, its certificates and TLS trunk settings,
/// the prompts — without binding anything. The summary to print, or the first error.
/// Problems `run` would only log come back as warnings in the summary.
pub fn check(path: &Path) -> anyhow::Result<String> {
    let config = Config::load(path)?;
    for (cert, key, keys) in [
        (&config.sip.tls_cert, &config.sip.tls_key, "sip.tls_cert"),
        (&config.http.tls_cert, &config.http.tls_key, "http.tls_cert"),
    ] {
        if let (Some(cert), Some(key)) = (cert, key) {
            ReloadingCert::load(cert, key, keys)?;
        }
    }
    TlsTrunks::new(&config)?;

    let mut out = format!("{}: ok\n", path.display());
    let listeners: Vec<String> = config.sip.listen.iter().map(|l| l.to_string()).collect();
    let _ = writeln!(out, "  SIP        {}", listeners.join(", "));
    let _ = writeln!(
        out,
        "  HTTP       {}{}",
        config.http.listen,
        match &config.http.token {
            Some(_) => " (token set)",
            None => " (no token: loopback only)",
        }
    );
    let names = |items: Vec<String>| match items.is_empty() {
        true => "none".to_owned(),
        false => items.join(", "),
    };
    let _ = writeln!(
        out,
        "  users      {}",
        names(
            config
                .users
                .iter()
                .map(|u| format!("{} ({})", u.id, u.extension))
                .collect()
        )
    );
    let _ = writeln!(
        out,
        "  trunks     {}",
        names(config.trunks.iter().map(|t| t.name.clone()).collect())
    );
    let _ = writeln!(
        out,
        "  locations  {}",
        names(
            config
                .locations
                .iter()
                .map(|l| format!("{} ({} → {})", l.name, l.flip_number, l.script))
                .collect()
        )
    );

    let mut warnings = Vec::new();
    let scripts_dir = &config.scripts.dir;
    let mut wanted: Vec<&str> = config.locations.iter().map(|l| l.script.as_str()).collect();
    wanted.push(&config.scripts.flip_policy);
    if scripts_dir.exists() {
        for script in wanted {
            if !scripts_dir.join(format!("{script}.wasm")).exists() {
                warnings.push(format!(
                    "scripts.dir: {} has no {script}.wasm yet (its calls take the fallback until it does)",
                    scripts_dir.display()
                ));
            }
        }
    } else {
        let _ = writeln!(
            out,
            "  scripts    {} does not exist: the default scripts are written there on first run",
            scripts_dir.display()
        );
    }
    if config.media.prompts.exists() {
        let (_, errors) = Prompts::load(&config.media.prompts);
        warnings.extend(errors.iter().map(|e| format!("media.prompts: {e}")));
    }
    for warning in warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(dir: &Path) -> InitOptions {
        InitOptions {
            dir: dir.to_owned(),
            address: Some("192.0.2.7".parse().unwrap()),
            sip_port: 5060,
            http_port: 8080,
            force: false,
        }
    }

    #[test]
    fn init_writes_a_config_run_accepts_on_the_given_address() {
        let dir = tempfile::tempdir().unwrap();
        let written = init(&options(dir.path())).unwrap();
        let config = Config::load(&written.config).unwrap();
        assert_eq!(config.sip.listen[0].to_string(), "udp:192.0.2.7:5060");
        assert_eq!(config.media.public_ip.to_string(), "192.0.2.7");
        assert_eq!(config.http.listen.to_string(), "192.0.2.7:8080");
        assert_eq!(config.http.token.as_deref(), Some(written.token.as_str()));
        assert_eq!(config.scripts.dir, dir.path().join("scripts"));
        assert_eq!(config.users.len(), 2);
        assert_eq!(
            config.users[0].password.as_deref(),
            Some(written.users[0].1.as_str())
        );
        assert_eq!(config.locations[0].script, "listen");
        let steps = written.next_steps();
        assert!(steps.contains("server 192.0.2.7:5060"), "{steps}");
        assert!(steps.contains(&written.users[1].1), "{steps}");
    }

    #[cfg(unix)]
    #[test]
    fn the_config_holds_secrets_so_only_its_owner_reads_it() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let written = init(&options(dir.path())).unwrap();
        let mode = std::fs::metadata(&written.config)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn each_init_generates_new_secrets() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (
            init(&options(a.path())).unwrap(),
            init(&options(b.path())).unwrap(),
        );
        assert_ne!(a.token, b.token);
        assert_ne!(a.users, b.users);
        assert_eq!(a.token.len(), 32);
    }

    #[test]
    fn init_keeps_an_existing_config_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wasmpbx.toml");
        std::fs::write(&path, "# mine\n").unwrap();
        let err = init(&options(dir.path())).err().unwrap().to_string();
        assert!(err.contains("exists") && err.contains("--force"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "# mine\n");
        let forced = InitOptions {
            force: true,
            ..options(dir.path())
        };
        init(&forced).unwrap();
        assert!(Config::load(&path).is_ok());
    }

    #[test]
    fn an_ipv6_address_is_bracketed_where_it_meets_a_port() {
        let dir = tempfile::tempdir().unwrap();
        let v6 = InitOptions {
            address: Some("2001:db8::7".parse().unwrap()),
            ..options(dir.path())
        };
        let written = init(&v6).unwrap();
        let config = Config::load(&written.config).unwrap();
        assert_eq!(config.sip.listen[0].to_string(), "udp:[2001:db8::7]:5060");
        assert!(written.next_steps().contains("server [2001:db8::7]:5060"));
    }

    #[test]
    fn check_reports_what_run_would_use_and_missing_scripts() {
        let dir = tempfile::tempdir().unwrap();
        let written = init(&options(dir.path())).unwrap();
        let summary = check(&written.config).unwrap();
        assert!(summary.contains(": ok"), "{summary}");
        assert!(summary.contains("alice (2001)"), "{summary}");
        assert!(summary.contains("written there on first run"), "{summary}");
        assert!(
            !summary.contains(&written.token),
            "never shows the token: {summary}"
        );

        std::fs::create_dir(dir.path().join("scripts")).unwrap();
        let summary = check(&written.config).unwrap();
        assert!(summary.contains("warning: scripts.dir"), "{summary}");
        assert!(summary.contains("listen.wasm"), "{summary}");
    }

    #[test]
    fn check_fails_on_a_certificate_run_could_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wasmpbx.toml");
        std::fs::write(
            &path,
            "[http]\nlisten = \"127.0.0.1:8080\"\ntls_cert = \"missing.pem\"\ntls_key = \"missing.key\"\n",
        )
        .unwrap();
        let err = format!("{:#}", check(&path).err().unwrap());
        assert!(err.contains("missing.pem"), "{err}");
    }
}
