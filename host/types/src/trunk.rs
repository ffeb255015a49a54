//! A carrier trunk as configured (`[[trunks]]`): where it is, how to authenticate, whether
//! to register, and how numbers and caller ids are presented to it.
//!
//! Everything here is pure: resolving a name, registering and health checks live in the
//! core (`wasmpbx-core::trunks`) and the server's resolver.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

use crate::config::Cidr;

/// The ports SIP uses when a URI or host names none (RFC 3261 §19.1.2).
pub const SIP_PORT: u16 = 5060;
pub const SIPS_PORT: u16 = 5061;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trunk {
    pub name: String,
    /// An IP literal trunk, e.g. `sip:127.0.0.1:5090` (the older form of `host`).
    pub uri: Option<String>,
    /// The carrier's host name or IP, with an optional `:port`. A name without a port is
    /// resolved by RFC 3263 (NAPTR, SRV, then A/AAAA), with failover across its targets.
    pub host: Option<String>,
    #[serde(default)]
    pub transport: TrunkTransport,
    /// Digest credentials, answered to 401/407 challenges on INVITE and REGISTER.
    pub username: Option<String>,
    pub password: Option<Password>,
    /// Answer only challenges of this realm (default: any).
    pub realm: Option<String>,
    /// Keep a registration with the carrier (for carriers that send calls to it).
    #[serde(default)]
    pub register: bool,
    #[serde(default = "default_register_expires")]
    pub register_expires: u32,
    /// The user part of the Contact registered (default: `username`).
    pub contact_user: Option<String>,
    /// OPTIONS health checks per target every this many seconds (0 = off).
    #[serde(default)]
    pub options_interval: u32,
    /// A fixed From user (the original caller then goes in P-Asserted-Identity).
    pub from_user: Option<String>,
    /// The From domain (default: the trunk's host for `host` trunks, `sip.domain` else).
    pub from_domain: Option<String>,
    /// How numbers are written towards the carrier (default: as dialled).
    #[serde(default)]
    pub number_format: NumberFormat,
    /// The country calling code (e.g. `"61"`), needed by `number_format = "national"` and
    /// to read national numbers as E.164.
    pub country_code: Option<String>,
    /// Add P-Asserted-Identity with the original caller.
    #[serde(default)]
    pub send_pai: bool,
    /// Add `Diversion: <sip:FLIP_NUMBER@…>;reason=unconditional` on forwarded calls.
    #[serde(default)]
    pub diversion: bool,
    /// Where the carrier's calls come from: addresses, CIDRs or host names. Calls from the
    /// trunk's resolved targets (e.g. on its registration) are the trunk's too.
    #[serde(default)]
    pub inbound: Vec<InboundSource>,
    /// With `transport = "tls"`: the CA certificates (PEM) the carrier's certificate must
    /// chain to; the system's trust store when not given.
    pub tls_ca: Option<std::path::PathBuf>,
    /// SDES-SRTP towards the carrier (default: `[media] srtp`).
    pub srtp: Option<crate::config::SrtpPolicy>,
}

fn default_register_expires() -> u32 {
    3600
}

/// A secret from the config: never printed, not even by `{:?}`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Password(String);

impl Password {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"…\"")
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrunkTransport {
    #[default]
    Udp,
    Tcp,
    Tls,
}

impl TrunkTransport {
    /// The RFC 3263 names: SRV service prefix and NAPTR service field.
    pub fn srv_prefix(self) -> &'static str {
        match self {
            TrunkTransport::Udp => "_sip._udp",
            TrunkTransport::Tcp => "_sip._tcp",
            TrunkTransport::Tls => "_sips._tcp",
        }
    }

    pub fn naptr_service(self) -> &'static str {
        match self {
            TrunkTransport::Udp => "SIP+D2U",
            TrunkTransport::Tcp => "SIP+D2T",
            TrunkTransport::Tls => "SIPS+D2T",
        }
    }

    /// The port a host without one is reached on.
    pub fn default_port(self) -> u16 {
        match self {
            TrunkTransport::Udp | TrunkTransport::Tcp => SIP_PORT,
            TrunkTransport::Tls => SIPS_PORT,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum NumberFormat {
    /// Numbers go out as the script or the caller wrote them.
    #[default]
    #[serde(rename = "as-dialled")]
    AsDialled,
    /// `+61290000001`
    #[serde(rename = "+e164")]
    PlusE164,
    /// `61290000001`
    #[serde(rename = "e164")]
    E164,
    /// `0290000001` (needs `country_code`)
    #[serde(rename = "national")]
    National,
}

/// Where a trunk's calls may come from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum InboundSource {
    Net(Cidr),
    /// A host name, resolved like the trunk's host.
    Name(String),
}

impl TryFrom<String> for InboundSource {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if let Ok(net) = Cidr::try_from(s.clone()) {
            return Ok(InboundSource::Net(net));
        }
        if is_host_name(&s) {
            return Ok(InboundSource::Name(s));
        }
        Err(format!(
            "{s:?} is not an address, CIDR or host name, e.g. 203.0.113.10, 10.0.0.0/8 or sip.carrier.example"
        ))
    }
}

