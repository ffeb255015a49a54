//! The configuration file (`wasmpbx.toml`) and the embedded default.
//!
//! Parsing is strict: an unknown key or a bad value is an error naming the key
//! (`sip.listen[0]: …`), never a silently ignored setting. Cross-field rules (unique
//! extensions, known trunk names, …) are checked by [`Config::validate`].

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

mod reload;
pub use reload::{Changes, reload};

/// The embedded default configuration used by `wasmpbx run` without `--config`.
pub const EMBEDDED_DEFAULT: &str = include_str!("default-config.toml");

/// A configuration error: one line naming the file and key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {0}", file = .1.display())]
    Read(std::io::Error, PathBuf),
    #[error("{file}: {message}", file = .file.display())]
    Invalid { file: PathBuf, message: String },
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub sip: SipConfig,
    #[serde(default)]
    pub media: MediaConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub scripts: ScriptsConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub cluster: ClusterConfig,
    #[serde(default)]
    pub flip: FlipConfig,
    #[serde(default)]
    pub trunks: Vec<Trunk>,
    #[serde(default)]
    pub users: Vec<User>,
    #[serde(default)]
    pub locations: Vec<Location>,
    #[serde(default)]
    pub webhooks: Vec<Webhook>,
}

/// The event types of the event stream (`GET /api/events`), which webhooks subscribe to.
pub const EVENT_TYPES: [&str; 11] = [
    "call.started",
    "call.answered",
    "call.ended",
    "flip.requested",
    "flip.ended",
    "registration.up",
    "registration.down",
    "script.loaded",
    "script.failed",
    "script.removed",
    "script.fallback",
];

/// Events POSTed to an HTTP(S) endpoint as they happen.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// `http://` or `https://`.
    pub url: String,
    /// Event types ([`EVENT_TYPES`]); empty: all.
    #[serde(default)]
    pub events: Vec<String>,
    /// Signs each delivery (HMAC-SHA256), so the receiver knows it came from here.
    pub secret: Option<String>,
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.url)
            .field("events", &self.events)
            .field("secret", &self.secret.as_ref().map(|_| "…"))
            .finish()
    }
}

impl Webhook {
    /// Whether the webhook wants events of `kind`.
    pub fn wants(&self, kind: &str) -> bool {
        self.events.is_empty() || self.events.iter().any(|e| e == kind)
    }

