//! Faults, end to end through the real Envoy and the real `grantflow-extauthz` binary: the
//! process killed right after a revocation, Redis wiped or restarted without persistence, a
//! Redis failover after a revocation the replica did or did not confirm, and the revoke-all
//! and idempotency rules through the admin API.
//!
//! Every test counts the requests allowed after a revocation was acknowledged (the admin API
//! answered 200): there must be none.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use grantflow_e2e::envoy::Envoy;
use grantflow_e2e::issuer::Issuer;
use grantflow_e2e::process::{Extauthz, Stop, TempDir};
use grantflow_e2e::redis::{RedisServer, redis_cli};
use grantflow_e2e::stack::{AUDIENCE, SIGN_IN_URL, TENANT};
use grantflow_e2e::tcp_proxy::TcpProxy;
use grantflow_e2e::upstream::Upstream;
use grantflow_e2e::{loopback, unique};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
const ADMIN_ROLE: &str = "GrantFlow.SessionAdmin";
const ADMIN_USER: &str = "admin-oid-0001";
const PROBLEMS: &str = "https://grantflow.io/problems/";
/// Every wait for a recovery (a restarted process, Redis back, a failover) is bounded by this.
const RECOVERY: Duration = Duration::from_secs(30);

/// Lets the watchers run a while in the present phase of a test.
async fn hold() {
    tokio::time::sleep(Duration::from_millis(400)).await;
}

fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    i64::try_from(since.as_millis()).expect("milliseconds fit")
}

fn now_secs() -> i64 {
    now_ms() / 1000
}