/// Where a trunk's requests go, before any resolving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// An IP literal: the one target.
    Address(SocketAddr),
    /// A name: RFC 3263 lookups unless the port is given (then A/AAAA only).
    Name { host: String, port: Option<u16> },
}

impl Trunk {
    /// Where this trunk's requests go; `None` when `uri`/`host` cannot be read (which
    /// [`Trunk::validate`] refuses).
    pub fn destination(&self) -> Option<Destination> {
        let hostport = match (&self.host, &self.uri) {
            (Some(host), _) => host.trim().to_owned(),
            (None, Some(uri)) => uri_hostport(uri)?,
            (None, None) => return None,
        };
        parse_hostport(&hostport, self.transport.default_port())
    }

    /// The name a TLS trunk's certificate must carry: its host as configured (a name, or
    /// an IP address), never what an SRV record pointed to (RFC 5922 §4).
    pub fn tls_server_name(&self) -> Option<String> {
        match self.destination()? {
            Destination::Address(addr) => Some(addr.ip().to_string()),
            Destination::Name { host, .. } => Some(host),
        }
    }

    /// The host part of the Request-URI and To of requests to the trunk: the name (and
    /// port) as configured, not the address it resolved to.
    pub fn request_host(&self) -> String {
        match (&self.host, &self.uri) {
            (Some(host), _) => host.trim().to_owned(),
            (None, Some(uri)) => uri_hostport(uri).unwrap_or_default(),
            (None, None) => String::new(),
        }
    }

    /// The domain of the From of calls out through the trunk.
    pub fn from_domain(&self, default: &str) -> String {
        if let Some(domain) = &self.from_domain {
            return domain.clone();
        }
        match (&self.host, self.destination()) {
            (Some(_), Some(Destination::Name { host, .. })) => host,
            _ => default.to_owned(),
        }
    }

    pub fn credentials(&self) -> Option<(&str, &str)> {
        Some((self.username.as_deref()?, self.password.as_ref()?.expose()))
    }

    /// The user part of the Contact the trunk registers (and that its calls arrive for).
    pub fn contact_user(&self) -> Option<&str> {
        self.contact_user.as_deref().or(self.username.as_deref())
    }

    /// A number as the carrier wants to see it. Anything that is not a number (a SIP user
    /// name, `anonymous`) goes out as it is.
    pub fn format_number(&self, number: &str) -> String {
        let Some(e164) = self.e164_digits(number) else {
            return number.to_owned();
        };
        let country = self.country_code.as_deref().unwrap_or_default();
        match self.number_format {
            NumberFormat::AsDialled => number.to_owned(),
            NumberFormat::PlusE164 => format!("+{e164}"),
            NumberFormat::E164 => e164,
            NumberFormat::National => match e164.strip_prefix(country) {
                Some(national) if !country.is_empty() => format!("0{national}"),
                // Another country: the international form.
                _ => format!("+{e164}"),
            },
        }
    }

    /// A number from the carrier as `+E.164` (how flip numbers are written), whatever
    /// form it came in; anything else as it is.
    pub fn plus_e164(&self, number: &str) -> String {
        self.e164_digits(number)
            .map_or_else(|| number.to_owned(), |digits| format!("+{digits}"))
    }

    /// The E.164 digits (no `+`) of a number written `+61…`, `61…` or, with a country
    /// code configured, `0…`; `None` for what is not a number.
    fn e164_digits(&self, number: &str) -> Option<String> {
        let digits = number.strip_prefix('+').unwrap_or(number);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let country = self.country_code.as_deref().unwrap_or_default();
        if number.starts_with('+') || country.is_empty() {
            return Some(digits.to_owned());
        }
        // `00…` is the international prefix of most countries; `0…` a national number.
        match (digits.strip_prefix("00"), digits.strip_prefix('0')) {
            (Some(international), _) => Some(international.to_owned()),
            (None, Some(national)) => Some(format!("{country}{national}")),
            (None, None) => Some(digits.to_owned()),
        }
    }

