//! Signals that end sessions from outside: the identity provider's OpenID Connect
//! back-channel logout tokens, and Shared Signals Framework (CAEP) Security Event Tokens
//! (RFC 8417) from a configured transmitter.
//!
//! Both are signed JWTs checked like access tokens (`crate::token`'s signature check, the
//! same key set type) and turned into a [`Revocation`] whose idempotency key is derived from
//! the issuer and `jti`: a replay is found by the store itself, on every store and across
//! replicas. Because the store remembers an idempotency key for [`IDEMPOTENCY_TTL`], a signal
//! issued longer ago than [`max_signal_age`] is refused: its `jti` could otherwise be
//! replayed after its key was forgotten.
//!
//! The user a signal names is the session layer's user id (`oid`): a logout token's `oid`
//! claim when present, else its `sub`; a SET's user subject `opaque` id or `iss_sub` `sub`.
//! A `sid` is the session key the access-token path derives from the same `sid`
//! ([`SessionKey::derive`]).

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::audit::{Actor, ActorKind, Source};
use crate::clock::Clock;
use crate::identity::{SessionKey, is_safe_id};
use crate::jwks::KeySet;
use crate::revocation::{IDEMPOTENCY_TTL, Revocation, RevocationTarget};
use crate::text;
use crate::token::{
    Audience, TENANT_PLACEHOLDER, TokenError, TokenRules, check_issuer, verify_signature,
};

/// The event a logout token carries (OpenID Connect Back-Channel Logout 1.0, §2.4).
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// CAEP: a session was revoked.
pub const CAEP_SESSION_REVOKED: &str =
    "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
/// CAEP: a credential of the user changed.
pub const CAEP_CREDENTIAL_CHANGE: &str =
    "https://schemas.openid.net/secevent/caep/event-type/credential-change";

/// Longest `jti` accepted, in characters.
const MAX_JTI_CHARS: usize = 256;
/// Longest reason kept from a SET's `reason_admin`, in characters.
const MAX_REASON_CHARS: usize = 256;

/// The oldest `iat` a signal may carry, for a clock leeway: the idempotency window less twice
/// the leeway (a token may be applied up to one leeway before its `iat`) and one more minute.
pub fn max_signal_age(leeway: Duration) -> Duration {
    IDEMPOTENCY_TTL
        .saturating_sub(leeway * 2)
        .saturating_sub(Duration::from_secs(60))
}

/// Why a signal was refused. For logs and metrics only: the sender is told no detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignalError {
    /// The signature, key, algorithm, issuer, audience, tenant or time checks of a JWT.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The JWT header's `typ` is not one this signal may have.
    #[error("the token's `typ` header is not accepted")]
    WrongType,
    /// `iat` is older than [`max_signal_age`].
    #[error("the token was issued too long ago")]
    TooOld,
    /// A logout token carries `nonce` (§2.4: it must not, so an ID token is never one).
    #[error("the logout token carries a nonce")]
    Nonce,
    /// No event, or not the expected one.
    #[error("the token carries no accepted event")]
    NoEvent,
    /// No `sid`, no user, or a subject format that is not understood.
    #[error("the token names no session or user this service knows how to find")]
    NoSubject,
}

impl SignalError {
    /// A short, bounded label for logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Token(error) => error.label(),
            Self::WrongType => "wrong_type",
            Self::TooOld => "too_old",
            Self::Nonce => "nonce",
            Self::NoEvent => "no_event",
            Self::NoSubject => "no_subject",
        }
    }

    /// The RFC 8935 §2.3 error code of a refused SET.
    pub fn set_error_code(&self) -> &'static str {
        match self {
            Self::Token(
                TokenError::BadSignature
                | TokenError::UnknownKey
                | TokenError::UnsupportedAlgorithm
                | TokenError::CriticalHeader
                | TokenError::KeysUnavailable,
            ) => "invalid_key",
            Self::Token(TokenError::WrongIssuer) => "invalid_issuer",
            Self::Token(TokenError::WrongAudience) => "invalid_audience",
            _ => "invalid_request",
        }
    }
}

/// A verified signal: the revocation it asks for, and who sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    /// The `iss` of the token (the actor of the audit record).
    pub issuer: String,
    pub revocation: Revocation,
}

