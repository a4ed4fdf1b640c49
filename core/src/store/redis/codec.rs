//! Key names and the values read back from Redis: a tenant's key prefix, and sessions and
//! policies decoded from their hashes. A value of the wrong shape is [`StoreError::Malformed`].

use std::collections::HashMap;
use std::time::Duration;

use crate::identity::SessionAnchor;
use crate::policy::{OnLimit, Policy, PolicySource};
use crate::session::{SessionRecord, client_label};
use crate::store::StoreError;

pub(super) fn malformed(what: &str) -> StoreError {
    StoreError::Malformed(what.to_owned())
}

/// The key prefix of a tenant, with its hash tag.
pub(super) fn prefix(tenant: &str) -> String {
    format!("gf:{{{tenant}}}:")
}

pub(super) fn parse_anchor(anchor: &str) -> Option<SessionAnchor> {
    serde_json::from_value(serde_json::Value::String(anchor.to_owned())).ok()
}

pub(super) fn parse_policy(
    fields: &HashMap<String, String>,
    default: Duration,
) -> Result<Policy, StoreError> {
    let Some(max_age) = fields.get("max_age_ms") else {
        return Ok(Policy::default_with(default));
    };
    let max_age: u64 = max_age.parse().map_err(|_| malformed("policy max age"))?;
    let source: PolicySource = fields
        .get("source")
        .map(|s| serde_json::from_str(s))
        .transpose()
        .map_err(|_| malformed("policy source"))?
        .unwrap_or(PolicySource::Admin);
    let (idle_timeout, max_sessions_per_user, on_limit) = policy_rules(
        fields.get("idle_ms").map(String::as_str),
        fields.get("max_per_user").map(String::as_str),
        fields.get("on_limit").map(String::as_str),
    )?;
    Ok(Policy {
        max_session_age: Duration::from_millis(max_age),
        idle_timeout,
        max_sessions_per_user,
        on_limit,
        source,
    })
}

/// The idle timeout (`idle_ms`), session limit (`max_per_user`) and `on_limit` of a policy
/// hash or message: missing or empty is off (a policy written before they existed), and
/// `on_limit` defaults to `RefuseNew`.
pub(super) fn policy_rules(
    idle_ms: Option<&str>,
    max_per_user: Option<&str>,
    on_limit: Option<&str>,
) -> Result<(Option<Duration>, Option<u32>, OnLimit), StoreError> {
    let idle = idle_ms
        .filter(|v| !v.is_empty())
        .map(|v| v.parse::<u64>().map(Duration::from_millis))
        .transpose()
        .map_err(|_| malformed("policy idle timeout"))?;
    let per_user = max_per_user
        .filter(|v| !v.is_empty())
        .map(str::parse::<u32>)
        .transpose()
        .map_err(|_| malformed("policy session limit"))?;
    let on_limit = match on_limit.filter(|v| !v.is_empty()) {
        None => OnLimit::RefuseNew,
        Some(name) => OnLimit::parse(name).ok_or_else(|| malformed("policy on limit"))?,
    };
    Ok((idle, per_user, on_limit))
}

pub(super) fn parse_session(
    tenant: &str,
    id: &str,
    fields: HashMap<String, String>,
) -> Option<SessionRecord> {
    session_from(tenant, id, |name| fields.get(name).map(String::as_str))
}

/// A session from its fields by name — `user`, `dn`, `anchor`, `started`, `seen`, `ip`, `ua`,
/// `cl`,
/// as `check.lua` writes them both into the session's hash and into its `created` message —
/// or `None` when one that must be there is missing or malformed.
pub(super) fn session_from<'a>(
    tenant: &str,
    id: &str,
    field: impl Fn(&str) -> Option<&'a str>,
) -> Option<SessionRecord> {
    let user_agent = field("ua").filter(|ua| !ua.is_empty()).map(str::to_owned);
    Some(SessionRecord {
        tenant: tenant.to_owned(),
        user: field("user")?.to_owned(),
        display_name: field("dn").filter(|d| !d.is_empty()).map(str::to_owned),
        id: id.to_owned(),
        anchor: parse_anchor(field("anchor")?)?,
        started_at: field("started")?.parse().ok()?,
        last_seen: field("seen")?.parse().ok()?,
        client_ip: field("ip").and_then(|ip| ip.parse().ok()),
        // `cl` (written since the user agent is capped): the label of the whole user agent,
        // '' for none. A hash of the previous layout has no `cl` and its whole user agent.
        client_label: match field("cl") {
            Some(label) => Some(label).filter(|l| !l.is_empty()).map(str::to_owned),
            None => user_agent.as_deref().and_then(client_label),
        },
        user_agent,
    })
}
