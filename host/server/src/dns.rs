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
use wasmpbx_types::trunk::{SIP_PORT, TrunkTransport};

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
                order_by_priority_and_weight(&mut records);
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
            Err(e) if e.is_no_records_found() => self.addresses(host, SIP_PORT, 0, 0).await,
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

/// RFC 2782: lowest priority first; within a priority, a weighted random order (a
/// target of weight 0 rarely first).
fn order_by_priority_and_weight(records: &mut [(u16, u16, u16, String)]) {
    records.sort_by_key(|r| r.0);
    for group in records.chunk_by_mut(|a, b| a.0 == b.0) {
        let mut start = 0;
        while start + 1 < group.len() {
            let total: u64 = group[start..].iter().map(|r| u64::from(r.1) + 1).sum();
            let mut pick = wasmpbx_media::os_random::random_u64() % total;
            let chosen = group[start..]
                .iter()
                .position(|r| {
                    let w = u64::from(r.1) + 1;
                    if pick < w {
                        true
                    } else {
                        pick -= w;
                        false
                    }
                })
                .unwrap_or(0);
            group.swap(start, start + chosen);
            start += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srv_records_go_by_priority_then_weight() {
        let mut heavy_first = 0;
        for _ in 0..400 {
            let mut records = vec![
                (20, 0, 5060, "backup".to_owned()),
                (10, 10, 5060, "light".to_owned()),
                (10, 90, 5060, "heavy".to_owned()),
            ];
            order_by_priority_and_weight(&mut records);
            assert_eq!(records[2].3, "backup");
            if records[0].3 == "heavy" {
                heavy_first += 1;
            }
        }
        // 91 of 102 weight: about 357 of 400; far from both 200 (no weighting) and 400.
        assert!((300..=395).contains(&heavy_first), "{heavy_first}");
    }
}