/// The checks of the time claims shared by both signals.
fn check_times(
    iat: Option<i64>,
    exp: Option<i64>,
    leeway: Duration,
    clock: &dyn Clock,
) -> Result<(), SignalError> {
    let now = clock.now_secs();
    let leeway_secs = leeway.as_secs() as i64;
    let iat = iat.ok_or(TokenError::MissingClaim("iat"))?;
    if iat.saturating_sub(leeway_secs) > now {
        return Err(TokenError::NotYetValid.into());
    }
    if iat.saturating_add(max_signal_age(leeway).as_secs() as i64) < now {
        return Err(SignalError::TooOld);
    }
    if exp.is_some_and(|exp| exp.saturating_add(leeway_secs) <= now) {
        return Err(TokenError::Expired.into());
    }
    Ok(())
}

/// A `jti`: present, 1–256 characters.
fn check_jti(jti: Option<String>) -> Result<String, SignalError> {
    let jti = jti.ok_or(TokenError::MissingClaim("jti"))?;
    if jti.is_empty() || jti.chars().count() > MAX_JTI_CHARS {
        return Err(TokenError::InvalidClaim("jti").into());
    }
    Ok(jti)
}

/// The idempotency key of a signal: `<kind>:` and 128 bits of SHA-256 of issuer and `jti`
/// (bounded, and safe as a store key whatever the issuer puts in them).
fn idempotency_key(kind: &str, issuer: &str, jti: &str) -> String {
    let digest = Sha256::digest(format!("{issuer}\n{jti}").as_bytes());
    format!("{kind}:{}", hex::encode(&digest[..16]))
}

/// The tenant of a token from issuer `iss`: the tenant claim when given (and then the issuer
/// must be accepted for it, as for access tokens), else the tenant an issuer template names.
fn tenant_of(rules: &TokenRules, iss: &str, claimed: Option<&str>) -> Result<String, SignalError> {
    let tenant = match claimed {
        Some(tenant) => tenant.to_owned(),
        None => rules
            .issuers
            .iter()
            .filter_map(|template| template.split_once(TENANT_PLACEHOLDER))
            .find_map(|(prefix, suffix)| {
                iss.strip_prefix(prefix)
                    .and_then(|rest| rest.strip_suffix(suffix))
            })
            .map(str::to_owned)
            .ok_or_else(|| TokenError::MissingTenant(rules.tenant_claim.as_str().into()))?,
    };
    check_issuer(rules, iss, &tenant)?;
    check_tenant(rules, &tenant)?;
    Ok(tenant)
}

/// A tenant must be a safe id and, with an allow-list, on it.
fn check_tenant(rules: &TokenRules, tenant: &str) -> Result<(), SignalError> {
    if !is_safe_id(tenant) {
        return Err(TokenError::InvalidTenant(rules.tenant_claim.as_str().into()).into());
    }
    if !rules.allowed_tenants.is_empty() && !rules.allowed_tenants.iter().any(|t| t == tenant) {
        return Err(TokenError::TenantNotAllowed.into());
    }
    Ok(())
}

fn system_actor(issuer: &str) -> Actor {
    Actor {
        kind: ActorKind::System,
        id: text::clean(issuer, 256),
        name: None,
    }
}

#[derive(Deserialize)]
struct LogoutClaims {
    iss: Option<String>,
    #[serde(default)]
    aud: Audience,
    iat: Option<i64>,
    exp: Option<i64>,
    jti: Option<String>,
    sub: Option<String>,
    oid: Option<String>,
    sid: Option<String>,
    events: Option<Map<String, Value>>,
    nonce: Option<Value>,
    #[serde(flatten)]
    other: HashMap<String, Value>,
}

/// Validates OpenID Connect back-channel logout tokens of the access tokens' issuer.
pub struct LogoutValidator<'a> {
    /// The access tokens' rules: issuers, tenant claim, allowed tenants, leeway, size.
    pub rules: &'a TokenRules,
    pub keys: &'a KeySet,
    /// The accepted `aud` values: the client ids registered at the identity provider.
    pub audiences: &'a [String],
    pub clock: &'a dyn Clock,
}

