//! The JSON API under `/api`. Each handler's `#[utoipa::path]` is its entry in the
//! OpenAPI document (`GET /api/openapi.json`): routes and document come from the same
//! list ([`routes`]), so they cannot drift apart.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Admin, ApiError, Peer, SETTLE};
use crate::call::SessionId;

type ApiResult<T> = Result<T, ApiError>;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "wasmpbx admin API",
        description = "Live state, call records, scripts and admin toggles of a wasmpbx \
                       node. Every error is `{\"error\": \"…\"}`.",
    ),
    modifiers(&BearerToken),
    security(("token" = [])),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

/// `Authorization: Bearer <http.token>`, when the server has one.
struct BearerToken;

impl utoipa::Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Every error.
#[derive(Serialize, ToSchema)]
struct ErrorBody {
    error: String,
}

/// The API's routes with their documentation.
pub(super) fn routes() -> OpenApiRouter<Arc<Admin>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(registrations))
        .routes(routes!(trunks))
        .routes(routes!(calls))
        .routes(routes!(flip))
        .routes(routes!(call_event))
        .routes(routes!(intents))
        .routes(routes!(cdrs))
        .routes(routes!(cdr))
        .routes(routes!(recording))
        .routes(routes!(scripts))
        .routes(routes!(cluster))
        .routes(routes!(locations))
        .routes(routes!(shadow_set, shadow_reset))
        .routes(routes!(shadow_report))
        .routes(routes!(kv_list))
        .routes(routes!(kv_set, kv_delete))
        .routes(routes!(audit_log))
        .routes(routes!(events))
        .routes(routes!(openapi_json))
}

/// The OpenAPI 3 document of the API.
fn openapi() -> utoipa::openapi::OpenApi {
    routes().split_for_parts().1
}

#[utoipa::path(get, path = "/api/openapi.json", tag = "meta",
    responses((status = 200, description = "This document (OpenAPI 3)", body = Object)))]
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    // Built once: it is the same document for the life of the process.
    static DOCUMENT: std::sync::OnceLock<utoipa::openapi::OpenApi> = std::sync::OnceLock::new();
    Json(DOCUMENT.get_or_init(openapi).clone())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    /// Only these event types, comma-separated (e.g. `call.ended,flip.ended`);
    /// default: all.
    types: Option<String>,
}

#[utoipa::path(get, path = "/api/events", tag = "live",
    params(EventsQuery),
    responses((status = 200, description = "Server-Sent Events, from the moment of \
        connecting: `call.started`, `call.answered`, `call.ended`, `flip.requested`, \
        `flip.ended` (result done, denied, no-answer, cancelled), `registration.up`, \
        `registration.down`, `script.loaded`, `script.failed`, `script.removed`, \
        `script.fallback`. Each has `event:` its type, `id:` its number and `data:` JSON \
        (`id`, `at`, `type` and its fields). A client too slow to keep up gets an `events.lost` \
        event saying how many it missed.", content_type = "text/event-stream")))]
async fn events(
    State(admin): State<Arc<Admin>>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> ApiResult<impl axum::response::IntoResponse> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use tokio::sync::broadcast::error::RecvError;
    let Query(query) = query?;
    let wanted: Option<Vec<String>> = query
        .types
        .map(|types| types.split(',').map(|t| t.trim().to_owned()).collect());
    let receiver = admin.events.subscribe();
    let stream = futures_util::stream::unfold((receiver, wanted), |(mut receiver, wanted)| async {
        loop {
            let event = match receiver.recv().await {
                Ok(event) => event,
                Err(RecvError::Lagged(missed)) => {
                    let lost = Event::default()
                        .event("events.lost")
                        .data(json!({ "missed": missed }).to_string());
                    return Some((Ok::<_, std::convert::Infallible>(lost), (receiver, wanted)));
                }
                Err(RecvError::Closed) => return None,
            };
            let name = event.what.name();
            if wanted
                .as_ref()
                .is_some_and(|w| !w.iter().any(|t| t == name))
            {
                continue;
            }
            let data = serde_json::to_string(&*event).unwrap_or_default();
            let sse = Event::default()
                .event(name)
                .id(event.id.to_string())
                .data(data);
            return Some((Ok(sse), (receiver, wanted)));
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[derive(Serialize, ToSchema)]
struct Health {
    /// `ok`, `draining` (SIGTERM: new calls get 503) or `stopping`.
    status: &'static str,
    live_calls: Option<usize>,
    version: &'static str,
    uptime_s: u64,
}

#[utoipa::path(get, path = "/api/health", tag = "live",
    responses((status = 200, body = Health)))]
async fn health(State(admin): State<Arc<Admin>>) -> Json<Health> {
    let (status, live_calls) = match admin.core.health().await {
        Some(health) if health.draining => ("draining", Some(health.live_calls)),
        Some(health) => ("ok", Some(health.live_calls)),
        None => ("stopping", None),
    };
    Json(Health {
        status,
        live_calls,
        version: env!("CARGO_PKG_VERSION"),
        uptime_s: admin.started.elapsed().as_secs(),
    })
}

#[utoipa::path(get, path = "/api/registrations", tag = "live",
    responses((status = 200, description = "Registered devices: user, device name, \
        contact, transport, source, expiry, `registered_with` (`node`); with an edge also \
        the phones registered there (`registered_with`: `edge`, `edge`: the edge they are \
        reached through), as the last heartbeat read them", body = [Object]),
        (status = 503, body = ErrorBody)))]
