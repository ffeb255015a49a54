//! The HTTP side: the admin API (JSON under `/api`, on an axum router whose routes and
//! OpenAPI document come from the same handlers), `/metrics`, `/healthz`, the admin
//! console (`/admin`), the browser phone and SIP over WebSocket (`/ws`).
//!
//! `/api/*` needs `Authorization: Bearer <http.token>` when a token is configured (the
//! config refuses to bind off loopback without one). Live state (registrations, calls)
//! is asked of the SIP core task; stored state comes from the store. Every error is
//! JSON, `{"error": "…"}`: an unknown path 404, a known path with another method 405
//! (with `Allow`), a bad parameter or body 400, a body over 16 KiB 413.

mod api;
mod phone;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tower::ServiceExt as _;

use crate::config::Config;
use crate::driver::{CallStats, CoreHandle};
use crate::media::RelayCounters;
use crate::script::ScriptHost;
use crate::store::{CdrStore, KvStore};
use crate::stream_slots::{self, StreamSlots};

/// Request bodies larger than this are refused (413).
const MAX_BODY: usize = 16 * 1024;

/// How long a read of the records waits for the store writer to catch up.
const SETTLE: Duration = Duration::from_secs(1);

/// Everything the API reads.
pub struct Admin {
    pub core: CoreHandle,
    pub scripts: Arc<ScriptHost>,
    pub cdrs: Arc<dyn CdrStore>,
    /// How far the store writer has come (records are written off the SIP task).
    pub store_progress: Arc<crate::writer::Progress>,
    pub kv: Arc<dyn KvStore>,
    pub relay: Arc<RelayCounters>,
    pub calls: Arc<CallStats>,
    pub started: std::time::Instant,
    /// API requests refused for a missing or wrong bearer token.
    pub api_auth_failed: std::sync::atomic::AtomicU64,
    /// The event stream, for `/api/events`.
    pub events: Arc<crate::events::Events>,
    /// Each webhook's deliveries, for `/metrics`.
    pub webhooks: Vec<Arc<crate::webhooks::WebhookStats>>,
    /// The browser phones signed in.
    pub phones: phone::PhoneSessions,
    /// Which locations run a shadow script, and the decision journal's counters.
    pub journal: crate::decisions::Journal,
    /// The shadow results, for the report.
    pub shadow_results: Arc<dyn crate::store::ShadowStore>,
    /// The nodes sharing the store, for `/api/cluster`.
    pub cluster: Arc<dyn crate::store::ClusterStore>,
    /// Who holds whose call among the other nodes: what `/api/cluster` reads, the node
    /// learns too, so it acts on what the API shows.
    pub owners: Arc<crate::cluster::Owners>,
}

impl Admin {
    /// The running configuration (the script host holds it; a reload replaces it).
    fn config(&self) -> Arc<Config> {
        self.scripts.services.config.load_full()
    }
}

/// The address a request came from (set on each request by [`serve`]).
#[derive(Clone, Copy)]
struct Peer(SocketAddr);

/// An error answer: its status and `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    fn internal(error: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
    }

    /// The core task answers `None` only while it stops.
    fn core_stopped() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the SIP core is not running",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(json!({ "error": self.message }))).into_response()
    }
}

/// Extractors' refusals (a bad path segment or query, a body too large) as JSON errors.
macro_rules! rejections {
    ($($rejection:ty),*) => {$(
        impl From<$rejection> for ApiError {
            fn from(rejection: $rejection) -> Self {
                Self::new(rejection.status(), rejection.body_text())
            }
        }
    )*};
}
rejections!(
    axum::extract::rejection::PathRejection,
    axum::extract::rejection::QueryRejection,
    axum::extract::rejection::BytesRejection
);

/// The routes. `/ws` is not among them: [`serve`] hands it to [`crate::ws`] with the
/// connection's own request, which the upgrade needs.
fn router(admin: Arc<Admin>) -> Router {
    let (api, _) = api::routes().split_for_parts();
    let api = api
        .route_layer(axum::middleware::from_fn_with_state(
            admin.clone(),
            require_token,
        ))
        .method_not_allowed_fallback(method_not_allowed);
    // The admin console: a page and its script; it signs in with the token and reads
    // the API like any client.
    let console = || {
        embedded(
            include_bytes!("../../../admin/index.html"),
            "text/html; charset=utf-8",
        )
    };
    Router::new()
        .route("/healthz", axum::routing::get(healthz))
        .route("/metrics", axum::routing::get(metrics))
        .route("/admin", console())
        .route("/admin/", console())
        .route(
            "/admin/admin.js",
            embedded(include_bytes!("../../../admin/admin.js"), "text/javascript"),
        )
        .merge(phone::routes())
        .merge(api)
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(admin)
}