impl LogoutValidator<'_> {
    /// A logout token → the revocation it asks for: with `sid`, that session; with only the
    /// user (`oid`, else `sub`), every session of the user.
    pub async fn validate(&self, token: &str) -> Result<Signal, SignalError> {
        if token.len() > self.rules.max_token_bytes {
            return Err(TokenError::TooLarge.into());
        }
        let signed = verify_signature::<LogoutClaims>(token, self.keys).await?;
        if !signed.header.typ.as_deref().is_none_or(|typ| {
            ["JWT", "logout+jwt", "application/logout+jwt"]
                .iter()
                .any(|accepted| typ.eq_ignore_ascii_case(accepted))
        }) {
            return Err(SignalError::WrongType);
        }
        let claims = signed.claims;
        let iss = claims.iss.ok_or(TokenError::MissingClaim("iss"))?;
        if !claims.aud.contains_any(self.audiences) {
            return Err(TokenError::WrongAudience.into());
        }
        check_times(claims.iat, claims.exp, self.rules.leeway, self.clock)?;
        let claimed = claims
            .other
            .get(&self.rules.tenant_claim)
            .map(|v| {
                v.as_str().ok_or_else(|| {
                    TokenError::InvalidTenant(self.rules.tenant_claim.as_str().into())
                })
            })
            .transpose()?;
        let tenant = tenant_of(self.rules, &iss, claimed)?;
        let jti = check_jti(claims.jti)?;
        if claims.nonce.is_some() {
            return Err(SignalError::Nonce);
        }
        match claims
            .events
            .as_ref()
            .and_then(|e| e.get(BACKCHANNEL_LOGOUT_EVENT))
        {
            Some(Value::Object(_)) => {}
            _ => return Err(SignalError::NoEvent),
        }
        let user = claims.oid.or(claims.sub);
        let target = match (claims.sid, user) {
            (Some(sid), _) => {
                if !is_safe_id(&sid) {
                    return Err(TokenError::InvalidClaim("sid").into());
                }
                RevocationTarget::Session(SessionKey::derive(Some(&sid), None, token).id)
            }
            (None, Some(user)) => {
                if !is_safe_id(&user) {
                    return Err(TokenError::InvalidClaim("sub").into());
                }
                RevocationTarget::User {
                    user,
                    lock_until: None,
                    message: None,
                }
            }
            (None, None) => return Err(SignalError::NoSubject),
        };
        Ok(Signal {
            revocation: Revocation {
                tenant,
                target,
                reason: "OpenID Connect back-channel logout".into(),
                actor: system_actor(&iss),
                source: Source::BackchannelLogout,
                idempotency_key: Some(idempotency_key("backchannel", &iss, &jti)),
            },
            issuer: iss,
        })
    }
}

/// The transmitter a SET must come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmitter {
    /// The exact `iss` of its SETs.
    pub issuer: String,
    /// Accepted `aud` values (this receiver).
    pub audiences: Vec<String>,
}

#[derive(Deserialize)]
struct SetClaims {
    iss: Option<String>,
    #[serde(default)]
    aud: Audience,
    iat: Option<i64>,
    exp: Option<i64>,
    jti: Option<String>,
    sub_id: Option<Value>,
    events: Option<Map<String, Value>>,
    #[serde(flatten)]
    other: HashMap<String, Value>,
}

/// Validates Security Event Tokens (RFC 8417) pushed by one transmitter (RFC 8935).
pub struct SetValidator<'a> {
    pub transmitter: &'a Transmitter,
    /// The transmitter's keys.
    pub keys: &'a KeySet,
    /// The access tokens' rules: which tenants exist and how issuers name them.
    pub rules: &'a TokenRules,
    pub clock: &'a dyn Clock,
}

/// The subject of a CAEP event: a user, a session, a tenant (RFC 9493 subject identifiers).
#[derive(Default)]
struct Subject {
    user: Option<String>,
    /// The `iss` of an `iss_sub` user subject.
    user_issuer: Option<String>,
    session: Option<String>,
    tenant: Option<String>,
}

impl Subject {
    /// `complex` (members `user`, `session`, `tenant`) or a simple user subject.
    fn read(value: &Value) -> Result<Self, SignalError> {
        let mut subject = Subject::default();
        match value.get("format").and_then(Value::as_str) {
            Some("complex") => {
                if let Some(user) = value.get("user") {
                    subject.read_user(user)?;
                }
                subject.session = value.get("session").map(opaque).transpose()?;
                subject.tenant = value.get("tenant").map(opaque).transpose()?;
            }
            _ => subject.read_user(value)?,
        }
        Ok(subject)
    }

    fn read_user(&mut self, value: &Value) -> Result<(), SignalError> {
        let field = |name| value.get(name).and_then(Value::as_str).map(str::to_owned);
        match value.get("format").and_then(Value::as_str) {
            Some("opaque") => self.user = field("id"),
            Some("iss_sub") => {
                self.user = field("sub");
                self.user_issuer = Some(field("iss").ok_or(SignalError::NoSubject)?);
            }
            _ => return Err(SignalError::NoSubject),
        }
        Ok(())
    }
}

