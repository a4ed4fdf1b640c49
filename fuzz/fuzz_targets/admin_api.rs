//! The admin API through its axum router (`grantflow_extauthz::admin::router`, driven with
//! `tower::ServiceExt::oneshot`) over a memory store holding one live session: a few calls
//! per input with arbitrary methods, paths, path ids, query strings, bodies (the handlers'
//! serde types built from parts, arbitrary JSON, raw bytes), headers and credentials (an
//! admin's, a user's, another tenant's admin's, none, garbage). No answer may be a 5xx, and
//! every API error must be a readable `application/problem+json` document.
#![no_main]

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use arbitrary::Arbitrary;
use axum::body::Body;
use axum::http::{Request, header};
use grantflow_core::decision::Limits;
use grantflow_core::identity::{Identity, SessionKey};
use grantflow_core::jwks::KeySet;
use grantflow_core::session::AccessRequest;
use grantflow_core::store::{MemoryStore, SessionStore};
use grantflow_extauthz::admin::{self, AdminState};
use grantflow_extauthz::config::{AdminSettings, DEFAULT_ADMIN_ROLE};
use grantflow_extauthz::metrics::Metrics;
use grantflow_fuzz::{Issuer, Json, NOW, OTHER_TENANT, TENANT};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use tower::ServiceExt;

struct World {
    runtime: tokio::runtime::Runtime,
    keys: Arc<KeySet>,
    admin: String,
    user: String,
    foreign_admin: String,
}

static WORLD: LazyLock<World> = LazyLock::new(|| {
    let runtime = grantflow_fuzz::runtime();
    let issuer = Issuer::new();
    let keys = issuer.key_set(&runtime);
    let admin = issuer.sign(&issuer.claims("admin-1", true));
    let user = issuer.sign(&issuer.claims("user-1", false));
    let mut foreign = issuer.claims("admin-2", true);
    foreign["tid"] = json!(OTHER_TENANT);
    foreign["iss"] = json!(format!(
        "https://login.microsoftonline.com/{OTHER_TENANT}/v2.0"
    ));
    let foreign_admin = issuer.sign(&foreign);
    World {
        runtime,
        keys,
        admin,
        user,
        foreign_admin,
    }
});

#[derive(Arbitrary, Debug)]
enum Method {
    Get,
    Post,
    Put,
    Delete,
    Patch,
    Any(String),
}

#[derive(Arbitrary, Debug)]
enum Id {
    Live,
    User,
    Any(String),
}

#[derive(Arbitrary, Debug)]
enum Path {
    Me,
    OpenApi,
    Sessions,
    Session(Id),
    RevokeSession(Id),
    RevokeUser(Id),
    Revocation(Id),
    Blocked,
    Audit,
    Policy,
    Any(String),
}

