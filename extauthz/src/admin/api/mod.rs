//! The tenant administrators' JSON API under `/api/v1/`. Every handler takes a [`Caller`]
//! and reads or writes only the caller's tenant; an id of another tenant is simply not found.
//! The writes take a [`Writer`] instead: the caller, held to the per-administrator rate limit.

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use grantflow_core::audit::{Action, AuditRecord, Target, new_audit_id};
use grantflow_core::clock::{UnixMillis, rfc3339};
use grantflow_core::identity::is_safe_id;
use grantflow_core::policy::{
    MAX_MAX_SESSION_AGE, MIN_MAX_SESSION_AGE, Policy, PolicySource, check_max_age,
};
use grantflow_core::revocation::{BlockedUser, Revocation, RevocationOutcome, RevocationTarget};
use grantflow_core::session::SessionRecord;
use grantflow_core::store::StoreError;
use grantflow_core::text;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::caller::Caller;
use super::problem::Problem;
use super::rate_limit::Writer;
use super::{ADMIN_STORE_TIMEOUT, AdminState, events};

/// The OpenAPI 3.1 document of this API (served at `/api/v1/openapi.json`). A test holds it
/// to [`API_ROUTES`] and [`API_ROUTES`] to the router, both ways.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

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
];

/// Page sizes.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 500;
/// Audit records read from the store to filter and page through (the memory store keeps
/// 10,000 per tenant).
const AUDIT_WINDOW: usize = 10_000;
/// Longest reason accepted, in characters.
const MAX_REASON_CHARS: usize = 500;

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
        // Every error of the API is a problem document, the framework's own (405, 413, …)
        // included.
        .route_layer(axum::middleware::from_fn(
            super::problem::errors_as_problems,
        ))
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

/// Runs a store call within the admin deadline; a failure is a 503 and never detail.
pub(super) async fn within<T>(
    call: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, Problem> {
    match tokio::time::timeout(ADMIN_STORE_TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(StoreError::IdempotencyKeyReused)) => Err(Problem::idempotency_key_mismatch()),
        Ok(Err(error @ StoreError::NotReplicated { .. })) => {
            tracing::warn!(%error, "session store replicas did not confirm an admin change");
            Err(Problem::not_replicated())
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, "session store failed on an admin request");
            Err(Problem::unavailable())
        }
        Err(_) => {
            tracing::warn!("session store timed out on an admin request");
            Err(Problem::unavailable())
        }
    }
}

