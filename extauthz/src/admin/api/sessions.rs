//! Live sessions: list and read them, revoke one.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use grantflow_core::audit::Action;
use grantflow_core::revocation::{Revocation, RevocationTarget};
use grantflow_core::session::SessionRecord;
use serde::{Deserialize, Serialize};

use super::{
    AUDIT_WINDOW, DEFAULT_PAGE, Page, idempotency_key, json_body, page, path_id, query, reason,
    revocation_answer,
};
use crate::admin::caller::Caller;
use crate::admin::problem::Problem;
use crate::admin::rate_limit::Writer;
use crate::admin::views::SessionView;
use crate::admin::{AdminState, within};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SessionQuery {
    /// Only this user's sessions (`oid`).
    user: Option<String>,
    /// `started` (oldest first) or `-started` (newest first, the default).
    sort: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
}

pub(super) async fn list_sessions(
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

pub(super) async fn get_session(
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

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct RevocationResult {
    sessions_revoked: u32,
    audit_id: String,
}

pub(super) async fn revoke_session(
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
    let outcome = (state.metrics)
        .time_revocation("session_revoke", within(state.store.revoke(&revocation)))
        .await?;
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