    fn check(&self) -> Result<(), String> {
        let rest = self
            .url
            .strip_prefix("https://")
            .or_else(|| self.url.strip_prefix("http://"))
            .ok_or_else(|| format!("url: {:?} is not an http:// or https:// URL", self.url))?;
        let host = rest.split(['/', '?']).next().unwrap_or("");
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(format!("url: {:?} has no host", self.url));
        }
        if let Some(unknown) = self
            .events
            .iter()
            .find(|e| !EVENT_TYPES.contains(&e.as_str()))
        {
            return Err(format!(
                "events: {unknown:?} is not an event type (one of {})",
                EVENT_TYPES.join(", ")
            ));
        }
        if self.secret.as_deref().is_some_and(str::is_empty) {
            return Err("secret: must not be empty".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// On SIGTERM, how long live calls may run on before they are hung up.
    pub drain_timeout_s: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            drain_timeout_s: 60,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    /// Listeners as `transport:ip:port`.
    pub listen: Vec<ListenAddr>,
    /// The realm for digest authentication.
    pub domain: String,
    /// Numbers treated as emergency calls besides 112, 911, 999 and 000.
    pub emergency_numbers: Vec<String>,
    /// Digest challenges offered, in order: `"MD5"`, `"SHA-256"`. MD5 alone by default:
    /// some deployed clients abort on a SHA-256 challenge (baresip 1.0) or read only the
    /// first one (SIPp); offer SHA-256 where every device supports it (RFC 8760).
    pub digest_algorithms: Vec<crate::sip::digest::Algorithm>,
    /// Name servers for trunk host names (`"IP"` or `"IP:PORT"`); empty: the system's
    /// resolver configuration (`/etc/resolv.conf`).
    pub dns_servers: Vec<DnsServer>,
    /// The certificate chain (PEM) `tls:` listeners present; read again when it changes.
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Every this many seconds a connected call asks each party, by an OPTIONS in its
    /// dialog, whether the call is still there; `481` or no answer at all ends the call
    /// as if that party had hung up (a BYE that never arrived). 0: never asks.
    pub dialog_keepalive_s: u32,
    /// How many call cores share the signalling, each a task of its own with the calls
    /// whose Call-IDs hash to it (and its own slice of `media.rtp_ports`): more cores,
    /// more calls per second. 0 (the default): one per CPU, as many as `media.rtp_ports`
    /// leaves room for 100 calls each. Read at start.
    pub shards: u16,
}

/// A name server, written `192.0.2.53` or `127.0.0.1:5353`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct DnsServer(pub SocketAddr);

impl TryFrom<String> for DnsServer {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse::<SocketAddr>()
            .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
            .map(DnsServer)
            .map_err(|_| {
                format!("{s:?} is not a name server address, e.g. 192.0.2.53 or 127.0.0.1:5353")
            })
    }
}

impl Default for SipConfig {
    fn default() -> Self {
        Self {
            listen: vec![
                ListenAddr {
                    transport: Transport::Udp,
                    addr: ([127, 0, 0, 1], 5060).into(),
                },
                ListenAddr {
                    transport: Transport::Tcp,
                    addr: ([127, 0, 0, 1], 5060).into(),
                },
            ],
            domain: "wasmpbx.local".into(),
            emergency_numbers: Vec::new(),
            digest_algorithms: vec![crate::sip::digest::Algorithm::Md5],
            dns_servers: Vec::new(),
            tls_cert: None,
            tls_key: None,
            dialog_keepalive_s: 120,
            shards: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// The UDP port range for RTP and RTCP, `"LOW-HIGH"`.
    pub rtp_ports: PortRange,
    /// The address written into SDP.
    pub public_ip: IpAddr,
    /// The folder of WAV prompts that `play` actions name (added to the built-in set).
    pub prompts: PathBuf,
    /// Where call recordings are written.
    pub recordings: PathBuf,
    /// Recordings older than this many days are deleted (checked hourly); 0 keeps them.
    pub recordings_retention_days: u32,
    /// The espeak-ng voice `say` speaks with when it names none.
    pub say_voice: String,
    /// SDES-SRTP on phones' legs (trunks have their own `srtp`).
    pub srtp: SrtpPolicy,
}

/// Whether a leg's media is encrypted with SDES-SRTP (RFC 4568). Each leg's keys are
/// its own: the relay decrypts and re-encrypts between an SRTP leg and a plain one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SrtpPolicy {
    /// Plain RTP only: an `RTP/SAVP` offer is refused (488), keys in an `RTP/AVP`
    /// offer are ignored.
    Off,
    /// SRTP when the other party offers it; the host's own offers are plain RTP (a phone
    /// that takes nothing but SRTP needs `required`: set it on its user).
    #[default]
    Optional,
    /// SRTP only: the host offers `RTP/SAVP` with keys and refuses plain offers (488).
    Required,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            rtp_ports: PortRange {
                low: 20000,
                high: 30000,
            },
            public_ip: [127, 0, 0, 1].into(),
            prompts: "prompts".into(),
            recordings: "recordings".into(),
            recordings_retention_days: 0,
            say_voice: "en-us".into(),
            srtp: SrtpPolicy::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Bearer token for `/api`; required when `listen` is not on loopback.
    pub token: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// WebSocket `Origin` allow-list; empty means same origin only.
    pub allowed_origins: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 8080).into(),
            token: None,
            tls_cert: None,
            tls_key: None,
            allowed_origins: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScriptsConfig {
    /// The watched folder of `.wasm` components.
    pub dir: PathBuf,
    /// The script (file stem) that decides flips.
    pub flip_policy: String,
    /// How long one event may run before it is stopped, in milliseconds.
    pub deadline_ms: u64,
    /// The most linear memory one instance may use, in MiB.
    pub memory_mib: u64,
    /// Where compiled scripts are cached; default: `.wasmpbx-cache` beside the store.
    pub cache_dir: Option<PathBuf>,
    /// Keep every routing decision with what its script saw (clock, key-value reads,
    /// vars, users, devices) and each script version's bytes, for `wasmpbx script
    /// replay`.
    pub record_decisions: bool,
    /// Recorded decisions and shadow results older than this many days are deleted
    /// (hourly); 0 keeps them.
    pub journal_retention_days: u32,
}

impl Default for ScriptsConfig {
    fn default() -> Self {
        Self {
            dir: "scripts".into(),
            flip_policy: "flip-policy".into(),
            deadline_ms: 20,
            memory_mib: 32,
            cache_dir: None,
            record_decisions: true,
            journal_retention_days: 14,
        }
    }
}

#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// The SQLite database file (the embedded default).
    pub path: PathBuf,
    /// A PostgreSQL database instead (`postgres://user:password@host/db`), which several
    /// nodes share. It may hold a password: never log it.
    pub url: Option<String>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: "wasmpbx.db".into(),
            url: None,
        }
    }
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may hold a password: only whether there is one.
        f.debug_struct("StoreConfig")
            .field("path", &self.path)
            .field("url", &self.url.as_ref().map(|_| "…"))
            .finish()
    }
}

/// This node among several sharing one PostgreSQL store.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// The node's name, unique among the nodes: its call records, registrations and
    /// signs of life are kept under it.
    pub node: Option<String>,
    /// Where the other nodes (and the edge) reach this one: `sip:10.0.0.11:5060`. Default:
    /// its first UDP listener.
    pub advertise: Option<String>,
    /// The Kamailio edges in front of the nodes (`sip:10.0.0.10:5060`), trusted: a device's
    /// request from one carries the user the edge authenticated (P-Asserted-Identity),
    /// and the node does not challenge it again.
    pub edge: Vec<String>,
}