async fn registrations(State(admin): State<Arc<Admin>>) -> ApiResult<Json<Value>> {
    let registrations = admin
        .core
        .registrations()
        .await
        .ok_or_else(ApiError::core_stopped)?;
    let here = registrations.here.iter().map(|binding| {
        let mut entry = json!(binding);
        entry["registered_with"] = json!("node");
        entry
    });
    // The edge keeps their transport, source and expiry; the node knows the contact
    // and which edge it rings them through.
    let behind_edge = registrations.behind_edge.iter().map(|phone| {
        json!({
            "user_id": phone.user_id,
            "device": phone.device,
            "contact": phone.contact,
            "instance": phone.instance,
            "user_agent": phone.user_agent,
            "registered_with": "edge",
            "edge": phone.source,
        })
    });
    Ok(Json(Value::Array(here.chain(behind_edge).collect())))
}

#[utoipa::path(get, path = "/api/trunks", tag = "live",
    responses((status = 200, description = "Each trunk's targets and their health, and its \
        registration with the carrier", body = [Object]),
        (status = 503, body = ErrorBody)))]
async fn trunks(State(admin): State<Arc<Admin>>) -> ApiResult<Json<Value>> {
    let trunks = admin
        .core
        .trunks()
        .await
        .ok_or_else(ApiError::core_stopped)?;
    Ok(Json(json!(trunks)))
}

#[utoipa::path(get, path = "/api/calls", tag = "live",
    responses((status = 200, description = "Live calls (`session`: the call's UUID; \
        `state`: routing, engaged, forwarding, connected)", body = [Object]),
        (status = 503, body = ErrorBody)))]
async fn calls(State(admin): State<Arc<Admin>>) -> ApiResult<Json<Value>> {
    let calls = admin
        .core
        .calls()
        .await
        .ok_or_else(ApiError::core_stopped)?;
    Ok(Json(json!(calls)))
}

/// A live call's id from the path.
fn session(path: Result<Path<String>, PathRejection>) -> ApiResult<SessionId> {
    let Path(id) = path?;
    id.parse()
        .map_err(|_| ApiError::not_found("no such call (a call's id is its UUID)"))
}

/// The devices to ring; none named: all of the user's other devices.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)] // documents the body flip_targets reads
struct FlipBody {
    targets: Option<Vec<String>>,
}

#[utoipa::path(post, path = "/api/calls/{id}/flip", tag = "live",
    params(("id" = String, Path, description = "The call's session id (UUID)")),
    request_body(content = Option<FlipBody>, description = "Optional: the devices to ring"),
    responses(
        (status = 202, description = "The flip-policy script is asked, then the devices ring", body = Object),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn flip(
    State(admin): State<Arc<Admin>>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let session = session(path)?;
    let targets = flip_targets(&body?).ok_or_else(|| {
        ApiError::bad_request("send nothing, or {\"targets\": [\"device name\", ...]}")
    })?;
    match admin.core.flip(session, targets).await {
        Some(Ok(())) => Ok((
            StatusCode::ACCEPTED,
            Json(
                json!({ "session": session, "flip": "asking the policy, then ringing the user's other devices" }),
            ),
        )),
        Some(Err((code, reason))) => Err(ApiError::new(
            match code {
                404 => StatusCode::NOT_FOUND,
                403 => StatusCode::FORBIDDEN,
                _ => StatusCode::CONFLICT,
            },
            reason,
        )),
        None => Err(ApiError::core_stopped()),
    }
}

/// An engine's word on a live call.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)] // documents the body call_event reads
struct EventBody {
    /// e.g. `intent`
    name: String,
    /// e.g. `billing`
    value: String,
    /// 0 to 1
    confidence: Option<f64>,
}

#[utoipa::path(post, path = "/api/calls/{id}/events", tag = "live",
    params(("id" = String, Path, description = "The call's session id (UUID)")),
    request_body = EventBody,
    responses(
        (status = 202, description = "Delivered to the call's script and kept in its record", body = Object),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody)))]
