//! Trunk host names resolved the way RFC 3263 says a SIP client finds a server: NAPTR
//! (when published) for the transport's SRV name, SRV (priority, then weight), then
//! A/AAAA — with hickory-resolver, again when the answers' TTL runs out.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::proto::xfer::Protocol;

use crate::config::DnsServer;
use wasmpbx_core::trunks::ResolvedTarget;
use wasmpbx_types::trunk::TrunkTransport;

/// Answers are looked up again at least this often…
const MAX_TTL: Duration = Duration::from_secs(3600);
/// …and no more often than this, whatever their TTL.
const MIN_TTL: Duration = Duration::from_secs(5);
/// A failed lookup is tried again after this.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(10);

pub struct Resolver {
    inner: TokioResolver,
}

/// What a name resolved to, and until when to trust it.
pub struct Answer<T> {
    pub value: T,
    pub valid_for: Duration,
}

impl Resolver {
    /// The system's resolver configuration, or these name servers.
    pub fn new(servers: &[DnsServer]) -> anyhow::Result<Self> {
        let builder = if servers.is_empty() {
            TokioResolver::builder_tokio()
                .map_err(|e| anyhow::anyhow!("reading the system's resolver configuration: {e}"))?
        } else {
            let mut config = ResolverConfig::new();
            for server in servers {
                config.add_name_server(NameServerConfig::new(server.0, Protocol::Udp));
            }
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
        };
        Ok(Self {
            inner: builder.build(),
        })
    }

    /// A trunk's targets, best first: RFC 3263 §4 for a name without a port, A/AAAA for
    /// a name with one.
    pub async fn trunk_targets(
        &self,
        host: &str,
        port: Option<u16>,
        transport: TrunkTransport,
    ) -> Result<Answer<Vec<ResolvedTarget>>, String> {
        if let Some(port) = port {
            return self.addresses(host, port, 0, 0).await;
        }
        let srv_name = match self.naptr(host, transport).await {
            Some(name) => name,
            None => format!("{}.{host}", transport.srv_prefix()),
        };
        match self.inner.srv_lookup(srv_name.as_str()).await {
            Ok(srv) => {
                let valid_until = srv.as_lookup().valid_until();
                let mut records: Vec<_> = srv
                    .iter()
                    .map(|r| (r.priority(), r.weight(), r.port(), r.target().to_utf8()))
                    .collect();
                // Priority order; the core draws the weighted order per call.
                records.sort_by_key(|r| r.0);
                let mut targets = Vec::new();
                let mut valid_for = ttl(valid_until);
                let mut failures = Vec::new();
                for (priority, weight, port, target) in records {
                    match self.addresses(&target, port, priority, weight).await {
                        Ok(answer) => {
                            valid_for = valid_for.min(answer.valid_for);
                            targets.extend(answer.value);
                        }
                        Err(e) => failures.push(e),
                    }
                }
                if targets.is_empty() {
                    return Err(format!(
                        "{srv_name}: no target resolves ({})",
                        failures.join("; ")
                    ));
                }
                Ok(Answer {
                    value: targets,
                    valid_for,
                })
            }
            Err(e) if e.is_no_records_found() => {
                self.addresses(host, transport.default_port(), 0, 0).await
            }
            Err(e) => Err(format!("{srv_name} SRV: {e}")),
        }
    }

    /// The SRV name a NAPTR record gives for the transport (RFC 3263 §4.1), if any.
    async fn naptr(&self, host: &str, transport: TrunkTransport) -> Option<String> {
        let lookup = self.inner.lookup(host, RecordType::NAPTR).await.ok()?;
        let mut services: Vec<_> = lookup
            .record_iter()
            .filter_map(|record| match record.data() {
                RData::NAPTR(naptr) => Some(naptr.clone()),
                _ => None,
            })
            .filter(|naptr| {
                naptr.flags().eq_ignore_ascii_case(b"s")
                    && naptr
                        .services()
                        .eq_ignore_ascii_case(transport.naptr_service().as_bytes())
            })
            .collect();
        services.sort_by_key(|n| (n.order(), n.preference()));
        services
            .first()
            .map(|n| n.replacement().to_utf8().trim_end_matches('.').to_owned())
    }

    async fn addresses(
        &self,
        host: &str,
        port: u16,
        priority: u16,
        weight: u16,
    ) -> Result<Answer<Vec<ResolvedTarget>>, String> {
        let answer = self.ips(host).await?;
        Ok(Answer {
            value: answer
                .value
                .into_iter()
                .map(|ip| ResolvedTarget {
                    addr: SocketAddr::new(ip, port),
                    priority,
                    weight,
                })
                .collect(),
            valid_for: answer.valid_for,
        })
    }

    /// A name's addresses (A and AAAA).
    pub async fn ips(&self, host: &str) -> Result<Answer<Vec<IpAddr>>, String> {
        let lookup = self
            .inner
            .lookup_ip(host)
            .await
            .map_err(|e| format!("{host}: {e}"))?;
        let value: Vec<IpAddr> = lookup.iter().collect();
        if value.is_empty() {
            return Err(format!("{host}: no addresses"));
        }
        Ok(Answer {
            valid_for: ttl(lookup.valid_until()),
            value,
        })
    }
}

fn ttl(valid_until: Instant) -> Duration {
    valid_until
        .saturating_duration_since(crate::clock::monotonic_now())
        .clamp(MIN_TTL, MAX_TTL)
}

/// The addresses of a trunk's `inbound` host names, each name's from its last good
/// answer: a failed lookup keeps what the name had (a resolver's hiccup must not turn
/// the carrier's calls away as strangers), and is tried again soon.
#[derive(Debug, Default)]
pub struct InboundNames {
    known: std::collections::BTreeMap<String, Vec<IpAddr>>,
}

impl InboundNames {
    /// Take `host`'s answer; how long until it should be looked up again.
    pub fn answered(
        &mut self,
        host: &str,
        answer: Result<Answer<Vec<IpAddr>>, String>,
    ) -> Duration {
        match answer {
            Ok(answer) => {
                self.known.insert(host.to_owned(), answer.value);
                answer.valid_for
            }
            Err(_) => RETRY_AFTER_FAILURE,
        }
    }

    /// Every address known for any of the names.
    pub fn addresses(&self) -> Vec<IpAddr> {
        let mut all: Vec<IpAddr> = self.known.values().flatten().copied().collect();
        all.sort_unstable();
        all.dedup();
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(ips: &[&str], ttl_s: u64) -> Result<Answer<Vec<IpAddr>>, String> {
        Ok(Answer {
            value: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
            valid_for: Duration::from_secs(ttl_s),
        })
    }

    #[test]
    fn an_inbound_name_keeps_its_last_addresses_through_a_failed_lookup() {
        let mut names = InboundNames::default();
        assert_eq!(
            names.answered("a.carrier.test", answer(&["192.0.2.1"], 300)),
            Duration::from_secs(300)
        );
        names.answered("b.carrier.test", answer(&["192.0.2.2", "192.0.2.1"], 60));
        let failed = names.answered("a.carrier.test", Err("SERVFAIL".into()));
        assert_eq!(failed, RETRY_AFTER_FAILURE, "a failure is tried again soon");
        assert_eq!(
            names.addresses(),
            [
                "192.0.2.1".parse::<IpAddr>().unwrap(),
                "192.0.2.2".parse().unwrap()
            ],
            "a.carrier.test's address is kept, each address once"
        );
        names.answered("b.carrier.test", answer(&["192.0.2.3"], 60));
        assert_eq!(
            names.addresses().len(),
            2,
            "a new answer replaces the name's old one"
        );
    }
}
