//! The tenant administrators' JSON API under `/api/v1/`. Every handler takes a [`Caller`]
//! and reads or writes only the caller's tenant; an id of another tenant is simply not found.
//! The writes take a [`Writer`](super::Writer) instead: the caller, held to the
//! per-administrator rate limit.
//!
//! By subject: `sessions` (list, read, revoke one), `users` (revoke-all and lock, blocked
//! users, lifting), `audit`, `policy`; the SSE stream is `admin::events`. The shapes shown
//! are in `admin::views`; this module keeps the routes and what every handler uses: body,
//! query and path checks, the reason of a write, paging and idempotency keys.

mod audit;
mod overview;
mod policy;
mod sessions;
mod users;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use grantflow_core::identity::is_safe_id;
use grantflow_core::revocation::RevocationOutcome;
use grantflow_core::text;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::caller::Caller;
use super::problem::Problem;
use super::{AdminState, events};
use audit::list_audit;
use policy::{get_policy, put_policy};
use sessions::{get_session, list_sessions, revoke_session};
use users::{lift_revocation, list_blocked, revoke_user};

/// The OpenAPI 3.1 document of this API (served at `/api/v1/openapi.json`). A test holds it
/// to [`API_ROUTES`] and [`API_ROUTES`] to the router, both ways.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// Every API operation, as (method, OpenAPI path).
pub const API_ROUTES: &[(&str, &str)] = &[
    ("get", "/api/v1/openapi.json"),
    ("get", "/api/v1/me"),
    ("get", "/api/v1/sessions"),
    ("get", "/api/v1/sessions/{id}"),
    ("post", "/api/v1/sessions/{id}/revoke"),
    ("post", "/api/v1/users/{user}/revoke"),
    ("delete", "/api/v1/users/{user}/revocation"),
    ("get", "/api/v1/blocked-users"),
    ("get", "/api/v1/audit"),
    ("get", "/api/v1/policy"),
    ("put", "/api/v1/policy"),
    ("get", "/api/v1/events"),
    ("get", "/api/v1/overview"),
];

/// Page sizes.
pub(super) const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 500;
/// Audit records read from the store to filter and page through (the memory store keeps
/// 10,000 per tenant).
pub(super) const AUDIT_WINDOW: usize = 10_000;
/// Longest reason accepted, in characters.
const MAX_REASON_CHARS: usize = 500;
/// Largest request body accepted (the bodies are a reason and a few fields; axum's default
/// would be 2 MB): 413 `body-too-large` beyond it.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/me", get(me))
        .route("/api/v1/sessions", get(list_sessions))
        .route("/api/v1/sessions/{id}", get(get_session))
        .route("/api/v1/sessions/{id}/revoke", post(revoke_session))
        .route("/api/v1/users/{user}/revoke", post(revoke_user))
        .route("/api/v1/users/{user}/revocation", delete(lift_revocation))
        .route("/api/v1/blocked-users", get(list_blocked))
        .route("/api/v1/audit", get(list_audit))
        .route("/api/v1/policy", get(get_policy).put(put_policy))
        .route("/api/v1/events", get(events::stream))
        .route("/api/v1/overview", get(overview::overview))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        // Every error of the API is a problem document, the framework's own (405, 413, …)
        // included.
        .route_layer(axum::middleware::from_fn(
            super::problem::errors_as_problems,
        ))
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

pub(super) fn json_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, Problem> {
    if body.is_empty() {
        return Err(Problem::bad_request("Send a JSON object as the body."));
    }
    serde_json::from_slice(body).map_err(|e| {
        Problem::bad_request(
            "The body is not a JSON object this call takes; see /api/v1/openapi.json.",
        )
        .with_parser(e.to_string())
    })
}

pub(super) fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, Problem> {
    query.map(|Query(q)| q).map_err(|e| {
        Problem::bad_request("The query is not one this call takes; see /api/v1/openapi.json.")
            .with_parser(e.body_text())
    })
}

/// A path id: anything that is not a possible id is simply not found.
pub(super) fn path_id(
    path: Result<Path<String>, PathRejection>,
    what: &str,
) -> Result<String, Problem> {
    match path {
        Ok(Path(id)) if is_safe_id(&id) => Ok(id),
        _ => Err(Problem::not_found(format!("No such {what}."))),
    }
}

/// The required reason of a write, as the audit trail keeps it: trimmed, control characters
/// made spaces and Unicode format characters (bidi overrides, zero-width characters) removed,
/// so what an administrator reads later is what was typed, on one line.
pub(super) fn reason(reason: Option<String>) -> Result<String, Problem> {
    let reason = text::clean(&reason.unwrap_or_default(), usize::MAX);
    if reason.is_empty() {
        return Err(Problem::bad_request(
            "A reason is required (it is written to the audit trail).",
        ));
    }
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(Problem::bad_request(format!(
            "The reason is longer than {MAX_REASON_CHARS} characters."
        )));
    }
    Ok(reason)
}

pub(super) fn page(limit: Option<usize>, default: usize) -> Result<usize, Problem> {
    match limit.unwrap_or(default) {
        0 => Err(Problem::bad_request("limit must be at least 1.")),
        n => Ok(n.min(MAX_PAGE)),
    }
}

/// One page of `items`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Page<T> {
    items: Vec<T>,
    /// Items matching the filters, across all pages.
    total: usize,
    offset: usize,
    limit: usize,
    /// The `offset` of the next page, when there is one.
    next_offset: Option<usize>,
}

impl<T> Page<T> {
    pub(super) fn of(all: Vec<T>, offset: usize, limit: usize) -> Self {
        let total = all.len();
        let items: Vec<T> = all.into_iter().skip(offset).take(limit).collect();
        let end = offset.saturating_add(items.len());
        Page {
            items,
            total,
            offset,
            limit,
            next_offset: (end < total).then_some(end),
        }
    }
}

// --- me ------------------------------------------------------------------------------------

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Me {
    tenant: String,
    user: String,
    display_name: Option<String>,
    session: String,
    roles: Vec<String>,
}

async fn me(caller: Caller) -> Json<Me> {
    let id = &caller.identity;
    Json(Me {
        tenant: id.tenant.clone(),
        user: id.user.clone(),
        display_name: id.display_name.clone(),
        session: id.session.id.clone(),
        roles: id.roles.clone(),
    })
}

/// The header that marks the stored answer of an earlier request with the same
/// `Idempotency-Key`.
const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// The caller-scoped idempotency key of a write: two administrators can never collide, and
/// the same administrator reaches the same key through the dashboard and the API.
pub(super) fn idempotency_key(
    headers: &HeaderMap,
    caller: &Caller,
) -> Result<Option<String>, Problem> {
    match headers.get("idempotency-key").map(|v| v.to_str()) {
        None => Ok(None),
        Some(Ok(key)) if is_safe_id(key) => Ok(Some(format!("api:{}:{key}", caller.identity.user))),
        Some(_) => Err(Problem::bad_request(
            "Idempotency-Key must be 1-128 characters of A-Z a-z 0-9 . _ : @ -.",
        )),
    }
}

/// A revocation's answer; a replay carries `Idempotent-Replayed: true`.
pub(super) fn revocation_answer(outcome: &RevocationOutcome, body: impl Serialize) -> Response {
    let mut response = Json(body).into_response();
    if outcome.replayed {
        response.headers_mut().insert(
            HeaderName::from_static(IDEMPOTENT_REPLAYED),
            HeaderValue::from_static("true"),
        );
    }
    response
}