async fn call_event(
    State(admin): State<Arc<Admin>>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let session = session(path)?;
    let event = parse_call_event(&body?).map_err(ApiError::bad_request)?;
    let name = event.name.clone();
    match admin.core.call_event(session, event).await {
        Some(Ok(())) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "session": session, "event": name })),
        )),
        Some(Err((code, reason))) => Err(ApiError::new(
            match code {
                429 => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::NOT_FOUND,
            },
            reason,
        )),
        None => Err(ApiError::core_stopped()),
    }
}

/// An event for a call: `{"name": "intent", "value": "billing", "confidence": 0.92}`
/// (`confidence` optional), or why not.
fn parse_call_event(body: &[u8]) -> Result<crate::driver::CallEventRequest, String> {
    let shape = "send {\"name\": \"intent\", \"value\": \"billing\", \"confidence\": 0.9}";
    let value: Value = serde_json::from_slice(body).map_err(|_| shape.to_owned())?;
    let (Some(name), Some(text)) = (value["name"].as_str(), value["value"].as_str()) else {
        return Err(shape.into());
    };
    let confidence = match &value["confidence"] {
        Value::Null => None,
        c => Some(c.as_f64().ok_or("confidence: a number from 0 to 1")?),
    };
    wasmpbx_types::record::CallEvent::check(name, text, confidence)?;
    Ok(crate::driver::CallEventRequest {
        name: name.to_owned(),
        value: text.to_owned(),
        confidence,
    })
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct IntentsQuery {
    /// Calls that started at or after this time (RFC 3339); default: the last 24 hours.
    since: Option<String>,
}

#[utoipa::path(get, path = "/api/intents/{location}", tag = "records",
    params(("location" = String, Path), IntentsQuery),
    responses(
        (status = 200, description = "Calls by intent, in total and by hour", body = Object),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn intents(
    State(admin): State<Arc<Admin>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<IntentsQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let (Path(location), Query(query)) = (path?, query?);
    known_location(&admin, &location)?;
    let now = crate::clock::Clock::now(&crate::clock::SystemClock);
    let since = match query.since {
        None => now - jiff::SignedDuration::from_hours(24),
        Some(text) => text.parse::<jiff::Timestamp>().map_err(|_| {
            ApiError::bad_request("since: an RFC 3339 time, e.g. 2026-12-05T00:00:00Z")
        })?,
    };
    admin.store_progress.settle(SETTLE).await;
    // A day of records can be many: counted off the async threads.
    let (cdrs, place) = (admin.cdrs.clone(), location.clone());
    let counts = tokio::task::spawn_blocking(move || cdrs.intents(Some(&place), since))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(Json(intents_summary(&location, since, &counts)))
}

/// `GET /api/intents/{location}`: the counts by intent over the whole period, and by
/// hour.
fn intents_summary(
    location: &str,
    since: jiff::Timestamp,
    counts: &[wasmpbx_types::record::IntentCount],
) -> Value {
    let mut by_intent = BTreeMap::<&str, u64>::new();
    let mut by_hour = BTreeMap::<&str, BTreeMap<&str, u64>>::new();
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

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct CdrsQuery {
    /// How many records (default 50, at most 10 000).
    limit: Option<usize>,
    /// Calls that started at or after this time (RFC 3339).
    since: Option<String>,
    /// Calls that started before this time (RFC 3339).
    until: Option<String>,
    location: Option<String>,
    /// The caller's number or extension, exactly.
    caller: Option<String>,
    /// `answered`, `abandoned` or `failed`.
    disposition: Option<String>,
    /// Calls with a flip (`true`) or without (`false`).
    flipped: Option<bool>,
    /// The next page: the records after this session (the last one of the page before).
    after: Option<String>,
}

/// A handler's call to the store. It may wait on a database (PostgreSQL: a round trip,
/// or its connect timeout while the database is away), so the runtime hands this
/// worker's other tasks — the SIP core's among them — to another worker meanwhile.
fn blocking<T>(call: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(call)
}

fn time_param(name: &str, text: Option<String>) -> ApiResult<Option<jiff::Timestamp>> {
    text.map(|t| {
        t.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "{name}: an RFC 3339 time, e.g. 2026-12-05T00:00:00Z"
            ))
        })
    })
    .transpose()
}

