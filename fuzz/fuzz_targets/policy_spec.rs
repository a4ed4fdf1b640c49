//! Policy durations and the CRD specs: `grantflow_core::policy::check_max_age`, the operator's
//! `spec::parse_duration` (compared with a reference parser of `^(\d+h)?(\d+m)?(\d+s)?$`),
//! `spec::session_policy` and `spec::revocation` on specs built from parts or decoded from
//! arbitrary JSON (as the API server would hand them over), and the admin API's `lockUntil`
//! parsing (`humantime::parse_rfc3339_weak`).
#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use grantflow_core::identity::{is_guid, is_safe_id};
use grantflow_core::policy::{MAX_MAX_SESSION_AGE, MIN_MAX_SESSION_AGE, check_max_age};
use grantflow_core::revocation::RevocationTarget;
use grantflow_crds::{RevocationSpec, SessionPolicySpec};
use grantflow_operator::spec;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

#[derive(Arbitrary, Debug)]
enum Tenant {
    Guid,
    UpperGuid,
    Any(String),
}

#[derive(Arbitrary, Debug)]
enum Input {
    Duration(String),
    Parts {
        h: Option<u64>,
        m: Option<u64>,
        s: Option<u64>,
        zeros: u8,
    },
    MaxAge {
        secs: u64,
        nanos: u32,
    },
    Policy {
        tenant: Tenant,
        age: Option<String>,
    },
    Revocation {
        tenant: Tenant,
        session: Option<String>,
        user: Option<String>,
        reason: String,
        lock_until: Option<String>,
        requested_by: String,
        key: String,
    },
    PolicyJson(Vec<u8>),
    RevocationJson(Vec<u8>),
    LockUntil(String),
}

fn tenant(t: &Tenant) -> String {
    match t {
        Tenant::Guid => "72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
        Tenant::UpperGuid => "72F988BF-86F1-41AF-91AB-2D7CD011DB47".into(),
        Tenant::Any(s) => s.clone(),
    }
}

/// `^(\d+h)?(\d+m)?(\d+s)?$`, not empty, in whole seconds; `None` past `u64` seconds.
fn reference(text: &str) -> Option<Duration> {
    if text.is_empty() {
        return None;
    }
    let mut rest = text;
    let mut total: u64 = 0;
    for (unit, factor) in [(b'h', 3600u64), (b'm', 60), (b's', 1)] {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && rest.as_bytes().get(digits) == Some(&unit) {
            let value: u64 = rest[..digits].parse().ok()?;
            total = total.checked_add(value.checked_mul(factor)?)?;
            rest = &rest[digits + 1..];
        }
    }
    rest.is_empty().then(|| Duration::from_secs(total))
}

fn check_duration(text: &str) {
    let parsed = spec::parse_duration(text);
    assert_eq!(parsed, reference(text), "parse_duration({text:?})");
}

fn check_policy(policy: &SessionPolicySpec) {
    match spec::session_policy(policy) {
        Ok((tenant, age)) => {
            assert!(is_guid(&tenant) && tenant == tenant.to_ascii_lowercase());
            assert_eq!(tenant, policy.tenant_id.to_ascii_lowercase());
            assert!((MIN_MAX_SESSION_AGE..=MAX_MAX_SESSION_AGE).contains(&age));
        }
        Err(e) => assert!(!e.0.is_empty()),
    }
}

