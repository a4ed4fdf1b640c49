//! The SessionPolicy reconciler: finalizer, applying and reporting a policy, conflicts,
//! invalid specs, store outages, and deletion.

use std::sync::Arc;
use std::time::Duration;

use grantflow_core::audit::{Action as AuditAction, ActorKind, Source};
use grantflow_core::clock::ManualClock;
use grantflow_core::policy::{Policy, PolicySource};
use grantflow_core::store::SessionStore;
use grantflow_crds::{SessionPolicy, SessionPolicySpec};
use grantflow_operator::policy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use crate::harness::{
    Harness, NOW, NOW_MS, NS, TENANT, assert_event, cache, condition, down_store, harness,
    memory_store,
};

fn session_policy(name: &str, tenant: &str, max_age: &str, created: &str) -> SessionPolicy {
    let mut policy = SessionPolicy::new(
        name,
        SessionPolicySpec {
            tenant_id: tenant.into(),
            max_session_age: max_age.into(),
            idle_timeout: None,
            max_sessions_per_user: None,
            on_limit: Default::default(),
        },
    );
    policy.metadata.namespace = Some(NS.into());
    policy.metadata.uid = Some(format!("uid-{name}"));
    policy.metadata.generation = Some(2);
    policy.metadata.creation_timestamp = Some(Time(created.parse::<Timestamp>().unwrap()));
    policy.metadata.finalizers = Some(vec![policy::FINALIZER.into()]);
    policy
}

fn policy_status_url(name: &str) -> String {
    format!(
        "/apis/session.grantflow.io/v1alpha1/namespaces/{NS}/sessionpolicies/{name}/status?&force=true&fieldManager=grantflow-operator"
    )
}

fn policy_status_patch(conditions: Value) -> Value {
    json!({
        "apiVersion": "session.grantflow.io/v1alpha1",
        "kind": "SessionPolicy",
        "status": { "observedGeneration": 2, "conditions": conditions },
    })
}

#[tokio::test]
async fn a_new_policy_gets_the_finalizer_first() {
    let clock = ManualClock::new(NOW_MS);
    let store = memory_store(&clock);
    let mut fresh = session_policy("contoso", TENANT, "30m", NOW);
    fresh.metadata.finalizers = None;
    let Harness { ctx, mut api, .. } = harness(store.clone(), cache(&[&fresh]));
    let reply = serde_json::to_value(&fresh).unwrap();
    let server = tokio::spawn(async move {
        let call = api.next().await;
        call.assert(
            "PATCH",
            "/apis/session.grantflow.io/v1alpha1/namespaces/team/sessionpolicies/contoso?",
        );
        assert_eq!(
            call.body,
            json!([
                { "op": "test", "path": "/metadata/finalizers", "value": null },
                { "op": "add", "path": "/metadata/finalizers", "value": ["session.grantflow.io/policy"] },
            ])
        );
        call.answer(&reply);
        api
    });
    let action = policy::reconcile(Arc::new(fresh), ctx.clone())
        .await
        .unwrap();
    assert_eq!(action, Action::await_change());
    drop(ctx);
    server.await.unwrap().no_more().await;
    assert_eq!(
        store.policy(TENANT).await.unwrap().source,
        PolicySource::Default,
        "nothing applied before the finalizer is in place"
    );
}

