//! The whole request path for one test: issuer → token → Envoy → extauthz (in this process,
//! memory store, test clock) → upstream.

use std::sync::Arc;
use std::time::Duration;

use grantflow_core::audit::{Actor, ActorKind, Source};
use grantflow_core::clock::{Clock, ManualClock, SystemClock};
use grantflow_core::revocation::{Revocation, RevocationOutcome, RevocationTarget};
use grantflow_core::store::{SessionStore, StoreConfig};
use grantflow_extauthz::config::{Options, Settings};
use grantflow_extauthz::server::{self, Running};
use serde_json::{Value, json};

use crate::envoy::Envoy;
use crate::issuer::Issuer;
use crate::upstream::Upstream;

pub const AUDIENCE: &str = "api://grantflow-e2e";
pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const SIGN_IN_URL: &str = "https://portal.example.test/sign-in";
/// The dashboard's client id at the test issuer (with `StackOptions::dashboard`).
pub const DASHBOARD_CLIENT_ID: &str = "grantflow-dashboard";
/// The client id logout tokens are addressed to (with `StackOptions::signals`).
pub const LOGOUT_CLIENT_ID: &str = "grantflow-e2e-app";
/// The audience of the Shared Signals transmitter's SETs (with `StackOptions::signals`).
pub const SSF_AUDIENCE: &str = "https://grantflow-e2e.test/ssf";

pub struct Stack {
    pub issuer: Issuer,
    pub upstream: Upstream,
    /// The first replica's Envoy.
    pub envoy: Envoy,
    /// The first replica's store.
    pub store: Arc<dyn SessionStore>,
    pub clock: ManualClock,
    pub http: reqwest::Client,
    extauthz: Option<Running>,
    /// Further replicas, each an extauthz with its own store connection behind its own Envoy.
    pub others: Vec<Replica>,
}

/// One more extauthz replica.
pub struct Replica {
    pub envoy: Envoy,
    pub store: Arc<dyn SessionStore>,
    pub running: Option<Running>,
}

/// What a [`Stack`] runs on.
pub struct StackOptions {
    pub store: StoreConfig,
    pub replicas: usize,
    /// The store deadline of the request path.
    pub store_timeout: Duration,
    /// Every replica serves the admin dashboard with sign-in at the test issuer.
    pub dashboard: bool,
    /// Back-channel logout (client id [`LOGOUT_CLIENT_ID`]) and the Shared Signals receiver
    /// (the test issuer's transmitter, audience [`SSF_AUDIENCE`]) are on.
    pub signals: bool,
}

impl Default for StackOptions {
    fn default() -> Self {
        // The memory store answers in microseconds; a generous budget keeps a loaded CI
        // machine from turning into 503s.
        Self {
            store: StoreConfig::Memory,
            replicas: 1,
            store_timeout: Duration::from_secs(2),
            dashboard: false,
            signals: false,
        }
    }
}

impl Stack {
    /// One replica on the memory store.
    pub async fn start() -> Stack {
        Self::start_with(StackOptions::default()).await
    }

    pub async fn start_with(stack: StackOptions) -> Stack {
        let issuer = Issuer::start().await;
        let upstream = Upstream::start().await;
        let clock = ManualClock::new(SystemClock.now_ms());
        let options = Options {
            grpc_addr: Some("127.0.0.1:0".parse().unwrap()),
            admin_addr: Some("127.0.0.1:0".parse().unwrap()),
            jwks_url: Some(issuer.jwks_uri.clone()),
            audiences: Some(vec![AUDIENCE.into()]),
            sign_in_url: Some(SIGN_IN_URL.into()),
            jwks_min_refetch_interval: Some(Duration::from_millis(100)),
            store_timeout: Some(stack.store_timeout),
            admin_oidc_authority: stack.dashboard.then(|| issuer.url.clone()),
            admin_client_id: stack.dashboard.then(|| DASHBOARD_CLIENT_ID.into()),
            backchannel_logout_audience: stack.signals.then(|| vec![LOGOUT_CLIENT_ID.into()]),
            ssf_issuer: stack.signals.then(|| issuer.ssf_issuer.clone()),
            ssf_jwks_url: stack.signals.then(|| issuer.ssf_jwks_uri.clone()),
            ssf_audience: stack.signals.then(|| vec![SSF_AUDIENCE.into()]),
            ..Options::default()
        };
        let mut settings = Settings::from_options(options).expect("valid settings");
        settings.store = stack.store;
        let shared = match settings.store {
            // One in-process store stands for a shared store between in-process replicas.
            StoreConfig::Memory | StoreConfig::Embedded { .. } => Some(
                settings
                    .store
                    .open(settings.limits, Arc::new(clock.clone()))
                    .expect("the store opens"),
            ),
            StoreConfig::Redis(_) => None,
        };
        let mut replicas = Vec::new();
        for _ in 0..stack.replicas.max(1) {
            let store = shared.clone().unwrap_or_else(|| {
                settings
                    .store
                    .open(settings.limits, Arc::new(clock.clone()))
                    .expect("the store opens")
            });
            let running = server::start(&settings, store.clone(), Arc::new(clock.clone()))
                .await
                .expect("extauthz starts");
            wait_for_keys(&running).await;
            let envoy = Envoy::start(running.grpc_addr, upstream.addr).await;
            replicas.push(Replica {
                envoy,
                store,
                running: Some(running),
            });
        }
        let first = replicas.remove(0);
        Stack {
            issuer,
            upstream,
            envoy: first.envoy,
            store: first.store,
            clock,
            http: reqwest::Client::new(),
            extauthz: first.running,
            others: replicas,
        }
    }