#[utoipa::path(get, path = "/api/cdrs", tag = "records",
    params(CdrsQuery),
    responses(
        (status = 200, description = "Call records, the last call to start first (live ones \
            too, `state` live). For the next page, pass the last record's `session` as `after`.",
            body = [Object]),
        (status = 400, body = ErrorBody)))]
async fn cdrs(
    State(admin): State<Arc<Admin>>,
    query: Result<Query<CdrsQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(query) = query?;
    if let Some(d) = &query.disposition
        && !crate::metrics::DISPOSITIONS.contains(&d.as_str())
    {
        return Err(ApiError::bad_request(
            "disposition: answered, abandoned or failed",
        ));
    }
    let query = crate::store::CdrQuery {
        limit: query.limit.unwrap_or(50).min(10_000),
        since: time_param("since", query.since)?,
        until: time_param("until", query.until)?,
        location: query.location,
        caller: query.caller,
        disposition: query.disposition,
        flipped: query.flipped,
        after: query.after,
    };
    // The records of calls that have ended are queued for the store: wait for them
    // (briefly), so a call gone from /api/calls is here.
    admin.store_progress.settle(SETTLE).await;
    if let Some(after) = &query.after
        && blocking(|| admin.cdrs.cdr(after))
            .map_err(ApiError::internal)?
            .is_none()
    {
        return Err(ApiError::bad_request(format!("after: no record {after}")));
    }
    let records = blocking(|| admin.cdrs.cdrs(&query)).map_err(ApiError::internal)?;
    Ok(Json(Value::Array(records)))
}

#[utoipa::path(get, path = "/api/cdrs/{id}", tag = "records",
    params(("id" = String, Path, description = "The call's session id (UUID)")),
    responses(
        (status = 200, description = "The call's record", body = Object),
        (status = 404, body = ErrorBody)))]
async fn cdr(
    State(admin): State<Arc<Admin>>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let Path(id) = path?;
    admin.store_progress.settle(SETTLE).await;
    match blocking(|| admin.cdrs.cdr(&id)).map_err(ApiError::internal)? {
        Some(record) => Ok(Json(record)),
        None => Err(ApiError::not_found(format!("no record {id}"))),
    }
}

#[utoipa::path(get, path = "/api/recordings/{id}", tag = "records",
    params(("id" = String, Path, description = "The call's session id (UUID)")),
    responses(
        (status = 200, description = "The call's recording (stereo WAV: the caller left, the \
            other side right)", content_type = "audio/wav"),
        (status = 206, description = "The part a `Range` header asked for"),
        (status = 404, body = ErrorBody)))]
async fn recording(
    State(admin): State<Arc<Admin>>,
    path: Result<Path<String>, PathRejection>,
    request: axum::extract::Request,
) -> ApiResult<axum::response::Response> {
    use crate::recordings;
    use tower::ServiceExt as _;
    let Path(id) = path?;
    admin.store_progress.settle(SETTLE).await;
    let record = blocking(|| admin.cdrs.cdr(&id))
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("no record {id}")))?;
    if record["recording"].is_null() {
        return Err(ApiError::not_found(format!("call {id} was not recorded")));
    }
    let dir = admin.config().media.recordings.clone();
    let file = recordings::finished_file_of(&record, &dir, recordings::FINISHING)
        .await
        .map_err(|being_written| {
            ApiError::not_found(match being_written {
                true => format!("the recording of call {id} is still being written"),
                false => {
                    format!("the recording of call {id} is gone (media.recordings_retention_days?)")
                }
            })
        })?;
    let served = tower_http::services::ServeFile::new_with_mime(
        file,
        &"audio/wav".parse().expect("a MIME type"),
    )
    .oneshot(request)
    .await
    .map_err(ApiError::internal)?;
    Ok(served.map(axum::body::Body::new))
}

