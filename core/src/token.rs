//! Bearer token validation: signature by the issuer's JWKS, algorithm, issuer (Entra v1/v2
//! with the tenant placeholder, or explicit), audience, expiry and tenant rules.
//!
//! Verified tokens are cached by the SHA-256 of the token until they expire, so the hot path
//! pays for the signature check once per token — as long as the key that verified a token is
//! still published (same `kid`, same JWK): a withdrawn key stops its tokens at the next JWKS
//! refresh. The raw token is never logged or stored.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, Validation, decode, decode_header};
use parking_lot::Mutex;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::identity::{Identity, SessionKey, is_guid, is_safe_id};
use crate::jwks::KeySet;
use crate::text;

/// The placeholder for the tenant id in an issuer template.
pub const TENANT_PLACEHOLDER: &str = "{tenantid}";

/// The issuers of Microsoft Entra ID access tokens, v1 and v2.
pub const ENTRA_ISSUERS: [&str; 2] = [
    "https://sts.windows.net/{tenantid}/",
    "https://login.microsoftonline.com/{tenantid}/v2.0",
];

/// Asymmetric algorithms accepted; `none` and HMAC never are.
const ACCEPTED_ALGORITHMS: [Algorithm; 8] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

/// What makes a token acceptable.
#[derive(Debug, Clone)]
pub struct TokenRules {
    /// Accepted `iss` values. `{tenantid}` stands for the token's tenant, which must then be a
    /// GUID. Defaults to the two Entra ID issuers.
    pub issuers: Vec<String>,
    /// Accepted `aud` values (at least one).
    pub audiences: Vec<String>,
    /// If not empty, only these tenants are accepted.
    pub allowed_tenants: Vec<String>,
    /// The claim that names the tenant (`tid` for Entra ID).
    pub tenant_claim: String,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// Refuse tokens without a `sid` claim.
    pub require_sid: bool,
    /// Longest token accepted, in bytes.
    pub max_token_bytes: usize,
    /// How many verified tokens to remember.
    pub cache_capacity: usize,
}

impl TokenRules {
    /// Entra ID rules for the given audiences.
    pub fn entra(audiences: Vec<String>) -> Self {
        Self {
            issuers: ENTRA_ISSUERS.iter().map(|s| s.to_string()).collect(),
            audiences,
            allowed_tenants: Vec::new(),
            tenant_claim: "tid".into(),
            leeway: Duration::from_secs(60),
            require_sid: false,
            max_token_bytes: 16 * 1024,
            cache_capacity: 100_000,
        }
    }
}

/// Why a token was refused. The message is for logs; never shown to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is larger than the configured limit")]
    TooLarge,
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token's algorithm is not accepted")]
    UnsupportedAlgorithm,
    #[error("the token's key id is not in the issuer's JWKS")]
    UnknownKey,
    #[error("the issuer's keys have not been loaded")]
    KeysUnavailable,
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token's audience is not accepted")]
    WrongAudience,
    #[error("the token's issuer is not accepted")]
    WrongIssuer,
    #[error("the token's tenant is not allowed")]
    TenantNotAllowed,
    #[error("the token lacks the `{0}` claim")]
    MissingClaim(&'static str),
    #[error("the token's `{0}` claim is not valid")]
    InvalidClaim(&'static str),
    /// The configured tenant claim (`tid` by default) is absent.
    #[error("the token lacks its tenant claim `{0}`")]
    MissingTenant(Arc<str>),
    /// The tenant claim is not a safe id, or not the tenant the issuer names.
    #[error("the token's tenant claim `{0}` is not valid")]
    InvalidTenant(Arc<str>),
    /// The header's `crit` names extensions, which this validator does not implement
    /// (RFC 7515 §4.1.11: the token must then be refused).
    #[error("the token's header marks extensions as critical (`crit`)")]
    CriticalHeader,
    /// Not an access token: an ID token (or another token type) whose audience happens to be
    /// accepted. The claim says what gave it away.
    #[error("the token is not an access token (`{0}`)")]
    NotAnAccessToken(&'static str),
    /// More than [`MAX_CLAIMS`] top-level claims.
    #[error("the token has more claims than accepted")]
    TooManyClaims,
    /// `roles` or `scp` with more than [`MAX_ROLES`] entries, or an entry longer than
    /// [`MAX_ROLE_CHARS`].
    #[error("the token's `{0}` claim has too many or too long entries")]
    OversizedClaim(&'static str),
}

/// Most top-level claims a token may carry (an Entra access token has about 30).
pub const MAX_CLAIMS: usize = 256;
/// Most entries of `roles`, and of `scp` split on spaces.
pub const MAX_ROLES: usize = 256;
/// Longest entry of `roles` or `scp`, in characters.
pub const MAX_ROLE_CHARS: usize = 256;

impl TokenError {
    /// A short, bounded label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::Malformed => "malformed",
            Self::UnsupportedAlgorithm => "unsupported_algorithm",
            Self::UnknownKey => "unknown_key",
            Self::KeysUnavailable => "keys_unavailable",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongAudience => "wrong_audience",
            Self::WrongIssuer => "wrong_issuer",
            Self::TenantNotAllowed => "tenant_not_allowed",
            Self::MissingClaim(_) | Self::MissingTenant(_) => "missing_claim",
            Self::InvalidClaim(_) | Self::InvalidTenant(_) => "invalid_claim",
            Self::CriticalHeader => "critical_header",
            Self::NotAnAccessToken(_) => "not_access_token",
            Self::TooManyClaims => "too_many_claims",
            Self::OversizedClaim(_) => "oversized_claim",
        }
    }
}

#[derive(Deserialize)]
struct Claims {
    iss: Option<String>,
    #[serde(default)]
    aud: Audience,
    exp: Option<i64>,
    nbf: Option<i64>,
    iat: Option<i64>,
    auth_time: Option<i64>,
    oid: Option<String>,
    sid: Option<String>,
    uti: Option<String>,
    jti: Option<String>,
    preferred_username: Option<String>,
    upn: Option<String>,
    name: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(flatten)]
    other: HashMap<String, serde_json::Value>,
}