/// Waits until the next whole second has begun.
async fn next_second() {
    let now = now_secs();
    while now_secs() == now {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What a request through Envoy got.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Got {
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
type Seen = (Instant, Got);

/// Requests one token through Envoy over and over until stopped, recording every answer.
struct Watcher {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Vec<Seen>>,
}

impl Watcher {
    fn start(fault: &Fault, token: &str) -> Watcher {
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

    async fn finish(self) -> Vec<Seen> {
        self.stop.store(true, Ordering::Relaxed);
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the watcher stops within 10 s")
            .expect("the watcher ran")
    }
}

/// The answers of requests sent in `[from, to)`, counted by kind.
fn tally(seen: &[Seen], from: Instant, to: Option<Instant>) -> BTreeMap<Got, usize> {
    let mut counts = BTreeMap::new();
    for (sent, got) in seen {
        if *sent >= from && to.is_none_or(|to| *sent < to) {
            *counts.entry(got.clone()).or_insert(0) += 1;
        }
    }
    counts
}

fn allowed(counts: &BTreeMap<Got, usize>) -> usize {
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
struct Fault {
    issuer: Issuer,
    _upstream: Upstream,
    extauthz: Extauthz,
    envoy: Envoy,
    http: reqwest::Client,
}

impl Fault {
    async fn start(store: &[String]) -> Fault {
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
    fn claims(user: &str, sid: Option<&str>, auth_time: Option<i64>, iat: i64) -> Value {
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
    async fn token(&self, user: &str, sid: Option<&str>, auth_time: Option<i64>) -> String {
        self.token_issued(user, sid, auth_time, now_secs()).await
    }

    /// A token issued at `iat` (seconds).
    async fn token_issued(
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
    async fn admin_token(&self) -> String {
        let sid = format!("admin-sid-{}", unique());
        let mut claims = Self::claims(ADMIN_USER, Some(&sid), None, now_secs());
        claims["roles"] = json!([ADMIN_ROLE]);
        self.issuer.token(claims).await
    }

    async fn got(&self, token: &str) -> Got {
        got(&self.http, &self.envoy.url("/"), token).await
    }

    /// The `<h1>` of the page a browser gets, with the status.
    async fn page(&self, token: &str) -> (u16, String) {
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
    async fn first_answer(&self, token: &str) -> Got {
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
    async fn revoke_user(&self, user: &str, key: Option<&str>, reason: &str) -> reqwest::Response {
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
    async fn revoke_session(&self, sid: &str, reason: &str) -> reqwest::Response {
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
    async fn admin_items(&self, path: &str) -> Vec<Value> {
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
    async fn audit_actions(&self) -> Vec<String> {
        self.admin_items("/api/v1/audit?limit=200")
            .await
            .iter()
            .map(|r| r["action"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

/// Asserts a 200 revocation answer; its JSON.
async fn acknowledged(response: reqwest::Response) -> Value {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 200, "the revocation was acknowledged: {body}");
    body
}

// --- 1. the embedded store's process stopped right after a revocation ------------------------

async fn embedded_store_restart_right_after_a_revocation(how: Stop) {
    let data = TempDir::new("data");
    let mut fault = Fault::start(&[
        "--store".into(),
        "embedded".into(),
        "--data-dir".into(),
        data.path().display().to_string(),
    ])
    .await;
    let signed_in = now_secs() - 60;
    // Ann's laptop session is stolen; her phone is not. Cy's account is compromised (all
    // sessions). Bob is a bystander whose token has no auth_time (its session starts when
    // first seen, so an unchanged start after the restart shows the session itself survived).
    let laptop = fault
        .token("user-ann", Some("sid-ann-laptop"), Some(signed_in))
        .await;
    let phone = fault
        .token("user-ann", Some("sid-ann-phone"), Some(signed_in))
        .await;
    let cy = fault
        .token("user-cy", Some("sid-cy"), Some(signed_in))
        .await;
    let bob = fault.token("user-bob", Some("sid-bob"), None).await;
    for token in [&laptop, &phone, &cy, &bob] {
        assert_eq!(fault.got(token).await, Got::Allowed);
    }
    let bob_started = |sessions: &[Value]| {
        sessions
            .iter()
            .find(|s| s["id"] == "sid-bob")
            .map(|s| s["startedAt"].clone())
            .expect("Bob's session is live")
    };
    let bob_started_before = bob_started(&fault.admin_items("/api/v1/sessions").await);

    let watch_laptop = Watcher::start(&fault, &laptop);
    let watch_cy = Watcher::start(&fault, &cy);
    tokio::time::sleep(Duration::from_millis(200)).await;
    acknowledged(
        fault
            .revoke_user("user-cy", None, "INC-1 account compromised")
            .await,
    )
    .await;
    let cy_acked = Instant::now();
    acknowledged(
        fault
            .revoke_session("sid-ann-laptop", "INC-2 stolen laptop")
            .await,
    )
    .await;
    let laptop_acked = Instant::now();
    // Right after the API's answer.
    let status = fault.extauthz.stop(how).await;
    let stopped_at = Instant::now();
    match how {
        Stop::Term => assert!(status.success(), "SIGTERM: a clean exit, got {status}"),
        Stop::Kill => assert_eq!(status.signal(), Some(9), "killed by SIGKILL: {status}"),
    }
    let down = fault.got(&bob).await;
    assert!(
        matches!(down, Got::Other(503, _)),
        "Envoy refuses while extauthz is down: {down:?}"
    );
    fault.extauthz.restart().await;
    let restarted_at = Instant::now();
    assert_eq!(
        fault.first_answer(&bob).await,
        Got::Allowed,
        "a live session not revoked keeps working after the restart"
    );

    assert_eq!(fault.got(&laptop).await, Got::Revoked);
    assert_eq!(
        fault.page(&laptop).await,
        (401, "Your session was ended".into())
    );
    assert_eq!(fault.got(&phone).await, Got::Allowed, "Ann's other session");
    assert_eq!(
        fault.got(&cy).await,
        Got::Revoked,
        "auth_time before the revoke-all"
    );
    let cy_refreshed = fault.token("user-cy", Some("sid-cy-2"), None).await;
    assert_eq!(fault.got(&cy_refreshed).await, Got::SignInAgain);
    assert_eq!(
        bob_started(&fault.admin_items("/api/v1/sessions").await),
        bob_started_before,
        "Bob's session is the same one (its start did not move)"
    );
    let audit = fault.audit_actions().await;
    assert!(
        audit.contains(&"user.revoke".to_owned()) && audit.contains(&"session.revoke".to_owned()),
        "both revocations are in the audit trail after the restart: {audit:?}"
    );

    hold().await;
    let laptop_seen = watch_laptop.finish().await;
    let cy_seen = watch_cy.finish().await;
    let laptop_after = tally(&laptop_seen, laptop_acked, None);
    let cy_after = tally(&cy_seen, cy_acked, None);
    println!(
        "{how:?}: laptop before its revocation {:?}; after: {laptop_after:?}; Cy after: {cy_after:?}; \
         down {:?} (stop → ready)",
        tally(&laptop_seen, laptop_seen[0].0, Some(laptop_acked)),
        restarted_at - stopped_at,
    );
    assert!(
        allowed(&tally(&laptop_seen, laptop_seen[0].0, Some(laptop_acked))) > 0,
        "the watcher ran before the revocation"
    );
    assert!(
        laptop_after.get(&Got::Revoked).copied().unwrap_or(0) > 0,
        "the watcher ran after the restart"
    );
    assert_eq!(allowed(&laptop_after), 0, "allowed after the revocation");
    assert_eq!(allowed(&cy_after), 0, "allowed after the revoke-all");
}

/// SIGTERM right after the API acknowledged a session revocation and a revoke-all; restart on
/// the same data folder and ports: both still refused, other sessions (and their start) kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_sigterm_right_after_a_revocation_keeps_it_after_restart() {
    embedded_store_restart_right_after_a_revocation(Stop::Term).await;
}

/// The same with SIGKILL (`kill -9`): nothing is flushed at exit, the fsync before the answer
/// is all there is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_sigkill_right_after_a_revocation_keeps_it_after_restart() {
    embedded_store_restart_right_after_a_revocation(Stop::Kill).await;
}

// --- 2, 3. Redis loses its data after a revocation -----------------------------------------

#[derive(Debug, Clone, Copy)]
enum Loss {
    Flushall,
    RestartWithoutPersistence,
}

async fn redis_loses_its_data_after_a_revocation(loss: Loss) {
    let mut redis = RedisServer::start().await;
    let fault = Fault::start(&[
        "--store".into(),
        "redis".into(),
        "--redis-url".into(),
        redis.url(),
    ])
    .await;
    // Issued a minute ago: JWT times are whole seconds, and a token issued within the second
    // in which the loss is found counts as issued after it.
    let issued = now_secs() - 60;
    let ann = fault
        .token_issued("user-ann", Some("sid-ann"), None, issued)
        .await;
    let bob = fault
        .token_issued("user-bob", Some("sid-bob"), None, issued)
        .await;
    // The first requests teach the process the tenant's generation marker.
    assert_eq!(fault.got(&ann).await, Got::Allowed);
    assert_eq!(fault.got(&bob).await, Got::Allowed);
    let watch_ann = Watcher::start(&fault, &ann);
    tokio::time::sleep(Duration::from_millis(200)).await;
    acknowledged(fault.revoke_session("sid-ann", "INC-3 stolen token").await).await;
    let acked = Instant::now();
    assert_eq!(fault.got(&ann).await, Got::Revoked);
    hold().await;

    let lost = Instant::now();
    match loss {
        Loss::Flushall => {
            assert!(redis_cli(redis.port, &["FLUSHALL"]).is_some(), "FLUSHALL");
        }
        // The harness's Redis runs with `--save '' --appendonly no`: it comes back empty.
        Loss::RestartWithoutPersistence => redis.restart().await,
    }
    // The next request the store answers finds the marker gone: Session expired.
    assert_eq!(fault.first_answer(&ann).await, Got::Expired);
    let found = Instant::now();
    assert_eq!(fault.page(&ann).await, (401, "Session expired".into()));
    // Every token issued before the loss must be replaced, revoked or not.
    assert_eq!(fault.got(&bob).await, Got::Expired);
    // Tokens issued after the loss work (a sign-in again). Issued in a later second than the
    // one in which the loss was found, so that they are after L under either reading of a
    // token issued within L's own second.
    next_second().await;
    let ann_again = fault.token("user-ann", Some("sid-ann-2"), None).await;
    assert_eq!(fault.got(&ann_again).await, Got::Allowed);
    let bob_again = fault.token("user-bob", Some("sid-bob"), None).await;
    assert_eq!(fault.got(&bob_again).await, Got::Allowed);

    let audit = fault.audit_actions().await;
    assert!(
        audit.contains(&"store.reset".to_owned()),
        "the audit trail has store.reset: {audit:?}"
    );
    assert!(
        fault
            .extauthz
            .log()
            .contains("the session store lost this tenant's data"),
        "the process logged the loss"
    );
    let ready = fault
        .http
        .get(fault.extauthz.admin_url("/readyz"))
        .send()
        .await
        .expect("/readyz answers");
    assert_eq!(ready.status(), 200, "a loss does not fail readiness");
    let ready = ready.text().await.unwrap_or_default();
    assert!(
        ready.contains(&format!("store reset: tenant {TENANT} at ")),
        "/readyz lists the loss: {ready}"
    );

    hold().await;
    let seen = watch_ann.finish().await;
    let after = tally(&seen, acked, None);
    println!(
        "{loss:?}: Ann after the revocation {after:?} (of which while Redis was lost and until found: {:?}); audit {audit:?}",
        tally(&seen, lost, Some(found))
    );
    assert!(
        after.get(&Got::Expired).copied().unwrap_or(0) > 0,
        "the watcher ran after the loss"
    );
    assert_eq!(allowed(&after), 0, "allowed after the revocation");
}

/// `FLUSHALL` after a session revocation: the tombstone is gone, the generation marker too;
/// the next check records L and refuses the revoked token (Session expired).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_flushall_after_a_revocation_refuses_tokens_issued_before_the_loss() {
    redis_loses_its_data_after_a_revocation(Loss::Flushall).await;
}

/// Redis killed and started again empty on the same port (`--save '' --appendonly no`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_without_persistence_after_a_revocation_refuses_tokens_issued_before_the_loss()
 {
    redis_loses_its_data_after_a_revocation(Loss::RestartWithoutPersistence).await;
}

// --- 4. Redis failover after a revocation, with redis_wait_replicas 1 -----------------------

/// A primary and a replica that replicates through a proxy (so the link can be cut), and a
/// proxy in front that extauthz connects to (so a failover can move it).
struct Replicated {
    primary: RedisServer,
    replica: RedisServer,
    link: TcpProxy,
    front: TcpProxy,
    /// The new primary's replica after a failover.
    spare: Option<RedisServer>,
}

impl Replicated {
    async fn start() -> Replicated {
        let primary = RedisServer::start().await;
        let replica = RedisServer::start().await;
        let link = TcpProxy::start(loopback(primary.port)).await;
        let port = link.port().to_string();
        assert!(redis_cli(replica.port, &["REPLICAOF", "127.0.0.1", &port]).is_some());
        wait_for(
            || info(replica.port, "master_link_status:up"),
            "the replica is in sync through the link",
        )
        .await;
        let front = TcpProxy::start(loopback(primary.port)).await;
        Replicated {
            primary,
            replica,
            link,
            front,
            spare: None,
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.front.port())
    }

    fn has(&self, port: u16, key: &str) -> bool {
        redis_cli(port, &["EXISTS", key]).is_some_and(|n| n.trim() == "1")
    }

    /// The primary dies; the replica is promoted and gets a replica of its own; clients are
    /// moved to it.
    async fn failover(&mut self) {
        self.primary.stop().await;
        assert!(redis_cli(self.replica.port, &["REPLICAOF", "NO", "ONE"]).is_some());
        wait_for(
            || info(self.replica.port, "role:master"),
            "the replica is promoted",
        )
        .await;
        self.spare = Some(RedisServer::start_replica_of(&self.replica).await);
        self.front.retarget(loopback(self.replica.port));
    }
}

fn info(port: u16, line: &str) -> bool {
    redis_cli(port, &["INFO", "replication"]).is_some_and(|info| info.contains(line))
}

async fn wait_for(mut ready: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + RECOVERY;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn replicated_fault(redis: &Replicated) -> Fault {
    Fault::start(&[
        "--store".into(),
        "redis".into(),
        "--redis-url".into(),
        redis.url(),
        "--redis-wait-replicas".into(),
        "1".into(),
        "--store-write-timeout".into(),
        "2s".into(),
    ])
    .await
}

fn key(suffix: &str) -> String {
    format!("gf:{{{TENANT}}}:{suffix}")
}

/// Ann's and Bob's tokens (issued a minute ago; Ann's with that `auth_time` when
/// `ann_signed_in`), each with a live session, and a watcher sending Ann's from now on.
async fn ann_and_bob_with_ann_watched(
    fault: &Fault,
    ann_signed_in: bool,
) -> (String, String, Watcher) {
    let issued = now_secs() - 60;
    let ann = fault
        .token_issued(
            "user-ann",
            Some("sid-ann"),
            ann_signed_in.then_some(issued),
            issued,
        )
        .await;
    let bob = fault
        .token_issued("user-bob", Some("sid-bob"), None, issued)
        .await;
    assert_eq!(fault.got(&ann).await, Got::Allowed);
    assert_eq!(fault.got(&bob).await, Got::Allowed);
    let watch = Watcher::start(fault, &ann);
    tokio::time::sleep(Duration::from_millis(200)).await;
    (ann, bob, watch)
}

/// With `redis_wait_replicas: 1`, a 200 means the replica has it: promoted after the
/// primary dies, it refuses the revoked session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_failover_after_a_wait_confirmed_revocation_keeps_it_refused() {
    let mut redis = Replicated::start().await;
    let fault = replicated_fault(&redis).await;
    let (ann, bob, watch) = ann_and_bob_with_ann_watched(&fault, false).await;
    // 200: the replica acknowledged it (WAIT 1).
    acknowledged(fault.revoke_session("sid-ann", "INC-4").await).await;
    let acked = Instant::now();
    assert!(
        redis.has(redis.replica.port, &key("end:sid-ann")),
        "the tombstone is on the replica"
    );
    hold().await;
    redis.failover().await;
    assert_eq!(fault.first_answer(&bob).await, Got::Allowed);
    assert_eq!(fault.got(&ann).await, Got::Revoked);
    let audit = fault.audit_actions().await;
    assert!(audit.contains(&"session.revoke".to_owned()), "{audit:?}");
    assert!(
        !audit.contains(&"store.reset".to_owned()),
        "the replica had the generation marker: no loss: {audit:?}"
    );
    hold().await;
    let seen = watch.finish().await;
    let after = tally(&seen, acked, None);
    println!("confirmed revocation, failover: Ann after the revocation {after:?}");
    assert!(after.get(&Got::Revoked).copied().unwrap_or(0) > 0);
    assert_eq!(allowed(&after), 0, "allowed after the revocation");
}

/// Cuts the replication link, revokes all of Ann's sessions: 503 store-not-replicated.
async fn unconfirmed_revoke_all(
    fault: &Fault,
    redis: &Replicated,
    idempotency_key: &str,
) -> Instant {
    redis.link.cut();
    wait_for(
        || info(redis.primary.port, "connected_slaves:0"),
        "the primary lost its replica",
    )
    .await;
    let response = fault
        .revoke_user(
            "user-ann",
            Some(idempotency_key),
            "INC-5 account compromised",
        )
        .await;
    let answered = Instant::now();
    let status = response.status().as_u16();
    let problem: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 503, "{problem}");
    assert_eq!(
        problem["type"],
        format!("{PROBLEMS}store-not-replicated"),
        "{problem}"
    );
    assert!(redis.has(redis.primary.port, &key("u:user-ann")));
    assert!(
        !redis.has(redis.replica.port, &key("u:user-ann")),
        "the replica did not get the watermark"
    );
    answered
}

/// The replica is cut off before a revoke-all: 503 `store-not-replicated`; in effect on the
/// primary; the primary dies and the replica is promoted: the revocation is lost (the session
/// is allowed again, no `store.reset`: the marker came along) until the call is retried
/// (the same Idempotency-Key is new to the new primary, which applies it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_failover_after_an_unconfirmed_revocation_loses_it_until_the_call_is_retried() {
    let mut redis = Replicated::start().await;
    let fault = replicated_fault(&redis).await;
    let (ann, bob, watch) = ann_and_bob_with_ann_watched(&fault, true).await;

    let unconfirmed = unconfirmed_revoke_all(&fault, &redis, "end-all-ann-1").await;
    // In effect on the primary.
    assert_eq!(fault.got(&ann).await, Got::Revoked);
    hold().await;
    let failover_began = Instant::now();
    redis.failover().await;
    assert_eq!(fault.first_answer(&bob).await, Got::Allowed);
    let failed_over = Instant::now();
    // The promoted replica never had the revocation: Ann's session is live there again, and
    // no loss is noticed (the generation marker is the same).
    assert_eq!(
        fault.got(&ann).await,
        Got::Allowed,
        "an unconfirmed revocation is lost in a failover"
    );
    hold().await;
    let audit = fault.audit_actions().await;
    assert!(
        !audit.contains(&"user.revoke".to_owned()) && !audit.contains(&"store.reset".to_owned()),
        "neither the revocation's audit record nor a store.reset: {audit:?}"
    );
    // The retry the 503 asks for, with the same Idempotency-Key: the new primary has never
    // seen the key, so it applies the revocation (and its replica confirms it).
    let retry_sent = Instant::now();
    let retried = fault
        .revoke_user(
            "user-ann",
            Some("end-all-ann-1"),
            "INC-5 account compromised",
        )
        .await;
    assert!(
        retried.headers().get("idempotent-replayed").is_none(),
        "applied anew, not replayed"
    );
    let body = acknowledged(retried).await;
    let acked = Instant::now();
    assert_eq!(body["sessionsRevoked"], 1, "{body}");
    assert_eq!(fault.got(&ann).await, Got::Revoked);
    assert_eq!(fault.got(&bob).await, Got::Allowed);
    hold().await;

    let seen = watch.finish().await;
    let on_primary = tally(&seen, unconfirmed, Some(failover_began));
    let lost = tally(&seen, failed_over, Some(retry_sent));
    let after = tally(&seen, acked, None);
    println!(
        "unconfirmed revocation: on the old primary {on_primary:?}; after the failover until the retry {lost:?}; \
         during the failover {:?}; after the retry's 200 {after:?}",
        tally(&seen, failover_began, Some(failed_over))
    );
    assert_eq!(allowed(&on_primary), 0, "in effect on the primary");
    assert!(allowed(&lost) > 0, "lost in the failover until retried");
    assert_eq!(
        allowed(&after),
        0,
        "allowed after the retry was acknowledged"
    );
}

/// The same 503, but the link comes back and the replica catches up before the failover:
/// the revocation holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_failover_after_an_unconfirmed_revocation_keeps_it_once_the_replica_caught_up() {
    let mut redis = Replicated::start().await;
    let fault = replicated_fault(&redis).await;
    let (ann, bob, watch) = ann_and_bob_with_ann_watched(&fault, true).await;

    let unconfirmed = unconfirmed_revoke_all(&fault, &redis, "end-all-ann-2").await;
    assert_eq!(fault.got(&ann).await, Got::Revoked);
    hold().await;
    // The link comes back; the replica catches up before the failover.
    redis.link.retarget(loopback(redis.primary.port));
    wait_for(
        || redis.has(redis.replica.port, &key("u:user-ann")),
        "the replica caught up",
    )
    .await;
    redis.failover().await;
    assert_eq!(fault.first_answer(&bob).await, Got::Allowed);
    assert_eq!(fault.got(&ann).await, Got::Revoked);
    let audit = fault.audit_actions().await;
    assert!(audit.contains(&"user.revoke".to_owned()), "{audit:?}");
    hold().await;

    let seen = watch.finish().await;
    let after = tally(&seen, unconfirmed, None);
    println!("unconfirmed revocation, replica caught up, failover: Ann after the 503 {after:?}");
    assert_eq!(
        allowed(&after),
        0,
        "allowed after the (unconfirmed) revocation"
    );
}

// --- 5. revoke-all and what a later token must prove ---------------------------------------

/// After a revoke-all (default store: embedded) only a token whose `auth_time` is after the
/// watermark opens a session: not an unseen `sid`, not a token without `sid`, not an old
/// `auth_time`. The same after `kill -9` and a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_all_refuses_unseen_sid_no_sid_and_old_auth_time_and_allows_a_new_sign_in_before_and_after_kill_9()
 {
    let data = TempDir::new("data");
    let mut fault = Fault::start(&["--data-dir".into(), data.path().display().to_string()]).await;
    let signed_in = now_secs() - 60;
    let live = fault
        .token("user-dee", Some("sid-dee"), Some(signed_in))
        .await;
    assert_eq!(fault.got(&live).await, Got::Allowed);
    let before_call = now_ms();
    let body = acknowledged(fault.revoke_user("user-dee", None, "INC-6").await).await;
    let after_call = now_ms();
    assert_eq!(body["sessionsRevoked"], 1, "{body}");
    // The watermark W is in [before_call, after_call]. A sign-in proves it came after W
    // when its auth_time (whole seconds) is past W: wait until such a second has begun.
    let new_sign_in = after_call / 1000 + 1;
    while now_secs() < new_sign_in {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cases = [
        ("the revoked session", live.clone(), Got::Revoked),
        (
            "an unseen sid, no auth_time",
            fault.token("user-dee", Some("sid-dee-unseen"), None).await,
            Got::SignInAgain,
        ),
        (
            "no sid, no auth_time",
            fault.token("user-dee", None, None).await,
            Got::SignInAgain,
        ),
        (
            "an unseen sid, auth_time before the revoke-all",
            fault
                .token(
                    "user-dee",
                    Some("sid-dee-old"),
                    Some(before_call / 1000 - 1),
                )
                .await,
            Got::Revoked,
        ),
        (
            "no sid, auth_time before the revoke-all",
            fault
                .token("user-dee", None, Some(before_call / 1000 - 1))
                .await,
            Got::Revoked,
        ),
        (
            "a new sign-in: auth_time after the revoke-all",
            fault
                .token("user-dee", Some("sid-dee-new"), Some(new_sign_in))
                .await,
            Got::Allowed,
        ),
    ];
    let allowed_after = check_cases(&fault, &cases).await;
    // And the same once the process was killed and started again on its data folder.
    fault.extauthz.stop(Stop::Kill).await;
    fault.extauthz.restart().await;
    let new_sign_in_token = &cases[5].1;
    assert_eq!(fault.first_answer(new_sign_in_token).await, Got::Allowed);
    let allowed_after_restart = check_cases(&fault, &cases).await;
    println!(
        "revoke-all: tokens that must be refused, allowed {allowed_after} (before the restart), {allowed_after_restart} (after)"
    );
    assert_eq!(allowed_after + allowed_after_restart, 0);
}

/// Requests each token (3 times, then as a browser); asserts the expected answer and page.
/// How many requests that must be refused were allowed.
async fn check_cases(fault: &Fault, cases: &[(&str, String, Got)]) -> usize {
    let mut refused_allowed = 0;
    for (what, token, expected) in cases {
        for _ in 0..3 {
            let got = fault.got(token).await;
            if got == Got::Allowed && *expected != Got::Allowed {
                refused_allowed += 1;
            }
            assert_eq!(&got, expected, "{what}");
        }
        let heading = fault.page(token).await.1;
        let expected_heading = match expected {
            Got::Allowed => "",
            Got::Revoked => "Your session was ended",
            Got::SignInAgain => "Sign in again",
            other => panic!("no case expects {other:?}"),
        };
        assert_eq!(heading, expected_heading, "{what}");
    }
    refused_allowed
}

// --- 6. Idempotency-Key: a replay changes nothing, another request with the key is refused --

/// A replayed revoke-all (same Idempotency-Key, same request) answers the first outcome with
/// `Idempotent-Replayed: true`; the key with another user or reason is 422 and changes
/// nothing (that user stays allowed through Envoy); one audit record; the same after kill -9.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_replayed_answers_the_first_outcome_and_reused_for_another_user_changes_nothing()
 {
    let data = TempDir::new("data");
    let mut fault = Fault::start(&["--data-dir".into(), data.path().display().to_string()]).await;
    let signed_in = now_secs() - 60;
    let eve = fault
        .token("user-eve", Some("sid-eve"), Some(signed_in))
        .await;
    let fay = fault
        .token("user-fay", Some("sid-fay"), Some(signed_in))
        .await;
    assert_eq!(fault.got(&eve).await, Got::Allowed);
    assert_eq!(fault.got(&fay).await, Got::Allowed);
    let watch_eve = Watcher::start(&fault, &eve);
    let watch_fay = Watcher::start(&fault, &fay);
    hold().await;

    const KEY: &str = "end-all-incident-7";
    let first = fault.revoke_user("user-eve", Some(KEY), "INC-7").await;
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first = acknowledged(first).await;
    let acked = Instant::now();
    assert_eq!(first["sessionsRevoked"], 1, "{first}");

    // The same request again (a retried call): the first answer, nothing changes.
    let replay = fault.revoke_user("user-eve", Some(KEY), "INC-7").await;
    assert_replayed(replay, &first).await;

    // The key with another request: another user, or the same user with another reason.
    assert_mismatch(fault.revoke_user("user-fay", Some(KEY), "INC-7").await).await;
    assert_mismatch(fault.revoke_user("user-eve", Some(KEY), "INC-8").await).await;
    assert_eq!(fault.got(&fay).await, Got::Allowed, "Fay was not revoked");
    assert_eq!(fault.got(&eve).await, Got::Revoked);

    // The same after kill -9 and a restart on the data folder: the key's record is durable.
    fault.extauthz.stop(Stop::Kill).await;
    fault.extauthz.restart().await;
    assert_eq!(fault.first_answer(&fay).await, Got::Allowed);
    let replay = fault.revoke_user("user-eve", Some(KEY), "INC-7").await;
    assert_replayed(replay, &first).await;
    assert_mismatch(fault.revoke_user("user-fay", Some(KEY), "INC-7").await).await;
    assert_eq!(fault.got(&fay).await, Got::Allowed, "Fay was not revoked");
    assert_eq!(fault.got(&eve).await, Got::Revoked);

    let records = fault.admin_items("/api/v1/audit?limit=200").await;
    let revokes: Vec<&Value> = records
        .iter()
        .filter(|r| r["action"] == "user.revoke")
        .collect();
    assert_eq!(revokes.len(), 1, "one audit record: {revokes:?}");
    assert_eq!(revokes[0]["target"]["user"], "user-eve");
    assert_eq!(revokes[0]["id"], first["auditId"]);
    hold().await;

    let eve_seen = watch_eve.finish().await;
    let fay_seen = watch_fay.finish().await;
    let eve_after = tally(&eve_seen, acked, None);
    let fay_after = tally(&fay_seen, acked, None);
    println!("idempotency: Eve after her revocation {eve_after:?}; Fay meanwhile {fay_after:?}");
    assert_eq!(allowed(&eve_after), 0, "allowed after the revocation");
    assert!(
        !fay_after.contains_key(&Got::Revoked) && !fay_after.contains_key(&Got::SignInAgain),
        "Fay was never refused as revoked: {fay_after:?}"
    );
    assert!(allowed(&fay_after) > 0);
}

/// A 200 marked `Idempotent-Replayed: true` with the first call's outcome.
async fn assert_replayed(response: reqwest::Response, first: &Value) {
    assert_eq!(
        response
            .headers()
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let body = acknowledged(response).await;
    assert_eq!(body["auditId"], first["auditId"], "{body}");
    assert_eq!(body["sessionsRevoked"], first["sessionsRevoked"], "{body}");
}

/// 422 `idempotency-key-mismatch`.
async fn assert_mismatch(response: reqwest::Response) {
    let status = response.status().as_u16();
    let problem: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 422, "{problem}");
    assert_eq!(
        problem["type"],
        format!("{PROBLEMS}idempotency-key-mismatch"),
        "{problem}"
    );
}
