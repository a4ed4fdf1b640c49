//! Signing keys of the token issuer (JWKS): fetched from a URL or from OIDC discovery,
//! cached per `kid`, refreshed in the background, and refetched on an unknown `kid` at most
//! once per interval.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use parking_lot::RwLock;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Where the JWKS document comes from.
#[async_trait]
pub trait JwksSource: Send + Sync + 'static {
    async fn fetch(&self) -> Result<JwkSet, JwksError>;
}

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("fetching {what} failed: {reason}")]
    Fetch { what: &'static str, reason: String },
    #[error("the JWKS document holds no usable signing key")]
    NoUsableKey,
}

/// Fetches the JWKS over HTTP(S), either from a fixed URL or from the `jwks_uri` of an
/// OpenID Connect discovery document (resolved on every fetch, so issuer moves are followed).
#[derive(Debug, Clone)]
pub struct HttpJwks {
    client: reqwest::Client,
    location: JwksLocation,
}

#[derive(Debug, Clone)]
pub enum JwksLocation {
    Jwks(String),
    Discovery(String),
}

impl HttpJwks {
    pub fn new(location: JwksLocation, timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("grantflow-extauthz/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("HTTP client with static settings");
        Self { client, location }
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        what: &'static str,
    ) -> Result<T, JwksError> {
        let fail = |reason: String| JwksError::Fetch { what, reason };
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        let response = response
            .error_for_status()
            .map_err(|e| fail(e.to_string()))?;
        response.json::<T>().await.map_err(|e| fail(e.to_string()))
    }
}

#[derive(Deserialize)]
struct Discovery {
    jwks_uri: String,
}

#[async_trait]
impl JwksSource for HttpJwks {
    async fn fetch(&self) -> Result<JwkSet, JwksError> {
        let url = match &self.location {
            JwksLocation::Jwks(url) => url.clone(),
            JwksLocation::Discovery(url) => {
                self.get_json::<Discovery>(url, "the OIDC discovery document")
                    .await?
                    .jwks_uri
            }
        };
        self.get_json(&url, "the JWKS").await
    }
}

/// A verification key from the JWKS.
pub struct VerifyingKey {
    pub key: DecodingKey,
    /// The `alg` the JWK pins, if any.
    pub algorithm: Option<Algorithm>,
    /// SHA-256 of the JWK as published: a token verified with this key stays trusted (in the
    /// validator's cache) only while a key with the same `kid` and fingerprint is published.
    pub fingerprint: [u8; 32],
}

/// The issuer's current keys by `kid`.
pub struct KeySet {
    source: Box<dyn JwksSource>,
    keys: RwLock<Arc<HashMap<String, Arc<VerifyingKey>>>>,
    loaded: AtomicBool,
    /// When the last fetch started; also the single-flight lock for fetches.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    min_refetch_interval: Duration,
}

impl KeySet {
    pub fn new(source: impl JwksSource, min_refetch_interval: Duration) -> Self {
        Self {
            source: Box::new(source),
            keys: RwLock::new(Arc::default()),
            loaded: AtomicBool::new(false),
            last_fetch: tokio::sync::Mutex::new(None),
            min_refetch_interval,
        }
    }

    /// Whether a JWKS has been loaded at least once.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Fetches the JWKS now and replaces the cached keys. On failure the old keys stay.
    pub async fn refresh(&self) -> Result<usize, JwksError> {
        let mut last = self.last_fetch.lock().await;
        *last = Some(Instant::now());
        self.fetch_and_replace().await
    }

    async fn fetch_and_replace(&self) -> Result<usize, JwksError> {
        let set = self.source.fetch().await?;
        let keys = usable_keys(&set);
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey);
        }
        let count = keys.len();
        *self.keys.write() = Arc::new(keys);
        self.loaded.store(true, Ordering::Release);
        Ok(count)
    }

    /// The key for `kid`. An unknown `kid` triggers one refetch, unless a fetch started less
    /// than the minimum refetch interval ago (so a stream of forged `kid`s cannot hammer the
    /// issuer).
    pub async fn get(&self, kid: &str) -> Option<Arc<VerifyingKey>> {
        if let Some(key) = self.lookup(kid) {
            return Some(key);
        }
        let mut last = self.last_fetch.lock().await;
        // Another task may have fetched while we waited for the lock.
        if let Some(key) = self.lookup(kid) {
            return Some(key);
        }
        let due = last.is_none_or(|at| at.elapsed() >= self.min_refetch_interval);
        if due {
            *last = Some(Instant::now());
            match self.fetch_and_replace().await {
                Ok(count) => tracing::info!(keys = count, "JWKS refetched for an unknown key id"),
                Err(error) => tracing::warn!(%error, "JWKS refetch failed; keeping the old keys"),
            }
        }
        drop(last);
        self.lookup(kid)
    }

    /// Whether the key `kid` with this fingerprint is published now (no fetch, no clone: the
    /// verified-token cache asks on every hit).
    pub fn publishes(&self, kid: &str, fingerprint: &[u8; 32]) -> bool {
        self.keys
            .read()
            .get(kid)
            .is_some_and(|key| key.fingerprint == *fingerprint)
    }

    /// The key published for `kid` now, without fetching.
    fn lookup(&self, kid: &str) -> Option<Arc<VerifyingKey>> {
        self.keys.read().get(kid).cloned()
    }

    /// Refreshes the keys every `every`, forever; failures are logged and retried sooner.
    pub fn spawn_refresh(self: Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let retry = every.min(Duration::from_secs(10));
            loop {
                let wait = match self.refresh().await {
                    Ok(count) => {
                        tracing::debug!(keys = count, "JWKS refreshed");
                        every
                    }
                    Err(error) => {
                        tracing::warn!(%error, "JWKS refresh failed; keeping the old keys");
                        retry
                    }
                };
                tokio::time::sleep(wait).await;
            }
        })
    }
}

/// Asymmetric signing keys with a `kid`; symmetric (`oct`) keys and encryption keys are
/// never used to verify tokens.
fn usable_keys(set: &JwkSet) -> HashMap<String, Arc<VerifyingKey>> {
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        if !matches!(
            jwk.algorithm,
            AlgorithmParameters::RSA(_) | AlgorithmParameters::EllipticCurve(_)
        ) {
            continue;
        }
        let algorithm = jwk
            .common
            .key_algorithm
            .and_then(|a| a.to_string().parse::<Algorithm>().ok());
        match DecodingKey::from_jwk(jwk) {
            Ok(key) => {
                let fingerprint = Sha256::digest(serde_json::to_vec(jwk).unwrap_or_default());
                keys.insert(
                    kid,
                    Arc::new(VerifyingKey {
                        key,
                        algorithm,
                        fingerprint: fingerprint.into(),
                    }),
                );
            }
            Err(error) => tracing::warn!(%kid, %error, "skipping a JWK that cannot be used"),
        }
    }
    keys
}

/// A fixed JWKS, for tests and for the development issuer.
#[derive(Clone, Default)]
pub struct StaticJwks(Arc<RwLock<JwkSet>>);

impl StaticJwks {
    pub fn new(set: JwkSet) -> Self {
        Self(Arc::new(RwLock::new(set)))
    }

    /// Replaces the published keys (a key rotation at the issuer).
    pub fn publish(&self, set: JwkSet) {
        *self.0.write() = set;
    }
}

#[async_trait]
impl JwksSource for StaticJwks {
    async fn fetch(&self) -> Result<JwkSet, JwksError> {
        Ok(self.0.read().clone())
    }
}