/// Refuses claims beyond the bounds: more than [`MAX_CLAIMS`] top-level claims (a named claim
/// given as `null` is not counted), or `roles` / `scp` (split on spaces) with more than
/// [`MAX_ROLES`] entries or one longer than [`MAX_ROLE_CHARS`].
fn check_claim_bounds(claims: &Claims) -> Result<(), TokenError> {
    let named = [
        claims.iss.is_some(),
        !matches!(claims.aud, Audience::None),
        claims.exp.is_some(),
        claims.nbf.is_some(),
        claims.iat.is_some(),
        claims.auth_time.is_some(),
        claims.oid.is_some(),
        claims.sid.is_some(),
        claims.uti.is_some(),
        claims.jti.is_some(),
        claims.preferred_username.is_some(),
        claims.upn.is_some(),
        claims.name.is_some(),
        !claims.roles.is_empty(),
    ];
    let count = claims.other.len() + named.iter().filter(|present| **present).count();
    if count > MAX_CLAIMS {
        return Err(TokenError::TooManyClaims);
    }
    fn bounded<'a>(mut entries: impl Iterator<Item = &'a str>) -> bool {
        entries
            .by_ref()
            .take(MAX_ROLES)
            .all(|e| e.chars().count() <= MAX_ROLE_CHARS)
            && entries.next().is_none()
    }
    if !bounded(claims.roles.iter().map(String::as_str)) {
        return Err(TokenError::OversizedClaim("roles"));
    }
    if let Some(scp) = claims.other.get("scp").and_then(|v| v.as_str())
        && !bounded(scp.split(' ').filter(|s| !s.is_empty()))
    {
        return Err(TokenError::OversizedClaim("scp"));
    }
    Ok(())
}

/// Refuses tokens that are not access tokens. An Entra ID token of the API's own app
/// registration has the client id as `aud`, which may be an accepted audience; it must not
/// open a session or reach the admin API.
///
/// - `nonce` is an ID-token claim (OpenID Connect); access tokens never carry it.
/// - `idtyp` (an optional Entra access-token claim) is `user` or `app`; anything else is
///   another token type.
/// - An Entra v2 token (`ver` = `2.0`) is an access token only with delegated scopes (`scp`),
///   or with app roles (`roles`) granted to a calling application (`azp`, present in every v2
///   access token; ID tokens have none). An ID token has neither `scp` nor `azp`.
fn check_token_type(claims: &Claims) -> Result<(), TokenError> {
    let claim = |name: &str| claims.other.get(name);
    if claim("nonce").is_some() {
        return Err(TokenError::NotAnAccessToken("nonce"));
    }
    if let Some(idtyp) = claim("idtyp")
        && !matches!(idtyp.as_str(), Some("user" | "app"))
    {
        return Err(TokenError::NotAnAccessToken("idtyp"));
    }
    if claim("ver").and_then(|v| v.as_str()) == Some("2.0") {
        let present = |name: &str| {
            claim(name)
                .and_then(|v| v.as_str())
                .is_some_and(|v| !v.trim().is_empty())
        };
        let delegated = present("scp");
        let app_only = claims.roles.iter().any(|role| !role.is_empty()) && present("azp");
        if !delegated && !app_only {
            return Err(TokenError::NotAnAccessToken("scp"));
        }
    }
    Ok(())
}

