//! The mocked API server (the operator's requests, one at a time, asserted and answered),
//! the reconcilers' context over a memory store or a store that is down, and the helpers
//! every scenario uses: the reflector cache, events, status conditions.

use std::sync::Arc;
use std::time::Duration;

use grantflow_core::clock::ManualClock;
use grantflow_core::decision::Limits;
use grantflow_core::store::{MemoryStore, SessionStore, StoreError};
use grantflow_core::testing::{Fault, FaultyStore, Operation};
use grantflow_crds::SessionPolicy;
use grantflow_operator::context::Context;
use grantflow_operator::metrics::Metrics;
use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use serde_json::{Value, json};

pub(crate) const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub(crate) const NS: &str = "team";
/// 2026-11-27T12:00:00Z: the operator's clock in every scenario.
pub(crate) const NOW_MS: i64 = 1_795_780_800_000;
pub(crate) const NOW: &str = "2026-11-27T12:00:00Z";

pub(crate) type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// The mocked API server: hands out the operator's requests one at a time.
pub(crate) struct ApiServer(Handle);

/// One request the operator made.
pub(crate) struct Call {
    pub(crate) method: String,
    pub(crate) uri: String,
    pub(crate) body: Value,
    pub(crate) respond: tower_test::mock::SendResponse<Response<Body>>,
}

impl Call {
    pub(crate) fn reply(self, status: u16, body: &Value) {
        let response = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap();
        self.respond.send_response(response);
    }

    /// Answers with `object`, carrying the status the request wrote (if it wrote one).
    pub(crate) fn answer(self, object: &impl serde::Serialize) {
        let mut object = serde_json::to_value(object).unwrap();
        if let Some(status) = self.body.get("status") {
            object["status"] = status.clone();
        }
        self.reply(200, &object);
    }

    /// Answers with the JSON the request carried (as the API server would for a create).
    pub(crate) fn echo(self) {
        let body = self.body.clone();
        self.reply(200, &body);
    }

    pub(crate) fn assert(&self, method: &str, uri: &str) {
        assert_eq!(
            (self.method.as_str(), self.uri.as_str()),
            (method, uri),
            "request body: {}",
            self.body
        );
    }
}

impl ApiServer {
    pub(crate) async fn next(&mut self) -> Call {
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
    pub(crate) async fn no_more(mut self) {
        let next = tokio::time::timeout(Duration::from_secs(5), self.0.next_request())
            .await
            .expect("the client was dropped");
        if let Some((request, _)) = next {
            panic!("unexpected request: {} {}", request.method(), request.uri());
        }
    }
}

pub(crate) struct Harness {
    pub(crate) ctx: Arc<Context>,
    pub(crate) api: ApiServer,
    pub(crate) clock: ManualClock,
    pub(crate) metrics: Arc<Metrics>,
}

pub(crate) fn harness(store: Arc<dyn SessionStore>, policies: Store<SessionPolicy>) -> Harness {
    harness_with(store, policies, None)
}

pub(crate) fn harness_with(
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

pub(crate) fn memory_store(clock: &ManualClock) -> Arc<MemoryStore> {
    Arc::new(MemoryStore::new(Limits::default(), Arc::new(clock.clone())))
}

pub(crate) fn cache(policies: &[&SessionPolicy]) -> Store<SessionPolicy> {
    let (reader, mut writer) = reflector::store();
    writer.apply_watcher_event(&watcher::Event::Init);
    for policy in policies {
        writer.apply_watcher_event(&watcher::Event::InitApply((*policy).clone()));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    reader
}

pub(crate) const EVENTS_URL: &str = "/apis/events.k8s.io/v1/namespaces/team/events?";

/// Asserts an Event about `kind/name` and answers it.
pub(crate) fn assert_event(
    call: Call,
    kind: &str,
    name: &str,
    type_: &str,
    reason: &str,
    note: &str,
) {
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

pub(crate) fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({
        "type": type_, "status": status, "reason": reason, "message": message,
        "observedGeneration": 2, "lastTransitionTime": NOW,
    })
}

/// A store that is down: every call fails, and says so.
pub(crate) fn down_store() -> Arc<FaultyStore> {
    let refused = StoreError::Unavailable("connection refused".into());
    Arc::new(FaultyStore::memory().with_fault(Operation::ALL, Fault::Fail(refused)))
}
