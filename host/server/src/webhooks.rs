//! Webhooks (`[[webhooks]]`): each one a task that takes the event stream's events it
//! wants and POSTs them, one at a time and in order, as JSON.
//!
//! Each delivery carries `X-Wasmpbx-Event` (the type), `X-Wasmpbx-Delivery` (the event's
//! id: the same on every attempt, so a receiver can drop repeats) and, with a `secret`,
//! `X-Wasmpbx-Timestamp` and `X-Wasmpbx-Signature: sha256=<hex>`, the HMAC-SHA256 of
//! `"{timestamp}.{body}"` under the secret. A network error, a timeout, 408, 429 or a 5xx
//! is tried again after 1, 2, 4, 8 and 16 s; then, or on another status, the event is
//! given up (logged, counted). Calls never wait on a webhook: the stream does not wait
//! for its subscribers, and a webhook that falls far behind loses the oldest events
//! (counted too).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use anyhow::Context as _;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::broadcast::error::RecvError;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;

use crate::config::Webhook;
use crate::events::{Events, HostEvent};

/// Waits between attempts: five retries over about half a minute.
const BACKOFF: [Duration; 5] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(16),
];
/// One attempt, connecting included.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// The most of an endpoint's answer read to keep its connection for the next delivery.
const ANSWER_READ: usize = 64 * 1024;

/// A webhook's counts, for `/metrics`.
#[derive(Debug, Default)]
pub struct WebhookStats {
    /// Where it posts (scheme, host and port: no path or query, which may hold secrets).
    pub target: String,
    pub delivered: AtomicU64,
    /// Events given up after their attempts, or refused.
    pub failed: AtomicU64,
    /// Attempts that will be tried again.
    pub retried: AtomicU64,
    /// Events lost because the webhook fell too far behind the stream.
    pub lost: AtomicU64,
}

/// Start a task per webhook; their stats, in the config's order.
pub fn start(webhooks: &[Webhook], events: &Arc<Events>) -> anyhow::Result<Vec<Arc<WebhookStats>>> {
    let mut all = Vec::new();
    for (i, webhook) in webhooks.iter().enumerate() {
        let target = Target::parse(&webhook.url)
            .with_context(|| format!("webhooks[{i}].url: {:?}", webhook.url))?;
        let stats = Arc::new(WebhookStats {
            target: target.origin(),
            ..WebhookStats::default()
        });
        tokio::spawn(deliver(
            webhook.clone(),
            target,
            events.subscribe(),
            stats.clone(),
        ));
        all.push(stats);
    }
    Ok(all)
}

/// Where a webhook posts.
struct Target {
    uri: Uri,
    host: String,
    port: u16,
    /// Set for https.
    tls: Option<TlsConnector>,
}

impl Target {
    fn parse(url: &str) -> anyhow::Result<Self> {
        let uri: Uri = url.parse().context("not a URL")?;
        let host = uri.host().context("no host")?.to_owned();
        let https = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = https.then(crate::tls::web_client_connector).transpose()?;
        Ok(Self {
            uri,
            host,
            port,
            tls,
        })
    }

    fn origin(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.host, self.port)
    }
}