/// The idle timeout and the session limit reach the store with the max age, and a spec that
/// breaks their bounds (an idle timeout over the max age) is not applied.
#[tokio::test]
async fn the_idle_timeout_and_session_limit_are_applied_and_checked() {
    let clock = ManualClock::new(NOW_MS);
    let store = memory_store(&clock);
    let mut contoso = session_policy("contoso", TENANT, "30m", NOW);
    contoso.spec.idle_timeout = Some("10m".into());
    contoso.spec.max_sessions_per_user = Some(3);
    contoso.spec.on_limit = grantflow_crds::OnLimit::EndOldest;
    let Harness { ctx, mut api, .. } = harness(store.clone(), cache(&[&contoso]));
    let reply = serde_json::to_value(&contoso).unwrap();
    let server = tokio::spawn(async move {
        let call = api.next().await;
        call.assert("PATCH", &policy_status_url("contoso"));
        call.answer(&reply);
        let _event = api.next().await;
        api
    });
    policy::reconcile(Arc::new(contoso.clone()), ctx.clone())
        .await
        .unwrap();
    server.await.unwrap();
    let policy = store.policy(TENANT).await.unwrap();
    assert_eq!(policy.idle_timeout, Some(Duration::from_secs(600)));
    assert_eq!(policy.max_sessions_per_user, Some(3));
    assert_eq!(policy.on_limit, grantflow_core::policy::OnLimit::EndOldest);
    let audit = store.audit(TENANT, 10).await.unwrap();
    assert_eq!(
        audit[0].detail.as_deref(),
        Some("maxSessionAge 30m, idleTimeout 10m, maxSessionsPerUser 3 (EndOldest)")
    );

    let mut longer = session_policy(
        "fabrikam",
        "0f0f0f0f-0000-4000-8000-000000000002",
        "30m",
        NOW,
    );
    longer.spec.idle_timeout = Some("31m".into());
    let Harness { ctx, mut api, .. } = harness(store.clone(), cache(&[&longer]));
    let reply = serde_json::to_value(&longer).unwrap();
    let server = tokio::spawn(async move {
        let call = api.next().await;
        call.assert("PATCH", &policy_status_url("fabrikam"));
        let text = call.body.to_string();
        assert!(text.contains("InvalidSpec"), "{text}");
        assert!(
            text.contains("idleTimeout \\\"31m\\\": the idle timeout must be between 1 minute and the maximum session age"),
            "{text}"
        );
        call.answer(&reply);
        let _event = api.next().await;
        api
    });
    policy::reconcile(Arc::new(longer), ctx.clone())
        .await
        .unwrap();
    server.await.unwrap();
    assert_eq!(
        store
            .policy("0f0f0f0f-0000-4000-8000-000000000002")
            .await
            .unwrap()
            .source,
        PolicySource::Default,
        "not applied"
    );
}

#[tokio::test]
async fn a_policy_is_applied_reported_ready_once_and_audited() {
    let clock = ManualClock::new(NOW_MS);
    let store = memory_store(&clock);
    let contoso = session_policy("contoso", TENANT, "30m", NOW);
    let Harness {
        ctx,
        mut api,
        metrics,
        ..
    } = harness(store.clone(), cache(&[&contoso]));
    let message = format!("sessions of tenant {TENANT} end 30m after sign-in");
    let expected_status =
        policy_status_patch(json!([condition("Ready", "True", "Applied", &message)]));
    let answered = expected_status.clone();
    let reply = serde_json::to_value(&contoso).unwrap();
    let server = tokio::spawn(async move {
        let call = api.next().await;
        call.assert("PATCH", &policy_status_url("contoso"));
        assert_eq!(call.body, answered);
        call.answer(&reply);
        assert_event(
            api.next().await,
            "SessionPolicy",
            "contoso",
            "Normal",
            "Applied",
            &message,
        );
        api
    });
    let action = policy::reconcile(Arc::new(contoso.clone()), ctx.clone())
        .await
        .unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    let api = server.await.unwrap();

    let policy = store.policy(TENANT).await.unwrap();
    assert_eq!(policy.max_session_age, Duration::from_secs(30 * 60));
    assert_eq!(
        policy.source,
        PolicySource::Kubernetes("team/contoso".into())
    );
    let audit = store.audit(TENANT, 10).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].action, AuditAction::PolicyUpdate);
    assert_eq!(audit[0].actor.kind, ActorKind::Kubernetes);
    assert_eq!(audit[0].source, Source::Kubernetes);
    assert_eq!(audit[0].detail.as_deref(), Some("maxSessionAge 30m"));

    // The periodic re-check, an hour later, with the status as written: nothing to do.
    clock.advance(Duration::from_secs(3600));
    let mut applied = contoso;
    applied.status = Some(serde_json::from_value(expected_status["status"].clone()).unwrap());
    policy::reconcile(Arc::new(applied), ctx.clone())
        .await
        .unwrap();
    assert_eq!(
        store.audit(TENANT, 10).await.unwrap().len(),
        1,
        "no second audit record"
    );
    drop(ctx);
    api.no_more().await;
    let rendered = metrics.render();
    assert!(
        rendered.contains(r#"grantflow_operator_reconciliations_total{controller="sessionpolicy",outcome="Applied"} 2"#),
        "{rendered}"
    );
}