#[derive(Deserialize, Default)]
#[serde(untagged)]
pub(crate) enum Audience {
    One(String),
    Many(Vec<String>),
    #[default]
    None,
}

/// A JWT whose signature verified with one of the issuer's keys; no claim checked yet.
pub(crate) struct Signed<T> {
    pub header: jsonwebtoken::Header,
    pub claims: T,
    pub kid: Arc<str>,
    pub fingerprint: [u8; 32],
}

/// Checks a JWT's algorithm, `crit`, `kid` and signature against `keys` and decodes its claims
/// (no claim is checked: the caller checks them against its clock). Shared by access tokens
/// and the signed events of `crate::signals`.
pub(crate) async fn verify_signature<T: serde::de::DeserializeOwned>(
    token: &str,
    keys: &KeySet,
) -> Result<Signed<T>, TokenError> {
    let header = decode_header(token).map_err(|_| TokenError::Malformed)?;
    if !ACCEPTED_ALGORITHMS.contains(&header.alg) {
        return Err(TokenError::UnsupportedAlgorithm);
    }
    // No JWS extension is implemented, so any `crit` (even an empty list, which RFC 7515
    // forbids) refuses the token.
    if header.crit.is_some() {
        return Err(TokenError::CriticalHeader);
    }
    let kid = header.kid.as_deref().ok_or(TokenError::UnknownKey)?;
    let Some(key) = keys.get(kid).await else {
        return Err(if keys.is_loaded() {
            TokenError::UnknownKey
        } else {
            TokenError::KeysUnavailable
        });
    };
    if key.algorithm.is_some_and(|pinned| pinned != header.alg) {
        return Err(TokenError::UnsupportedAlgorithm);
    }
    // jsonwebtoken checks the signature and that the key family fits the algorithm;
    // every claim is checked by the caller, against the injected clock.
    let mut validation = Validation::new(header.alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = decode::<T>(token, &key.key, &validation)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::BadSignature,
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => TokenError::UnsupportedAlgorithm,
            _ => TokenError::Malformed,
        })?
        .claims;
    Ok(Signed {
        kid: kid.into(),
        header,
        claims,
        fingerprint: key.fingerprint,
    })
}

impl Audience {
    pub(crate) fn contains_any(&self, accepted: &[String]) -> bool {
        match self {
            Audience::One(a) => accepted.contains(a),
            Audience::Many(list) => list.iter().any(|a| accepted.contains(a)),
            Audience::None => false,
        }
    }
}

/// Validates bearer tokens into [`Identity`]s.
pub struct TokenValidator {
    rules: TokenRules,
    keys: Arc<KeySet>,
    clock: Arc<dyn Clock>,
    verified: Mutex<HashMap<[u8; 32], Verified>>,
}

/// A token verified earlier: its identity, and the key that verified it.
struct Verified {
    identity: Arc<Identity>,
    kid: Arc<str>,
    fingerprint: [u8; 32],
}

impl TokenValidator {
    pub fn new(rules: TokenRules, keys: Arc<KeySet>, clock: Arc<dyn Clock>) -> Self {
        Self {
            rules,
            keys,
            clock,
            verified: Mutex::new(HashMap::new()),
        }
    }

    pub fn rules(&self) -> &TokenRules {
        &self.rules
    }

    pub fn keys(&self) -> &Arc<KeySet> {
        &self.keys
    }

