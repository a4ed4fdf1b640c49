//! The Revocation controller: applies each Revocation once, then reports it.
//!
//! Applying is idempotent on two levels:
//! 1. a Revocation whose status records `appliedAt` and `auditId` is never applied again — a
//!    re-reconcile or an operator restart does nothing (no store call, no API call);
//! 2. the store call carries the object's uid as idempotency key, so the store itself applies
//!    it at most once and answers a repeat with the first outcome (same audit id, no second
//!    record). That closes the crash window between "the store acknowledged" and "the status
//!    says so": the status is written *after* the store call, and if the operator dies or the
//!    status write fails in between, the retry gets the first outcome back from the store
//!    (within the store's retention, 24 h by default) and writes it.
//!
//! The audit actor is the Kubernetes user who created the object, recorded by the admission
//! webhook in [`REQUESTED_BY_ANNOTATION`]; without that annotation nothing is applied
//! (`Applied=False, reason=RequesterUnknown`), since anyone could have typed it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use grantflow_core::clock::millis;
use grantflow_core::revocation::RevocationTarget;
use grantflow_crds::{REQUESTED_BY_ANNOTATION, Revocation, RevocationStatus};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams};
use kube::runtime::controller::Action;

use crate::context::{Context, Error, object_key};
use crate::spec;
use crate::status::{Reported, Verdict, reason, time, write_status};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// The controller's name in metrics.
pub const CONTROLLER: &str = "revocation";

/// The `action` of this controller's Events.
pub(crate) const ACTION: &str = "Revoke";

fn key(revocation: &Revocation) -> String {
    object_key(revocation)
}

/// Reconciles one Revocation.
pub async fn reconcile(revocation: Arc<Revocation>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&revocation, &ctx).await;
    ctx.metrics.observe(CONTROLLER, started.elapsed());
    if result.is_ok() {
        ctx.succeeded(&key(&revocation));
    }
    result
}

/// Retries a failed apply with a per-object backoff.
pub fn error_policy(revocation: Arc<Revocation>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(CONTROLLER, error.metric_label());
    let delay = ctx.retry_after(&key(&revocation));
    tracing::warn!(revocation = %key(&revocation), %error, retry_in = ?delay, "Revocation reconcile failed");
    Action::requeue(delay)
}

async fn reconcile_inner(revocation: &Revocation, ctx: &Context) -> Result<Action, Error> {
    let namespace = revocation
        .namespace()
        .ok_or(Error::Incomplete("namespace"))?;
    let api: Api<Revocation> = Api::namespaced(ctx.client.clone(), &namespace);
    if revocation.is_applied() {
        return expire(revocation, ctx, &api).await;
    }
    let uid = revocation.uid().ok_or(Error::Incomplete("uid"))?;
    let requested_by = revocation
        .annotations()
        .get(REQUESTED_BY_ANNOTATION)
        .filter(|user| !user.is_empty());
    let Some(requested_by) = requested_by else {
        let verdict = Verdict::failed(
            reason::REQUESTER_UNKNOWN,
            format!(
                "not applied: the admission webhook did not record who created this Revocation \
                 ({REQUESTED_BY_ANNOTATION}); is the operator's MutatingWebhookConfiguration \
                 installed? Create the Revocation again once it is"
            ),
        );
        ctx.metrics.outcome(CONTROLLER, verdict.reason);
        report(&api, revocation, ctx, &verdict, None).await?;
        return Ok(Action::await_change());
    };
    let request = match spec::revocation(&revocation.spec, requested_by, &uid) {
        Ok(request) => request,
        Err(invalid) => {
            let verdict = Verdict::failed(reason::INVALID_SPEC, invalid.0);
            ctx.metrics.outcome(CONTROLLER, verdict.reason);
            report(&api, revocation, ctx, &verdict, None).await?;
            return Ok(Action::await_change());
        }
    };
    let written = ctx.store_call(ctx.store.revoke(&request));
    match ctx.metrics.time_revocation(written).await {
        Ok(outcome) => {
            let what = match &request.target {
                RevocationTarget::Session(session) => format!("session {session}"),
                RevocationTarget::User {
                    user,
                    lock_until: Some(until),
                    ..
                } => format!(
                    "the sessions of user {user} (locked out until {})",
                    grantflow_core::clock::rfc3339(*until)
                ),
                RevocationTarget::User { user, .. } => format!("the sessions of user {user}"),
            };
            let verdict = Verdict::ok(
                reason::REVOKED,
                format!(
                    "ended {what} in tenant {}: {} live session(s) revoked (audit record {})",
                    request.tenant, outcome.sessions_revoked, outcome.audit_id
                ),
            );
            let applied = Applied {
                at: ctx.clock.now_ms(),
                sessions_revoked: outcome.sessions_revoked,
                requested_by: requested_by.clone(),
                audit_id: outcome.audit_id,
            };
            ctx.metrics.outcome(CONTROLLER, verdict.reason);
            report(&api, revocation, ctx, &verdict, Some(applied)).await?;
            Ok(match ctx.revocation_retention {
                Some(retention) => Action::requeue(retention),
                None => Action::await_change(),
            })
        }
        Err(error) => {
            let verdict = Verdict::failed(
                reason::STORE_UNAVAILABLE,
                format!("not applied yet, will retry: {error}"),
            );
            ctx.metrics.outcome(CONTROLLER, verdict.reason);
            report(&api, revocation, ctx, &verdict, None).await?;
            Err(error.into())
        }
    }
}

