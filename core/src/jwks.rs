//! Signing keys of the token issuer (JWKS): fetched from a URL or from OIDC discovery,
//! cached per `kid`, refreshed in the background, and refetched on an unknown `kid` at most
//! once per interval.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, KeyAlgorithm, PublicKeyUse};
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

/// The largest JWKS or discovery document read (Entra's is about 10 KiB); a larger body is
/// refused while it streams in, never buffered whole.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// Redirects followed within the origin of the URL asked for; never to another origin.
const MAX_REDIRECTS: usize = 5;

/// Fetches the JWKS over HTTP(S), either from a fixed URL or from the `jwks_uri` of an
/// OpenID Connect discovery document (resolved on every fetch, so issuer moves are followed).
///
/// Every URL must be `https://`, except on a loopback host (`127.0.0.0/8`, `::1`,
/// `localhost`) or when plain HTTP is allowed (development mode). Redirects to another origin
/// are refused, bodies are capped at [`MAX_DOCUMENT_BYTES`], and each fetch ends within its
/// timeout.
#[derive(Debug, Clone)]
pub struct HttpJwks {
    client: reqwest::Client,
    location: JwksLocation,
    timeout: Duration,
    allow_plain_http: bool,
    max_bytes: usize,
}

#[derive(Debug, Clone)]
pub enum JwksLocation {
    Jwks(String),
    Discovery(String),
}

/// Whether `url` may be fetched: `https://`, or `http://` on a loopback host or when
/// `allow_plain_http` (development mode). The error says why not, in a sentence.
pub fn check_url(url: &str, allow_plain_http: bool) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if allow_plain_http || is_loopback(&parsed) => Ok(parsed),
        "http" => Err(format!(
            "`{url}` is plain http://; use https:// (http:// is only accepted for a loopback \
             host or in development mode)"
        )),
        other => Err(format!("`{url}` is {other}://, not https://")),
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

