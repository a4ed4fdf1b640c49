//! The signal endpoints through the admin router: off by default, the statuses the OpenAPI
//! document lists, the security headers and `no-store`, and a failing store answered 503 with
//! nothing recorded, so the sender's retry is applied. (The flows through Envoy with the real
//! issuer are in the end-to-end tests, `tests/tests/signals.rs`.)

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use grantflow_core::clock::{Clock, ManualClock};
use grantflow_core::decision::Limits;
use grantflow_core::jwks::{KeySet, StaticJwks};
use grantflow_core::signals::{BACKCHANNEL_LOGOUT_EVENT, CAEP_SESSION_REVOKED, Transmitter};
use grantflow_core::store::{MemoryStore, SessionStore, StoreError};
use grantflow_core::testing::{Fault, FaultyStore, Operation};
use grantflow_core::token::{TokenRules, TokenValidator};
use grantflow_extauthz::activity::Activity;
use grantflow_extauthz::admin::{self, AdminState, OPENAPI_JSON, SIGNAL_ROUTES, Signals};
use grantflow_extauthz::config::{AdminSettings, DEFAULT_ADMIN_ROLE};
use grantflow_extauthz::metrics::Metrics;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::support::{AUDIENCE, CONTOSO, START};

const CLIENT: &str = "client-app";
const TRANSMITTER: &str = "https://ssf.example.test";
const RECEIVER: &str = "https://grantflow.example.test/ssf";

struct Signed {
    app: Router,
    key: EncodingKey,
    clock: ManualClock,
    store: Arc<MemoryStore>,
}

/// The admin router with both endpoints on; the first `failures` revocations fail.
fn app(signals_on: bool, failures: u32) -> Signed {
    let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let der = aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair).unwrap();
    let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", der.as_ref().to_vec()));
    let key = EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap();
    jwk.common.key_id = Some("k".into());
    let jwks = || {
        Arc::new(KeySet::new(
            StaticJwks::new(JwkSet {
                keys: vec![jwk.clone()],
            }),
            Duration::from_secs(1),
        ))
    };
    let clock = ManualClock::new(START);
    let keys = jwks();
    let store = Arc::new(MemoryStore::new(Limits::default(), Arc::new(clock.clone())));
    let faulty = FaultyStore::new(store.clone()).with_fault_times(
        [Operation::Revoke],
        Fault::Fail(StoreError::Unavailable("test".into())),
        failures,
    );
    let state = AdminState {
        store: Arc::new(faulty) as Arc<dyn SessionStore>,
        validator: Arc::new(TokenValidator::new(
            TokenRules::entra(vec![AUDIENCE.into()]),
            keys.clone(),
            Arc::new(clock.clone()),
        )),
        keys,
        metrics: Arc::new(Metrics::default()),
        store_timeout: Duration::from_millis(50),
        clock: Arc::new(clock.clone()),
        admin: Arc::new(AdminSettings {
            role: DEFAULT_ADMIN_ROLE.into(),
            sign_in: None,
        }),
        dev: None,
        activity: Arc::new(Activity::new(Arc::new(clock.clone()))),
    };
    let signals = if signals_on {
        Signals {
            backchannel_audiences: vec![CLIENT.into()],
            ssf: Some(admin::SsfReceiver {
                transmitter: Transmitter {
                    issuer: TRANSMITTER.into(),
                    audiences: vec![RECEIVER.into()],
                },
                keys: jwks(),
            }),
        }
    } else {
        Signals::default()
    };
    Signed {
        app: admin::router_with_signals(signals, state),
        key,
        clock,
        store,
    }
}

impl Signed {
    fn sign(&self, typ: &str, claims: Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("k".into());
        header.typ = Some(typ.into());
        encode(&header, &claims, &self.key).unwrap()
    }

    fn logout(&self, jti: &str) -> String {
        self.sign(
            "logout+jwt",
            json!({
                "iss": format!("https://login.microsoftonline.com/{CONTOSO}/v2.0"),
                "aud": CLIENT, "iat": self.clock.now_secs(), "jti": jti,
                "sub": "user-1", "sid": "sid-1",
                "events": { BACKCHANNEL_LOGOUT_EVENT: {} },
            }),
        )
    }