    /// Verifies `token` (the bearer credential without the `Bearer ` prefix).
    pub async fn validate(&self, token: &str) -> Result<Arc<Identity>, TokenError> {
        if token.len() > self.rules.max_token_bytes {
            return Err(TokenError::TooLarge);
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // The key that verified a cached token must still be published: a key the issuer
        // withdrew (rotated out, compromised) stops its tokens at the next JWKS refresh, not
        // at their `exp`. Else verify again below.
        let hit = self.verified.lock().get(&digest).map(|cached| {
            let published = self.keys.publishes(&cached.kid, &cached.fingerprint);
            (cached.identity.clone(), published)
        });
        match hit {
            Some((identity, true)) => {
                // Expiry is re-checked on every use; everything else was checked when cached.
                self.check_times(identity.expires_at, identity.not_before)?;
                return Ok(identity);
            }
            Some((_, false)) => {
                self.verified.lock().remove(&digest);
            }
            None => {}
        }
        let verified = self.verify(token).await?;
        let identity = verified.identity.clone();
        self.remember(digest, verified);
        Ok(identity)
    }

    async fn verify(&self, token: &str) -> Result<Verified, TokenError> {
        let signed = verify_signature::<Claims>(token, &self.keys).await?;
        Ok(Verified {
            identity: Arc::new(self.identity(signed.claims, token)?),
            kid: signed.kid,
            fingerprint: signed.fingerprint,
        })
    }

    fn identity(&self, claims: Claims, token: &str) -> Result<Identity, TokenError> {
        let rules = &self.rules;
        check_claim_bounds(&claims)?;
        let expires_at = claims.exp.ok_or(TokenError::MissingClaim("exp"))?;
        self.check_times(expires_at, claims.nbf)?;
        if !claims.aud.contains_any(&rules.audiences) {
            return Err(TokenError::WrongAudience);
        }
        check_token_type(&claims)?;
        let tenant = claims
            .other
            .get(&rules.tenant_claim)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .ok_or_else(|| TokenError::MissingTenant(rules.tenant_claim.as_str().into()))?;
        let issuer = claims
            .iss
            .as_deref()
            .ok_or(TokenError::MissingClaim("iss"))?;
        self.check_issuer(issuer, &tenant)?;
        if !is_safe_id(&tenant) {
            return Err(TokenError::InvalidTenant(
                rules.tenant_claim.as_str().into(),
            ));
        }
        if !rules.allowed_tenants.is_empty() && !rules.allowed_tenants.contains(&tenant) {
            return Err(TokenError::TenantNotAllowed);
        }
        let user = claims.oid.ok_or(TokenError::MissingClaim("oid"))?;
        if !is_safe_id(&user) {
            return Err(TokenError::InvalidClaim("oid"));
        }
        if let Some(sid) = &claims.sid
            && !is_safe_id(sid)
        {
            return Err(TokenError::InvalidClaim("sid"));
        }
        if rules.require_sid && claims.sid.is_none() {
            return Err(TokenError::MissingClaim("sid"));
        }
        let token_id = claims.uti.as_deref().or(claims.jti.as_deref());
        let session = SessionKey::derive(claims.sid.as_deref(), token_id, token);
        // The first name claim with something visible in it, without control or format
        // characters (a U+202E or a zero-width space must not reach the dashboard or logs).
        let display_name = [claims.preferred_username, claims.upn, claims.name]
            .into_iter()
            .flatten()
            .map(|name| text::clean(&name, 256))
            .find(|name| !name.is_empty());
        Ok(Identity {
            tenant,
            user,
            display_name,
            session,
            auth_time: claims.auth_time,
            issued_at: claims.iat,
            not_before: claims.nbf,
            expires_at,
            roles: claims.roles,
        })
    }

    fn check_times(&self, expires_at: i64, not_before: Option<i64>) -> Result<(), TokenError> {
        let now = self.clock.now_secs();
        let leeway = self.rules.leeway.as_secs() as i64;
        // Saturating: `exp` and `nbf` are the issuer's numbers; near i64::MAX/MIN they must
        // not overflow (a panic in debug builds, a wrapped verdict in release builds).
        if expires_at.saturating_add(leeway) <= now {
            return Err(TokenError::Expired);
        }
        if not_before.is_some_and(|nbf| nbf.saturating_sub(leeway) > now) {
            return Err(TokenError::NotYetValid);
        }
        Ok(())
    }

    fn check_issuer(&self, issuer: &str, tenant: &str) -> Result<(), TokenError> {
        check_issuer(&self.rules, issuer, tenant)
    }

    fn remember(&self, digest: [u8; 32], token: Verified) {
        let mut verified = self.verified.lock();
        if verified.len() >= self.rules.cache_capacity {
            let now = self.clock.now_secs();
            verified.retain(|_, v| v.identity.expires_at > now);
            if verified.len() >= self.rules.cache_capacity {
                verified.clear();
            }
        }
        verified.insert(digest, token);
    }
}

/// `iss` must equal one accepted issuer; where the issuer names the tenant, the tenant must be
/// a GUID and the very one the issuer names.
pub(crate) fn check_issuer(
    rules: &TokenRules,
    issuer: &str,
    tenant: &str,
) -> Result<(), TokenError> {
    let mut tenant_mismatch = false;
    for template in &rules.issuers {
        if let Some((prefix, suffix)) = template.split_once(TENANT_PLACEHOLDER) {
            let Some(named) = issuer
                .strip_prefix(prefix)
                .and_then(|rest| rest.strip_suffix(suffix))
            else {
                continue;
            };
            if named == tenant && is_guid(tenant) {
                return Ok(());
            }
            tenant_mismatch = true;
        } else if template == issuer {
            return Ok(());
        }
    }
    Err(if tenant_mismatch {
        TokenError::InvalidTenant(rules.tenant_claim.as_str().into())
    } else {
        TokenError::WrongIssuer
    })
}
