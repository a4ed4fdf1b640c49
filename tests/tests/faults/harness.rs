//! What every fault test uses: issuer, upstream, the extauthz binary and Envoy in front
//! ([`Fault`]), a [`Watcher`] that sends one token over and over and records what it [`Got`],
//! tallies of those answers, and the admin API calls.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use grantflow_e2e::envoy::Envoy;
use grantflow_e2e::issuer::Issuer;
use grantflow_e2e::process::Extauthz;
use grantflow_e2e::stack::{AUDIENCE, SIGN_IN_URL, TENANT};
use grantflow_e2e::unique;
use grantflow_e2e::upstream::Upstream;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
const ADMIN_ROLE: &str = "GrantFlow.SessionAdmin";
const ADMIN_USER: &str = "admin-oid-0001";
pub const PROBLEMS: &str = "https://grantflow.io/problems/";
/// Every wait for a recovery (a restarted process, Redis back, a failover) is bounded by this.
pub const RECOVERY: Duration = Duration::from_secs(30);

/// Lets the watchers run a while in the present phase of a test.
pub async fn hold() {
    tokio::time::sleep(Duration::from_millis(400)).await;
}

pub fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    i64::try_from(since.as_millis()).expect("milliseconds fit")
}

pub fn now_secs() -> i64 {
    now_ms() / 1000
}

/// Waits until the next whole second has begun.
pub async fn next_second() {
    let now = now_secs();
    while now_secs() == now {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What a request through Envoy got.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Got {
    Allowed,
    /// 401 `session-expired` ("Session expired").
    Expired,
    /// 401 `session-revoked` ("Your session was ended").
    Revoked,
    /// 401 `sign-in-again` ("Sign in again": a revoke-all, and no proof of a later sign-in).
    SignInAgain,
    /// 503 from extauthz: the store did not answer.
    Unavailable,
    /// Anything else: Envoy's own 503 while extauthz is down, a connection error (0), …
    Other(u16, String),
}

/// One request of a [`Watcher`]: when it was sent, what it got.
pub type Seen = (Instant, Got);

/// Requests one token through Envoy over and over until stopped, recording every answer.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Vec<Seen>>,
}

impl Watcher {
    pub fn start(fault: &Fault, token: &str) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let (http, url, token, flag) = (
            fault.http.clone(),
            fault.envoy.url("/"),
            token.to_owned(),
            stop.clone(),
        );
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            // Bounded: at most 2 minutes of requests.
            for _ in 0..6_000 {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                let sent = Instant::now();
                seen.push((sent, got(&http, &url, &token).await));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            seen
        });
        Watcher { stop, task }
    }

    pub async fn finish(self) -> Vec<Seen> {
        self.stop.store(true, Ordering::Relaxed);
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the watcher stops within 10 s")
            .expect("the watcher ran")
    }
}

/// The answers of requests sent in `[from, to)`, counted by kind.
pub fn tally(seen: &[Seen], from: Instant, to: Option<Instant>) -> BTreeMap<Got, usize> {
    let mut counts = BTreeMap::new();
    for (sent, got) in seen {
        if *sent >= from && to.is_none_or(|to| *sent < to) {
            *counts.entry(got.clone()).or_insert(0) += 1;
        }
    }
    counts
}

pub fn allowed(counts: &BTreeMap<Got, usize>) -> usize {
    counts.get(&Got::Allowed).copied().unwrap_or(0)
}

async fn got(http: &reqwest::Client, url: &str, token: &str) -> Got {
    let response = http
        .get(url)
        .bearer_auth(token)
        .header("accept", "application/json")
        .send()
        .await;
    let response = match response {
        Ok(response) => response,
        Err(error) => return Got::Other(0, error.to_string()),
    };
    let status = response.status().as_u16();
    if status == 200 {
        return Got::Allowed;
    }
    let body = response.text().await.unwrap_or_default();
    let kind = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|problem| problem["type"].as_str().map(str::to_owned));
    match (
        status,
        kind.as_deref().and_then(|t| t.strip_prefix(PROBLEMS)),
    ) {
        (401, Some("session-expired")) => Got::Expired,
        (401, Some("session-revoked")) => Got::Revoked,
        (401, Some("sign-in-again")) => Got::SignInAgain,
        (503, Some("unavailable")) => Got::Unavailable,
        _ => Got::Other(status, body.chars().take(120).collect()),
    }
}

/// Issuer, upstream, the extauthz binary with the given store flags, and Envoy in front.
pub struct Fault {
    issuer: Issuer,
    _upstream: Upstream,
    pub extauthz: Extauthz,
    envoy: Envoy,
    pub http: reqwest::Client,
}

impl Fault {
    pub async fn start(store: &[String]) -> Fault {
        let issuer = Issuer::start().await;
        let upstream = Upstream::start().await;
        let mut args: Vec<OsString> = [
            "--jwks-url",
            &issuer.jwks_uri,
            "--audiences",
            AUDIENCE,
            "--sign-in-url",
            SIGN_IN_URL,
            "--jwks-min-refetch-interval",
            "100ms",
            // Under Envoy's 0.5 s ext_authz deadline, generous for a loaded machine.
            "--store-timeout",
            "400ms",
        ]
        .into_iter()
        .map(OsString::from)
        .collect();
        args.extend(store.iter().map(OsString::from));
        let extauthz = Extauthz::start(args).await;
        let envoy = Envoy::start(extauthz.grpc_addr, upstream.addr).await;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("an HTTP client");
        Fault {
            issuer,
            _upstream: upstream,
            extauthz,
            envoy,
            http,
        }
    }