impl ClusterConfig {
    /// This node's name: `node`, or `local` for a node on its own.
    pub fn name(&self) -> &str {
        self.node.as_deref().unwrap_or("local")
    }

    /// Whether `source` is one of the edges (`edge`: checked to be IP literals).
    pub fn is_edge(&self, source: std::net::IpAddr) -> bool {
        self.edge.iter().any(|uri| edge_ip(uri) == Some(source))
    }

    /// Where each edge takes requests, in the order listed (port 5060 when its URI
    /// names none).
    pub fn edge_addrs(&self) -> Vec<std::net::SocketAddr> {
        self.edge
            .iter()
            .filter_map(|uri| {
                let port = uri
                    .rsplit_once(':')
                    .and_then(|(_, port)| port.parse().ok())
                    .unwrap_or(5060);
                Some(std::net::SocketAddr::new(edge_ip(uri)?, port))
            })
            .collect()
    }
}

/// The address of an edge's URI, `sip:10.0.0.10:5060` or `sip:[::1]:5060`.
fn edge_ip(uri: &str) -> Option<std::net::IpAddr> {
    let host_port = uri.strip_prefix("sip:")?;
    if let Some(bracketed) = host_port.strip_prefix('[') {
        return bracketed.split_once(']')?.0.parse().ok();
    }
    host_port.split(':').next()?.parse().ok()
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlipConfig {
    pub pull_code: String,
    pub push_code: String,
    /// Whether emergency calls may be flipped at all (the policy must also allow it).
    pub allow_emergency: bool,
    /// A glob on device names (e.g. `"lobby-*"`) whose flips need the user's PIN.
    pub pin_devices: Option<String>,
    /// How long targets ring when the policy does not say, in milliseconds.
    pub ring_timeout_ms: u32,
}

impl Default for FlipConfig {
    fn default() -> Self {
        Self {
            pull_code: "*77".into(),
            push_code: "*8".into(),
            allow_emergency: false,
            pin_devices: None,
            ring_timeout_ms: 20_000,
        }
    }
}

pub use crate::trunk::Trunk;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub id: String,
    pub extension: String,
    pub password: Option<String>,
    /// MD5(user:realm:password), as an alternative to `password`.
    pub ha1: Option<String>,
    #[serde(default = "default_role")]
    pub role: String,
    /// The PIN a flip to a PIN-protected device asks for.
    pub pin: Option<String>,
    /// Names for the user's devices: name → the device's `+sip.instance` or the start of
    /// its User-Agent (e.g. `desk = "Yealink SIP-T46S"`). Unnamed devices are named by
    /// their User-Agent.
    #[serde(default)]
    pub devices: BTreeMap<String, String>,
    /// SDES-SRTP on this user's phones' legs (default: `[media] srtp`): `required` for a
    /// user whose phones are set to "SRTP mandatory", so the host offers them SRTP.
    pub srtp: Option<SrtpPolicy>,
}

impl User {
    /// The configured name of a registering device, if one matches it.
    pub fn device_name(&self, instance: Option<&str>, user_agent: Option<&str>) -> Option<&str> {
        let matches = |pattern: &str| {
            let pattern = pattern.trim_matches(|c| c == '<' || c == '>');
            instance.is_some_and(|i| i.trim_matches(|c| c == '<' || c == '>') == pattern)
                || user_agent.is_some_and(|ua| ua.starts_with(pattern))
        };
        self.devices
            .iter()
            .find(|(_, pattern)| matches(pattern))
            .map(|(name, _)| name.as_str())
    }
}

fn default_role() -> String {
    "user".into()
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    pub name: String,
    /// Calls to this number run this location's script.
    pub flip_number: String,
    /// The routing script (file stem in the scripts folder).
    pub script: String,
    /// A script run beside `script` on every event of this location's calls, on the
    /// same inputs, its actions never applied: what it would have done, compared with
    /// what `script` did (`GET /api/shadow/{location}`). `PUT
    /// /api/locations/{name}/shadow` overrides it at run time.
    pub shadow: Option<String>,
    /// Where calls go, listen-mode, when the script fails.
    pub fallback_number: String,
    /// The trunk for this location's outbound calls; default: the first trunk.
    pub trunk: Option<String>,
    /// Stream every call's audio (both tracks) to this WebSocket, in the Twilio Media
    /// Streams format.
    pub stream_url: Option<String>,
    /// Free-form settings handed to the script.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
}

/// SIP transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        })
    }
}

/// A SIP listener, written `udp:127.0.0.1:5060`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ListenAddr {
    pub transport: Transport,
    pub addr: SocketAddr,
}

impl TryFrom<String> for ListenAddr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let bad =
            || format!("{s:?} is not a listener: expected udp:IP:PORT, tcp:IP:PORT or tls:IP:PORT");
        let (transport, addr) = s.split_once(':').ok_or_else(bad)?;
        let transport = match transport {
            "udp" => Transport::Udp,
            "tcp" => Transport::Tcp,
            "tls" => Transport::Tls,
            _ => return Err(bad()),
        };
        let addr = addr.parse().map_err(|_| bad())?;
        Ok(Self { transport, addr })
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.transport, self.addr)
    }
}

