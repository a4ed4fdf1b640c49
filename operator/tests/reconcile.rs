//! The reconcilers against kube's mocked API server (`tower_test::mock`): every scenario
//! states the exact requests the operator must make — method, URL, body — answers them, and
//! fails when a request is missing or one too many arrives.

use std::sync::Arc;
use std::time::Duration;

use grantflow_core::audit::{Action as AuditAction, ActorKind, Source};
use grantflow_core::clock::{Clock, ManualClock};
use grantflow_core::decision::Limits;
use grantflow_core::identity::{Identity, SessionAnchor, SessionKey};
use grantflow_core::policy::{Policy, PolicySource};
use grantflow_core::session::{AccessRequest, Verdict};
use grantflow_core::store::{MemoryStore, SessionStore, StoreError};
use grantflow_core::testing::{Fault, FaultyStore, Operation};
use grantflow_crds::{
    REQUESTED_BY_ANNOTATION, Revocation, RevocationSpec, RevocationStatus, RevocationTarget,
    SessionPolicy, SessionPolicySpec,
};
use grantflow_operator::context::Context;
use grantflow_operator::metrics::Metrics;
use grantflow_operator::{policy, revocation};
use http::{Request, Response};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Client, Resource};
use serde_json::{Value, json};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const NS: &str = "team";
/// 2026-11-27T12:00:00Z: the operator's clock in every scenario.
const NOW_MS: i64 = 1_795_780_800_000;
const NOW: &str = "2026-11-27T12:00:00Z";

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// The mocked API server: hands out the operator's requests one at a time.
struct ApiServer(Handle);

/// One request the operator made.
struct Call {
    method: String,
    uri: String,
    body: Value,
    respond: tower_test::mock::SendResponse<Response<Body>>,
}

impl Call {
    fn reply(self, status: u16, body: &Value) {
        let response = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap();
        self.respond.send_response(response);
    }

    /// Answers with `object`, carrying the status the request wrote (if it wrote one).
    fn answer(self, object: &impl serde::Serialize) {
        let mut object = serde_json::to_value(object).unwrap();
        if let Some(status) = self.body.get("status") {
            object["status"] = status.clone();
        }
        self.reply(200, &object);
    }

    /// Answers with the JSON the request carried (as the API server would for a create).
    fn echo(self) {
        let body = self.body.clone();
        self.reply(200, &body);
    }

    fn assert(&self, method: &str, uri: &str) {
        assert_eq!(
            (self.method.as_str(), self.uri.as_str()),
            (method, uri),
            "request body: {}",
            self.body
        );
    }
}

impl ApiServer {
    async fn next(&mut self) -> Call {
        let (request, respond) =
            tokio::time::timeout(Duration::from_secs(5), self.0.next_request())
                .await
                .expect("the operator made the expected request within 5 s")
                .expect("the client is still alive");
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("JSON request body")
        };
        Call {
            method: parts.method.to_string(),
            uri: parts.uri.to_string(),
            body,
            respond,
        }
    }

    /// Asserts that no request comes (once every client clone is dropped).
    async fn no_more(mut self) {
        let next = tokio::time::timeout(Duration::from_secs(5), self.0.next_request())
            .await
            .expect("the client was dropped");
        if let Some((request, _)) = next {
            panic!("unexpected request: {} {}", request.method(), request.uri());
        }
    }
}

struct Harness {
    ctx: Arc<Context>,
    api: ApiServer,
    clock: ManualClock,
    metrics: Arc<Metrics>,
}

fn harness(store: Arc<dyn SessionStore>, policies: Store<SessionPolicy>) -> Harness {
    harness_with(store, policies, None)
}

fn harness_with(
    store: Arc<dyn SessionStore>,
    policies: Store<SessionPolicy>,
    retention: Option<Duration>,
) -> Harness {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let clock = ManualClock::new(NOW_MS);
    let metrics = Arc::new(Metrics::default());
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "grantflow-operator".into(),
            instance: Some("test".into()),
        },
    );
    let ctx = Arc::new(Context::new(
        client,
        store,
        recorder,
        metrics.clone(),
        Arc::new(clock.clone()),
        policies,
        Duration::from_secs(1),
        Duration::from_secs(300),
        retention,
    ));
    Harness {
        ctx,
        api: ApiServer(handle),
        clock,
        metrics,
    }
}

fn memory_store(clock: &ManualClock) -> Arc<MemoryStore> {
    Arc::new(MemoryStore::new(Limits::default(), Arc::new(clock.clone())))
}

fn cache(policies: &[&SessionPolicy]) -> Store<SessionPolicy> {
    let (reader, mut writer) = reflector::store();
    writer.apply_watcher_event(&watcher::Event::Init);
    for policy in policies {
        writer.apply_watcher_event(&watcher::Event::InitApply((*policy).clone()));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    reader
}

fn session_policy(name: &str, tenant: &str, max_age: &str, created: &str) -> SessionPolicy {
    let mut policy = SessionPolicy::new(
        name,
        SessionPolicySpec {
            tenant_id: tenant.into(),
            max_session_age: max_age.into(),
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

const EVENTS_URL: &str = "/apis/events.k8s.io/v1/namespaces/team/events?";

/// Asserts an Event about `kind/name` and answers it.
fn assert_event(call: Call, kind: &str, name: &str, type_: &str, reason: &str, note: &str) {
    call.assert("POST", EVENTS_URL);
    let e = &call.body;
    assert_eq!(e["type"], type_, "{e}");
    assert_eq!(e["reason"], reason, "{e}");
    assert_eq!(e["note"], note, "{e}");
    assert_eq!(e["reportingController"], "grantflow-operator");
    assert_eq!(e["regarding"]["kind"], kind);
    assert_eq!(e["regarding"]["name"], name);
    assert_eq!(e["regarding"]["namespace"], NS);
    call.echo();
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({
        "type": type_, "status": status, "reason": reason, "message": message,
        "observedGeneration": 2, "lastTransitionTime": NOW,
    })
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

/// A store that is down: every call fails, and says so.
fn down_store() -> Arc<FaultyStore> {
    let refused = StoreError::Unavailable("connection refused".into());
    Arc::new(FaultyStore::memory().with_fault(Operation::ALL, Fault::Fail(refused)))
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

// --- Revocations --------------------------------------------------------------------------

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
    let verdict = store
        .check(&AccessRequest {
            identity: Arc::new(identity),
            client_ip: None,
            user_agent: None,
        })
        .await
        .unwrap();
    assert!(matches!(verdict, Verdict::Allow { created: true, .. }));
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
