//! SIP over WebSocket (RFC 7118) on the HTTP listener's `/ws`: the upgrade — the `sip`
//! subprotocol, the `Origin` check — and then the connection, one SIP message per frame,
//! served into the core like a TCP connection's ([`crate::driver::CoreHandle::serve_ws`]).
//! Registration and digest authentication are the SIP core's, as for UDP and TCP.

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::HeaderMap;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::config::HttpConfig;
use crate::driver::CoreHandle;
use crate::sip::message::MAX_MESSAGE_BYTES;
use crate::stream_slots::StreamSlot;

/// Answer a request for `/ws`: 101 and the connection served from then on, or why not.
/// The WebSocket holds the HTTP connection's `slot` (its place among the listener's
/// connections) while it is open.
pub(crate) fn upgrade(
    http: &HttpConfig,
    core: CoreHandle,
    mut request: Request<Incoming>,
    peer: SocketAddr,
    slot: Arc<StreamSlot>,
) -> Response<Full<Bytes>> {
    let headers = request.headers();
    if !has_token(headers, "upgrade", "websocket") || !has_token(headers, "connection", "upgrade") {
        return refuse(
            StatusCode::UPGRADE_REQUIRED,
            "a WebSocket upgrade is required",
        );
    }
    if !has_token(headers, "sec-websocket-version", "13") {
        let mut response = refuse(StatusCode::UPGRADE_REQUIRED, "WebSocket version 13 only");
        response.headers_mut().insert(
            "sec-websocket-version",
            hyper::header::HeaderValue::from_static("13"),
        );
        return response;
    }
    if !has_token(headers, "sec-websocket-protocol", "sip") {
        return refuse(StatusCode::BAD_REQUEST, "the sip subprotocol is required");
    }
    let Some(key) = headers.get("sec-websocket-key") else {
        return refuse(StatusCode::BAD_REQUEST, "Sec-WebSocket-Key is missing");
    };
    // Browsers always send Origin; other clients may not, and are not browsers' victims.
    if let Some(origin) = headers.get("origin") {
        let host = headers.get("host").and_then(|h| h.to_str().ok());
        let origin = origin.to_str().unwrap_or_default();
        if !origin_allowed(&http.allowed_origins, origin, host) {
            tracing::warn!(%peer, origin, "websocket: origin not allowed");
            return refuse(StatusCode::FORBIDDEN, "origin not allowed");
        }
    }
    let accept = derive_accept_key(key.as_bytes());
    let upgraded = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let _slot = slot; // the connection's place, held while the WebSocket is open
        match upgraded.await {
            Ok(upgraded) => {
                let config = WebSocketConfig::default()
                    .max_message_size(Some(MAX_MESSAGE_BYTES))
                    .max_frame_size(Some(MAX_MESSAGE_BYTES));
                let stream = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                tracing::info!(%peer, "websocket: connected");
                core.serve_ws(peer, stream).await;
                tracing::info!(%peer, "websocket: closed");
            }
            Err(e) => tracing::debug!(%peer, "websocket upgrade: {e}"),
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let set = response.headers_mut();
    for (name, value) in [
        ("upgrade", "websocket".to_owned()),
        ("connection", "Upgrade".to_owned()),
        ("sec-websocket-accept", accept),
        ("sec-websocket-protocol", "sip".to_owned()),
    ] {
        set.insert(name, value.parse().expect("header-safe"));
    }
    response
}

/// Whether a comma-separated header holds `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: &str, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// A page's origin may open the socket: one listed in `http.allowed_origins` (`*`: any),
/// or with an empty list the page's own origin (scheme and the `Host` it asked).
fn origin_allowed(allowed: &[String], origin: &str, host: Option<&str>) -> bool {
    if allowed.is_empty() {
        return host.is_some_and(|host| {
            origin == format!("http://{host}") || origin == format!("https://{host}")
        });
    }
    allowed.iter().any(|a| a == "*" || a == origin)
}

fn refuse(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(message.to_owned())));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_the_pages_own_unless_listed() {
        let host = Some("pbx.example:8080");
        assert!(origin_allowed(&[], "https://pbx.example:8080", host));
        assert!(origin_allowed(&[], "http://pbx.example:8080", host));
        assert!(!origin_allowed(&[], "https://evil.example", host));
        assert!(!origin_allowed(&[], "null", host));
        let listed = ["https://app.example".to_owned()];
        assert!(origin_allowed(&listed, "https://app.example", host));
        assert!(!origin_allowed(&listed, "https://pbx.example:8080", host));
        assert!(origin_allowed(
            &["*".to_owned()],
            "https://any.example",
            host
        ));
    }
}