    /// The rules between this trunk's keys; the error names the key (after `trunks[i].`).
    pub fn validate(&self) -> Result<(), String> {
        match (&self.uri, &self.host) {
            (Some(_), Some(_)) => return Err("uri: give uri or host, not both".into()),
            (None, None) => return Err("host: a trunk needs a host (or a uri)".into()),
            (Some(uri), None) => {
                if !(uri.starts_with("sip:") || uri.starts_with("sips:")) {
                    return Err(format!("uri: {uri:?} is not a sip: URI"));
                }
                if self.destination().is_none() {
                    return Err(format!("uri: {uri:?} names no host"));
                }
            }
            (None, Some(host)) => {
                if self.destination().is_none() {
                    return Err(format!(
                        "host: {host:?} is not a host name or address with an optional :port"
                    ));
                }
            }
        }
        if self.tls_ca.is_some() && self.transport != TrunkTransport::Tls {
            return Err("tls_ca: only a transport = \"tls\" trunk uses a CA".into());
        }
        if self.username.is_some() != self.password.is_some() {
            return Err("password: username and password go together".into());
        }
        if self.register {
            if self.username.is_none() {
                return Err("register: registering needs username and password".into());
            }
            if !(60..=86_400).contains(&self.register_expires) {
                return Err(format!(
                    "register_expires: {} is out of range (60 to 86400)",
                    self.register_expires
                ));
            }
        }
        if self.options_interval > 3600 {
            return Err(format!(
                "options_interval: {} is out of range (0 to 3600)",
                self.options_interval
            ));
        }
        if let Some(code) = &self.country_code
            && (code.is_empty() || code.len() > 3 || !code.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(format!(
                "country_code: {code:?} is not a country calling code (1 to 3 digits, e.g. \"61\")"
            ));
        }
        if self.number_format == NumberFormat::National && self.country_code.is_none() {
            return Err("number_format: \"national\" needs country_code".into());
        }
        Ok(())
    }
}

/// `sip:user@host:port;params` → `host:port`.
fn uri_hostport(uri: &str) -> Option<String> {
    let rest = uri
        .strip_prefix("sips:")
        .or_else(|| uri.strip_prefix("sip:"))?;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let end = rest.find([';', '?', '>']).unwrap_or(rest.len());
    Some(rest[..end].to_owned())
}

/// `name`, `name:port`, `1.2.3.4[:port]`, `[::1][:port]`; an address without a port gets
/// `default_port`.
fn parse_hostport(text: &str, default_port: u16) -> Option<Destination> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(Destination::Address(addr));
    }
    if let Ok(ip) = text.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Some(Destination::Address(SocketAddr::new(ip, default_port)));
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) => (host, Some(port.parse::<u16>().ok().filter(|p| *p > 0)?)),
        None => (text, None),
    };
    is_host_name(host).then(|| Destination::Name {
        host: host.to_ascii_lowercase(),
        port,
    })
}