/// An `opaque` subject's `id`.
fn opaque(value: &Value) -> Result<String, SignalError> {
    match (
        value.get("format").and_then(Value::as_str),
        value.get("id").and_then(Value::as_str),
    ) {
        (Some("opaque"), Some(id)) => Ok(id.to_owned()),
        _ => Err(SignalError::NoSubject),
    }
}

/// CAEP `reason_admin`: a string, or an object of language → string (`en` preferred).
fn reason_admin(event: &Value) -> Option<String> {
    let reason = match event.get("reason_admin")? {
        Value::String(text) => text.clone(),
        Value::Object(by_language) => by_language
            .get("en")
            .or_else(|| by_language.values().next())?
            .as_str()?
            .to_owned(),
        _ => return None,
    };
    Some(text::clean(&reason, MAX_REASON_CHARS)).filter(|r| !r.is_empty())
}

impl SetValidator<'_> {
    /// A SET → the revocation it asks for. One event per SET: `session-revoked` ends the
    /// session named by the subject's `session` (else every session of its user);
    /// `credential-change` ends every session of the user. The subject is the event's
    /// `subject`, else the SET's `sub_id`.
    pub async fn validate(&self, token: &str) -> Result<Signal, SignalError> {
        if token.len() > self.rules.max_token_bytes {
            return Err(TokenError::TooLarge.into());
        }
        let signed = verify_signature::<SetClaims>(token, self.keys).await?;
        if !signed.header.typ.as_deref().is_some_and(|typ| {
            typ.eq_ignore_ascii_case("secevent+jwt")
                || typ.eq_ignore_ascii_case("application/secevent+jwt")
        }) {
            return Err(SignalError::WrongType);
        }
        let claims = signed.claims;
        let iss = claims.iss.ok_or(TokenError::MissingClaim("iss"))?;
        if iss != self.transmitter.issuer {
            return Err(TokenError::WrongIssuer.into());
        }
        if !claims.aud.contains_any(&self.transmitter.audiences) {
            return Err(TokenError::WrongAudience.into());
        }
        check_times(claims.iat, claims.exp, self.rules.leeway, self.clock)?;
        let jti = check_jti(claims.jti)?;
        let events = claims.events.ok_or(SignalError::NoEvent)?;
        let mut events = events.into_iter();
        let (Some((kind, event)), None) = (events.next(), events.next()) else {
            return Err(SignalError::NoEvent);
        };
        let subject = match (event.get("subject"), &claims.sub_id) {
            (Some(subject), _) | (None, Some(subject)) => Subject::read(subject)?,
            (None, None) => return Err(SignalError::NoSubject),
        };
        let claimed = claims
            .other
            .get(&self.rules.tenant_claim)
            .and_then(Value::as_str)
            .map(str::to_owned);
        let tenant = match (&subject.user_issuer, subject.tenant.or(claimed)) {
            (Some(user_issuer), tenant) => tenant_of(self.rules, user_issuer, tenant.as_deref())?,
            (None, Some(tenant)) => {
                check_tenant(self.rules, &tenant)?;
                tenant
            }
            (None, None) => {
                return Err(
                    TokenError::MissingTenant(self.rules.tenant_claim.as_str().into()).into(),
                );
            }
        };
        if subject.user.as_deref().is_some_and(|u| !is_safe_id(u))
            || subject.session.as_deref().is_some_and(|s| !is_safe_id(s))
        {
            return Err(SignalError::NoSubject);
        }
        let user_target = |user: Option<String>| {
            user.map(|user| RevocationTarget::User {
                user,
                lock_until: None,
                message: None,
            })
            .ok_or(SignalError::NoSubject)
        };
        let (target, default_reason) = match kind.as_str() {
            CAEP_SESSION_REVOKED => (
                match subject.session {
                    Some(sid) => {
                        RevocationTarget::Session(SessionKey::derive(Some(&sid), None, token).id)
                    }
                    None => user_target(subject.user)?,
                },
                "CAEP session revoked",
            ),
            CAEP_CREDENTIAL_CHANGE => (user_target(subject.user)?, "CAEP credential change"),
            _ => return Err(SignalError::NoEvent),
        };
        Ok(Signal {
            revocation: Revocation {
                tenant,
                target,
                reason: reason_admin(&event).unwrap_or_else(|| default_reason.into()),
                actor: system_actor(&iss),
                source: Source::Ssf,
                idempotency_key: Some(idempotency_key("ssf", &iss, &jti)),
            },
            issuer: iss,
        })
    }
}
