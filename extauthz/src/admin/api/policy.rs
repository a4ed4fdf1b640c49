//! The tenant's session policy: read it, and change it unless Kubernetes manages it.
//!
//! `PUT` takes the max age (required) and, optionally, the idle timeout and the session limit:
//! a field left out keeps its value, `null` turns it off.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use grantflow_core::audit::{Action, AuditRecord, Target, new_audit_id};
use grantflow_core::clock::rfc3339;
use grantflow_core::policy::{
    OnLimit, Policy, PolicySource, check_idle_timeout, check_max_age, check_session_limit,
};
use serde::{Deserialize, Deserializer};

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
    /// Left out: unchanged; `null`: off.
    #[serde(default, deserialize_with = "present")]
    idle_timeout_seconds: Option<Option<u64>>,
    /// Left out: unchanged; `null`: off.
    #[serde(default, deserialize_with = "present")]
    max_sessions_per_user: Option<Option<u32>>,
    /// `RefuseNew` or `EndOldest`; left out: unchanged.
    on_limit: Option<OnLimit>,
    reason: Option<String>,
}

/// A field that is there, `null` or not: `Some` (a missing one stays `None` by `default`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

fn words(value: Option<Duration>) -> String {
    value.map_or("off".to_owned(), |d| {
        humantime::format_duration(d).to_string()
    })
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
    let idle_timeout = body
        .idle_timeout_seconds
        .map_or(current.idle_timeout, |idle| idle.map(Duration::from_secs));
    let idle_timeout =
        check_idle_timeout(idle_timeout, age).map_err(|e| Problem::bad_request(format!("{e}.")))?;
    let max_sessions_per_user = body
        .max_sessions_per_user
        .unwrap_or(current.max_sessions_per_user);
    let max_sessions_per_user = check_session_limit(max_sessions_per_user)
        .map_err(|e| Problem::bad_request(format!("{e}.")))?;
    let on_limit = body.on_limit.unwrap_or(current.on_limit);
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
        idle_timeout,
        max_sessions_per_user,
        on_limit,
        source: PolicySource::Admin,
    };
    let mut detail = format!(
        "max session age {} -> {}",
        humantime::format_duration(current.max_session_age),
        humantime::format_duration(age)
    );
    if current.idle_timeout != idle_timeout {
        detail += &format!(
            "; idle timeout {} -> {}",
            words(current.idle_timeout),
            words(idle_timeout)
        );
    }
    if (current.max_sessions_per_user, current.on_limit) != (max_sessions_per_user, on_limit) {
        let limit = |n: Option<u32>, on: OnLimit| {
            n.map_or("off".to_owned(), |n| format!("{n} ({})", on.as_str()))
        };
        detail += &format!(
            "; max sessions per user {} -> {}",
            limit(current.max_sessions_per_user, current.on_limit),
            limit(max_sessions_per_user, on_limit)
        );
    }
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
        detail: Some(detail),
    };
    within(
        state
            .store
            .set_policy(caller.tenant(), policy.clone(), Some(record)),
    )
    .await?;
    Ok(Json(PolicyView::new(&policy)))
}
