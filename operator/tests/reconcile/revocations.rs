//! The Revocation reconciler: applied once as its requester and reported, retried without
//! revoking twice, refused without a recorded requester, store outages, and deletion after
//! the retention.

use std::sync::Arc;
use std::time::Duration;

use grantflow_core::audit::{Action as AuditAction, ActorKind, Source};
use grantflow_core::clock::{Clock, ManualClock};
use grantflow_core::identity::{Identity, SessionAnchor, SessionKey};
use grantflow_core::session::{AccessRequest, Verdict};
use grantflow_core::store::{MemoryStore, SessionStore};
use grantflow_crds::{
    REQUESTED_BY_ANNOTATION, Revocation, RevocationSpec, RevocationStatus, RevocationTarget,
};
use grantflow_operator::revocation;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Resource;
use kube::runtime::controller::Action;
use serde_json::json;

use crate::harness::{
    Harness, NOW, NOW_MS, NS, TENANT, assert_event, cache, condition, down_store, harness,
    harness_with, memory_store,
};

fn user_revocation(name: &str, requested_by: Option<&str>) -> Revocation {
    let mut r = Revocation::new(
        name,
        RevocationSpec {
            tenant_id: TENANT.into(),
            target: RevocationTarget {
                session_id: None,
                user_id: Some("user-mallory".into()),
            },
            reason: "INC-2041 credential theft".into(),
            lock_until: None,
            message: None,
        },
    );
    r.metadata.namespace = Some(NS.into());
    r.metadata.uid = Some(format!("uid-{name}"));
    r.metadata.generation = Some(2);
    if let Some(user) = requested_by {
        r.metadata.annotations =
            Some([(REQUESTED_BY_ANNOTATION.to_owned(), user.to_owned())].into());
    }
    r
}

fn revocation_status_url(name: &str) -> String {
    format!(
        "/apis/session.grantflow.io/v1alpha1/namespaces/{NS}/revocations/{name}/status?&force=true&fieldManager=grantflow-operator"
    )
}

/// Opens a session for `user` in the test tenant.
async fn open_session(store: &MemoryStore, user: &str, sid: &str, clock: &ManualClock) {
    let verdict = sign_in(store, user, sid, clock).await;
    assert!(matches!(verdict, Verdict::Allow { created: true, .. }));
}

