//! Custom resource specs → domain types. The CRD schema refuses most bad input already; these
//! checks run again because the operator must not depend on the schema being installed with
//! its rules (and the messages land in the status for whoever wrote the object).

use std::time::Duration;

use grantflow_core::audit::{Actor, ActorKind, Source};
use grantflow_core::identity::{is_guid, is_safe_id};
use grantflow_core::policy::{
    OnLimit, PolicyOutOfRange, check_idle_timeout, check_max_age, check_session_limit,
};
use grantflow_core::revocation::{LOCK_MESSAGE_MAX_CHARS, Revocation, RevocationTarget};
use grantflow_crds::{DEFAULT_MAX_SESSION_AGE, RevocationSpec, SessionPolicySpec};

/// Why a spec cannot be applied, in words for the status message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSpec(pub String);

fn invalid(message: impl Into<String>) -> InvalidSpec {
    InvalidSpec(message.into())
}

/// The tenant a spec names, in the lower-case form tokens carry.
pub fn tenant(tenant_id: &str) -> Result<String, InvalidSpec> {
    if is_guid(tenant_id) {
        Ok(tenant_id.to_ascii_lowercase())
    } else {
        Err(invalid(format!("tenantId {tenant_id:?} is not a GUID")))
    }
}

/// Parses whole `h`, `m` and `s` parts in that order (`15m`, `1h30m`, `90s`) — the subset of
/// Go durations the CRD pattern admits.
pub fn parse_duration(text: &str) -> Option<Duration> {
    if text.is_empty() {
        return None;
    }
    let mut rest = text;
    let mut seconds: u64 = 0;
    for (unit, factor) in [('h', 3600u64), ('m', 60), ('s', 1)] {
        if let Some(at) = rest.find(unit) {
            let digits = &rest[..at];
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let value: u64 = digits.parse().ok()?;
            seconds = seconds.checked_add(value.checked_mul(factor)?)?;
            rest = &rest[at + 1..];
        }
    }
    rest.is_empty().then(|| Duration::from_secs(seconds))
}

/// A SessionPolicy's tenant and maximum session age.
pub fn session_policy(spec: &SessionPolicySpec) -> Result<(String, Duration), InvalidSpec> {
    let tenant = tenant(&spec.tenant_id)?;
    let text = if spec.max_session_age.is_empty() {
        DEFAULT_MAX_SESSION_AGE
    } else {
        spec.max_session_age.as_str()
    };
    let age = parse_duration(text).ok_or_else(|| {
        invalid(format!(
            "maxSessionAge {text:?} is not a duration such as 15m or 1h30m"
        ))
    })?;
    let age = check_max_age(age).map_err(|e| invalid(format!("maxSessionAge {text:?}: {e}")))?;
    Ok((tenant, age))
}

/// A SessionPolicy's idle timeout, session limit and what the limit does, checked against
/// its (already checked) maximum age `max_age`.
pub fn session_rules(
    spec: &SessionPolicySpec,
    max_age: Duration,
) -> Result<(Option<Duration>, Option<u32>, OnLimit), InvalidSpec> {
    let idle = match &spec.idle_timeout {
        None => None,
        Some(text) => Some(parse_duration(text).ok_or_else(|| {
            invalid(format!(
                "idleTimeout {text:?} is not a duration such as 10m or 1h30m"
            ))
        })?),
    };
    let idle = check_idle_timeout(idle, max_age).map_err(|e| {
        invalid(format!(
            "idleTimeout {:?}: {e}",
            spec.idle_timeout.as_deref().unwrap_or_default()
        ))
    })?;
    let limit = check_session_limit(spec.max_sessions_per_user)
        .map_err(|e: PolicyOutOfRange| invalid(format!("maxSessionsPerUser: {e}")))?;
    let on_limit = match spec.on_limit {
        grantflow_crds::OnLimit::RefuseNew => OnLimit::RefuseNew,
        grantflow_crds::OnLimit::EndOldest => OnLimit::EndOldest,
    };
    Ok((idle, limit, on_limit))
}

/// The longest reason kept, as the CRD's schema allows.
const MAX_REASON_CHARS: usize = 1024;