/// Deletes an applied Revocation once it is older than the configured retention.
async fn expire(
    revocation: &Revocation,
    ctx: &Context,
    api: &Api<Revocation>,
) -> Result<Action, Error> {
    let applied_at = revocation
        .status
        .as_ref()
        .and_then(|s| s.applied_at.as_ref())
        .map(|t| t.0.as_millisecond());
    let (Some(retention), Some(applied_at)) = (ctx.revocation_retention, applied_at) else {
        return Ok(Action::await_change());
    };
    let due = applied_at.saturating_add(millis(retention));
    let now = ctx.clock.now_ms();
    if now < due {
        return Ok(Action::requeue(Duration::from_millis(
            (due - now).unsigned_abs(),
        )));
    }
    api.delete(&revocation.name_any(), &DeleteParams::default())
        .await?;
    ctx.metrics.outcome(CONTROLLER, "expired");
    tracing::info!(revocation = %key(revocation), "deleted an applied Revocation past its retention");
    Ok(Action::await_change())
}

/// Writes the `Applied` condition through [`write_status`]; once applied, also what was
/// applied (always written then).
async fn report(
    api: &Api<Revocation>,
    revocation: &Revocation,
    ctx: &Context,
    verdict: &Verdict,
    applied: Option<Applied>,
) -> Result<(), Error> {
    let changed = applied.is_some();
    write_status(
        api,
        revocation,
        ctx,
        verdict,
        changed,
        |observed_generation, conditions| RevocationStatus {
            observed_generation,
            conditions,
            applied_at: applied.as_ref().map(|a| time(a.at)),
            sessions_revoked: applied.as_ref().map(|a| a.sessions_revoked),
            requested_by: applied.as_ref().map(|a| a.requested_by.clone()),
            audit_id: applied.as_ref().map(|a| a.audit_id.clone()),
        },
    )
    .await
}

/// The facts of a successful apply.
struct Applied {
    at: i64,
    sessions_revoked: u32,
    requested_by: String,
    audit_id: String,
}

impl Reported for Revocation {
    type Status = RevocationStatus;
    const CONDITION: &'static str = reason::APPLIED_TYPE;
    const ACTION: &'static str = ACTION;
    fn reported(&self) -> (Option<i64>, Vec<Condition>) {
        let status = self.status.clone().unwrap_or_default();
        (status.observed_generation, status.conditions)
    }
}