    fn set(&self, jti: &str) -> String {
        self.sign(
            "secevent+jwt",
            json!({
                "iss": TRANSMITTER, "aud": RECEIVER, "iat": self.clock.now_secs(), "jti": jti,
                "events": { CAEP_SESSION_REVOKED: { "subject": {
                    "format": "complex",
                    "user": { "format": "opaque", "id": "user-1" },
                    "session": { "format": "opaque", "id": "sid-1" },
                    "tenant": { "format": "opaque", "id": CONTOSO },
                } } },
            }),
        )
    }

    /// POSTs `body` to `path` (form-encoded for the logout endpoint): status, headers, body.
    async fn post(&self, path: &str, token: &str) -> (StatusCode, axum::http::HeaderMap, String) {
        let (content_type, body) = if path == admin::BACKCHANNEL_LOGOUT_PATH {
            (
                "application/x-www-form-urlencoded",
                format!("logout_token={token}"),
            )
        } else {
            ("application/secevent+jwt", token.to_owned())
        };
        let request = Request::builder()
            .method("POST")
            .uri(path)
            .header("content-type", content_type)
            .body(Body::from(body))
            .unwrap();
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
    }

    async fn post_valid(&self, path: &str, jti: &str) -> (StatusCode, String) {
        let token = if path == admin::BACKCHANNEL_LOGOUT_PATH {
            self.logout(jti)
        } else {
            self.set(jti)
        };
        let (status, _, body) = self.post(path, &token).await;
        (status, body)
    }
}

fn documented(path: &str, status: StatusCode) -> bool {
    let doc: Value = serde_json::from_str(OPENAPI_JSON).unwrap();
    doc["paths"][path]["post"]["responses"]
        .as_object()
        .is_some_and(|responses| responses.contains_key(status.as_str()))
}

#[tokio::test]
async fn off_by_default_each_endpoint_answers_404() {
    let h = app(false, 0);
    for (_, path) in SIGNAL_ROUTES {
        let (status, _, _) = h.post(path, "x").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(documented(path, status), "{path} {status}");
    }
}

#[tokio::test]
async fn each_endpoint_answers_only_statuses_its_operation_documents() {
    let h = app(true, 0);
    for (_, path) in SIGNAL_ROUTES {
        let (status, headers, _) = h.post(path, "not-a-jwt").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        assert!(documented(path, status), "{path} {status}");
        assert_eq!(headers["cache-control"], "no-store", "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        let (status, _) = h.post_valid(path, &format!("ok-{path}")).await;
        assert!(
            status.is_success() && documented(path, status),
            "{path} {status}"
        );
        let too_big = "a".repeat(65 * 1024);
        let (status, _, _) = h.post(path, &too_big).await;
        assert!(documented(path, status), "{path} {status}");
    }
}

#[tokio::test]
async fn a_failing_store_answers_503_and_the_senders_retry_is_applied() {
    for (_, path) in SIGNAL_ROUTES {
        let h = app(true, 1);
        let (status, _) = h.post_valid(path, "retried").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert!(documented(path, status), "{path} {status}");
        assert!(h.store.audit(CONTOSO, 10).await.unwrap().is_empty());
        let (status, _) = h.post_valid(path, "retried").await;
        assert!(status.is_success(), "{path} {status}");
        assert_eq!(h.store.audit(CONTOSO, 10).await.unwrap().len(), 1, "{path}");
        // Once applied, the same token again: a logout token is refused, a SET accepted;
        // neither is applied twice.
        let (status, _) = h.post_valid(path, "retried").await;
        let expected = if *path == admin::BACKCHANNEL_LOGOUT_PATH {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::ACCEPTED
        };
        assert_eq!(status, expected, "{path}");
        assert_eq!(h.store.audit(CONTOSO, 10).await.unwrap().len(), 1, "{path}");
    }
}