#[tokio::test]
async fn the_later_of_two_policies_for_one_tenant_is_a_conflict() {
    let clock = ManualClock::new(NOW_MS);
    let store = memory_store(&clock);
    let first = session_policy("contoso", TENANT, "30m", "2026-11-27T10:00:00Z");
    let mut second = session_policy(
        "contoso-too",
        &TENANT.to_uppercase(),
        "5m",
        "2026-11-27T11:00:00Z",
    );
    second.metadata.namespace = Some(NS.into());
    let Harness { ctx, mut api, .. } = harness(store.clone(), cache(&[&first, &second]));
    let message =
        format!("tenant {TENANT} already has SessionPolicy team/contoso; this one is not applied");
    let expected = policy_status_patch(json!([condition("Ready", "False", "Conflict", &message)]));
    let reply = serde_json::to_value(&second).unwrap();
    let server = tokio::spawn(async move {
        let call = api.next().await;
        call.assert("PATCH", &policy_status_url("contoso-too"));
        assert_eq!(call.body, expected);
        call.answer(&reply);
        assert_event(
            api.next().await,
            "SessionPolicy",
            "contoso-too",
            "Warning",
            "Conflict",
            &message,
        );
        api
    });
    let action = policy::reconcile(Arc::new(second), ctx.clone())
        .await
        .unwrap();
    assert_eq!(action, Action::await_change());
    drop(ctx);
    server.await.unwrap().no_more().await;
    assert_eq!(
        store.policy(TENANT).await.unwrap().source,
        PolicySource::Default,
        "the loser writes nothing"
    );
    assert!(store.audit(TENANT, 10).await.unwrap().is_empty());

    // The other way round, the older one is not affected by the newer.
    let cache = cache(&[&first]);
    let peers = policy::same_tenant(&cache, &session_policy("x", TENANT, "5m", NOW));
    assert_eq!(
        peers.len(),
        1,
        "a change to a policy wakes the others of its tenant"
    );
}