#[derive(Arbitrary, Debug)]
enum Query {
    None,
    Pairs(Vec<(QueryKey, String)>),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum QueryKey {
    User,
    Sort,
    Limit,
    Offset,
    Action,
    Any(String),
}

#[derive(Arbitrary, Debug)]
enum Text {
    Good,
    Any(String),
    NotAString(Json),
}

#[derive(Arbitrary, Debug)]
enum BodyInput {
    Empty,
    Policy {
        seconds: Option<u64>,
        seconds_json: Option<Json>,
        reason: Option<Text>,
    },
    Revoke {
        reason: Option<Text>,
        lock_until: Option<LockUntil>,
    },
    Json(Json),
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum LockUntil {
    InSeconds(i64),
    Any(String),
    NotAString(Json),
}

#[derive(Arbitrary, Debug)]
enum Auth {
    Admin,
    User,
    ForeignAdmin,
    None,
    Garbage(String),
}

#[derive(Arbitrary, Debug)]
struct Call {
    method: Method,
    path: Path,
    query: Query,
    body: BodyInput,
    json_content_type: bool,
    auth: Auth,
    idempotency_key: Option<String>,
    extra_header: Option<(String, String)>,
}

fn id(id: &Id) -> String {
    match id {
        Id::Live => "sid-user-1".into(),
        Id::User => "user-1".into(),
        Id::Any(s) => percent(s),
    }
}

/// Percent-encodes everything but unreserved characters.
fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn uri(call: &Call) -> String {
    let path = match &call.path {
        Path::Me => "/api/v1/me".to_owned(),
        Path::OpenApi => "/api/v1/openapi.json".to_owned(),
        Path::Sessions => "/api/v1/sessions".to_owned(),
        Path::Session(i) => format!("/api/v1/sessions/{}", id(i)),
        Path::RevokeSession(i) => format!("/api/v1/sessions/{}/revoke", id(i)),
        Path::RevokeUser(i) => format!("/api/v1/users/{}/revoke", id(i)),
        Path::Revocation(i) => format!("/api/v1/users/{}/revocation", id(i)),
        Path::Blocked => "/api/v1/blocked-users".to_owned(),
        Path::Audit => "/api/v1/audit".to_owned(),
        Path::Policy => "/api/v1/policy".to_owned(),
        Path::Any(s) => s.clone(),
    };
    let query = match &call.query {
        Query::None => String::new(),
        Query::Pairs(pairs) => {
            let pairs: Vec<String> = pairs
                .iter()
                .map(|(k, v)| {
                    let k = match k {
                        QueryKey::User => "user".to_owned(),
                        QueryKey::Sort => "sort".to_owned(),
                        QueryKey::Limit => "limit".to_owned(),
                        QueryKey::Offset => "offset".to_owned(),
                        QueryKey::Action => "action".to_owned(),
                        QueryKey::Any(s) => percent(s),
                    };
                    format!("{k}={}", percent(v))
                })
                .collect();
            format!("?{}", pairs.join("&"))
        }
        Query::Raw(s) => format!("?{s}"),
    };
    format!("{path}{query}")
}

fn text(t: &Text) -> Value {
    match t {
        Text::Good => json!("incident 42"),
        Text::Any(s) => json!(s),
        Text::NotAString(j) => j.to_value(),
    }
}

fn body(b: &BodyInput) -> Vec<u8> {
    match b {
        BodyInput::Empty => Vec::new(),
        BodyInput::Policy {
            seconds,
            seconds_json,
            reason,
        } => {
            let mut v = json!({});
            if let Some(s) = seconds {
                v["maxSessionAgeSeconds"] = json!(s);
            }
            if let Some(j) = seconds_json {
                v["maxSessionAgeSeconds"] = j.to_value();
            }
            if let Some(r) = reason {
                v["reason"] = text(r);
            }
            v.to_string().into_bytes()
        }
        BodyInput::Revoke { reason, lock_until } => {
            let mut v = json!({});
            if let Some(r) = reason {
                v["reason"] = text(r);
            }
            match lock_until {
                None => {}
                Some(LockUntil::InSeconds(s)) => {
                    let at = NOW.saturating_add(*s);
                    v["lockUntil"] = json!(
                        humantime::format_rfc3339(
                            std::time::UNIX_EPOCH
                                + Duration::from_secs(at.clamp(0, 253_402_300_799) as u64)
                        )
                        .to_string()
                    );
                }
                Some(LockUntil::Any(s)) => v["lockUntil"] = json!(s),
                Some(LockUntil::NotAString(j)) => v["lockUntil"] = j.to_value(),
            }
            v.to_string().into_bytes()
        }
        BodyInput::Json(j) => j.to_value().to_string().into_bytes(),
        BodyInput::Raw(bytes) => bytes.clone(),
    }
}

fn state(w: &World) -> (AdminState, Arc<MemoryStore>) {
    let clock = grantflow_fuzz::clock();
    let store = Arc::new(MemoryStore::new(Limits::default(), Arc::new(clock.clone())));
    let state = AdminState {
        store: store.clone(),
        keys: w.keys.clone(),
        validator: Arc::new(grantflow_fuzz::validator(w.keys.clone(), &clock)),
        metrics: Arc::new(Metrics::default()),
        store_timeout: Duration::from_secs(10),
        clock: Arc::new(clock.clone()),
        admin: Arc::new(AdminSettings {
            role: DEFAULT_ADMIN_ROLE.into(),
            sign_in: None,
        }),
        dev: None,
        activity: Arc::new(grantflow_extauthz::activity::Activity::new(Arc::new(clock))),
    };
    (state, store)
}

fuzz_target!(|calls: Vec<Call>| {
    let w = &*WORLD;
    let (state, store) = state(w);
    let app = admin::router(state);
    w.runtime.block_on(async {
        let identity = Identity {
            tenant: TENANT.into(),
            user: "user-1".into(),
            display_name: Some("User One".into()),
            session: SessionKey::derive(Some("sid-user-1"), None, ""),
            auth_time: None,
            issued_at: Some(NOW),
            not_before: None,
            expires_at: NOW + 3600,
            roles: vec![],
        };
        store
            .check(&AccessRequest {
                identity: Arc::new(identity),
                client_ip: Some("203.0.113.7".parse().unwrap()),
                user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) Firefox/131.0".into()),
            })
            .await
            .expect("the memory store answers");

        for call in calls.iter().take(4) {
            let uri = uri(call);
            let method = match &call.method {
                Method::Get => "GET".to_owned(),
                Method::Post => "POST".to_owned(),
                Method::Put => "PUT".to_owned(),
                Method::Delete => "DELETE".to_owned(),
                Method::Patch => "PATCH".to_owned(),
                Method::Any(m) => m.clone(),
            };
            // The event stream never ends: not a call to wait on here.
            if uri.starts_with("/api/v1/events") {
                continue;
            }
            let mut request = Request::builder().method(method.as_str()).uri(&uri);
            match &call.auth {
                Auth::Admin => {
                    request = request.header(header::AUTHORIZATION, format!("Bearer {}", w.admin))
                }
                Auth::User => {
                    request = request.header(header::AUTHORIZATION, format!("Bearer {}", w.user))
                }
                Auth::ForeignAdmin => {
                    request =
                        request.header(header::AUTHORIZATION, format!("Bearer {}", w.foreign_admin))
                }
                Auth::None => {}
                Auth::Garbage(g) => request = request.header(header::AUTHORIZATION, g.as_str()),
            }
            if call.json_content_type {
                request = request.header(header::CONTENT_TYPE, "application/json");
            }
            if let Some(key) = &call.idempotency_key {
                request = request.header("idempotency-key", key.as_str());
            }
            if let Some((name, value)) = &call.extra_header {
                request = request.header(name.as_str(), value.as_str());
            }
            // Not an HTTP request at all (a bad method, URI or header): hyper never builds it.
            let Ok(request) = request.body(Body::from(body(&call.body))) else {
                continue;
            };
            let response = app.clone().oneshot(request).await.expect("infallible");
            let status = response.status();
            assert!(
                !status.is_server_error(),
                "{method} {uri} answered {status} for {call:?}"
            );
            let api = uri.starts_with("/api/");
            if api && status.is_client_error() {
                let content_type = response
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                assert!(
                    content_type.starts_with("application/problem+json"),
                    "{method} {uri} answered {status} as {content_type:?}"
                );
                let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                    .await
                    .expect("a problem body");
                let problem: Value = serde_json::from_slice(&bytes).expect("a JSON problem");
                assert_eq!(problem["status"], json!(status.as_u16()), "{problem}");
            }
        }
    });
});
