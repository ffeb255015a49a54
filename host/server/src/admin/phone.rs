//! The browser phone at `/phone`: a page and its scripts, embedded (JsSIP built from the
//! locked npm packages by `tests/browser/build-phone.mjs`), the SIP domain it signs in
//! to, and the signed-in user's live calls (polled with a session token, not the
//! password).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::{Value, json};

use super::{Admin, ApiError, Peer};
use crate::registrar::PasswordRefusal;

pub(super) fn routes() -> Router<Arc<Admin>> {
    let file = super::embedded;
    let page = || {
        file(
            include_bytes!("../../../phone/index.html"),
            "text/html; charset=utf-8",
        )
    };
    Router::new()
        .route("/phone", page())
        .route("/phone/", page())
        .route(
            "/phone/phone.js",
            file(include_bytes!("../../../phone/phone.js"), "text/javascript"),
        )
        .route(
            "/phone/jssip.js",
            file(include_bytes!("../../../phone/jssip.js"), "text/javascript"),
        )
        .route("/phone/config", get(config))
        .route("/phone/session", post(sign_in).delete(sign_out))
        .route("/phone/calls", get(calls))
}

async fn config(State(admin): State<Arc<Admin>>) -> impl IntoResponse {
    Json(json!({ "domain": admin.config().sip.domain }))
}

/// How long a signed-in phone's session lasts without being used.
const SESSION_IDLE: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most: the oldest goes first beyond this.
const MAX_SESSIONS: usize = 10_000;

/// The browser phones signed in: a random token each (sent back as a bearer token), so
/// the call list is polled without the password.
#[derive(Default)]
pub struct PhoneSessions {
    /// Token → (user id, last used).
    sessions: Mutex<HashMap<String, (String, Instant)>>,
}

impl PhoneSessions {
    fn open(&self, user_id: String, now: Instant) -> anyhow::Result<String> {
        let token = crate::server::random_text(32)?;
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|_, (_, used)| now.duration_since(*used) < SESSION_IDLE);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(t, _)| t.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(token.clone(), (user_id, now));
        Ok(token)
    }

    /// The user of a live session (which is used now).
    fn user(&self, token: &str, now: Instant) -> Option<String> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let (user, used) = sessions.get_mut(token)?;
        if now.duration_since(*used) >= SESSION_IDLE {
            sessions.remove(token);
            return None;
        }
        *used = now;
        Some(user.clone())
    }

    fn close(&self, token: &str) -> bool {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.remove(token).is_some()
    }
}

/// The phone's session token from `Authorization: Bearer …`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// `POST /phone/session` with `{"extension", "password"}` (the SIP ones: the page has
/// them already): a session token for the call list. Wrong ones count towards the
/// registrar's throttle.
async fn sign_in(
    State(admin): State<Arc<Admin>>,
    Extension(Peer(peer)): Extension<Peer>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    #[derive(serde::Deserialize)]
    struct SignIn {
        extension: String,
        password: String,
    }
    let sign_in = serde_json::from_slice::<SignIn>(&body?)
        .map_err(|_| ApiError::bad_request("expected {\"extension\": …, \"password\": …}"))?;
    let asked = admin
        .core
        .sign_in(sign_in.extension, sign_in.password, peer.ip())
        .await;
    match asked {
        Some(Ok(user)) => {
            let token = admin
                .phones
                .open(user.clone(), crate::clock::monotonic_now())
                .map_err(ApiError::internal)?;
            Ok(Json(json!({ "token": token, "user": user })))
        }
        Some(Err(refusal)) => Err(ApiError::new(
            match refusal {
                PasswordRefusal::Wrong => StatusCode::FORBIDDEN,
                PasswordRefusal::Throttled => StatusCode::TOO_MANY_REQUESTS,
            },
            refusal.to_string(),
        )),
        None => Err(ApiError::core_stopped()),
    }
}

/// `DELETE /phone/session`: sign out.
async fn sign_out(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> StatusCode {
    match bearer(&headers).is_some_and(|token| admin.phones.close(token)) {
        true => StatusCode::NO_CONTENT,
        false => StatusCode::UNAUTHORIZED,
    }
}

/// `GET /phone/calls` with the session's bearer token: the user's live calls, on any of
/// their devices, for the phone's call list.
async fn calls(
    State(admin): State<Arc<Admin>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let user = bearer(&headers)
        .and_then(|token| admin.phones.user(token, crate::clock::monotonic_now()))
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "sign in again"))?;
    let calls = admin
        .core
        .user_calls(user)
        .await
        .ok_or_else(ApiError::core_stopped)?;
    Ok(Json(json!(calls)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_lasts_while_it_is_used_and_ends_at_sign_out() {
        let sessions = PhoneSessions::default();
        let start = crate::clock::monotonic_now();
        let token = sessions.open("alice".into(), start).unwrap();
        assert_eq!(token.len(), 32);
        let hour = Duration::from_secs(3600);
        // Used every 11 hours: it goes on.
        assert_eq!(
            sessions.user(&token, start + hour * 11).as_deref(),
            Some("alice")
        );
        assert_eq!(
            sessions.user(&token, start + hour * 22).as_deref(),
            Some("alice")
        );
        assert_eq!(sessions.user("not-a-token", start), None);
        assert!(sessions.close(&token));
        assert_eq!(sessions.user(&token, start + hour * 22), None);
        // Idle for 12 hours: gone.
        let idle = sessions.open("bob".into(), start).unwrap();
        assert_eq!(sessions.user(&idle, start + hour * 12), None);
    }
}