/// The most signalling shards `sip.shards` may ask for.
const MAX_SHARDS: u16 = 64;

/// `sip.shards = 0` runs no more shards than leave each room for this many calls.
const AUTO_SHARD_CALLS: u32 = 100;

/// An inclusive UDP port range, written `"20000-30000"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct PortRange {
    pub low: u16,
    pub high: u16,
}

impl PortRange {
    /// How many ports it holds (`low` to `high`, both in).
    pub fn count(&self) -> u32 {
        (u32::from(self.high) + 1).saturating_sub(u32::from(self.low))
    }

    /// The `index`-th of `count` slices that share the range, each starting on an even
    /// port (an RTP/RTCP pair never straddles two); the last takes what is left. None
    /// when a slice would hold no pair.
    pub fn slice(&self, index: usize, count: usize) -> Option<PortRange> {
        let count = count.max(1) as u32;
        let pairs = self.count() / 2 / count;
        let start = u32::from(self.low) + u32::from(self.low) % 2;
        let low = start + index as u32 * pairs * 2;
        let high = if index as u32 + 1 == count {
            u32::from(self.high)
        } else {
            low + pairs * 2 - 1
        };
        (pairs > 0 && high <= u32::from(self.high) && high > low).then_some(PortRange {
            low: low as u16,
            high: high as u16,
        })
    }
}

impl TryFrom<String> for PortRange {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a port range: expected LOW-HIGH, e.g. 20000-30000");
        let (low, high) = s.split_once('-').ok_or_else(bad)?;
        let (low, high): (u16, u16) = (
            low.trim().parse().map_err(|_| bad())?,
            high.trim().parse().map_err(|_| bad())?,
        );
        if low == 0 || low > high {
            return Err(bad());
        }
        Ok(Self { low, high })
    }
}

/// An address or network, written `127.0.0.2` or `10.0.0.0/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl TryFrom<String> for Cidr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let bad = || format!("{s:?} is not an address or CIDR, e.g. 127.0.0.2 or 10.0.0.0/8");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.as_str(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }
}

