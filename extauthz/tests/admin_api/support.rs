//! The harness every module uses: the admin router over a memory store (optionally seen
//! through a wrapper, such as one whose revocations the replicas do not confirm), a clock the
//! test moves, tokens signed by a test key, and the helpers that make calls and read answers.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use grantflow_core::clock::{Clock, ManualClock};
use grantflow_core::decision::Limits;
use grantflow_core::identity::{Identity, SessionKey};
use grantflow_core::jwks::{KeySet, StaticJwks};
use grantflow_core::session::{AccessRequest, Verdict};
use grantflow_core::store::{MemoryStore, SessionStore, StoreError};
use grantflow_core::testing::{Fault, FaultyStore, Operation};
use grantflow_core::token::{TokenRules, TokenValidator};
use grantflow_extauthz::activity::Activity;
use grantflow_extauthz::admin::{self, AdminState};
use grantflow_extauthz::config::{AdminSettings, DEFAULT_ADMIN_ROLE, DashboardSignIn};
use grantflow_extauthz::metrics::Metrics;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tower::ServiceExt;

pub(crate) const AUDIENCE: &str = "api://grantflow-test";
pub(crate) const CONTOSO: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub(crate) const FABRIKAM: &str = "11111111-2222-4333-8444-555555555555";
/// 2026-09-21T14:13:20Z.
pub(crate) const START: i64 = 1_790_000_000_000;
pub(crate) const CHROME_ON_LINUX: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

pub(crate) struct Harness {
    pub(crate) app: Router,
    pub(crate) store: Arc<MemoryStore>,
    pub(crate) clock: ManualClock,
    pub(crate) key: EncodingKey,
    pub(crate) activity: Arc<Activity>,
    /// The request path's validator (for an `Authorizer` in tests).
    pub(crate) validator: Arc<TokenValidator>,
}

pub(crate) fn harness() -> Harness {
    harness_with(None)
}

pub(crate) fn harness_with(sign_in: Option<DashboardSignIn>) -> Harness {
    harness_over(sign_in, |store| store)
}

/// A harness whose API sees the memory store through `wrap`.
pub(crate) fn harness_over(
    sign_in: Option<DashboardSignIn>,
    wrap: impl FnOnce(Arc<dyn SessionStore>) -> Arc<dyn SessionStore>,
) -> Harness {
    let pair = KeyPair::generate(KeySize::Rsa2048).unwrap();
    let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair).unwrap();
    let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", der.as_ref().to_vec()));
    let key = EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap();
    jwk.common.key_id = Some("test-key".into());
    let clock = ManualClock::new(START);
    let keys = Arc::new(KeySet::new(
        StaticJwks::new(JwkSet { keys: vec![jwk] }),
        Duration::from_secs(1),
    ));
    let validator = Arc::new(TokenValidator::new(
        TokenRules::entra(vec![AUDIENCE.into()]),
        keys.clone(),
        Arc::new(clock.clone()),
    ));
    let store = Arc::new(MemoryStore::new(Limits::default(), Arc::new(clock.clone())));
    let activity = Arc::new(Activity::new(Arc::new(clock.clone())));
    let state = AdminState {
        store: wrap(store.clone()),
        keys,
        validator: validator.clone(),
        metrics: Arc::new(Metrics::default()),
        store_timeout: Duration::from_millis(50),
        clock: Arc::new(clock.clone()),
        admin: Arc::new(AdminSettings {
            role: DEFAULT_ADMIN_ROLE.into(),
            sign_in,
        }),
        dev: None,
        activity: activity.clone(),
    };
    Harness {
        app: admin::router(state),
        store,
        clock,
        key,
        activity,
        validator,
    }
}

impl Harness {
    pub(crate) fn claims(&self, tenant: &str, user: &str, sid: &str, admin: bool) -> Value {
        let now = self.clock.now_secs();
        let mut claims = json!({
            "iss": format!("https://login.microsoftonline.com/{tenant}/v2.0"),
            "aud": AUDIENCE,
            "tid": tenant,
            "oid": user,
            "sid": sid,
            "preferred_username": format!("{user}@{}.test", &tenant[..8]),
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
        });
        if admin {
            claims["roles"] = json!([DEFAULT_ADMIN_ROLE]);
        }
        claims
    }