#[tokio::test]
async fn an_invalid_spec_is_reported_and_not_applied() {
    let clock = ManualClock::new(NOW_MS);
    let store = memory_store(&clock);
    let bad = session_policy("contoso", TENANT, "30s", NOW);
    let Harness { ctx, mut api, .. } = harness(store.clone(), cache(&[&bad]));
    let message = "maxSessionAge \"30s\": the maximum session age must be between 1 minute and 24 hours; not applied, the session store keeps what it had";
    let expected =
        policy_status_patch(json!([condition("Ready", "False", "InvalidSpec", message)]));
    let reply = serde_json::to_value(&bad).unwrap();
    let server = tokio::spawn(async move {
        let call = api.next().await;
        call.assert("PATCH", &policy_status_url("contoso"));
        assert_eq!(call.body, expected);
        call.answer(&reply);
        assert_event(
            api.next().await,
            "SessionPolicy",
            "contoso",
            "Warning",
            "InvalidSpec",
            message,
        );
        api
    });
    let action = policy::reconcile(Arc::new(bad), ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    drop(ctx);
    server.await.unwrap().no_more().await;
    assert_eq!(
        store.policy(TENANT).await.unwrap().source,
        PolicySource::Default
    );
}

#[tokio::test]
async fn a_store_outage_is_reported_and_retried() {
    let store = down_store();
    let contoso = session_policy("contoso", TENANT, "30m", NOW);
    let Harness {
        ctx,
        mut api,
        metrics,
        ..
    } = harness(store.clone(), cache(&[&contoso]));
    let message = "the session store did not take the policy: the session store is unavailable: connection refused";
    let expected = policy_status_patch(json!([condition(
        "Ready",
        "False",
        "StoreUnavailable",
        message
    )]));
    let reply = serde_json::to_value(&contoso).unwrap();
    let server = tokio::spawn(async move {
        let call = api.next().await;
        call.assert("PATCH", &policy_status_url("contoso"));
        assert_eq!(call.body, expected);
        call.answer(&reply);
        assert_event(
            api.next().await,
            "SessionPolicy",
            "contoso",
            "Warning",
            "StoreUnavailable",
            message,
        );
        api
    });
    let contoso = Arc::new(contoso);
    let error = policy::reconcile(contoso.clone(), ctx.clone())
        .await
        .unwrap_err();
    assert_eq!(error.metric_label(), "store_unavailable");
    assert_eq!(
        policy::error_policy(contoso.clone(), &error, ctx.clone()),
        Action::requeue(Duration::from_secs(1))
    );
    assert_eq!(
        policy::error_policy(contoso, &error, ctx.clone()),
        Action::requeue(Duration::from_secs(2)),
        "backing off"
    );
    drop(ctx);
    server.await.unwrap().no_more().await;
    assert!(store.calls() >= 1);
    let rendered = metrics.render();
    assert!(
        rendered.contains(r#"grantflow_operator_reconcile_errors_total{controller="sessionpolicy",error="store_unavailable"} 2"#),
        "{rendered}"
    );
}

#[tokio::test]
async fn deleting_the_policy_in_force_returns_the_tenant_to_the_default() {
    let clock = ManualClock::new(NOW_MS);
    let store = memory_store(&clock);
    store
        .set_policy(
            TENANT,
            Policy {
                max_session_age: Duration::from_secs(300),
                idle_timeout: None,
                max_sessions_per_user: None,
                on_limit: Default::default(),
                source: PolicySource::Kubernetes("team/contoso".into()),
            },
            None,
        )
        .await
        .unwrap();
    let mut deleting = session_policy("contoso", TENANT, "5m", NOW);
    deleting.metadata.deletion_timestamp = Some(Time(NOW.parse().unwrap()));
    let Harness { ctx, mut api, .. } = harness(store.clone(), cache(&[&deleting]));
    let note = format!("deleted; tenant {TENANT} is back on the default policy");
    let reply = serde_json::to_value(&deleting).unwrap();
    let server = tokio::spawn(async move {
        assert_event(
            api.next().await,
            "SessionPolicy",
            "contoso",
            "Normal",
            "Deleted",
            &note,
        );
        let call = api.next().await;
        call.assert(
            "PATCH",
            "/apis/session.grantflow.io/v1alpha1/namespaces/team/sessionpolicies/contoso?",
        );
        assert_eq!(
            call.body,
            json!([
                { "op": "test", "path": "/metadata/finalizers/0", "value": "session.grantflow.io/policy" },
                { "op": "remove", "path": "/metadata/finalizers/0" },
            ])
        );
        call.answer(&reply);
        api
    });
    policy::reconcile(Arc::new(deleting), ctx.clone())
        .await
        .unwrap();
    drop(ctx);
    server.await.unwrap().no_more().await;
    assert_eq!(
        store.policy(TENANT).await.unwrap(),
        Policy::default_with(Duration::from_secs(15 * 60))
    );
}

#[tokio::test]
async fn deleting_a_conflicting_policy_leaves_the_owner_in_force() {
    let clock = ManualClock::new(NOW_MS);
    let store = memory_store(&clock);
    let owner = Policy {
        max_session_age: Duration::from_secs(1800),
        idle_timeout: None,
        max_sessions_per_user: None,
        on_limit: Default::default(),
        source: PolicySource::Kubernetes("team/contoso".into()),
    };
    store.set_policy(TENANT, owner.clone(), None).await.unwrap();
    let mut loser = session_policy("contoso-too", TENANT, "5m", NOW);
    loser.metadata.deletion_timestamp = Some(Time(NOW.parse().unwrap()));
    let Harness { ctx, mut api, .. } = harness(store.clone(), cache(&[&loser]));
    let reply = serde_json::to_value(&loser).unwrap();
    let server = tokio::spawn(async move {
        assert_event(
            api.next().await,
            "SessionPolicy",
            "contoso-too",
            "Normal",
            "Deleted",
            "deleted; it was not in force",
        );
        let call = api.next().await;
        assert_eq!(call.method, "PATCH");
        call.answer(&reply);
        api
    });
    policy::reconcile(Arc::new(loser), ctx.clone())
        .await
        .unwrap();
    drop(ctx);
    server.await.unwrap().no_more().await;
    assert_eq!(store.policy(TENANT).await.unwrap(), owner);
}
