//! The admin HTTP API (JSON) and `/metrics` (Prometheus text), on hyper.
//!
//! `/api/*` needs `Authorization: Bearer <http.token>` when a token is configured (the
//! config refuses to bind off loopback without one). Live state (registrations, calls)
//! is asked of the SIP core task; stored state comes from the store.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::driver::{CallStats, CoreHandle};
use crate::media::RelayCounters;
use crate::registrar::PasswordRefusal;
use crate::script::ScriptHost;
use crate::store::{CdrStore, KvStore};

/// Request bodies larger than this are refused.
const MAX_BODY: usize = 16 * 1024;

/// How long a read of the records waits for the store writer to catch up.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(1);

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
}

impl Admin {
    /// The running configuration (the script host holds it; a reload replaces it).
    fn config(&self) -> Arc<Config> {
        self.scripts.services.config.load_full()
    }
}

/// Serve until `shutdown` fires; over TLS (HTTPS, WSS) when `tls` is given.
pub async fn serve(
    admin: Arc<Admin>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!("http accept: {e}");
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let admin = admin.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(handle(&admin, request, peer).await) }
            });
            let http = hyper::server::conn::http1::Builder::new();
            let served = match tls {
                None => {
                    http.serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await
                }
                Some(tls) => match tls.accept(stream).await {
                    Ok(stream) => {
                        http.serve_connection(TokioIo::new(stream), service)
                            .with_upgrades()
                            .await
                    }
                    Err(e) => {
                        tracing::debug!(%peer, "https: TLS handshake: {e}");
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

/// The browser phone: a page and its scripts, embedded (JsSIP built from the locked
/// npm packages by `tests/browser/build-phone.mjs`), and the SIP domain it signs in to.
fn phone(admin: &Admin, path: &str) -> Response<Full<Bytes>> {
    let (body, content_type): (Bytes, &str) = match path {
        "/phone" | "/phone/" => (
            Bytes::from_static(include_bytes!("../../phone/index.html")),
            "text/html; charset=utf-8",
        ),
        "/phone/phone.js" => (
            Bytes::from_static(include_bytes!("../../phone/phone.js")),
            "text/javascript",
        ),
        "/phone/jssip.js" => (
            Bytes::from_static(include_bytes!("../../phone/jssip.js")),
            "text/javascript",
        ),
        "/phone/config" => {
            let domain = &admin.config().sip.domain;
            return json_response(StatusCode::OK, json!({ "domain": domain }));
        }
        _ => return error(StatusCode::NOT_FOUND, "not found"),
    };
    let mut response = Response::new(Full::new(body));
    response
        .headers_mut()
        .insert("content-type", content_type.parse().expect("literal"));
    response
}

/// `POST /phone/calls` with `{"extension", "password"}`: the signed-in user's live calls
/// for the browser phone's call list. The password is the SIP one (the page has it
/// already); wrong ones count towards the registrar's throttle.
async fn phone_calls(
    admin: &Admin,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    #[derive(serde::Deserialize)]
    struct SignIn {
        extension: String,
        password: String,
    }
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
    };
    let Ok(sign_in) = serde_json::from_slice::<SignIn>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected {\"extension\": …, \"password\": …}",
        );
    };
    let asked = admin
        .core
        .user_calls(sign_in.extension, sign_in.password, peer.ip())
        .await;
    match asked {
        Some(Ok(calls)) => json_response(StatusCode::OK, json!(calls)),
        Some(Err(refusal)) => {
            let status = match refusal {
                PasswordRefusal::Wrong => StatusCode::FORBIDDEN,
                PasswordRefusal::Throttled => StatusCode::TOO_MANY_REQUESTS,
            };
            error(status, &refusal.to_string())
        }
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the SIP core is not running",
        ),
    }
}

fn json_response(status: StatusCode, value: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().expect("literal"));
    response
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json_response(status, json!({ "error": message }))
}

