//! TLS for SIP and HTTP: the certificate `tls:` listeners and HTTPS present, read again
//! when its files change (new connections get the new one, live ones keep theirs), and
//! the client side towards `transport = "tls"` trunks (the carrier's certificate checked
//! against the trunk's host, by its `tls_ca` or the system's trust store).
//!
//! rustls with the aws-lc-rs provider named explicitly, never the process default.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use std::collections::HashMap;
use std::net::SocketAddr;

use wasmpbx_types::config::Config;
use wasmpbx_types::trunk::{Destination, Trunk, TrunkTransport};

/// How often the certificate files are looked at.
const CERT_POLL: Duration = Duration::from_secs(1);

fn provider() -> Arc<CryptoProvider> {
    Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider())
}

/// A certificate and key from two PEM files (`keys` names their config keys in errors,
/// e.g. `sip.tls_cert`), swapped for the files' new contents when they change.
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    keys: &'static str,
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl ReloadingCert {
    /// Read the files; an error names the key and file at fault.
    pub fn load(cert: &Path, key: &Path, keys: &'static str) -> anyhow::Result<Arc<Self>> {
        let current = read_certified_key(cert, key, keys)?;
        Ok(Arc::new(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            keys,
            current: ArcSwap::from_pointee(current),
        }))
    }

    /// An acceptor presenting this certificate (TLS 1.2 and 1.3, no client certificates).
    pub fn acceptor(self: &Arc<Self>) -> anyhow::Result<TlsAcceptor> {
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("TLS")?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// Look at the files every second until `shutdown`; when they change, load them and
    /// present the new certificate to new connections. Files that cannot be read or do
    /// not go together (one half-written, say) leave the current certificate in place:
    /// said once, tried again until they load.
    pub async fn watch(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut loaded = self.stamp();
        let mut failed_at = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(CERT_POLL) => {}
                _ = shutdown.changed() => return,
            }
            let stamp = self.stamp();
            if stamp == loaded {
                continue;
            }
            match read_certified_key(&self.cert, &self.key, self.keys) {
                Ok(key) => {
                    self.current.store(Arc::new(key));
                    loaded = stamp;
                    failed_at = None;
                    tracing::info!(
                        "{}: the certificate changed; new connections get it",
                        self.keys
                    );
                }
                Err(e) if failed_at != Some(stamp) => {
                    failed_at = Some(stamp);
                    tracing::error!("{e:#}; keeping the current certificate");
                }
                Err(_) => {}
            }
        }
    }

    /// When the two files were last changed (`None` for one that cannot be read).
    fn stamp(&self) -> [Option<SystemTime>; 2] {
        let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
        [modified(&self.cert), modified(&self.key)]
    }
}

fn read_certified_key(cert: &Path, key: &Path, keys: &str) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("{keys}: {}", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!("{keys}: {} holds no certificate", cert.display());
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("{keys} (its key): {}", key.display()))?;
    CertifiedKey::from_der(chain, private, &provider())
        .with_context(|| format!("{keys}: the certificate and the key do not go together"))
}

/// What a connection to a TLS trunk's target needs: the client settings and the name its
/// certificate must carry.
#[derive(Clone)]
pub struct TrunkTls {
    pub connector: TlsConnector,
    pub server_name: ServerName<'static>,
}

impl TrunkTls {
    /// The client side for a `transport = "tls"` trunk: its `tls_ca` (PEM) or the
    /// system's trust store, checked against the trunk's host as configured.
    pub fn for_trunk(trunk: &Trunk) -> anyhow::Result<Self> {
        let mut roots = RootCertStore::empty();
        match &trunk.tls_ca {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .with_context(|| {
                        format!("trunks {:?}: tls_ca: {}", trunk.name, path.display())
                    })?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    anyhow::bail!(
                        "trunks {:?}: tls_ca: {} holds no CA certificate",
                        trunk.name,
                        path.display()
                    );
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
            }
        }
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("TLS")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = trunk
            .tls_server_name()
            .with_context(|| format!("trunks {:?}: no host to check", trunk.name))?;
        let server_name = ServerName::try_from(name.as_str())
            .map(|n| n.to_owned())
            .with_context(|| {
                format!("trunks {:?}: {name:?} is not a TLS server name", trunk.name)
            })?;
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }
}

/// A TLS client for HTTPS endpoints (webhooks): the system trust store.
pub fn web_client_connector() -> anyhow::Result<TlsConnector> {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// What connections towards TLS trunks need: each TLS trunk's client settings, and which
/// trunk each of their resolved targets belongs to (its certificate is checked against
/// that trunk's host).
#[derive(Clone)]
pub struct TlsTrunks {
    by_trunk: HashMap<String, TrunkTls>,
    targets: HashMap<SocketAddr, String>,
}

impl TlsTrunks {
    /// The settings of every TLS trunk in `config`; one that cannot be made stops the
    /// start.
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let (trunks, errors) = Self::build(config);
        match errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(trunks),
        }
    }

    /// After a reload: what can be made (each trunk's `tls_ca` read again); a trunk
    /// whose settings cannot be made is logged, and its calls fail over.
    pub fn reloaded(config: &Config) -> Self {
        let (trunks, errors) = Self::build(config);
        for e in errors {
            tracing::error!("{e:#}: its TLS connections cannot be made");
        }
        trunks
    }

    /// The settings of the TLS trunks that can be made, and why the others cannot.
    fn build(config: &Config) -> (Self, Vec<anyhow::Error>) {
        let mut trunks = Self {
            by_trunk: HashMap::new(),
            targets: HashMap::new(),
        };
        let mut errors = Vec::new();
        for trunk in config
            .trunks
            .iter()
            .filter(|t| t.transport == TrunkTransport::Tls)
        {
            match TrunkTls::for_trunk(trunk) {
                Ok(tls) => {
                    trunks.by_trunk.insert(trunk.name.clone(), tls);
                }
                Err(e) => errors.push(e),
            }
            if let Some(Destination::Address(addr)) = trunk.destination() {
                trunks.targets.insert(addr, trunk.name.clone());
            }
        }
        (trunks, errors)
    }

    /// A TLS trunk's host resolved to these addresses.
    pub fn resolved(&mut self, trunk: &str, addresses: impl IntoIterator<Item = SocketAddr>) {
        if self.by_trunk.contains_key(trunk) {
            for addr in addresses {
                self.targets.insert(addr, trunk.to_owned());
            }
        }
    }

    /// The client settings for a connection to `addr`, if it is a TLS trunk's target.
    pub fn for_target(&self, addr: SocketAddr) -> Option<TrunkTls> {
        self.by_trunk.get(self.targets.get(&addr)?).cloned()
    }
}