fn check_revocation(r: &RevocationSpec, requested_by: &str, key: &str) {
    match spec::revocation(r, requested_by, key) {
        Ok(rev) => {
            assert!(is_guid(&rev.tenant) && rev.tenant == rev.tenant.to_ascii_lowercase());
            assert!(!rev.reason.is_empty() && rev.reason.chars().count() <= 1024);
            assert!(
                !rev.reason.chars().any(char::is_control),
                "{:?}",
                rev.reason
            );
            assert_eq!(rev.reason.trim(), rev.reason);
            match &rev.target {
                RevocationTarget::Session(id) => {
                    assert!(is_safe_id(id) && r.lock_until.is_none() && r.target.user_id.is_none());
                    assert!(r.message.is_none());
                }
                RevocationTarget::User {
                    user,
                    lock_until,
                    message,
                } => {
                    assert!(is_safe_id(user) && r.target.session_id.is_none());
                    // A lock's message: only with the lock, cleaned, bounded, never blank.
                    if let Some(m) = message {
                        assert!(lock_until.is_some(), "{m:?}");
                        assert!(!m.is_empty() && m.chars().count() <= 200, "{m:?}");
                        assert!(!m.chars().any(char::is_control), "{m:?}");
                        assert_eq!(m.trim(), m);
                    }
                }
            }
            assert_eq!(rev.idempotency_key.as_deref(), Some(key));
        }
        Err(e) => assert!(!e.0.is_empty()),
    }
}

fuzz_target!(|input: Input| {
    match input {
        Input::Duration(text) => {
            check_duration(&text);
            if let Some(age) = spec::parse_duration(&text) {
                let _ = check_max_age(age);
            }
        }
        Input::Parts { h, m, s, zeros } => {
            let zeros = "0".repeat(usize::from(zeros % 4));
            let mut text = String::new();
            for (value, unit) in [(h, 'h'), (m, 'm'), (s, 's')] {
                if let Some(v) = value {
                    text.push_str(&format!("{zeros}{v}{unit}"));
                }
            }
            check_duration(&text);
            let expected = [(h, 3600u128), (m, 60), (s, 1)]
                .iter()
                .map(|(v, f)| u128::from(v.unwrap_or(0)) * f)
                .sum::<u128>();
            match spec::parse_duration(&text) {
                Some(d) => assert_eq!(u128::from(d.as_secs()), expected),
                None => assert!(text.is_empty() || expected > u128::from(u64::MAX)),
            }
        }
        Input::MaxAge { secs, nanos } => {
            let age = Duration::new(secs, nanos % 1_000_000_000);
            let ok = check_max_age(age).is_ok();
            assert_eq!(
                ok,
                age >= Duration::from_secs(60) && age <= Duration::from_secs(86_400)
            );
        }
        Input::Policy { tenant: t, age } => {
            let policy = SessionPolicySpec {
                tenant_id: tenant(&t),
                max_session_age: age.unwrap_or_default(),
                idle_timeout: None,
                max_sessions_per_user: None,
                on_limit: Default::default(),
            };
            check_policy(&policy);
        }
        Input::Revocation {
            tenant: t,
            session,
            user,
            reason,
            lock_until,
            requested_by,
            key,
        } => {
            let mut value = json!({
                "tenantId": tenant(&t),
                "target": {},
                "reason": reason,
            });
            if let Some(s) = session {
                value["target"]["sessionId"] = Value::String(s);
            }
            if let Some(u) = user {
                value["target"]["userId"] = Value::String(u);
            }
            if let Some(l) = lock_until {
                value["lockUntil"] = Value::String(l);
            }
            if let Ok(r) = serde_json::from_value::<RevocationSpec>(value) {
                check_revocation(&r, &requested_by, &key);
            }
        }
        Input::PolicyJson(bytes) => {
            if let Ok(policy) = serde_json::from_slice::<SessionPolicySpec>(&bytes) {
                check_policy(&policy);
            }
        }
        Input::RevocationJson(bytes) => {
            if let Ok(r) = serde_json::from_slice::<RevocationSpec>(&bytes) {
                check_revocation(&r, "system:serviceaccount:fuzz:fuzz", "fuzz-key");
            }
        }
        Input::LockUntil(text) => {
            if let Ok(at) = humantime::parse_rfc3339_weak(text.trim())
                && let Ok(since) = at.duration_since(std::time::UNIX_EPOCH)
            {
                let _ = i64::try_from(since.as_millis()).unwrap_or(i64::MAX);
            }
        }
    }
});