/// A request of `user` with a token of a sign-in now, in the test tenant: the store's verdict.
async fn sign_in(store: &MemoryStore, user: &str, sid: &str, clock: &ManualClock) -> Verdict {
    let identity = Identity {
        tenant: TENANT.into(),
        user: user.into(),
        display_name: None,
        session: SessionKey {
            id: sid.into(),
            anchor: SessionAnchor::Sid,
        },
        // A sign-in now: after a revoke-all only a token with a later `auth_time` gets in.
        auth_time: Some(clock.now_secs()),
        issued_at: Some(clock.now_secs()),
        not_before: None,
        expires_at: clock.now_secs() + 3600,
        roles: Vec::new(),
    };
    store
        .check(&AccessRequest {
            identity: Arc::new(identity),
            client_ip: None,
            user_agent: None,
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn a_revocation_is_applied_once_as_its_requester_and_reported() {
    let clock = ManualClock::new(NOW_MS);
    let store = memory_store(&clock);
    open_session(&store, "user-mallory", "sid-1", &clock).await;
    open_session(&store, "user-mallory", "sid-2", &clock).await;
    let revocation = user_revocation("inc-2041", Some("alice@contoso.com"));
    let Harness { ctx, mut api, .. } = harness(store.clone(), cache(&[]));
    let audit_store = store.clone();
    let reply = serde_json::to_value(&revocation).unwrap();
    let server = tokio::spawn(async move {
        let call = api.next().await;
        call.assert("PATCH", &revocation_status_url("inc-2041"));
        let audit = audit_store.audit(TENANT, 10).await.unwrap();
        assert_eq!(
            audit.len(),
            1,
            "the status is written after the store acknowledged"
        );
        let audit_id = &audit[0].id;
        let message = format!(
            "ended the sessions of user user-mallory in tenant {TENANT}: 2 live session(s) revoked (audit record {audit_id})"
        );
        assert_eq!(
            call.body,
            json!({
                "apiVersion": "session.grantflow.io/v1alpha1",
                "kind": "Revocation",
                "status": {
                    "observedGeneration": 2,
                    "conditions": [condition("Applied", "True", "Revoked", &message)],
                    "appliedAt": NOW,
                    "sessionsRevoked": 2,
                    "requestedBy": "alice@contoso.com",
                    "auditId": audit_id,
                },
            })
        );
        let status = call.body["status"].clone();
        call.answer(&reply);
        assert_event(
            api.next().await,
            "Revocation",
            "inc-2041",
            "Normal",
            "Revoked",
            &message,
        );
        (api, status)
    });
    let action = revocation::reconcile(Arc::new(revocation.clone()), ctx.clone())
        .await
        .unwrap();
    assert_eq!(action, Action::await_change());
    let (api, status) = server.await.unwrap();

    let audit = store.audit(TENANT, 10).await.unwrap();
    assert_eq!(audit[0].action, AuditAction::UserRevoke);
    assert_eq!(audit[0].actor.kind, ActorKind::Kubernetes);
    assert_eq!(audit[0].actor.id, "alice@contoso.com");
    assert_eq!(audit[0].source, Source::Kubernetes);
    assert_eq!(
        audit[0].reason.as_deref(),
        Some("INC-2041 credential theft")
    );
    assert!(store.sessions(TENANT).await.unwrap().is_empty());

    // Re-reconciled (a resync, an operator restart) with its status: nothing happens at all.
    clock.advance(std::time::Duration::from_secs(1));
    open_session(&store, "user-mallory", "sid-3", &clock).await;
    let mut applied = revocation;
    applied.status = Some(serde_json::from_value::<RevocationStatus>(status).unwrap());
    assert!(applied.is_applied());
    let action = revocation::reconcile(Arc::new(applied), ctx.clone())
        .await
        .unwrap();
    assert_eq!(action, Action::await_change());
    // One store write, timed; the applied one wrote nothing.
    assert!(
        ctx.metrics
            .render()
            .contains("grantflow_operator_revocation_write_duration_seconds_count 1\n")
    );
    drop(ctx);
    api.no_more().await;
    assert_eq!(
        store.audit(TENANT, 10).await.unwrap().len(),
        1,
        "no second audit record"
    );
    assert_eq!(
        store.sessions(TENANT).await.unwrap().len(),
        1,
        "no second revocation"
    );
}

#[tokio::test]
async fn a_lost_status_write_is_retried_without_revoking_twice() {
    // The crash window: the store acknowledged, the status write did not land.
    let clock = ManualClock::new(NOW_MS);
    let store = memory_store(&clock);
    open_session(&store, "user-mallory", "sid-1", &clock).await;
    let revocation = Arc::new(user_revocation("inc-2041", Some("alice@contoso.com")));
    let Harness { ctx, mut api, .. } = harness(store.clone(), cache(&[]));
    let reply = serde_json::to_value(&*revocation).unwrap();
    let server = tokio::spawn(async move {
        let call = api.next().await;
        call.assert("PATCH", &revocation_status_url("inc-2041"));
        let first = call.body["status"].clone();
        call.reply(
            500,
            &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 500, "reason": "InternalError", "message": "etcd leader changed"}),
        );
        // The retry after a restart: the same outcome, from the store's idempotency key.
        let call = api.next().await;
        call.assert("PATCH", &revocation_status_url("inc-2041"));
        assert_eq!(call.body["status"], first);
        assert_eq!(call.body["status"]["sessionsRevoked"], 1);
        call.answer(&reply);
        let event = api.next().await;
        assert_eq!(event.body["reason"], "Revoked");
        event.echo();
        api
    });
    let error = revocation::reconcile(revocation.clone(), ctx.clone())
        .await
        .unwrap_err();
    assert_eq!(error.metric_label(), "kubernetes");
    clock.advance(std::time::Duration::from_secs(1));
    open_session(&store, "user-mallory", "sid-after", &clock).await;
    revocation::reconcile(revocation, ctx.clone())
        .await
        .unwrap();
    drop(ctx);
    server.await.unwrap().no_more().await;
    assert_eq!(
        store.audit(TENANT, 10).await.unwrap().len(),
        1,
        "one audit record"
    );
    // Applied once: the watermark did not move, so a session opened after it lives on.
    assert_eq!(store.sessions(TENANT).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_revocation_without_a_recorded_requester_is_not_applied() {
    let clock = ManualClock::new(NOW_MS);
    let store = memory_store(&clock);
    let revocation = user_revocation("typed-by-hand", None);
    let Harness { ctx, mut api, .. } = harness(store.clone(), cache(&[]));
    let reply = serde_json::to_value(&revocation).unwrap();
    let server = tokio::spawn(async move {
        let call = api.next().await;
        call.assert("PATCH", &revocation_status_url("typed-by-hand"));
        let conditions = &call.body["status"]["conditions"];
        assert_eq!(conditions[0]["status"], "False");
        assert_eq!(conditions[0]["reason"], "RequesterUnknown");
        assert!(call.body["status"].get("appliedAt").is_none());
        call.answer(&reply);
        let event = api.next().await;
        assert_eq!(
            (event.body["type"].as_str(), event.body["reason"].as_str()),
            (Some("Warning"), Some("RequesterUnknown"))
        );
        event.echo();
        api
    });
    revocation::reconcile(Arc::new(revocation), ctx.clone())
        .await
        .unwrap();
    drop(ctx);
    server.await.unwrap().no_more().await;
    assert!(store.audit(TENANT, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_revocation_during_a_store_outage_is_reported_and_retried() {
    let store = down_store();
    let revocation = Arc::new(user_revocation("inc-2041", Some("alice@contoso.com")));
    let Harness { ctx, mut api, .. } = harness(store, cache(&[]));
    let message =
        "not applied yet, will retry: the session store is unavailable: connection refused";
    let reply = serde_json::to_value(&*revocation).unwrap();
    let server = tokio::spawn(async move {
        let call = api.next().await;
        call.assert("PATCH", &revocation_status_url("inc-2041"));
        assert_eq!(
            call.body,
            json!({
                "apiVersion": "session.grantflow.io/v1alpha1",
                "kind": "Revocation",
                "status": {
                    "observedGeneration": 2,
                    "conditions": [condition("Applied", "False", "StoreUnavailable", message)],
                },
            })
        );
        call.answer(&reply);
        assert_event(
            api.next().await,
            "Revocation",
            "inc-2041",
            "Warning",
            "StoreUnavailable",
            message,
        );
        api
    });
    let error = revocation::reconcile(revocation.clone(), ctx.clone())
        .await
        .unwrap_err();
    assert_eq!(error.metric_label(), "store_unavailable");
    assert_eq!(
        revocation::error_policy(revocation, &error, ctx.clone()),
        Action::requeue(Duration::from_secs(1))
    );
    drop(ctx);
    server.await.unwrap().no_more().await;
}

#[tokio::test]
async fn an_applied_revocation_is_deleted_after_the_retention() {
    let clock = ManualClock::new(NOW_MS);
    let store = memory_store(&clock);
    let mut applied = user_revocation("inc-2041", Some("alice@contoso.com"));
    applied.status = Some(RevocationStatus {
        applied_at: Some(Time(NOW.parse().unwrap())),
        audit_id: Some("audit-1".into()),
        sessions_revoked: Some(0),
        requested_by: Some("alice@contoso.com".into()),
        ..RevocationStatus::default()
    });
    let applied = Arc::new(applied);
    let retention = Duration::from_secs(7 * 24 * 3600);
    let Harness {
        ctx,
        mut api,
        clock,
        ..
    } = harness_with(store, cache(&[]), Some(retention));
    // Not yet due: it comes back when it is.
    clock.advance(Duration::from_secs(24 * 3600));
    let action = revocation::reconcile(applied.clone(), ctx.clone())
        .await
        .unwrap();
    assert_eq!(
        action,
        Action::requeue(retention - Duration::from_secs(24 * 3600))
    );
    clock.advance(retention);
    let reply = serde_json::to_value(&*applied).unwrap();
    let server = tokio::spawn(async move {
        let call = api.next().await;
        call.assert(
            "DELETE",
            "/apis/session.grantflow.io/v1alpha1/namespaces/team/revocations/inc-2041?",
        );
        call.answer(&reply);
        api
    });
    revocation::reconcile(applied, ctx.clone()).await.unwrap();
    drop(ctx);
    server.await.unwrap().no_more().await;
}

#[test]
fn the_revocation_object_key_is_the_stores_idempotency_key() {
    let r = user_revocation("inc-2041", Some("alice"));
    let request =
        grantflow_operator::spec::revocation(&r.spec, "alice", r.meta().uid.as_deref().unwrap())
            .unwrap();
    assert_eq!(request.idempotency_key.as_deref(), Some("uid-inc-2041"));
}

/// Locks that explain themselves: a Revocation with `lockUntil` and `message` locks the user
/// with the message (cleaned), which the user's refusal and the audit record carry.
#[tokio::test]
async fn a_lock_with_a_message_is_applied_and_the_users_refusal_carries_it() {
    let clock = ManualClock::new(NOW_MS);
    let store = memory_store(&clock);
    open_session(&store, "user-mallory", "sid-1", &clock).await;
    let until = "2026-11-27T14:00:00Z";
    let until_ms = NOW_MS + 2 * 3_600_000;
    let mut revocation = user_revocation("inc-2041-lock", Some("alice@contoso.com"));
    revocation.spec.lock_until = Some(Time(until.parse().unwrap()));
    revocation.spec.message = Some(" INC-2041 <b>call</b> the desk\r\n\u{202E}".into());
    let Harness { ctx, mut api, .. } = harness(store.clone(), cache(&[]));
    let reply = serde_json::to_value(&revocation).unwrap();
    let server = tokio::spawn(async move {
        let call = api.next().await;
        call.assert("PATCH", &revocation_status_url("inc-2041-lock"));
        let conditions = &call.body["status"]["conditions"];
        assert_eq!(conditions[0]["status"], "True", "{}", call.body);
        let said = conditions[0]["message"].as_str().unwrap();
        assert!(
            said.starts_with(
                "ended the sessions of user user-mallory (locked out until \
                 2026-11-27T14:00:00.000Z) in tenant"
            ),
            "{said}"
        );
        assert_eq!(call.body["status"]["sessionsRevoked"], 1);
        call.answer(&reply);
        let event = api.next().await;
        assert_eq!(event.body["reason"], "Revoked");
        event.echo();
        api
    });
    revocation::reconcile(Arc::new(revocation), ctx.clone())
        .await
        .unwrap();
    drop(ctx);
    server.await.unwrap().no_more().await;

    let message = "INC-2041 <b>call</b> the desk";
    let blocked = store.blocked_users(TENANT).await.unwrap();
    assert_eq!(blocked.len(), 1);
    assert_eq!(blocked[0].lock_until, Some(until_ms));
    assert_eq!(blocked[0].message.as_deref(), Some(message));
    let audit = store.audit(TENANT, 10).await.unwrap();
    assert_eq!(audit[0].action, AuditAction::UserLock);
    assert_eq!(
        audit[0].detail.as_deref(),
        Some(format!("locked until 2026-11-27T14:00:00.000Z: {message}").as_str())
    );
    // A fresh sign-in of the user is refused with the lock's end and message.
    clock.advance(Duration::from_secs(1));
    let verdict = sign_in(&store, "user-mallory", "sid-2", &clock).await;
    assert_eq!(
        verdict,
        Verdict::Locked {
            until: until_ms,
            message: Some(message.into()),
        }
    );
}

/// Where the schema is missing, the operator refuses a message without a lock itself.
#[tokio::test]
async fn a_message_without_a_lock_is_an_invalid_spec_and_changes_nothing() {
    let clock = ManualClock::new(NOW_MS);
    let store = memory_store(&clock);
    let mut revocation = user_revocation("no-lock", Some("alice@contoso.com"));
    revocation.spec.message = Some("INC-2041".into());
    let Harness { ctx, mut api, .. } = harness(store.clone(), cache(&[]));
    let reply = serde_json::to_value(&revocation).unwrap();
    let server = tokio::spawn(async move {
        let call = api.next().await;
        call.assert("PATCH", &revocation_status_url("no-lock"));
        let condition = &call.body["status"]["conditions"][0];
        assert_eq!(condition["status"], "False");
        assert_eq!(condition["reason"], "InvalidSpec");
        assert_eq!(
            condition["message"],
            "message applies to a lock only: set lockUntil and target.userId"
        );
        call.answer(&reply);
        let event = api.next().await;
        assert_eq!(event.body["reason"], "InvalidSpec");
        event.echo();
        api
    });
    revocation::reconcile(Arc::new(revocation), ctx.clone())
        .await
        .unwrap();
    drop(ctx);
    server.await.unwrap().no_more().await;
    assert!(store.audit(TENANT, 10).await.unwrap().is_empty());
    assert!(store.blocked_users(TENANT).await.unwrap().is_empty());
}
