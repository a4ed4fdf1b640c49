//! The SessionPolicy controller: writes a tenant's policy to the store, reports `Ready`, and
//! returns the tenant to the default when the policy is deleted (finalizer).
//!
//! One policy per tenant: the oldest (creation time, then namespace/name) owns the tenant and
//! any other naming it gets `Ready=False, reason=Conflict`. When the owner goes, the
//! controller's watch on the other policies of the tenant lets the next one take over.

use std::sync::Arc;
use std::time::Instant;

use grantflow_core::audit::new_audit_id;
use grantflow_core::audit::{Action as AuditAction, Actor, ActorKind, AuditRecord, Source, Target};
use grantflow_core::clock::rfc3339;
use grantflow_core::policy::{Policy, PolicySource};
use grantflow_core::store::StoreError;
use grantflow_crds::{SessionPolicy, SessionPolicyStatus};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};

use crate::context::{Context, Error, object_key};
use crate::spec;
use crate::status::{Reported, Verdict, reason, write_status};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// The controller's name in metrics.
pub const CONTROLLER: &str = "sessionpolicy";
/// Held until the tenant has been returned to the default policy.
pub const FINALIZER: &str = "session.grantflow.io/policy";

/// The `action` of this controller's Events.
pub(crate) const ACTION: &str = "ApplyPolicy";

/// `namespace/name`, also the policy's name in the store (`PolicySource::Kubernetes`).
fn key(policy: &SessionPolicy) -> String {
    object_key(policy)
}

