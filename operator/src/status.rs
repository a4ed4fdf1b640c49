//! Status conditions, computed in one place, and [`write_status`], the one status write of
//! both reconcilers. A condition keeps its `lastTransitionTime` while its status stays the
//! same, and a status is written only when something other than a timestamp changed.

use std::fmt::Debug;

use grantflow_core::clock::UnixMillis;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::MANAGER;
use crate::context::{Context, Error};

/// Condition types and reasons: the operator's vocabulary in `status.conditions`.
pub mod reason {
    /// SessionPolicy: the policy is in force for its tenant.
    pub const READY: &str = "Ready";
    /// Revocation: the sessions were ended.
    pub const APPLIED_TYPE: &str = "Applied";

    pub const APPLIED: &str = "Applied";
    pub const REVOKED: &str = "Revoked";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const CONFLICT: &str = "Conflict";
    pub const STORE_UNAVAILABLE: &str = "StoreUnavailable";
    pub const REQUESTER_UNKNOWN: &str = "RequesterUnknown";
}

/// A Kubernetes time from the operator's clock (Kubernetes keeps whole seconds).
pub fn time(at: UnixMillis) -> Time {
    Time(Timestamp::from_millisecond(at).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// What a reconcile found, before it is written as a condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub ok: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Verdict {
    pub fn ok(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            ok: true,
            reason,
            message: message.into(),
        }
    }

    pub fn failed(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            ok: false,
            reason,
            message: message.into(),
        }
    }
}

/// The conditions after recording `verdict` as condition `type_`: the others are kept, and
/// the transition time is kept when the status did not change.
pub fn with_condition(
    existing: &[Condition],
    type_: &str,
    verdict: &Verdict,
    generation: Option<i64>,
    now: UnixMillis,
) -> Vec<Condition> {
    let status = if verdict.ok { "True" } else { "False" };
    let previous = existing.iter().find(|c| c.type_ == type_);
    let last_transition_time = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => time(now),
    };
    let condition = Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: verdict.reason.to_owned(),
        message: verdict.message.clone(),
        observed_generation: generation,
        last_transition_time,
    };
    let mut conditions: Vec<Condition> = existing
        .iter()
        .filter(|c| c.type_ != type_)
        .cloned()
        .collect();
    conditions.push(condition);
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
    conditions
}

/// Whether two condition lists say the same, timestamps aside.
pub fn same_conditions(a: &[Condition], b: &[Condition]) -> bool {
    let key = |c: &Condition| {
        (
            c.type_.clone(),
            c.status.clone(),
            c.reason.clone(),
            c.message.clone(),
            c.observed_generation,
        )
    };
    let mut a: Vec<_> = a.iter().map(key).collect();
    let mut b: Vec<_> = b.iter().map(key).collect();
    a.sort();
    b.sort();
    a == b
}

/// Whether condition `type_` changed status or reason (an Event is worth emitting).
pub fn transitioned(before: &[Condition], after: &[Condition], type_: &str) -> bool {
    let find = |list: &[Condition]| {
        list.iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    find(before) != find(after)
}

/// A custom resource whose status carries conditions the operator reports (implemented beside
/// its reconciler: `policy.rs`, `revocation.rs`).
pub trait Reported: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned {
    /// The status written back.
    type Status: Serialize;
    /// The condition type its reconciler sets ([`reason::READY`], [`reason::APPLIED_TYPE`]).
    const CONDITION: &'static str;
    /// The `action` of the Events its reconciler publishes.
    const ACTION: &'static str;
    /// The status's observed generation and conditions as they are now.
    fn reported(&self) -> (Option<i64>, Vec<Condition>);
}

/// Records `verdict` as the object's condition and writes the status (server-side apply,
/// forced, as [`MANAGER`]) unless it says what it already says; `changed` forces the write
/// (fields besides the conditions are new). `status` builds the status from the observed
/// generation and the conditions. Publishes an Event when the condition changed status or
/// reason.
pub async fn write_status<K: Reported>(
    api: &Api<K>,
    object: &K,
    ctx: &Context,
    verdict: &Verdict,
    changed: bool,
    status: impl FnOnce(Option<i64>, Vec<Condition>) -> K::Status,
) -> Result<(), Error> {
    let (observed_before, before) = object.reported();
    let generation = object.meta().generation;
    let conditions = with_condition(
        &before,
        K::CONDITION,
        verdict,
        generation,
        ctx.clock.now_ms(),
    );
    if !changed && observed_before == generation && same_conditions(&before, &conditions) {
        return Ok(());
    }
    let after = conditions.clone();
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status(generation, conditions),
    });
    api.patch_status(
        &object.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await?;
    if transitioned(&before, &after, K::CONDITION) {
        // An Event of the verdict: Normal when it is good, Warning otherwise.
        let type_ = if verdict.ok {
            EventType::Normal
        } else {
            EventType::Warning
        };
        ctx.publish(
            object,
            type_,
            verdict.reason,
            verdict.message.clone(),
            K::ACTION,
        )
        .await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_with_the_status() {
        let first = with_condition(&[], "Ready", &Verdict::ok("Applied", "a"), Some(1), 1_000);
        let same = with_condition(
            &first,
            "Ready",
            &Verdict::ok("Applied", "b"),
            Some(2),
            99_000,
        );
        assert_eq!(same[0].last_transition_time, time(1_000));
        assert_eq!(same[0].message, "b");
        assert!(!same_conditions(&first, &same));
        assert!(!transitioned(&first, &same, "Ready"));
        let failed = with_condition(
            &same,
            "Ready",
            &Verdict::failed("Conflict", "c"),
            Some(2),
            120_000,
        );
        assert_eq!(failed[0].last_transition_time, time(120_000));
        assert!(transitioned(&same, &failed, "Ready"));
        let again = with_condition(
            &failed,
            "Ready",
            &Verdict::failed("Conflict", "c"),
            Some(2),
            500_000,
        );
        assert!(same_conditions(&failed, &again));
    }
}