impl Config {
    /// Read and validate a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError::Read(e, path.to_owned()))?;
        Self::parse(&text, path)
    }

    /// The embedded default configuration.
    pub fn embedded_default() -> Self {
        Self::parse(EMBEDDED_DEFAULT, Path::new("<embedded default>"))
            .expect("the embedded default configuration is valid (tested)")
    }

    /// Parse and validate config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            file: origin.to_owned(),
            message,
        };
        let deserializer =
            toml::Deserializer::parse(text).map_err(|e| invalid(one_line_toml_error(text, &e)))?;
        let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let path = e.path().to_string();
            let inner = one_line_toml_error(text, e.inner());
            if path == "." {
                invalid(inner)
            } else {
                invalid(format!("{path}: {inner}"))
            }
        })?;
        config.validate().map_err(invalid)?;
        Ok(config)
    }

    /// The store's keys: a PostgreSQL URL (never repeated: it may hold a password), and
    /// the node name several nodes sharing it need.
    fn check_store(&self) -> Result<(), String> {
        let node = self.cluster.node.as_deref();
        if let Some(node) = node
            && (node.is_empty()
                || node.len() > 64
                || !node
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            return Err(format!(
                "cluster.node: {node:?} must be 1 to 64 letters, digits, '-' or '_'"
            ));
        }
        if let Some(advertise) = &self.cluster.advertise
            && !(advertise.starts_with("sip:") && advertise.len() > 4 && !advertise.contains('@'))
        {
            return Err(format!(
                "cluster.advertise: {advertise:?} is not a SIP URI of a host (sip:10.0.0.11:5060)"
            ));
        }
        if let Some(bad) = self.cluster.edge.iter().find(|uri| edge_ip(uri).is_none()) {
            return Err(format!(
                "cluster.edge: {bad:?} is not a SIP URI of an IP address (sip:10.0.0.10:5060)"
            ));
        }
        let Some(url) = &self.store.url else {
            if !self.cluster.edge.is_empty() {
                return Err(
                    "cluster.edge: needs store.url (the edge reads the users and \
                            their calls from the shared database)"
                        .into(),
                );
            }
            return Ok(());
        };
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err("store.url: must be a postgres:// URL".into());
        }
        if node.is_none() {
            return Err(
                "cluster.node: required with store.url (the nodes sharing the database need \
                 distinct names)"
                    .into(),
            );
        }
        Ok(())
    }

    /// How many signalling shards to run on a machine with `cpus` CPUs: `sip.shards`, or
    /// for 0 one per CPU, as many as `media.rtp_ports` leaves room for
    /// [`AUTO_SHARD_CALLS`] calls each (four ports a call).
    pub fn shard_count(&self, cpus: usize) -> usize {
        match self.sip.shards {
            0 => {
                let room = self.media.rtp_ports.count() / (4 * AUTO_SHARD_CALLS);
                cpus.clamp(1, usize::from(MAX_SHARDS))
                    .min(room.max(1) as usize)
            }
            n => usize::from(n),
        }
    }

    /// Cross-field rules; the error names the key at fault.
    pub fn validate(&self) -> Result<(), String> {
        if self.server.drain_timeout_s > 86_400 {
            return Err(format!(
                "server.drain_timeout_s: {} is out of range (0 to 86400)",
                self.server.drain_timeout_s
            ));
        }
        if self.sip.listen.is_empty() {
            return Err("sip.listen: at least one listener is needed".into());
        }
        if self.sip.shards > MAX_SHARDS {
            return Err(format!(
                "sip.shards: {} is out of range (0 for one per CPU, or 1 to {MAX_SHARDS})",
                self.sip.shards
            ));
        }
        if self.sip.shards > 1 && self.media.rtp_ports.count() / 4 < u32::from(self.sip.shards) {
            return Err(format!(
                "media.rtp_ports: {} ports leave some of the sip.shards = {} shards no room \
                 for a call (four ports each)",
                self.media.rtp_ports.count(),
                self.sip.shards
            ));
        }
        self.check_store()?;
        if !crate::routing::is_voice_name(&self.media.say_voice) {
            return Err(format!(
                "media.say_voice: {:?} is not a voice name (e.g. \"en-us\")",
                self.media.say_voice
            ));
        }
        if self.sip.digest_algorithms.is_empty() {
            return Err("sip.digest_algorithms: at least one algorithm is needed".into());
        }
        if self.sip.domain.trim().is_empty() {
            return Err("sip.domain: must not be empty".into());
        }
        if self.scripts.deadline_ms == 0 || self.scripts.deadline_ms > 10_000 {
            return Err(format!(
                "scripts.deadline_ms: {} is out of range (1 to 10000)",
                self.scripts.deadline_ms
            ));
        }
        if self.scripts.memory_mib == 0 || self.scripts.memory_mib > 4096 {
            return Err(format!(
                "scripts.memory_mib: {} is out of range (1 to 4096)",
                self.scripts.memory_mib
            ));
        }
        for (key, code) in [
            ("flip.pull_code", &self.flip.pull_code),
            ("flip.push_code", &self.flip.push_code),
        ] {
            if code.is_empty() || !code.chars().all(is_dtmf) {
                return Err(format!(
                    "{key}: {code:?} must be DTMF keys (0-9, *, #, A-D)"
                ));
            }
        }
        if self.flip.pull_code == self.flip.push_code {
            return Err("flip.push_code: must differ from flip.pull_code".into());
        }
        if self.http.token.is_none() && !self.http.listen.ip().is_loopback() {
            return Err(format!(
                "http.token: required when http.listen ({}) is not on loopback",
                self.http.listen
            ));
        }
        if self.http.tls_cert.is_some() != self.http.tls_key.is_some() {
            return Err("http.tls_cert: tls_cert and tls_key go together".into());
        }
        if self.sip.tls_cert.is_some() != self.sip.tls_key.is_some() {
            return Err("sip.tls_cert: tls_cert and tls_key go together".into());
        }
        if let Some(tls) = self
            .sip
            .listen
            .iter()
            .find(|l| l.transport == Transport::Tls)
            && self.sip.tls_cert.is_none()
        {
            return Err(format!(
                "sip.tls_cert: the listener {tls} needs a certificate (sip.tls_cert and sip.tls_key)"
            ));
        }
        let mut names = HashSet::new();
        for (i, trunk) in self.trunks.iter().enumerate() {
            if !names.insert(trunk.name.as_str()) {
                return Err(format!("trunks[{i}].name: {:?} is used twice", trunk.name));
            }
            trunk
                .validate()
                .map_err(|message| format!("trunks[{i}].{message}"))?;
        }
        let (mut ids, mut extensions) = (HashSet::new(), HashSet::new());
        for (i, user) in self.users.iter().enumerate() {
            if user.id.is_empty() || !ids.insert(user.id.as_str()) {
                return Err(format!(
                    "users[{i}].id: {:?} is empty or used twice",
                    user.id
                ));
            }
            if user.extension.is_empty() || !user.extension.chars().all(|c| c.is_ascii_digit()) {
                return Err(format!(
                    "users[{i}].extension: {:?} must be digits",
                    user.extension
                ));
            }
            if !extensions.insert(user.extension.as_str()) {
                return Err(format!(
                    "users[{i}].extension: {:?} is used twice",
                    user.extension
                ));
            }
            for (name, pattern) in &user.devices {
                let good_name = !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
                if !good_name || pattern.trim().is_empty() {
                    return Err(format!(
                        "users[{i}].devices.{name}: names are letters, digits, - _ . and the match must not be empty"
                    ));
                }
            }
            if user.password.is_none() == user.ha1.is_none() {
                return Err(format!("users[{i}]: set exactly one of password and ha1"));
            }
            if let Some(pin) = &user.pin
                && (pin.is_empty() || !pin.chars().all(|c| c.is_ascii_digit()))
            {
                return Err(format!("users[{i}].pin: must be digits"));
            }
        }
        let (mut names, mut numbers) = (HashSet::new(), HashSet::new());
        for (i, location) in self.locations.iter().enumerate() {
            if location.name.is_empty() || !names.insert(location.name.as_str()) {
                return Err(format!(
                    "locations[{i}].name: {:?} is empty or used twice",
                    location.name
                ));
            }
            // `@…` key-value scopes are the host's own (the API's shadow choices).
            if location.name.starts_with('@') {
                return Err(format!(
                    "locations[{i}].name: {:?} must not start with '@'",
                    location.name
                ));
            }
            if location.flip_number.is_empty() || !numbers.insert(location.flip_number.as_str()) {
                return Err(format!(
                    "locations[{i}].flip_number: {:?} is empty or used twice",
                    location.flip_number
                ));
            }
            if location.fallback_number.trim().is_empty() {
                return Err(format!("locations[{i}].fallback_number: must not be empty"));
            }
            if !is_script_name(&location.script) {
                return Err(format!(
                    "locations[{i}].script: {:?} is not a script name",
                    location.script
                ));
            }
            if let Some(shadow) = location.shadow.as_deref().filter(|s| !is_script_name(s)) {
                return Err(format!(
                    "locations[{i}].shadow: {shadow:?} is not a script name"
                ));
            }
            if let Some(trunk) = &location.trunk
                && !self.trunks.iter().any(|t| &t.name == trunk)
            {
                return Err(format!("locations[{i}].trunk: no trunk is named {trunk:?}"));
            }
            if let Some(url) = &location.stream_url {
                crate::media::StreamRequest::check_url(url)
                    .map_err(|e| format!("locations[{i}].stream_url: {e}"))?;
            }
        }
        if !is_script_name(&self.scripts.flip_policy) {
            return Err(format!(
                "scripts.flip_policy: {:?} is not a script name",
                self.scripts.flip_policy
            ));
        }
        for (i, webhook) in self.webhooks.iter().enumerate() {
            webhook
                .check()
                .map_err(|message| format!("webhooks[{i}].{message}"))?;
        }
        Ok(())
    }

    /// The location whose flip number is `number`.
    pub fn location_by_flip_number(&self, number: &str) -> Option<&Location> {
        self.locations.iter().find(|l| l.flip_number == number)
    }

    pub fn location(&self, name: &str) -> Option<&Location> {
        self.locations.iter().find(|l| l.name == name)
    }

    pub fn user(&self, id: &str) -> Option<&User> {
        self.users.iter().find(|u| u.id == id)
    }

    pub fn user_by_extension(&self, extension: &str) -> Option<&User> {
        self.users.iter().find(|u| u.extension == extension)
    }

    /// The folder compiled scripts are cached in.
    pub fn cache_dir(&self) -> PathBuf {
        self.scripts.cache_dir.clone().unwrap_or_else(|| {
            let parent = self.store.path.parent().unwrap_or(Path::new(""));
            parent.join(".wasmpbx-cache")
        })
    }

    /// A host setting exposed to scripts by its dotted key (`config.setting`).
    pub fn script_setting(&self, key: &str) -> Option<String> {
        match key {
            "sip.domain" => Some(self.sip.domain.clone()),
            "flip.pull_code" => Some(self.flip.pull_code.clone()),
            "flip.push_code" => Some(self.flip.push_code.clone()),
            "flip.allow_emergency" => Some(self.flip.allow_emergency.to_string()),
            "flip.pin_devices" => self.flip.pin_devices.clone(),
            "flip.ring_timeout_ms" => Some(self.flip.ring_timeout_ms.to_string()),
            _ => None,
        }
    }
}