    /// Entra ID v2 access-token claims of the test tenant; a `None` claim is left out.
    pub fn claims(user: &str, sid: Option<&str>, auth_time: Option<i64>, iat: i64) -> Value {
        json!({
            "iss": format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
            "aud": AUDIENCE,
            "tid": TENANT,
            "oid": user,
            "sub": user,
            "sid": sid,
            "auth_time": auth_time,
            "preferred_username": format!("{user}@contoso.test"),
            "iat": iat,
            "nbf": iat,
            "ver": "2.0",
            "scp": "access_as_user",
        })
    }

    /// A token issued (`iat`) now.
    pub async fn token(&self, user: &str, sid: Option<&str>, auth_time: Option<i64>) -> String {
        self.token_issued(user, sid, auth_time, now_secs()).await
    }

    /// A token issued at `iat` (seconds).
    pub async fn token_issued(
        &self,
        user: &str,
        sid: Option<&str>,
        auth_time: Option<i64>,
        iat: i64,
    ) -> String {
        self.issuer
            .token(Self::claims(user, sid, auth_time, iat))
            .await
    }

    /// A tenant administrator's token, issued now, in a session of its own.
    pub async fn admin_token(&self) -> String {
        let sid = format!("admin-sid-{}", unique());
        let mut claims = Self::claims(ADMIN_USER, Some(&sid), None, now_secs());
        claims["roles"] = json!([ADMIN_ROLE]);
        self.issuer.token(claims).await
    }

    pub async fn got(&self, token: &str) -> Got {
        got(&self.http, &self.envoy.url("/"), token).await
    }

    /// The `<h1>` of the page a browser gets, with the status.
    pub async fn page(&self, token: &str) -> (u16, String) {
        let response = self
            .http
            .get(self.envoy.url("/"))
            .bearer_auth(token)
            .header("accept", BROWSER_ACCEPT)
            .send()
            .await
            .expect("Envoy answers");
        let status = response.status().as_u16();
        let html = response.text().await.unwrap_or_default();
        let heading = html
            .split_once("<h1>")
            .and_then(|(_, rest)| rest.split_once("</h1>"))
            .map(|(h1, _)| h1.to_owned())
            .unwrap_or_default();
        (status, heading)
    }

    /// Requests `token` until the answer is neither extauthz's nor Envoy's 503 (the store or
    /// the process coming back); that answer.
    pub async fn first_answer(&self, token: &str) -> Got {
        let deadline = Instant::now() + RECOVERY;
        loop {
            let got = self.got(token).await;
            match &got {
                Got::Unavailable | Got::Other(503 | 0, _) => {}
                _ => return got,
            }
            assert!(
                Instant::now() < deadline,
                "no answer but 503 within {RECOVERY:?}: {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `POST /api/v1/users/{user}/revoke` (revoke-all) with an optional `Idempotency-Key`.
    pub async fn revoke_user(
        &self,
        user: &str,
        key: Option<&str>,
        reason: &str,
    ) -> reqwest::Response {
        let token = self.admin_token().await;
        let mut request = self
            .http
            .post(
                self.extauthz
                    .admin_url(&format!("/api/v1/users/{user}/revoke")),
            )
            .bearer_auth(token)
            .json(&json!({ "reason": reason }));
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        request.send().await.expect("the admin API answers")
    }

    /// `POST /api/v1/sessions/{sid}/revoke`.
    pub async fn revoke_session(&self, sid: &str, reason: &str) -> reqwest::Response {
        let token = self.admin_token().await;
        self.http
            .post(
                self.extauthz
                    .admin_url(&format!("/api/v1/sessions/{sid}/revoke")),
            )
            .bearer_auth(token)
            .json(&json!({ "reason": reason }))
            .send()
            .await
            .expect("the admin API answers")
    }

    /// `GET {path}` on the admin API; the `items` of the page.
    pub async fn admin_items(&self, path: &str) -> Vec<Value> {
        let token = self.admin_token().await;
        let page: Value = self
            .http
            .get(self.extauthz.admin_url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("the admin API answers")
            .error_for_status()
            .expect("the admin API allows the administrator")
            .json()
            .await
            .expect("a JSON page");
        page["items"].as_array().cloned().unwrap_or_default()
    }

    /// The audit trail's actions, newest first (administrators' own sessions aside).
    pub async fn audit_actions(&self) -> Vec<String> {
        self.admin_items("/api/v1/audit?limit=200")
            .await
            .iter()
            .map(|r| r["action"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

/// Asserts a 200 revocation answer; its JSON.
pub async fn acknowledged(response: reqwest::Response) -> Value {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 200, "the revocation was acknowledged: {body}");
    body
}