async fn handle(
    admin: &Admin,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    let method = request.method().clone();
    if path == "/ws" {
        // SIP over WebSocket: authenticated by SIP digest, not by the admin token.
        return crate::ws::upgrade(&admin.config().http, admin.core.clone(), request, peer);
    }
    if path == "/phone/calls" && method == Method::POST {
        return phone_calls(admin, request, peer).await;
    }
    if (path == "/phone" || path.starts_with("/phone/")) && method == Method::GET {
        return phone(admin, &path);
    }
    if path == "/healthz" && method == Method::GET {
        // For service managers and load balancers: no token, no detail.
        let (status, body) = match admin.core.health().await {
            Some(health) if !health.draining => (StatusCode::OK, "ok\n"),
            Some(_) => (StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
            None => (StatusCode::SERVICE_UNAVAILABLE, "stopping\n"),
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        return response;
    }
    if path == "/metrics" && method == Method::GET {
        let text = crate::metrics::Snapshot::take(admin).await.render();
        let mut response = Response::new(Full::new(Bytes::from(text)));
        response.headers_mut().insert(
            "content-type",
            crate::metrics::CONTENT_TYPE.parse().expect("literal"),
        );
        return response;
    }
    let Some(api) = path.strip_prefix("/api/") else {
        return error(StatusCode::NOT_FOUND, "not found");
    };
    if let Some(token) = &admin.config().http.token {
        let presented = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let expected = format!("Bearer {token}");
        if !presented.is_some_and(|p| crate::sip::digest::same_secret(p, &expected)) {
            admin.api_auth_failed.fetch_add(1, Relaxed);
            tracing::warn!(%peer, path, "admin API: missing or wrong bearer token");
            return error(StatusCode::UNAUTHORIZED, "a bearer token is required");
        }
    }
    let segments: Vec<&str> = api.split('/').collect();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["health"]) => {
            let (status, live_calls) = match admin.core.health().await {
                Some(health) if health.draining => ("draining", Some(health.live_calls)),
                Some(health) => ("ok", Some(health.live_calls)),
                None => ("stopping", None),
            };
            json_response(
                StatusCode::OK,
                json!({ "status": status, "live_calls": live_calls, "version": env!("CARGO_PKG_VERSION"), "uptime_s": admin.started.elapsed().as_secs() }),
            )
        }
        (&Method::GET, ["registrations"]) => match admin.core.registrations().await {
            Some(bindings) => json_response(StatusCode::OK, json!(bindings)),
            None => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the SIP core is not running",
            ),
        },
        (&Method::GET, ["trunks"]) => match admin.core.trunks().await {
            Some(trunks) => json_response(StatusCode::OK, json!(trunks)),
            None => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the SIP core is not running",
            ),
        },
        (&Method::GET, ["calls"]) => match admin.core.calls().await {
            Some(calls) => json_response(StatusCode::OK, json!(calls)),
            None => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the SIP core is not running",
            ),
        },
        (&Method::POST, ["calls", id, "flip"]) => {
            let Ok(session) = id.parse() else {
                return error(StatusCode::NOT_FOUND, "no such call");
            };
            let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
                Ok(body) => body.to_bytes(),
                Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "body too large"),
            };
            let Some(targets) = flip_targets(&body) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "send nothing, or {\"targets\": [\"device name\", ...]}",
                );
            };
            match admin.core.flip(session, targets).await {
                Some(Ok(())) => json_response(
                    StatusCode::ACCEPTED,
                    json!({ "session": session, "flip": "asking the policy, then ringing the user's other devices" }),
                ),
                Some(Err((code, reason))) => {
                    let status = match code {
                        404 => StatusCode::NOT_FOUND,
                        403 => StatusCode::FORBIDDEN,
                        _ => StatusCode::CONFLICT,
                    };
                    error(status, &reason)
                }
                None => error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the SIP core is not running",
                ),
            }
        }
        (&Method::POST, ["calls", id, "events"]) => {
            let Ok(session) = id.parse() else {
                return error(StatusCode::NOT_FOUND, "no such live call");
            };
            let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
                Ok(body) => body.to_bytes(),
                Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "body too large"),
            };
            let event = match call_event(&body) {
                Ok(event) => event,
                Err(why) => return error(StatusCode::BAD_REQUEST, &why),
            };
            let name = event.name.clone();
            match admin.core.call_event(session, event).await {
                Some(Ok(())) => json_response(
                    StatusCode::ACCEPTED,
                    json!({ "session": session, "event": name }),
                ),
                Some(Err((code, reason))) => {
                    let status = match code {
                        429 => StatusCode::TOO_MANY_REQUESTS,
                        _ => StatusCode::NOT_FOUND,
                    };
                    error(status, &reason)
                }
                None => error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the SIP core is not running",
                ),
            }
        }
        (&Method::GET, ["intents", location]) => {
            if admin.config().location(location).is_none() {
                return error(StatusCode::NOT_FOUND, "no such location");
            }
            let now = crate::clock::Clock::now(&crate::clock::SystemClock);
            let since = match query_value(&query, "since") {
                None => now - jiff::SignedDuration::from_hours(24),
                Some(text) => match text.parse::<jiff::Timestamp>() {
                    Ok(since) => since,
                    Err(_) => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "since: an RFC 3339 time, e.g. 2026-12-05T00:00:00Z",
                        );
                    }
                },
            };
            admin.store_progress.settle(SETTLE).await;
            // A day of records can be many: counted off the async threads.
            let (cdrs, place) = (admin.cdrs.clone(), location.to_string());
            let counted = tokio::task::spawn_blocking(move || cdrs.intents(Some(&place), since))
                .await
                .map_err(|e| e.to_string())
                .and_then(|counted| counted.map_err(|e| e.to_string()));
            match counted {
                Ok(counts) => {
                    json_response(StatusCode::OK, intents_summary(location, since, &counts))
                }
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e),
            }
        }
        (&Method::GET, ["cdrs"]) => {
            let limit = query
                .split('&')
                .find_map(|p| p.strip_prefix("limit="))
                .map(|l| l.parse::<usize>())
                .unwrap_or(Ok(50));
            let Ok(limit) = limit else {
                return error(StatusCode::BAD_REQUEST, "limit must be a number");
            };
            // The records of calls that have ended are queued for the store: wait for
            // them (briefly), so a call gone from /api/calls is here.
            admin.store_progress.settle(SETTLE).await;
            match admin.cdrs.recent_cdrs(limit.min(10_000)) {
                Ok(records) => json_response(StatusCode::OK, json!(records)),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            }
        }
        (&Method::GET, ["scripts"]) => {
            json_response(StatusCode::OK, json!(admin.scripts.registry.status()))
        }
        (&Method::GET, ["kv", location]) => {
            if admin.config().location(location).is_none() {
                return error(StatusCode::NOT_FOUND, "no such location");
            }
            match admin.kv.list(location) {
                Ok(entries) => json_response(
                    StatusCode::OK,
                    json!(
                        entries
                            .into_iter()
                            .collect::<std::collections::BTreeMap<_, _>>()
                    ),
                ),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            }
        }
        (&Method::PUT, ["kv", location, key]) | (&Method::DELETE, ["kv", location, key]) => {
            if admin.config().location(location).is_none() {
                return error(StatusCode::NOT_FOUND, "no such location");
            }
            let (location, key) = (location.to_string(), key.to_string());
            let result = if method == Method::DELETE {
                admin.kv.delete(&location, &key)
            } else {
                let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
                    Ok(body) => body.to_bytes(),
                    Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "body too large"),
                };
                let Some(value) = kv_value(&body) else {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "send the value as text or as {\"value\": \"...\"}",
                    );
                };
                admin.kv.set(&location, &key, &value)
            };
            match result {
                Ok(()) => {
                    tracing::info!(location, key, %method, "admin changed a key-value entry");
                    json_response(StatusCode::OK, json!({ "location": location, "key": key }))
                }
                Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}