/// The error and its causes in one line (reqwest's own message omits the cause).
fn describe(error: &reqwest::Error, timeout: Duration) -> String {
    if error.is_timeout() {
        return format!(
            "no complete answer within {}",
            humantime::format_duration(timeout)
        );
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl HttpJwks {
    pub fn new(location: JwksLocation, timeout: Duration) -> Self {
        let policy = reqwest::redirect::Policy::custom(|attempt| {
            let Some(first) = attempt.previous().first() else {
                return attempt.follow();
            };
            if attempt.url().origin() != first.origin() {
                let to = attempt.url().origin().ascii_serialization();
                let from = first.origin().ascii_serialization();
                attempt.error(format!(
                    "a redirect from {from} to another origin ({to}) is not followed"
                ))
            } else if attempt.previous().len() > MAX_REDIRECTS {
                attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
            } else {
                attempt.follow()
            }
        });
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(policy)
            .user_agent(concat!("grantflow-extauthz/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("HTTP client with static settings");
        Self {
            client,
            location,
            timeout,
            allow_plain_http: false,
            max_bytes: MAX_DOCUMENT_BYTES,
        }
    }

    /// Accepts `http://` URLs on any host (development mode only).
    #[must_use]
    pub fn allow_plain_http(mut self, allow: bool) -> Self {
        self.allow_plain_http = allow;
        self
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        what: &'static str,
    ) -> Result<T, JwksError> {
        let fail = |reason: String| JwksError::Fetch { what, reason };
        let url = check_url(url, self.allow_plain_http).map_err(fail)?;
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| fail(describe(&e, self.timeout)))?;
        let mut response = response
            .error_for_status()
            .map_err(|e| fail(describe(&e, self.timeout)))?;
        let limit = self.max_bytes;
        let too_large = || fail(format!("the body is larger than {limit} bytes; refused"));
        if response
            .content_length()
            .is_some_and(|length| length > limit as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| fail(describe(&e, self.timeout)))?
        {
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| fail(format!("not the expected JSON: {e}")))
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
        self.spawn_refresh_observed(every, |_| {})
    }

    /// [`KeySet::spawn_refresh`], telling `observe` whether each refresh replaced the keys
    /// (the caller's metrics; this crate knows no metrics library).
    pub fn spawn_refresh_observed(
        self: Arc<Self>,
        every: Duration,
        observe: impl Fn(bool) + Send + Sync + 'static,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let retry = every.min(Duration::from_secs(10));
            loop {
                let refreshed = self.refresh().await;
                observe(refreshed.is_ok());
                let wait = match refreshed {
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

/// The JWK `alg` values a key may pin and still verify tokens: the asymmetric JWS
/// algorithms the token validator accepts (token.rs). An encryption algorithm (`RSA-OAEP`,
/// ...), HMAC or anything unknown keeps the key out.
const SIGNING_ALGORITHMS: [KeyAlgorithm; 8] = [
    KeyAlgorithm::RS256,
    KeyAlgorithm::RS384,
    KeyAlgorithm::RS512,
    KeyAlgorithm::PS256,
    KeyAlgorithm::PS384,
    KeyAlgorithm::PS512,
    KeyAlgorithm::ES256,
    KeyAlgorithm::ES384,
];

/// Asymmetric signing keys with a `kid`: `use`, when present, is `sig` and `alg`, when
/// present, is an accepted JWS algorithm. Symmetric (`oct`) keys and encryption keys are
/// never used to verify tokens.
fn usable_keys(set: &JwkSet) -> HashMap<String, Arc<VerifyingKey>> {
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        if !matches!(
            jwk.common.public_key_use,
            None | Some(PublicKeyUse::Signature)
        ) {
            continue;
        }
        if jwk
            .common
            .key_algorithm
            .is_some_and(|alg| !SIGNING_ALGORITHMS.contains(&alg))
        {
            tracing::debug!(%kid, "skipping a JWK whose alg is not a signing algorithm");
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

#[cfg(test)]
mod tests {
    use super::*;

    const N: &str = "hhgjSP6hLQ5VObL5waePpCLIAOOZNXHZ3Lgsmquia9_U9rcMsV9YmO_2Wi4BnSmtHF8niw-stuTIRw5ZChIfegfUnlPWqVbEgMgGNJi4ycb--jZoIerbdSoykRL6JwnE5TeTX7qogvcLPSntGIDBhQE4Pv-Qbsop2hiDBgfhYAq5mxkX02tsCh5M-cZcCHmMemAvpmctKt7PebDeqF44QOVa4Q9Y3TaaqllULttsf-zePFlD3LLE5fCPbr8nWc-dTpUzZniWradR1ikwfZORX4e34OAsSNUFyuXnb3cCa5HmcLsUXd9i1RBjGiTRNx5yFrCieVQHbhXZUsPy173Y-Q";

    fn rsa(kid: &str, extra: serde_json::Value) -> serde_json::Value {
        let mut jwk = serde_json::json!({"kty": "RSA", "kid": kid, "n": N, "e": "AQAB"});
        for (name, value) in extra.as_object().unwrap() {
            jwk[name] = value.clone();
        }
        jwk
    }

    #[test]
    fn only_signing_keys_verify() {
        let set: JwkSet = serde_json::from_value(serde_json::json!({"keys": [
            rsa("bare", serde_json::json!({})),
            rsa("rs256", serde_json::json!({"alg": "RS256"})),
            rsa("ps256-sig", serde_json::json!({"alg": "PS256", "use": "sig"})),
            rsa("sig", serde_json::json!({"use": "sig"})),
            // The review's finding: an encryption key without `use` verified RS256 tokens.
            rsa("oaep", serde_json::json!({"alg": "RSA-OAEP"})),
            rsa("oaep-256", serde_json::json!({"alg": "RSA-OAEP-256"})),
            rsa("rsa1_5", serde_json::json!({"alg": "RSA1_5"})),
            rsa("hs256", serde_json::json!({"alg": "HS256"})),
            rsa("unknown-alg", serde_json::json!({"alg": "RS1"})),
            rsa("enc", serde_json::json!({"use": "enc"})),
            rsa("other-use", serde_json::json!({"use": "tls"})),
            rsa("enc-rs256", serde_json::json!({"alg": "RS256", "use": "enc"})),
        ]}))
        .unwrap();
        let keys = usable_keys(&set);
        let mut kids: Vec<&str> = keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        assert_eq!(kids, ["bare", "ps256-sig", "rs256", "sig"]);
        assert_eq!(keys["rs256"].algorithm, Some(Algorithm::RS256));
        assert_eq!(keys["bare"].algorithm, None);
    }

    #[test]
    fn https_is_required_except_for_loopback_hosts_and_development() {
        for url in [
            "https://login.microsoftonline.com/common/discovery/v2.0/keys",
            "http://127.0.0.1:8080/jwks",
            "http://127.1.2.3/jwks",
            "http://[::1]:9000/jwks",
            "http://localhost:9000/jwks",
            "http://LOCALHOST/jwks",
        ] {
            assert!(check_url(url, false).is_ok(), "{url}");
        }
        for url in [
            "http://login.microsoftonline.com/common/discovery/v2.0/keys",
            "http://10.0.0.1/jwks",
            "http://localhost.example.com/jwks",
            "http://127.0.0.1.nip.io/jwks",
        ] {
            let err = check_url(url, false).unwrap_err();
            assert!(err.contains("use https://"), "{url}: {err}");
            assert!(check_url(url, true).is_ok(), "{url} in development mode");
        }
        for url in ["ftp://keys.example/jwks", "file:///etc/jwks.json"] {
            let err = check_url(url, true).unwrap_err();
            assert!(err.contains("not https://"), "{url}: {err}");
        }
        assert!(check_url("keys", true).unwrap_err().contains("not a URL"));
    }
}