#[utoipa::path(get, path = "/api/scripts", tag = "scripts",
    responses((status = 200, description = "Scripts: hash, loaded at, exports, size, compile \
        time, last error, and the serving version's decisions and fallbacks since start",
        body = [Object])))]
async fn scripts(State(admin): State<Arc<Admin>>) -> Json<Value> {
    let counted = admin.scripts.metrics.snapshot();
    let scripts: Vec<Value> = admin
        .scripts
        .registry
        .status()
        .into_iter()
        .map(|status| {
            let serving = counted
                .versions
                .iter()
                .find(|v| v.script == status.name && Some(&v.version) == status.hash.as_ref());
            let mut entry = json!(status);
            entry["decisions"] = json!(serving.map_or(0, |v| v.decisions));
            entry["fallbacks"] = json!(serving.map_or(0, |v| v.fallbacks.iter().sum::<u64>()));
            entry
        })
        .collect();
    Json(Value::Array(scripts))
}

#[utoipa::path(get, path = "/api/cluster", tag = "scripts",
    responses((status = 200, description = "The nodes sharing the store: each one's last \
        status (up, draining, live calls, the script versions it serves), and the scripts \
        the nodes that are up do not all serve the same", body = crate::cluster::ClusterView),
        (status = 500, body = ErrorBody)))]
async fn cluster(State(admin): State<Arc<Admin>>) -> ApiResult<Json<crate::cluster::ClusterView>> {
    let nodes = blocking(|| admin.cluster.nodes()).map_err(ApiError::internal)?;
    let now = crate::clock::Clock::now(admin.scripts.services.clock.as_ref());
    let config = admin.config();
    let this = config.cluster.name();
    admin.owners.learn(this, &nodes, now);
    Ok(Json(crate::cluster::view(this, nodes, now)))
}

#[derive(Serialize, ToSchema)]
struct LocationView {
    name: String,
    flip_number: String,
    script: String,
    fallback_number: String,
    /// The `override` key-value entry: `closed` (night mode), `open`, or none (the
    /// hours decide).
    #[serde(rename = "override")]
    override_value: Option<String>,
    /// When the override goes on its own, if it does.
    override_expires_at: Option<String>,
    /// The shadow script run beside `script` (`GET /api/shadow/{name}`), if any.
    shadow: Option<String>,
}

#[utoipa::path(get, path = "/api/locations", tag = "toggles",
    responses((status = 200, body = [LocationView])))]
async fn locations(State(admin): State<Arc<Admin>>) -> ApiResult<Json<Vec<LocationView>>> {
    let config = admin.config();
    let mut views = Vec::new();
    for location in &config.locations {
        views.push(LocationView {
            name: location.name.clone(),
            flip_number: location.flip_number.clone(),
            script: location.script.clone(),
            fallback_number: location.fallback_number.clone(),
            override_value: blocking(|| admin.kv.get(&location.name, "override"))
                .map_err(ApiError::internal)?,
            override_expires_at: blocking(|| admin.kv.expires_at(&location.name, "override"))
                .map_err(ApiError::internal)?
                .map(|at| at.to_string()),
            shadow: admin.journal.choices.of(location),
        });
    }
    Ok(Json(views))
}

#[derive(Deserialize, ToSchema)]
struct ShadowBody {
    /// The script to run as the location's shadow; null: none (whatever the config says).
    script: Option<String>,
}

#[utoipa::path(put, path = "/api/locations/{name}/shadow", tag = "shadow",
    params(("name" = String, Path)),
    request_body(content = ShadowBody, description = "`{\"script\": \"front-door\"}`, or \
        `{\"script\": null}` for no shadow"),
    responses(
        (status = 200, body = Object),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn shadow_set(
    State(admin): State<Arc<Admin>>,
    Extension(Peer(peer)): Extension<Peer>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let Path(location) = path?;
    known_location(&admin, &location)?;
    let body: ShadowBody = serde_json::from_slice(&body?).map_err(|_| {
        ApiError::bad_request("the body is {\"script\": NAME} or {\"script\": null}")
    })?;
    let choice = match body.script {
        Some(script) if crate::config::is_script_name(&script) => {
            crate::shadow::Choice::Script(script)
        }
        Some(script) => {
            return Err(ApiError::bad_request(format!(
                "{script:?} is not a script name (letters, digits, '-' and '_')"
            )));
        }
        None => crate::shadow::Choice::Off,
    };
    change_shadow(&admin, peer, &location, choice)
}

#[utoipa::path(delete, path = "/api/locations/{name}/shadow", tag = "shadow",
    params(("name" = String, Path)),
    responses((status = 200, description = "The API's choice is gone: the config's \
        `shadow` applies again", body = Object), (status = 404, body = ErrorBody)))]
