//! Live sessions: list and read them, revoke one.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use grantflow_core::audit::Action;
use grantflow_core::clock::rfc3339;
use grantflow_core::listing::{Direction, SessionQuery as ListingQuery, SortKey, parse_network};
use grantflow_core::revocation::{Revocation, RevocationTarget};
use grantflow_core::session::SessionRecord;
use serde::{Deserialize, Serialize};

use super::{
    AUDIT_WINDOW, DEFAULT_PAGE, idempotency_key, json_body, page, path_id, query, reason,
    revocation_answer,
};
use crate::admin::caller::Caller;
use crate::admin::problem::Problem;
use crate::admin::rate_limit::Writer;
use crate::admin::views::SessionView;
use crate::admin::{AdminState, within};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct SessionParams {
    /// Only this user's sessions (`oid`): answered through the store's per-user index.
    user: Option<String>,
    /// A case-insensitive prefix of the display name or user id.
    name: Option<String>,
    /// The client IP, or a CIDR range it is in.
    ip: Option<String>,
    /// A case-insensitive part of the browser label.
    browser: Option<String>,
    /// `started`/`-started` (newest first, the default) or `lastSeen`/`-lastSeen`.
    sort: Option<String>,
    limit: Option<usize>,
    /// The `nextCursor` of the previous page.
    cursor: Option<String>,
    /// The older way to page (skips rows; `cursor` is the stable one).
    offset: Option<usize>,
    /// `user`: one row per user, with the count of their sessions.
    group_by: Option<String>,
}

/// The listing query of `params`, its cursor applied.
fn listing_query(params: &SessionParams, grouped: bool) -> Result<ListingQuery, Problem> {
    let (sort, direction) = match params.sort.as_deref() {
        None | Some("-started") => (SortKey::Started, Direction::Descending),
        Some("started") => (SortKey::Started, Direction::Ascending),
        Some("-lastSeen") => (SortKey::LastSeen, Direction::Descending),
        Some("lastSeen") => (SortKey::LastSeen, Direction::Ascending),
        Some(_) => {
            return Err(Problem::bad_request(
                "sort must be `started`, `-started`, `lastSeen` or `-lastSeen`.",
            ));
        }
    };
    let text = |value: &Option<String>| {
        value
            .as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(|v| v.chars().take(200).collect::<String>())
    };
    let network = match text(&params.ip) {
        Some(ip) => Some(parse_network(&ip).map_err(|e| Problem::bad_request(e.to_string()))?),
        None => None,
    };
    let mut query = ListingQuery {
        user: text(&params.user),
        name_prefix: text(&params.name),
        network,
        browser: text(&params.browser),
        sort,
        direction,
        limit: page(params.limit, DEFAULT_PAGE)?,
        after: None,
    };
    if let Some(cursor) = &params.cursor {
        if params.offset.is_some() {
            return Err(Problem::bad_request(
                "Use either cursor or offset, not both.",
            ));
        }
        query
            .resume(cursor, grouped)
            .map_err(|e| Problem::bad_request(e.to_string()))?;
    }
    Ok(query)
}

/// A page of sessions: the fields of every page, and the cursor of the next one.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionList<T> {
    items: Vec<T>,
    /// Rows matching the filters, across all pages.
    total: usize,
    offset: usize,
    limit: usize,
    next_offset: Option<usize>,
    /// Pass as `cursor` for the next page; stays correct while sessions start and end.
    next_cursor: Option<String>,
}

/// One user's live sessions, summed up (`groupBy=user`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct UserRow {
    user: String,
    display_name: Option<String>,
    sessions: usize,
    newest_start: String,
    last_seen: String,
}

pub(super) async fn list_sessions(
    caller: Caller,
    State(state): State<AdminState>,
    q: Result<Query<SessionParams>, QueryRejection>,
) -> Result<Response, Problem> {
    let params = query(q)?;
    let grouped = match params.group_by.as_deref() {
        None => false,
        Some("user") => true,
        Some(_) => return Err(Problem::bad_request("groupBy must be `user`.")),
    };
    let mut query = listing_query(&params, grouped)?;
    let limit = query.limit;
    if grouped {
        if params.offset.is_some() {
            return Err(Problem::bad_request(
                "groupBy pages with cursor, not offset.",
            ));
        }
        let page = within(state.store.session_users(caller.tenant(), &query)).await?;
        let items = page
            .users
            .into_iter()
            .map(|g| UserRow {
                user: g.user,
                display_name: g.display_name,
                sessions: g.sessions,
                newest_start: rfc3339(g.newest_start),
                last_seen: rfc3339(g.last_seen),
            })
            .collect();
        return Ok(Json(SessionList {
            items,
            total: page.total,
            offset: 0,
            limit,
            next_offset: None,
            next_cursor: page.next_cursor,
        })
        .into_response());
    }
    // `offset` skips rows of the first `offset + limit` (the older form of paging).
    let offset = params.offset.unwrap_or(0).min(MAX_OFFSET);
    query.limit = limit + offset;
    let page = within(state.store.list_sessions(caller.tenant(), &query)).await?;
    query.limit = limit;
    let rows: Vec<&SessionRecord> = page.sessions.iter().skip(offset).collect();
    let end = offset + rows.len();
    let more = end < page.total && rows.len() == limit;
    let next_cursor = match (offset, page.next_cursor) {
        (0, cursor) => cursor,
        (_, _) => more
            .then(|| rows.last())
            .flatten()
            .map(|s| query.cursor(false, query.value(s), &s.id)),
    };
    let now = state.clock.now_ms();
    Ok(Json(SessionList {
        items: rows.iter().map(|s| SessionView::new(s, now)).collect(),
        total: page.total,
        offset,
        limit,
        next_offset: (end < page.total).then_some(end),
        next_cursor,
    })
    .into_response())
}

/// The largest `offset` accepted; page further with `cursor`.
const MAX_OFFSET: usize = 10_000;

async fn live_session(
    state: &AdminState,
    caller: &Caller,
    id: &str,
) -> Result<SessionRecord, Problem> {
    within(state.store.session(caller.tenant(), id))
        .await?
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
