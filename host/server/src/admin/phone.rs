//! The browser phone at `/phone`: a page and its scripts, embedded (JsSIP built from the
//! locked npm packages by `tests/browser/build-phone.mjs`), the SIP domain it signs in
//! to, and the signed-in user's live calls.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
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
        .route("/phone/calls", post(calls))
}

async fn config(State(admin): State<Arc<Admin>>) -> impl IntoResponse {
    Json(json!({ "domain": admin.config().sip.domain }))
}

/// `POST /phone/calls` with `{"extension", "password"}`: the signed-in user's live calls
/// for the browser phone's call list. The password is the SIP one (the page has it
/// already); wrong ones count towards the registrar's throttle.
async fn calls(
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
        .user_calls(sign_in.extension, sign_in.password, peer.ip())
        .await;
    match asked {
        Some(Ok(calls)) => Ok(Json(json!(calls))),
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