/// A script name is a file stem: letters, digits, `-` and `_`.
pub fn is_script_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn is_dtmf(c: char) -> bool {
    c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D')
}

/// toml's errors carry a multi-line snippet; keep the message and the line number.
fn one_line_toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim().replace('\n', " ");
    match error.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("{message} (line {line})")
        }
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_with_every_key_is_valid() {
        let example = include_str!("../../../examples/wasmpbx.toml");
        Config::parse(example, Path::new("examples/wasmpbx.toml")).unwrap();
        // Its commented carrier trunk too, once uncommented.
        let carrier: String = example
            .lines()
            .skip_while(|l| !l.starts_with("# [[trunks]]"))
            .take_while(|l| l.starts_with('#'))
            .map(|l| format!("{}\n", l.trim_start_matches("# ")))
            .collect();
        assert!(carrier.contains("host = "), "{carrier}");
        let with_carrier = format!("{carrier}\n{example}");
        Config::parse(&with_carrier, Path::new("examples/wasmpbx.toml")).unwrap();
    }

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("test.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn the_rtp_ports_slice_into_whole_pairs_one_slice_per_shard() {
        let range = |low, high| PortRange { low, high };
        let odd = range(20001, 20020);
        let slices: Vec<_> = (0..3).map(|i| odd.slice(i, 3).unwrap()).collect();
        // 20002..=20020 holds 9 whole pairs (9 from the 20-port count's 10, rounded down
        // per slice): three each, the last taking the rest.
        assert_eq!(
            slices,
            [
                range(20002, 20007),
                range(20008, 20013),
                range(20014, 20020)
            ]
        );
        assert_eq!(odd.slice(0, 1), Some(range(20002, 20020)));
        assert_eq!(range(20000, 20003).slice(1, 4), None, "no pair for it");
        let top = range(65530, 65535);
        assert_eq!(top.slice(2, 3), Some(range(65534, 65535)));
    }

    #[test]
    fn embedded_default_is_valid_and_matches_the_design() {
        let config = Config::embedded_default();
        assert_eq!(config.sip.listen.len(), 2);
        assert_eq!(config.http.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.scripts.dir, Path::new("scripts"));
        assert_eq!(config.store.path, Path::new("wasmpbx.db"));
        let scripts: Vec<&str> = config.locations.iter().map(|l| l.script.as_str()).collect();
        assert_eq!(
            scripts,
            ["listen", "front-door"],
            "one location in each mode"
        );
        assert_eq!(config.trunks.len(), 1);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse("[sip]\nlisen = []\n").unwrap_err();
        assert!(
            err.contains("test.toml: sip.lisen: unknown field `lisen`"),
            "{err}"
        );
        assert!(err.contains("line 2"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn bad_value_is_named_with_its_path() {
        let err =
            parse("[sip]\nlisten = [\"udp:127.0.0.1:5060\", \"sctp:1.2.3.4:5\"]\n").unwrap_err();
        assert!(err.contains("sip.listen[1]"), "{err}");
        assert!(err.contains("sctp:1.2.3.4:5"), "{err}");
        let err = parse("[scripts]\ndeadline_ms = \"fast\"\n").unwrap_err();
        assert!(err.contains("scripts.deadline_ms"), "{err}");
        let err = parse("[sip]\nshards = 65\n").unwrap_err();
        assert!(err.contains("sip.shards"), "{err}");
        let err = parse("[sip]\nshards = 4\n[media]\nrtp_ports = \"20000-20009\"\n").unwrap_err();
        assert!(
            err.contains("media.rtp_ports") && err.contains("shards = 4"),
            "{err}"
        );
        // One per CPU by default, as many as leave room for 100 calls each.
        let auto = parse("[media]\nrtp_ports = \"20000-21199\"\n").unwrap();
        assert_eq!((auto.shard_count(2), auto.shard_count(16)), (2, 3));
        let tiny = parse("[media]\nrtp_ports = \"20000-20099\"\n").unwrap();
        assert_eq!(tiny.shard_count(16), 1);
        assert_eq!(parse("[sip]\nshards = 1\n").unwrap().shard_count(16), 1);
        let err = parse("[media]\nrtp_ports = \"30000-20000\"\n").unwrap_err();
        assert!(err.contains("media.rtp_ports"), "{err}");
        let one = parse("[media]\nrtp_ports = \"20000-20000\"\n").unwrap();
        assert_eq!(one.media.rtp_ports.count(), 1);
        let all = parse("[media]\nrtp_ports = \"1-65535\"\n").unwrap();
        assert_eq!(all.media.rtp_ports.count(), 65535);
    }

    #[test]
    fn cross_field_rules_name_the_key() {
        let user = |id: &str, ext: &str| {
            format!("[[users]]\nid = \"{id}\"\nextension = \"{ext}\"\npassword = \"x\"\n")
        };
        let err = parse(&(user("a", "2001") + &user("b", "2001"))).unwrap_err();
        assert!(err.contains("users[1].extension"), "{err}");
        let err = parse("[http]\nlisten = \"0.0.0.0:8080\"\n").unwrap_err();
        assert!(err.contains("http.token"), "{err}");
        let err = parse(
            "[[locations]]\nname = \"x\"\nflip_number = \"1\"\nscript = \"listen\"\nfallback_number = \"\"\n",
        )
        .unwrap_err();
        assert!(err.contains("locations[0].fallback_number"), "{err}");
        let err = parse("[flip]\npull_code = \"*7x\"\n").unwrap_err();
        assert!(err.contains("flip.pull_code"), "{err}");
        // A tls: listener needs a certificate, and a certificate its key.
        let tls = "[sip]\nlisten = [\"udp:127.0.0.1:5060\", \"tls:127.0.0.1:5061\"]\n";
        let err = parse(tls).unwrap_err();
        assert!(
            err.contains("sip.tls_cert: the listener tls:127.0.0.1:5061"),
            "{err}"
        );
        let err = parse(&format!("{tls}tls_cert = \"c.pem\"\n")).unwrap_err();
        assert!(
            err.contains("sip.tls_cert: tls_cert and tls_key go together"),
            "{err}"
        );
        let config = parse(&format!("{tls}tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n")).unwrap();
        assert_eq!(config.sip.listen[1].transport, Transport::Tls);
    }

    #[test]
    fn a_postgresql_store_needs_a_node_name_and_hides_its_password() {
        let url = "[store]\nurl = \"postgres://wasmpbx:s3cret@db/wasmpbx\"\n";
        let err = parse(url).unwrap_err();
        assert!(
            err.contains("cluster.node: required with store.url"),
            "{err}"
        );
        let config = parse(&format!("{url}[cluster]\nnode = \"a\"\n")).unwrap();
        assert_eq!(config.cluster.node.as_deref(), Some("a"));
        assert!(!format!("{config:?}").contains("s3cret"), "Debug hides it");
        let err =
            parse("[store]\nurl = \"mysql://s3cret@db\"\n[cluster]\nnode = \"a\"\n").unwrap_err();
        assert!(
            err.contains("store.url: must be a postgres:// URL"),
            "{err}"
        );
        assert!(!err.contains("s3cret"), "{err}");
        let err = parse("[cluster]\nnode = \"a b\"\n").unwrap_err();
        assert!(err.contains("cluster.node"), "{err}");
        let err = parse("[cluster]\nadvertise = \"10.0.0.11\"\n").unwrap_err();
        assert!(err.contains("cluster.advertise"), "{err}");
        let ok = parse("[cluster]\nadvertise = \"sip:10.0.0.11:5060\"\n").unwrap();
        assert_eq!(ok.cluster.advertise.as_deref(), Some("sip:10.0.0.11:5060"));
        let err = parse("[cluster]\nedge = [\"sip:edge.example:5060\"]\n").unwrap_err();
        assert!(
            err.contains("cluster.edge") && err.contains("IP address"),
            "{err}"
        );
        let err = parse("[cluster]\nedge = [\"sip:10.0.0.10\"]\n").unwrap_err();
        assert!(err.contains("needs store.url"), "{err}");
        let ok = parse(
            "[store]\nurl = \"postgres://db/pbx\"\n[cluster]\nnode = \"a\"\n\
             edge = [\"sip:10.0.0.10:5060\", \"sip:[::1]\"]\n",
        )
        .unwrap();
        assert!(ok.cluster.is_edge("10.0.0.10".parse().unwrap()));
        assert!(ok.cluster.is_edge("::1".parse().unwrap()));
        assert!(!ok.cluster.is_edge("10.0.0.11".parse().unwrap()));
        assert_eq!(
            ok.cluster.edge_addrs(),
            [
                "10.0.0.10:5060".parse().unwrap(),
                "[::1]:5060".parse().unwrap()
            ]
        );
    }

    #[test]
    fn webhooks_name_what_is_wrong_and_hide_their_secret() {
        let hook = |body: &str| parse(&format!("[[webhooks]]\n{body}"));
        let ok = hook("url = \"https://hooks.example/wasmpbx?k=1\"\nevents = [\"call.ended\"]\nsecret = \"s3\"\n").unwrap();
        assert!(ok.webhooks[0].wants("call.ended") && !ok.webhooks[0].wants("call.started"));
        assert!(
            !format!("{:?}", ok.webhooks[0]).contains("s3"),
            "Debug hides the secret"
        );
        for (body, expected) in [
            (
                "url = \"ftp://x\"\n",
                "webhooks[0].url: \"ftp://x\" is not an http",
            ),
            (
                "url = \"http:///path\"\n",
                "webhooks[0].url: \"http:///path\" has no host",
            ),
            (
                "url = \"http://x\"\nevents = [\"call.ringing\"]\n",
                "webhooks[0].events: \"call.ringing\"",
            ),
            (
                "url = \"http://x\"\nsecret = \"\"\n",
                "webhooks[0].secret: must not be empty",
            ),
        ] {
            let err = hook(body).unwrap_err();
            assert!(err.contains(expected), "{body}: {err}");
        }
    }

    #[test]
    fn cidr_matching() {
        let net = Cidr::try_from("10.1.0.0/16".to_string()).unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        let host = Cidr::try_from("127.0.0.2".to_string()).unwrap();
        assert!(host.contains("127.0.0.2".parse().unwrap()));
        assert!(!host.contains("127.0.0.1".parse().unwrap()));
        let all = Cidr::try_from("0.0.0.0/0".to_string()).unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::try_from("1.2.3.4/33".to_string()).is_err());
    }
    #[test]
    fn a_shadow_is_a_script_name_and_location_names_leave_at_to_the_host() {
        let location = |extra: &str| {
            parse(&format!(
                "[[locations]]\nname = \"x\"\nflip_number = \"1\"\nscript = \"listen\"\nfallback_number = \"2\"\n{extra}"
            ))
        };
        assert_eq!(
            location("shadow = \"front-door\"\n").unwrap().locations[0]
                .shadow
                .as_deref(),
            Some("front-door")
        );
        let err = location("shadow = \"../x\"\n").unwrap_err();
        assert!(
            err.contains("locations[0].shadow: \"../x\" is not a script name"),
            "{err}"
        );
        let err = parse("[[locations]]\nname = \"@shadow\"\nflip_number = \"1\"\nscript = \"listen\"\nfallback_number = \"2\"\n").unwrap_err();
        assert!(err.contains("must not start with '@'"), "{err}");
    }
}