/// An open connection to the target, kept between deliveries.
type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(target: &Target) -> anyhow::Result<Sender> {
    // An IPv6 literal comes bracketed in the URL.
    let host = target.host.trim_start_matches('[').trim_end_matches(']');
    let tcp = TcpStream::connect((host, target.port)).await?;
    let sender = match &target.tls {
        None => {
            let (sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
            tokio::spawn(connection);
            sender
        }
        Some(tls) => {
            let name = ServerName::try_from(host.to_owned())?;
            let stream = tls.connect(name, tcp).await?;
            let (sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            sender
        }
    };
    Ok(sender)
}

/// The headers of a delivery besides the body's.
fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// One attempt: the status, or why there is none.
async fn attempt(
    target: &Target,
    connection: &mut Option<Sender>,
    webhook: &Webhook,
    event: &HostEvent,
    body: &Bytes,
) -> anyhow::Result<StatusCode> {
    // The connection the last delivery used, if it is still good; else a new one.
    let reused = match connection.take() {
        Some(mut sender) if !sender.is_closed() => sender.ready().await.ok().map(|()| sender),
        _ => None,
    };
    let mut sender = match reused {
        Some(sender) => sender,
        None => connect(target).await?,
    };
    let path = target
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let authority = target
        .uri
        .authority()
        .map_or(target.host.clone(), |a| a.to_string());
    let mut request = Request::post(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("wasmpbx/", env!("CARGO_PKG_VERSION")),
        )
        .header("x-wasmpbx-event", event.what.name())
        .header("x-wasmpbx-delivery", event.id.to_string());
    if let Some(secret) = &webhook.secret {
        let timestamp = event.at.as_second();
        request = request
            .header("x-wasmpbx-timestamp", timestamp.to_string())
            .header("x-wasmpbx-signature", signature(secret, timestamp, body));
    }
    let response = sender
        .send_request(request.body(Full::new(body.clone()))?)
        .await?;
    let status = response.status();
    // The answer's body is read (and dropped) so the connection can serve the next
    // delivery; one too long to bother with closes it instead.
    if Limited::new(response.into_body(), ANSWER_READ)
        .collect()
        .await
        .is_ok()
    {
        *connection = Some(sender);
    }
    Ok(status)
}

fn worth_retrying(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
}

async fn deliver(
    webhook: Webhook,
    target: Target,
    mut events: tokio::sync::broadcast::Receiver<Arc<HostEvent>>,
    stats: Arc<WebhookStats>,
) {
    let origin = target.origin();
    let mut connection = None;
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            Err(RecvError::Lagged(missed)) => {
                stats.lost.fetch_add(missed, Relaxed);
                tracing::warn!(webhook = %origin, missed, "webhook too slow: events lost");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        if !webhook.wants(event.what.name()) {
            continue;
        }
        let body = Bytes::from(serde_json::to_vec(&*event).unwrap_or_default());
        let mut waits = BACKOFF.iter();
        loop {
            let outcome = tokio::time::timeout(
                ATTEMPT_TIMEOUT,
                attempt(&target, &mut connection, &webhook, &event, &body),
            )
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {ATTEMPT_TIMEOUT:?}")));
            let retry = match &outcome {
                Ok(status) if status.is_success() => {
                    stats.delivered.fetch_add(1, Relaxed);
                    break;
                }
                Ok(status) => worth_retrying(*status),
                Err(_) => true,
            };
            let why = match outcome {
                Ok(status) => format!("answered {status}"),
                Err(e) => format!("{e:#}"),
            };
            match waits.next().filter(|_| retry) {
                Some(wait) => {
                    stats.retried.fetch_add(1, Relaxed);
                    connection = None;
                    tracing::debug!(webhook = %origin, event = event.id, "webhook {why}: again in {wait:?}");
                    tokio::time::sleep(*wait).await;
                }
                None => {
                    stats.failed.fetch_add(1, Relaxed);
                    tracing::warn!(webhook = %origin, event = event.id, kind = event.what.name(), "webhook {why}: event given up");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Known answer (Python: hmac.new(b"Jefe", b"1.what do ya want for nothing?",
        // hashlib.sha256).hexdigest()).
        assert_eq!(
            signature("Jefe", 1, b"what do ya want for nothing?"),
            "sha256=a9049465ce89cfb8e9aac62333abda66f80e3403f51f57f6bae3c3a4485eca38"
        );
    }

    #[test]
    fn targets_keep_only_their_origin_for_metrics() {
        let target = Target::parse("http://127.0.0.1:9/hook?token=s3cret").unwrap();
        assert_eq!(target.origin(), "http://127.0.0.1:9");
        assert!(
            Target::parse("http://[::1]/h")
                .unwrap()
                .origin()
                .ends_with(":80")
        );
        assert!(worth_retrying(StatusCode::BAD_GATEWAY));
        assert!(!worth_retrying(StatusCode::NOT_FOUND));
    }
}