/// Reconciles one SessionPolicy.
pub async fn reconcile(policy: Arc<SessionPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let namespace = policy.namespace().ok_or(Error::Incomplete("namespace"))?;
    let object = key(&policy);
    let api: Api<SessionPolicy> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, policy, |event| async {
        match event {
            Finalizer::Apply(policy) => apply(&policy, &ctx, &api).await,
            Finalizer::Cleanup(policy) => cleanup(&policy, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics.observe(CONTROLLER, started.elapsed());
    if result.is_ok() {
        ctx.succeeded(&object);
    }
    result
}

/// Retries a failed reconcile with a per-object backoff.
pub fn error_policy(policy: Arc<SessionPolicy>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(CONTROLLER, error.metric_label());
    let delay = ctx.retry_after(&key(&policy));
    tracing::warn!(policy = %key(&policy), %error, retry_in = ?delay, "SessionPolicy reconcile failed");
    Action::requeue(delay)
}

async fn apply(
    policy: &SessionPolicy,
    ctx: &Context,
    api: &Api<SessionPolicy>,
) -> Result<Action, Error> {
    // Conflicts are judged on the whole cache; the controller runs no reconcile before its
    // initial list is in it.
    let parsed = spec::session_policy(&policy.spec).and_then(|(tenant, max_age)| {
        let rules = spec::session_rules(&policy.spec, max_age)?;
        Ok((tenant, max_age, rules))
    });
    let (verdict, store_error) = match parsed {
        // Not applied: the store keeps what it had (a valid earlier version stays in force).
        Err(invalid) => (
            Verdict::failed(
                reason::INVALID_SPEC,
                format!("{invalid}; not applied, the session store keeps what it had"),
            ),
            None,
        ),
        Ok((tenant, max_age, rules)) => match owner_of(&ctx.policies, policy, &tenant) {
            Some(owner) => (
                Verdict::failed(
                    reason::CONFLICT,
                    format!(
                        "tenant {tenant} already has SessionPolicy {owner}; this one is not applied"
                    ),
                ),
                None,
            ),
            None => {
                let (idle_timeout, max_sessions_per_user, on_limit) = rules;
                let desired = Policy {
                    max_session_age: max_age,
                    idle_timeout,
                    max_sessions_per_user,
                    on_limit,
                    source: PolicySource::Kubernetes(key(policy)),
                };
                match put_policy(ctx, policy, &tenant, desired).await {
                    Ok(()) => (
                        Verdict::ok(
                            reason::APPLIED,
                            format!(
                                "sessions of tenant {tenant} end {} after sign-in",
                                humantime::format_duration(max_age)
                            ),
                        ),
                        None,
                    ),
                    Err(error) => (
                        Verdict::failed(
                            reason::STORE_UNAVAILABLE,
                            format!("the session store did not take the policy: {error}"),
                        ),
                        Some(error),
                    ),
                }
            }
        },
    };
    ctx.metrics.outcome(CONTROLLER, verdict.reason);
    write_status(
        api,
        policy,
        ctx,
        &verdict,
        false,
        |observed_generation, conditions| SessionPolicyStatus {
            observed_generation,
            conditions,
        },
    )
    .await?;
    match store_error {
        Some(error) => Err(error.into()),
        // Conflicts and invalid specs wait for a change (of this policy, or of another policy
        // of the tenant); applied ones are compared with the store now and then.
        None if verdict.ok => Ok(Action::requeue(ctx.policy_resync)),
        None => Ok(Action::await_change()),
    }
}

/// Writes `desired` unless the store already has it (no audit record for a no-op).
async fn put_policy(
    ctx: &Context,
    policy: &SessionPolicy,
    tenant: &str,
    desired: Policy,
) -> Result<(), StoreError> {
    let lock = ctx.tenant_lock(tenant);
    let _held = lock.lock().await;
    let current = ctx.store_call(ctx.store.policy(tenant)).await?;
    if current == desired {
        return Ok(());
    }
    let audit = AuditRecord {
        id: new_audit_id(),
        time: rfc3339(ctx.clock.now_ms()),
        tenant: tenant.to_owned(),
        actor: Actor {
            kind: ActorKind::Kubernetes,
            id: format!("sessionpolicy/{}", key(policy)),
            name: None,
        },
        action: AuditAction::PolicyUpdate,
        target: Target::default(),
        reason: None,
        source: Source::Kubernetes,
        sessions_revoked: None,
        detail: Some(spec_detail(&desired)),
    };
    ctx.store_call(ctx.store.set_policy(tenant, desired, Some(audit)))
        .await
}

/// The audit detail of an applied policy: its max age, and its idle timeout and session
/// limit when set (`maxSessionAge 30m, idleTimeout 10m, maxSessionsPerUser 3 (EndOldest)`).
fn spec_detail(policy: &Policy) -> String {
    let mut detail = format!(
        "maxSessionAge {}",
        humantime::format_duration(policy.max_session_age)
    );
    if let Some(idle) = policy.idle_timeout {
        detail += &format!(", idleTimeout {}", humantime::format_duration(idle));
    }
    if let Some(limit) = policy.max_sessions_per_user {
        detail += &format!(
            ", maxSessionsPerUser {limit} ({})",
            policy.on_limit.as_str()
        );
    }
    detail
}

/// Returns the tenant to the default, if this policy is the one in force.
async fn cleanup(policy: &SessionPolicy, ctx: &Context) -> Result<Action, Error> {
    let mut note = "deleted; it was not in force".to_owned();
    if let Ok(tenant) = spec::tenant(&policy.spec.tenant_id) {
        let lock = ctx.tenant_lock(&tenant);
        let _held = lock.lock().await;
        let current = ctx.store_call(ctx.store.policy(&tenant)).await?;
        if current.source == PolicySource::Kubernetes(key(policy)) {
            ctx.store_call(ctx.store.clear_policy(&tenant)).await?;
            note = format!("deleted; tenant {tenant} is back on the default policy");
        }
    }
    ctx.metrics.outcome(CONTROLLER, "deleted");
    ctx.publish(policy, EventType::Normal, "Deleted", note, ACTION)
        .await;
    Ok(Action::await_change())
}

/// The policy that owns `tenant`, when it is not `policy`: the oldest live one naming it.
pub fn owner_of(
    cache: &Store<SessionPolicy>,
    policy: &SessionPolicy,
    tenant: &str,
) -> Option<String> {
    let rank = |p: &SessionPolicy| {
        (
            p.metadata.creation_timestamp.clone().map(|t| t.0),
            p.namespace().unwrap_or_default(),
            p.name_any(),
        )
    };
    let mine = rank(policy);
    cache
        .state()
        .iter()
        .filter(|other| other.uid() != policy.uid())
        .filter(|other| other.metadata.deletion_timestamp.is_none())
        .filter(|other| spec::tenant(&other.spec.tenant_id).is_ok_and(|t| t == tenant))
        .map(|other| (rank(other), key(other)))
        .filter(|(rank, _)| *rank < mine)
        .min()
        .map(|(_, key)| key)
}

/// The other policies naming the tenant of `changed`: they may win or lose the tenant now.
pub fn same_tenant(
    cache: &Store<SessionPolicy>,
    changed: &SessionPolicy,
) -> Vec<ObjectRef<SessionPolicy>> {
    let Ok(tenant) = spec::tenant(&changed.spec.tenant_id) else {
        return Vec::new();
    };
    cache
        .state()
        .iter()
        .filter(|other| other.uid() != changed.uid())
        .filter(|other| spec::tenant(&other.spec.tenant_id).is_ok_and(|t| t == tenant))
        .map(|other| ObjectRef::from_obj(other.as_ref()))
        .collect()
}

impl Reported for SessionPolicy {
    type Status = SessionPolicyStatus;
    const CONDITION: &'static str = reason::READY;
    const ACTION: &'static str = ACTION;
    fn reported(&self) -> (Option<i64>, Vec<Condition>) {
        let status = self.status.clone().unwrap_or_default();
        (status.observed_generation, status.conditions)
    }
}