fn json_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, Problem> {
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

fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, Problem> {
    query.map(|Query(q)| q).map_err(|e| {
        Problem::bad_request("The query is not one this call takes; see /api/v1/openapi.json.")
            .with_parser(e.body_text())
    })
}

/// A path id: anything that is not a possible id is simply not found.
fn path_id(path: Result<Path<String>, PathRejection>, what: &str) -> Result<String, Problem> {
    match path {
        Ok(Path(id)) if is_safe_id(&id) => Ok(id),
        _ => Err(Problem::not_found(format!("No such {what}."))),
    }
}

/// The required reason of a write, as the audit trail keeps it: trimmed, control characters
/// made spaces and Unicode format characters (bidi overrides, zero-width characters) removed,
/// so what an administrator reads later is what was typed, on one line.
fn reason(reason: Option<String>) -> Result<String, Problem> {
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

fn page(limit: Option<usize>, default: usize) -> Result<usize, Problem> {
    match limit.unwrap_or(default) {
        0 => Err(Problem::bad_request("limit must be at least 1.")),
        n => Ok(n.min(MAX_PAGE)),
    }
}

/// One page of `items`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Page<T> {
    items: Vec<T>,
    /// Items matching the filters, across all pages.
    total: usize,
    offset: usize,
    limit: usize,
    /// The `offset` of the next page, when there is one.
    next_offset: Option<usize>,
}

impl<T> Page<T> {
    fn of(all: Vec<T>, offset: usize, limit: usize) -> Self {
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

// --- sessions ------------------------------------------------------------------------------

/// A live session as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SessionView {
    id: String,
    user: String,
    display_name: Option<String>,
    /// What the session key was derived from: `sid`, `tokenid` or `token`.
    anchor: &'static str,
    started_at: String,
    last_seen: String,
    age_seconds: i64,
    client_ip: Option<String>,
    client_label: Option<String>,
    user_agent: Option<String>,
}

impl SessionView {
    pub(super) fn new(record: &SessionRecord, now: UnixMillis) -> Self {
        Self {
            id: record.id.clone(),
            user: record.user.clone(),
            display_name: record.display_name.clone(),
            anchor: record.anchor.as_str(),
            started_at: rfc3339(record.started_at),
            last_seen: rfc3339(record.last_seen),
            age_seconds: now.saturating_sub(record.started_at).max(0) / 1000,
            client_ip: record.client_ip.map(|ip| ip.to_string()),
            client_label: record.client_label.clone(),
            user_agent: record.user_agent.clone(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionQuery {
    /// Only this user's sessions (`oid`).
    user: Option<String>,
    /// `started` (oldest first) or `-started` (newest first, the default).
    sort: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
}

async fn list_sessions(
    caller: Caller,
    State(state): State<AdminState>,
    q: Result<Query<SessionQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let q = query(q)?;
    let limit = page(q.limit, DEFAULT_PAGE)?;
    let newest_first = match q.sort.as_deref() {
        None | Some("-started") => true,
        Some("started") => false,
        Some(_) => {
            return Err(Problem::bad_request(
                "sort must be `started` or `-started`.",
            ));
        }
    };
    // The store lists oldest first.
    let mut sessions = within(state.store.sessions(caller.tenant())).await?;
    if let Some(user) = &q.user {
        sessions.retain(|s| &s.user == user);
    }
    if newest_first {
        sessions.reverse();
    }
    let now = state.clock.now_ms();
    let views = sessions.iter().map(|s| SessionView::new(s, now)).collect();
    Ok(Json(Page::of(views, q.offset.unwrap_or(0), limit)).into_response())
}

async fn live_session(
    state: &AdminState,
    caller: &Caller,
    id: &str,
) -> Result<SessionRecord, Problem> {
    within(state.store.sessions(caller.tenant()))
        .await?
        .into_iter()
        .find(|s| s.id == id)
        .ok_or_else(|| Problem::not_found("No live session with this id in your tenant."))
}

async fn get_session(
    caller: Caller,
    State(state): State<AdminState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<SessionView>, Problem> {
    let id = path_id(id, "session")?;
    let record = live_session(&state, &caller, &id).await?;
    Ok(Json(SessionView::new(&record, state.clock.now_ms())))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RevokeSessionBody {
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RevokeUserBody {
    reason: Option<String>,
    /// RFC 3339; no new session for the user until then.
    lock_until: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct RevocationResult {
    sessions_revoked: u32,
    audit_id: String,
}

/// The answer of a revoke-all: what it did, and what the user must do to get back in.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct UserRevocationResult {
    sessions_revoked: u32,
    audit_id: String,
    /// The user's watermark and lock as they stand now (`null`: nothing holds the user out,
    /// e.g. an administrator lifted it since the first call of a replayed request).
    blocked: Option<BlockedView>,
    /// In words: what the user must do to get back in.
    next_step: String,
}

/// The header that marks the stored answer of an earlier request with the same
/// `Idempotency-Key`.
const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// The caller-scoped idempotency key of a write: two administrators can never collide, and
/// the same administrator reaches the same key through the dashboard and the API.
fn idempotency_key(headers: &HeaderMap, caller: &Caller) -> Result<Option<String>, Problem> {
    match headers.get("idempotency-key").map(|v| v.to_str()) {
        None => Ok(None),
        Some(Ok(key)) if is_safe_id(key) => Ok(Some(format!("api:{}:{key}", caller.identity.user))),
        Some(_) => Err(Problem::bad_request(
            "Idempotency-Key must be 1-128 characters of A-Z a-z 0-9 . _ : @ -.",
        )),
    }
}

/// A revocation's answer; a replay carries `Idempotent-Replayed: true`.
fn revocation_answer(outcome: &RevocationOutcome, body: impl Serialize) -> Response {
    let mut response = Json(body).into_response();
    if outcome.replayed {
        response.headers_mut().insert(
            HeaderName::from_static(IDEMPOTENT_REPLAYED),
            HeaderValue::from_static("true"),
        );
    }
    response
}

async fn revoke_session(
    Writer(caller): Writer,
    State(state): State<AdminState>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let id = path_id(id, "session")?;
    // A retry with the same `Idempotency-Key` (e.g. after a 503) answers the first call's
    // outcome; the same key with another request is refused (422) and changes nothing.
    let idempotency_key = idempotency_key(&headers, &caller)?;
    let body: RevokeSessionBody = json_body(&body)?;
    let reason = reason(body.reason)?;
    let revocation = Revocation {
        tenant: caller.tenant().to_owned(),
        target: RevocationTarget::Session(id.clone()),
        reason,
        actor: caller.actor(),
        source: caller.source,
        idempotency_key,
    };
    match live_session(&state, &caller, &id).await {
        Ok(_) => {}
        // The session is no longer live. A retry of this caller's own revocation of it (the
        // audit trail of the tenant holds one with the same reason) goes to the store, which
        // answers the first outcome for the key; anything else is simply not found, so an id
        // of another tenant is never tombstoned or audited here.
        Err(not_found) if not_found.status == StatusCode::NOT_FOUND => {
            if revocation.idempotency_key.is_none()
                || !revoked_by_caller(&state, &caller, &id, &revocation.reason).await?
            {
                return Err(not_found);
            }
        }
        Err(error) => return Err(error),
    }
    // The store appends the audit record and writes its JSON log line.
    let outcome = within(state.store.revoke(&revocation)).await?;
    Ok(revocation_answer(
        &outcome,
        RevocationResult {
            sessions_revoked: outcome.sessions_revoked,
            audit_id: outcome.audit_id.clone(),
        },
    ))
}

/// Whether the tenant's audit trail has a revocation of session `id` by the caller with
/// `reason`: the only kind of request a replay of an ended session's revocation can be.
async fn revoked_by_caller(
    state: &AdminState,
    caller: &Caller,
    id: &str,
    reason: &str,
) -> Result<bool, Problem> {
    let records = within(state.store.audit(caller.tenant(), AUDIT_WINDOW)).await?;
    Ok(records.iter().any(|r| {
        r.tenant == caller.tenant()
            && r.action == Action::SessionRevoke
            && r.target.session.as_deref() == Some(id)
            && r.actor.id == caller.identity.user
            && r.reason.as_deref() == Some(reason)
    }))
}

async fn revoke_user(
    Writer(caller): Writer,
    State(state): State<AdminState>,
    user: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let user = path_id(user, "user")?;
    // A retried call with the same `Idempotency-Key` (within 24 h) changes nothing and
    // answers the first call's outcome: one audit record, one watermark. The same key with
    // another request (target, lock or reason) is refused (422) and changes nothing.
    let idempotency_key = idempotency_key(&headers, &caller)?;
    let body: RevokeUserBody = json_body(&body)?;
    let reason = reason(body.reason)?;
    let lock_until = match body.lock_until.as_deref() {
        None => None,
        Some(text) => {
            let at = humantime::parse_rfc3339_weak(text.trim()).map_err(|_| {
                Problem::bad_request(
                    "lockUntil must be an RFC 3339 time, e.g. 2026-12-01T00:00:00Z.",
                )
            })?;
            let at = at
                .duration_since(std::time::UNIX_EPOCH)
                .map_err(|_| Problem::bad_request("lockUntil must be in the future."))?;
            let at = i64::try_from(at.as_millis()).unwrap_or(i64::MAX);
            if at <= state.clock.now_ms() {
                return Err(Problem::bad_request("lockUntil must be in the future."));
            }
            Some(at)
        }
    };
    let revocation = Revocation {
        tenant: caller.tenant().to_owned(),
        target: RevocationTarget::User {
            user: user.clone(),
            lock_until,
        },
        reason,
        actor: caller.actor(),
        source: caller.source,
        idempotency_key,
    };
    let outcome = within(state.store.revoke(&revocation)).await?;
    // What holds the user out now, as the store says. The revocation is in force whatever
    // this read answers, so its failure does not fail the call: the answer then says the
    // rule without the times.
    let (blocked, next_step) = match within(state.store.blocked_users(caller.tenant())).await {
        Ok(all) => {
            let blocked = all.into_iter().find(|b| b.user == user);
            let next_step = next_step(&user, blocked.as_ref(), state.clock.now_ms());
            (blocked, next_step)
        }
        Err(_) => (
            None,
            format!(
                "The user must sign in again interactively (password, security key, …): tokens \
                 without auth_time, or signed in before this revocation, are refused until the \
                 watermark retention has passed or an administrator lifts it (DELETE \
                 /api/v1/users/{user}/revocation). GET /api/v1/blocked-users shows until when."
            ),
        ),
    };
    Ok(revocation_answer(
        &outcome,
        UserRevocationResult {
            sessions_revoked: outcome.sessions_revoked,
            audit_id: outcome.audit_id.clone(),
            blocked: blocked.as_ref().map(BlockedView::new),
            next_step,
        },
    ))
}

/// What `user` must do to get back in, given what holds them out at `now` (DESIGN §3: a lock
/// refuses every token until it ends; the watermark W refuses, until `holds_until`, tokens
/// without `auth_time` and tokens whose `auth_time` is not after W).
fn next_step(user: &str, blocked: Option<&BlockedUser>, now: UnixMillis) -> String {
    let lift = format!(
        "an administrator lifts it (DELETE /api/v1/users/{user}/revocation, or Lift under \
         Blocked users in the dashboard)"
    );
    let Some(b) = blocked else {
        return "Their sessions are ended and stay ended. Nothing else holds the user out now \
                (no watermark or lock is in force), so any valid token opens a new session."
            .into();
    };
    let holds = rfc3339(b.holds_until);
    let watermark = b.not_before.map(|at| {
        format!(
            "the user must sign in again interactively (password, security key, …): only a \
             token whose auth_time is after {} opens a session. Tokens without auth_time (or \
             with an earlier one) are refused until {holds} or until {lift}. A refreshed token \
             is not enough.",
            rfc3339(at)
        )
    });
    match (b.lock_until.filter(|until| *until > now), watermark) {
        (Some(until), Some(watermark)) if until < b.holds_until => format!(
            "The user is locked out: no token opens a session until {} or until {lift}. \
             After that, {watermark}",
            rfc3339(until)
        ),
        (Some(until), _) => format!(
            "The user is locked out: no token opens a session until {} or until {lift}. \
             After that nothing holds the user out and any valid token opens a session.",
            rfc3339(until)
        ),
        (None, Some(watermark)) => {
            let mut text = watermark;
            if let Some(first) = text.get_mut(..1) {
                first.make_ascii_uppercase();
            }
            text
        }
        (None, None) => format!(
            "Nothing holds the user out after {holds}; until then {lift} can let them in early."
        ),
    }
}

// --- blocked users -------------------------------------------------------------------------

/// A user that a revoke-all watermark or a lock keeps out, as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct BlockedView {
    user: String,
    /// The watermark W: tokens must prove a sign-in (`auth_time`) after it.
    not_before: Option<String>,
    /// No session at all until then.
    lock_until: Option<String>,
    /// When nothing holds the user out any more (the watermark is forgotten, the lock over).
    holds_until: String,
}

impl BlockedView {
    fn new(b: &BlockedUser) -> Self {
        Self {
            user: b.user.clone(),
            not_before: b.not_before.map(rfc3339),
            lock_until: b.lock_until.map(rfc3339),
            holds_until: rfc3339(b.holds_until),
        }
    }
}

/// One blocked user with the revocation that blocked them (from the audit trail, when it is
/// still in the window read).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct BlockedUserItem {
    #[serde(flatten)]
    blocked: BlockedView,
    /// The newest `user.revoke` / `user.lock` record of the user.
    revocation: Option<RevocationSummary>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct RevocationSummary {
    audit_id: String,
    time: String,
    actor: String,
    reason: Option<String>,
}

/// Audit records read to find who blocked each listed user and why.
const BLOCKED_AUDIT_WINDOW: usize = 2_000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BlockedQuery {
    limit: Option<usize>,
    offset: Option<usize>,
}

async fn list_blocked(
    caller: Caller,
    State(state): State<AdminState>,
    q: Result<Query<BlockedQuery>, QueryRejection>,
) -> Result<Json<Page<BlockedUserItem>>, Problem> {
    let q = query(q)?;
    let limit = page(q.limit, DEFAULT_PAGE)?;
    let mut blocked = within(state.store.blocked_users(caller.tenant())).await?;
    // Newest revocation first.
    blocked.sort_by(|a, b| {
        b.not_before
            .cmp(&a.not_before)
            .then_with(|| a.user.cmp(&b.user))
    });
    let records = if blocked.is_empty() {
        Vec::new()
    } else {
        within(state.store.audit(caller.tenant(), BLOCKED_AUDIT_WINDOW)).await?
    };
    let items = blocked
        .iter()
        .map(|b| BlockedUserItem {
            blocked: BlockedView::new(b),
            revocation: records
                .iter()
                .find(|r| {
                    r.tenant == caller.tenant()
                        && matches!(r.action, Action::UserRevoke | Action::UserLock)
                        && r.target.user.as_ref() == Some(&b.user)
                })
                .map(|r| RevocationSummary {
                    audit_id: r.id.clone(),
                    time: r.time.clone(),
                    actor: r.actor.name.clone().unwrap_or_else(|| r.actor.id.clone()),
                    reason: r.reason.clone(),
                }),
        })
        .collect();
    Ok(Json(Page::of(items, q.offset.unwrap_or(0), limit)))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LiftBody {
    reason: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct LiftResult {
    user: String,
    audit_id: String,
    /// What was lifted.
    lifted: BlockedView,
}

/// Lifts a user's revoke-all watermark and lock (audited `user.unblock`): tokens that could
/// not prove a sign-in after the revocation open sessions again. Sessions that were ended
/// stay ended.
async fn lift_revocation(
    Writer(caller): Writer,
    State(state): State<AdminState>,
    user: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Json<LiftResult>, Problem> {
    let user = path_id(user, "user")?;
    let body: LiftBody = json_body(&body)?;
    let reason = reason(body.reason)?;
    let not_blocked =
        || Problem::not_found("No revoke-all watermark or lock holds this user in your tenant.");
    let blocked = within(state.store.blocked_users(caller.tenant()))
        .await?
        .into_iter()
        .find(|b| b.user == user)
        .ok_or_else(not_blocked)?;
    let mut lifted = Vec::new();
    if let Some(at) = blocked.not_before {
        lifted.push(format!("revoke-all watermark of {}", rfc3339(at)));
    }
    if let Some(until) = blocked.lock_until {
        lifted.push(format!("lock until {}", rfc3339(until)));
    }
    let record = AuditRecord {
        id: new_audit_id(),
        time: rfc3339(state.clock.now_ms()),
        tenant: caller.tenant().to_owned(),
        actor: caller.actor(),
        action: Action::UserUnblock,
        target: Target {
            user: Some(user.clone()),
            session: None,
        },
        reason: Some(reason),
        source: caller.source,
        sessions_revoked: None,
        detail: Some(format!("lifted {}", lifted.join(" and "))),
    };
    let audit_id = record.id.clone();
    // The store decides: `false` when nothing held the user any more (lifted meanwhile by
    // someone else, or just expired) — then nothing was written.
    if !within(state.store.unblock_user(caller.tenant(), &user, record)).await? {
        return Err(not_blocked());
    }
    Ok(Json(LiftResult {
        user,
        audit_id,
        lifted: BlockedView::new(&blocked),
    }))
}

// --- audit ---------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    /// Only records about this user (the target's `oid`).
    user: Option<String>,
    /// Only this action: `session.revoke`, `user.revoke`, `user.lock`, `user.unblock`,
    /// `policy.update` or `store.reset`.
    action: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
}

async fn list_audit(
    caller: Caller,
    State(state): State<AdminState>,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<Page<AuditRecord>>, Problem> {
    let q = query(q)?;
    let limit = page(q.limit, 50)?;
    let action: Option<Action> = match &q.action {
        None => None,
        Some(text) => Some(
            serde_json::from_value(serde_json::Value::String(text.clone())).map_err(|_| {
                Problem::bad_request(
                    "action must be session.revoke, user.revoke, user.lock, user.unblock, \
                     policy.update or store.reset.",
                )
            })?,
        ),
    };
    // Newest first. Filtering and paging happen here over the store's window of records.
    let mut records = within(state.store.audit(caller.tenant(), AUDIT_WINDOW)).await?;
    records.retain(|r| {
        r.tenant == caller.tenant()
            && action.is_none_or(|a| r.action == a)
            && q.user
                .as_ref()
                .is_none_or(|u| r.target.user.as_ref() == Some(u))
    });
    Ok(Json(Page::of(records, q.offset.unwrap_or(0), limit)))
}

// --- policy --------------------------------------------------------------------------------

/// The tenant's policy as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PolicyView {
    max_session_age_seconds: u64,
    /// `default`, `admin` or `kubernetes`.
    source: &'static str,
    /// The Kubernetes SessionPolicy (`namespace/name`) that manages it.
    managed_by: Option<String>,
    /// Whether the dashboard and API may change it (not when Kubernetes manages it).
    editable: bool,
    min_seconds: u64,
    max_seconds: u64,
}

impl PolicyView {
    pub(super) fn new(policy: &Policy) -> Self {
        let (source, managed_by) = match &policy.source {
            PolicySource::Default => ("default", None),
            PolicySource::Admin => ("admin", None),
            PolicySource::Kubernetes(name) => ("kubernetes", Some(name.clone())),
        };
        Self {
            max_session_age_seconds: policy.max_session_age.as_secs(),
            source,
            editable: managed_by.is_none(),
            managed_by,
            min_seconds: MIN_MAX_SESSION_AGE.as_secs(),
            max_seconds: MAX_MAX_SESSION_AGE.as_secs(),
        }
    }
}

async fn get_policy(
    caller: Caller,
    State(state): State<AdminState>,
) -> Result<Json<PolicyView>, Problem> {
    let policy = within(state.store.policy(caller.tenant())).await?;
    Ok(Json(PolicyView::new(&policy)))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PolicyBody {
    max_session_age_seconds: Option<u64>,
    reason: Option<String>,
}

async fn put_policy(
    Writer(caller): Writer,
    State(state): State<AdminState>,
    body: Bytes,
) -> Result<Json<PolicyView>, Problem> {
    let body: PolicyBody = json_body(&body)?;
    let seconds = body
        .max_session_age_seconds
        .ok_or_else(|| Problem::bad_request("maxSessionAgeSeconds is required."))?;
    let reason = reason(body.reason)?;
    let age = check_max_age(Duration::from_secs(seconds))
        .map_err(|e| Problem::bad_request(format!("{e}.")))?;
    let current = within(state.store.policy(caller.tenant())).await?;
    if let PolicySource::Kubernetes(name) = &current.source {
        return Err(Problem::conflict(
            "managed-by-kubernetes",
            "Managed by Kubernetes",
            format!(
                "This tenant's policy is managed by Kubernetes (SessionPolicy {name}); change it there."
            ),
        ));
    }
    let policy = Policy {
        max_session_age: age,
        source: PolicySource::Admin,
    };
    let record = AuditRecord {
        id: new_audit_id(),
        time: rfc3339(state.clock.now_ms()),
        tenant: caller.tenant().to_owned(),
        actor: caller.actor(),
        action: Action::PolicyUpdate,
        target: Target::default(),
        reason: Some(reason),
        source: caller.source,
        sessions_revoked: None,
        detail: Some(format!(
            "max session age {} -> {}",
            humantime::format_duration(current.max_session_age),
            humantime::format_duration(age)
        )),
    };
    within(
        state
            .store
            .set_policy(caller.tenant(), policy.clone(), Some(record)),
    )
    .await?;
    Ok(Json(PolicyView::new(&policy)))
}