async fn shadow_reset(
    State(admin): State<Arc<Admin>>,
    Extension(Peer(peer)): Extension<Peer>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let Path(location) = path?;
    known_location(&admin, &location)?;
    change_shadow(&admin, peer, &location, crate::shadow::Choice::Reset)
}

/// Make the choice, note it in the audit log (key `shadow`), and say what applies now.
fn change_shadow(
    admin: &Admin,
    peer: std::net::SocketAddr,
    location: &str,
    choice: crate::shadow::Choice,
) -> ApiResult<Json<Value>> {
    let config = admin.config();
    let of = |admin: &Admin| {
        config
            .location(location)
            .and_then(|l| admin.journal.choices.of(l))
    };
    let old = of(admin);
    let action = match choice {
        crate::shadow::Choice::Reset => "reset",
        _ => "set",
    };
    blocking(|| admin.journal.choices.choose(location, choice)).map_err(ApiError::internal)?;
    let now = crate::clock::Clock::now(&crate::clock::SystemClock);
    let shadow = of(admin);
    audit(
        admin,
        peer,
        now,
        action,
        location,
        "shadow",
        old,
        shadow.clone(),
        None,
    )?;
    tracing::info!(
        location,
        shadow = shadow.as_deref().unwrap_or("none"),
        "admin set a location's shadow script"
    );
    Ok(Json(json!({ "location": location, "shadow": shadow })))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ShadowQuery {
    /// Only events at or after this time (RFC 3339).
    since: Option<String>,
}

#[utoipa::path(get, path = "/api/shadow/{location}", tag = "shadow",
    params(("location" = String, Path), ShadowQuery),
    responses(
        (status = 200, description = "The shadow report: the location's serving and shadow \
            scripts now, events dropped because the decision journal's queue was full (since start), and \
            per (serving version, shadow version), newest first: events compared, agreed, \
            diverged and faulted (the shadow failed); divergences grouped by (serving actions → shadow \
            actions), most frequent first, and faults by message, each with example sessions \
            (`GET /api/cdrs/{id}`); the counts by hour (UTC)", body = Object),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn shadow_report(
    State(admin): State<Arc<Admin>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ShadowQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let (Path(location), Query(query)) = (path?, query?);
    let config = admin.config();
    let Some(place) = config.location(&location) else {
        return Err(ApiError::not_found(format!("no such location: {location}")));
    };
    let since = query
        .since
        .map(|s| s.parse::<jiff::Timestamp>())
        .transpose()
        .map_err(|_| ApiError::bad_request("since: an RFC 3339 time"))?;
    let results = {
        let (store, location) = (admin.shadow_results.clone(), location.clone());
        tokio::task::spawn_blocking(move || store.shadow_results(&location, since))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)?
    };
    let dropped = admin
        .journal
        .counters
        .dropped
        .load(std::sync::atomic::Ordering::Relaxed);
    Ok(Json(json!({
        "location": location,
        "script": place.script,
        "shadow": admin.journal.choices.of(place),
        "dropped": dropped,
        "pairs": crate::shadow::report(&results),
    })))
}

fn known_location(admin: &Admin, location: &str) -> ApiResult<()> {
    match admin.config().location(location) {
        Some(_) => Ok(()),
        None => Err(ApiError::not_found(format!("no such location: {location}"))),
    }
}

#[utoipa::path(get, path = "/api/kv/{location}", tag = "toggles",
    params(("location" = String, Path)),
    responses(
        (status = 200, description = "The location's key-value entries", body = BTreeMap<String, String>),
        (status = 404, body = ErrorBody)))]