    pub(crate) fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("test-key".into());
        encode(&header, claims, &self.key).unwrap()
    }

    pub(crate) fn admin(&self, tenant: &str, user: &str) -> String {
        self.sign(&self.claims(tenant, user, &format!("sid-{user}"), true))
    }

    pub(crate) fn user(&self, tenant: &str, user: &str) -> String {
        self.sign(&self.claims(tenant, user, &format!("sid-{user}"), false))
    }

    /// Five Contoso sessions a second apart (`sid-0` .. `sid-4` of user-a, user-b, user-a,
    /// user-c, user-a) and one Fabrikam session of user-a: the listing tests' tenant.
    pub(crate) async fn listing_sessions(&self) {
        for (i, user) in ["user-a", "user-b", "user-a", "user-c", "user-a"]
            .iter()
            .enumerate()
        {
            self.session(CONTOSO, user, &format!("sid-{i}")).await;
            self.clock.advance(Duration::from_secs(1));
        }
        self.session(FABRIKAM, "user-a", "sid-fabrikam").await;
    }

    /// A user's request through the request path: creates or touches session `sid`.
    pub(crate) async fn session(&self, tenant: &str, user: &str, sid: &str) -> Verdict {
        self.signed_in(tenant, user, sid, None).await
    }

    /// A user's request whose token says the user signed in at `auth_time` (seconds).
    pub(crate) async fn signed_in(
        &self,
        tenant: &str,
        user: &str,
        sid: &str,
        auth_time: Option<i64>,
    ) -> Verdict {
        let identity = Identity {
            tenant: tenant.into(),
            user: user.into(),
            display_name: Some(format!("{user}@example.test")),
            session: SessionKey::derive(Some(sid), None, ""),
            auth_time,
            issued_at: Some(self.clock.now_secs()),
            not_before: None,
            expires_at: self.clock.now_secs() + 3600,
            roles: vec![],
        };
        let request = AccessRequest {
            identity: Arc::new(identity),
            client_ip: Some("203.0.113.7".parse().unwrap()),
            user_agent: Some(CHROME_ON_LINUX.into()),
        };
        self.store.check(&request).await.unwrap()
    }

    pub(crate) async fn call(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Response<Body> {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body = match body {
            Some(body) => {
                request = request.header("content-type", "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        self.app
            .clone()
            .oneshot(request.body(body).unwrap())
            .await
            .unwrap()
    }

    pub(crate) async fn get(&self, uri: &str, token: Option<&str>) -> (StatusCode, Value) {
        read_json(self.call("GET", uri, token, None, &[]).await).await
    }

    pub(crate) async fn send(
        &self,
        method: &str,
        uri: &str,
        token: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        read_json(self.call(method, uri, Some(token), Some(body), &[]).await).await
    }
}

/// Status and JSON body; an error must be a problem document.
pub(crate) async fn read_json(response: Response<Body>) -> (StatusCode, Value) {
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !status.is_success() {
        assert_eq!(
            content_type.as_deref(),
            Some("application/problem+json"),
            "errors are problem documents: {status} {value}"
        );
        assert_eq!(value["status"], status.as_u16());
    }
    (status, value)
}

pub(crate) fn detail(problem: &Value) -> &str {
    problem["detail"].as_str().unwrap_or_default()
}

/// `store` whose revocations take effect but are not confirmed by replicas (Redis `WAIT`
/// with a lagging replica): the first `times` of them, or every one.
pub(crate) fn unconfirmed_revocations(
    store: Arc<dyn SessionStore>,
    times: Option<u32>,
) -> FaultyStore {
    let fault = Fault::FailAfter(StoreError::NotReplicated {
        acknowledged: 0,
        wanted: 1,
    });
    let store = FaultyStore::new(store);
    match times {
        Some(times) => store.with_fault_times([Operation::Revoke], fault, times),
        None => store.with_fault([Operation::Revoke], fault),
    }
}

/// A call's status, the `Idempotent-Replayed` header and the JSON body.
pub(crate) async fn keyed(
    h: &Harness,
    uri: &str,
    token: &str,
    body: Value,
    key: &str,
) -> (StatusCode, Option<String>, Value) {
    let response = h
        .call(
            "POST",
            uri,
            Some(token),
            Some(body),
            &[("idempotency-key", key)],
        )
        .await;
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .map(|v| v.to_str().unwrap().to_owned());
    let (status, body) = read_json(response).await;
    (status, replayed, body)
}

/// The session ids of a page of `GET /api/v1/sessions`, in order.
pub(crate) fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}