/// An event for a call: `{"name": "intent", "value": "billing", "confidence": 0.92}`
/// (`confidence` optional), or why not.
fn call_event(body: &[u8]) -> Result<crate::driver::CallEventRequest, String> {
    let shape = "send {\"name\": \"intent\", \"value\": \"billing\", \"confidence\": 0.9}";
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|_| shape.to_owned())?;
    let (Some(name), Some(text)) = (value["name"].as_str(), value["value"].as_str()) else {
        return Err(shape.into());
    };
    let confidence = match &value["confidence"] {
        serde_json::Value::Null => None,
        c => Some(c.as_f64().ok_or("confidence: a number from 0 to 1")?),
    };
    wasmpbx_types::record::CallEvent::check(name, text, confidence)?;
    Ok(crate::driver::CallEventRequest {
        name: name.to_owned(),
        value: text.to_owned(),
        confidence,
    })
}

/// A query parameter's value, percent-decoded.
fn query_value(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let value = pair.strip_prefix(name)?.strip_prefix('=')?;
        let value = value.replace('+', " ");
        Some(
            percent_encoding::percent_decode_str(&value)
                .decode_utf8_lossy()
                .into_owned(),
        )
    })
}

/// `GET /api/intents/{location}`: the counts by intent over the whole period, and by
/// hour.
fn intents_summary(
    location: &str,
    since: jiff::Timestamp,
    counts: &[wasmpbx_types::record::IntentCount],
) -> serde_json::Value {
    let mut by_intent = std::collections::BTreeMap::<&str, u64>::new();
    let mut by_hour =
        std::collections::BTreeMap::<&str, std::collections::BTreeMap<&str, u64>>::new();
    for count in counts {
        *by_intent.entry(&count.intent).or_default() += count.calls;
        by_hour
            .entry(&count.hour)
            .or_default()
            .insert(&count.intent, count.calls);
    }
    let by_hour: Vec<_> = by_hour
        .into_iter()
        .map(|(hour, intents)| json!({ "hour": hour, "intents": intents }))
        .collect();
    json!({ "location": location, "since": since, "by_intent": by_intent, "by_hour": by_hour })
}

/// The devices a flip request names: an empty body (any), or `{"targets": [...]}`.
fn flip_targets(body: &[u8]) -> Option<Vec<String>> {
    let text = std::str::from_utf8(body).ok()?.trim();
    if text.is_empty() {
        return Some(Vec::new());
    }
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    match value.get("targets") {
        None => Some(Vec::new()),
        Some(targets) => targets
            .as_array()?
            .iter()
            .map(|t| t.as_str().map(str::to_owned))
            .collect(),
    }
}

/// A kv value from a PUT body: `{"value": "closed"}` or the plain text `closed`.
fn kv_value(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?.trim();
    if text.starts_with('{') {
        return serde_json::from_str::<serde_json::Value>(text)
            .ok()?
            .get("value")?
            .as_str()
            .map(str::to_owned);
    }
    Some(text.to_owned())
}

/// Per trunk: its registration, and each target's health.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_bodies() {
        assert_eq!(kv_value(b"closed").as_deref(), Some("closed"));
        assert_eq!(kv_value(b"{\"value\": \"open\"}").as_deref(), Some("open"));
        assert_eq!(kv_value(b"{\"nope\": 1}"), None);
        assert_eq!(kv_value(&[0xff]), None);
    }
}