fn is_host_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
        })
        && !text.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trunk(extra: &str) -> Trunk {
        toml::from_str(&format!("name = \"t\"\n{extra}")).unwrap()
    }

    #[test]
    fn destinations_from_uri_and_host() {
        assert_eq!(
            trunk("uri = \"sip:gw@127.0.0.3:5090\"").destination(),
            Some(Destination::Address("127.0.0.3:5090".parse().unwrap()))
        );
        assert_eq!(
            trunk("uri = \"sip:127.0.0.3\"").destination(),
            Some(Destination::Address("127.0.0.3:5060".parse().unwrap()))
        );
        assert_eq!(
            trunk("host = \"Sip.Carrier.Example\"").destination(),
            Some(Destination::Name {
                host: "sip.carrier.example".into(),
                port: None
            })
        );
        assert_eq!(
            trunk("host = \"sip.carrier.example:5080\"").destination(),
            Some(Destination::Name {
                host: "sip.carrier.example".into(),
                port: Some(5080)
            })
        );
        assert_eq!(
            trunk("host = \"[::1]:5070\"").destination(),
            Some(Destination::Address("[::1]:5070".parse().unwrap()))
        );
        assert_eq!(trunk("host = \"bad host\"").destination(), None);
        assert_eq!(trunk("host = \"a.example:99999\"").destination(), None);
        // TLS: port 5061 when none is given; the certificate names the host as written.
        let tls = trunk("host = \"127.0.0.3\"\ntransport = \"tls\"");
        assert_eq!(
            tls.destination(),
            Some(Destination::Address("127.0.0.3:5061".parse().unwrap()))
        );
        assert_eq!(tls.tls_server_name().as_deref(), Some("127.0.0.3"));
        let named = trunk("host = \"Sip.Carrier.Example\"\ntransport = \"tls\"");
        assert_eq!(
            named.tls_server_name().as_deref(),
            Some("sip.carrier.example")
        );
    }

    #[test]
    fn validation_names_the_key() {
        let err = |extra: &str| trunk(extra).validate().unwrap_err();
        assert!(err("").starts_with("host:"));
        assert!(err("host = \"a.example\"\nuri = \"sip:1.2.3.4\"").starts_with("uri:"));
        assert!(err("host = \"a.example\"\nusername = \"u\"").starts_with("password:"));
        assert!(err("host = \"a.example\"\nregister = true").starts_with("register:"));
        assert!(err("host = \"a.example\"\ntls_ca = \"ca.pem\"").starts_with("tls_ca:"));
        assert!(
            err("host = \"a.example\"\nnumber_format = \"national\"").starts_with("number_format:")
        );
        assert!(err("host = \"a.example\"\ncountry_code = \"+61\"").starts_with("country_code:"));
        assert!(
            trunk("host = \"a.example\"\nusername = \"u\"\npassword = \"p\"\nregister = true")
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn the_password_is_never_printed() {
        let t = trunk("host = \"a.example\"\nusername = \"u\"\npassword = \"hunter2\"");
        assert!(!format!("{t:?}").contains("hunter2"));
    }

    #[test]
    fn numbers_take_the_trunks_format() {
        let with = |format: &str| {
            trunk(&format!(
                "host = \"a.example\"\nnumber_format = \"{format}\"\ncountry_code = \"61\""
            ))
        };
        let plus = with("+e164");
        assert_eq!(plus.format_number("+61290000001"), "+61290000001");
        assert_eq!(plus.format_number("0290000001"), "+61290000001");
        assert_eq!(plus.format_number("61290000001"), "+61290000001");
        let bare = with("e164");
        assert_eq!(bare.format_number("+61290000001"), "61290000001");
        assert_eq!(bare.format_number("0290000001"), "61290000001");
        let national = with("national");
        assert_eq!(national.format_number("+61290000001"), "0290000001");
        assert_eq!(national.format_number("+4420700000"), "+4420700000");
        assert_eq!(national.format_number("0290000001"), "0290000001");
        assert_eq!(national.plus_e164("0290000001"), "+61290000001");
        assert_eq!(national.plus_e164("61290000001"), "+61290000001");
        assert_eq!(national.plus_e164("004420700000"), "+4420700000");
        let as_is = trunk("host = \"a.example\"");
        assert_eq!(as_is.format_number("0290000001"), "0290000001");
        // Not numbers: left alone.
        assert_eq!(plus.format_number("anonymous"), "anonymous");
        assert_eq!(plus.format_number("*72"), "*72");
    }

    #[test]
    fn inbound_sources_are_networks_or_names() {
        let t = trunk("host = \"a.example\"\ninbound = [\"10.0.0.0/8\", \"edge.carrier.example\"]");
        assert!(matches!(t.inbound[0], InboundSource::Net(_)));
        assert_eq!(
            t.inbound[1],
            InboundSource::Name("edge.carrier.example".into())
        );
        assert!(toml::from_str::<Trunk>("name = \"t\"\ninbound = [\"not a host\"]").is_err());
    }

    #[test]
    fn from_domain_defaults_to_the_carrier_host() {
        assert_eq!(
            trunk("host = \"sip.carrier.example:5080\"").from_domain("pbx"),
            "sip.carrier.example"
        );
        assert_eq!(
            trunk("uri = \"sip:127.0.0.1:5090\"").from_domain("pbx"),
            "pbx"
        );
        assert_eq!(
            trunk("host = \"a.example\"\nfrom_domain = \"acct.example\"").from_domain("pbx"),
            "acct.example"
        );
    }
}