async fn kv_list(
    State(admin): State<Arc<Admin>>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<BTreeMap<String, String>>> {
    let Path(location) = path?;
    known_location(&admin, &location)?;
    let entries = blocking(|| admin.kv.list(&location)).map_err(ApiError::internal)?;
    Ok(Json(entries.into_iter().collect()))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ExpiryQuery {
    /// The entry goes on its own after this many seconds (1 to 31 536 000).
    ttl_s: Option<u64>,
    /// The entry goes on its own at this time (RFC 3339, in the future).
    expires_at: Option<String>,
}

/// What a PUT sets: the value and when it expires, from the body (text, or `{"value",
/// "ttl_s", "expires_at"}`) and the query.
fn kv_put(
    body: &[u8],
    query: ExpiryQuery,
    now: jiff::Timestamp,
) -> ApiResult<(String, Option<jiff::Timestamp>)> {
    let shape = "send the value as text or as {\"value\": \"...\", \"ttl_s\": 3600}";
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request(shape))?
        .trim();
    let (value, ttl_s, expires_at) = if text.starts_with('{') {
        let json: Value = serde_json::from_str(text).map_err(|_| ApiError::bad_request(shape))?;
        let value = json["value"]
            .as_str()
            .ok_or_else(|| ApiError::bad_request(shape))?;
        let ttl = match &json["ttl_s"] {
            Value::Null => query.ttl_s,
            t => Some(
                t.as_u64()
                    .ok_or_else(|| ApiError::bad_request("ttl_s: whole seconds"))?,
            ),
        };
        let at = match &json["expires_at"] {
            Value::Null => query.expires_at,
            at => Some(at.as_str().map(str::to_owned).ok_or_else(|| {
                ApiError::bad_request("expires_at: an RFC 3339 time as a string")
            })?),
        };
        (value.to_owned(), ttl, at)
    } else {
        (text.to_owned(), query.ttl_s, query.expires_at)
    };
    const YEAR_S: u64 = 365 * 86_400;
    let expires_at = match (ttl_s, expires_at) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request("give ttl_s or expires_at, not both"));
        }
        (Some(ttl), None) if (1..=YEAR_S).contains(&ttl) => {
            Some(now + jiff::SignedDuration::from_secs(ttl as i64))
        }
        (Some(_), None) => return Err(ApiError::bad_request("ttl_s: 1 to 31536000 seconds")),
        (None, Some(at)) => {
            let at: jiff::Timestamp = at.parse().map_err(|_| {
                ApiError::bad_request(
                    "expires_at: an RFC 3339 time, e.g. 2026-12-06T14:00:00+11:00",
                )
            })?;
            if at <= now {
                return Err(ApiError::bad_request("expires_at: must be in the future"));
            }
            Some(at)
        }
        (None, None) => None,
    };
    Ok((value, expires_at))
}

#[utoipa::path(put, path = "/api/kv/{location}/{key}", tag = "toggles",
    params(("location" = String, Path), ("key" = String, Path), ExpiryQuery),
    request_body(content = String, description = "The value, as text or `{\"value\": \"…\", \
        \"ttl_s\": 3600}` (or `\"expires_at\"`): e.g. `closed` for an hour"),
    responses(
        (status = 200, body = Object),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn kv_set(
    State(admin): State<Arc<Admin>>,
    Extension(Peer(peer)): Extension<Peer>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<ExpiryQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let (Path((location, key)), Query(query)) = (path?, query?);
    known_location(&admin, &location)?;
    let now = crate::clock::Clock::now(&crate::clock::SystemClock);
    let (value, expires_at) = kv_put(&body?, query, now)?;
    let old = blocking(|| admin.kv.get(&location, &key)).map_err(ApiError::internal)?;
    blocking(|| admin.kv.set_until(&location, &key, &value, expires_at))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    audit(
        &admin,
        peer,
        now,
        "set",
        &location,
        &key,
        old,
        Some(value),
        expires_at,
    )?;
    tracing::info!(location, key, ?expires_at, "admin set a key-value entry");
    Ok(Json(
        json!({ "location": location, "key": key, "expires_at": expires_at }),
    ))
}

#[utoipa::path(delete, path = "/api/kv/{location}/{key}", tag = "toggles",
    params(("location" = String, Path), ("key" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody)))]
async fn kv_delete(
    State(admin): State<Arc<Admin>>,
    Extension(Peer(peer)): Extension<Peer>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let Path((location, key)) = path?;
    known_location(&admin, &location)?;
    let old = blocking(|| admin.kv.get(&location, &key)).map_err(ApiError::internal)?;
    blocking(|| admin.kv.delete(&location, &key))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if old.is_some() {
        let now = crate::clock::Clock::now(&crate::clock::SystemClock);
        audit(
            &admin, peer, now, "delete", &location, &key, old, None, None,
        )?;
    }
    tracing::info!(location, key, "admin deleted a key-value entry");
    Ok(Json(json!({ "location": location, "key": key })))
}