/// A lock's message as the admin API keeps it: cleaned (no control or format characters), at
/// most [`LOCK_MESSAGE_MAX_CHARS`], only with a lock; blank is none.
fn lock_message(message: Option<&str>, locked: bool) -> Result<Option<String>, InvalidSpec> {
    let Some(message) = message else {
        return Ok(None);
    };
    if !locked {
        return Err(invalid(
            "message applies to a lock only: set lockUntil and target.userId",
        ));
    }
    let message = grantflow_core::text::clean(message, usize::MAX);
    if message.chars().count() > LOCK_MESSAGE_MAX_CHARS {
        return Err(invalid(format!(
            "message is longer than {LOCK_MESSAGE_MAX_CHARS} characters"
        )));
    }
    Ok(Some(message).filter(|m| !m.is_empty()))
}

/// The domain revocation a Revocation asks for. `requested_by` is the Kubernetes user the
/// webhook recorded; `idempotency_key` makes the store apply it at most once.
pub fn revocation(
    spec: &RevocationSpec,
    requested_by: &str,
    idempotency_key: &str,
) -> Result<Revocation, InvalidSpec> {
    let tenant = tenant(&spec.tenant_id)?;
    let target = match (&spec.target.session_id, &spec.target.user_id) {
        (Some(session), None) => {
            if spec.lock_until.is_some() {
                return Err(invalid("lockUntil applies to user targets only"));
            }
            if spec.message.is_some() {
                return Err(invalid(
                    "message applies to a lock only: set lockUntil and target.userId",
                ));
            }
            if !is_safe_id(session) {
                return Err(invalid(
                    "target.sessionId must be 1-128 of A-Z a-z 0-9 . _ : @ -",
                ));
            }
            RevocationTarget::Session(session.clone())
        }
        (None, Some(user)) => {
            if !is_safe_id(user) {
                return Err(invalid(
                    "target.userId must be 1-128 of A-Z a-z 0-9 . _ : @ -",
                ));
            }
            let lock_until = spec.lock_until.as_ref().map(|t| t.0.as_millisecond());
            RevocationTarget::User {
                user: user.clone(),
                lock_until,
                message: lock_message(spec.message.as_deref(), lock_until.is_some())?,
            }
        }
        _ => {
            return Err(invalid(
                "set exactly one of target.sessionId and target.userId",
            ));
        }
    };
    // As the admin API does: no control characters, no Unicode format characters (bidi
    // overrides, zero-width characters) in what the audit trail and the dashboard show.
    let reason = grantflow_core::text::clean(&spec.reason, MAX_REASON_CHARS);
    if reason.is_empty() {
        return Err(invalid(
            "reason must not be blank (nor only invisible characters)",
        ));
    }
    Ok(Revocation {
        tenant,
        target,
        reason,
        actor: Actor {
            kind: ActorKind::Kubernetes,
            id: requested_by.to_owned(),
            name: None,
        },
        source: Source::Kubernetes,
        idempotency_key: Some(idempotency_key.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use grantflow_crds::RevocationTarget as Target;

    #[test]
    fn durations_in_the_crd_subset() {
        let d = |s| parse_duration(s).map(|d| d.as_secs());
        assert_eq!(d("15m"), Some(900));
        assert_eq!(d("1h30m"), Some(5400));
        assert_eq!(d("1h1m1s"), Some(3661));
        assert_eq!(d("90s"), Some(90));
        assert_eq!(d("24h"), Some(86400));
        for bad in ["", "m", "15", "1m1h", "1.5h", "15 m", "-1m", "1d", "15mm"] {
            assert_eq!(d(bad), None, "{bad}");
        }
    }

    #[test]
    fn session_policy_checks_tenant_and_bounds() {
        let spec = |tenant: &str, age: &str| SessionPolicySpec {
            tenant_id: tenant.into(),
            max_session_age: age.into(),
            idle_timeout: None,
            max_sessions_per_user: None,
            on_limit: Default::default(),
        };
        let tenant = "72F988BF-86F1-41AF-91AB-2D7CD011DB47";
        assert_eq!(
            session_policy(&spec(tenant, "")).unwrap(),
            (tenant.to_ascii_lowercase(), Duration::from_secs(900))
        );
        assert!(session_policy(&spec("contoso", "15m")).is_err());
        let err = session_policy(&spec(tenant, "30s")).unwrap_err();
        assert!(err.0.contains("between 1 minute and 24 hours"), "{err}");
        assert!(session_policy(&spec(tenant, "soon")).is_err());
    }

    #[test]
    fn session_rules_map_and_check_bounds() {
        let spec = |idle: Option<&str>, limit: Option<u32>, on: grantflow_crds::OnLimit| {
            SessionPolicySpec {
                tenant_id: "72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
                max_session_age: "30m".into(),
                idle_timeout: idle.map(Into::into),
                max_sessions_per_user: limit,
                on_limit: on,
            }
        };
        let age = Duration::from_secs(1800);
        use grantflow_crds::OnLimit as Crd;
        assert_eq!(
            session_rules(&spec(None, None, Crd::RefuseNew), age).unwrap(),
            (None, None, OnLimit::RefuseNew),
            "off by default"
        );
        assert_eq!(
            session_rules(&spec(Some("10m"), Some(3), Crd::EndOldest), age).unwrap(),
            (Some(Duration::from_secs(600)), Some(3), OnLimit::EndOldest)
        );
        assert_eq!(
            session_rules(&spec(Some("30m"), Some(1000), Crd::RefuseNew), age)
                .unwrap()
                .0,
            Some(age),
            "the idle timeout may equal the max age"
        );
        for bad in ["59s", "31m", "soon", ""] {
            let err = session_rules(&spec(Some(bad), None, Crd::RefuseNew), age).unwrap_err();
            assert!(err.0.starts_with("idleTimeout"), "{bad}: {err}");
        }
        for bad in [0, 1001] {
            let err = session_rules(&spec(None, Some(bad), Crd::RefuseNew), age).unwrap_err();
            assert!(err.0.contains("between 1 and 1000"), "{bad}: {err}");
        }
    }

    #[test]
    fn revocation_targets() {
        let spec = |session: Option<&str>, user: Option<&str>| RevocationSpec {
            tenant_id: "72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
            target: Target {
                session_id: session.map(Into::into),
                user_id: user.map(Into::into),
            },
            reason: " INC-1 ".into(),
            lock_until: None,
            message: None,
        };
        let r = revocation(&spec(None, Some("u-1")), "alice", "uid-1").unwrap();
        assert_eq!(r.reason, "INC-1");
        assert_eq!(r.actor.kind, ActorKind::Kubernetes);
        assert_eq!(r.actor.id, "alice");
        assert_eq!(r.idempotency_key.as_deref(), Some("uid-1"));
        assert!(revocation(&spec(Some("s"), Some("u")), "alice", "k").is_err());
        assert!(revocation(&spec(None, None), "alice", "k").is_err());
        assert!(revocation(&spec(Some("a b"), None), "alice", "k").is_err());
    }

    #[test]
    fn revocation_reasons_lose_control_and_format_characters() {
        let spec = |reason: &str| RevocationSpec {
            tenant_id: "72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
            target: Target {
                session_id: None,
                user_id: Some("u-1".into()),
            },
            reason: reason.into(),
            lock_until: None,
            message: None,
        };
        let r = revocation(
            &spec("INC-1\u{202E}txt.exe\u{200B}\r\nforged"),
            "alice",
            "k",
        )
        .unwrap();
        assert_eq!(r.reason, "INC-1txt.exe  forged");
        let err = revocation(&spec("\u{200B}\u{202E} "), "alice", "k").unwrap_err();
        assert!(err.0.contains("invisible"), "{err}");
    }

    #[test]
    fn lock_messages_are_cleaned_bounded_and_only_with_a_lock() {
        let spec = |user: bool, lock: bool, message: Option<&str>| RevocationSpec {
            tenant_id: "72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
            target: Target {
                session_id: (!user).then(|| "s-1".into()),
                user_id: user.then(|| "u-1".into()),
            },
            reason: "INC-1".into(),
            lock_until: lock.then(|| {
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    "2030-01-01T00:00:00Z".parse().unwrap(),
                )
            }),
            message: message.map(Into::into),
        };
        let r = revocation(
            &spec(true, true, Some(" INC-2041\u{202E} <b>\r\n& ")),
            "a",
            "k",
        )
        .unwrap();
        let RevocationTarget::User { message, .. } = r.target else {
            panic!("a user target");
        };
        assert_eq!(message.as_deref(), Some("INC-2041 <b>  &"));
        let long = "x".repeat(LOCK_MESSAGE_MAX_CHARS + 1);
        let err = revocation(&spec(true, true, Some(&long)), "a", "k").unwrap_err();
        assert!(err.0.contains("200"), "{err}");
        let err = revocation(&spec(true, false, Some("m")), "a", "k").unwrap_err();
        assert!(err.0.contains("lockUntil"), "{err}");
        assert!(revocation(&spec(false, false, Some("m")), "a", "k").is_err());
    }
}
