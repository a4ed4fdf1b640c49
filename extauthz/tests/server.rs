//! The server as Envoy and Kubernetes meet it, without Envoy: gRPC health, the Check API,
//! readiness, metrics, and a store that fails refusing with 503.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::ext_authz::v3::pb::{CheckRequest, HttpResponse};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use grantflow_core::clock::SystemClock;
use grantflow_core::decision::Limits;
use grantflow_core::store::{MemoryStore, SessionStore, StoreError};
use grantflow_core::testing::{Fault, FaultyStore, Operation};
use grantflow_extauthz::config::{Cli, Settings};
use grantflow_extauthz::server::{self, Running};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A store that never answers in time, like a frozen Redis: requests and pings hang, every
/// other call fails; housekeeping is left to the memory store underneath.
fn hanging_store() -> FaultyStore {
    let others = Operation::ALL.into_iter().filter(|operation| {
        ![Operation::Check, Operation::Ping, Operation::Maintain].contains(operation)
    });
    FaultyStore::memory()
        .with_fault([Operation::Check, Operation::Ping], Fault::Hang)
        .with_fault(others, Fault::Fail(StoreError::Unavailable("down".into())))
}

fn dev_settings() -> Settings {
    use clap::Parser;
    let cli = Cli::parse_from([
        "grantflow-extauthz",
        "--dev",
        "--grpc-addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
        "--store-timeout",
        "50ms",
    ]);
    Settings::from_options(cli.options).expect("valid dev settings")
}

async fn start(store: Arc<dyn SessionStore>) -> Running {
    server::start(&dev_settings(), store, Arc::new(SystemClock))
        .await
        .expect("starts")
}

fn check_request(token: Option<&str>) -> CheckRequest {
    let mut headers =
        std::collections::HashMap::from([("accept".to_string(), "text/html".to_string())]);
    if let Some(token) = token {
        headers.insert("authorization".into(), format!("Bearer {token}"));
    }
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

async fn http_get(url: String) -> (u16, String) {
    let response = reqwest::get(url).await.expect("admin answers");
    (
        response.status().as_u16(),
        response.text().await.unwrap_or_default(),
    )
}

#[tokio::test]
async fn health_check_ready_and_metrics() {
    let store = Arc::new(MemoryStore::new(Limits::default(), Arc::new(SystemClock)));
    let running = start(store).await;
    let endpoint = format!("http://{}", running.grpc_addr);

    let channel = tonic::transport::Endpoint::from_shared(endpoint.clone()).unwrap();
    let mut health = HealthClient::new(channel.connect().await.unwrap());
    for service in ["", "envoy.service.auth.v3.Authorization"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "service {service:?}");
    }

    let admin = running.admin_addr;
    let (_, token) = http_get(format!("http://{admin}/dev/token?user=ada")).await;
    let mut client = AuthorizationClient::connect(endpoint).await.unwrap();
    let allowed = client
        .check(check_request(Some(token.trim())))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(allowed.status.unwrap().code, 0);
    assert!(matches!(
        allowed.http_response,
        Some(HttpResponse::OkResponse(_))
    ));
    let denied = client
        .check(check_request(None))
        .await
        .unwrap()
        .into_inner();
    match denied.http_response {
        Some(HttpResponse::DeniedResponse(page)) => {
            assert_eq!(page.status.unwrap().code, 401);
            assert!(page.body.contains("Sign in again"));
        }
        other => panic!("expected a denial, got {other:?}"),
    }

    assert_eq!(http_get(format!("http://{admin}/healthz")).await.0, 200);
    assert_eq!(http_get(format!("http://{admin}/readyz")).await.0, 200);
    let (status, metrics) = http_get(format!("http://{admin}/metrics")).await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains(r#"grantflow_checks_total{outcome="allow"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"grantflow_checks_total{outcome="missing_token"} 1"#),
        "{metrics}"
    );
    running.stop().await;
}

#[tokio::test]
async fn a_store_that_does_not_answer_refuses_with_503_and_is_not_ready() {
    let running = start(Arc::new(hanging_store())).await;
    let admin = running.admin_addr;
    let (_, token) = http_get(format!("http://{admin}/dev/token?user=bob")).await;
    let mut client = AuthorizationClient::connect(format!("http://{}", running.grpc_addr))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let answer = client
        .check(check_request(Some(token.trim())))
        .await
        .unwrap()
        .into_inner();
    let took = started.elapsed();
    match answer.http_response {
        Some(HttpResponse::DeniedResponse(page)) => {
            assert_eq!(page.status.unwrap().code, 503);
            assert!(
                page.body.contains("Temporarily unavailable"),
                "{}",
                page.body
            );
            assert!(
                !page.body.contains("timeout"),
                "no internal error text in the page"
            );
        }
        other => panic!("expected a 503 denial, got {other:?}"),
    }
    assert_eq!(
        answer.status.unwrap().code,
        14,
        "gRPC UNAVAILABLE in the CheckResponse status"
    );
    // Reported, not asserted (a shared machine is noisy): the budget is 50 ms.
    println!("refused after {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "the call is bounded by the store budget, not hung"
    );
    assert_eq!(http_get(format!("http://{admin}/readyz")).await.0, 503);
    running.stop().await;
}