/// Note an admin's change in the audit log.
#[allow(clippy::too_many_arguments)]
fn audit(
    admin: &Admin,
    peer: std::net::SocketAddr,
    at: jiff::Timestamp,
    action: &str,
    location: &str,
    key: &str,
    old: Option<String>,
    value: Option<String>,
    expires_at: Option<jiff::Timestamp>,
) -> ApiResult<()> {
    let entry = crate::store::AuditEntry {
        at,
        who: format!("api {}", peer.ip()),
        action: action.into(),
        scope: location.into(),
        key: key.into(),
        old,
        value,
        expires_at,
    };
    blocking(|| admin.kv.audit(&entry)).map_err(ApiError::internal)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    /// How many entries (default 100, at most 10 000).
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/audit", tag = "toggles",
    params(AuditQuery),
    responses((status = 200, description = "Changes to the key-value entries, newest \
        first: when, who (`api <address>` or `expiry`), set / delete / expired, the \
        location and key, the old and new value, the expiry", body = [Object])))]
async fn audit_log(
    State(admin): State<Arc<Admin>>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(100).min(10_000);
    let log = blocking(|| admin.kv.audit_log(limit)).map_err(ApiError::internal)?;
    Ok(Json(json!(log)))
}

/// The devices a flip request names: an empty body (any), or `{"targets": [...]}`.
fn flip_targets(body: &[u8]) -> Option<Vec<String>> {
    let text = std::str::from_utf8(body).ok()?.trim();
    if text.is_empty() {
        return Some(Vec::new());
    }
    let value: Value = serde_json::from_str(text).ok()?;
    match value.get("targets") {
        None => Some(Vec::new()),
        Some(targets) => targets
            .as_array()?
            .iter()
            .map(|t| t.as_str().map(str::to_owned))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_bodies_and_expiries() {
        let now = jiff::Timestamp::from_second(1_790_000_000).unwrap();
        let none = || ExpiryQuery {
            ttl_s: None,
            expires_at: None,
        };
        let put = |body: &[u8], query| kv_put(body, query, now).map_err(|e| e.message);
        assert_eq!(put(b"closed", none()), Ok(("closed".into(), None)));
        assert_eq!(
            put(b"{\"value\": \"open\"}", none()),
            Ok(("open".into(), None))
        );
        let hour = now + jiff::SignedDuration::from_hours(1);
        assert_eq!(
            put(b"{\"value\": \"closed\", \"ttl_s\": 3600}", none()),
            Ok(("closed".into(), Some(hour)))
        );
        let by_query = ExpiryQuery {
            ttl_s: Some(3600),
            expires_at: None,
        };
        assert_eq!(put(b"closed", by_query), Ok(("closed".into(), Some(hour))));
        let at = ExpiryQuery {
            ttl_s: None,
            expires_at: Some(hour.to_string()),
        };
        assert_eq!(put(b"closed", at), Ok(("closed".into(), Some(hour))));
        for (body, query, why) in [
            (&b"{\"nope\": 1}"[..], none(), "send the value"),
            // A number is not a time: refused, not taken for "never".
            (
                &b"{\"value\": \"closed\", \"expires_at\": 1790003600}"[..],
                none(),
                "expires_at",
            ),
            (&[0xff][..], none(), "send the value"),
            (
                b"closed",
                ExpiryQuery {
                    ttl_s: Some(0),
                    expires_at: None,
                },
                "ttl_s",
            ),
            (
                b"closed",
                ExpiryQuery {
                    ttl_s: None,
                    expires_at: Some("2000-01-01T00:00:00Z".into()),
                },
                "future",
            ),
            (
                b"closed",
                ExpiryQuery {
                    ttl_s: Some(5),
                    expires_at: Some(hour.to_string()),
                },
                "not both",
            ),
        ] {
            let err = put(body, query).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn the_document_lists_every_route_with_its_methods() {
        let doc = serde_json::to_value(openapi()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for (path, method) in [
            ("/api/health", "get"),
            ("/api/calls/{id}/flip", "post"),
            ("/api/kv/{location}/{key}", "put"),
            ("/api/kv/{location}/{key}", "delete"),
            ("/api/openapi.json", "get"),
            ("/api/cluster", "get"),
        ] {
            assert!(paths[path][method].is_object(), "{method} {path}");
        }
        assert_eq!(doc["openapi"].as_str().map(|v| &v[..2]), Some("3."));
    }
}
