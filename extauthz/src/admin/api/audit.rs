//! The tenant's audit trail, filtered and paged.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use grantflow_core::audit::{Action, AuditRecord};
use serde::Deserialize;

use super::{AUDIT_WINDOW, Page, page, query};
use crate::admin::caller::Caller;
use crate::admin::problem::Problem;
use crate::admin::{AdminState, within};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    /// Only records about this user (the target's `oid`).
    user: Option<String>,
    /// Only this action: `session.revoke`, `user.revoke`, `user.lock`, `user.unblock`,
    /// `policy.update` or `store.reset`.
    action: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
}

pub(super) async fn list_audit(
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