/// `GET` of a file embedded in the binary.
fn embedded(
    body: &'static [u8],
    content_type: &'static str,
) -> axum::routing::MethodRouter<Arc<Admin>> {
    axum::routing::get(move || async move { ([(header::CONTENT_TYPE, content_type)], body) })
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such path")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "this path does not take that method",
    )
}

/// `/api` wants the bearer token when one is configured.
async fn require_token(State(admin): State<Arc<Admin>>, request: Request, next: Next) -> Response {
    if let Some(token) = &admin.config().http.token {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let expected = format!("Bearer {token}");
        if !presented.is_some_and(|p| crate::sip::digest::same_secret(p, &expected)) {
            admin.api_auth_failed.fetch_add(1, Relaxed);
            let peer = request.extensions().get::<Peer>().map(|p| p.0);
            tracing::warn!(
                ?peer,
                path = request.uri().path(),
                "admin API: missing or wrong bearer token"
            );
            return ApiError::new(StatusCode::UNAUTHORIZED, "a bearer token is required")
                .into_response();
        }
    }
    next.run(request).await
}

/// For service managers and load balancers: no token, no detail.
async fn healthz(State(admin): State<Arc<Admin>>) -> (StatusCode, &'static str) {
    match admin.core.health().await {
        Some(health) if !health.draining => (StatusCode::OK, "ok\n"),
        Some(_) => (StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        None => (StatusCode::SERVICE_UNAVAILABLE, "stopping\n"),
    }
}

async fn metrics(State(admin): State<Arc<Admin>>) -> impl IntoResponse {
    let text = crate::metrics::Snapshot::take(&admin).await.render();
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text)
}

/// How long a client may take over its TLS handshake.
const TLS_HANDSHAKE: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's headers (hyper's own default, which
/// it applies only with a timer): a connection that never finishes one is let go.
const HEADER_READ: Duration = Duration::from_secs(30);
/// The pause after a failed accept.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// The HTTP/1 server side of a connection, with its timeouts running (`header_read`:
/// [`HEADER_READ`] but in tests).
fn http1(header_read: Duration) -> hyper::server::conn::http1::Builder {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_read);
    http
}

/// Serve until `shutdown` fires; over TLS (HTTPS, WSS) when `tls` is given.
pub async fn serve(
    admin: Arc<Admin>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let router = router(admin.clone());
    let slots = StreamSlots::new(stream_slots::PER_SOURCE, stream_slots::IN_ALL);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors, say: give the machine a moment rather
                    // than spin a core on the same error.
                    tracing::warn!("http accept: {e}");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let Some(slot) = slots.take(peer.ip()) else {
            tracing::warn!(%peer, "http connection refused: too many held (at most {} from one address, {} in all)", stream_slots::PER_SOURCE, stream_slots::IN_ALL);
            continue; // dropped: closed
        };
        // Held by the connection and, once it is upgraded, by its WebSocket.
        let slot = Arc::new(slot);
        let (admin, router, tls) = (admin.clone(), router.clone(), tls.clone());
        tokio::spawn(async move {
            let held = slot.clone();
            let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
                let (admin, router, held) = (admin.clone(), router.clone(), held.clone());
                async move {
                    if request.uri().path() == "/ws" {
                        // SIP over WebSocket: authenticated by SIP digest, not the token.
                        let upgraded = crate::ws::upgrade(
                            &admin.config().http,
                            admin.core.clone(),
                            request,
                            peer,
                            held,
                        );
                        return Ok::<_, Infallible>(upgraded.map(Body::new));
                    }
                    request.extensions_mut().insert(Peer(peer));
                    router.oneshot(request.map(Body::new)).await
                }
            });
            let http = http1(HEADER_READ);
            let served = match tls {
                None => {
                    http.serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await
                }
                Some(tls) => match tokio::time::timeout(TLS_HANDSHAKE, tls.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        http.serve_connection(TokioIo::new(stream), service)
                            .with_upgrades()
                            .await
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, "https: TLS handshake: {e}");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "https: no TLS handshake within {TLS_HANDSHAKE:?}");
                        return;
                    }
                },
            };
            if let Err(e) = served {
                tracing::debug!(%peer, "http connection: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn a_client_that_never_finishes_its_headers_is_let_go() {
        let header_read = Duration::from_millis(200);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let service = hyper::service::service_fn(|_| async {
                Ok::<_, Infallible>(hyper::Response::new(String::new()))
            });
            let http = http1(header_read);
            let _ = http.serve_connection(TokioIo::new(stream), service).await;
        });
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET /api/health HTTP/1.1\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(10 * header_read, client.read_to_end(&mut answer)).await;
        assert!(read.is_ok(), "the connection is still held open");
    }
}