    /// The admin HTTP address (dashboard, API) of replica `index` (0 is the first).
    pub fn admin_addr(&self, index: usize) -> std::net::SocketAddr {
        let running = if index == 0 {
            self.extauthz.as_ref()
        } else {
            self.others[index - 1].running.as_ref()
        };
        running.expect("the replica is running").admin_addr
    }

    /// Stops the extauthz server (Envoy keeps running).
    pub async fn stop_extauthz(&mut self) {
        if let Some(running) = self.extauthz.take() {
            running.stop().await;
        }
    }

    /// Entra ID v2 access-token claims for `user` in the test tenant, with `sid` when given.
    pub fn claims(&self, user: &str, sid: Option<&str>) -> Value {
        let now = self.clock.now_secs();
        json!({
            "iss": format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
            "aud": AUDIENCE,
            "tid": TENANT,
            "oid": user,
            "sub": user,
            "sid": sid,
            "preferred_username": format!("{user}@contoso.test"),
            "iat": now,
            "nbf": now,
            "ver": "2.0",
            "scp": "access_as_user",
        })
    }

    /// A token for `user` in session `sid`, issued now.
    pub async fn token(&self, user: &str, sid: &str) -> String {
        self.issuer.token(self.claims(user, Some(sid))).await
    }

    /// The Envoy of replica `index` (0 is the first).
    pub fn envoy_of(&self, index: usize) -> &Envoy {
        if index == 0 {
            &self.envoy
        } else {
            &self.others[index - 1].envoy
        }
    }

    /// GET / through Envoy with an optional bearer token, an `Accept` header and extras.
    pub async fn get(
        &self,
        token: Option<&str>,
        accept: &str,
        extra: &[(&str, &str)],
    ) -> reqwest::Response {
        self.get_via(0, token, accept, extra).await
    }

    /// GET / through the Envoy of replica `index`.
    pub async fn get_via(
        &self,
        index: usize,
        token: Option<&str>,
        accept: &str,
        extra: &[(&str, &str)],
    ) -> reqwest::Response {
        let url = self.envoy_of(index).url("/");
        let mut request = self.http.get(url).header("accept", accept);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        request.send().await.expect("Envoy answers")
    }

    /// The HTTP status of GET / with `token`, asking for JSON.
    pub async fn status(&self, token: &str) -> u16 {
        self.status_via(0, token).await
    }

    /// The HTTP status of GET / with `token` through replica `index`.
    pub async fn status_via(&self, index: usize, token: &str) -> u16 {
        let response = self
            .get_via(index, Some(token), "application/json", &[])
            .await;
        response.status().as_u16()
    }

    /// Revokes through the first replica's store, as the admin API and the operator do.
    pub async fn revoke(&self, target: RevocationTarget, reason: &str) -> RevocationOutcome {
        let revocation = Revocation {
            tenant: TENANT.into(),
            target,
            reason: reason.into(),
            actor: Actor {
                kind: ActorKind::Admin,
                id: "admin-oid".into(),
                name: Some("admin@contoso.test".into()),
            },
            source: Source::Api,
            idempotency_key: None,
        };
        self.store
            .revoke(&revocation)
            .await
            .expect("the memory store revokes")
    }
}

async fn wait_for_keys(running: &Running) {
    for _ in 0..300 {
        if running.keys.is_loaded() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("extauthz did not load the issuer's JWKS within 6 s");
}
