//! The tenant's session policy: read it, and change it unless Kubernetes manages it.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use grantflow_core::audit::{Action, AuditRecord, Target, new_audit_id};
use grantflow_core::clock::rfc3339;
use grantflow_core::policy::{Policy, PolicySource, check_max_age};
use serde::Deserialize;

use super::{json_body, reason};
use crate::admin::caller::Caller;
use crate::admin::problem::Problem;
use crate::admin::rate_limit::Writer;
use crate::admin::views::PolicyView;
use crate::admin::{AdminState, within};

pub(super) async fn get_policy(
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

pub(super) async fn put_policy(
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
